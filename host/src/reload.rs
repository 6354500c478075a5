//! Component versions and hot reload.
//!
//! A new version of auth, rooms or relay is compiled and linked off the
//! serving path; only then does it replace the old one. auth and relay
//! are stateless, so new calls simply go to the new version. Live rooms
//! move through `snapshot` → `restore` between two frames, without
//! closing a socket; if any room refuses, every room goes back. A version
//! that fails to compile, link, instantiate or restore is refused with the
//! reason and the old one keeps serving. Every function keeps its history,
//! so a rollback is one call.

use roomlet_gateway::Gateway;
use roomlet_runtime::kv::KvStore;
use roomlet_runtime::secrets::ApiKeys;
use roomlet_runtime::{ComponentSource, Function, FunctionSpec, LoadError, Loader};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Versions kept per function for rollback.
const HISTORY: usize = 8;

/// A version that was deployed.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleVersion {
    /// Hash-prefix label.
    pub version: String,
    /// Where it came from (`embedded`, `file:…`, `upload`).
    pub origin: String,
    /// Unix seconds when it went live.
    pub deployed_at: u64,
    #[serde(skip)]
    source: ComponentSource,
}

/// Why a reload was refused. The old version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// It does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A live room refused to move to it.
    #[error("rooms refused the new version: {0}")]
    Rooms(String),
    /// No previous version to roll back to.
    #[error("no previous version of {0} to roll back to")]
    NoPrevious(Function),
    /// This process does not run that function.
    #[error("this node does not run {0}")]
    NotHere(Function),
}

/// Outcome counters, for metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads that went live.
    pub applied: AtomicU64,
    /// Reloads refused.
    pub refused: AtomicU64,
}

/// The node's component versions.
pub struct Modules {
    loader: Loader,
    specs: HashMap<Function, FunctionSpec>,
    api_keys: Arc<ApiKeys>,
    kv: Arc<KvStore>,
    gateway: Arc<Gateway>,
    history: parking_lot::Mutex<HashMap<Function, Vec<ModuleVersion>>>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    /// Counters.
    pub stats: ReloadStats,
    /// `roomlet_module_reloads_total`.
    reloads: roomlet_telemetry::IntCounterVec,
}

impl Modules {
    /// The registry for a started node; `initial` are the versions it started with.
    pub fn new(
        loader: Loader,
        specs: HashMap<Function, FunctionSpec>,
        api_keys: Arc<ApiKeys>,
        kv: Arc<KvStore>,
        gateway: Arc<Gateway>,
        registry: &roomlet_telemetry::Registry,
    ) -> Self {
        let now = roomlet_runtime::clock::unix_secs();
        let history = Function::ALL
            .iter()
            .map(|f| {
                let version = match *f {
                    Function::Auth => gateway.auth().version().to_owned(),
                    Function::Relay => gateway.relay().version().to_owned(),
                    Function::Rooms => gateway.rooms.function().version().to_owned(),
                };
                let source = specs
                    .get(f)
                    .map(|s| s.source.clone())
                    .unwrap_or(ComponentSource::Embedded);
                (
                    *f,
                    vec![ModuleVersion {
                        version,
                        origin: origin(&source),
                        deployed_at: now,
                        source,
                    }],
                )
            })
            .collect();
        Self {
            loader,
            specs,
            api_keys,
            kv,
            gateway,
            history: parking_lot::Mutex::new(history),
            busy: tokio::sync::Mutex::new(()),
            stats: ReloadStats::default(),
            reloads: registry.counter_vec(
                "roomlet_module_reloads_total",
                "Component reloads, by function and result.",
                &["function", "result"],
            ),
        }
    }

    /// Every function's versions, newest last.
    pub fn list(&self) -> HashMap<Function, Vec<ModuleVersion>> {
        self.history.lock().clone()
    }

    /// Deploys `source` as the new version of `function`.
    pub async fn deploy(
        &self,
        function: Function,
        source: ComponentSource,
    ) -> Result<ModuleVersion, ReloadError> {
        let _one = self.busy.lock().await;
        let r = self.apply(function, source).await;
        self.count(function, &r);
        let v = r?;
        let mut h = self.history.lock();
        let list = h.entry(function).or_default();
        list.push(v.clone());
        if list.len() > HISTORY {
            list.remove(0);
        }
        Ok(v)
    }

