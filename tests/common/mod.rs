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
/// unset), `iommufd` or `legacy`. `tests/check` runs the aarch64 board's
/// suites once with `auto` (which takes iommufd there) and once with `legacy`.
pub fn backend() -> Backend {
    match std::env::var("DAO_VFIO_BACKEND").as_deref() {
        Err(_) | Ok("auto") => Backend::Auto,
        Ok("iommufd") => Backend::Iommufd,
        Ok("legacy") => Backend::Legacy,
        Ok(other) => panic!("DAO_VFIO_BACKEND={other}: expected auto, iommufd or legacy"),
    }
}

/// The board the guest's init says this is (`DAO_VFIO_BOARD`): `x86_64`,
/// `aarch64` or `aarch64-6.1`. Panics off the board, or on a board it does
/// not know.
pub fn board() -> &'static str {
    match dev("DAO_VFIO_BOARD").as_str() {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "aarch64-6.1" => "aarch64-6.1",
        other => panic!("DAO_VFIO_BOARD={other}: not a board these tests know"),
    }
}

/// Whether the board's kernel has iommufd and VFIO device cdevs: only the
/// aarch64 board's 6.12. The two 6.1 boards (x86_64's stock kernel, and
/// aarch64-6.1, built like DAO's cn10k.config) have the legacy interface
/// only: no `/dev/iommu`, no `/dev/vfio/devices/`.
pub fn board_has_iommufd() -> bool {
    board() == "aarch64"
}

/// Whether the board runs Linux 6.1 (x86_64 and aarch64-6.1).
pub fn board_is_6_1() -> bool {
    board() != "aarch64"
}

/// The interface edu ends up on: what was asked for, and for `auto` what the
/// board's kernel offers (see [`board_has_iommufd`]).
pub fn expected_backend() -> Backend {
    match backend() {
        Backend::Auto if board_has_iommufd() => Backend::Iommufd,
        Backend::Auto => Backend::Legacy,
        asked => asked,
    }
}

/// The number of file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs the board's `/bin/vfio-bind` with `args`: its exit code and its
/// output (stdout, then stderr).
pub fn vfio_bind(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("/bin/vfio-bind").args(args).output().expect("running /bin/vfio-bind");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The last component of the symlink at `path` (a driver's or a group's
/// name), if it is one.
pub fn link_name(path: &str) -> Option<String> {
    Some(std::fs::read_link(path).ok()?.file_name()?.to_string_lossy().into_owned())
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

/// Runs one edu DMA transfer (edu's DMA engine: `src` to `dst`, `to_ram`
/// when `dst` is an IOVA) and waits for it to finish.
pub fn edu_dma(regs: &Edu, src: u64, dst: u64, len: u64, to_ram: bool) {
    const DMA_START: u64 = 1;
    const DMA_TO_RAM: u64 = 2;
    // SAFETY: the caller programs edu's DMA engine with IOVAs it mapped (or,
    // deliberately, unmapped: the IOMMU then blocks the access).
    unsafe {
        regs.dma_src.write(src);
        regs.dma_dst.write(dst);
        regs.dma_count.write(len);
        dao_vfio::barrier::io_wmb();
        regs.dma_cmd.write(DMA_START | if to_ram { DMA_TO_RAM } else { 0 });
    }
    let start = std::time::Instant::now();
    while regs.dma_cmd.read() & DMA_START != 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "edu DMA did not finish");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    dao_vfio::barrier::io_rmb();
}
