//! Reading a JetStream server's state the way a test checks it.

use async_nats::jetstream;

/// How many messages the stream `stream` holds now.
///
/// # Panics
///
/// When the stream does not exist or the server does not answer.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .cached_info()
        .state
        .messages
}
