//! The port a gateway forwards polling requests through when their
//! session lives on another gateway (no sticky sessions). The NATS
//! implementation is `crate::forwarding`; another backend (Redis) would
//! implement the same two calls.

use futures::future::BoxFuture;

use super::PollError;

/// Carries a GET or POST to the gateway that owns the session, and its
/// answer back.
pub(crate) trait Forwarder: Send + Sync + 'static {
    /// A GET for `sid`, owned by `owner`: the payload, once the owner
    /// knows it arrived. Dropping the future releases the owner's hold.
    /// No owner answering: [`PollError::UnknownSid`].
    fn poll<'a>(&'a self, owner: &'a str, sid: &'a str)
    -> BoxFuture<'a, Result<String, PollError>>;

    /// A POST for `sid`, owned by `owner`: returns once the owner handed
    /// the packets to the connection.
    fn post<'a>(
        &'a self,
        owner: &'a str,
        sid: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), PollError>>;
}
