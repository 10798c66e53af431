// Where the VMs of a lab run: the lab file's placement, with `lab move` over it.
//
// `lab move LAB VM --to HOST` records VM -> HOST in the state (Store::SetPlacement); every plan
// of the lab is then made from the lab file with that VM, and everything inside it, under HOST.
// A VM that runs directly on a host moves to another host; its adapters need switches of the
// same names there (on Hyper-V, Move-VM likewise needs the destination's switches, or the
// adapters come up disconnected: we refuse instead).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "schema/lab.h"

namespace lab::engine {

struct Placed {
  schema::Lab lab;                  // the lab as placed
  std::vector<std::string> notes;   // placements no longer valid for the file, and ignored
};

/// The lab with every valid placement applied: the moved VM's subtree under its host, the
/// machines still in pre-order. A placement the file no longer allows (VM or host gone, a
/// switch missing) is ignored with a note: the VM runs where the file puts it.
Placed ApplyPlacements(const schema::Lab& lab, const std::map<std::string, std::string>& placements);

/// Why `vm` cannot run on `host` in `lab` (as placed so far), or "" if it can.
std::string CheckPlacement(const schema::Lab& lab, const std::string& vm, const std::string& host);

/// `lab` with `vm`'s subtree moved under `host`; CheckPlacement must have said "".
schema::Lab MoveMachine(const schema::Lab& lab, const std::string& vm, const std::string& host);

}  // namespace lab::engine
