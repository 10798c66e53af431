#include "hv/agent/remote.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "base/text.h"
#include "hv/agent/protocol.h"
#include "hv/kernel/terminal.h"

namespace lab::hv::agent {
namespace {

using nlohmann::json;

/// How long a call may take in the guest: making a nested VM under software emulation takes
/// seconds; run: commands as long as their own limits.
constexpr int kCallMs = 180000;
/// Making or starting a VM inside: a qemu VM boots there (its own deadline is 300 s, after the
/// guest's modules, at most 60 s): the host waits longer than the guest, so that the guest's own
/// error (with the nested VM's console) is what the user reads.
constexpr int kBootCallMs = 420000;

template <typename Spec>
json Recs(const std::vector<Recorded<Spec>>& v) {
  json a = json::array();
  for (const auto& r : v) a.push_back({{"key", r.key}, {"spec", r.spec}, {"facts", r.facts}});
  return a;
}
template <typename Spec>
std::vector<Recorded<Spec>> RecsFrom(const json& j) {
  std::vector<Recorded<Spec>> out;
  if (!j.is_array()) return out;
  for (const auto& e : j) out.push_back(Recorded<Spec>{e.value("key", ""), e.at("spec").get<Spec>(), e.value("facts", "")});
  return out;
}

json Ips(const std::vector<Ipv4>& v) {
  json a = json::array();
  for (auto ip : v) a.push_back(ip.ToString());
  return a;
}
std::vector<Ipv4> IpsFrom(const json& j) {
  std::vector<Ipv4> out;
  if (j.is_array())
    for (const auto& e : j)
      if (auto ip = Ipv4::Parse(e.get<std::string>())) out.push_back(*ip);
  return out;
}

class RemoteHypervisor final : public Hypervisor {
 public:
  RemoteHypervisor(Transport t, std::string vm, SessionRunner session)
      : transport_(std::move(t)), vm_(std::move(vm)), session_(std::move(session)) {}

  Result<json> Call(const std::string& method, json args, int timeout_ms = kCallMs) {
    auto reply = transport_(HvRequest(method, std::move(args)), timeout_ms);
    if (!reply) return reply.status().Prefixed("agent of VM '" + vm_ + "'");
    return ParseHvReply(*reply);
  }
  Result<std::string> Facts(const std::string& method, json args, int timeout_ms = kCallMs) {
    auto r = Call(method, std::move(args), timeout_ms);
    if (!r) return r.status();
    return r->is_string() ? r->get<std::string>() : std::string("{}");
  }
  Status Do(const std::string& method, json args, int timeout_ms = kCallMs) {
    return Call(method, std::move(args), timeout_ms).status();
  }
  bool Ask(const std::string& method, json args) {
    auto r = Call(method, std::move(args), 30000);
    return r.ok() && r->is_boolean() && r->get<bool>();
  }

  Result<std::string> CreateNetwork(const NetworkSpec&) override {
    return Status::Error("lab networks live on the real machine, not inside VM '" + vm_ + "'");
  }
  Status RemoveNetwork(const NetworkSpec&, const std::string&) override { return Status::Ok(); }

  Result<std::string> CreatePartition(const PartitionSpec& s) override { return Facts("CreatePartition", {{"spec", s}}, kBootCallMs); }
  Status RemovePartition(const PartitionSpec& s, const std::string& f) override {
    return Do("RemovePartition", {{"spec", s}, {"facts", f}});
  }
  bool PartitionRunning(const PartitionSpec& s, const std::string& f) override {
    return Ask("PartitionRunning", {{"spec", s}, {"facts", f}});
  }
  Status StopPartition(const PartitionSpec& s, const std::string& f) override {
    return Do("StopPartition", {{"spec", s}, {"facts", f}});
  }
  Result<std::string> SetPartitionMemory(const PartitionSpec& s, const std::string& f) override {
    return Facts("SetPartitionMemory", {{"spec", s}, {"facts", f}});
  }
  Status SavePartition(const PartitionSpec& s, const std::string& f) override {
    return Do("SavePartition", {{"spec", s}, {"facts", f}});
  }
  Status ResumePartition(const PartitionSpec& s, const std::string& f) override {
    return Do("ResumePartition", {{"spec", s}, {"facts", f}}, kBootCallMs);
  }
  bool PartitionSaved(const PartitionSpec& s, const std::string& f) override {
    return Ask("PartitionSaved", {{"spec", s}, {"facts", f}});
  }
  Status CreateCheckpoint(const PartitionSpec& s, const std::string& f, const std::string& name) override {
    return Do("CreateCheckpoint", {{"spec", s}, {"facts", f}, {"name", name}});
  }
  Status RestoreCheckpoint(const PartitionSpec& s, const std::string& name) override {
    return Do("RestoreCheckpoint", {{"spec", s}, {"name", name}});
  }
  std::vector<std::string> Checkpoints(const PartitionSpec& s) override {
    auto r = Call("Checkpoints", {{"spec", s}}, 30000);
    if (!r.ok() || !r->is_array()) return {};
    return r->get<std::vector<std::string>>();
  }
  Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionSpec& s) override {
    auto r = Call("CheckpointDetails", {{"spec", s}}, 30000);
    if (!r) return r.status();
    std::vector<CheckpointInfo> out;
    for (const auto& e : *r) out.push_back(CheckpointInfo{e.value("name", ""), e.value("taken", int64_t{0}), e.value("bytes", uint64_t{0})});
    return out;
  }
  Status RemoveCheckpoint(const PartitionSpec& s, const std::string& name) override {
    return Do("RemoveCheckpoint", {{"spec", s}, {"name", name}});
  }

