//! A guest's stdout and stderr: where a Rust plugin's panic message lands
//! (std's default hook writes it to stderr), and where `println!` debugging
//! goes. Cut into lines, masked (auth), rate-limited per room, then written
//! to the host log and handed to the node's [`OutputSink`] (its event log).
//! Never to a client: it keeps getting `module-error` with a short reason.

use crate::function::Function;
use crate::secrets::ApiKeys;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines per second a room's component may write (stdout and stderr
/// together); a burst of as many is let through at once. What is over is
/// dropped and counted in the next line that gets through. For auth and
/// relay, which have no room, the budget is the function's.
pub const LINES_PER_SECOND: u32 = 20;

/// Longer lines are cut here (the same cut as the `log` import's).
pub const MAX_LINE: usize = 4096;

/// Rooms whose budget is full and unused are forgotten past this many.
const REMEMBERED_ROOMS: usize = 1024;

/// Which of the guest's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`: panics land here.
    Stderr,
    /// The `log` import, at warn or error (the lower levels go to the
    /// host log only, unthrottled, as the host's filter decides).
    Log,
}

impl Stream {
    /// `stdout`, `stderr` or `log`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
        }
    }

    /// The host-log level of a WASI stream's lines (the `log` import
    /// passes its own).
    fn level(self) -> tracing::Level {
        match self {
            Stream::Stdout => tracing::Level::INFO,
            Stream::Stderr | Stream::Log => tracing::Level::WARN,
        }
    }
}

/// One line of guest output, cut and masked, that the rate limit let through.
#[derive(Debug)]
pub struct GuestLine<'a> {
    /// The function of the component that wrote it.
    pub function: Function,
    /// That component's version label.
    pub version: &'a str,
    /// Its room (empty for auth and relay).
    pub room: &'a str,
    /// stdout, stderr or log.
    pub stream: Stream,
    /// The line, without its newline.
    pub text: &'a str,
    /// Lines of this room dropped by the rate limit since the last one let through.
    pub dropped_before: u64,
}

