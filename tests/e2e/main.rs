//! End-to-end tests: the gateway on real sockets, driven by the official
//! `socket.io-client` (through `tests/js/driver.mjs`) and by raw WebSocket
//! clients for protocol edge cases.

mod admin_ui;
mod all_in_one;
mod authz;
mod bounds;
mod browser;
mod client_package;
mod cluster;
mod conformance;
mod emitter;
mod fault_rig;
mod faults;
mod gateway;
mod history;
mod limits;
mod local_cluster;
mod messages;
mod no_sticky;
mod polling;
mod polling_client;
mod polling_gateway;
mod presence;
mod recovery;
mod redis_bus;
mod round_robin;
mod session_auth;
mod support;
mod trace;
mod typescript;
