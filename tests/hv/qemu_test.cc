// The qemu driver's foundation (hv/qemu/): the initramfs's cpio writer, the vmlinux taken out of a
// bzImage, the module closure, the QMP client against a fake QMP server, the agent protocol, and
// real guests booted with QEMU, one with virtualization extensions exposed and one hidden.
#include <archive.h>
#include <archive_entry.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/proc.h"
#include "hv/agent/protocol.h"
#include "hv/kernel/doctor.h"
#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/doctor.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"
#include "hv/qemu/process.h"
#include "hv/qemu/qmp.h"
#include "tests/hv/qemu_support.h"
#include "tests/support.h"

namespace lab::hv::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// `data` compressed as one raw stream with libarchive's `filter` ("xz", "gzip").
std::string Compress(const std::string& data, const std::string& filter) {
  archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  REQUIRE(archive_write_add_filter_by_name(a, filter.c_str()) == ARCHIVE_OK);
  std::string out(data.size() + 65536, '\0');
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, out.data(), out.size(), &used) == ARCHIVE_OK);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_pathname(e, "payload");
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
  REQUIRE(archive_write_data(a, data.data(), data.size()) == static_cast<la_ssize_t>(data.size()));
  archive_entry_free(e);
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
  out.resize(used);
  return out;
}

template <typename T>
void Put(std::string& s, size_t at, T v) {
  if (s.size() < at + sizeof v) s.resize(at + sizeof v);
  std::memcpy(s.data() + at, &v, sizeof v);
}

/// A 64-bit ELF with one PT_NOTE segment holding note `name` of `type`, and some body bytes.
std::string Elf(const std::string& name, uint32_t type) {
  std::string elf(64, '\0');
  std::memcpy(elf.data(), "\x7f" "ELF\x02\x01\x01", 7);
  Put<uint16_t>(elf, 0x10, 2);      // ET_EXEC
  Put<uint16_t>(elf, 0x12, 0x3e);   // x86-64
  Put<uint64_t>(elf, 0x20, 64);     // e_phoff
  Put<uint16_t>(elf, 0x36, 56);     // e_phentsize
  Put<uint16_t>(elf, 0x38, 1);      // e_phnum
  std::string note;
  Put<uint32_t>(note, 0, static_cast<uint32_t>(name.size() + 1));
  Put<uint32_t>(note, 4, 4);
  Put<uint32_t>(note, 8, type);
  note += name + std::string(1, '\0');
  note.resize((note.size() + 3) & ~size_t{3});
  note += std::string("\x00\x00\x10\x01", 4);  // the entry address
  std::string ph(56, '\0');
  Put<uint32_t>(ph, 0, 4);  // PT_NOTE
  Put<uint64_t>(ph, 8, 64 + 56);
  Put<uint64_t>(ph, 32, note.size());
  std::string body;
  for (int i = 0; i < 20000; ++i) body += "kernel text " + std::to_string(i) + "\n";
  return elf + ph + note + body;
}

/// A bzImage: setup sectors with the "HdrS" header of protocol 2.15 pointing at `payload`, or,
/// `with_header` false, an old-style image where only the payload's magic marks it.
std::string BzImage(const std::string& payload, bool with_header) {
  std::string img(5 * 512, '\0');  // boot sector + 4 setup sectors
  img[0x1f1] = 4;
  if (with_header) {
    std::memcpy(img.data() + 0x202, "HdrS", 4);
    Put<uint16_t>(img, 0x206, 0x20f);
  }
  std::string code = "startup_32 code, then the payload: ";
  if (with_header) {
    Put<uint32_t>(img, 0x248, static_cast<uint32_t>(code.size()));
    Put<uint32_t>(img, 0x24c, static_cast<uint32_t>(payload.size()));
  }
  return img + code + payload + std::string("\x10\x20\x30\x40 trailing", 13);
}

TEST_CASE("vmlinux is taken out of a bzImage's xz payload located by its setup header", "[hv][qemu]") {
  std::string elf = Elf("Xen", 18);
  std::string payload = Compress(elf, "xz");
  REQUIRE(PayloadCompression(payload) == "xz");
  auto out = ExtractVmlinux(BzImage(payload, true));
  REQUIRE(out.ok());
  CHECK(*out == elf);
}

