//! roomlet's default **rooms** component: the room policy actor.
//!
//! One instance serves one room and the host serialises calls into it, so
//! the in-memory state is a plain `static`. Behaviour:
//!
//! - joins beyond `max-participants` (config, default 50) are refused with
//!   `room-full`;
//! - room messages go to every other peer, peer messages to their addressee
//!   (`unknown-peer` when it is not in the room);
//! - when the last peer leaves a timer of `empty-timeout-ms` (config,
//!   default 30000) starts, and the room closes with `empty-timeout` if it
//!   is still empty when the timer fires;
//! - a join counter is kept in memory (carried by `snapshot`/`restore`,
//!   format `roomlet-rooms/1`) and in kv under `stats/joins` (u64 LE).
//!
//! The policy lives in [`policy`] as plain Rust over the [`policy::Host`]
//! trait so it is tested natively; a private module binds it to the WIT
//! world `rooms`. The module never traps on purpose: anything unexpected
//! becomes a rejection or a log line.

pub mod policy;

mod component;
