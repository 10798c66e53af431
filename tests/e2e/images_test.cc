// End to end: machines on images. Two VMs on two imported busybox images (an OCI layout and a
// `docker save` tar, made offline by the test) each run their own image's software; nothing of
// the machine's /etc or /usr is visible; their roots are writable (/usr too) and keep what was
// written across stop and start; a nested VM on an image inside a middle VM on an image works
// and lab runs inside the middle VM without the image holding it; `lab down` leaves only the
// cache. Root only; traffic stays inside the lab's own namespaces.
#include <catch2/catch.hpp>

#include "tests/e2e/e2e_support.h"
#include "tests/images/image_maker.h"

using namespace lab::testing::e2e;
namespace maker = lab::testing::images;

namespace {

const char* kLab = R"(lab: imgs
networks:
  lan: {subnet: 10.77.0.0/24}
images:
  web: {oci: ./web-layout:1.0}
  tools: {docker_archive: ./tools.tar}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.77.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      web:
        image: web
        adapters: [{switch: External, ip: 10.77.0.20/24}]
      client:
        image: tools
        adapters: [{switch: External, ip: 10.77.0.21/24}]
      middle:
        image: web
        processor: {count: 1, expose_virtualization_extensions: true}
        adapters: [{switch: External, ip: 10.77.0.30/24}]
        switches:
          Inner: {type: internal, ip: 192.168.77.1/24}
        vms:
          nested:
            image: tools
            adapters: [{switch: Inner, ip: 192.168.77.2/24}]
)";

std::string Out(const Sandbox& sb, const std::string& machine, const std::string& cmd) {
  Run r = sb.Lab("exec imgs " + machine + " -- " + cmd);
  INFO(machine << ": " << cmd << "\n" << r.out);
  CHECK(r.code == 0);
  return r.out;
}

}  // namespace

TEST_CASE("VMs on images run their image's software, keep their writes and see nothing of the machine",
          "[root][e2e][images]") {
  LAB_REQUIRE_ROOT("VMs on images");
  if (maker::Busybox().empty()) {
    WARN("SKIP: busybox-static is not installed (scripts/deps.sh installs it)");
    return;
  }
  Sandbox sb;
  maker::WriteOciLayout(sb.dir + "/web-layout", "web", "1.0");
  maker::WriteDockerArchive(sb.dir + "/tools.tar", "tools");
  std::string file = sb.dir + "/imgs.yaml";
  std::ofstream(file) << kLab;

  Run plan = sb.Lab("plan " + file);
  INFO(plan.out);
  CHECK(plan.out.find("image 'web' is made first (import oci ./web-layout:1.0)") != std::string::npos);
  CHECK_FALSE(fs::exists(sb.state + "/images/sha256"));  // a plan makes nothing

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("image 'tools': importing docker_archive ./tools.tar") != std::string::npos);
  auto pids = InitPids(sb, "imgs");

  // Each VM runs its own image's programs and files.
  CHECK(Out(sb, "web", "cat /etc/image-name") == "web\n");
  CHECK(Out(sb, "client", "cat /etc/image-name") == "tools\n");
  CHECK(Out(sb, "nested", "cat /etc/image-name") == "tools\n");
  CHECK(Out(sb, "web", "cat /etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n");
  CHECK(Out(sb, "web", "cat /etc/hostname") == "web\n");
  CHECK(Out(sb, "web", "readlink /bin/sh") == "busybox\n");
  // Nothing of the machine: no /etc/shadow (the machine has one), no machine programs in /usr.
  REQUIRE(fs::exists("/etc/shadow"));
  CHECK(sb.Lab("exec imgs web -- cat /etc/shadow").code != 0);
  CHECK(sb.Lab("exec imgs client -- test -e /etc/shadow").code != 0);
  CHECK(sb.Lab("exec imgs web -- test -e /usr/bin/env").code != 0);

  // The root is writable everywhere, /usr included, and keeps what was written across stop/start.
  CHECK(Out(sb, "web", "sh -c 'echo kept > /usr/bin/written && cat /usr/bin/written'") == "kept\n");
  CHECK(sb.Lab("exec imgs client -- test -e /usr/bin/written").code != 0);  // its own disk only
  Run stop = sb.Lab("stop imgs web");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  Run start = sb.Lab("start imgs web");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK(Out(sb, "web", "cat /usr/bin/written") == "kept\n");

  // lab runs inside the middle VM from /opt/lab, though its image has no lab and no libraries.
  Run inner = sb.Lab("exec imgs middle -- lab --version");
  INFO(inner.out);
  CHECK(inner.code == 0);
  CHECK(sb.Lab("exec imgs middle -- test -e /usr/lib/x86_64-linux-gnu/libc.so.6").code != 0);
  CHECK(sb.Lab("exec imgs middle -- sh -c 'touch /opt/lab/x'").code != 0);  // read-only

  // Nothing to do the second time: the images are cached, the keys unchanged.
  Run again = sb.Lab("up " + file);
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("No changes.") != std::string::npos);
  CHECK(again.out.find("importing") == std::string::npos);

  // A changed image is a remake of the VMs on it, never a silent swap.
  maker::WriteDockerArchive(sb.dir + "/tools.tar", "tools v2");
  Run changed = sb.Lab("plan " + file);
  INFO(changed.out);
  CHECK(changed.out.find("image changed") != std::string::npos);
  CHECK(changed.out.find("client") != std::string::npos);

  TakeDownLeavingNothing(sb, "imgs", pids);
  // Only the cache is left: the two images, and nothing else of the lab's disks.
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(sb.state + "/images/sha256")) entries += e.is_directory() ? 1 : 0;
  CHECK(entries == 2);
}
