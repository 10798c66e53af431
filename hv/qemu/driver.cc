#include "hv/qemu/driver.h"

#include "hv/qemu_host.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "base/proc.h"
#include "base/text.h"
#include "hv/agent/protocol.h"
#include "hv/agent/remote.h"
#include "hv/kernel/doctor.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"
#include "hv/linux_observe.h"
#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/control.h"
#include "hv/qemu/disk.h"
#include "hv/qemu/doctor.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"
#include "hv/qemu/process.h"
#include "hv/qemu/qmp.h"
#include "hv/qemu/template.h"

namespace lab::hv {

std::unique_ptr<Hypervisor> MakeLinuxHypervisor(const LabContext& ctx);

namespace qemu {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

/// A guest's boot under software emulation on a loaded 2-core machine takes 5-20 s; ten at once
/// take longer.
constexpr int kBootMs = 300000;
constexpr int kNestedBoots = 3;
constexpr int kNestedBootMs = 90000;
constexpr int kQuitMs = 5000;

json ParseFacts(const std::string& facts) {
  json j = json::parse(facts, nullptr, false);
  return j.is_object() ? j : json::object();
}

Status WriteFile(const std::string& path, const std::string& text) {
  if (!WriteFileAtomic(path, text)) return ErrnoStatus("cannot write " + path);
  return Status::Ok();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Tail(const std::string& path, size_t lines) {
  auto all = Split(ReadAll(path), '\n');
  while (!all.empty() && all.back().empty()) all.pop_back();
  if (all.size() > lines) all.erase(all.begin(), all.end() - static_cast<long>(lines));
  std::string out;
  for (const auto& l : all) out += "\n    " + l;
  return out;
}

/// This process's own binary (the guest runs the same file, which it sees through its root).
std::string SelfBinary() {
  std::error_code ec;
  return fs::read_symlink("/proc/self/exe", ec).string();
}

class Router final : public Hypervisor {
 public:
  explicit Router(LabContext ctx) : ctx_(std::move(ctx)), local_(MakeLinuxHypervisor(ctx_)) {}

  // --- where things are ------------------------------------------------------------------
  /// The agent a chain of qemu VMs (absolute, outermost first) is reached through from here:
  /// null when the chain is this hypervisor's own (the object is here).
  Hypervisor* Route(const std::vector<std::string>& within) {
    size_t n = ctx_.inside.size();
    if (within.size() <= n) return nullptr;
    return &Guest(within[n]).remote();
  }
  Hypervisor& At(const std::vector<std::string>& within) {
    Hypervisor* r = Route(within);
    return r ? *r : *local_;
  }
  /// The chain a machine's own objects live in: its `within`, and itself when it is a qemu VM.
  static std::vector<std::string> Home(const PartitionSpec& m) {
    auto h = m.within;
    if (m.IsQemu()) h.push_back(m.name);
    return h;
  }
  /// The guest side of a qemu VM's adapter: inside the VM.
  static std::vector<std::string> GuestChain(const AdapterSpec& s) {
    auto h = s.within;
    h.push_back(s.vm);
    return h;
  }
  /// This hypervisor runs inside `s` (it is the agent's own VM).
  bool IsSelf(const PartitionSpec& s) const { return IsSelf(s.name); }
  bool IsSelf(const std::string& vm) const { return !ctx_.inside.empty() && ctx_.inside.back() == vm; }
  /// A qemu VM whose QEMU runs at this level.
  bool Here(const PartitionSpec& s) const { return s.IsQemu() && s.within.size() == ctx_.inside.size(); }

  std::string RunDir(const std::string& vm) const { return ctx_.run_root + "/" + ctx_.Mark() + "/q/" + KernelPathName(vm); }
  std::string DiskDir(const std::string& vm) const {
    return ctx_.state_root + "/disks/" + ctx_.Mark() + "/q/" + KernelPathName(vm);
  }
  std::string MachineRun(const std::string& m) const { return ctx_.run_root + "/" + ctx_.Mark() + "/m/" + KernelPathName(m); }

  // --- the agents of the qemu VMs at this level ------------------------------------------
  struct GuestLink {
    std::string vm;
    std::string socket;
    std::mutex mu;
    std::shared_ptr<AgentClient> client;
    std::unique_ptr<Hypervisor> hv;
    Hypervisor& remote() { return *hv; }
  };

  GuestLink& Guest(const std::string& vm) {
    std::lock_guard lock(guests_mu_);
    auto& g = guests_[vm];
    if (!g) {
      g = std::make_unique<GuestLink>();
      g->vm = vm;
      g->socket = RunDir(vm) + "/agent.sock";
      auto inside = ctx_.inside;
      inside.push_back(vm);
      json context = {{"lab", ctx_.lab}, {"uid", ctx_.uid}, {"inside", inside},
                      {"shared_state", "/lab-host" + (ctx_.shared_state.empty() ? ctx_.state_root : ctx_.shared_state)}};
      GuestLink* link = g.get();
      g->hv = agent::MakeRemoteHypervisor(
          [this, link, context](const json& request, int timeout_ms) -> Result<json> {
            json req = request;
            if (req.value("op", "") == "hv") req["args"]["ctx"] = context;
            return SendTo(*link, req, timeout_ms);
          },
          vm,
          [this, link, context](json args, bool tty, int in_fd, int out_fd) -> Result<int> {
            if (!FindQemu(RunDir(link->vm)).ok()) return Status::Error("VM '" + link->vm + "' is not running (no QEMU)");
            args["ctx"] = context;
            auto client = Client(*link, 5000);
            if (!client) return client.status();
            return RunSession(**client, agent::SessionRequest(std::move(args)), tty, in_fd, out_fd);
          });
    }
    return *g;
  }

  /// Sends to the VM's agent, failing at once when its QEMU is not running.
  Result<json> SendTo(GuestLink& g, const json& request, int timeout_ms) {
    if (!FindQemu(RunDir(g.vm)).ok()) return Status::Error("VM '" + g.vm + "' is not running (no QEMU)");
    return Send(g, request, timeout_ms);
  }
  /// Many threads share the link's one connection (the agent answers concurrently); a new one
  /// is made only when it broke (QEMU exited or restarted).
  static Result<std::shared_ptr<AgentClient>> Client(GuestLink& g, int timeout_ms) {
    std::lock_guard lock(g.mu);
    if (!g.client || g.client->Broken()) {
      auto c = AgentClient::Connect(g.socket, std::min(timeout_ms, 5000));
      if (!c) return c.status();
      g.client = std::make_shared<AgentClient>(std::move(*c));
    }
    return g.client;
  }
  static Result<json> Send(GuestLink& g, const json& request, int timeout_ms) {
    auto client = Client(g, timeout_ms);
    if (!client) return client.status();
    return (*client)->Call(request, timeout_ms);
  }

  /// A QEMU of VM `vm` started from a memory state (incoming): the agent's socket gets its client
  /// before the state loads (the state says the host was connected), then the VM runs. A failure
  /// to resume is prefixed with `state` when given.
  Status ConnectAndResume(const std::string& vm, const QemuProcess& p, const std::string& state) {
    {
      std::lock_guard lock(guests_mu_);
      guests_.erase(vm);  // a new QEMU: a new connection
    }
    {
      GuestLink& g = Guest(vm);
      std::lock_guard lock(g.mu);
      auto agent = AgentClient::Connect(g.socket, 5000);
      if (!agent) return agent.status();
      g.client = std::make_shared<AgentClient>(std::move(*agent));
    }
    auto qmp = QmpClient::Connect(p.qmp_socket(), 5000);
    if (!qmp) return qmp.status();
    Status resumed = Resume(*qmp, 120000);
    return resumed.ok() || state.empty() ? resumed : resumed.Prefixed(state);
  }

  /// Waits until the VM's agent answers (the guest is up), at most `timeout_ms`.
  Result<agent::PingReply> WaitAgent(const std::string& vm, int timeout_ms) {
    GuestLink& g = Guest(vm);
    auto reply = Send(g, agent::PingRequest(), timeout_ms);
    if (!reply) return reply.status();
    return agent::ParsePingReply(*reply);
  }

  // --- qemu VMs at this level --------------------------------------------------------------
  std::optional<QemuProcess> ProcessOf(const PartitionSpec& s, const std::string& facts) const {
    // The pid file first: a VM started again from its saved state (ResumePartition, whose facts
    // stay as they were) runs in a QEMU the facts do not name.
    if (auto found = FindQemu(RunDir(s.name))) return *found;
    json q = ParseFacts(facts).value("qemu", json::object());
    QemuProcess p;
    p.run_dir = RunDir(s.name);
    p.pid = q.value("pid", 0);
    p.start_time = q.value("start_time", uint64_t{0});
    if (p.pid <= 0) {
      auto found = FindQemu(p.run_dir);
      if (!found) return std::nullopt;
      return *found;
    }
    return p;
  }

  Result<GuestKernel> Kernel() {
    std::lock_guard lock(boot_mu_);
    if (!kernel_) {
      auto k = FetchKernel(KernelCacheDir(ctx_.shared_state.empty() ? ctx_.state_root : ctx_.shared_state));
      if (!k) return k.status().Prefixed("the guest kernel");
      kernel_ = *k;
    }
    return *kernel_;
  }

  std::string GuestInit() const {
    fs::path beside = fs::path(ctx_.init_path).parent_path() / "lab-guest-init";
    return beside.string();
  }

  /// The initramfs for `k` and this lab-guest-init, built once per (kernel, init) under the
  /// state directory and kept: every qemu VM boots the same file.
  Result<std::string> Initramfs(const GuestKernel& k) {
    std::lock_guard lock(boot_mu_);
    std::string init = GuestInit();
    auto bytes = ReadFile(init);
    if (!bytes) return Status::Error("lab-guest-init not found at " + init + " (build it: it sits beside lab-init)");
    std::string busybox = StaticBusybox();
    std::string key = k.release + "-" + Hex(Fnv1a64(*bytes + "|" + busybox), 16);
    std::string dir = ctx_.state_root + "/qemu/initramfs";
    std::string path = dir + "/" + key + ".img";
    if (fs::exists(path)) return path;
    if (!ctx_.shared_state.empty()) {
      std::string shared = ctx_.shared_state + "/qemu/initramfs/" + key + ".img";
      if (fs::exists(shared)) return shared;
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::string aside = path + ".tmp-" + std::to_string(::getpid());
    LAB_RETURN_IF_ERROR(BuildInitramfs(k, init, busybox, aside).Prefixed("the guest initramfs"));
    if (::rename(aside.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + aside);
    return path;
  }

  /// lab next to lab-init (the build tree), else this process's own binary (an installed lab).
  std::string LabBinary() const {
    fs::path beside = fs::path(ctx_.init_path).parent_path() / "lab";
    std::error_code ec;
    if (fs::exists(beside, ec)) return beside.string();
    return SelfBinary();
  }
  /// lab's tools for images (lab, lab-init and their libraries: kernel::EnsureToolsForImages),
  /// one directory per build of them, shared with the partition driver's.
  Result<std::string> ToolsForImages() {
    std::string id;
    for (const std::string& f : {LabBinary(), ctx_.init_path}) {
      struct stat st {};
      if (::stat(f.c_str(), &st) == 0)
        id += std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
              std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016zx", std::hash<std::string>{}(id));
    std::string dir = ctx_.state_root + "/images/tools/" + hex;
    LAB_RETURN_IF_ERROR(kernel::EnsureToolsForImages(dir, LabBinary(), ctx_.init_path));
    return dir;
  }

  /// The VM's own disk (its differencing disk over its image's read-only disk), made once: kept
  /// across Stop-VM/Start-VM, removed with the VM.
  Result<std::string> VmDisk(const PartitionSpec& s) {
    std::string path = DiskDir(s.name) + "/disk.qcow2";
    if (fs::exists(path)) return path;
    std::string raw;
    {
      std::lock_guard lock(boot_mu_);  // one build of an image's disk per process
      auto tools = ToolsForImages();
      if (!tools) return tools.status().Prefixed("lab's tools for image '" + s.image + "'");
      auto made = EnsureImageDisk(DiskCacheDir(ctx_.state_root), s.image_key, s.image_layers, *tools);
      if (!made) return made.status().Prefixed("the disk of image '" + s.image + "'");
      raw = *made;
    }
    std::error_code ec;
    fs::create_directories(DiskDir(s.name), ec);
    if (ec) return Status::Error("cannot create " + DiskDir(s.name) + ": " + ec.message());
    LAB_RETURN_IF_ERROR(CreateVmDisk(path, raw).Prefixed("its disk"));
    return path;
  }

  /// Save-VM's memory state of VM `vm` (kept with its disk), and beside it what starting from it
  /// needs: the kernel and initramfs it ran and its adapters at the time ({"boot", "adapters"}).
  std::string StateFile(const std::string& vm) const { return DiskDir(vm) + "/state.vm"; }
  std::string StateDevices(const std::string& vm) const { return DiskDir(vm) + "/state.json"; }

  /// The machine QEMU runs for VM `s`: kernel, initramfs, processor, memory and root (its image's
  /// disk, or the host's tree). Its run directory exists afterwards.
  /// `boot` (a saved state's {"kernel", "initrd"}): the files it was saved running, used when they
  /// are still there (the state holds that kernel's memory; resolving the kernel package again
  /// would also cost seconds of apt-cache).
  Result<QemuConfig> ConfigOf(const PartitionSpec& s, const json& boot = json::object()) {
    const std::string what = "VM '" + s.name + "'";
    std::string vmlinux = boot.value("kernel", ""), initramfs = boot.value("initrd", "");
    if (vmlinux.empty() || initramfs.empty() || !fs::exists(vmlinux) || !fs::exists(initramfs)) {
      auto kernel = Kernel();
      if (!kernel) return kernel.status().Prefixed(what);
      auto initrd = Initramfs(*kernel);
      if (!initrd) return initrd.status().Prefixed(what);
      vmlinux = kernel->vmlinux;
      initramfs = *initrd;
    }
    LAB_RETURN_IF_ERROR(kernel::EnsureRunRoot(ctx_.run_root).Prefixed(what));
    std::string run = RunDir(s.name);
    std::error_code ec;
    fs::create_directories(run, ec);
    if (ec) return Status::Error(what + ": cannot create " + run + ": " + ec.message());
    {
      std::ofstream(run + "/name") << s.name;
    }
    QemuConfig c;
    // The accelerator the rules judged it with at plan time (the same cached verdict), or inside
    // a guest lab exposed the extensions to, its KVM.
    bool kvm = ctx_.inside.empty()
                   ? ProbeQemuHost(ctx_.state_root + "/qemu").accel == model::Accelerator::kKvm
                   : ChosenAccel(true) == "kvm";
    c.accel = kvm ? Accel::kKvm : Accel::kTcg;
    c.expose_virtualization_extensions = s.expose_virtualization_extensions;
    c.processors = std::max(1, s.processor_count);
    c.memory_mib = static_cast<int>(std::max<uint64_t>(s.memory_bytes >> 20, 128));
    c.kernel = vmlinux;
    c.initrd = initramfs;
    c.run_dir = run;
    if (s.image.empty()) {
      c.root = RootKind::k9p;
      c.root_dir = "/";
      // The guest runs this very binary, through its read-only view of this machine's tree
      // (/lab-host: the guest's own /tmp and /run would hide a build under them).
      c.agent_binary = "/lab-host" + SelfBinary();
    } else {
      auto disk = VmDisk(s);
      if (!disk) return disk.status().Prefixed(what);
      c.root = RootKind::kDisk;
      c.disk = *disk;
      c.agent_binary = "/opt/lab/lab";  // the image's copy of lab's tools (EnsureToolsForImages)
    }
    return c;
  }

  Result<std::string> CreateQemuVm(const PartitionSpec& s) {
    if (auto resumed = CreateFromTemplate(s)) return *resumed;  // else: a cold boot, said why
    const std::string what = "VM '" + s.name + "'";
    auto config = ConfigOf(s);
    if (!config) return config.status();
    QemuConfig& c = *config;
    LAB_RETURN_IF_ERROR(WriteFile(c.run_dir + "/boot.json", json{{"kernel", c.kernel}, {"initrd", c.initrd}}.dump()).Prefixed(what));
    // An earlier QEMU of this VM (a run killed after starting it) is ended first; a saved state
    // is void once the VM boots afresh.
    if (auto old = FindQemu(c.run_dir)) (void)StopQemu(*old, 0, kQuitMs);
    ::unlink(StateFile(s.name).c_str());
    ::unlink(StateDevices(s.name).c_str());
    // A VM under the nested KVM of a guest was seen to stop early in its boot, its console silent
    // and its processor idle for minutes (1 boot in 4 here, under emulated SVM), while the next
    // boot of the same VM came up in 20-40 s: there it gets kNestedBoots boots of kNestedBootMs
    // each (the console of a boot given up is kept as console.N.log), elsewhere one of kBootMs.
    const bool nested = !ctx_.inside.empty() && c.accel == Accel::kKvm;
    if (nested) c.ioeventfd = false;
    const int boots = nested ? kNestedBoots : 1;
    Result<QemuProcess> p = Status::Error("not started");
    Result<agent::PingReply> ping = Status::Error("not started");
    for (int boot = 1;; ++boot) {
      p = StartQemu(c);
      if (!p) return p.status().Prefixed(what);
      {
        std::lock_guard lock(guests_mu_);
        guests_.erase(s.name);  // a new QEMU: a new connection
      }
      ping = WaitAgent(s.name, nested ? kNestedBootMs : kBootMs);
      if (ping || boot == boots) break;
      (void)StopQemu(*p, 0, kQuitMs);
      std::error_code ec;
      fs::rename(p->console_log(), c.run_dir + "/console." + std::to_string(boot) + ".log", ec);
    }
    // From here the VM exists: an error below stops it again.
    auto fail = [&](const Status& st) -> Status {
      {
        std::lock_guard lock(guests_mu_);
        guests_.erase(s.name);
      }
      (void)StopQemu(*p, 0, kQuitMs);
      return Status::Error(st.Prefixed(what).message() + "; its console said:" + Tail(p->console_log(), 8));
    };
    if (!ping) return fail(ping.status().Prefixed("its agent did not answer" + std::string(boots > 1 ? " in " + std::to_string(boots) + " boots" : "")));
    // The guest takes on its identity (computer name, hosts file) and readies the partition
    // driver inside it.
    auto adopted = Guest(s.name).remote().CreatePartition(s);
    if (!adopted) return fail(adopted.status());
    return json{{"qemu", {{"pid", p->pid}, {"start_time", p->start_time}}},
                {"accel", c.accel == Accel::kKvm ? "kvm" : "tcg"},
                {"kernel", ping->kernel}}
        .dump();
  }

  // --- VMs on images started from a template (hv/qemu/template.h) --------------------------
  /// The image's read-only disk of `s` (made once per image and lab build).
  Result<std::string> ImageDisk(const PartitionSpec& s) {
    std::lock_guard lock(boot_mu_);  // one build of an image's disk per process
    auto tools = ToolsForImages();
    if (!tools) return tools.status().Prefixed("lab's tools for image '" + s.image + "'");
    auto made = EnsureImageDisk(DiskCacheDir(ctx_.state_root), s.image_key, s.image_layers, *tools);
    if (!made) return made.status().Prefixed("the disk of image '" + s.image + "'");
    return *made;
  }

  /// The machine of VM `s` as its template boots it (ConfigOf's, without the VM's own disk and
  /// run directory), and the image's disk under it.
  Result<std::pair<QemuConfig, std::string>> TemplateMachine(const PartitionSpec& s) {
    auto kernel = Kernel();  // apt's answer is remembered while apt's state is unchanged
    if (!kernel) return kernel.status();
    auto initrd = Initramfs(*kernel);
    if (!initrd) return initrd.status();
    auto raw = ImageDisk(s);
    if (!raw) return raw.status();
    QemuConfig c;
    bool kvm = ctx_.inside.empty()
                   ? ProbeQemuHost(ctx_.state_root + "/qemu").accel == model::Accelerator::kKvm
                   : ChosenAccel(true) == "kvm";
    c.accel = kvm ? Accel::kKvm : Accel::kTcg;
    c.expose_virtualization_extensions = s.expose_virtualization_extensions;
    c.processors = std::max(1, s.processor_count);
    c.memory_mib = static_cast<int>(std::max<uint64_t>(s.memory_bytes >> 20, 128));
    c.kernel = kernel->vmlinux;
    c.initrd = *initrd;
    c.root = RootKind::kDisk;
    c.agent_binary = "/opt/lab/lab";  // the image's copy of lab's tools (EnsureToolsForImages)
    return std::make_pair(c, *raw);
  }

  /// Where VM `s`'s start from a template is said (or why it booted instead).
  std::string TemplateNote(const std::string& vm) const { return RunDir(vm) + "/template.txt"; }
  /// Present while a VM's disk over a template is made and its guest not yet itself: a run cut
  /// short there left a disk that is nobody's yet, made again from the template.
  std::string TemplatePending(const std::string& vm) const { return DiskDir(vm) + "/from-template"; }

  /// New-VM of a VM on an image, from the template of its image and machine: its facts, or
  /// nullopt when it boots instead: it is on the host's tree (image: host), it has a disk already
  /// (Start-VM boots what it wrote), or making or using the template failed, which the VM's run
  /// directory says (template.txt) and which is no error: the cold boot is the VM as asked.
  std::optional<std::string> CreateFromTemplate(const PartitionSpec& s) {
    if (s.image.empty() || !ctx_.inside.empty()) return std::nullopt;
    std::string disk = Qcow2(s.name), pending = TemplatePending(s.name);
    std::error_code ec;
    if (fs::exists(disk, ec) && !fs::exists(pending, ec)) return std::nullopt;
    // LAB_QEMU_TEMPLATES=off: every VM boots (measuring a cold boot against a resume; ruling a
    // template out when a guest misbehaves).
    if (const char* e = std::getenv("LAB_QEMU_TEMPLATES"); e && std::string(e) == "off") {
      fs::create_directories(RunDir(s.name), ec);
      (void)WriteFile(TemplateNote(s.name), "booted (not from a template): LAB_QEMU_TEMPLATES=off\n");
      return std::nullopt;
    }
    auto started = std::chrono::steady_clock::now();
    auto facts = FromTemplate(s);
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3f", took);
    fs::create_directories(RunDir(s.name), ec);
    if (facts) {
      (void)WriteFile(TemplateNote(s.name), "started from template " + facts->second + " in " + secs + " s\n");
      return facts->first;
    }
    // Nothing of the attempt stays: the cold boot makes its disk over the image's disk.
    ::unlink(disk.c_str());
    ::unlink(pending.c_str());
    (void)WriteFile(TemplateNote(s.name), "booted (not from a template): " + facts.status().message() + "\n");
    return std::nullopt;
  }

  /// CreateFromTemplate's attempt: the template (made when missing), the VM's qcow2 over its disk,
  /// QEMU started on its memory state with the agent connected before it loads, then the guest's
  /// own identity: clock, entropy, machine id (IdentityScript), then computer name, hosts and DNS
  /// client (CreatePartition inside, as after a boot). Its adapters are plugged afterwards as for
  /// any running VM (the template has none). Facts and the template's key; on error the QEMU it
  /// started is gone.
  Result<std::pair<std::string, std::string>> FromTemplate(const PartitionSpec& s) {
    const std::string what = "VM '" + s.name + "'";
    auto t0 = std::chrono::steady_clock::now();
    std::string stages;  // where the time went, for template.txt
    auto stage = [&](const char* name) {
      auto now = std::chrono::steady_clock::now();
      char ms[64];
      std::snprintf(ms, sizeof ms, " %s %.0f ms", name, std::chrono::duration<double, std::milli>(now - t0).count());
      stages += ms;
      t0 = now;
    };
    auto machine = TemplateMachine(s);
    if (!machine) return machine.status();
    stage("kernel+image:");
    QemuConfig c = machine->first;
    const std::string& raw = machine->second;
    std::string key = TemplateKey(c, raw, QemuBinaryIdentity(c.binary));
    // The template's QEMU runs beside the labs' (a short path: sockets), not in this lab's tree.
    LAB_RETURN_IF_ERROR(kernel::EnsureRunRoot(ctx_.run_root));
    auto tpl = EnsureTemplate(TemplatesDir(ctx_.state_root), key, c, raw, ctx_.run_root + "/templates/" + key, kBootMs);
    if (!tpl) return tpl.status();
    stage(tpl->made_now ? "template (made now):" : "template:");
    std::string run = RunDir(s.name);
    std::error_code ec;
    fs::create_directories(run, ec);
    if (ec) return Status::Error(what + ": cannot create " + run + ": " + ec.message());
    std::ofstream(run + "/name") << s.name;
    fs::create_directories(DiskDir(s.name), ec);
    if (ec) return Status::Error(what + ": cannot create " + DiskDir(s.name) + ": " + ec.message());
    std::string disk = Qcow2(s.name);
    // An earlier QEMU of this VM (a run killed after starting it) is ended first, and the disk a
    // cut-short attempt left (TemplatePending was there) goes.
    if (auto old = FindQemu(run)) (void)StopQemu(*old, 0, kQuitMs);
    LAB_RETURN_IF_ERROR(WriteFile(TemplatePending(s.name), tpl->key + "\n"));
    ::unlink(disk.c_str());
    LAB_RETURN_IF_ERROR(CreateVmDisk(disk, tpl->disk, "qcow2").Prefixed("its disk over template " + tpl->key));
    c.disk = disk;
    c.run_dir = run;
    c.incoming = IncomingFromFile(tpl->state);
    LAB_RETURN_IF_ERROR(WriteFile(run + "/boot.json", json{{"kernel", c.kernel}, {"initrd", c.initrd}}.dump()));
    ::unlink(StateFile(s.name).c_str());
    ::unlink(StateDevices(s.name).c_str());
    stage("disk:");
    auto p = StartQemu(c);
    if (!p) return p.status();
    stage("qemu:");
    auto fail = [&](const Status& st) -> Status {
      {
        std::lock_guard lock(guests_mu_);
        guests_.erase(s.name);
      }
      (void)StopQemu(*p, 0, kQuitMs);
      return Status::Error(st.message() + "; its console said:" + Tail(p->console_log(), 8));
    };
    if (Status resumed = ConnectAndResume(s.name, *p, "the template's state"); !resumed.ok()) return fail(resumed);
    stage("state loaded:");
    {
      // The first request to its agent (which answers as soon as the guest runs on: it was
      // waiting on its port when saved).
      auto identity = FreshIdentity();  // the host's clock as late as can be
      if (!identity) return fail(identity.status());
      auto ran = Send(Guest(s.name), agent::ExecRequest({"sh", "-c", IdentityScript(*identity)}), 60000);
      if (!ran) return fail(ran.status().Prefixed("its new identity"));
      auto reply = agent::ParseExecReply(*ran);
      if (!reply) return fail(reply.status().Prefixed("its new identity"));
      if (reply->exit_code != 0) return fail(Status::Error("its new identity: " + Trim(reply->output)));
    }
    stage("identity:");
    auto adopted = Guest(s.name).remote().CreatePartition(s);
    if (!adopted) return fail(adopted.status());
    stage("computer name:");
    ::unlink(TemplatePending(s.name).c_str());
    std::string facts = json{{"qemu", {{"pid", p->pid}, {"start_time", p->start_time}}},
                             {"accel", c.accel == Accel::kKvm ? "kvm" : "tcg"},
                             {"kernel", tpl->guest_kernel},
                             {"template", tpl->key}}
                            .dump();
    return std::make_pair(facts, tpl->key + " (" + Trim(stages) + ")");
  }

  Status RemoveQemuVm(const PartitionSpec& s, const std::string& facts, bool keep_disk) {
    (void)SettleMigration(s.name);  // a move cut short: its destination QEMU goes too
    {
      std::lock_guard lock(guests_mu_);
      guests_.erase(s.name);
    }
    if (auto p = ProcessOf(s, facts)) LAB_RETURN_IF_ERROR(StopQemu(*p, keep_disk ? 15000 : 0, kQuitMs).Prefixed("VM '" + s.name + "'"));
    std::string run = RunDir(s.name);
    if (auto p = FindQemu(run)) LAB_RETURN_IF_ERROR(StopQemu(*p, 0, kQuitMs).Prefixed("VM '" + s.name + "'"));
    // Stop-VM of a saved VM discards its saved state (Hyper-V's "Delete Saved State").
    if (::unlink(StateFile(s.name).c_str()) != 0 && errno != ENOENT) return ErrnoStatus("VM '" + s.name + "': remove " + StateFile(s.name));
    ::unlink(StateDevices(s.name).c_str());
    if (!keep_disk) {
      LAB_RETURN_IF_ERROR(kernel::RemoveTree(run).Prefixed("VM '" + s.name + "'"));
      LAB_RETURN_IF_ERROR(kernel::RemoveTree(DiskDir(s.name)).Prefixed("VM '" + s.name + "'"));
    }
    return Status::Ok();
  }

  bool QemuRunning(const PartitionSpec& s, const std::string& facts) const {
    auto p = ProcessOf(s, facts);
    return p && IsRunning(*p);
  }
  /// Saved (Save-VM): its memory state is in its state file and no QEMU runs it.
  bool QemuSaved(const PartitionSpec& s, const std::string& facts) const {
    return !s.image.empty() && fs::exists(StateFile(s.name)) && !QemuRunning(s, facts);
  }

  // --- checkpoints of qemu VMs on images: internal snapshots of their qcow2 --------------------
  // A running VM's checkpoint is taken over QMP with its memory (Hyper-V's standard checkpoint);
  // an off VM's with qemu-img, its disk only. Restore-VMCheckpoint applies to an off VM (the
  // engine stops it first): qemu-img reverts its disk, and the VM boots from that disk when it
  // starts (Hyper-V would put it in the saved state of the checkpoint's memory instead).
  std::string Qcow2(const std::string& vm) const { return DiskDir(vm) + "/disk.qcow2"; }

  Status NoDiskYet(const PartitionSpec& s, const std::string& op) const {
    return Status::Error("VM '" + s.name + "' cannot " + op + ": it has no disk yet (it was never started)");
  }

  /// `qemu-img ARGS` on an off VM's disk; its output, or its message as the error.
  Result<std::string> QemuImg(const std::vector<std::string>& args, const std::string& op) {
    std::vector<std::string> argv = {"qemu-img"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto out = RunCommand(argv, 120000);
    if (!out) return out.status().Prefixed(op);
    if (out->exit_code != 0) {
      std::string msg = Trim(out->output);
      return Status::Error(op + ": qemu-img " + args.front() + ": " + (msg.empty() ? "exit " + std::to_string(out->exit_code) : msg));
    }
    return out->output;
  }

  /// The running QEMU of `s`, or nullopt when it is off (or saved).
  std::optional<QemuProcess> Live(const PartitionSpec& s) const {
    auto p = ProcessOf(s, "{}");
    if (p && IsRunning(*p)) return p;
    return std::nullopt;
  }

  Status QemuCheckpoint(const PartitionSpec& s, const std::string& name) {
    const std::string what = "VM '" + s.name + "': Checkpoint-VM " + name;
    if (s.image.empty()) return NoStateOnHostImage(s, "take checkpoints (Checkpoint-VM)");
    if (!fs::exists(Qcow2(s.name))) return NoDiskYet(s, "take checkpoints (Checkpoint-VM)");
    if (auto p = Live(s)) {
      auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
      if (!qmp) return qmp.status().Prefixed(what);
      return SaveCheckpoint(*qmp, name, 300000).Prefixed(what);
    }
    return QemuImg({"snapshot", "-c", name, Qcow2(s.name)}, what).status();
  }
  Status QemuRestore(const PartitionSpec& s, const std::string& name) {
    const std::string what = "VM '" + s.name + "': Restore-VMCheckpoint " + name;
    if (s.image.empty()) return NoStateOnHostImage(s, "restore checkpoints");
    if (!fs::exists(Qcow2(s.name))) return NoDiskYet(s, "restore checkpoints");
    if (auto p = Live(s)) {
      auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
      if (!qmp) return qmp.status().Prefixed(what);
      return LoadCheckpoint(*qmp, name, 300000).Prefixed(what);
    }
    // A saved state belongs to the disk as it was: void once the disk goes back.
    ::unlink(StateFile(s.name).c_str());
    ::unlink(StateDevices(s.name).c_str());
    return QemuImg({"snapshot", "-a", name, Qcow2(s.name)}, what).status();
  }
  Status QemuRemoveCheckpoint(const PartitionSpec& s, const std::string& name) {
    const std::string what = "VM '" + s.name + "': Remove-VMCheckpoint " + name;
    if (s.image.empty()) return NoStateOnHostImage(s, "remove checkpoints");
    if (!fs::exists(Qcow2(s.name))) return NoDiskYet(s, "remove checkpoints");
    if (auto p = Live(s)) {
      auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
      if (!qmp) return qmp.status().Prefixed(what);
      return DeleteCheckpoint(*qmp, name, 300000).Prefixed(what);
    }
    return QemuImg({"snapshot", "-d", name, Qcow2(s.name)}, what).status();
  }
  /// Get-VMCheckpoint: the disk's snapshots, oldest first (`qemu-img info -U`, which reads a disk
  /// a running QEMU holds too).
  Result<std::vector<CheckpointInfo>> QemuCheckpoints(const PartitionSpec& s) {
    std::vector<CheckpointInfo> out;
    if (s.image.empty() || !fs::exists(Qcow2(s.name))) return out;
    auto text = QemuImg({"info", "-U", "--output=json", Qcow2(s.name)}, "VM '" + s.name + "': Get-VMCheckpoint");
    if (!text) return text.status();
    json info = json::parse(*text, nullptr, false);
    if (!info.is_object()) return Status::Error("VM '" + s.name + "': Get-VMCheckpoint: qemu-img info said no JSON");
    for (const auto& snap : info.value("snapshots", json::array())) {
      CheckpointInfo c;
      c.name = snap.value("name", "");
      c.taken = snap.value("date-sec", int64_t{0});
      c.bytes = snap.value("vm-state-size", uint64_t{0});
      out.push_back(c);
    }
    return out;
  }

  /// Save-VM: the VM's memory state to its state file, then its QEMU quits (its taps go with it;
  /// ResumePartition makes them again).
  Status SaveQemuVm(const PartitionSpec& s, const std::string& facts) {
    const std::string what = "VM '" + s.name + "'";
    if (s.image.empty()) return NoStateOnHostImage(s, "be saved (Save-VM)");
    auto p = ProcessOf(s, facts);
    if (!p || !IsRunning(*p)) return Status::Error(what + " cannot be saved (Save-VM): it is not running");
    {
      std::lock_guard lock(guests_mu_);
      guests_.erase(s.name);
    }
    json devices = {{"boot", ParseFacts(ReadAll(RunDir(s.name) + "/boot.json"))}, {"adapters", AdaptersOf(s.name)},
                    {"ports", ParseFacts(ReadAll(RunDir(s.name) + "/ports.json"))}};
    LAB_RETURN_IF_ERROR(WriteFile(StateDevices(s.name), devices.dump()).Prefixed(what));
    {
      auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
      if (!qmp) return qmp.status().Prefixed(what);
      LAB_RETURN_IF_ERROR(SaveToFile(*qmp, StateFile(s.name), 300000).Prefixed(what));
    }  // QEMU's monitor serves one client: released before StopQemu's quit
    return StopQemu(*p, 0, kQuitMs).Prefixed(what);
  }

  /// Start-VM of a saved VM: QEMU again with the devices it was saved with (its adapters on new
  /// taps with the same ids, MACs and root ports, made ports of their switches again), waiting
  /// for the state; the agent's socket is connected before the state loads (docs/qemu.md), then
  /// the VM runs on where it was. The state file is consumed once the agent answers.
  Status ResumeQemuVm(const PartitionSpec& s, const std::string& facts) {
    const std::string what = "VM '" + s.name + "'";
    if (s.image.empty()) return NoStateOnHostImage(s, "be resumed from a saved state");
    if (QemuRunning(s, facts)) return Status::Ok();
    std::string state = StateFile(s.name);
    if (!fs::exists(state)) return Status::Error(what + " has no saved state (Save-VM) to start from");
    json devices = ParseFacts(ReadAll(StateDevices(s.name)));
    auto config = ConfigOf(s, devices.value("boot", json::object()));
    if (!config) return config.status();
    QemuConfig& c = *config;
    c.incoming = IncomingFromFile(state);
    std::vector<AdapterSpec> adapters;
    for (const auto& a : devices.value("adapters", json::array())) adapters.push_back(a.get<AdapterSpec>());
    std::vector<Tap> taps;
    for (const auto& a : adapters) {
      const std::string of = "adapter '" + a.Written() + "' of " + what;
      // The root port it was saved on (the state's device tree), taken again here.
      auto port = TakePort(s.name, NicId(a), devices.value("ports", json::object()).value(NicId(a), 0));
      if (!port) return port.status().Prefixed(of);
      auto tap = OpenTap(kernel::NsPath(MachineRun(a.owner), "net"), a.port, "");
      if (!tap) return tap.status().Prefixed(of);
      // The tap side, as Connect-VMNetworkAdapter made it: filtered, a port of the switch.
      auto made = local_->ConnectAdapter(a);
      if (!made) return made.status();
      LAB_RETURN_IF_ERROR(RememberAdapter(a).Prefixed(of));
      c.nics.push_back(NicAtStart{NicId(a), tap->fd(), a.mac, *port});
      taps.push_back(std::move(*tap));
    }
    auto p = StartQemu(c);
    taps.clear();  // QEMU holds them now (or, when it did not start, they go)
    if (!p) return p.status().Prefixed(what + ": Start-VM from its saved state");
    auto fail = [&](const Status& st) -> Status {
      {
        std::lock_guard lock(guests_mu_);
        guests_.erase(s.name);
      }
      (void)StopQemu(*p, 0, kQuitMs);
      return Status::Error(st.Prefixed(what + ": Start-VM from its saved state").message() + "; its console said:" +
                           Tail(p->console_log(), 8));
    };
    if (Status resumed = ConnectAndResume(s.name, *p, ""); !resumed.ok()) return fail(resumed);
    auto ping = WaitAgent(s.name, 60000);
    if (!ping) return fail(ping.status().Prefixed("its agent did not answer"));
    ::unlink(state.c_str());
    ::unlink(StateDevices(s.name).c_str());
    return Status::Ok();
  }

  // --- Move-VM of a running qemu VM: live migration --------------------------------------------
  // A second QEMU for the same VM, started in RUN/q/<vm>/in with incoming "defer", the same disk
  // (QEMU's migration hands the image over: the destination opens it inactive, the source
  // inactivates it once its last write is out) and the same devices: the adapters on new taps in
  // the destination host's namespace, on its switch, with the same ids, MACs and root ports. The
  // source migrates to it and quits; then the destination's sockets, logs and pid take the run
  // directory's names. Until the destination runs the VM, the source has it: a run cut short is
  // settled by the next one (SettleMigration). The destination's directory is new for each
  // migration (in-<ms>): a QEMU unlinks the socket paths it bound when it quits, so the source,
  // itself a destination once, must not share them with its own destination.

  /// A new directory name for the destination QEMU of a migration of `vm`.
  std::string NewIncomingDir(const std::string& vm) const {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
    return RunDir(vm) + "/in-" + std::to_string(ms.count());
  }
  /// The destination directories a migration of `vm` left (normally none).
  std::vector<std::string> IncomingDirs(const std::string& vm) const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(RunDir(vm), ec))
      if (e.path().filename().string().rfind("in-", 0) == 0) out.push_back(e.path().string());
    return out;
  }

  /// The VM's facts with QEMU `p`'s pid and start time.
  static std::string FactsWith(const std::string& facts, const QemuProcess& p) {
    json j = ParseFacts(facts);
    j["qemu"] = {{"pid", p.pid}, {"start_time", p.start_time}};
    return j.dump();
  }

  /// The destination QEMU `dst` (in its directory `in`) runs the VM and the source is gone: its files
  /// take the run directory's names, its adapters (`in`/adapters.json) become the VM's,
  /// and the source's tap sides (filters, what is left of the taps) go.
  Status TakeOver(const std::string& vm, const QemuProcess& dst) {
    const std::string what = "VM '" + vm + "': Move-VM";
    const std::string& in = dst.run_dir;
    const std::string run = RunDir(vm);
    json arriving = ParseFacts(ReadAll(in + "/adapters.json"));
    for (const auto& old : AdaptersOf(vm)) (void)local_->RemoveAdapter(old, "{}");
    for (const char* f : {"/qmp.sock", "/agent.sock", "/console.log", "/qemu.log"})
      if (::rename((in + f).c_str(), (run + f).c_str()) != 0 && errno != ENOENT) return ErrnoStatus(what + ": rename " + in + f);
    LAB_RETURN_IF_ERROR(WriteFile(run + "/qemu.pid", std::to_string(dst.pid) + " " + std::to_string(dst.start_time) + "\n")
                            .Prefixed(what));
    for (const auto& [id, a] : arriving.items()) LAB_RETURN_IF_ERROR(RememberAdapter(a.get<AdapterSpec>()).Prefixed(what));
    return kernel::RemoveTree(in).Prefixed(what);
  }

  /// What a live migration cut short left (a destination QEMU in an in-* directory): when it runs the
  /// VM, it takes over (the source, paused after handing the VM over, quits); otherwise it goes,
  /// and the source, which still has the VM, runs on.
  Status SettleMigration(const std::string& vm) {
    for (const auto& in : IncomingDirs(vm)) LAB_RETURN_IF_ERROR(Settle(vm, in));
    return Status::Ok();
  }
  Status Settle(const std::string& vm, const std::string& in) {
    auto dst = FindQemu(in);
    auto src = FindQemu(RunDir(vm));
    auto status_of = [](const QemuProcess& p) -> std::string {
      auto qmp = QmpClient::Connect(p.qmp_socket(), 2000);
      if (!qmp) return "";
      auto st = qmp->QueryStatus();
      return st.ok() ? *st : "";
    };
    if (dst && status_of(*dst) == "running") {
      if (src) LAB_RETURN_IF_ERROR(StopQemu(*src, 0, kQuitMs).Prefixed("VM '" + vm + "'"));
      {
        std::lock_guard lock(guests_mu_);
        guests_.erase(vm);
      }
      return TakeOver(vm, *dst);
    }
    if (dst) LAB_RETURN_IF_ERROR(StopQemu(*dst, 0, kQuitMs).Prefixed("VM '" + vm + "'"));
    json arriving = ParseFacts(ReadAll(in + "/adapters.json"));
    for (const auto& [id, a] : arriving.items()) (void)local_->RemoveAdapter(a.get<AdapterSpec>(), "{}");
    if (src && status_of(*src) == "postmigrate")
      if (auto qmp = QmpClient::Connect(src->qmp_socket(), 2000)) (void)Resume(*qmp, 10000);
    return kernel::RemoveTree(in).Prefixed("VM '" + vm + "'");
  }

  Result<LiveMigration> MigrateQemuVm(const PartitionSpec& from, const std::string& facts, const PartitionSpec& to,
                                      const std::vector<AdapterSpec>& adapters) {
    const std::string what = "VM '" + from.name + "'";
    if (from.image.empty()) return NoStateOnHostImage(from, "be moved live (Move-VM)");
    LAB_RETURN_IF_ERROR(SettleMigration(from.name));
    auto src = ProcessOf(from, facts);
    if (!src || !IsRunning(*src)) return Status::Error(what + " cannot be moved live (Move-VM): it is not running");
    // Its adapters as they are and as they will be, by their QEMU ids.
    std::map<std::string, AdapterSpec> there;
    for (const auto& a : adapters) there[NicId(a)] = a;
    json ports = PortsOf(from.name);
    bool arrived = !ports.empty();
    for (const auto& a : AdaptersOf(from.name)) {
      auto it = there.find(NicId(a));
      if (it == there.end())
        return Status::Error(what + ": adapter '" + a.Written() + "' has no switch to connect to at the destination");
      arrived = arrived && a.owner == it->second.owner && a.switch_ifname == it->second.switch_ifname;
    }
    // A run that ended after the VM arrived (its records not yet written): it is there already.
    if (arrived) {
      LAB_RETURN_IF_ERROR(Arrived(to));
      return LiveMigration{FactsWith(facts, *src), 0, 0, true};
    }

    const std::string in = NewIncomingDir(from.name);
    std::error_code ec;
    fs::create_directories(in, ec);
    if (ec) return Status::Error(what + ": cannot create " + in + ": " + ec.message());
    auto config = ConfigOf(to, ParseFacts(ReadAll(RunDir(from.name) + "/boot.json")));
    if (!config) return config.status();
    QemuConfig c = *config;
    c.run_dir = in;
    c.incoming = "defer";
    std::vector<AdapterSpec> made;
    auto undo = [&](const Status& st) -> Status {
      for (const auto& a : made) (void)local_->RemoveAdapter(a, "{}");
      (void)kernel::RemoveTree(in);
      return st;
    };
    json arriving = json::object();
    std::vector<Tap> taps;
    for (const auto& [id, a] : there) {
      if (!ports.contains(id)) continue;  // not connected at the source (a run cut short): `lab up` connects it
      const std::string of = "adapter '" + a.Written() + "' of " + what;
      auto tap = OpenTap(kernel::NsPath(MachineRun(a.owner), "net"), a.port, "");
      if (!tap) return undo(tap.status().Prefixed(of + " at '" + a.owner + "'"));
      made.push_back(a);
      auto port = local_->ConnectAdapter(a);  // filtered, a port of the destination's switch
      if (!port) return undo(port.status());
      c.nics.push_back(NicAtStart{id, tap->fd(), a.mac, ports[id].get<int>()});
      taps.push_back(std::move(*tap));
      arriving[id] = a;
    }
    if (Status st = WriteFile(in + "/adapters.json", arriving.dump()); !st.ok()) return undo(st.Prefixed(what));
    auto dst = StartQemu(c);
    taps.clear();  // the destination QEMU holds them now (or, when it did not start, they go)
    if (!dst) return undo(dst.status().Prefixed(what + ": Move-VM (destination)"));
    auto fail = [&](const Status& st) -> Status {
      (void)StopQemu(*dst, 0, kQuitMs);
      std::lock_guard lock(guests_mu_);
      guests_.erase(from.name);
      return undo(st.Prefixed(what));
    };
    // The host connects to the destination's agent socket before the state loads (docs/qemu.md).
    auto agent = AgentClient::Connect(dst->agent_socket(), 5000);
    if (!agent) return fail(agent.status());
    Result<MigrationStats> stats = Status::Error("not run");
    {
      auto from_qmp = QmpClient::Connect(src->qmp_socket(), 5000);
      if (!from_qmp) return fail(from_qmp.status());
      auto to_qmp = QmpClient::Connect(dst->qmp_socket(), 5000);
      if (!to_qmp) return fail(to_qmp.status());
      stats = MigrateTo(*from_qmp, *to_qmp, MigrationUri(in), 300000);
    }  // QEMU's monitors serve one client: released before the quit
    if (!stats) return fail(stats.status());
    // The destination runs the VM: the source (paused) quits, the destination takes its names.
    {
      std::lock_guard lock(guests_mu_);
      guests_.erase(from.name);
    }
    LAB_RETURN_IF_ERROR(StopQemu(*src, 0, kQuitMs).Prefixed(what + ": Move-VM (the source)"));
    LAB_RETURN_IF_ERROR(TakeOver(from.name, *dst));
    {
      GuestLink& g = Guest(from.name);
      std::lock_guard lock(g.mu);
      g.client = std::make_shared<AgentClient>(std::move(*agent));
    }
    LAB_RETURN_IF_ERROR(Arrived(to));
    QemuProcess now = *dst;
    now.run_dir = RunDir(from.name);
    return LiveMigration{FactsWith(facts, now), stats->total_ms, stats->downtime_ms};
  }

  /// The guest takes on its place on the destination (its lineage there: the cgroup commands run
  /// in inside it, its hosts file), as CreatePartition gave it its first.
  Status Arrived(const PartitionSpec& to) {
    auto adopted = Guest(to.name).remote().CreatePartition(to);
    if (!adopted) return adopted.status().Prefixed("VM '" + to.name + "': Move-VM (inside, on '" + to.parent() + "')");
    return Status::Ok();
  }

  /// The guest's own side of CreatePartition: this hypervisor runs inside `s`.
  Result<std::string> AdoptSelf(const PartitionSpec& s) {
    const std::string what = "VM '" + s.name + "' (inside)";
    LAB_RETURN_IF_ERROR(kernel::EnsureRunRoot(ctx_.run_root).Prefixed(what));
    std::string ns = MachineRun(s.name) + "/ns";
    std::error_code ec;
    fs::create_directories(ns, ec);
    if (ec) return Status::Error(what + ": cannot create " + ns + ": " + ec.message());
    // The guest's own namespaces cannot be bind-mounted inside themselves: the handles are links
    // to pid 1's, which open the same namespaces.
    for (const char* kind : {"net", "mnt", "uts", "ipc", "pid"}) {
      std::string link = ns + "/" + kind;
      ::unlink(link.c_str());
      if (::symlink((std::string("/proc/1/ns/") + kind).c_str(), link.c_str()) != 0) return ErrnoStatus(what + ": symlink " + link);
    }
    // Its cgroup, where commands run in it join (the VM's limits are QEMU's: none here).
    std::vector<std::string> safe;
    for (const auto& m : s.lineage) safe.push_back(KernelPathName(m));
    bool created = false;
    LAB_RETURN_IF_ERROR(kernel::CgroupCreate("lab/" + ctx_.Mark() + "/m/" + Join(safe, "/"), 0, 0, &created).Prefixed(what));
    std::string name = s.ComputerName();
    if (::sethostname(name.c_str(), name.size()) != 0) return ErrnoStatus(what + ": sethostname");
    LAB_RETURN_IF_ERROR(WriteFile("/etc/hostname", name + "\n").Prefixed(what));
    LAB_RETURN_IF_ERROR(WriteFile("/etc/hosts", s.hosts_file).Prefixed(what));
    LAB_RETURN_IF_ERROR(WriteFile("/etc/resolv.conf", ResolvConf({})).Prefixed(what));
    return std::string("{}");
  }

  /// Inside a guest: the guest's init loads what lab needs inside it (bridge, veth, nftables,
  /// kvm) after the agent answers; what is made inside waits for it (at most a minute), while
  /// the VM's own identity and adapters (virtio_net comes first) need not.
  void WaitGuestModules() {
    if (ctx_.inside.empty() || modules_ready_) return;
    for (int i = 0; i < 1200 && !fs::exists("/run/lab/modules-loaded"); ++i) ::usleep(50000);
    modules_ready_ = true;
  }

  /// Facts of this guest's own machine as the partition driver reads them: its init is pid 1.
  static std::string SelfFacts() {
    return json{{"init", {{"pid", 1}, {"start_time", ReadProcStat(1).start_time}}}}.dump();
  }

  // --- networks and hosts: always on the real machine ------------------------------------
  Result<std::string> CreateNetwork(const NetworkSpec& s) override { return local_->CreateNetwork(s); }
  Status RemoveNetwork(const NetworkSpec& s, const std::string& f) override { return local_->RemoveNetwork(s, f); }
  Result<std::string> CreateNic(const NicSpec& s) override { return local_->CreateNic(s); }
  Status RemoveNic(const NicSpec& s, const std::string& f) override { return local_->RemoveNic(s, f); }
  Result<std::string> SetNicAddress(const NicSpec& s, const std::string& f) override { return local_->SetNicAddress(s, f); }
  Status RepairNic(const NicSpec& s) override { return local_->RepairNic(s); }
  Result<std::string> StartStandIn(const StandInSpec& s) override { return local_->StartStandIn(s); }
  Status StopStandIn(const StandInSpec& s, const std::string& f) override { return local_->StopStandIn(s, f); }
  bool StandInRunning(const StandInSpec& s, const std::string& f) override { return local_->StandInRunning(s, f); }

  // --- partitions and qemu VMs --------------------------------------------------------------
  Result<std::string> CreatePartition(const PartitionSpec& s) override {
    if (IsSelf(s)) return AdoptSelf(s);
    if (Hypervisor* r = Route(s.within)) return r->CreatePartition(s);
    WaitGuestModules();
    if (s.IsQemu()) {
      LAB_RETURN_IF_ERROR(SettleMigration(s.name));  // a move cut short first
      return CreateQemuVm(s);
    }
    return local_->CreatePartition(s);
  }
  /// Removal of something inside a qemu VM that is going (the lab is torn down) or gone: it goes
  /// with the VM.
  bool GoesWithItsVm(const std::vector<std::string>& within) const {
    return tearing_down_ && within.size() > ctx_.inside.size();
  }
  Status RemovePartition(const PartitionSpec& s, const std::string& f) override {
    if (IsSelf(s)) return Status::Ok();
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->RemovePartition(s, f));
    if (s.IsQemu()) return RemoveQemuVm(s, f, false);
    return local_->RemovePartition(s, f);
  }
  /// The qemu VM at this level that `within` lies in, when it is saved: "" otherwise. What is
  /// inside a saved VM is saved with it (frozen in its memory state).
  std::string SavedAround(const std::vector<std::string>& within) const {
    if (within.size() <= ctx_.inside.size()) return "";
    const std::string& vm = within[ctx_.inside.size()];
    return fs::exists(StateFile(vm)) && !FindQemu(RunDir(vm)).ok() ? vm : "";
  }
  bool PartitionRunning(const PartitionSpec& s, const std::string& f) override {
    if (IsSelf(s)) return true;
    if (!SavedAround(s.within).empty()) return true;
    if (Hypervisor* r = Route(s.within)) return r->PartitionRunning(s, f);
    if (s.IsQemu()) return QemuRunning(s, f) || QemuSaved(s, f);  // a saved VM is not off
    return local_->PartitionRunning(s, f);
  }
  Status StopPartition(const PartitionSpec& s, const std::string& f) override {
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->StopPartition(s, f));
    if (s.IsQemu()) return RemoveQemuVm(s, f, true);
    return local_->StopPartition(s, f);
  }
  Result<LiveMigration> MigratePartition(const PartitionSpec& from, const std::string& f, const PartitionSpec& to,
                                         const std::vector<AdapterSpec>& adapters) override {
    if (Hypervisor* r = Route(from.within)) return r->MigratePartition(from, f, to, adapters);
    if (from.IsQemu()) return MigrateQemuVm(from, f, to, adapters);
    return local_->MigratePartition(from, f, to, adapters);
  }
  Status NoStateOnHostImage(const PartitionSpec& s, const std::string& op) const {
    return Status::Error("VM '" + s.name + "' cannot " + op +
                         ": it is a qemu VM on the host's software (image: host, a read-only 9p view with "
                         "its changes in memory), which QEMU cannot save, checkpoint or migrate; give it an "
                         "image (images:)");
  }
  Result<std::string> SetPartitionMemory(const PartitionSpec& s, const std::string& f) override {
    if (Hypervisor* r = Route(s.within)) return r->SetPartitionMemory(s, f);
    if (s.IsQemu()) {
      auto p = ProcessOf(s, f);
      if (!p || !IsRunning(*p)) return Status::Error("VM '" + s.name + "': cannot change memory: it is not running");
      auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
      if (!qmp) return qmp.status().Prefixed("VM '" + s.name + "'");
      LAB_RETURN_IF_ERROR(SetBalloon(*qmp, s.memory_bytes).Prefixed("VM '" + s.name + "': Set-VMMemory"));
      return f;
    }
    return local_->SetPartitionMemory(s, f);
  }
  Status SavePartition(const PartitionSpec& s, const std::string& f) override {
    if (Hypervisor* r = Route(s.within)) return r->SavePartition(s, f);
    if (s.IsQemu()) return SaveQemuVm(s, f);
    return local_->SavePartition(s, f);
  }
  Status ResumePartition(const PartitionSpec& s, const std::string& f) override {
    if (std::string vm = SavedAround(s.within); !vm.empty())
      return Status::Error("VM '" + s.name + "' is saved inside VM '" + vm + "', which is saved: resume '" + vm +
                           "' (lab resume LAB " + vm + ")");
    if (Hypervisor* r = Route(s.within)) return r->ResumePartition(s, f);
    if (s.IsQemu()) return ResumeQemuVm(s, f);
    return local_->ResumePartition(s, f);
  }
  bool PartitionSaved(const PartitionSpec& s, const std::string& f) override {
    if (IsSelf(s)) return false;
    if (!SavedAround(s.within).empty()) return true;
    if (Hypervisor* r = Route(s.within)) return r->PartitionSaved(s, f);
    if (s.IsQemu()) return QemuSaved(s, f);
    return local_->PartitionSaved(s, f);
  }
  Status CreateCheckpoint(const PartitionSpec& s, const std::string& f, const std::string& name) override {
    if (Hypervisor* r = Route(s.within)) return r->CreateCheckpoint(s, f, name);
    if (s.IsQemu()) return QemuCheckpoint(s, name);
    return local_->CreateCheckpoint(s, f, name);
  }
  Status RestoreCheckpoint(const PartitionSpec& s, const std::string& name) override {
    if (Hypervisor* r = Route(s.within)) {
      // Inside a qemu VM that is off (Restore-VMCheckpoint stops it first): what is inside lives
      // on its disk, which its own restore reverted, checkpoints of the VMs inside included.
      if (!FindQemu(RunDir(s.within[ctx_.inside.size()])).ok()) return Status::Ok();
      return r->RestoreCheckpoint(s, name);
    }
    if (s.IsQemu()) return QemuRestore(s, name);
    return local_->RestoreCheckpoint(s, name);
  }
  std::vector<std::string> Checkpoints(const PartitionSpec& s) override {
    if (Hypervisor* r = Route(s.within)) return r->Checkpoints(s);
    if (s.IsQemu()) {
      std::vector<std::string> names;
      if (auto all = QemuCheckpoints(s); all.ok())
        for (const auto& c : *all) names.push_back(c.name);
      return names;
    }
    return local_->Checkpoints(s);
  }
  Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionSpec& s) override {
    if (Hypervisor* r = Route(s.within)) return r->CheckpointDetails(s);
    if (s.IsQemu()) return QemuCheckpoints(s);
    return local_->CheckpointDetails(s);
  }
  Status RemoveCheckpoint(const PartitionSpec& s, const std::string& name) override {
    if (Hypervisor* r = Route(s.within)) return r->RemoveCheckpoint(s, name);
    if (s.IsQemu()) return QemuRemoveCheckpoint(s, name);
    return local_->RemoveCheckpoint(s, name);
  }

  // --- run: commands ------------------------------------------------------------------------
  Result<std::string> RunCommands(const RunSpec& s) override {
    Hypervisor* r = Route(s.within);
    if (!r) return local_->RunCommands(s);
    auto facts = r->RunCommands(s);
    // The log is kept here too, so `lab logs` reads it without the guest.
    if (auto log = r->RunLog(s.machine); log.ok()) (void)WriteRunLogCopy(s.machine, *log);
    return facts;
  }
  std::string RunLogCopy(const std::string& machine) const {
    return ctx_.state_root + "/logs/" + ctx_.Mark() + "-q/" + KernelPathName(machine) + ".log";
  }
  Status WriteRunLogCopy(const std::string& machine, const std::string& text) {
    std::error_code ec;
    fs::create_directories(fs::path(RunLogCopy(machine)).parent_path(), ec);
    return WriteFile(RunLogCopy(machine), text);
  }
  Status ClearRunLog(const RunSpec& s) override {
    ::unlink(RunLogCopy(s.machine).c_str());
    std::error_code ec;
    fs::remove(fs::path(RunLogCopy(s.machine)).parent_path(), ec);  // only when empty
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->ClearRunLog(s));
    return local_->ClearRunLog(s);
  }
  Result<std::string> RunLog(const std::string& machine) override {
    if (fs::exists(RunLogCopy(machine))) return ReadAll(RunLogCopy(machine));
    return local_->RunLog(machine);
  }

