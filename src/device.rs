//! An open device: its fd, its description, its regions, and the view the
//! context hands out.

use rustix::io::Errno;

use crate::backend::Backend;
use crate::capchain;
use crate::error::{Error, ErrorKind, Step};
use crate::irq::{self, Interrupt};
use crate::kernel::{Fd, Kernel, Protection, Request, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::regblock::RegisterBlock;
use crate::region::{AccessError, Region, RegionKind};
use crate::sys::{self, pci_region, DeviceFlags, IrqFlags, RegionFlags};
use crate::sysfs;

/// Regions recorded per device: a PCI device has 9, platform devices
/// usually 1 or 2. Regions past this index are not set up (see
/// [`Device::num_regions`]).
pub const MAX_REGIONS: usize = 16;

/// One interrupt index of a device, as `VFIO_DEVICE_GET_IRQ_INFO` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqIndex {
    index: u32,
    flags: IrqFlags,
    count: u32,
}

impl IrqIndex {
    /// The index (for PCI see [`crate::sys::pci_irq`]).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The kernel's flags (eventfd, maskable, automasked = level triggered).
    pub fn flags(&self) -> IrqFlags {
        self.flags
    }

    /// The number of vectors (0 when the device does not support this index,
    /// including when the kernel refuses to describe it with `EINVAL`).
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// What a context keeps of an open device.
///
/// `repr(C)`, with the scalars between the two tables: a new state is
/// written in its table slot with both tables empty, and when their two
/// zero lengths were neighbours (as Rust's own layout makes them), LLVM
/// zeroed the 3 KB of uninitialised table storage between them in one
/// `memset` on every setup.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct DeviceState {
    regions: heapless::Vec<Region, MAX_REGIONS>,
    // Widest first: `repr(C)` pads no more than Rust's own layout did (one
    // byte before `bound`; the size is unchanged).
    pub(crate) serial: u64,
    /// Its IOMMU group, for a device opened through its group; unused (0)
    /// for one opened through its cdev (read when asked: see [`Device::group`]).
    group: u32,
    fd: Fd,
    flags: DeviceFlags,
    num_regions: u32,
    num_irqs: u32,
    pub(crate) name: DeviceName,
    pub(crate) bus: Bus,
    pub(crate) noiommu: bool,
    /// The interface it was opened through.
    pub(crate) via: Backend,
    /// Eventfds bound to interrupt vectors.
    pub(crate) bound: irq::Bindings,
}

/// Where a device is and how it was opened.
pub(crate) struct Placement {
    pub(crate) name: DeviceName,
    pub(crate) bus: Bus,
    /// Its IOMMU group: known when it is opened through its group (`via`
    /// [`Backend::Legacy`]), not read for one opened through its cdev.
    pub(crate) group: Option<u32>,
    pub(crate) noiommu: bool,
    /// [`Backend::Legacy`] (from its group) or [`Backend::Iommufd`] (its cdev).
    pub(crate) via: Backend,
    pub(crate) serial: u64,
}

impl DeviceState {
    /// A device just opened (its fd taken from its group or its cdev), not
    /// yet described: see [`DeviceState::describe`].
    pub(crate) fn new(at: Placement, fd: Fd) -> Self {
        DeviceState {
            serial: at.serial,
            name: at.name,
            bus: at.bus,
            group: at.group.unwrap_or(0),
            noiommu: at.noiommu,
            via: at.via,
            fd,
            flags: DeviceFlags::empty(),
            num_regions: 0,
            num_irqs: 0,
            regions: heapless::Vec::new(),
            bound: heapless::Vec::new(),
        }
    }

