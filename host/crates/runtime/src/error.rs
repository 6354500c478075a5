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

/// The WIT package this host implements. Every world's imports and exports
/// are named under it (`roomlet:signal/room@…`), so a component built
/// against another version of the contract names another version.
pub const CONTRACT: &str = "roomlet:signal@0.2.1";

impl LoadError {
    /// `component` does not link against `function`'s world. When it was
    /// built against another version of the contract, that is the reason
    /// given: wasmtime would name only the first interface that failed to
    /// match, which says nothing of what to do about it.
    pub(crate) fn world(
        function: &'static str,
        engine: &wasmtime::Engine,
        component: &wasmtime::component::Component,
        e: &wasmtime::Error,
    ) -> Self {
        let reason = match (contract_of(engine, component), world_of(engine, component)) {
            (Some(theirs), _) if !compatible(&theirs, CONTRACT) => format!(
                "built against {theirs}, this host implements {CONTRACT}: \
                 rebuild it against this host's wit/ (`roomlet new plugin` writes a copy)"
            ),
            (_, Some(theirs)) if theirs != function => format!(
                "this is a {theirs} component: load it as {theirs} \
                 (`--module {theirs}=PATH`, `[modules.{theirs}] path`, or PUT /v1/admin/modules/{theirs}) ({})",
                full(e)
            ),
            _ => full(e),
        };
        LoadError::World { function, reason }
    }

    /// `bytes` did not compile: `e`, in full, with what to do about it when
    /// the bytes say what they are.
    pub(crate) fn compile(bytes: &[u8], e: &wasmtime::Error) -> Self {
        let hint = match bytes {
            [0x00, b'a', b's', b'm', 1, 0, 0, 0, ..] => Some(
                "this is a core WebAssembly module, not a component: build the plugin \
                 with `--target wasm32-wasip2` (wasm32-wasip1 and wasm32-unknown-unknown \
                 give core modules)",
            ),
            [0x00, b'a', b's', b'm', ..] => None,
            _ => Some(
                "this is not a WebAssembly file: pass the `.wasm` that \
                 `cargo build --target wasm32-wasip2 --release` writes under \
                 target/wasm32-wasip2/release/",
            ),
        };
        let text = full(e);
        LoadError::Compile(match hint {
            Some(hint) => format!("{hint} ({text})"),
            None => text,
        })
    }
}

/// The function whose world `component` exports (`rooms`, `auth` or
/// `relay`), if it exports one of them.
fn world_of(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<&'static str> {
    let ty = component.component_type();
    let mut exports = ty.exports(engine).map(|(name, _)| name);
    exports.find_map(|name| {
        let (_, interface) = name.split_once('/')?;
        match interface.split('@').next()? {
            "room" => Some("rooms"),
            "authenticator" => Some("auth"),
            "relay-policy" => Some("relay"),
            _ => None,
        }
    })
}

/// Whether contracts `a` and `b` link, as wasmtime matches versions: in
/// 0.x, the same minor version (`@0.2.0` and `@0.2.1`), later releases
/// having only added to it.
fn compatible(a: &str, b: &str) -> bool {
    fn series(v: &str) -> &str {
        match v.rsplit_once('.') {
            Some((head, _)) if head.contains("@0.") => head,
            _ => v.split('.').next().unwrap_or(v),
        }
    }
    series(a) == series(b)
}

/// The `roomlet:signal@VERSION` a component's imports or exports name, if
/// any does.
fn contract_of(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<String> {
    let ty = component.component_type();
    let mut names = ty
        .imports(engine)
        .chain(ty.exports(engine))
        .map(|(name, _)| name);
    names.find_map(|name| {
        let (package, rest) = name.split_once('/')?;
        let (_, version) = rest.split_once('@')?;
        (package == "roomlet:signal").then(|| format!("{package}@{version}"))
    })
}

/// The first line of a wasmtime error chain: enough to say what happened
/// without dumping a backtrace into a log line or a client frame.
pub(crate) fn brief(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// A wasmtime error chain in full, on one line and without a backtrace:
/// for an operator or a plugin's author, who must see all of it (a parser's
/// message can run over several lines, and its first ends mid-sentence).
pub(crate) fn full(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    let text: Vec<&str> = s
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    text.join(" ").chars().take(4000).collect()
}

#[cfg(test)]
mod tests {
    use super::CONTRACT;

    /// The constant names the package the WIT files (and so the bindings
    /// and the embedded components) were built from.
    #[test]
    fn contract_is_the_wit_package() {
        for (file, text) in crate::contract::WIT_FILES {
            let first = text.lines().next().unwrap_or_default();
            assert_eq!(first, format!("package {CONTRACT};"), "{file}");
        }
    }
}
