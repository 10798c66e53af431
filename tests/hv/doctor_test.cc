// lab doctor's probes against this machine, and the rule that decides its exit code.
#include "hv/kernel/doctor.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "hv/kernel/netlink.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

const Capability* Find(const std::vector<Capability>& caps, const std::string& name) {
  for (const auto& c : caps)
    if (c.name == name) return &c;
  return nullptr;
}

std::vector<std::string> LinkNames() {
  auto ns = NetNs::Current();
  REQUIRE(ns.ok());
  auto nl = Netlink::In(*ns);
  REQUIRE(nl.ok());
  auto links = nl->Links();
  REQUIRE(links.ok());
  std::vector<std::string> names;
  for (const auto& l : *links) {
    names.push_back(l.name);
    for (const auto& a : l.altnames) names.push_back(a);
  }
  return names;
}

std::vector<std::string> Tables() {
  auto ns = NetNs::Current();
  REQUIRE(ns.ok());
  auto tables = NftListTables(*ns);
  REQUIRE(tables.ok());
  return *tables;
}

std::vector<std::string> DoctorTempDirs() {
  std::vector<std::string> dirs;
  if (DIR* d = ::opendir("/tmp")) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind("lab-doctor-", 0) == 0) dirs.push_back(e->d_name);
    ::closedir(d);
  }
  return dirs;
}

std::string MountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Capability Cap(const std::string& state, bool required) { return {"x", state, "", "", required}; }

uint64_t Read64(const std::vector<uint8_t>& mem, uint64_t at) {
  REQUIRE(at + 8 <= mem.size());
  uint64_t v = 0;
  std::memcpy(&v, mem.data() + at, sizeof v);
  return v;
}

KvmRun Halted() { return {KvmRun::End::kHalted, ""}; }
KvmRun Hung() { return {KvmRun::End::kTimedOut, ""}; }
KvmRun Failed(std::string why) { return {KvmRun::End::kFailed, std::move(why)}; }

KvmProbe Present(KvmRun real, KvmRun long_mode, KvmRun boot) {
  KvmProbe p;
  p.present = true;
  p.timeout_ms = 2000;
  p.real_mode = std::move(real);
  p.long_mode = std::move(long_mode);
  p.boot = std::move(boot);
  return p;
}

}  // namespace

TEST_CASE("The long-mode guest maps its first 2 MiB through four page-table levels and turns paging on", "[hv]") {
  GuestImage g = LongModeGuest();
  REQUIRE(g.long_mode);
  REQUIRE(g.memory.size() == 2u << 20);
  // CR0.PE and CR0.PG, CR4.PAE, EFER.LME and EFER.LMA.
  CHECK((g.cr0 & 1) == 1);
  CHECK((g.cr0 >> 31 & 1) == 1);
  CHECK((g.cr4 >> 5 & 1) == 1);
  CHECK((g.efer >> 8 & 1) == 1);
  CHECK((g.efer >> 10 & 1) == 1);
  // CR3 -> PML4[0] -> PDPT[0] -> PD[0]: a present, writable 2 MiB page at physical 0.
  uint64_t pml4e = Read64(g.memory, g.cr3);
  REQUIRE((pml4e & 3) == 3);
  uint64_t pdpte = Read64(g.memory, pml4e & ~0xfffull);
  REQUIRE((pdpte & 3) == 3);
  CHECK((pdpte & 0x80) == 0);  // points at a page directory, not a 1 GiB page
  uint64_t pde = Read64(g.memory, pdpte & ~0xfffull);
  CHECK((pde & 0x83) == 0x83);
  CHECK((pde & ~0x1fffffull) == 0);
  // The tables, the GDT, the code and the marker all lie inside that page and do not overlap.
  for (uint64_t at : std::initializer_list<uint64_t>{g.cr3, pml4e & ~0xfffull, pdpte & ~0xfffull, g.gdt_base, g.rip, g.marker_address})
    CHECK(at < (2u << 20));
  // The GDT's code selector is a 64-bit code segment (L=1, D=0, present, execute); data is writable.
  uint64_t code = Read64(g.memory, g.gdt_base + g.code_selector);
  CHECK((code >> 53 & 1) == 1);
  CHECK((code >> 54 & 1) == 0);
  CHECK((code >> 47 & 1) == 1);
  CHECK((code >> 43 & 1) == 1);
  uint64_t data = Read64(g.memory, g.gdt_base + g.data_selector);
  CHECK((data >> 43 & 1) == 0);
  CHECK((data >> 41 & 1) == 1);
  CHECK(g.gdt_limit == 4 * 8 - 1);
  // The code stores the marker with 64-bit-only instructions (REX.W movabs) and ends in HLT.
  CHECK(g.memory[g.rip] == 0x48);
  CHECK(g.memory[g.rip + 1] == 0xb8);
  CHECK(std::equal(g.marker.begin(), g.marker.end(), g.memory.begin() + g.rip + 2));
  CHECK(Read64(g.memory, g.rip + 12) == g.marker_address);
  CHECK(g.memory[g.rip + 20] == 0xf4);
  CHECK(g.marker.size() == 8);
  CHECK(g.memory[g.marker_address] == 0);  // the guest, not the image, puts the marker there
}

