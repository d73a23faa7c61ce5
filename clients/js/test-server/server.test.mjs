// The client package against a real Confab (all-in-one): the token
// function, recovery, `recovery:failed` and the history refetch helper.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createSocket, fetchSince, onRecoveryFailed, trackLastSeen } from "../dist/index.js";
import { mint, once, until, URL, workspace } from "./confab.mjs";

const ROOM = "channel:cp-general";
const sockets = [];

function socketFor(options) {
  const socket = createSocket({ url: URL, ...options });
  sockets.push(socket);
  return socket;
}

async function connected(socket) {
  socket.connect();
  await once(socket, "connect");
  return socket;
}

let sent = 0;
async function send(socket, body) {
  for (;;) {
    const ack = await socket.timeout(10_000).emitWithAck("message:send", {
      room: ROOM,
      body,
      clientMsgId: `c${++sent}`,
    });
    if (ack.error?.retryAfterMs) {
      await new Promise((r) => setTimeout(r, ack.error.retryAfterMs));
      continue;
    }
    assert.ok(ack.id, `send refused: ${JSON.stringify(ack)}`);
    return ack;
  }
}

before(async () => {
  await workspace("cp-ws", "cp-general", "cp-alice", ["cp-bob"]);
});

after(() => {
  for (const s of sockets) s.close();
});

test("the token function is called at every connect, and a thrown error is retried", async () => {
  let calls = 0;
  const errors = [];
  const socket = socketFor({
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error("auth server briefly down");
      return mint("cp-alice");
    },
    onTokenError: (e) => errors.push(e.message),
    socketOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
  });
  await connected(socket);
  assert.equal(calls, 2, "the failed attempt was retried with a new call");
  assert.deepEqual(errors, ["auth server briefly down"]);

  // A lost connection: the manager reconnects, calling the function again,
  // and the server resumes the session.
  socket.io.engine.close();
  await once(socket, "connect");
  assert.equal(calls, 3);
  assert.equal(socket.recovered, true);

  // The token identifies the user.
  const [msg] = await Promise.all([once(socket, "message:new"), send(socket, "who am i")]);
  assert.equal(msg[0].authorId, "cp-alice");
});

test("a token function giving no token connects without one, and the server refuses", async () => {
  const socket = socketFor({ token: () => null, socketOptions: { reconnection: false } });
  socket.connect();
  const [err] = await once(socket, "connect_error");
  assert.equal(socket.connected, false);
  assert.match(String(err.message), /token/i, `refusal: ${err.message} ${JSON.stringify(err.data)}`);
});

test("onRecoveryFailed is told when the server cannot resume the session", async () => {
  const failures = [];
  const socket = socketFor({
    token: () => mint("cp-alice"),
    onRecoveryFailed: (info) => failures.push(info),
    socketOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
  });
  const alsoTold = [];
  onRecoveryFailed(socket, (info) => alsoTold.push(info.reason));
  await connected(socket);
  assert.equal(failures.length, 0);
  // A session id the server does not know (as after the recovery window).
  socket._pid = "unknown-session-0123456789";
  socket.io.engine.close();
  await once(socket, "connect");
  await until("recovery:failed", () => failures.length === 1);
  assert.equal(socket.recovered, false);
  assert.ok(failures[0].reason, JSON.stringify(failures[0]));
  assert.ok(failures[0].message);
  assert.deepEqual(alsoTold, [failures[0].reason]);
});

test("fetchSince refetches exactly the messages after the last one seen, oldest first, across pages", async () => {
  const bob = await connected(socketFor({ token: () => mint("cp-bob") }));
  const alice = await connected(socketFor({ token: () => mint("cp-alice") }));
  const seen = trackLastSeen(alice);
  const seenFirst = once(alice, "message:new");
  await send(bob, "before 1");
  const last = await send(bob, "before 2");
  await until("alice saw bob's last message", () => seen.get(ROOM)?.id === last.id);
  await seenFirst;
  alice.disconnect();

  const missed = [];
  for (let i = 0; i < 5; i++) missed.push((await send(bob, `missed ${i}`)).id);

  const again = await connected(socketFor({ token: () => mint("cp-alice") }));
  // The history projection follows the log: wait until it has bob's last.
  await until("history has the last message", async () => {
    const r = await fetchSince(again, ROOM, undefined, { pageSize: 1, maxPages: 1 });
    return r.messages[0]?.id === missed[4];
  });
  const got = await fetchSince(again, ROOM, seen.get(ROOM), { pageSize: 2 });
  assert.equal(got.complete, true);
  assert.deepEqual(
    got.messages.map((m) => m.id),
    missed,
  );
  assert.deepEqual(
    got.messages.map((m) => m.body),
    ["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"],
  );
  // Too few pages to reach the boundary: said so.
  const partial = await fetchSince(again, ROOM, seen.get(ROOM), { pageSize: 2, maxPages: 2 });
  assert.equal(partial.complete, false);
  assert.deepEqual(
    partial.messages.map((m) => m.id),
    missed.slice(1),
  );
  seen.stop();
});

test("fetchSince reports the server's refusal with its code", async () => {
  const carol = await connected(socketFor({ token: () => mint("cp-carol") }));
  await assert.rejects(fetchSince(carol, ROOM, undefined), (e) => {
    assert.equal(e.name, "ConfabError");
    assert.equal(e.code, "forbidden");
    return true;
  });
});
