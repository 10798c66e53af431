// Templates of qemu VMs on images: a VM started from a saved, booted guest instead of a cold boot
// (issue 20, "beyond the floor"; docs/qemu.md "Templates").
//
// A template is made once per (image disk, kernel, initramfs, and what of QEMU's machine must be
// the same for a saved state to load: memory, processors, the exposure flag, the accelerator,
// QEMU's binary): a qcow2 over the image's read-only disk, booted once with no network adapter
// until its agent answers and the guest's late modules are loaded, then its memory saved to a file
// (Save-VM, hv/qemu/control.h) and QEMU quit. The qcow2 is never written again: each VM started
// from the template gets its own qcow2 whose backing file is the template's (the same content as at
// save time, so the memory state matches its disk), starts paused on the template's memory state,
// runs on, and then takes on its own identity: adapters, fresh entropy, clock, machine id, hostname.
//
// Layout: STATE/qemu/templates/KEY/{disk.qcow2, state.vm, template.json}. A template is made aside
// (KEY.tmp-PID) under an flock of KEY.lock and renamed into place once complete, so two VMs asking
// for it at once build it once (the second waits and finds it made), and a directory KEY that is
// there is always whole; what a killed build left (its temporary directory, its QEMU) is removed
// by the next build of that key. Templates are a cache, like image disks: `lab down` leaves them.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "hv/qemu/process.h"

namespace lab::hv::qemu {

/// STATE/qemu/templates: where templates are kept.
std::string TemplatesDir(const std::string& state_dir);

/// What identifies QEMU's binary `binary` (searched in PATH): its path, size and modification
/// time. A saved state is only sure to load into the QEMU that wrote it. "" when it is not found.
std::string QemuBinaryIdentity(const std::string& binary);

/// The template key of `boot` (a VM's machine: kernel, initrd, memory, processors, exposure,
/// accelerator, QEMU binary, agent, root kind, hot-plug ports, balloon) over image disk
/// `image_disk`, with `qemu_identity` (QemuBinaryIdentity). What differs between VMs of one template
/// (run_dir, disk, nics, incoming, nice) is not part of it. 16 hex digits.
std::string TemplateKey(const QemuConfig& boot, const std::string& image_disk, const std::string& qemu_identity);

/// A made template.
struct Template {
  std::string key;
  std::string dir;    // TemplatesDir/KEY
  std::string disk;   // its qcow2 (over the image's disk): the backing file of its VMs' disks
  std::string state;  // its saved memory state (SaveToFile): IncomingFromFile(state)
  bool made_now = false;  // this call made it (else it was there, or another made it meanwhile)
  std::string guest_kernel;  // the guest's `uname -r` (its agent's ping when it was made)
};

/// The template of `boot` (its root must be RootKind::kDisk) over `image_disk` under
/// `templates_dir`, made when missing as described above: QEMU runs with run directory `run_dir`
/// (sockets: keep it short; removed afterwards), the guest gets `boot_ms` to answer and load its
/// modules. An error says what failed (with the guest's console when it booted); nothing but the
/// lock file is left in `templates_dir` then, and no QEMU runs.
Result<Template> EnsureTemplate(const std::string& templates_dir, const std::string& key, const QemuConfig& boot,
                                const std::string& image_disk, const std::string& run_dir, int boot_ms);

/// `bytes` as a printf(1) format that prints exactly them: every byte as a \NNN octal escape, so
/// the result needs no quoting in a shell's single quotes (busybox and dash printf both read it).
std::string PrintfBytes(const std::string& bytes);

/// A fresh identity for a guest resumed from a template.
struct GuestIdentity {
  int64_t epoch_seconds = 0;  // the host's time: the guest's clock is where the template's stopped
  std::string entropy;        // random bytes mixed into the guest's pool (/dev/urandom)
  std::string machine_id;     // 32 lowercase hex digits for /etc/machine-id
};

/// A GuestIdentity from this host: its clock and getrandom(2) (64 bytes of entropy, 16 for the
/// machine id). An error when getrandom fails.
Result<GuestIdentity> FreshIdentity();

/// The `sh -c` script the guest runs (through its agent's exec) to take on `id`: sets its clock
/// (date, or busybox's where the image has busybox without an applet link for it),
/// mixes the entropy into /dev/urandom, writes /etc/machine-id, and removes the random-seed files
/// saved on the template's disk (Debian's and systemd's), which every VM of it would share. It
/// exits non-zero, naming the step, when one fails.
std::string IdentityScript(const GuestIdentity& id);

}  // namespace lab::hv::qemu
