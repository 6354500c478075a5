//! Reading the log back: the last N events, then (optionally) following
//! new ones across rotations, as `roomlet events tail` does.

use super::segments::{segment_name, segments};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Splits `bytes` into whole lines that parse as JSON objects; returns
/// them and how many bytes they (and any skipped lines) span. A trailing
/// line without its newline is still being written: it is left for later.
fn whole_lines(bytes: &[u8]) -> (Vec<String>, usize) {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else {
        return (Vec::new(), 0);
    };
    let lines = bytes[..end]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        // A line torn by a power loss is not an event.
        .filter(|l| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(l).is_ok())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    (lines, end)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// The last `n` events in `dir` (all of them for `None`), oldest first,
/// as the JSON lines stored, and where to follow on from.
pub fn read_last(dir: &Path, n: Option<usize>) -> std::io::Result<(Vec<String>, Tail)> {
    let all = segments(dir)?;
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut have = 0;
    let mut tail = Tail {
        dir: dir.to_owned(),
        number: all.last().map(|(n, _)| *n).unwrap_or(1),
        offset: 0,
    };
    for (i, (number, path)) in all.iter().enumerate().rev() {
        // The newest segment is always read: following starts at its end.
        if i + 1 != all.len() && n.is_some_and(|n| have >= n) {
            break;
        }
        let Some(bytes) = read_from(path, 0)? else {
            continue; // pruned meanwhile
        };
        let (lines, used) = whole_lines(&bytes);
        if i + 1 == all.len() {
            tail.number = *number;
            tail.offset = used as u64;
        }
        have += lines.len();
        out.push(lines);
    }
    let mut lines: Vec<String> = out.into_iter().rev().flatten().collect();
    if let Some(n) = n {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok((lines, tail))
}

/// A position in the log that can be followed.
#[derive(Debug, Clone)]
pub struct Tail {
    dir: PathBuf,
    number: u64,
    offset: u64,
}

/// Follows the log from its end.
pub fn tail(dir: &Path) -> std::io::Result<Tail> {
    read_last(dir, Some(0)).map(|(_, t)| t)
}

impl Tail {
    /// Events appended since the last call (empty when none yet).
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut out = self.read_current()?;
        if !out.is_empty() {
            return Ok(out);
        }
        // Nothing new here: has the writer moved on (or pruned this one)?
        let next = segments(&self.dir)?
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| *n > self.number);
        if let Some(next) = next {
            // The writer finishes a segment before starting the next:
            // whatever reached it meanwhile is read before moving on.
            out = self.read_current()?;
            self.number = next;
            self.offset = 0;
            out.extend(self.read_current()?);
        }
        Ok(out)
    }

    fn read_current(&mut self) -> std::io::Result<Vec<String>> {
        let path = self.dir.join(segment_name(self.number));
        let Some(bytes) = read_from(&path, self.offset)? else {
            return Ok(Vec::new());
        };
        let (lines, used) = whole_lines(&bytes);
        self.offset += used as u64;
        Ok(lines)
    }
}
