//! What gateways tell each other for the Admin UI, and what the UI reads.
//!
//! Each gateway publishes a [`Snapshot`] every `admin.stats_interval` on
//! [`SNAPSHOTS`] (core NATS, at most once: the next one repairs a lost
//! one). An action on another gateway's socket goes to that gateway on
//! [`action_subject`]. Field names inside `stats` and `sockets` are the
//! Admin UI's (`@socket.io/admin-ui` 0.5: `server_stats`,
//! `SerializedSocket`), so the serving gateway forwards them unchanged.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where every gateway publishes its snapshots.
pub(crate) const SNAPSHOTS: &str = "confab.gateway.v1.admin.snapshots";

/// Where a gateway takes the actions on its own sockets.
pub(crate) fn action_subject(gateway: &str) -> String {
    format!("confab.gateway.v1.{gateway}.admin")
}

/// Largest encoded snapshot: well below NATS's default 1 MiB payload.
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 512 * 1024;

/// One gateway's state, as the Admin UI shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The gateway's id (`serverId` in `stats`).
    pub(crate) gateway: String,
    /// The `server_stats` event's payload.
    pub(crate) stats: ServerStats,
    /// Its sockets, oldest first, at most `admin.max_sockets`.
    pub(crate) sockets: Vec<UiSocket>,
}

/// The Admin UI's `server_stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerStats {
    pub(crate) server_id: String,
    pub(crate) hostname: String,
    pub(crate) pid: u32,
    /// Seconds since the gateway started.
    pub(crate) uptime: f64,
    pub(crate) clients_count: u64,
    pub(crate) polling_clients_count: u64,
    /// Counts since the previous snapshot, per second and type.
    pub(crate) aggregated_events: Vec<AggregatedEvent>,
    pub(crate) namespaces: Vec<NamespaceCount>,
}

/// One bucket of the UI's event charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AggregatedEvent {
    /// Unix milliseconds, a whole second.
    pub(crate) timestamp: u64,
    /// `rawConnection`, `rawDisconnection`, `packetsIn`, `packetsOut`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) count: u64,
}

/// Sockets of one namespace on one gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NamespaceCount {
    pub(crate) name: String,
    pub(crate) sockets_count: u64,
}

/// The Admin UI's `SerializedSocket`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UiSocket {
    /// The Socket.IO sid.
    pub(crate) id: String,
    /// The connection (the UI groups sockets by client).
    pub(crate) client_id: String,
    /// Unknown to the gateway per socket (the UI shows an empty cell).
    pub(crate) transport: Option<String>,
    pub(crate) nsp: String,
    /// `{userId, gateway}`: never a credential.
    pub(crate) data: Value,
    /// `{address, time, issued}`: no header (they carry credentials).
    pub(crate) handshake: Value,
    /// At most [`MAX_ROOMS_LISTED`].
    pub(crate) rooms: Vec<String>,
}

/// Most rooms listed per socket (a socket may be in 1,000).
pub(crate) const MAX_ROOMS_LISTED: usize = 100;

/// An operator's action, sent to the gateway holding the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Action {
    /// Make the socket join a room (the membership service decides).
    Join { sid: String, room: String },
    /// Make the socket leave a room.
    Leave { sid: String, room: String },
    /// Disconnect the socket; `close` closes its whole connection (the
    /// client reconnects), otherwise the client gets `io server
    /// disconnect` and stays away.
    Disconnect { sid: String, close: bool },
}

impl Action {
    /// The socket it is about.
    pub(crate) fn sid(&self) -> &str {
        match self {
            Action::Join { sid, .. }
            | Action::Leave { sid, .. }
            | Action::Disconnect { sid, .. } => sid,
        }
    }

    /// Parses the UI's `join`/`leave`/`_disconnect` event: `(nsp, room,
    /// sid)` or `(nsp, close, sid)`. Only per-socket actions of the main
    /// namespace: the UI's "all sockets" forms are not offered.
    pub(crate) fn from_event(name: &str, args: &[Value]) -> Result<Action, String> {
        let nsp = args.first().and_then(Value::as_str);
        if nsp != Some("/") {
            return Err(format!(
                "namespace {nsp:?}: only \"/\" has sockets to act on"
            ));
        }
        let sid = match args.get(2).and_then(Value::as_str) {
            Some(s) if !s.is_empty() && s.len() <= 64 => s.to_owned(),
            _ => return Err("a socket id (third argument) is required".into()),
        };
        let room = || match args.get(1).and_then(Value::as_str) {
            Some(r) if !r.is_empty() && r.len() <= 256 => Ok(r.to_owned()),
            _ => Err("a room name (second argument) is required".to_owned()),
        };
        match name {
            "join" => Ok(Action::Join { sid, room: room()? }),
            "leave" => Ok(Action::Leave { sid, room: room()? }),
            "_disconnect" => Ok(Action::Disconnect {
                sid,
                close: args.get(1).and_then(Value::as_bool).unwrap_or(false),
            }),
            other => Err(format!("unknown action {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_uis_actions_parse_per_socket_only() {
        assert_eq!(
            Action::from_event("join", &[json!("/"), json!("channel:1"), json!("abc")]),
            Ok(Action::Join {
                sid: "abc".into(),
                room: "channel:1".into()
            })
        );
        assert_eq!(
            Action::from_event("_disconnect", &[json!("/"), json!(true), json!("abc")]),
            Ok(Action::Disconnect {
                sid: "abc".into(),
                close: true
            })
        );
        // Every socket of the namespace at once: not offered.
        assert!(Action::from_event("_disconnect", &[json!("/"), json!(false)]).is_err());
        assert!(Action::from_event("join", &[json!("/admin"), json!("r"), json!("x")]).is_err());
        assert!(Action::from_event("emit", &[json!("/"), json!("r"), json!("x")]).is_err());
    }
}
