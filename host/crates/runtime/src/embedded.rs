//! The default components, built by `build.rs` and embedded in the binary,
//! so one binary with no side files is a working server.

use super::state::Function;

static AUTH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/auth.wasm"));
static ROOMS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rooms.wasm"));
static RELAY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/relay.wasm"));

/// The embedded default component of `function`.
pub fn bytes(function: Function) -> &'static [u8] {
    match function {
        Function::Auth => AUTH,
        Function::Rooms => ROOMS,
        Function::Relay => RELAY,
    }
}
