//! A benchmark client's connection, over WebSocket or HTTP long-polling
//! (`--transport polling`): text packets in, text packets out.
//!
//! The polling client is as small as the WebSocket one: raw HTTP/1.1 on
//! two keep-alive TCP connections from the client's source address (one
//! carries the held GETs, the other the POSTs and is closed after
//! [`POST_IDLE`] without use, so an idle client holds one), no HTTP
//! library, packets handed out as slices of the GET body. Only `Content-Length` answers
//! (what Confab and Node's engine.io send) are understood.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Session, Target, Ws};

/// Engine.IO v4's packet separator in a polling payload.
const SEPARATOR: u8 = 0x1e;

/// A POST connection idle for longer is closed (Node closes idle
/// keep-alive connections after 5 s; an idle client needs none).
const POST_IDLE: Duration = Duration::from_secs(3);

/// The transport of the benchmark clients.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// `transport=websocket`.
    Websocket,
    /// `transport=polling`, never upgraded.
    Polling,
}

/// A connected client's transport.
pub enum Conn {
    /// A WebSocket.
    Ws(Box<Ws>),
    /// A long-polling session.
    Polling(Box<Polling>),
}

impl Conn {
    /// The next text packet; `None` once the server closed. Cancel-safe.
    pub async fn next_text(&mut self) -> Option<Result<Bytes>> {
        match self {
            Self::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Some(Ok(Bytes::from(t))),
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Some(Err(e.into())),
                }
            },
            Self::Polling(p) => p.next().await,
        }
    }

    /// Ends the session: a polling client POSTs the close packet (the
    /// server would otherwise keep the session until its ping timeout); a
    /// WebSocket is closed by dropping it.
    pub async fn close(self) {
        if let Self::Polling(mut p) = self {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.post(b"1")).await;
        }
    }

    /// Sends one text packet.
    pub async fn send_text(&mut self, text: String) -> Result<()> {
        match self {
            Self::Ws(ws) => Ok(ws.send(Message::text(text)).await?),
            Self::Polling(p) => p.post(text.as_bytes()).await,
        }
    }
}

impl From<Session> for Conn {
    fn from(s: Session) -> Self {
        Self::Ws(Box::new(s.ws))
    }
}

/// One long-polling session.
pub struct Polling {
    addr: SocketAddr,
    src: IpAddr,
    /// The request line and headers of a GET (a POST adds its body).
    get_head: Bytes,
    post_path: String,
    host: String,
    get: TcpStream,
    /// How much of `get_head` is written for the GET in flight (`None`:
    /// no GET in flight).
    get_written: Option<usize>,
    buf: BytesMut,
    packets: VecDeque<Bytes>,
    post: Option<(TcpStream, Instant)>,
    post_buf: BytesMut,
    closed: bool,
}

async fn dial(addr: SocketAddr, src: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(src, 0))
        .with_context(|| format!("bind {src}"))?;
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr} from {src}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one `Content-Length` response from `stream` into `buf`; returns
/// its status and body. Cancel-safe: what was read stays in `buf`.
async fn response(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(u16, Bytes)> {
    loop {
        if let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end]).context("response head")?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
            let len = head
                .split("\r\n")
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
            let total = head_end + 4 + len;
            if buf.len() >= total {
                let whole = buf.split_to(total).freeze();
                return Ok((status, whole.slice(head_end + 4..)));
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed by the server");
        }
    }
}

