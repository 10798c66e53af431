// Reading little-endian fields out of a file's bytes (ELF headers, the bzImage setup header),
// for the guest kernel and the initramfs.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

namespace lab::hv::qemu {

/// The T at byte `at` of `data` (host byte order: x86_64 and aarch64 are little-endian, as the
/// formats read here), or T{} when it does not fit: a short file reads as zeros, never past its end.
template <typename T>
T Load(std::string_view data, size_t at) {
  T v{};
  if (at <= data.size() && sizeof(T) <= data.size() - at) std::memcpy(&v, data.data() + at, sizeof(T));
  return v;
}

}  // namespace lab::hv::qemu
