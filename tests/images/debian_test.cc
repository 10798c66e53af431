// The Debian builder: what apt's simulation says becomes the resolved set and the errors of
// unknown packages (FILE:LINE:COL, the package, the image); mmdebstrap's command line carries
// the spec; a from: layer is built offline over a small image (busybox), files and run steps in
// its own upper layer, and a build killed halfway leaves no process and no mount behind.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "base/text.h"
#include "images/debian.h"
#include "images/debian_internal.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::schema::Image;
using lab::schema::ImageKind;
namespace debian = lab::images::debian;

namespace {

void WriteFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Image WebImage() {
  Image img;
  img.name = "web";
  img.kind = ImageKind::kDebian;
  img.suite = "bookworm";
  img.packages = {"nginx-light", "curl"};
  img.package_locs = {{7, 18}, {7, 31}};
  img.loc = {5, 3};
  img.kind_loc = {6, 13};
  return img;
}

// A parent image made offline: busybox-static's applets as a tiny rootfs.
fs::path BusyboxRootfs(const fs::path& dir) {
  fs::create_directories(dir / "bin");
  fs::create_directories(dir / "etc");
  fs::create_directories(dir / "proc");
  fs::copy_file("/bin/busybox", dir / "bin/busybox");
  for (const char* applet : {"sh", "cat", "echo", "rm", "sleep", "mkdir", "ls"})
    fs::create_symlink("busybox", dir / "bin" / applet);
  WriteFile(dir / "etc/os-release", "ID=busybox\n");
  WriteFile(dir / "etc/motd", "parent's motd\n");
  return dir;
}

bool MountedUnder(const std::string& prefix) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.find(prefix) != std::string::npos) return true;
  return false;
}

// The processes descending from `root` (not `root` itself), by their parent pids in /proc.
std::set<int> Descendants(int root) {
  std::map<int, int> parent;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = Slurp(e.path() / "stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    int ppid = 0;
    rest >> state >> ppid;
    parent[std::stoi(name)] = ppid;
  }
  std::set<int> out;
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, ppid] : parent)
      if ((ppid == root || out.count(ppid)) && out.insert(pid).second) grew = true;
  }
  return out;
}

}  // namespace

TEST_CASE("The resolved set is every Inst line of apt's simulation as package=version, sorted", "[images]") {
  const char* out =
      "NOTE: This is only a simulation!\n"
      "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n"
      "Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n"
      "Inst base-files [12.4] (12.4+deb12u13 Debian:12.15/oldstable [amd64])\n"
      "Inst apt (2.6.1 Debian:12.15/oldstable [amd64])\n"
      "Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])\n"
      "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])\n";
  debian::Simulation sim = debian::ParseSimulation(out);
  CHECK(sim.installs == std::vector<std::string>{"apt=2.6.1", "base-files=12.4+deb12u13",
                                                  "gcc-12-base=12.2.0-14+deb12u1", "libc6=2.36-9+deb12u14"});
  CHECK(sim.unknown.empty());
  CHECK(sim.other_errors.empty());
}

TEST_CASE("Unknown packages in apt's simulation are named, whatever way apt says it", "[images]") {
  const char* out =
      "Reading package lists...\n"
      "E: Unable to locate package nginx-lite\n"
      "E: Package 'ghost' has no installation candidate\n"
      "E: Version '9.9' for 'curl' was not found\n";
  debian::Simulation sim = debian::ParseSimulation(out);
  CHECK(sim.unknown == std::vector<std::string>{"curl=9.9", "ghost", "nginx-lite"});
  CHECK(sim.installs.empty());
}

TEST_CASE("Unmet dependencies are kept as apt wrote them", "[images]") {
  const char* out =
      "The following packages have unmet dependencies:\n"
      " foo : Depends: bar but it is not installable\n"
      "E: Unable to correct problems, you have held broken packages.\n";
  debian::Simulation sim = debian::ParseSimulation(out);
  CHECK(sim.unknown.empty());
  CHECK(sim.other_errors.find("foo : Depends: bar") != std::string::npos);
  CHECK(sim.other_errors.find("held broken packages") != std::string::npos);
}

TEST_CASE("An unknown package is reported at its line and column with the image and a close name", "[images]") {
  Image img = WebImage();
  img.packages = {"nginx-lite", "curl"};
  std::string err = debian::UnknownPackagesError(img, "labs/images-web.yaml", {"nginx-lite"},
                                                 {"curl", "nginx-core", "nginx-light", "nginx-full"});
  CHECK(err ==
        "labs/images-web.yaml:7:18: error: image 'web': package 'nginx-lite' is not in Debian bookworm; "
        "did you mean 'nginx-light'?");
  std::string far = debian::UnknownPackagesError(img, "lab.yaml", {"curl"}, {"zsh"});
  CHECK(far.rfind("lab.yaml:7:31: error: image 'web': package 'curl' is not in Debian bookworm; check its name", 0) == 0);
}

