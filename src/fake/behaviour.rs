//! Device behaviour: what a fake device does when its driver touches it.

use core::fmt;
use std::vec;
use std::vec::Vec;

use super::model::{Object, State};
use crate::sys::pci_irq;
use crate::PciCommand;

/// What a fake device does. Called under the fake's lock, on the thread of
/// the driver's access.
///
/// Widths are 1, 2, 4 or 8 bytes, offsets aligned to them and inside the
/// region (the crate checked). Values are little-endian register values,
/// zero-extended.
///
/// A test describes a device (IDs, BARs, interrupts, capabilities: see
/// [`PciDeviceBuilder`](super::PciDeviceBuilder) and
/// [`PlatformDeviceBuilder`](super::PlatformDeviceBuilder)) and implements
/// [`DeviceModel`] for what its registers do, then adds both with
/// [`FakeKernel::add_modelled_device`](super::FakeKernel::add_modelled_device).
///
/// # Design: the device runs when the driver touches it
/// The model is called synchronously, on the driver's thread, under the
/// fake's lock:
/// - for every register access through the region API ([`Region::read32`],
///   [`Region::write64`]..., and `pread`/`pwrite` through
///   [`Device::read_region`]/[`write_region`]): the model answers the read or
///   takes the write, and may raise an interrupt or do DMA from inside it;
/// - whenever the driver reads or polls one of the device's interrupt
///   eventfds ([`Interrupt::take`], [`wait`], [`wait_timeout`]):
///   [`DeviceModel::tick`] lets work the device left pending finish then.
///
/// Why not a device thread over shared memory, as hardware is? Because the
/// fake's registers are ordinary memory: a driver's plain loads and stores
/// racing with a device thread's would be a data race (undefined behaviour,
/// which Miri reports), and the order in which the thread ran would make
/// tests flaky. Run synchronously, every access is serialized by the lock
/// (threads may share a modelled region, as with any fake region), nothing
/// races, and a test is deterministic: the same driver run gives the same
/// sequence of accesses, interrupts and DMA every time. The price is that
/// the device only progresses when the driver looks at it, which is what a
/// driver that rings a doorbell and then polls a status register or waits
/// for an interrupt does anyway. A model that wants latency (a DMA done after
/// three polls of the status register) counts the accesses itself.
///
/// # Register blocks
/// A typed register block ([`Region::block`]) is made of plain volatile
/// cells: its loads and stores reach memory without the fake seeing them, so
/// no model could react to them. On a modelled region `block` is therefore
/// refused with [`AccessError::NotEmulable`]; a driver meant to be tested
/// against a model reaches its registers with the offset accessors (one
/// bounds check and one access on hardware too). A PCI device's config
/// space is not modelled: it stays memory the fake keeps (its command
/// register decides bus mastering).
///
/// # What the fake enforces
/// A PCI device's MSI and MSI-X are delivered, and its DMA done, only while
/// bus mastering is on in its command register, as on hardware; DMA goes
/// through the fake IOMMU and is refused ([`DmaFault`]) where no mapping
/// covers it. What a register reads back is the model's answer: a
/// write-only doorbell reads as the model says (often 0), not as the last
/// value written.
///
/// [`Region::read32`]: crate::Region::read32
/// [`Region::write64`]: crate::Region::write64
/// [`Region::block`]: crate::Region::block
/// [`Device::read_region`]: crate::Device::read_region
/// [`write_region`]: crate::Device::write_region
/// [`Interrupt::take`]: crate::Interrupt::take
/// [`wait`]: crate::Interrupt::wait
/// [`wait_timeout`]: crate::Interrupt::wait_timeout
/// [`AccessError::NotEmulable`]: crate::AccessError::NotEmulable
pub trait DeviceModel: Send {
    /// The driver reads `width` bytes at `offset` of region `region`:
    /// return what the register reads as.
    fn read(&mut self, ctx: &mut DeviceContext<'_>, region: u32, offset: u64, width: usize) -> u64;

    /// The driver writes `value` (its low `width` bytes) at `offset` of
    /// region `region`.
    fn write(&mut self, ctx: &mut DeviceContext<'_>, region: u32, offset: u64, width: usize, value: u64);

    /// The driver reads or polls one of the device's interrupt eventfds:
    /// pending work may finish (and interrupt) now. A blocking wait
    /// ([`Interrupt::wait`](crate::Interrupt::wait)) ticks until the device interrupts (up to 1,000
    /// times). Does nothing by default.
    fn tick(&mut self, ctx: &mut DeviceContext<'_>) {
        let _ = ctx;
    }
}

/// Why the device's DMA was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaFault {
    /// Bus mastering is off in the PCI command register: the device cannot
    /// start a memory transaction.
    BusMasterOff,
    /// No IOMMU mapping covers the range: an IOMMU fault on hardware.
    NotMapped {
        /// The device address asked for.
        iova: u64,
        /// The length.
        len: u64,
    },
}

impl fmt::Display for DmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DmaFault::BusMasterOff => f.write_str("bus mastering is off in the command register"),
            DmaFault::NotMapped { iova, len } => {
                write!(f, "no IOMMU mapping covers {iova:#x}..{:#x} (an IOMMU fault)", iova.saturating_add(len))
            }
        }
    }
}