  Result<std::string> RunCommands(const RunSpec& s) override {
    int budget = s.timeout_ms * static_cast<int>(std::max<size_t>(1, s.commands.size())) + 60000;
    auto r = Call("RunCommands", {{"spec", s}}, budget);
    if (!r) return r.status();
    return r->is_string() ? r->get<std::string>() : std::string("{}");
  }
  Status ClearRunLog(const RunSpec& s) override { return Do("ClearRunLog", {{"spec", s}}); }
  Result<std::string> RunLog(const std::string& machine) override {
    auto r = Call("RunLog", {{"machine", machine}}, 30000);
    if (!r) return r.status();
    return r->is_string() ? r->get<std::string>() : std::string();
  }

  Result<std::string> CreateNic(const NicSpec& s) override {
    return Status::Error("NIC '" + s.Written() + "': hosts are physical machines, not inside VM '" + vm_ + "'");
  }
  Status RemoveNic(const NicSpec&, const std::string&) override { return Status::Ok(); }

  Result<std::string> CreateSwitch(const SwitchSpec& s) override { return Facts("CreateSwitch", {{"spec", s}}); }
  Status RemoveSwitch(const SwitchSpec& s, const std::string& f) override {
    return Do("RemoveSwitch", {{"spec", s}, {"facts", f}});
  }
  Result<std::string> SetSwitch(const SwitchSpec& s, const std::string& f) override {
    return Facts("SetSwitch", {{"spec", s}, {"facts", f}});
  }
  Result<std::string> ConnectAdapter(const AdapterSpec& s) override { return Facts("ConnectAdapter", {{"spec", s}}); }
  Status RemoveAdapter(const AdapterSpec& s, const std::string& f) override {
    return Do("RemoveAdapter", {{"spec", s}, {"facts", f}});
  }
  Result<std::string> SetAdapter(const AdapterSpec& s, const std::string& f) override {
    return Facts("SetAdapter", {{"spec", s}, {"facts", f}});
  }
  Status RepairAdapter(const AdapterSpec& s) override { return Do("RepairAdapter", {{"spec", s}}); }
  Status RepairSwitch(const SwitchSpec& s) override { return Do("RepairSwitch", {{"spec", s}}); }
  Status AnnounceAdapter(const AdapterSpec& s, const std::vector<BridgeAt>& flush) override {
    json f = json::array();
    for (const auto& b : flush) f.push_back({{"owner", b.owner}, {"ifname", b.ifname}});
    return Do("AnnounceAdapter", {{"spec", s}, {"flush", f}});
  }
  Status SetLink(const PartitionSpec& m, const std::string& ifname, bool up) override {
    return Do("SetLink", {{"spec", m}, {"ifname", ifname}, {"up", up}});
  }

  Result<std::string> CreateNat(const NatSpec& s) override { return Facts("CreateNat", {{"spec", s}}); }
  Status RemoveNat(const NatSpec& s, const std::string& f) override { return Do("RemoveNat", {{"spec", s}, {"facts", f}}); }
  Result<std::string> SetDns(const DnsSpec& s) override { return Facts("SetDns", {{"spec", s}}); }
  Status ClearDns(const DnsSpec& s, const std::string& f) override { return Do("ClearDns", {{"spec", s}, {"facts", f}}); }