TEST_CASE("vmlinux is taken out of a gzip payload found by its magic when there is no setup header", "[hv][qemu]") {
  std::string elf = Elf("Xen", 18);
  auto out = ExtractVmlinux(BzImage(Compress(elf, "gzip"), false));
  REQUIRE(out.ok());
  CHECK(*out == elf);
}

TEST_CASE("A kernel without the PVH note is refused with an error that names the note", "[hv][qemu]") {
  auto wrong_type = ExtractVmlinux(BzImage(Compress(Elf("Xen", 17), "xz"), true));
  REQUIRE_FALSE(wrong_type.ok());
  CHECK(wrong_type.message().find("XEN_ELFNOTE_PHYS32_ENTRY") != std::string::npos);
  CHECK_FALSE(CheckPvhNote(Elf("GNU", 18)).ok());
  CHECK(CheckPvhNote(Elf("Xen", 18)).ok());
  auto no_payload = ExtractVmlinux(std::string(8192, 'x'));
  REQUIRE_FALSE(no_payload.ok());
  CHECK(no_payload.message().find("no compressed kernel payload") != std::string::npos);
}

TEST_CASE("A kernel fetch killed halfway leaves nothing the next fetch trips on", "[hv][qemu]") {
  std::string cache = testing::TempDir("lab-kernels");
  // A pid that cannot be running (above pid_max's ceiling) and our own, still running.
  fs::create_directories(cache + "/.fetch-99999999/tree");
  std::string ours = cache + "/.fetch-" + std::to_string(::getpid());
  fs::create_directories(ours);
  fs::create_directories(cache + "/linux-image-x_1");  // incomplete: no vmlinux
  RemoveStaleFetches(cache);
  CHECK_FALSE(fs::exists(cache + "/.fetch-99999999"));
  CHECK(fs::exists(ours));
  CHECK_FALSE(AnyCachedKernel(cache).has_value());
  fs::remove_all(cache);
}


