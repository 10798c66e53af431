// `lab exec` as docker and containerlab users expect it: a real terminal inside the machine
// when lab runs on one (its own /dev/pts, window size and its changes passed on, the user's
// terminal put back as it was), and -e, -w, -u.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <regex>
#include <string>

#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

/// `lab ARGS` on a pseudo-terminal the test makes (as a user's terminal emulator does), with
/// window size `rows` x `cols`. `on_output` sees everything printed so far each time more comes
/// and may act on the terminal (its master); the run ends when lab exits.
struct TerminalRun {
  int code = -1;
  std::string out;
  termios before{}, after{};  // the terminal's settings before lab started and after it exited
};

TerminalRun OnTerminal(const Sandbox& sb, const std::string& args, unsigned short rows, unsigned short cols,
                       const std::function<void(int master, const std::string& out)>& on_output = {}) {
  const std::string cmd = "exec env LAB_STATE_DIR=" + sb.state + " LAB_RUN_DIR=" + sb.run + " " + LAB_BINARY_DIR +
                          "/lab --no-color " + args;
  winsize size{};
  size.ws_row = rows;
  size.ws_col = cols;
  int master = -1;
  TerminalRun r;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &size);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(::tcgetattr(master, &r.before) == 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    pollfd p{master, POLLIN, 0};
    int n = ::poll(&p, 1, 200);
    if (n > 0) {
      char buf[4096];
      ssize_t got = ::read(master, buf, sizeof buf);
      if (got <= 0) break;  // EIO: lab and everything it ran closed the terminal
      r.out.append(buf, static_cast<size_t>(got));
      if (on_output) on_output(master, r.out);
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      pid = -1;
      // What is still buffered.
      for (char buf[4096]; ::poll(&p, 1, 0) > 0;) {
        ssize_t got = ::read(master, buf, sizeof buf);
        if (got <= 0) break;
        r.out.append(buf, static_cast<size_t>(got));
      }
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);  // lab, which this test started
      break;
    }
  }
  if (pid > 0) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  CHECK(::tcgetattr(master, &r.after) == 0);
  ::close(master);
  return r;
}

}  // namespace

TEST_CASE("lab exec on a terminal gives the command a terminal of the machine's own /dev/pts", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + lab::testing::Src("labs/nested-nat.yaml")).code == 0);
  InitPids(sb, "nested-nat");

  // tty names the terminal; the machine's /dev/pts (a devpts of its own) lists it; stty sees the
  // window size of ours; the command's exit code is lab's.
  TerminalRun r = OnTerminal(sb, "exec nested-nat nested1 -- sh -c 'tty; ls /dev/pts; stty size; exit 5'", 33, 101);
  INFO(r.out);
  CHECK(r.code == 5);
  std::smatch m;
  REQUIRE(std::regex_search(r.out, m, std::regex(R"(/dev/pts/(\d+)\r?\n)")));
  const std::string listed = m.suffix();
  CHECK(std::regex_search(listed, std::regex("(^|\\s)" + m[1].str() + "(\\s|$)")));
  CHECK(r.out.find("33 101") != std::string::npos);
  CHECK(r.out.find("not a tty") == std::string::npos);
  // Raw mode while it ran, and the terminal as it was after.
  CHECK((r.after.c_lflag & (ICANON | ECHO | ISIG)) == (r.before.c_lflag & (ICANON | ECHO | ISIG)));
  CHECK(r.after.c_lflag == r.before.c_lflag);
  CHECK(r.after.c_iflag == r.before.c_iflag);
  CHECK(r.after.c_oflag == r.before.c_oflag);

  // The control: -T, the same terminal, no terminal inside.
  TerminalRun plain = OnTerminal(sb, "exec -T nested-nat nested1 -- tty", 33, 101);
  INFO(plain.out);
  CHECK(plain.code == 1);  // tty: "not a tty"
  CHECK(plain.out.find("not a tty") != std::string::npos);

  // The window grows while the command runs: it gets SIGWINCH and the new size.
  bool resized = false;
  TerminalRun winch = OnTerminal(
      sb, "exec nested-nat middle -- sh -c 'trap \"stty size; exit 0\" WINCH; echo ready; while :; do sleep 0.1; done'",
      24, 80, [&resized](int master, const std::string& out) {
        if (resized || out.find("ready") == std::string::npos) return;
        winsize bigger{};
        bigger.ws_row = 50;
        bigger.ws_col = 132;
        ::ioctl(master, TIOCSWINSZ, &bigger);  // the kernel signals lab, the foreground of our terminal
        resized = true;
      });
  INFO(winch.out);
  CHECK(resized);
  CHECK(winch.code == 0);
  CHECK(winch.out.find("50 132") != std::string::npos);

  // Typing reaches the command: a line of input, read inside, echoed back by the machine's terminal.
  bool typed = false;
  TerminalRun input = OnTerminal(sb, "exec nested-nat middle -- sh -c 'echo ready; read line; echo \"got <$line>\"'", 24,
                                 80, [&typed](int master, const std::string& out) {
                                   if (typed || out.find("ready") == std::string::npos) return;
                                   const char text[] = "hello there\r";
                                   CHECK(::write(master, text, sizeof text - 1) == sizeof text - 1);
                                   typed = true;
                                 });
  INFO(input.out);
  CHECK(input.code == 0);
  CHECK(input.out.find("got <hello there>") != std::string::npos);
  REQUIRE(sb.Lab("down nested-nat").code == 0);
}

