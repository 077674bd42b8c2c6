//! The devices of a fake system, with presets that match the virtual boards.

use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use rustix::io::Errno;

use crate::name::Bus;
use crate::sys::{DeviceFlags, IrqFlags, RegionFlags};

/// A region of a fake device.
#[derive(Clone, Debug)]
pub struct FakeRegion {
    /// The flags its info reports.
    pub flags: RegionFlags,
    /// Its size.
    pub size: u64,
    /// If set, its info request fails with this errno (`EINVAL`: absent).
    pub info_errno: Option<Errno>,
    /// Initial contents (the rest is zero).
    pub contents: Vec<u8>,
    /// Sparse-mmap areas `(offset, size)`: when non-empty, the info carries
    /// the sparse-mmap capability and only these areas may be mapped.
    pub sparse: Vec<(u64, u64)>,
}

impl FakeRegion {
    fn new(flags: RegionFlags, size: u64) -> Self {
        FakeRegion { flags, size, info_errno: None, contents: Vec::new(), sparse: Vec::new() }
    }

    /// A readable, writable, mappable region of `size` bytes.
    pub fn mmio(size: u64) -> Self {
        Self::new(RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP, size)
    }

    /// A readable, writable region that cannot be mapped.
    pub fn unmappable(size: u64) -> Self {
        Self::new(RegionFlags::READ | RegionFlags::WRITE, size)
    }

    /// A region of size 0 (an unimplemented BAR).
    pub fn empty() -> Self {
        Self::new(RegionFlags::empty(), 0)
    }

    /// An index whose info request fails with EINVAL (the VGA index).
    pub fn absent() -> Self {
        FakeRegion { info_errno: Some(Errno::INVAL), ..Self::new(RegionFlags::empty(), 0) }
    }

    /// Sets the initial contents.
    pub fn with_contents(mut self, bytes: &[u8]) -> Self {
        self.contents = bytes.to_vec();
        self
    }

    /// Allows mapping only `areas` (`(offset, size)`), like a BAR whose MSI-X
    /// table may not be mapped; sets the CAPS flag.
    pub fn with_sparse_areas(mut self, areas: &[(u64, u64)]) -> Self {
        self.sparse = areas.to_vec();
        self.flags |= RegionFlags::CAPS;
        self
    }
}

/// A device of the fake system.
#[derive(Clone, Debug)]
pub struct FakeDevice {
    /// Its bus.
    pub bus: Bus,
    /// Its name.
    pub name: String,
    /// The driver it is bound to, if any.
    pub driver: Option<String>,
    /// Its IOMMU group, if it has one.
    pub group: Option<u32>,
    /// Whether its group is a noiommu group.
    pub noiommu: bool,
    /// Its device flags.
    pub flags: DeviceFlags,
    /// Its regions.
    pub regions: Vec<FakeRegion>,
    /// Its interrupt indexes: (flags, count), or `None` for an index whose
    /// info request fails with EINVAL.
    pub irqs: Vec<Option<(IrqFlags, u32)>>,
    /// Its `sriov_totalvfs` if it is an SR-IOV PF (0: it is not one); see
    /// [`FakeDevice::with_sriov_pf`].
    pub sriov_total_vfs: u16,
}

/// edu's configuration space as QEMU presents it through vfio-pci: vendor
/// 1234, device 11e8, the capability list bit, BAR0 32-bit memory, and an MSI
/// capability at 0x40.
fn edu_config() -> Vec<u8> {
    let mut c = vec![0u8; 0x100];
    c[0..4].copy_from_slice(&[0x34, 0x12, 0xe8, 0x11]);
    c[0x06] = 0x10; // status: capability list
    c[0x08] = 0x10; // revision
    c[0x0b] = 0xff; // class: other
    c[0x10..0x14].copy_from_slice(&0xfea0_0000u32.to_le_bytes());
    c[0x34] = 0x40;
    c[0x3d] = 0x01; // interrupt pin A
    c[0x40..0x44].copy_from_slice(&[0x05, 0x00, 0x80, 0x00]); // MSI, last, 64-bit
    c
}

