//! The WIT contract this host was built with, as text: for naming the
//! version a refused component was built against, and for the copy a new
//! plugin crate carries.

/// The WIT files of the contract, as this binary was built with them.
pub const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../../wit/types.wit")),
    ("rooms.wit", include_str!("../../../../wit/rooms.wit")),
    ("auth.wit", include_str!("../../../../wit/auth.wit")),
    ("relay.wit", include_str!("../../../../wit/relay.wit")),
];
