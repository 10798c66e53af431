// The JSON lab prints for scripts and CI (validate, plan, status, check --json), against what
// docs/json.md says of it: a field emitted and not documented, or documented and never emitted,
// fails.
#include <map>

#include "hv/kernel/netlink.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

namespace {

/// Runs `lab ARGS` and parses its stdout as JSON.
nlohmann::json LabJson(const Sandbox& sb, const std::string& args, int expect_code) {
  Run s = sb.LabApart(args);
  INFO("lab " << args << "\nstdout:\n" << s.out << "\nstderr:\n" << s.err);
  CHECK(s.code == expect_code);
  auto j = nlohmann::json::parse(s.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

/// Every field path of `j` as docs/json.md writes it: `machines[].addresses[].prefix`; an
/// array at the top is `[]`.
void Paths(const nlohmann::json& j, const std::string& at, std::set<std::string>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      std::string p = at.empty() ? k : at + "." + k;
      out.insert(p);
      Paths(v, p, out);
    }
  } else if (j.is_array()) {
    if (at.empty()) out.insert("[]");
    for (const auto& e : j) Paths(e, at + "[]", out);
  }
}

struct DocFields {
  std::set<std::string> all;       // every path of the section's table
  std::set<std::string> required;  // those not marked optional
};

/// The field tables of docs/json.md, by the command in their heading's backticks
/// ("lab status LAB --json").
std::map<std::string, DocFields> DocumentedFields() {
  auto text = lab::ReadFile(Src("docs/json.md"));
  REQUIRE(text);
  std::map<std::string, DocFields> sections;
  DocFields* current = nullptr;
  for (const auto& line : lab::Split(*text, '\n')) {
    if (line.rfind("## ", 0) == 0) {
      auto a = line.find('`'), b = line.find('`', a + 1);
      current = a == std::string::npos || b == std::string::npos ? nullptr : &sections[line.substr(a + 1, b - a - 1)];
      continue;
    }
    if (!current || line.rfind("| `", 0) != 0) continue;
    auto cells = lab::Split(line, '|');  // "", " `path` ", " type ", " meaning ", ""
    REQUIRE(cells.size() >= 4);
    auto a = cells[1].find('`'), b = cells[1].find('`', a + 1);
    std::string path = cells[1].substr(a + 1, b - a - 1);
    current->all.insert(path);
    if (cells[2].find("optional") == std::string::npos) current->required.insert(path);
  }
  return sections;
}

/// What `emitted` (the paths of several runs of one command) and the doc's section disagree on.
void Agree(const std::map<std::string, DocFields>& doc, const std::string& section, const std::set<std::string>& emitted) {
  INFO("docs/json.md section `" << section << "`");
  REQUIRE(doc.count(section));
  const DocFields& d = doc.at(section);
  for (const auto& p : emitted) {
    INFO("emitted, not documented: " << p);
    CHECK(d.all.count(p));
  }
  for (const auto& p : d.required) {
    INFO("documented (not optional), never emitted: " << p);
    CHECK(emitted.count(p));
  }
}

}  // namespace

TEST_CASE("validate --json gives each diagnostic's file, line, column, severity, message and fix", "[cli]") {
  Sandbox sb;
  const std::string bad = Src("tests/schema/golden/many-mistakes.yaml");
  auto j = LabJson(sb, "validate --json " + bad, 1);
  REQUIRE(j.contains("diagnostics"));
  // The same diagnostics as the text form, one for one, split at the fix.
  auto golden = lab::ReadFile(Src("tests/schema/golden/many-mistakes.err"));
  REQUIRE(golden);
  auto lines = lab::Split(lab::Trim(*golden), '\n');
  REQUIRE(j["diagnostics"].size() == lines.size());
  bool found_hint = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& d = j["diagnostics"][i];
    INFO(lines[i] << "\n" << d.dump());
    CHECK(d["file"] == bad);
    std::string text = "many-mistakes.yaml:" + std::to_string(d["line"].get<int>()) + ":" +
                       std::to_string(d["col"].get<int>()) + ": " + d["severity"].get<std::string>() + ": " +
                       d["message"].get<std::string>() + (d["fix"] == "" ? "" : "; " + d["fix"].get<std::string>());
    CHECK(text == lines[i]);
    if (d["message"] == "VM 'middle' adapter 'Ethernet': unknown key 'mac_adress_spoofing'") {
      CHECK(d["fix"] == "did you mean 'mac_address_spoofing'?");
      found_hint = true;
    }
  }
  CHECK(found_hint);
  // Valid: no diagnostics, exit 0; no "is valid" line mixed into the JSON.
  auto ok = LabJson(sb, "validate --json " + Src("labs/nested-nat.yaml"), 0);
  CHECK(ok == nlohmann::json::parse(R"({"diagnostics":[]})"));
  // A file that cannot be read has no position: null, not 0.
  auto gone = LabJson(sb, "validate --json " + sb.dir + "/no-such.yaml", 1);
  REQUIRE(gone["diagnostics"].size() == 1);
  CHECK(gone["diagnostics"][0]["line"].is_null());
  CHECK(gone["diagnostics"][0]["col"].is_null());
}