    /// Reads the device's description and maps its regions. On error the
    /// caller releases the state (which unmaps what was mapped and closes the
    /// fd).
    pub(crate) fn describe<K: Kernel>(&mut self, kernel: &K) -> Result<(), Error> {
        let mut info = sys::DeviceInfo { argsz: sys::argsz::<sys::DeviceInfo>(), ..Default::default() };
        kernel
            .ioctl(&TOKEN, self.fd, Request::DeviceGetInfo(&mut info))
            .map_err(|e| Error::syscall(Step::DeviceInfo, e))?;
        self.flags = DeviceFlags::from_bits_retain(info.flags);
        let expected = match self.bus {
            Bus::Pci => DeviceFlags::PCI,
            Bus::Platform => DeviceFlags::PLATFORM | DeviceFlags::AMBA,
        };
        if !self.flags.intersects(expected) {
            return Err(Error::new(ErrorKind::BusMismatch { bus: self.bus }));
        }
        self.num_regions = info.num_regions;
        self.num_irqs = info.num_irqs;
        for index in 0..info.num_regions.min(MAX_REGIONS as u32) {
            // vfio-pci never maps these two, and most drivers never ask for
            // them: describing them at every setup would cost two calls.
            let region = if self.bus == Bus::Pci && (index == pci_region::ROM || index == pci_region::VGA) {
                Region::unmapped(index, RegionKind::Deferred, RegionFlags::empty(), 0, 0)
            } else {
                self.set_up_region(kernel, index)?
            };
            // Cannot overflow: the loop stops at the capacity.
            let _ = self.regions.push(region);
        }
        // Interrupt indexes are described when first asked for
        // (`Device::irq`, `Context::irq_enable`): many drivers never use some.
        Ok(())
    }

    /// Describes region `index` and maps it if the kernel allows.
    fn set_up_region<K: Kernel>(&self, kernel: &K, index: u32) -> Result<Region, Error> {
        let Some(info) = region_info(kernel, self.fd, index)? else {
            return Ok(unmapped(index, None));
        };
        let flags = RegionFlags::from_bits_retain(info.flags);
        let prot = Protection { read: flags.contains(RegionFlags::READ), write: flags.contains(RegionFlags::WRITE) };
        if info.size == 0 || !flags.contains(RegionFlags::MMAP) || !(prot.read || prot.write) {
            return Ok(unmapped(index, Some(&info)));
        }
        if flags.contains(RegionFlags::CAPS) {
            if let Some(region) = self.set_up_sparse_region(kernel, index, flags, &info)? {
                return Ok(region);
            }
        }
        let len = usize::try_from(info.size).map_err(|_| Error::syscall(Step::Mmap(index), Errno::NOMEM))?;
        let base = match kernel.mmap(&TOKEN, self.fd, info.offset, len, prot) {
            Ok(base) => base,
            // A region with capabilities may allow mapping only parts of it
            // (sparse mmap, e.g. around an MSI-X table); until those parts
            // are mapped one by one, such a region is reached with pread/pwrite.
            Err(Errno::INVAL | Errno::PERM) if flags.contains(RegionFlags::CAPS) => {
                return Ok(Region::unmapped(index, RegionKind::Unmapped, flags, info.size, info.offset));
            }
            Err(e) => return Err(Error::syscall(Step::Mmap(index), e)),
        };
        // SAFETY: `base` is a fresh mapping of `len` bytes with `prot` (the
        // `Kernel` contract); it is unmapped only in `release`, after the
        // region is taken out of this state.
        Ok(unsafe { Region::mapped(index, flags, info.size, info.offset, base, len, kernel.emulation(&TOKEN)) })
    }

