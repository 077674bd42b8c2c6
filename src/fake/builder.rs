//! Describing a fake device from scratch: a PCI device by its IDs, BARs,
//! interrupts and capabilities (config space written as vfio-pci shows it),
//! or a platform device by its regions and interrupts.

use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use super::device::{FakeDevice, FakeRegion};
use crate::name::Bus;
use crate::sys::{DeviceFlags, IrqFlags, RegionFlags};

/// A BAR of a [`PciDeviceBuilder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeBar {
    size: u64,
    io: bool,
    wide: bool,
    prefetchable: bool,
    mappable: bool,
}

impl FakeBar {
    /// A 32-bit memory BAR of `size` bytes (a power of two), mappable.
    pub fn memory32(size: u64) -> Self {
        FakeBar { size, io: false, wide: false, prefetchable: false, mappable: true }
    }

    /// A 64-bit memory BAR: it takes its slot and the next one (which is
    /// then an empty region, as vfio-pci reports it).
    pub fn memory64(size: u64) -> Self {
        FakeBar { wide: true, ..Self::memory32(size) }
    }

    /// An I/O port BAR: readable and writable with `pread`/`pwrite`, not
    /// mappable.
    pub fn io(size: u64) -> Self {
        FakeBar { io: true, mappable: false, ..Self::memory32(size) }
    }

    /// Marks a memory BAR prefetchable.
    pub fn prefetchable(mut self) -> Self {
        self.prefetchable = true;
        self
    }

    /// A memory BAR vfio-pci will not let the driver map (smaller than a
    /// page on some kernels): reached with `pread`/`pwrite`.
    pub fn not_mappable(mut self) -> Self {
        self.mappable = false;
        self
    }
}

/// Builds a PCI [`FakeDevice`] bound to vfio-pci: config space (IDs, class,
/// BARs, interrupt pin, capability list) and the regions and interrupt
/// indexes vfio-pci reports for it.
///
/// ```
/// use dao_vfio::fake::{FakeBar, PciDeviceBuilder};
///
/// let nic = PciDeviceBuilder::new("0000:00:03.0", 7)
///     .ids(0x1af4, 0x1041)
///     .class(0x02_00_00)
///     .bar(0, FakeBar::memory64(0x4000).prefetchable())
///     .bar(2, FakeBar::memory32(0x1000))
///     .msix(4)
///     .build();
/// assert_eq!(nic.regions[0].size, 0x4000);
/// assert_eq!(nic.regions[1].size, 0, "the upper half of the 64-bit BAR");
/// ```
#[derive(Clone, Debug)]
pub struct PciDeviceBuilder {
    name: String,
    group: u32,
    vendor: u16,
    device: u16,
    class: u32,
    revision: u8,
    bars: [Option<FakeBar>; 6],
    intx: bool,
    msi: u32,
    msix: u32,
    capabilities: Vec<(u8, Vec<u8>)>,
    reset: bool,
    sriov_total_vfs: u16,
}

/// Where the capability list starts in config space.
const CAP_START: usize = 0x40;

impl PciDeviceBuilder {
    /// A device with no BARs and no interrupts, IDs 0000:0000, bound to
    /// vfio-pci in IOMMU group `group`.
    pub fn new(name: &str, group: u32) -> Self {
        PciDeviceBuilder {
            name: name.to_string(),
            group,
            vendor: 0,
            device: 0,
            class: 0xff_00_00,
            revision: 0,
            bars: [None; 6],
            intx: false,
            msi: 0,
            msix: 0,
            capabilities: Vec::new(),
            reset: false,
            sriov_total_vfs: 0,
        }
    }

    /// Makes it an SR-IOV PF that may have `total_vfs` VFs (see
    /// [`FakeDevice::with_sriov_pf`]).
    pub fn sriov_pf(mut self, total_vfs: u16) -> Self {
        self.sriov_total_vfs = total_vfs;
        self
    }

    /// Vendor and device IDs.
    pub fn ids(mut self, vendor: u16, device: u16) -> Self {
        (self.vendor, self.device) = (vendor, device);
        self
    }

    /// The 24-bit class code (class, subclass, programming interface).
    pub fn class(mut self, class: u32) -> Self {
        self.class = class & 0xff_ff_ff;
        self
    }

    /// The revision ID.
    pub fn revision(mut self, revision: u8) -> Self {
        self.revision = revision;
        self
    }

