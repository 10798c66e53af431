// Shell completion and the man page as a user meets them: generated from the same command tree
// as --help, completing verbs, flags, lab names and machine names.
#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "base/text.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

std::string Escaped(std::string s) {  // roff writes '-' as '\-'
  for (size_t at = 0; (at = s.find('-', at)) != std::string::npos; at += 2) s.insert(at, "\\");
  return s;
}

std::set<std::string> Words(const std::string& text) {
  std::set<std::string> w;
  std::istringstream in(text);
  for (std::string s; std::getline(in, s);)
    if (!s.empty()) w.insert(s);
  return w;
}

/// The verbs `lab --help` lists (its "Subcommands:" section).
std::set<std::string> HelpVerbs(const Sandbox& sb) {
  Run help = sb.Lab("--help");
  std::set<std::string> verbs;
  auto at = help.out.find("Subcommands:");
  REQUIRE(at != std::string::npos);
  std::istringstream in(help.out.substr(at));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, std::regex("^  ([a-z_]+) "))) verbs.insert(m[1]);
  }
  return verbs;
}

}  // namespace

TEST_CASE("The man page documents every command and flag that --help lists", "[cli]") {
  Sandbox sb;
  std::ifstream in(std::string(LAB_BINARY_DIR) + "/lab.1");
  REQUIRE(in.good());
  std::string man((std::istreambuf_iterator<char>(in)), {});
  auto verbs = HelpVerbs(sb);
  REQUIRE(verbs.count("up") == 1);
  REQUIRE(verbs.count("completion") == 1);
  for (const std::string& v : verbs) {
    INFO(v);
    CHECK(man.find(".SS " + Escaped(v) + "\n") != std::string::npos);
    // Every long flag of the verb's own --help is in the man page.
    Run help = sb.Lab(v + " --help");
    std::smatch m;
    std::string rest = help.out;
    while (std::regex_search(rest, m, std::regex("--([a-z][a-z-]+)"))) {
      INFO(m[1]);
      CHECK(man.find("\\-\\-" + Escaped(m[1])) != std::string::npos);
      rest = m.suffix();
    }
  }
  CHECK(man.find(".SH EXIT STATUS") != std::string::npos);
  CHECK(man.find("LAB_STATE_DIR") != std::string::npos);
}

TEST_CASE("lab __complete offers verbs, flags, files and STATE values without any lab", "[cli]") {
  Sandbox sb;
  CHECK(Words(sb.Lab("__complete -- ''").out) == HelpVerbs(sb));
  auto flags = Words(sb.Lab("__complete -- check --").out);
  CHECK(flags.count("--json") == 1);       // check's own
  CHECK(flags.count("--state-dir") == 1);  // a global one
  CHECK(flags.count("--version") == 0);    // only before a verb
  CHECK(Words(sb.Lab("__complete -- up ''").out) == std::set<std::string>{"__files__"});
  CHECK(Words(sb.Lab("__complete -- link LAB hv1 NIC1 ''").out) == std::set<std::string>{"down", "up"});
  // An option's value is not taken for the verb: --state-dir DIR, then the verbs.
  CHECK(Words(sb.Lab("__complete -- --state-dir /nowhere ''").out) == HelpVerbs(sb));
}

TEST_CASE("Completion of lab exec offers the labs that are up, then their machines, through bash", "[root][cli]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  auto labs = Words(sb.Lab("__complete -- exec ''").out);
  CHECK(labs.count("nested-nat") == 1);
  CHECK(labs.count("__files__") == 1);  // a lab file is a LAB too
  CHECK(Words(sb.Lab("__complete -- exec nested-nat ''").out) ==
        std::set<std::string>{"hv1", "middle", "nested1", "nested2"});
  // After the machine, the command's words: lab offers nothing of its own.
  CHECK(Words(sb.Lab("__complete -- exec nested-nat middle ''").out).empty());

  // The bash script as bash runs it: COMP_WORDS up to the cursor, COMPREPLY filtered by prefix.
  std::string script = sb.dir + "/lab.bash";
  REQUIRE(sb.Lab("completion bash > " + script).code == 0);
  std::string cmd = "LAB_STATE_DIR=" + sb.state + " LAB_RUN_DIR=" + sb.run + " PATH=" + LAB_BINARY_DIR +
                    ":$PATH bash -c '. " + script +
                    "; COMP_WORDS=(lab exec nested-nat ne); COMP_CWORD=3; _lab; printf \"%s\\n\" \"${COMPREPLY[@]}\"'";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (size_t n; (n = ::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  r.code = ::pclose(p);
  INFO(r.out);
  CHECK(Words(r.out) == std::set<std::string>{"nested1", "nested2"});
  TakeDownLeavingNothing(sb, "nested-nat", pids);
}
