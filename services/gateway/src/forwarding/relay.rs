//! Relayed WebSocket upgrades over the forwarding [`Transport`] (the wire:
//! `confab_contracts::gateway::relay`; the rules:
//! `crate::engine::polling`'s `relay` module).
//!
//! The relaying gateway asks the owner on `confab.gateway.v1.{owner}.upgrade`
//! and names its inbox for frames to the client; the owner answers with
//! an inbox of its own for the client's frames. Each side then sends
//! request/reply messages to the other's inbox, one at a time per
//! direction, each with the service token, each answered once its frames
//! were handed on (at most one batch in flight each way, at most one
//! message of the transport of bytes). A failed, refused or timed-out request ends the
//! relay; nothing is retried. An owner that hears nothing during the
//! upgrade gives up after [`UPGRADE_TIMEOUT`].

use std::sync::Arc;

use async_nats::HeaderMap;
use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use confab_contracts::AUTHORIZATION_HEADER;
use confab_contracts::gateway::relay::{Frame, Step, UpgradeRequest, decode_frames, encode_frames};
use confab_contracts::gateway::{GatewayName, PollAnswer, Refusal, valid_control};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::transport::{Inbox, Msg};
use super::{Owner, Wire, WireForwarder, authorized, from_refusal, limit, reply, to_refusal};
use crate::engine::polling::{
    FromOwner, PollError, Relay, RelayLink, RelayedUpgrade, RemoteEnds, ToOwner, UPGRADE_TIMEOUT,
};

/// One side's requests to the other side's inbox.
struct Link {
    wire: Wire,
    subject: String,
    authorization: Option<String>,
    timeout: std::time::Duration,
}

impl Link {
    async fn request(&self, step: Step, body: Bytes) -> Result<(), PollError> {
        let mut headers: HeaderMap = step.headers();
        if let Some(a) = &self.authorization {
            headers.insert(AUTHORIZATION_HEADER, a.as_str());
        }
        let answer = self
            .wire
            .request(self.subject.clone(), headers, body, self.timeout)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, ?step, "relayed request failed");
                PollError::UnknownSid
            })?;
        match PollAnswer::decode(answer.headers.as_ref(), answer.payload) {
            Some(PollAnswer::Ok) => Ok(()),
            Some(PollAnswer::Refused(r)) => Err(from_refusal(r)),
            _ => Err(PollError::BadRequest),
        }
    }

    /// Sends frames (text and binary; nothing when there are none).
    async fn frames(&self, frames: &[WsMessage]) -> Result<(), PollError> {
        let frames: Vec<Frame> = frames.iter().filter_map(to_frame).collect();
        if frames.is_empty() {
            return Ok(());
        }
        self.request(Step::Frames, encode_frames(&frames)).await
    }
}

impl RelayLink for Link {
    fn send(&self, step: ToOwner) -> BoxFuture<'_, Result<(), PollError>> {
        Box::pin(async move {
            match step {
                ToOwner::Probed => self.request(Step::Probed, Bytes::new()).await,
                ToOwner::Upgraded => self.request(Step::Upgraded, Bytes::new()).await,
                ToOwner::Frames(frames) => self.frames(&frames).await,
                ToOwner::Close => self.request(Step::Close, Bytes::new()).await,
            }
        })
    }
}

fn to_frame(m: &WsMessage) -> Option<Frame> {
    match m {
        WsMessage::Text(t) => Some(Frame::Text(Bytes::from(t.clone()))),
        WsMessage::Binary(b) => Some(Frame::Binary(b.clone())),
        _ => None,
    }
}

/// A relayed batch as WebSocket messages; `None` when it is not one (or a
/// text frame is not UTF-8).
fn to_messages(body: Bytes) -> Option<Vec<WsMessage>> {
    decode_frames(body)?
        .into_iter()
        .map(|f| match f {
            Frame::Text(b) => Utf8Bytes::try_from(b).ok().map(WsMessage::Text),
            Frame::Binary(b) => Some(WsMessage::Binary(b)),
        })
        .collect()
}

/// The relaying gateway's side: asks `owner` to start the upgrade of `sid`.
pub(super) async fn start(
    fwd: &WireForwarder,
    owner: GatewayName<'_>,
    sid: &str,
) -> Result<Relay, PollError> {
    let wire = &fwd.wire;
    let to_client = wire.new_inbox();
    let inbox = wire
        .subscribe(to_client.clone())
        .await
        .map_err(|_| PollError::UnknownSid)?;
    let body = super::encode(&UpgradeRequest {
        sid: sid.to_owned(),
        to_client,
    });
    let answer = fwd
        .request(owner.upgrade_subject(), HeaderMap::new(), body.into())
        .await?;
    let from_client = match answer {
        PollAnswer::Relay(s) if valid_control(&s) => s,
        PollAnswer::Refused(r) => return Err(from_refusal(r)),
        _ => return Err(PollError::BadRequest),
    };
    let (batches, from_owner) = mpsc::channel(1);
    tokio::spawn(to_the_client(
        Arc::clone(wire),
        fwd.token.clone(),
        inbox,
        batches,
    ));
    Ok(Relay {
        link: Arc::new(Link {
            wire: Arc::clone(wire),
            subject: from_client,
            authorization: fwd.authorization.clone(),
            timeout: fwd.relay_timeout,
        }),
        from_owner,
        limit: limit(&**wire),
    })
}

