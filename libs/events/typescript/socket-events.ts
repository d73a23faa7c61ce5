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
 * Stable machine code: `token_expired` (the JWT's `exp` passed) or
 * `session_expired` (session auth: the app no longer vouches for the
 * session: signed out, expired or revoked).
 */
code: string, 
/**
 * What happened and what to do (reconnect with a fresh token, or sign
 * in again).
 */
message: string, };

export type RecoveryFailed = { 
/**
 * Stable machine code: `expired` (the window passed), `unknown_session`,
 * `foreign_session` (another user's), `invalid_session` (malformed pid
 * or offset), `too_many_missed`, `unavailable` (the session store or
 * the log could not be read).
 */
reason: string, 
/**
 * What happened; the app should refetch what it shows.
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

export type EditRequest = { 
/**
 * The message's room.
 */
room: string, 
/**
 * The message id.
 */
id: string, 
/**
 * The new text; not empty, at most 8 KiB.
 */
body: string, };

export type DeleteRequest = { 
/**
 * The message's room.
 */
room: string, 
/**
 * The message id.
 */
id: string, };

export type HistoryRequest = { 
/**
 * The room.
 */
room: string, 
/**
 * Cursor: a `nextCursor` of the previous page.
 */
before?: string, 
/**
 * Page size, 1 to 100 (default 50).
 */
limit?: number, };

export type ChangeAck = { 
/**
 * Always `true`.
 */
ok: true, 
/**
 * Position of the event in the room log.
 */
seq: number, } | { 
/**
 * Why.
 */
error: AckError, };

export type HistoryAck = { 
/**
 * Messages, newest first.
 */
messages: Array<Message>, 
/**
 * Pass as `before` for the next (older) page; absent on the last.
 */
nextCursor?: string, } | { 
/**
 * Why.
 */
error: AckError, };

export type SocketData = { 
/**
 * The authenticated user.
 */
userId: string, };

export type PresenceStatus = "online" | "away" | "offline";

export type PresenceSet = { 
/**
 * `online` or `away` (`offline` is refused: disconnect instead).
 */
status: PresenceStatus, };

export type PresenceQuery = { 
/**
 * User ids, at most [`MAX_PRESENCE_QUERY`].
 */
users: Array<string>, };

export type PresenceQueryAck = { 
/**
 * User id → status.
 */
presence: Record<string, PresenceStatus>, } | { 
/**
 * Why.
 */
error: AckError, };

export type PresenceUpdate = { 
/**
 * Whose presence changed.
 */
userId: string, 
/**
 * The new presence.
 */
status: PresenceStatus, };

export type RoomJoined = { 
/**
 * The room, e.g. `channel:42`.
 */
room: string, };

export type LeaveReason = "left" | "kicked" | "removed_from_workspace";

export type RoomLeft = { 
/**
 * The room, e.g. `channel:42`.
 */
room: string, 
/**
 * Why.
 */
reason: LeaveReason, };

export type MemberJoined = { 
/**
 * The room.
 */
room: string, 
/**
 * Who joined.
 */
user: string, };

export type MemberLeft = { 
/**
 * The room.
 */
room: string, 
/**
 * Who left.
 */
user: string, 
/**
 * Why.
 */
reason: LeaveReason, };

export type ChannelArchived = { 
/**
 * The channel's room, `channel:{id}`.
 */
room: string, 
/**
 * Who archived it.
 */
by: string, };

/** Events a client emits. */
export interface ClientToServerEvents {
  "room:join": (room: RoomRequest, ack: (res: RoomAck) => void) => void;
  "room:leave": (room: RoomRequest, ack: (res: RoomAck) => void) => void;
  "auth:refresh": (req: RefreshRequest, ack: (res: RefreshAck) => void) => void;
  "message:send": (msg: SendRequest, ack: (res: SendAck) => void) => void;
  "typing:start": (room: RoomRequest) => void;
  "typing:stop": (room: RoomRequest) => void;
  "presence:set": (req: PresenceSet, ack: (res: { ok: true } | { error: AckError }) => void) => void;
  "presence:query": (req: PresenceQuery, ack: (res: PresenceQueryAck) => void) => void;
  "message:edit": (req: EditRequest, ack: (res: ChangeAck) => void) => void;
  "message:delete": (req: DeleteRequest, ack: (res: ChangeAck) => void) => void;
  "message:history": (req: HistoryRequest, ack: (res: HistoryAck) => void) => void;
}

/** Events the server emits. */
export interface ServerToClientEvents {
  "message:new": (msg: Message) => void;
  "message:updated": (msg: Message) => void;
  "message:deleted": (msg: MessageDeleted) => void;
  "session:expired": (info: SessionExpired) => void;
  "recovery:failed": (info: RecoveryFailed) => void;
  "typing": (t: Typing) => void;
  "presence:update": (p: PresenceUpdate) => void;
  "room:joined": (e: RoomJoined) => void;
  "room:left": (e: RoomLeft) => void;
  "member:joined": (e: MemberJoined) => void;
  "member:left": (e: MemberLeft) => void;
  "channel:archived": (e: ChannelArchived) => void;
}
