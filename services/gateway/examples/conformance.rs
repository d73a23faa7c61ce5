//! The protocol conformance server: see `confab_gateway::conformance`.
//!
//! `cargo run -p confab-gateway --example conformance` listens on port 3000
//! (or `PORT`), as the official Socket.IO v5 and Engine.IO v4 test suites
//! expect of a server under test.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("conformance server listening on {}", listener.local_addr()?);
    confab_gateway::conformance::serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
