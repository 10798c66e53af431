#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "base/proc.h"

using lab::ProcStat;
using lab::ReadProcStat;

namespace {

/// A child that renames itself to `comm`, then waits to be killed.
pid_t NamedChild(const char* comm) {
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_NAME, comm);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  ::close(ready[0]);
  return pid;
}

}  // namespace

TEST_CASE("ReadProcStat reads the state and start time of a live process", "[base]") {
  ProcStat me = ReadProcStat(::getpid());
  REQUIRE(me.found);
  CHECK(me.state == 'R');  // reading its own line, it runs
  CHECK(me.start_time > 0);
  CHECK(ReadProcStat(::getpid()).start_time == me.start_time);  // fixed for the process's life

  // A child starts no earlier than its parent; its line is parsed after the last ')' of comm,
  // however odd the name.
  pid_t child = NamedChild("a) b ) (c d");
  ProcStat named;
  for (int i = 0; i < 500; ++i) {  // it may still be on its way from write(2) to pause(2)
    named = ReadProcStat(child);
    if (named.state != 'R') break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK(named.found);
  CHECK(named.state == 'S');
  CHECK(named.start_time >= me.start_time);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST_CASE("ReadProcStat tells a zombie from a process that is gone", "[base]") {
  pid_t child = NamedChild("zombie");
  ProcStat alive = ReadProcStat(child);
  REQUIRE(alive.found);
  ::kill(child, SIGKILL);
  ProcStat zombie;
  for (int i = 0; i < 500; ++i) {  // the kill lands asynchronously
    zombie = ReadProcStat(child);
    if (zombie.state == 'Z') break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK(zombie.found);
  CHECK(zombie.state == 'Z');
  CHECK(zombie.start_time == alive.start_time);
  REQUIRE(::waitpid(child, nullptr, 0) == child);
  ProcStat gone = ReadProcStat(child);
  CHECK_FALSE(gone.found);
  CHECK(gone.state == 0);
  CHECK(gone.start_time == 0);
  CHECK_FALSE(ReadProcStat(0).found);
  CHECK_FALSE(ReadProcStat(-1).found);
}
