//! [`Function`]: which of the three signaling functions a component is.

/// Which signaling function a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Token verification.
    Auth,
    /// Room actors.
    Rooms,
    /// Per-frame policy.
    Relay,
}

impl Function {
    /// All three, in start-up order.
    pub const ALL: [Function; 3] = [Function::Auth, Function::Rooms, Function::Relay];

    /// The name used in config, flags and logs.
    pub fn name(self) -> &'static str {
        match self {
            Function::Auth => "auth",
            Function::Rooms => "rooms",
            Function::Relay => "relay",
        }
    }
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Function {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auth" => Ok(Function::Auth),
            "rooms" => Ok(Function::Rooms),
            "relay" => Ok(Function::Relay),
            other => Err(format!(
                "unknown function {other:?} (expected auth, rooms or relay)"
            )),
        }
    }
}