TEST_CASE("lab exec -e sets variables, -w the working directory and -u the user from the machine's /etc/passwd",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + lab::testing::Src("labs/nested-nat.yaml")).code == 0);
  InitPids(sb, "nested-nat");

  Run env = sb.Lab("exec -e GREETING=hello -e 'SPACED=a b' -e HOME=/srv nested-nat nested1 env", "LAB_PASSED=from-lab");
  INFO(env.out);
  CHECK(env.code == 0);
  CHECK(env.out.find("GREETING=hello\n") != std::string::npos);
  CHECK(env.out.find("SPACED=a b\n") != std::string::npos);
  CHECK(env.out.find("HOME=/srv\n") != std::string::npos);   // over the default
  CHECK(env.out.find("HOME=/root") == std::string::npos);
  CHECK(env.out.find("LAB_PASSED") == std::string::npos);  // lab's environment stays lab's...
  Run passed = sb.Lab("exec -e LAB_PASSED nested-nat nested1 env", "LAB_PASSED=from-lab");
  CHECK(passed.out.find("LAB_PASSED=from-lab\n") != std::string::npos);  // ...unless passed by name
  Run bad = sb.Lab("exec -e =x nested-nat nested1 env");
  CHECK(bad.code == 2);
  CHECK(bad.out.find("give VAR=VALUE") != std::string::npos);

  Run pwd = sb.Lab("exec -w /etc nested-nat nested1 pwd");
  CHECK(pwd.code == 0);
  CHECK(pwd.out == "/etc\n");
  CHECK(sb.Lab("exec nested-nat nested1 pwd").out == "/\n");
  Run nowhere = sb.Lab("exec -w /no/such/dir nested-nat nested1 pwd");
  CHECK(nowhere.code == 126);
  CHECK(nowhere.out.find("/no/such/dir") != std::string::npos);

  // A user of the machine's own /etc/passwd (read there: the expectation comes from the file).
  Run entry = sb.Lab("exec nested-nat nested1 -- sh -c 'grep -m1 -v \"^root:\" /etc/passwd'");
  REQUIRE(entry.code == 0);
  auto fields = lab::Split(lab::Trim(entry.out), ':');
  REQUIRE(fields.size() >= 7);
  const std::string name = fields[0], uid = fields[2], gid = fields[3];
  Run id = sb.Lab("exec -u " + name + " nested-nat nested1 -- sh -c 'id -u; id -g; echo $HOME $USER'");
  INFO(id.out);
  CHECK(id.code == 0);
  CHECK(id.out == uid + "\n" + gid + "\n" + (fields[5].empty() ? "/" : fields[5]) + " " + name + "\n");
  // By uid, and a uid the file does not have (gid 0, as docker exec -u does).
  CHECK(sb.Lab("exec -u " + uid + " nested-nat nested1 id -u").out == uid + "\n");
  CHECK(sb.Lab("exec -u 4242 nested-nat nested1 -- sh -c 'id -u; id -g'").out == "4242\n0\n");
  Run nosuch = sb.Lab("exec -u no-such-user nested-nat nested1 id -u");
  CHECK(nosuch.code == 1);
  CHECK(nosuch.out.find("no user 'no-such-user' in the machine's /etc/passwd") != std::string::npos);
  // The user's rights are the user's: root's home is not theirs to write.
  CHECK(sb.Lab("exec -u 4242 nested-nat nested1 touch /root/x").code != 0);

  // The terminal is the user's too.
  TerminalRun t = OnTerminal(sb, "exec -u 4242 -w /tmp nested-nat nested1 -- sh -c 'stat -c %u $(tty); pwd'", 24, 80);
  INFO(t.out);
  CHECK(t.code == 0);
  CHECK(t.out.find("4242\r\n/tmp") != std::string::npos);
  REQUIRE(sb.Lab("down nested-nat").code == 0);
}