/// The device's side of the system, for a [`DeviceModel`]: its interrupts,
/// its DMA through the fake IOMMU, its PCI command register.
pub struct DeviceContext<'a> {
    state: &'a mut State,
    device: usize,
}

impl DeviceContext<'_> {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.state.devices[self.device].name
    }

    /// The PCI command register as the driver last wrote it (empty for a
    /// platform device).
    pub fn command(&self) -> PciCommand {
        PciCommand::from_bits_retain(self.state.pci_command(self.device).unwrap_or(0))
    }

    /// Whether the device may master the bus: DMA and MSI/MSI-X need it on
    /// a PCI device; a platform device always may.
    pub fn bus_master(&self) -> bool {
        self.state.bus_master(self.device)
    }

    /// Raises vector `vector` of interrupt index `index`: its eventfd is
    /// signalled unless no eventfd is bound, it is masked, or it is a PCI
    /// device's MSI/MSI-X and bus mastering is off. An automasked (level)
    /// interrupt masks itself. Returns whether it was delivered.
    pub fn raise_irq(&mut self, index: u32, vector: u32) -> bool {
        self.state.raise(self.device, index, vector)
    }

    /// Writes `data` at device address `iova`, through the IOMMU.
    ///
    /// # Safety
    /// As [`FakeKernel::dma_write`](super::FakeKernel::dma_write): no other
    /// thread may access the bytes at these IOVAs during the call. The model
    /// runs on the driver thread that made the register access, or, for
    /// [`DeviceModel::tick`], on the thread reading or polling the device's
    /// eventfd: a driver meets this if the thread that touches its DMA
    /// buffers is that thread, or is synchronized with it (it does not touch
    /// them while another thread waits for the device).
    pub unsafe fn dma_write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let vaddr = self.dma_target(iova, data.len() as u64)?;
        // SAFETY: a live DMA mapping covers the range (its owner keeps the
        // memory valid while mapped; the library exposed its provenance when
        // mapping it); no other thread accesses these bytes meanwhile (the
        // contract).
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                core::ptr::with_exposed_provenance_mut::<u8>(vaddr as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// Reads `out.len()` bytes at device address `iova`, through the IOMMU.
    ///
    /// # Safety
    /// As [`DeviceContext::dma_write`]: no other thread may write these bytes
    /// during the call.
    pub unsafe fn dma_read(&mut self, iova: u64, out: &mut [u8]) -> Result<(), DmaFault> {
        let vaddr = self.dma_target(iova, out.len() as u64)?;
        // SAFETY: as in `dma_write`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::ptr::with_exposed_provenance::<u8>(vaddr as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    fn dma_target(&self, iova: u64, len: u64) -> Result<u64, DmaFault> {
        if !self.bus_master() {
            return Err(DmaFault::BusMasterOff);
        }
        self.state.translate(iova, len).ok_or(DmaFault::NotMapped { iova, len })
    }
}

/// Registers kept as plain bytes, for models whose registers are mostly
/// storage: read and write them by offset and width (little-endian).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterFile {
    bytes: Vec<u8>,
}

impl RegisterFile {
    /// `len` bytes of zeroed registers.
    pub fn new(len: usize) -> Self {
        RegisterFile { bytes: vec![0; len] }
    }

