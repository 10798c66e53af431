// Shell completion and the man page, both read off the same CLI11 tree that `--help` prints, so
// the three never disagree.
//
//   lab completion bash|zsh|fish   prints a script for that shell; each asks `lab __complete`
//   lab __complete [--] WORD...     the candidates for the last WORD given the ones before it
//                                   (one per line; "__files__" asks the shell for file names)
//   lab __man                       the man page (roff), generated at build time as lab.1
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "base/text.h"
#include "cli/cli.h"
#include "cli/version.h"

namespace lab::cli {
namespace {

constexpr const char* kFiles = "__files__";

/// Whether an option takes a value (--state-dir DIR) rather than being a flag (--json).
bool TakesValue(const CLI::Option* o) { return o->get_items_expected_max() > 0 && !o->get_type_name().empty(); }

bool Hidden(const CLI::App* sub) { return sub->get_group().empty() || sub->get_name().rfind("__", 0) == 0; }

std::vector<const CLI::App*> Verbs(const CLI::App& app) {
  std::vector<const CLI::App*> verbs;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (!Hidden(sub)) verbs.push_back(sub);
  return verbs;
}

std::vector<const CLI::Option*> Flags(const CLI::App& app) {
  std::vector<const CLI::Option*> flags;
  for (const CLI::Option* o : app.get_options())
    if (o->nonpositional() && !o->get_group().empty() && o->get_name() != "--version") flags.push_back(o);
  return flags;
}

std::vector<const CLI::Option*> Positionals(const CLI::App& app) {
  std::vector<const CLI::Option*> pos;
  for (const CLI::Option* o : app.get_options())
    if (o->get_positional()) pos.push_back(o);
  return pos;
}

/// The lab names recorded in the state directory; nothing when it cannot be read.
std::vector<std::string> LabNames(const Globals& g) {
  std::vector<std::string> names;
  auto e = engine::Engine::Open(EngineOptionsFor(g));
  if (!e) return names;
  for (const auto& l : (*e)->Labs()) names.push_back(l.name);
  return names;
}

/// The machines (hosts and VMs) recorded for lab `arg` (a name or a file).
std::vector<std::string> MachineNames(const Globals& g, const std::string& arg) {
  std::vector<std::string> names;
  auto e = engine::Engine::Open(EngineOptionsFor(g));
  if (!e) return names;
  auto snap = (*e)->store().Load(LabName(arg));
  if (!snap) return names;
  for (const auto& [key, r] : snap->resources)
    if (r.kind == "partition") names.push_back(key.substr(key.find('/') + 1));
  return names;
}

/// The candidates for the last of `words` (the words after `lab`, the last one being completed).
std::vector<std::string> Complete(const CLI::App& app, const Globals& g, const std::vector<std::string>& words) {
  const std::string cur = words.empty() ? "" : words.back();
  const CLI::App* verb = nullptr;
  std::vector<std::string> positionals;  // the positional words of the verb typed so far
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const std::string& w = words[i];
    if (w == "--") continue;
    if (!w.empty() && w[0] == '-') {
      // An option that takes a value swallows the next word (--state-dir DIR, -j 4).
      const CLI::App& scope = verb ? *verb : app;
      const CLI::Option* o = nullptr;
      try {
        o = scope.get_option_no_throw(w.substr(0, w.find('=')));
        if (!o && verb) o = app.get_option_no_throw(w.substr(0, w.find('=')));
      } catch (...) {
      }
      if (o && TakesValue(o) && w.find('=') == std::string::npos) ++i;
      continue;
    }
    if (!verb) {
      for (const CLI::App* v : Verbs(app))
        if (v->get_name() == w) verb = v;
      continue;
    }
    positionals.push_back(w);
  }
  std::vector<std::string> out;
  if (!cur.empty() && cur[0] == '-') {
    for (const CLI::App* scope : {verb, static_cast<const CLI::App*>(&app)}) {
      if (!scope) continue;
      for (const CLI::Option* o : Flags(*scope)) {
        for (const std::string& l : o->get_lnames()) out.push_back("--" + l);
        for (const std::string& s : o->get_snames()) out.push_back("-" + s);
      }
    }
    if (!verb) out.push_back("--version");
    std::set<std::string> seen;  // -h/--help is both the verb's and lab's
    out.erase(std::remove_if(out.begin(), out.end(), [&](const std::string& o) { return !seen.insert(o).second; }),
              out.end());
    return out;
  }
  if (!verb) {
    for (const CLI::App* v : Verbs(app)) out.push_back(v->get_name());
    return out;
  }
  auto pos = Positionals(*verb);
  if (pos.empty()) return out;
  // After `lab exec LAB MACHINE` come the command's words, the machine's business, not lab's.
  if (verb->get_name() == "exec" && positionals.size() >= pos.size()) return out;
  const CLI::Option* slot = positionals.size() < pos.size() ? pos[positionals.size()] : pos.back();
  const std::string what = slot->get_name();
  if (what == "FILE") return {kFiles};
  if (what == "LAB") {
    out = LabNames(g);
    out.push_back(kFiles);
    return out;
  }
  if (what == "MACHINE" && !positionals.empty()) return MachineNames(g, positionals[0]);
  if (what == "STATE") return {"down", "up"};
  return out;
}

const char* kBash = R"(# bash completion for lab (lab completion bash)
_lab() {
  local cur=${COMP_WORDS[COMP_CWORD]} IFS=$'\n' out
  out=$(lab __complete -- "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
  COMPREPLY=()
  if [[ $'\n'$out$'\n' == *$'\n'__files__$'\n'* ]]; then
    out=${out//__files__/}
    COMPREPLY=($(compgen -f -- "$cur"))
    compopt -o filenames 2>/dev/null
  fi
  COMPREPLY+=($(compgen -W "$out" -- "$cur"))
}
complete -F _lab lab
)";

const char* kZsh = R"(#compdef lab
# zsh completion for lab (lab completion zsh)
_lab() {
  local -a out
  out=("${(@f)$(lab __complete -- "${(@)words[2,CURRENT]}" 2>/dev/null)}")
  if (( ${out[(Ie)__files__]} )); then
    out=("${(@)out:#__files__}")
    _files
  fi
  (( ${#out} )) && compadd -a out
}
compdef _lab lab
)";

const char* kFish = R"(# fish completion for lab (lab completion fish)
function __lab_complete
    set -l words (commandline -opc)[2..-1] (commandline -ct)
    set -l out (lab __complete -- $words 2>/dev/null)
    if contains -- __files__ $out
        __fish_complete_path (commandline -ct)
    end
    for c in $out
        test "$c" != __files__; and echo $c
    end
end
complete -c lab -f -a '(__lab_complete)'
)";

// ---- the man page ----

std::string Roff(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}

std::string OptionLine(const CLI::Option* o) {
  std::string names;
  for (const std::string& s : o->get_snames()) names += (names.empty() ? "" : ", ") + ("\\fB\\-" + s + "\\fR");
  for (const std::string& l : o->get_lnames()) names += (names.empty() ? "" : ", ") + ("\\fB\\-\\-" + Roff(l) + "\\fR");
  if (TakesValue(o)) names += " \\fI" + Roff(o->get_type_name().empty() ? "VALUE" : o->get_type_name()) + "\\fR";
  return ".TP\n" + names + "\n" + Roff(o->get_description()) + "\n";
}

std::string Usage(const CLI::App* verb) {
  std::string u = "\\fBlab " + Roff(verb->get_name()) + "\\fR";
  if (!Flags(*verb).empty()) u += " [\\fIOPTIONS\\fR]";
  for (const CLI::Option* p : Positionals(*verb)) {
    std::string n = "\\fI" + Roff(p->get_name()) + "\\fR";
    if (p->get_items_expected_max() > 1) n += "...";
    u += " " + (p->get_required() ? n : "[" + n + "]");
  }
  return u;
}

std::string ManPage(const CLI::App& app) {
  std::string m;
  m += ".TH LAB 1 \"\" \"lab " + std::string(kVersion) + "\" \"User Commands\"\n";
  m += ".SH NAME\nlab \\- " + Roff(app.get_description().substr(app.get_description().find(':') + 2)) + "\n";
  m += ".SH SYNOPSIS\n\\fBlab\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]\n";
  m += ".SH DESCRIPTION\n"
       "lab brings up nested virtualization labs from a checked\\-in YAML file: hosts, Hyper\\-V virtual switches "
       "(external, internal, private, SET), VMs and, inside a VM whose virtualization extensions are exposed, "
       "nested switches and VMs, with NAT subnets, gateways, static addresses and DNS.\n"
       ".PP\n\\fBlab plan\\fR shows what will change, \\fBlab up\\fR makes it real and is idempotent, "
       "\\fBlab check\\fR proves the lab behaves, \\fBlab down\\fR removes what the lab made and nothing else.\n";
  m += ".SH GLOBAL OPTIONS\n";
  for (const CLI::Option* o : Flags(app)) m += OptionLine(o);
  m += ".TP\n\\fB\\-\\-version\\fR\nprint the version and the git commit lab was built from\n";
  m += ".SH COMMANDS\n";
  for (const CLI::App* verb : Verbs(app)) {
    m += ".SS " + Roff(verb->get_name()) + "\n" + Usage(verb) + "\n.PP\n" + Roff(verb->get_description()) + "\n";
    for (const CLI::Option* p : Positionals(*verb))
      m += ".TP\n\\fI" + Roff(p->get_name()) + "\\fR\n" + Roff(p->get_description()) + "\n";
    for (const CLI::Option* o : Flags(*verb))
      if (o->get_name() != "--help") m += OptionLine(o);
  }
  m += ".SH ENVIRONMENT\n"
       ".TP\n\\fBLAB_STATE_DIR\\fR\nthe state directory (SQLite records, disks); default /var/lib/lab\n"
       ".TP\n\\fBLAB_RUN_DIR\\fR\nthe runtime directory (namespace handles); default /run/lab\n"
       ".TP\n\\fBLAB_INIT\\fR\nthe lab\\-init binary partitions run; default: next to lab, else "
       "\\&../libexec/lab/lab\\-init from it\n"
       ".TP\n\\fBNO_COLOR\\fR\nno colours in the output\n";
  m += ".SH EXIT STATUS\n"
       ".TP\n0\nsuccess; for \\fBcheck\\fR every check passed; for \\fBvalidate\\fR the file is valid\n"
       ".TP\n1\nan error, an invalid file, a failed check or a refused plan\n"
       ".TP\n2\na usage error\n"
       ".PP\n\\fBlab exec\\fR passes the command's exit code through.\n";
  m += ".SH FILES\n.TP\n/usr/share/doc/lab/examples/\nexample labs\n"
       ".TP\n/usr/share/doc/lab/rules.md\nevery rule of nested virtualization lab enforces, with its source\n";
  m += ".SH SEE ALSO\n\\fBip\\fR(8), \\fBnft\\fR(8), \\fBdnsmasq\\fR(8)\n";
  return m;
}

}  // namespace

void AddCompletion(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("completion", "print a shell completion script: lab completion bash|zsh|fish");
  static std::string shell;
  cmd->add_option("SHELL", shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  cmd->footer(
      "bash: lab completion bash > /etc/bash_completion.d/lab (the .deb installs all three)\n"
      "zsh:  lab completion zsh > \"${fpath[1]}/_lab\"\nfish: lab completion fish > ~/.config/fish/completions/lab.fish");
  cmd->callback([] {
    std::fputs(shell == "bash" ? kBash : shell == "zsh" ? kZsh : kFish, stdout);
    g_exit_code = 0;
  });

  auto* man = app.add_subcommand("__man", "");
  man->group("");
  man->callback([&app] {
    std::fputs(ManPage(app).c_str(), stdout);
    g_exit_code = 0;
  });
}

int RunComplete(const CLI::App& app, const Globals& g, std::vector<std::string> words) {
  if (!words.empty() && words.front() == "--") words.erase(words.begin());
  for (const std::string& c : Complete(app, g, words)) std::printf("%s\n", c.c_str());
  return 0;
}

}  // namespace lab::cli
