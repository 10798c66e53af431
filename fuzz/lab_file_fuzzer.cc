// libFuzzer target: arbitrary bytes as a lab file, through the reader and validator
// (schema::Parse). Built with -DLAB_FUZZ=ON (clang, ASan + UBSan); see docs/fuzzing.md.
//
// Besides the sanitizers' findings, the reader's contract is checked: it never throws, a lab is
// returned exactly when there is no diagnostic, every diagnostic has a message and a position
// inside the input, and no diagnostic is an "internal error" (which is how the reader reports
// an exception it did not expect).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "schema/lab.h"

namespace {

[[noreturn]] void Fail(const char* why, const std::string& detail) {
  __builtin_printf("lab_file_fuzzer: %s: %s\n", why, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  lab::schema::LoadResult r = lab::schema::Parse(text, "fuzz.yaml");
  if (r.lab.has_value() == r.HasErrors()) Fail("lab and errors disagree", std::to_string(r.diagnostics.size()));
  int lines = 1;
  for (char c : text) lines += c == '\n';
  for (const auto& d : r.diagnostics) {
    if (d.message.empty()) Fail("empty message", d.ToString());
    if (d.message.rfind("internal error while reading", 0) == 0) Fail("reader bug", d.ToString());
    if (d.loc.line > lines + 1) Fail("position past the end of the input", d.ToString());
    if (d.loc.line < 1 || d.loc.col < 1) Fail("no position for a diagnostic of text", d.ToString());
  }
  return 0;
}