  // --- switches, adapters, NAT, DNS ---------------------------------------------------------
  Result<std::string> CreateSwitch(const SwitchSpec& s) override {
    if (Hypervisor* r = Route(s.within)) return r->CreateSwitch(s);
    WaitGuestModules();
    return local_->CreateSwitch(s);
  }
  Status RemoveSwitch(const SwitchSpec& s, const std::string& f) override {
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->RemoveSwitch(s, f));
    return local_->RemoveSwitch(s, f);
  }
  Result<std::string> SetSwitch(const SwitchSpec& s, const std::string& f) override { return At(s.within).SetSwitch(s, f); }
  Status RepairSwitch(const SwitchSpec& s) override { return At(s.within).RepairSwitch(s); }

  /// The root port a tap of `vm` is plugged on: the lowest free one, remembered in its run dir.
  /// `known`: the port it had (a saved state's), recorded again when the run directory lost it.
  Result<int> TakePort(const std::string& vm, const std::string& id, int known = 0) {
    std::lock_guard lock(ports_mu_);
    std::string path = RunDir(vm) + "/ports.json";
    json ports = ParseFacts(ReadAll(path));
    if (ports.contains(id)) return ports[id].get<int>();
    if (known > 0) {
      ports[id] = known;
      LAB_RETURN_IF_ERROR(WriteFile(path, ports.dump()));
      return known;
    }
    std::set<int> used;
    for (const auto& [k, v] : ports.items()) used.insert(v.get<int>());
    for (int i = 1; i <= QemuConfig{}.hotplug_ports; ++i)
      if (!used.count(i)) {
        ports[id] = i;
        LAB_RETURN_IF_ERROR(WriteFile(path, ports.dump()));
        return i;
      }
    return Status::Error("VM '" + vm + "' has no free slot for another network adapter (at most " +
                         std::to_string(QemuConfig{}.hotplug_ports) + ")");
  }
  json PortsOf(const std::string& vm) {
    std::lock_guard lock(ports_mu_);
    return ParseFacts(ReadAll(RunDir(vm) + "/ports.json"));
  }
  void FreePort(const std::string& vm, const std::string& id) {
    std::lock_guard lock(ports_mu_);
    for (const char* file : {"/ports.json", "/adapters.json"}) {
      std::string path = RunDir(vm) + file;
      json items = ParseFacts(ReadAll(path));
      if (!items.contains(id)) continue;
      items.erase(id);
      (void)WriteFile(path, items.dump());
    }
  }
  /// The adapters of qemu VM `vm` (by NicId), remembered in its run directory while connected: a
  /// VM started from its saved state has them at start.
  Status RememberAdapter(const AdapterSpec& a) {
    std::lock_guard lock(ports_mu_);
    std::string path = RunDir(a.vm) + "/adapters.json";
    json items = ParseFacts(ReadAll(path));
    items[NicId(a)] = a;
    return WriteFile(path, items.dump());
  }
  std::vector<AdapterSpec> AdaptersOf(const std::string& vm) {
    std::lock_guard lock(ports_mu_);
    std::vector<AdapterSpec> out;
    json items = ParseFacts(ReadAll(RunDir(vm) + "/adapters.json"));  // iterated: not a temporary
    for (const auto& [id, a] : items.items()) out.push_back(a.get<AdapterSpec>());
    return out;
  }
  static std::string NicId(const AdapterSpec& s) { return "n" + s.port; }