TEST_CASE("apt is asked for the kernel package once while its state is unchanged, and again when it changes", "[hv][qemu]") {
  std::string cache = testing::TempDir("lab-kernels");
  int asked = 0;
  std::string version = "6.1.192-3";
  auto resolve = [&](const std::string& meta) -> Result<KernelPackage> {
    ++asked;
    if (meta == "linux-image-unknown") return Status::Error("apt does not know the kernel package");
    return KernelPackage{"linux-image-6.1.0-57-amd64", version};
  };
  // The stamp follows the files it is made of.
  std::string lists = cache + "/lists";
  fs::create_directories(lists);
  std::string stamp = AptStateStamp({lists, cache + "/missing"});
  CHECK(stamp == AptStateStamp({lists, cache + "/missing"}));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::ofstream(lists + "/new-list") << "Package: x\n";
  CHECK(AptStateStamp({lists, cache + "/missing"}) != stamp);

  auto first = ResolveKernelPackageRemembered(cache, "linux-image-amd64", "stamp-1", resolve);
  REQUIRE(first.ok());
  auto second = ResolveKernelPackageRemembered(cache, "linux-image-amd64", "stamp-1", resolve);
  REQUIRE(second.ok());
  CHECK(asked == 1);
  CHECK(second->package == "linux-image-6.1.0-57-amd64");
  CHECK(second->version == "6.1.192-3");
  // apt's state changed (apt-get update): asked again, and the new answer is the one remembered.
  version = "6.1.200-1";
  auto third = ResolveKernelPackageRemembered(cache, "linux-image-amd64", "stamp-2", resolve);
  REQUIRE(third.ok());
  CHECK(asked == 2);
  CHECK(third->version == "6.1.200-1");
  CHECK(ResolveKernelPackageRemembered(cache, "linux-image-amd64", "stamp-2", resolve)->version == "6.1.200-1");
  CHECK(asked == 2);
  // A failure is not remembered.
  CHECK_FALSE(ResolveKernelPackageRemembered(cache, "linux-image-unknown", "stamp-2", resolve).ok());
  CHECK_FALSE(ResolveKernelPackageRemembered(cache, "linux-image-unknown", "stamp-2", resolve).ok());
  CHECK(asked == 4);
  // The remembered answers are no cache entries.
  CHECK_FALSE(AnyCachedKernel(cache).has_value());
  fs::remove_all(cache);
}
TEST_CASE("The initramfs's newc cpio reads back with libarchive: files, modes, links, devices", "[hv][qemu]") {
  std::string dir = testing::TempDir("lab-cpio");
  std::string path = dir + "/initrd.gz";
  using Kind = CpioEntry::Kind;
  std::vector<CpioEntry> entries = {
      {Kind::kDirectory, "bin", "", 0755},
      {Kind::kFile, "init", "#!init\n", 0755},
      {Kind::kFile, "bin/busybox", std::string(100000, 'b'), 0755},
      {Kind::kSymlink, "bin/sh", "busybox", 0777},
      {Kind::kCharDevice, "dev/console", "", 0600, 5, 1},
      {Kind::kFile, "etc/empty", "", 0644},
  };
  auto written = WriteCpioGz(entries, path);
  INFO(written.message());
  REQUIRE(written.ok());

  archive* a = archive_read_new();
  archive_read_support_format_all(a);
  archive_read_support_filter_all(a);
  REQUIRE(archive_read_open_filename(a, path.c_str(), 65536) == ARCHIVE_OK);
  archive_entry* e = nullptr;
  std::map<std::string, std::string> seen;
  int n = 0;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    CHECK(archive_format(a) == ARCHIVE_FORMAT_CPIO_SVR4_NOCRC);  // "newc"
    CHECK(archive_filter_code(a, 0) == ARCHIVE_FILTER_GZIP);
    std::string name = archive_entry_pathname(e);
    std::ostringstream what;
    what << std::oct << (archive_entry_mode(e) & 07777) << std::dec << " ";
    if (archive_entry_filetype(e) == AE_IFREG) {
      std::string data(static_cast<size_t>(archive_entry_size(e)), '\0');
      if (!data.empty()) archive_read_data(a, data.data(), data.size());
      what << "file " << data.size() << " " << data.substr(0, 7);
    } else if (archive_entry_filetype(e) == AE_IFLNK) {
      what << "link " << archive_entry_symlink(e);
    } else if (archive_entry_filetype(e) == AE_IFCHR) {
      what << "chr " << archive_entry_rdevmajor(e) << ":" << archive_entry_rdevminor(e);
    } else if (archive_entry_filetype(e) == AE_IFDIR) {
      what << "dir";
    }
    seen[name] = what.str();
    ++n;
  }
  archive_read_free(a);
  CHECK(n == 6);
  CHECK(seen["bin"] == "755 dir");
  CHECK(seen["init"] == "755 file 7 #!init\n");
  CHECK(seen["bin/busybox"] == "755 file 100000 bbbbbbb");
  CHECK(seen["bin/sh"] == "777 link busybox");
  CHECK(seen["dev/console"] == "600 chr 5:1");
  CHECK(seen["etc/empty"] == "644 file 0 ");
  CHECK_FALSE(fs::exists(path + ".tmp-" + std::to_string(::getpid())));
  fs::remove_all(dir);
}

/// A relocatable ELF whose only named section is .modinfo with `fields` (NUL-separated).
std::string Module(const std::string& fields) {
  std::string shstr = std::string("\0.modinfo\0.shstrtab\0", 20);
  std::string elf(64, '\0');
  std::memcpy(elf.data(), "\x7f" "ELF\x02\x01\x01", 7);
  size_t modinfo_at = 64, shstr_at = modinfo_at + fields.size(), sh_at = (shstr_at + shstr.size() + 7) & ~size_t{7};
  elf += fields + shstr;
  elf.resize(sh_at + 3 * 64, '\0');
  Put<uint64_t>(elf, 0x28, sh_at);
  Put<uint16_t>(elf, 0x3a, 64);
  Put<uint16_t>(elf, 0x3c, 3);
  Put<uint16_t>(elf, 0x3e, 2);
  Put<uint32_t>(elf, sh_at + 64, 1);  // .modinfo
  Put<uint64_t>(elf, sh_at + 64 + 0x18, modinfo_at);
  Put<uint64_t>(elf, sh_at + 64 + 0x20, fields.size());
  Put<uint32_t>(elf, sh_at + 128, 10);  // .shstrtab
  Put<uint64_t>(elf, sh_at + 128 + 0x18, shstr_at);
  Put<uint64_t>(elf, sh_at + 128 + 0x20, shstr.size());
  return elf;
}