impl FakeDevice {
    /// QEMU's edu as the virtual board shows it: BAR0 of 1 MiB (id register
    /// 0x010000ed), BARs 1-6 empty, config space unmappable (with an MSI
    /// capability), VGA absent, 5 IRQ indexes (MSI with one vector; ERR
    /// refused as on conventional PCI). Bound to vfio-pci, in `group`; no reset.
    pub fn edu(name: &str, group: u32) -> Self {
        let mut regions = vec![FakeRegion::mmio(0x10_0000).with_contents(&0x010000edu32.to_le_bytes())];
        regions.extend((1..=6).map(|_| FakeRegion::empty()));
        regions.push(FakeRegion::unmappable(0x100).with_contents(&edu_config()));
        regions.push(FakeRegion::absent());
        let eventfd = IrqFlags::EVENTFD;
        FakeDevice {
            bus: Bus::Pci,
            name: name.to_string(),
            driver: Some("vfio-pci".to_string()),
            group: Some(group),
            noiommu: false,
            flags: DeviceFlags::PCI,
            regions,
            irqs: vec![
                Some((eventfd | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED, 1)),
                Some((eventfd | IrqFlags::NORESIZE, 1)),
                Some((eventfd | IrqFlags::NORESIZE, 0)),
                None,
                Some((eventfd, 1)),
            ],
            sriov_total_vfs: 0,
        }
    }

    /// A platform device bound to vfio-platform in noiommu group `group`, with
    /// one 4 KiB mappable region and one level-triggered interrupt (like pl031).
    pub fn platform(name: &str, group: u32) -> Self {
        FakeDevice {
            bus: Bus::Platform,
            name: name.to_string(),
            driver: Some("vfio-platform".to_string()),
            group: Some(group),
            noiommu: true,
            flags: DeviceFlags::PLATFORM,
            regions: vec![FakeRegion::mmio(0x1000)],
            irqs: vec![Some((IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED, 1))],
            sriov_total_vfs: 0,
        }
    }

    /// Sets the regions.
    pub fn with_regions(mut self, regions: Vec<FakeRegion>) -> Self {
        self.regions = regions;
        self
    }

    /// Binds the device to `driver` (`None`: unbound).
    pub fn with_driver(mut self, driver: Option<&str>) -> Self {
        self.driver = driver.map(str::to_string);
        self
    }

    /// Sets the group (`None`: no IOMMU group).
    pub fn with_group(mut self, group: Option<u32>) -> Self {
        self.group = group;
        self
    }

    /// Makes the device an SR-IOV PF that may have `total_vfs` VFs (its
    /// `sriov_totalvfs`): writing N to its `sriov_numvfs` creates N VFs
    /// (`0000:01:00.0`'s are `0000:01:00.1`, `0000:01:00.2`..., each a PCI
    /// device with a 16 KiB BAR 0 and one MSI-X vector, in a new IOMMU
    /// group), bound to the PF's driver (vfio-pci captures them through
    /// their `driver_override`, and refuses unless its `enable_sriov` is
    /// on: [`FakeKernel::set_vfio_pci_enable_sriov`](super::FakeKernel::set_vfio_pci_enable_sriov)).
    /// Bound to vfio-pci, the PF guards its VFs with a VF token, as Linux
    /// does: a random one at first, set by `VFIO_DEVICE_FEATURE`.
    pub fn with_sriov_pf(mut self, total_vfs: u16) -> Self {
        self.sriov_total_vfs = total_vfs;
        self
    }

    /// Adds `VFIO_DEVICE_FLAGS_RESET`.
    pub fn with_reset(mut self) -> Self {
        self.flags |= DeviceFlags::RESET;
        self
    }

    pub(super) fn bound_to_vfio(&self) -> bool {
        self.driver.as_deref().is_some_and(|d| crate::sysfs::is_vfio_driver(d.as_bytes()))
    }
}
