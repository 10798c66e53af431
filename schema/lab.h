// schema::Lab: the lab file (format v1) as typed, validated plain data.
//
// Invariants of a Lab returned by Load/Parse without errors:
//  - machine names (hosts and VMs at every depth) are unique; `machines` lists parents before
//    their children (a pre-order walk of the file), hosts have parent "";
//  - every switch/network/NIC reference resolves; VMs reference only switches of their parent;
//  - a VM with children has processor.expose_virtualization_extensions = true;
//  - addresses are inside their segment (network subnet, NAT prefix or the switch owner's
//    address), gateways are on the adapter's subnet, no address repeats on one segment.
// Nothing here touches the system; it validates without privileges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/net.h"

namespace lab::schema {

/// A position in the lab file, 1-based; {0,0} when unknown.
struct Loc {
  int line = 0;
  int col = 0;
};

enum class Severity {
  kError,    // the lab is refused
  kWarning,  // the lab is valid, but probably not what was meant (or behaves as the seeds say)
};

struct Diagnostic {
  std::string file;
  Loc loc;
  std::string message;
  Severity severity = Severity::kError;
  /// "FILE:LINE:COL: error: MESSAGE" ("warning: " for a warning); "FILE: error: MESSAGE" when the
  /// diagnostic has no position (the file could not be read), never "FILE:0:0".
  std::string ToString() const;
};

struct Network {
  std::string name;
  Cidr subnet;                          // network address form, e.g. 10.10.0.0/24
  std::optional<Ipv4> gateway;          // the stand-in "outside world" answers here
  std::map<std::string, Ipv4> dns_records;
  bool uplink = false;                  // documented for real use; never in tests
  Loc loc;
};

/// A host's physical NIC, wired to a lab network.
struct Nic {
  std::string name;                     // "Ethernet"; the interface name inside the host
  std::string network;
  std::optional<Cidr> ip;
  std::optional<Ipv4> gateway;
  std::vector<Ipv4> dns;
  std::optional<std::string> mac;
  Loc loc;
};

enum class SwitchType { kExternal, kInternal, kPrivate };
const char* ToString(SwitchType t);

/// New-NetNat -Name NAME -InternalIPInterfaceAddressPrefix PREFIX
struct Nat {
  std::string name;
  Cidr prefix;                          // network address form
  bool dns_proxy = false;
  Loc loc;
};

struct Switch {
  std::string name;
  SwitchType type = SwitchType::kInternal;
  std::vector<std::string> nics;        // external: the owner's NICs/adapters it binds
  bool allow_management_os = true;      // external: the owner keeps a port (vEthernet (NAME))
  bool embedded_teaming = false;        // SET
  std::string teaming_mode = "switch_independent";
  std::optional<Cidr> ip;               // internal: address of the owner's vEthernet (NAME)
  std::optional<Nat> nat;               // internal only
  Loc loc;
};

/// A VM's network adapter (Add-VMNetworkAdapter / Set-VMNetworkAdapter).
struct Adapter {
  std::string name = "Ethernet";        // interface name inside the VM
  std::string switch_name;
  std::optional<Cidr> ip;
  std::optional<Ipv4> gateway;
  std::vector<Ipv4> dns;
  std::optional<std::string> mac;
  bool mac_address_spoofing = false;
  Loc loc;
};

struct Processor {
  int count = 1;
  bool expose_virtualization_extensions = false;
  /// Hosts only (`processor: {vendor: intel|amd}`): the physical processor whose virtualization
  /// extensions the host's VMs see; the rules of each compatibility profile depend on it. Intel
  /// by default, the seeds' processor ("nesting is currently Intel-only"). Empty for VMs.
  std::string vendor;
};

struct Memory {
  uint64_t startup = 1ull << 30;        // bytes
  bool dynamic = false;
  uint64_t minimum = 0;                 // bytes, dynamic only (0 = not set)
  uint64_t maximum = 0;                 // bytes, dynamic only (0 = not set)
};

/// How an image is made (DESIGN.md "Images"): built from Debian's packages, layered on another
/// image, or imported from a directory/tar, an OCI image layout or a `docker save` tar.
enum class ImageKind { kDebian, kFrom, kRootfs, kOci, kDockerArchive };
/// The lab-file key of the kind: "debian", "from", "rootfs", "oci", "docker_archive".
const char* ToString(ImageKind k);

/// The name a machine without `image:` runs on: the host's own software (today's behaviour).
inline constexpr const char* kHostImage = "host";

/// One entry of the top-level `images:` map: plain data, as written (paths relative to the lab
/// file are kept as written; images/ resolves them). Exactly one kind is set.
struct Image {
  std::string name;                     // [a-z0-9][a-z0-9._-]{0,63}, not "host"
  ImageKind kind = ImageKind::kDebian;
  // debian:
  std::string suite;                    // debian: bookworm
  std::string variant = "minbase";      // mmdebstrap --variant
  std::string mirror;                   // "" = mmdebstrap's default mirror
  bool slim = false;                    // no docs, man pages, locales
  // debian: and from: (one more layer over the parent)
  std::string from;                     // from: the parent image's name
  std::vector<std::string> packages;
  std::vector<Loc> package_locs;        // where each package is written (build-time errors)
  std::map<std::string, std::string> files;  // DEST in the image -> SRC (relative to the lab file)
  std::map<std::string, Loc> file_locs; // DEST -> where its entry is written
  std::vector<std::string> run;         // build steps, each run in a chroot of the image
  // rootfs: / oci: / docker_archive:
  std::string path;                     // the directory, tar, OCI layout dir or docker-save tar
  std::string ref;                      // oci: DIR:REF, the manifest's org.opencontainers.image.ref.name
  Loc loc;                              // the image's name in `images:`
  Loc kind_loc;                         // the value of its kind's key
};

/// "" when `name` can name an image ([a-z0-9][a-z0-9._-]{0,63}, not "host"), else the reason
/// and the fix.
std::string CheckImageName(const std::string& name);

enum class MachineKind { kHost, kVm };

/// Names compare as Windows compares them, ignoring (ASCII) case: "DC01" and "dc01" are one name.
std::string FoldCase(std::string_view s);
/// The computer name Hyper-V admins give a VM called `name`: every run of characters outside
/// A-Z a-z 0-9 - becomes one '-', '-' is trimmed at both ends, and the result is cut to 63
/// characters (a DNS label): "135. Nested Virtualization 2022" -> "135-Nested-Virtualization-2022".
/// "" when nothing is left (the file must then set hostname:).
std::string ComputerNameOf(std::string_view name);

/// How a VM is made real (DESIGN.md "Two drivers behind one API"): a partition of the host's
/// kernel (the default) or a QEMU guest with its own kernel and a real processor.
inline constexpr const char* kDriverPartition = "partition";
inline constexpr const char* kDriverQemu = "qemu";

/// The smallest memory.startup of a qemu VM: a Linux guest does not boot with less.
inline constexpr uint64_t kQemuMinMemory = 128ull << 20;

struct Machine {
  std::string name;                     // as written, any name Hyper-V takes ("135. Nested Virtualization 2022")
  std::string hostname;                 // its computer name: hostname: if given, else ComputerNameOf(name)
  MachineKind kind = MachineKind::kVm;
  std::string parent;                   // "" for hosts; the VM's host or middle VM otherwise
  int depth = 0;                        // 0 host, 1 VM on a host, 2 nested VM, ...
  // VM settings (hosts keep the defaults and memory.startup = 0: unlimited).
  /// kDriverPartition or kDriverQemu (`driver:`, else `defaults: driver:`); hosts: partition.
  std::string driver = kDriverPartition;
  std::string version = "9.0";          // configuration version ("10.0" by default under ws2022)
  bool version_given = false;           // the file wrote version: (else Hyper-V's default applies)
  int generation = 2;
  Processor processor;
  Memory memory;
  bool virtualization_based_security = false;
  std::vector<Nic> nics;                // hosts only
  std::vector<Adapter> adapters;        // VMs only
  std::vector<Switch> switches;         // switches this machine owns
  std::vector<std::string> vms;         // names of its child VMs, in file order
  std::vector<std::string> run;         // commands run inside once the machine is up
  int run_timeout_ms = 60000;           // run_timeout: each command's time limit
  /// The image it runs on: its own `image:`, else the lab's `image:`, else kHostImage. Always
  /// the name of an entry of Lab::images or kHostImage in a valid lab.
  std::string image = kHostImage;
  Loc image_loc;                        // where `image:` is written ({0,0} when inherited)
  Loc driver_loc;                       // where its driver is written (its own or the defaults'); else loc
  Loc processor_count_loc;              // where processor.count is written (or the defaults'); else loc
  Loc loc;

