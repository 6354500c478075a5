//! Rooms as actors: one task and one component instance per live room.
//!
//! The host owns membership; the module owns custom state. Every call into
//! a room goes through its mailbox, so the module sees one call at a time.
//! Signals do not: they go peer to peer through [`RoomShared`], unless the
//! module asked to observe them.

mod actor;
mod config;
mod delivery;
mod handle;
mod image;
mod inbox;
mod members;
mod metrics;
mod registry;
mod table;

pub use config::{RoomsConfig, RoomsSection};
pub use delivery::{Delivery, LeaveReason};
pub use handle::{JoinError, Joined, RoomHandle, RoomStatus};
pub use image::{MemberImage, RoomImage, grants_bits, grants_from};
pub use inbox::{Gone, Inbox, Outbox, outbox, outbox_capped};
pub use members::RoomShared;
pub use metrics::RoomsMetrics;
pub use registry::Rooms;
