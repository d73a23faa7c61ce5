//! What `@socket.io/redis-emitter` 5.x publishes, decoded.
//!
//! * Emits, on `{key}#{nsp}#` (several or no rooms) and
//!   `{key}#{nsp}#{room}#` (exactly one room): msgpack (notepack.io)
//!   `[uid, {type: 2, data: [event, ...args], nsp}, {rooms, except, flags:
//!   {volatile?, compress?}}]`. Buffers in the arguments are msgpack `bin`.
//! * Requests, on `{key}-request#{nsp}#`: JSON `{type, opts: {rooms,
//!   except}, rooms}` (2: `socketsJoin`, 3: `socketsLeave`), `{type: 4,
//!   opts, close}` (`disconnectSockets`), `{uid, type: 6, data}`
//!   (`serverSideEmit`). The redis-adapter's other request types (0
//!   `SOCKETS`, 1 `ALL_ROOMS`, 5 `REMOTE_FETCH`, and any carrying a
//!   `requestId`) expect replies.
//!
//! Nothing here trusts the input: sizes and depth are bounded, and every
//! shape mismatch is a [`WireError`] naming what was wrong.

use rmpv::Value as Mp;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Deepest nesting of an emit's msgpack value.
const MAX_DEPTH: usize = 32;

/// Why a published message is not one the bridge understands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Not msgpack / JSON, or not the emitter's shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A value JSON cannot carry (a msgpack extension, e.g. a Date).
    #[error("unsupported value: {0}")]
    Unsupported(String),
}

/// One `emit` of the emitter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emit {
    /// The namespace (`/` unless `emitter.of(..)`).
    pub nsp: String,
    /// The Socket.IO packet type (2: EVENT).
    pub packet_type: u64,
    /// The event name.
    pub event: String,
    /// The arguments as JSON, binary values replaced by Socket.IO
    /// placeholders.
    pub args: Vec<Value>,
    /// The binary values, in placeholder order.
    pub attachments: Vec<Vec<u8>>,
    /// The target rooms (none: every socket of the namespace).
    pub rooms: Vec<String>,
    /// Rooms whose sockets must not get it.
    pub except: Vec<String>,
    /// `flags.volatile`.
    pub volatile: bool,
}

fn malformed(what: &str) -> WireError {
    WireError::Malformed(what.to_owned())
}

fn get<'a>(map: &'a [(Mp, Mp)], key: &str) -> Option<&'a Mp> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn strings(value: Option<&Mp>, what: &str) -> Result<Vec<String>, WireError> {
    match value {
        None | Some(Mp::Nil) => Ok(Vec::new()),
        Some(Mp::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(&format!("{what} holds a non-string")))
            })
            .collect(),
        Some(_) => Err(malformed(&format!("{what} is not an array"))),
    }
}

/// Decodes an emit's msgpack payload.
pub(crate) fn decode_emit(payload: &[u8]) -> Result<Emit, WireError> {
    let mut rd = payload;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| WireError::Malformed(format!("not msgpack: {e}")))?;
    let Mp::Array(parts) = value else {
        return Err(malformed("not an array"));
    };
    let [_uid, Mp::Map(packet), Mp::Map(opts)] = parts.as_slice() else {
        return Err(malformed("not [uid, packet, opts]"));
    };
    let packet_type = get(packet, "type")
        .and_then(Mp::as_u64)
        .ok_or_else(|| malformed("packet.type is not a number"))?;
    let nsp = get(packet, "nsp")
        .and_then(Mp::as_str)
        .unwrap_or("/")
        .to_owned();
    let Some(Mp::Array(data)) = get(packet, "data") else {
        return Err(malformed("packet.data is not an array"));
    };
    let Some((name, rest)) = data.split_first() else {
        return Err(malformed("packet.data is empty"));
    };
    let event = name
        .as_str()
        .ok_or_else(|| malformed("the event name is not a string"))?
        .to_owned();
    let mut attachments = Vec::new();
    let args = rest
        .iter()
        .map(|v| to_json(v, &mut attachments))
        .collect::<Result<Vec<_>, _>>()?;
    let volatile = match get(opts, "flags") {
        Some(Mp::Map(flags)) => get(flags, "volatile").and_then(Mp::as_bool) == Some(true),
        _ => false,
    };
    Ok(Emit {
        nsp,
        packet_type,
        event,
        args,
        attachments,
        rooms: strings(get(opts, "rooms"), "opts.rooms")?,
        except: strings(get(opts, "except"), "opts.except")?,
        volatile,
    })
}

/// A msgpack value as JSON; `bin` becomes a placeholder whose bytes go to
/// `attachments`.
fn to_json(value: &Mp, attachments: &mut Vec<Vec<u8>>) -> Result<Value, WireError> {
    Ok(match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => Value::Null,
        },
        Mp::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        Mp::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(
            s.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        ),
        Mp::Binary(b) => {
            attachments.push(b.clone());
            confab_protocol_placeholder(attachments.len() - 1)
        }
        Mp::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| to_json(v, attachments))
                .collect::<Result<_, _>>()?,
        ),
        Mp::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => s.as_str().unwrap_or_default().to_owned(),
                    other => other.to_string(),
                };
                map.insert(key, to_json(v, attachments)?);
            }
            Value::Object(map)
        }
        Mp::Ext(kind, _) => {
            return Err(WireError::Unsupported(format!(
                "msgpack extension type {kind} (send dates as strings or numbers)"
            )));
        }
    })
}

