// Parse an AsyncAPI document with the real parser, the Avro schema parser registered, so every payload's
// `.avsc` (a $ref relative to the document) is read and checked too. Prints each diagnostic, one a line;
// exits 1 when any is an error (or the document could not be parsed at all), 2 on wrong usage.
//   node tools/asyncapi/validate.mjs docs/asyncapi.json
import { resolve } from "node:path";
import { Parser, fromFile } from "@asyncapi/parser";
import { AvroSchemaParser } from "@asyncapi/avro-schema-parser";

const SEVERITY = ["error", "warning", "information", "hint"];

const file = process.argv[2];
if (!file || process.argv.length > 3) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}
const avro = AvroSchemaParser();
const parser = new Parser();
parser.registerSchemaParser(avro);
const { document, diagnostics } = await fromFile(parser, resolve(file)).parse();
const problems = diagnostics.map((d) => ({
  severity: SEVERITY[d.severity] ?? String(d.severity),
  code: d.code,
  path: d.path ?? [],
  message: d.message,
}));

// The parser (3.6) converts an AsyncAPI 3 payload with the registered schema parser but, unlike for
// AsyncAPI 2, never asks that parser to validate it: an Avro schema with an unknown type would pass.
// So each Avro payload, as the parser resolved it from its $ref, is validated here with the same parser.
let checked = 0;
if (document !== undefined) {
  const formats = new Set(avro.getMimeTypes());
  for (const message of document.allMessages()) {
    const payload = message.json().payload;
    if (!payload || !formats.has(payload.schemaFormat)) continue;
    const path = ["components", "messages", message.id(), "payload", "schema"];
    checked += 1;
    const data = payload["x-parser-original-payload"] ?? payload.schema;
    for (const d of await avro.validate({ data, path, asyncapi: undefined, schemaFormat: payload.schemaFormat })) {
      problems.push({ severity: "error", code: "invalid-avro-schema", path: d.path ?? path, message: d.message });
    }
  }
}

for (const p of problems) {
  const where = p.path.length ? p.path.join("/") : "(document)";
  console.log(`${p.severity} ${p.code} at ${where}: ${p.message}`);
}
const errors = problems.filter((p) => p.severity === "error").length;
if (document === undefined || errors > 0) {
  console.log(`${file}: not valid (${errors} error(s))`);
  process.exit(1);
}
console.log(
  `${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${checked} Avro payloads checked`,
);
