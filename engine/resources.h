// The lab as a set of resources: what `lab up` makes, each with its dependencies.
//
// Desired(lab) turns a validated schema::Lab into resources in dependency order (every
// resource after the ones it depends on). A resource's key is unique in the lab
// ("partition/middle", "adapter/nested1/Ethernet"); its spec is hv spec JSON, and its hash
// covers the spec and the dependencies, so any change to either shows up as a change.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "schema/lab.h"

namespace lab::engine {

enum class Kind { kNetwork, kPartition, kNic, kSwitch, kAdapter, kNat, kDns, kStandIn, kRun };
const char* ToString(Kind k);
std::optional<Kind> KindFromString(const std::string& s);

struct Resource {
  Kind kind = Kind::kPartition;
  std::string key;
  std::vector<std::string> deps;   // keys of resources this one lives in or needs
  std::string display;             // "VM 'middle' (on hv1)"
  nlohmann::json spec;             // hv spec (hv/spec.h) as JSON
  std::string Hash() const;
  /// What is stored in state: {"kind", "deps", "display", "spec"}.
  std::string ToRecordJson() const;
  static std::optional<Resource> FromRecordJson(const std::string& key, const std::string& text);
};

/// Names derived for the kernel (stable for a lab file; see resources.cc for the rules).
std::string DefaultMac(const std::string& lab, const std::string& machine, const std::string& adapter);

/// Whether the spec of the resource with this key is needed (see Desired).
using NeedsSpec = std::function<bool(const std::string& key)>;

/// An image as the machines on it need it: its cache key and overlay layers (topmost first).
struct MachineImage {
  std::string key;
  std::vector<std::string> layers;
};
/// Image name -> what the cache holds for it (images::EnsureImages).
using MachineImages = std::map<std::string, MachineImage>;

/// The lab's resources in dependency order. With `needs_spec`, a resource it says no to keeps a
/// null spec: a plan that is only shown needs no spec for what it would create, and building
/// the spec JSON is most of the cost of planning a big lab. A plan that is applied needs them all.
/// A machine on an image gets its key and layers from `images` (without it, or for an image not
/// in it yet, only the image's name).
std::vector<Resource> Desired(const schema::Lab& lab, const std::string& uid, const NeedsSpec& needs_spec = {},
                              const MachineImages* images = nullptr);

}  // namespace lab::engine
