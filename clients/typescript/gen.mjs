// Generates src/generated/api.ts from the node's OpenAPI document, through openapi-typescript.
// Two defects of the document would make the types wrong or not compile; they are repaired in
// a copy, and said on stderr, so the types are right and the repair stops once the node's
// document is:
//   - an operation id used by two operations (the generated `operations` repeat a name);
//   - parameters said to be `in: path` that the path has no place for (they are query
//     parameters: the typed client would not send them).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";

const doc = JSON.parse(readFileSync(new URL("../../openapi/openapi.json", import.meta.url), "utf8"));
const seen = new Map();
for (const [path, item] of Object.entries(doc.paths ?? {})) {
  for (const [method, op] of Object.entries(item)) {
    if (!op || typeof op !== "object" || !("responses" in op)) continue;
    if (op.operationId) {
      if (seen.has(op.operationId)) {
        const renamed = `${method}_${path.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_|_$/g, "")}`;
        console.error(`openapi.json: ${method.toUpperCase()} ${path} repeats the operation id ${op.operationId} of ${seen.get(op.operationId)}: generated as ${renamed}`);
        op.operationId = renamed;
      } else seen.set(op.operationId, `${method.toUpperCase()} ${path}`);
    }
    for (const p of op.parameters ?? []) {
      if (p.in === "path" && !path.includes(`{${p.name}}`)) {
        console.error(`openapi.json: ${method.toUpperCase()} ${path} has "${p.name}" as a path parameter: generated as a query parameter`);
        p.in = "query";
        const types = [p.schema?.type].flat();
        p.required = p.required && !types.includes("null");
      }
    }
  }
}
const dir = join(tmpdir(), `volli-openapi-${process.pid}`);
mkdirSync(dir, { recursive: true });
const copy = join(dir, "openapi.json");
writeFileSync(copy, JSON.stringify(doc));
execFileSync(process.execPath, [new URL("node_modules/openapi-typescript/bin/cli.js", import.meta.url).pathname, copy, "-o", "src/generated/api.ts"], { stdio: ["ignore", "ignore", "inherit"] });
