// Partitions made real with kernel isolation, and processes run inside them.
//
// A partition is: its own network (with lo up), mount, UTS, IPC and PID namespaces; a cgroup (memory limit,
// CPU quota) on cgroup v1 or v2; an init process (the small static `lab-init`: pid 1 of the
// partition's PID namespace, reaps children, exits on SIGTERM); a hostname; and a root
// filesystem that is an overlay: a private writable layer (the partition's differencing disk,
// disk_dir/upper) over the read-only base layer shared by all partitions, with /usr bound
// read-only from the machine. Namespace handles are bind-mounted at run_dir/ns/{net,mnt,uts,
// ipc,pid} so no daemon is needed between commands.
//
// Nesting: a partition with a parent is created by a worker process that enters the parent's
// network, UTS, IPC and PID namespaces and a cgroup below the parent's (so it runs under the
// parent's limits, and the child's PID namespace is a child of the parent's), keeping the
// machine's mount namespace only to reach the disk and run directories.
//
// Inside: lab's binaries at /opt/lab (read-only); the partition's own cgroup subtree at
// /sys/fs/cgroup (so a lab inside creates its cgroups below the partition's, under its limits);
// and, when the partition may nest, /var/lib/lab bound from disk_dir/lab (a real filesystem:
// overlayfs cannot be the upper layer of the nested partitions' overlays).
//
// Every object is marked as the lab's: it lives under run_dir / disk_dir / the cgroup path,
// all of which contain the lab's uid. Destroy touches only these paths and a pid verified by
// its start time; parts already gone are success.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace lab::hv::kernel {

struct CgroupSetup {
  bool v2 = false;
  std::string v2_root;                                  // e.g. /sys/fs/cgroup
  std::vector<std::pair<std::string, std::string>> v1;  // controller -> mount point
  std::string Describe() const;                         // "cgroup v2 (memory cpu pids)" ...
};
/// Detects the machine's cgroup layout (v2 unified; v1/hybrid with memory, cpu, pids, freezer).
const CgroupSetup& Cgroups();
/// Removes the cgroup at `relative` (e.g. "lab/<lab>-<uid>") and everything below it, deepest
/// first, in every hierarchy; waits up to ~2 s for processes to leave, then SIGKILLs those left
/// (a path carrying the lab's mark holds only the lab's processes). Absent = success.
Status RemoveCgroup(const std::string& relative);
/// Removes the cgroup at `relative` in every hierarchy only if it is empty (no child cgroups,
/// no processes); never ends a process. For what labs share, like the "lab" cgroup itself.
void RemoveCgroupIfEmpty(const std::string& relative);
/// Removes the cgroup at `relative` and everything below it, deepest first, in every hierarchy,
/// as long as no process is in the way; never waits and never ends a process. True when nothing
/// of it is left; false at the first cgroup that still holds processes (the caller then knows
/// it has processes to end, and RemoveCgroup finishes the job).
bool RemoveIdleCgroup(const std::string& relative);
/// Removes `path` recursively without crossing into other filesystems or following symlinks;
/// an absent path is success.
Status RemoveTree(const std::string& path);
/// Pids of the processes in the cgroup at `relative` and below (every hierarchy, each once).
std::vector<int> CgroupPids(const std::string& relative);
/// The file holding the memory limit of the cgroup at `relative` (v1 memory.limit_in_bytes,
/// v2 memory.max).
std::string CgroupMemoryLimitPath(const std::string& relative);
/// Set-VMMemory on a running partition: changes the memory limit of the cgroup at `relative`.
/// Refuses (and changes nothing) when the partition uses more than `bytes` now.
Status CgroupSetMemoryLimit(const std::string& relative, uint64_t bytes);

