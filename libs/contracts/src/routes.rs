//! [`Routes`]: a service's endpoint table, each subject with its typed
//! handler. The [`crate::EndpointServer`] serves it over NATS; tests and
//! in-process callers can [`answer`](Routes::answer) through it directly.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::client::to_json;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, codes};

/// The handler of endpoint `E`; implemented by every
/// `Fn(E::Request) -> impl Future<Output = Result<E::Response, ApiError>>`.
pub trait Handler<E: Endpoint>: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: E::Request) -> BoxFuture<'static, Result<E::Response, ApiError>>;
}

impl<E, F, Fut> Handler<E> for F
where
    E: Endpoint,
    F: Fn(E::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<E::Response, ApiError>> + Send + 'static,
{
    fn handle(&self, request: E::Request) -> BoxFuture<'static, Result<E::Response, ApiError>> {
        self(request).boxed()
    }
}

/// `handler` called with a clone of `state` and the request, e.g.
/// `routes.route::<RoomsOf>(with_state(service, rooms_of))` for an
/// `async fn rooms_of(service: Arc<Service>, request: RoomsOfRequest)`.
pub fn with_state<E, S, F, Fut>(state: S, handler: F) -> impl Handler<E>
where
    E: Endpoint,
    S: Clone + Send + Sync + 'static,
    F: Fn(S, E::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<E::Response, ApiError>> + Send + 'static,
{
    move |request: E::Request| handler(state.clone(), request)
}

/// A handler behind its types: request bytes in, response bytes out.
type Erased = Arc<dyn Fn(&[u8]) -> BoxFuture<'static, Result<Bytes, ApiError>> + Send + Sync>;

/// One endpoint of a [`Routes`].
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) subject: &'static str,
    handler: Erased,
}

impl Route {
    /// Decodes the request, runs the handler, encodes the response.
    pub(crate) fn run(&self, payload: &[u8]) -> BoxFuture<'static, Result<Bytes, ApiError>> {
        (self.handler)(payload)
    }
}

/// The endpoints of a service, by subject.
#[derive(Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.subjects()).finish()
    }
}

impl Routes {
    /// No endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds endpoint `E`, answered by `handler` (an async function or
    /// closure from `E::Request` to `Result<E::Response, ApiError>`). A
    /// body that is not an `E::Request` is refused with
    /// [`Endpoint::malformed`] before the handler runs.
    pub fn route<E: Endpoint>(mut self, handler: impl Handler<E>) -> Self {
        let handler: Erased =
            Arc::new(
                move |payload: &[u8]| match serde_json::from_slice::<E::Request>(payload) {
                    Ok(request) => handler
                        .handle(request)
                        .map(|r| r.map(|v| to_json(&v)))
                        .boxed(),
                    Err(e) => futures::future::ready(Err(E::malformed(&e))).boxed(),
                },
            );
        self.routes.push(Route {
            subject: E::SUBJECT,
            handler,
        });
        self
    }

    /// These endpoints and `other`'s.
    pub fn merge(mut self, other: Routes) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// The subjects, in the order they were added.
    pub fn subjects(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|r| r.subject)
    }

    /// Answers one request in-process, as the server would after the
    /// token check: the response JSON, or the refusal.
    pub async fn answer(&self, subject: &str, payload: &[u8]) -> Result<Bytes, ApiError> {
        match self.routes.iter().find(|r| r.subject == subject) {
            Some(route) => route.run(payload).await,
            None => Err(ApiError::new(
                codes::NOT_FOUND,
                format!("no endpoint {subject}"),
            )),
        }
    }

    /// The first subject added twice, if any.
    pub(crate) fn duplicate(&self) -> Option<&'static str> {
        let mut seen = std::collections::HashSet::new();
        self.subjects().find(|s| !seen.insert(*s))
    }

    pub(crate) fn into_routes(self) -> Vec<Route> {
        self.routes
    }
}
