#include "hv/qemu/boot.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "hv/qemu/agent_client.h"
#include "hv/qemu/doctor.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"

namespace lab::hv::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Result<BootResult> BootOnce(const BootOptions& o) {
  auto kernel = FetchKernel(KernelCacheDir(o.state_dir));
  if (!kernel.ok()) return kernel.status();
  std::error_code ec;
  fs::create_directories(o.run_dir, ec);
  std::string initrd = o.run_dir + "/initrd.gz";
  LAB_RETURN_IF_ERROR(BuildInitramfs(*kernel, o.guest_init, StaticBusybox(), initrd));
  QemuConfig c;
  c.accel = o.accel;
  c.expose_virtualization_extensions = o.expose;
  c.memory_mib = 384;
  c.kernel = kernel->vmlinux;
  c.initrd = initrd;
  c.run_dir = o.run_dir;
  c.nice = o.nice;
  if (o.floor) c.append = "lab.floor";
  auto start = Clock::now();
  auto p = StartQemu(c);
  if (!p.ok()) return p.status();
  BootResult r;
  r.kernel = kernel->release;
  Status st;
  if (o.floor) {
    for (;;) {
      std::ifstream log(p->console_log());
      std::stringstream s;
      s << log.rdbuf();
      if (s.str().find("lab-floor-marker") != std::string::npos) break;
      if (Clock::now() - start > std::chrono::milliseconds(o.timeout_ms)) {
        st = Status::Error("no floor marker on the console within the timeout");
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  } else {
    auto agent = AgentClient::Connect(p->agent_socket(), 5000);
    if (!agent.ok()) st = agent.status();
    if (agent.ok()) {
      auto ping = agent->Ping(o.timeout_ms);
      if (!ping.ok()) st = ping.status();
    }
  }
  r.ready_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  Status stopped = StopQemu(*p, 0, 3000);
  std::ifstream console(p->console_log());
  for (std::string line; std::getline(console, line);)
    if (line.rfind("lab-guest-init:", 0) == 0) r.init_lines.push_back(line);
  fs::remove_all(o.run_dir, ec);
  LAB_RETURN_IF_ERROR(st);
  LAB_RETURN_IF_ERROR(stopped);
  return r;
}

}  // namespace lab::hv::qemu
