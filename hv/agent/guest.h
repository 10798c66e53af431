// The agent inside a qemu VM: `lab __guest-agent`, started by the guest's init (lab-guest-init,
// pid 1) once the root filesystem is there, with the `lab.agent` virtio-serial port's device in
// LAB_AGENT_PORT.
//
// It answers the agent protocol (hv/agent/protocol.h) on that port: ping and exec as the init
// does, and "hv": the hypervisor API, dispatched (hv/agent/remote.h) to this guest's own
// hypervisor for the lab and VM chain the request names (hv::MakeHypervisor with
// LabContext::inside), so the VM's switches, NAT, DNS settings and nested VMs are made here by the
// partition driver, and qemu VMs inside by QEMU. Requests are answered concurrently, each in a
// thread of its own; EOF on the port means the host went away (its terminal sessions are hung
// up) until it connects again.
#pragma once

#include <string>

namespace lab::hv::agent {

struct GuestAgentOptions {
  std::string port;       // the virtio-serial device; "" = found by name under /sys/class/virtio-ports
  std::string init_path;  // lab-init, for the partitions made here
};

/// Serves until killed. Returns an exit code only when the port cannot be found.
int RunGuestAgent(const GuestAgentOptions& options);

/// `lab __guest-exec`: one session's command (LAB_GUEST_EXEC: the session's arguments), run by
/// this guest's hypervisor with this process's stdin/stdout/stderr (the agent's pty or socket).
/// Returns the command's exit code; 125 when it could not be run.
int RunGuestExec();

}  // namespace lab::hv::agent
