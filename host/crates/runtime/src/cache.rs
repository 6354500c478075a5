//! Loading components through a cache of precompiled artifacts.
//!
//! Compiling a component takes tens of milliseconds (seconds for a Python
//! one); loading a precompiled artifact takes well under one. Artifacts are
//! keyed by the component's SHA-256 and the engine's compatibility hash
//! (settings, wasmtime version, CPU features), so an artifact is only ever
//! loaded by an engine that could have produced it; one the engine refuses
//! anyway is recompiled and replaced.

use super::error::LoadError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// SHA-256 of the component bytes, hex.
pub fn component_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn artifact_path(engine: &Engine, dir: &Path, hash: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{}-{:016x}.cwasm", &hash[..32], h.finish()))
}

/// Compiles `bytes`, or loads the artifact cached under `cache_dir`.
pub fn load(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component, LoadError> {
    let Some(dir) = cache_dir else {
        return compile(engine, bytes);
    };
    let path = artifact_path(engine, dir, &component_hash(bytes));
    if path.exists() {
        match deserialize(engine, &path) {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                artifact = %path.display(),
                error = %super::error::brief(&e),
                "precompiled artifact refused; recompiling"
            ),
        }
    }
    // A large component (a Python one is ~18 MB) compiles for seconds:
    // say so, rather than be silent.
    let started = std::time::Instant::now();
    tracing::info!(
        bytes = bytes.len(),
        "compiling a component (cached for the next start)"
    );
    let component = compile(engine, bytes)?;
    tracing::info!(
        bytes = bytes.len(),
        seconds = started.elapsed().as_secs_f64(),
        "component compiled"
    );
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(artifact = %path.display(), error = %e, "cannot cache precompiled artifact");
    }
    Ok(component)
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::compile(bytes, &e))
}

fn store(component: &Component, dir: &Path, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(super::error::brief(&e)))?;
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact this
    // version of wasmtime produced. The cache directory is ours (the data
    // directory), we only ever write complete artifacts into it (write then
    // rename), and the file name carries the engine's compatibility hash;
    // wasmtime additionally checks the header and refuses incompatible
    // artifacts. Anyone able to write there could already replace the
    // binary's components, so this adds no new trust.
    unsafe { Component::deserialize_file(engine, path) }
}