TEST_CASE("The module closure loads each module after what its .modinfo depends on, by phase, kvm only for svm or vmx", "[hv][qemu]") {
  std::string dir = testing::TempDir("lab-modules");
  auto put = [&](const std::string& rel, const std::string& depends) {
    fs::create_directories(fs::path(dir + "/kernel/" + rel).parent_path());
    std::ofstream(dir + "/kernel/" + rel) << Module(std::string("license=GPL\0depends=", 20) + depends +
                                                    std::string("\0name=x\0", 8));
  };
  put("fs/ext4/ext4.ko", "mbcache,jbd2,crc16");
  put("fs/mbcache.ko", "");
  put("fs/jbd2/jbd2.ko", "crc32c-generic");
  put("crypto/crc32c_generic.ko", "");
  put("lib/crc16.ko", "");
  put("drivers/virtio_net.ko", "net_failover");
  put("drivers/net_failover.ko", "failover");
  put("drivers/failover.ko", "");
  std::ofstream(dir + "/modules.builtin") << "kernel/drivers/char/virtio_console.ko\n";

  CHECK(ModuleDepends(Module(std::string("depends=a-b,c\0", 14))) == std::vector<std::string>{"a_b", "c"});
  auto order = ModuleClosure(dir, {"ext4", "virtio_net", "virtio_console"});
  REQUIRE(order.ok());
  CHECK(*order == std::vector<std::string>{"kernel/fs/mbcache.ko", "kernel/crypto/crc32c_generic.ko", "kernel/fs/jbd2/jbd2.ko",
                                           "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko", "kernel/drivers/failover.ko",
                                           "kernel/drivers/net_failover.ko", "kernel/drivers/virtio_net.ko"});
  // kvm's modules are loaded only for a processor with the flag their root needs.
  put("arch/x86/kvm/kvm.ko", "irqbypass");
  put("virt/lib/irqbypass.ko", "");
  put("arch/x86/kvm/kvm-amd.ko", "kvm");
  put("arch/x86/kvm/kvm-intel.ko", "kvm");
  std::vector<std::string> files;
  // By phase: jbd2 for a disk root and again in the background (listed in both, one file).
  auto list = ModuleLoadList(dir, "6.1.0-9",
                             {{"kvm_amd", {"svm"}, "late"}, {"jbd2", {}, "disk"}, {"kvm_intel", {"vmx"}, "late"},
                              {"jbd2", {}, "late"}},
                             &files);
  REQUIRE(list.ok());
  CHECK(*list ==
        "[disk]\n"
        "/lib/modules/6.1.0-9/kernel/crypto/crc32c_generic.ko\n"
        "/lib/modules/6.1.0-9/kernel/fs/jbd2/jbd2.ko\n"
        "[late]\n"
        "/lib/modules/6.1.0-9/kernel/virt/lib/irqbypass.ko svm|vmx\n"
        "/lib/modules/6.1.0-9/kernel/arch/x86/kvm/kvm.ko svm|vmx\n"
        "/lib/modules/6.1.0-9/kernel/arch/x86/kvm/kvm-amd.ko svm\n"
        "/lib/modules/6.1.0-9/kernel/arch/x86/kvm/kvm-intel.ko vmx\n"
        "/lib/modules/6.1.0-9/kernel/crypto/crc32c_generic.ko\n"
        "/lib/modules/6.1.0-9/kernel/fs/jbd2/jbd2.ko\n");
  CHECK(files.size() == 6);

  auto missing = ModuleClosure(dir, {"virtio_blk"});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("'virtio_blk'") != std::string::npos);
  fs::remove_all(dir);
}

