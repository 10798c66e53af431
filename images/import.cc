#include "images/import.h"

#include "base/text.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace lab::images {

namespace {

using json = nlohmann::json;

std::string Q(const std::string& s) { return "'" + s + "'"; }

std::optional<std::string> ReadText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A tar entry's name as a path relative to the tree: "./a/b/" -> "a/b"; nullopt for names
/// that would leave it ("..") and "" for the root itself.
std::optional<std::string> CleanName(const std::string& raw) {
  std::string out;
  std::stringstream ss(raw);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    out += (out.empty() ? "" : "/") + part;
  }
  return out;
}

/// True when no directory between `root` and `rel`'s last component is a symlink (so removing or
/// writing `rel` stays inside `root`).
bool ParentsAreReal(const fs::path& root, const std::string& rel) {
  fs::path at = root;
  fs::path r(rel);
  for (auto it = r.begin(); it != r.end(); ++it) {
    if (std::next(it) == r.end()) break;
    at /= *it;
    struct stat st {};
    if (::lstat(at.c_str(), &st) != 0) return true;  // missing: nothing to escape through
    if (!S_ISDIR(st.st_mode)) return false;
  }
  return true;
}

void RemoveAll(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

/// Streams a file into libarchive while hashing every byte read, so a blob is read once to be
/// both unpacked and checked.
struct HashingReader {
  int fd = -1;
  EVP_MD_CTX* md = nullptr;
  std::vector<char> buf = std::vector<char>(1 << 20);

  static la_ssize_t Read(struct archive*, void* self, const void** out) {
    auto* r = static_cast<HashingReader*>(self);
    for (;;) {
      ssize_t n = ::read(r->fd, r->buf.data(), r->buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n > 0 && r->md) EVP_DigestUpdate(r->md, r->buf.data(), static_cast<size_t>(n));
      *out = r->buf.data();
      return n;
    }
  }
  /// Hashes what libarchive did not read (padding after the end of the tar).
  void Drain() {
    for (;;) {
      const void* p;
      if (Read(nullptr, this, &p) <= 0) return;
    }
  }
  std::string Hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, out, &len);
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s += kHex[out[i] >> 4];
      s += kHex[out[i] & 15];
    }
    return s;
  }
};

