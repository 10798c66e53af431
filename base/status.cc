#include "base/status.h"

#include <cerrno>
#include <cstring>

namespace lab {

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be buf.
  return ::strerror_r(err, buf, sizeof buf);
}

Status ErrnoStatus(const std::string& what) { return Status::Error(what + ": " + ErrnoText(errno)); }

}  // namespace lab
