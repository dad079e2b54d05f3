//! A bounded single-producer single-consumer queue between two pipeline threads: the lock-free
//! `ringbuf` ring, plus sleeping when it is full or empty, plus closing.
//!
//! Pushing and popping never allocate. A thread that must wait sleeps on a condition variable
//! (woken by the other side, or after [`WAIT_SLICE`] to look at the closed flag again), so an
//! idle pipeline uses no CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ringbuf::traits::{Consumer as _, Observer as _, Producer as _, Split as _};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Longest sleep before a waiting side re-checks whether the ring was closed.
pub const WAIT_SLICE: Duration = Duration::from_millis(20);

struct Shared {
    closed: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Shared {
    fn wake(&self) {
        // Taking the lock orders the wake-up after a waiter's check-then-wait.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }

    fn wait(&self, ready: impl Fn() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if ready() || self.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = self.changed.wait_timeout(guard, WAIT_SLICE);
    }
}

/// Creates a ring of `capacity` items: the sending and the receiving end.
pub fn ring<T>(capacity: usize) -> (RingSender<T>, RingReceiver<T>) {
    let (prod, cons) = HeapRb::<T>::new(capacity.max(1)).split();
    let shared =
        Arc::new(Shared { closed: AtomicBool::new(false), lock: Mutex::new(()), changed: Condvar::new() });
    (RingSender { prod, shared: shared.clone() }, RingReceiver { cons, shared })
}

/// The producing end.
pub struct RingSender<T> {
    prod: HeapProd<T>,
    shared: Arc<Shared>,
}

/// The consuming end.
pub struct RingReceiver<T> {
    cons: HeapCons<T>,
    shared: Arc<Shared>,
}

impl<T> RingSender<T> {
    /// Waits for room and pushes; gives the item back if the ring is (or gets) closed.
    pub fn push(&mut self, mut item: T) -> Result<(), T> {
        loop {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(item);
            }
            match self.prod.try_push(item) {
                Ok(()) => {
                    self.shared.wake();
                    return Ok(());
                }
                Err(back) => item = back,
            }
            let prod = &self.prod;
            self.shared.wait(|| !prod.is_full());
        }
    }

    /// Pushes if there is room, else gives the item back at once.
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(item);
        }
        self.prod.try_push(item).inspect(|_| self.shared.wake())
    }

    /// Closes the ring: the receiver gets what is queued, then `None`; pushes fail.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }
}

impl<T> RingReceiver<T> {
    /// Waits for an item; `None` once the ring is closed and empty.
    pub fn pop(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.cons.try_pop() {
                self.shared.wake();
                return Some(item);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                // A push may have landed between the pop and the flag check.
                return self.cons.try_pop();
            }
            let cons = &self.cons;
            self.shared.wait(|| !cons.is_empty());
        }
    }

    /// An item if one is queued, without waiting.
    pub fn try_pop(&mut self) -> Option<T> {
        self.cons.try_pop().inspect(|_| self.shared.wake())
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.cons.occupied_len()
    }

    pub fn is_empty(&self) -> bool {
        self.cons.is_empty()
    }

    /// Closes the ring from the receiving side: the sender's pushes fail from now on.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }
}

impl<T> Drop for RingSender<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_across_threads_and_close_ends_the_stream() {
        let (mut tx, mut rx) = ring::<u32>(2);
        let producer = std::thread::spawn(move || {
            for i in 0..1000 {
                tx.push(i).unwrap();
            }
            // dropping tx closes the ring
        });
        let mut got = Vec::new();
        while let Some(i) = rx.pop() {
            got.push(i);
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn closing_from_the_receiver_fails_pushes() {
        let (mut tx, rx) = ring::<u32>(1);
        tx.push(1).unwrap();
        rx.close();
        assert_eq!(tx.push(2), Err(2));
        assert_eq!(tx.try_push(3), Err(3));
    }

    #[test]
    fn try_push_reports_a_full_ring() {
        let (mut tx, mut rx) = ring::<u32>(1);
        assert!(tx.try_push(1).is_ok());
        assert_eq!(tx.try_push(2), Err(2));
        assert_eq!(rx.try_pop(), Some(1));
        assert_eq!(rx.len(), 0);
    }
}
