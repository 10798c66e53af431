// A PowerShell grammar check for the scripts `lab export` writes: parses each file given with
// tree-sitter's PowerShell grammar (web-tree-sitter and tree-sitter-powershell from npm, installed
// by scripts/ps-grammar.sh) and prints FILE:LINE:COL for every syntax error or missing token.
// Exit 0 when every file parses cleanly, 1 otherwise, 2 when the grammar cannot be loaded.
// Usage: node ps_grammar.mjs NODE_MODULES_DIR FILE.ps1...
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [modules, ...files] = process.argv.slice(2);
let Parser, Language;
try {
  const require = createRequire(join(modules, 'web-tree-sitter', 'package.json'));
  ({ Parser, Language } = await import(require.resolve('web-tree-sitter')));
  await Parser.init();
} catch (e) {
  console.error(`cannot load web-tree-sitter from ${modules}: ${e.message}`);
  process.exit(2);
}
const language = await Language.load(join(modules, 'tree-sitter-powershell', 'tree-sitter-powershell.wasm'));
const parser = new Parser();
parser.setLanguage(language);

let bad = 0;
for (const file of files) {
  const tree = parser.parse(readFileSync(file, 'utf8'));
  const walk = (node) => {
    if (node.isError || node.isMissing) {
      const p = node.startPosition;
      console.log(`${file}:${p.row + 1}:${p.column + 1}: ${node.isMissing ? 'missing ' + node.type : 'syntax error'}: ` +
                  JSON.stringify(node.text.slice(0, 60)));
      ++bad;
      return;
    }
    if (node.hasError) for (const child of node.children) walk(child);
  };
  walk(tree.rootNode);
}
process.exit(bad ? 1 : 0);
