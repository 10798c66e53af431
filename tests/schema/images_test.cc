// The lab file's images: the `images:` map, `image:` on machines and the lab, and the rules
// across them (unknown names, one kind per image, from: cycles).
#include <catch2/catch.hpp>

#include <string>

#include "schema/lab.h"

using lab::schema::ImageKind;
using lab::schema::Parse;

namespace {

const char* kMachines = R"(
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.1.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      web:
        image: web
        adapters:
          - {switch: External, ip: 10.1.0.20/24}
      client:
        adapters:
          - {switch: External, ip: 10.1.0.21/24}
)";

std::string Lab(const std::string& images, const std::string& top = "") {
  return "lab: unit\nnetworks:\n  lan: {subnet: 10.1.0.0/24}\n" + top + "images:\n" + images + kMachines;
}

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

}  // namespace

TEST_CASE("A lab without image: runs every machine on the host's software", "[schema][images]") {
  auto r = Parse(Lab("  web: {rootfs: ./web}\n"), "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(r.lab->default_image == "host");
  CHECK(r.lab->FindMachine("hv1")->image == "host");
  CHECK(r.lab->FindMachine("client")->image == "host");
  CHECK(r.lab->FindMachine("web")->image == "web");
}

TEST_CASE("Every kind of image is read with its settings", "[schema][images]") {
  auto r = Parse(Lab("  base:\n"
                     "    debian: bookworm\n"
                     "    variant: minbase\n"
                     "    slim: true\n"
                     "    mirror: http://snapshot.debian.org/archive/debian/20240101T000000Z\n"
                     "    packages: [iproute2, curl]\n"
                     "    files: {/etc/motd: motd.txt}\n"
                     "    run: [echo hi]\n"
                     "  web: {from: base, packages: [nginx-light]}\n"
                     "  tree: {rootfs: trees/busybox.tar.gz}\n"
                     "  layout: {oci: ./layouts/busybox:1.0}\n"
                     "  saved: {docker_archive: busybox.tar}\n"),
                 "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  const auto* base = r.lab->FindImage("base");
  REQUIRE(base);
  CHECK(base->kind == ImageKind::kDebian);
  CHECK(base->suite == "bookworm");
  CHECK(base->slim);
  CHECK(base->packages == std::vector<std::string>{"iproute2", "curl"});
  REQUIRE(base->package_locs.size() == 2);
  CHECK(base->package_locs[1].line == 10);
  CHECK(base->files.at("/etc/motd") == "motd.txt");
  CHECK(base->run == std::vector<std::string>{"echo hi"});
  const auto* web = r.lab->FindImage("web");
  CHECK(web->kind == ImageKind::kFrom);
  CHECK(web->from == "base");
  CHECK(r.lab->FindImage("tree")->path == "trees/busybox.tar.gz");
  CHECK(r.lab->FindImage("layout")->kind == ImageKind::kOci);
  CHECK(r.lab->FindImage("layout")->path == "./layouts/busybox");
  CHECK(r.lab->FindImage("layout")->ref == "1.0");
  CHECK(r.lab->FindImage("saved")->kind == ImageKind::kDockerArchive);
}

TEST_CASE("The lab's image: is the default of machines without their own", "[schema][images]") {
  auto r = Parse(Lab("  web: {rootfs: ./web}\n  tools: {rootfs: ./tools}\n", "image: tools\n"), "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(r.lab->FindMachine("client")->image == "tools");
  CHECK(r.lab->FindMachine("web")->image == "web");
}

TEST_CASE("An unknown image name is an error at the reference with a did-you-mean", "[schema][images]") {
  std::string text = Lab("  wbe: {rootfs: ./web}\n");
  auto r = Parse(text, "unit.yaml");
  REQUIRE_FALSE(r.ok());
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("unit.yaml:15:16: error: VM 'web': image 'web' is not an image of this lab; did you mean 'wbe'?") !=
        std::string::npos);
}

TEST_CASE("An image is made exactly one way", "[schema][images]") {
  auto r = Parse(Lab("  web: {rootfs: ./web, oci: ./layout}\n  none: {packages: [curl]}\n"), "unit.yaml");
  REQUIRE_FALSE(r.ok());
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("unit.yaml:5:24: error: image 'web': has both rootfs: and oci:") != std::string::npos);
  CHECK(m.find("unit.yaml:6:3: error: image 'none': says neither how to build it nor where to import it from") !=
        std::string::npos);
}

TEST_CASE("Settings of another kind of image are refused naming the kind they need", "[schema][images]") {
  auto r = Parse(Lab("  web: {rootfs: ./web, packages: [curl], slim: true}\n"), "unit.yaml");
  REQUIRE_FALSE(r.ok());
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("image 'web': packages applies to images built with debian: or from: only") != std::string::npos);
  CHECK(m.find("image 'web': slim applies to images built with debian: only") != std::string::npos);
}

TEST_CASE("from: cycles are reported once with the loop", "[schema][images]") {
  auto r = Parse(Lab("  web: {from: b}\n  b: {from: c}\n  c: {from: web}\n"), "unit.yaml");
  REQUIRE_FALSE(r.ok());
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("unit.yaml:5:15: error: image 'web': from: makes a cycle (web -> b -> c -> web)") != std::string::npos);
  CHECK(m.find("image 'b': from: makes a cycle") == std::string::npos);
}

TEST_CASE("Unknown keys of an image and bad package names are errors", "[schema][images]") {
  auto r = Parse(Lab("  web: {debian: bookworm, pakages: [curl]}\n  b: {debian: bookworm, packages: [Curl!]}\n"
                     "  host: {rootfs: ./x}\n"),
                 "unit.yaml");
  REQUIRE_FALSE(r.ok());
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("did you mean 'packages'") != std::string::npos);
  CHECK(m.find("'Curl!' is not a Debian package name") != std::string::npos);
  CHECK(m.find("image name 'host' is reserved") != std::string::npos);
}
