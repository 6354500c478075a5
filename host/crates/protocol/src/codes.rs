//! The stable codes a client reads: `error` frames' `code`, and the
//! WebSocket close codes. Each is decided here, once, as an enum; the
//! tables in docs/protocol.md are checked against these lists by this
//! crate's tests, so the two cannot drift.

use std::fmt;

macro_rules! codes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident: $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every code, in the order docs/protocol.md lists them.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// The code as a client sees it.
            pub const fn value(self) -> $repr {
                match self {
                    $($name::$variant => $value,)*
                }
            }
        }
    };
}

codes! {
    /// Why the server refused something: the `code` of an `error` frame.
    /// A module may refuse with codes of its own as well (a room's
    /// `one-to-one-full`, the relay policy's `payload-too-large`); those
    /// travel as text ([`ErrorText`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ErrorCode: &'static str {
        /// Undecodable frame, wrong frame encoding, missing field.
        BadFrame = "bad-frame",
        /// A `type` the server does not know.
        UnknownType = "unknown-type",
        /// A frame over the configured size.
        FrameTooLarge = "frame-too-large",
        /// Over the frames-per-second limit.
        RateLimited = "rate-limited",
        /// The client took too little of what was sent to it: its
        /// session's queue passed its byte cap.
        TooSlow = "too-slow",
        /// A room frame before `join` or `resume`.
        NotJoined = "not-joined",
        /// A second `join` or `resume`.
        AlreadyJoined = "already-joined",
        /// `to` names no peer in the room.
        UnknownPeer = "unknown-peer",
        /// A grant is missing.
        Forbidden = "forbidden",
        /// The room's participant limit is reached.
        RoomFull = "room-full",
        /// The node's room or connection limit is reached.
        NodeFull = "node-full",
        /// The room was closed.
        RoomClosed = "room-closed",
        /// The token is not a well-formed JWT.
        TokenMalformed = "token-malformed",
        /// The token's signature does not verify.
        TokenBadSignature = "token-bad-signature",
        /// The token is not signed with HS256.
        TokenBadAlgorithm = "token-bad-algorithm",
        /// The token's API key is not configured.
        TokenUnknownKey = "token-unknown-key",
        /// The token has expired.
        TokenExpired = "token-expired",
        /// The token is not valid yet.
        TokenNotYetValid = "token-not-yet-valid",
        /// The token is for another room.
        TokenWrongRoom = "token-wrong-room",
        /// The token lacks a grant the request needs.
        TokenMissingGrant = "token-missing-grant",
        /// The session cannot be resumed.
        ResumeFailed = "resume-failed",
        /// A `refresh` token for another identity than the session's.
        RefreshRefused = "refresh-refused",
        /// The room does not exist and the token may not create it.
        RoomNotFound = "room-not-found",
        /// The node is draining.
        Draining = "draining",
        /// No `join` or `resume` in time.
        JoinTimeout = "join-timeout",
        /// An `ack` ahead of the frames sent.
        BadSeq = "bad-seq",
        /// A `stats` figure out of range.
        StatsInvalid = "stats-invalid",
        /// The room's module failed on this frame.
        ModuleError = "module-error",
        /// A bug on the server's side.
        Internal = "internal",
        /// Try again shortly.
        Unavailable = "unavailable",
        /// No media-plane credentials for this session: none configured,
        /// or the auth function issued none.
        MediaUnavailable = "media-unavailable",
    }
}

codes! {
    /// How the server closes a WebSocket (RFC 6455 codes and roomlet's
    /// own, 4000–4999).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum CloseCode: u16 {
        /// Normal closure (after `leave`).
        Normal = 1000,
        /// The client broke the WebSocket protocol (RFC 6455 §7.4.1).
        ProtocolError = 1002,
        /// A text frame that is not UTF-8.
        InvalidData = 1007,
        /// A frame too large.
        TooLarge = 1009,
        /// The server failed.
        InternalError = 1011,
        /// The server is restarting (all-in-one SIGTERM): resume on the
        /// same URL once it is back; the session is kept on disk.
        ServiceRestart = 1012,
        /// The node is full or cannot serve now: try again later.
        TryLater = 1013,
        /// Authentication failed.
        Auth = 4001,
        /// Protocol violation (too many bad frames in a row).
        Protocol = 4002,
        /// Rate limited.
        RateLimited = 4003,
        /// Kicked.
        Kicked = 4004,
        /// Idle timeout, or no `join` in time.
        Idle = 4005,
        /// The node is draining: follow the `reconnect` frame.
        Draining = 4006,
        /// Resume failed.
        ResumeFailed = 4007,
        /// The room closed, or does not exist.
        RoomClosed = 4008,
        /// The room refused the join.
        RoomRefused = 4009,
        /// The session was resumed on another connection.
        ResumedElsewhere = 4010,
        /// The client read too slowly: its queue passed its byte cap.
        TooSlow = 4011,
    }
}

impl ErrorCode {
    /// The code as text.
    pub const fn as_str(self) -> &'static str {
        self.value()
    }

    /// The code spelled `text`, if the host defines it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// An `error` frame's code as sent: one of the host's, or a module's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorText {
    /// A host code.
    Host(ErrorCode),
    /// A code a module chose.
    Module(Box<str>),
}

impl ErrorText {
    /// The text a client reads.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorText::Host(c) => c.as_str(),
            ErrorText::Module(c) => c,
        }
    }

    /// `text` as a host code when it is one, else as a module's.
    pub fn parse(text: &str) -> Self {
        match ErrorCode::parse(text) {
            Some(c) => ErrorText::Host(c),
            None => ErrorText::Module(text.into()),
        }
    }
}

impl fmt::Display for ErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for ErrorText {
    fn from(c: ErrorCode) -> Self {
        ErrorText::Host(c)
    }
}

impl serde::Serialize for ErrorText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// docs/protocol.md, read from the repository.
    fn protocol_md() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../docs/protocol.md");
        std::fs::read_to_string(path).expect("docs/protocol.md")
    }

    /// The first column of the table under `heading`, each backticked or
    /// bare word of it.
    fn first_column(doc: &str, heading: &str) -> Vec<String> {
        let section = doc
            .split(&format!("\n## {heading}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/protocol.md has no section {heading:?}"));
        let section = section.split("\n## ").next().unwrap_or_default();
        section
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .skip(1) // the header row
            .filter_map(|l| l.split('|').nth(1))
            .flat_map(|cell| cell.split(','))
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn the_error_code_table_lists_exactly_the_host_codes() {
        let documented: BTreeSet<String> = first_column(&protocol_md(), "Error codes")
            .into_iter()
            .collect();
        let defined: BTreeSet<String> = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        assert_eq!(
            documented, defined,
            "docs/protocol.md's error codes and ErrorCode differ"
        );
    }

    #[test]
    fn the_close_code_table_lists_exactly_the_close_codes() {
        let documented: Vec<String> = first_column(&protocol_md(), "Close codes");
        let defined: Vec<String> = CloseCode::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            documented, defined,
            "docs/protocol.md's close codes and CloseCode differ (order too)"
        );
    }

    #[test]
    fn text_codes_parse_back() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorText::parse(c.as_str()), ErrorText::Host(*c));
        }
        assert_eq!(
            ErrorText::parse("one-to-one-full"),
            ErrorText::Module("one-to-one-full".into())
        );
    }
}
