// The lab file's `compatibility:` key: which generation of Hyper-V's nested virtualization the
// lab follows (hv/model.h profiles; docs/rules.md says what each profile allows).
#include <catch2/catch.hpp>

#include <string>

#include "schema/lab.h"

using lab::schema::Parse;

namespace {

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

std::string Lab(const std::string& top, const std::string& version) {
  return "lab: compat\n" + top +
         "hosts:\n"
         "  hv1:\n"
         "    vms:\n"
         "      middle:\n"
         "        version: \"" + version + "\"\n"
         "        processor: {expose_virtualization_extensions: true}\n";
}

}  // namespace

TEST_CASE("A lab without a compatibility key follows v8", "[schema]") {
  auto r = Parse(Lab("", "9.0"), "c.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(r.lab->compatibility == "v8");
}

TEST_CASE("Both compatibility profiles are accepted", "[schema]") {
  for (std::string p : {"v8", "preview-10565"}) {
    auto r = Parse(Lab("compatibility: " + p + "\n", "9.0"), "c.yaml");
    INFO(Messages(r));
    REQUIRE(r.ok());
    CHECK(r.lab->compatibility == p);
  }
}

TEST_CASE("An unknown compatibility profile is an error listing the valid ones", "[schema]") {
  auto r = Parse(Lab("compatibility: v7\n", "9.0"), "c.yaml");
  CHECK(Messages(r) ==
        "c.yaml:2:16: error: compatibility 'v7' is not a compatibility profile; did you mean 'v8'? use v8 "
        "(configuration version 8.0, the default) or preview-10565 (the limits of the build 10565 preview)\n");
  auto far = Parse(Lab("compatibility: windows-server-2025\n", "9.0"), "c.yaml");
  REQUIRE(far.diagnostics.size() == 1);
  CHECK(far.diagnostics[0].message.find("use v8") != std::string::npos);
  CHECK(far.diagnostics[0].message.find("preview-10565") != std::string::npos);
  auto list = Parse(Lab("compatibility: [v8]\n", "9.0"), "c.yaml");
  CHECK_FALSE(list.ok());
}

TEST_CASE("A misspelled compatibility key suggests the right one", "[schema]") {
  auto r = Parse(Lab("compatability: v8\n", "9.0"), "c.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].message.find("did you mean 'compatibility'?") != std::string::npos);
}

TEST_CASE("Version 8.0 is required for nesting under v8 but not under preview-10565", "[schema]") {
  auto v8 = Parse(Lab("compatibility: v8\n", "7.1"), "c.yaml");
  REQUIRE(v8.diagnostics.size() == 1);
  CHECK(v8.diagnostics[0].message.find("needs configuration version 8.0 or later") != std::string::npos);
  CHECK(v8.diagnostics[0].message.find("(Update-VMVersion)") != std::string::npos);
  CHECK_FALSE(Parse(Lab("", "7.1"), "c.yaml").ok());
  auto preview = Parse(Lab("compatibility: preview-10565\n", "7.1"), "c.yaml");
  INFO(Messages(preview));
  CHECK(preview.ok());
}

TEST_CASE("The other nesting rules of the file hold in both profiles", "[schema]") {
  for (std::string p : {"v8", "preview-10565"}) {
    INFO(p);
    std::string text = "lab: compat\ncompatibility: " + p +
                       "\nhosts:\n  hv1:\n    vms:\n      middle:\n"
                       "        processor: {expose_virtualization_extensions: true}\n"
                       "        memory: {dynamic: true}\n"
                       "        security: {virtualization_based_security: true}\n"
                       "      plain:\n        vms:\n          child: {}\n";
    auto r = Parse(text, "c.yaml");
    REQUIRE(r.diagnostics.size() == 3);
    CHECK(r.diagnostics[0].message.find("needs static memory") != std::string::npos);
    CHECK(r.diagnostics[1].message.find("virtualization-based security") != std::string::npos);
    CHECK(r.diagnostics[2].message.find("whose virtualization extensions are not exposed") != std::string::npos);
  }
}

TEST_CASE("A misspelled or unknown profile does not also report the rules that depend on it", "[schema]") {
  auto unknown = Parse(Lab("compatibility: preview\n", "7.1"), "c.yaml");
  REQUIRE(unknown.diagnostics.size() == 1);
  CHECK(unknown.diagnostics[0].message.find("is not a compatibility profile") != std::string::npos);
  auto misspelled = Parse(Lab("compatability: preview-10565\n", "7.1"), "c.yaml");
  REQUIRE(misspelled.diagnostics.size() == 1);
  CHECK(misspelled.diagnostics[0].message.find("did you mean 'compatibility'?") != std::string::npos);
}
