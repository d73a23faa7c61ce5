// Unit tests: no server needed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { configure, createSocket, DEFAULT_SOCKET_OPTIONS, getSocket } from "../dist/index.js";

test("sockets get the old hook's defaults and do not connect by themselves", () => {
  const socket = createSocket({ url: "http://127.0.0.1:9" });
  const opts = socket.io.opts;
  assert.equal(opts.withCredentials, true);
  assert.equal(opts.reconnectionAttempts, 10);
  assert.equal(opts.reconnectionDelay, 1000);
  assert.equal(opts.reconnectionDelayMax, 5000);
  // Transports left to socket.io-client: polling first, then the upgrade.
  assert.equal(opts.transports, undefined);
  assert.equal(socket.connected, false);
  assert.equal(socket.active, false, "autoConnect is off: nothing connects before connect()");
  assert.equal(DEFAULT_SOCKET_OPTIONS.autoConnect, false);
  socket.close();
});

test("socketOptions win over the defaults", () => {
  const socket = createSocket({
    url: "http://127.0.0.1:9",
    socketOptions: { reconnectionAttempts: 3, transports: ["websocket"] },
  });
  assert.equal(socket.io.opts.reconnectionAttempts, 3);
  assert.deepEqual(socket.io.opts.transports, ["websocket"]);
  assert.equal(socket.io.opts.withCredentials, true);
  socket.close();
});

test("getSocket returns one shared socket built from configure()", () => {
  configure({ url: "http://127.0.0.1:9", socketOptions: { reconnectionAttempts: 4 } });
  const a = getSocket();
  const b = getSocket();
  assert.equal(a, b);
  assert.equal(a.io.opts.reconnectionAttempts, 4);
  assert.throws(() => configure({ url: "http://127.0.0.1:10" }), /before the first getSocket/);
  a.close();
});
