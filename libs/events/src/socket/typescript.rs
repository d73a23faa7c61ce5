//! [`typescript`]: the socket events rendered as TypeScript declarations
//! for `socket.io-client` (`libs/events/typescript/socket-events.ts`).

use ts_rs::TS;

use super::*;

/// Renders the TypeScript declarations of every socket event.
pub fn typescript() -> String {
    let cfg = ts_rs::Config::default();
    let mut out = String::from(
        "// Generated from libs/events/src/socket.rs by `CONFAB_BLESS=1 cargo test -p confab-events`.\n\
         // Do not edit by hand; a test fails when this file is stale.\n\
         //\n\
         // Usage: `const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, opts);`\n\n",
    );
    for decl in [
        RoomRequest::decl(&cfg),
        AckError::decl(&cfg),
        RoomAck::decl(&cfg),
        RefreshRequest::decl(&cfg),
        SendRequest::decl(&cfg),
        SendAck::decl(&cfg),
        Typing::decl(&cfg),
        RefreshAck::decl(&cfg),
        SessionExpired::decl(&cfg),
        RecoveryFailed::decl(&cfg),
        Message::decl(&cfg),
        MessageDeleted::decl(&cfg),
        EditRequest::decl(&cfg),
        DeleteRequest::decl(&cfg),
        HistoryRequest::decl(&cfg),
        ChangeAck::decl(&cfg),
        HistoryAck::decl(&cfg),
        SocketData::decl(&cfg),
        PresenceStatus::decl(&cfg),
        PresenceSet::decl(&cfg),
        PresenceQuery::decl(&cfg),
        PresenceQueryAck::decl(&cfg),
        PresenceUpdate::decl(&cfg),
        RoomJoined::decl(&cfg),
        LeaveReason::decl(&cfg),
        RoomLeft::decl(&cfg),
        MemberJoined::decl(&cfg),
        MemberLeft::decl(&cfg),
        ChannelArchived::decl(&cfg),
    ] {
        out.push_str("export ");
        out.push_str(&decl);
        out.push_str("\n\n");
    }
    let presence_client = format!(
        "  \"{}\": (req: PresenceSet, ack: (res: {{ ok: true }} | {{ error: AckError }}) => void) => void;\n  \
         \"{}\": (req: PresenceQuery, ack: (res: PresenceQueryAck) => void) => void;\n",
        names::PRESENCE_SET,
        names::PRESENCE_QUERY,
    );
    let presence_server = format!(
        "  \"{}\": (p: PresenceUpdate) => void;\n",
        names::PRESENCE_UPDATE
    );
    let membership_server = format!(
        "  \"{}\": (e: RoomJoined) => void;\n  \
           \"{}\": (e: RoomLeft) => void;\n  \
           \"{}\": (e: MemberJoined) => void;\n  \
           \"{}\": (e: MemberLeft) => void;\n  \
           \"{}\": (e: ChannelArchived) => void;\n",
        names::ROOM_JOINED,
        names::ROOM_LEFT,
        names::MEMBER_JOINED,
        names::MEMBER_LEFT,
        names::CHANNEL_ARCHIVED,
    );
    let history_client = format!(
        "  \"{}\": (req: EditRequest, ack: (res: ChangeAck) => void) => void;\n  \
           \"{}\": (req: DeleteRequest, ack: (res: ChangeAck) => void) => void;\n  \
           \"{}\": (req: HistoryRequest, ack: (res: HistoryAck) => void) => void;\n",
        names::MESSAGE_EDIT,
        names::MESSAGE_DELETE,
        names::MESSAGE_HISTORY,
    );
    out.push_str(&format!(
        "/** Events a client emits. */\n\
         export interface ClientToServerEvents {{\n  \
           \"{}\": (room: RoomRequest, ack: (res: RoomAck) => void) => void;\n  \
           \"{}\": (room: RoomRequest, ack: (res: RoomAck) => void) => void;\n  \
           \"{}\": (req: RefreshRequest, ack: (res: RefreshAck) => void) => void;\n  \
           \"{}\": (msg: SendRequest, ack: (res: SendAck) => void) => void;\n  \
           \"{}\": (room: RoomRequest) => void;\n  \
           \"{}\": (room: RoomRequest) => void;\n\
         {presence_client}\
         {history_client}\
         }}\n\n\
         /** Events the server emits. */\n\
         export interface ServerToClientEvents {{\n  \
           \"{}\": (msg: Message) => void;\n  \
           \"{}\": (msg: Message) => void;\n  \
           \"{}\": (msg: MessageDeleted) => void;\n  \
           \"{}\": (info: SessionExpired) => void;\n  \
           \"{}\": (info: RecoveryFailed) => void;\n  \
           \"{}\": (t: Typing) => void;\n\
         {presence_server}\
         {membership_server}\
         }}\n",
        names::ROOM_JOIN,
        names::ROOM_LEAVE,
        names::AUTH_REFRESH,
        names::MESSAGE_SEND,
        names::TYPING_START,
        names::TYPING_STOP,
        names::MESSAGE_NEW,
        names::MESSAGE_UPDATED,
        names::MESSAGE_DELETED,
        names::SESSION_EXPIRED,
        names::RECOVERY_FAILED,
        names::TYPING,
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The checked-in TypeScript must match the Rust types. Regenerate with
    /// `CONFAB_BLESS=1 cargo test -p confab-events`.
    #[test]
    fn typescript_declarations_are_fresh() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("typescript/socket-events.ts");
        let fresh = typescript();
        if std::env::var_os("CONFAB_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "{} is stale: run `CONFAB_BLESS=1 cargo test -p confab-events` and commit it",
            path.display()
        );
    }
}