  Result<std::string> StartStandIn(const StandInSpec&) override {
    return Status::Error("stand-ins live on the real machine, not inside VM '" + vm_ + "'");
  }
  Status StopStandIn(const StandInSpec&, const std::string&) override { return Status::Ok(); }
  bool StandInRunning(const StandInSpec&, const std::string&) override { return false; }

  Drift Observe(const ObserveRequest& r) override {
    json args = ToJson(r);
    args["want_seen"] = r.seen != nullptr;
    auto reply = Call("Observe", std::move(args), 60000);
    Drift d;
    if (!reply) {
      // The agent does not answer: nothing inside can be seen, which is what drift says.
      for (const auto& p : r.partitions) d[p.key] = "agent of VM '" + vm_ + "' does not answer: " + reply.message();
      return d;
    }
    if (r.seen) MergeSeen(reply->value("seen", json::object()), r.seen);
    return DriftFrom(reply->value("drift", json::object()));
  }

  Result<ProbeAnswer> Probe(const PartitionSpec& m, const ProbeRequest& p) override {
    auto r = Call("Probe", {{"spec", m}, {"kind", p.kind}, {"target", p.target}, {"timeout_ms", p.timeout_ms}},
                  p.timeout_ms + 30000);
    if (!r) return r.status();
    return ProbeAnswer{r->value("ok", false), r->value("detail", ""), r->value("value", "")};
  }

