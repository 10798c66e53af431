#include "base/text.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

namespace lab {

uint64_t Fnv1a64(std::string_view data) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Hex(uint64_t value, int n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(n, '0');
  for (int i = n - 1; i >= 0; --i, value >>= 4) out[i] = kDigits[value & 15];
  return out;
}

std::string ReplaceQuoted(std::string_view text, std::string_view from, std::string_view to) {
  const std::string needle = "'" + std::string(from) + "'";
  const std::string with = "'" + std::string(to) + "'";
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = text.find(needle, at)) != std::string_view::npos; at = hit + needle.size())
    out.append(text.substr(at, hit - at)).append(with);
  return out.append(text.substr(at));
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                            std::tolower(static_cast<unsigned char>(b[j - 1]))
                        ? 0
                        : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::string> ClosestMatch(std::string_view word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::optional<uint64_t> ParseSize(std::string_view text) {
  std::string t = Trim(text);
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  if (digits == 0) return std::nullopt;
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + digits, n);
  if (ec != std::errc()) return std::nullopt;
  std::string unit = Trim(std::string_view(t).substr(digits));
  uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "KB") mult = 1ull << 10;
  else if (unit == "MiB" || unit == "MB") mult = 1ull << 20;
  else if (unit == "GiB" || unit == "GB") mult = 1ull << 30;
  else if (unit == "TiB" || unit == "TB") mult = 1ull << 40;
  else return std::nullopt;
  if (n > UINT64_MAX / mult) return std::nullopt;
  return n * mult;
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (u < 4 && bytes != 0 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + kUnits[u];
}

std::vector<std::string> Split(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t pos = text.find(sep, start);
    out.emplace_back(text.substr(start, pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string Trim(std::string_view text) {
  size_t b = 0, e = text.size();
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
  return std::string(text.substr(b, e - b));
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFileAtomic(const std::string& path, std::string_view content) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    off += static_cast<size_t>(n);
  }
  ::close(fd);
  return ::rename(tmp.c_str(), path.c_str()) == 0;
}

namespace {

bool IsKernelPlain(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

/// Runs of characters outside [A-Za-z0-9_.-] (without '.' unless `keep_dots`) as one '-',
/// trimmed of '-' at both ends.
std::string Dashed(std::string_view name, bool keep_dots) {
  std::string out;
  bool gap = false;
  for (char c : name) {
    if (!IsKernelPlain(c) || (c == '.' && !keep_dots)) {
      gap = true;
      continue;
    }
    if (gap && !out.empty()) out.push_back('-');
    gap = false;
    out.push_back(c);
  }
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

bool IsAlnumAscii(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

std::string KernelIfname(std::string_view name) {
  bool plain = !name.empty() && name.size() <= 15 && IsAlnumAscii(name[0]);
  for (char c : name) plain = plain && IsKernelPlain(c);
  if (plain) return std::string(name);
  std::string d = Dashed(name, true);
  if (!d.empty() && d.size() <= 15 && IsAlnumAscii(d[0])) return d;  // the name itself when plain
  std::string head = d.substr(0, 10);
  while (!head.empty() && !IsAlnumAscii(head.back())) head.pop_back();
  if (head.empty() || !IsAlnumAscii(head[0])) head = "if";
  return head + "-" + Hex(Fnv1a64(name), 4);
}

std::string KernelAltname(std::string_view name) {
  std::string out(name);
  for (char& c : out)
    if (c == '/' || c == ':' || c == ' ' || (c >= '\t' && c <= '\r') || static_cast<unsigned char>(c) == 0xa0) c = '-';
  if (out == "." || out == "..") out = "-" + out;
  if (out.size() > 127) out = out.substr(0, 118) + "-" + Hex(Fnv1a64(name), 8);
  return out;
}

std::string KernelPathName(std::string_view name) {
  bool plain = !name.empty() && name.size() <= 64 && name[0] != '.' && name.rfind("cgroup.", 0) != 0;
  for (char c : name) plain = plain && IsKernelPlain(c);
  if (plain) return std::string(name);
  std::string d = Dashed(name, false).substr(0, 40);
  while (!d.empty() && (d.front() == '.' || d.front() == '-')) d.erase(d.begin());
  while (!d.empty() && (d.back() == '.' || d.back() == '-')) d.pop_back();
  return (d.empty() ? std::string("m") : d) + "-" + Hex(Fnv1a64(name), 8);
}

}  // namespace lab
