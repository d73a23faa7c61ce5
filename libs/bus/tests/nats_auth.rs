//! Connecting to a real nats-server that requires credentials (user and
//! password, a token) or TLS with client certificates: the bus connects
//! with what `NatsConfig` names, is refused without it, and never shows a
//! secret in its errors or `Debug` output.

use std::path::Path;
use std::process::Command;

use confab_bus::{Bus, BusMessage, NatsBus, NatsConfig};
use confab_events::RoomId;
use confab_test_support::NatsServer;
use serde_json::json;

const PASSWORD: &str = "pw-3b1f0c9e8d7a6b5c4d3e2f10";
const TOKEN: &str = "tok-9a8b7c6d5e4f3a2b1c0d9e8f";

/// Connects with `cfg` and stores one event: the connection works.
async fn works(cfg: NatsConfig) {
    let bus = NatsBus::connect(cfg).await.expect("connect");
    let room = RoomId::parse("channel:auth").unwrap();
    let published = bus
        .publish(&room, BusMessage::new("app:ping", &json!({"n": 1})))
        .await
        .expect("publish");
    assert!(published.seq.is_some());
}

/// Connecting with `cfg` fails; answers the error's text.
async fn refused(cfg: NatsConfig) -> String {
    let err = NatsBus::connect(cfg)
        .await
        .expect_err("the connection must be refused");
    err.to_string()
}

fn lowercase_has(text: &str, word: &str) -> bool {
    text.to_lowercase().contains(word)
}

#[tokio::test]
async fn connects_with_user_and_password_only() {
    let server = NatsServer::start_with_args(&["--user", "confab-gw", "--pass", PASSWORD]);
    let err = refused(NatsConfig::new(server.url())).await;
    assert!(lowercase_has(&err, "authorization"), "{err}");

    let wrong = NatsConfig {
        user: Some("confab-gw".into()),
        password: Some("pw-not-the-password-0000".into()),
        ..NatsConfig::new(server.url())
    };
    let err = refused(wrong).await;
    assert!(lowercase_has(&err, "authorization"), "{err}");
    assert!(
        !err.contains("pw-not"),
        "the password is never shown: {err}"
    );

    let right = NatsConfig {
        user: Some("confab-gw".into()),
        password: Some(PASSWORD.into()),
        ..NatsConfig::new(server.url())
    };
    assert!(!format!("{right:?}").contains(PASSWORD));
    works(right).await;
}

#[tokio::test]
async fn connects_with_a_token_only() {
    let server = NatsServer::start_with_args(&["--auth", TOKEN]);
    let err = refused(NatsConfig::new(server.url())).await;
    assert!(lowercase_has(&err, "authorization"), "{err}");
    let wrong = NatsConfig {
        token: Some("tok-wrong-wrong-wrong-wrong".into()),
        ..NatsConfig::new(server.url())
    };
    let err = refused(wrong).await;
    assert!(!err.contains("tok-wrong"), "{err}");

    let right = NatsConfig {
        token: Some(TOKEN.into()),
        ..NatsConfig::new(server.url())
    };
    assert!(!format!("{right:?}").contains(TOKEN));
    works(right).await;
}

#[tokio::test]
async fn connects_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let file = |name: &str| pki.dir.join(name).into_os_string();
    let server = NatsServer::start_with_args(&[
        "--tlscert".into(),
        file("server.pem"),
        "--tlskey".into(),
        file("server.key"),
        "--tlscacert".into(),
        file("ca.pem"),
        "--tlsverify".into(),
    ] as &[std::ffi::OsString]);
    let tls = |ca: bool, client: bool| NatsConfig {
        tls_ca_file: ca.then(|| pki.dir.join("ca.pem")),
        tls_cert_file: client.then(|| pki.dir.join("client.pem")),
        tls_key_file: client.then(|| pki.dir.join("client.key")),
        ..NatsConfig::new(server.url())
    };
    // Not TLS at all, the server's CA unknown, no client certificate:
    // refused.
    refused(NatsConfig::new(server.url())).await;
    refused(tls(false, true)).await;
    refused(tls(true, false)).await;
    works(tls(true, true)).await;

    // A missing file is named.
    let missing = NatsConfig {
        tls_ca_file: Some(pki.dir.join("nope.pem")),
        ..NatsConfig::new(server.url())
    };
    let err = refused(missing).await;
    assert!(
        err.contains("tls_ca_file") && err.contains("nope.pem"),
        "{err}"
    );
}

/// A throwaway CA with a server certificate for 127.0.0.1 and a client
/// certificate, made by the `openssl` command.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Pki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command is needed for the TLS test");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=confab-test-ca",
                ][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            openssl(
                &[
                    &["req", "-nodes", "-subj", "/CN=localhost"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extfile,
            ]);
        }
        Pki {
            dir: dir.to_owned(),
        }
    }
}

/// Credentials written in the URL work, and never reach the logs, even at
/// debug level (the client logs the server address it dials).
#[tokio::test]
async fn url_credentials_never_reach_the_logs() {
    let server = NatsServer::start_with_args(&["--user", "confab-gw", "--pass", PASSWORD]);
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let url = format!("nats://confab-gw:{PASSWORD}@127.0.0.1:{}", server.port());
    works(NatsConfig::new(url.clone())).await;
    let err = refused(NatsConfig::new(
        url.replace(PASSWORD, "pw-wrong-wrong-wrong"),
    ))
    .await;
    assert!(!err.contains("pw-wrong"), "{err}");
    let text = logs.text();
    assert!(text.contains("127.0.0.1"), "logs were captured: {text}");
    assert!(
        !text.contains(PASSWORD),
        "the password is in the logs:\n{text}"
    );
    assert!(
        !text.contains("pw-wrong"),
        "the password is in the logs:\n{text}"
    );
}

/// Log lines written by a test's subscriber.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}
