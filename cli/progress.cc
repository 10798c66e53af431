#include "cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace lab::cli {

namespace {

constexpr auto kRedrawEvery = std::chrono::milliseconds(50);

/// Columns of the terminal on `f`; 0 when unknown.
int Columns(FILE* f) {
  struct winsize ws {};
  if (::ioctl(::fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

/// Display columns of UTF-8 text (each code point one column: names are Latin or CJK-free
/// enough for a status line; the cut below only has to keep the line from wrapping).
size_t Width(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

/// `s` cut to `cols` display columns, on a code point boundary, with "…" where it was cut.
std::string Cut(const std::string& s, size_t cols) {
  if (cols == 0 || Width(s) <= cols) return s;
  size_t n = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (n + 1 >= cols) break;
      ++n;
    }
  }
  return s.substr(0, i) + "…";
}

std::string Seconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}

}  // namespace

Progress::Progress(bool live, FILE* status, FILE* lines) : live_(live), status_(status), lines_(lines) {}

Progress::~Progress() { Done(); }

bool Progress::ForTerminal(bool verbose, bool quiet, bool json_logs) {
  if (verbose || quiet || json_logs) return false;
  if (!::isatty(STDERR_FILENO) || !::isatty(STDOUT_FILENO)) return false;
  const char* term = std::getenv("TERM");
  return !(term && std::string_view(term) == "dumb");
}

std::string Progress::Line(int done, int total, const std::string& text, double elapsed, int width) {
  std::string line = "[" + std::to_string(done) + "/" + std::to_string(total) + "] " + text + " · " +
                     Seconds(elapsed) + " elapsed";
  if (done > 0 && done < total) {
    double left = elapsed / done * (total - done);
    line += " · ~" + (left < 1 ? std::string("1 s") : left < 60 ? std::to_string(static_cast<int>(left + 0.5)) + " s"
                                                                  : Seconds(left)) +
            " left";
  }
  // One column short of the width: a line that fills it wraps on some terminals.
  return Cut(line, width > 1 ? static_cast<size_t>(width - 1) : 0);
}

void Progress::Start(int total) {
  std::lock_guard lock(mu_);
  total_ = total;
  done_ = 0;
  text_.clear();
  start_ = std::chrono::steady_clock::now();
  drawn_ = {};
}

void Progress::Step(const std::string& text) {
  std::lock_guard lock(mu_);
  ++done_;
  text_ = text;
  if (!live_) return;
  auto now = std::chrono::steady_clock::now();
  if (done_ < total_ && shown_ && now - drawn_ < kRedrawEvery) return;
  Draw();
}

void Progress::Print(const std::string& line) {
  std::lock_guard lock(mu_);
  const bool was = shown_;
  if (was) Clear();
  std::fprintf(lines_, "%s\n", line.c_str());
  std::fflush(lines_);
  if (was) Draw();
}

void Progress::Done() {
  std::lock_guard lock(mu_);
  if (shown_) Clear();
}

void Progress::Draw() {
  drawn_ = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(drawn_ - start_).count();
  std::string line = Line(done_, total_, text_, elapsed, Columns(status_));
  // Back to the line's start, the line, and the rest of the old one erased.
  std::fprintf(status_, "\r%s\033[K", line.c_str());
  std::fflush(status_);
  shown_ = true;
}

void Progress::Clear() {
  std::fprintf(status_, "\r\033[K");
  std::fflush(status_);
  shown_ = false;
}

}  // namespace lab::cli
