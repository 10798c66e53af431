// Probes that `lab check` runs from inside a machine, and the stand-in's HTTP "whoami" server.
//
// Every function here acts in the calling process's namespaces: the caller has entered the
// machine first (RunInPartition). Names resolve through the machine's own /etc/resolv.conf and
// /etc/hosts (getaddrinfo), exactly as a program inside the machine would.
#pragma once

#include <string>

#include "base/net.h"

namespace lab::hv::kernel {

struct ProbeResult {
  bool ok = false;
  std::string detail;   // why it failed: "no route", "timeout", "name not found", "connection refused"
  std::string value;    // resolve: the addresses (space-separated); http: the first line of the body; ping: the address
};

/// Resolves `target` if it is a name, then sends ICMP echo requests (raw socket) until one
/// reply arrives or `timeout_ms` passes.
ProbeResult ProbePing(const std::string& target, int timeout_ms);
/// Resolves a name; value = every IPv4 address of the answer, space-separated, first first.
ProbeResult ProbeResolve(const std::string& name, int timeout_ms);
/// Opens a TCP connection to "HOST:PORT".
ProbeResult ProbeTcp(const std::string& host_port, int timeout_ms);
/// GET of an http:// URL (HTTP/1.0); value = the body's first line, trimmed.
ProbeResult ProbeHttp(const std::string& url, int timeout_ms);

/// Serves HTTP on addr:port forever; every response body is the client's source address and a
/// newline. Returns only on a setup error (the exit code to use).
int RunWhoamiServer(Ipv4 addr, int port);

}  // namespace lab::hv::kernel
