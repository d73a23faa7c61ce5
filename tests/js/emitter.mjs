// The real @socket.io/redis-emitter, remote-controlled by Confab's Rust
// end-to-end tests (tests/e2e/emitter.rs): what an app backend runs.
//
// Usage: node emitter.mjs REDIS_URL [KEY]
// Protocol: one JSON object per line on stdin (commands) and stdout (reports);
// prints {"type":"ready"} first. Every command carries "req" and is answered
// {"type":"done","req":N} once Redis has processed its PUBLISH (a PING sent
// after it on the same connection came back), or {"type":"error","req":N,
// "message"}.
//
// Commands ("to" / "except": room names; omitted means none):
//   {"op":"emit","to":[..],"except":[..],"volatile":bool,"event":"e","args":[..]}
//   {"op":"socketsJoin","to":[..],"except":[..],"rooms":[..]}
//   {"op":"socketsLeave","to":[..],"except":[..],"rooms":[..]}
//   {"op":"disconnectSockets","to":[..],"except":[..],"close":bool}
//   {"op":"serverSideEmit","args":[..]}
//   {"op":"publish","channel":"c","message":"text"}    a raw PUBLISH (garbage tests)
//   {"op":"del","key":"k"}                              DEL a key (lease failover tests)
//   {"op":"exit"}
// {"$binary":"<base64>"} in args is sent as a Buffer (msgpack bin).

import readline from "node:readline";
import { Emitter } from "@socket.io/redis-emitter";
import { Redis } from "ioredis";

const [url, key] = process.argv.slice(2);
const redis = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 });
const emitter = new Emitter(redis, key ? { key } : {});

function out(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function fromPlain(value) {
  if (Array.isArray(value)) return value.map(fromPlain);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$binary") return Buffer.from(value.$binary, "base64");
    return Object.fromEntries(keys.map((k) => [k, fromPlain(value[k])]));
  }
  return value;
}

function target(cmd) {
  let op = emitter;
  if (cmd.to && cmd.to.length) op = op.to(cmd.to);
  if (cmd.except && cmd.except.length) op = op.except(cmd.except);
  if (cmd.volatile) op = op.volatile;
  return op;
}

async function run(cmd) {
  switch (cmd.op) {
    case "emit":
      target(cmd).emit(cmd.event, ...fromPlain(cmd.args ?? []));
      break;
    case "socketsJoin":
      target(cmd).socketsJoin(cmd.rooms);
      break;
    case "socketsLeave":
      target(cmd).socketsLeave(cmd.rooms);
      break;
    case "disconnectSockets":
      target(cmd).disconnectSockets(Boolean(cmd.close));
      break;
    case "serverSideEmit":
      emitter.serverSideEmit(...fromPlain(cmd.args ?? []));
      break;
    case "publish":
      await redis.publish(cmd.channel, cmd.message);
      break;
    case "del":
      await redis.del(cmd.key);
      break;
    case "exit":
      await redis.quit();
      out({ type: "exit" });
      process.exit(0);
      break;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
  // One connection, commands in order: the PING's answer means the
  // PUBLISH before it was processed.
  await redis.ping();
}

// Commands run one after another, in order; stdin's end waits for them.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  chain = chain.then(async () => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      out({ type: "error", message: String(e) });
      return;
    }
    try {
      await run(cmd);
      out({ type: "done", req: cmd.req });
    } catch (e) {
      out({ type: "error", req: cmd.req, message: String(e && e.message ? e.message : e) });
    }
  });
});
rl.on("close", () => chain.then(() => process.exit(0)));

redis.once("ready", () => out({ type: "ready" }));
redis.on("error", (e) => out({ type: "redis_error", message: String(e) }));