struct PartitionConfig {
  std::string lab;                // lab name
  std::string lab_uid;            // ownership mark
  std::string machine;            // machine name; also the hostname unless `hostname` is set
  std::string hostname;           // the computer name (sethostname); "" = `machine`
  std::string run_dir;            // e.g. /run/lab/<lab>-<uid>/m/<machine>
  /// The run root (EnsureRunRoot's private tmpfs) that holds every partition's namespace
  /// handles, or "". When set, new namespaces are made from a copy of our mount namespace without
  /// it (see BuilderMountNs in partition.cc), so starting a partition costs the same with 10 or
  /// 1,000 partitions up.
  std::string run_root;
  std::string disk_dir;           // e.g. /var/lib/lab/disks/<lab>-<uid>/<machine> (upper/, work/)
  std::string base_dir;           // read-only base layer (EnsureBaseLayer, or EnsureImageBaseLayer on an image)
  /// The machine's image: its overlay lower dirs, topmost first, below base_dir (lab's own small
  /// layer of mount points and /etc links). Empty = the host's software: base_dir holds a copy
  /// of the machine's /etc and /usr is bound read-only. On an image nothing of the machine's
  /// /usr or /etc is visible, and the root is writable everywhere (/usr included).
  std::vector<std::string> image_layers;
  std::string cgroup;             // relative, e.g. "lab/<lab>-<uid>/hv1/middle" (parent's path + name)
  /// Destroy leaves the (empty) cgroup for the caller, who removes the lab's whole cgroup tree
  /// once every partition is gone: a memory cgroup going offline walks the reclaim lists of every
  /// superblock still mounted, and each partition has about eight, so removing them one by one
  /// while the others are still up is quadratic in the lab's size.
  bool keep_cgroup_on_destroy = false;
  /// Destroy need not thaw the partition's cgroup tree first: the caller thawed it (a whole
  /// lab's teardown thaws the lab's tree once, where each partition would walk its own).
  bool thawed_by_caller = false;
  /// When set, Destroy hands a descriptor of the partition's network namespace to this instead of
  /// letting the namespace go with the handles: the caller closes the descriptors once the whole
  /// teardown is done. The kernel frees a network namespace in a worker of its own after the last
  /// reference goes (as after `ip netns del`), and freeing every namespace of a lab in one batch at
  /// the end, rather than one by one while the rest is torn down, keeps that work off the
  /// teardown's two cores. Nothing of the lab can reach a namespace held this way: its processes
  /// are gone and so are its handles.
  std::function<void(int fd)> hold_network;
  std::string parent_run_dir;     // "" = made from the machine itself; else the parent partition's
  uint64_t memory_limit = 0;      // bytes; 0 = none
  int cpu_count = 0;              // CPU quota in whole CPUs; 0 = none
  std::string init_path;          // the lab-init binary
  /// Directory of lab's binaries (`lab`, `lab-init`; on an image, with the shared libraries and
  /// loader they need: EnsureToolsForImages), bound read-only at /opt/lab inside so the
  /// hypervisor inside a VM is lab itself. "" = not bound.
  std::string tools_dir;
  /// This partition may create namespaces (a host, a network, or a VM whose virtualization
  /// extensions are exposed). When false its processes run under the NoNestingFilter
  /// (seccomp.h), and lab's state dir is not given to it.
  bool allow_nesting = true;
  /// The parent partition may create namespaces. The worker that creates this partition runs
  /// under the parent's rules, so when false the start fails ("VM 'PARENT' cannot run nested
  /// VMs ..."). Always true without a parent: the machine itself is physical.
  bool parent_allows_nesting = true;
  /// Files written into the partition's writable layer before init starts
  /// (e.g. /etc/hostname, /etc/hosts, /etc/resolv.conf): path inside -> content.
  std::vector<std::pair<std::string, std::string>> files;
};

/// Identifies a process across pid reuse.
struct ProcessId {
  int pid = 0;                    // in the machine's PID namespace
  uint64_t start_time = 0;        // /proc/PID/stat field 22
};

/// Start time of `pid` (field 22 of /proc/PID/stat); 0 when there is no such process.
uint64_t ProcessStartTime(int pid);
/// True when the process exists and has the recorded start time (a zombie counts as gone: it has
/// released its namespaces already, and an orphan may wait long for a reaper).
bool IsAlive(const ProcessId& p);

/// Path of a namespace handle of a partition: RUN_DIR/ns/KIND (net, mnt, uts, ipc, pid).
std::string NsPath(const std::string& run_dir, const std::string& kind);

