//! I/O barriers for ordering memory and device accesses.
//!
//! A volatile access is not ordered against ordinary memory accesses by the
//! CPU. The classic case: a driver fills a descriptor in DMA memory (normal
//! memory), then writes the doorbell register (device memory). On aarch64 the
//! device may see the doorbell before the descriptor unless a barrier sits
//! between them:
//!
//! ```no_run
//! # fn f(ring: &mut [u64], bar: &dao_vfio::Region) -> Result<(), dao_vfio::AccessError> {
//! ring[0] = 0x1234;            // descriptor, in DMA memory
//! dao_vfio::barrier::io_wmb(); // descriptor before doorbell
//! bar.write32(0x40, 1)?;       // doorbell
//! # Ok(()) }
//! ```
//!
//! | function | aarch64 | x86_64 | orders |
//! |---|---|---|---|
//! | [`io_wmb`] | `dmb oshst` | compiler barrier | earlier stores before later stores |
//! | [`io_rmb`] | `dmb oshld` | compiler barrier | earlier loads before later loads and stores |
//! | [`io_mb`] | `dmb osh` | `mfence` | all earlier accesses before all later ones |
//!
//! x86_64 keeps stores in order, and loads in order, for write-back memory
//! and the uncached mappings VFIO gives, so only the compiler needs stopping
//! there; `mfence` is needed only to order a store before a later load.
//! The outer-shareable domain (`osh`) is the one DMA-capable devices are in,
//! the same choice as Linux's `dma_wmb`/`dma_rmb` and DPDK's `rte_io_*mb`.
//! The module exists on aarch64 and x86_64 only: elsewhere a CPU fence does not
//! necessarily order device I/O (RISC-V needs `fence` with I/O bits), and a
//! wrong barrier is worse than none that is visibly missing.

#[cfg(target_arch = "x86_64")]
use core::sync::atomic::{compiler_fence, Ordering};

/// Orders earlier stores before later stores, to normal or device memory:
/// put it between writing descriptors and ringing a doorbell.
#[doc(alias = "dma_wmb")]
#[doc(alias = "rte_io_wmb")]
#[inline(always)]
pub fn io_wmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it touches no memory and no registers.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags))
    };
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::SeqCst);
}

/// Orders earlier loads before later loads and stores: put it between reading
/// a device's "done" register and reading the data it wrote by DMA.
#[doc(alias = "dma_rmb")]
#[doc(alias = "rte_io_rmb")]
#[inline(always)]
pub fn io_rmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it touches no memory and no registers.
    unsafe {
        core::arch::asm!("dmb oshld", options(nostack, preserves_flags))
    };
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::SeqCst);
}

/// Orders every earlier access before every later one.
#[doc(alias = "rte_io_mb")]
#[inline(always)]
pub fn io_mb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it touches no memory and no registers.
    unsafe {
        core::arch::asm!("dmb osh", options(nostack, preserves_flags))
    };
    // `mfence`, as Linux's `mb()`: unlike the locked instruction a SeqCst
    // fence may compile to, it also orders write-combining stores.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `mfence` needs SSE2, which every x86_64 CPU has; it touches no
    // memory and no registers.
    unsafe {
        core::arch::x86_64::_mm_mfence()
    };
}
