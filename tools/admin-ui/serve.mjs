// Serves the official Socket.IO Admin UI (the prebuilt pages inside the
// npm package @socket.io/admin-ui) on 127.0.0.1, for Confab's gateways.
//
//   node tools/admin-ui/serve.mjs [--port 3300] [--server http://127.0.0.1:3001]
//   node tools/admin-ui/serve.mjs --hash PASSWORD   # prints a bcrypt hash
//
// The UI's page loads its icon font and Roboto from public CDNs; this
// server gives it the icon font from the npm package @mdi/font instead and
// drops the Roboto link (the system's sans-serif font is used), so it works
// offline. `--server` pre-fills the UI's server URL (kept in the browser's
// localStorage, as the UI itself does). Also imported by the browser test
// (tests/browser/admin-ui.mjs): `startAdminUi({port, server})`.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const UI = join(dirname(require.resolve("@socket.io/admin-ui/package.json")), "ui", "dist");
const MDI = join(dirname(require.resolve("@mdi/font/package.json")));

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".json": "application/json",
  ".map": "application/json",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".ttf": "font/ttf",
  ".eot": "application/vnd.ms-fontobject",
};

/** A file under `root`, or null when the path leaves it. */
function inside(root, path) {
  const full = normalize(join(root, decodeURIComponent(path)));
  return full === root || full.startsWith(root + sep) ? full : null;
}

async function indexHtml(server) {
  let html = await readFile(join(UI, "index.html"), "utf8");
  html = html
    .replace(/<link rel="stylesheet" href="https:\/\/fonts\.googleapis\.com[^>]*>/, "")
    .replace(
      /https:\/\/cdn\.jsdelivr\.net\/npm\/@mdi\/font@latest\/css\/materialdesignicons\.min\.css/,
      "/_mdi/css/materialdesignicons.min.css",
    );
  if (server) {
    // Before the UI's own script reads it: the connection form's default.
    const prefill = `<script>if(!localStorage.getItem("server_url"))localStorage.setItem("server_url",${JSON.stringify(server)})</script>`;
    html = html.replace("<head>", `<head>${prefill}`);
  }
  return html;
}

/** Starts the static server; resolves to `{url, close}`. */
export function startAdminUi({ port = 0, host = "127.0.0.1", server = "" } = {}) {
  const http = createServer(async (req, res) => {
    try {
      const path = new URL(req.url, "http://x").pathname;
      if (path === "/" || path === "/index.html") {
        res.writeHead(200, { "content-type": TYPES[".html"], "cache-control": "no-store" });
        res.end(await indexHtml(server));
        return;
      }
      const file = path.startsWith("/_mdi/") ? inside(MDI, path.slice(5)) : inside(UI, path);
      if (!file) {
        res.writeHead(403).end();
        return;
      }
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
  });
  return new Promise((resolve, reject) => {
    http.once("error", reject);
    http.listen(port, host, () => {
      const { port: bound } = http.address();
      resolve({ url: `http://${host}:${bound}`, close: () => new Promise((r) => http.close(r)) });
    });
  });
}

const isMain = process.argv[1] && normalize(process.argv[1]) === join(here, "serve.mjs");
if (isMain) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const toHash = opt("--hash");
  if (toHash !== undefined) {
    const bcrypt = require("bcryptjs");
    console.log(bcrypt.hashSync(toHash, 12));
  } else {
    const port = Number(opt("--port") ?? process.env.ADMIN_UI_PORT ?? 3300);
    const server = opt("--server") ?? "";
    const { url } = await startAdminUi({ port, server });
    console.log(`Socket.IO Admin UI on ${url}/ (server URL ${server || "to be entered"}); Ctrl-C stops it`);
  }
}
