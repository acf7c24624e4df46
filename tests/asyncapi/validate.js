// Validates AsyncAPI documents with the official parser (@asyncapi/parser), for tests/test_asyncapi.py.
// Usage: node validate.js FILE...   Prints one JSON object per file:
//   {"file": ..., "valid": bool, "version": ..., "errors": [...], "warnings": [...]}
// Exit code: 0 when every file is a valid document (no error diagnostics), 1 otherwise, 2 on a usage error.
"use strict";

const fs = require("node:fs");
const { Parser, DiagnosticSeverity } = require("@asyncapi/parser");

function describe(diagnostic) {
  return { code: String(diagnostic.code), message: diagnostic.message, path: diagnostic.path.join("/") };
}

async function validate(parser, file) {
  const text = fs.readFileSync(file, "utf8");
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(describe);
  const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).map(describe);
  return {
    file,
    valid: document !== undefined && errors.length === 0,
    version: document === undefined ? null : document.version(),
    errors,
    warnings,
  };
}

async function main(files) {
  if (files.length === 0) {
    process.stderr.write("usage: node validate.js FILE...\n");
    return 2;
  }
  const parser = new Parser();
  let allValid = true;
  for (const file of files) {
    const result = await validate(parser, file);
    allValid = allValid && result.valid;
    process.stdout.write(JSON.stringify(result) + "\n");
  }
  return allValid ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`validate.js: ${error && error.stack ? error.stack : error}\n`);
    process.exit(2);
  },
);
