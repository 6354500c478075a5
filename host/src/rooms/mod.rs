//! Rooms as actors: one task and one component instance per live room.
//!
//! The host owns membership; the module owns custom state. Every call into
//! a room goes through its mailbox, so the module sees one call at a time.
//! Signals do not: they go peer to peer through [`RoomShared`], unless the
//! module asked to observe them.

mod actor;
mod delivery;
mod inbox;
mod registry;

pub use actor::Command;
pub use delivery::{Delivery, LeaveReason};
pub use inbox::{Gone, Inbox, Outbox, outbox};
pub use registry::{JoinError, Joined, RoomHandle, RoomShared, RoomStatus, Rooms, RoomsConfig};
