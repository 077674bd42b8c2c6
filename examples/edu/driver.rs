//! The edu driver's logic, generic over the kernel: the real one on a board
//! (`examples/edu/main.rs`), the fake one with an edu model in a unit test
//! (`tests/fake_edu.rs`), the same code either way.
//!
//! The driver owns its [`Context`]. Its data plane borrows from it, so it
//! is a second type, [`DataPlane`], made once by [`Edu::data_plane`]: the
//! device, its BAR (checked once: mapped and large enough), its MSI and its
//! DMA buffers are looked up there, and the loop then only touches
//! registers. Registers are reached with the region's offset accessors
//! (one bounds check and one volatile access each), which a fake device
//! model sees; a typed register block's plain accesses it could not.

use std::time::{Duration, Instant};

use dao_vfio::barrier::{io_rmb, io_wmb};
use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{Context, DeviceHandle, DmaBuffer, DmaHandle, DmaOptions, Error, Interrupt, Kernel, PciCommand, Region};

/// What the driver can fail with: the crate's errors, and the device's.
pub type Result<T> = core::result::Result<T, Box<dyn std::error::Error>>;

/// edu's BAR 0 registers (QEMU docs/specs/edu.rst).
pub mod reg {
    /// Identification, 0x010000ed for edu 1.0.
    pub const ID: usize = 0x00;
    /// Reads back the complement of what was written.
    pub const LIVENESS: usize = 0x04;
    /// Write n; reads n! once computed.
    pub const FACTORIAL: usize = 0x08;
    /// Bit 0: computing; bit 7: raise an interrupt when the factorial is done.
    pub const STATUS: usize = 0x20;
    /// The interrupt's cause bits.
    pub const IRQ_STATUS: usize = 0x24;
    /// Write-only: raises the interrupt with these cause bits.
    pub const IRQ_RAISE: usize = 0x60;
    /// Write-only: clears these cause bits.
    pub const IRQ_ACK: usize = 0x64;
    /// DMA source address.
    pub const DMA_SRC: usize = 0x80;
    /// DMA destination address.
    pub const DMA_DST: usize = 0x88;
    /// DMA length in bytes.
    pub const DMA_COUNT: usize = 0x90;
    /// DMA command: bit 0 start (cleared when done), bit 1 edu to RAM,
    /// bit 2 raise an interrupt when done.
    pub const DMA_CMD: usize = 0x98;
    /// The registers' extent.
    pub const END: usize = 0xa0;
}

/// Status bit: raise an interrupt when the factorial is done.
pub const STATUS_IRQ_ON_FACTORIAL: u32 = 0x80;
/// edu's internal buffer, as a device address.
pub const EDU_BUFFER: u64 = 0x40000;
/// The bytes of each DMA buffer.
pub const DMA_LEN: usize = 4096;

/// An edu device set up for DMA and MSI, owning its context.
pub struct Edu<K: Kernel> {
    vfio: Context<K>,
    dev: DeviceHandle,
    src: DmaHandle,
    dst: DmaHandle,
}

impl<K: Kernel> Edu<K> {
    /// Sets edu up: memory space and bus mastering on (DMA and MSI need
    /// it), one MSI vector, two DMA buffers. On error the context is
    /// dropped, which frees what was set up.
    pub fn open(mut vfio: Context<K>, name: &str) -> Result<Self> {
        let dev = vfio.setup(name)?;
        vfio.device(&dev)?.pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER)?;
        vfio.irq_enable(&dev, pci_irq::MSI, 1)?;
        let src = vfio.dma_alloc(DMA_LEN, DmaOptions::default())?;
        let dst = vfio.dma_alloc(DMA_LEN, DmaOptions::default())?;
        Ok(Edu { vfio, dev, src, dst })
    }

    /// The data plane: everything it touches looked up and checked once.
    pub fn data_plane(&mut self) -> Result<DataPlane<'_, K>> {
        let dev = self.vfio.device(&self.dev)?;
        let bar = dev.region(pci_region::BAR0)?;
        // Checked once: every register the loop touches is inside the mapping.
        bar.read64(reg::END - 8)?;
        Ok(DataPlane {
            bar,
            msi: dev.interrupt(pci_irq::MSI, 0)?,
            src: self.vfio.dma(&mut self.src)?,
            dst: self.vfio.dma(&mut self.dst)?,
        })
    }

    /// Frees the buffers and the device, and closes the context.
    pub fn close(self) -> Result<()> {
        let Edu { mut vfio, dev, src, dst } = self;
        vfio.dma_free(src).map_err(|(_, e)| e)?;
        vfio.dma_free(dst).map_err(|(_, e)| e)?;
        vfio.free(dev)?;
        vfio.close().map_err(|(_, e): (_, Error)| e)?;
        Ok(())
    }
}