/// A fake QEMU monitor on one end of a socketpair: greets, accepts qmp_capabilities, then answers
/// from `script` (command -> reply lines, "{id}" replaced by the request's id).
struct FakeQmp {
  int fds[2];
  std::thread thread;
  std::vector<std::string> received;
  explicit FakeQmp(std::map<std::string, std::vector<std::string>> script) {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    thread = std::thread([this, script] {
      auto send = [&](const std::string& s) { (void)!::write(fds[1], (s + "\n").data(), s.size() + 1); };
      send(R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}})");
      std::string buf;
      char c;
      while (::read(fds[1], &c, 1) == 1) {
        if (c != '\n') {
          buf += c;
          continue;
        }
        json req = json::parse(buf);
        received.push_back(req["execute"]);
        buf.clear();
        auto it = script.find(req["execute"]);
        if (it == script.end()) continue;  // silent: the client's deadline must end the wait
        for (std::string reply : it->second) {
          auto at = reply.find("{id}");
          if (at != std::string::npos) reply.replace(at, 4, req["id"].dump());
          send(reply);
        }
      }
    });
  }
  ~FakeQmp() {
    ::shutdown(fds[1], SHUT_RDWR);
    thread.join();
    ::close(fds[1]);
  }
};

TEST_CASE("The QMP client negotiates, matches replies by id, keeps events apart and times out", "[hv][qemu]") {
  FakeQmp fake({
      {"qmp_capabilities", {R"({"return": {}, "id": {id}})"}},
      {"query-status", {R"({"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}})",
                        R"({"return": {"status": "stale"}, "id": 999999})",
                        R"({"return": {"status": "running", "running": true}, "id": {id}})"}},
      {"system_powerdown", {R"({"error": {"class": "GenericError", "desc": "no ACPI"}, "id": {id}})"}},
      {"quit", {R"({"event": "SHUTDOWN", "data": {"guest": false}})", R"({"return": {}, "id": {id}})"}},
  });
  auto qmp = QmpClient::Adopt(fake.fds[0], 2000);
  REQUIRE(qmp.ok());
  CHECK(qmp->version() == "7.2.0");

  auto status = qmp->QueryStatus();
  REQUIRE(status.ok());
  CHECK(*status == "running");  // not the reply to another id

  auto down = qmp->SystemPowerdown();
  REQUIRE_FALSE(down.ok());
  CHECK(down.message() == "QMP system_powerdown: GenericError: no ACPI");

  auto silent = qmp->Execute("query-version", nullptr, 200);
  INFO(silent.message());
  REQUIRE_FALSE(silent.ok());
  CHECK(silent.message().find("did not answer within 200 ms") != std::string::npos);

  REQUIRE(qmp->Quit().ok());
  auto shutdown = qmp->WaitEvent("SHUTDOWN", 100);
  REQUIRE(shutdown.ok());
  CHECK((*shutdown)["data"]["guest"] == false);
  auto rest = qmp->TakeEvents();
  REQUIRE(rest.size() == 1);
  CHECK(rest[0]["event"] == "RESUME");
  CHECK(fake.received.front() == "qmp_capabilities");
}

/// An agent on a unix socket whose `script` reads requests (`next`) and sends replies (`send`)
/// in the order it chooses.
struct FakeAgent {
  using Next = std::function<json()>;
  using Send = std::function<void(const json&)>;
  std::string path;
  int listener = -1;
  std::thread thread;
  FakeAgent(const std::string& p, std::function<void(const Next&, const Send&)> script) : path(p) {
    listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener, 1) == 0);
    thread = std::thread([this, script] {
      int fd = ::accept(listener, nullptr, nullptr);
      if (fd < 0) return;
      auto send = [fd](const json& j) { std::string s = j.dump() + "\n"; (void)!::write(fd, s.data(), s.size()); };
      auto next = [fd]() -> json {
        std::string buf;
        char c;
        while (::read(fd, &c, 1) == 1 && c != '\n') buf += c;
        return json::parse(buf, nullptr, false);
      };
      script(next, send);
      char c;
      while (::read(fd, &c, 1) == 1) {
      }
      ::close(fd);
    });
  }
  ~FakeAgent() {
    ::shutdown(listener, SHUT_RDWR);
    thread.join();
    ::close(listener);
    ::unlink(path.c_str());
  }
};

