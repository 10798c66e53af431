// Small text helpers shared by every layer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lab {

/// 64-bit FNV-1a: stable across runs and machines (used for spec hashes and derived names).
uint64_t Fnv1a64(std::string_view data);
/// `n` lower-case hex digits of `value` (n <= 16).
std::string Hex(uint64_t value, int n);

// Kernel-facing names derived from names as Hyper-V takes them ("Ethernet 2", "135. Nested
// Virtualization 2022"). Each is the name itself when the kernel takes it as is (so labs named
// [a-z0-9-] keep every kernel name they had), else a documented, predictable mapping; the user's
// name is what every output shows (docs/names.md).
/// An interface name (IFNAMSIZ: at most 15 bytes, no whitespace, '/' or ':'): the name when it
/// is [A-Za-z0-9][A-Za-z0-9_.-]{0,14}; else every run of other characters becomes one '-'
/// ("Ethernet 2" -> "Ethernet-2"); longer than 15, its first 10 characters, '-' and 4 hex
/// digits of a hash of the whole name ("Network Adapter 2" -> "Network-Ad-" + 4 hex digits).
std::string KernelIfname(std::string_view name);
/// An interface altname (at most 127 bytes, no whitespace, '/' or ':'; not "." or ".."): every
/// such character becomes '-'; longer than 127, its first 118 and '-' + 8 hex digits of a hash.
std::string KernelAltname(std::string_view name);
/// A directory or cgroup name: the name when it is [A-Za-z0-9_-][A-Za-z0-9_.-]{0,63} and not
/// "cgroup.*"; else runs of other characters (dots too) as one '-', trimmed, cut to 40, '-' + 8 hex digits
/// of a hash ("135. Nested Virtualization 2022" -> "135-Nested-Virtualization-2022-<hash>").
std::string KernelPathName(std::string_view name);
/// `text` with every quoted occurrence of `from` ('Ethernet-2') as `to` ('Ethernet 2'): a lower
/// layer's message about a derived kernel name, told with the name the user wrote.
std::string ReplaceQuoted(std::string_view text, std::string_view from, std::string_view to);
/// Levenshtein distance, for "did you mean" hints.
size_t EditDistance(std::string_view a, std::string_view b);
/// The candidate closest to `word` if it is close enough to be a plausible typo.
std::optional<std::string> ClosestMatch(std::string_view word, const std::vector<std::string>& candidates);
/// "2GiB", "512MiB", "1024KiB", "4096" (bytes) -> bytes.
std::optional<uint64_t> ParseSize(std::string_view text);
/// Bytes as the largest exact unit: 2147483648 -> "2GiB".
std::string FormatSize(uint64_t bytes);
std::vector<std::string> Split(std::string_view text, char sep);
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
std::string Trim(std::string_view text);
/// Reads a whole file; nullopt when it cannot be read.
std::optional<std::string> ReadFile(const std::string& path);
/// Writes a whole file (created or truncated), then renames into place atomically.
bool WriteFileAtomic(const std::string& path, std::string_view content);

}  // namespace lab