/// edu's data plane: its BAR, MSI and DMA buffers, borrowed from [`Edu`].
pub struct DataPlane<'a, K: Kernel> {
    bar: &'a Region,
    msi: Interrupt<'a, K>,
    src: DmaBuffer<'a>,
    dst: DmaBuffer<'a>,
}

impl<K: Kernel> DataPlane<'_, K> {
    /// The identification register.
    pub fn id(&self) -> Result<u32> {
        Ok(self.bar.read32(reg::ID)?)
    }

    /// Writes `value` to the liveness register; returns what it reads back.
    pub fn liveness(&self, value: u32) -> Result<u32> {
        self.bar.write32(reg::LIVENESS, value)?;
        Ok(self.bar.read32(reg::LIVENESS)?)
    }

    /// Computes `n!` on the device, waiting for its interrupt: returns the
    /// result and the interrupt count.
    pub fn factorial(&self, n: u32, timeout: Duration) -> Result<(u32, u64)> {
        self.bar.write32(reg::STATUS, STATUS_IRQ_ON_FACTORIAL)?;
        self.bar.write32(reg::FACTORIAL, n)?;
        let fired = self.msi.wait_timeout(timeout)?.ok_or("no factorial interrupt")?;
        let result = self.bar.read32(reg::FACTORIAL)?;
        self.bar.write32(reg::IRQ_ACK, self.bar.read32(reg::IRQ_STATUS)?)?;
        Ok((result, fired))
    }

    /// Copies `len` bytes with edu's DMA engine, polling for completion.
    fn dma(&self, src: u64, dst: u64, len: u64, to_ram: bool, timeout: Duration) -> Result<()> {
        self.bar.write64(reg::DMA_SRC, src)?;
        self.bar.write64(reg::DMA_DST, dst)?;
        self.bar.write64(reg::DMA_COUNT, len)?;
        io_wmb(); // the parameters before the start bit
        self.bar.write64(reg::DMA_CMD, 1 | if to_ram { 2 } else { 0 })?;
        let start = Instant::now();
        while self.bar.read64(reg::DMA_CMD)? & 1 != 0 {
            if start.elapsed() > timeout {
                return Err("edu DMA timed out".into());
            }
        }
        io_rmb(); // the completion before reading the data
        Ok(())
    }

    /// Sends `message` through edu's buffer and back by DMA: from the
    /// source buffer to edu, then from edu to the (cleared) destination
    /// buffer; returns what arrived there.
    pub fn dma_round_trip(&self, message: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        self.src.write(0, message)?;
        self.dst.fill(0, DMA_LEN, 0)?;
        let len = message.len() as u64;
        self.dma(self.src.iova(), EDU_BUFFER, len, false, timeout)?;
        self.dma(EDU_BUFFER, self.dst.iova(), len, true, timeout)?;
        let mut back = vec![0u8; message.len()];
        self.dst.read(0, &mut back)?;
        Ok(back)
    }

    /// The two buffers' device addresses (source, destination).
    pub fn iovas(&self) -> (u64, u64) {
        (self.src.iova(), self.dst.iova())
    }

    /// Raises edu's interrupt by hand with cause `bits`, waits for it and
    /// acknowledges it: returns the interrupt count and the status it saw.
    pub fn raise(&self, bits: u32, timeout: Duration) -> Result<(u64, u32)> {
        self.bar.write32(reg::IRQ_RAISE, bits)?;
        let fired = self.msi.wait_timeout(timeout)?.ok_or("no MSI")?;
        let status = self.bar.read32(reg::IRQ_STATUS)?;
        self.bar.write32(reg::IRQ_ACK, bits)?;
        Ok((fired, status))
    }
}
