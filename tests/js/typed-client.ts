// Type-checked (never run) by the e2e test `typescript_declarations_fit_socket_io_client`:
// the generated declarations must work with socket.io-client's typed Socket.
import { io, Socket } from "socket.io-client";
import type {
  ClientToServerEvents,
  Message,
  LeaveReason,
  PresenceStatus,
  PresenceUpdate,
  RoomAck,
  ServerToClientEvents,
} from "../../libs/events/typescript/socket-events";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io("http://127.0.0.1:3000", {
  transports: ["websocket"],
  auth: { token: "..." },
});

socket.emit("room:join", "channel:42", (res: RoomAck) => {
  if ("error" in res) {
    const code: string = res.error.code;
    console.log(code);
  } else {
    const ok: true = res.ok;
    console.log(ok, res.room);
  }
});
socket.emit("room:leave", { room: "channel:42" }, () => {});
socket.emit("auth:refresh", { token: "..." }, (res) => {
  if ("ok" in res) {
    const when: number = res.expiresAt;
    console.log(when);
  }
});
socket.emit("message:send", { room: "channel:42", body: "hi", clientMsgId: "c1" }, (res) => {
  if ("error" in res) {
    const wait: number | undefined = res.error.retryAfterMs;
    console.log(wait);
  } else {
    const seq: number = res.seq;
    console.log(res.id, seq, res.createdAt);
  }
});
socket.emit("typing:start", "channel:42");
socket.emit("typing:stop", { room: "channel:42" });
socket.on("typing", (t) => console.log(t.userId, t.typing, t.expiresInMs));
socket.on("message:new", (m: Message) => console.log(m.id, m.room, m.authorId, m.body, m.threadId));
socket.on("message:deleted", (m) => console.log(m.id));
socket.on("session:expired", (info) => console.log(info.code, info.message));
socket.on("message:updated", (m: Message) => console.log(m.id, m.body, m.updatedAt));
socket.emit("message:edit", { room: "channel:42", id: "m1", body: "fixed" }, (res) => {
  if ("error" in res) console.log(res.error.code);
  else console.log(res.ok, res.seq);
});
socket.emit("message:delete", { room: "channel:42", id: "m1" }, (res) => {
  if ("error" in res) console.log(res.error.code);
});
socket.emit("message:history", { room: "channel:42", before: "17", limit: 10 }, (res) => {
  if ("error" in res) {
    console.log(res.error.code);
  } else {
    const page: Message[] = res.messages;
    const next: string | undefined = res.nextCursor;
    console.log(page.length, next);
  }
});
socket.emit("presence:set", { status: "away" }, (res) => {
  if ("error" in res) console.log(res.error.code);
  else console.log(res.ok);
});
socket.emit("presence:query", { users: ["alice", "bob"] }, (res) => {
  if ("error" in res) {
    console.log(res.error.code);
  } else {
    const statuses: Record<string, PresenceStatus> = res.presence;
    console.log(statuses["alice"]);
  }
});
socket.on("presence:update", (p: PresenceUpdate) => console.log(p.userId, p.status));
socket.on("room:joined", (e) => console.log(e.room));
socket.on("room:left", (e) => {
  const why: LeaveReason = e.reason;
  console.log(e.room, why === "kicked");
});
socket.on("member:joined", (e) => console.log(e.room, e.user));
socket.on("member:left", (e) => console.log(e.room, e.user, e.reason));
socket.on("channel:archived", (e) => console.log(e.room, e.by));

// @ts-expect-error: unknown client events are a compile error.
socket.emit("no:such-event");