    /// Goes back to the version before the current one.
    pub async fn rollback(&self, function: Function) -> Result<ModuleVersion, ReloadError> {
        let _one = self.busy.lock().await;
        let previous = {
            let h = self.history.lock();
            let list = h.get(&function).map(Vec::as_slice).unwrap_or_default();
            if list.len() < 2 {
                return Err(ReloadError::NoPrevious(function));
            }
            list[list.len() - 2].clone()
        };
        let r = self.apply(function, previous.source.clone()).await;
        self.count(function, &r);
        let v = r?;
        let mut h = self.history.lock();
        if let Some(list) = h.get_mut(&function) {
            list.pop();
            if let Some(last) = list.last_mut() {
                last.deployed_at = v.deployed_at;
            }
        }
        Ok(v)
    }

    fn count(&self, function: Function, r: &Result<ModuleVersion, ReloadError>) {
        match r {
            Ok(v) => {
                self.reloads
                    .with_label_values(&[function.name(), "applied"])
                    .inc();
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%function, module_version = %v.version, origin = %v.origin, "module reloaded");
            }
            Err(e) => {
                self.reloads
                    .with_label_values(&[function.name(), "refused"])
                    .inc();
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%function, error = %e, "module reload refused; the old version keeps serving");
            }
        }
    }

    async fn apply(
        &self,
        function: Function,
        source: ComponentSource,
    ) -> Result<ModuleVersion, ReloadError> {
        let mut spec = self.specs.get(&function).cloned().unwrap_or_default();
        spec.source = source.clone();
        let loader = self.loader.clone();
        let keys = self.api_keys.clone();
        let kv = self.kv.clone();
        // Compiling takes from milliseconds to seconds: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || -> Result<Loaded, LoadError> {
            Ok(match function {
                Function::Auth => Loaded::Auth(Arc::new(loader.auth(&spec, keys)?)),
                Function::Relay => Loaded::Relay(Arc::new(loader.relay(&spec)?)),
                Function::Rooms => Loaded::Rooms(Arc::new(loader.rooms(&spec, kv)?)),
            })
        })
        .await
        .map_err(|e| LoadError::Compile(format!("compile task failed: {e}")))??;
        let version = match loaded {
            Loaded::Auth(f) => {
                let v = f.version().to_owned();
                f.warm_up()
                    .await
                    .map_err(|e| LoadError::Compile(format!("does not instantiate: {e}")))?;
                self.gateway.set_auth(f);
                v
            }
            Loaded::Relay(f) => {
                let v = f.version().to_owned();
                f.warm_up()
                    .await
                    .map_err(|e| LoadError::Compile(format!("does not instantiate: {e}")))?;
                self.gateway.set_relay(f);
                v
            }
            Loaded::Rooms(f) => {
                let v = f.version().to_owned();
                self.gateway
                    .rooms
                    .upgrade_all(f)
                    .await
                    .map_err(ReloadError::Rooms)?;
                v
            }
        };
        Ok(ModuleVersion {
            version,
            origin: origin(&source),
            deployed_at: roomlet_runtime::clock::unix_secs(),
            source,
        })
    }

    /// `--dev`: reloads a function whose component file changes on disk.
    pub fn watch_files(self: &Arc<Self>) {
        let watched: Vec<(Function, PathBuf)> = self
            .specs
            .iter()
            .filter_map(|(f, s)| match &s.source {
                ComponentSource::File(p) => Some((*f, p.clone())),
                _ => None,
            })
            .collect();
        if watched.is_empty() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let stamp = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen: Vec<_> = watched.iter().map(|(_, p)| stamp(p)).collect();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(modules) = this.upgrade() else {
                    return;
                };
                for (i, (function, path)) in watched.iter().enumerate() {
                    let now = stamp(path);
                    if now.is_some() && now != seen[i] {
                        seen[i] = now;
                        tracing::info!(%function, path = %path.display(), "component file changed; reloading");
                        let _ = modules
                            .deploy(*function, ComponentSource::File(path.clone()))
                            .await;
                    }
                }
            }
        });
    }
}

enum Loaded {
    Auth(Arc<roomlet_runtime::AuthFunction>),
    Relay(Arc<roomlet_runtime::RelayFunction>),
    Rooms(Arc<roomlet_runtime::RoomsFunction>),
}

fn origin(source: &ComponentSource) -> String {
    match source {
        ComponentSource::Embedded => "embedded".into(),
        ComponentSource::File(p) => format!("file:{}", p.display()),
        ComponentSource::Bytes(_) => "upload".into(),
    }
}
