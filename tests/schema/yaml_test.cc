// The YAML layer under the reader (schema/yaml.h, libyaml): positions as the reader always gave
// them, null and alias semantics, and the syntax errors it words as the reader did before.
#include <catch2/catch.hpp>

#include <string>

#include "schema/lab.h"
#include "schema/yaml.h"

using lab::schema::Parse;
namespace yaml = lab::schema::yaml;

namespace {

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

const char* kLab = R"(lab: anchors
hosts:
  hv1:
    switches:
      Sw: {type: internal, ip: 10.0.0.1/24}
    vms:
      a:
        memory: &small {startup: 64MiB}
        adapters: [{switch: Sw, ip: 10.0.0.2/24}]
      b:
        memory: *small
        adapters: [{switch: Sw, ip: 10.0.0.3/24}]
)";

}  // namespace

TEST_CASE("Columns count bytes, as the reader always did, also after non-ASCII text", "[schema]") {
  // "é" is two bytes: 'hostz' starts at byte 15 of the line (character 13).
  auto r = Parse("{lab: \"\xC3\xA9\xC3\xA9\", hostz: 1}\n", "u.yaml");
  INFO(Messages(r));
  CHECK_THAT(Messages(r), Catch::Contains("u.yaml:1:15: error: lab file: unknown key 'hostz'"));
}

TEST_CASE("An alias reads as the anchored value, and an unknown alias is a syntax error at it", "[schema]") {
  auto r = Parse(kLab, "a.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(r.lab->FindMachine("b")->memory.startup == (64ull << 20));

  std::string bad = kLab;
  bad.replace(bad.find("*small"), 6, "*large");
  auto e = Parse(bad, "a.yaml");
  REQUIRE(e.diagnostics.size() == 1);
  CHECK(e.diagnostics[0].ToString() == "a.yaml:11:17: error: YAML syntax: the referenced anchor is not defined");
}

TEST_CASE("Aliases are not copied: a billion laughs is read at once as a wrong value", "[schema]") {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    text += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
            ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n";
  }
  auto doc = yaml::Load(text, lab::schema::kMaxNestingDepth);
  REQUIRE_FALSE(doc.error);
  yaml::Node j = doc.doc->Root()["j"];
  REQUIRE(j.IsSequence());
  // Every item of j is the very node anchored as i: the same position.
  CHECK(j[0].GetMark().line == 8);
  CHECK(j[9].GetMark().line == 8);
  CHECK_THAT(Messages(Parse(text, "bomb.yaml")), Catch::Contains("unknown key 'a'"));
}

TEST_CASE("Plain ~, null and empty values are null; quoted ones are text", "[schema]") {
  auto doc = yaml::Load("a: ~\nb: null\nc:\nd: \"null\"\ne: ''\n", 64);
  REQUIRE_FALSE(doc.error);
  auto root = doc.doc->Root();
  CHECK(root["a"].IsNull());
  CHECK(root["b"].IsNull());
  CHECK(root["c"].IsNull());
  CHECK(root["d"].IsScalar());
  CHECK(root["d"].Scalar() == "null");
  CHECK(root["e"].IsScalar());
  CHECK_FALSE(root["f"].IsDefined());
}

TEST_CASE("Syntax errors keep the reader's words where the parser stops at the same place", "[schema]") {
  CHECK(Messages(Parse("lab: x\nhosts: {hv1: [a}\n", "f.yaml")) == "f.yaml:2:16: error: YAML syntax: illegal flow end\n");
  CHECK(Messages(Parse("lab: x\nhosts: {hv1: {}\n", "f.yaml")) ==
        "f.yaml:3:1: error: YAML syntax: end of map flow not found\n");
}

TEST_CASE("Text that is not UTF-8 is a syntax error at the byte, naming it", "[schema]") {
  auto r = Parse("lab: x\nhosts: {hv1: \xFF}\n", "b.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].ToString() ==
        "b.yaml:2:14: error: YAML syntax: byte 0xFF is not UTF-8 text (invalid leading UTF-8 octet); save the lab "
        "file as UTF-8");
}
