#include "tests/support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace lab::testing {

bool RequireRoot(const std::string& what) {
  if (::geteuid() == 0) return true;
  std::printf("SKIP: %s needs root\n", what.c_str());
  return false;
}

std::string TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string Src(const std::string& relative) { return std::string(LAB_SOURCE_DIR) + "/" + relative; }

}  // namespace lab::testing