/// Prepares the runtime root (e.g. /run/lab): a private tmpfs, so namespace handles under it do
/// not propagate and run directories cost nothing on the machine's disk. Idempotent.
Status EnsureRunRoot(const std::string& run_root);
/// Undoes EnsureRunRoot once no lab uses the run root any more: when it is an empty directory
/// and a mount point, unmounts and removes it. A run root with anything in it is left alone.
/// The caller makes sure no other lab is starting meanwhile (see LinuxHypervisor).
Status ReleaseRunRoot(const std::string& run_root);
/// Builds the shared read-only base layer at `base_dir` once (skeleton dirs, /etc copied from the
/// machine, merged-/usr symlinks). Idempotent and safe against concurrent callers.
Status EnsureBaseLayer(const std::string& base_dir);
/// Builds lab's own small layer over images at `base_dir` once: mount points and the links of
/// /etc/hostname, /etc/hosts and /etc/resolv.conf into the partition's /run; nothing of the
/// machine's /etc or /usr. Idempotent and safe against concurrent callers.
Status EnsureImageBaseLayer(const std::string& base_dir);
/// Makes `dir` hold lab (bin/lab), lab-init and the shared libraries lab has loaded with their
/// loader (lib/), and `dir`/lab, a wrapper that runs bin/lab through that loader: lab runs
/// inside a VM whose image has none of them (its /opt/lab). `lab_binary`: the running lab's
/// executable; `init_path`: lab-init. Built aside, renamed into place; kept while unchanged.
Status EnsureToolsForImages(const std::string& dir, const std::string& lab_binary, const std::string& init_path);

/// Creates and starts a partition; returns its init process. On failure nothing of it is left.
Result<ProcessId> StartPartition(const PartitionConfig& config);
/// Stops init (SIGKILL, only when `init` is alive with the same start time), unmounts the namespace
/// handles, removes the cgroup (waiting for it to empty; not with keep_cgroup_on_destroy), run_dir
/// and disk_dir.
/// Parts already gone are success. Children partitions must be destroyed first.
Status DestroyPartition(const PartitionConfig& config, const std::optional<ProcessId>& init);

/// Joins the partition's cgroup and all of its namespaces, then runs argv (PATH lookup inside the
/// partition) with the caller's stdin/stdout/stderr; waits and returns the exit code
/// (128+signal when killed).
Result<int> ExecInPartition(const std::string& run_dir, const std::string& cgroup,
                            const std::vector<std::string>& argv);
/// How a command run by RunCommandInPartition ended.
struct CommandOutcome {
  int exit_code = 0;       // 128+signal when killed; 124 when timed out
  bool timed_out = false;  // killed (its whole process group) at the timeout
};
/// Runs argv inside the partition as ExecInPartition does, but detached from the caller's
/// terminal (sessions of their own: Ctrl-C on lab's terminal does not reach it), stdin from
/// /dev/null, stdout and stderr to `out_fd`; at `timeout_ms` its process group is killed.
/// Processes it leaves running in the background stay (they belong to the partition).
Result<CommandOutcome> RunCommandInPartition(const std::string& run_dir, const std::string& cgroup,
                                             const std::vector<std::string>& argv, int out_fd, int timeout_ms);
/// Starts a long-running process inside the partition, detached from the caller (its parent
/// becomes the partition's init); stdout/stderr go to `log_path` inside the partition.
/// When `self_exe` is true argv[0] is ignored and this very binary (/proc/self/exe) is run.
Result<ProcessId> SpawnInPartition(const std::string& run_dir, const std::string& cgroup,
                                   const std::vector<std::string>& argv, bool self_exe,
                                   const std::string& log_path);
/// Ends a process started by SpawnInPartition (only when alive with the same start time).
Status StopProcess(const ProcessId& p);
/// Runs `fn` in a child process that has entered the partition's mount, network and UTS
/// namespaces; returns the string `fn` returned. Fails after `timeout_ms`.
Result<std::string> RunInPartition(const std::string& run_dir, const std::function<std::string()>& fn,
                                   int timeout_ms);
/// Writes a file inside the partition's filesystem (through its mount namespace).
Status WriteFileInPartition(const std::string& run_dir, const std::string& path,
                            const std::string& content);

}  // namespace lab::hv::kernel
