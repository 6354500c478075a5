//! Host capabilities offered to modules, one module per WIT interface.
//!
//! Each implements its generated `Host` trait for [`HostState`]; which of
//! them a component can reach is decided by its world (only auth imports
//! `secrets`, only rooms import `kv` and `membership`).

mod clock;
mod config;
mod kv;
mod log;
mod membership;
mod random;
mod secrets;

use crate::bindings::types;
use crate::state::HostState;

impl types::Host for HostState {}
