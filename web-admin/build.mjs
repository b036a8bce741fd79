// Bundles the app into dist/ (committed: `cargo build` embeds it without Node.js). The output
// depends only on the sources and the locked package versions, so CI can rebuild it and check
// that dist/ is what the sources make. dist/ is flat: the node serves each file at /<name>.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  outfile: "dist/app.js",
  logLevel: "warning",
});
for (const f of readdirSync("static")) if (f !== "sw.js") copyFileSync(`static/${f}`, `dist/${f}`);
// The service worker's cache is named after the files it keeps, so a new build replaces it.
const hash = createHash("sha256");
for (const f of readdirSync("dist").sort()) hash.update(f).update(readFileSync(`dist/${f}`));
writeFileSync("dist/sw.js", readFileSync("static/sw.js", "utf8").replace("__BUILD__", hash.digest("hex").slice(0, 12)));
