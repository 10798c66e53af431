#include "base/quote.h"

namespace lab {
namespace {

bool ShellSafe(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '@' ||
         c == '%' || c == '+' || c == '=' || c == ':' || c == ',' || c == '.' || c == '/' || c == '-';
}

}  // namespace

std::string ShellWord(std::string_view word) {
  bool safe = !word.empty();
  for (char c : word) safe = safe && ShellSafe(c);
  if (safe) return std::string(word);
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";  // close, an escaped quote, reopen
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string ShellCommand(std::initializer_list<std::string_view> words) {
  std::string out;
  for (std::string_view w : words) {
    if (!out.empty()) out += ' ';
    out += ShellWord(w);
  }
  return out;
}

std::string PsQuote(std::string_view text) {
  std::string out = "'";
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\'') {
      out += "''";
      continue;
    }
    // PowerShell also reads U+2018..U+201B as single quotes; doubling keeps each one literal.
    if (static_cast<unsigned char>(c) == 0xe2 && i + 2 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x80) {
      auto third = static_cast<unsigned char>(text[i + 2]);
      if (third >= 0x98 && third <= 0x9b) {
        std::string quote(text.substr(i, 3));
        out += quote + quote;
        i += 2;
        continue;
      }
    }
    out += c;
  }
  return out + "'";
}

std::string PsArg(std::string_view text) {
  const char first = text.empty() ? '\0' : text.front();
  bool bare = (first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z') || first == '_';
  for (char c : text)
    bare = bare && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '-');
  return bare ? std::string(text) : PsQuote(text);
}

}  // namespace lab
