//! The upgrade of a polling session to WebSocket: `2probe` → `3probe`,
//! a noop to the held GET, `5`, then the connection task moves over.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use confab_protocol::engineio::HandshakeError;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::http::error;
use super::session::{Phase, PollSession};
use super::{PollingSessions, UPGRADE_TIMEOUT};

/// Answers a WebSocket request for the polling session `sid`. Refused
/// (400) when the session is unknown, already upgraded or upgrading.
/// `configure` applies the engine's WebSocket limits.
pub(crate) fn upgrade(
    sessions: &PollingSessions,
    sid: &str,
    ws: Option<WebSocketUpgrade>,
    configure: impl FnOnce(WebSocketUpgrade) -> WebSocketUpgrade,
) -> Response {
    let Some((session, handover)) = sessions.get_for_upgrade(sid) else {
        return error(HandshakeError::UnknownSid);
    };
    let Some(ws) = ws else {
        return error(HandshakeError::BadRequest);
    };
    if session.begin_probe().is_err() {
        return error(HandshakeError::BadRequest);
    }
    let span = tracing::Span::current();
    configure(ws)
        .on_failed_upgrade({
            let session = Arc::clone(&session);
            move |_| session.abort_upgrade()
        })
        .on_upgrade(move |ws| probe(session, handover, ws).instrument(span))
}

async fn probe(session: Arc<PollSession>, handover: mpsc::Sender<WebSocket>, mut ws: WebSocket) {
    let probed = tokio::time::timeout(UPGRADE_TIMEOUT, handshake(&session, &mut ws)).await;
    if probed == Ok(true) {
        session.complete_upgrade().await;
        if handover.send(ws).await.is_err() {
            tracing::debug!(sid = %session.sid(), "session ended during its upgrade");
        }
        return;
    }
    session.abort_upgrade();
    let _ = ws.send(Message::Close(None)).await;
}

/// Runs the probe exchange; whether the client completed it.
async fn handshake(session: &PollSession, ws: &mut WebSocket) -> bool {
    loop {
        let msg = tokio::select! {
            m = ws.recv() => m,
            () = session.ended() => return false,
        };
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2probe" => {
                if ws.send(Message::Text("3probe".into())).await.is_err() {
                    return false;
                }
                session.probed();
            }
            Some(Ok(Message::Text(t))) if t.as_str() == "5" => {
                return session.phase() == Phase::Upgrading;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return false,
        }
    }
}
