//! `random`: bytes from the OS-seeded CSPRNG, capped per call.

use crate::bindings::rooms::roomlet::signal::random::Host;
use crate::state::HostState;
use rand::RngCore;

/// A module asking for more gets this many: enough for keys and ids.
const MAX_BYTES: u32 = 4096;

impl Host for HostState {
    fn bytes(&mut self, len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; len.min(MAX_BYTES) as usize];
        rand::rng().fill_bytes(&mut buf);
        buf
    }
}
