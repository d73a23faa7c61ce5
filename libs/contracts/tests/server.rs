//! The typed client against the endpoint server on a real nats-server:
//! the token check, the error encoding, bounded concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use confab_contracts::{
    ApiError, CallError, Endpoint, EndpointServer, Routes, SERVICE_ERROR_CODE_HEADER,
    SERVICE_ERROR_HEADER, ServerSettings, ServiceClient, ServiceToken,
};
use confab_test_support::NatsServer;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-service-token";
const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    n: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Answer {
    double: i64,
}

/// Doubles `n`; refuses negative numbers.
struct Double;

impl Endpoint for Double {
    const SUBJECT: &'static str = "confab.test.v1.double";
    type Request = Ask;
    type Response = Answer;
}

/// Like [`Double`], with another code for malformed bodies.
struct Strict;

impl Endpoint for Strict {
    const SUBJECT: &'static str = "confab.test.v1.strict";
    type Request = Ask;
    type Response = Answer;

    fn malformed(error: &serde_json::Error) -> ApiError {
        ApiError::new("invalid_request", error.to_string())
    }
}

async fn double(ask: Ask) -> Result<Answer, ApiError> {
    if ask.n < 0 {
        return Err(ApiError::invalid("n", "n must not be negative"));
    }
    Ok(Answer { double: ask.n * 2 })
}

struct Setup {
    nats: async_nats::Client,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    _server: NatsServer,
}

async fn serve(routes: Routes, max_in_flight: usize) -> Setup {
    let server = NatsServer::start();
    let nats = async_nats::connect(server.url()).await.unwrap();
    let settings = ServerSettings::new("confab-test", "0.0.1")
        .description("tests")
        .max_in_flight(max_in_flight);
    let endpoints = EndpointServer::start(
        nats.clone(),
        settings,
        ServiceToken::new(Some(TOKEN.into())),
        routes,
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(endpoints.serve(stop.clone().cancelled_owned()));
    Setup {
        nats,
        stop,
        served,
        _server: server,
    }
}

fn routes() -> Routes {
    Routes::new()
        .route::<Double>(double)
        .route::<Strict>(double)
}

/// A raw request: the body as JSON and the error status header.
async fn raw(
    nats: &async_nats::Client,
    subject: &str,
    auth: Option<&str>,
    body: &str,
) -> (serde_json::Value, Option<String>, Option<String>) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(a) = auth {
        headers.insert("Authorization", a);
    }
    let reply = tokio::time::timeout(
        T,
        nats.request_with_headers(subject.to_owned(), headers, body.to_owned().into()),
    )
    .await
    .unwrap()
    .unwrap();
    let header = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_string())
    };
    (
        serde_json::from_slice(&reply.payload).unwrap(),
        header(SERVICE_ERROR_CODE_HEADER),
        header(SERVICE_ERROR_HEADER),
    )
}

