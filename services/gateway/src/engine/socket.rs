//! Handles to a connection: its outbound queue and its kill switch.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use confab_protocol::socketio::{self, Packet};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::queue::{OutQueue, Outbound, PushError};

/// Process-unique id of a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Why the server closed a connection; becomes the WebSocket close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason text (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseReason {
    /// The outbound queue was full: the client does not read fast enough.
    pub fn slow_consumer(capacity: usize) -> Self {
        Self {
            code: 1008,
            reason: format!("slow consumer: outbound queue of {capacity} frames full"),
        }
    }

    /// Whether this is [`CloseReason::slow_consumer`].
    pub fn is_slow_consumer(&self) -> bool {
        self.code == 1008 && self.reason.starts_with("slow consumer")
    }
}

/// One encoded room event as queued for a client: its text frame and, for
/// a BINARY_EVENT, the attachments that follow it as binary frames (queued
/// together: nothing comes between them). Cloning is cheap (reference
/// counts), so one encoding serves every recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The text frame (Engine.IO prefix included), ending with the offset
    /// for a durable event when recovery is on.
    pub text: Utf8Bytes,
    /// The binary attachments, in placeholder order (`None`: a text-only
    /// EVENT).
    pub attachments: Option<Arc<[Bytes]>>,
}

impl From<Utf8Bytes> for EventFrame {
    fn from(text: Utf8Bytes) -> Self {
        Self {
            text,
            attachments: None,
        }
    }
}

impl EventFrame {
    fn outbound(self) -> Vec<Outbound> {
        let mut frames = Vec::with_capacity(1 + self.attachments.as_ref().map_or(0, |a| a.len()));
        frames.push(Outbound::Text(self.text));
        if let Some(attachments) = self.attachments {
            frames.extend(attachments.iter().cloned().map(Outbound::Binary));
        }
        frames
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue was full; the connection is being closed as a slow consumer.
    #[error("slow consumer")]
    SlowConsumer,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
}

/// What all sockets of one connection share: the queue and the kill switch.
pub(crate) struct ConnShared {
    pub(crate) conn: ConnId,
    pub(crate) queue: OutQueue,
    pub(crate) kill: CancellationToken,
    pub(crate) kill_reason: OnceLock<CloseReason>,
    pub(crate) capacity: usize,
    pub(crate) offsets: Offsets,
}

/// Offset bookkeeping for connection-state recovery (see
/// [`SocketRef::deliver`]).
#[derive(Default)]
pub(crate) struct Offsets {
    /// The highest log sequence queued to the client: its last offset.
    max_sent: AtomicU64,
    /// Durable events at or below this sequence were replayed already.
    floor: AtomicU64,
    /// While a recovery replays, live events wait in `held`.
    holding: AtomicBool,
    held: Mutex<Vec<(Option<u64>, EventFrame)>>,
}

impl ConnShared {
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.kill_reason.set(reason);
        self.kill.cancel();
    }
}

struct Inner {
    nsp: Arc<str>,
    sid: RwLock<Arc<str>>,
    shared: Arc<ConnShared>,
}

/// What [`SocketRef::deliver`] did with a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Queued for the client.
    Queued,
    /// Kept aside while the socket's recovery replays; queued after it.
    Held,
    /// Dropped: the recovery replay already sent it.
    AlreadyReplayed,
}

/// A cheap, cloneable handle to one socket (a connection joined to one
/// namespace). Sending never blocks: a full queue closes the connection.
#[derive(Clone)]
pub struct SocketRef(Arc<Inner>);

impl fmt::Debug for SocketRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketRef")
            .field("conn", &self.0.shared.conn)
            .field("nsp", &self.0.nsp)
            .field("sid", &self.sid())
            .finish()
    }
}

impl SocketRef {
    pub(crate) fn new(shared: Arc<ConnShared>, nsp: Arc<str>, sid: Arc<str>) -> Self {
        Self(Arc::new(Inner {
            nsp,
            sid: RwLock::new(sid),
            shared,
        }))
    }

    /// The connection's id.
    pub fn conn(&self) -> ConnId {
        self.0.shared.conn
    }

