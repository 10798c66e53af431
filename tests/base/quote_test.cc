// Quoting names in the commands lab suggests (base/quote.h): a hint pasted into a POSIX shell
// runs with exactly the names written, and a cmdlet hint reads the same in PowerShell.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/quote.h"

using lab::PsArg;
using lab::PsQuote;
using lab::ShellCommand;
using lab::ShellWord;

namespace {

/// The words /bin/sh splits `line` into (each printed by printf on a line of its own).
std::vector<std::string> ShellSplits(const std::string& line) {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::close(p[0]);
    const std::string script = "printf '%s\\n' " + line;
    ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  std::vector<std::string> words;
  size_t start = 0;
  for (size_t nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1)
    words.push_back(out.substr(start, nl - start));
  return words;
}

}  // namespace

TEST_CASE("Shell words stay bare when the shell takes them literally and are single-quoted otherwise", "[base][quote]") {
  CHECK(ShellWord("nested-nat") == "nested-nat");
  CHECK(ShellWord("labs/nested-nat.yaml") == "labs/nested-nat.yaml");
  CHECK(ShellWord("DC01") == "DC01");
  CHECK(ShellWord("Nested VM 1") == "'Nested VM 1'");
  CHECK(ShellWord("135. Nested Virtualization 2022") == "'135. Nested Virtualization 2022'");
  CHECK(ShellWord("O'Brien") == "'O'\\''Brien'");
  CHECK(ShellWord("") == "''");
  CHECK(ShellWord("$HOME") == "'$HOME'");
  CHECK(ShellWord("~root") == "'~root'");
  CHECK(ShellCommand({"lab", "start", "nested-nat", "Nested VM 1"}) == "lab start nested-nat 'Nested VM 1'");
}

TEST_CASE("A POSIX shell splits a quoted command back into exactly the words it was made of", "[base][quote]") {
  const std::vector<std::string> names = {
      "Nested VM 1", "135. Nested Virtualization 2022", "O'Brien's VM", "a  b", "$(touch /tmp/x)", "`id`",
      "semi;colon", "amp&rsand", "pipe|d", "back\\slash", "glob*?[x]", "hash #1", "tab\there", "!bang", "",
      "it''s", "{brace,s}", "~tilde", "VM - (12/07/2026 08:16:34)"};
  for (const auto& n : names) {
    INFO("name: " << n);
    const std::string line = ShellCommand({"lab", "start", "some-lab", n});
    INFO("line: " << line);
    CHECK(ShellSplits(line) == std::vector<std::string>{"lab", "start", "some-lab", n});
  }
}

TEST_CASE("Cmdlet arguments stay bare only when PowerShell reads them as that very string", "[base][quote]") {
  CHECK(PsArg("middle") == "middle");
  CHECK(PsArg("DC01") == "DC01");
  CHECK(PsArg("Nested VM 1") == "'Nested VM 1'");
  CHECK(PsArg("135. Nested Virtualization 2022") == "'135. Nested Virtualization 2022'");
  CHECK(PsArg("1e3") == "'1e3'");  // bare, PowerShell reads the number 1000
  CHECK(PsArg("-Force") == "'-Force'");
  CHECK(PsArg("$env:x") == "'$env:x'");
  CHECK(PsArg("O'Brien") == "'O''Brien'");
  CHECK(PsArg("") == "''");
  CHECK(PsQuote("a\xe2\x80\x99" "b") == "'a\xe2\x80\x99\xe2\x80\x99" "b'");
}
