// Bundles the admin page into dist/ (committed: `cargo build` embeds it without Node.js).
// The output depends only on the sources and the locked package versions, so CI can rebuild
// it and check that dist/ is what the sources make.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

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
for (const f of ["index.html", "app.css", "sw.js"]) copyFileSync(`static/${f}`, `dist/${f}`);