    /// The namespace.
    pub fn nsp(&self) -> &str {
        &self.0.nsp
    }

    /// The Socket.IO session id given to the client.
    pub fn sid(&self) -> Arc<str> {
        Arc::clone(&self.0.sid.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the session id before the CONNECT reply is written, e.g. to
    /// give a recovered session its previous id back. Only meaningful in
    /// [`Handler::on_connect`](super::Handler::on_connect).
    pub fn set_sid(&self, sid: &str) {
        *self.0.sid.write().unwrap_or_else(|p| p.into_inner()) = sid.into();
    }

    /// Queues a live room event. `seq` is its sequence in the durable log
    /// (`None` for volatile events) and `frame` carries it as the offset.
    /// Keeps the client's offsets consistent for connection-state recovery:
    ///
    /// * while the socket's recovery replays ([`SocketRef::hold`]), live
    ///   events wait and follow the replay ([`SocketRef::release`]);
    /// * an event the replay already sent (sequence at or below the floor)
    ///   is dropped, never sent twice;
    /// * an event older than one already sent (a repaired gap) is sent with
    ///   the newer offset, so that the client's last offset never moves
    ///   back and nothing is replayed twice.
    pub fn deliver(&self, frame: &Utf8Bytes, seq: Option<u64>) -> Result<Delivered, SendError> {
        self.deliver_event(&EventFrame::from(frame.clone()), seq)
    }

    /// [`SocketRef::deliver`] for an event that may carry binary
    /// attachments (a BINARY_EVENT with its offset): the same rules.
    pub fn deliver_event(
        &self,
        frame: &EventFrame,
        seq: Option<u64>,
    ) -> Result<Delivered, SendError> {
        let o = &self.0.shared.offsets;
        if o.holding.load(Ordering::Acquire) {
            let mut held = o.held.lock().unwrap_or_else(|p| p.into_inner());
            if o.holding.load(Ordering::Acquire) {
                if held.len() >= self.0.shared.capacity.max(1024) {
                    drop(held);
                    self.close(CloseReason::slow_consumer(self.0.shared.capacity));
                    return Err(SendError::SlowConsumer);
                }
                held.push((seq, frame.clone()));
                return Ok(Delivered::Held);
            }
        }
        self.deliver_live(frame, seq)
    }

    fn deliver_live(&self, frame: &EventFrame, seq: Option<u64>) -> Result<Delivered, SendError> {
        match self.live_frame(frame, seq) {
            None => Ok(Delivered::AlreadyReplayed),
            Some(frame) => {
                self.push_all(frame.outbound())?;
                Ok(Delivered::Queued)
            }
        }
    }

    /// The frame to send for a live event, recording its offset; `None`
    /// when the replay already sent it.
    fn live_frame(&self, frame: &EventFrame, seq: Option<u64>) -> Option<EventFrame> {
        let o = &self.0.shared.offsets;
        if let Some(seq) = seq {
            if seq <= o.floor.load(Ordering::Acquire) {
                return None;
            }
            let before = o.max_sent.fetch_max(seq, Ordering::AcqRel);
            if seq < before
                && let Some(text) = socketio::replace_offset(frame.text.as_str(), before)
            {
                return Some(EventFrame {
                    text: Utf8Bytes::from(text),
                    attachments: frame.attachments.clone(),
                });
            }
        }
        Some(frame.clone())
    }

    /// Queues a frame, waiting for room in the outbound queue (the
    /// connection task drains it meanwhile).
    async fn send_waiting(&self, frame: EventFrame) -> Result<(), SendError> {
        tokio::select! {
            sent = self.0.shared.queue.push_wait_all(frame.outbound()) => sent.map_err(|_| SendError::Closed),
            _ = self.0.shared.kill.cancelled() => Err(SendError::Closed),
        }
    }

    /// Starts holding live events back (see [`SocketRef::deliver`]) until
    /// [`SocketRef::release`]; call before joining rooms for a recovery.
    pub fn hold(&self) {
        self.0.shared.offsets.holding.store(true, Ordering::Release);
    }

    /// Queues one replayed event, waiting for room in the outbound queue
    /// (the connection task drains it meanwhile), and records its offset.
    pub async fn send_replayed(&self, frame: EventFrame, seq: u64) -> Result<(), SendError> {
        let o = &self.0.shared.offsets;
        o.max_sent.fetch_max(seq, Ordering::AcqRel);
        self.send_waiting(frame).await
    }

    /// Ends a recovery: live events at or below `floor` (the last sequence
    /// the replay covered) are dropped as already replayed, the rest of the
    /// held events are queued in arrival order, and live delivery resumes.
    pub fn release(&self, floor: u64) -> Result<(), SendError> {
        self.raise_floor(floor);
        let mut result = Ok(());
        while let Some(held) = self.take_held() {
            for (seq, frame) in held {
                if result.is_ok() {
                    result = self.deliver_live(&frame, seq).map(|_| ());
                }
            }
        }
        result
    }

    /// Ends a recovery like [`SocketRef::release`], but waits for room in
    /// the outbound queue instead of closing the connection when the held
    /// events do not fit in it at once (a recovery that took a while holds
    /// many): for a task that runs while the connection task drains the
    /// queue. Live events arriving meanwhile are still held and follow in
    /// order; the held buffer's bound still applies.
    pub async fn release_waiting(&self, floor: u64) -> Result<(), SendError> {
        self.raise_floor(floor);
        while let Some(held) = self.take_held() {
            for (seq, frame) in held {
                if let Some(frame) = self.live_frame(&frame, seq) {
                    self.send_waiting(frame).await?;
                }
            }
        }
        Ok(())
    }

    /// Events at or below `floor` count as replayed and as sent.
    fn raise_floor(&self, floor: u64) {
        let o = &self.0.shared.offsets;
        o.floor.fetch_max(floor, Ordering::AcqRel);
        o.max_sent.fetch_max(floor, Ordering::AcqRel);
    }

    /// Takes the held events; when none are left, stops holding instead
    /// and returns `None`. Under the lock: `deliver` sees either the flag
    /// or an empty list to append to, which the caller's next take drains.
    fn take_held(&self) -> Option<Vec<(Option<u64>, EventFrame)>> {
        let o = &self.0.shared.offsets;
        let mut held = o.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_empty() {
            o.holding.store(false, Ordering::Release);
            return None;
        }
        Some(std::mem::take(&mut *held))
    }

    /// Queues a pre-encoded text frame.
    pub fn send_frame(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        self.push(Outbound::Text(frame))
    }

    /// Encodes and queues an event for this socket alone.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), SendError> {
        let (text, attachments) = Packet::event(&self.0.nsp, event, args, None).encode_frame();
        debug_assert!(attachments.is_empty());
        self.send_frame(Utf8Bytes::from(text))
    }

    /// Queues an encoded packet and its binary attachments.
    pub fn send_packet(&self, packet: &socketio::Packet) -> Result<(), SendError> {
        let (text, attachments) = packet.encode_frame();
        let mut frames = Vec::with_capacity(1 + attachments.len());
        frames.push(Outbound::Text(Utf8Bytes::from(text)));
        frames.extend(attachments.into_iter().map(Outbound::Binary));
        self.push_all(frames)
    }

    fn push(&self, frame: Outbound) -> Result<(), SendError> {
        self.pushed(self.0.shared.queue.push(frame))
    }

    /// Queues frames that stay together (a packet and its attachments).
    fn push_all(&self, mut frames: Vec<Outbound>) -> Result<(), SendError> {
        self.pushed(self.0.shared.queue.push_all(&mut frames))
    }

    fn pushed(&self, result: Result<(), PushError>) -> Result<(), SendError> {
        match result {
            Ok(()) => Ok(()),
            Err(PushError::Full(_)) => {
                self.close(CloseReason::slow_consumer(self.0.shared.capacity));
                Err(SendError::SlowConsumer)
            }
            Err(PushError::Closed) => Err(SendError::Closed),
        }
    }

    /// Closes the whole connection with a reason (first reason wins).
    pub fn close(&self, reason: CloseReason) {
        self.0.shared.close(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection task's side of the outbound queue.
    struct Rx(Arc<ConnShared>);

    impl Rx {
        async fn recv(&mut self) -> Option<Outbound> {
            let mut out = Vec::with_capacity(1);
            std::future::poll_fn(|cx| self.0.queue.poll_take(cx, &mut out, 1)).await;
            out.pop()
        }
    }

    fn socket(queue: usize) -> (SocketRef, Rx) {
        let shared = Arc::new(ConnShared {
            conn: ConnId::next(),
            queue: OutQueue::new(queue),
            kill: CancellationToken::new(),
            kill_reason: OnceLock::new(),
            capacity: queue,
            offsets: Offsets::default(),
        });
        (
            SocketRef::new(Arc::clone(&shared), "/".into(), "s1".into()),
            Rx(shared),
        )
    }

    fn event(seq: u64) -> Utf8Bytes {
        socketio::event_frame_with_offset("/", "message:new", &format!("[{seq}]"), seq).into()
    }

    fn seq_of(frame: &Outbound) -> u64 {
        let Outbound::Text(t) = frame else {
            panic!("binary frame")
        };
        // `42["message:new",N,"N"]`: the offset is the last argument.
        t.rsplit('"').nth(1).unwrap().parse().unwrap()
    }

    /// A binary event (replayed, held, or an older one after a repaired
    /// gap) goes out as its text frame directly followed by its
    /// attachments, with its offset as for text events.
    #[tokio::test]
    async fn binary_events_keep_their_attachments_next_to_their_frame() {
        let (socket, mut rx) = socket(32);
        let bin = |seq: u64| EventFrame {
            text: event(seq),
            attachments: Some(Arc::from(vec![
                Bytes::from(format!("a{seq}")),
                Bytes::from(format!("b{seq}")),
            ])),
        };
        socket.hold();
        assert_eq!(socket.deliver_event(&bin(3), Some(3)), Ok(Delivered::Held));
        assert_eq!(socket.deliver(&event(4), Some(4)), Ok(Delivered::Held));
        socket.send_replayed(bin(1), 1).await.unwrap();
        socket.release(1).unwrap();
        // A repaired gap: event 2 arrives after 4, with offset 4.
        assert_eq!(
            socket.deliver_event(&bin(2), Some(2)),
            Ok(Delivered::Queued)
        );
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(match rx.recv().await.unwrap() {
                t @ Outbound::Text(_) => format!("t{}", seq_of(&t)),
                Outbound::Binary(b) => String::from_utf8(b.to_vec()).unwrap(),
            });
        }
        assert_eq!(
            got,
            ["t1", "a1", "b1", "t3", "a3", "b3", "t4", "t4", "a2", "b2"]
        );
    }

    /// A recovery that took a while holds more live events than the
    /// outbound queue takes at once: releasing them waits for room (the
    /// connection drains meanwhile) instead of closing the connection as a
    /// slow consumer, and events arriving meanwhile follow in order.
    #[tokio::test]
    async fn releasing_many_held_events_waits_for_room_and_keeps_order() {
        let (socket, mut rx) = socket(4);
        socket.hold();
        for seq in 1..=100 {
            assert_eq!(socket.deliver(&event(seq), Some(seq)), Ok(Delivered::Held));
        }
        // Events 1-10 were replayed.
        let releasing = {
            let socket = socket.clone();
            tokio::spawn(async move { socket.release_waiting(10).await })
        };
        let mut got = Vec::new();
        while got.len() < 40 {
            got.push(seq_of(&rx.recv().await.unwrap()));
        }
        // Live traffic goes on while the backlog drains.
        for seq in 101..=120 {
            let _ = socket.deliver(&event(seq), Some(seq)).unwrap();
        }
        while got.len() < 110 {
            got.push(seq_of(&rx.recv().await.unwrap()));
        }
        releasing.await.unwrap().unwrap();
        assert_eq!(got, (11..=120).collect::<Vec<_>>());
        assert!(!socket.0.shared.kill.is_cancelled(), "not closing");
        // Then live delivery is direct again.
        assert_eq!(
            socket.deliver(&event(121), Some(121)),
            Ok(Delivered::Queued)
        );
        assert_eq!(seq_of(&rx.recv().await.unwrap()), 121);
    }
}