  const Switch* FindSwitch(const std::string& switch_name) const;
  bool IsQemu() const { return driver == kDriverQemu; }
};

enum class CheckKind { kPing, kResolve, kTcp, kHttp };
const char* ToString(CheckKind k);

struct Check {
  std::string from;                     // a machine name
  CheckKind kind = CheckKind::kPing;
  std::string target;                   // ping/resolve: name or address; tcp: HOST:PORT; http: URL
  std::optional<Ipv4> expect_address;   // resolve: the expected answer
  std::optional<Ipv4> expect_source;    // http: the source address the stand-in must see
  bool expect_success = true;           // expect: success | failure
  int timeout_ms = 2000;
  int retries = 1;                      // extra attempts before a check fails
  Loc loc;
  /// "nested1 ping www.example.test" style one-line description.
  std::string Describe() const;
};

struct Lab {
  int format = 1;
  std::string name;
  std::string file;                     // the path it was read from
  /// Hyper-V behaviour to follow (hv/model.h profiles): "v8" (configuration version 8.0, the
  /// default), "preview-10565" (the first nested-virtualization preview's limits) or "ws2022"
  /// (current Hyper-V: Windows Server 2022 / Windows 11 hosts, nesting on Intel and AMD).
  std::string compatibility = "v8";
  std::vector<Network> networks;
  /// The top-level `images:`, in file order; `from:` parents always resolve and never cycle.
  std::vector<Image> images;
  std::string default_image = kHostImage;  // the top-level `image:`
  std::vector<Machine> machines;        // pre-order: parents before children
  std::vector<Check> checks;

