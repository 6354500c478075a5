//! The queue between a room and one peer's session: many senders (the room,
//! other peers' signals, the bus), one receiver (the session).
//!
//! Not tokio's unbounded channel: that sets aside a cache-padded channel and
//! a first block of 32 slots, about 1.8 KiB, for every connection for as
//! long as it lives, busy or idle. Here a mutex guards a `VecDeque` that
//! hands its buffer back whenever it drains, so an idle peer's queue is
//! one small allocation. The lock is held only to push or pop; a room and
//! a session rarely meet on it.

use super::delivery::Delivery;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A fresh queue without a byte cap: its sending and receiving ends.
pub fn outbox() -> (Outbox, Inbox) {
    outbox_capped(usize::MAX)
}

/// A fresh queue holding at most `cap` bytes of deliveries (as
/// [`weight`] counts them): past it, deliveries are dropped and the
/// receiver sees [`Inbox::overflowed`]. A session's queue grows only when
/// its client stops reading, or while its socket is gone; the cap is what
/// keeps that from growing without end.
pub fn outbox_capped(cap: usize) -> (Outbox, Inbox) {
    let queue = Arc::new(Mutex::new(Queue {
        items: VecDeque::new(),
        waker: None,
        senders: 1,
        receiving: true,
        bytes: 0,
        cap,
        overflowed: false,
    }));
    (Outbox(queue.clone()), Inbox(queue))
}

/// What a delivery counts toward its queue's cap: its text, plus the
/// queue slot and the strings around it.
fn weight(d: &Delivery) -> usize {
    64 + match d {
        Delivery::Message { data, .. } => data.len(),
        Delivery::Signal { payload, .. } => payload.len(),
        Delivery::Error { message, .. } => message.len(),
        Delivery::Rejected { message, .. } => message.len(),
        Delivery::Metadata(m) => m.len(),
        _ => 0,
    }
}

struct Queue {
    items: VecDeque<Delivery>,
    /// The receiver waiting for the next item.
    waker: Option<Waker>,
    /// Live [`Outbox`] clones: at 0 the receiver sees the end.
    senders: usize,
    /// Whether the [`Inbox`] still exists: once it is gone, sends fail.
    receiving: bool,
    /// What `items` weigh, and the most they may.
    bytes: usize,
    cap: usize,
    /// A delivery was dropped for the cap since the receiver last asked.
    overflowed: bool,
}

impl Queue {
    fn pop(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front();
        if let Some(d) = &d {
            self.bytes -= weight(d);
        }
        if self.items.is_empty() && self.items.capacity() > 0 {
            // Drained: give the buffer back, so an idle peer holds none.
            self.items = VecDeque::new();
        }
        d
    }
}

/// Where a peer's deliveries go: its gateway session.
pub struct Outbox(Arc<Mutex<Queue>>);

/// The receiver has gone; the delivery comes back.
#[derive(Debug)]
pub struct Gone(pub Delivery);

impl Outbox {
    /// Queues `d` and wakes the receiver; fails when the receiver is gone.
    /// Over the queue's cap `d` is dropped, and the receiver told so.
    pub fn send(&self, d: Delivery) -> Result<(), Gone> {
        let w = weight(&d);
        let (waker, dropped) = {
            let mut q = self.0.lock();
            if !q.receiving {
                return Err(Gone(d));
            }
            let dropped = if q.bytes.saturating_add(w) > q.cap {
                q.overflowed = true;
                Some(d)
            } else {
                q.bytes += w;
                q.items.push_back(d);
                None
            };
            (q.waker.take(), dropped)
        };
        // Outside the lock, as in `Inbox`'s drop.
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waker = {
            let mut q = self.0.lock();
            q.senders -= 1;
            if q.senders == 0 { q.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// A peer's receiving end.
pub struct Inbox(Arc<Mutex<Queue>>);

impl Inbox {
    /// The next delivery; `None` once every [`Outbox`] is gone and the
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<Delivery> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Inbox::recv`] as a poll.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut q = self.0.lock();
        if let Some(d) = q.pop() {
            return Poll::Ready(Some(d));
        }
        if q.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.0.lock().pop()
    }

    /// Whether a delivery was dropped for the cap (and not yet taken).
    pub fn overflowed(&self) -> bool {
        self.0.lock().overflowed
    }

    /// [`Inbox::overflowed`], clearing it.
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.0.lock().overflowed)
    }

    /// Resolves once a delivery is dropped for the cap: for a session
    /// waiting on a socket its client does not read.
    pub fn overflow(&self) -> impl Future<Output = ()> + use<> {
        let queue = self.0.clone();
        poll_fn(move |cx| {
            let mut q = queue.lock();
            if q.overflowed {
                return Poll::Ready(());
            }
            // The session's own task: the same waker `recv` leaves.
            match &mut q.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let (items, waker) = {
            let mut q = self.0.lock();
            q.receiving = false;
            (std::mem::take(&mut q.items), q.waker.take())
        };
        // Dropped outside the lock: a delivery may hold the last reference
        // to something large.
        drop((items, waker));
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn message(n: usize) -> Delivery {
        Delivery::Message {
            from: "p".into(),
            data: Arc::from(n.to_string()),
            id: 0,
        }
    }

    fn data(d: Option<Delivery>) -> Option<String> {
        match d {
            Some(Delivery::Message { data, .. }) => Some(data.to_string()),
            Some(other) => panic!("unexpected {other:?}"),
            None => None,
        }
    }

    #[tokio::test]
    async fn past_its_cap_a_queue_drops_and_says_so() {
        let (tx, mut rx) = outbox_capped(3 * (64 + 4));
        for n in 1000..1005 {
            tx.send(message(n)).unwrap();
        }
        assert!(rx.overflowed());
        let overflow = rx.overflow();
        overflow.await;
        let got: Vec<_> = std::iter::from_fn(|| data(rx.try_recv())).collect();
        assert_eq!(got, ["1000", "1001", "1002"]);
        assert!(rx.take_overflow());
        assert!(!rx.overflowed());
        // Drained, it takes deliveries again.
        tx.send(message(1005)).unwrap();
        assert_eq!(data(rx.try_recv()).as_deref(), Some("1005"));
    }

    #[tokio::test]
    async fn deliveries_arrive_in_order_and_the_end_follows_the_last_sender() {
        let (tx, mut rx) = outbox();
        let tx2 = tx.clone();
        for n in 0..100 {
            tx.send(message(n)).unwrap();
        }
        drop(tx);
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(d) = rx.recv().await {
                got.push(data(Some(d)).unwrap());
            }
            got
        });
        tx2.send(message(100)).unwrap();
        drop(tx2);
        let got = waiter.await.unwrap();
        let want: Vec<String> = (0..=100).map(|n| n.to_string()).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = outbox();
        let waiter = tokio::spawn(async move { data(rx.recv().await) });
        tokio::task::yield_now().await;
        tokio::spawn(async move { tx.send(message(7)).unwrap() })
            .await
            .unwrap();
        assert_eq!(waiter.await.unwrap().as_deref(), Some("7"));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone_and_a_drained_queue_holds_no_buffer() {
        let (tx, mut rx) = outbox();
        tx.send(message(1)).unwrap();
        tx.send(message(2)).unwrap();
        assert_eq!(data(rx.try_recv()).as_deref(), Some("1"));
        assert_eq!(data(rx.try_recv()).as_deref(), Some("2"));
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.0.lock().items.capacity(), 0);
        drop(rx);
        assert!(matches!(tx.send(message(3)), Err(Gone(_))));
    }
}
