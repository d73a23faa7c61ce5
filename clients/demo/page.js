// The demo chat page: one socket through @confab/client, history on load,
// live messages, typing and presence.
import { configure, fetchSince, getSocket, trackLastSeen } from "@confab/client";

const $ = (id) => document.getElementById(id);
const me = new URLSearchParams(location.search).get("user") ?? "alice";
const { gateway, users, channels } = await (await fetch("/config.json")).json();
let current = `channel:${channels[0]}`;
const presence = new Map();
const typing = new Map(); // userId -> timer, in the current room

configure({
  url: gateway,
  // JWT deployment: a dev token from the demo server at every connect.
  token: async () => (await fetch(`/token?user=${encodeURIComponent(me)}`)).text(),
  // The session could not be resumed: reload what is shown.
  onRecoveryFailed: () => showRoom(current),
});
const socket = getSocket();
const lastSeen = trackLastSeen(socket);

function renderNav() {
  $("me").textContent = `signed in as ${me}`;
  $("channels").replaceChildren(
    ...channels.map((c) => {
      const a = document.createElement("a");
      a.textContent = `# ${c}`;
      a.className = `channel:${c}` === current ? "current" : "";
      a.onclick = () => showRoom(`channel:${c}`);
      return a;
    }),
  );
  $("people").replaceChildren(
    ...users.map((u) => {
      const a = document.createElement("a");
      const dot = document.createElement("span");
      dot.className = `dot ${presence.get(u) ?? "offline"}`;
      a.append(dot, u === me ? `${u} (you)` : u);
      return a;
    }),
  );
}

function addMessage(m) {
  const div = document.createElement("div");
  div.className = "msg";
  const time = document.createElement("time");
  time.textContent = new Date(m.createdAt).toLocaleTimeString();
  const who = document.createElement("b");
  who.textContent = m.authorId;
  div.append(time, who, m.body);
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
}

function renderTyping() {
  const names = [...typing.keys()];
  $("typing").textContent =
    names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

async function showRoom(room) {
  current = room;
  typing.clear();
  renderTyping();
  renderNav();
  $("title").textContent = `# ${room.slice("channel:".length)}`;
  $("messages").replaceChildren();
  // History on load: the latest page, oldest first.
  const { messages } = await fetchSince(socket, room, undefined, { pageSize: 50, maxPages: 1 });
  if (current !== room) return;
  $("messages").replaceChildren();
  messages.forEach((m) => {
    lastSeen.see(m);
    addMessage(m);
  });
}

socket.on("connect", async () => {
  $("status").textContent = socket.recovered ? "reconnected (nothing missed)" : "connected";
  if (!socket.recovered) await showRoom(current);
  const ack = await socket.timeout(5000).emitWithAck("presence:query", { users });
  if (ack.presence) for (const [u, s] of Object.entries(ack.presence)) presence.set(u, s);
  renderNav();
});
socket.on("disconnect", () => ($("status").textContent = "reconnecting…"));
socket.on("connect_error", (e) => ($("status").textContent = `cannot connect: ${e.message}`));
socket.on("message:new", (m) => {
  if (m.room === current) addMessage(m);
  const timer = typing.get(m.authorId);
  if (timer) {
    clearTimeout(timer);
    typing.delete(m.authorId);
    renderTyping();
  }
});
socket.on("presence:update", ({ userId, status }) => {
  presence.set(userId, status);
  renderNav();
});
socket.on("typing", (t) => {
  if (t.room !== current || t.userId === me) return;
  clearTimeout(typing.get(t.userId));
  if (t.typing) {
    typing.set(t.userId, setTimeout(() => (typing.delete(t.userId), renderTyping()), t.expiresInMs ?? 5000));
  } else {
    typing.delete(t.userId);
  }
  renderTyping();
});

let typingSince = 0;
$("text").addEventListener("input", () => {
  if ($("text").value === "") return;
  if (Date.now() - typingSince > 2000) {
    typingSince = Date.now();
    socket.emit("typing:start", current);
  }
});
let sent = 0;
$("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = $("text").value.trim();
  if (!body) return;
  $("text").value = "";
  typingSince = 0;
  socket.emit("typing:stop", current);
  const ack = await socket.timeout(10_000).emitWithAck("message:send", {
    room: current,
    body,
    clientMsgId: `${me}-${Date.now()}-${++sent}`,
  });
  if (ack.error) $("status").textContent = `not sent: ${ack.error.message}`;
});

renderNav();
socket.connect();
