//! The node-wide budget for bytes of client frames not yet complete.
//!
//! tungstenite holds a frame (or a fragmented message) until its last byte
//! arrives. One connection may hold at most the frame cap; a thousand
//! connections each announcing a 64 KiB frame and sending it a byte at a
//! time could together hold a thousand times that, in memory the node has
//! for everyone. [`Budgeted`] wraps a socket, follows the frame boundaries
//! in what it reads, and counts the bytes of the message in progress
//! against one [`ReadBudget`]; a read that would pass the budget fails,
//! and the session closes with `node-full` and 1013.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes every connection of a node may hold in frames not yet
/// complete.
#[derive(Debug)]
pub struct ReadBudget {
    held: AtomicUsize,
    limit: usize,
}

impl ReadBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            self.held.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What [`Budgeted`]'s read fails with when the budget is spent.
pub(crate) fn is_spent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::OutOfMemory
}

/// A client socket whose unfinished frames count against a [`ReadBudget`].
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<ReadBudget>,
    frames: Boundaries,
    /// Bytes of this connection counted in the budget now.
    held: usize,
}

impl<S> Budgeted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, budget: Arc<ReadBudget>) -> Self {
        Self {
            inner,
            budget,
            frames: Boundaries::default(),
            held: 0,
        }
    }
}

impl<S> Drop for Budgeted<S> {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !this.budget.take(read.len()) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "the node's budget for unfinished frames is spent",
                )));
            }
            this.held += read.len();
            let done = this.frames.feed(read).min(this.held);
            this.held -= done;
            this.budget.give(done);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Follows WebSocket frame boundaries in a client's byte stream (RFC 6455
/// §5.2), just enough to know which bytes belong to a message still in
/// progress. It does not judge frames: tungstenite does.
#[derive(Debug, Default)]
struct Boundaries {
    /// The current frame's header bytes read so far (at most 14).
    header: [u8; 14],
    header_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame's size so far, header included.
    frame: usize,
    /// Bytes of the data message in progress, in frames already complete.
    message: usize,
    /// The current frame: a control frame, the last of its message.
    control: bool,
    fin: bool,
}

impl Boundaries {
    /// Follows `bytes`; returns how many bytes of those now held (this
    /// read's or earlier ones) belong to messages and control frames that
    /// are now complete.
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut done = 0;
        while !bytes.is_empty() {
            if self.in_header() {
                let want = self.header_size().unwrap_or(2) - usize::from(self.header_len);
                let take = want.min(bytes.len());
                let at = usize::from(self.header_len);
                self.header[at..at + take].copy_from_slice(&bytes[..take]);
                self.header_len += take as u8;
                self.frame += take;
                bytes = &bytes[take..];
                if self.header_size() == Some(usize::from(self.header_len)) {
                    self.start_frame();
                    if self.payload_left == 0 {
                        done += self.end_frame();
                    }
                }
            } else {
                let take = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= take;
                self.frame += take as usize;
                bytes = &bytes[take as usize..];
                if self.payload_left == 0 {
                    done += self.end_frame();
                }
            }
        }
        done
    }

    fn in_header(&self) -> bool {
        self.payload_left == 0
    }

    /// The whole header's size, once its first two bytes are in.
    fn header_size(&self) -> Option<usize> {
        if self.header_len < 2 {
            return None;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let len = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Some(2 + len + mask)
    }

    fn start_frame(&mut self) {
        let h = &self.header;
        self.fin = h[0] & 0x80 != 0;
        self.control = h[0] & 0x08 != 0;
        self.payload_left = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
    }

    /// A frame ended: the bytes it frees.
    fn end_frame(&mut self) -> usize {
        let frame = std::mem::take(&mut self.frame);
        self.header_len = 0;
        if self.control {
            frame
        } else if self.fin {
            std::mem::take(&mut self.message) + frame
        } else {
            self.message += frame;
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn counts_what_is_unfinished_and_frees_what_completes() {
        let mut b = Boundaries::default();
        let whole = frame(true, 1, 300);
        assert_eq!(b.feed(&whole), whole.len());
        // A fragmented message with a ping inside, a byte at a time.
        let first = frame(false, 1, 70_000);
        let ping = frame(true, 9, 5);
        let last = frame(true, 0, 10);
        let mut freed = 0;
        for (part, frees) in [
            (&first, 0),
            (&ping, ping.len()),
            (&last, first.len() + last.len()),
        ] {
            let mut got = 0;
            for byte in part.iter() {
                got += b.feed(std::slice::from_ref(byte));
            }
            assert_eq!(got, frees);
            freed += got;
        }
        assert_eq!(freed, first.len() + ping.len() + last.len());
        // An empty frame is complete with its header.
        assert_eq!(b.feed(&frame(true, 1, 0)), 6);
    }

    #[test]
    fn a_budget_refuses_past_its_limit_and_takes_again_once_freed() {
        let budget = ReadBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41));
        assert_eq!(budget.held(), 60);
        budget.give(60);
        assert!(budget.take(100));
    }
}
