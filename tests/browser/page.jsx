// The test page: signs up and in with better-auth's client, connects to
// Confab through @confab/client's React hook, and exposes `window.t` for
// the Playwright driver (run.mjs). The log records what the socket saw.
import { useEffect, useState } from "react";
import { flushSync } from "react-dom";
import { createRoot } from "react-dom/client";
import { createAuthClient } from "better-auth/client";
import { configure, getSocket } from "@confab/client";
import { useSocket } from "@confab/client/react";

const auth = createAuthClient({ baseURL: location.origin });
const log = [];
const root = createRoot(document.getElementById("root"));
let configured = false;

// The log also shows on the page (outside the React root), so a failure
// screenshot says what the socket saw.
const shown = document.createElement("pre");
document.body.append(shown);

function record(entry) {
  log.push({ at: Date.now(), ...entry });
  shown.textContent += `${JSON.stringify(entry)}\n`;
}

/** JWT deployments: a token from better-auth's JWT plugin at each connect. */
async function jwtFromTheApp() {
  const res = await fetch("/api/auth/token", { credentials: "include" });
  if (res.status === 401) return null; // signed out: connect without a token
  if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
  return (await res.json()).token;
}

function Chat() {
  const socket = useSocket();
  const [messages, setMessages] = useState([]);
  const [status, setStatus] = useState("connecting");
  useEffect(() => {
    const onOpen = () => {
      const engine = socket.io.engine;
      record({ type: "open", transport: engine.transport.name });
      engine.on("upgrade", (t) => record({ type: "upgrade", transport: t.name }));
    };
    const onConnect = () => {
      record({ type: "connect", recovered: socket.recovered, id: socket.id });
      setStatus(`connected as ${socket.id}${socket.recovered ? " (recovered)" : ""}`);
    };
    const onError = (e) => {
      record({ type: "connect_error", message: e.message, data: e.data ?? null });
      setStatus(`refused: ${e.message}`);
    };
    const onDisconnect = (reason) => {
      record({ type: "disconnect", reason });
      setStatus(`disconnected: ${reason}`);
    };
    const onMessage = (m) => {
      record({ type: "message:new", id: m.id, body: m.body, authorId: m.authorId });
      setMessages((ms) => [...ms, m]);
    };
    socket.io.on("open", onOpen);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
    socket.on("disconnect", onDisconnect);
    socket.on("message:new", onMessage);
    return () => {
      socket.io.off("open", onOpen);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      socket.off("disconnect", onDisconnect);
      socket.off("message:new", onMessage);
    };
  }, [socket]);
  return (
    <div>
      <p id="status">{status}</p>
      <ul id="messages">
        {messages.map((m) => (
          <li key={m.id}>
            {m.authorId}: {m.body}
          </li>
        ))}
      </ul>
    </div>
  );
}

let sent = 0;
window.t = {
  log,
  async signUp(email, password, name) {
    const { data, error } = await auth.signUp.email({ email, password, name });
    if (error) throw new Error(`sign-up: ${JSON.stringify(error)}`);
    return data.user.id;
  },
  async signIn(email, password) {
    const { data, error } = await auth.signIn.email({ email, password });
    if (error) throw new Error(`sign-in: ${JSON.stringify(error)}`);
    return data.user.id;
  },
  async signOut() {
    const { error } = await auth.signOut();
    if (error) throw new Error(`sign-out: ${JSON.stringify(error)}`);
  },
  /** Mounts the chat (useSocket connects); `mode` is "cookie" or "jwt". */
  mount(url, mode) {
    if (!configured) {
      configure({
        url,
        token: mode === "jwt" ? jwtFromTheApp : undefined,
        onRecoveryFailed: (info) => record({ type: "recovery:failed", ...info }),
      });
      configured = true;
    }
    flushSync(() => root.render(<Chat />));
  },
  /** Unmounts it (useSocket disconnects), synchronously. */
  unmount() {
    flushSync(() => root.render(null));
  },
  async send(room, body) {
    sent += 1;
    return getSocket().timeout(10_000).emitWithAck("message:send", { room, body, clientMsgId: `b${sent}` });
  },
  state() {
    const s = getSocket();
    return {
      connected: s.connected,
      recovered: s.recovered,
      id: s.id ?? null,
      transport: s.io.engine?.transport?.name ?? null,
    };
  },
};
