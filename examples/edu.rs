//! A small driver for QEMU's `edu` PCI device: typed registers, DMA through
//! the IOMMU, and MSI through an eventfd.
//!
//! ```text
//! edu 0000:00:01.0
//! ```
//! Run as root with the device bound to vfio-pci (the aarch64 virtual board
//! does that: `cargo run --target aarch64-unknown-linux-musl --example edu -- 0000:00:01.0`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dao_vfio::barrier::{io_rmb, io_wmb};
use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{register_block, Context, DmaOptions, Error, PciCommand, Reserved, RO, RW, WO};

register_block! {
    /// edu's BAR 0 (QEMU docs/specs/edu.rst).
    struct EduRegs {
        0x00 => id: RO<u32>,
        0x04 => liveness: RW<u32>,
        0x08 => factorial: RW<u32>,
        0x0c => _gap0: Reserved<0x14>,
        0x20 => status: RW<u32>,
        0x24 => irq_status: RO<u32>,
        0x28 => _gap1: Reserved<0x38>,
        0x60 => irq_raise: WO<u32>,
        0x64 => irq_ack: WO<u32>,
        0x68 => _gap2: Reserved<0x18>,
        0x80 => dma_src: RW<u64>,
        0x88 => dma_dst: RW<u64>,
        0x90 => dma_count: RW<u64>,
        0x98 => dma_cmd: RW<u64>,
    }
}

/// edu's internal buffer, as a device address.
const EDU_BUFFER: u64 = 0x40000;

/// Copies `len` bytes with edu's DMA engine and waits for it.
fn dma(regs: &EduRegs, src: u64, dst: u64, len: u64, to_ram: bool) -> Result<(), &'static str> {
    // SAFETY: src and dst are edu's own buffer or IOVAs this program mapped.
    unsafe {
        regs.dma_src.write(src);
        regs.dma_dst.write(dst);
        regs.dma_count.write(len);
        io_wmb(); // the parameters before the start bit
        regs.dma_cmd.write(1 | if to_ram { 2 } else { 0 });
    }
    let start = Instant::now();
    while regs.dma_cmd.read() & 1 != 0 {
        if start.elapsed() > Duration::from_secs(5) {
            return Err("edu DMA timed out");
        }
    }
    io_rmb(); // the completion before reading the data
    Ok(())
}

fn run(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut vfio = Context::open()?;
    let edu = vfio.setup(name)?;

    // Bus mastering for DMA and MSI, then one eventfd on the MSI vector.
    vfio.device(&edu)?.pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER)?;
    vfio.irq_enable(&edu, pci_irq::MSI, 1)?;
    let mut src = vfio.dma_alloc(4096, DmaOptions::default())?;
    let mut dst = vfio.dma_alloc(4096, DmaOptions::default())?;

    let dev = vfio.device(&edu)?;
    let regs = dev.region(pci_region::BAR0)?.block::<EduRegs>(0)?;
    let msi = dev.interrupt(pci_irq::MSI, 0)?;
    println!("edu {name}: id {:#010x}", regs.id.read());

    // SAFETY: liveness and factorial registers only compute; no DMA.
    unsafe { regs.liveness.write(0x1234_5678) };
    println!("  liveness: wrote 0x12345678, read {:#010x} (its complement)", regs.liveness.read());
    // SAFETY: as above; bit 7 asks for an interrupt when the result is ready.
    unsafe {
        regs.status.write(0x80);
        regs.factorial.write(10);
    }
    let fired = msi.wait_timeout(Duration::from_secs(5))?.ok_or("no factorial interrupt")?;
    println!("  factorial: 10! = {} (MSI received, count {fired})", regs.factorial.read());
    // SAFETY: acknowledges the interrupt.
    unsafe { regs.irq_ack.write(regs.irq_status.read()) };

    let message = b"through the IOMMU and back";
    let (src_buf, dst_buf) = (vfio.dma(&mut src)?, vfio.dma(&mut dst)?);
    src_buf.write(0, message)?;
    dst_buf.fill(0, 4096, 0)?;
    dma(regs, src_buf.iova(), EDU_BUFFER, message.len() as u64, false)?;
    dma(regs, EDU_BUFFER, dst_buf.iova(), message.len() as u64, true)?;
    let mut back = [0u8; 26];
    dst_buf.read(0, &mut back)?;
    println!("  DMA: {:#x} -> edu -> {:#x}: {:?}", src_buf.iova(), dst_buf.iova(), String::from_utf8_lossy(&back));
    if &back != message {
        return Err("DMA round trip returned other bytes".into());
    }

    // SAFETY: raises edu's interrupt by hand.
    unsafe { regs.irq_raise.write(0x42) };
    let fired = msi.wait_timeout(Duration::from_secs(5))?.ok_or("no MSI")?;
    println!("  MSI: raised by hand, received (count {fired}), status {:#x}", regs.irq_status.read());
    // SAFETY: acknowledges it.
    unsafe { regs.irq_ack.write(0x42) };

    vfio.dma_free(src).map_err(|(_, e)| e)?;
    vfio.dma_free(dst).map_err(|(_, e)| e)?;
    vfio.free(edu)?;
    vfio.close().map_err(|(_, e): (_, Error)| e)?;
    Ok(())
}

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: edu PCI-ADDRESS   (e.g. edu 0000:00:01.0)");
        return ExitCode::from(2);
    };
    match run(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
