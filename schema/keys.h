// The keys of the lab file: one table per kind of object. The reader accepts exactly these
// (parse.cc reads every object through its table), and docs/lab-file.md documents exactly these
// (tests/schema/keys_test.cc fails on a key in one and not the other). A new key is a word in its
// table here, its reading in parse.cc, and its section in docs/lab-file.md.
#pragma once

#include <string>
#include <vector>

namespace lab::schema::keys {

// Each table lists the keys of one object, in the order the reference documents them. A key
// ending in '*' stands for every key that starts with what precedes it: the top level's "x-*"
// are ignored, the place for YAML anchors (as docker compose's x- keys).
extern const std::vector<std::string> kLab;            // the file's top level
extern const std::vector<std::string> kDefaults;       // defaults: (per-VM settings)
extern const std::vector<std::string> kNetwork;        // networks.NAME
extern const std::vector<std::string> kImage;          // images.NAME
extern const std::vector<std::string> kHost;           // hosts.NAME
extern const std::vector<std::string> kHostProcessor;  // hosts.NAME.processor
extern const std::vector<std::string> kNic;            // hosts.NAME.nics.NAME
extern const std::vector<std::string> kVm;             // vms.NAME (at any depth)
extern const std::vector<std::string> kProcessor;      // vms.NAME.processor, defaults.processor
extern const std::vector<std::string> kMemory;         // vms.NAME.memory, defaults.memory
extern const std::vector<std::string> kSecurity;       // vms.NAME.security
extern const std::vector<std::string> kAdapter;        // vms.NAME.adapters[]
extern const std::vector<std::string> kSwitch;         // switches.NAME (of a host or a VM)
extern const std::vector<std::string> kNat;            // switches.NAME.nat
extern const std::vector<std::string> kCheck;          // checks[]

/// Every key the reader accepts, by its path as docs/lab-file.md heads it: "lab",
/// "networks.NAME.subnet", "hosts.NAME.nics.NAME.ip", "vms.NAME.memory.startup" (a VM at any
/// depth), "vms.NAME.adapters[].mac", "switches.NAME.nat.prefix", "checks[].tcp",
/// "defaults.memory.startup", "x-*".
std::vector<std::string> Paths();

}  // namespace lab::schema::keys
