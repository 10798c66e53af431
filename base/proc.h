// What /proc says of a process: one parser for the layers that identify processes by
// (pid, start time), which names one process for the life of the machine.
#pragma once

#include <cstdint>

namespace lab {

/// The state letter (field 3: 'R', 'S', 'Z', ...) and start time (field 22, clock ticks since
/// boot) of /proc/PID/stat, from one read. `found` is false, and the rest zero, when there is no
/// such process or its line cannot be parsed.
struct ProcStat {
  bool found = false;
  char state = 0;
  uint64_t start_time = 0;
};
ProcStat ReadProcStat(int pid);

}  // namespace lab
