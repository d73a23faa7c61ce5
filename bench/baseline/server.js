// The baseline Confab replaces: socket.io 4.8 with @socket.io/redis-adapter
// 8.3 over a local Redis. One process per port; run two of them sharing
// the same Redis. Deliberately minimal and doing what Confab does on the
// benchmark's hot path:
//  - verify the HS256 JWT of the handshake (auth.token), user = sub;
//  - join `user:{sub}` and the rooms the client names in auth.rooms
//    (Confab asks its membership service instead);
//  - on `message:send` {room, body, clientMsgId}: refuse rooms the socket
//    is not in, broadcast `message:new` {id, room, authorId, body,
//    createdAt} to the room (sender included, as Confab does), ack the
//    sender with {id, seq, createdAt}.
// Unlike Confab, nothing is stored: the ack follows the Redis publish.
//
// Env: PORT (required), SECRET_FILE (HS256 secret), REDIS_URL
// (redis://127.0.0.1:6379).
"use strict";
const fs = require("node:fs");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const jwt = require("jsonwebtoken");

const port = Number(process.env.PORT);
if (!port) throw new Error("PORT is required");
const secret = fs.readFileSync(process.env.SECRET_FILE, "utf8").trim();
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  // Long-polling too (scenario 5): each load-generator client talks to one
  // process, so no sticky sessions are needed.
  const io = new Server({ transports: ["polling", "websocket"], serveClient: false });
  io.adapter(createAdapter(pubClient, subClient));

  io.use((socket, next) => {
    try {
      const claims = jwt.verify(socket.handshake.auth.token, secret, { algorithms: ["HS256"] });
      socket.data.user = String(claims.sub);
      next();
    } catch (e) {
      const err = new Error("unauthorized");
      err.data = { code: "unauthorized" };
      next(err);
    }
  });

  let seq = 0;
  io.on("connection", (socket) => {
    const rooms = Array.isArray(socket.handshake.auth.rooms) ? socket.handshake.auth.rooms : [];
    socket.join(["user:" + socket.data.user, ...rooms.filter((r) => typeof r === "string")]);
    socket.on("message:send", (msg, ack) => {
      if (typeof ack !== "function") return;
      if (!msg || typeof msg.room !== "string" || !socket.rooms.has(msg.room)) {
        return ack({ error: { code: "forbidden", message: "not a member of the room" } });
      }
      if (typeof msg.body !== "string" || msg.body.trim() === "") {
        return ack({ error: { code: "invalid_body", message: "body is empty" } });
      }
      const m = {
        id: "m" + crypto.randomBytes(12).toString("hex"),
        room: msg.room,
        authorId: socket.data.user,
        body: msg.body,
        createdAt: new Date().toISOString(),
      };
      io.to(msg.room).emit("message:new", m);
      ack({ id: m.id, seq: ++seq, createdAt: m.createdAt });
    });
  });

  io.listen(port);
  console.log(`baseline socket.io ${require("socket.io/package.json").version} on ${port} (pid ${process.pid})`);
  const stop = () => io.close(() => Promise.all([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0)));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