impl Polling {
    /// Opens a session on `target` from `src`: the handshake, then CONNECT
    /// with `auth`; returns with the session's `(sid, pid)` once the server
    /// acked the CONNECT (pings meanwhile are answered).
    pub async fn connect(
        target: &Target,
        src: IpAddr,
        auth: &str,
    ) -> Result<(Self, String, Option<String>)> {
        let host = target.addr.to_string();
        let mut get = dial(target.addr, src).await?;
        let path = "/socket.io/?EIO=4&transport=polling";
        let open = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        get.write_all(open.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let (status, body) = response(&mut get, &mut buf).await?;
        if status != 200 || body.first() != Some(&b'0') {
            bail!("polling handshake refused: {status} {body:?}");
        }
        let open: serde_json::Value = serde_json::from_slice(&body[1..])?;
        let sid = open["sid"]
            .as_str()
            .ok_or_else(|| anyhow!("no sid in the open packet"))?
            .to_owned();
        let post_path = format!("{path}&sid={sid}");
        let get_head = format!("GET {post_path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut p = Self {
            addr: target.addr,
            src,
            get_head: Bytes::from(get_head),
            post_path,
            host,
            get,
            get_written: None,
            buf,
            packets: VecDeque::new(),
            post: None,
            post_buf: BytesMut::with_capacity(256),
            closed: false,
        };
        p.post(format!("40{auth}").as_bytes()).await?;
        loop {
            let packet = p
                .next()
                .await
                .ok_or_else(|| anyhow!("closed before the CONNECT ack"))??;
            if packet.as_ref() == b"2" {
                p.post(b"3").await?;
            } else if let Some(body) = packet.strip_prefix(b"40") {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                let pid = v["pid"].as_str().map(str::to_owned);
                // Idle from now on, until a pong or a send.
                p.post = None;
                return Ok((p, sid, pid));
            } else if let Some(err) = packet.strip_prefix(b"44") {
                bail!("CONNECT refused: {}", String::from_utf8_lossy(err));
            }
        }
    }

    /// The next packet, from what the last GET answered or from a new GET.
    /// Cancel-safe: the request's progress and what was read are kept.
    async fn next(&mut self) -> Option<Result<Bytes>> {
        loop {
            if let Some(p) = self.packets.pop_front() {
                if p.as_ref() == b"1" {
                    self.closed = true;
                    return None;
                }
                return Some(Ok(p));
            }
            if self.closed {
                return None;
            }
            if let Err(e) = self.write_get().await {
                return Some(Err(e));
            }
            let (status, body) = match response(&mut self.get, &mut self.buf).await {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            self.get_written = None;
            if self
                .post
                .as_ref()
                .is_some_and(|(_, t)| t.elapsed() > POST_IDLE)
            {
                self.post = None;
            }
            if status != 200 {
                self.closed = true;
                return None;
            }
            self.packets.extend(
                body.split(|&b| b == SEPARATOR)
                    .map(|part| body.slice_ref(part)),
            );
        }
    }

    /// Writes what is left of the GET request. Cancel-safe.
    async fn write_get(&mut self) -> Result<()> {
        let mut written = self.get_written.unwrap_or(0);
        self.get_written = Some(written);
        while written < self.get_head.len() {
            let n = self.get.write(&self.get_head[written..]).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            written += n;
            self.get_written = Some(written);
        }
        Ok(())
    }

    /// POSTs `payload` and waits for its `ok`.
    async fn post(&mut self, payload: &[u8]) -> Result<()> {
        let stale = self
            .post
            .as_ref()
            .is_none_or(|(_, t)| t.elapsed() > POST_IDLE);
        if stale {
            self.post = Some((dial(self.addr, self.src).await?, Instant::now()));
            self.post_buf.clear();
        }
        let Some((stream, used)) = self.post.as_mut() else {
            bail!("no POST connection");
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
            self.post_path,
            self.host,
            payload.len()
        );
        let mut request = Vec::with_capacity(head.len() + payload.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(payload);
        stream.write_all(&request).await?;
        let (status, body) = response(stream, &mut self.post_buf).await?;
        *used = Instant::now();
        if status != 200 {
            bail!("POST refused: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_content_length_responses_in_pieces() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let body = "42[\"a\"]\u{1e}2";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            for chunk in answer.as_bytes().chunks(5) {
                s.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            s
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        let (status, body) = response(&mut client, &mut buf).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.as_ref(), "42[\"a\"]\u{1e}2".as_bytes());
        assert!(buf.is_empty());
        drop(server.await.unwrap());
    }
}
