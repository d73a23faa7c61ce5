//! The Confab membership service.
//!
//! The authority on workspaces, channels, DMs and who belongs where.
//! Commands are validated against the aggregate's state (folded from its
//! events) and appended to the event log with optimistic concurrency;
//! SQL projections answer queries; a notifier turns membership events into
//! room events for the gateways.

pub mod api;
pub mod api_http;
pub mod api_nats;
pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod emitter;
pub mod health;
pub mod history;
pub mod jetstream_store;
pub mod notifier;
pub mod presence;
pub mod read_model;
pub mod service;
pub mod sql;
pub mod store;
