// A real better-auth app for Confab's session-auth tests: email and
// password sign-up on SQLite (better-sqlite3), served by Node's http.
//
//   node server.mjs [--port 0] [--db FILE]
//
// Prints one JSON line `{"port": N, "url": "http://127.0.0.1:N"}` on
// stdout once it listens, then serves until its stdin closes (so it dies
// with the test that started it). Besides better-auth's routes
// (/api/auth/sign-up/email, /api/auth/sign-in/email, /api/auth/sign-out,
// /api/auth/get-session, ...) it serves:
//   GET /test/requests          get-session calls seen so far, with the
//                               headers each carried (JSON)
//   POST /test/revoke?user=ID   revokes every session of a user
// Options for the browser tests (tests/browser, tests/e2e/browser.rs):
//   --page DIR   serves DIR/index.html at / and DIR/page.js at /page.js
//                (the test page, so its cookie is first-party)
//   --jwt        enables better-auth's JWT plugin (/api/auth/token,
//                /api/auth/jwks; EdDSA, iss = the app's URL, aud "confab")
import http from "node:http";
import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import Database from "better-sqlite3";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins/jwt";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg("port", "0"));
const dbFile =
  arg("db") ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), "confab-ba-")), "auth.db");
const db = new Database(dbFile);
const pageDir = arg("page");
const withJwt = process.argv.includes("--jwt");

async function main() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const baseURL = `http://127.0.0.1:${server.address().port}`;
  const auth = betterAuth({
    database: db,
    baseURL,
    secret: "confab-test-secret-0123456789abcdef0123456789",
    emailAndPassword: { enabled: true },
    // Tests sign in many times from one address.
    rateLimit: { enabled: false },
    trustedOrigins: [baseURL],
    plugins: withJwt ? [jwt({ jwt: { issuer: baseURL, audience: "confab" } })] : [],
  });
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  const handler = toNodeHandler(auth);
  const requests = [];
  server.on("request", async (req, res) => {
    const url = new URL(req.url, baseURL);
    if (url.pathname === "/api/auth/get-session") {
      requests.push({ at: Date.now(), headers: req.headers });
      if (requests.length > 10000) requests.shift();
    }
    if (pageDir && (url.pathname === "/" || url.pathname === "/page.js")) {
      const html = url.pathname === "/";
      res.setHeader("content-type", html ? "text/html; charset=utf-8" : "text/javascript; charset=utf-8");
      res.end(fs.readFileSync(path.join(pageDir, html ? "index.html" : "page.js")));
      return;
    }
    if (url.pathname === "/test/requests") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(requests));
      return;
    }
    if (url.pathname === "/test/revoke" && req.method === "POST") {
      const ctx = await auth.$context;
      await ctx.internalAdapter.deleteSessions(url.searchParams.get("user"));
      res.end("ok");
      return;
    }
    handler(req, res);
  });
  process.stdout.write(JSON.stringify({ port: server.address().port, url: baseURL }) + "\n");
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
