// Probes with plain sockets in the caller's namespaces (see probe.h).
#include "hv/kernel/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "base/status.h"
#include "base/text.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {
namespace {

using Clock = std::chrono::steady_clock;

ProbeResult Fail(std::string detail) {
  ProbeResult r;
  r.detail = std::move(detail);
  return r;
}

// First IPv4 address of `host` (a literal or a name through the machine's resolver).
std::optional<in_addr> Resolve(const std::string& host) {
  in_addr a{};
  if (::inet_pton(AF_INET, host.c_str(), &a) == 1) return a;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res) return std::nullopt;
  a = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return a;
}

std::string AddrText(in_addr a) {
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string ErrDetail(int err) {
  switch (err) {
    case ECONNREFUSED: return "connection refused";
    case ENETUNREACH:
    case EHOSTUNREACH: return "no route";
    case ETIMEDOUT: return "timeout";
    default: return ErrnoText(err);
  }
}

uint16_t Checksum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Non-blocking connect bounded by the deadline; returns the socket or a failure detail.
int Connect(in_addr addr, int port, Clock::time_point deadline, std::string* detail) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *detail = ErrnoText(errno);
    return -1;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr = addr;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) {
      *detail = ErrDetail(errno);
      ::close(fd);
      return -1;
    }
    for (;;) {
      pollfd pfd{fd, POLLOUT, 0};
      int n = ::poll(&pfd, 1, MsLeft(deadline));
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        *detail = "timeout";
        ::close(fd);
        return -1;
      }
      break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      *detail = ErrDetail(err);
      ::close(fd);
      return -1;
    }
  }
  return fd;
}

bool SendAll(int fd, const std::string& data, Clock::time_point deadline) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, MsLeft(deadline)) <= 0) return false;
  }
  return true;
}

}  // namespace

ProbeResult ProbeResolve(const std::string& name, int timeout_ms) {
  (void)timeout_ms;  // getaddrinfo has its own timeouts (resolv.conf)
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || !res) return Fail("name not found");
  // A machine registers every address it has (as Windows does in DNS): report them all.
  ProbeResult r;
  r.ok = true;
  for (addrinfo* i = res; i; i = i->ai_next) {
    std::string a = AddrText(reinterpret_cast<sockaddr_in*>(i->ai_addr)->sin_addr);
    if ((" " + r.value + " ").find(" " + a + " ") == std::string::npos) r.value += (r.value.empty() ? "" : " ") + a;
  }
  ::freeaddrinfo(res);
  return r;
}