/// Where guest output lines go besides the host log (the node's event log).
pub trait OutputSink: Send + Sync {
    /// Records one line.
    fn line(&self, line: &GuestLine<'_>);
}

/// A component's output budget per room, and the sink: one per loaded
/// component, shared by all its stores, so a room whose instance traps
/// and is revived frame after frame keeps one budget.
pub struct OutputGate {
    function: Function,
    version: Arc<str>,
    /// Masked in every line (auth only).
    secrets: Option<Arc<ApiKeys>>,
    sink: Option<Arc<dyn OutputSink>>,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl std::fmt::Debug for OutputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputGate")
            .field("function", &self.function)
            .field("sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl OutputGate {
    /// The gate of `function`'s component `version`, handing lines to
    /// `sink` as well as to the host log, with `secrets` masked.
    pub fn new(
        function: Function,
        version: Arc<str>,
        secrets: Option<Arc<ApiKeys>>,
        sink: Option<Arc<dyn OutputSink>>,
    ) -> Self {
        Self {
            function,
            version,
            secrets,
            sink,
            buckets: Mutex::default(),
        }
    }

    /// `text` with every API secret the component could have read
    /// replaced: an auth component that prints what `secrets.api-secret`
    /// gave it must not put the secret in the log.
    pub(crate) fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.secrets {
            Some(keys) => keys.mask(text),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// Whether `room` may write a line now; if so, how many were dropped before it.
    fn admit(&self, room: &Arc<str>, now: Instant) -> Option<u64> {
        let rate = f64::from(LINES_PER_SECOND);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= REMEMBERED_ROOMS && !buckets.contains_key(room) {
            buckets.retain(|_, b| {
                b.dropped > 0 || b.tokens + now.duration_since(b.at).as_secs_f64() * rate < rate
            });
        }
        let b = buckets.entry(room.clone()).or_insert(Bucket {
            tokens: rate,
            at: now,
            dropped: 0,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens < 1.0 {
            b.dropped += 1;
            return None;
        }
        b.tokens -= 1.0;
        Some(std::mem::take(&mut b.dropped))
    }
}

/// One stream of one store: a [`StdoutStream`] for WASI. Its clones (one
/// per `get-stdout` call) share the partial line.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<Lines>>);

struct Lines {
    gate: Arc<OutputGate>,
    room: Arc<str>,
    stream: Stream,
    partial: Vec<u8>,
}

impl GuestOutput {
    pub(crate) fn new(gate: Arc<OutputGate>, room: Arc<str>, stream: Stream) -> Self {
        Self(Arc::new(Mutex::new(Lines {
            gate,
            room,
            stream,
            partial: Vec::new(),
        })))
    }

    fn take(&self, bytes: &[u8]) {
        let mut lines = self.0.lock();
        let Lines {
            gate,
            room,
            stream,
            partial,
        } = &mut *lines;
        split(partial, bytes, |line| {
            let line = String::from_utf8_lossy(line);
            emit(gate, room, *stream, stream.level(), &line);
        });
    }
}

/// Appends `bytes` to `partial`, calling `line` with each line it completes.
/// A line longer than [`MAX_LINE`] is cut there; the rest of it (up to its
/// newline) is dropped.
fn split(partial: &mut Vec<u8>, bytes: &[u8], mut line: impl FnMut(&[u8])) {
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let room = MAX_LINE.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..end.min(room)]);
        line(partial);
        partial.clear();
        rest = &rest[end + 1..];
    }
    let room = MAX_LINE.saturating_sub(partial.len());
    partial.extend_from_slice(&rest[..rest.len().min(room)]);
}

/// Hands one line to the host log (at `level`) and the sink, if the
/// room's budget allows.
pub(crate) fn emit(
    gate: &OutputGate,
    room: &Arc<str>,
    stream: Stream,
    level: tracing::Level,
    line: &str,
) {
    if let Some(dropped_before) = gate.admit(room, Instant::now()) {
        let text = gate.mask(line.trim_end_matches('\r'));
        let function = gate.function;
        let room = &**room;
        let name = stream.name();
        macro_rules! log_at {
                ($lvl:expr) => {
                    tracing::event!(
                        target: "roomlet::module",
                        $lvl,
                        %function, module_version = %gate.version, room, stream = name, dropped_before,
                        "{text}"
                    )
                };
            }
        match level {
            tracing::Level::ERROR => log_at!(tracing::Level::ERROR),
            tracing::Level::WARN => log_at!(tracing::Level::WARN),
            _ => log_at!(tracing::Level::INFO),
        }
        if let Some(sink) = &gate.sink {
            sink.line(&GuestLine {
                function,
                version: &gate.version,
                room,
                stream,
                text: &text,
                dropped_before,
            });
        }
    }
}

impl Drop for Lines {
    /// The last line of a store's output, written without its newline.
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial);
            emit(
                &self.gate,
                &self.room,
                self.stream,
                self.stream.level(),
                &line,
            );
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Lines are consumed as they are written: always room for more.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_room_gets_its_burst_then_its_rate() {
        let gate = OutputGate::new(Function::Rooms, "v".into(), None, None);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| gate.admit(&a, t0).is_some()).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert_eq!(
            gate.admit(&b, t0),
            Some(0),
            "another room has its own budget"
        );
        assert_eq!(gate.admit(&a, t0 + Duration::from_millis(10)), None);
        // 120 ms refill ~2.4 lines: the next is let through and says how
        // many were dropped before it.
        let later = t0 + Duration::from_millis(120);
        assert_eq!(
            gate.admit(&a, later),
            Some(100 - LINES_PER_SECOND as u64 + 1)
        );
        assert_eq!(gate.admit(&a, later), Some(0));
        assert_eq!(gate.admit(&a, later), None);
    }

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_cap() {
        let mut at = Vec::new();
        let text = format!("one\ntwo\r\n{}\nthree", "x".repeat(MAX_LINE + 10));
        let mut partial = Vec::new();
        split(&mut partial, text.as_bytes(), |l| {
            at.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(at.len(), 3);
        assert_eq!((at[0].as_str(), at[1].as_str()), ("one", "two\r"));
        assert_eq!(at[2].len(), MAX_LINE);
        assert_eq!(partial, b"three");
    }
}