/// Unpacks one tar (any compression) over `dest`, applying whiteouts when `whiteouts` is set.
/// `want_sha256` (hex), when not empty, must be the sha256 of the file's bytes.
Status Unpack(const fs::path& file, const fs::path& dest, bool whiteouts, const std::string& want_sha256) {
  HashingReader reader;
  reader.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (reader.fd < 0) return ErrnoStatus("cannot read " + file.string());
  if (!want_sha256.empty()) {
    reader.md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(reader.md, EVP_sha256(), nullptr);
  }
  struct archive* in = archive_read_new();
  archive_read_support_filter_all(in);
  archive_read_support_format_tar(in);
  archive_read_support_format_gnutar(in);
  struct archive* out = archive_write_disk_new();
  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_FFLAGS |
              ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_UNLINK;
  const bool root = ::geteuid() == 0;
  if (root) flags |= ARCHIVE_EXTRACT_OWNER;
  archive_write_disk_set_options(out, flags);
  archive_write_disk_set_standard_lookup(out);
  auto done = [&](Status st) {
    archive_read_free(in);
    archive_write_free(out);
    if (reader.md) EVP_MD_CTX_free(reader.md);
    ::close(reader.fd);
    return st;
  };
  std::string what = file.string();
  if (archive_read_open(in, &reader, nullptr, &HashingReader::Read, nullptr) != ARCHIVE_OK)
    return done(Status::Error(what + ": not a tar archive (" + archive_error_string(in) + ")"));
  std::set<std::string> written;  // what this layer put there: an opaque dir keeps it
  std::vector<std::string> opaque;
  struct archive_entry* e = nullptr;
  for (;;) {
    int r = archive_read_next_header(in, &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN)
      return done(Status::Error(what + ": cannot read the archive (" + std::string(archive_error_string(in)) + ")"));
    auto name = CleanName(archive_entry_pathname(e));
    if (!name) return done(Status::Error(what + ": entry " + Q(archive_entry_pathname(e)) + " leaves the tree (..)"));
    if (name->empty()) continue;  // the root: it exists
    std::string base = fs::path(*name).filename().string();
    std::string dir = fs::path(*name).parent_path().string();
    if (whiteouts && base.rfind(".wh.", 0) == 0) {
      if (!ParentsAreReal(dest, *name))
        return done(Status::Error(what + ": whiteout " + Q(*name) + " goes through a symlink"));
      if (base == ".wh..wh..opq") {
        opaque.push_back(dir);
      } else {
        RemoveAll(dest / dir / base.substr(4));
      }
      continue;
    }
    if (!ParentsAreReal(dest, *name))
      return done(Status::Error(what + ": entry " + Q(*name) + " goes through a symlink"));
    written.insert(*name);
    archive_entry_set_pathname(e, (dest / *name).c_str());
    if (const char* hl = archive_entry_hardlink(e)) {
      auto target = CleanName(hl);
      if (!target || target->empty())
        return done(Status::Error(what + ": hard link " + Q(*name) + " points outside the tree"));
      archive_entry_set_hardlink(e, (dest / *target).c_str());
    }
    unsigned type = archive_entry_filetype(e);
    if (!root && (type == AE_IFCHR || type == AE_IFBLK)) continue;  // device nodes need root
    // A layer replacing a directory of a lower one with a file (or the reverse).
    struct stat st {};
    if (::lstat((dest / *name).c_str(), &st) == 0 && S_ISDIR(st.st_mode) && type != AE_IFDIR)
      RemoveAll(dest / *name);
    r = archive_write_header(out, e);
    if (r < ARCHIVE_WARN)
      return done(Status::Error(what + ": cannot unpack " + Q(*name) + " (" + archive_error_string(out) + ")"));
    if (archive_entry_size(e) > 0 && r >= ARCHIVE_WARN) {
      const void* buf;
      size_t size;
      la_int64_t offset;
      for (;;) {
        int rr = archive_read_data_block(in, &buf, &size, &offset);
        if (rr == ARCHIVE_EOF) break;
        if (rr < ARCHIVE_WARN)
          return done(Status::Error(what + ": cannot read " + Q(*name) + " (" + archive_error_string(in) + ")"));
        if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN)
          return done(Status::Error(what + ": cannot write " + Q(*name) + " (" + archive_error_string(out) + ")"));
      }
    }
    if (archive_write_finish_entry(out) < ARCHIVE_WARN)
      return done(Status::Error(what + ": cannot finish " + Q(*name) + " (" + archive_error_string(out) + ")"));
  }
  if (archive_write_close(out) < ARCHIVE_WARN)
    return done(Status::Error(what + ": cannot finish unpacking (" + std::string(archive_error_string(out)) + ")"));
  // Opaque directories: what the layers below put there goes; what this layer wrote stays.
  for (const auto& d : opaque) {
    std::error_code ec;
    for (const auto& child : fs::directory_iterator(dest / d, ec)) {
      std::string rel = (fs::path(d) / child.path().filename()).lexically_normal().string();
      if (rel.rfind("./", 0) == 0) rel = rel.substr(2);
      if (!written.count(rel)) RemoveAll(child.path());
    }
  }
  if (reader.md) {
    reader.Drain();
    std::string got = reader.Hex();
    if (got != want_sha256)
      return done(Status::Error(what + ": sha256 is " + got + ", but the manifest says " + want_sha256 +
                                "; the image is damaged: export it again"));
  }
  return done(Status::Ok());
}

