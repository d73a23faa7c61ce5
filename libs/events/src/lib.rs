//! Confab's shared vocabulary.
//!
//! * [`ids`]: identifiers and room names that are *parsed* once at the edge
//!   (never trusted raw), so that everything downstream — room registries,
//!   bus subjects — can rely on them being safe.
//! * [`membership`]: the membership domain events (versioned) and API types.
//! * [`socket`]: the typed Socket.IO events exchanged with browsers
//!   (including the membership notifications the gateway forwards), from
//!   which the checked-in TypeScript declarations are generated.
//!
//! The contracts between processes (service endpoints, their bodies and
//! errors) are in `confab-contracts`.

pub mod ids;
pub mod membership;
pub mod socket;

pub use ids::{ChannelId, DmId, IdError, RoomId, RoomKind, UserId, WorkspaceId};
