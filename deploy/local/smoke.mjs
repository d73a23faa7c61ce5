#!/usr/bin/env node
// Smoke test of the local cluster started by `just up`: proves, end to end,
// that an event emitted through the membership HTTP API reaches the members
// of a channel connected to different gateways, and nobody else.
//
//   node deploy/local/smoke.mjs        (or: just smoke)
//
// 1. creates a workspace and a public channel (fresh ids per run), owned by
//    alice, with bob a workspace member, over POST /v1/commands;
// 2. connects alice to gateway 1 and bob to gateway 2 (socket.io-client,
//    WebSocket transport, tokens from `target/release/confab token`), and
//    carol, who belongs to nothing, to gateway 1;
// 3. bob joins the channel over the API; waits until his gateway announces
//    `room:joined` for it;
// 4. POST /v1/emit `app:smoke` to the channel; alice and bob must get it
//    exactly once, carol not at all; a forged `message:new` through the
//    same API is refused (400 `invalid`);
// 5. bob (gateway 2) asks `presence:query` about alice (gateway 1): she must
//    be online (gateway 1's heartbeats reach the tracker in membership).
//
// Reads the ports from .run/cluster.env and the secrets from .run/. Prints
// PASS or FAIL; exits 0 or 1. Bounded by SMOKE_TIMEOUT_MS (default 20000).
// socket.io-client comes from tests/js/node_modules (`npm ci --prefix tests/js`).

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RUN = path.join(ROOT, ".run");
const TIMEOUT_MS = Number(process.env.SMOKE_TIMEOUT_MS ?? 20_000);
const STEP_MS = 8_000; // one HTTP call, connection or expected event
const QUIET_MS = 500; // how long carol must stay silent, duplicates must stay away

const started = Date.now();
const sockets = [];
let step = "starting";

function log(message) {
  const t = ((Date.now() - started) / 1000).toFixed(2).padStart(6);
  console.log(`[${t}s] ${message}`);
}

function finish(ok, detail) {
  for (const s of sockets) s.disconnect();
  if (ok) {
    console.log(`PASS: local cluster smoke test (${Date.now() - started} ms)`);
    process.exit(0);
  }
  console.error(`FAIL: ${step}: ${detail}`);
  console.error("hints: `just status`, `just logs`, or the files in .run/logs/");
  process.exit(1);
}

const deadline = setTimeout(
  () => finish(false, `the smoke test did not finish within ${TIMEOUT_MS} ms`),
  TIMEOUT_MS,
);
deadline.unref();

function readRun(name, hint = "run `just up` first") {
  const file = path.join(RUN, name);
  if (!existsSync(file)) throw new Error(`${file} is missing: ${hint}`);
  return readFileSync(file, "utf8").trim();
}

/** The settings `cluster.sh up` recorded (bash `printf %q` values). */
function clusterSettings() {
  const settings = {};
  const file = path.join(RUN, "cluster.env");
  if (existsSync(file)) {
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const m = /^([A-Z_]+)_S=(.*)$/.exec(line);
      if (m) settings[m[1]] = m[2].replace(/\\(.)/g, "$1");
    }
  }
  return {
    membership: `http://127.0.0.1:${settings.MEMBERSHIP_PORT ?? 3100}`,
    gateways: (settings.GATEWAY_PORTS ?? "3001 3002")
      .split(/\s+/)
      .filter(Boolean)
      .map((p) => `http://127.0.0.1:${p}`),
  };
}

function loadSocketIo() {
  const pkg = path.join(ROOT, "tests/js/package.json");
  try {
    return createRequire(pkg)("socket.io-client");
  } catch (e) {
    throw new Error(
      `cannot load socket.io-client from tests/js/node_modules (${e.code ?? e.message}): run \`npm ci --prefix tests/js\``,
    );
  }
}

/** A token for `user`, minted by the `confab` CLI with the cluster's secret. */
function token(user, secret) {
  // Where `just up` built it (cluster.sh honours CARGO_TARGET_DIR too).
  // CONFAB_CLUSTER_PROFILE=debug: the debug build `cluster.sh` then ran.
  const profile = process.env.CONFAB_CLUSTER_PROFILE === "debug" ? "debug" : "release";
  const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), profile, "confab");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`just up\` first`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CONFAB_")));
  env.CONFAB_AUTH__HS256_SECRET = secret;
  // The cluster's services require the tokens' issuer and audience.
  env.CONFAB_AUTH__ISSUER = "confab-local";
  env.CONFAB_AUTH__AUDIENCE = "confab-local";
  return execFileSync(bin, ["token", user, "--ttl", "600"], { env, encoding: "utf8" }).trim();
}

