// A real better-auth app (email and password, SQLite through
// better-sqlite3, the JWT plugin for JWT deployments) that serves the test
// page. Prints one JSON line `{"url": ...}` once it listens on a free port.
//
//   node app.mjs <sqlite file>
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import Database from "better-sqlite3";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins/jwt";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dbFile = process.argv[2];
if (!dbFile) throw new Error("usage: node app.mjs <sqlite file>");

// The page: the client package, React and better-auth's client, bundled.
const bundle = await build({
  entryPoints: [join(here, "page.jsx")],
  bundle: true,
  write: false,
  format: "esm",
  jsx: "automatic",
  // Resolve `react` and `socket.io-client` of the linked client package
  // from here, so the page has one React.
  preserveSymlinks: true,
  define: { "process.env.NODE_ENV": '"development"' },
  logLevel: "error",
});
const pageJs = bundle.outputFiles[0].contents;
const pageHtml = `<!doctype html><html><head><meta charset="utf-8"><title>Confab browser test</title></head>
<body><div id="root"></div><script type="module" src="/page.js"></script></body></html>`;

let handleAuth;
const server = createServer((req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (path.startsWith("/api/auth/")) return handleAuth(req, res);
  if (path === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(pageHtml);
  }
  if (path === "/page.js") {
    res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
    return res.end(pageJs);
  }
  res.writeHead(404).end("not found");
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const auth = betterAuth({
  baseURL: origin,
  secret: randomBytes(32).toString("hex"),
  database: new Database(dbFile),
  emailAndPassword: { enabled: true },
  trustedOrigins: [origin],
  // Confab asks get-session for every new session it sees: no rate limit
  // in this test app (the README's deployment note says what to do in
  // production).
  rateLimit: { enabled: false },
  plugins: [jwt({ jwt: { issuer: origin, audience: "confab", expirationTime: "15m" } })],
});
const { runMigrations } = await getMigrations(auth.options);
await runMigrations();
handleAuth = toNodeHandler(auth);

console.log(JSON.stringify({ url: origin }));
