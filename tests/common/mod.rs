//! What the real-kernel test files share: the devices the board's init names,
//! and register blocks for them.
#![allow(dead_code)] // each test file uses its own part

use dao_vfio::{register_block, Backend, Context, Reserved, RO, RW, WO};

/// A device name the guest's init exported. Panics (fails the test) off the
/// board: a hardware test never passes by skipping its device.
pub fn dev(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: this test runs on the virtual board (tests/board/test)"))
}

/// The backend this board run asks for: `DAO_VFIO_BACKEND` is `auto` (or
/// unset), `iommufd` or `legacy`. `tests/board/test aarch64` runs the suites
/// once with `auto` (which takes iommufd there) and once with `legacy`.
pub fn backend() -> Backend {
    match std::env::var("DAO_VFIO_BACKEND").as_deref() {
        Err(_) | Ok("auto") => Backend::Auto,
        Ok("iommufd") => Backend::Iommufd,
        Ok("legacy") => Backend::Legacy,
        Ok(other) => panic!("DAO_VFIO_BACKEND={other}: expected auto, iommufd or legacy"),
    }
}

/// The interface edu ends up on: what was asked for, and for `auto` what the
/// board's kernel offers: iommufd and device cdevs on the aarch64 board's
/// 6.12, neither on the x86_64 board's stock 6.1.
pub fn expected_backend() -> Backend {
    match backend() {
        Backend::Auto if cfg!(target_arch = "aarch64") => Backend::Iommufd,
        Backend::Auto => Backend::Legacy,
        asked => asked,
    }
}

/// A context with [`backend`], as the board run asks.
pub fn context() -> Context {
    Context::open_with(backend()).unwrap_or_else(|e| panic!("opening a context with {:?}: {e}", backend()))
}

register_block! {
    /// QEMU's edu device, BAR 0 (QEMU docs/specs/edu.rst), with its DMA engine.
    pub struct Edu {
        0x00 => pub id: RO<u32>,
        0x04 => pub liveness: RW<u32>,
        0x08 => pub factorial: RW<u32>,
        0x0c => _reserved0: Reserved<0x14>,
        0x20 => pub status: RW<u32>,
        0x24 => pub irq_status: RO<u32>,
        0x28 => _reserved1: Reserved<0x38>,
        0x60 => pub irq_raise: WO<u32>,
        0x64 => pub irq_ack: WO<u32>,
        0x68 => _reserved2: Reserved<0x18>,
        0x80 => pub dma_src: RW<u64>,
        0x88 => pub dma_dst: RW<u64>,
        0x90 => pub dma_count: RW<u64>,
        0x98 => pub dma_cmd: RW<u64>,
    }
}

register_block! {
    /// ARM PL031 real-time clock.
    pub struct Pl031 {
        0x000 => pub data: RO<u32>,
        0x004 => pub match_value: RW<u32>,
        0x008 => pub load: RW<u32>,
        0x00c => pub control: RW<u32>,
        0x010 => pub irq_mask: RW<u32>,
        0x014 => pub raw_status: RO<u32>,
        0x018 => pub masked_status: RO<u32>,
        0x01c => pub irq_clear: WO<u32>,
        0x020 => _reserved: Reserved<0xfc0>,
        0xfe0 => pub periph_id: [RO<u32>; 4],
        0xff0 => pub cell_id: [RO<u32>; 4],
    }
}

register_block! {
    /// The PrimeCell identification registers at the end of a 4 KiB block.
    pub struct PrimeCellId {
        0x00 => pub periph_id: [RO<u32>; 4],
        0x10 => pub cell_id: [RO<u32>; 4],
    }
}

/// The low bytes of four ID registers.
pub fn id_bytes(regs: &[RO<u32>; 4]) -> [u8; 4] {
    regs.each_ref().map(|r| r.read() as u8)
}
