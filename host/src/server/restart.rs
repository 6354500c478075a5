//! The file an all-in-one node leaves in its data directory when it stops
//! on SIGTERM, and takes back when it starts: its rooms and sessions
//! ([`NodeImage`]), so a `docker restart` or a rolling update is a pause to
//! the calls, not a new session (docs/protocol.md, "Restarts").
//!
//! Versioned: a node that cannot read the file (another format, torn)
//! says so, removes it and starts clean; its clients' resumes then fail
//! with `resume-failed` and they join afresh, as before this file existed.

use super::ServerError;
use super::journal::Journal;
use crate::config::Config;
use roomlet_gateway::{Gateway, NodeImage};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The format this node writes and reads.
const FORMAT: u32 = 1;

/// The file's name in the data directory.
const FILE: &str = "restart.msgpack";

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    /// When it was written (Unix milliseconds), for the log.
    written_at_ms: u64,
    image: NodeImage,
}

/// Where the file lives under `data_dir`.
fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes `image` (to a temporary file, synced, then renamed over).
pub(super) fn save(data_dir: &Path, image: NodeImage) -> std::io::Result<()> {
    let on_disk = OnDisk {
        format: FORMAT,
        written_at_ms: roomlet_runtime::clock::unix_millis(),
        image,
    };
    let bytes = rmp_serde::to_vec_named(&on_disk).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(data_dir))
}

/// Takes the file (it is removed: a node restores from it once). `None`
/// when there is none or it cannot be read, which is logged.
pub(super) fn take(data_dir: &Path) -> Option<NodeImage> {
    let file = path(data_dir);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the last run's rooms and sessions; starting clean");
            return None;
        }
    };
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(file = %file.display(), error = %e, "cannot remove the restart file");
    }
    #[derive(Deserialize)]
    struct Header {
        format: u32,
    }
    match rmp_serde::from_slice::<Header>(&bytes) {
        Ok(h) if h.format == FORMAT => {}
        Ok(h) => {
            tracing::warn!(file = %file.display(), format = h.format, expected = FORMAT, "the last run's rooms and sessions are in a format this version cannot read; starting clean");
            return None;
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "the last run's rooms and sessions cannot be read; starting clean");
            return None;
        }
    }
    match rmp_serde::from_slice::<OnDisk>(&bytes) {
        Ok(d) => {
            let age = roomlet_runtime::clock::unix_millis().saturating_sub(d.written_at_ms);
            tracing::info!(
                rooms = d.image.rooms.len(),
                sessions = d.image.sessions.len(),
                age_ms = age,
                "restoring the last run's rooms and sessions"
            );
            Some(d.image)
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "the last run's rooms and sessions cannot be read; starting clean");
            None
        }
    }
}

/// A node that is its whole deployment takes back what the last process on
/// its data directory left: the rooms and sessions it wrote on SIGTERM, or
/// (killed outright) the sessions in its journal, which resume with `gap`.
/// From here on every joined session is recorded in the journal.
pub(super) fn carry_on(
    gateway: &Arc<Gateway>,
    data_dir: &std::path::Path,
    config: &Config,
) -> Result<Arc<Journal>, ServerError> {
    let (journal, records) = super::journal::open(data_dir).map_err(|e| ServerError::Io {
        what: "opening the session journal".into(),
        source: std::io::Error::other(e),
    })?;
    let image = take(data_dir).or_else(|| {
        (!records.is_empty()).then(|| {
            tracing::warn!(
                sessions = records.len(),
                "the last run ended without writing its rooms (killed?): its sessions come back with gap: true, their rooms' modules as recovered"
            );
            roomlet_gateway::NodeImage::from_journal(records)
        })
    });
    let mut kept = Vec::new();
    if let Some(image) = image {
        let grace = Duration::from_millis(config.limits.resume_grace_ms);
        let (rooms, keys) = gateway.restore(image, grace);
        tracing::info!(
            rooms,
            sessions = keys.len(),
            "the last run's rooms and sessions are back; clients have the resume grace to come back"
        );
        kept = keys;
    }
    journal.retain(kept);
    let journal = Arc::new(journal);
    gateway.set_journal(journal.clone());
    Ok(journal)
}
