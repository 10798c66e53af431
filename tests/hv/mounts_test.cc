// The file helpers under the partition code (hv/kernel/partition_internal.h); no privileges.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

TEST_CASE("MakeDirs makes every missing parent, accepts what exists and refuses a file in the way", "[hv]") {
  std::string dir = lab::testing::TempDir("labtest-mkdirs");
  REQUIRE(MakeDirs(dir + "/a/b/c").ok());
  CHECK(IsDir(dir + "/a/b/c"));
  REQUIRE(MakeDirs(dir + "/a/b/c").ok());   // there already
  REQUIRE(MakeDirs(dir + "/a/b/d/").ok());  // a trailing slash
  CHECK(IsDir(dir + "/a/b/d"));
  REQUIRE(MakeDirs(dir + "/m", 0700).ok());
  struct stat st;
  REQUIRE(::stat((dir + "/m").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);

  std::ofstream(dir + "/file") << "x";
  Status in_the_way = MakeDirs(dir + "/file");
  REQUIRE_FALSE(in_the_way.ok());
  CHECK(in_the_way.message() == "mkdir " + dir + "/file: not a directory");
  Status under_a_file = MakeDirs(dir + "/file/sub/deeper");
  REQUIRE_FALSE(under_a_file.ok());
  CHECK(under_a_file.message().find("Not a directory") != std::string::npos);
  CHECK_FALSE(MakeDirs("").ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lab::hv::kernel
