//! One input contract for both encodings. A client's `data` and `payload`
//! are delivered to every peer in the peer's own encoding, so the decoder
//! accepts only what both can carry: nesting at most [`MAX_DEPTH`] deep,
//! finite numbers, well-formed strings, string keys without repeats, and
//! nothing after the frame. What one encoding could carry and the other
//! could not (`1e400`, a lone surrogate escape, a MessagePack `ext`, NaN)
//! is refused here as `bad-frame`, not found out later by a receiver's
//! encoder (which could only answer `internal`).
//!
//! The checks are single passes over frames serde has already parsed (or
//! is about to): they find what serde lets through, nothing more.

use std::borrow::Cow;

/// How deep a frame's `data` or `payload` may nest: an array or an object
/// is one level; a scalar none. The frame's own map adds one more.
pub const MAX_DEPTH: usize = 64;

/// serde_json's marker for raw JSON text: a map whose first key it is
/// becomes, in a `serde_json::Value`, whatever JSON its string value holds,
/// parsed past this contract (any depth up to serde_json's own, repeated
/// keys). The MessagePack decoder reads `data` as such a value, so the key
/// is refused in both encodings; no client needs it. Found by the
/// `frame_json` fuzzer (a map whose keys serde_json sorts it first).
const RESERVED_KEY: &str = "$serde_json::private::RawValue";

fn not_reserved(key: &[u8]) -> Result<(), String> {
    if key == RESERVED_KEY.as_bytes() {
        return Err(format!("the key {RESERVED_KEY} is reserved"));
    }
    Ok(())
}

/// Objects with more keys than this are checked for repeats by sorting
/// once they close, not pairwise as each key arrives.
const PAIRWISE_KEYS: usize = 16;

/// Checks JSON text that serde_json has already parsed as a value: its
/// depth (at most `levels` of arrays and objects), its numbers, its `\u`
/// escapes and its keys. A frame is checked whole, fields it does not use
/// included, as MessagePack frames are: `levels` is then one more than
/// [`MAX_DEPTH`], for the frame's own object.
pub(crate) fn check_json(text: &str, levels: usize) -> Result<(), String> {
    let b = text.as_bytes();
    // Open containers: `Some(first key's index in keys)` for an object.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut keys: Vec<Cow<'_, str>> = Vec::new();
    // Whether the next string in an object is a key: after `{` or `,`.
    let mut key_next = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                if open.len() == levels {
                    return Err(format!("data nests deeper than {MAX_DEPTH} levels"));
                }
                let object = b[i] == b'{';
                open.push(object.then_some(keys.len()));
                key_next = object;
                i += 1;
            }
            b'}' | b']' => {
                if let Some(Some(first)) = open.pop() {
                    repeated_key(&mut keys[first..], true)?;
                    keys.truncate(first);
                }
                key_next = false;
                i += 1;
            }
            b',' => {
                key_next = matches!(open.last(), Some(Some(_)));
                i += 1;
            }
            b'"' => {
                let end = string_end(b, i + 1)?;
                if key_next {
                    let raw = &text[i..=end];
                    let key = if raw.contains('\\') {
                        Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)
                    } else {
                        Cow::Borrowed(&raw[1..raw.len() - 1])
                    };
                    not_reserved(key.as_bytes())?;
                    if let Some(Some(first)) = open.last() {
                        keys.push(key);
                        repeated_key(&mut keys[*first..], false)?;
                    }
                    key_next = false;
                }
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut plain = true;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    plain &= b[i].is_ascii_digit() || b[i] == b'-';
                    i += 1;
                }
                // Integers of up to 18 digits fit 64 bits; the rest become
                // doubles in MessagePack, and must be finite ones.
                if !plain || i - start > 18 {
                    let finite = text[start..i].parse::<f64>().is_ok_and(f64::is_finite);
                    if !finite {
                        return Err(format!("number {} is out of range", &text[start..i]));
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index of the closing quote of the string whose content starts at
/// `i`; refuses a `\u` escape that is half of a surrogate pair alone.
fn string_end(b: &[u8], mut i: usize) -> Result<usize, String> {
    loop {
        let Some(at) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
            return Err("unterminated string".into());
        };
        i += at;
        if b[i] == b'"' {
            return Ok(i);
        }
        // An escape: `\u` needs a look at its code unit; the rest are one
        // character.
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let unit = hex4(b, i + 2)?;
        i += 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
                    .then(|| hex4(b, i + 2))
                    .transpose()?;
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Err("a lone surrogate escape in a string".into());
                }
                i += 6;
            }
            0xDC00..=0xDFFF => return Err("a lone surrogate escape in a string".into()),
            _ => {}
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Result<u32, String> {
    b.get(i..i + 4)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| "a bad \\u escape".to_owned())
}