ProbeResult ProbePing(const std::string& target, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto addr = Resolve(target);
  if (!addr) return Fail("name not found");
  UniqueFd fd(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  if (!fd.valid()) return Fail("raw socket: " + ErrnoText(errno));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = *addr;
  const uint16_t id = static_cast<uint16_t>(::getpid() ^ reinterpret_cast<uintptr_t>(&to));
  uint16_t seq = 0;
  auto next_send = Clock::now();
  std::string last_detail = "timeout";
  while (Clock::now() < deadline) {
    if (Clock::now() >= next_send) {
      unsigned char pkt[64] = {};
      icmphdr* h = reinterpret_cast<icmphdr*>(pkt);
      h->type = ICMP_ECHO;
      h->un.echo.id = htons(id);
      h->un.echo.sequence = htons(++seq);
      std::memcpy(pkt + sizeof(icmphdr), "lab-probe", 9);
      h->checksum = Checksum(pkt, sizeof pkt);
      if (::sendto(fd.get(), pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
        if (errno == ENETUNREACH || errno == EHOSTUNREACH) return Fail("no route");
        last_detail = ErrnoText(errno);
      }
      next_send = Clock::now() + std::chrono::milliseconds(200);
    }
    int wait = std::min(MsLeft(deadline), static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               next_send - Clock::now()).count()) + 1);
    pollfd pfd{fd.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, wait < 0 ? 0 : wait);
    if (n <= 0) continue;
    unsigned char buf[1500];
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    ssize_t got = ::recvfrom(fd.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (got < static_cast<ssize_t>(sizeof(iphdr))) continue;
    const iphdr* ip = reinterpret_cast<const iphdr*>(buf);
    size_t ihl = static_cast<size_t>(ip->ihl) * 4;
    if (got < static_cast<ssize_t>(ihl + sizeof(icmphdr))) continue;
    const icmphdr* reply = reinterpret_cast<const icmphdr*>(buf + ihl);
    if (reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == id && from.sin_addr.s_addr == addr->s_addr) {
      ProbeResult r;
      r.ok = true;
      r.value = AddrText(*addr);
      return r;
    }
    if (reply->type == ICMP_DEST_UNREACH) {
      // The quoted original must be ours.
      size_t inner = ihl + sizeof(icmphdr);
      if (got >= static_cast<ssize_t>(inner + sizeof(iphdr))) {
        const iphdr* oip = reinterpret_cast<const iphdr*>(buf + inner);
        size_t oihl = static_cast<size_t>(oip->ihl) * 4;
        if (got >= static_cast<ssize_t>(inner + oihl + sizeof(icmphdr))) {
          const icmphdr* orig = reinterpret_cast<const icmphdr*>(buf + inner + oihl);
          if (ntohs(orig->un.echo.id) == id && oip->daddr == addr->s_addr) last_detail = "no route";
        }
      }
    }
  }
  return Fail(last_detail);
}

ProbeResult ProbeTcp(const std::string& host_port, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return Fail("expected HOST:PORT, got '" + host_port + "'");
  std::string host = host_port.substr(0, colon);
  int port = std::atoi(host_port.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return Fail("bad port in '" + host_port + "'");
  auto addr = Resolve(host);
  if (!addr) return Fail("name not found");
  std::string detail;
  int fd = Connect(*addr, port, deadline, &detail);
  if (fd < 0) return Fail(detail);
  ::close(fd);
  ProbeResult r;
  r.ok = true;
  r.value = AddrText(*addr) + ":" + std::to_string(port);
  return r;
}

ProbeResult ProbeHttp(const std::string& url, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) return Fail("only http:// URLs are supported");
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host = authority;
  int port = 80;
  if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = std::atoi(authority.c_str() + colon + 1);
    if (port <= 0 || port > 65535) return Fail("bad port in '" + url + "'");
  }
  auto addr = Resolve(host);
  if (!addr) return Fail("name not found");
  std::string detail;
  UniqueFd fd(Connect(*addr, port, deadline, &detail));
  if (!fd.valid()) return Fail(detail);
  if (!SendAll(fd.get(), "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n", deadline)) return Fail("send failed");
  std::string response;
  for (;;) {
    pollfd pfd{fd.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return Fail("timeout");
    char buf[4096];
    ssize_t got = ::recv(fd.get(), buf, sizeof buf, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) return Fail(ErrDetail(errno));
    if (got == 0) break;
    response.append(buf, static_cast<size_t>(got));
    if (response.size() > (1u << 20)) break;
  }
  size_t eol = response.find("\r\n");
  std::string status_line = response.substr(0, eol);
  std::vector<std::string> parts = Split(status_line, ' ');
  if (parts.size() < 2 || parts[0].rfind("HTTP/", 0) != 0) return Fail("not an HTTP response");
  size_t body_at = response.find("\r\n\r\n");
  std::string body = body_at == std::string::npos ? "" : response.substr(body_at + 4);
  ProbeResult r;
  r.value = Trim(body.substr(0, body.find('\n')));
  r.ok = parts[1] == "200";
  if (!r.ok) r.detail = "HTTP " + parts[1];
  return r;
}

int RunWhoamiServer(Ipv4 addr, int port) {
  ::signal(SIGPIPE, SIG_IGN);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return 1;
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(addr.value);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return 1;
  if (::listen(fd.get(), 64) != 0) return 1;
  for (;;) {
    sockaddr_in peer{};
    socklen_t plen = sizeof peer;
    int c = ::accept4(fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC);
    if (c < 0) continue;
    UniqueFd conn(c);
    // Read the request head (bounded in size and time), then answer.
    std::string req;
    auto deadline = Clock::now() + std::chrono::milliseconds(2000);
    while (req.size() < 4096 && req.find("\r\n\r\n") == std::string::npos) {
      pollfd pfd{c, POLLIN, 0};
      if (::poll(&pfd, 1, MsLeft(deadline)) <= 0) break;
      char buf[1024];
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string body = AddrText(peer.sin_addr) + "\n";
    std::string resp = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n" + body;
    SendAll(c, resp, Clock::now() + std::chrono::milliseconds(2000));
  }
}

}  // namespace lab::hv::kernel