    /// The `width` bytes at `offset`, zero-extended.
    ///
    /// # Panics
    /// If they are outside the file or `width` is over 8.
    pub fn read(&self, offset: u64, width: usize) -> u64 {
        let at = offset as usize;
        let mut word = [0u8; 8];
        word[..width].copy_from_slice(&self.bytes[at..at + width]);
        u64::from_le_bytes(word)
    }

    /// Stores the low `width` bytes of `value` at `offset`.
    ///
    /// # Panics
    /// As [`RegisterFile::read`].
    pub fn write(&mut self, offset: u64, width: usize, value: u64) {
        let at = offset as usize;
        self.bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

impl State {
    /// The PCI command register of device `d` (`None`: not PCI, or no
    /// config space).
    pub(super) fn pci_command(&self, d: usize) -> Option<u16> {
        let device = &self.devices[d];
        if !device.flags.contains(crate::sys::DeviceFlags::PCI) {
            return None;
        }
        let config = self.backing[d].get(crate::sys::pci_region::CONFIG as usize)?;
        let mut word = [0u8; 2];
        (config.read(crate::pci::PCI_COMMAND as usize, &mut word) == 2).then(|| u16::from_le_bytes(word))
    }

    /// Whether device `d` may master the bus (always, if not PCI).
    pub(super) fn bus_master(&self, d: usize) -> bool {
        self.pci_command(d).is_none_or(|c| PciCommand::from_bits_retain(c).contains(PciCommand::BUS_MASTER))
    }

    /// Whether an MSI/MSI-X of device `d` is held back (bus mastering off).
    pub(super) fn msi_blocked(&self, d: usize, index: u32) -> bool {
        (index == pci_irq::MSI || index == pci_irq::MSIX) && !self.bus_master(d)
    }

    /// Whether region `index` of device `d` is its model's: every region of
    /// a modelled device but a PCI device's config space.
    pub(super) fn modelled(&self, d: usize, index: u32) -> bool {
        self.models[d].is_some() && !(index == crate::sys::pci_region::CONFIG && self.pci_command(d).is_some())
    }

    /// Runs `f` with device `d`'s model and a context for it.
    fn with_model<R>(&mut self, d: usize, f: impl FnOnce(&mut dyn DeviceModel, &mut DeviceContext<'_>) -> R) -> R {
        let mut model = self.models[d].take().expect("a modelled device has a model");
        let result = f(&mut *model, &mut DeviceContext { state: self, device: d });
        self.models[d] = Some(model);
        result
    }

    /// A register access to a modelled region: `Some(value)` writes it.
    pub(super) fn model_access(&mut self, d: usize, region: u32, offset: u64, width: usize, write: Option<u64>) -> u64 {
        self.with_model(d, |m, ctx| match write {
            Some(value) => {
                m.write(ctx, region, offset, width, value);
                0
            }
            None => m.read(ctx, region, offset, width),
        })
    }

    /// `pread`/`pwrite` of a modelled region, as register accesses of the
    /// widest aligned width that fits.
    pub(super) fn model_transfer(&mut self, d: usize, region: u32, offset: u64, read: Option<&mut [u8]>, write: &[u8]) {
        let len = read.as_ref().map_or(write.len(), |b| b.len());
        let mut out = read;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let width =
                [8usize, 4, 2, 1].into_iter().find(|&w| at.is_multiple_of(w as u64) && done + w <= len).unwrap_or(1);
            match out.as_deref_mut() {
                Some(buf) => {
                    let value = self.model_access(d, region, at, width, None);
                    buf[done..done + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
                None => {
                    let mut word = [0u8; 8];
                    word[..width].copy_from_slice(&write[done..done + width]);
                    self.model_access(d, region, at, width, Some(u64::from_le_bytes(word)));
                }
            }
            done += width;
        }
    }

    /// The driver reads or polls eventfd `fd`: the model of the device it
    /// belongs to, if any, ticks.
    pub(super) fn run_model_for(&mut self, fd: crate::kernel::Fd) {
        if !matches!(self.fds.get(&fd.raw()), Some(Object::EventFd { .. })) {
            return;
        }
        if let Some(d) = self.device_of_eventfd(fd).filter(|&d| self.models[d].is_some()) {
            self.with_model(d, |m, ctx| m.tick(ctx));
        }
    }
}
