#include "images/cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace lab::images {

namespace {

using json = nlohmann::json;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class Hasher {
 public:
  Hasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Hasher() { EVP_MD_CTX_free(ctx_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  std::string Hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static const char* kHex = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out += kHex[md[i] >> 4];
      out += kHex[md[i] & 15];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

/// Writes `text` to `path` through a temporary file and a rename (never half a file).
Status WriteFileAtomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("image cache: cannot write " + tmp.string());
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = ErrnoStatus("image cache: cannot write " + tmp.string());
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = ErrnoStatus("image cache: cannot rename " + tmp.string() + " to " + path.string());
    ::unlink(tmp.c_str());
    return st;
  }
  return Status::Ok();
}

std::optional<std::string> ReadSmallFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status MakeDirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Error("image cache: cannot make " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

bool IsHexKey(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<Meta> ReadMeta(const fs::path& entry) {
  auto text = ReadSmallFile(entry / "meta.json");
  if (!text) return std::nullopt;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  Meta m;
  m.name = j.value("name", "");
  m.key = j.value("key", "");
  m.kind = j.value("kind", "");
  m.parent_key = j.value("parent_key", "");
  m.size = j.value("size", uint64_t{0});
  m.created = j.value("created", int64_t{0});
  m.source = j.value("source", "");
  m.build_log = j.value("build_log", "");
  struct stat st {};
  m.last_used = ::stat((entry / "used").c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) : m.created;
  return m;
}

/// Removes a tree that may hold read-only directories (an image's /proc-less rootfs does).
void RemoveTree(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (!ec) return;
  // Make every directory writable and retry: a tree imported as non-root may have 0555 dirs.
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
  }
  ::chmod(dir.c_str(), 0700);
  fs::remove_all(dir, ec);
}

}  // namespace

std::string Sha256Hex(std::string_view bytes) {
  Hasher h;
  h.Update(bytes.data(), bytes.size());
  return h.Hex();
}

Result<std::string> Sha256File(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot read " + file.string());
  Hasher h;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = ErrnoStatus("cannot read " + file.string());
      ::close(fd);
      return st;
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return h.Hex();
}

std::string SpecDigest(const schema::Image& spec, const std::string& parent_key, const std::string& builder_version) {
  // A canonical text of every content-defining field, each on its own line with its name, so
  // no two specs give the same text.
  std::string t = "lab-image-key 1\nkind " + std::string(schema::ToString(spec.kind)) + "\nbuilder " + builder_version +
                  "\n";
  switch (spec.kind) {
    case schema::ImageKind::kDebian:
      t += "suite " + spec.suite + "\nvariant " + spec.variant + "\nmirror " + spec.mirror + "\nslim " +
           (spec.slim ? "1" : "0") + "\n";
      [[fallthrough]];
    case schema::ImageKind::kFrom: {
      t += "parent " + parent_key + "\n";
      std::vector<std::string> packages = spec.packages;
      std::sort(packages.begin(), packages.end());
      packages.erase(std::unique(packages.begin(), packages.end()), packages.end());
      for (const auto& p : packages) t += "package " + p + "\n";
      for (const auto& [dest, src] : spec.files) t += "file " + std::to_string(dest.size()) + " " + dest + "\n";
      for (const auto& r : spec.run) t += "run " + std::to_string(r.size()) + " " + r + "\n";
      break;
    }
    case schema::ImageKind::kOci:
      t += "ref " + spec.ref + "\n";
      break;
    case schema::ImageKind::kRootfs:
    case schema::ImageKind::kDockerArchive:
      break;
  }
  return Sha256Hex(t);
}

std::string ImageKey(const schema::Image& spec, const std::string& parent_key, const std::string& builder_version,
                     const std::string& resolved) {
  return Sha256Hex(SpecDigest(spec, parent_key, builder_version) + "\nresolved\n" + resolved);
}

fs::path ResolveSource(const std::string& path, const fs::path& lab_dir) {
  fs::path p(path);
  if (p.is_absolute() || lab_dir.empty()) return p;
  return lab_dir / p;
}

Result<std::string> DigestFiles(const schema::Image& spec, const fs::path& lab_dir) {
  std::string out;
  for (const auto& [dest, src] : spec.files) {
    fs::path from = ResolveSource(src, lab_dir);
    auto digest = Sha256File(from);
    if (!digest)
      return Status::Error("image '" + spec.name + "': files: " + dest + ": the source " + from.string() +
                           " cannot be read (" + digest.message() + "); give a file relative to the lab file");
    out += "file " + dest + " " + *digest + "\n";
  }
  return out;
}

KeyLock& KeyLock::operator=(KeyLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

KeyLock::~KeyLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

Cache::Cache(const fs::path& state_dir) : root_(state_dir / "images") {}

fs::path Cache::EntryDir(const std::string& key) const { return root_ / "sha256" / key; }

std::optional<Meta> Cache::Lookup(const std::string& key) const {
  if (!IsHexKey(key)) return std::nullopt;
  return ReadMeta(EntryDir(key));
}

std::vector<Meta> Cache::List() const {
  std::vector<Meta> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "sha256", ec)) {
    if (auto m = ReadMeta(e.path())) out.push_back(std::move(*m));
  }
  std::sort(out.begin(), out.end(), [](const Meta& a, const Meta& b) {
    return std::tie(a.name, a.created, a.key) < std::tie(b.name, b.created, b.key);
  });
  return out;
}

Result<Meta> Cache::Find(const std::string& name_or_key) const {
  std::vector<Meta> hits;
  bool hex_prefix = name_or_key.size() >= 6 && name_or_key.size() <= 64 &&
                    std::all_of(name_or_key.begin(), name_or_key.end(),
                                [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  for (auto& m : List())
    if (m.name == name_or_key || (hex_prefix && m.key.rfind(name_or_key, 0) == 0)) hits.push_back(m);
  if (hits.empty())
    return Status::Error("no image '" + name_or_key + "' in the cache (" + root_.string() +
                         "); `lab image ls` lists the images and their keys");
  if (hits.size() > 1) {
    std::string keys;
    for (const auto& m : hits) keys += (keys.empty() ? "" : ", ") + m.key.substr(0, 12);
    return Status::Error("'" + name_or_key + "' names " + std::to_string(hits.size()) + " images in the cache (" + keys +
                         "); give the key instead");
  }
  return hits[0];
}

Result<KeyLock> Cache::Lock(const std::string& key) {
  if (!IsHexKey(key)) return Status::Error("image cache: '" + key + "' is not an image key");
  LAB_RETURN_IF_ERROR(MakeDirs(root_ / "locks"));
  fs::path path = root_ / "locks" / (key + ".lock");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("image cache: cannot open the lock " + path.string());
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    Status st = ErrnoStatus("image cache: cannot lock " + path.string());
    ::close(fd);
    return st;
  }
  KeyLock lock(fd);
  // Whatever a build of this key left in tmp/ belongs to a process that died before its commit
  // (a live one would hold the lock we now have).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "tmp", ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(key + ".", 0) == 0) RemoveTree(e.path());
  }
  return lock;
}

Result<fs::path> Cache::Staging(const std::string& key) {
  LAB_RETURN_IF_ERROR(MakeDirs(root_ / "tmp"));
  static std::atomic<int> counter{0};
  fs::path dir = root_ / "tmp" / (key + "." + std::to_string(::getpid()) + "." + std::to_string(counter++));
  RemoveTree(dir);
  if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoStatus("image cache: cannot make " + dir.string());
  return dir;
}

Status Cache::Commit(const fs::path& staging, const std::string& key, Meta meta) {
  fs::path tree = fs::exists(staging / "layer") ? staging / "layer" : staging / "rootfs";
  if (!fs::is_directory(tree))
    return Status::Error("image cache: the build of '" + meta.name + "' left neither rootfs/ nor layer/ in " +
                         staging.string());
  fs::path entry = EntryDir(key);
  if (Lookup(key)) {
    RemoveTree(staging);
    return Status::Ok();
  }
  LAB_RETURN_IF_ERROR(MakeDirs(root_ / "sha256"));
  // An entry dir without meta.json is the remains of an interrupted Remove: not an entry.
  if (fs::exists(entry)) RemoveTree(entry);
  meta.key = key;
  meta.size = TreeSize(tree);
  if (meta.created == 0) meta.created = NowSeconds();
  if (fs::exists(staging / "build.log")) meta.build_log = (entry / "build.log").string();
  json j = {{"name", meta.name},       {"key", meta.key},         {"kind", meta.kind},
            {"parent_key", meta.parent_key}, {"size", meta.size}, {"created", meta.created},
            {"source", meta.source},   {"build_log", meta.build_log}};
  LAB_RETURN_IF_ERROR(WriteFileAtomic(staging / "meta.json", j.dump(2) + "\n"));
  ::sync();  // the tree's data reaches the disk before the rename makes it an entry
  if (::rename(staging.c_str(), entry.c_str()) != 0)
    return ErrnoStatus("image cache: cannot move " + staging.string() + " into place as " + entry.string());
  return Status::Ok();
}

Status Cache::Remove(const std::string& key) {
  if (!IsHexKey(key)) return Status::Error("image cache: '" + key + "' is not an image key");
  fs::path entry = EntryDir(key);
  if (!fs::exists(entry)) return Status::Ok();
  LAB_RETURN_IF_ERROR(MakeDirs(root_ / "tmp"));
  fs::path aside = root_ / "tmp" / (key + ".removed." + std::to_string(::getpid()));
  if (::rename(entry.c_str(), aside.c_str()) != 0)
    return ErrnoStatus("image cache: cannot remove " + entry.string());
  RemoveTree(aside);
  return Status::Ok();
}

Result<std::vector<fs::path>> Cache::Layers(const std::string& key) const {
  std::vector<fs::path> out;
  std::string at = key;
  for (int depth = 0; depth < 64; ++depth) {
    auto meta = Lookup(at);
    if (!meta) return Status::Error("image cache: image " + at.substr(0, 12) + " is not in the cache (" +
                                    EntryDir(at).string() + "); `lab up` makes it again");
    if (meta->parent_key.empty()) {
      out.push_back(EntryDir(at) / "rootfs");
      return out;
    }
    out.push_back(EntryDir(at) / "layer");
    at = meta->parent_key;
  }
  return Status::Error("image cache: image " + key.substr(0, 12) + " has more than 64 parents");
}

void Cache::Touch(const std::string& key) const {
  fs::path used = EntryDir(key) / "used";
  int fd = ::open(used.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ::futimens(fd, nullptr);
  ::close(fd);
}

std::optional<std::string> Cache::Pinned(const std::string& spec_digest) const {
  auto text = ReadSmallFile(root_ / "pins" / spec_digest);
  if (!text) return std::nullopt;
  std::string key = text->substr(0, text->find('\n'));
  if (!IsHexKey(key)) return std::nullopt;
  return key;
}

Status Cache::Pin(const std::string& spec_digest, const std::string& key) {
  LAB_RETURN_IF_ERROR(MakeDirs(root_ / "pins"));
  return WriteFileAtomic(root_ / "pins" / spec_digest, key + "\n");
}

std::optional<std::string> Cache::CachedSourceDigest(const fs::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  auto text = ReadSmallFile(root_ / "sources" / (Sha256Hex(fs::absolute(path).string()) + ".json"));
  if (!text) return std::nullopt;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  if (j.value("size", int64_t{-1}) != static_cast<int64_t>(st.st_size) ||
      j.value("mtime_ns", int64_t{-1}) != static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec ||
      j.value("ino", int64_t{-1}) != static_cast<int64_t>(st.st_ino))
    return std::nullopt;
  std::string d = j.value("digest", "");
  if (d.empty()) return std::nullopt;
  return d;
}

void Cache::RememberSourceDigest(const fs::path& path, const std::string& digest) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  if (!MakeDirs(root_ / "sources").ok()) return;
  json j = {{"path", fs::absolute(path).string()},
            {"size", static_cast<int64_t>(st.st_size)},
            {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
            {"ino", static_cast<int64_t>(st.st_ino)},
            {"digest", digest}};
  (void)WriteFileAtomic(root_ / "sources" / (Sha256Hex(fs::absolute(path).string()) + ".json"), j.dump() + "\n");
}

uint64_t TreeSize(const fs::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
  }
  return total;
}

}  // namespace lab::images
