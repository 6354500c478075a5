//! roomlet: an edge-deployable WebRTC signaling runtime.
//!
//! The host terminates client WebSockets and runs the signaling functions —
//! auth, rooms and relay — as WebAssembly components defined in `wit/`.
//! This crate is the node: it wires the capability crates below into one
//! server ([`server::start`]) behind an HTTP front, and holds what only a
//! whole node has (configuration, the admin API, hot reload, webhooks).
//! A frame's path: socket → [`gateway`] session → relay policy
//! ([`runtime`]) → room actor ([`rooms`]) → peer sessions; with NATS,
//! [`bus`] stands between a session and a room homed elsewhere.
//! ARCHITECTURE.md draws the crate graph.

pub use roomlet_bus as bus;
pub use roomlet_events as events;
pub use roomlet_gateway as gateway;
pub use roomlet_protocol as protocol;
pub use roomlet_rooms as rooms;
pub use roomlet_runtime as runtime;
pub use roomlet_telemetry as telemetry;

pub mod admin;
pub mod config;
pub mod reload;
pub mod scaffold;
pub mod server;
pub mod tokens;
pub mod webhooks;