/// The relaying gateway's inbox: the owner's batches, handed to the
/// client's WebSocket one at a time, each answered once written. Ends
/// with the relay (its receiver dropped) or a close.
async fn to_the_client(
    wire: Wire,
    token: Option<confab_contracts::ServiceToken>,
    mut inbox: Inbox,
    batches: mpsc::Sender<FromOwner>,
) {
    loop {
        let msg = tokio::select! {
            m = inbox.next() => m,
            () = batches.closed() => None,
        };
        let Some(msg) = msg else { return };
        if !authorized(token.as_ref(), &msg) {
            reply(&*wire, &msg, &PollAnswer::Refused(Refusal::Unauthorized)).await;
            continue;
        }
        let step = Step::of(msg.headers.as_ref());
        let frames = match step {
            Some(Step::Frames) => to_messages(msg.payload.clone()),
            Some(Step::Close) => Some(vec![WsMessage::Close(None)]),
            _ => None,
        };
        let Some(frames) = frames else {
            reply(&*wire, &msg, &PollAnswer::Refused(Refusal::BadRequest)).await;
            return;
        };
        let (written, done) = oneshot::channel();
        let sent = batches.send(FromOwner { frames, written }).await.is_ok();
        let ok = sent && done.await.unwrap_or(false);
        let answer = if ok {
            PollAnswer::Ok
        } else {
            PollAnswer::Refused(Refusal::UnknownSid)
        };
        reply(&*wire, &msg, &answer).await;
        if !ok || step == Some(Step::Close) {
            return;
        }
    }
}

/// The owner's side of a relayed upgrade, from its first request to the
/// end of the relay.
pub(super) async fn serve_upgrade(owner: &Owner, msg: Msg) {
    let Some(req) = owner
        .admit::<UpgradeRequest>(&msg, |r| valid_control(&r.to_client))
        .await
    else {
        return;
    };
    let upgrade = match owner.sessions.begin_relay(&req.sid) {
        Ok(u) => u,
        Err(e) => {
            return owner
                .answer(&msg, &PollAnswer::Refused(to_refusal(e)))
                .await;
        }
    };
    let from_client = owner.wire.new_inbox();
    let Ok(mut inbox) = owner.wire.subscribe(from_client.clone()).await else {
        return owner
            .answer(&msg, &PollAnswer::Refused(Refusal::UnknownSid))
            .await;
    };
    owner.answer(&msg, &PollAnswer::Relay(from_client)).await;
    let upgrading = upgrading(owner, &mut inbox, upgrade);
    let Ok(Some(ends)) = tokio::time::timeout(UPGRADE_TIMEOUT, upgrading).await else {
        tracing::debug!(sid = req.sid, "relayed upgrade did not complete");
        return;
    };
    let to_client = Link {
        wire: Arc::clone(&owner.wire),
        subject: req.to_client,
        authorization: owner.authorization.clone(),
        timeout: owner.relay_timeout,
    };
    relaying(owner, inbox, ends, to_client).await;
}

/// The probe steps, until the upgrade completes (`Some`) or fails.
async fn upgrading(
    owner: &Owner,
    inbox: &mut Inbox,
    upgrade: RelayedUpgrade,
) -> Option<RemoteEnds> {
    while let Some(m) = inbox.next().await {
        if !owner.authorized(&m) {
            owner
                .answer(&m, &PollAnswer::Refused(Refusal::Unauthorized))
                .await;
            continue;
        }
        let result = match Step::of(m.headers.as_ref()) {
            Some(Step::Probed) => upgrade.probed(),
            Some(Step::Upgraded) => {
                let ends = upgrade.complete(limit(&*owner.wire)).await;
                let answer = match &ends {
                    Ok(_) => PollAnswer::Ok,
                    Err(e) => PollAnswer::Refused(to_refusal(*e)),
                };
                owner.answer(&m, &answer).await;
                return ends.ok();
            }
            Some(Step::Close) => Err(PollError::UnknownSid),
            _ => Err(PollError::BadRequest),
        };
        match result {
            Ok(()) => owner.answer(&m, &PollAnswer::Ok).await,
            Err(e) => {
                owner.answer(&m, &PollAnswer::Refused(to_refusal(e))).await;
                return None;
            }
        }
    }
    None
}

/// Frames both ways until either side ends; dropping `ends.inbound` then
/// ends the session's connection task.
async fn relaying(owner: &Owner, mut inbox: Inbox, ends: RemoteEnds, to_client: Link) {
    let RemoteEnds {
        inbound,
        mut outbound,
    } = ends;
    let up = async {
        while let Some(m) = inbox.next().await {
            if !owner.authorized(&m) {
                owner
                    .answer(&m, &PollAnswer::Refused(Refusal::Unauthorized))
                    .await;
                continue;
            }
            let frames = match Step::of(m.headers.as_ref()) {
                Some(Step::Frames) => to_messages(m.payload.clone()),
                Some(Step::Close) => {
                    owner.answer(&m, &PollAnswer::Ok).await;
                    return;
                }
                _ => None,
            };
            let Some(frames) = frames else {
                owner
                    .answer(&m, &PollAnswer::Refused(Refusal::Malformed))
                    .await;
                return;
            };
            for f in frames {
                if inbound.send(f).await.is_err() {
                    owner
                        .answer(&m, &PollAnswer::Refused(Refusal::UnknownSid))
                        .await;
                    return;
                }
            }
            owner.answer(&m, &PollAnswer::Ok).await;
        }
    };
    let down = async {
        while let Some(batch) = outbound.recv().await {
            let close = batch.iter().position(|m| matches!(m, WsMessage::Close(_)));
            let frames = &batch[..close.unwrap_or(batch.len())];
            if to_client.frames(frames).await.is_err() {
                return;
            }
            if close.is_some() {
                break;
            }
        }
        // The connection ended (or closed the socket): so does the relay.
        let _ = to_client.request(Step::Close, Bytes::new()).await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
