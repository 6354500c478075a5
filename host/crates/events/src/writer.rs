//! The group-commit writer: one thread owns the current segment.

use super::segments::{segment_name, segments};
use super::{Event, EventLogError, EventsConfig, Listener, Msg};
use crate::metrics::EventsMetrics;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most events written under one sync; bounds the batch's memory.
const MAX_BATCH: usize = 8192;

pub(super) struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    number: u64,
    file: File,
    /// Bytes in `file` known to be whole lines.
    len: u64,
}

fn io_err(dir: &Path, what: &str, e: &std::io::Error) -> EventLogError {
    EventLogError::Io {
        dir: dir.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Makes a new directory entry durable (the file's data is synced apart).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Writer {
    /// Continues the newest segment, or starts the first one.
    pub(super) fn open(dir: &Path, config: &EventsConfig) -> Result<Self, EventLogError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "creating the directory", &e))?;
        let existing = segments(dir).map_err(|e| io_err(dir, "listing segments", &e))?;
        let number = existing.last().map(|(n, _)| *n).unwrap_or(1);
        let path = dir.join(segment_name(number));
        let mut file = open_append(&path).map_err(|e| io_err(dir, "opening the segment", &e))?;
        let mut len = file
            .metadata()
            .map_err(|e| io_err(dir, "reading the segment", &e))?
            .len();
        // A crash (power loss) can leave a torn last line: start the next
        // line on a line of its own; readers skip what does not parse.
        if len > 0 && !ends_with_newline(&path)? {
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err(dir, "repairing the last line", &e))?;
            len += 1;
        }
        if existing.is_empty() {
            sync_dir(dir).map_err(|e| io_err(dir, "syncing the directory", &e))?;
        }
        let w = Self {
            dir: dir.to_owned(),
            max_bytes: config.max_file_bytes,
            keep: config.keep_files,
            number,
            file,
            len,
        };
        w.prune();
        Ok(w)
    }

    /// Until every sink is gone: take what is queued, write it, sync once,
    /// answer the waiters, tell the listener.
    pub(super) fn run(
        mut self,
        rx: Receiver<Msg>,
        mut listener: Option<Listener>,
        metrics: EventsMetrics,
    ) {
        let mut events: Vec<Event> = Vec::new();
        let mut waiters: Vec<oneshot::Sender<Result<(), EventLogError>>> = Vec::new();
        let mut barriers: Vec<oneshot::Sender<()>> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(e, w) => {
                        events.push(*e);
                        waiters.extend(w);
                    }
                    Msg::Barrier(b) => barriers.push(b),
                }
                if events.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let started = Instant::now();
            let result = self.write(&events);
            metrics
                .sync_seconds
                .observe(started.elapsed().as_secs_f64());
            match &result {
                Ok(()) => {
                    metrics.written.inc_by(events.len() as u64);
                    if let Some(l) = listener.as_mut() {
                        for e in &events {
                            l(e);
                        }
                    }
                }
                Err(e) => {
                    metrics.errors.with_label_values(&["io"]).inc();
                    tracing::error!(error = %e, events = events.len(), "event log write failed");
                }
            }
            for w in waiters.drain(..) {
                let _ = w.send(result.clone());
            }
            for b in barriers.drain(..) {
                let _ = b.send(());
            }
            events.clear();
        }
    }

    /// Appends `events`, rotating where a segment would pass its limit;
    /// every segment touched is synced before this returns.
    fn write(&mut self, events: &[Event]) -> Result<(), EventLogError> {
        let mut buf = Vec::with_capacity(events.len() * 200);
        for e in events {
            let mut line = match serde_json::to_vec(e) {
                Ok(l) => l,
                Err(err) => {
                    tracing::error!(error = %err, "event not serialisable; skipped");
                    continue;
                }
            };
            line.push(b'\n');
            let pending = self.len + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_bytes {
                self.append(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(&line);
        }
        if !buf.is_empty() {
            self.append(&buf)?;
        }
        Ok(())
    }

    /// Writes and syncs; on failure cuts the segment back to its last
    /// whole line so the next batch does not follow a torn one.
    fn append(&mut self, buf: &[u8]) -> Result<(), EventLogError> {
        if buf.is_empty() {
            return Ok(());
        }
        match self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(io_err(&self.dir, "appending", &e))
            }
        }
    }

    fn rotate(&mut self) -> Result<(), EventLogError> {
        let number = self.number + 1;
        let path = self.dir.join(segment_name(number));
        let file = open_append(&path).map_err(|e| io_err(&self.dir, "starting a segment", &e))?;
        sync_dir(&self.dir).map_err(|e| io_err(&self.dir, "syncing the directory", &e))?;
        self.file = file;
        self.number = number;
        self.len = 0;
        self.prune();
        Ok(())
    }

    /// Deletes segments beyond `keep` (never the current one).
    fn prune(&self) {
        let Ok(all) = segments(&self.dir) else { return };
        let excess = all.len().saturating_sub(self.keep);
        for (n, path) in all.into_iter().take(excess) {
            if n == self.number {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "cannot delete an old event log segment");
            }
        }
    }
}

fn ends_with_newline(path: &Path) -> Result<bool, EventLogError> {
    let dir = path.parent().unwrap_or(path);
    let mut f = File::open(path).map_err(|e| io_err(dir, "reading the segment", &e))?;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| io_err(dir, "reading the segment", &e))?;
    Ok(last[0] == b'\n')
}