TEST_CASE("One agent connection serves calls from many threads: each gets its own reply in any order, a late one is dropped",
          "[hv][qemu]") {
  std::string dir = testing::TempDir("agent-client");
  auto reply = [](const json& req, const std::string& out) {
    return agent::WithId(agent::ToJson(agent::ExecReply{0, out}), req["id"].get<int64_t>());
  };
  // Three calls at once, answered in another order than they were asked; one ("slow") only
  // after its caller gave up, while a fourth call waits: that one gets its own reply.
  FakeAgent fake(dir + "/agent.sock", [&](const FakeAgent::Next& next, const FakeAgent::Send& send) {
    std::map<std::string, json> by;
    for (int i = 0; i < 3; ++i) {
      json r = next();
      by[r["argv"][0].get<std::string>()] = r;
    }
    send(reply(by["second"], "2"));
    send(reply(by["first"], "1"));
    json fourth = next();  // sent once the others are done
    send(reply(by["slow"], "late"));
    send(reply(fourth, "4"));
  });
  auto client = AgentClient::Connect(dir + "/agent.sock", 5000);
  REQUIRE(client.ok());
  std::map<std::string, std::string> outs;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (std::string name : {"first", "second", "slow"})
    threads.emplace_back([&, name] {
      auto r = client->Exec({name}, name == "slow" ? 300 : 10000);
      std::lock_guard lock(mu);
      outs[name] = r.ok() ? r->output : "error: " + r.message();
    });
  for (auto& t : threads) t.join();
  CHECK(outs["first"] == "1");
  CHECK(outs["second"] == "2");
  CHECK(outs["slow"].find("no answer from the guest within 300 ms") != std::string::npos);
  auto fourth = client->Exec({"fourth"}, 10000);
  REQUIRE(fourth.ok());
  CHECK(fourth->output == "4");
  CHECK_FALSE(client->Broken());
  fs::remove_all(dir);
}

TEST_CASE("The agent protocol refuses other versions, unknown ops and malformed requests by name", "[hv][qemu]") {
  auto ping = agent::ParseRequest(agent::PingRequest().dump());
  REQUIRE(ping.ok());
  CHECK(ping->op == "ping");
  auto exec = agent::ParseRequest(agent::ExecRequest({"uname", "-r"}).dump());
  REQUIRE(exec.ok());
  CHECK(exec->argv == std::vector<std::string>{"uname", "-r"});
  CHECK(agent::ParseRequest(R"({"v":2,"op":"ping"})").message().find("version 2 is not this agent's version 3") !=
        std::string::npos);
  CHECK(agent::ParseRequest(R"({"v":3,"op":"reboot"})").message().find("unknown op 'reboot'") != std::string::npos);
  CHECK_FALSE(agent::ParseRequest(R"({"v":3,"op":"exec","argv":[]})").ok());
  CHECK_FALSE(agent::ParseRequest(R"({"v":3,"op":"hv"})").ok());
  CHECK_FALSE(agent::ParseRequest(R"({"v":3,"op":"hv","method":"CreateSwitch","args":[1]})").ok());
  // The id of a request goes back with its reply, also when the request is refused.
  CHECK(agent::RequestId(R"({"v":2,"op":"ping","id":42})") == 42);
  CHECK(agent::RequestId("not json") == -1);
  CHECK(agent::WithId(agent::ErrorReply("no"), 42)["id"] == 42);
  CHECK_FALSE(agent::WithId(agent::ErrorReply("no"), -1).contains("id"));
  auto hv = agent::ParseRequest(agent::HvRequest("CreateSwitch", {{"spec", {{"name", "x"}}}}).dump());
  REQUIRE(hv.ok());
  CHECK(hv->method == "CreateSwitch");
  CHECK(hv->args["spec"]["name"] == "x");
  auto result = agent::ParseHvReply(agent::HvReply("{}"));
  REQUIRE(result.ok());
  CHECK(*result == "{}");
  CHECK(agent::ParseHvReply(agent::ErrorReply("VM 'x': no")).message() == "VM 'x': no");
  CHECK_FALSE(agent::ParseRequest("not json").ok());
  auto refused = agent::ParsePingReply(agent::ErrorReply("agent: nope"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message() == "agent: nope");
  auto back = agent::ParseExecReply(agent::ToJson(agent::ExecReply{3, "out\n"}));
  REQUIRE(back.ok());
  CHECK(back->exit_code == 3);
  CHECK(back->output == "out\n");
}

TEST_CASE("QEMU's command line says +svm or -svm explicitly and wires the agent port and QMP", "[hv][qemu]") {
  QemuConfig c;
  c.kernel = "/k/vmlinux";
  c.initrd = "/k/initrd.gz";
  c.run_dir = "/run/x";
  c.expose_virtualization_extensions = true;
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& a : v) s += a + " ";
    return s;
  };
  std::string exposed = join(QemuArgv(c));
  CHECK(exposed.find("-accel tcg,tb-size=64 -cpu qemu64,+svm,+npt,+arat ") != std::string::npos);
  CHECK(exposed.find("-chardev socket,id=agent,server=on,wait=off,path=/run/x/agent.sock ") != std::string::npos);
  CHECK(exposed.find("virtserialport,chardev=agent,name=lab.agent ") != std::string::npos);
  CHECK(exposed.find("-qmp unix:/run/x/qmp.sock,server=on,wait=off ") != std::string::npos);
  c.expose_virtualization_extensions = false;
  CHECK(join(QemuArgv(c)).find("-cpu qemu64,-svm,+arat ") != std::string::npos);
  c.accel = Accel::kKvm;
  CHECK(join(QemuArgv(c)).find("-accel kvm -cpu host,-vmx,-svm ") != std::string::npos);
  // Without eventfd kicks (a guest under a lab guest's nested KVM), on every virtio device that
  // has the property (the balloon has none: QEMU would refuse to start).
  CHECK(join(QemuArgv(c)).find("ioeventfd") == std::string::npos);
  c.ioeventfd = false;
  c.root = RootKind::kDisk;
  c.disk = "/d/disk.qcow2";
  std::string kicks = join(QemuArgv(c));
  CHECK(kicks.find("virtio-serial-pci,id=vser,ioeventfd=off ") != std::string::npos);
  CHECK(kicks.find("virtio-rng-pci,id=rng,ioeventfd=off ") != std::string::npos);
  CHECK(kicks.find("virtio-blk-pci,drive=disk,id=vda,ioeventfd=off ") != std::string::npos);
  CHECK(kicks.find("virtio-balloon-pci,id=balloon ") != std::string::npos);
}

