//! One long-polling session's state: the packets waiting for a GET, the
//! POSTed packets on their way to the connection task, and the upgrade
//! phase.
//!
//! The connection task writes through [`PollSession::push`] and reads what
//! [`PollSession::post`] forwarded; HTTP requests (or, later, a forwarder
//! acting for another gateway) call [`PollSession::poll_with`] and
//! [`PollSession::post`]. Nothing here knows HTTP.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Message;
use base64::Engine as _;
use confab_protocol::engineio::{self, PAYLOAD_SEPARATOR};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::PollError;

/// Where the session is in its (optional) upgrade to WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Plain long-polling.
    Polling,
    /// A WebSocket for this sid is open and has not sent `2probe` yet.
    Probing,
    /// `3probe` was sent: GETs get `6` (noop) and packets wait for the
    /// WebSocket.
    Upgrading,
    /// The WebSocket carries the session; HTTP requests for it get 400.
    Upgraded,
}

/// Where the session's current GET is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// No GET.
    Free,
    /// A GET waits for packets: another GET now is an overlap.
    Waiting,
    /// A GET was answered and its delivery is being confirmed (a forwarded
    /// answer waits for the forwarder's `ack`): another GET now is the
    /// client's next one, and waits until the fate of the answer is known.
    Confirming,
}

struct State {
    /// Packets waiting for a GET (WebSocket messages, encoded on the way out).
    out: VecDeque<Message>,
    /// The current GET, if any.
    hold: Hold,
    phase: Phase,
    /// What a held GET answers once the session ended: `1` when the server
    /// closed it, `6` when the client did.
    last_word: &'static str,
}

/// The shared state of one polling session.
pub(crate) struct PollSession {
    sid: Arc<str>,
    state: Mutex<State>,
    /// Wakes a held GET: packets were flushed, the phase changed or the
    /// session ended.
    ready: Notify,
    /// Wakes the connection task waiting for room in `out`.
    room: Notify,
    /// Wakes a GET waiting for the previous answer's confirmation.
    released: Notify,
    /// Cancelled when the session ends, for whatever reason.
    gone: CancellationToken,
    inbound: mpsc::Sender<Message>,
    /// Serialises POSTs (their packets keep their order) and the switch
    /// to WebSocket (no POST is half-forwarded when it happens).
    posting: tokio::sync::Mutex<()>,
    /// Most packets waiting for a GET (the outbound queue's capacity).
    capacity: usize,
    /// Most bytes of one GET response and of one POST body.
    max_payload: usize,
}

/// Puts taken packets back unless disarmed (`taken` emptied).
struct PutBack<'a> {
    session: &'a PollSession,
    taken: Option<Vec<Message>>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if let Some(taken) = self.taken.take() {
            self.session.put_back(taken);
        }
    }
}

/// Frees the session for the next GET when this one ends, answered or
/// cancelled.
struct Held<'a>(&'a PollSession);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock().hold = Hold::Free;
        self.0.released.notify_waiters();
    }
}

