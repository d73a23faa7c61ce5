//! Confab's shared vocabulary.
//!
//! * [`ids`]: identifiers and room names that are *parsed* once at the edge
//!   (never trusted raw), so that everything downstream — room registries,
//!   bus subjects — can rely on them being safe.
//! * [`membership`]: the membership domain events (versioned) and API types.
//! * [`presence`]: the presence wire contract (gateway heartbeats, queries).
//! * [`socket`]: the typed Socket.IO events exchanged with browsers, from
//!   which the checked-in TypeScript declarations are generated.

pub mod ids;
pub mod membership;
pub mod presence;
pub mod socket;

pub use ids::{ChannelId, DmId, IdError, RoomId, RoomKind, UserId, WorkspaceId};
