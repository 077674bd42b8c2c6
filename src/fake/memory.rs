//! Page-aligned, zeroed heap memory standing in for device registers and
//! anonymous mappings.

use core::ptr::NonNull;
use std::alloc::{alloc_zeroed, dealloc, Layout};

pub(super) const PAGE: usize = 4096;

/// An allocation that lives until dropped; moving it does not move the memory.
pub(super) struct Backing {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: `Backing` owns its allocation exclusively; the raw pointer is just
// its address. Accesses through it are made under the fake's lock or through
// regions (see the `fake` module docs on sharing).
unsafe impl Send for Backing {}

impl Backing {
    /// At least `size` bytes (a whole number of pages), starting with `contents`.
    pub(super) fn new(size: u64, contents: &[u8]) -> Self {
        let len = usize::try_from(size).unwrap_or(usize::MAX).max(1).next_multiple_of(PAGE);
        let layout = Layout::from_size_align(len, PAGE).expect("fake memory too large");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory for fake memory");
        let n = contents.len().min(len);
        // SAFETY: `ptr` is valid for `len >= n` bytes and does not overlap `contents`.
        unsafe { core::ptr::copy_nonoverlapping(contents.as_ptr(), ptr.as_ptr(), n) };
        Backing { ptr, layout }
    }

    pub(super) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(super) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Copies `out.len()` bytes from `offset` (clamped to the allocation).
    pub(super) fn read(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = self.len().saturating_sub(offset).min(out.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: `offset + n <= len`; `out` is a distinct buffer.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), n) };
        n
    }

    /// Copies `data` to `offset` (clamped to the allocation).
    pub(super) fn write(&self, offset: usize, data: &[u8]) -> usize {
        let n = self.len().saturating_sub(offset).min(data.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: `offset + n <= len`; `data` is a distinct buffer.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), n) };
        n
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
