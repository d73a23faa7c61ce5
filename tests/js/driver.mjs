// Remote-controlled socket.io-client for Confab's Rust end-to-end tests.
//
// Protocol: one JSON object per line on stdin (commands) and stdout (reports).
// Sockets are addressed by a test-chosen name. Prints {"type":"ready"} first.
//
// Commands:
//   {"cmd":"connect","socket":"a","url":"http://127.0.0.1:PORT","opts":{...}}
//       io(url, opts); opts are passed through untouched. Pass "forceNew": true for an
//       independent connection: without it socket.io-client multiplexes sockets to the
//       same host over one shared Manager (and one WebSocket).
//   {"cmd":"emit","socket":"a","event":"x","args":[...]}                     fire and forget
//   {"cmd":"emit","socket":"a","event":"x","args":[...],"ack":true,"timeoutMs":2000,"req":7}
//       -> {"type":"ack","socket":"a","req":7,"args":[...]}
//        | {"type":"ack_error","socket":"a","req":7,"message":"operation has timed out"}
//   {"cmd":"disconnect","socket":"a"}       socket.disconnect()
//   {"cmd":"connect_again","socket":"a"}    socket.connect()
//   {"cmd":"drop","socket":"a"}             socket.io.engine.close(): transport lost, auto-reconnects
//   {"cmd":"state","socket":"a","req":N}    -> {"type":"state","socket":"a","req":N,"exists","id","connected","active","recovered","transport"}
//   {"cmd":"exit"}
//
// Reports (all carry "at", the driver's clock in Unix ms, and "socket" except ready/exit; error
// carries the command's socket, if any):
//   connect {id, recovered} | connect_error {message, data, description}
//   disconnect {reason, description} | event {event, args}
//   reconnect_attempt {attempt} | reconnect {attempt} | reconnect_error {message} | reconnect_failed
//   ack | ack_error | state | error {message, line?}
//
// Binary: a Buffer / ArrayBuffer / typed array in received arguments is
// reported as {"$binary":"<base64>"}, and such an object in emitted arguments
// is sent as a Buffer.
//
// A bad command never crashes the driver: it is answered with {"type":"error"}.

import readline from "node:readline";
import { io } from "socket.io-client";

/** @type {Map<string, import("socket.io-client").Socket>} */
const sockets = new Map();
/** Listeners registered on each socket's Manager, to unregister on replace. */
const managerListeners = new Map();

function out(message) {
  process.stdout.write(JSON.stringify({ ...message, at: Date.now() }) + "\n");
}

/** Converts any value into something JSON.stringify handles faithfully. */
function toPlain(value, depth = 0, seen = new WeakSet()) {
  if (value === undefined) return null;
  if (value === null || typeof value !== "object") {
    if (typeof value === "function" || typeof value === "symbol") return null;
    if (typeof value === "bigint") return value.toString();
    return value;
  }
  if (Buffer.isBuffer(value)) return { $binary: value.toString("base64") };
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (seen.has(value)) return "[circular]";
  if (depth > 8) return "[too deep]";
  seen.add(value);
  if (value instanceof Error) {
    const plain = { name: value.name, message: value.message };
    for (const key of ["type", "code", "description", "context", "data"]) {
      if (value[key] !== undefined) plain[key] = toPlain(value[key], depth + 1, seen);
    }
    return plain;
  }
  if (Array.isArray(value)) return value.map((v) => toPlain(v, depth + 1, seen));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    // Host objects (CloseEvent, ErrorEvent, XHR...): keep the informative scalars.
    const plain = { kind: value.constructor?.name ?? "object" };
    for (const key of ["type", "code", "reason", "message", "status", "statusText", "wasClean"]) {
      const v = value[key];
      if (v !== undefined && (v === null || typeof v !== "object")) plain[key] = toPlain(v, depth + 1, seen);
    }
    return plain;
  }
  const plain = {};
  for (const [k, v] of Object.entries(value)) plain[k] = toPlain(v, depth + 1, seen);
  return plain;
}

/** Turns {"$binary": base64} back into Buffers in arguments to emit. */
function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$binary" && typeof value.$binary === "string") {
      return Buffer.from(value.$binary, "base64");
    }
    const revived = {};
    for (const [k, v] of Object.entries(value)) revived[k] = revive(v);
    return revived;
  }
  return value;
}

function requireString(cmd, field) {
  const value = cmd[field];
  if (typeof value !== "string" || value.length === 0) {
    throw new Error(`"${field}" must be a non-empty string`);
  }
  return value;
}

function getSocket(cmd) {
  const name = requireString(cmd, "socket");
  const socket = sockets.get(name);
  if (!socket) throw new Error(`unknown socket "${name}"`);
  return socket;
}

