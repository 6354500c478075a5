//! Client frame ids: what a session has taken from its client and told it
//! is handled, and which senders' ids its own client has already been
//! given.
//!
//! A client numbers its `signal` and `message` frames so that, after a
//! resume, it can send again what the server never confirmed. Two things
//! keep a re-sent frame from arriving twice. The sender's session drops an
//! id it has already taken ([`Sent::take`]): enough while the session
//! lives on, here or handed to another gateway. When the gateway holding
//! it died, the session comes back from its record without that memory,
//! so every receiving session also remembers the last ids it delivered
//! from each sender ([`Seen`]) and drops a copy. The JS client does the
//! same across its own resumes, for a receiver whose gateway died.

use roomlet_protocol::FrameId;
use roomlet_rooms::Delivery;
use std::collections::HashMap;
use std::sync::Arc;

/// The ids a session took from its client, and the last one it confirmed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    /// The highest id taken.
    pub last: FrameId,
    /// The highest id the client was told of (`confirmed`).
    pub told: FrameId,
}

impl Sent {
    /// Whether a frame with `id` is new: ids rise, so one not above the
    /// last taken is a re-send of a frame already handled (confirmed with
    /// the rest). A frame without an id is always new.
    pub fn take(&mut self, id: FrameId) -> bool {
        if id == 0 {
            return true;
        }
        if id <= self.last {
            return false;
        }
        self.last = id;
        true
    }

    /// The id to confirm, if the client has not been told of it yet.
    pub fn due(&self) -> Option<FrameId> {
        (self.last > self.told).then_some(self.last)
    }
}

/// How many ids back from the newest of a sender a copy is still caught.
/// Copies come from re-sends of what was not confirmed, so they are
/// recent; an id further back than this is taken as new, since dropping
/// a frame that was not a copy would lose it without a word.
const WINDOW: u32 = 64;

/// Senders remembered per session before the table starts afresh (a
/// busy room's churn must not grow a session without bound).
const MAX_SENDERS: usize = 1024;

/// One sender's recent ids: the newest, and which of the ones below it
/// were delivered (bit `k`: `newest - k`).
#[derive(Debug, Clone, Copy)]
struct Window {
    newest: FrameId,
    bits: u64,
}

impl Window {
    fn first_time(&mut self, id: FrameId) -> bool {
        if id > self.newest {
            let shift = id - self.newest;
            self.bits = if shift >= WINDOW {
                0
            } else {
                self.bits << shift
            } | 1;
            self.newest = id;
            return true;
        }
        let back = self.newest - id;
        if back >= WINDOW {
            return true;
        }
        let bit = 1u64 << back;
        let first = self.bits & bit == 0;
        self.bits |= bit;
        first
    }
}

/// The ids a session has delivered to its client, by sender. Nothing is
/// allocated until a frame with an id arrives: an idle session pays one
/// word.
///
/// Boxed on purpose: an empty `HashMap` is six words, in every session.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(crate) struct Seen(Option<Box<Senders>>);

/// Keyed by the server's own peer ids: a fast hash, no client picks them.
type Senders = HashMap<Arc<str>, Window, foldhash::fast::RandomState>;

impl Seen {
    /// Whether `d` is to be delivered: anything but a signal or message
    /// that carries an id already delivered from its sender.
    pub fn first_time(&mut self, d: &Delivery) -> bool {
        let (from, id) = match d {
            Delivery::Signal { from, id, .. } | Delivery::Message { from, id, .. } => (from, *id),
            _ => return true,
        };
        if id == 0 {
            return true;
        }
        let senders = self.0.get_or_insert_with(Box::default);
        if let Some(w) = senders.get_mut(from) {
            return w.first_time(id);
        }
        if senders.len() >= MAX_SENDERS {
            senders.clear();
        }
        senders.insert(
            from.clone(),
            Window {
                newest: id,
                bits: 1,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, id: FrameId) -> Delivery {
        Delivery::Message {
            from: from.into(),
            data: "1".into(),
            id,
        }
    }

    #[test]
    fn a_sent_id_is_taken_once_and_confirmed_once() {
        let mut s = Sent::default();
        assert!(s.take(0) && s.take(0), "frames without ids always pass");
        assert_eq!(s.due(), None);
        assert!(s.take(1) && s.take(3));
        assert!(!s.take(3) && !s.take(2), "not above the last: a re-send");
        assert_eq!(s.due(), Some(3));
        s.told = 3;
        assert_eq!(s.due(), None);
    }

    #[test]
    fn a_copy_within_the_window_is_dropped_and_nothing_else() {
        let mut seen = Seen::default();
        assert!(seen.first_time(&message("a", 5)));
        assert!(!seen.first_time(&message("a", 5)));
        // Another sender's ids are its own.
        assert!(seen.first_time(&message("b", 5)));
        // Out of order (two routes): each delivered once.
        assert!(seen.first_time(&message("a", 8)));
        assert!(seen.first_time(&message("a", 7)));
        assert!(!seen.first_time(&message("a", 7)));
        assert!(!seen.first_time(&message("a", 8)));
        // Without an id, or not a signal or message: always delivered.
        assert!(seen.first_time(&message("a", 0)) && seen.first_time(&message("a", 0)));
        assert!(seen.first_time(&Delivery::Moved));
        // Far ahead: the old window is gone, the new id counted.
        assert!(seen.first_time(&message("a", 8 + 200)));
        assert!(!seen.first_time(&message("a", 208)));
        // Further back than the window: taken as new, not dropped.
        assert!(seen.first_time(&message("a", 8)));
        assert!(seen.first_time(&message("a", 208 - 63)));
        assert!(!seen.first_time(&message("a", 208 - 63)));
    }

    #[test]
    fn the_sender_table_is_bounded() {
        let mut seen = Seen::default();
        for n in 0..MAX_SENDERS + 10 {
            assert!(seen.first_time(&message(&format!("p{n}"), 1)));
        }
        assert!(seen.0.as_ref().is_some_and(|m| m.len() <= MAX_SENDERS));
    }
}
