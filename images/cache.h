// The image cache: immutable, content-addressed machine images under the state directory
// (Hyper-V's parent VHDX: every VM on an image gets its own differencing layer over it).
//
// Layout, under STATE/images/:
//   sha256/<key>/meta.json   what the entry is (Meta); written last, so an entry without it is
//                            not an entry
//   sha256/<key>/rootfs/     the whole tree (debian:, rootfs:, oci:, docker_archive:), or
//   sha256/<key>/layer/      the upper layer of a from: image, to be stacked over its parent's
//   sha256/<key>/build.log   what the build printed (builds only)
//   sha256/<key>/used        its mtime: the last time a lab was brought up on it (prune)
//   tmp/<key>.<pid>.<n>/     a build in progress (staging); renamed to sha256/<key> when done
//   locks/<key>.lock         flock per key: two processes needing one image build it once
//   pins/<digest>            debian:/from: spec digest -> the key last resolved for it, so a
//                            cached image is found without asking a mirror (lab image update
//                            resolves again)
//   sources/<digest>.json    stat cache of import sources: path, size, mtime -> content digest
//
// Invariants: an entry under sha256/ is complete and never changes; a key names every input
// (ImageKey); a crash leaves at most a staging dir, which the next holder of its key's lock
// removes. Which labs use which key is recorded in the state database (state::Store), not here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "schema/lab.h"

namespace lab::images {

namespace fs = std::filesystem;

/// What one cache entry is (its meta.json).
struct Meta {
  std::string name;        // the image's name in the lab file that made it first
  std::string key;         // 64 hex digits
  std::string kind;        // schema::ToString(ImageKind): "debian", "from", "rootfs", "oci", "docker_archive"
  std::string parent_key;  // from: the parent's key; "" otherwise
  uint64_t size = 0;       // bytes of its tree (rootfs/ or layer/)
  int64_t created = 0;     // unix seconds
  std::string source;      // what it was made from: "debian bookworm minbase", the import's path
  std::string build_log;   // path of build.log ("" for imports)
  int64_t last_used = 0;   // unix seconds (mtime of `used`; `created` when never used)
};

/// Hex sha256 of bytes.
std::string Sha256Hex(std::string_view bytes);
/// Hex sha256 of a file's content; an error naming the file when it cannot be read.
Result<std::string> Sha256File(const fs::path& file);

/// The cache key of an image: sha256 over its kind and every input that defines its content:
/// debian: suite, variant, mirror, slim, packages (sorted), files (DEST and `resolved` covers
/// their content), run (in order); from: packages, files, run and `parent_key`; imports: only
/// `resolved` (the source's digest: the file's sha256, the OCI manifest's digest), never the path.
/// `builder_version` changes every key of a builder whose output changes. `resolved` is for
/// debian:/from: the resolved `package=version` set plus the sha256 of each files: source.
std::string ImageKey(const schema::Image& spec, const std::string& parent_key, const std::string& builder_version,
                     const std::string& resolved);

/// sha256 of the spec alone (as ImageKey without the resolution): what a pin is filed under.
std::string SpecDigest(const schema::Image& spec, const std::string& parent_key, const std::string& builder_version);

/// "name: sha256-of-content" lines of an image's files: sources, resolved against `lab_dir`
/// (the lab file's directory), sorted by DEST: part of `resolved` for ImageKey. An error names
/// the image, the DEST and the missing source.
Result<std::string> DigestFiles(const schema::Image& spec, const fs::path& lab_dir);

/// `path` as written in the lab file, relative to `lab_dir` unless absolute.
fs::path ResolveSource(const std::string& path, const fs::path& lab_dir);

/// Holds one key's lock (flock) until destroyed. Move-only.
class KeyLock {
 public:
  KeyLock() = default;
  explicit KeyLock(int fd) : fd_(fd) {}
  KeyLock(KeyLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  KeyLock& operator=(KeyLock&& o) noexcept;
  KeyLock(const KeyLock&) = delete;
  KeyLock& operator=(const KeyLock&) = delete;
  ~KeyLock();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

class Cache {
 public:
  /// The cache of the state dir `state_dir` (STATE/images); nothing is made until written.
  explicit Cache(const fs::path& state_dir);

  const fs::path& root() const { return root_; }
  /// STATE/images/sha256/<key>
  fs::path EntryDir(const std::string& key) const;

  /// The committed entry of `key`, or nullopt. Reads one small file: no network, no walk.
  std::optional<Meta> Lookup(const std::string& key) const;
  /// Every committed entry, by key.
  std::vector<Meta> List() const;
  /// The entry whose key starts with `prefix` (at least 6 hex digits) or whose name is
  /// `prefix`; an error when none or more than one match.
  Result<Meta> Find(const std::string& name_or_key) const;

  /// Blocks until this process holds `key`'s lock; then removes what builds of `key` killed
  /// before their commit left in tmp/.
  Result<KeyLock> Lock(const std::string& key);
  /// A new empty staging dir for `key` (tmp/<key>.<pid>.<n>), on the cache's filesystem.
  Result<fs::path> Staging(const std::string& key);
  /// Makes `staging` the entry of `key`: fills meta.size (of rootfs/ or layer/) and created,
  /// writes meta.json, syncs, renames into place. `staging` must hold rootfs/ or layer/. When the
  /// entry already exists, `staging` is removed and the existing entry stands. Hold Lock(key).
  Status Commit(const fs::path& staging, const std::string& key, Meta meta);
  /// Removes the entry (renamed aside first, so a reader never sees half of it). Removing a key
  /// that is not there is success. The caller checks that no lab uses it.
  Status Remove(const std::string& key);

  /// The overlay lower dirs of `key`, topmost first: its own rootfs/ or layer/, then its
  /// parents' down to a rootfs/. An error when an entry of the chain is missing.
  Result<std::vector<fs::path>> Layers(const std::string& key) const;
  /// Records that a lab was brought up on `key` now (prune keeps recently used images).
  void Touch(const std::string& key) const;

  /// The key last resolved for a spec digest (SpecDigest), or nullopt.
  std::optional<std::string> Pinned(const std::string& spec_digest) const;
  Status Pin(const std::string& spec_digest, const std::string& key);

  /// The content digest remembered for the file at `path` if its size and mtime are unchanged.
  std::optional<std::string> CachedSourceDigest(const fs::path& path) const;
  void RememberSourceDigest(const fs::path& path, const std::string& digest);

 private:
  fs::path root_;
};

/// Bytes under `dir` (regular files' sizes, not following symlinks).
uint64_t TreeSize(const fs::path& dir);

}  // namespace lab::images