  Result<int> Exec(const PartitionSpec& m, const hv::ExecRequest& x) override {
    if (session_) {
      json args = {{"spec", m}, {"argv", x.argv}, {"env", x.env}, {"workdir", x.workdir}, {"user", x.user}, {"tty", x.tty}};
      winsize ws{};
      bool sized = x.in_fd == 0 ? kernel::TerminalSize(&ws) : ::ioctl(x.in_fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row;
      if (x.tty && sized) {
        args["rows"] = ws.ws_row;
        args["cols"] = ws.ws_col;
      }
      return session_(std::move(args), x.tty, x.in_fd, x.out_fd);
    }
    auto r = Call("Exec", {{"spec", m}, {"argv", x.argv}, {"env", x.env}, {"workdir", x.workdir}, {"user", x.user}},
                  24 * 3600 * 1000);
    if (!r) return r.status();
    std::string out = r->value("output", "");
    size_t off = 0;
    while (off < out.size()) {
      ssize_t w = ::write(1, out.data() + off, out.size() - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    return r->value("exit_code", 1);
  }

  void TearingDownLab() override { (void)Call("TearingDownLab", json::object(), 30000); }
  Status RemoveLabRoot() override { return Do("RemoveLabRoot", json::object()); }

 private:
  Transport transport_;
  std::string vm_;
  SessionRunner session_;
};

/// Runs `fn` with stdin from /dev/null and stdout/stderr into a file, and returns what it wrote.
template <typename Fn>
std::string Captured(Fn&& fn) {
  char path[] = "/tmp/lab-agent-exec-XXXXXX";
  int out = ::mkstemp(path);
  if (out < 0) {
    fn();
    return "";
  }
  ::unlink(path);
  std::fflush(stdout);
  std::fflush(stderr);
  int saved[3] = {::dup(0), ::dup(1), ::dup(2)};
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, 0);
  ::dup2(out, 1);
  ::dup2(out, 2);
  fn();
  std::fflush(stdout);
  std::fflush(stderr);
  for (int i = 0; i < 3; ++i) {
    if (saved[i] >= 0) ::dup2(saved[i], i), ::close(saved[i]);
  }
  if (null >= 0) ::close(null);
  std::string text;
  ::lseek(out, 0, SEEK_SET);
  char buf[65536];
  for (ssize_t n; (n = ::read(out, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(out);
  return text;
}

}  // namespace

std::unique_ptr<Hypervisor> MakeRemoteHypervisor(Transport transport, std::string vm, SessionRunner session) {
  return std::make_unique<RemoteHypervisor>(std::move(transport), std::move(vm), std::move(session));
}

json ToJson(const ObserveRequest& r) {
  return {{"networks", Recs(r.networks)}, {"partitions", Recs(r.partitions)}, {"nics", Recs(r.nics)},
          {"switches", Recs(r.switches)}, {"adapters", Recs(r.adapters)},     {"nats", Recs(r.nats)},
          {"dns", Recs(r.dns)},           {"standins", Recs(r.standins)}};
}

ObserveRequest ObserveRequestFrom(const json& j) {
  ObserveRequest r;
  r.networks = RecsFrom<NetworkSpec>(j.value("networks", json()));
  r.partitions = RecsFrom<PartitionSpec>(j.value("partitions", json()));
  r.nics = RecsFrom<NicSpec>(j.value("nics", json()));
  r.switches = RecsFrom<SwitchSpec>(j.value("switches", json()));
  r.adapters = RecsFrom<AdapterSpec>(j.value("adapters", json()));
  r.nats = RecsFrom<NatSpec>(j.value("nats", json()));
  r.dns = RecsFrom<DnsSpec>(j.value("dns", json()));
  r.standins = RecsFrom<StandInSpec>(j.value("standins", json()));
  return r;
}

json ToJson(const Drift& d) {
  json j = json::object();
  for (const auto& [key, f] : d) j[key] = {{"what", f.what}, {"in_place", f.in_place}};
  return j;
}

Drift DriftFrom(const json& j) {
  Drift d;
  if (j.is_object())
    for (const auto& [key, f] : j.items()) d[key] = Finding(f.value("what", ""), f.value("in_place", false));
  return d;
}

json ToJson(const Seen& s) {
  json ifs = json::object();
  for (const auto& [key, i] : s.interfaces) {
    json addrs = json::array();
    for (const auto& a : i.addresses) addrs.push_back(a.ToString());
    ifs[key] = {{"machine", i.machine}, {"name", i.name}, {"up", i.up}, {"addresses", addrs}};
  }
  json gw = json::object(), dns = json::object();
  for (const auto& [m, v] : s.default_gateways) gw[m] = Ips(v);
  for (const auto& [m, v] : s.dns_servers) dns[m] = Ips(v);
  return {{"interfaces", ifs}, {"default_gateways", gw}, {"dns_servers", dns}};
}

void MergeSeen(const json& j, Seen* into) {
  if (!into || !j.is_object()) return;
  // Each taken out first: items() of a temporary would outlive it.
  const json ifs = j.value("interfaces", json::object());
  const json gws = j.value("default_gateways", json::object());
  const json dns = j.value("dns_servers", json::object());
  for (const auto& [key, i] : ifs.items()) {
    SeenInterface s{i.value("machine", ""), i.value("name", ""), i.value("up", false), {}};
    for (const auto& a : i.value("addresses", json::array()))
      if (auto c = Cidr::Parse(a.get<std::string>())) s.addresses.push_back(*c);
    into->interfaces[key] = std::move(s);
  }
  for (const auto& [m, v] : gws.items()) into->default_gateways[m] = IpsFrom(v);
  for (const auto& [m, v] : dns.items()) into->dns_servers[m] = IpsFrom(v);
}

Result<json> Dispatch(Hypervisor& hv, const std::string& method, const json& a) {
  try {
    auto facts = [&] { return a.value("facts", std::string("{}")); };
    auto done = [](const Status& st) -> Result<json> {
      if (!st.ok()) return st;
      return json();
    };
    auto made = [](const Result<std::string>& r) -> Result<json> {
      if (!r) return r.status();
      return json(*r);
    };
    if (method == "CreatePartition") return made(hv.CreatePartition(a.at("spec").get<PartitionSpec>()));
    if (method == "RemovePartition") return done(hv.RemovePartition(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "PartitionRunning") return json(hv.PartitionRunning(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "StopPartition") return done(hv.StopPartition(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "SetPartitionMemory") return made(hv.SetPartitionMemory(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "SavePartition") return done(hv.SavePartition(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "ResumePartition") return done(hv.ResumePartition(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "PartitionSaved") return json(hv.PartitionSaved(a.at("spec").get<PartitionSpec>(), facts()));
    if (method == "CreateCheckpoint")
      return done(hv.CreateCheckpoint(a.at("spec").get<PartitionSpec>(), facts(), a.value("name", "")));
    if (method == "RestoreCheckpoint")
      return done(hv.RestoreCheckpoint(a.at("spec").get<PartitionSpec>(), a.value("name", "")));
    if (method == "Checkpoints") return json(hv.Checkpoints(a.at("spec").get<PartitionSpec>()));
    if (method == "CheckpointDetails") {
      auto all = hv.CheckpointDetails(a.at("spec").get<PartitionSpec>());
      if (!all) return all.status();
      json out = json::array();
      for (const auto& c : *all) out.push_back({{"name", c.name}, {"taken", c.taken}, {"bytes", c.bytes}});
      return out;
    }
    if (method == "RemoveCheckpoint")
      return done(hv.RemoveCheckpoint(a.at("spec").get<PartitionSpec>(), a.value("name", "")));
    if (method == "RunCommands") return made(hv.RunCommands(a.at("spec").get<RunSpec>()));
    if (method == "ClearRunLog") return done(hv.ClearRunLog(a.at("spec").get<RunSpec>()));
    if (method == "RunLog") return made(hv.RunLog(a.value("machine", "")));
    if (method == "CreateSwitch") return made(hv.CreateSwitch(a.at("spec").get<SwitchSpec>()));
    if (method == "RemoveSwitch") return done(hv.RemoveSwitch(a.at("spec").get<SwitchSpec>(), facts()));
    if (method == "SetSwitch") return made(hv.SetSwitch(a.at("spec").get<SwitchSpec>(), facts()));
    if (method == "ConnectAdapter") return made(hv.ConnectAdapter(a.at("spec").get<AdapterSpec>()));
    if (method == "RemoveAdapter") return done(hv.RemoveAdapter(a.at("spec").get<AdapterSpec>(), facts()));
    if (method == "SetAdapter") return made(hv.SetAdapter(a.at("spec").get<AdapterSpec>(), facts()));
    if (method == "RepairAdapter") return done(hv.RepairAdapter(a.at("spec").get<AdapterSpec>()));
    if (method == "RepairSwitch") return done(hv.RepairSwitch(a.at("spec").get<SwitchSpec>()));
    if (method == "AnnounceAdapter") {
      std::vector<BridgeAt> flush;
      for (const auto& b : a.value("flush", json::array())) flush.push_back(BridgeAt{b.value("owner", ""), b.value("ifname", "")});
      return done(hv.AnnounceAdapter(a.at("spec").get<AdapterSpec>(), flush));
    }
    if (method == "SetLink")
      return done(hv.SetLink(a.at("spec").get<PartitionSpec>(), a.value("ifname", ""), a.value("up", true)));
    if (method == "CreateNat") return made(hv.CreateNat(a.at("spec").get<NatSpec>()));
    if (method == "RemoveNat") return done(hv.RemoveNat(a.at("spec").get<NatSpec>(), facts()));
    if (method == "SetDns") return made(hv.SetDns(a.at("spec").get<DnsSpec>()));
    if (method == "ClearDns") return done(hv.ClearDns(a.at("spec").get<DnsSpec>(), facts()));
    if (method == "Observe") {
      ObserveRequest r = ObserveRequestFrom(a);
      Seen seen;
      if (a.value("want_seen", false)) r.seen = &seen;
      Drift d = hv.Observe(r);
      return json{{"drift", ToJson(d)}, {"seen", ToJson(seen)}};
    }
    if (method == "Probe") {
      ProbeRequest p{a.value("kind", ""), a.value("target", ""), a.value("timeout_ms", 2000)};
      auto r = hv.Probe(a.at("spec").get<PartitionSpec>(), p);
      if (!r) return r.status();
      return json{{"ok", r->ok}, {"detail", r->detail}, {"value", r->value}};
    }
    if (method == "Exec") {
      hv::ExecRequest x;
      x.argv = a.value("argv", std::vector<std::string>());
      x.env = a.value("env", std::vector<std::string>());
      x.workdir = a.value("workdir", "");
      x.user = a.value("user", "");
      if (x.argv.empty()) return Status::Error("exec needs a command");
      auto spec = a.at("spec").get<PartitionSpec>();
      Result<int> code = 0;
      std::string output = Captured([&] { code = hv.Exec(spec, x); });
      if (!code) return code.status();
      return json{{"exit_code", *code}, {"output", output}};
    }
    if (method == "TearingDownLab") {
      hv.TearingDownLab();
      return json();
    }
    if (method == "RemoveLabRoot") return done(hv.RemoveLabRoot());
  } catch (const nlohmann::json::exception& e) {
    return Status::Error("agent: malformed arguments of " + method + ": " + e.what());
  }
  return Status::Error("agent: unknown hypervisor method '" + method + "'");
}

}  // namespace lab::hv::agent
