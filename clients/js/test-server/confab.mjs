// The running Confab these tests talk to, from the environment the Rust
// test `tests/e2e/client_package.rs` sets (an all-in-one on free ports).
import { createHmac } from "node:crypto";

function need(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: these tests need a running Confab; run them with ` +
        "`cargo test -p confab-tests --test e2e client_package`",
    );
  }
  return value;
}

export const URL = need("CONFAB_URL");
const API = need("CONFAB_API");
const SERVICE_TOKEN = need("CONFAB_SERVICE_TOKEN");
const SECRET = need("CONFAB_HS256_SECRET");

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT for `user`, valid for `ttl` seconds. */
export function mint(user, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, iat: now, exp: now + ttl })}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

/** Runs a membership command; throws unless the API answers 200. */
export async function command(actor, cmd) {
  const res = await fetch(`${API}/v1/commands`, {
    method: "POST",
    headers: { authorization: `Bearer ${SERVICE_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(actor ? { actor, command: cmd } : { command: cmd }),
  });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`${JSON.stringify(cmd)} -> ${res.status} ${body}`);
  return JSON.parse(body);
}

/** Workspace `ws` owned by `owner` with channel `channel` everyone joined. */
export async function workspace(ws, channel, owner, members) {
  await command(null, { type: "create_workspace", id: ws, name: ws, owner });
  await command(owner, { type: "create_channel", channel, workspace: ws, name: channel, visibility: "public" });
  for (const m of members) {
    await command(owner, { type: "add_workspace_member", workspace: ws, user: m, role: "member" });
    await command(m, { type: "join_channel", channel });
  }
}

/** Resolves with the next `event` of `emitter` (rejects after `ms`). */
export function once(emitter, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** Polls `cond` until it holds (rejects after `ms`). */
export async function until(what, cond, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
