//! sea-orm entities for the tables created by `confab-migrations`.
//!
//! The schema itself lives in the `migrations/` crate; these entities only
//! mirror it. Ids are stored as text, enums as their snake_case names.

pub mod bus_log;
pub mod bus_log_messages;
pub mod channel_members;
pub mod channels;
pub mod dm_participants;
pub mod dms;
pub mod events;
pub mod messages;
pub mod projection_checkpoints;
pub mod workspace_members;
pub mod workspaces;
