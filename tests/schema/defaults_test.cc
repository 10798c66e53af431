// defaults: (per-VM settings every VM has unless it writes its own) and YAML merge keys
// (<<: *anchor, <<: [*a, *b]): what they give, and errors pointing at the place written.
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

// One host, a middle VM with one nested VM; `defaults` and `vm` are spliced in.
std::string Lab(const std::string& defaults, const std::string& compatibility = "") {
  return "lab: unit\n" + compatibility + defaults +
         "networks:\n"
         "  lan: {subnet: 10.1.0.0/24}\n"
         "hosts:\n"
         "  hv1:\n"
         "    nics: {Ethernet: {network: lan, ip: 10.1.0.11/24}}\n"
         "    switches: {External: {type: external, nics: [Ethernet]}}\n"
         "    vms:\n"
         "      middle:\n"
         "        processor: {expose_virtualization_extensions: true}\n"
         "        memory: {startup: 4GiB, dynamic: false}\n"
         "        adapters: [{switch: External, ip: 10.1.0.20/24}]\n"
         "        switches: {Inner: {type: private}}\n"
         "        vms:\n"
         "          nested:\n"
         "            adapters: [{switch: Inner}]\n"
         "      plain:\n"
         "        adapters: [{switch: External, ip: 10.1.0.21/24}]\n";
}

}  // namespace

TEST_CASE("defaults give every VM, at every depth, the settings it does not write, key by key", "[schema]") {
  auto r = Parse(Lab("defaults:\n"
                     "  version: \"8.0\"\n"
                     "  generation: 1\n"
                     "  processor: {count: 2}\n"
                     "  memory: {startup: 512MiB, dynamic: true, minimum: 256MiB, maximum: 1GiB}\n"),
                 "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  const auto& lab = *r.lab;
  for (const char* name : {"nested", "plain"}) {
    INFO(name);
    const auto* vm = lab.FindMachine(name);
    REQUIRE(vm);
    CHECK(vm->version == "8.0");
    CHECK(vm->version_given);
    CHECK(vm->generation == 1);
    CHECK(vm->processor.count == 2);
    CHECK(vm->memory.startup == 512ull << 20);
    CHECK(vm->memory.dynamic);
    CHECK(vm->memory.minimum == 256ull << 20);
    CHECK(vm->memory.maximum == 1ull << 30);
  }
  // middle writes its own processor exposure and memory: the rest is the defaults'; static
  // memory takes no minimum or maximum from them.
  const auto* middle = lab.FindMachine("middle");
  REQUIRE(middle);
  CHECK(middle->processor.count == 2);
  CHECK(middle->processor.expose_virtualization_extensions);
  CHECK(middle->memory.startup == 4ull << 30);
  CHECK_FALSE(middle->memory.dynamic);
  CHECK(middle->memory.minimum == 0);
  CHECK(middle->memory.maximum == 0);
  CHECK(middle->version == "8.0");
  // Hosts are physical machines: no VM settings.
  const auto* host = lab.FindMachine("hv1");
  REQUIRE(host);
  CHECK(host->memory.startup == 0);
  CHECK(host->processor.count == 1);
}

TEST_CASE("A configuration version in defaults is one the file gives (ws2022 does not replace it)", "[schema]") {
  auto given = Parse(Lab("defaults: {version: \"9.0\"}\n", "compatibility: ws2022\n"), "unit.yaml");
  INFO(Messages(given));
  REQUIRE(given.ok());
  CHECK(given.lab->FindMachine("plain")->version == "9.0");
  auto none = Parse(Lab("", "compatibility: ws2022\n"), "unit.yaml");
  REQUIRE(none.ok());
  CHECK(none.lab->FindMachine("plain")->version == "10.0");
}

TEST_CASE("A rule a default breaks points at the default as written", "[schema]") {
  // Dynamic memory from defaults, on the middle VM that nests: the error is at defaults' line
  // 4 ("dynamic: true"), not at the VM.
  std::string text = "lab: unit\n"
                     "defaults:\n"
                     "  memory:\n"
                     "    dynamic: true\n"
                     "networks:\n"
                     "  lan: {subnet: 10.1.0.0/24}\n"
                     "hosts:\n"
                     "  hv1:\n"
                     "    vms:\n"
                     "      middle:\n"
                     "        processor: {expose_virtualization_extensions: true}\n"
                     "        switches: {Inner: {type: private}}\n"
                     "        vms: {nested: {}}\n";
  auto r = Parse(text, "unit.yaml");
  INFO(Messages(r));
  REQUIRE_FALSE(r.ok());
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].loc.line == 4);
  CHECK(r.diagnostics[0].loc.col == 14);
  CHECK(r.diagnostics[0].message.find("VM 'middle'") != std::string::npos);
  CHECK(r.diagnostics[0].message.find("set memory.dynamic: false") != std::string::npos);
}