TEST_CASE("The qemu driver uses KVM only where doctor's probe runs a standard guest, and TCG always exposes SVM", "[hv][qemu]") {
  kernel::Capability usable{"/dev/kvm", kernel::kCapUsable, "", "", false};
  kernel::Capability unusable{"/dev/kvm", kernel::kCapUnusable, "", "", false};
  kernel::Capability nested_on{"kvm nested", kernel::kCapOk, "kvm_intel nested=Y", "", false};
  kernel::Capability nested_off{"kvm nested", kernel::kCapMissing, "kvm_intel nested=N", "echo options", false};
  CHECK(JudgeAccel(usable).detail.rfind("kvm", 0) == 0);
  auto tcg = JudgeAccel(unusable);
  CHECK(tcg.detail.rfind("tcg", 0) == 0);
  CHECK(JudgeExposure(tcg, nested_off, "flags : fpu").state == kernel::kCapOk);
  auto kvm = JudgeAccel(usable);
  CHECK(JudgeExposure(kvm, nested_on, "flags : fpu vmx ept").state == kernel::kCapOk);
  auto off = JudgeExposure(kvm, nested_off, "flags : fpu vmx ept");
  CHECK(off.state == kernel::kCapMissing);
  CHECK(off.fix == "echo options");
  CHECK(JudgeExposure(kvm, nested_on, "flags : fpu sse").state == kernel::kCapMissing);
}

bool Has(const std::vector<std::string>& flags, const std::string& f) {
  return std::find(flags.begin(), flags.end(), f) != flags.end();
}


