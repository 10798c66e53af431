// Lab file text -> schema::Lab: the decoder (shape, types, names and the rules local to one
// object), then Validate (rules across objects), every problem collected in one run.
//
// The YAML layer (yaml.h, libyaml) reports a syntax error as a value; it becomes a Diagnostic at
// the error.
// A value that cannot be read is left at its default and reported once; rules that depend on it
// skip it, so one mistake gives one error.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "base/status.h"
#include "base/text.h"
#include "schema/keys.h"
#include "schema/lab.h"
#include "schema/reader.h"

namespace lab::schema {

namespace {

std::string Q(const std::string& s) { return "'" + s + "'"; }

/// "9.0" -> {9, 0}; "8" is read as "8.0".
std::optional<std::pair<int, int>> ParseVersion(const std::string& s) {
  size_t dot = s.find('.');
  std::string major = s.substr(0, dot);
  std::string minor = dot == std::string::npos ? "0" : s.substr(dot + 1);
  auto all_digits = [](const std::string& t) {
    return !t.empty() && t.size() <= 4 &&
           std::all_of(t.begin(), t.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  };
  if (!all_digits(major) || !all_digits(minor)) return std::nullopt;
  return std::pair{std::stoi(major), std::stoi(minor)};
}

/// A host name in dns_records: letters, digits, '-' and '.', at most 253 characters.
bool IsDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253 || s.front() == '.' || s.front() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

/// The name to suggest in "set nics: [...]": the owner's first NIC or adapter.
std::string FirstInterface(const Machine& m) {
  if (!m.nics.empty()) return m.nics[0].name;
  if (!m.adapters.empty()) return m.adapters[0].name;
  return "Ethernet";
}

class Decoder {
 public:
  Loc default_image_loc_;

  explicit Decoder(ParseContext& ctx) : ctx_(ctx) {}

  void DecodeLab(const yaml::Node& root, Lab& lab) {
    if (!root.IsDefined() || root.IsNull()) {
      ctx_.Error(Loc{1, 1}, "the lab file is empty; it needs at least 'lab: NAME' and 'hosts:'");
      return;
    }
    MapReader r(ctx_, root, "", "lab file", Loc{1, 1}, keys::kLab);
    if (!r.ok()) return;
    if (auto n = r.Require("lab", "the lab's name, e.g. lab: my-lab")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("lab"), "lab")) {
        lab.name = *s;
        if (auto why = CheckLabName(*s); !why.empty()) ctx_.Error(r.ValueLoc("lab"), "lab name " + Q(*s) + " " + why);
      }
    }
    if (auto n = r.Get("format")) {
      if (!n->IsScalar() || n->Scalar() != "1")
        ctx_.Error(r.ValueLoc("format"), "format " + (n->IsScalar() ? Q(n->Scalar()) + " " : std::string()) +
                                             "is not supported; this version of lab reads format: 1");
    }
    if (auto n = r.Get("compatibility")) {
      // The profiles of hv/model.h (schema does not include hv, so the names are spelled here).
      static const std::vector<std::string> kProfiles = {"v8", "preview-10565", "ws2022"};
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("compatibility"), "compatibility")) {
        if (std::find(kProfiles.begin(), kProfiles.end(), *s) != kProfiles.end()) {
          lab.compatibility = *s;
        } else {
          auto close = ClosestMatch(*s, kProfiles);
          ctx_.misspelled.insert("compatibility");  // rules that depend on the profile stay quiet
          ctx_.Error(r.ValueLoc("compatibility"),
                     "compatibility " + Q(*s) + " is not a compatibility profile; " +
                         (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                         "use v8 (configuration version 8.0, the default), preview-10565 (the limits of the "
                         "build 10565 preview) or ws2022 (current Hyper-V: Windows Server 2022 / Windows 11 "
                         "hosts, nesting on Intel and AMD)");
        }
      }
    }
    if (auto n = r.Get("networks")) {
      if (ExpectMap(*n, r.KeyLoc("networks"), "networks"))
        for (auto& e : Entries(ctx_, *n, "networks")) DecodeNetwork(e, lab);
    }
    if (auto n = r.Get("defaults")) DecodeDefaults(*n, r.KeyLoc("defaults"));
    // Images before machines, wherever they are written: machines name them.
    if (auto n = r.Get("images")) {
      if (ExpectMap(*n, r.KeyLoc("images"), "images"))
        for (auto& e : Entries(ctx_, *n, "images")) DecodeImage(e, lab);
    }
    if (auto n = r.Get("image")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("image"), "image")) {
        lab.default_image = *s;
        default_image_loc_ = r.ValueLoc("image");
        ctx_.image_refs.push_back({*s, "the lab's image", default_image_loc_});
      }
    }
    if (auto n = r.Require("hosts", "the lab's physical machines, e.g. hosts: {hv1: {nics: ...}}")) {
      if (n->IsNull()) ctx_.Error(r.KeyLoc("hosts"), "hosts: a lab needs at least one host");
      if (ExpectMap(*n, r.KeyLoc("hosts"), "hosts")) {
        auto hosts = Entries(ctx_, *n, "hosts");
        if (hosts.empty()) ctx_.Error(r.KeyLoc("hosts"), "hosts: a lab needs at least one host");
        // Machines are big: reserved once rather than moved at every growth (10,000 VMs).
        size_t count = 0;
        for (size_t i = 0; i < n->size(); ++i) count += CountMachines(n->Value(i));
        lab.machines.reserve(count + n->size());
        for (auto& e : hosts) DecodeMachine(e, MachineKind::kHost, "", 0, "hosts." + e.key, lab);
      }
    }
    if (auto n = r.Get("checks")) {
      if (!n->IsNull() && !n->IsSequence()) {
        ctx_.Error(r.ValueLoc("checks"), "checks: expected a list, like - {from: hv1, ping: 10.10.0.1}");
      } else if (n->IsSequence()) {
        for (size_t i = 0; i < n->size(); ++i) DecodeCheck((*n)[i], i, r.KeyLoc("checks"), lab);
      }
    }
  }

 private:
  /// True for a map; null reads as an empty map (false, nothing reported).
  bool ExpectMap(const yaml::Node& n, Loc at, const std::string& what) {
    if (n.IsMap()) return true;
    if (!n.IsNull()) ctx_.Error(LocOf(n, at), what + ": expected a map of NAME: {...}");
    return false;
  }

  void DecodeNetwork(const Entry& e, Lab& lab) {
    Network net;
    net.name = e.key;
    net.loc = e.key_loc;
    if (auto why = CheckNetworkName(e.key); !why.empty()) ctx_.Error(e.key_loc, "network name " + Q(e.key) + " " + why);
    std::string what = "network " + Q(e.key);
    MapReader r(ctx_, e.value, "networks." + e.key, what, e.key_loc, keys::kNetwork);
    bool have_subnet = false;
    if (auto n = r.Require("subnet", "its address range, e.g. subnet: 10.10.0.0/24")) {
      if (auto c = ReadNetwork(ctx_, *n, r.KeyLoc("subnet"), what + " subnet")) {
        net.subnet = *c;
        have_subnet = true;
      }
    }
    if (!have_subnet) ctx_.broken_networks.insert(e.key);
    if (auto n = r.Get("gateway")) {
      if (auto gw = ReadIpv4(ctx_, *n, r.KeyLoc("gateway"), what + " gateway")) {
        net.gateway = gw;
        Cidr as_host{*gw, net.subnet.prefix};
        if (have_subnet && !net.subnet.Contains(*gw)) {
          ctx_.Error(r.ValueLoc("gateway"), what + ": gateway " + gw->ToString() + " is outside subnet " +
                                                net.subnet.ToString() + "; use an address inside it");
        } else if (have_subnet && (as_host.IsNetworkAddress() || as_host.IsBroadcastAddress())) {
          ctx_.Error(r.ValueLoc("gateway"), what + ": gateway " + gw->ToString() + " is the " +
                                                (as_host.IsNetworkAddress() ? "network" : "broadcast") +
                                                " address of " + net.subnet.ToString() + "; use a host address");
        }
      }
    }
    if (auto n = r.Get("dns_records")) {
      if (ExpectMap(*n, r.KeyLoc("dns_records"), what + " dns_records")) {
        for (auto& rec : Entries(ctx_, *n, what + " dns_records")) {
          if (!IsDnsName(rec.key))
            ctx_.Error(rec.key_loc, what + ": dns_records name " + Q(rec.key) +
                                        " is not a host name; use letters, digits, '-' and '.'");
          if (auto ip = ReadIpv4(ctx_, rec.value, rec.key_loc, what + " dns_records " + Q(rec.key)))
            net.dns_records[rec.key] = *ip;
        }
      }
    }
    if (auto n = r.Get("uplink"))
      if (auto b = ReadBool(ctx_, *n, r.KeyLoc("uplink"), what + " uplink")) net.uplink = *b;
    lab.networks.push_back(std::move(net));
  }

  /// One entry of `images:`. Exactly one of the kinds' keys; keys of another kind are refused
  /// naming the kind they belong to. References (`from:`, machines' `image:`) are checked by
  /// Validate once every image is read.
  void DecodeImage(const Entry& e, Lab& lab) {
    Image img;
    img.name = e.key;
    img.loc = e.key_loc;
    std::string what = "image " + Q(e.key);
    if (auto why = CheckImageName(e.key); !why.empty()) ctx_.Error(e.key_loc, "image name " + Q(e.key) + " " + why);
    std::string path = "images." + e.key;
    MapReader r(ctx_, e.value, path, what, e.key_loc, keys::kImage);
    if (!r.ok()) return;
    static const std::vector<std::pair<const char*, ImageKind>> kKinds = {{"debian", ImageKind::kDebian},
                                                                         {"from", ImageKind::kFrom},
                                                                         {"rootfs", ImageKind::kRootfs},
                                                                         {"oci", ImageKind::kOci},
                                                                         {"docker_archive", ImageKind::kDockerArchive}};
    std::vector<const char*> given;
    for (const auto& [key, kind] : kKinds) {
      if (!r.Has(key)) continue;
      given.push_back(key);
      if (given.size() > 1) continue;
      img.kind = kind;
      img.kind_loc = r.ValueLoc(key);
      auto value = ReadString(ctx_, *r.Get(key), r.KeyLoc(key), what + " " + key);
      if (!value) continue;
      if (value->empty()) {
        ctx_.Error(r.ValueLoc(key), what + ": " + key + " is empty; give " +
                                        (kind == ImageKind::kDebian ? std::string("a suite, e.g. debian: bookworm")
                                         : kind == ImageKind::kFrom ? std::string("the parent image's name")
                                                                     : std::string("a path, relative to the lab file")));
        continue;
      }
      switch (kind) {
        case ImageKind::kDebian: img.suite = *value; break;
        case ImageKind::kFrom: img.from = *value; break;
        case ImageKind::kOci: {
          // DIR:REF, where REF has no '/': "./layouts/web:1.0" is the layout dir with ref 1.0.
          size_t colon = value->rfind(':');
          if (colon != std::string::npos && value->find('/', colon) == std::string::npos && colon > 0) {
            img.path = value->substr(0, colon);
            img.ref = value->substr(colon + 1);
          } else {
            img.path = *value;
          }
          break;
        }
        case ImageKind::kRootfs:
        case ImageKind::kDockerArchive: img.path = *value; break;
      }
    }
    if (given.empty()) {
      ctx_.Error(e.key_loc, what + ": says neither how to build it nor where to import it from; give exactly one of "
                                   "debian: SUITE, from: IMAGE, rootfs: PATH, oci: DIR[:REF] or docker_archive: FILE");
      ctx_.broken_images.insert(e.key);
    } else if (given.size() > 1) {
      ctx_.Error(r.KeyLoc(given[1]), what + ": has both " + given[0] + ": and " + given[1] +
                                         ":; an image is made one way: keep exactly one of debian, from, rootfs, "
                                         "oci, docker_archive");
    }
    bool debian = img.kind == ImageKind::kDebian, layered = debian || img.kind == ImageKind::kFrom;
    // Keys that belong to another kind: named with the kind they need.
    for (const char* key : {"variant", "slim", "mirror"}) {
      if (r.Has(key) && !debian && !given.empty())
        ctx_.Error(r.KeyLoc(key), what + ": " + key + " applies to images built with debian: only; remove it (a " +
                                      ToString(img.kind) + ": image " +
                                      (img.kind == ImageKind::kFrom ? "takes it from its parent)" : "is imported as is)"));
    }
    for (const char* key : {"packages", "files", "run"}) {
      if (r.Has(key) && !layered && !given.empty())
        ctx_.Error(r.KeyLoc(key), what + ": " + key + " applies to images built with debian: or from: only; an " +
                                      ToString(img.kind) + ": image is imported as is: declare another image with "
                                      "from: " + e.key + " and put " + key + " there");
    }
    if (auto n = r.Get("variant")) {
      static const std::vector<std::string> kVariants = {"extract", "custom", "essential", "apt", "required",
                                                         "minbase", "buildd", "important", "debootstrap", "standard"};
      if (auto v = ReadString(ctx_, *n, r.KeyLoc("variant"), what + " variant")) {
        if (std::find(kVariants.begin(), kVariants.end(), *v) != kVariants.end()) {
          img.variant = *v;
        } else {
          auto close = ClosestMatch(*v, kVariants);
          ctx_.Error(r.ValueLoc("variant"), what + ": variant " + Q(*v) + " is not an mmdebstrap variant; " +
                                                (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                                                "use minbase (the default), required, important, standard or buildd");
        }
      }
    }
    if (auto n = r.Get("slim"))
      if (auto b = ReadBool(ctx_, *n, r.KeyLoc("slim"), what + " slim")) img.slim = *b;
    if (auto n = r.Get("mirror")) {
      if (auto m = ReadString(ctx_, *n, r.KeyLoc("mirror"), what + " mirror")) {
        if (m->rfind("http://", 0) != 0 && m->rfind("https://", 0) != 0 && m->rfind("file:/", 0) != 0)
          ctx_.Error(r.ValueLoc("mirror"), what + ": mirror " + Q(*m) +
                                               " is not a URL; use http://, https:// or file:/, e.g. "
                                               "http://snapshot.debian.org/archive/debian/20240101T000000Z");
        else
          img.mirror = *m;
      }
    }
    if (auto n = r.Get("packages")) {
      if (!n->IsSequence()) {
        ctx_.Error(LocOf(*n, r.KeyLoc("packages")), what + ": packages: expected a list of Debian package names, "
                                                         "like [iproute2, curl]");
      } else {
        for (size_t i = 0; i < n->size(); ++i) {
          Loc at = LocOf((*n)[i], r.KeyLoc("packages"));
          auto p = ReadString(ctx_, (*n)[i], at, what + " packages");
          if (!p) continue;
          if (!IsPackageSpec(*p)) {
            ctx_.Error(at, what + ": " + Q(*p) + " is not a Debian package name; use lower-case letters, digits and "
                                                 "+ - . (optionally =VERSION or /RELEASE), e.g. iproute2");
            continue;
          }
          img.packages.push_back(*p);
          img.package_locs.push_back(at);
        }
      }
    }
    if (auto n = r.Get("files")) {
      if (ExpectMap(*n, r.KeyLoc("files"), what + " files")) {
        for (auto& f : Entries(ctx_, *n, what + " files")) {
          if (f.key.empty() || f.key[0] != '/') {
            ctx_.Error(f.key_loc, what + ": files: destination " + Q(f.key) +
                                      " is not an absolute path in the image; write it like /etc/motd: motd.txt");
            continue;
          }
          if (auto src = ReadString(ctx_, f.value, f.key_loc, what + " files " + Q(f.key))) {
            img.files[f.key] = *src;
            img.file_locs[f.key] = f.key_loc;
          }
        }
      }
    }
    if (auto n = r.Get("run")) img.run = ReadStringList(ctx_, *n, r.KeyLoc("run"), what + " run");
    lab.images.push_back(std::move(img));
  }

  /// A Debian package as apt takes it: NAME[=VERSION|/RELEASE], the name in Debian policy's form.
  static bool IsPackageSpec(const std::string& s) {
    size_t end = s.find_first_of("=/");
    std::string name = s.substr(0, end);
    if (name.size() < 2 || (!std::islower(static_cast<unsigned char>(name[0])) && !std::isdigit(static_cast<unsigned char>(name[0]))))
      return false;
    for (char c : name)
      if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '+' ||
            c == '-' || c == '.'))
        return false;
    return end == std::string::npos || end + 1 < s.size();
  }

  /// The VMs under a machine's node, at every depth (an estimate for reserving: counts what the
  /// decoder may still refuse). Recursion is bounded by the YAML depth limit.
  static size_t CountMachines(const yaml::Node& machine) {
    if (!machine.IsMap()) return 0;
    yaml::Node vms = machine["vms"];
    if (!vms.IsMap()) return 0;
    size_t count = vms.size();
    for (size_t i = 0; i < vms.size(); ++i) count += CountMachines(vms.Value(i));
    return count;
  }

  /// Appends the machine, then its VMs (pre-order). False when it was not added (duplicate).
  bool DecodeMachine(const Entry& e, MachineKind kind, const std::string& parent, int depth, const std::string& path,
                     Lab& lab) {
    bool host = kind == MachineKind::kHost;
    std::string kind_word = host ? "host" : "VM";
    std::string what = kind_word + " " + Q(e.key);
    if (auto why = CheckMachineName(e.key); !why.empty())
      ctx_.Error(e.key_loc, "machine name " + Q(e.key) + " " + why);
    auto [seen, inserted] = machines_seen_.emplace(FoldCase(e.key), Seen{e.key_loc, kind_word, e.key});
    if (!inserted) {
      ctx_.Error(e.key_loc, "machine name " + Q(e.key) + " is already used by the " + seen->second.kind + " " +
                                Q(seen->second.name) + " at " + At(seen->second.loc) +
                                "; names of hosts and VMs are unique across the lab, at every depth, ignoring case "
                                "(as Windows compares them)");
      return false;
    }
    ctx_.machine_path[e.key] = path;

    Machine m;
    m.name = e.key;
    m.kind = kind;
    m.parent = parent;
    m.depth = depth;
    m.loc = e.key_loc;
    static const std::map<std::string, std::string> kMisplacedOnHost = [] {
      std::map<std::string, std::string> out;
      for (const char* k : {"memory", "version", "generation", "security"})
        out[k] = std::string("hosts are physical machines: ") + Q(k) +
                 " applies to VMs only; remove it (a host uses its whole hardware)";
      out["driver"] =
          "hosts are physical machines: 'driver' applies to VMs only (a host is neither a partition nor a QEMU "
          "guest); remove it and set driver: on the host's VMs, or defaults: {driver: qemu} for every VM";
      out["adapters"] =
          "hosts are physical machines: they have NICs, not adapters; use nics: {Ethernet: {network: NAME, ip: ...}}";
      return out;
    }();
    static const std::map<std::string, std::string> kMisplacedOnVm = {
        {"nics", "VMs have network adapters, not NICs; use adapters: [{switch: NAME, ip: ...}] (Add-VMNetworkAdapter)"}};
    if (host) m.memory.startup = 0;
    const auto& known = host ? keys::kHost : keys::kVm;
    const auto& misplaced = host ? kMisplacedOnHost : kMisplacedOnVm;
    MapReader r(ctx_, e.value, path, what, e.key_loc, known, misplaced);
    DecodeComputerName(r, what, m);

    if (!host) {
      ApplyDefaults(path, m);
      DecodeVmSettings(r, m);
      CheckMemoryOrder(what, path, m);
      m.driver_loc = ctx_.At(path + ".driver", m.loc);
      m.processor_count_loc = ctx_.At(path + ".processor.count", m.loc);
    }
    // Without version:, a VM has its host's default configuration version: 10.0 on the Windows
    // Server 2022 / Windows 11 hosts of compatibility ws2022, 9.0 otherwise.
    if (!host && !m.version_given && lab.compatibility == "ws2022") m.version = "10.0";
    if (host) {
      m.processor.vendor = "intel";
      if (auto n = r.Get("processor")) DecodeHostProcessor(*n, r, m);
      if (auto n = r.Get("nics")) {
        if (ExpectMap(*n, r.KeyLoc("nics"), what + " nics")) {
          std::map<std::string, Seen> seen;
          for (auto& ne : Entries(ctx_, *n, what + " nics")) {
            if (!Unique(seen, ne.key, ne.key_loc, what + ": NIC name", "NIC", "give each NIC of a host its own name"))
              continue;
            m.nics.push_back(DecodeNic(ne, what, path + ".nics." + ne.key));
          }
        }
      }
    } else if (auto n = r.Get("adapters")) {
      DecodeAdapters(*n, r.KeyLoc("adapters"), what, path, m);
    }
    CheckKernelNames(what, m);
    if (auto n = r.Get("switches")) {
      if (ExpectMap(*n, r.KeyLoc("switches"), what + " switches")) {
        std::map<std::string, Seen> seen;
        for (auto& se : Entries(ctx_, *n, what + " switches")) {
          if (!Unique(seen, se.key, se.key_loc, what + ": switch name", "switch",
                      "give each switch of a machine its own name"))
            continue;
          DecodeSwitch(se, m, path + ".switches." + se.key);
        }
      }
    }
    if (auto n = r.Get("run")) m.run = ReadStringList(ctx_, *n, r.KeyLoc("run"), what + " run");
    m.image = lab.default_image;
    if (!host && defaults_image_) {
      m.image = *defaults_image_;
      m.image_loc = defaults_image_loc_;
    }
    if (auto n = r.Get("image")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("image"), what + " image")) {
        m.image = *s;
        m.image_loc = r.ValueLoc("image");
        ctx_.image_refs.push_back({*s, what, m.image_loc});
      }
    }
    if (auto n = r.Get("run_timeout"))
      if (auto v = ReadDuration(ctx_, *n, r.KeyLoc("run_timeout"), what + " run_timeout")) m.run_timeout_ms = *v;

    size_t index = lab.machines.size();
    lab.machines.push_back(std::move(m));
    if (auto n = r.Get("vms")) {
      if (ExpectMap(*n, r.KeyLoc("vms"), what + " vms")) {
        for (auto& ve : Entries(ctx_, *n, what + " vms")) {
          if (DecodeMachine(ve, MachineKind::kVm, e.key, depth + 1, path + ".vms." + ve.key, lab))
            lab.machines[index].vms.push_back(ve.key);
        }
      }
    }
    return true;
  }

  /// A host's `processor: {vendor: intel|amd}`: the one setting of a physical processor the rules
  /// read. Count and exposure are VM settings (a host uses its whole hardware).
  void DecodeHostProcessor(const yaml::Node& node, MapReader& host, Machine& m) {
    const std::string& what = host.what();
    static const std::map<std::string, std::string> kVmOnly = {
        {"count", "processor.count applies to VMs only; remove it (a host uses its whole hardware)"},
        {"expose_virtualization_extensions",
         "processor.expose_virtualization_extensions applies to VMs only (Set-VMProcessor -VMName); a host "
         "exposes its hardware's extensions to the VMs that ask; remove it"}};
    MapReader p(ctx_, node, host.path() + ".processor", what + " processor", host.KeyLoc("processor"), keys::kHostProcessor,
                kVmOnly);
    if (auto v = p.Get("vendor")) {
      if (auto s = ReadString(ctx_, *v, p.KeyLoc("vendor"), what + " processor.vendor")) {
        std::string lower = *s;
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower == "intel" || lower == "amd") {
          m.processor.vendor = lower;
        } else {
          m.processor.vendor.clear();  // unknown: the processor rules stay quiet
          ctx_.Error(p.ValueLoc("vendor"), what + ": processor vendor " + Q(*s) +
                                               " is not one the rules know; use intel (VT-x and EPT, the default) "
                                               "or amd (EPYC/Ryzen, nesting only under compatibility: ws2022)");
        }
      }
    }
  }

  void DecodeVmSettings(MapReader& r, Machine& m) {
    const std::string& what = r.what();
    if (auto n = r.Get("driver")) {
      static const std::vector<std::string> kDrivers = {kDriverPartition, kDriverQemu};
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("driver"), what + " driver")) {
        if (std::find(kDrivers.begin(), kDrivers.end(), *s) != kDrivers.end()) {
          m.driver = *s;
        } else {
          auto close = ClosestMatch(*s, kDrivers);
          ctx_.Error(r.ValueLoc("driver"),
                     what + ": driver " + Q(*s) + " is not a driver; " +
                         (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                         "use partition (kernel isolation, the default) or qemu (a QEMU guest with its own kernel)");
        }
      }
    }
    if (auto n = r.Get("version")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("version"), what + " version")) {
        if (auto v = ParseVersion(*s)) {
          m.version = std::to_string(v->first) + "." + std::to_string(v->second);
          m.version_given = true;
        } else {
          ctx_.Error(r.ValueLoc("version"), what + ": version " + Q(*s) +
                                                " is not a configuration version; use a version like \"9.0\"");
        }
      }
    }
    if (auto n = r.Get("generation"))
      if (auto g = ReadInt(ctx_, *n, r.KeyLoc("generation"), what + " generation", 1, 2)) m.generation = *g;
    if (auto n = r.Get("processor")) {
      MapReader p(ctx_, *n, r.path() + ".processor", what + " processor", r.KeyLoc("processor"), keys::kProcessor);
      if (auto c = p.Get("count"))
        if (auto v = ReadInt(ctx_, *c, p.KeyLoc("count"), what + " processor.count", 1, 64)) m.processor.count = *v;
      if (auto x = p.Get("expose_virtualization_extensions"))
        if (auto v = ReadBool(ctx_, *x, p.KeyLoc("expose_virtualization_extensions"),
                              what + " processor.expose_virtualization_extensions"))
          m.processor.expose_virtualization_extensions = *v;
    }
    if (auto n = r.Get("memory")) DecodeMemory(*n, r, m);
    if (auto n = r.Get("security")) {
      MapReader s(ctx_, *n, r.path() + ".security", what + " security", r.KeyLoc("security"), keys::kSecurity);
      if (auto x = s.Get("virtualization_based_security"))
        if (auto v = ReadBool(ctx_, *x, s.KeyLoc("virtualization_based_security"),
                              what + " security.virtualization_based_security"))
          m.virtualization_based_security = *v;
    }
  }

  void DecodeMemory(const yaml::Node& node, MapReader& vm, Machine& m) {
    const std::string& what = vm.what();
    MapReader r(ctx_, node, vm.path() + ".memory", what + " memory", vm.KeyLoc("memory"), keys::kMemory);
    if (auto n = r.Get("startup")) {
      auto v = ReadSize(ctx_, *n, r.KeyLoc("startup"), what + " memory.startup");
      startup_ok_ = v.has_value();
      if (v && *v == 0) {
        ctx_.Error(r.ValueLoc("startup"), what + ": memory.startup must be more than 0; use a size like 1GiB");
        startup_ok_ = false;
      } else if (v) {
        m.memory.startup = *v;
      }
    }
    if (auto n = r.Get("dynamic")) {
      if (auto v = ReadBool(ctx_, *n, r.KeyLoc("dynamic"), what + " memory.dynamic")) {
        m.memory.dynamic = *v;
        // Static memory has no range: a minimum and maximum of the defaults do not apply.
        if (!*v) m.memory.minimum = m.memory.maximum = 0;
      }
    }
    for (const char* key : {"minimum", "maximum"}) {
      auto n = r.Get(key);
      if (!n) continue;
      auto v = ReadSize(ctx_, *n, r.KeyLoc(key), what + " memory." + key);
      if (!v) continue;
      if (!m.memory.dynamic) {
        ctx_.Error(r.KeyLoc(key), what + ": memory." + key +
                                      " applies to dynamic memory only; set memory.dynamic: true or remove memory." +
                                      key);
        continue;
      }
      bool minimum = std::strcmp(key, "minimum") == 0;
      (minimum ? m.memory.minimum : m.memory.maximum) = *v;
    }
  }

  /// minimum <= startup <= maximum, once the VM's own memory settings are merged over the
  /// defaults; each error at the value as written (the VM's, or the defaults' it took).
  void CheckMemoryOrder(const std::string& what, const std::string& path, const Machine& m) {
    if (!m.memory.dynamic || !startup_ok_) return;
    for (bool minimum : {true, false}) {
      uint64_t v = minimum ? m.memory.minimum : m.memory.maximum;
      if (v == 0 || (minimum ? v <= m.memory.startup : v >= m.memory.startup)) continue;
      std::string key = minimum ? "minimum" : "maximum";
      ctx_.Error(ctx_.At(path + ".memory." + key, m.loc),
                 what + ": memory." + key + " " + FormatSize(v) + " is " + (minimum ? "above" : "below") +
                     " memory.startup " + FormatSize(m.memory.startup) +
                     "; Hyper-V needs minimum <= startup <= maximum (Set-VMMemory)");
    }
  }

  /// `defaults:`, the settings every VM has where it does not write them: read once, as a VM's
  /// settings are, into the template each VM starts from.
  void DecodeDefaults(const yaml::Node& node, Loc at) {
    MapReader r(ctx_, node, "defaults", "defaults", at, keys::kDefaults);
    if (!r.ok()) return;
    DecodeVmSettings(r, defaults_);
    defaults_startup_ok_ = startup_ok_;
    // Every VM's image unless it names its own (hosts keep the lab's `image:`).
    if (auto n = r.Get("image")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("image"), "defaults image")) {
        defaults_image_ = *s;
        defaults_image_loc_ = r.ValueLoc("image");
        ctx_.image_refs.push_back({*s, "defaults", defaults_image_loc_});
      }
    }
  }

  /// Starts VM `m` (at `path`) from the defaults: their values, and their positions, so that a
  /// rule broken by a default points at the default as written.
  void ApplyDefaults(const std::string& path, Machine& m) {
    m.driver = defaults_.driver;
    m.version = defaults_.version;
    m.version_given = defaults_.version_given;
    m.generation = defaults_.generation;
    m.processor.count = defaults_.processor.count;
    m.processor.expose_virtualization_extensions = defaults_.processor.expose_virtualization_extensions;
    m.memory = defaults_.memory;
    startup_ok_ = defaults_startup_ok_;
    for (const auto& key : keys::kDefaults) {
      const std::vector<std::string>* sub = key == "processor" ? &keys::kProcessor
                                            : key == "memory"  ? &keys::kMemory
                                                               : nullptr;
      std::vector<std::string> suffixes{key};
      if (sub)
        for (const auto& k : *sub) suffixes.push_back(key + "." + k);
      for (const auto& suffix : suffixes)
        if (const Loc* loc = ctx_.locs.Find("defaults." + suffix)) ctx_.locs.Set(path, suffix, *loc);
    }
  }

  Nic DecodeNic(const Entry& e, const std::string& owner, const std::string& path) {
    Nic nic;
    nic.name = e.key;
    nic.loc = e.key_loc;
    if (auto why = CheckInterfaceName(e.key); !why.empty()) ctx_.Error(e.key_loc, owner + ": NIC name " + Q(e.key) + " " + why);
    std::string what = owner + " NIC " + Q(e.key);
    MapReader r(ctx_, e.value, path, what, e.key_loc, keys::kNic);
    if (auto n = r.Require("network", "the lab network it is wired to, e.g. network: lan"))
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("network"), what + " network")) nic.network = *s;
    ReadAddressing(r, what, nic.ip, nic.gateway, nic.dns, nic.mac);
    return nic;
  }

  void ReadAddressing(MapReader& r, const std::string& what, std::optional<Cidr>& ip, std::optional<Ipv4>& gateway,
                      std::vector<Ipv4>& dns, std::optional<std::string>& mac) {
    if (auto n = r.Get("ip")) ip = ReadCidr(ctx_, *n, r.KeyLoc("ip"), what + " ip");
    if (auto n = r.Get("gateway")) gateway = ReadIpv4(ctx_, *n, r.KeyLoc("gateway"), what + " gateway");
    if (auto n = r.Get("dns")) dns = ReadIpv4List(ctx_, *n, r.KeyLoc("dns"), what + " dns");
    if (auto n = r.Get("mac")) mac = ReadMac(ctx_, *n, r.KeyLoc("mac"), what + " mac");
  }

  void DecodeAdapters(const yaml::Node& list, Loc at, const std::string& owner, const std::string& path, Machine& m) {
    if (list.IsNull()) return;
    if (!list.IsSequence()) {
      ctx_.Error(LocOf(list, at), owner + " adapters: expected a list, like - {switch: External, ip: 10.10.0.10/24}");
      return;
    }
    std::map<std::string, Seen> names;
    for (size_t i = 0; i < list.size(); ++i) {
      yaml::Node item = list[i];
      std::string item_path = path + ".adapters[" + std::to_string(i) + "]";
      Loc loc = LocOf(item, at);
      Adapter a;
      a.loc = loc;
      if (item.IsMap()) {
        yaml::Node name = item["name"];
        if (name.IsDefined() && name.IsScalar()) a.name = name.Scalar();
      }
      std::string what = owner + " adapter " + Q(a.name);
      MapReader r(ctx_, item, item_path, what, loc, keys::kAdapter);
      if (!r.ok() || item.IsNull()) {
        if (item.IsNull())
          ctx_.Error(loc, owner + " adapters: item " + std::to_string(i + 1) +
                              " is empty; expected a map like {switch: External}");
        continue;
      }
      if (auto n = r.Get("name")) {
        if (ReadString(ctx_, *n, r.KeyLoc("name"), what + " name")) {
          if (auto why = CheckInterfaceName(a.name); !why.empty())
            ctx_.Error(r.ValueLoc("name"), owner + ": adapter name " + Q(a.name) + " " + why);
        }
      }
      auto [prev, fresh] = names.emplace(FoldCase(a.name), Seen{r.ValueLoc("name"), "adapter", a.name});
      if (!fresh)
        ctx_.Error(r.ValueLoc("name"),
                   owner + " already has an adapter named " + Q(prev->second.name) + " at " + At(prev->second.loc) +
                       (prev->second.name == a.name
                            ? std::string()
                            : " (" + Q(a.name) + " is the same name ignoring case, as Windows compares names)") +
                       "; give each adapter its own name, e.g. name: Ethernet 2");
      if (auto n = r.Require("switch", "the switch of its host or middle VM it connects to, e.g. switch: External"))
        if (auto s = ReadString(ctx_, *n, r.KeyLoc("switch"), what + " switch")) a.switch_name = *s;
      ReadAddressing(r, what, a.ip, a.gateway, a.dns, a.mac);
      if (auto n = r.Get("mac_address_spoofing"))
        if (auto b = ReadBool(ctx_, *n, r.KeyLoc("mac_address_spoofing"), what + " mac_address_spoofing"))
          a.mac_address_spoofing = *b;
      ctx_.adapter_paths[{m.name, m.adapters.size()}] = item_path;
      m.adapters.push_back(std::move(a));
    }
  }

  void DecodeSwitch(const Entry& e, Machine& owner, const std::string& path) {
    Switch sw;
    sw.name = e.key;
    sw.loc = e.key_loc;
    std::string owner_what = (owner.kind == MachineKind::kHost ? "host " : "VM ") + Q(owner.name);
    if (auto why = CheckSwitchName(e.key); !why.empty())
      ctx_.Error(e.key_loc, owner_what + ": switch name " + Q(e.key) + " " + why);
    std::string what = "switch " + Q(e.key) + " on " + Q(owner.name);
    MapReader r(ctx_, e.value, path, what, e.key_loc, keys::kSwitch);
    bool type_ok = false;
    if (auto n = r.Require("type", "external, internal or private, as in New-VMSwitch -SwitchType")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("type"), what + " type")) {
        static const std::vector<std::string> kTypes = {"external", "internal", "private"};
        std::string lower = *s;
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower == "external") sw.type = SwitchType::kExternal;
        if (lower == "internal") sw.type = SwitchType::kInternal;
        if (lower == "private") sw.type = SwitchType::kPrivate;
        type_ok = lower == "external" || lower == "internal" || lower == "private";
        if (!type_ok) {
          auto close = ClosestMatch(*s, kTypes);
          ctx_.Error(r.ValueLoc("type"), what + ": type " + Q(*s) + " is not a switch type; " +
                                             (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                                             "use external, internal or private (New-VMSwitch -SwitchType)");
        }
      }
    }
    if (!type_ok) ctx_.broken_switches.insert(owner.name + "/" + e.key);
    if (auto n = r.Get("nics")) sw.nics = ReadStringList(ctx_, *n, r.KeyLoc("nics"), what + " nics");
    if (auto n = r.Get("allow_management_os"))
      if (auto b = ReadBool(ctx_, *n, r.KeyLoc("allow_management_os"), what + " allow_management_os"))
        sw.allow_management_os = *b;
    if (auto n = r.Get("embedded_teaming"))
      if (auto b = ReadBool(ctx_, *n, r.KeyLoc("embedded_teaming"), what + " embedded_teaming"))
        sw.embedded_teaming = *b;
    if (auto n = r.Get("teaming_mode")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("teaming_mode"), what + " teaming_mode")) {
        if (*s == "lacp") {
          ctx_.Error(r.ValueLoc("teaming_mode"),
                     what + ": SET (Switch Embedded Teaming) is switch independent only; LACP is not supported; "
                            "remove teaming_mode: lacp");
        } else if (*s != "switch_independent") {
          ctx_.Error(r.ValueLoc("teaming_mode"), what + ": teaming_mode " + Q(*s) +
                                                     " is not a teaming mode; use switch_independent (SET is "
                                                     "switch independent only)");
        }
      }
    }
    if (auto n = r.Get("ip")) sw.ip = ReadCidr(ctx_, *n, r.KeyLoc("ip"), what + " ip");
    bool nat_given = false;
    if (auto n = r.Get("nat")) {
      nat_given = true;
      std::string nat_what = what + " nat";
      MapReader nr(ctx_, *n, path + ".nat", nat_what, r.KeyLoc("nat"), keys::kNat);
      Nat nat;
      nat.loc = r.KeyLoc("nat");
      bool ok = nr.ok() && !n->IsNull();
      if (n->IsNull()) ctx_.Error(r.KeyLoc("nat"), nat_what + ": expected a map like {name: LocalNAT, prefix: 192.168.100.0/24}");
      if (auto v = nr.Require("name", "the NetNat's name, e.g. name: LocalNAT, as in New-NetNat -Name")) {
        if (auto s = ReadString(ctx_, *v, nr.KeyLoc("name"), nat_what + " name")) {
          nat.name = *s;
          if (auto why = CheckSwitchName(*s); !why.empty()) ctx_.Error(nr.ValueLoc("name"), nat_what + ": name " + Q(*s) + " " + why);
        }
      }
      ok = ok && !nat.name.empty();
      if (auto v = nr.Require("prefix", "the internal prefix, e.g. prefix: 192.168.100.0/24, as in "
                                        "New-NetNat -InternalIPInterfaceAddressPrefix")) {
        auto p = ReadNetwork(ctx_, *v, nr.KeyLoc("prefix"), nat_what + " prefix");
        if (p) nat.prefix = *p;
        ok = ok && p.has_value();
      } else {
        ok = false;
      }
      if (auto v = nr.Get("dns_proxy"))
        if (auto b = ReadBool(ctx_, *v, nr.KeyLoc("dns_proxy"), nat_what + " dns_proxy")) nat.dns_proxy = *b;
      if (ok) sw.nat = nat;
    }

    // Rules that need only this switch, once its type is known.
    if (type_ok) {
      bool external = sw.type == SwitchType::kExternal;
      bool internal = sw.type == SwitchType::kInternal;
      if (r.Has("nics") && !external)
        ctx_.Error(r.KeyLoc("nics"), what + ": nics apply to external switches only (New-VMSwitch -NetAdapterName); "
                                            "remove nics or set type: external");
      if (external && sw.nics.empty() && !(r.Has("nics") && !r.Get("nics")->IsSequence()))
        ctx_.Error(r.KeyLoc("nics"),
                   what + ": an external switch binds " +
                       (owner.kind == MachineKind::kHost ? "one of the host's NICs" : "one of the VM's adapters") +
                       "; set nics: [" + FirstInterface(owner) + "] (New-VMSwitch -NetAdapterName)");
      if (r.Has("allow_management_os") && !external)
        ctx_.Error(r.KeyLoc("allow_management_os"),
                   what + ": allow_management_os applies to external switches only; remove it");
      if (sw.embedded_teaming && !external)
        ctx_.Error(r.ValueLoc("embedded_teaming"),
                   what + ": embedded_teaming (SET) needs an external switch; set type: external "
                          "(New-VMSwitch -NetAdapterName A,B -EnableEmbeddedTeaming $true)");
      if (external && sw.nics.size() > 1 && !sw.embedded_teaming)
        ctx_.Error(r.ValueLoc("nics"), what + ": binds " + std::to_string(sw.nics.size()) +
                                           " NICs; several NICs need embedded_teaming: true "
                                           "(New-VMSwitch -EnableEmbeddedTeaming $true), or bind one NIC");
      if (r.Has("ip") && !internal)
        ctx_.Error(r.KeyLoc("ip"), what + ": ip applies to internal switches only (the owner's vEthernet (" + sw.name +
                                       ") address); " +
                                       (external ? "set the address on the NIC the switch binds" : "remove it"));
      if (nat_given && !internal)
        ctx_.Error(r.KeyLoc("nat"), what + ": a NAT needs an internal switch (New-VMSwitch -SwitchType Internal); "
                                           "set type: internal or remove nat");
      if (internal && sw.nat && !sw.ip && !r.Has("ip")) {
        Cidr first{Ipv4{sw.nat->prefix.addr.value + 1}, sw.nat->prefix.prefix};
        ctx_.Error(r.KeyLoc("nat"), what + ": a NAT needs the switch's own address inside " +
                                        sw.nat->prefix.ToString() + "; set ip: " + first.ToString() +
                                        " (New-NetIPAddress on vEthernet (" + sw.name + "))");
      }
      if (internal && sw.nat && sw.ip && !sw.nat->prefix.Contains(sw.ip->addr))
        ctx_.Error(ctx_.At(path + ".nat.prefix", sw.nat->loc),
                   what + ": NAT " + Q(sw.nat->name) + " prefix " + sw.nat->prefix.ToString() +
                       " does not contain the switch address " + sw.ip->ToString() + "; use prefix: " +
                       sw.ip->Network().ToString() + " (New-NetNat -InternalIPInterfaceAddressPrefix)");
    }
    owner.switches.push_back(std::move(sw));
  }

  void DecodeCheck(const yaml::Node& item, size_t index, Loc at, Lab& lab) {
    std::string path = "checks[" + std::to_string(index) + "]";
    std::string what = "check " + std::to_string(index + 1);
    Loc loc = LocOf(item, at);
    static const std::vector<std::string> kKinds = {"ping", "resolve", "tcp", "http"};
    MapReader r(ctx_, item, path, what, loc, keys::kCheck);
    if (!r.ok()) return;
    if (item.IsNull()) {
      ctx_.Error(loc, what + ": empty; expected a map like {from: hv1, ping: 10.10.0.1}");
      return;
    }
    Check c;
    c.loc = loc;
    if (auto n = r.Require("from", "the machine the check runs in, e.g. from: nested1"))
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("from"), what + " from")) c.from = *s;

    // The test: exactly one of ping/resolve/tcp/http, taken in file order.
    std::vector<std::pair<Loc, std::string>> given;
    for (const auto& k : kKinds)
      if (r.Has(k)) given.emplace_back(r.KeyLoc(k), k);
    std::sort(given.begin(), given.end(), [](const auto& a, const auto& b) {
      return std::pair{a.first.line, a.first.col} < std::pair{b.first.line, b.first.col};
    });
    if (given.empty())
      ctx_.Error(loc, what + ": needs one of ping, resolve, tcp or http, e.g. ping: www.example.test");
    for (size_t i = 1; i < given.size(); ++i)
      ctx_.Error(given[i].first, what + ": has both " + Q(given[0].second) + " and " + Q(given[i].second) +
                                     "; give one test per check");
    std::string kind = given.empty() ? "" : given[0].second;
    bool target_ok = false;
    if (!kind.empty()) {
      c.kind = kind == "ping" ? CheckKind::kPing
               : kind == "resolve" ? CheckKind::kResolve
               : kind == "tcp"     ? CheckKind::kTcp
                                   : CheckKind::kHttp;
      Loc vloc = r.ValueLoc(kind);
      if (auto s = ReadString(ctx_, *r.Get(kind), r.KeyLoc(kind), what + " " + kind)) {
        c.target = *s;
        target_ok = true;
        if (c.target.empty()) {
          ctx_.Error(vloc, what + ": " + kind + " needs a target");
          target_ok = false;
        } else if (c.kind == CheckKind::kTcp) {
          size_t colon = c.target.rfind(':');
          int port = 0;
          std::string digits = colon == std::string::npos ? "" : c.target.substr(colon + 1);
          bool port_ok = colon != std::string::npos && colon > 0 && !digits.empty() && digits.size() <= 5 &&
                         std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
          if (port_ok) port = std::stoi(digits);
          if (!port_ok || port < 1 || port > 65535) {
            ctx_.Error(vloc, what + ": tcp " + Q(c.target) + " is not HOST:PORT; use e.g. tcp: \"www.example.test:80\"");
            target_ok = false;
          }
        } else if (c.kind == CheckKind::kHttp && c.target.rfind("http://", 0) != 0) {
          ctx_.Error(vloc, what + ": http " + Q(c.target) +
                               (c.target.rfind("https://", 0) == 0
                                    ? " uses https; only http:// URLs are supported (the stand-in serves plain HTTP)"
                                    : " is not an http:// URL; use e.g. http: \"http://www.example.test/\""));
          target_ok = false;
        }
      }
    }
    if (auto n = r.Get("expect")) {
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("expect"), what + " expect")) {
        if (*s == "success" || *s == "failure") {
          c.expect_success = *s == "success";
        } else {
          auto close = ClosestMatch(*s, {"success", "failure"});
          ctx_.Error(r.ValueLoc("expect"), what + ": expect " + Q(*s) + " is invalid; " +
                                               (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                                               "use success or failure");
        }
      }
    }
    auto only_for = [&](const char* key, CheckKind k, const char* kind_word, std::optional<Ipv4>& out) {
      auto n = r.Get(key);
      if (!n) return;
      if (!kind.empty() && c.kind != k) {
        ctx_.Error(r.KeyLoc(key), what + ": " + key + " applies to " + kind_word + " checks only; remove it");
        return;
      }
      out = ReadIpv4(ctx_, *n, r.KeyLoc(key), what + " " + key);
    };
    only_for("expect_address", CheckKind::kResolve, "resolve", c.expect_address);
    only_for("expect_source", CheckKind::kHttp, "http", c.expect_source);
    if (auto n = r.Get("timeout"))
      if (auto v = ReadDuration(ctx_, *n, r.KeyLoc("timeout"), what + " timeout")) c.timeout_ms = *v;
    if (auto n = r.Get("retries"))
      if (auto v = ReadInt(ctx_, *n, r.KeyLoc("retries"), what + " retries", 0, 10)) c.retries = *v;
    if (c.from.empty() || !target_ok) return;
    ctx_.check_paths.push_back(path);
    lab.checks.push_back(std::move(c));
  }

  /// Where a name was first seen: its position, the kind of object and the name as written.
  struct Seen {
    Loc loc;
    std::string kind;
    std::string name;
  };

  static std::string At(Loc l) { return std::to_string(l.line) + ":" + std::to_string(std::max(l.col, 1)); }

  /// Records `name` in `seen` (by its folded case); false with an error naming both positions
  /// when an earlier name of the scope is the same ignoring case.
  bool Unique(std::map<std::string, Seen>& seen, const std::string& name, Loc loc, const std::string& what,
              const std::string& kind, const std::string& fix) {
    auto [prev, fresh] = seen.emplace(FoldCase(name), Seen{loc, kind, name});
    if (fresh) return true;
    ctx_.Error(loc, what + " " + Q(name) + " is the same as " + kind + " " + Q(prev->second.name) + " at " +
                        At(prev->second.loc) + " ignoring case (as Windows compares names); " + fix);
    return false;
  }

  /// Two NICs or adapters of one machine whose kernel interface names (KernelIfname: "Ethernet 2"
  /// and "Ethernet-2" are both Ethernet-2) would be the same are refused, naming both.
  void CheckKernelNames(const std::string& what, const Machine& m) {
    std::map<std::string, std::pair<std::string, Loc>> seen;
    auto check = [&](const std::string& name, Loc loc, const char* noun) {
      if (name.empty()) return;
      std::string k = KernelIfname(name);
      auto [prev, fresh] = seen.emplace(k, std::pair{name, loc});
      if (!fresh && prev->second.first != name)
        ctx_.Error(loc, what + ": " + noun + " " + Q(name) + " and " + Q(prev->second.first) + " at " +
                            At(prev->second.second) + " both become interface " + Q(k) +
                            " inside the machine (Linux interface names take no spaces and at most 15 "
                            "characters); rename one of them");
    };
    for (const auto& n : m.nics) check(n.name, n.loc, "NIC");
    for (const auto& a : m.adapters) check(a.name, a.loc, "adapter");
  }

  /// hostname: (a computer name) or the one derived from the machine's name; two machines with
  /// the same computer name (ignoring case) are an error naming both.
  void DecodeComputerName(MapReader& r, const std::string& what, Machine& m) {
    Loc loc = m.loc;
    if (auto n = r.Get("hostname")) {
      loc = r.ValueLoc("hostname");
      if (auto s = ReadString(ctx_, *n, r.KeyLoc("hostname"), what + " hostname")) {
        if (auto why = CheckComputerName(*s); !why.empty()) {
          ctx_.Error(loc, what + ": hostname " + Q(*s) + " " + why);
          return;
        }
        m.hostname = *s;
      } else {
        return;
      }
    } else {
      m.hostname = ComputerNameOf(m.name);
      if (m.hostname.empty()) {
        ctx_.Error(m.loc, what + ": no computer name can be derived from its name (it has no letters or digits); "
                              "set hostname: NAME (A-Z, a-z, 0-9 and '-')");
        return;
      }
    }
    auto [prev, fresh] = computers_seen_.emplace(FoldCase(m.hostname), Seen{loc, "", m.name});
    if (!fresh)
      ctx_.Error(loc, what + ": computer name " + Q(m.hostname) + " is also the computer name of " +
                          Q(prev->second.name) + " at " + At(prev->second.loc) +
                          " (ignoring case, as DNS compares names); set hostname: to another name on one of them");
  }

  ParseContext& ctx_;
  Machine defaults_;                  // the VM settings of `defaults:` (Machine's own defaults without it)
  std::optional<std::string> defaults_image_;  // `defaults: {image: ...}`: every VM's image unless it names one
  Loc defaults_image_loc_;
  bool defaults_startup_ok_ = true;   // defaults' memory.startup was read (or not written)
  bool startup_ok_ = true;            // the VM being read has a readable memory.startup
  std::map<std::string, Seen> machines_seen_;   // folded name -> first seen
  std::map<std::string, Seen> computers_seen_;  // folded computer name -> machine
};

