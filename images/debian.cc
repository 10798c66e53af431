// The Debian builder (debian.h).
//
// Resolving: apt's lists for the image's sources are kept per set of sources under
// STATE/images/debian/apt/<digest>/ (`apt-get update` into it, under a lock), and
// `apt-get -s install` against an empty dpkg status (debian:) or the parent's status (from:)
// gives the exact `package=version` set: the same patterns mmdebstrap's variant installs, so the
// set is what the build installs. Measured here: 1-5 s for the update, about 4 s for the
// simulation, against 17 s for `mmdebstrap --simulate` (which runs its own update each time).
//
// Building: a debian: image is mmdebstrap --mode=root with those lists copied in (its own
// `apt-get update` skipped) and the shared .deb cache (STATE/images/debian/debs/) linked in
// before and back out after; a from: image is an overlay of the parent's layers with
// staging/layer as its upper dir, apt-get install / files / run chrooted into it. Either runs as
// PID 1 of its own PID and mount namespaces, killed with lab: a killed build leaves no process
// and no mount behind, only its staging dir, which the cache removes.
#include "images/debian.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include "base/text.h"
#include "images/cache.h"
#include "images/debian_internal.h"

namespace lab::images {

namespace debian {

const char* NativeArch() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__i386__)
  return "i386";
#elif defined(__arm__)
  return "armhf";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64el";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
#error "which Debian architecture is this?"
#endif
}

std::vector<std::string> SourceLines(const std::string& suite, const std::string& mirror) {
  if (!mirror.empty()) return {"deb " + mirror + " " + suite + " main"};
  static const std::set<std::string> kRolling = {"sid", "unstable", "experimental", "rc-buggy", "testing"};
  std::vector<std::string> lines = {"deb http://deb.debian.org/debian " + suite + " main"};
  if (!kRolling.count(suite)) {
    lines.push_back("deb http://deb.debian.org/debian " + suite + "-updates main");
    lines.push_back("deb http://security.debian.org/debian-security " + suite + "-security main");
  }
  return lines;
}

namespace {

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// The text between the first `open` after `from` and the next `close`.
std::string Between(std::string_view s, std::string_view open, char close) {
  size_t a = s.find(open);
  if (a == std::string_view::npos) return "";
  a += open.size();
  size_t b = s.find(close, a);
  return b == std::string_view::npos ? "" : std::string(s.substr(a, b - a));
}

}  // namespace

Simulation ParseSimulation(std::string_view apt_output) {
  Simulation sim;
  std::set<std::string> unknown;
  bool unmet = false;
  for (const std::string& raw : Split(apt_output, '\n')) {
    std::string_view line = raw;
    if (StartsWith(line, "Inst ")) {
      // "Inst NAME (VERSION ARCHIVE [ARCH])" or, for an upgrade, "Inst NAME [OLD] (VERSION ...)".
      std::string_view rest = line.substr(5);
      std::string name(rest.substr(0, rest.find(' ')));
      std::string paren = Between(rest, "(", ')');
      std::string version = paren.substr(0, paren.find(' '));
      if (!name.empty() && !version.empty()) sim.installs.push_back(name + "=" + version);
    } else if (StartsWith(line, "E: Unable to locate package ")) {
      unknown.insert(Trim(line.substr(std::strlen("E: Unable to locate package "))));
    } else if (StartsWith(line, "E: Package '") && line.find("' has no installation candidate") != line.npos) {
      unknown.insert(Between(line, "E: Package '", '\''));
    } else if (StartsWith(line, "E: Version '") && line.find("' was not found") != line.npos) {
      // E: Version '1.0' for 'curl' was not found
      std::string version = Between(line, "E: Version '", '\'');
      std::string name = Between(line.substr(line.find("' for '") + 1), "for '", '\'');
      unknown.insert(name + "=" + version);
    } else if (StartsWith(line, "E: Couldn't find any package by ")) {
      unknown.insert(Between(line, " '", '\''));
    } else if (StartsWith(line, "The following packages have unmet dependencies")) {
      unmet = true;
      sim.other_errors += raw + "\n";
    } else if (unmet && StartsWith(line, " ")) {
      sim.other_errors += raw + "\n";
    } else if (StartsWith(line, "E: ")) {
      unmet = false;
      sim.other_errors += raw + "\n";
    } else {
      unmet = false;
    }
  }
  std::sort(sim.installs.begin(), sim.installs.end());
  sim.installs.erase(std::unique(sim.installs.begin(), sim.installs.end()), sim.installs.end());
  sim.unknown.assign(unknown.begin(), unknown.end());
  return sim;
}

namespace {

// The closest of `known` to a misspelt package name: the smallest edit distance (as
// ClosestMatch judges plausible), ties going to the longest common prefix ("nginx-lite" is
// nginx-light, not nginx-core).
std::optional<std::string> ClosestPackage(const std::string& word, const std::vector<std::string>& known) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1, best_prefix = 0;
  for (const std::string& c : known) {
    if (c.size() > word.size() + best_distance || word.size() > c.size() + best_distance) continue;
    size_t d = EditDistance(word, c);
    size_t prefix = 0;
    while (prefix < c.size() && prefix < word.size() && c[prefix] == word[prefix]) ++prefix;
    if (d < best_distance || (d == best_distance && best && prefix > best_prefix)) {
      best_distance = d;
      best_prefix = prefix;
      best = c;
    }
  }
  return best;
}

}  // namespace

