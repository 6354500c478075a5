//! The one place `bindgen!` runs: typed host bindings for the three worlds
//! of `wit/`. Interfaces shared by several worlds are generated once (with
//! the rooms world) and reused by the others, so one host implementation of
//! `log`, `config`, `clock` and `random` serves every function.

#![allow(missing_docs)]

/// Bindings for the `rooms` world (the room actor).
pub mod rooms {
    wasmtime::component::bindgen!({
        world: "rooms",
        path: "../../../wit",
        exports: { default: async },
    });
}

/// Bindings for the `auth` world.
pub mod auth {
    wasmtime::component::bindgen!({
        world: "auth",
        path: "../../../wit",
        exports: { default: async },
        with: {
            "roomlet:signal/types": super::rooms::roomlet::signal::types,
            "roomlet:signal/log": super::rooms::roomlet::signal::log,
            "roomlet:signal/config": super::rooms::roomlet::signal::config,
            "roomlet:signal/clock": super::rooms::roomlet::signal::clock,
            "roomlet:signal/random": super::rooms::roomlet::signal::random,
        },
    });
}

/// Bindings for the `relay` world.
pub mod relay {
    wasmtime::component::bindgen!({
        world: "relay",
        path: "../../../wit",
        exports: { default: async },
        // `frame` borrows the session's strings: no copies on the host's
        // side before they are lowered into the guest, on every frame.
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "roomlet:signal/types": super::rooms::roomlet::signal::types,
            "roomlet:signal/log": super::rooms::roomlet::signal::log,
            "roomlet:signal/config": super::rooms::roomlet::signal::config,
            "roomlet:signal/clock": super::rooms::roomlet::signal::clock,
        },
    });
}

/// The auth function's exported interfaces.
pub use auth::exports::roomlet::signal::{authenticator, media};
/// The relay function's exported interface.
pub use relay::exports::roomlet::signal::relay_policy;
/// The room actor's exported interface.
pub use rooms::exports::roomlet::signal::room;
pub use rooms::roomlet::signal::types;