/// 1-based line and column of byte `offset` of `text`.
Loc PositionOf(const std::string& text, size_t offset) {
  Loc loc{1, 1};
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++loc.line;
      loc.col = 1;
    } else {
      ++loc.col;
    }
  }
  return loc;
}

std::string SizeLimitMessage(const std::string& size) {
  return "the lab file is " + size + "; lab reads lab files of at most 1 MiB (" + std::to_string(kMaxFileBytes) +
         " bytes), and this is where it passes that: check that this is the lab file you meant, or split the lab";
}

bool Before(const Diagnostic& a, const Diagnostic& b) {
  return std::pair{a.loc.line, a.loc.col} < std::pair{b.loc.line, b.loc.col};
}

}  // namespace

LoadResult Parse(const std::string& text, const std::string& file) {
  ParseContext ctx;
  ctx.file = file;
  Lab lab;
  lab.file = file;
  // The limits first: past them nothing is built.
  yaml::LoadResult yaml;
  bool syntax_ok = false;
  if (text.size() > kMaxFileBytes) {
    ctx.Error(PositionOf(text, kMaxFileBytes),
              SizeLimitMessage(text.size() > kMaxFileBytes + 1 ? std::to_string(text.size()) + " bytes"
                                                             : "larger than 1 MiB"));
  } else {
    yaml = yaml::Load(text, kMaxNestingDepth);
    if (yaml.too_deep) {
      ctx.Error(Loc{yaml.too_deep->line + 1, yaml.too_deep->column + 1},
                "this value is nested more than " + std::to_string(kMaxNestingDepth) +
                    " levels deep; lab files nest at most " + std::to_string(kMaxNestingDepth) +
                    " levels (VMs inside VMs about 25 deep): close the open brackets or indent less");
    } else if (yaml.error) {
      ctx.Error(Loc{yaml.error->mark.line + 1, yaml.error->mark.column + 1}, "YAML syntax: " + yaml.error->message);
    } else {
      syntax_ok = true;
      for (const auto& m : yaml.merge_errors) ctx.Error(Loc{m.mark.line + 1, m.mark.column + 1}, m.message);
    }
  }
  if (syntax_ok) {
    try {
      if (yaml.documents > 1) {
        ctx.Error(Loc{yaml.second_document.line + 1, yaml.second_document.column + 1},
                  "the file holds " + std::to_string(yaml.documents) + " YAML documents; put one lab per file");
      }
      ctx.locs.Reserve(text.size() / 12);  // about one value read per 12 bytes (flow style)
      Decoder(ctx).DecodeLab(yaml.doc->Root(), lab);
      Validate(lab, ctx);
    } catch (const std::exception& e) {
      // Readers check node types before converting, so this is a bug; still never throw.
      ctx.Error(Loc{}, std::string("internal error while reading the lab file: ") + e.what());
    }
  }
  LoadResult result;
  result.diagnostics = std::move(ctx.diagnostics);
  std::stable_sort(result.diagnostics.begin(), result.diagnostics.end(), Before);
  result.diagnostics.erase(std::unique(result.diagnostics.begin(), result.diagnostics.end(),
                                       [](const Diagnostic& a, const Diagnostic& b) {
                                         return a.loc.line == b.loc.line && a.loc.col == b.loc.col &&
                                                a.severity == b.severity && a.message == b.message;
                                       }),
                           result.diagnostics.end());
  if (!result.HasErrors()) result.lab = std::move(lab);
  return result;
}

LoadResult LoadFile(const std::string& path) {
  // Read one byte past the limit, no more: enough for Parse to refuse it, whatever the file is
  // (a huge log, a pipe that never ends, /dev/zero).
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (in) {
    text.resize(kMaxFileBytes + 1);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
  }
  if (!in && !in.eof()) {
    LoadResult result;
    result.diagnostics.push_back(Diagnostic{path, Loc{}, "cannot read the lab file: " + ErrnoText(errno)});
    return result;
  }
  return Parse(text, path);
}

}  // namespace lab::schema
