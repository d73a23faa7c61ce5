// Bundles the test page (page.jsx: the client package, React, better-auth's
// client) into DIR/page.js with DIR/index.html, for the better-auth app
// (tests/better-auth/server.mjs --page DIR) to serve from its own origin.
//
//   node build-page.mjs DIR
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) throw new Error("usage: node build-page.mjs DIR");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "page.jsx")],
  outfile: join(out, "page.js"),
  bundle: true,
  format: "esm",
  jsx: "automatic",
  // `react` for the linked client package's hook resolves from here (one
  // React); `better-auth/client` from the better-auth app's package.
  preserveSymlinks: true,
  nodePaths: [join(here, "node_modules"), join(here, "..", "better-auth", "node_modules")],
  define: { "process.env.NODE_ENV": '"development"' },
  logLevel: "error",
});
writeFileSync(
  join(out, "index.html"),
  `<!doctype html><html><head><meta charset="utf-8"><title>Confab browser test</title></head>
<body><div id="root"></div><script type="module" src="/page.js"></script></body></html>`,
);