    /// BAR `index` (0-5).
    ///
    /// # Panics
    /// If `index` is past 5, a 64-bit BAR is at 5, the size is not a power
    /// of two, or the BAR overlaps the upper half of a 64-bit one (set-up bugs).
    pub fn bar(mut self, index: usize, bar: FakeBar) -> Self {
        assert!(index < 6, "PCI has BARs 0-5, not {index}");
        assert!(bar.size.is_power_of_two(), "BAR {index}: {:#x} bytes is not a power of two", bar.size);
        assert!(!(bar.wide && index == 5), "BAR 5 cannot be 64-bit: it would need a BAR 6");
        let after_wide = index > 0 && self.bars[index - 1].is_some_and(|b| b.wide);
        assert!(!after_wide, "BAR {index} is the upper half of 64-bit BAR {}", index - 1);
        assert!(
            !(bar.wide && self.bars[index + 1].is_some()),
            "64-bit BAR {index} needs BAR {} for its upper half",
            index + 1
        );
        self.bars[index] = Some(bar);
        self
    }

    /// A legacy interrupt (INTx, pin A): level-triggered, automasked.
    pub fn intx(mut self) -> Self {
        self.intx = true;
        self
    }

    /// An MSI capability with `vectors` vectors (1, 2, 4... 32).
    ///
    /// # Panics
    /// If `vectors` is not a power of two up to 32.
    pub fn msi(mut self, vectors: u32) -> Self {
        assert!(vectors.is_power_of_two() && vectors <= 32, "MSI offers 1, 2, 4, 8, 16 or 32 vectors, not {vectors}");
        self.msi = vectors;
        self
    }

    /// An MSI-X capability with `vectors` vectors (1-2048), its table in BAR 0.
    ///
    /// # Panics
    /// If `vectors` is 0 or over 2048.
    pub fn msix(mut self, vectors: u32) -> Self {
        assert!((1..=2048).contains(&vectors), "MSI-X offers 1 to 2048 vectors, not {vectors}");
        self.msix = vectors;
        self
    }

    /// Another capability: `id` and the bytes after its two-byte header.
    pub fn capability(mut self, id: u8, body: &[u8]) -> Self {
        self.capabilities.push((id, body.to_vec()));
        self
    }

    /// Adds `VFIO_DEVICE_FLAGS_RESET` (a function-level reset).
    pub fn reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// The capabilities in list order, with their bodies.
    fn all_capabilities(&self) -> Vec<(u8, Vec<u8>)> {
        let mut caps = Vec::new();
        if self.msi > 0 {
            // Message control: 64-bit, multiple message capable = log2(vectors).
            let control = 0x80u16 | ((self.msi.trailing_zeros() as u16) << 1);
            let mut body = vec![0u8; 12];
            body[..2].copy_from_slice(&control.to_le_bytes());
            caps.push((0x05, body));
        }
        if self.msix > 0 {
            // Table size - 1; the table at BAR 0 offset 0, the PBA after it.
            let mut body = vec![0u8; 10];
            body[..2].copy_from_slice(&((self.msix - 1) as u16).to_le_bytes());
            body[6..10].copy_from_slice(&(self.msix * 16).next_multiple_of(8).to_le_bytes());
            caps.push((0x11, body));
        }
        caps.extend(self.capabilities.iter().cloned());
        caps
    }

