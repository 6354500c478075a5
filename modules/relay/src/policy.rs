//! The relay checks as plain Rust: no host imports.

/// Config key: largest payload, in bytes of JSON text.
pub const MAX_PAYLOAD_KEY: &str = "max-payload-bytes";
/// Default for [`MAX_PAYLOAD_KEY`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 65_536;

/// Signal or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A targeted WebRTC signal (offer, answer, candidate).
    Signal,
    /// A room message.
    Message,
}

/// A refusal: machine code and human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code, e.g. `payload-too-large`.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

fn reject(code: &'static str, reason: impl Into<String>) -> Result<(), Rejection> {
    Err(Rejection {
        code,
        reason: reason.into(),
    })
}

/// Parses a `max-payload-bytes` config value; `None` unless it is a
/// non-negative integer.
pub fn parse_max_payload(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Checks one frame. `Ok` means forward it unchanged.
///
/// The payload is not parsed again: the host hands the relay only payloads
/// it parsed as part of the client's frame (a JSON value inside a JSON
/// frame, or one MessagePack value re-encoded), so they are valid JSON by
/// construction. Parsing it again here cost a ninth of the instructions
/// the server spends on a relayed signal (BENCHMARKS.md, "Instructions per
/// relayed frame"), for a refusal no client could trigger.
pub fn check(
    kind: Kind,
    sender: &str,
    to: Option<&str>,
    payload: &str,
    max_payload_bytes: u64,
) -> Result<(), Rejection> {
    let len = payload.len() as u64;
    if len > max_payload_bytes {
        return reject(
            "payload-too-large",
            format!("payload is {len} bytes (max {max_payload_bytes})"),
        );
    }
    if kind == Kind::Signal {
        match to {
            None | Some("") => {
                return reject("signal-needs-target", "a signal needs an addressee (`to`)");
            }
            Some(to) if to == sender => {
                return reject(
                    "signal-to-self",
                    "a signal cannot be sent to its own sender",
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = DEFAULT_MAX_PAYLOAD_BYTES;

    fn code(r: Result<(), Rejection>) -> Option<&'static str> {
        r.err().map(|r| r.code)
    }

    #[test]
    fn forwards_good_frames() {
        let sdp = r#"{"type":"offer","sdp":"v=0\r\n"}"#;
        assert_eq!(check(Kind::Signal, "a", Some("b"), sdp, MAX), Ok(()));
        assert_eq!(
            check(Kind::Message, "a", None, r#"{"x":[1,2]}"#, MAX),
            Ok(())
        );
        assert_eq!(check(Kind::Message, "a", Some("b"), "\"hi\"", MAX), Ok(()));
        assert_eq!(check(Kind::Message, "a", Some("a"), "null", MAX), Ok(()));
        assert_eq!(check(Kind::Message, "a", None, " 1 ", MAX), Ok(()));
    }

    #[test]
    fn payload_size_limit() {
        let at_limit = format!("\"{}\"", "x".repeat(8));
        assert_eq!(at_limit.len(), 10);
        assert_eq!(check(Kind::Message, "a", None, &at_limit, 10), Ok(()));
        let r = check(Kind::Message, "a", None, &at_limit, 9).expect_err("too large");
        assert_eq!(r.code, "payload-too-large");
        assert_eq!(r.reason, "payload is 10 bytes (max 9)");
        // Size is checked first, even for bad signals.
        let big = "{".repeat(70_000);
        assert_eq!(
            code(check(Kind::Signal, "a", None, &big, MAX)),
            Some("payload-too-large")
        );
        // Bytes, not characters.
        assert_eq!(
            code(check(Kind::Message, "a", None, "\"ééé\"", 7)),
            Some("payload-too-large")
        );
    }

    #[test]
    fn signal_needs_target() {
        assert_eq!(
            code(check(Kind::Signal, "a", None, "{}", MAX)),
            Some("signal-needs-target")
        );
        assert_eq!(
            code(check(Kind::Signal, "a", Some(""), "{}", MAX)),
            Some("signal-needs-target")
        );
    }

    #[test]
    fn signal_to_self() {
        assert_eq!(
            code(check(Kind::Signal, "a", Some("a"), "{}", MAX)),
            Some("signal-to-self")
        );
    }

    #[test]
    fn config_parsing() {
        assert_eq!(parse_max_payload("1024"), Some(1024));
        assert_eq!(parse_max_payload(" 0 "), Some(0));
        assert_eq!(parse_max_payload("-1"), None);
        assert_eq!(parse_max_payload("64k"), None);
    }
}
