// Type-checked (never run) by the e2e test `typescript_declarations_fit_socket_io_client`:
// the generated declarations must work with socket.io-client's typed Socket.
import { io, Socket } from "socket.io-client";
import type {
  ClientToServerEvents,
  Message,
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

// @ts-expect-error: unknown client events are a compile error.
socket.emit("no:such-event");