TEST_CASE("minimum <= startup <= maximum is checked on a VM's memory merged over the defaults", "[schema]") {
  // A maximum above every startup it meets: fine (middle's static memory drops it).
  auto r = Parse(Lab("defaults:\n  memory: {dynamic: true, maximum: 2GiB}\n"), "unit.yaml");
  INFO(Messages(r));
  CHECK(r.ok());
  // Below the startup of the defaults: each VM that takes both is refused, at the maximum.
  auto bad = Parse(Lab("defaults:\n  memory: {startup: 4GiB, dynamic: true, maximum: 2GiB}\n"), "unit.yaml");
  INFO(Messages(bad));
  REQUIRE_FALSE(bad.ok());
  bool at_default = false;
  for (const auto& d : bad.diagnostics)
    if (d.message.find("VM 'plain': memory.maximum 2GiB is below memory.startup 4GiB") != std::string::npos)
      at_default = d.loc.line == 3;
  CHECK(at_default);
}

TEST_CASE("Unknown keys in defaults are refused with a hint, and only VM settings are defaults", "[schema]") {
  auto r = Parse(Lab("defaults:\n  memroy: {startup: 1GiB}\n  adapters: []\n"), "unit.yaml");
  std::string m = Messages(r);
  INFO(m);
  REQUIRE_FALSE(r.ok());
  CHECK(m.find("unit.yaml:3:3: error: defaults: unknown key 'memroy'; did you mean 'memory'?") != std::string::npos);
  CHECK(m.find("unit.yaml:4:3: error: defaults: unknown key 'adapters'") != std::string::npos);
}

TEST_CASE("A merge key takes an anchored map's keys; the map's own keys win", "[schema]") {
  auto r = Parse("lab: unit\n"
                 "x-small: &small {memory: {startup: 256MiB}, processor: {count: 2}}\n"
                 "x-gen1: &gen1 {generation: 1, processor: {count: 4}}\n"
                 "networks: {lan: {subnet: 10.1.0.0/24}}\n"
                 "hosts:\n"
                 "  hv1:\n"
                 "    vms:\n"
                 "      a: {<<: *small}\n"
                 "      b:\n"
                 "        <<: [*small, *gen1]\n"
                 "        memory: {startup: 1GiB}\n",
                 "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  const auto* a = r.lab->FindMachine("a");
  const auto* b = r.lab->FindMachine("b");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->memory.startup == 256ull << 20);
  CHECK(a->processor.count == 2);
  CHECK(b->memory.startup == 1ull << 30);  // its own
  CHECK(b->processor.count == 2);          // the first map listed wins
  CHECK(b->generation == 1);               // from the second
}

TEST_CASE("Errors in merged values point where they are written, and a bad merge is one error among all",
          "[schema]") {
  auto r = Parse("lab: unit\n"
                 "x-vm: &vm\n"
                 "  memory: {startup: lots}\n"
                 "x-name: &name text\n"
                 "networks: {lan: {subnet: 10.1.0.0/24}}\n"
                 "hosts:\n"
                 "  hv1:\n"
                 "    vms:\n"
                 "      a: {<<: *vm}\n"
                 "      b:\n"
                 "        <<: *name\n"
                 "        generation: 7\n",
                 "unit.yaml");
  std::string m = Messages(r);
  INFO(m);
  REQUIRE_FALSE(r.ok());
  // The bad size is in the anchored map (line 3), where a's value comes from.
  CHECK(m.find("unit.yaml:3:21: error: VM 'a' memory.startup") != std::string::npos);
  // Merging a string: an error at the '<<', and b is still read (its generation is checked).
  CHECK(m.find("unit.yaml:11:9: error: the merge key '<<' takes a map") != std::string::npos);
  CHECK(m.find("unit.yaml:12:21: error: VM 'b' generation: 7 is out of range") != std::string::npos);
}

TEST_CASE("Top-level x- keys are ignored: the place for anchors", "[schema]") {
  auto r = Parse(Lab("x-anything: {whatever: [1, 2]}\nx-: 3\n"), "unit.yaml");
  INFO(Messages(r));
  CHECK(r.ok());
  auto bad = Parse(Lab("y-anything: 1\n"), "unit.yaml");
  CHECK_FALSE(bad.ok());
}

TEST_CASE("An image in defaults is every VM's unless it names its own; hosts keep the lab's", "[schema]") {
  std::string text = Lab("images:\n"
                         "  tools: {rootfs: tools.tar}\n"
                         "  web: {rootfs: web.tar}\n"
                         "defaults:\n"
                         "  image: tools\n");
  // `plain` names its own image.
  text.replace(text.find("      plain:\n"), std::string("      plain:\n").size(), "      plain:\n        image: web\n");
  auto r = Parse(text, "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.lab);
  CHECK(r.lab->FindMachine("middle")->image == "tools");
  CHECK(r.lab->FindMachine("nested")->image == "tools");
  CHECK(r.lab->FindMachine("plain")->image == "web");
  CHECK(r.lab->FindMachine("hv1")->image == "host");

  // An unknown image in defaults is reported where defaults names it.
  auto bad = Parse(Lab("defaults:\n  image: nope\n"), "unit.yaml");
  REQUIRE_FALSE(bad.lab);
  CHECK(Messages(bad).find("unit.yaml:3:10:") != std::string::npos);
}
