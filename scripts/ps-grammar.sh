#!/usr/bin/env bash
# Installs the PowerShell grammar check the export tests use (tests/tools/ps_grammar.mjs):
# node and npm (Debian's nodejs and npm where missing), then web-tree-sitter and tree-sitter-powershell (pinned) from the npm
# registry into BUILD_DIR/ps-grammar. Without it the grammar test prints SKIP; the export's other
# tests still run. Safe to run again: nothing is fetched once the pinned versions are there.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BUILD_DIR:-build}/ps-grammar"
want="web-tree-sitter@0.25.10 tree-sitter-powershell@0.26.4"
if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$want" ]]; then exit 0; fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "lab: node and npm are missing; run this as root to install them" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$dir"
# --ignore-scripts: the grammar's WebAssembly build is shipped in the package; no native build.
(cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --silent $want)
echo "$want" > "$dir/.installed"
