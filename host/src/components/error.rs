//! Errors of loading and calling components.

/// Why a call into a component failed. The instance that failed is
/// discarded; other instances are untouched.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its CPU deadline.
    #[error("deadline exceeded")]
    Deadline,
    /// The guest tried to grow its memory past the cap (and then trapped).
    #[error("memory cap exceeded")]
    MemoryCap,
    /// The guest trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// No instance could be created (pool exhausted, start function trapped).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

impl CallError {
    /// A short stable label, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Deadline => "deadline",
            CallError::MemoryCap => "memory-cap",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
        }
    }
}

/// Why a component could not be loaded. The previous version, if any,
/// keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid component, or it failed to compile.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// It does not fit the function's world (missing exports, unknown imports).
    #[error("component does not match the {function} world: {reason}")]
    World {
        /// The function it was loaded for.
        function: &'static str,
        /// What did not match.
        reason: String,
    },
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The first line of a wasmtime error chain: enough to say what happened
/// without dumping a backtrace into a log line or a client frame.
pub(crate) fn brief(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").chars().take(300).collect()
}
