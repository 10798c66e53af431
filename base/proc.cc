#include "base/proc.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace lab {

ProcStat ReadProcStat(int pid) {
  ProcStat out;
  if (pid <= 0) return out;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  // The line is generated whole on the first read (well under 1 KiB, comm being 16 bytes at
  // most); one read, retried only if a signal interrupts it.
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return out;
  buf[n] = '\0';
  // Field 2 (comm) is parenthesized and may hold spaces and parentheses: count after the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] != ' ' || close[2] == '\0') return out;
  const char* p = close + 2;
  const char state = *p;
  // p is at field 3; field 22 is 19 fields further.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return out;
    while (*p == ' ') ++p;
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long long start = std::strtoull(p, &end, 10);
  if (errno != 0 || end == p || (*end != ' ' && *end != '\n' && *end != '\0')) return out;
  out.found = true;
  out.state = state;
  out.start_time = start;
  return out;
}

}  // namespace lab
