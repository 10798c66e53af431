// The caller's terminal, as `lab exec -t` uses it (hv/kernel/terminal.cc): its window size and
// raw mode for the while a command elsewhere owns it.
#pragma once

#include <termios.h>

struct winsize;

namespace lab::hv::kernel {

/// The window size of the caller's terminal (stdin, stdout or stderr); false when none is one.
bool TerminalSize(struct winsize* size);

/// The terminal `fd` in raw mode for the while (every key, Ctrl-C included, goes to the command,
/// as over ssh); as it was again when this goes. Nothing when `fd` is not a terminal.
class RawTerminal {
 public:
  explicit RawTerminal(int fd);
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

}  // namespace lab::hv::kernel
