// `just demo`: starts the all-in-one (free ports, a fresh SQLite file),
// creates a workspace with channels for alice, bob and carol through the
// membership API, and serves the chat page (page.js, on @confab/client).
//
//   node serve.mjs          # page on http://127.0.0.1:8080 (DEMO_PORT)
//   CONFAB_BIN=path/to/confab node serve.mjs   # a built binary instead of cargo run
import { spawn, execFile } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
export const USERS = ["alice", "bob", "carol"];
export const CHANNELS = ["general", "random"];

/** How to run the all-in-one: CONFAB_BIN, else `cargo run --release`. */
function confabCommand(args) {
  const bin = process.env.CONFAB_BIN;
  return bin
    ? [bin, args]
    : ["cargo", ["run", "--release", "--quiet", "-p", "confab", "--", ...args]];
}

async function startConfab(env) {
  const [cmd, args] = confabCommand([]);
  // CONFAB_BIN is this script's, not a Confab key (Confab warns about those).
  const { CONFAB_BIN: _, ...inherited } = process.env;
  const child = spawn(cmd, args, { cwd: root, env: { ...inherited, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  let gateway;
  let api;
  for await (const line of lines) {
    gateway ??= line.match(/listening on (http:\/\/[^ ]+)/)?.[1];
    api ??= line.match(/Membership API on (http:\/\/[^ ]+)/)?.[1];
    if (gateway && api) break;
  }
  if (!gateway || !api) throw new Error("the all-in-one stopped before it listened");
  lines.on("line", () => {});
  return { child, gateway, api };
}

export async function start({ port = Number(process.env.DEMO_PORT ?? 8080) } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "confab-demo-"));
  const serviceToken = randomBytes(24).toString("hex");
  const confab = await startConfab({
    CONFAB_LISTEN: "127.0.0.1:0",
    CONFAB_API_LISTEN: "127.0.0.1:0",
    CONFAB_DATABASE_URL: `sqlite://${join(dataDir, "confab.db")}?mode=rwc`,
    CONFAB_SERVICE_TOKEN: serviceToken,
  });

  const command = async (actor, cmd) => {
    const res = await fetch(`${confab.api}/v1/commands`, {
      method: "POST",
      headers: { authorization: `Bearer ${serviceToken}`, "content-type": "application/json" },
      body: JSON.stringify(actor ? { actor, command: cmd } : { command: cmd }),
    });
    if (res.status !== 200) throw new Error(`${JSON.stringify(cmd)} -> ${res.status} ${await res.text()}`);
  };
  await command(null, { type: "create_workspace", id: "acme", name: "Acme", owner: USERS[0] });
  for (const u of USERS.slice(1)) {
    await command(USERS[0], { type: "add_workspace_member", workspace: "acme", user: u, role: "member" });
  }
  for (const c of CHANNELS) {
    await command(USERS[0], { type: "create_channel", channel: c, workspace: "acme", name: c, visibility: "public" });
    for (const u of USERS.slice(1)) await command(u, { type: "join_channel", channel: c });
  }

  // Dev tokens (the all-in-one's public dev secret), one per user.
  const tokens = new Map();
  const token = async (user) => {
    if (!tokens.has(user)) {
      const [cmd, args] = confabCommand(["token", user]);
      const { CONFAB_BIN: _, ...env } = process.env;
      const { stdout } = await promisify(execFile)(cmd, args, { cwd: root, env });
      tokens.set(user, stdout.trim());
    }
    return tokens.get(user);
  };

  const bundle = await build({
    entryPoints: [join(here, "page.js")],
    bundle: true,
    write: false,
    format: "esm",
    logLevel: "error",
  });
  const files = {
    "/": ["text/html", readFileSync(join(here, "index.html"))],
    "/split.html": ["text/html", readFileSync(join(here, "split.html"))],
    "/page.js": ["text/javascript", bundle.outputFiles[0].contents],
  };
  const config = JSON.stringify({ gateway: confab.gateway, users: USERS, channels: CHANNELS });
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/config.json") {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(config);
    }
    if (url.pathname === "/token") {
      const user = url.searchParams.get("user");
      if (!USERS.includes(user)) return res.writeHead(403).end("unknown user");
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end(await token(user));
    }
    const file = files[url.pathname];
    if (!file) return res.writeHead(404).end("not found");
    res.writeHead(200, { "content-type": `${file[0]}; charset=utf-8` });
    res.end(file[1]);
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    gateway: confab.gateway,
    stop() {
      server.close();
      confab.child.kill("SIGTERM");
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const demo = await start();
  console.log(`Confab demo: ${demo.url}/?user=alice and ${demo.url}/?user=bob in two tabs`);
  console.log(`(both side by side: ${demo.url}/split.html; Confab on ${demo.gateway}; Ctrl-C stops)`);
  const stop = () => {
    demo.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
