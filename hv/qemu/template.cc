#include "hv/qemu/template.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/control.h"
#include "hv/qemu/disk.h"
#include "hv/qemu/qmp.h"

namespace lab::hv::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

/// Bumped when what a template holds changes in a way its key's inputs do not show.
constexpr int kTemplateFormat = 1;
constexpr int kQuitMs = 5000;
/// Written by the guest init once its background module loader is done (hv/qemu/guest_init.cc).
constexpr const char* kModulesLoaded = "/run/lab/modules-loaded";


std::string Tail(const std::string& path, size_t lines) {
  auto text = ReadFile(path);
  auto all = Split(text ? *text : std::string(), '\n');
  while (!all.empty() && all.back().empty()) all.pop_back();
  if (all.size() > lines) all.erase(all.begin(), all.end() - static_cast<long>(lines));
  std::string out;
  for (const auto& l : all) out += "\n    " + l;
  return out;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

/// Boots the template's guest in `tmp` and saves it there; QEMU is gone afterwards either way.
Status MakeTemplate(const std::string& tmp, QemuConfig c, const std::string& image_disk, int boot_ms, json* facts) {
  LAB_RETURN_IF_ERROR(CreateVmDisk(tmp + "/disk.qcow2", image_disk).Prefixed("its disk"));
  c.disk = tmp + "/disk.qcow2";
  c.nics.clear();  // its VMs' adapters are plugged after they start from it
  c.incoming.clear();
  auto started = Clock::now();
  auto p = StartQemu(c);
  if (!p) return p.status();
  std::optional<AgentClient> agent;  // held open through the save (see below)
  auto fail = [&](const Status& st) {
    (void)StopQemu(*p, 0, kQuitMs);
    return Status::Error(st.message() + "; its console said:" + Tail(p->console_log(), 8));
  };
  auto deadline = started + std::chrono::milliseconds(boot_ms);
  auto left = [&] {  // what is left of boot_ms, at least a second
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return std::max<int>(1000, static_cast<int>(ms));
  };
  {
    auto a = AgentClient::Connect(p->agent_socket(), 5000);
    if (!a) return fail(a.status().Prefixed("its agent"));
    agent.emplace(std::move(*a));
  }
  auto ping = agent->Ping(left());
  if (!ping) return fail(ping.status().Prefixed("its agent did not answer"));
  double booted = Seconds(started);
  // The guest's init loads its late modules once the VM has an identity (its hostname changed:
  // lab-guest-init); a template has none of its own yet, so it gets a placeholder name.
  if (auto named = agent->Exec({"sh", "-c", "echo lab-template > /proc/sys/kernel/hostname"}, left()); !named)
    return fail(named.status().Prefixed("naming it"));
  // The late modules (bridge, veth, nftables, kvm) in the saved memory too: its VMs need not wait.
  for (;;) {
    auto r = agent->Exec({"cat", kModulesLoaded}, left());
    if (!r) return fail(r.status().Prefixed("waiting for its modules"));
    if (r->exit_code == 0) break;
    if (Clock::now() >= deadline)
      return fail(Status::Error("its modules were not loaded within " + std::to_string(boot_ms / 1000) + " s"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  double ready = Seconds(started);
  // The agent's connection stays open while the state is saved: the guest's agent is then waiting
  // on an open port in the saved memory, and a VM started from it answers at once once lab is
  // connected before the state loads (a port closed at save time would leave the agent polling
  // for the host with a back-off of up to 250 ms).
  {
    auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
    if (!qmp) return fail(qmp.status());
    Status saved = SaveToFile(*qmp, tmp + "/state.vm", 300000);
    if (!saved.ok()) return fail(saved);
  }  // QEMU's monitor serves one client: released before StopQemu's quit
  LAB_RETURN_IF_ERROR(StopQemu(*p, 0, kQuitMs));
  agent.reset();
  std::error_code ec;
  fs::copy_file(p->console_log(), tmp + "/console.log", ec);
  *facts = {{"format", kTemplateFormat},
            {"image_disk", image_disk},
            {"kernel", c.kernel},
            {"initrd", c.initrd},
            {"memory_mib", c.memory_mib},
            {"processors", c.processors},
            {"expose_virtualization_extensions", c.expose_virtualization_extensions},
            {"accel", c.accel == Accel::kKvm ? "kvm" : "tcg"},
            {"guest_kernel", ping->kernel},
            {"agent_seconds", booted},
            {"ready_seconds", ready},
            {"total_seconds", Seconds(started)},
            {"made", static_cast<int64_t>(::time(nullptr))}};
  return Status::Ok();
}

}  // namespace

std::string TemplatesDir(const std::string& state_dir) { return state_dir + "/qemu/templates"; }

std::string QemuBinaryIdentity(const std::string& binary) {
  std::string exe = FindInPath(binary);
  if (exe.empty()) return "";
  struct stat st {};
  if (::stat(exe.c_str(), &st) != 0) return "";
  return exe + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

std::string TemplateKey(const QemuConfig& c, const std::string& image_disk, const std::string& qemu_identity) {
  json k = {{"format", kTemplateFormat},
            {"image_disk", image_disk},
            {"qemu", qemu_identity},
            {"binary", c.binary},
            {"accel", c.accel == Accel::kKvm ? "kvm" : "tcg"},
            {"tb_size_mib", c.tb_size_mib},
            {"expose", c.expose_virtualization_extensions},
            {"processors", c.processors},
            {"memory_mib", c.memory_mib},
            {"kernel", c.kernel},
            {"initrd", c.initrd},
            {"append", c.append},
            {"root", static_cast<int>(c.root)},
            {"hotplug_ports", c.hotplug_ports},
            {"balloon", c.balloon},
            {"agent", c.agent_binary}};
  return Hex(Fnv1a64(k.dump()), 16);
}

Result<Template> EnsureTemplate(const std::string& templates_dir, const std::string& key, const QemuConfig& boot,
                                const std::string& image_disk, const std::string& run_dir, int boot_ms) {
  if (boot.root != RootKind::kDisk) return Status::Error("a template is made of a VM on an image's disk only");
  if (key.empty() || key.find('/') != std::string::npos || key[0] == '.')
    return Status::Error("template key '" + key + "' cannot name a directory");
  std::error_code ec;
  fs::create_directories(templates_dir, ec);
  if (ec) return Status::Error("cannot create " + templates_dir + ": " + ec.message());
  Template t;
  t.key = key;
  t.dir = templates_dir + "/" + key;
  t.disk = t.dir + "/disk.qcow2";
  t.state = t.dir + "/state.vm";
  FileLock lock(templates_dir + "/" + key + ".lock");
  if (!lock.ok()) return ErrnoStatus("lock " + templates_dir + "/" + key + ".lock");
  auto read_facts = [&t] {
    auto text = ReadFile(t.dir + "/template.json");
    json j = json::parse(text ? *text : std::string(), nullptr, false);
    if (j.is_object()) t.guest_kernel = j.value("guest_kernel", "");
  };
  if (fs::exists(t.dir, ec)) {  // made earlier, or by the one we waited for
    read_facts();
    return t;
  }
  // Under the lock nobody else builds this template: what a killed build left goes, its QEMU first.
  if (auto old = FindQemu(run_dir)) (void)StopQemu(*old, 0, kQuitMs);
  for (const auto& e : fs::directory_iterator(templates_dir, ec))
    if (e.path().filename().string().rfind(key + ".tmp-", 0) == 0) fs::remove_all(e.path(), ec);
  fs::remove_all(run_dir, ec);
  std::string tmp = t.dir + ".tmp-" + std::to_string(::getpid());
  fs::create_directories(tmp, ec);
  if (ec) return Status::Error("cannot create " + tmp + ": " + ec.message());
  fs::create_directories(run_dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    return Status::Error("cannot create " + run_dir + ": " + ec.message());
  }
  QemuConfig c = boot;
  c.run_dir = run_dir;
  json facts;
  Status made = MakeTemplate(tmp, c, image_disk, boot_ms, &facts);
  if (made.ok() && !WriteFileAtomic(tmp + "/template.json", facts.dump(2) + "\n"))
    made = ErrnoStatus("write " + tmp + "/template.json");
  if (made.ok() && ::rename(tmp.c_str(), t.dir.c_str()) != 0) made = ErrnoStatus("rename " + tmp + " into place");
  fs::remove_all(run_dir, ec);
  fs::remove(fs::path(run_dir).parent_path(), ec);  // only when empty
  if (!made.ok()) {
    fs::remove_all(tmp, ec);
    return made.Prefixed("template " + key + " of image disk " + image_disk);
  }
  t.made_now = true;
  read_facts();
  return t;
}

std::string PrintfBytes(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size() * 4);
  for (unsigned char b : bytes) {
    char esc[5];
    std::snprintf(esc, sizeof esc, "\\%03o", b);
    out += esc;
  }
  return out;
}

Result<GuestIdentity> FreshIdentity() {
  GuestIdentity id;
  id.epoch_seconds = static_cast<int64_t>(::time(nullptr));
  unsigned char buf[80];
  size_t got = 0;
  while (got < sizeof buf) {
    ssize_t n = ::getrandom(buf + got, sizeof buf - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("getrandom");
    got += static_cast<size_t>(n);
  }
  id.entropy.assign(reinterpret_cast<const char*>(buf), 64);
  for (size_t i = 64; i < sizeof buf; ++i) id.machine_id += Hex(buf[i], 2);
  return id;
}

std::string IdentityScript(const GuestIdentity& id) {
  std::string s;
  // An image may have busybox without its applets' links (date is not a shell builtin).
  s += "if command -v date >/dev/null; then date -s @" + std::to_string(id.epoch_seconds) + " ; else busybox date -s @" +
       std::to_string(id.epoch_seconds) + " ; fi >/dev/null || { echo 'cannot set the clock'; exit 1; }\n";
  s += "printf '" + PrintfBytes(id.entropy) + "' >/dev/urandom || { echo 'cannot add entropy'; exit 1; }\n";
  s += "echo " + id.machine_id + " >/etc/machine-id || { echo 'cannot write /etc/machine-id'; exit 1; }\n";
  s += "for f in /var/lib/systemd/random-seed /var/lib/urandom/random-seed; do [ ! -e $f ] || rm -f $f; done\n";
  return s;
}

}  // namespace lab::hv::qemu