impl PollSession {
    /// A new session and the receiving end of its POSTed packets.
    pub(crate) fn new(
        sid: Arc<str>,
        capacity: usize,
        max_payload: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Message>) {
        let (inbound, rx) = mpsc::channel(capacity.max(16));
        let session = Arc::new(Self {
            sid,
            state: Mutex::new(State {
                out: VecDeque::new(),
                hold: Hold::Free,
                phase: Phase::Polling,
                last_word: "1",
            }),
            ready: Notify::new(),
            room: Notify::new(),
            released: Notify::new(),
            gone: CancellationToken::new(),
            inbound,
            posting: tokio::sync::Mutex::new(()),
            capacity: capacity.max(1),
            max_payload,
        });
        (session, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session id.
    pub(crate) fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    /// The upgrade phase.
    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Whether the session ended.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Resolves when the session ends.
    pub(crate) async fn ended(&self) {
        self.gone.cancelled().await
    }

    /// Ends the session: a held GET answers what is queued and
    /// `last_word`; the connection task's reads end.
    pub(crate) fn end(&self, last_word: &'static str) {
        let mut st = self.lock();
        if !self.gone.is_cancelled() {
            // A client's close (`6`, set by `post`) is not overridden by
            // the server closing in answer to it.
            if st.last_word != "6" {
                st.last_word = last_word;
            }
            self.gone.cancel();
        }
        drop(st);
        self.ready.notify_waiters();
        self.room.notify_waiters();
    }

    /// The receive side of a GET (answering at most `limit` bytes, and
    /// never more than `maxPayload`): waits until packets are ready (or the
    /// upgrade needs a noop, or the session ends), then `deliver` gets the
    /// payload and says whether it arrived (an HTTP answer always does; a
    /// forwarder's reply may not). A second GET while one waits for packets
    /// ends the session (the held one gets `1`) and fails with
    /// [`PollError::Overlap`]; a GET arriving while `deliver` runs is the
    /// client's next one (it saw the answer, or gave up on it) and waits
    /// for `deliver` to finish, then takes what is queued (the put-back
    /// packets first). Cancelling the future while it waits releases the
    /// session for the next GET and takes nothing.
    ///
    /// If the payload did not arrive, or `deliver`'s future is dropped, the
    /// packets go back to the front of the queue, in order, for the next GET
    /// (after an upgrade they cannot: the session then ends, and the client
    /// recovers). The session stays held for GETs until `deliver` is done,
    /// so no later GET overtakes.
    pub(crate) async fn poll_with<F, Fut>(&self, limit: usize, deliver: F) -> Result<(), PollError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let _held = self.hold().await?;
        let (payload, taken) = self.wait_take(limit.min(self.max_payload)).await;
        self.lock().hold = Hold::Confirming;
        let mut guard = PutBack {
            session: self,
            taken: Some(taken),
        };
        if deliver(payload).await {
            guard.taken = None;
        }
        Ok(())
    }

    /// Marks a GET as held (after the previous answer's confirmation), or
    /// refuses it.
    async fn hold(&self) -> Result<Held<'_>, PollError> {
        loop {
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            {
                let mut st = self.lock();
                if st.phase == Phase::Upgraded {
                    return Err(PollError::BadRequest);
                }
                if self.gone.is_cancelled() {
                    return Err(PollError::UnknownSid);
                }
                match st.hold {
                    Hold::Free => {
                        st.hold = Hold::Waiting;
                        return Ok(Held(self));
                    }
                    Hold::Waiting => {
                        drop(st);
                        self.end("1");
                        return Err(PollError::Overlap);
                    }
                    Hold::Confirming => {}
                }
            }
            tokio::select! {
                () = released => {}
                () = self.gone.cancelled() => {}
            }
        }
    }

    /// Waits for an answer; returns it with the packets it took.
    async fn wait_take(&self, limit: usize) -> (String, Vec<Message>) {
        loop {
            let ready = self.ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            if let Some(answer) = self.take(limit) {
                return answer;
            }
            ready.await;
        }
    }

    /// What a GET answers now, if anything, and the packets it took.
    fn take(&self, limit: usize) -> Option<(String, Vec<Message>)> {
        let mut st = self.lock();
        let ended = self.gone.is_cancelled();
        match st.phase {
            Phase::Upgraded => return Some(("6".into(), Vec::new())),
            Phase::Upgrading if !ended => return Some(("6".into(), Vec::new())),
            _ if st.out.is_empty() && !ended => return None,
            _ => {}
        }
        let mut payload = String::new();
        let mut taken = Vec::new();
        while let Some(m) = st.out.front() {
            let len = encoded_len(m);
            if !payload.is_empty() && payload.len() + 1 + len > limit {
                break;
            }
            let Some(m) = st.out.pop_front() else { break };
            if !payload.is_empty() {
                payload.push(PAYLOAD_SEPARATOR);
            }
            encode_into(&mut payload, m.clone());
            taken.push(m);
        }
        if ended && st.out.is_empty() {
            if !payload.is_empty() {
                payload.push(PAYLOAD_SEPARATOR);
            }
            payload.push_str(st.last_word);
        }
        drop(st);
        self.room.notify_waiters();
        Some((payload, taken))
    }

