// The reader's limits on hostile or mistaken input: size (kMaxFileBytes) and nesting depth
// (kMaxNestingDepth), each refused with one diagnostic at FILE:LINE:COL before the lab is
// decoded, and inputs the fuzzer found (fuzz/regressions/) that must stay harmless.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "base/text.h"
#include "schema/lab.h"

using lab::schema::kMaxFileBytes;
using lab::schema::kMaxNestingDepth;
using lab::schema::LoadFile;
using lab::schema::Parse;

namespace {

const char* kMinimal = R"(lab: unit
networks:
  lan: {subnet: 10.1.0.0/24, gateway: 10.1.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.1.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      vm1:
        adapters:
          - {switch: External, ip: 10.1.0.20/24}
)";

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

// kMinimal followed by comment lines of 99 characters plus a newline, cut to `size` bytes.
std::string PaddedLab(size_t size) {
  std::string text = kMinimal;
  while (text.size() < size) text += "#" + std::string(98, 'x') + "\n";
  text.resize(size);
  if (text.back() != '\n') text.back() = '\n';
  return text;
}

// A map of `levels` maps, written with block indentation: "a:\n  a:\n    a: x".
std::string BlockNested(int levels) {
  std::string text;
  for (int i = 0; i < levels; ++i) text += std::string(2 * i, ' ') + "a:\n";
  return text + std::string(2 * levels, ' ') + "x\n";
}

}  // namespace

TEST_CASE("A lab file of exactly 1 MiB is read", "[schema]") {
  auto r = Parse(PaddedLab(kMaxFileBytes), "big.yaml");
  INFO(Messages(r));
  CHECK(r.ok());
}

TEST_CASE("A lab file over 1 MiB is refused at the byte that passes the limit, and nothing else is read",
          "[schema]") {
  std::string text = PaddedLab(kMaxFileBytes + 4096);
  auto r = Parse(text, "big.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  const auto& d = r.diagnostics[0];
  // kMinimal has 13 lines; then 100-byte comment lines.
  size_t padding = kMaxFileBytes - std::string(kMinimal).size();
  CHECK(d.loc.line == 14 + static_cast<int>(padding / 100));
  CHECK(d.loc.col == 1 + static_cast<int>(padding % 100));
  CHECK(d.ToString().rfind("big.yaml:" + std::to_string(d.loc.line) + ":" + std::to_string(d.loc.col) + ": error: ", 0) == 0);
  CHECK_THAT(d.message, Catch::Contains(std::to_string(text.size()) + " bytes") &&
                            Catch::Contains("at most 1 MiB (1048576 bytes)"));
}

TEST_CASE("Reading an endless file stops one byte past 1 MiB with the size error", "[schema]") {
  auto r = LoadFile("/dev/zero");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].file == "/dev/zero");
  CHECK_THAT(r.diagnostics[0].message, Catch::Contains("larger than 1 MiB"));
}

TEST_CASE("A directory given as the lab file is a read error naming it", "[schema]") {
  auto r = LoadFile(LAB_SOURCE_DIR "/labs");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK_THAT(r.diagnostics[0].ToString(), Catch::Contains("cannot read the lab file"));
}

TEST_CASE("Nesting deeper than the limit is refused at the first collection past it", "[schema]") {
  SECTION("flow sequences") {
    std::string text = std::string(100000, '[') + std::string(100000, ']');
    auto r = Parse(text, "deep.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].loc.line == 1);
    CHECK(r.diagnostics[0].loc.col == kMaxNestingDepth + 1);
    CHECK_THAT(r.diagnostics[0].message, Catch::Contains("nested more than 64 levels deep"));
  }
  SECTION("flow maps, unclosed") {
    std::string text;
    for (int i = 0; i < 5000; ++i) text += "{a: ";
    auto r = Parse(text, "deep.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    // Within one level: yaml-cpp marked a map that is a flow value at its key's map, libyaml at its '{'.
    CHECK(r.diagnostics[0].loc.col >= 1 + 4 * (kMaxNestingDepth - 1));
    CHECK(r.diagnostics[0].loc.col <= 1 + 4 * kMaxNestingDepth);
  }
  SECTION("block sequences on one line") {
    std::string text;
    for (int i = 0; i < 100000; ++i) text += "- ";
    text += "x\n";
    auto r = Parse(text, "deep.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].loc.line == 1);
    CHECK(r.diagnostics[0].loc.col == 1 + 2 * kMaxNestingDepth);
  }
  SECTION("block maps by indentation") {
    auto r = Parse(BlockNested(kMaxNestingDepth + 1), "deep.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    // The 65th map starts at the key of line 65.
    CHECK(r.diagnostics[0].loc.line == kMaxNestingDepth + 1);
    CHECK(r.diagnostics[0].loc.col == 1 + 2 * kMaxNestingDepth);
  }
}

TEST_CASE("Nesting at the limit is read as usual", "[schema]") {
  // Not a lab, so the usual error for it; but no depth error.
  auto r = Parse(BlockNested(kMaxNestingDepth), "deep.yaml");
  REQUIRE_FALSE(r.diagnostics.empty());
  CHECK_THAT(Messages(r), !Catch::Contains("levels deep"));
}

TEST_CASE("VMs nested twenty deep are within the depth limit", "[schema]") {
  std::string text = "lab: deep\nhosts:\n  hv1:\n";
  std::string indent = "    ";
  for (int i = 0; i < 20; ++i) {
    text += indent + "vms:\n";
    text += indent + "  vm" + std::to_string(i) + ":\n";
    indent += "    ";
    text += indent + "processor: {count: 1, expose_virtualization_extensions: true}\n";
    text += indent + "adapters: [{switch: S" + std::to_string(i) + ", ip: 10.0." + std::to_string(i) + ".2/24}]\n";
    text += indent + "switches: {S" + std::to_string(i + 1) + ": {type: private}}\n";
  }
  text.insert(text.find("    vms:"), "    switches: {S0: {type: private}}\n");
  auto r = Parse(text, "deep.yaml");
  INFO(text);
  INFO(Messages(r));
  CHECK_THAT(Messages(r), !Catch::Contains("levels deep"));
  CHECK(r.ok());
}

TEST_CASE("A comma where a value should start is a syntax error at it, not a hang (yaml-cpp#1040)", "[schema]") {
  for (const char* text : {",", "\n\n  ,", ", a"}) {
    auto r = Parse(text, "comma.yaml");
    INFO(text);
    REQUIRE(r.diagnostics.size() == 1);
    CHECK_THAT(r.diagnostics[0].message, Catch::Contains("YAML syntax: ',' cannot start a value"));
  }
  auto r = Parse("\n\n  ,", "comma.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].ToString().rfind("comma.yaml:3:3: error:", 0) == 0);
}

TEST_CASE("Every input the fuzzer once crashed on or stalled on is now a plain diagnostic", "[schema]") {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& e : fs::directory_iterator(LAB_SOURCE_DIR "/fuzz/regressions")) {
    if (!e.is_regular_file()) continue;
    ++n;
    auto r = LoadFile(e.path().string());
    INFO(e.path().string());
    INFO(Messages(r));
    // A reader bug surfaces as an internal error; anything else is the reader doing its job.
    // And, as the fuzzer asserts, every diagnostic of a text has a position in it.
    for (const auto& d : r.diagnostics) {
      CHECK(d.message.rfind("internal error while reading", 0) != 0);
      CHECK(d.loc.line >= 1);
      CHECK(d.loc.col >= 1);
    }
  }
  CHECK(n > 0);
}
