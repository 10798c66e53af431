// End to end: labs on images built from Debian's packages (labs/images-web.yaml), with the real
// `lab` binary: built once with a line per step, served from nginx to curl (neither the host's),
// a root writable everywhere, and a second `up` that builds nothing and asks no mirror.
//
// The tests of the suite that need the Debian archive: they say SKIP when it does not answer
// (LAB_REQUIRE_ARCHIVE). One build is shared by the cases (ShareImages).
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

// mtimes of everything at the top of each cache entry: a rebuild or rewrite changes them.
std::map<std::string, fs::file_time_type> EntryTimes() {
  std::map<std::string, fs::file_time_type> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(SharedImageCache() + "/sha256", ec))
    for (const auto& f : fs::directory_iterator(e.path(), ec))
      if (f.path().filename() != "used") out[f.path().string()] = fs::last_write_time(f.path(), ec);
  return out;
}

const char* kDeadProxy = "http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9";

}  // namespace

TEST_CASE("lab image build makes each Debian image once, with a line per step and its log kept",
          "[root][e2e][images]") {
  LAB_REQUIRE_ROOT("building Debian images");
  LAB_REQUIRE_ARCHIVE();
  Sandbox sb;
  ShareImages(sb);
  std::string file = Src("labs/images-web.yaml");
  Run build = sb.Lab("image build " + file);
  INFO(build.out);
  REQUIRE(build.code == 0);
  for (const char* step : {"resolving", "downloading", "unpacking", "configuring", "running step 1/1"})
    CHECK(build.out.find(step) != std::string::npos);
  // Both images are in the cache, each with its build log and its tree.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(SharedImageCache() + "/sha256")) {
    ++entries;
    CHECK(fs::exists(e.path() / "build.log"));
    CHECK(fs::exists(e.path() / "rootfs/usr/bin/dpkg"));
  }
  CHECK(entries >= 2);
  // Built: the same command again resolves from its pins and asks no mirror.
  auto before = EntryTimes();
  Run again = sb.Lab("image build " + file, kDeadProxy);
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("downloading") == std::string::npos);
  CHECK(EntryTimes() == before);
}

TEST_CASE("A web VM on an nginx image serves a client VM on a curl image; a second up builds nothing",
          "[root][e2e][images]") {
  LAB_REQUIRE_ROOT("bringing up labs on Debian images");
  LAB_REQUIRE_ARCHIVE();
  Sandbox sb;
  ShareImages(sb);
  std::string file = Src("labs/images-web.yaml");
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);

  Run check = sb.Lab("check images-web");
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find(" 0 failed") != std::string::npos);

  // The software is the images': curl in the client fetches nginx's page from the web VM, the
  // client has no nginx and the web VM no curl.
  Run curl = sb.Lab("exec images-web client -- curl -fsS http://10.60.0.10/");
  INFO(curl.out);
  CHECK(curl.code == 0);
  CHECK(curl.out.find("served by nginx version: nginx/") != std::string::npos);
  CHECK(sb.Lab("exec images-web client -- sh -c 'command -v nginx'").code != 0);
  CHECK(sb.Lab("exec images-web web -- sh -c 'command -v curl'").code != 0);

  // The host's /etc/shadow is not in a VM on an image: the VM's is the image's own.
  std::string host_shadow;
  {
    std::ifstream in("/etc/shadow");
    std::getline(in, host_shadow);  // root's line
  }
  Run shadow = sb.Lab("exec images-web web -- cat /etc/shadow");
  CHECK(shadow.out.find(host_shadow) == std::string::npos);

  // Writable everywhere, /usr included: the .deb placed by files: installs with dpkg -i, and
  // stays across stop and start.
  Run dpkg = sb.Lab("exec images-web web -- dpkg -i /opt/debs/lab-hello.deb");
  INFO(dpkg.out);
  CHECK(dpkg.code == 0);
  CHECK(sb.Lab("exec images-web web -- lab-hello").out.find("hello from a package") != std::string::npos);
  CHECK(sb.Lab("stop images-web web").code == 0);
  CHECK(sb.Lab("start images-web web").code == 0);
  CHECK(sb.Lab("exec images-web web -- lab-hello").out.find("hello from a package") != std::string::npos);

  // down leaves nothing but the cache; the next up builds nothing and asks no mirror.
  auto before = EntryTimes();
  REQUIRE(!before.empty());
  TakeDownLeavingNothing(sb, "images-web", InitPids(sb, "images-web"));
  Run again = sb.Lab("up " + file, kDeadProxy);
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("resolving") == std::string::npos);
  CHECK(again.out.find("downloading") == std::string::npos);
  CHECK(EntryTimes() == before);
  Run check2 = sb.Lab("check images-web");
  INFO(check2.out);
  CHECK(check2.code == 0);
  TakeDownLeavingNothing(sb, "images-web", InitPids(sb, "images-web"));
}

TEST_CASE("An unknown package fails the build at its line, naming the image, and builds nothing", "[root][e2e][images]") {
  LAB_REQUIRE_ROOT("building Debian images");
  LAB_REQUIRE_ARCHIVE();
  Sandbox sb;
  ShareImages(sb);
  std::string file = sb.dir + "/typo.yaml";
  std::ofstream(file) << "lab: typo\n"
                         "images:\n"
                         "  web:\n"
                         "    debian: bookworm\n"
                         "    packages: [curl, nginx-lite]\n"
                         "hosts:\n"
                         "  hv1:\n"
                         "    switches:\n"
                         "      Lab: {type: internal, ip: 10.62.0.1/24}\n"
                         "    vms:\n"
                         "      web:\n"
                         "        image: web\n"
                         "        adapters:\n"
                         "          - {switch: Lab, ip: 10.62.0.10/24}\n";
  auto before = EntryTimes();
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  CHECK(up.code == 1);
  CHECK(up.out.find(file + ":5:22: error: image 'web': package 'nginx-lite' is not in Debian bookworm; "
                           "did you mean 'nginx-light'?") != std::string::npos);
  CHECK(EntryTimes() == before);
}
