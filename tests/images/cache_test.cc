// The image cache: keys name every input, entries appear whole (built aside, renamed into
// place), a key's lock makes two builders build once, and layers stack from-images on parents.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "images/cache.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::images::Cache;
using lab::images::ImageKey;
using lab::images::Meta;
using lab::schema::Image;
using lab::schema::ImageKind;

namespace {

void WriteFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string Commit(Cache& cache, const std::string& key, const std::string& tree, const std::string& parent = "") {
  auto lock = cache.Lock(key);
  REQUIRE(lock.ok());
  auto staging = cache.Staging(key);
  REQUIRE(staging.ok());
  WriteFile(*staging / tree / "etc" / "os-release", "ID=" + key.substr(0, 4) + "\n");
  Meta m;
  m.name = "img-" + key.substr(0, 4);
  m.kind = parent.empty() ? "rootfs" : "from";
  m.parent_key = parent;
  auto st = cache.Commit(*staging, key, m);
  REQUIRE(st.ok());
  return key;
}

}  // namespace

TEST_CASE("An image key changes with every input and not with the image's name", "[images]") {
  Image a;
  a.name = "web";
  a.kind = ImageKind::kDebian;
  a.suite = "bookworm";
  a.packages = {"curl", "iproute2"};
  std::string k = ImageKey(a, "", "debian-1", "curl=1\n");
  Image renamed = a;
  renamed.name = "other";
  CHECK(ImageKey(renamed, "", "debian-1", "curl=1\n") == k);
  Image reordered = a;
  reordered.packages = {"iproute2", "curl"};
  CHECK(ImageKey(reordered, "", "debian-1", "curl=1\n") == k);
  Image more = a;
  more.packages.push_back("nftables");
  CHECK(ImageKey(more, "", "debian-1", "curl=1\n") != k);
  Image slim = a;
  slim.slim = true;
  CHECK(ImageKey(slim, "", "debian-1", "curl=1\n") != k);
  Image mirror = a;
  mirror.mirror = "http://snapshot.debian.org/archive/debian/20240101T000000Z";
  CHECK(ImageKey(mirror, "", "debian-1", "curl=1\n") != k);
  CHECK(ImageKey(a, "", "debian-2", "curl=1\n") != k);
  CHECK(ImageKey(a, "", "debian-1", "curl=2\n") != k);
  CHECK(ImageKey(a, "p", "debian-1", "curl=1\n") != k);
  CHECK(k.size() == 64);
}

TEST_CASE("An import's key is its source's digest, not its path", "[images]") {
  Image a;
  a.kind = ImageKind::kRootfs;
  a.path = "one.tar";
  Image b = a;
  b.path = "/elsewhere/two.tar";
  CHECK(ImageKey(a, "", "import-1", "sha256:aa") == ImageKey(b, "", "import-1", "sha256:aa"));
  CHECK(ImageKey(a, "", "import-1", "sha256:aa") != ImageKey(b, "", "import-1", "sha256:bb"));
}

TEST_CASE("A committed entry is found, listed and removed; an uncommitted one is not there", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-cache");
  Cache cache(dir);
  std::string key(64, 'a');
  CHECK_FALSE(cache.Lookup(key));
  {
    auto lock = cache.Lock(key);
    REQUIRE(lock.ok());
    auto staging = cache.Staging(key);
    REQUIRE(staging.ok());
    WriteFile(*staging / "rootfs" / "bin" / "sh", "#!\n");
    CHECK_FALSE(cache.Lookup(key));  // a build in progress is not an entry
  }
  // The staging of a build that died before its commit is removed by the next lock holder.
  REQUIRE(fs::exists(dir / "images" / "tmp"));
  CHECK_FALSE(fs::is_empty(dir / "images" / "tmp"));
  { auto lock = cache.Lock(key); REQUIRE(lock.ok()); }
  CHECK(fs::is_empty(dir / "images" / "tmp"));

  Commit(cache, key, "rootfs");
  auto m = cache.Lookup(key);
  REQUIRE(m);
  CHECK(m->name == "img-aaaa");
  CHECK(m->size == std::string("ID=aaaa\n").size());
  CHECK(m->created > 0);
  CHECK(cache.List().size() == 1);
  CHECK(cache.Find("img-aaaa").ok());
  CHECK(cache.Find("aaaaaa").ok());
  CHECK_FALSE(cache.Find("bbbbbb").ok());
  REQUIRE(cache.Remove(key).ok());
  CHECK_FALSE(cache.Lookup(key));
  CHECK(cache.Remove(key).ok());  // already gone is success
  fs::remove_all(dir);
}

TEST_CASE("A from: image's layers stack over its parent's rootfs, topmost first", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-cache");
  Cache cache(dir);
  std::string base(64, '1'), mid(64, '2'), top(64, '3');
  Commit(cache, base, "rootfs");
  Commit(cache, mid, "layer", base);
  Commit(cache, top, "layer", mid);
  auto layers = cache.Layers(top);
  REQUIRE(layers.ok());
  REQUIRE(layers->size() == 3);
  CHECK((*layers)[0] == cache.EntryDir(top) / "layer");
  CHECK((*layers)[2] == cache.EntryDir(base) / "rootfs");
  REQUIRE(cache.Remove(base).ok());
  CHECK_FALSE(cache.Layers(top).ok());
  fs::remove_all(dir);
}

TEST_CASE("Two processes needing one image build it once under the key's lock", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-cache");
  std::string key(64, 'c');
  fs::path builds = dir / "builds";
  auto builder = [&] {
    Cache cache(dir);
    auto lock = cache.Lock(key);
    if (!lock.ok()) _exit(2);
    if (!cache.Lookup(key)) {
      std::ofstream(builds, std::ios::app) << "built\n";
      auto staging = cache.Staging(key);
      fs::create_directories(*staging / "rootfs");
      ::usleep(100000);  // hold the lock while the other process waits for it
      if (!cache.Commit(*staging, key, Meta{}).ok()) _exit(3);
    }
    _exit(0);
  };
  pid_t a = fork();
  if (a == 0) builder();
  pid_t b = fork();
  if (b == 0) builder();
  int sa = 0, sb = 0;
  waitpid(a, &sa, 0);
  waitpid(b, &sb, 0);
  CHECK(WEXITSTATUS(sa) == 0);
  CHECK(WEXITSTATUS(sb) == 0);
  std::ifstream in(builds);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  CHECK(all == "built\n");
  CHECK(Cache(dir).Lookup(key));
  fs::remove_all(dir);
}

TEST_CASE("A pin maps a spec to the key last resolved for it", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-cache");
  Cache cache(dir);
  CHECK_FALSE(cache.Pinned("spec"));
  REQUIRE(cache.Pin("spec", std::string(64, 'd')).ok());
  CHECK(cache.Pinned("spec") == std::string(64, 'd'));
  fs::remove_all(dir);
}