std::string UnknownPackagesError(const schema::Image& spec, const std::string& lab_file,
                                 const std::vector<std::string>& unknown, const std::vector<std::string>& known) {
  std::string out;
  std::string where = spec.kind == schema::ImageKind::kFrom ? "the archive of its parent image '" + spec.from + "'"
                                                             : "Debian " + spec.suite;
  for (const std::string& name : unknown) {
    schema::Diagnostic d;
    d.file = lab_file;
    d.loc = spec.kind_loc.line ? spec.kind_loc : spec.loc;
    for (size_t i = 0; i < spec.packages.size(); ++i)
      if (spec.packages[i] == name && i < spec.package_locs.size()) d.loc = spec.package_locs[i];
    d.message = "image '" + spec.name + "': package '" + name + "' is not in " + where;
    std::string bare = name.substr(0, name.find('='));
    if (auto close = ClosestPackage(bare, known); close && *close != bare)
      d.message += "; did you mean '" + *close + "'?";
    else
      d.message += "; check its name (apt-cache policy " + bare + ") or remove it from packages:";
    if (!out.empty()) out += "\n";
    out += d.ToString();
  }
  return out;
}

std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::vector<std::string> SlimDpkgOptions() {
  return {
      "path-exclude=/usr/share/man/*",
      "path-exclude=/usr/share/locale/*",
      "path-include=/usr/share/locale/locale.alias",
      "path-exclude=/usr/share/doc/*",
      "path-include=/usr/share/doc/*/copyright",
      "path-exclude=/usr/share/info/*",
      "path-exclude=/usr/share/lintian/*",
  };
}

namespace {

// The environment build steps run with inside the image: the same on every machine.
const char* const kChrootEnv =
    "/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
    "LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive SOURCE_DATE_EPOCH=";

std::string ModeOf(const fs::path& file) {
  struct stat st{};
  unsigned mode = ::stat(file.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode);
  return buf;
}

}  // namespace

std::vector<std::string> MmdebstrapArgv(const schema::Image& spec, const std::vector<std::string>& sources,
                                        const MmdebstrapPlan& plan) {
  std::vector<std::string> argv = {"mmdebstrap", "--mode=root", "--format=directory", "--variant=" + spec.variant,
                                   "--skip=update", "--skip=essential/unlink"};
  if (!spec.packages.empty()) argv.push_back("--include=" + Join(spec.packages, ","));
  if (spec.slim)
    for (const std::string& o : SlimDpkgOptions()) argv.push_back("--dpkgopt=" + o);
  const std::string debs = ShellQuote(plan.debs);
  // apt's lists from the resolve (no second `apt-get update`) and every cached .deb, hard-linked
  // (the cache and the staging dir share a filesystem; a copy where they do not).
  argv.push_back("--setup-hook=mkdir -p \"$1\"/var/lib/apt/lists \"$1\"/var/cache/apt/archives/partial"
                 " && cp -a " + ShellQuote(plan.lists) + "/. \"$1\"/var/lib/apt/lists/"
                 " && { cp -al " + debs + "/. \"$1\"/var/cache/apt/archives/ 2>/dev/null"
                 " || cp -a " + debs + "/. \"$1\"/var/cache/apt/archives/; }");
  // files: written from inside the chroot, so a symlink in the image never points outside it.
  for (const auto& [dest, src] : spec.files) {
    fs::path source = ResolveSource(src, plan.lab_dir);
    std::string dir = fs::path(dest).parent_path().string();
    argv.push_back("--customize-hook=chroot \"$1\" mkdir -p -- " + ShellQuote(dir.empty() ? "/" : dir) +
                   " && chroot \"$1\" /bin/sh -c 'cat > \"$1\"' sh " + ShellQuote(dest) + " < " +
                   ShellQuote(source.string()) + " && chroot \"$1\" chmod " + ModeOf(source) + " -- " +
                   ShellQuote(dest));
  }
  for (size_t i = 0; i < spec.run.size(); ++i) {
    std::string announce = "lab: step " + std::to_string(i + 1) + "/" + std::to_string(spec.run.size()) + ": " +
                           spec.run[i];
    argv.push_back("--customize-hook=echo " + ShellQuote(announce) + " && chroot \"$1\" " + kChrootEnv +
                   kSourceDateEpoch + " /bin/sh -c " + ShellQuote(spec.run[i]));
  }
  // What apt fetched goes back into the shared cache (a link, or a copy renamed into place).
  argv.push_back("--customize-hook=for f in \"$1\"/var/cache/apt/archives/*.deb; do [ -e \"$f\" ] || continue;"
                 " n=${f##*/}; [ -e " + debs + "/\"$n\" ] || ln \"$f\" " + debs + "/\"$n\" 2>/dev/null"
                 " || { cp \"$f\" " + debs + "/.\"$n\".part && mv " + debs + "/.\"$n\".part " + debs +
                 "/\"$n\"; }; done");
  // mmdebstrap copies the building machine's resolv.conf and hostname in; lab manages both.
  argv.push_back("--customize-hook=rm -f \"$1\"/etc/resolv.conf && : > \"$1\"/etc/resolv.conf"
                 " && echo localhost > \"$1\"/etc/hostname");
  argv.push_back(spec.suite);
  argv.push_back(plan.target);
  for (const std::string& s : sources) argv.push_back(s);
  return argv;
}

}  // namespace debian

