// Quoting names for the commands lab suggests in its messages, so a user can paste them.
//
// Names are Hyper-V's ("Nested VM 1", "135. Nested Virtualization 2022", "O'Brien's VM"): a hint
// such as `lab start nested-nat Nested VM 1` would run the wrong command. Every hint that names
// an object builds its command line with these helpers: ShellCommand for `lab ...` (POSIX shell),
// PsArg/PsQuote for cmdlets (PowerShell).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace lab {

/// `word` as one POSIX shell word: as is when it is not empty and every character is one the
/// shell takes literally anywhere in a word ([A-Za-z0-9_@%+=:,./-]); else in single quotes, each
/// ' written as '\'' ("Nested VM 1" -> 'Nested VM 1', "it's" -> 'it'\''s', "" -> '').
std::string ShellWord(std::string_view word);
/// The words as one command line a POSIX shell splits back into exactly these words:
/// ShellCommand({"lab", "start", "nested-nat", "Nested VM 1"}) -> lab start nested-nat 'Nested VM 1'.
std::string ShellCommand(std::initializer_list<std::string_view> words);
/// `text` as a single-quoted PowerShell string literal: 'O''Brien'. Every quote character
/// PowerShell accepts as a single quote (' and U+2018..U+201B) is doubled, so the literal is
/// inert: no `$`, backtick or subexpression inside it is ever evaluated.
std::string PsQuote(std::string_view text);
/// A cmdlet argument: as is when PowerShell reads it as that very bare string (a letter or '_',
/// then [A-Za-z0-9_.-]; a leading digit could be read as a number: 1e3), else PsQuote(text):
/// -VMName middle, -VMName 'Nested VM 1', -VMName '135. Nested Virtualization 2022'.
std::string PsArg(std::string_view text);

}  // namespace lab