#[tokio::test]
async fn only_the_service_token_is_answered() {
    let s = serve(routes(), 8).await;
    let bearer = format!("Bearer {TOKEN}");
    for auth in [None, Some("Bearer wrong"), Some(TOKEN), Some("Basic x")] {
        let (body, status, message) = raw(&s.nats, Double::SUBJECT, auth, r#"{"n":2}"#).await;
        assert_eq!(body["error"]["code"], "unauthorized", "{auth:?}: {body}");
        assert_eq!(status.as_deref(), Some("401"));
        assert_eq!(message.as_deref(), body["error"]["message"].as_str());
    }
    let (body, status, _) = raw(&s.nats, Double::SUBJECT, Some(&bearer), r#"{"n":2}"#).await;
    assert_eq!(body, serde_json::json!({"double": 4}));
    assert_eq!(status, None);

    let wrong = ServiceClient::new(s.nats.clone(), "nope", T);
    let err = wrong.call::<Double>(&Ask { n: 1 }).await.unwrap_err();
    assert!(
        matches!(err, CallError::Refused(ref d) if d.code == "unauthorized"),
        "{err:?}"
    );
    let client = ServiceClient::new(s.nats.clone(), TOKEN, T);
    assert_eq!(
        client.call::<Double>(&Ask { n: 21 }).await.unwrap(),
        Answer { double: 42 }
    );
    // The micro-service API answers under the service's name.
    let ping = s.nats.request("$SRV.PING.confab-test", "".into()).await;
    assert!(ping.is_ok());
    s.stop.cancel();
    s.served.await.unwrap();
}

#[tokio::test]
async fn refusals_are_encoded_once() {
    let s = serve(routes(), 8).await;
    let bearer = format!("Bearer {TOKEN}");
    let (body, status, message) = raw(&s.nats, Double::SUBJECT, Some(&bearer), r#"{"n":-1}"#).await;
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "invalid", "message": "n must not be negative", "field": "n"}})
    );
    assert_eq!(status.as_deref(), Some("400"));
    assert_eq!(message.as_deref(), Some("n must not be negative"));

    let (body, status, _) = raw(&s.nats, Double::SUBJECT, Some(&bearer), "not json").await;
    assert_eq!(body["error"]["code"], "invalid", "{body}");
    assert_eq!(body["error"]["field"], "body", "{body}");
    assert_eq!(status.as_deref(), Some("400"));
    let (body, status, _) = raw(&s.nats, Strict::SUBJECT, Some(&bearer), r#"{"m":1}"#).await;
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(status.as_deref(), Some("400"));

    let client = ServiceClient::new(s.nats.clone(), TOKEN, T);
    let err = client.call::<Double>(&Ask { n: -5 }).await.unwrap_err();
    assert!(
        matches!(err, CallError::Refused(ref d) if d.code == "invalid" && d.field.as_deref() == Some("n")),
        "{err:?}"
    );
    // Nothing serves this subject: the client says so instead of waiting.
    struct Nobody;
    impl Endpoint for Nobody {
        const SUBJECT: &'static str = "confab.test.v1.nobody";
        type Request = Ask;
        type Response = Answer;
    }
    let err = client.call::<Nobody>(&Ask { n: 1 }).await.unwrap_err();
    assert!(matches!(err, CallError::Unavailable(_)), "{err:?}");
    // In-process answers go through the same table.
    let routes = routes();
    let answer = routes.answer(Double::SUBJECT, br#"{"n":3}"#).await.unwrap();
    assert_eq!(&answer[..], br#"{"double":6}"#);
    let missing = routes.answer("confab.test.v1.nope", b"{}").await;
    assert_eq!(missing.unwrap_err().0.code, "not_found");
    s.stop.cancel();
    s.served.await.unwrap();
}

#[tokio::test]
async fn concurrency_is_bounded() {
    const LIMIT: usize = 2;
    const CALLS: usize = 6;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let routes = {
        let (running, peak, gate) = (running.clone(), peak.clone(), gate.clone());
        Routes::new().route::<Double>(move |ask: Ask| {
            let (running, peak, gate) = (running.clone(), peak.clone(), gate.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                double(ask).await
            }
        })
    };
    let s = serve(routes, LIMIT).await;
    let client = ServiceClient::new(s.nats.clone(), TOKEN, T);
    let calls: Vec<_> = (0..CALLS as i64)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<Double>(&Ask { n }).await })
        })
        .collect();
    // Wait until the server is saturated, then let the calls through one by
    // one: never more than the limit run at once.
    for _ in 0..200 {
        if running.load(Ordering::SeqCst) == LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running.load(Ordering::SeqCst), LIMIT);
    for _ in 0..CALLS {
        gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(peak.load(Ordering::SeqCst) <= LIMIT);
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap().double);
    }
    answers.sort_unstable();
    assert_eq!(answers, vec![0, 2, 4, 6, 8, 10]);
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT);
    s.stop.cancel();
    s.served.await.unwrap();
}
