// docs/lab-file.md, the reference of the lab file, and the reader's key tables (schema/keys.h)
// name the same keys: a key in one and not the other fails here. Each key's section says its
// type, default, Hyper-V counterpart and realization in lab, with an example that is YAML.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "base/text.h"
#include "schema/keys.h"
#include "schema/yaml.h"
#include "tests/support.h"

namespace {

struct Section {
  std::string path;                 // "vms.NAME.memory.startup"
  int line = 0;                     // of its heading
  std::vector<std::string> lines;   // up to the next heading
};

/// The key sections of the reference: each starts at a line "### `PATH`".
std::vector<Section> KeySections() {
  auto text = lab::ReadFile(lab::testing::Src("docs/lab-file.md"));
  REQUIRE(text);
  std::vector<Section> out;
  int n = 0;
  for (const auto& line : lab::Split(*text, '\n')) {
    ++n;
    if (line.rfind("#", 0) == 0) {
      if (line.rfind("### `", 0) == 0 && line.size() > 6 && line.back() == '`') {
        out.push_back(Section{line.substr(5, line.size() - 6), n, {}});
        continue;
      }
      // Another heading ends the key's section.
      if (!out.empty() && line.rfind("### ", 0) != 0) out.push_back(Section{"", n, {}});
      continue;
    }
    if (!out.empty()) out.back().lines.push_back(line);
  }
  out.erase(std::remove_if(out.begin(), out.end(), [](const Section& s) { return s.path.empty(); }), out.end());
  return out;
}

}  // namespace

TEST_CASE("docs/lab-file.md documents every key the reader accepts, and no other", "[schema]") {
  std::set<std::string> documented, accepted;
  for (const auto& s : KeySections()) {
    INFO("docs/lab-file.md:" << s.line);
    CHECK(documented.insert(s.path).second);  // once each
  }
  for (const auto& p : lab::schema::keys::Paths()) accepted.insert(p);
  std::vector<std::string> undocumented, unknown;
  std::set_difference(accepted.begin(), accepted.end(), documented.begin(), documented.end(),
                      std::back_inserter(undocumented));
  std::set_difference(documented.begin(), documented.end(), accepted.begin(), accepted.end(),
                      std::back_inserter(unknown));
  INFO("accepted by the reader, missing from docs/lab-file.md: " << lab::Join(undocumented, ", "));
  INFO("in docs/lab-file.md, not accepted by the reader: " << lab::Join(unknown, ", "));
  CHECK(undocumented.empty());
  CHECK(unknown.empty());
  CHECK(accepted.size() > 70);
}

TEST_CASE("Each key of docs/lab-file.md gives its type, default, Hyper-V and lab meaning, and a YAML example",
          "[schema]") {
  for (const auto& s : KeySections()) {
    INFO("docs/lab-file.md:" << s.line << " " << s.path);
    std::set<std::string> fields;
    std::string example;
    bool in_example = false, has_example = false;
    for (const auto& line : s.lines) {
      if (line == "```yaml") {
        in_example = has_example = true;
        continue;
      }
      if (in_example && line == "```") {
        in_example = false;
        continue;
      }
      if (in_example) {
        example += line + "\n";
        continue;
      }
      for (const char* f : {"- Type: ", "- Default: ", "- Hyper-V: ", "- lab: "})
        if (line.rfind(f, 0) == 0 && line.size() > std::string(f).size()) fields.insert(f);
    }
    CHECK(fields.size() == 4);
    CHECK(has_example);
    auto parsed = lab::schema::yaml::Load(example, 64);
    INFO(example);
    CHECK_FALSE(parsed.error.has_value());
  }
}
