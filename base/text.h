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