  Result<std::string> ConnectAdapter(const AdapterSpec& s) override {
    if (IsSelf(s.vm)) return local_->ConnectAdapter(s);  // the guest's side of its own adapter
    if (Hypervisor* r = Route(s.within)) return r->ConnectAdapter(s);
    WaitGuestModules();
    if (s.vm_driver != "qemu") return local_->ConnectAdapter(s);
    const std::string what = "adapter '" + s.Written() + "' of VM '" + s.vm + "'";
    LAB_RETURN_IF_ERROR(SettleMigration(s.vm).Prefixed(what));  // a move cut short first
    auto qemu = FindQemu(RunDir(s.vm));
    if (!qemu) return qemu.status().Prefixed(what);
    auto qmp = QmpClient::Connect(qemu->qmp_socket(), 5000);
    if (!qmp) return qmp.status().Prefixed(what);
    // A run cut short after plugging it (nothing recorded): that half goes first.
    if (PortsOf(s.vm).contains(NicId(s))) {
      (void)UnplugNic(*qmp, NicId(s), 10000);
      (void)local_->RemoveAdapter(s, "{}");
      FreePort(s.vm, NicId(s));
    }
    auto port = TakePort(s.vm, NicId(s));
    if (!port) return port.status().Prefixed(what);
    // The tap: made in the owner, a port of the switch there, then handed to QEMU.
    auto tap = OpenTap(kernel::NsPath(MachineRun(s.owner), "net"), s.port, "");
    if (!tap) {
      FreePort(s.vm, NicId(s));
      return tap.status().Prefixed(what);
    }
    auto undo = [&](const Status& st) -> Status {
      (void)local_->RemoveAdapter(s, "{}");
      FreePort(s.vm, NicId(s));
      return st;
    };
    auto made = local_->ConnectAdapter(s);
    if (!made) return undo(made.status());
    Status plugged = PlugNic(*qmp, NicAtStart{NicId(s), tap->fd(), s.mac, *port});
    if (!plugged.ok()) return undo(plugged.Prefixed(what + ": Add-VMNetworkAdapter"));
    tap->Close();  // QEMU holds it now: when QEMU goes, the tap goes
    if (Status kept = RememberAdapter(s); !kept.ok()) {
      (void)UnplugNic(*qmp, NicId(s), 5000);
      return undo(kept.Prefixed(what));
    }
    // The guest's side: its NIC with this MAC gets the adapter's name and address.
    auto inside = At(GuestChain(s)).ConnectAdapter(s);
    if (!inside) {
      (void)UnplugNic(*qmp, NicId(s), 5000);
      return undo(inside.status());
    }
    return json{{"port", *port}}.dump();
  }
  Status RemoveAdapter(const AdapterSpec& s, const std::string& f) override {
    if (IsSelf(s.vm)) return local_->RemoveAdapter(s, f);
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->RemoveAdapter(s, f));
    if (s.vm_driver != "qemu") return local_->RemoveAdapter(s, f);
    (void)SettleMigration(s.vm);  // a move cut short: QEMU refuses device_del while migrating
    if (!tearing_down_)
      if (auto qemu = FindQemu(RunDir(s.vm)))
        if (auto qmp = QmpClient::Connect(qemu->qmp_socket(), 5000))
          LAB_RETURN_IF_ERROR(UnplugNic(*qmp, NicId(s), 10000)
                                  .Prefixed("adapter '" + s.Written() + "' of VM '" + s.vm + "': Remove-VMNetworkAdapter"));
    FreePort(s.vm, NicId(s));
    return local_->RemoveAdapter(s, f);
  }
  Result<std::string> SetAdapter(const AdapterSpec& s, const std::string& f) override {
    if (IsSelf(s.vm)) return local_->SetAdapter(s, f);
    if (Hypervisor* r = Route(s.within)) return r->SetAdapter(s, f);
    auto here = local_->SetAdapter(s, f);
    if (!here || s.vm_driver != "qemu") return here;
    return At(GuestChain(s)).SetAdapter(s, f);
  }
  Status RepairAdapter(const AdapterSpec& s) override {
    if (IsSelf(s.vm)) return local_->RepairAdapter(s);
    if (Hypervisor* r = Route(s.within)) return r->RepairAdapter(s);
    LAB_RETURN_IF_ERROR(local_->RepairAdapter(s));
    if (s.vm_driver != "qemu") return Status::Ok();
    return At(GuestChain(s)).RepairAdapter(s);
  }
  Status AnnounceAdapter(const AdapterSpec& s, const std::vector<BridgeAt>& flush) override {
    if (IsSelf(s.vm)) return local_->AnnounceAdapter(s, flush);
    if (Hypervisor* r = Route(s.within)) return r->AnnounceAdapter(s, flush);
    LAB_RETURN_IF_ERROR(local_->AnnounceAdapter(s, flush));
    if (s.vm_driver != "qemu") return Status::Ok();
    return At(GuestChain(s)).AnnounceAdapter(s, {});
  }
  Status SetLink(const PartitionSpec& m, const std::string& ifname, bool up) override {
    return At(Home(m)).SetLink(m, ifname, up);
  }
  Result<std::vector<TeamMember>> ReconcileTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) override {
    if (Route(s.within)) return Status::Error("switch '" + s.name + "': SET switches inside qemu VMs are not supported yet");
    return local_->ReconcileTeam(s, ports);
  }
  Result<std::vector<TeamMember>> ObserveTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) override {
    if (Route(s.within)) return Status::Error("switch '" + s.name + "': SET switches inside qemu VMs are not supported yet");
    return local_->ObserveTeam(s, ports);
  }

  Result<std::string> CreateNat(const NatSpec& s) override {
    if (Hypervisor* r = Route(s.within)) return r->CreateNat(s);
    WaitGuestModules();
    return local_->CreateNat(s);
  }
  Status RemoveNat(const NatSpec& s, const std::string& f) override {
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->RemoveNat(s, f));
    return local_->RemoveNat(s, f);
  }
  Result<std::string> SetDns(const DnsSpec& s) override { return At(s.within).SetDns(s); }
  Status ClearDns(const DnsSpec& s, const std::string& f) override {
    if (GoesWithItsVm(s.within)) return Status::Ok();
    if (Hypervisor* r = Route(s.within)) return Forgiving(s.within, r->ClearDns(s, f));
    return local_->ClearDns(s, f);
  }

  /// A removal inside a qemu VM whose QEMU is gone succeeded: what was inside went with it.
  Status Forgiving(const std::vector<std::string>& within, Status st) {
    if (st.ok()) return st;
    const std::string& vm = within[ctx_.inside.size()];
    if (!FindQemu(RunDir(vm)).ok()) return Status::Ok();
    return st;
  }

  // --- drift --------------------------------------------------------------------------------
  Drift Observe(const ObserveRequest& r) override {
    ObserveRequest here;
    here.seen = r.seen;
    std::map<std::string, ObserveRequest> inward;  // by the qemu VM at this level
    Drift d;
    auto to = [&](const std::vector<std::string>& within) -> ObserveRequest* {
      if (within.size() <= ctx_.inside.size()) return &here;
      return &inward[within[ctx_.inside.size()]];
    };
    here.networks = r.networks;
    here.nics = r.nics;
    here.standins = r.standins;
    std::set<std::string> dead;  // qemu VMs at this level found not running
    std::set<std::string> saved;  // and those saved (Save-VM): not drift, nothing inside to see
    for (const auto& p : r.partitions) {
      if (IsSelf(p.spec)) {
        // Seen by the partition driver as the machine whose init is pid 1 (the guest itself);
        // whether it runs is the host's to say.
        here.partitions.push_back(Recorded<PartitionSpec>{p.key, p.spec, SelfFacts()});
        self_keys_.insert(p.key);
        continue;
      }
      if (Here(p.spec)) {
        if (QemuSaved(p.spec, p.facts)) {
          saved.insert(p.spec.name);
          continue;
        }
        if (!QemuRunning(p.spec, p.facts)) {
          auto proc = ProcessOf(p.spec, p.facts);
          d[p.key] = "not running: its QEMU" + (proc ? " (pid " + std::to_string(proc->pid) + ")" : std::string()) + " is gone";
          dead.insert(p.spec.name);
        } else {
          inward[p.spec.name].partitions.push_back(p);  // its agent sees it as itself
        }
        continue;
      }
      to(p.spec.within)->partitions.push_back(p);
    }
    for (const auto& s : r.switches) to(s.spec.within)->switches.push_back(s);
    for (const auto& a : r.adapters) {
      if (a.spec.vm_driver == "qemu") {
        // The tap side is not observed yet; the guest side is, inside the VM.
        auto chain = GuestChain(a.spec);
        to(chain)->adapters.push_back(a);
        continue;
      }
      to(a.spec.within)->adapters.push_back(a);
    }
    for (const auto& n : r.nats) to(n.spec.within)->nats.push_back(n);
    for (const auto& x : r.dns) to(x.spec.within)->dns.push_back(x);

    Drift mine = local_->Observe(here);
    for (auto& [k, f] : mine)
      if (!self_keys_.count(k)) d[k] = f;
    for (auto& [vm, req] : inward) {
      if (saved.count(vm)) continue;  // frozen as it was saved: seen again once it runs
      if (dead.count(vm)) {
        // What ran inside went with it: its VMs are not running (their switches and the rest are
        // made again with them).
        for (const auto& p : req.partitions) d[p.key] = "not running";
        continue;
      }
      req.seen = r.seen;
      for (auto& [k, f] : Guest(vm).remote().Observe(req)) d[k] = f;
    }
    return d;
  }

  // --- inside machines ----------------------------------------------------------------------
  Result<ProbeAnswer> Probe(const PartitionSpec& m, const ProbeRequest& p) override {
    if (IsSelf(m)) return local_->Probe(m, p);
    return At(Home(m)).Probe(m, p);
  }
  Result<int> Exec(const PartitionSpec& m, const ExecRequest& x) override {
    if (IsSelf(m)) return local_->Exec(m, x);
    return At(Home(m)).Exec(m, x);
  }

  void TearingDownLab() override {
    tearing_down_ = true;
    local_->TearingDownLab();
  }
  Status RemoveLabRoot() override {
    // The lab's qemu directories are empty by now (each VM removed its own).
    std::error_code ec;
    fs::remove(ctx_.run_root + "/" + ctx_.Mark() + "/q", ec);
    fs::remove(ctx_.state_root + "/disks/" + ctx_.Mark() + "/q", ec);
    return local_->RemoveLabRoot();
  }

 private:
  LabContext ctx_;
  std::unique_ptr<Hypervisor> local_;
  std::mutex guests_mu_;
  std::map<std::string, std::unique_ptr<GuestLink>> guests_;
  std::mutex boot_mu_;
  std::optional<GuestKernel> kernel_;
  std::mutex ports_mu_;
  std::set<std::string> self_keys_;
  std::atomic<bool> tearing_down_{false};
  std::atomic<bool> modules_ready_{false};
};

}  // namespace

