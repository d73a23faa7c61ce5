/**
 * Refetching what a client missed: `message:history` pages a room's
 * messages newest first (`nextCursor` → `before`), members only. When the
 * server could not resume a session (`recovery:failed`), the page asks for
 * the messages after the last one it saw.
 */
import type { Socket } from "socket.io-client";
import type {
  ClientToServerEvents,
  Message,
  ServerToClientEvents,
} from "./generated/socket-events.js";

type ConfabSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** The last message a page saw in a room. */
export interface SeenMessage {
  /** Message id. */
  id: string;
  /** Its creation time (RFC 3339): the boundary if that message is gone. */
  createdAt: string;
}

/** What {@link fetchSince} found. */
export interface Refetched {
  /** The messages after the boundary, oldest first. */
  messages: Message[];
  /** `false` when `maxPages` ran out before the boundary was reached:
   * older missed messages exist; reload the room instead. */
  complete: boolean;
}

/** Bounds of {@link fetchSince}. */
export interface FetchSinceOptions {
  /** Page size, 1 to 100. Default 100. */
  pageSize?: number;
  /** Pages read at most. Default 10. */
  maxPages?: number;
  /** Ack timeout per page, ms. Default 10 000. */
  timeoutMs?: number;
}

/** A refusal from the server: its stable `code` and its `message`. */
export class ConfabError extends Error {
  /** Stable machine code, e.g. `forbidden`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "ConfabError";
    this.code = code;
  }
}

/**
 * The messages of `room` after `since` (all of the recent history when
 * `since` is undefined, within `maxPages`), oldest first. Throws a
 * {@link ConfabError} when the server refuses, and socket.io-client's
 * timeout error when an ack does not come.
 */
export async function fetchSince(
  socket: ConfabSocket,
  room: string,
  since: SeenMessage | undefined,
  options: FetchSinceOptions = {},
): Promise<Refetched> {
  const limit = options.pageSize ?? 100;
  const maxPages = options.maxPages ?? 10;
  const timeout = options.timeoutMs ?? 10_000;
  const newestFirst: Message[] = [];
  let before: string | undefined;
  for (let page = 0; page < maxPages; page++) {
    const ack = await socket
      .timeout(timeout)
      .emitWithAck("message:history", before === undefined ? { room, limit } : { room, limit, before });
    if ("error" in ack) {
      throw new ConfabError(ack.error.code, ack.error.message);
    }
    for (const m of ack.messages) {
      if (since && (m.id === since.id || Date.parse(m.createdAt) < Date.parse(since.createdAt))) {
        return { messages: newestFirst.reverse(), complete: true };
      }
      newestFirst.push(m);
    }
    if (ack.nextCursor === undefined) {
      return { messages: newestFirst.reverse(), complete: true };
    }
    before = ack.nextCursor;
  }
  return { messages: newestFirst.reverse(), complete: false };
}

/** The last message seen per room, kept up to date from `message:new`. */
export interface LastSeen {
  /** The last message seen in `room`, if any. */
  get(room: string): SeenMessage | undefined;
  /** Records a message the page got another way (e.g. from history). */
  see(message: Message): void;
  /** Stops listening. */
  stop(): void;
}

/** Tracks the last message seen per room on `socket`. */
export function trackLastSeen(socket: ConfabSocket): LastSeen {
  const last = new Map<string, SeenMessage>();
  const see = (m: Message) => {
    const prev = last.get(m.room);
    if (!prev || Date.parse(prev.createdAt) <= Date.parse(m.createdAt)) {
      last.set(m.room, { id: m.id, createdAt: m.createdAt });
    }
  };
  socket.on("message:new", see);
  return {
    get: (room) => last.get(room),
    see,
    stop: () => {
      socket.off("message:new", see);
    },
  };
}
