// The caller's side of `lab exec -t`: the user's terminal relayed to a pty of the machine.
//
// The pty's slave is the command's controlling terminal inside the machine (its own /dev/pts);
// here we hold only the master. While the command runs, the user's terminal (when stdin is one)
// is in raw mode, so every key, Ctrl-C included, reaches the machine's line discipline as it does
// over ssh; its window size follows SIGWINCH. The terminal is put back as it was on every way out.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "hv/kernel/partition_internal.h"
#include "hv/kernel/terminal.h"

namespace lab::hv::kernel {
namespace {

// Written by the signal handlers, read by the relay loop (a self-pipe: poll wakes up).
int g_signal_pipe = -1;

void OnSignal(int sig) {
  const int saved = errno;
  const char c = static_cast<char>(sig);
  if (g_signal_pipe >= 0) {
    ssize_t ignored = ::write(g_signal_pipe, &c, 1);
    (void)ignored;
  }
  errno = saved;
}

// Handlers for the while of the relay, the previous ones back after.
class SignalsToPipe {
 public:
  SignalsToPipe(int write_end, std::initializer_list<int> sigs) {
    g_signal_pipe = write_end;
    for (int s : sigs) {
      struct sigaction sa {};
      sa.sa_handler = OnSignal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      struct sigaction old {};
      if (::sigaction(s, &sa, &old) == 0) saved_.push_back({s, old});
    }
  }
  ~SignalsToPipe() {
    for (auto& [s, old] : saved_) ::sigaction(s, &old, nullptr);
    g_signal_pipe = -1;
  }
  SignalsToPipe(const SignalsToPipe&) = delete;
  SignalsToPipe& operator=(const SignalsToPipe&) = delete;

 private:
  std::vector<std::pair<int, struct sigaction>> saved_;
};

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Copies what the master has to stdout; false at its end (EIO: every slave closed).
bool Drain(int master) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    if (n <= 0) return false;
    if (!WriteAll(1, buf, static_cast<size_t>(n))) return false;
  }
}

}  // namespace

RawTerminal::RawTerminal(int fd) : fd_(fd) {
  if (!::isatty(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
  termios raw = saved_;
  ::cfmakeraw(&raw);
  active_ = ::tcsetattr(fd_, TCSADRAIN, &raw) == 0;
}

RawTerminal::~RawTerminal() {
  if (active_) ::tcsetattr(fd_, TCSADRAIN, &saved_);
}

bool TerminalSize(winsize* size) {
  for (int fd : {0, 1, 2})
    if (::ioctl(fd, TIOCGWINSZ, size) == 0 && (size->ws_row || size->ws_col)) return true;
  return false;
}

void RelayTerminal(int master, pid_t child) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) pipe_fds[0] = pipe_fds[1] = -1;
  UniqueFd sig_rd(pipe_fds[0]), sig_wr(pipe_fds[1]);
  // The child's end, as poll sees it (Linux 5.3+); without, the loop looks every 100 ms.
  UniqueFd child_fd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);

  SignalsToPipe signals(sig_wr.get(), {SIGWINCH, SIGTERM, SIGHUP, SIGINT, SIGQUIT});
  RawTerminal raw(0);
  bool stdin_open = true;
  for (;;) {
    pollfd fds[4] = {{master, POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}, {sig_rd.get(), POLLIN, 0},
                     {child_fd.get(), POLLIN, 0}};
    int n = ::poll(fds, 4, child_fd.valid() ? -1 : 100);
    if (n < 0 && errno != EINTR) break;
    if (n < 0) continue;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!Drain(master)) break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[4096];
      ssize_t got = ::read(0, buf, sizeof buf);
      if (got > 0) {
        if (!WriteAll(master, buf, static_cast<size_t>(got))) break;
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        // The caller's input ended (a pipe given with -t): an end of file for the command.
        stdin_open = false;
        termios t{};
        const char eof = ::tcgetattr(master, &t) == 0 ? static_cast<char>(t.c_cc[VEOF]) : '\x04';
        WriteAll(master, &eof, 1);
      }
    }
    if (fds[2].revents & POLLIN) {
      bool stop = false;
      char sigs[32];
      for (ssize_t got; (got = ::read(sig_rd.get(), sigs, sizeof sigs)) > 0;)
        for (ssize_t i = 0; i < got; ++i) {
          if (sigs[i] == SIGWINCH) {
            winsize size{};
            if (TerminalSize(&size)) ::ioctl(master, TIOCSWINSZ, &size);
          } else {
            stop = true;  // lab is told to end: the command gets its terminal's hangup
          }
        }
      if (stop) break;
    }
    bool child_ended = (fds[3].revents & POLLIN) != 0;
    if (!child_fd.valid()) {
      siginfo_t info{};
      child_ended = ::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == child;
    }
    if (child_ended) {
      // What the command printed last is still in the master's buffer.
      Drain(master);
      break;
    }
  }
}

}  // namespace lab::hv::kernel
