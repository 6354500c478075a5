//! roomlet's WebAssembly runtime: loading and calling the signaling
//! functions' components, and the host capabilities they import.
//!
//! One [`wasmtime::Engine`] per process ([`engine`]); components compiled
//! once and cached as precompiled artifacts ([`cache`]); `InstancePre`
//! built once per component; every call under a memory cap and a CPU
//! deadline ([`limits`]). auth and relay run from warm pools; rooms get
//! one instance per live room (driven by the rooms crate).

mod auth;
pub mod bindings;
pub mod cache;
pub mod clock;
pub mod contract;
pub mod embedded;
pub mod engine;
pub mod error;
mod function;
mod imports;
pub mod kv;
pub mod limits;
mod metrics;
#[cfg(feature = "native-modules")]
mod native;
pub mod output;
mod pool;
mod relay;
mod rooms;
pub mod secrets;
pub mod state;
pub mod stateless;

pub use auth::AuthFunction;
pub use error::{CallError, LoadError};
pub use limits::Limits;
pub use metrics::RuntimeMetrics;
pub use relay::RelayFunction;
pub use rooms::{RoomInstance, RoomsFunction};
pub use state::{Function, ModuleEnv};

use std::path::PathBuf;

/// Where a component's bytes come from.
#[derive(Debug, Clone)]
pub enum ComponentSource {
    /// The default component built into the binary.
    Embedded,
    /// A `.wasm` file.
    File(PathBuf),
    /// Bytes in memory (an upload, a test).
    Bytes(Vec<u8>),
}

impl ComponentSource {
    /// The component's bytes.
    pub fn read(&self, function: Function) -> Result<std::borrow::Cow<'static, [u8]>, LoadError> {
        match self {
            ComponentSource::Embedded => Ok(embedded::bytes(function).into()),
            ComponentSource::File(p) => {
                std::fs::read(p)
                    .map(Into::into)
                    .map_err(|source| LoadError::Read {
                        path: p.display().to_string(),
                        source,
                    })
            }
            ComponentSource::Bytes(b) => Ok(b.clone().into()),
        }
    }
}

/// A short version label for a component: the first 12 hex digits of its SHA-256.
pub fn version_label(bytes: &[u8]) -> String {
    cache::component_hash(bytes)[..12].to_owned()
}

/// How to load one function's component.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Where its bytes come from.
    pub source: ComponentSource,
    /// Its `config` table.
    pub config: std::collections::HashMap<String, String>,
    /// Its per-call limits.
    pub limits: Limits,
}

impl Default for FunctionSpec {
    fn default() -> Self {
        Self {
            source: ComponentSource::Embedded,
            config: Default::default(),
            limits: Limits::default(),
        }
    }
}

/// Compiles (or loads from the artifact cache) and links components.
#[derive(Clone)]
pub struct Loader {
    engine: wasmtime::Engine,
    cache_dir: Option<PathBuf>,
    metrics: std::sync::Arc<RuntimeMetrics>,
    output: Option<std::sync::Arc<dyn output::OutputSink>>,
}

impl Loader {
    /// A loader on `engine`, caching artifacts under `cache_dir`.
    pub fn new(engine: wasmtime::Engine, cache_dir: Option<PathBuf>) -> Self {
        Self {
            engine,
            cache_dir,
            metrics: Default::default(),
            output: None,
        }
    }

    /// Counts what the components it loads do in `metrics` (by default,
    /// nowhere anyone reads).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<RuntimeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Hands the components' stdout and stderr lines to `sink` as well as
    /// to the host log.
    pub fn with_output(mut self, sink: std::sync::Arc<dyn output::OutputSink>) -> Self {
        self.output = Some(sink);
        self
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    fn prepare(
        &self,
        function: Function,
        spec: &FunctionSpec,
        secrets: Option<std::sync::Arc<crate::secrets::ApiKeys>>,
    ) -> Result<(wasmtime::component::Component, std::sync::Arc<ModuleEnv>), LoadError> {
        let bytes = spec.source.read(function)?;
        let component = cache::load(&self.engine, &bytes, self.cache_dir.as_deref())?;
        let version: std::sync::Arc<str> = version_label(&bytes).into();
        let output = std::sync::Arc::new(output::OutputGate::new(
            function,
            version.clone(),
            secrets.clone(),
            self.output.clone(),
        ));
        let env = ModuleEnv {
            function,
            calls: self.metrics.calls_of(function.name(), &version),
            version,
            config: spec.config.clone(),
            secrets,
            metrics: self.metrics.clone(),
            output,
        };
        Ok((component, std::sync::Arc::new(env)))
    }

    /// Loads an auth component, which may read `keys` through `secrets`.
    pub fn auth(
        &self,
        spec: &FunctionSpec,
        keys: std::sync::Arc<crate::secrets::ApiKeys>,
    ) -> Result<AuthFunction, LoadError> {
        let (c, env) = self.prepare(Function::Auth, spec, Some(keys))?;
        AuthFunction::new(&self.engine, &c, env, spec.limits)
    }

    /// Loads a relay component.
    pub fn relay(&self, spec: &FunctionSpec) -> Result<RelayFunction, LoadError> {
        let (c, env) = self.prepare(Function::Relay, spec, None)?;
        RelayFunction::new(&self.engine, &c, env, spec.limits)
    }

    /// Loads a rooms component whose rooms keep their kv in `kv`.
    pub fn rooms(
        &self,
        spec: &FunctionSpec,
        kv: std::sync::Arc<crate::kv::KvStore>,
    ) -> Result<RoomsFunction, LoadError> {
        let (c, env) = self.prepare(Function::Rooms, spec, None)?;
        RoomsFunction::new(&self.engine, &c, env, spec.limits, kv)
    }
}
