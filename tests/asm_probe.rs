//! Probe functions for the "one instruction per access" proof.
//!
//! `tests/proofs/disasm ARCH` builds this file in release for
//! `ARCH-unknown-linux-musl`, disassembles each `probe_*` function and checks
//! that it makes exactly one memory access to the register (and that the
//! barrier probes are the intended barrier instruction). The functions are
//! `#[no_mangle]` (external, so LLVM neither specialises them for their call
//! sites nor drops them) and `#[inline(never)]` (one body each to read).
//! `bad_*` functions break the rule on purpose: the script must reject them.
//!
//! Run as a normal test, this file calls every probe on a fake-kernel region
//! (ordinary memory) and checks what it did.

use dao_vfio::fake::{FakeDevice, FakeKernel};
use dao_vfio::{barrier, Context, Region};

mod common;
use common::Edu;

/// Typed field read: one volatile load.
#[no_mangle]
#[inline(never)]
pub fn probe_field_read(regs: &Edu) -> u32 {
    regs.id.read()
}

/// Typed field write: one volatile store.
#[no_mangle]
#[inline(never)]
pub fn probe_field_write(regs: &Edu, value: u32) {
    // SAFETY: liveness only stores the value (and here it is ordinary memory).
    unsafe { regs.liveness.write(value) }
}

/// Offset read: the bounds and alignment check reads the `Region`, then one
/// volatile load of the register. A refusal reads as `u32::MAX`, as a
/// missing PCI device does.
#[no_mangle]
#[inline(never)]
pub fn probe_read32(region: &Region, offset: usize) -> u32 {
    region.read32(offset).unwrap_or(u32::MAX)
}

/// Offset write: the check, then one volatile store.
#[no_mangle]
#[inline(never)]
pub fn probe_write64(region: &Region, offset: usize, value: u64) -> bool {
    region.write64(offset, value).is_ok()
}

/// The three barriers, alone.
#[no_mangle]
#[inline(never)]
pub fn probe_io_wmb() {
    barrier::io_wmb()
}

#[no_mangle]
#[inline(never)]
pub fn probe_io_rmb() {
    barrier::io_rmb()
}

#[no_mangle]
#[inline(never)]
pub fn probe_io_mb() {
    barrier::io_mb()
}

/// Self-test of the checker: two loads of the register. Must be rejected.
#[no_mangle]
#[inline(never)]
pub fn bad_double_read(regs: &Edu) -> u32 {
    regs.id.read() ^ regs.liveness.read()
}

/// Self-test of the checker: two offset reads. Must be rejected.
#[no_mangle]
#[inline(never)]
pub fn bad_double_read32(region: &Region, offset: usize) -> u32 {
    region.read32(offset).unwrap_or(0) ^ region.read32(offset + 4).unwrap_or(0)
}

/// Self-test of the checker: no barrier at all. Must be rejected as a barrier.
#[no_mangle]
#[inline(never)]
pub fn bad_no_barrier() {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst)
}

#[test]
fn probes_access_the_register_they_name() {
    let kernel = FakeKernel::new();
    kernel.add_device(FakeDevice::edu("0000:00:02.0", 3));
    let mut vfio: Context<&FakeKernel> = Context::with_kernel(&kernel).unwrap();
    let edu = vfio.setup("0000:00:02.0").unwrap();
    {
        let bar0 = vfio.device(&edu).unwrap().region(0).unwrap();
        let regs = bar0.block::<Edu>(0).unwrap();
        assert_eq!(probe_field_read(regs), 0x010000ed);
        probe_field_write(regs, 0x1234_5678);
        assert_eq!(bar0.read32(4), Ok(0x1234_5678), "the fake's liveness is plain memory");
        assert_eq!(probe_read32(bar0, 0), 0x010000ed);
        assert_eq!(probe_read32(bar0, 4), 0x1234_5678);
        assert_eq!(probe_read32(bar0, 2), u32::MAX, "misaligned: refused");
        assert_eq!(probe_read32(bar0, 0x10_0000), u32::MAX, "out of bounds: refused");
        assert!(probe_write64(bar0, 0x80, 0x1122_3344_5566_7788));
        assert_eq!(regs.dma_src.read(), 0x1122_3344_5566_7788);
        assert!(!probe_write64(bar0, 0x84, 0), "misaligned: refused");
        assert!(!probe_write64(bar0, 0x10_0000, 0), "out of bounds: refused");
        assert_eq!(regs.dma_src.read(), 0x1122_3344_5566_7788, "refused writes change nothing");
        assert_eq!(bad_double_read(regs), 0x010000ed ^ 0x1234_5678);
        assert_eq!(bad_double_read32(bar0, 0), 0x010000ed ^ 0x1234_5678);
    }
    // The barriers have no visible effect on one thread; they must return.
    probe_io_wmb();
    probe_io_rmb();
    probe_io_mb();
    bad_no_barrier();
    vfio.free(edu).unwrap();
}
