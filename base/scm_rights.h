// Passing an open file over a unix socket (SCM_RIGHTS): the receiver gets its own descriptor of
// the same open file, the sender keeps its own.
#pragma once

#include <sys/socket.h>

#include <cstring>

namespace lab {

/// One sendmsg of `size` bytes of `data` on socket `sock` with `fd` as SCM_RIGHTS ancillary data
/// (MSG_NOSIGNAL): what sendmsg returns (bytes sent, or -1 with errno). Async-signal-safe.
inline ssize_t SendWithFd(int sock, const void* data, size_t size, int fd) {
  iovec iov{const_cast<void*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL);
}

}  // namespace lab
