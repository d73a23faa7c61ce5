//! The upgrade of a polling session to WebSocket: `2probe` → `3probe`,
//! a noop to the held GET, `5`, then the connection task moves over. A
//! WebSocket for a session another gateway owns is relayed
//! ([`super::relay`]).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use confab_protocol::engineio::HandshakeError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::http::{error, refused};
use super::session::{Phase, PollSession};
use super::transport::Upgraded;
use super::{PollingSessions, Route, UPGRADE_TIMEOUT, relay};

/// What an upgrade needs from the engine.
pub(crate) struct UpgradeContext<'a, C> {
    /// Applies the engine's WebSocket limits.
    pub configure: C,
    /// Where a relaying task is tracked (graceful shutdown waits for it).
    pub tasks: &'a TaskTracker,
    /// Cancelled on shutdown: a relayed WebSocket is closed (1001).
    pub shutdown: &'a CancellationToken,
}

/// Answers a WebSocket request for the polling session `sid`: this
/// gateway's session, or another gateway's (relayed). Refused (400) when
/// the session is unknown, already upgraded or upgrading.
pub(crate) async fn upgrade<C>(
    sessions: &PollingSessions,
    sid: &str,
    ws: Option<WebSocketUpgrade>,
    cx: UpgradeContext<'_, C>,
) -> Response
where
    C: FnOnce(WebSocketUpgrade) -> WebSocketUpgrade,
{
    let route = match sessions.route(sid) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let Some(ws) = ws else {
        return error(HandshakeError::BadRequest);
    };
    match route {
        Route::Here => local(sessions, sid, ws, cx.configure),
        Route::Owner(forwarder, owner) => match forwarder.relay(owner, sid).await {
            Ok(link) => relay::accept(link, (cx.configure)(ws), cx.tasks, cx.shutdown),
            Err(e) => refused(e),
        },
    }
}

fn local(
    sessions: &PollingSessions,
    sid: &str,
    ws: WebSocketUpgrade,
    configure: impl FnOnce(WebSocketUpgrade) -> WebSocketUpgrade,
) -> Response {
    let Some((session, handover)) = sessions.get_for_upgrade(sid) else {
        return error(HandshakeError::UnknownSid);
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

async fn probe(session: Arc<PollSession>, handover: mpsc::Sender<Upgraded>, mut ws: WebSocket) {
    let probed = tokio::time::timeout(UPGRADE_TIMEOUT, handshake(&session, &mut ws)).await;
    if probed == Ok(true) {
        session.complete_upgrade().await;
        if handover.send(Upgraded::Local(Box::new(ws))).await.is_err() {
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