    /// Puts packets a GET took back at the front of the queue.
    fn put_back(&self, taken: Vec<Message>) {
        if taken.is_empty() {
            return;
        }
        let mut st = self.lock();
        if st.phase == Phase::Upgraded {
            // The WebSocket may have sent later packets already: ending
            // the session (the client recovers) is the only order-safe way.
            drop(st);
            self.end("1");
            return;
        }
        for m in taken.into_iter().rev() {
            st.out.push_front(m);
        }
        drop(st);
        self.ready.notify_waiters();
    }

    /// The send side of a POST: checks and decodes the payload and hands
    /// its packets to the connection task, in order. A malformed payload
    /// ends the session.
    pub(crate) async fn post(&self, body: &[u8]) -> Result<(), PollError> {
        if body.len() > self.max_payload {
            return Err(PollError::TooLarge);
        }
        let _posting = self.posting.lock().await;
        match self.phase() {
            Phase::Upgraded => return Err(PollError::BadRequest),
            _ if self.gone.is_cancelled() => return Err(PollError::UnknownSid),
            _ => {}
        }
        let messages = match decode(body) {
            Ok(m) => m,
            Err(()) => {
                self.end("1");
                return Err(PollError::Malformed);
            }
        };
        for m in messages {
            if matches!(&m, Message::Text(t) if t.as_str() == "1") {
                // The client closes: a held GET ends with a noop, as the
                // reference server answers it.
                self.lock().last_word = "6";
            }
            if self.inbound.send(m).await.is_err() {
                return Err(PollError::UnknownSid);
            }
        }
        Ok(())
    }

    /// Queues a packet for the next GET, waiting while `capacity` packets
    /// already wait (the connection's write then times out like a stalled
    /// WebSocket's). Fails once the session ended.
    pub(crate) async fn push(&self, msg: Message) -> Result<(), axum::Error> {
        let mut msg = Some(msg);
        loop {
            let room = self.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.lock();
                if self.gone.is_cancelled() {
                    return Err(axum::Error::new(PollError::UnknownSid));
                }
                if st.out.len() < self.capacity {
                    if let Some(m) = msg.take() {
                        st.out.push_back(m);
                    }
                    return Ok(());
                }
            }
            // Full: let a held GET take what is there.
            self.ready.notify_waiters();
            room.await;
        }
    }

    /// Wakes a held GET: pushed packets are ready to go.
    pub(crate) fn flush(&self) {
        self.ready.notify_waiters();
    }

    /// A WebSocket for this sid opened: refuses a second one and an
    /// upgrade after the upgrade.
    pub(crate) fn begin_probe(&self) -> Result<(), PollError> {
        let mut st = self.lock();
        if st.phase != Phase::Polling || self.gone.is_cancelled() {
            return Err(PollError::BadRequest);
        }
        st.phase = Phase::Probing;
        Ok(())
    }

    /// `3probe` was sent: packets wait for the WebSocket, a held GET gets
    /// a noop.
    pub(crate) fn probed(&self) {
        self.lock().phase = Phase::Upgrading;
        self.ready.notify_waiters();
    }

    /// The probe failed or timed out: back to plain polling.
    pub(crate) fn abort_upgrade(&self) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Probing | Phase::Upgrading) {
            st.phase = Phase::Polling;
        }
        drop(st);
        self.ready.notify_waiters();
    }

    /// `5` arrived: after any POST in progress, HTTP requests for the sid
    /// are refused and GETs take nothing more (see [`PollSession::take_all`]).
    pub(crate) async fn complete_upgrade(&self) {
        let _posting = self.posting.lock().await;
        self.lock().phase = Phase::Upgraded;
        self.ready.notify_waiters();
    }

    /// Everything still waiting for a GET, taken once the WebSocket carries
    /// the session: it goes out there first, in order.
    pub(crate) fn take_all(&self) -> VecDeque<Message> {
        let out = std::mem::take(&mut self.lock().out);
        self.room.notify_waiters();
        out
    }
}

