// Helpers for end-to-end tests: the real `lab` binary in a private sandbox, and the search for
// anything a lab left on the machine.
#pragma once

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "tests/support.h"

namespace lab::testing::e2e {

namespace fs = std::filesystem;
using lab::testing::Src;

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together (Lab), stdout alone (LabApart)
  std::string err;  // stderr (LabApart only)
};

/// A private state and run directory, so tests never meet the machine's own labs.
struct Sandbox {
  std::string dir = lab::testing::TempDir("lab-e2e");
  std::string state = dir + "/state";
  std::string run = dir + "/run";
  /// "<lab>-<uid>" of every lab this sandbox saw up (InitPids records them): the leftover check
  /// looks only at their objects, so labs of other sandboxes running at the same time never count.
  mutable std::set<std::string> owned;

  Sandbox() = default;
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  /// A test that stopped halfway (a failed REQUIRE) must not leave its labs running: every lab
  /// of the sandbox still up is taken down here, by the same binary and dirs. No REQUIRE: this
  /// runs while a failure unwinds.
  ~Sandbox() {
    for (const std::string& mark : owned) {
      std::error_code ec;
      if (!std::filesystem::exists(run + "/" + mark, ec)) continue;  // already down
      const auto dash = mark.rfind('-');
      if (dash == std::string::npos) continue;
      std::string cmd = "LAB_STATE_DIR=" + state + " LAB_RUN_DIR=" + run + " " + LAB_BINARY_DIR +
                        "/lab --no-color down " + mark.substr(0, dash) + " >/dev/null 2>&1";
      if (FILE* p = ::popen(cmd.c_str(), "r")) ::pclose(p);
    }
    // Then the sandbox's files, unless something is still mounted under it (never removed
    // through a mount).
    std::ifstream mounts("/proc/self/mountinfo");
    std::string line;
    while (std::getline(mounts, line))
      if (line.find(" " + dir + "/") != std::string::npos) return;
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  Run Lab(const std::string& args, const std::string& env = "") const {
    return Popen(env + " LAB_STATE_DIR=" + state + " LAB_RUN_DIR=" + run + " " + LAB_BINARY_DIR + "/lab --no-color " +
                 args + " 2>&1");
  }

  /// `lab ARGS` with stdout and stderr apart (neither a terminal).
  Run LabApart(const std::string& args) const {
    const std::string err_file = dir + "/stderr";
    Run r = Popen("LAB_STATE_DIR=" + state + " LAB_RUN_DIR=" + run + " " + LAB_BINARY_DIR + "/lab --no-color " + args +
                  " 2>" + err_file);
    std::ifstream in(err_file);
    r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return r;
  }

  Run Popen(const std::string& cmd) const {
    Run r;
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    size_t n;
    while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    RecordOwned();
    return r;
  }

  /// Each lab of the sandbox has a run directory named by its mark, "<lab>-<uid>", while it is
  /// up: remember them, so the leftover check knows this sandbox's objects from other labs'.
  void RecordOwned() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(run, ec))
      if (e.is_directory(ec) && e.path().filename().string().find('-') != std::string::npos)
        owned.insert(e.path().filename().string());
  }
};

inline std::vector<int> InitPids(const Sandbox& sb, const std::string& lab) {
  Run st = sb.Lab("status " + lab + " --json");
  std::vector<int> pids;
  auto j = nlohmann::json::parse(st.out, nullptr, false);
  if (j.is_discarded()) return pids;
  if (j.contains("uid")) sb.owned.insert(lab + "-" + j.value("uid", std::string()));
  for (const auto& m : j["machines"]) pids.push_back(m.value("pid", 0));
  return pids;
}

inline bool ProcessGone(int pid) {
  // A zombie waiting for its reaper is gone too: it holds no namespace and runs nothing.
  auto stat = lab::ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  auto close = stat->rfind(')');
  return close != std::string::npos && stat->size() > close + 2 && (*stat)[close + 2] == 'Z';
}

/// Whether a lab object's ownership mark (`<lab>-<uid>` cgroup, `lab.<uid>.` altname,
/// `lab_<uid>_` table) is one of the sandbox's (a lab whose run directory it saw).
inline bool OwnedBySandbox(const Sandbox& sb, const std::string& name) {
  for (const auto& o : sb.owned) {
    auto uid = o.substr(o.rfind('-') + 1);
    if (name == o || name.find("lab." + uid + ".") != std::string::npos || name.find("lab_" + uid) != std::string::npos)
      return true;
  }
  return false;
}