TEST_CASE("The real-mode guest is raw 16-bit code that stores one byte and halts", "[hv]") {
  GuestImage g = RealModeGuest();
  CHECK_FALSE(g.long_mode);
  CHECK(g.cr0 == 0);
  CHECK(g.efer == 0);
  REQUIRE(g.marker.size() == 1);
  CHECK(g.memory[g.rip] == 0xc6);  // mov byte [disp16], imm8
  CHECK(g.memory[g.rip + 2] == (g.marker_address & 0xff));
  CHECK(g.memory[g.rip + 3] == (g.marker_address >> 8));
  CHECK(g.memory[g.rip + 4] == g.marker[0]);
  CHECK(g.memory[g.rip + 5] == 0xf4);
}

TEST_CASE("/dev/kvm is usable only when a guest started in long mode and a guest booting into it both halt", "[hv]") {
  Capability c = JudgeKvm(Present(Halted(), Halted(), Halted()));
  CHECK(c.name == "/dev/kvm");
  CHECK(c.state == kCapUsable);
  CHECK(c.detail.find("long mode") != std::string::npos);
  CHECK(c.fix.empty());
  CHECK_FALSE(c.required);
  CHECK(JudgeKvm(Present(Halted(), Halted(), Hung())).state == kCapUnusable);
  CHECK(JudgeKvm(Present(Halted(), Hung(), Halted())).state == kCapUnusable);
}

TEST_CASE("/dev/kvm that runs real-mode code but hangs in long mode is unusable, and QEMU uses TCG", "[hv]") {
  Capability c = JudgeKvm(Present(Halted(), Hung(), Hung()));
  INFO(c.detail);
  CHECK(c.state == kCapUnusable);
  CHECK(c.detail.find("only raw real-mode code ran") != std::string::npos);
  CHECK(c.detail.find("a guest started in long mode never reached HLT within 2 s") != std::string::npos);
  CHECK(c.detail.find("TCG") != std::string::npos);
  CHECK_FALSE(c.fix.empty());
  CHECK_FALSE(c.required);
}

TEST_CASE("/dev/kvm whose guests cannot switch into long mode themselves is unusable, saying which step failed",
          "[hv]") {
  KvmProbe p = Present(Halted(), Halted(), Failed("KVM_RUN: the guest shut down (triple fault, KVM_EXIT_SHUTDOWN)"));
  p.cpuid_errno = EINVAL;
  Capability c = JudgeKvm(p);
  INFO(c.detail);
  CHECK(c.state == kCapUnusable);
  CHECK(c.detail.find("only raw real-mode code and a guest started in long mode ran") != std::string::npos);
  CHECK(c.detail.find("as a standard guest boots, failed: KVM_RUN: the guest shut down (triple fault") !=
        std::string::npos);
  CHECK(c.detail.find("KVM_GET_SUPPORTED_CPUID is refused") != std::string::npos);
  Capability none = JudgeKvm(Present(Failed("KVM_CREATE_VM: Cannot allocate memory"),
                                     Failed("KVM_CREATE_VM: Cannot allocate memory"),
                                     Failed("KVM_CREATE_VM: Cannot allocate memory")));
  CHECK(none.state == kCapUnusable);
  CHECK(none.detail.find(" ran") == std::string::npos);
  CHECK(none.detail.find("KVM_CREATE_VM: Cannot allocate memory") != std::string::npos);
}