/// Socket.IO's placeholder for attachment `num`.
fn confab_protocol_placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

/// One request of the emitter (or of a redis-adapter server).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `socketsJoin` (`join`) or `socketsLeave`.
    Move {
        /// Join (`true`) or leave.
        join: bool,
        /// Whose sockets: the rooms they are in (none: every socket).
        select: Vec<String>,
        /// Sockets in these rooms are left alone.
        except: Vec<String>,
        /// The rooms to join or leave.
        rooms: Vec<String>,
    },
    /// `disconnectSockets`.
    Disconnect {
        /// Whose sockets (none: every socket).
        select: Vec<String>,
        /// Sockets in these rooms are left alone.
        except: Vec<String>,
        /// Close the underlying connection too.
        close: bool,
    },
    /// `serverSideEmit` without an acknowledgement.
    ServerSideEmit,
    /// Anything expecting a reply (or unknown): `type` as sent.
    WantsReply(i64),
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    opts: Option<RawOpts>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    close: Option<bool>,
    #[serde(default, rename = "requestId")]
    request_id: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawOpts {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

/// Decodes a request's JSON payload.
pub(crate) fn decode_request(payload: &[u8]) -> Result<Request, WireError> {
    let raw: RawRequest = serde_json::from_slice(payload)
        .map_err(|e| WireError::Malformed(format!("not a request: {e}")))?;
    if raw.request_id.is_some() {
        return Ok(Request::WantsReply(raw.kind));
    }
    let opts = raw.opts.unwrap_or_default();
    Ok(match raw.kind {
        2 | 3 => Request::Move {
            join: raw.kind == 2,
            select: opts.rooms,
            except: opts.except,
            rooms: raw.rooms.unwrap_or_default(),
        },
        4 => Request::Disconnect {
            select: opts.rooms,
            except: opts.except,
            close: raw.close.unwrap_or(false),
        },
        6 => Request::ServerSideEmit,
        other => Request::WantsReply(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit_bytes(value: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn s(v: &str) -> Mp {
        Mp::from(v)
    }

    #[test]
    fn an_emit_with_binary_decodes_into_placeholders_and_attachments() {
        let packet = Mp::Map(vec![
            (s("type"), Mp::from(2)),
            (
                s("data"),
                Mp::Array(vec![s("app:file"), Mp::from(1), Mp::Binary(vec![0, 1, 2])]),
            ),
            (s("nsp"), s("/")),
        ]);
        let opts = Mp::Map(vec![
            (s("rooms"), Mp::Array(vec![s("channel:a"), s("channel:b")])),
            (
                s("flags"),
                Mp::Map(vec![(s("volatile"), Mp::Boolean(true))]),
            ),
            (s("except"), Mp::Array(vec![s("user:bob")])),
        ]);
        let bytes = emit_bytes(&Mp::Array(vec![s("emitter"), packet, opts]));
        let emit = decode_emit(&bytes).unwrap();
        assert_eq!(emit.event, "app:file");
        assert_eq!(
            emit.args,
            vec![
                json_num(1),
                serde_json::json!({"_placeholder": true, "num": 0})
            ]
        );
        assert_eq!(emit.attachments, vec![vec![0u8, 1, 2]]);
        assert_eq!(emit.rooms, vec!["channel:a", "channel:b"]);
        assert_eq!(emit.except, vec!["user:bob"]);
        assert!(emit.volatile);
    }

    fn json_num(n: i64) -> Value {
        Value::from(n)
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for bytes in [
            &b""[..],
            b"\xc1",
            b"\x93\xa1x",
            b"{}",
            b"\xdd\xff\xff\xff\xff",
        ] {
            assert!(decode_emit(bytes).is_err());
        }
        assert!(decode_request(b"nope").is_err());
    }

    #[test]
    fn requests_decode_and_replies_are_recognised() {
        let join = decode_request(
            br#"{"type":2,"opts":{"rooms":["channel:a"],"except":[]},"rooms":["channel:z"]}"#,
        )
        .unwrap();
        assert_eq!(
            join,
            Request::Move {
                join: true,
                select: vec!["channel:a".into()],
                except: vec![],
                rooms: vec!["channel:z".into()]
            }
        );
        assert_eq!(
            decode_request(br#"{"type":4,"opts":{"rooms":[],"except":[]},"close":true}"#).unwrap(),
            Request::Disconnect {
                select: vec![],
                except: vec![],
                close: true
            }
        );
        assert_eq!(
            decode_request(br#"{"uid":"emitter","type":6,"data":[1]}"#).unwrap(),
            Request::ServerSideEmit
        );
        assert_eq!(
            decode_request(br#"{"type":5,"requestId":"r1","opts":{}}"#).unwrap(),
            Request::WantsReply(5)
        );
    }
}
