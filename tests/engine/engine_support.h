// Helpers shared by the engine tests: lab files, recorded state as if applied, state dirs.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/text.h"
#include "engine/engine.h"
#include "engine/executor.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "schema/lab.h"
#include "state/store.h"
#include "tests/engine/fake_hypervisor.h"
#include "tests/support.h"

namespace lab::testing {

inline constexpr const char* kUid = "0123456789ab";

/// The text of a lab file of the source tree, e.g. LabText("nested-nat").
inline std::string LabText(const std::string& name) {
  auto text = ReadFile(Src("labs/" + name + ".yaml"));
  REQUIRE(text);
  return *text;
}

/// Parses lab text that must be valid.
inline schema::Lab ParseLab(const std::string& text, const std::string& file = "lab.yaml") {
  auto r = schema::Parse(text, file);
  std::string diags;
  for (const auto& d : r.diagnostics) diags += d.ToString() + "\n";
  INFO(diags);
  REQUIRE(r.ok());
  return *r.lab;
}

inline schema::Lab LoadLab(const std::string& name) { return ParseLab(LabText(name), "labs/" + name + ".yaml"); }

/// `text` with its only occurrence of `from` replaced by `to`.
inline std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  INFO("replacing `" << from << "`");
  REQUIRE(at != std::string::npos);
  REQUIRE(text.find(from, at + 1) == std::string::npos);
  return text.replace(at, from.size(), to);
}

/// The record of a resource as the executor writes it after making it.
inline state::ResourceRecord RecordOf(const engine::Resource& r, const std::string& facts = "{}") {
  return state::ResourceRecord{engine::ToString(r.kind), r.key, r.deps.empty() ? "" : r.deps.front(),
                               r.Hash(),                 r.ToRecordJson(), facts, 0};
}

/// State as if every resource of `resources` had been made.
inline state::Snapshot Recorded(const std::vector<engine::Resource>& resources, const std::string& lab = "lab") {
  state::Snapshot s;
  s.lab = state::LabRecord{lab, kUid, "/labs/" + lab + ".yaml", 1, 1};
  for (const auto& r : resources) s.resources[r.key] = RecordOf(r);
  return s;
}

/// Compares `got` with tests/engine/golden/NAME; with LAB_UPDATE_GOLDEN=1 in the environment,
/// writes it there instead (read the diff before committing).
inline void CompareWithGolden(const std::string& got, const std::string& name) {
  std::string path = Src("tests/engine/golden/" + name);
  const char* update = std::getenv("LAB_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    REQUIRE(WriteFileAtomic(path, got));
    return;
  }
  auto want = ReadFile(path);
  INFO("golden file " << path);
  REQUIRE(want);
  CHECK(got == *want);
}

/// The lines FakeHypervisor records for updating what `a` updates in place.
inline std::vector<std::string> UpdateLines(const engine::Action& a) {
  FakeHypervisor f;
  auto facts = engine::UpdateResource(f, a.resource, a.old, a.old_facts);
  INFO(facts.message());
  REQUIRE(facts.ok());
  return f.Calls();
}

/// The line FakeHypervisor records for making (or removing) `r`.
inline std::string CreateLine(const engine::Resource& r) {
  FakeHypervisor f;
  (void)engine::ApplyResource(f, r);
  return f.Calls().at(0);
}
inline std::string RemoveLine(const engine::Resource& r) {
  FakeHypervisor f;
  (void)engine::RemoveResource(f, r, "{}");
  return f.Calls().at(0);
}

/// Position of `line` in `calls`, or -1.
inline long IndexOf(const std::vector<std::string>& calls, const std::string& line) {
  auto it = std::find(calls.begin(), calls.end(), line);
  return it == calls.end() ? -1 : static_cast<long>(it - calls.begin());
}

/// The actions of a plan by key.
inline std::map<std::string, const engine::Action*> ByKey(const engine::Plan& plan) {
  std::map<std::string, const engine::Action*> out;
  for (const auto& a : plan.actions) out[a.resource.key] = &a;
  return out;
}

/// A state dir removed at the end of the test.
struct StateDir {
  std::string path = TempDir("lab-engine");
  StateDir() = default;
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;
  ~StateDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline std::unique_ptr<state::Store> OpenStore(const std::string& dir) {
  auto store = state::Store::Open(dir);
  INFO(store.message());
  REQUIRE(store);
  return std::move(store).value();
}

/// An engine whose hypervisor is `hv`, with its state and run directories in `dir`.
inline std::unique_ptr<engine::Engine> OpenEngine(const StateDir& dir, FakeHypervisor& hv) {
  engine::EngineOptions o;
  o.state_dir = dir.path;
  o.run_dir = dir.path + "/run";
  o.hypervisor = hv.Factory();
  auto e = engine::Engine::Open(o);
  INFO(e.message());
  REQUIRE(e);
  return std::move(e).value();
}

}  // namespace lab::testing
