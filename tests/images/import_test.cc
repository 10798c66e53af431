// Imports: a directory, a tar.gz, an OCI layout (two layers, a whiteout and an opaque
// directory) and a `docker save` tar of one image give the same tree; digests are checked.
#include <catch2/catch.hpp>

#include <filesystem>

#include "images/import.h"
#include "tests/images/image_maker.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::images::Cache;
using lab::images::ImportTree;
using lab::images::SourceDigest;
using lab::schema::Image;
using lab::schema::ImageKind;
namespace maker = lab::testing::images;

namespace {

Image Spec(ImageKind kind, const std::string& path, const std::string& ref = "") {
  Image i;
  i.name = "test";
  i.kind = kind;
  i.path = path;
  i.ref = ref;
  return i;
}

}  // namespace

TEST_CASE("Imports of a directory, a tar, an OCI layout and a docker save tar give the same tree", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-import");
  maker::WriteDir(dir / "src" / "tree", maker::ExpectedTree("busybox"));
  maker::WriteTar(dir / "src" / "tree.tar.gz", maker::ExpectedTree("busybox"), true);
  maker::WriteOciLayout(dir / "src" / "layout", "busybox", "1.0");
  maker::WriteDockerArchive(dir / "src" / "saved.tar", "busybox");

  auto want = maker::Describe(dir / "src" / "tree");
  REQUIRE(want.count("opq/upper"));
  struct Case {
    const char* name;
    Image spec;
  } cases[] = {{"dir", Spec(ImageKind::kRootfs, "src/tree")},
               {"tar", Spec(ImageKind::kRootfs, "src/tree.tar.gz")},
               {"oci", Spec(ImageKind::kOci, "src/layout", "1.0")},
               {"docker", Spec(ImageKind::kDockerArchive, "src/saved.tar")}};
  for (const auto& c : cases) {
    INFO(c.name);
    fs::path out = dir / "out" / c.name;
    fs::create_directories(out.parent_path());
    auto st = ImportTree(c.spec, dir, out);
    INFO(st.message());
    REQUIRE(st.ok());
    auto got = maker::Describe(out);
    CHECK(got == want);
    // The whiteout and the opaque directory of the second layer were applied.
    CHECK_FALSE(fs::exists(out / "gone"));
    CHECK_FALSE(fs::exists(out / "opq" / "lower"));
    CHECK_FALSE(fs::exists(out / "opq" / "sub"));
  }
  fs::remove_all(dir);
}

TEST_CASE("An OCI layer that does not match its digest is refused", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-import");
  maker::WriteOciLayout(dir / "layout", "busybox", "1.0");
  // Damage the biggest blob (the first layer) by one byte.
  fs::path biggest;
  for (const auto& e : fs::directory_iterator(dir / "layout" / "blobs" / "sha256"))
    if (biggest.empty() || fs::file_size(e.path()) > fs::file_size(biggest)) biggest = e.path();
  std::string bytes = maker::ReadAll(biggest);
  bytes.back() ^= 1;
  std::ofstream(biggest, std::ios::binary) << bytes;
  auto st = ImportTree(Spec(ImageKind::kOci, "layout", "1.0"), dir, dir / "out");
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("image 'test'") == 0);
  fs::remove_all(dir);
}

TEST_CASE("An import's key comes from its source's digest and follows its content", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-import");
  Cache cache(dir / "state");
  maker::WriteTar(dir / "a.tar", maker::ExpectedTree("a"), false);
  maker::WriteOciLayout(dir / "layout", "a", "1.0");
  auto tar1 = SourceDigest(Spec(ImageKind::kRootfs, "a.tar"), dir, cache);
  REQUIRE(tar1.ok());
  CHECK(*SourceDigest(Spec(ImageKind::kRootfs, "a.tar"), dir, cache) == *tar1);  // remembered
  maker::WriteTar(dir / "a.tar", maker::ExpectedTree("b"), false);
  auto tar2 = SourceDigest(Spec(ImageKind::kRootfs, "a.tar"), dir, cache);
  REQUIRE(tar2.ok());
  CHECK(*tar2 != *tar1);
  auto oci = SourceDigest(Spec(ImageKind::kOci, "layout", "1.0"), dir, cache);
  REQUIRE(oci.ok());
  CHECK(oci->rfind("sha256:", 0) == 0);
  auto missing = SourceDigest(Spec(ImageKind::kOci, "layout", "2.0"), dir, cache);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("no image with ref '2.0'") != std::string::npos);
  auto none = SourceDigest(Spec(ImageKind::kRootfs, "nothing.tar"), dir, cache);
  REQUIRE_FALSE(none.ok());
  CHECK(none.message().find("does not exist") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("A tar entry that leaves the tree is refused", "[images]") {
  fs::path dir = lab::testing::TempDir("lab-import");
  maker::WriteTar(dir / "evil.tar", {{"etc/"}, {"../escaped", "x"}}, false);
  auto st = ImportTree(Spec(ImageKind::kRootfs, "evil.tar"), dir, dir / "out");
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("leaves the tree") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "escaped"));
  fs::remove_all(dir);
}
