// Checks payloads against the payload schemas of an AsyncAPI document with Ajv (JSON Schema draft 7, with formats),
// for tests/test_asyncapi.py. Usage: node payloads.js DOCUMENT.json CASES.json
// CASES.json: [{"message": "<components.messages key>", "payload": <JSON value>}, ...]
// Prints one JSON array: [{"message": ..., "valid": bool, "errors": ["<instancePath> <message>", ...]}, ...]
"use strict";

const fs = require("node:fs");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");

function main([documentFile, casesFile]) {
  if (!documentFile || !casesFile) {
    process.stderr.write("usage: node payloads.js DOCUMENT.json CASES.json\n");
    return 2;
  }
  const document = JSON.parse(fs.readFileSync(documentFile, "utf8"));
  const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(document, "asyncapi.json");
  const results = cases.map(({ message, payload }) => {
    if (!(message in document.components.messages)) {
      return { message, valid: false, errors: [`no message ${message} in the document`] };
    }
    const validate = ajv.compile({ $ref: `asyncapi.json#/components/messages/${message}/payload` });
    const valid = validate(payload);
    const errors = valid ? [] : validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`);
    return { message, valid, errors };
  });
  process.stdout.write(JSON.stringify(results) + "\n");
  return 0;
}

try {
  process.exit(main(process.argv.slice(2)));
} catch (error) {
  process.stderr.write(`payloads.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(2);
}
