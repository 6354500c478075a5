//! roomlet's default **relay** component: per-frame policy at the edge.
//!
//! Runs on every `signal` and `message` frame, so it does only cheap checks,
//! in this order:
//!
//! 1. the payload is at most `max-payload-bytes` (config, default 65536)
//!    bytes, else `payload-too-large`;
//! 2. a signal names a non-empty addressee, else `signal-needs-target`;
//! 3. a signal is not addressed to its own sender, else `signal-to-self`.
//!
//! Everything else is forwarded unchanged. The checks live in [`policy`] as
//! plain Rust and are tested natively; a private module binds them to the
//! WIT world `relay`.

pub mod policy;

mod component;
