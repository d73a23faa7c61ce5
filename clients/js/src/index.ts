/**
 * `@confab/client`: the official `socket.io-client`, typed with Confab's
 * events (generated from the Rust types), with the defaults the old app's
 * hook had, an optional token function for JWT deployments, and helpers to
 * refetch what a client missed when its session could not be recovered.
 *
 * React: `useSocket()` is in `@confab/client/react`, so that this entry
 * point does not need React.
 */
import { io } from "socket.io-client";
import type { ManagerOptions, Socket, SocketOptions } from "socket.io-client";
import type {
  ClientToServerEvents,
  Message,
  RecoveryFailed,
  ServerToClientEvents,
} from "./generated/socket-events.js";

export type * from "./generated/socket-events.js";
export { fetchSince, trackLastSeen, ConfabError } from "./history.js";
export type { FetchSinceOptions, LastSeen, Refetched, SeenMessage } from "./history.js";

/** A socket typed with Confab's events. */
export type ConfabSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/**
 * Gives the JWT for the next CONNECT. Called at every connect and
 * reconnect, so it can return a fresh token each time. `null` or
 * `undefined`: connect without a token (the server then uses the browser's
 * cookies, or refuses). Throwing (or rejecting): the attempt is dropped
 * and retried with the usual backoff.
 */
export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

/** How to build a socket. Every field is optional. */
export interface ConfabOptions {
  /** Confab's URL. Default: the page's origin, as `io()` with no URL. */
  url?: string;
  /** For JWT deployments; see {@link TokenSource}. Without it, the
   * browser's cookies authenticate (`withCredentials: true`). */
  token?: TokenSource;
  /** Told why a token function failed (the attempt is then retried). */
  onTokenError?: (error: unknown) => void;
  /** Called when the server could not resume the session after a
   * reconnection (`recovery:failed`): refetch what the page shows, e.g.
   * with {@link fetchSince}. */
  onRecoveryFailed?: (info: RecoveryFailed) => void;
  /** Any other `socket.io-client` option; these win over the defaults. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
}

/**
 * The defaults, those of the hook the old app used: cookies sent
 * cross-origin, 10 reconnection attempts with a 1 to 5 s backoff, default
 * transports (HTTP long-polling first, then the upgrade to WebSocket), and
 * no connection until asked (`connect()` or `useSocket()`).
 */
export const DEFAULT_SOCKET_OPTIONS: Readonly<Partial<ManagerOptions & SocketOptions>> = {
  withCredentials: true,
  reconnectionAttempts: 10,
  reconnectionDelay: 1000,
  reconnectionDelayMax: 5000,
  autoConnect: false,
};

/** Builds a new socket (not the shared one; see {@link getSocket}). */
export function createSocket(options: ConfabOptions = {}): ConfabSocket {
  const opts: Partial<ManagerOptions & SocketOptions> = {
    ...DEFAULT_SOCKET_OPTIONS,
    ...options.socketOptions,
  };
  let socket: ConfabSocket;
  const token = options.token;
  if (token) {
    opts.auth = (send: (data: object) => void) => {
      // Called by socket.io-client before each CONNECT packet.
      Promise.resolve()
        .then(token)
        .then(
          (value) => send(value ? { token: value } : {}),
          (error: unknown) => {
            options.onTokenError?.(error);
            // Closing the transport makes the manager reconnect with its
            // backoff (and call the token function again).
            socket.io.engine?.close();
          },
        );
    };
  }
  socket = options.url === undefined ? io(opts) : io(options.url, opts);
  if (options.onRecoveryFailed) {
    socket.on("recovery:failed", options.onRecoveryFailed);
  }
  return socket;
}

let shared: ConfabSocket | undefined;
let sharedOptions: ConfabOptions = {};

/**
 * Sets the options of the shared socket. Call it once, before the first
 * {@link getSocket} (or `useSocket()`); afterwards it throws, since the
 * socket exists already.
 */
export function configure(options: ConfabOptions): void {
  if (shared) {
    throw new Error(
      "@confab/client: configure() was called after the shared socket was created; call it before the first getSocket()/useSocket()",
    );
  }
  sharedOptions = options;
}

/** The one shared socket of the page, built on first use (not connected:
 * `useSocket()` or `connect()` connects it). */
export function getSocket(): ConfabSocket {
  shared ??= createSocket(sharedOptions);
  return shared;
}

/** Subscribes to `recovery:failed`; returns the unsubscribe function. */
export function onRecoveryFailed(
  socket: ConfabSocket,
  handler: (info: RecoveryFailed) => void,
): () => void {
  socket.on("recovery:failed", handler);
  return () => {
    socket.off("recovery:failed", handler);
  };
}

/** A message as `message:new` delivers it. */
export type { Message };
