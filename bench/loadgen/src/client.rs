//! One Socket.IO v5 client over WebSocket: a TCP connection from a chosen
//! source address in 127.0.0.0/8, the WebSocket upgrade, the Engine.IO
//! open packet and the Socket.IO CONNECT of the main namespace.
//!
//! Only what a benchmark client needs: text frames, pings answered with
//! pongs, events and acks. Frames are looked at as bytes; nothing on the
//! hot path parses JSON.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client's WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// A server to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its TCP address.
    pub addr: SocketAddr,
    /// The WebSocket URL of its Socket.IO endpoint.
    pub url: String,
}

impl Target {
    /// Parses `ws://host:port`, `http://host:port` or `host:port`; the
    /// Socket.IO path (`/socket.io/`) and query are added.
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s
            .trim_start_matches("ws://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {hostport:?}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("{hostport:?} has no IPv4 address"))?;
        Ok(Self {
            addr,
            url: format!("ws://{hostport}/socket.io/?EIO=4&transport=websocket"),
        })
    }

    /// Parses a comma-separated list of targets.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let list = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| Self::parse(p.trim()))
            .collect::<Result<Vec<_>>>()?;
        if list.is_empty() {
            bail!("no target URL given");
        }
        Ok(list)
    }
}

/// Source addresses 127.0.0.2, 127.0.0.3, ... (continuing into
/// 127.0.1.0 and beyond): each has its own range of ephemeral ports, so a
/// few of them carry far more connections than one address could.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    /// Index of the first address (0 is 127.0.0.2).
    pub offset: u32,
    /// How many addresses to rotate over.
    pub count: u32,
}

impl Sources {
    /// The source address of the `i`-th connection.
    pub fn addr(&self, i: usize) -> IpAddr {
        let n = 2 + self.offset + (i as u32 % self.count.max(1));
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff)))
    }
}

/// The WebSocket settings of every client: small buffers, so that 100,000
/// clients fit in memory. The read buffer is also the most read per call
/// and is zeroed before each read: 1 KiB holds a few benchmark frames.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

/// Wall-clock time in nanoseconds since the Unix epoch: comparable across
/// the load generator's processes on one machine.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A connected Socket.IO client.
pub struct Session {
    /// The WebSocket.
    pub ws: Ws,
    /// The Socket.IO session id of the CONNECT ack.
    pub sid: String,
    /// The private session id for connection-state recovery, when the
    /// server gives one.
    pub pid: Option<String>,
}

/// Opens a TCP connection from `src`, upgrades it, reads the Engine.IO open
/// packet and sends CONNECT with `auth` (a JSON object, e.g.
/// `{"token":"..."}`); returns once the server acked the CONNECT. Fails on
/// a refusal (`44`), a close, or after `timeout`.
pub async fn connect(
    target: &Target,
    src: IpAddr,
    auth: &str,
    timeout: Duration,
) -> Result<Session> {
    tokio::time::timeout(timeout, connect_inner(target, src, auth))
        .await
        .map_err(|_| anyhow!("handshake timed out after {timeout:?}"))?
}

async fn connect_inner(target: &Target, src: IpAddr, auth: &str) -> Result<Session> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(src, 0))
        .with_context(|| format!("bind {src}"))?;
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connect {} from {src}", target.addr))?;
    stream.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(ws_config()))
            .await
            .context("websocket upgrade")?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected the Engine.IO open packet, got {open:?}");
    }
    ws.send(Message::text(format!("40{auth}"))).await?;
    loop {
        let frame = next_text(&mut ws).await?;
        if frame == "2" {
            ws.send(Message::text("3")).await?;
        } else if let Some(body) = frame.strip_prefix("40") {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let sid = v["sid"].as_str().unwrap_or_default().to_owned();
            let pid = v["pid"].as_str().map(str::to_owned);
            return Ok(Session { ws, sid, pid });
        } else if let Some(err) = frame.strip_prefix("44") {
            bail!("CONNECT refused: {err}");
        }
    }
}

