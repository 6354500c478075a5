//! A room as a restarting node leaves it (members, the module's memory,
//! its timer) and the next process on the same data directory takes it
//! back: the room's calls see no leave and no join, only a pause.

use roomlet_runtime::bindings::types::{Grants, Peer};
use serde::{Deserialize, Serialize};

/// Everything a room holds in memory, in a form that outlives the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomImage {
    /// The room's name.
    pub name: String,
    /// Members in join order, hidden ones included.
    pub members: Vec<MemberImage>,
    /// The module's memory: (state version, state); `None` when it had none.
    pub snapshot: Option<(String, Vec<u8>)>,
    /// What `on-create` asked: observe signals, observe messages.
    pub observe: (bool, bool),
    /// The room's metadata.
    pub metadata: String,
    /// Whether `on-create` ever ran (so the next instance restores).
    pub created: bool,
    /// The module's pending timer, in milliseconds from when the image was taken.
    pub timer_ms: Option<u64>,
}

/// A member as the image keeps it: the peer the module and the others know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberImage {
    /// Peer id.
    pub id: String,
    /// Identity from its token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Token metadata.
    pub metadata: String,
    /// Grants, as [`grants_bits`] packs them.
    pub grants: u8,
}

impl From<&Peer> for MemberImage {
    fn from(p: &Peer) -> Self {
        Self {
            id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            metadata: p.metadata.clone(),
            grants: grants_bits(p.grants),
        }
    }
}

impl From<MemberImage> for Peer {
    fn from(m: MemberImage) -> Self {
        Self {
            id: m.id,
            identity: m.identity,
            name: m.name,
            metadata: m.metadata,
            grants: grants_from(m.grants),
        }
    }
}

/// The grants in the order their bits are packed: append only, the
/// packed form travels between nodes and across restarts.
const GRANTS: [Grants; 7] = [
    Grants::JOIN,
    Grants::ROOM_CREATE,
    Grants::PUBLISH,
    Grants::SUBSCRIBE,
    Grants::PUBLISH_DATA,
    Grants::ROOM_ADMIN,
    Grants::HIDDEN,
];

/// Grants as one byte.
pub fn grants_bits(g: Grants) -> u8 {
    GRANTS
        .iter()
        .enumerate()
        .filter(|(_, f)| g.contains(**f))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

/// Grants from [`grants_bits`]' byte; unknown bits are ignored.
pub fn grants_from(bits: u8) -> Grants {
    GRANTS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(Grants::empty(), |acc, (_, f)| acc | *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip() {
        for bits in 0..=0x7f_u8 {
            assert_eq!(grants_bits(grants_from(bits)), bits);
        }
    }
}