/// Refuses an object's repeated key: as the last key arrives (`closing`
/// false) while the object is small, once it closes (true) when large.
fn repeated_key<K: Ord>(keys: &mut [K], closing: bool) -> Result<(), String> {
    let repeat = match (closing, keys.len() > PAIRWISE_KEYS) {
        (false, false) => keys
            .split_last()
            .is_some_and(|(last, rest)| rest.contains(last)),
        (true, true) => {
            keys.sort_unstable();
            keys.windows(2).any(|w| w[0] == w[1])
        }
        _ => false,
    };
    if repeat {
        return Err("an object repeats a key".into());
    }
    Ok(())
}

/// Checks a MessagePack frame before serde reads it: one value and no
/// bytes after it, nesting at most [`MAX_DEPTH`] below the frame's own
/// map, string keys without repeats, finite floats, no `ext` values.
pub(crate) fn check_msgpack(b: &[u8]) -> Result<(), String> {
    let mut walk = Walk { b, i: 0 };
    walk.value(0)?;
    if walk.i != b.len() {
        return Err(format!("{} bytes after the frame", b.len() - walk.i));
    }
    Ok(())
}

struct Walk<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.i.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err("truncated MessagePack frame".into());
        };
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn len(&mut self, bytes: usize) -> Result<usize, String> {
        Ok(self
            .take(bytes)?
            .iter()
            .fold(0usize, |n, &d| (n << 8) | usize::from(d)))
    }

    /// Skips one value at `depth` containers down.
    fn value(&mut self, depth: usize) -> Result<(), String> {
        let m = self.take(1)?[0];
        match m {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => {}
            0xa0..=0xbf => self.skip(usize::from(m & 0x1f))?,
            0xd9 | 0xc4 => self.len(1).and_then(|n| self.skip(n))?,
            0xda | 0xc5 => self.len(2).and_then(|n| self.skip(n))?,
            0xdb | 0xc6 => self.len(4).and_then(|n| self.skip(n))?,
            0xcc | 0xd0 => self.skip(1)?,
            0xcd | 0xd1 => self.skip(2)?,
            0xce | 0xd2 => self.skip(4)?,
            0xcf | 0xd3 => self.skip(8)?,
            0xca => {
                let f = f32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default());
                finite(f64::from(f))?;
            }
            0xcb => {
                let f = f64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default());
                finite(f)?;
            }
            0x90..=0x9f => self.array(usize::from(m & 0x0f), depth)?,
            0xdc => self.len(2).and_then(|n| self.array(n, depth))?,
            0xdd => self.len(4).and_then(|n| self.array(n, depth))?,
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0xde => self.len(2).and_then(|n| self.map(n, depth))?,
            0xdf => self.len(4).and_then(|n| self.map(n, depth))?,
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err("MessagePack ext values are not accepted".into());
            }
            0xc1 => return Err("invalid MessagePack marker 0xc1".into()),
        }
        Ok(())
    }

    fn open(&self, n: usize, depth: usize) -> Result<(), String> {
        // The frame's own map is level 0; data below it has 64 levels.
        if depth > MAX_DEPTH {
            return Err(format!("data nests deeper than {MAX_DEPTH} levels"));
        }
        // Every element takes a byte at least: a count past the end is a
        // truncated frame, found before looping over it.
        if n > self.b.len() - self.i {
            return Err("truncated MessagePack frame".into());
        }
        Ok(())
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<(), String> {
        self.open(n, depth)?;
        for _ in 0..n {
            self.value(depth + 1)?;
        }
        Ok(())
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<(), String> {
        self.open(n, depth)?;
        let mut keys: Vec<&'a [u8]> = Vec::new();
        for _ in 0..n {
            keys.push(self.key()?);
            repeated_key(&mut keys, false)?;
            self.value(depth + 1)?;
        }
        repeated_key(&mut keys, true)
    }

    /// A map key: a string (JSON has no other keys).
    fn key(&mut self) -> Result<&'a [u8], String> {
        let m = self.take(1)?[0];
        let n = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return Err("map keys must be strings".into()),
        };
        let key = self.take(n)?;
        not_reserved(key)?;
        Ok(key)
    }
}

