//! The session journal of a node that is its whole deployment: one redb
//! file (`<data-dir>/sessions.redb`) holding a record per joined session,
//! written before its client is told `joined` and removed when it ends for
//! good. A writer thread commits whatever is queued in one transaction (one
//! fsync for a burst of joins, as the event log does).

use roomlet_gateway::journal::{SessionJournal, SessionRecord};
use roomlet_gateway::topology::BoxFuture;
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

type Key = [u8; 32];

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("sessions");

/// The file's name in the data directory.
const FILE: &str = "sessions.redb";

enum Op {
    Put(Key, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Delete(Key),
    /// Keep these keys only.
    Retain(Vec<Key>),
    /// Release the file (the node stops; another may open the directory).
    Close,
}

/// A handle on the writer thread.
pub(super) struct Journal {
    tx: mpsc::Sender<Op>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Opens the journal in `data_dir`: the handle, and every record the last
/// process left (keys with their records).
pub(super) fn open(data_dir: &Path) -> Result<(Journal, Vec<(Key, SessionRecord)>), String> {
    let path = data_dir.join(FILE);
    let db = redb::Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut records = Vec::new();
    {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(TABLE).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        use redb::{ReadableDatabase, ReadableTable};
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(TABLE).map_err(|e| e.to_string())?;
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            let Ok(key) = Key::try_from(k.value()) else {
                continue;
            };
            match rmp_serde::from_slice::<SessionRecord>(v.value()) {
                Ok(r) => records.push((key, r)),
                Err(e) => tracing::warn!(error = %e, "unreadable session record skipped"),
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("session-journal".into())
        .spawn(move || write_loop(db, rx))
        .map_err(|e| e.to_string())?;
    let journal = Journal {
        tx,
        writer: parking_lot::Mutex::new(Some(writer)),
    };
    Ok((journal, records))
}

impl Journal {
    /// Removes every record but `keys`' (what the last run left and this
    /// one did not take back).
    pub(super) fn retain(&self, keys: Vec<Key>) {
        let _ = self.tx.send(Op::Retain(keys));
    }

    /// Commits what is queued and releases the file before it returns
    /// (a node started next on the same directory opens it at once).
    pub(super) fn close(&self) {
        let _ = self.tx.send(Op::Close);
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(db: redb::Database, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        let close = ops.iter().any(|op| matches!(op, Op::Close));
        let result = commit(&db, &ops);
        for op in ops {
            if let Op::Put(_, _, done) = op {
                let _ = done.send(result.clone());
            }
        }
        if close {
            return; // the file is released with `db`
        }
    }
}

fn commit(db: &redb::Database, ops: &[Op]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        use redb::ReadableTable;
        let mut table = txn.open_table(TABLE).map_err(|e| e.to_string())?;
        for op in ops.iter() {
            match op {
                Op::Put(key, bytes, _) => {
                    table
                        .insert(&key[..], &bytes[..])
                        .map_err(|e| e.to_string())?;
                }
                Op::Delete(key) => {
                    table.remove(&key[..]).map_err(|e| e.to_string())?;
                }
                Op::Close => {}
                Op::Retain(keep) => {
                    let stale: Vec<Vec<u8>> = table
                        .iter()
                        .map_err(|e| e.to_string())?
                        .filter_map(Result::ok)
                        .map(|(k, _)| k.value().to_vec())
                        .filter(|k| !keep.iter().any(|x| &x[..] == k.as_slice()))
                        .collect();
                    for k in stale {
                        table.remove(&k[..]).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

impl SessionJournal for Journal {
    fn joined(&self, key: Key, record: SessionRecord) -> BoxFuture<'_, Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let sent = rmp_serde::to_vec_named(&record)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.tx
                    .send(Op::Put(key, bytes, done))
                    .map_err(|_| "the session journal has stopped".to_owned())
            });
        Box::pin(async move {
            sent?;
            rx.await
                .unwrap_or_else(|_| Err("the session journal has stopped".into()))
        })
    }

    fn ended(&self, key: Key) {
        let _ = self.tx.send(Op::Delete(key));
    }
}