/// Splits a POST body into WebSocket-shaped messages: text packets as
/// they are, `b<base64>` as binary (see [`engineio::split_client_payload`]:
/// any invalid packet, an OPEN, or a body that is not UTF-8 fails it all).
fn decode(body: &[u8]) -> Result<Vec<Message>, ()> {
    let parts = engineio::split_client_payload(body).map_err(|_| ())?;
    Ok(parts
        .into_iter()
        .map(|part| match part {
            engineio::PayloadPart::Text(t) => Message::Text(t.into()),
            engineio::PayloadPart::Binary(b) => Message::Binary(b),
        })
        .collect())
}

fn encoded_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        _ => 0,
    }
}

fn encode_into(out: &mut String, m: Message) {
    match m {
        Message::Text(t) => out.push_str(t.as_str()),
        Message::Binary(b) => {
            out.push('b');
            base64::engine::general_purpose::STANDARD.encode_string(&b, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn poll(s: &PollSession) -> Result<String, PollError> {
        let mut answer = String::new();
        s.poll_with(usize::MAX, |p| {
            answer = p;
            async { true }
        })
        .await?;
        Ok(answer)
    }

    fn session(capacity: usize, max_payload: usize) -> (Arc<PollSession>, mpsc::Receiver<Message>) {
        PollSession::new("s".into(), capacity, max_payload)
    }

    #[tokio::test]
    async fn a_cancelled_get_releases_the_session_and_takes_nothing() {
        let (s, _rx) = session(8, 1000);
        let held = tokio::time::timeout(Duration::from_millis(20), poll(&s)).await;
        assert!(held.is_err(), "nothing to answer yet");
        s.push(Message::Text("4a".into())).await.unwrap();
        s.flush();
        assert_eq!(poll(&s).await.unwrap(), "4a", "no overlap, nothing lost");
    }

    #[tokio::test]
    async fn a_get_answers_at_most_max_payload_and_the_rest_waits() {
        let (s, _rx) = session(8, 10);
        for m in ["4aaaa", "4bbbb", "4cccc"] {
            s.push(Message::Text(m.into())).await.unwrap();
        }
        assert_eq!(
            poll(&s).await.unwrap(),
            "4aaaa",
            "4bbbb would exceed 10 bytes"
        );
        assert_eq!(poll(&s).await.unwrap(), "4bbbb");
        assert_eq!(poll(&s).await.unwrap(), "4cccc");
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_writer_until_a_get_takes() {
        let (s, _rx) = session(2, 1000);
        s.push(Message::Text("41".into())).await.unwrap();
        s.push(Message::Text("42".into())).await.unwrap();
        let third = s.push(Message::Text("43".into()));
        let mut third = std::pin::pin!(third);
        assert!(futures::poll!(third.as_mut()).is_pending());
        assert_eq!(poll(&s).await.unwrap(), "41\u{1e}42");
        third.await.unwrap();
        assert_eq!(poll(&s).await.unwrap(), "43");
    }

    #[tokio::test]
    async fn an_ended_session_answers_what_was_queued_then_its_last_word() {
        let (s, _rx) = session(8, 1000);
        s.push(Message::Text("4bye".into())).await.unwrap();
        s.end("1");
        assert_eq!(poll(&s).await, Err(PollError::UnknownSid));
        let (s, _rx) = session(8, 1000);
        let held = poll(&s);
        let mut held = std::pin::pin!(held);
        assert!(futures::poll!(held.as_mut()).is_pending());
        s.push(Message::Text("4bye".into())).await.unwrap();
        s.end("1");
        assert_eq!(held.await.unwrap(), "4bye\u{1e}1");
    }

    #[tokio::test]
    async fn a_forwarded_get_that_did_not_arrive_puts_its_packets_back_in_order() {
        let (s, _rx) = session(8, 1000);
        for m in ["41", "42"] {
            s.push(Message::Text(m.into())).await.unwrap();
        }
        s.poll_with(usize::MAX, |p| async move {
            assert_eq!(p, "41\u{1e}42");
            false
        })
        .await
        .unwrap();
        s.push(Message::Text("43".into())).await.unwrap();
        // A dropped delivery puts them back too.
        let dropped = s.poll_with(usize::MAX, |_| std::future::pending::<bool>());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), dropped)
                .await
                .is_err()
        );
        s.poll_with(usize::MAX, |p| async move {
            assert_eq!(p, "41\u{1e}42\u{1e}43");
            true
        })
        .await
        .unwrap();
        s.push(Message::Text("44".into())).await.unwrap();
        assert_eq!(poll(&s).await.unwrap(), "44", "delivered ones are gone");
    }

    #[tokio::test]
    async fn a_get_during_the_previous_answers_confirmation_waits_for_it() {
        let (s, _rx) = session(8, 1000);
        for m in ["41", "42"] {
            s.push(Message::Text(m.into())).await.unwrap();
        }
        // Confirmed: the next GET takes only what came after.
        let (confirm, confirmed) = tokio::sync::oneshot::channel::<bool>();
        let first = s.poll_with(usize::MAX, |p| async move {
            assert_eq!(p, "41\u{1e}42");
            confirmed.await.unwrap()
        });
        let mut first = std::pin::pin!(first);
        assert!(futures::poll!(first.as_mut()).is_pending());
        let next = poll(&s);
        let mut next = std::pin::pin!(next);
        assert!(
            futures::poll!(next.as_mut()).is_pending(),
            "waits, no overlap"
        );
        confirm.send(true).unwrap();
        first.await.unwrap();
        assert!(futures::poll!(next.as_mut()).is_pending(), "41 and 42 went");
        s.push(Message::Text("43".into())).await.unwrap();
        s.flush();
        assert_eq!(next.await.unwrap(), "43");
        assert!(!s.is_gone());
        // Not confirmed: the next GET gets them again, first.
        s.push(Message::Text("44".into())).await.unwrap();
        let (confirm, confirmed) = tokio::sync::oneshot::channel::<bool>();
        let first = s.poll_with(usize::MAX, |_| async move { confirmed.await.unwrap() });
        let mut first = std::pin::pin!(first);
        assert!(futures::poll!(first.as_mut()).is_pending());
        let next = poll(&s);
        let mut next = std::pin::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending());
        s.push(Message::Text("45".into())).await.unwrap();
        confirm.send(false).unwrap();
        first.await.unwrap();
        assert_eq!(next.await.unwrap(), "44\u{1e}45");
    }

    #[tokio::test]
    async fn a_second_get_while_one_waits_for_packets_ends_the_session() {
        let (s, _rx) = session(8, 1000);
        let held = poll(&s);
        let mut held = std::pin::pin!(held);
        assert!(futures::poll!(held.as_mut()).is_pending());
        assert_eq!(poll(&s).await, Err(PollError::Overlap));
        assert_eq!(held.await.unwrap(), "1");
    }

    #[tokio::test]
    async fn posts_decode_text_and_base64_in_order() {
        let (s, mut rx) = session(8, 1000);
        s.post(b"4a\x1ebAQI=\x1e3").await.unwrap();
        assert_eq!(rx.recv().await, Some(Message::Text("4a".into())));
        assert_eq!(
            rx.recv().await,
            Some(Message::Binary(bytes::Bytes::from_static(&[1, 2])))
        );
        assert_eq!(rx.recv().await, Some(Message::Text("3".into())));
        assert_eq!(s.post(b"4\xff").await, Err(PollError::Malformed));
        assert!(s.is_gone());
    }
}