/// The next text frame (pings of the WebSocket layer are answered by
/// tungstenite itself).
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// What a text frame is, as far as the load generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Engine.IO ping: answer `3`.
    Ping,
    /// A Socket.IO event of the main namespace: the frame after `42`.
    Event(&'a [u8]),
    /// A Socket.IO ack: its id and the frame after it.
    Ack(u64, &'a [u8]),
    /// Anything else.
    Other,
}

/// Classifies a text frame without parsing it.
pub fn classify(frame: &[u8]) -> Frame<'_> {
    match frame {
        [b'2'] => Frame::Ping,
        [b'4', b'2', rest @ ..] => Frame::Event(rest),
        [b'4', b'3', rest @ ..] => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let id = parse_u64(&rest[..digits]).unwrap_or(u64::MAX);
            Frame::Ack(id, &rest[digits..])
        }
        _ => Frame::Other,
    }
}

/// Parses ASCII digits; `None` when empty or not digits.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
    }
    Some(n)
}

/// The marker a benchmark body starts with: `~{step}~{send nanos}~{seq}~`.
/// Room names, user ids, message ids and timestamps never contain `~`, so
/// the first `~` of a `message:new` frame starts the body.
pub fn body(step: usize, sent_nanos: u64, seq: u64, pad: usize) -> String {
    let mut s = format!("~{step}~{sent_nanos}~{seq}~");
    s.extend(std::iter::repeat_n('x', pad));
    s
}

/// The `(step, send nanos, seq)` of a benchmark body inside an event frame,
/// found by a scan for the first `~`.
pub fn scan_body(frame: &[u8]) -> Option<(usize, u64, u64)> {
    let start = memchr::memchr(b'~', frame)? + 1;
    let mut fields = frame[start..].splitn(4, |&b| b == b'~');
    let step = parse_u64(fields.next()?)? as usize;
    let nanos = parse_u64(fields.next()?)?;
    let seq = parse_u64(fields.next()?)?;
    Some((step, nanos, seq))
}

/// The offset a durable event carries as its last argument
/// (`[..., "1234"]`), read from the end of the frame.
pub fn trailing_offset(frame: &[u8]) -> Option<u64> {
    let end = frame.strip_suffix(b"\"]")?;
    let digits = end.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, digits) = end.split_at(end.len() - digits);
    if !head.ends_with(b",\"") {
        return None;
    }
    parse_u64(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() {
        assert_eq!(classify(b"2"), Frame::Ping);
        assert_eq!(classify(b"42[\"a\"]"), Frame::Event(b"[\"a\"]"));
        assert_eq!(classify(b"4317[{}]"), Frame::Ack(17, b"[{}]"));
        assert_eq!(classify(b"3"), Frame::Other);
    }

    #[test]
    fn finds_the_body_marker() {
        let b = body(3, 1_700_000_000_123_456_789, 42, 5);
        let frame = format!(
            "[\"message:new\",{{\"id\":\"m1\",\"room\":\"channel:c1\",\"authorId\":\"u1\",\"body\":\"{b}\",\"createdAt\":\"2026-01-01T00:00:00Z\"}},\"99\"]"
        );
        assert_eq!(
            scan_body(frame.as_bytes()),
            Some((3, 1_700_000_000_123_456_789, 42))
        );
        assert_eq!(trailing_offset(frame.as_bytes()), Some(99));
        assert_eq!(trailing_offset(b"[\"message:new\",{}]"), None);
    }

    #[test]
    fn sources_rotate_in_loopback() {
        let s = Sources {
            offset: 0,
            count: 300,
        };
        assert_eq!(s.addr(0).to_string(), "127.0.0.2");
        assert_eq!(s.addr(254).to_string(), "127.0.1.0");
        assert_eq!(s.addr(300).to_string(), "127.0.0.2");
    }
}