fn finite(f: f64) -> Result<(), String> {
    if f.is_finite() {
        Ok(())
    } else {
        Err("NaN and infinite numbers are not accepted".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn json_limits() {
        assert!(check_json(&nested(MAX_DEPTH), MAX_DEPTH).is_ok());
        assert!(check_json(&nested(MAX_DEPTH + 1), MAX_DEPTH).is_err());
        assert!(
            check_json(
                r#"{"a":1e308,"b":-12345678901234567890123,"c":"\ud83d\ude00"}"#,
                MAX_DEPTH
            )
            .is_ok()
        );
        assert!(check_json("1e400", MAX_DEPTH).is_err());
        assert!(check_json("[-1e400]", MAX_DEPTH).is_err());
        assert!(check_json(r#"["\ud800"]"#, MAX_DEPTH).is_err());
        assert!(check_json(r#"["\udc00x"]"#, MAX_DEPTH).is_err());
        assert!(check_json(r#"["\ud800\u0041"]"#, MAX_DEPTH).is_err());
        assert!(check_json(r#"{"a":1,"b":{"a":2},"c":[{"a":3}]}"#, MAX_DEPTH).is_ok());
        assert!(check_json(r#"{"a":1,"b":2,"a":3}"#, MAX_DEPTH).is_err());
        assert!(check_json(r#"{"a":1,"\u0061":2}"#, MAX_DEPTH).is_err());
        assert!(check_json(r#"{"a":"b","b":"a"}"#, MAX_DEPTH).is_ok());
        // Keys in strings and string values are not keys.
        assert!(check_json(r#"["a","a",{"x":"a","a":"x"}]"#, MAX_DEPTH).is_ok());
        let many: Vec<String> = (0..40).map(|k| format!("\"k{k}\":{k}")).collect();
        assert!(check_json(&format!("{{{}}}", many.join(",")), MAX_DEPTH).is_ok());
        assert!(check_json(&format!("{{{},\"k7\":0}}", many.join(",")), MAX_DEPTH).is_err());
        // serde_json's raw-value marker, plain or escaped.
        assert!(check_json(r#"{"$serde_json::private::RawValue":"[1]"}"#, MAX_DEPTH).is_err());
        assert!(
            check_json(
                r#"[{"\u0024serde_json::private::RawValue":"1"}]"#,
                MAX_DEPTH
            )
            .is_err()
        );
    }

    #[test]
    fn msgpack_limits() {
        let frame = |data: serde_json::Value| {
            rmp_serde::to_vec_named(&json!({"type": "message", "data": data})).expect("encode")
        };
        let ok = frame(serde_json::from_str(&nested(MAX_DEPTH)).expect("json"));
        assert!(check_msgpack(&ok).is_ok());
        let deep = frame(serde_json::from_str(&nested(MAX_DEPTH + 1)).expect("json"));
        assert!(check_msgpack(&deep).is_err());
        let mut trailing = ok.clone();
        trailing.push(0xc0);
        assert!(check_msgpack(&trailing).is_err());
        assert!(check_msgpack(&ok[..ok.len() - 1]).is_err());
        // NaN, ext, an integer key, a repeated key, a huge count.
        assert!(check_msgpack(&[0x91, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(check_msgpack(&[0x91, 0xd4, 1, 2]).is_err());
        assert!(check_msgpack(&[0x81, 0x01, 0xc0]).is_err());
        assert!(check_msgpack(&[0x82, 0xa1, b'a', 1, 0xa1, b'a', 2]).is_err());
        assert!(check_msgpack(&[0x82, 0xa1, b'a', 1, 0xa1, b'b', 2]).is_ok());
        assert!(check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_msgpack(&[]).is_err());
        assert!(check_msgpack(&[0xc1]).is_err());
        // serde_json's raw-value marker would smuggle JSON past the checks.
        let smuggled = frame(json!({"$serde_json::private::RawValue": nested(100)}));
        assert!(check_msgpack(&smuggled).is_err());
    }
}