TEST_CASE("plan --json of a bad file prints the diagnostics as JSON on stdout and exits 1", "[cli]") {
  Sandbox sb;
  Run s = sb.LabApart("plan --json " + Src("tests/schema/golden/many-mistakes.yaml"));
  INFO(s.out << s.err);
  CHECK(s.code == 1);
  auto j = nlohmann::json::parse(s.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j.contains("diagnostics"));
  CHECK(j["diagnostics"].size() == 10);
  CHECK(j["diagnostics"][0]["severity"] == "error");
  // With --detailed-exitcode a bad file is still 1, not 2 ("changes").
  CHECK(sb.LabApart("plan --json --detailed-exitcode " + Src("tests/schema/golden/many-mistakes.yaml")).code == 1);
}

TEST_CASE("status --json gives addresses as objects, null parents for hosts, MACs, switches, links and drift",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up a lab");
  Sandbox sb;
  const std::string file = Src("labs/nested-nat.yaml");
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  auto j = LabJson(sb, "status nested-nat --json", 0);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& m : j["machines"]) by_name[m["name"].get<std::string>()] = m;
  REQUIRE(by_name.count("hv1"));
  REQUIRE(by_name.count("middle"));
  CHECK(by_name["hv1"]["parent"].is_null());
  CHECK(by_name["middle"]["parent"] == "hv1");
  CHECK(by_name["nested1"]["parent"] == "middle");
  CHECK(by_name["middle"]["addresses"].is_array());
  bool seen = false;
  for (const auto& a : by_name["middle"]["addresses"])
    if (a["interface"] == "Ethernet") {
      CHECK(a["address"] == "10.10.0.10");
      CHECK(a["prefix"] == 24);
      seen = true;
    }
  CHECK(seen);
  for (const auto& i : by_name["middle"]["interfaces"]) {
    INFO(i.dump());
    CHECK(i["link"] == "up");
    if (i["name"] == "Ethernet") {
      CHECK(i["switch"] == "External");
      CHECK(i["mac"].is_string());
    }
    if (i["name"] == "vEthernet (VmNAT)") CHECK(i["switch"] == "VmNAT");
  }
  CHECK(by_name["middle"]["drift"] == nlohmann::json::array());

  // Drift, as status --json shows it on the machine and its interface: nested1's adapter set
  // down behind lab's back.
  {
    auto ns = lab::hv::kernel::NetNs::Open(MachineRun(sb, "nested-nat", "nested1") + "/ns/net");
    REQUIRE(ns.ok());
    auto nl = lab::hv::kernel::Netlink::In(*ns);
    REQUIRE(nl.ok());
    REQUIRE(nl->SetUp("Ethernet", false).ok());
  }
  auto d = LabJson(sb, "status nested-nat --json", 1);
  INFO(d.dump(2));
  CHECK_FALSE(d["drift"].empty());
  for (const auto& m : d["machines"]) {
    if (m["name"] != "nested1") {
      CHECK(m["drift"].empty());
      continue;
    }
    REQUIRE(m["drift"].size() == 1);
    CHECK(m["drift"][0].get<std::string>().find("adapter/") == 0);
    REQUIRE(m["interfaces"].size() == 1);
    CHECK(m["interfaces"][0]["link"] == "down");
    CHECK(m["interfaces"][0]["differs"] == true);
  }
  TakeDownLeavingNothing(sb, "nested-nat", pids);
}

TEST_CASE("docs/json.md lists exactly the fields validate, plan, status and check emit", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up a lab");
  Sandbox sb;
  auto doc = DocumentedFields();
  const std::string file = Src("labs/nested-nat.yaml");

  std::set<std::string> validate;
  Paths(LabJson(sb, "validate --json " + Src("tests/schema/golden/many-mistakes.yaml"), 1), "", validate);
  Paths(LabJson(sb, "validate --json " + Src("tests/schema/golden/check-targets.yaml"), 0), "", validate);
  Agree(doc, "lab validate --json", validate);

  std::set<std::string> plan;
  Paths(LabJson(sb, "plan --json " + file, 0), "", plan);
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  Paths(LabJson(sb, "plan --json " + file, 0), "", plan);
  Agree(doc, "lab plan --json", plan);

  std::set<std::string> status;
  Paths(LabJson(sb, "status nested-nat --json", 0), "", status);
  Agree(doc, "lab status LAB --json", status);
  std::set<std::string> labs;
  Paths(LabJson(sb, "status --json", 0), "", labs);
  Agree(doc, "lab status --json", labs);

  std::set<std::string> check;
  Paths(LabJson(sb, "check nested-nat --json", 0), "", check);
  Agree(doc, "lab check --json", check);
  TakeDownLeavingNothing(sb, "nested-nat", pids);
}
