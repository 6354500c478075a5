//! roomlet: an edge-deployable WebRTC signaling runtime.
//!
//! The host terminates client WebSockets and runs the signaling functions —
//! auth, rooms and relay — as WebAssembly components defined in `wit/`.
//! A frame's path: socket → [`gateway`] session → relay policy
//! ([`components`]) → room actor ([`rooms`]) → peer sessions.

pub mod admin;
pub mod bus;
pub mod clock;
pub mod components;
pub mod config;
pub mod events;
pub mod gateway;
pub mod imports;
pub mod kv;
pub mod metrics;
pub mod reload;
pub mod rooms;
pub mod scaffold;
pub mod secrets;
pub mod server;
pub mod tokens;
pub mod turn;
pub mod webhooks;
