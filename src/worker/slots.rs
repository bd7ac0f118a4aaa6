//! Handler slots (`concurrency` of them) and the line of deliveries waiting for one. A delivery takes its place in
//! line when it is dispatched, so prefetched jobs start in the order they were read, and stalled jobs taken back
//! from other workers go to the front: they have waited a lease already. A slot freed goes straight to the first
//! in line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The handler slots of one worker.
#[derive(Debug)]
pub(super) struct Slots {
    inner: Mutex<Line>,
}

#[derive(Debug)]
struct Line {
    free: usize,
    waiting: VecDeque<oneshot::Sender<Slot>>,
}

/// One handler slot, held while a handler runs; dropping it hands it to the first in line.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
}

/// A place in line: resolves to a [`Slot`]. Dropping it gives up the place (and a slot already handed to it
/// goes on to the next in line).
pub(super) enum Ticket {
    Ready(Slot),
    Waiting(oneshot::Receiver<Slot>),
}

impl Slots {
    pub(super) fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots {
            inner: Mutex::new(Line {
                free: n,
                waiting: VecDeque::new(),
            }),
        })
    }

    fn line(&self) -> std::sync::MutexGuard<'_, Line> {
        self.inner.lock().expect("slots lock")
    }

    /// Takes a place in line now (in dispatch order); `front`: ahead of everyone waiting.
    pub(super) fn queue(self: &Arc<Self>, front: bool) -> Ticket {
        let mut line = self.line();
        if line.free > 0 && line.waiting.is_empty() {
            line.free -= 1;
            return Ticket::Ready(Slot {
                slots: self.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        if front {
            line.waiting.push_front(tx);
        } else {
            line.waiting.push_back(tx);
        }
        Ticket::Waiting(rx)
    }

    /// Free slots now.
    pub(super) fn available(&self) -> usize {
        self.line().free
    }

    fn release(self: &Arc<Self>) {
        let mut slot = Slot {
            slots: self.clone(),
        };
        let mut line = self.line();
        while let Some(next) = line.waiting.pop_front() {
            match next.send(slot) {
                Ok(()) => return,
                // That place was given up: the next one.
                Err(back) => slot = back,
            }
        }
        line.free += 1;
        // Not dropped: that would release it again.
        std::mem::forget(slot);
    }
}

impl Ticket {
    /// Waits for the slot.
    pub(super) async fn slot(self) -> Slot {
        match self {
            Ticket::Ready(s) => s,
            // The sender lives in the line until it sends: it is never dropped unsent while the worker runs.
            Ticket::Waiting(rx) => rx.await.expect("slot line dropped"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = self.slots.clone();
        slots.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_go_in_line_order_with_stalled_jobs_first() {
        let slots = Slots::new(1);
        let running = slots.queue(false).slot().await;
        assert_eq!(slots.available(), 0);
        let a = slots.queue(false);
        let b = slots.queue(false);
        let stalled = slots.queue(true);
        let gave_up = slots.queue(false);
        let c = slots.queue(false);
        drop(gave_up);
        drop(running);
        let s = stalled.slot().await;
        drop(s);
        let s = a.slot().await;
        drop(s);
        let s = b.slot().await;
        drop(s);
        let s = c.slot().await;
        assert_eq!(slots.available(), 0);
        drop(s);
        assert_eq!(slots.available(), 1);
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_place_given_up_goes_on() {
        let slots = Slots::new(1);
        let running = slots.queue(false).slot().await;
        let first = slots.queue(false);
        let second = slots.queue(false);
        // The slot reaches `first`, whose waiter is then dropped before taking it.
        drop(running);
        drop(first);
        let s = second.slot().await;
        drop(s);
        assert_eq!(slots.available(), 1);
    }
}