async function main() {
  const { io } = loadSocketIo();
  const serviceToken = readRun("service-token");
  const jwtSecret = readRun("jwt-secret");
  const { membership, gateways } = clusterSettings();
  if (gateways.length < 2) throw new Error("the cluster has fewer than two gateways");
  const [gw1, gw2] = gateways;

  const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const ws = `smoke-ws-${run}`;
  const ch = `smoke-ch-${run}`;
  const room = `channel:${ch}`;
  log(`run ${run}: membership ${membership}, gateways ${gw1} and ${gw2}`);

  async function api(route, body) {
    let res;
    try {
      res = await fetch(membership + route, {
        method: "POST",
        headers: { authorization: `Bearer ${serviceToken}`, "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(STEP_MS),
      });
    } catch (e) {
      throw new Error(`POST ${route}: ${e.cause?.message ?? e.message} (is the cluster up?)`);
    }
    const text = await res.text();
    if (!res.ok) throw new Error(`POST ${route} answered HTTP ${res.status}: ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async function command(actor, cmd) {
    const out = await api("/v1/commands", { actor, command: cmd });
    log(`${cmd.type} by ${actor}: event #${out.seq}${out.projected ? "" : " (projections lagging)"}`);
    return out;
  }

  step = "setting up a workspace and a public channel";
  await command("alice", { type: "create_workspace", id: ws, name: `Smoke ${run}`, owner: "alice" });
  await command("alice", { type: "add_workspace_member", workspace: ws, user: "bob", role: "member" });
  await command("alice", { type: "create_channel", channel: ch, workspace: ws, name: "smoke", visibility: "public" });

  /** Connects `user` to `url`; records the events it receives. */
  function connect(user, url) {
    const socket = io(url, {
      transports: ["websocket"],
      auth: { token: token(user, jwtSecret) },
      forceNew: true,
      reconnection: false,
      timeout: STEP_MS,
    });
    sockets.push(socket);
    const events = [];
    const waiters = [];
    socket.onAny((event, ...args) => {
      events.push({ event, args });
      for (const w of [...waiters]) {
        if (w.match(event, args)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(args);
        }
      }
    });
    const client = {
      user,
      url,
      socket,
      events,
      /** Resolves with the args of the first (past or future) matching event. */
      waitFor(what, match) {
        const seen = events.find((e) => match(e.event, e.args));
        if (seen) return Promise.resolve(seen.args);
        return new Promise((resolve, reject) => {
          const w = { match, resolve };
          waiters.push(w);
          setTimeout(() => {
            const i = waiters.indexOf(w);
            if (i >= 0) {
              waiters.splice(i, 1);
              reject(new Error(`${user} (${url}) got no ${what} within ${STEP_MS} ms; it got: ${JSON.stringify(events)}`));
            }
          }, STEP_MS).unref();
        });
      },
    };
    return new Promise((resolve, reject) => {
      socket.once("connect", () => {
        log(`${user} connected to ${url} (sid ${socket.id})`);
        resolve(client);
      });
      socket.once("connect_error", (e) => {
        const data = e.data ? ` ${JSON.stringify(e.data)}` : "";
        reject(new Error(`${user} cannot connect to ${url}: ${e.message}${data}`));
      });
    });
  }

  step = "connecting alice (gateway 1), bob (gateway 2) and carol (gateway 1)";
  const [alice, bob, carol] = await Promise.all([connect("alice", gw1), connect("bob", gw2), connect("carol", gw1)]);

  step = "bob joining the channel";
  const joined = bob.waitFor(`room:joined for ${room}`, (event, args) => event === "room:joined" && args[0]?.room === room);
  await command("bob", { type: "join_channel", channel: ch });
  await joined;
  log(`bob's gateway moved him into ${room}`);

  step = "forging message:new through the emit API";
  const forged = await api("/v1/emit", { room, event: "message:new", data: { id: "forged" } }).then(
    () => null,
    (e) => e.message,
  );
  if (!forged?.includes("HTTP 400") || !forged.includes("reserved")) {
    throw new Error(`a forged message:new was not refused: ${forged ?? "accepted"}`);
  }
  log("a forged message:new through the emit API is refused");

  step = "emitting app:smoke to the channel";
  const msgId = `m-${run}`;
  const isOurs = (event, args) => event === "app:smoke" && args[0]?.id === msgId;
  const gotAlice = alice.waitFor(`app:smoke ${msgId}`, isOurs);
  const gotBob = bob.waitFor(`app:smoke ${msgId}`, isOurs);
  const emitted = await api("/v1/emit", {
    room,
    event: "app:smoke",
    data: { id: msgId, room, from: "smoke", text: `hello from the smoke test ${run}` },
    id: msgId,
  });
  log(`emitted ${msgId} to ${room}: seq ${emitted.seq ?? "none"}${emitted.duplicate ? " (DUPLICATE)" : ""}`);

  step = "waiting for alice and bob to receive the message";
  await Promise.all([
    gotAlice.then(() => log(`alice got it on ${gw1}`)),
    gotBob.then(() => log(`bob got it on ${gw2}`)),
  ]);

  step = "checking for duplicates and leaks";
  await new Promise((r) => setTimeout(r, QUIET_MS));
  for (const c of [alice, bob]) {
    const n = c.events.filter((e) => isOurs(e.event, e.args)).length;
    if (n !== 1) throw new Error(`${c.user} got the message ${n} times`);
  }
  const leaked = carol.events.filter((e) => e.event === "app:smoke" || e.event === "message:new");
  if (leaked.length) throw new Error(`carol, not a member, got ${JSON.stringify(leaked)}`);
  log("alice and bob got it once each; carol (not a member) got nothing");

  // Gateways report presence to the membership service every few seconds
  // (presence.heartbeat, default 5 s) and at once on a change.
  step = "asking for alice's presence from bob's gateway";
  const deadline = Date.now() + STEP_MS;
  let presence;
  while (Date.now() < deadline) {
    const ack = await bob.socket.timeout(STEP_MS).emitWithAck("presence:query", { users: ["alice"] });
    presence = ack?.presence?.alice ?? JSON.stringify(ack);
    if (presence === "online") break;
    // Presence queries are rate limited per connection.
    await new Promise((r) => setTimeout(r, Math.max(500, ack?.error?.retryAfterMs ?? 0)));
  }
  if (presence !== "online") throw new Error(`bob sees alice ${presence ?? "unknown"}, not online`);
  log(`bob (${gw2}) sees alice (${gw1}) online`);
}

main().then(
  () => finish(true),
  (e) => finish(false, e.message),
);