/// Copies a directory tree (owners when root, modes, times, symlinks, hard links, devices).
Status CopyTree(const fs::path& from, const fs::path& to) {
  std::map<std::pair<dev_t, ino_t>, fs::path> links;
  const bool root = ::geteuid() == 0;
  std::error_code ec;
  std::vector<std::pair<fs::path, struct stat>> dirs;  // times set after their content
  auto meta = [&](const fs::path& p, const struct stat& st, bool is_link) {
    if (root) (void)::lchown(p.c_str(), st.st_uid, st.st_gid);
    if (!is_link) ::chmod(p.c_str(), st.st_mode & 07777);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    ::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW);
  };
  struct stat top {};
  if (::lstat(from.c_str(), &top) != 0) return ErrnoStatus("cannot read " + from.string());
  if (::mkdir(to.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("cannot make " + to.string());
  dirs.push_back({to, top});
  for (auto it = fs::recursive_directory_iterator(from, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    fs::path rel = it->path().lexically_relative(from);
    fs::path dst = to / rel;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) return ErrnoStatus("cannot read " + it->path().string());
    if (S_ISDIR(st.st_mode)) {
      if (::mkdir(dst.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("cannot make " + dst.string());
      dirs.push_back({dst, st});
      continue;
    }
    if (st.st_nlink > 1) {
      auto [at, fresh] = links.emplace(std::pair{st.st_dev, st.st_ino}, dst);
      if (!fresh) {
        if (::link(at->second.c_str(), dst.c_str()) != 0) return ErrnoStatus("cannot link " + dst.string());
        continue;
      }
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target = fs::read_symlink(it->path(), ec).string();
      if (ec || ::symlink(target.c_str(), dst.c_str()) != 0) return ErrnoStatus("cannot make the symlink " + dst.string());
      meta(dst, st, true);
    } else if (S_ISREG(st.st_mode)) {
      if (!fs::copy_file(it->path(), dst, ec)) return Status::Error("cannot copy " + it->path().string() + ": " + ec.message());
      meta(dst, st, false);
    } else if (root) {
      if (::mknod(dst.c_str(), st.st_mode, st.st_rdev) != 0) return ErrnoStatus("cannot make " + dst.string());
      meta(dst, st, false);
    }
  }
  if (ec) return Status::Error("cannot read " + from.string() + ": " + ec.message());
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) meta(it->first, it->second, false);
  return Status::Ok();
}

/// "sha256:HEX" -> the blob's path in an OCI layout, checking the form.
Result<fs::path> BlobPath(const fs::path& layout, const std::string& digest) {
  if (digest.rfind("sha256:", 0) != 0 || digest.size() != 7 + 64 ||
      !std::all_of(digest.begin() + 7, digest.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
    return Status::Error(layout.string() + ": digest " + Q(digest) + " is not sha256:HEX; only sha256 is supported");
  return layout / "blobs" / "sha256" / digest.substr(7);
}

Result<json> ReadJson(const fs::path& p) {
  auto text = ReadText(p);
  if (!text) return Status::Error("cannot read " + p.string());
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::Error(p.string() + ": not valid JSON");
  return j;
}

/// A blob's JSON, its sha256 checked.
Result<json> ReadBlobJson(const fs::path& layout, const std::string& digest) {
  auto path = BlobPath(layout, digest);
  if (!path) return path.status();
  auto text = ReadText(*path);
  if (!text) return Status::Error(layout.string() + ": blob " + digest + " is missing");
  if (Sha256Hex(*text) != digest.substr(7))
    return Status::Error(layout.string() + ": blob " + digest + " does not match its digest; the layout is damaged");
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::Error(layout.string() + ": blob " + digest + " is not valid JSON");
  return j;
}

const char* kRefAnnotation = "org.opencontainers.image.ref.name";

/// The image manifest's digest an OCI layout's index.json names for `ref` ("" = its only one);
/// nested indexes are followed to linux/amd64 (or the machine's architecture).
Result<std::string> OciManifestDigest(const fs::path& layout, const std::string& ref) {
  auto index = ReadJson(layout / "index.json");
  if (!index) return Status::Error("not an OCI image layout: " + index.message());
  if (!index->contains("manifests") || !(*index)["manifests"].is_array())
    return Status::Error((layout / "index.json").string() + ": no manifests");
  std::vector<json> hits;
  std::vector<std::string> refs;
  for (const auto& m : (*index)["manifests"]) {
    std::string r = m.contains("annotations") ? m["annotations"].value(kRefAnnotation, "") : "";
    if (!r.empty()) refs.push_back(r);
    if (ref.empty() || r == ref) hits.push_back(m);
  }
  if (hits.empty())
    return Status::Error(layout.string() + ": no image with ref " + Q(ref) + "; the layout has " +
                         (refs.empty() ? std::string("no refs") : Join(refs, ", ")));
  if (hits.size() > 1)
    return Status::Error(layout.string() + ": holds " + std::to_string(hits.size()) +
                         " images; name one with oci: DIR:REF (refs: " + Join(refs, ", ") + ")");
  json m = hits[0];
  for (int depth = 0; depth < 4; ++depth) {
    std::string type = m.value("mediaType", "");
    std::string digest = m.value("digest", "");
    if (type != "application/vnd.oci.image.index.v1+json" &&
        type != "application/vnd.docker.distribution.manifest.list.v2+json")
      return digest;
    auto nested = ReadBlobJson(layout, digest);
    if (!nested) return nested.status();
#if defined(__aarch64__)
    const std::string arch = "arm64";
#else
    const std::string arch = "amd64";
#endif
    bool found = false;
    for (const auto& sub : (*nested)["manifests"]) {
      if (sub.contains("platform") && sub["platform"].value("os", "") == "linux" &&
          sub["platform"].value("architecture", "") == arch) {
        m = sub;
        found = true;
        break;
      }
    }
    if (!found) return Status::Error(layout.string() + ": no linux/" + arch + " image in the index " + digest);
  }
  return Status::Error(layout.string() + ": indexes nested too deep");
}

Status ApplyOci(const fs::path& layout, const std::string& manifest_digest, const fs::path& dest) {
  auto manifest = ReadBlobJson(layout, manifest_digest);
  if (!manifest) return manifest.status();
  if (!manifest->contains("layers") || !(*manifest)["layers"].is_array())
    return Status::Error(layout.string() + ": manifest " + manifest_digest + " has no layers");
  for (const auto& l : (*manifest)["layers"]) {
    std::string digest = l.value("digest", "");
    auto path = BlobPath(layout, digest);
    if (!path) return path.status();
    LAB_RETURN_IF_ERROR(Unpack(*path, dest, true, digest.substr(7)));
  }
  return Status::Ok();
}

/// A `docker save` tar, unpacked into `tmp`: manifest.json's first image, its layers in order.
Status ApplyDockerArchive(const fs::path& archive, const fs::path& tmp, const fs::path& dest) {
  LAB_RETURN_IF_ERROR(Unpack(archive, tmp, false, ""));
  auto manifest = ReadJson(tmp / "manifest.json");
  if (!manifest) return Status::Error(archive.string() + ": not a `docker save` archive (no manifest.json)");
  if (!manifest->is_array() || manifest->empty())
    return Status::Error(archive.string() + ": manifest.json lists no image");
  if (manifest->size() > 1)
    return Status::Error(archive.string() + ": holds " + std::to_string(manifest->size()) +
                         " images; save one image per archive (docker save IMAGE -o FILE)");
  const json& image = (*manifest)[0];
  if (!image.contains("Layers") || !image["Layers"].is_array())
    return Status::Error(archive.string() + ": manifest.json has no Layers");
  for (const auto& l : image["Layers"]) {
    auto name = CleanName(l.get<std::string>());
    if (!name || name->empty()) return Status::Error(archive.string() + ": layer " + Q(l.dump()) + " leaves the archive");
    // Docker 25+ saves an OCI layout inside: blobs/sha256/HEX, checked against its name.
    std::string want;
    if (name->rfind("blobs/sha256/", 0) == 0) want = name->substr(13);
    LAB_RETURN_IF_ERROR(Unpack(tmp / *name, dest, true, want));
  }
  return Status::Ok();
}

/// A sha256 over a directory's entries (paths, types, modes, owners, sizes, mtimes, link
/// targets): what changes when the tree changes, without reading every file.
std::string DirectoryDigest(const fs::path& dir) {
  std::vector<std::string> lines;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    std::string l = it->path().lexically_relative(dir).string() + "\t" + std::to_string(st.st_mode) + "\t" +
                    std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + "\t" + std::to_string(st.st_size) +
                    "\t" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    if (S_ISLNK(st.st_mode)) l += "\t" + fs::read_symlink(it->path(), ec).string();
    lines.push_back(std::move(l));
  }
  std::sort(lines.begin(), lines.end());
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  return Sha256Hex(all);
}

Result<std::string> FileDigest(const fs::path& file, Cache& cache) {
  if (auto d = cache.CachedSourceDigest(file)) return *d;
  auto d = Sha256File(file);
  if (!d) return d.status();
  cache.RememberSourceDigest(file, *d);
  return *d;
}

}  // namespace

Result<std::string> SourceDigest(const schema::Image& spec, const fs::path& lab_dir, Cache& cache) {
  fs::path src = ResolveSource(spec.path, lab_dir);
  std::string what = "image " + Q(spec.name) + ": " + schema::ToString(spec.kind) + ": " + src.string();
  struct stat st {};
  if (::stat(src.c_str(), &st) != 0)
    return Status::Error(what + " does not exist; give a path relative to the lab file");
  switch (spec.kind) {
    case schema::ImageKind::kRootfs: {
      if (S_ISDIR(st.st_mode)) return "dir:" + DirectoryDigest(src);
      auto d = FileDigest(src, cache);
      if (!d) return Status::Error(what + ": " + d.message());
      return "sha256:" + *d;
    }
    case schema::ImageKind::kDockerArchive: {
      auto d = FileDigest(src, cache);
      if (!d) return Status::Error(what + ": " + d.message());
      return "sha256:" + *d;
    }
    case schema::ImageKind::kOci: {
      auto d = OciManifestDigest(src, spec.ref);
      if (!d) return Status::Error("image " + Q(spec.name) + ": " + d.message());
      return *d;
    }
    default:
      return Status::Error("image " + Q(spec.name) + " is built, not imported");
  }
}

Result<schema::Image> DetectImport(const fs::path& path, const std::string& name) {
  schema::Image spec;
  spec.name = name;
  spec.path = fs::absolute(path).string();
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    spec.kind = fs::exists(path / "index.json", ec) ? schema::ImageKind::kOci : schema::ImageKind::kRootfs;
    return spec;
  }
  if (!fs::exists(path, ec)) return Status::Error(path.string() + " does not exist; give a directory, a tar, an OCI "
                                                  "layout or a `docker save` tar");
  spec.kind = schema::ImageKind::kRootfs;
  struct archive* in = archive_read_new();
  archive_read_support_filter_all(in);
  archive_read_support_format_tar(in);
  archive_read_support_format_gnutar(in);
  if (archive_read_open_filename(in, path.c_str(), 1 << 16) == ARCHIVE_OK) {
    struct archive_entry* e = nullptr;
    while (archive_read_next_header(in, &e) == ARCHIVE_OK) {
      auto n = CleanName(archive_entry_pathname(e));
      if (n && *n == "manifest.json") {
        spec.kind = schema::ImageKind::kDockerArchive;
        break;
      }
    }
  } else {
    std::string why = archive_error_string(in) ? archive_error_string(in) : "unreadable";
    archive_read_free(in);
    return Status::Error(path.string() + ": not a tar archive (" + why + ")");
  }
  archive_read_free(in);
  return spec;
}

Status ApplyLayer(const fs::path& layer, const fs::path& dest) { return Unpack(layer, dest, true, ""); }

Status ImportTree(const schema::Image& spec, const fs::path& lab_dir, const fs::path& dest) {
  fs::path src = ResolveSource(spec.path, lab_dir);
  std::string what = "image " + Q(spec.name);
  if (::mkdir(dest.c_str(), 0755) != 0) return ErrnoStatus(what + ": cannot make " + dest.string());
  Status st;
  switch (spec.kind) {
    case schema::ImageKind::kRootfs:
      st = fs::is_directory(src) ? CopyTree(src, dest) : Unpack(src, dest, false, "");
      break;
    case schema::ImageKind::kOci: {
      auto digest = OciManifestDigest(src, spec.ref);
      st = digest ? ApplyOci(src, *digest, dest) : digest.status();
      break;
    }
    case schema::ImageKind::kDockerArchive: {
      fs::path tmp = dest.parent_path() / "docker-archive";
      RemoveAll(tmp);
      if (::mkdir(tmp.c_str(), 0700) != 0) return ErrnoStatus(what + ": cannot make " + tmp.string());
      st = ApplyDockerArchive(src, tmp, dest);
      RemoveAll(tmp);
      break;
    }
    default:
      return Status::Error(what + " is built, not imported");
  }
  return st.Prefixed(what);
}

}  // namespace lab::images