/// Everything of the lab that could be left on the machine, one line per object.
inline std::vector<std::string> Leftovers(const Sandbox& sb, const std::vector<int>& pids) {
  std::vector<std::string> left;
  for (int pid : pids)
    if (pid > 0 && !ProcessGone(pid)) left.push_back("process " + std::to_string(pid));
  auto mounts = lab::ReadFile("/proc/self/mountinfo").value_or("");
  for (const auto& line : lab::Split(mounts, '\n')) {
    auto fields = lab::Split(line, ' ');
    if (fields.size() < 5) continue;
    const std::string& where = fields[4];
    for (const auto& dir : {sb.run, sb.state})
      if (where == dir || where.rfind(dir + "/", 0) == 0) left.push_back("mount " + where);
  }
  sb.RecordOwned();
  for (const auto& [ctrl, root] : lab::hv::kernel::Cgroups().v1) {
    std::error_code ec;
    if (fs::exists(root + "/lab", ec))
      for (const auto& e : fs::directory_iterator(root + "/lab", ec))
        if (e.is_directory() && OwnedBySandbox(sb, e.path().filename().string()))
          left.push_back("cgroup " + e.path().string());
  }
  if (lab::hv::kernel::Cgroups().v2) {
    std::error_code ec;
    std::string root = lab::hv::kernel::Cgroups().v2_root + "/lab";
    if (fs::exists(root, ec))
      for (const auto& e : fs::directory_iterator(root, ec))
        if (e.is_directory() && OwnedBySandbox(sb, e.path().filename().string()))
          left.push_back("cgroup " + e.path().string());
  }
  for (const std::string& d : {sb.run, sb.state + "/disks"}) {
    std::error_code ec;
    if (fs::exists(d, ec))
      for (const auto& e : fs::directory_iterator(d, ec)) left.push_back("file " + e.path().string());
  }
  // The machine's own namespace: no interface or nft table of any lab may ever be here.
  auto self = lab::hv::kernel::NetNs::Open("/proc/self/ns/net");
  REQUIRE(self.ok());
  auto nl = lab::hv::kernel::Netlink::In(*self);
  REQUIRE(nl.ok());
  auto links = nl->Links();
  REQUIRE(links.ok());
  for (const auto& l : *links)
    for (const auto& alt : l.altnames)
      if (alt.rfind("lab.", 0) == 0 && OwnedBySandbox(sb, alt)) left.push_back("link " + l.name + " (" + alt + ")");
  auto tables = lab::hv::kernel::NftListTables(*self);
  if (tables.ok())
    for (const auto& t : *tables)
      if (t.find("lab_") != std::string::npos && OwnedBySandbox(sb, t)) left.push_back("nft table " + t);
  return left;
}

inline std::string LabNameOf(const std::string& file) {
  auto text = lab::ReadFile(file).value_or("");
  std::smatch m;
  std::regex re("(^|\n)lab:\\s*([a-z0-9-]+)");
  return std::regex_search(text, m, re) ? m[2].str() : "";
}

/// `lab down LAB` succeeds and leaves nothing of the lab on the machine (Leftovers, with the
/// init pids `pids` noted while it was up).
inline void TakeDownLeavingNothing(const Sandbox& sb, const std::string& lab, const std::vector<int>& pids) {
  INFO("lab down " << lab);
  Run down = sb.Lab("down " + lab);
  INFO(down.out);
  CHECK(down.code == 0);
  auto left = Leftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

/// Whether deb.debian.org answers an HTTP HEAD of bookworm's InRelease with 200 within 5 s: the
/// tests that build Debian images (the only ones that reach outside the machine) need it.
inline bool ArchiveReachable() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo("deb.debian.org", "80", &hints, &res) != 0) return false;
  bool ok = false;
  for (addrinfo* a = res; a && !ok; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      // HTTP/1.1: some mirrors and proxies refuse 1.0 (426 Upgrade Required).
      std::string req = "HEAD /debian/dists/bookworm/InRelease HTTP/1.1\r\nHost: deb.debian.org\r\nConnection: close\r\n\r\n";
      char buf[64] = {};
      if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()) &&
          ::recv(fd, buf, sizeof buf - 1, 0) > 12)
        ok = std::string(buf).find(" 200") != std::string::npos;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return ok;
}

/// The image cache every sandbox of this test run shares (one Debian build for all cases),
/// removed when the run ends.
inline std::string SharedImageCache() {
  struct Dir {
    std::string path = lab::testing::TempDir("lab-e2e-images");
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  return dir.path;
}

/// Makes the sandbox's STATE/images the shared image cache (a symlink).
inline void ShareImages(const Sandbox& sb) {
  fs::create_directories(sb.state);
  fs::create_symlink(SharedImageCache(), sb.state + "/images");
}

}  // namespace lab::testing::e2e

/// Returns from a test (printing SKIP) when the Debian archive does not answer.
#define LAB_REQUIRE_ARCHIVE()                                                                      \
  do {                                                                                             \
    if (!::lab::testing::e2e::ArchiveReachable()) {                                                \
      std::printf("SKIP: the Debian archive (deb.debian.org) is unreachable: no Debian build\n");  \
      return;                                                                                      \
    }                                                                                              \
  } while (0)