namespace {

using debian::ShellQuote;

// ---- child processes ----

// A NULL-terminated char* array over strings that outlive it: prepared before fork().
class CArgs {
 public:
  CArgs() = default;
  explicit CArgs(std::vector<std::string> items) : items_(std::move(items)) { Build(); }
  CArgs(const CArgs& o) : items_(o.items_) { Build(); }
  CArgs& operator=(const CArgs& o) {
    items_ = o.items_;
    Build();
    return *this;
  }
  char* const* get() const { return const_cast<char* const*>(ptrs_.data()); }

 private:
  void Build() {
    ptrs_.clear();
    for (const std::string& s : items_) ptrs_.push_back(s.c_str());
    ptrs_.push_back(nullptr);
  }
  std::vector<std::string> items_;
  std::vector<const char*> ptrs_;
};

// The environment lab's tools get: a fixed PATH and locale, the fixed SOURCE_DATE_EPOCH, and
// the proxy settings of the caller (apt honours them; a test points them at nothing to prove a
// cached image needs no network).
std::vector<std::string> ToolEnv() {
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "LC_ALL=C.UTF-8", "HOME=/root", "DEBIAN_FRONTEND=noninteractive",
                                  std::string("SOURCE_DATE_EPOCH=") + debian::kSourceDateEpoch};
  for (const char* name : {"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                           "TMPDIR"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  return env;
}

// The first executable `name` on the tools' PATH, or "" when none.
std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

void ChildWrite(const char* s) { (void)!::write(2, s, std::strlen(s)); }

// Runs `body` as PID 1 of a new PID namespace, in a private mount namespace, in a session of its
// own (a terminal's ^C reaches lab, which decides), killed when lab dies: so whatever it starts
// and mounts goes with it. Its stdout and stderr go line by line to `log_fd` and `on_line`.
// `body` runs between fork() and _exit(): plain syscalls on data prepared before the fork.
// Returns the body's exit status (128+N for signal N).
Result<int> RunIsolated(const std::function<int()>& body, int log_fd,
                        const std::function<void(const std::string&)>& on_line) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t lab_pid = ::getpid();
  pid_t child = ::fork();
  if (child < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    if (devnull >= 0) ::close(devnull);
    return Status::Error("fork: " + ErrnoText(e));
  }
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != lab_pid) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::setsid();
    if (::unshare(CLONE_NEWNS | CLONE_NEWPID) != 0) {
      ChildWrite("lab: unshare(CLONE_NEWNS|CLONE_NEWPID) failed\n");
      ::_exit(126);
    }
    pid_t init = ::fork();
    if (init < 0) ::_exit(126);
    if (init == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
        ChildWrite("lab: making the build's mounts private failed\n");
        ::_exit(126);
      }
      ::_exit(body());
    }
    int st = 0;
    while (::waitpid(init, &st, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  ::close(fds[1]);
  if (devnull >= 0) ::close(devnull);
  std::string pending;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (log_fd >= 0) (void)!::write(log_fd, buf, n);
    pending.append(buf, n);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      if (on_line) on_line(pending.substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty() && on_line) on_line(pending);
  ::close(fds[0]);
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Runs the tool argv[0] (found on the tools' PATH) isolated as above.
Result<int> RunTool(const std::vector<std::string>& argv, int log_fd,
                    const std::function<void(const std::string&)>& on_line,
                    const std::vector<std::string>& extra_env = {}) {
  std::string exe = FindTool(argv.at(0));
  if (exe.empty())
    return Status::Error("'" + argv[0] + "' is not installed; install the Debian package " +
                         (argv[0] == "mmdebstrap" ? std::string("mmdebstrap") : std::string("apt")) +
                         " (apt-get install " + argv[0] + ")");
  CArgs args(argv);
  std::vector<std::string> env_items = ToolEnv();
  env_items.insert(env_items.end(), extra_env.begin(), extra_env.end());
  CArgs env(env_items);
  const char* path = exe.c_str();
  return RunIsolated([&]() -> int {
    ::execve(path, args.get(), env.get());
    ChildWrite("lab: exec failed\n");
    return 127;
  }, log_fd, on_line);
}

// The build log, opened for appending; -1 (no log) when none was asked for.
class LogFile {
 public:
  explicit LogFile(const fs::path& path) {
    if (!path.empty()) {
      std::error_code ec;
      fs::create_directories(path.parent_path(), ec);
      fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
  }
  ~LogFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;
  int fd() const { return fd_; }
  void Line(const std::string& text) const {
    if (fd_ >= 0) (void)!::write(fd_, (text + "\n").data(), text.size() + 1);
  }

 private:
  int fd_ = -1;
};

void Step(const BuildProgress& progress, const LogFile& log, const std::string& step) {
  log.Line("lab: " + step);
  if (progress.step) progress.step(step);
}

// ---- apt's lists, per set of sources ----

fs::path CacheRoot(const BuildProgress& progress, const fs::path& staging) {
  if (!progress.cache_root.empty()) return progress.cache_root;
  if (!staging.empty()) return staging.parent_path().parent_path();
  return {};
}

// An flock held until destroyed.
class FileLock {
 public:
  static Result<FileLock> Take(const fs::path& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("open " + path.string());
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int e = errno;
        ::close(fd);
        return Status::Error("flock " + path.string() + ": " + ErrnoText(e));
      }
    }
    FileLock l;
    l.fd_ = fd;
    return l;
  }
  FileLock() = default;
  FileLock(FileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  FileLock& operator=(FileLock&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

// apt's own tree for one set of sources: its lists, an empty dpkg status, an apt.conf that keeps
// the host's apt configuration out except for its keyrings (as mmdebstrap does).
struct AptDir {
  fs::path dir;
  fs::path conf;
  fs::path lists;
  fs::path empty_status;
};

Result<AptDir> PrepareAptDir(const fs::path& root, const std::vector<std::string>& sources) {
  std::string digest = Sha256Hex(Join(sources, "\n") + "\n" + debian::NativeArch()).substr(0, 16);
  AptDir a;
  a.dir = root / "debian" / "apt" / digest;
  a.conf = a.dir / "apt.conf";
  a.lists = a.dir / "var/lib/apt/lists";
  a.empty_status = a.dir / "var/lib/dpkg/status";
  std::error_code ec;
  for (const char* sub : {"etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                          "var/lib/apt/lists/partial", "var/lib/dpkg", "var/cache/apt/archives/partial", "var/log/apt"})
    fs::create_directories(a.dir / sub, ec);
  if (ec) return Status::Error("cannot make apt's dir " + a.dir.string() + ": " + ec.message());
  std::string conf = "Dir \"" + a.dir.string() + "/\";\n"
                     "Dir::State::status \"" + a.empty_status.string() + "\";\n"
                     "Dir::Etc::Trusted \"/etc/apt/trusted.gpg\";\n"
                     "Dir::Etc::TrustedParts \"/etc/apt/trusted.gpg.d/\";\n"
                     "APT::Architecture \"" + std::string(debian::NativeArch()) + "\";\n"
                     "APT::Architectures \"" + std::string(debian::NativeArch()) + "\";\n"
                     "APT::Install-Recommends \"false\";\n"
                     "Acquire::Languages \"none\";\n"
                     "pkgCacheGen::ForceEssential \",\";\n";
  if (!WriteFileAtomic(a.conf.string(), conf) ||
      !WriteFileAtomic((a.dir / "etc/apt/sources.list").string(), Join(sources, "\n") + "\n") ||
      (!fs::exists(a.empty_status) && !WriteFileAtomic(a.empty_status.string(), "")))
    return Status::Error("cannot write apt's configuration under " + a.dir.string());
  return a;
}

// Runs apt-get (APT_CONFIG = the dir's) with `args`; its output into `output`, and the log.
Result<int> AptGet(const AptDir& apt, const std::vector<std::string>& args, int log_fd, std::string* output) {
  std::vector<std::string> argv = {"apt-get"};
  argv.insert(argv.end(), args.begin(), args.end());
  // APT_CONFIG, not -c: apt then reads no configuration of the host's (/etc/apt/apt.conf.d),
  // as mmdebstrap does, so the host's settings change neither the lists nor the resolution.
  return RunTool(argv, log_fd, [&](const std::string& line) {
    if (output) *output += line + "\n";
  }, {"APT_CONFIG=" + apt.conf.string()});
}

// The apt dirs this process brought up to date already: a lab's images that share their
// sources (a from: image and its parent, two debian: images of one suite) ask the mirror once.
std::mutex updated_mu;
std::set<std::string> updated;

Status UpdateLists(const AptDir& apt, const std::string& image, const LogFile& log) {
  {
    std::lock_guard<std::mutex> g(updated_mu);
    if (updated.count(apt.dir.string())) return Status::Ok();
  }
  std::string out;
  auto rc = AptGet(apt, {"update", "-q", "--error-on=any"}, log.fd(), &out);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    std::string errors;
    for (const std::string& l : Split(out, '\n'))
      if (l.rfind("E: ", 0) == 0 || l.rfind("W: ", 0) == 0 || l.rfind("Err:", 0) == 0) errors += "\n  " + l;
    return Status::Error("image '" + image + "': apt-get update against " + apt.dir.string() +
                         "/etc/apt/sources.list failed (is the mirror reachable? set mirror: to one that is)" +
                         errors);
  }
  std::lock_guard<std::mutex> g(updated_mu);
  updated.insert(apt.dir.string());
  return Status::Ok();
}

// Every package name in the lists (for "did you mean").
std::vector<std::string> KnownPackages(const fs::path& lists) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(lists, ec)) {
    std::string n = e.path().filename().string();
    if (n.size() < 9 || n.compare(n.size() - 9, 9, "_Packages") != 0) continue;
    auto text = ReadFile(e.path().string());
    if (!text) continue;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("Package: ", 0) == 0) names.insert(line.substr(9));
  }
  return {names.begin(), names.end()};
}

// ---- the parent of a from: image ----

// The first of `layers` (topmost first) holding `relative`, or "".
fs::path InLayers(const std::vector<fs::path>& layers, const std::string& relative) {
  for (const fs::path& l : layers) {
    struct stat st{};
    fs::path p = l / relative;
    if (::lstat(p.c_str(), &st) == 0) return S_ISREG(st.st_mode) ? p : fs::path();
  }
  return {};
}

// Whether the topmost of `layers` that has `relative` has a directory there.
bool DirInLayers(const std::vector<fs::path>& layers, const std::string& relative) {
  for (const fs::path& l : layers) {
    struct stat st{};
    if (::lstat((l / relative).c_str(), &st) == 0) return S_ISDIR(st.st_mode);
  }
  return false;
}

// The `deb` lines of the parent's /etc/apt/sources.list (what mmdebstrap wrote for it).
std::vector<std::string> ParentSources(const std::vector<fs::path>& layers) {
  std::vector<std::string> out;
  fs::path p = InLayers(layers, "etc/apt/sources.list");
  if (p.empty()) return out;
  auto text = ReadFile(p.string());
  if (!text) return out;
  for (const std::string& l : Split(*text, '\n'))
    if (Trim(l).rfind("deb ", 0) == 0) out.push_back(Trim(l));
  return out;
}

// Remembered between ResolveDebian and BuildDebian in one process: the resolved set, so the
// build can say how many packages it downloads and check it installed what was resolved.
std::mutex memo_mu;
std::map<std::string, std::vector<std::string>> memo;

std::string MemoKey(const schema::Image& spec, const std::string& lab_file) { return lab_file + "\n" + spec.name; }

// The packages of `installs` ("name=version") not in the .deb cache yet.
int NotCached(const std::vector<std::string>& installs, const fs::path& debs) {
  int n = 0;
  for (const std::string& nv : installs) {
    size_t eq = nv.find('=');
    std::string name = nv.substr(0, eq), version = nv.substr(eq + 1);
    size_t colon;
    while ((colon = version.find(':')) != std::string::npos) version.replace(colon, 1, "%3a");
    bool cached = false;
    for (const std::string& arch : {std::string(debian::NativeArch()), std::string("all")})
      cached = cached || fs::exists(debs / (name + "_" + version + "_" + arch + ".deb"));
    n += cached ? 0 : 1;
  }
  return n;
}

// The `package=version` set installed in a tree, from its dpkg status.
std::vector<std::string> Installed(const fs::path& status_file) {
  std::vector<std::string> out;
  auto text = ReadFile(status_file.string());
  if (!text) return out;
  std::string name, version;
  bool installed = false;
  auto flush = [&] {
    if (!name.empty() && installed) out.push_back(name + "=" + version);
    name.clear();
    version.clear();
    installed = false;
  };
  for (const std::string& l : Split(*text, '\n')) {
    if (l.empty()) flush();
    else if (l.rfind("Package: ", 0) == 0) name = l.substr(9);
    else if (l.rfind("Version: ", 0) == 0) version = l.substr(9);
    else if (l.rfind("Status: ", 0) == 0) installed = l.find(" installed") != std::string::npos;
  }
  flush();
  std::sort(out.begin(), out.end());
  return out;
}

std::string Narrow(const std::string& suite, const std::string& what) {
  return "?narrow(?or(?archive(^" + suite + "$),?codename(^" + suite + "$)),?architecture(" +
         debian::NativeArch() + ")," + what + ")";
}

// The apt-get -s install arguments of a debian: image: mmdebstrap's variant as patterns (see
// its run_download/run_install) plus the packages.
Result<std::vector<std::string>> VariantPatterns(const schema::Image& spec) {
  const std::string v = spec.variant == "debootstrap" ? "important" : spec.variant;
  if (v == "extract" || v == "custom") return std::vector<std::string>{};  // the packages alone
  std::vector<std::string> out = {Narrow(spec.suite, "?essential")};
  if (v == "essential") return out;
  if (v == "apt") return std::vector<std::string>{Narrow(spec.suite, "?essential"), "apt"};
  if (v == "minbase" || v == "required" || v == "buildd")
    out.push_back(Narrow(spec.suite, "?and(?priority(required),?not(?essential))"));
  else if (v == "important")
    out.push_back(Narrow(spec.suite, "?and(?or(?priority(required),?priority(important)),?not(?essential))"));
  else if (v == "standard")
    out.push_back(Narrow(spec.suite, "?and(?or(~prequired,~pimportant,~pstandard),?not(?essential))"));
  else
    return Status::Error("image '" + spec.name + "': variant '" + v +
                         "' is not one lab builds; use minbase, required, important, standard, buildd, apt, essential, extract or custom");
  if (v == "buildd") out.push_back("build-essential");
  return out;
}

Result<AptDir> ResolvedLists(const schema::Image& spec, const std::vector<fs::path>& parent_layers,
                             const fs::path& root, std::vector<std::string>* sources, fs::path* status) {
  if (spec.kind == schema::ImageKind::kFrom) {
    *sources = ParentSources(parent_layers);
    *status = InLayers(parent_layers, "var/lib/dpkg/status");
    if (sources->empty() || status->empty())
      return Status::Error("image '" + spec.name + "': packages: needs apt in its parent image '" + spec.from +
                           "' (no /etc/apt/sources.list or /var/lib/dpkg/status there); build the parent with "
                           "debian:, or drop packages: and install with run:");
  } else {
    *sources = debian::SourceLines(spec.suite, spec.mirror);
  }
  auto apt = PrepareAptDir(root, *sources);
  if (apt.ok() && spec.kind != schema::ImageKind::kFrom) *status = apt->empty_status;
  return apt;
}

}  // namespace

Result<std::string> ResolveDebian(const schema::Image& spec, const std::vector<fs::path>& parent_layers,
                                  const std::string& lab_file, const BuildProgress& progress) {
  fs::path lab_dir = fs::path(lab_file).parent_path();
  auto files = DigestFiles(spec, lab_dir);
  if (!files.ok()) return files.status();
  LogFile log(progress.log);
  std::vector<std::string> installs;
  if (spec.kind == schema::ImageKind::kDebian || !spec.packages.empty()) {
    fs::path root = CacheRoot(progress, {});
    std::string tmp_root;
    if (root.empty()) {
      char tmpl[] = "/tmp/lab-resolve.XXXXXX";
      if (!::mkdtemp(tmpl)) return ErrnoStatus("mkdtemp");
      root = tmp_root = tmpl;
    }
    struct Cleanup {
      std::string dir;
      ~Cleanup() {
        std::error_code ec;
        if (!dir.empty()) fs::remove_all(dir, ec);
      }
    } cleanup{tmp_root};
    std::vector<std::string> sources;
    fs::path status;
    auto apt = ResolvedLists(spec, parent_layers, root, &sources, &status);
    if (!apt.ok()) return apt.status();
    auto lock = FileLock::Take(apt->dir / "lock.lab");
    if (!lock.ok()) return lock.status();
    LAB_RETURN_IF_ERROR(UpdateLists(*apt, spec.name, log));
    std::vector<std::string> args = {"-s", "-q", "-o", "Dir::State::status=" + status.string(), "install"};
    if (spec.kind == schema::ImageKind::kDebian) {
      auto patterns = VariantPatterns(spec);
      if (!patterns.ok()) return patterns.status();
      args.insert(args.end(), patterns->begin(), patterns->end());
    }
    args.insert(args.end(), spec.packages.begin(), spec.packages.end());
    std::string out;
    auto rc = AptGet(*apt, args, log.fd(), &out);
    if (!rc.ok()) return rc.status();
    debian::Simulation sim = debian::ParseSimulation(out);
    if (!sim.unknown.empty())
      return Status::Error(debian::UnknownPackagesError(spec, lab_file, sim.unknown, KnownPackages(apt->lists)));
    if (*rc != 0 || !sim.other_errors.empty())
      return Status::Error("image '" + spec.name + "': apt cannot install its packages:\n" +
                           (sim.other_errors.empty() ? out : sim.other_errors));
    installs = std::move(sim.installs);
    Step(progress, log, "resolved " + std::to_string(installs.size()) + " packages");
  }
  {
    std::lock_guard<std::mutex> g(memo_mu);
    memo[MemoKey(spec, lab_file)] = installs;
  }
  std::string out = "packages:\n";
  for (const std::string& p : installs) out += p + "\n";
  out += "files:\n" + *files;
  return out;
}

namespace {

// Reads lines of a build's output and says which step it is at.
struct Steps {
  const BuildProgress& progress;
  const LogFile& log;
  int to_download = -1;
  std::set<std::string> said;
  void Say(const std::string& step) {
    if (said.insert(step).second) Step(progress, log, step);
  }
  void Line(const std::string& line) {
    if (line.rfind("I: downloading packages", 0) == 0 || line.rfind("Get:", 0) == 0)
      Say(to_download >= 0 ? "downloading " + std::to_string(to_download) + " packages" : "downloading packages");
    else if (line.rfind("I: extracting archives", 0) == 0 || line.rfind("Unpacking ", 0) == 0)
      Say("unpacking");
    else if (line.rfind("I: installing essential packages", 0) == 0 || line.rfind("Setting up ", 0) == 0)
      Say("configuring");
    else if (line.rfind("I: installing remaining packages", 0) == 0)
      Say("installing the remaining packages");
    else if (line.rfind("lab: step ", 0) == 0)
      Say("running " + line.substr(5));
  }
};

std::string Failed(const schema::Image& spec, const std::string& what, int rc, const BuildProgress& progress) {
  return "image '" + spec.name + "': " + what + " failed (exit " + std::to_string(rc) + ")" +
         (progress.log.empty() ? std::string() : "; its log: " + progress.log.string());
}

Status SnapshotLists(const AptDir& apt, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to, ec);
  for (const auto& e : fs::directory_iterator(apt.lists, ec)) {
    if (!e.is_regular_file()) continue;
    std::string n = e.path().filename().string();
    if (n == "lock") continue;
    // A hard link where the cache and the staging dir share a filesystem: apt's update replaces
    // lists by rename, so the snapshot keeps what was resolved against. A copy elsewhere.
    fs::create_hard_link(e.path(), to / n, ec);
    if (ec) fs::copy_file(e.path(), to / n, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::Error("cannot copy apt's lists to " + to.string() + ": " + ec.message());
  }
  fs::create_directories(to / "partial", ec);
  return Status::Ok();
}

Status CheckInstalled(const schema::Image& spec, const std::string& lab_file, const fs::path& status_file,
                      const std::vector<std::string>& parent_installed) {
  std::vector<std::string> expected;
  {
    std::lock_guard<std::mutex> g(memo_mu);
    auto it = memo.find(MemoKey(spec, lab_file));
    if (it == memo.end()) return Status::Ok();
    expected = it->second;
  }
  std::vector<std::string> got = Installed(status_file), added;
  std::set_difference(got.begin(), got.end(), parent_installed.begin(), parent_installed.end(),
                      std::back_inserter(added));
  std::vector<std::string> missing;
  std::set_difference(expected.begin(), expected.end(), added.begin(), added.end(), std::back_inserter(missing));
  if (missing.empty()) return Status::Ok();
  return Status::Error("image '" + spec.name + "': the build installed other versions than were resolved (" +
                       missing.front() + (missing.size() > 1 ? " and " + std::to_string(missing.size() - 1) + " more" : "") +
                       "): the archive changed meanwhile; run the build again");
}

Status BuildRootfs(const schema::Image& spec, const fs::path& staging, const std::string& lab_file,
                   const BuildProgress& progress, const LogFile& log) {
  fs::path root = CacheRoot(progress, staging);
  fs::path debs = root / "debian" / "debs";
  std::error_code ec;
  fs::create_directories(debs, ec);
  std::vector<std::string> sources;
  fs::path status;
  auto apt = ResolvedLists(spec, {}, root, &sources, &status);
  if (!apt.ok()) return apt.status();
  fs::path lists = staging / "lists";
  {
    auto lock = FileLock::Take(apt->dir / "lock.lab");
    if (!lock.ok()) return lock.status();
    if (!fs::exists(apt->lists / "lock") || KnownPackages(apt->lists).empty())
      LAB_RETURN_IF_ERROR(UpdateLists(*apt, spec.name, log));
    LAB_RETURN_IF_ERROR(SnapshotLists(*apt, lists));
  }
  Steps steps{progress, log, -1, {}};
  {
    std::lock_guard<std::mutex> g(memo_mu);
    auto it = memo.find(MemoKey(spec, lab_file));
    if (it != memo.end()) steps.to_download = NotCached(it->second, debs);
  }
  debian::MmdebstrapPlan plan{(staging / "rootfs").string(), lists.string(), debs.string(),
                              fs::path(lab_file).parent_path().string()};
  auto rc = RunTool(debian::MmdebstrapArgv(spec, sources, plan), log.fd(),
                    [&](const std::string& line) { steps.Line(line); });
  fs::remove_all(lists, ec);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) return Status::Error(Failed(spec, "mmdebstrap", *rc, progress));
  return CheckInstalled(spec, lab_file, staging / "rootfs/var/lib/dpkg/status", {});
}

// One step of a from: build, prepared before the fork.
struct LayerStep {
  std::string announce;        // "lab: step 1/2: ...\n"
  std::string exe;             // a program inside the image, or "" for a copy
  CArgs argv, env;
  int src_fd = -1;             // copy: the source, open
  std::string dest;            // copy: the path inside the image
  std::vector<std::string> dirs;  // copy: DEST's ancestors, outermost first
  mode_t mode = 0644;
};

// The body of a from: build, as PID 1 of its namespaces: the overlay, the mounts apt needs, each
// step in a chrooted child. Syscalls only.
int LayerBody(const std::string& overlay_opts, const std::string& merged,
              const std::vector<std::pair<std::string, std::string>>& binds, const std::string& proc,
              const std::vector<LayerStep>& steps) {
  if (::mount("overlay", merged.c_str(), "overlay", 0, overlay_opts.c_str()) != 0) {
    ChildWrite("lab: mounting the overlay failed: ");
    ChildWrite(::strerror(errno));
    ChildWrite("\n");
    return 125;
  }
  for (const auto& [src, dst] : binds)
    if (::mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      ChildWrite("lab: bind mount failed: ");
      ChildWrite(dst.c_str());
      ChildWrite("\n");
      return 125;
    }
  (void)::mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  for (const LayerStep& s : steps) {
    ChildWrite(s.announce.c_str());
    pid_t pid = ::fork();
    if (pid < 0) return 125;
    if (pid == 0) {
      if (::chroot(merged.c_str()) != 0 || ::chdir("/") != 0) ::_exit(124);
      if (!s.exe.empty()) {
        ::execve(s.exe.c_str(), s.argv.get(), s.env.get());
        ChildWrite("lab: exec failed inside the image: ");
        ChildWrite(s.exe.c_str());
        ChildWrite("\n");
        ::_exit(127);
      }
      for (const std::string& d : s.dirs) ::mkdir(d.c_str(), 0755);
      int out = ::open(s.dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, s.mode);
      if (out < 0) {
        ChildWrite("lab: cannot write ");
        ChildWrite(s.dest.c_str());
        ChildWrite("\n");
        ::_exit(1);
      }
      static char buf[65536];
      ssize_t n;
      while ((n = ::read(s.src_fd, buf, sizeof buf)) > 0)
        if (::write(out, buf, n) != n) ::_exit(1);
      if (n < 0 || ::fchmod(out, s.mode) != 0 || ::close(out) != 0) ::_exit(1);
      ::_exit(0);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  return 0;
}

Status BuildLayer(const schema::Image& spec, const std::vector<fs::path>& parent_layers, const fs::path& staging,
                  const std::string& lab_file, const BuildProgress& progress, const LogFile& log) {
  if (parent_layers.empty()) return Status::Error("image '" + spec.name + "': its parent '" + spec.from + "' has no layers");
  fs::path root = CacheRoot(progress, staging);
  fs::path layer = staging / "layer", work = staging / "work", merged = staging / "merged", lists = staging / "lists";
  fs::path debs = root / "debian" / "debs";
  std::error_code ec;
  for (const fs::path& d : {layer, work, merged, debs}) fs::create_directories(d, ec);
  if (ec) return Status::Error("cannot make " + staging.string() + ": " + ec.message());

  std::string lower;
  for (const fs::path& l : parent_layers) lower += (lower.empty() ? "" : ":") + l.string();
  std::string opts = "lowerdir=" + lower + ",upperdir=" + layer.string() + ",workdir=" + work.string();

  std::vector<std::pair<std::string, std::string>> binds;
  std::vector<LayerStep> steps;
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                                  "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
                                  std::string("SOURCE_DATE_EPOCH=") + debian::kSourceDateEpoch};
  for (const char* name : {"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  Steps said{progress, log, -1, {}};
  std::vector<std::string> parent_installed;
  bool policy_rc = false;
  if (!spec.packages.empty()) {
    std::vector<std::string> sources;
    fs::path status;
    auto apt = ResolvedLists(spec, parent_layers, root, &sources, &status);
    if (!apt.ok()) return apt.status();
    {
      auto lock = FileLock::Take(apt->dir / "lock.lab");
      if (!lock.ok()) return lock.status();
      if (!fs::exists(apt->lists / "lock") || KnownPackages(apt->lists).empty())
        LAB_RETURN_IF_ERROR(UpdateLists(*apt, spec.name, log));
      LAB_RETURN_IF_ERROR(SnapshotLists(*apt, lists));
    }
    parent_installed = Installed(status);
    // Mount points apt needs: lists and the shared .deb cache from outside (nothing of either
    // lands in the layer), the host's resolver for downloads.
    auto bind_if_there = [&](const fs::path& src, const std::string& relative) {
      if (!DirInLayers(parent_layers, relative)) return false;
      binds.emplace_back(src.string(), (merged / relative).string());
      return true;
    };
    if (!bind_if_there(lists, "var/lib/apt/lists") || !bind_if_there(debs, "var/cache/apt/archives"))
      return Status::Error("image '" + spec.name + "': its parent '" + spec.from +
                           "' has no /var/lib/apt/lists or /var/cache/apt/archives; build the parent with debian:");
    {
      std::lock_guard<std::mutex> g(memo_mu);
      auto it = memo.find(MemoKey(spec, lab_file));
      if (it != memo.end()) said.to_download = NotCached(it->second, debs);
    }
    // No daemon starts in a build (invoke-rc.d asks policy-rc.d); removed from the layer after.
    fs::create_directories(layer / "usr/sbin", ec);
    policy_rc = WriteFileAtomic((layer / "usr/sbin/policy-rc.d").string(), "#!/bin/sh\nexit 101\n");
    fs::permissions(layer / "usr/sbin/policy-rc.d", fs::perms(0755), ec);
    LayerStep s;
    s.announce = "lab: installing " + Join(spec.packages, " ") + "\n";
    s.exe = "/usr/bin/apt-get";
    // apt's caches in memory only: written, they would be two files of tens of MiB in the layer.
    std::vector<std::string> argv = {"apt-get", "install", "-y", "-q", "--no-install-recommends",
                                     "-o", "APT::Install-Recommends=false", "-o", "Acquire::Languages=none",
                                     "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="};
    argv.insert(argv.end(), spec.packages.begin(), spec.packages.end());
    s.argv = CArgs(argv);
    s.env = CArgs(env);
    steps.push_back(std::move(s));
  }
  if (!InLayers(parent_layers, "etc/resolv.conf").empty())
    binds.emplace_back("/etc/resolv.conf", (merged / "etc/resolv.conf").string());
  std::vector<int> fds;
  struct CloseFds {
    std::vector<int>& fds;
    ~CloseFds() {
      for (int fd : fds) ::close(fd);
    }
  } close_fds{fds};
  fs::path lab_dir = fs::path(lab_file).parent_path();
  for (const auto& [dest, src] : spec.files) {
    fs::path source = ResolveSource(src, lab_dir);
    int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::Error("image '" + spec.name + "': files: " + dest + ": cannot read " + source.string() + ": " + ErrnoText(errno));
    fds.push_back(fd);
    struct stat st{};
    ::fstat(fd, &st);
    LayerStep s;
    s.announce = "lab: copying " + source.string() + " to " + dest + "\n";
    s.src_fd = fd;
    s.dest = dest;
    s.mode = st.st_mode & 07777;
    for (fs::path acc = "/"; const fs::path& part : fs::path(dest).relative_path().parent_path()) {
      acc /= part;
      s.dirs.push_back(acc.string());
    }
    steps.push_back(std::move(s));
  }
  for (size_t i = 0; i < spec.run.size(); ++i) {
    LayerStep s;
    s.announce = "lab: step " + std::to_string(i + 1) + "/" + std::to_string(spec.run.size()) + ": " + spec.run[i] + "\n";
    s.exe = "/bin/sh";
    s.argv = CArgs({"sh", "-c", spec.run[i]});
    s.env = CArgs(env);
    steps.push_back(std::move(s));
  }
  std::string merged_s = merged.string(), proc = (merged / "proc").string();
  auto rc = RunIsolated([&]() { return LayerBody(opts, merged_s, binds, proc, steps); }, log.fd(),
                        [&](const std::string& line) { said.Line(line); });
  // The namespaces are gone with the build: nothing is mounted on merged/ any more.
  fs::remove_all(work, ec);
  fs::remove(merged, ec);
  fs::remove_all(lists, ec);
  if (policy_rc) fs::remove(layer / "usr/sbin/policy-rc.d", ec);
  for (const char* bin : {"var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"}) fs::remove(layer / bin, ec);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) return Status::Error(Failed(spec, "building the layer", *rc, progress));
  if (spec.packages.empty()) return Status::Ok();
  return CheckInstalled(spec, lab_file, layer / "var/lib/dpkg/status", parent_installed);
}

}  // namespace

Status BuildDebian(const schema::Image& spec, const std::vector<fs::path>& parent_layers, const fs::path& staging,
                   const std::string& lab_file, const BuildProgress& progress) {
  LogFile log(progress.log);
  if (spec.kind == schema::ImageKind::kFrom) return BuildLayer(spec, parent_layers, staging, lab_file, progress, log);
  if (spec.kind != schema::ImageKind::kDebian)
    return Status::Error("image '" + spec.name + "': not a debian: or from: image");
  return BuildRootfs(spec, staging, lab_file, progress, log);
}

}  // namespace lab::images