TEST_CASE("Two guests boot from Debian's kernel, one with svm exposed and one hidden, and answer their agent", "[root][hv][qemu]") {
  LAB_REQUIRE_ROOT("booting qemu guests");
  if (FindInPath("qemu-system-x86_64").empty()) {
    WARN("SKIP: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    return;
  }
  auto kernel = testing::TestKernel();
  if (!kernel) return;
  std::string dir = testing::TempDir("lab-qemu");
  std::string initrd = dir + "/initrd.gz";
  REQUIRE(BuildInitramfs(*kernel, std::string(LAB_BINARY_DIR) + "/lab-guest-init", StaticBusybox(), initrd).ok());

  // KVM only where doctor's probe runs a standard guest under it (not this machine's paravirtual one).
  bool kvm = kernel::JudgeKvm(kernel::ProbeKvm(2000)).state == kernel::kCapUsable;
  std::vector<QemuProcess> guests;
  for (bool exposed : {true, false}) {
    QemuConfig c;
    c.accel = kvm ? Accel::kKvm : Accel::kTcg;
    c.expose_virtualization_extensions = exposed;
    c.memory_mib = 384;
    c.kernel = kernel->vmlinux;
    c.initrd = initrd;
    c.run_dir = dir + (exposed ? "/exposed" : "/hidden");
    c.nice = 10;
    fs::create_directories(c.run_dir);
    auto p = StartQemu(c);
    REQUIRE(p.ok());
    guests.push_back(*p);
  }
  for (size_t i = 0; i < guests.size(); ++i) {
    bool exposed = i == 0;
    INFO((exposed ? "exposed" : "hidden") << " guest, console: " << guests[i].console_log());
    auto agent = AgentClient::Connect(guests[i].agent_socket(), 5000);
    REQUIRE(agent.ok());
    auto ping = agent->Ping(120000);
    REQUIRE(ping.ok());
    // The guest runs the packaged kernel, whatever the host runs.
    CHECK(ping->kernel == kernel->release);
    bool svm = Has(ping->cpu_flags, "svm"), vmx = Has(ping->cpu_flags, "vmx");
    // kvm is loaded in the background after the agent answers: /dev/kvm is judged once the init
    // says its modules are loaded (which takes busybox's cat to read).
    bool loaded = !StaticBusybox().empty() && testing::WaitModulesLoaded(*agent);
    if (loaded) {
      ping = agent->Ping(30000);
      REQUIRE(ping.ok());
    }
    if (exposed) {
      if (!kvm) {
        CHECK(svm);  // TCG emulates AMD SVM
        if (loaded) CHECK(ping->kvm);  // so kvm_amd loads and /dev/kvm appears
      } else if (std::ifstream("/sys/module/kvm_intel/parameters/nested").good() ||
                 std::ifstream("/sys/module/kvm_amd/parameters/nested").good()) {
        CHECK((svm || vmx));
      }
    } else {
      CHECK_FALSE(svm);
      CHECK_FALSE(vmx);
      CHECK_FALSE(ping->kvm);
    }
    auto uname = agent->Exec({"uname", "-r"}, 30000);
    REQUIRE(uname.ok());
    if (!StaticBusybox().empty()) {
      CHECK(uname->exit_code == 0);
      CHECK(uname->output == kernel->release + "\n");
      auto grep = agent->Exec({"grep", "-c", "svm", "/proc/cpuinfo"}, 30000);
      REQUIRE(grep.ok());
      CHECK(grep->exit_code == (svm ? 0 : 1));
    } else {
      CHECK(uname->exit_code == 127);
    }
    // The host goes away and comes back (as lab does between commands): the agent answers again.
    { AgentClient gone = std::move(*agent); }
    auto back = AgentClient::Connect(guests[i].agent_socket(), 5000);
    REQUIRE(back.ok());
    auto again = back->Ping(30000);
    REQUIRE(again.ok());
    CHECK(again->kernel == kernel->release);
  }
  for (const auto& g : guests) {
    REQUIRE(StopQemu(g, 1000, 3000).ok());
    CHECK_FALSE(IsRunning(g));
    INFO("pid " << g.pid << " recorded start " << g.start_time << " now state " << ReadProcStat(g.pid).state << " start " << ReadProcStat(g.pid).start_time);
    CHECK_FALSE(ReadProcStat(g.pid).found);
    CHECK_FALSE(fs::exists(g.qmp_socket()));
    CHECK_FALSE(fs::exists(g.agent_socket()));
    CHECK_FALSE(fs::exists(g.pid_file()));
  }
  fs::remove_all(dir);
  CHECK_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace lab::hv::qemu
