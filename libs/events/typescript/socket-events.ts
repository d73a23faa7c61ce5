// Generated from libs/events/src/socket.rs by `CONFAB_BLESS=1 cargo test -p confab-events`.
// Do not edit by hand; a test fails when this file is stale.
//
// Usage: `const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, opts);`

export type RoomRequest = string | { 
/**
 * The room name.
 */
room: string, };

export type AckError = { 
/**
 * Stable machine code, e.g. `invalid_room`, `forbidden`.
 */
code: string, 
/**
 * What went wrong, for a developer.
 */
message: string, 
/**
 * For `rate_limited`: how long to wait before retrying, ms.
 */
retryAfterMs?: number, };

export type RoomAck = { 
/**
 * Always `true`.
 */
ok: true, 
/**
 * The room, normalized.
 */
room: string, } | { 
/**
 * Why.
 */
error: AckError, };

export type RefreshRequest = { 
/**
 * The new JWT, for the same user.
 */
token: string, };

export type SendRequest = { 
/**
 * The room, `channel:{id}` or `dm:{id}`.
 */
room: string, 
/**
 * The text; not empty, at most the configured size.
 */
body: string, 
/**
 * The client's id for this message (1 to 64 of `[A-Za-z0-9_-]`).
 * Sending again with the same id (a retry after a lost ack) returns
 * the same ack and never creates a second message.
 */
clientMsgId: string, 
/**
 * The thread's root message id, for a reply.
 */
threadId?: string, };

export type SendAck = { 
/**
 * Message id.
 */
id: string, 
/**
 * Position in the room log (the event's offset).
 */
seq: number, 
/**
 * Creation time, RFC 3339.
 */
createdAt: string, } | { 
/**
 * Why.
 */
error: AckError, };

export type Typing = { 
/**
 * The room.
 */
room: string, 
/**
 * Who types.
 */
userId: string, 
/**
 * `true` on start, `false` on stop.
 */
typing: boolean, 
/**
 * While typing: drop the indicator after this many ms unless renewed
 * (a stop may never come: a closed tab, a lost connection).
 */
expiresInMs?: number, };

export type RefreshAck = { 
/**
 * Always `true`.
 */
ok: true, 
/**
 * New expiry, Unix seconds.
 */
expiresAt: number, } | { 
/**
 * Why.
 */
error: AckError, };

export type SessionExpired = { 
/**
 * Stable machine code: `token_expired`.
 */
code: string, 
/**
 * What happened and what to do (reconnect with a fresh token).
 */
message: string, };

export type Message = { 
/**
 * Message id.
 */
id: string, 
/**
 * Room name, e.g. `channel:42`.
 */
room: string, 
/**
 * Author's user id.
 */
authorId: string, 
/**
 * Message text.
 */
body: string, 
/**
 * Thread root message id, for replies.
 */
threadId?: string, 
/**
 * Creation time, RFC 3339.
 */
createdAt: string, 
/**
 * Last edit time, RFC 3339.
 */
updatedAt?: string, };

export type MessageDeleted = { 
/**
 * Message id.
 */
id: string, 
/**
 * Room name.
 */
room: string, };

export type SocketData = { 
/**
 * The authenticated user.
 */
userId: string, };

/** Events a client emits. */
export interface ClientToServerEvents {
  "room:join": (room: RoomRequest, ack: (res: RoomAck) => void) => void;
  "room:leave": (room: RoomRequest, ack: (res: RoomAck) => void) => void;
  "auth:refresh": (req: RefreshRequest, ack: (res: RefreshAck) => void) => void;
  "message:send": (msg: SendRequest, ack: (res: SendAck) => void) => void;
  "typing:start": (room: RoomRequest) => void;
  "typing:stop": (room: RoomRequest) => void;
}

/** Events the server emits. */
export interface ServerToClientEvents {
  "message:new": (msg: Message) => void;
  "message:updated": (msg: Message) => void;
  "message:deleted": (msg: MessageDeleted) => void;
  "session:expired": (info: SessionExpired) => void;
  "typing": (t: Typing) => void;
}
