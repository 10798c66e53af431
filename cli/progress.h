// Progress of long work (lab up, lab down, image builds) on a terminal: one status line,
// rewritten in place as each unit of work ends,
//
//   [812/2014] made VM 'vm512' · 3.1 s elapsed · ~4 s left
//
// and cleared when the work is done. Off a terminal a Progress is not live and prints nothing:
// there the callers' plain lines, one per unit, are the record (logs, CI, tests).
#pragma once

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>

namespace lab::cli {

class Progress {
 public:
  /// `live`: the status line is drawn on `status` (a terminal); `lines` is where Print writes
  /// its permanent lines (stdout, the same terminal).
  Progress(bool live, FILE* status = stderr, FILE* lines = stdout);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Whether a status line is drawn (a terminal, and neither -v, -q nor JSON logs; ForTerminal).
  bool live() const { return live_; }
  /// The work ahead is `total` units; the clock starts now.
  void Start(int total);
  /// One unit done, described by `text` ("made VM 'vm512'"): the status line is redrawn (at most
  /// every 50 ms, and always for the last unit).
  void Step(const std::string& text);
  /// A line that stays (a failure): the status line is cleared, the line printed, the status
  /// line drawn again below it. Not live: just the line.
  void Print(const std::string& line);
  /// The work is over: the status line is cleared. Called again, or without a Start: nothing.
  void Done();

  /// The status line for `done` of `total` units after `elapsed` seconds, at most `width`
  /// columns (0 = no limit): "[812/2014] made VM 'vm512' · 3.1 s elapsed · ~4 s left". The time
  /// left is the time so far per unit times the units left; not shown before the first unit or
  /// after the last.
  static std::string Line(int done, int total, const std::string& text, double elapsed, int width = 0);
  /// Whether long work should show a live line: stderr and stdout are one terminal that can
  /// rewrite a line (TERM is not "dumb"), and the output is not -v detail, -q or JSON logs.
  static bool ForTerminal(bool verbose, bool quiet, bool json_logs);

 private:
  void Draw();   // under mu_
  void Clear();  // under mu_

  bool live_;
  FILE* status_;
  FILE* lines_;
  std::mutex mu_;
  int total_ = 0;
  int done_ = 0;
  bool shown_ = false;  // a status line is on the screen
  std::string text_;
  std::chrono::steady_clock::time_point start_{}, drawn_{};
};

}  // namespace lab::cli