    /// With the sparse-mmap capability, maps only the areas it names.
    /// `None`: the region has no such capability (map it whole).
    fn set_up_sparse_region<K: Kernel>(
        &self,
        kernel: &K,
        index: u32,
        flags: RegionFlags,
        info: &sys::RegionInfo,
    ) -> Result<Option<Region>, Error> {
        let mut buf = sys::InfoBuffer::region_info(index);
        kernel
            .ioctl(&TOKEN, self.fd, Request::DeviceGetRegionInfoCaps(&mut buf))
            .map_err(|e| Error::syscall(Step::RegionInfo(index), e))?;
        let head = core::mem::size_of::<sys::RegionInfo>();
        let first = buf.u32_at(12);
        if first == 0 {
            return Ok(None);
        }
        let cap = capchain::find(buf.filled(), first, head, sys::REGION_CAP_SPARSE_MMAP)
            .map_err(|e| Error::new(ErrorKind::CapabilityChain(e)))?;
        let Some(cap) = cap else { return Ok(None) };
        let quad = |at: usize| {
            cap.body.get(at..at + 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        let areas = cap.body.get(0..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let prot = Protection { read: flags.contains(RegionFlags::READ), write: flags.contains(RegionFlags::WRITE) };
        let mut region = Region::sparse(index, flags, info.size, info.offset, kernel.emulation(&TOKEN));
        for i in 0..areas as usize {
            let (Some(offset), Some(size)) = (quad(8 + 16 * i), quad(16 + 16 * i)) else { break };
            let inside = offset.checked_add(size).is_some_and(|end| end <= info.size);
            let fd_offset = info.offset.checked_add(offset);
            let (Ok(area_offset), Ok(len), Some(fd_offset)) =
                (usize::try_from(offset), usize::try_from(size), fd_offset)
            else {
                continue;
            };
            if size == 0 || !inside {
                continue;
            }
            let mapped =
                kernel.mmap(&TOKEN, self.fd, fd_offset, len, prot).map_err(|e| Error::syscall(Step::Mmap(index), e));
            let base = match mapped {
                Ok(base) => base,
                Err(e) => {
                    let _ = unmap_region(kernel, &mut region);
                    return Err(e);
                }
            };
            // SAFETY: `base` is a fresh mapping of `size` bytes at `offset` of
            // this region with `prot`; it is unmapped only through
            // `take_mappings`.
            if !unsafe { region.add_area(area_offset, len, base) } {
                // More areas than recorded: leave the rest to pread/pwrite.
                // SAFETY: mapped just above and not recorded anywhere.
                let _ = unsafe { kernel.munmap(&TOKEN, base, len) };
                break;
            }
        }
        Ok(Some(region))
    }

    /// Its IOMMU group, if known: for a device opened through its group.
    pub(crate) fn known_group(&self) -> Option<u32> {
        (self.via == Backend::Legacy).then_some(self.group)
    }

    /// Unmaps every region, closes the device fd, then the interrupt eventfds
    /// (closing the device disables its interrupts). Everything is released
    /// even if a step fails; the first failure is returned. It runs where the
    /// state lies (moving kilobytes out of the table first would cost every
    /// free a copy); the caller drops the state right after.
    pub(crate) fn release<K: Kernel>(&mut self, kernel: &K) -> Result<(), Error> {
        let mut result = Ok(());
        for region in self.regions.iter_mut() {
            result = result.and(unmap_region(kernel, region));
        }
        self.regions.clear();
        kernel.close(&TOKEN, self.fd);
        irq::close_all(kernel, &mut self.bound);
        result
    }

    pub(crate) fn fd(&self) -> Fd {
        self.fd
    }

    /// Describes interrupt `index` (`VFIO_DEVICE_GET_IRQ_INFO`, one system
    /// call; nothing is kept). An index the device reports but the kernel
    /// refuses to describe with `EINVAL` (vfio-pci's ERR index on
    /// conventional PCI) has no vectors.
    pub(crate) fn describe_irq<K: Kernel>(&self, kernel: &K, index: u32) -> Result<IrqIndex, Error> {
        if index >= self.num_irqs {
            return Err(Error::new(ErrorKind::NoSuchIrq { index }).for_device(self.name));
        }
        let mut irq = sys::IrqInfo { argsz: sys::argsz::<sys::IrqInfo>(), index, ..Default::default() };
        match kernel.ioctl(&TOKEN, self.fd, Request::DeviceGetIrqInfo(&mut irq)) {
            Ok(_) => Ok(IrqIndex { index, flags: IrqFlags::from_bits_retain(irq.flags), count: irq.count }),
            Err(Errno::INVAL) => Ok(IrqIndex { index, flags: IrqFlags::empty(), count: 0 }),
            Err(e) => Err(Error::syscall(Step::IrqInfo(index), e).for_device(self.name)),
        }
    }

    pub(crate) fn view<'a, K: Kernel>(&'a self, kernel: &'a K) -> Device<'a, K> {
        Device { kernel, state: self }
    }
}

/// The kernel's description of region `index` (`VFIO_DEVICE_GET_REGION_INFO`);
/// `None`: no region there (`EINVAL`, the VGA index of a non-VGA device).
fn region_info<K: Kernel>(kernel: &K, fd: Fd, index: u32) -> Result<Option<sys::RegionInfo>, Error> {
    let mut info = sys::RegionInfo { argsz: sys::argsz::<sys::RegionInfo>(), index, ..Default::default() };
    match kernel.ioctl(&TOKEN, fd, Request::DeviceGetRegionInfo(&mut info)) {
        Ok(_) => Ok(Some(info)),
        Err(Errno::INVAL) => Ok(None),
        Err(e) => Err(Error::syscall(Step::RegionInfo(index), e)),
    }
}

/// Region `index` as described (`None`: absent), not mapped.
fn unmapped(index: u32, info: Option<&sys::RegionInfo>) -> Region {
    match info {
        None => Region::unmapped(index, RegionKind::Absent, RegionFlags::empty(), 0, 0),
        Some(info) => {
            let flags = RegionFlags::from_bits_retain(info.flags);
            let kind = if info.size == 0 { RegionKind::Empty } else { RegionKind::Unmapped };
            Region::unmapped(index, kind, flags, info.size, info.offset)
        }
    }
}

/// Unmaps every mapping of a region; all are attempted, the first failure is returned.
fn unmap_region<K: Kernel>(kernel: &K, region: &mut Region) -> Result<(), Error> {
    let mut result = Ok(());
    for (base, len) in region.take_mappings() {
        // SAFETY: the mapping came from `kernel.mmap` when the region was set
        // up, and the region no longer points to it.
        if let Err(e) = unsafe { kernel.munmap(&TOKEN, base, len) } {
            result = result.and(Err(Error::syscall(Step::Munmap(region.index()), e)));
        }
    }
    result
}

/// An open device, borrowed from its [`Context`](crate::Context): while any
/// `Device` or [`Region`] borrowed from it lives, the context cannot free the
/// device or close.
///
/// Everything here only reads the context, so one `Device` (and its regions)
/// can be used from several threads at once when the kernel type is `Sync`
/// (the real one is).
pub struct Device<'a, K: Kernel> {
    kernel: &'a K,
    state: &'a DeviceState,
}

impl<K: Kernel> Clone for Device<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Kernel> Copy for Device<'_, K> {}

impl<K: Kernel> core::fmt::Debug for Device<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.state.name)
            .field("bus", &self.state.bus)
            .field("group", &self.state.known_group())
            .field("flags", &self.state.flags)
            .finish_non_exhaustive()
    }
}