TEST_CASE("The booting guest switches itself from real mode to protected and long mode, then runs 64-bit code",
          "[hv]") {
  GuestImage boot = BootingGuest();
  GuestImage lm = LongModeGuest();
  CHECK_FALSE(boot.long_mode);  // it starts as a reset processor does, in real mode
  CHECK(boot.cr0 == 0);
  CHECK(boot.efer == 0);
  REQUIRE(boot.memory.size() == lm.memory.size());
  // The same GDT and page tables as the long-mode guest, plus a 32-bit code segment at 0x18
  // (D=1, L=0) for the protected-mode step, and a GDTR image for LGDT.
  CHECK(Read64(boot.memory, lm.gdt_base + 0x08) == Read64(lm.memory, lm.gdt_base + 0x08));
  uint64_t code32 = Read64(boot.memory, boot.gdt_base + 0x18);
  CHECK((code32 >> 54 & 1) == 1);
  CHECK((code32 >> 53 & 1) == 0);
  CHECK(Read64(boot.memory, lm.cr3) == Read64(lm.memory, lm.cr3));
  const uint8_t* code = boot.memory.data() + boot.rip;
  CHECK(code[0] == 0xfa);                                     // cli
  CHECK((code[1] == 0x0f && code[2] == 0x01 && code[3] == 0x16));  // lgdt [disp16]
  uint16_t gdtr = code[4] | code[5] << 8;
  CHECK((boot.memory[gdtr] | boot.memory[gdtr + 1] << 8) == boot.gdt_limit);
  CHECK(Read64(boot.memory, gdtr + 2) % (1ull << 32) == boot.gdt_base);
  // Somewhere after: WRMSR (EFER.LME) and a far jump to the 64-bit code selector.
  std::vector<uint8_t> all(boot.memory.begin() + boot.rip, boot.memory.begin() + boot.rip + 0x100);
  const std::vector<uint8_t> wrmsr = {0x0f, 0x30}, efer = {0xb9, 0x80, 0x00, 0x00, 0xc0};
  CHECK(std::search(all.begin(), all.end(), efer.begin(), efer.end()) != all.end());
  CHECK(std::search(all.begin(), all.end(), wrmsr.begin(), wrmsr.end()) != all.end());
  // The long-mode code it jumps to stores the same marker.
  CHECK(boot.marker == lm.marker);
  CHECK(std::search(all.begin(), all.end(), lm.marker.begin(), lm.marker.end()) != all.end());
}

TEST_CASE("/dev/kvm absent is missing; present but not openable is unusable with the reason", "[hv]") {
  Capability absent = JudgeKvm(KvmProbe{});
  CHECK(absent.state == kCapMissing);
  CHECK(absent.detail.find("TCG") != std::string::npos);
  CHECK_FALSE(absent.fix.empty());
  KvmProbe locked;
  locked.present = true;
  locked.open_errno = EACCES;
  Capability c = JudgeKvm(locked);
  CHECK(c.state == kCapUnusable);
  CHECK(c.detail.find("cannot be opened") != std::string::npos);
  CHECK(c.fix == "run as root, or join group kvm");
}

TEST_CASE("The processor's vendor is read from vendor_id", "[hv]") {
  CHECK(CpuVendor("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t: vmx\n") == "intel");
  CHECK(CpuVendor("processor\t: 0\nvendor_id\t: AuthenticAMD\n") == "amd");
  CHECK(CpuVendor("processor\t: 0\nvendor_id\t: HygonGenuine\n") == "amd");
  CHECK(CpuVendor("processor\t: 0\nvendor_id\t: CentaurHauls\n") == "");
  CHECK(CpuVendor("") == "");
}

namespace {
}  // namespace

TEST_CASE("A missing required capability fails the doctor; a missing optional one does not", "[hv]") {
  CHECK(AllRequiredPresent({}));
  CHECK(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapOk, false)}));
  CHECK_FALSE(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapMissing, true)}));
  CHECK(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapMissing, false)}));
  CHECK(AllRequiredPresent({Cap(kCapNotApplicable, false), Cap(kCapMissing, false)}));
}

