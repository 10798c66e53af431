// lab-init: pid 1 of a partition's PID namespace.
//
// It keeps the namespaces alive, reaps every orphan (processes started by SpawnInPartition are
// adopted by it) and exits on SIGTERM or SIGINT. Static and allocation-free, so a running
// partition costs a few hundred KiB of memory at most.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

void Nothing(int) {}

}  // namespace

int main() {
  // Pid 1 only receives signals it has a handler for (from inside its namespace): give the ones
  // it acts on a handler, then take them synchronously.
  struct sigaction sa = {};
  sa.sa_handler = Nothing;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGCHLD, &sa, nullptr);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGTERM);
  sigaddset(&wanted, SIGINT);
  sigaddset(&wanted, SIGCHLD);
  for (;;) {
    // Reap first: children may have exited before we started waiting for SIGCHLD.
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    int sig = 0;
    if (sigwait(&wanted, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) _exit(0);
  }
}
