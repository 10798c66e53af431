// Golden diagnostics: each tests/schema/golden/NAME.yaml is a broken (or doubtful) lab file and
// NAME.err holds exactly the lines `lab` must print for it (Diagnostic::ToString, the file shown
// as NAME.yaml), in file order. Every error and warning of a file is expected, not only the first.
//
// After a deliberate change of messages, run with LAB_UPDATE_GOLDEN=1 to rewrite the .err files
// from the current output, then read the diff line by line before committing it:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_schema "[golden]"
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "base/text.h"
#include "schema/lab.h"
#include "tests/support.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> GoldenInputs() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(lab::testing::Src("tests/schema/golden")))
    if (e.path().extension() == ".yaml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string Render(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

}  // namespace

TEST_CASE("Every golden lab file gives exactly the diagnostics in its .err file", "[schema][golden]") {
  const char* update = std::getenv("LAB_UPDATE_GOLDEN");
  bool rewrite = update != nullptr && std::string(update) == "1";
  auto inputs = GoldenInputs();
  REQUIRE(inputs.size() >= 8);
  for (const auto& yaml : inputs) {
    auto text = lab::ReadFile(yaml.string());
    REQUIRE(text);
    auto result = lab::schema::Parse(*text, yaml.filename().string());
    std::string got = Render(result);
    fs::path err = yaml;
    err.replace_extension(".err");
    if (rewrite) {
      REQUIRE(lab::WriteFileAtomic(err.string(), got));
      continue;
    }
    auto want = lab::ReadFile(err.string());
    INFO("golden file " << yaml.filename().string());
    REQUIRE(want);
    CHECK(got == *want);
    for (const auto& d : result.diagnostics) {
      CHECK(d.loc.line >= 1);  // every diagnostic of a text has a position: never FILE:0:0
      CHECK(d.loc.col >= 1);
    }
    // A file with errors is refused; one with warnings only is a lab (and its .err says why).
    bool errors = want->find(": error: ") != std::string::npos;
    CHECK(result.ok() == !errors);
    CHECK(result.lab.has_value() == !errors);
  }
}

TEST_CASE("A file with many mistakes reports every one of them in one run", "[schema][golden]") {
  auto text = lab::ReadFile(lab::testing::Src("tests/schema/golden/many-mistakes.yaml"));
  REQUIRE(text);
  auto result = lab::schema::Parse(*text, "many-mistakes.yaml");
  CHECK(result.diagnostics.size() >= 5);
  for (size_t i = 1; i < result.diagnostics.size(); ++i) {
    const auto& a = result.diagnostics[i - 1].loc;
    const auto& b = result.diagnostics[i].loc;
    CHECK((a.line < b.line || (a.line == b.line && a.col <= b.col)));
  }
}