TEST_CASE("Without a mirror an image uses Debian's archive with updates and security, with one only that", "[images]") {
  CHECK(debian::SourceLines("bookworm", "") ==
        std::vector<std::string>{"deb http://deb.debian.org/debian bookworm main",
                                 "deb http://deb.debian.org/debian bookworm-updates main",
                                 "deb http://security.debian.org/debian-security bookworm-security main"});
  CHECK(debian::SourceLines("sid", "") == std::vector<std::string>{"deb http://deb.debian.org/debian sid main"});
  CHECK(debian::SourceLines("bookworm", "http://snapshot.debian.org/archive/debian/20250520T000000Z") ==
        std::vector<std::string>{"deb http://snapshot.debian.org/archive/debian/20250520T000000Z bookworm main"});
}

TEST_CASE("A word quoted for the shell comes back unchanged through /bin/sh", "[images]") {
  for (std::string word : {"plain", "two words", "it's", "'", "$HOME `id` \"q\" \\ ;&|", ""}) {
    std::string cmd = "printf %s " + debian::ShellQuote(word);
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string got;
    char buf[256];
    size_t n;
    while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) got.append(buf, n);
    ::pclose(p);
    CHECK(got == word);
  }
}

TEST_CASE("mmdebstrap's command line carries the variant, the packages, slim, the files and the run steps", "[images]") {
  Image img = WebImage();
  img.slim = true;
  img.files = {{"/opt/pkgs/hello.deb", "hello.deb"}};
  img.run = {"echo 'built' > /etc/built"};
  debian::MmdebstrapPlan plan{"/s/tmp/k.1.0/rootfs", "/s/tmp/k.1.0/lists", "/s/debian/debs", "/labs"};
  auto argv = debian::MmdebstrapArgv(img, debian::SourceLines("bookworm", ""), plan);
  std::string all = lab::Join(argv, "\n");
  CHECK(argv.at(0) == "mmdebstrap");
  CHECK(all.find("--variant=minbase") != std::string::npos);
  CHECK(all.find("--include=nginx-light,curl") != std::string::npos);
  CHECK(all.find("--skip=update") != std::string::npos);
  CHECK(all.find("--dpkgopt=path-exclude=/usr/share/doc/*") != std::string::npos);
  CHECK(all.find("--dpkgopt=path-include=/usr/share/doc/*/copyright") != std::string::npos);
  CHECK(all.find("'/labs/hello.deb'") != std::string::npos);
  CHECK(all.find("mkdir -p -- '/opt/pkgs'") != std::string::npos);
  CHECK(all.find("/bin/sh -c 'echo '\\''built'\\'' > /etc/built'") != std::string::npos);
  // suite, target, then the sources: the same lines the resolver used
  REQUIRE(argv.size() > 5);
  CHECK(argv[argv.size() - 5] == "bookworm");
  CHECK(argv[argv.size() - 4] == "/s/tmp/k.1.0/rootfs");
  CHECK(argv.back() == "deb http://security.debian.org/debian-security bookworm-security main");
  Image fat = WebImage();
  CHECK(lab::Join(debian::MmdebstrapArgv(fat, {}, plan), "\n").find("--dpkgopt") == std::string::npos);
}

