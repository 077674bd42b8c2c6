//! The C interface's lock, without std: a mutex on a futex word (rustix's
//! `futex`, no libc), as in Drepper's "Futexes Are Tricky" (mutex 3) and
//! std's own Linux mutex. Uncontended, lock and unlock are one atomic
//! operation each; a waiter sleeps in the kernel instead of spinning.
//!
//! Unlike std's `Mutex` it has no poisoning: a guard dropped while unwinding
//! unlocks, and later calls go on (what the C interface did with std's lock,
//! whose poison it ignored). The C libraries abort on panic anyway.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use rustix::thread::futex;

/// Nobody holds the lock.
const UNLOCKED: u32 = 0;
/// Held, and nobody sleeps on it.
const LOCKED: u32 = 1;
/// Held, and a thread may be sleeping on it: unlock must wake one.
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock around a `T`, usable in a `static`.
pub(super) struct Lock<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `Guard`, and `lock` hands out
// one guard at a time (the state word is acquired before and released after),
// so threads share the lock but never the value at once; moving the value's
// use between threads is what `T: Send` allows.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    /// An unlocked lock around `value`.
    pub(super) const fn new(value: T) -> Self {
        Lock { state: AtomicU32::new(UNLOCKED), value: UnsafeCell::new(value) }
    }

    /// Waits until the lock is free and takes it; the guard unlocks on drop.
    pub(super) fn lock(&self) -> Guard<'_, T> {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed).is_err() {
            self.lock_contended();
        }
        Guard { lock: self }
    }

    /// The slow path: mark the lock contended, and sleep until the holder
    /// wakes us with the lock free. Taking it as `CONTENDED` (not knowing
    /// whether others still sleep) costs at most one needless wake.
    #[cold]
    fn lock_contended(&self) {
        while self.state.swap(CONTENDED, Acquire) != UNLOCKED {
            // Returns at once (EAGAIN) if the word is no longer CONTENDED,
            // and on a signal (EINTR): either way, try again.
            let _ = futex::wait(&self.state, futex::Flags::PRIVATE, CONTENDED, None);
        }
    }

    /// Releases the lock, waking one sleeper if there may be one.
    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Release) == CONTENDED {
            let _ = futex::wake(&self.state, futex::Flags::PRIVATE, 1);
        }
    }
}

/// Exclusive access to the locked value, until dropped.
pub(super) struct Guard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other reference to the
        // value exists; the borrow ends with the guard's.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow
        // through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Threads adding under the lock lose no update, and a contended lock
    /// (sleepers on the futex) still ends unlocked.
    #[test]
    fn excludes_and_wakes() {
        static COUNT: Lock<usize> = Lock::new(0);
        static INSIDE: AtomicUsize = AtomicUsize::new(0);
        const ROUNDS: usize = if cfg!(miri) { 50 } else { 2000 };
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..ROUNDS {
                        let mut n = COUNT.lock();
                        assert_eq!(INSIDE.fetch_add(1, Relaxed), 0, "two threads inside");
                        *n += 1;
                        if n.is_multiple_of(97) {
                            std::thread::yield_now(); // let others find it held
                        }
                        INSIDE.fetch_sub(1, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*COUNT.lock(), 4 * ROUNDS);
        assert_eq!(COUNT.state.load(Relaxed), UNLOCKED);
    }
}
