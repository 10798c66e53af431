// Small machine images made offline for tests, in every form lab imports: a directory, a
// tar.gz, an OCI image layout with two layers (a whiteout and an opaque directory in the second)
// and a `docker save` tar. All four unpack to the same tree (ExpectedTree): busybox-static as
// /bin/busybox with its applets as symlinks when the machine has it, plain files otherwise.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "images/cache.h"

namespace lab::testing::images {

namespace fs = std::filesystem;

struct Item {
  std::string name;    // relative path; a directory ends with '/'
  std::string data;    // file content, or symlink target when link
  bool link = false;
  int mode = 0644;
};

inline std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// busybox-static's binary when installed (the tests then run its applets inside partitions).
inline std::string Busybox() {
  for (const char* p : {"/bin/busybox", "/usr/bin/busybox"})
    if (fs::exists(p)) return ReadAll(p);
  return "";
}

/// The tree every form of the test image unpacks to; `marker` goes into /etc/image-name.
inline std::vector<Item> ExpectedTree(const std::string& marker) {
  std::vector<Item> t = {{"bin/"}, {"etc/"}, {"usr/"}, {"usr/bin/"}, {"tmp/", "", false, 01777}, {"opq/"},
                         {"etc/image-name", marker + "\n"}, {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
                         {"opq/upper", "from the second layer\n"}, {"root/", "", false, 0700}};
  std::string bb = Busybox();
  if (!bb.empty()) {
    t.push_back({"bin/busybox", bb, false, 0755});
    for (const char* applet : {"sh", "cat", "ls", "echo", "id", "touch", "rm", "mkdir", "test", "hostname"})
      t.push_back({std::string("bin/") + applet, "busybox", true});
  } else {
    t.push_back({"bin/sh", "#!/bin/false\n", false, 0755});
  }
  return t;
}

/// The first layer of the OCI and docker forms: the tree, plus what the second layer takes away.
inline std::vector<Item> Layer1(const std::string& marker) {
  std::vector<Item> t = ExpectedTree(marker);
  std::vector<Item> out;
  for (auto& i : t)
    if (i.name != "opq/upper") out.push_back(i);
  out.push_back({"gone", "removed by a whiteout\n"});
  out.push_back({"opq/lower", "hidden by the opaque dir\n"});
  out.push_back({"opq/sub/"});
  out.push_back({"opq/sub/deep", "hidden too\n"});
  return out;
}

inline std::vector<Item> Layer2() {
  return {{"opq/"}, {"opq/.wh..wh..opq", ""}, {"opq/upper", "from the second layer\n"}, {".wh.gone", ""}};
}

inline void WriteTar(const fs::path& file, const std::vector<Item>& items, bool gzip) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  archive_write_open_filename(a, file.c_str());
  for (const auto& i : items) {
    struct archive_entry* e = archive_entry_new();
    bool dir = !i.name.empty() && i.name.back() == '/';
    archive_entry_set_pathname(e, i.name.c_str());
    archive_entry_set_mtime(e, 1700000000, 0);
    if (dir) {
      archive_entry_set_filetype(e, AE_IFDIR);
      archive_entry_set_perm(e, i.mode == 0644 ? 0755 : i.mode);
    } else if (i.link) {
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_symlink(e, i.data.c_str());
      archive_entry_set_perm(e, 0777);
    } else {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, i.mode);
      archive_entry_set_size(e, static_cast<la_int64_t>(i.data.size()));
    }
    archive_write_header(a, e);
    if (!dir && !i.link) archive_write_data(a, i.data.data(), i.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

inline void WriteDir(const fs::path& root, const std::vector<Item>& items) {
  fs::create_directories(root);
  for (const auto& i : items) {
    fs::path p = root / i.name;
    if (!i.name.empty() && i.name.back() == '/') {
      fs::create_directories(p);
      ::chmod(p.c_str(), i.mode == 0644 ? 0755 : i.mode);
    } else if (i.link) {
      fs::create_symlink(i.data, p);
    } else {
      std::ofstream(p, std::ios::binary) << i.data;
      ::chmod(p.c_str(), i.mode);
    }
  }
}

/// Puts `bytes` in the layout as a blob; returns "sha256:HEX".
inline std::string PutBlob(const fs::path& layout, const std::string& bytes) {
  std::string hex = lab::images::Sha256Hex(bytes);
  fs::create_directories(layout / "blobs" / "sha256");
  std::ofstream(layout / "blobs" / "sha256" / hex, std::ios::binary) << bytes;
  return "sha256:" + hex;
}

/// An OCI image layout of two gzip layers at `layout`, with ref `ref`.
inline void WriteOciLayout(const fs::path& layout, const std::string& marker, const std::string& ref) {
  using json = nlohmann::json;
  fs::path tmp = layout.string() + ".tmp";
  fs::create_directories(tmp);
  WriteTar(tmp / "l1.tar.gz", Layer1(marker), true);
  WriteTar(tmp / "l2.tar.gz", Layer2(), true);
  json layers = json::array();
  for (const char* l : {"l1.tar.gz", "l2.tar.gz"}) {
    std::string bytes = ReadAll(tmp / l);
    layers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                      {"digest", PutBlob(layout, bytes)},
                      {"size", bytes.size()}});
  }
  std::string config = json{{"architecture", "amd64"}, {"os", "linux"}, {"rootfs", {{"type", "layers"}}}}.dump();
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config", {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                               {"digest", PutBlob(layout, config)}, {"size", config.size()}}},
                   {"layers", layers}};
  std::string mbytes = manifest.dump();
  json index = {{"schemaVersion", 2},
                {"manifests", json::array({{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                            {"digest", PutBlob(layout, mbytes)},
                                            {"size", mbytes.size()},
                                            {"annotations", {{"org.opencontainers.image.ref.name", ref}}}}})}};
  std::ofstream(layout / "index.json") << index.dump();
  std::ofstream(layout / "oci-layout") << R"({"imageLayoutVersion": "1.0.0"})";
  fs::remove_all(tmp);
}

/// A `docker save` tar (the classic form: ID/layer.tar, manifest.json) of the same two layers.
inline void WriteDockerArchive(const fs::path& file, const std::string& marker) {
  fs::path tmp = file.string() + ".tmp";
  fs::create_directories(tmp);
  WriteTar(tmp / "l1.tar", Layer1(marker), false);
  WriteTar(tmp / "l2.tar", Layer2(), false);
  std::string manifest = R"([{"Config":"config.json","RepoTags":["test:1"],"Layers":["a1/layer.tar","b2/layer.tar"]}])";
  WriteTar(file,
           {{"a1/"}, {"a1/layer.tar", ReadAll(tmp / "l1.tar")}, {"b2/"}, {"b2/layer.tar", ReadAll(tmp / "l2.tar")},
            {"config.json", "{}"}, {"manifest.json", manifest}},
           false);
  fs::remove_all(tmp);
}

/// path -> "TYPE MODE CONTENT|TARGET" for every entry under `root` (times left out).
inline std::map<std::string, std::string> Describe(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string rel = it->path().lexically_relative(root).string();
    std::string mode = std::to_string(st.st_mode & 07777);
    if (S_ISDIR(st.st_mode)) out[rel] = "dir " + mode;
    else if (S_ISLNK(st.st_mode)) out[rel] = "link " + fs::read_symlink(it->path()).string();
    else out[rel] = "file " + mode + " " + lab::images::Sha256Hex(ReadAll(it->path()));
  }
  return out;
}

}  // namespace lab::testing::images