function forget(name) {
  const socket = sockets.get(name);
  if (!socket) return;
  socket.offAny();
  socket.removeAllListeners();
  for (const [event, listener] of managerListeners.get(name) ?? []) socket.io.off(event, listener);
  managerListeners.delete(name);
  socket.disconnect();
  sockets.delete(name);
}

function connect(cmd) {
  const name = requireString(cmd, "socket");
  const url = requireString(cmd, "url");
  const opts = cmd.opts ?? {};
  if (typeof opts !== "object" || Array.isArray(opts)) throw new Error(`"opts" must be an object`);
  // Reusing a name replaces the previous socket without reporting its teardown.
  forget(name);

  const socket = io(url, opts);
  sockets.set(name, socket);

  socket.on("connect", () => {
    out({ type: "connect", socket: name, id: socket.id ?? null, recovered: Boolean(socket.recovered) });
  });
  socket.on("connect_error", (err) => {
    out({
      type: "connect_error",
      socket: name,
      message: err?.message ?? String(err),
      data: toPlain(err?.data),
      description: toPlain(err?.description),
    });
  });
  socket.on("disconnect", (reason, description) => {
    out({ type: "disconnect", socket: name, reason, description: toPlain(description) });
  });
  socket.onAny((event, ...args) => {
    out({ type: "event", socket: name, event, args: toPlain(args) });
  });

  const listeners = [
    ["reconnect_attempt", (attempt) => out({ type: "reconnect_attempt", socket: name, attempt })],
    ["reconnect", (attempt) => out({ type: "reconnect", socket: name, attempt })],
    ["reconnect_error", (err) => out({ type: "reconnect_error", socket: name, message: err?.message ?? String(err) })],
    ["reconnect_failed", () => out({ type: "reconnect_failed", socket: name })],
  ];
  for (const [event, listener] of listeners) socket.io.on(event, listener);
  managerListeners.set(name, listeners);
}

function emit(cmd) {
  const socket = getSocket(cmd);
  const name = cmd.socket;
  const event = requireString(cmd, "event");
  const args = revive(cmd.args ?? []);
  if (!Array.isArray(args)) throw new Error(`"args" must be an array`);
  if (!cmd.ack) {
    socket.emit(event, ...args);
    return;
  }
  const req = cmd.req ?? null;
  const timeoutMs = cmd.timeoutMs ?? 5000;
  if (typeof timeoutMs !== "number" || !(timeoutMs >= 0)) throw new Error(`"timeoutMs" must be a number`);
  socket.timeout(timeoutMs).emit(event, ...args, (err, ...reply) => {
    if (err) {
      out({ type: "ack_error", socket: name, req, message: err.message ?? String(err) });
    } else {
      out({ type: "ack", socket: name, req, args: toPlain(reply) });
    }
  });
}

function state(cmd) {
  const name = requireString(cmd, "socket");
  const socket = sockets.get(name);
  out({
    type: "state",
    socket: name,
    req: cmd.req ?? null,
    exists: Boolean(socket),
    id: socket?.id ?? null,
    connected: Boolean(socket?.connected),
    active: Boolean(socket?.active),
    recovered: Boolean(socket?.recovered),
    transport: socket?.io?.engine?.transport?.name ?? null,
  });
}

function exit() {
  for (const name of [...sockets.keys()]) forget(name);
  out({ type: "exit" });
  // Let stdout drain before leaving.
  process.stdout.write("", () => process.exit(0));
}

function handle(line) {
  if (line.trim() === "") return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    out({ type: "error", message: `invalid JSON: ${err.message}`, line });
    return;
  }
  try {
    if (cmd === null || typeof cmd !== "object" || Array.isArray(cmd)) throw new Error("a command must be a JSON object");
    switch (cmd.cmd) {
      case "connect":
        connect(cmd);
        break;
      case "emit":
        emit(cmd);
        break;
      case "disconnect":
        getSocket(cmd).disconnect();
        break;
      case "connect_again":
        getSocket(cmd).connect();
        break;
      case "drop": {
        const engine = getSocket(cmd).io.engine;
        if (!engine) throw new Error(`socket "${cmd.socket}" has no open transport to drop`);
        engine.close();
        break;
      }
      case "state":
        state(cmd);
        break;
      case "exit":
        exit();
        break;
      default:
        throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
    }
  } catch (err) {
    out({
      type: "error",
      message: err?.message ?? String(err),
      cmd: typeof cmd?.cmd === "string" ? cmd.cmd : null,
      socket: typeof cmd?.socket === "string" ? cmd.socket : null,
      req: cmd?.req ?? null,
    });
  }
}

// Anything thrown asynchronously by the client library must not kill the driver.
process.on("uncaughtException", (err) => out({ type: "error", message: `uncaught: ${err?.message ?? err}` }));
process.on("unhandledRejection", (err) => out({ type: "error", message: `unhandled rejection: ${err?.message ?? err}` }));

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", handle);
// The test process went away: do not linger.
input.on("close", () => exit());

out({ type: "ready" });
