//! Log files ("segments") are numbered; the highest number is the one
//! being written. Numbers, not renames (`events.log.1`…): a reader that is
//! following a file never sees it change name under it.

use std::path::{Path, PathBuf};

const PREFIX: &str = "events-";
const SUFFIX: &str = ".jsonl";

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{PREFIX}{n:010}{SUFFIX}")
}

fn number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. A missing directory has none.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(number) {
            out.push((n, entry.path()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(number(&segment_name(42)), Some(42));
        assert_eq!(number("events-.jsonl"), None);
        assert_eq!(number("events-12x.jsonl"), None);
        assert_eq!(number("other-0000000001.jsonl"), None);
    }
}