TEST_CASE("As root here, everything partitions need is present and /dev/kvm is optional, judged by a guest run", "[root][hv]") {
  LAB_REQUIRE_ROOT("lab doctor's probes");
  auto caps = Diagnose(LAB_BINARY_DIR "/lab-init");
  for (const auto& c : caps) INFO(c.name << ": " << c.state << " " << c.detail << " fix: " << c.fix);
  std::string table;
  for (const auto& c : caps) table += c.name + ": " + c.state + " | " + c.detail + " | " + c.fix + "\n";
  INFO(table);

  for (const char* name : {"root", "network namespace", "mount namespace", "pid namespace", "uts namespace",
                           "ipc namespace", "cgroups", "cgroup memory", "cgroup cpu", "veth + bridge",
                           "nftables nat", "overlayfs", "dnsmasq", "lab-init"}) {
    const Capability* c = Find(caps, name);
    INFO(name);
    REQUIRE(c != nullptr);
    CHECK(c->required);
    CHECK(c->state == kCapOk);
  }
  CHECK(AllRequiredPresent(caps));
  for (const auto& c : caps) {
    if (c.name == "/dev/kvm")
      CHECK((c.state == kCapUsable || c.state == kCapUnusable || c.state == kCapMissing));
    else
      CHECK((c.state == kCapOk || c.state == kCapMissing || c.state == kCapNotApplicable));
    CHECK(c.fix.empty() == (c.state != kCapMissing && c.state != kCapUnusable));
  }

  const Capability* kvm = Find(caps, "/dev/kvm");
  REQUIRE(kvm != nullptr);
  CHECK_FALSE(kvm->required);
  INFO("/dev/kvm: " << kvm->state << ": " << kvm->detail);
  if (auto expected = lab::testing::KvmStateByQemu()) {
    CHECK(kvm->state == *expected);
  } else {
    WARN("no qemu-system-x86_64 and guest kernel here to boot a standard guest with: /dev/kvm judged only as present");
    CHECK(kvm->state != kCapMissing);
  }
  if (kvm->state == kCapUnusable) CHECK(kvm->detail.find("TCG") != std::string::npos);
  REQUIRE(Find(caps, "processor") != nullptr);
  CHECK_FALSE(Find(caps, "processor")->required);
  REQUIRE(Find(caps, "kvm nested") != nullptr);
  for (const char* module : {"kvm_intel", "kvm_amd"})
    if (::access((std::string("/sys/module/") + module + "/parameters/nested").c_str(), F_OK) == 0)
      CHECK(Find(caps, "kvm nested")->detail.find(module) != std::string::npos);
  CHECK_FALSE(Find(caps, "kvm nested")->required);
  REQUIRE(Find(caps, "virtualization extensions") != nullptr);
  CHECK_FALSE(Find(caps, "virtualization extensions")->required);
}

TEST_CASE("The doctor leaves nothing in the machine's own namespaces or /tmp", "[root][hv]") {
  LAB_REQUIRE_ROOT("lab doctor's probes");
  auto links_before = LinkNames();
  auto tables_before = Tables();
  auto dirs_before = DoctorTempDirs();
  auto caps = Diagnose(LAB_BINARY_DIR "/lab-init");
  REQUIRE(Find(caps, "veth + bridge")->state == kCapOk);  // so the probes really made their objects
  REQUIRE(Find(caps, "nftables nat")->state == kCapOk);

  for (const auto& name : LinkNames()) {
    INFO(name);
    CHECK(name.rfind("labdoc-", 0) != 0);
    CHECK(name != "vEthernet(doctor)");
  }
  for (const auto& t : Tables()) {
    INFO(t);
    CHECK(t.find("lab_doctor_") == std::string::npos);
  }
  CHECK(DoctorTempDirs() == dirs_before);
  CHECK(MountInfo().find("lab-doctor-") == std::string::npos);
  // The machine's namespace kept every link and table it had (others may add their own meanwhile).
  auto links_after = LinkNames();
  for (const auto& l : links_before) CHECK(std::find(links_after.begin(), links_after.end(), l) != links_after.end());
  auto tables_after = Tables();
  for (const auto& t : tables_before) CHECK(std::find(tables_after.begin(), tables_after.end(), t) != tables_after.end());
}

}  // namespace lab::hv::kernel