std::string ChosenAccel(bool in_lab_guest) {
  if (const char* e = std::getenv("LAB_QEMU_ACCEL"); e && (std::string(e) == "kvm" || std::string(e) == "tcg"))
    return std::string(e);
  // Inside a qemu VM that lab made with its extensions exposed, KVM is the nested SVM/VT-x that
  // QEMU gave it (the +svm/+vmx CPU it was started with): qemu VMs inside run under it. The
  // doctor's probe cannot judge that one (KVM_GET_SUPPORTED_CPUID is refused under nested
  // emulation, so its booting guest faults), while QEMU's own guests boot there (measured).
  // kvm_amd/kvm_intel load in the guest's late module phase: a processor with the flag waits
  // for it (never caching "tcg" because a module was still loading).
  if (in_lab_guest) {
    std::string cpuinfo = ReadAll("/proc/cpuinfo");
    if (cpuinfo.find(" svm") != std::string::npos || cpuinfo.find(" vmx") != std::string::npos) {
      for (int i = 0; i < 1200 && ::access("/dev/kvm", F_OK) != 0 && !fs::exists("/run/lab/modules-loaded"); ++i)
        ::usleep(50000);
      if (::access("/dev/kvm", R_OK | W_OK) == 0) return "kvm";
    }
  }
  static const std::string probed = [] {
    auto kvm = kernel::JudgeKvm(kernel::ProbeKvm(2000));
    return std::string(kvm.state == kernel::kCapUsable ? "kvm" : "tcg");
  }();
  return probed;
}

}  // namespace qemu

std::unique_ptr<Hypervisor> MakeHypervisor(const LabContext& ctx) { return std::make_unique<qemu::Router>(ctx); }

}  // namespace lab::hv
