//! A deterministic pseudo-random generator for the property tests (fixed
//! seeds, no dependency).

use std::vec;
use std::vec::Vec;

/// xorshift64: fast, deterministic, good enough to shake parsers.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub(crate) fn below64(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes. Under Miri, where each step costs about 100 µs, a
    /// random fill byte with a few random bytes sprinkled in.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![self.next() as u8; len];
        if cfg!(miri) {
            for _ in 0..len.min(8) {
                let i = self.below(len);
                out[i] = self.next() as u8;
            }
        } else {
            for (i, b) in out.iter_mut().enumerate() {
                *b = (self.0 >> (8 * (i % 8))) as u8;
                if i % 8 == 7 {
                    self.next();
                }
            }
        }
        out
    }

    /// Shuffles `items` in place.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}
