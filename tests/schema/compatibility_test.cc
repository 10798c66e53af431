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

TEST_CASE("Every compatibility profile is accepted", "[schema]") {
  for (std::string p : {"v8", "preview-10565", "ws2022"}) {
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
        "(configuration version 8.0, the default), preview-10565 (the limits of the build 10565 preview) or "
        "ws2022 (current Hyper-V: Windows Server 2022 / Windows 11 hosts, nesting on Intel and AMD)\n");
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

TEST_CASE("The other nesting rules of the file hold in every profile", "[schema]") {
  for (std::string p : {"v8", "preview-10565", "ws2022"}) {
    INFO(p);
    std::string text = "lab: compat\ncompatibility: " + p +
                       "\nhosts:\n  hv1:\n    vms:\n      middle:\n"
                       "        processor: {expose_virtualization_extensions: true}\n"
                       "        memory: {dynamic: true}\n"
                       "        security: {virtualization_based_security: true}\n"
                       "        vms: {inner: {}}\n"
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

namespace {

std::string OnHost(const std::string& compat, const std::string& vendor, const std::string& version) {
  return "lab: compat\n" + (compat.empty() ? std::string() : "compatibility: " + compat + "\n") +
         "hosts:\n"
         "  hv1:\n" +
         (vendor.empty() ? std::string() : "    processor: {vendor: " + vendor + "}\n") +
         "    vms:\n"
         "      middle:\n"
         "        version: \"" + version + "\"\n"
         "        processor: {expose_virtualization_extensions: true}\n"
         "        vms:\n"
         "          nested1: {}\n";
}

}  // namespace

TEST_CASE("A host's processor is Intel unless the file says amd", "[schema]") {
  auto r = Parse(OnHost("", "", "9.0"), "c.yaml");
  REQUIRE(r.ok());
  CHECK(r.lab->FindMachine("hv1")->processor.vendor == "intel");
  CHECK(r.lab->FindMachine("middle")->processor.vendor.empty());
  auto amd = Parse(OnHost("ws2022", "AMD", "10.0"), "c.yaml");
  INFO(Messages(amd));
  REQUIRE(amd.ok());
  CHECK(amd.lab->FindMachine("hv1")->processor.vendor == "amd");
}

TEST_CASE("An AMD host's VMs cannot nest under v8 or preview-10565, with the seeds' sentence", "[schema]") {
  for (std::string p : {"", "v8", "preview-10565"}) {
    INFO(p);
    auto r = Parse(OnHost(p, "amd", "10.0"), "c.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    const auto& d = r.diagnostics[0];
    CHECK(d.loc.line == (p.empty() ? 8 : 9));  // processor: {expose_virtualization_extensions: true}
    CHECK(d.message.find("\"nesting is currently Intel-only\"") != std::string::npos);
    CHECK(d.message.find("host 'hv1' has processor vendor amd") != std::string::npos);
    CHECK(d.message.find("use compatibility: ws2022") != std::string::npos);
  }
}

TEST_CASE("Under ws2022 an AMD host's VMs nest from version 10.0, an Intel host's from 8.0", "[schema]") {
  for (std::string old : {"8.0", "9.0", "9.3"}) {
    INFO(old);
    auto r = Parse(OnHost("ws2022", "amd", old), "c.yaml");
    REQUIRE(r.diagnostics.size() == 1);
    CHECK(r.diagnostics[0].ToString() ==
          "c.yaml:8:18: error: VM 'middle': expose_virtualization_extensions on AMD host 'hv1' needs configuration "
          "version 10.0 or later under compatibility ws2022, and this VM has " + old +
          "; set version: \"10.0\" (Update-VMVersion)");
  }
  CHECK(Parse(OnHost("ws2022", "amd", "10.0"), "c.yaml").ok());
  CHECK(Parse(OnHost("ws2022", "intel", "8.0"), "c.yaml").ok());
  auto old_intel = Parse(OnHost("ws2022", "intel", "7.1"), "c.yaml");
  REQUIRE(old_intel.diagnostics.size() == 1);
  CHECK(old_intel.diagnostics[0].message.find("needs configuration version 8.0 or later") != std::string::npos);
}

TEST_CASE("An unknown processor vendor is an error, and the processor rules stay quiet", "[schema]") {
  auto r = Parse(OnHost("v8", "arm", "9.0"), "c.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].ToString() ==
        "c.yaml:5:25: error: host 'hv1': processor vendor 'arm' is not one the rules know; use intel (VT-x and EPT, "
        "the default) or amd (EPYC/Ryzen, nesting only under compatibility: ws2022)");
  auto count = Parse("lab: x\nhosts:\n  hv1:\n    processor: {count: 4}\n", "c.yaml");
  REQUIRE(count.diagnostics.size() == 1);
  CHECK(count.diagnostics[0].message.find("applies to VMs only") != std::string::npos);
}

TEST_CASE("Dynamic memory on an exposed VM without VMs inside is allowed except under preview-10565", "[schema]") {
  for (std::string p : {"v8", "ws2022", "preview-10565"}) {
    INFO(p);
    std::string text = "lab: compat\ncompatibility: " + p +
                       "\nhosts:\n  hv1:\n    vms:\n      builder:\n"
                       "        processor: {expose_virtualization_extensions: true}\n"
                       "        memory: {dynamic: true}\n";
    auto r = Parse(text, "c.yaml");
    if (p == "preview-10565") {
      REQUIRE(r.diagnostics.size() == 1);
      CHECK(r.diagnostics[0].loc.line == 8);
      CHECK(r.diagnostics[0].message.find("under compatibility preview-10565") != std::string::npos);
    } else {
      INFO(Messages(r));
      CHECK(r.ok());
    }
    auto with_switch = Parse(text + "        switches: {Inner: {type: private}}\n", "c.yaml");
    REQUIRE(with_switch.diagnostics.size() == 1);
    CHECK(with_switch.diagnostics[0].message.find("needs static memory") != std::string::npos);
  }
}

TEST_CASE("Without version:, a VM has its host's default: 10.0 under ws2022, 9.0 otherwise", "[schema]") {
  std::string text = "lab: x\nCOMPAT\nhosts:\n  hv1:\n    processor: {vendor: amd}\n    vms:\n      middle:\n"
                     "        processor: {expose_virtualization_extensions: true}\n        vms: {nested1: {}}\n";
  auto ws = Parse(text.replace(text.find("COMPAT"), 6, "compatibility: ws2022"), "c.yaml");
  INFO(Messages(ws));
  REQUIRE(ws.ok());
  CHECK(ws.lab->FindMachine("middle")->version == "10.0");
  CHECK_FALSE(ws.lab->FindMachine("middle")->version_given);
  auto v8 = Parse(OnHost("", "", "9.0"), "c.yaml");
  REQUIRE(v8.ok());
  auto plain = Parse("lab: x\nhosts:\n  hv1:\n    vms:\n      vm1: {}\n", "c.yaml");
  REQUIRE(plain.ok());
  CHECK(plain.lab->FindMachine("vm1")->version == "9.0");
}