    /// The config space vfio-pci would show.
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x100];
        c[0..2].copy_from_slice(&self.vendor.to_le_bytes());
        c[2..4].copy_from_slice(&self.device.to_le_bytes());
        c[0x08] = self.revision;
        c[0x09..0x0c].copy_from_slice(&self.class.to_le_bytes()[..3]);
        // Each BAR at an address aligned to its size, from 0xe000_0000 up.
        let mut address = 0xe000_0000u64;
        for (i, bar) in self.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            address = address.next_multiple_of(bar.size.max(16));
            let low = if bar.io {
                (address as u32 & 0xffff_fffc) | 1
            } else {
                address as u32 | if bar.wide { 0b100 } else { 0 } | if bar.prefetchable { 0b1000 } else { 0 }
            };
            c[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&low.to_le_bytes());
            if bar.wide {
                c[0x14 + 4 * i..0x18 + 4 * i].copy_from_slice(&((address >> 32) as u32).to_le_bytes());
            }
            address += bar.size;
        }
        if self.intx {
            c[0x3d] = 1; // pin A
        }
        let caps = self.all_capabilities();
        let mut at = CAP_START;
        if !caps.is_empty() {
            c[0x06] |= 0x10; // status: capability list
            c[0x34] = at as u8;
        }
        for (n, (id, body)) in caps.iter().enumerate() {
            let len = (2 + body.len()).next_multiple_of(4);
            assert!(at + len <= 0x100, "fake device: the capabilities do not fit in config space");
            let next = if n + 1 < caps.len() { at + len } else { 0 };
            c[at] = *id;
            c[at + 1] = next as u8;
            c[at + 2..at + 2 + body.len()].copy_from_slice(body);
            at += len;
        }
        c
    }

    /// The device.
    pub fn build(self) -> FakeDevice {
        let mut regions: Vec<FakeRegion> = Vec::new();
        for i in 0..6 {
            regions.push(match self.bars[i] {
                Some(bar) => {
                    let mut flags = RegionFlags::READ | RegionFlags::WRITE;
                    if bar.mappable {
                        flags |= RegionFlags::MMAP;
                    }
                    FakeRegion { flags, size: bar.size, ..FakeRegion::empty() }
                }
                None => FakeRegion::empty(),
            });
        }
        regions.push(FakeRegion::empty()); // no expansion ROM
        regions.push(FakeRegion::unmappable(0x100).with_contents(&self.config()));
        regions.push(FakeRegion::absent()); // not a VGA device
        let eventfd = IrqFlags::EVENTFD;
        let irqs = vec![
            Some((eventfd | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED, u32::from(self.intx))),
            Some((eventfd | IrqFlags::NORESIZE, self.msi)),
            Some((eventfd | IrqFlags::NORESIZE, self.msix)),
            None, // ERR: conventional PCI
            Some((eventfd, 1)),
        ];
        let mut flags = DeviceFlags::PCI;
        if self.reset {
            flags |= DeviceFlags::RESET;
        }
        FakeDevice {
            bus: Bus::Pci,
            name: self.name,
            driver: Some("vfio-pci".to_string()),
            group: Some(self.group),
            noiommu: false,
            flags,
            regions,
            irqs,
            sriov_total_vfs: self.sriov_total_vfs,
        }
    }
}

/// Builds a platform [`FakeDevice`] bound to vfio-platform: its regions
/// (the device tree's `reg` entries, in order) and interrupts.
///
/// ```
/// use dao_vfio::fake::PlatformDeviceBuilder;
///
/// let rtc = PlatformDeviceBuilder::new("9010000.pl031", 1).region(0x1000).level_irq().build();
/// assert!(rtc.noiommu);
/// ```
#[derive(Clone, Debug)]
pub struct PlatformDeviceBuilder {
    name: String,
    group: u32,
    noiommu: bool,
    regions: Vec<FakeRegion>,
    irqs: Vec<Option<(IrqFlags, u32)>>,
    reset: bool,
}

impl PlatformDeviceBuilder {
    /// A device with no regions and no interrupts in noiommu group `group`
    /// (the boards' platform devices have no IOMMU).
    pub fn new(name: &str, group: u32) -> Self {
        PlatformDeviceBuilder {
            name: name.to_string(),
            group,
            noiommu: true,
            regions: Vec::new(),
            irqs: Vec::new(),
            reset: false,
        }
    }

    /// Puts the device behind an IOMMU (an ordinary group: DMA mappings work).
    pub fn behind_iommu(mut self) -> Self {
        self.noiommu = false;
        self
    }

    /// A mappable register region of `size` bytes.
    pub fn region(mut self, size: u64) -> Self {
        self.regions.push(FakeRegion::mmio(size));
        self
    }

    /// A region that cannot be mapped (smaller than a page, like fw-cfg's):
    /// reached with `pread`/`pwrite`.
    pub fn unmappable_region(mut self, size: u64) -> Self {
        self.regions.push(FakeRegion::unmappable(size));
        self
    }

    /// A level-triggered interrupt: automasked, unmasked by the driver.
    pub fn level_irq(mut self) -> Self {
        self.irqs.push(Some((IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED, 1)));
        self
    }

    /// An edge-triggered interrupt.
    pub fn edge_irq(mut self) -> Self {
        self.irqs.push(Some((IrqFlags::EVENTFD | IrqFlags::MASKABLE, 1)));
        self
    }

    /// Adds `VFIO_DEVICE_FLAGS_RESET` (a reset driver exists).
    pub fn reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// The device.
    pub fn build(self) -> FakeDevice {
        let mut flags = DeviceFlags::PLATFORM;
        if self.reset {
            flags |= DeviceFlags::RESET;
        }
        FakeDevice {
            bus: Bus::Platform,
            name: self.name,
            driver: Some("vfio-platform".to_string()),
            group: Some(self.group),
            noiommu: self.noiommu,
            flags,
            regions: self.regions,
            irqs: self.irqs,
            sriov_total_vfs: 0,
        }
    }
}