  const Machine* FindMachine(const std::string& machine) const;
  const Network* FindNetwork(const std::string& network) const;
  /// The image named `image` (exact name), nullptr when none (or kHostImage).
  const Image* FindImage(const std::string& image) const;
};

struct LoadResult {
  std::optional<Lab> lab;               // set only when no diagnostic is an error
  std::vector<Diagnostic> diagnostics;  // every problem found (errors and warnings), in file order
  /// True when some diagnostic is an error (then `lab` is not set).
  bool HasErrors() const;
  bool ok() const { return lab.has_value() && !HasErrors(); }
};

/// The largest lab file read: the biggest checked-in lab is a few KiB, so 1 MiB is room for any
/// real lab while a hostile or mistaken input (a log, /dev/zero) is refused before it is parsed.
inline constexpr size_t kMaxFileBytes = 1 << 20;
/// The deepest nesting of YAML collections read. Each nested VM adds two levels (`vms:` and the
/// VM's map), a flow map inside an adapter list three more, so 64 levels hold VMs nested about
/// 25 deep. The decoder recurses once per level of VMs: this bounds its stack.
inline constexpr int kMaxNestingDepth = 64;

/// Reads and validates a lab file; reads at most kMaxFileBytes + 1 bytes of it. Never throws.
LoadResult LoadFile(const std::string& path);
/// Parses and validates lab text; `file` is the name used in diagnostics. Text larger than
/// kMaxFileBytes or nested deeper than kMaxNestingDepth is refused with one diagnostic at the
/// byte or collection that crosses the limit, before anything else is read. Never throws.
LoadResult Parse(const std::string& text, const std::string& file);

}  // namespace lab::schema