impl<'a, K: Kernel> Device<'a, K> {
    /// The device's name.
    pub fn name(&self) -> &'a str {
        self.state.name.as_str()
    }

    /// The bus it was found on.
    pub fn bus(&self) -> Bus {
        self.state.bus
    }

    /// Its IOMMU group number. Known from setup for a device opened through
    /// its group; for one opened through its cdev (iommufd, whose interface
    /// has no groups) it is read from sysfs when asked, one `readlink` per call.
    pub fn group(&self) -> Result<u32, Error> {
        if let Some(group) = self.state.known_group() {
            return Ok(group);
        }
        match sysfs::group_of(self.kernel, self.state.bus, &self.state.name) {
            Ok(Some(group)) => Ok(group),
            // No `iommu_group` link: not for a device bound and held open.
            Ok(None) => Err(Error::syscall(Step::ReadSysfs, Errno::NOENT).for_device(self.state.name)),
            Err(e) => Err(e.for_device(self.state.name)),
        }
    }

    /// Its IOMMU group, if known without asking the kernel (for the C
    /// interface's `group_fd`).
    #[cfg(feature = "capi")]
    pub(crate) fn known_group(&self) -> Option<u32> {
        self.state.known_group()
    }

    /// Whether its group is a noiommu group (no isolation, no DMA mapping).
    pub fn is_noiommu(&self) -> bool {
        self.state.noiommu
    }

    /// The interface it was opened through: [`Backend::Iommufd`] (its cdev)
    /// or [`Backend::Legacy`] (its group; always so for noiommu devices).
    pub fn backend(&self) -> Backend {
        self.state.via
    }

    /// The device fd, for the caller's own ioctls. The context owns it: do
    /// not close it.
    pub fn fd(&self) -> Fd {
        self.state.fd
    }

    /// The kernel's device flags (PCI, PLATFORM, RESET, ...).
    pub fn flags(&self) -> DeviceFlags {
        self.state.flags
    }

    /// The number of regions the kernel reports. Only the first
    /// [`MAX_REGIONS`] are set up.
    pub fn num_regions(&self) -> u32 {
        self.state.num_regions
    }

    /// The number of interrupt indexes the kernel reports.
    pub fn num_irqs(&self) -> u32 {
        self.state.num_irqs
    }

    /// Every region that was set up, by index (a PCI device's ROM and VGA
    /// ranges are [`RegionKind::Deferred`]: see [`Device::describe_region`]).
    pub fn regions(&self) -> &'a [Region] {
        &self.state.regions
    }

    /// Region `index` (for PCI see [`crate::sys::pci_region`]).
    pub fn region(&self, index: u32) -> Result<&'a Region, Error> {
        self.state
            .regions
            .get(index as usize)
            .ok_or(self.error(ErrorKind::NoSuchRegion { index, count: self.state.num_regions }))
    }

    /// A typed register block over region `index` at `offset`: what
    /// [`Region::block`] gives, with a refusal that names this device and
    /// the region (a bare [`AccessError`](crate::AccessError) cannot: a
    /// region does not know its device). Checked once here; keep the block
    /// for the data path.
    pub fn block<T: RegisterBlock>(&self, index: u32, offset: usize) -> Result<&'a T, Error> {
        self.region(index)?.block::<T>(offset).map_err(|e| self.access_error(index, e))
    }

    /// Like [`Device::block`], with the offset's alignment for `T` checked
    /// at compile time (see [`Region::block_at`]).
    pub fn block_at<T: RegisterBlock, const OFFSET: usize>(&self, index: u32) -> Result<&'a T, Error> {
        self.region(index)?.block_at::<T, OFFSET>().map_err(|e| self.access_error(index, e))
    }

    /// The error for a refused access to region `index` of this device:
    /// [`ErrorKind::RegionAccess`], naming both. For a `map_err` after a
    /// [`Region`] accessor, whose [`AccessError`](crate::AccessError) turned
    /// into an [`Error`] by `?` says neither:
    /// `bar.read32(0x40).map_err(|e| dev.access_error(0, e))?`.
    pub fn access_error(&self, index: u32, error: AccessError) -> Error {
        self.error(ErrorKind::RegionAccess { region: index, error })
    }

    /// Interrupt index `index` (for PCI see [`crate::sys::pci_irq`]), as the
    /// kernel describes it. Setup does not read these (a driver may never
    /// use some): each call asks the kernel, one system call. An index past
    /// [`Device::num_irqs`] is [`ErrorKind::NoSuchIrq`].
    pub fn irq(&self, index: u32) -> Result<IrqIndex, Error> {
        self.state.describe_irq(self.kernel, index)
    }

    /// Every interrupt index, as the kernel describes it (one system call
    /// each, see [`Device::irq`]).
    pub fn irqs(&self) -> impl Iterator<Item = Result<IrqIndex, Error>> + 'a {
        let (state, kernel) = (self.state, self.kernel);
        (0..state.num_irqs).map(move |index| state.describe_irq(kernel, index))
    }

    pub(crate) fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind).for_device(self.state.name)
    }

    pub(crate) fn kernel(&self) -> &'a K {
        self.kernel
    }

    pub(crate) fn name_value(&self) -> DeviceName {
        self.state.name
    }

    /// The eventfd bound to `vector` of interrupt `index` (see
    /// [`Context::irq_enable`](crate::Context::irq_enable)).
    pub fn interrupt(&self, index: u32, vector: u32) -> Result<Interrupt<'a, K>, Error> {
        let binding = self.state.bound.iter().find(|b| b.index == index && b.vector == vector);
        let binding = *binding.ok_or(self.error(ErrorKind::IrqNotEnabled { index, vector }))?;
        Ok(Interrupt { kernel: self.kernel, device: self.state.fd, name: self.state.name, binding })
    }

    /// Checks that `len` bytes at `offset` of region `index` may be moved in
    /// the direction given; returns the fd offset. A deferred region is
    /// described first.
    fn transfer(&self, index: u32, offset: u64, len: usize, write: bool) -> Result<u64, Error> {
        let region = self.region(index)?;
        let described;
        let region = if region.kind() == RegionKind::Deferred {
            described = self.describe_region(index)?;
            &described
        } else {
            region
        };
        let refuse = |error| Err(self.access_error(index, error));
        let needed = if write { RegionFlags::WRITE } else { RegionFlags::READ };
        if matches!(region.kind(), RegionKind::Absent | RegionKind::Empty) || !region.flags().contains(needed) {
            return refuse(if write { AccessError::NotWritable } else { AccessError::NotReadable });
        }
        let out_of_bounds = || AccessError::OutOfBounds {
            offset: usize::try_from(offset).unwrap_or(usize::MAX),
            width: len,
            len: usize::try_from(region.size()).unwrap_or(usize::MAX),
        };
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > region.size()) {
            return refuse(out_of_bounds());
        }
        region.fd_offset().checked_add(offset).ok_or(self.access_error(index, out_of_bounds()))
    }

    /// Region `index` as the kernel describes it now (one
    /// `VFIO_DEVICE_GET_REGION_INFO`), not mapped: how to learn the size and
    /// flags of a [`RegionKind::Deferred`] region (a PCI device's ROM or VGA
    /// ranges). The result is [`RegionKind::Absent`], [`RegionKind::Empty`]
    /// or [`RegionKind::Unmapped`] (also for a region setup mapped: this copy
    /// maps nothing; use [`Device::region`] for access). `NoSuchRegion` past
    /// the regions set up.
    pub fn describe_region(&self, index: u32) -> Result<Region, Error> {
        self.region(index)?;
        let info = region_info(self.kernel, self.state.fd, index).map_err(|e| e.for_device(self.state.name))?;
        Ok(unmapped(index, info.as_ref()))
    }

    /// Reads `buf.len()` bytes at `offset` of region `index` with `pread` on
    /// the device fd: the way to reach regions that cannot be mapped (PCI
    /// config space, fw-cfg's 24 bytes). Makes a system call (two for a
    /// [`RegionKind::Deferred`] region, described first).
    pub fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let at = self.transfer(index, offset, buf.len(), false)?;
        let done = self
            .kernel
            .pread(&TOKEN, self.state.fd, buf, at)
            .map_err(|e| Error::syscall(Step::Pread(index), e).for_device(self.state.name))?;
        if done != buf.len() {
            return Err(self.error(ErrorKind::ShortTransfer { region: index, done, wanted: buf.len() }));
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of region `index` with `pwrite` on the device
    /// fd. Makes a system call (two for a [`RegionKind::Deferred`] region).
    pub fn write_region(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let at = self.transfer(index, offset, buf.len(), true)?;
        let done = self
            .kernel
            .pwrite(&TOKEN, self.state.fd, buf, at)
            .map_err(|e| Error::syscall(Step::Pwrite(index), e).for_device(self.state.name))?;
        if done != buf.len() {
            return Err(self.error(ErrorKind::ShortTransfer { region: index, done, wanted: buf.len() }));
        }
        Ok(())
    }
}