TEST_CASE("A from: layer holds only what its files and run steps changed, over the parent it leaves alone", "[images][root]") {
  LAB_REQUIRE_ROOT("building a from: layer (overlay mount)");
  fs::path dir = lab::testing::TempDir("lab-layer");
  fs::path parent = BusyboxRootfs(dir / "parent");
  WriteFile(dir / "lab/motd.txt", "the layer's motd\n");
  WriteFile(dir / "lab/tool.sh", "#!/bin/sh\necho tool\n");
  fs::permissions(dir / "lab/tool.sh", fs::perms(0755));
  Image img;
  img.name = "tools";
  img.kind = ImageKind::kFrom;
  img.from = "base";
  img.files = {{"/etc/motd", "motd.txt"}, {"/usr/local/bin/tool", "tool.sh"}};
  img.run = {"echo built > /etc/built", "rm /etc/os-release", "/usr/local/bin/tool > /etc/tool.out"};
  fs::path staging = dir / "cache/tmp/key.1.0";
  fs::create_directories(staging);
  std::vector<std::string> steps;
  lab::images::BuildProgress progress;
  progress.step = [&](const std::string& s) { steps.push_back(s); };
  progress.log = staging / "build.log";
  progress.cache_root = dir / "cache";
  std::string lab_file = (dir / "lab/lab.yaml").string();
  auto resolved = lab::images::ResolveDebian(img, {parent}, lab_file, progress);
  REQUIRE(resolved.ok());
  CHECK(resolved->find("packages:\nfiles:\n") == 0);  // no packages: nothing asked of a mirror
  auto st = lab::images::BuildDebian(img, {parent}, staging, lab_file, progress);
  INFO(Slurp(progress.log));
  REQUIRE(st.ok());
  fs::path layer = staging / "layer";
  CHECK(Slurp(layer / "etc/motd") == "the layer's motd\n");
  CHECK(Slurp(layer / "etc/built") == "built\n");
  CHECK(Slurp(layer / "etc/tool.out") == "tool\n");
  CHECK((fs::status(layer / "usr/local/bin/tool").permissions() & fs::perms::owner_exec) != fs::perms::none);
  struct stat wh{};
  REQUIRE(::lstat((layer / "etc/os-release").c_str(), &wh) == 0);
  CHECK(S_ISCHR(wh.st_mode));  // a whiteout: the parent's file is gone in this image only
  CHECK(!fs::exists(layer / "bin/busybox"));  // the parent's files stay in the parent
  CHECK(Slurp(parent / "etc/motd") == "parent's motd\n");
  CHECK(fs::exists(parent / "etc/os-release"));
  CHECK(!fs::exists(staging / "work"));
  CHECK(!fs::exists(staging / "merged"));
  CHECK(!MountedUnder(dir.string()));
  CHECK(steps == std::vector<std::string>{"running step 1/3: echo built > /etc/built", "running step 2/3: rm /etc/os-release",
                                          "running step 3/3: /usr/local/bin/tool > /etc/tool.out"});
  CHECK(Slurp(progress.log).find("lab: step 2/3: rm /etc/os-release") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("A failing run step fails the build, naming the image and its log", "[images][root]") {
  LAB_REQUIRE_ROOT("building a from: layer (overlay mount)");
  fs::path dir = lab::testing::TempDir("lab-layer");
  fs::path parent = BusyboxRootfs(dir / "parent");
  Image img;
  img.name = "broken";
  img.kind = ImageKind::kFrom;
  img.from = "base";
  img.run = {"echo before", "exit 3", "echo never > /etc/never"};
  fs::path staging = dir / "cache/tmp/key.1.0";
  fs::create_directories(staging);
  lab::images::BuildProgress progress;
  progress.log = staging / "build.log";
  auto st = lab::images::BuildDebian(img, {parent}, staging, (dir / "lab.yaml").string(), progress);
  REQUIRE(!st.ok());
  CHECK(st.message().find("image 'broken'") != std::string::npos);
  CHECK(st.message().find("exit 3") != std::string::npos);
  CHECK(st.message().find(progress.log.string()) != std::string::npos);
  CHECK(!fs::exists(staging / "layer/etc/never"));
  CHECK(!MountedUnder(dir.string()));
  fs::remove_all(dir);
}

TEST_CASE("A build killed with lab leaves no process and no mount behind", "[images][root]") {
  LAB_REQUIRE_ROOT("building a from: layer (overlay mount)");
  fs::path dir = lab::testing::TempDir("lab-layer");
  fs::path parent = BusyboxRootfs(dir / "parent");
  Image img;
  img.name = "slow";
  img.kind = ImageKind::kFrom;
  img.from = "base";
  img.run = {"echo $$ > /etc/pid; sleep 600"};
  fs::path staging = dir / "cache/tmp/key.1.0";
  fs::create_directories(staging);
  // The builder in a process of its own, killed like a `lab up` is.
  pid_t builder = ::fork();
  REQUIRE(builder >= 0);
  if (builder == 0) {
    lab::images::BuildProgress progress;
    auto st = lab::images::BuildDebian(img, {parent}, staging, (dir / "lab.yaml").string(), progress);
    ::_exit(st.ok() ? 0 : 1);
  }
  // The step is running once it wrote its pid (into the overlay's upper dir).
  fs::path pid_file = staging / "layer/etc/pid";
  for (int i = 0; i < 200 && !(fs::exists(pid_file) && fs::file_size(pid_file) > 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(fs::exists(pid_file));
  CHECK(!MountedUnder(dir.string()));  // the build's mounts live in its own namespace
  std::set<int> build = Descendants(builder);
  CHECK(build.size() >= 3);  // the namespace's keeper, its init, the step's shell (and its sleep)
  ::kill(builder, SIGKILL);
  int status = 0;
  ::waitpid(builder, &status, 0);
  // Every process of the build goes with it (and so do its namespaces and mounts).
  auto alive = [&] {
    int n = 0;
    for (int pid : build) n += ::kill(pid, 0) == 0 ? 1 : 0;
    return n;
  };
  int left = alive();
  for (int i = 0; i < 100 && left > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = alive();
  }
  CHECK(left == 0);
  CHECK(!MountedUnder(dir.string()));
  // and the same build runs again from a fresh staging dir (the cache throws the old one away).
  img.run = {"echo again > /etc/again"};
  fs::path again = dir / "cache/tmp/key.1.1";
  fs::create_directories(again);
  lab::images::BuildProgress progress;
  auto st = lab::images::BuildDebian(img, {parent}, again, (dir / "lab.yaml").string(), progress);
  CHECK(st.ok());
  CHECK(Slurp(again / "layer/etc/again") == "again\n");
  fs::remove_all(dir);
}
