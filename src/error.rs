//! Errors: small, `Copy`, allocation-free, and each says what to do next.

use core::fmt;

use rustix::io::Errno;

use crate::name::{Bus, DeviceName, NameError};
pub use crate::privilege::{DevNode, MemlockCharge};
use crate::region::AccessError;

/// The system call or kernel request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// `open("/dev/vfio/vfio")`.
    OpenContainer,
    /// `VFIO_GET_API_VERSION`.
    ApiVersion,
    /// `VFIO_CHECK_EXTENSION`.
    CheckExtension,
    /// `VFIO_SET_IOMMU`.
    SetIommu,
    /// `readlink` of a sysfs entry.
    ReadSysfs,
    /// `open("/dev/vfio/N")`.
    OpenGroup,
    /// `VFIO_GROUP_GET_STATUS`.
    GroupStatus,
    /// `VFIO_GROUP_SET_CONTAINER`.
    SetContainer,
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    UnsetContainer,
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GetDeviceFd,
    /// `VFIO_DEVICE_GET_INFO`.
    DeviceInfo,
    /// `VFIO_DEVICE_GET_REGION_INFO` for this region index.
    RegionInfo(u32),
    /// `VFIO_DEVICE_GET_IRQ_INFO` for this interrupt index.
    IrqInfo(u32),
    /// `mmap` of this region.
    Mmap(u32),
    /// `munmap` of this region.
    Munmap(u32),
    /// `pread` from this region.
    Pread(u32),
    /// `pwrite` to this region.
    Pwrite(u32),
    /// `eventfd` for an interrupt.
    Eventfd,
    /// `VFIO_DEVICE_SET_IRQS` for this interrupt index.
    SetIrqs(u32),
    /// `read` of an interrupt's eventfd.
    ReadEventfd,
    /// `poll` of an interrupt's eventfd.
    Poll,
    /// `VFIO_DEVICE_RESET`.
    Reset,
    /// `VFIO_IOMMU_GET_INFO`.
    IommuInfo,
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma,
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma,
    /// `mmap` of anonymous memory for a DMA buffer.
    MapMemory,
    /// `mlock` of a DMA buffer.
    LockMemory,
    /// `munmap` of a DMA buffer.
    UnmapMemory,
    /// `read` of a sysfs attribute (`driver_override`).
    ReadSysfsFile,
    /// `write` of a sysfs attribute (`driver_override`, `bind`, `unbind`,
    /// `drivers_probe`).
    WriteSysfs,
    /// Listing a sysfs directory (`getdents64`).
    ListSysfs,
    /// `open("/dev/iommu")`.
    OpenIommufd,
    /// `IOMMU_IOAS_ALLOC`.
    IoasAlloc,
    /// `IOMMU_IOAS_IOVA_RANGES`.
    IoasIovaRanges,
    /// `IOMMU_IOAS_MAP`.
    IoasMap,
    /// `IOMMU_IOAS_UNMAP`.
    IoasUnmap,
    /// Listing the device's `vfio-dev` sysfs directory for its cdev.
    FindCdev,
    /// `open("/dev/vfio/devices/vfioN")`, and the check that follows that
    /// the node opened is still the device's (`vfioN` in its sysfs
    /// `vfio-dev` directory; `ENODEV` when it is not).
    OpenCdev,
    /// `VFIO_DEVICE_BIND_IOMMUFD`.
    BindIommufd,
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    AttachIoas,
    /// `stat` of a device node ([`crate::grant`]).
    StatNode(DevNode),
    /// `chown` of a device node ([`crate::grant`]).
    Chown(DevNode),
    /// Reading `/etc/passwd` or `/etc/group` ([`crate::grant`]).
    ReadAccounts,
    /// `VFIO_DEVICE_FEATURE` setting a PF's VF token.
    SetVfToken,
    /// Reading the device's SR-IOV state in sysfs (`physfn`, `sriov_*`).
    ReadSriov,
}

/// How a region is named in a message: PCI's region indices are fixed
/// (vfio-pci: BARs 0-5, ROM 6, config space 7, VGA 8), a platform device's
/// are its resources in order.
struct RegionName {
    index: u32,
    /// `Some(true)`: a PCI device; `Some(false)`: not one; `None`: unknown.
    pci: Option<bool>,
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pci_name = match self.index {
            0..=5 => Some("BAR"),
            6 => Some("the expansion ROM"),
            7 => Some("config space"),
            8 => Some("the VGA region"),
            _ => None,
        };
        match (self.pci, pci_name) {
            (Some(true), Some("BAR")) => write!(f, "BAR {}", self.index),
            (Some(true), Some(name)) => write!(f, "{name} (region {})", self.index),
            (None, Some("BAR")) => write!(f, "region {0} (BAR {0} on a PCI device)", self.index),
            (None, Some(name)) => write!(f, "region {} ({name} on a PCI device)", self.index),
            _ => write!(f, "region {}", self.index),
        }
    }
}

impl Step {
    /// Writes the step, naming regions as the device's bus does (`pci`:
    /// whether the device is a PCI device, if known).
    fn write(&self, f: &mut fmt::Formatter<'_>, pci: Option<bool>) -> fmt::Result {
        let region = |index| RegionName { index, pci };
        match *self {
            Step::OpenContainer => f.write_str("opening /dev/vfio/vfio"),
            Step::ApiVersion => f.write_str("VFIO_GET_API_VERSION"),
            Step::CheckExtension => f.write_str("VFIO_CHECK_EXTENSION"),
            Step::SetIommu => f.write_str("VFIO_SET_IOMMU"),
            Step::ReadSysfs => f.write_str("reading sysfs"),
            Step::OpenGroup => f.write_str("opening the VFIO group node"),
            Step::GroupStatus => f.write_str("VFIO_GROUP_GET_STATUS"),
            Step::SetContainer => f.write_str("VFIO_GROUP_SET_CONTAINER"),
            Step::UnsetContainer => f.write_str("VFIO_GROUP_UNSET_CONTAINER"),
            Step::GetDeviceFd => f.write_str("VFIO_GROUP_GET_DEVICE_FD"),
            Step::DeviceInfo => f.write_str("VFIO_DEVICE_GET_INFO"),
            Step::RegionInfo(i) => write!(f, "VFIO_DEVICE_GET_REGION_INFO for {}", region(i)),
            Step::IrqInfo(i) => write!(f, "VFIO_DEVICE_GET_IRQ_INFO for interrupt index {i}"),
            Step::Mmap(i) => write!(f, "mmap of {}", region(i)),
            Step::Munmap(i) => write!(f, "munmap of {}", region(i)),
            Step::Pread(i) => write!(f, "pread from {}", region(i)),
            Step::Pwrite(i) => write!(f, "pwrite to {}", region(i)),
            Step::Eventfd => f.write_str("eventfd"),
            Step::SetIrqs(i) => write!(f, "VFIO_DEVICE_SET_IRQS for interrupt index {i}"),
            Step::ReadEventfd => f.write_str("reading the interrupt's eventfd"),
            Step::Poll => f.write_str("polling the interrupt's eventfd"),
            Step::Reset => f.write_str("VFIO_DEVICE_RESET"),
            Step::IommuInfo => f.write_str("VFIO_IOMMU_GET_INFO"),
            Step::MapDma => f.write_str("VFIO_IOMMU_MAP_DMA"),
            Step::UnmapDma => f.write_str("VFIO_IOMMU_UNMAP_DMA"),
            Step::MapMemory => f.write_str("mmap of DMA memory"),
            Step::LockMemory => f.write_str("mlock of DMA memory (raise RLIMIT_MEMLOCK, or run as root)"),
            Step::UnmapMemory => f.write_str("munmap of DMA memory"),
            Step::ReadSysfsFile => f.write_str("reading a sysfs attribute"),
            Step::WriteSysfs => f.write_str("writing a sysfs attribute (run as root)"),
            Step::ListSysfs => f.write_str("listing a sysfs directory"),
            Step::OpenIommufd => f.write_str("opening /dev/iommu"),
            Step::IoasAlloc => f.write_str("IOMMU_IOAS_ALLOC"),
            Step::IoasIovaRanges => f.write_str("IOMMU_IOAS_IOVA_RANGES"),
            Step::IoasMap => f.write_str("IOMMU_IOAS_MAP"),
            Step::IoasUnmap => f.write_str("IOMMU_IOAS_UNMAP"),
            Step::FindCdev => f.write_str("listing the device's vfio-dev directory in sysfs"),
            Step::OpenCdev => f.write_str("opening the device's VFIO cdev (/dev/vfio/devices/vfioN)"),
            Step::BindIommufd => f.write_str("VFIO_DEVICE_BIND_IOMMUFD"),
            Step::AttachIoas => f.write_str("VFIO_DEVICE_ATTACH_IOMMUFD_PT"),
            Step::StatNode(node) => write!(f, "stat of {node}"),
            Step::Chown(node) => {
                write!(f, "changing the owner of {node} (only root may give a node away: run vfio-bind as root)")
            }
            Step::ReadAccounts => f.write_str("reading /etc/passwd or /etc/group"),
            Step::SetVfToken => f.write_str("VFIO_DEVICE_FEATURE (PCI_VF_TOKEN, set)"),
            Step::ReadSriov => f.write_str("reading the device's SR-IOV state in sysfs"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None)
    }
}

/// The longest driver name there is, in bytes: a driver is reached through
/// `/sys/bus/BUS/drivers/NAME`, and a path component is at most `NAME_MAX`
/// (255) bytes.
pub const MAX_DRIVER_LEN: usize = 255;

/// A driver name, whole, stored inline (no heap): what
/// [`bind`](crate::bind) reads from sysfs and puts back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DriverName {
    len: u8,
    bytes: [u8; MAX_DRIVER_LEN],
}

impl DriverName {
    /// `None` when `raw` is longer than [`MAX_DRIVER_LEN`]: a name is never cut.
    pub(crate) fn new(raw: &[u8]) -> Option<Self> {
        let len = u8::try_from(raw.len()).ok().filter(|&n| usize::from(n) <= MAX_DRIVER_LEN)?;
        let mut bytes = [0; MAX_DRIVER_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(DriverName { len, bytes })
    }

    /// The driver's name, as sysfs spells it (`e1000e`, `pci-host-generic`).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Debug for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Bytes of a name an [`Error`] carries (errors stay small).
pub const LABEL_LEN: usize = 31;

/// A name (a driver's, a device's) as an error carries it: its first
/// [`LABEL_LEN`] bytes, marked when cut (shown with a trailing `...`). Only
/// for messages: [`bind`](crate::bind) keeps whole [`DriverName`]s for what
/// it restores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label {
    len: u8,
    cut: bool,
    bytes: [u8; LABEL_LEN],
}

impl Label {
    pub(crate) fn new(raw: &[u8]) -> Self {
        let mut len = raw.len().min(LABEL_LEN);
        // Cut on a character boundary, so the label stays valid UTF-8.
        while len > 0 && len < raw.len() && (raw[len] & 0xc0) == 0x80 {
            len -= 1;
        }
        let mut bytes = [0; LABEL_LEN];
        bytes[..len].copy_from_slice(&raw[..len]);
        Label { len: len as u8, cut: len < raw.len(), bytes }
    }

    /// The name, or its first bytes when [`Label::is_cut`].
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }

    /// Whether the name was longer than [`LABEL_LEN`] bytes.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

/// The device that keeps an IOMMU group from being viable, and its driver,
/// as [`ErrorKind::GroupNotViable`] carries them: inline, each cut (and
/// marked) when the two do not fit in 40 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Blocker {
    bytes: [u8; 40],
    device: u8,
    driver: u8,
    cut: bool,
}

impl Blocker {
    pub(crate) fn new(device: &str, driver: &str) -> Self {
        let mut bytes = [0; 40];
        let take = |s: &str, max: usize| {
            let mut n = s.len().min(max);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            n
        };
        let dev = take(device, 40 - driver.len().min(16));
        let drv = take(driver, 40 - dev);
        bytes[..dev].copy_from_slice(&device.as_bytes()[..dev]);
        bytes[dev..dev + drv].copy_from_slice(&driver.as_bytes()[..drv]);
        Blocker { bytes, device: dev as u8, driver: drv as u8, cut: dev < device.len() || drv < driver.len() }
    }

    /// The blocking device's name (its first bytes if [`Blocker::is_cut`]).
    pub fn device(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.device)]).unwrap_or("?")
    }

    /// Its driver's name (its first bytes if [`Blocker::is_cut`]).
    pub fn driver(&self) -> &str {
        let start = usize::from(self.device);
        core::str::from_utf8(&self.bytes[start..start + usize::from(self.driver)]).unwrap_or("?")
    }

    /// Whether a name did not fit whole.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl fmt::Debug for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocker").field("device", &self.device()).field("driver", &self.driver()).finish()
    }
}

impl From<&DriverName> for Label {
    fn from(name: &DriverName) -> Self {
        Label::new(name.as_str().as_bytes())
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The device name was refused before any system call.
    InvalidName(NameError),
    /// `/dev/vfio/vfio` does not exist: no VFIO module is loaded (or the
    /// kernel was built without the legacy container, and has no iommufd
    /// either, or the legacy backend was asked for).
    NoVfio,
    /// [`Backend::Iommufd`](crate::Backend::Iommufd) was asked for, but
    /// `/dev/iommu` does not exist.
    NoIommufd,
    /// [`Backend::Iommufd`](crate::Backend::Iommufd) was asked for, but the
    /// device has no VFIO cdev (`/sys/bus/BUS/devices/DEV/vfio-dev/vfioN`).
    NoDeviceCdev {
        /// Its bus.
        bus: Bus,
    },
    /// The context's IOMMU-backed devices use iommufd, and this one can only
    /// be opened through the legacy container (it has no cdev): a context has
    /// one IOMMU address space.
    MixedBackends,
    /// iommufd refused the device (`VFIO_DEVICE_BIND_IOMMUFD`): with
    /// `EINVAL` it is already open through VFIO elsewhere; with `EPERM`
    /// another process or context holds a device of its group (or the
    /// platform cannot isolate MSIs). The message says which.
    DeviceClaimed,
    /// Permission to a device node was denied (`EACCES`, or `EPERM` where
    /// it is not [`ErrorKind::NoiommuNeedsRawio`]).
    Permission {
        /// The node refused.
        node: DevNode,
    },
    /// A noiommu group's node (`/dev/vfio/noiommu-N`) refused the open with
    /// `EPERM`: Linux opens noiommu groups only for a process with `CAP_SYS_RAWIO`.
    NoiommuNeedsRawio {
        /// The group number.
        group: u32,
    },
    /// A DMA mapping (or the `mlock` of a locked buffer) was refused with
    /// `ENOMEM` while `RLIMIT_MEMLOCK` is finite: the pinned memory would
    /// exceed it. Nothing was mapped.
    MemlockLimit {
        /// The account the kernel charges ([`MemlockCharge`]).
        charge: MemlockCharge,
        /// What this context's mappings, with this one, make the kernel
        /// count, in bytes (for [`MemlockCharge::Type1`] and
        /// [`MemlockCharge::Mlock`] its locked buffers count twice). A lower
        /// bound: other pins and locks of the process (type1) or of the
        /// user's other processes (iommufd) count as well.
        needed: u64,
        /// The soft `RLIMIT_MEMLOCK`, in bytes.
        limit: u64,
    },
    /// [`crate::grant`] was given a user name that `/etc/passwd` does not have.
    NoSuchUser {
        /// The name given.
        name: Label,
    },
    /// [`crate::grant`] was given a group name that `/etc/group` does not have.
    NoSuchGroup {
        /// The name given.
        name: Label,
    },
    /// The kernel speaks a VFIO API version this crate does not know.
    ApiVersion {
        /// The version the kernel reported.
        found: i32,
    },
    /// No such device on the bus given (or on any bus, if `None`).
    NoSuchDevice {
        /// The bus that was searched, `None` when every bus was.
        bus: Option<Bus>,
    },
    /// The device is bound to no driver.
    NotBound {
        /// Its bus.
        bus: Bus,
    },
    /// The device is bound to a driver that is not a VFIO driver.
    WrongDriver {
        /// Its bus.
        bus: Bus,
        /// The driver it is bound to.
        driver: Label,
    },
    /// The device has no IOMMU group (no IOMMU, and noiommu mode is off).
    NoIommuGroup {
        /// Its bus.
        bus: Bus,
    },
    /// Neither `/dev/vfio/N` nor `/dev/vfio/noiommu-N` exists.
    GroupNodeMissing {
        /// The group number.
        group: u32,
    },
    /// The group is already open (another process or context holds it).
    GroupBusy {
        /// The group number.
        group: u32,
    },
    /// The group is not viable: some device in it is bound to a non-VFIO driver.
    GroupNotViable {
        /// The group number.
        group: u32,
        /// The first such device and its driver, as sysfs lists the group
        /// (`None` if it could not be read).
        blocker: Option<Blocker>,
    },
    /// The kernel offers no IOMMU backend this crate can use.
    NoIommuType,
    /// `VFIO_DEVICE_GET_INFO` does not describe a device of the expected bus.
    BusMismatch {
        /// The bus the device was found on.
        bus: Bus,
    },
    /// This context already has the device open.
    AlreadyOpen,
    /// The device table is full.
    DeviceTableFull {
        /// Its capacity (the context's `DEVICES` parameter).
        capacity: usize,
    },
    /// The group table is full.
    GroupTableFull {
        /// Its capacity (the context's `GROUPS` parameter).
        capacity: usize,
    },
    /// The context was made with [`Context::unopened`](crate::Context::unopened)
    /// and not opened yet ([`Context::open_in_place`](crate::Context::open_in_place)),
    /// or was closed in place.
    ContextNotOpen,
    /// The context cannot close while devices are open.
    DevicesOpen {
        /// How many are open.
        count: usize,
    },
    /// The handle belongs to another context, or what it named is gone
    /// (DMA mappings go with the last IOMMU-backed device).
    ForeignHandle,
    /// The device has no such interrupt index, or it cannot signal an eventfd.
    NoSuchIrq {
        /// The index asked for.
        index: u32,
    },
    /// More vectors were asked for than the index has or than fit.
    TooManyVectors {
        /// Vectors asked for.
        requested: u32,
        /// Vectors available: the index's count, or what is left of
        /// [`sys::MAX_IRQ_VECTORS`](crate::sys::MAX_IRQ_VECTORS).
        available: u32,
    },
    /// The interrupt index already has eventfds bound.
    IrqAlreadyEnabled {
        /// The index.
        index: u32,
    },
    /// No eventfd is bound to this vector: enable the index first.
    IrqNotEnabled {
        /// The index.
        index: u32,
        /// The vector.
        vector: u32,
    },
    /// The interrupt cannot be masked (its flags lack MASKABLE).
    NotMaskable {
        /// The index.
        index: u32,
    },
    /// The device does not offer this notification: its interrupt index is
    /// missing or has no vector (edu has no error interrupt).
    NoNotification {
        /// The notification asked for.
        which: crate::notify::Notification,
    },
    /// The device does not support `VFIO_DEVICE_RESET` (its flags lack RESET).
    ResetUnsupported,
    /// A PCI-only operation on a device that is not a PCI device.
    NotPci,
    /// The PCI capability list in config space is malformed.
    PciCapabilities(crate::pci_caps::CapListError),
    /// A capability chain from the kernel is malformed.
    CapabilityChain(crate::capchain::ChainError),
    /// No device behind an IOMMU is open, so there is no IOMMU domain to map into.
    NoDmaDomain,
    /// Only noiommu devices are open: they cannot use DMA mapping.
    NoIommuDma,
    /// The DMA mapping table is full.
    DmaTableFull {
        /// Its capacity (the context's `DMA` parameter).
        capacity: usize,
    },
    /// No free IOVA range of this length is left.
    NoIova {
        /// The length asked for.
        len: u64,
    },
    /// The IOVA chosen in [`DmaOptions`](crate::DmaOptions) cannot be used:
    /// it is outside the IOMMU's usable ranges (`reserved`: inside a
    /// reserved range such as the MSI window, or past the end), or overlaps
    /// one of this context's mappings.
    IovaUnusable {
        /// The IOVA asked for.
        iova: u64,
        /// The length asked for.
        len: u64,
        /// Outside the usable ranges (else: overlapping a mapping).
        reserved: bool,
    },
    /// The memory given to [`Context::dma_map_raw`](crate::Context::dma_map_raw)
    /// overlaps memory this context already maps for DMA (its mapping is
    /// named): one piece of memory has one mapping, so one view at a time.
    DmaMemoryMapped {
        /// The IOVA of the mapping already covering some of the memory.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// The mapping's IOMMU domain could not be let go of when its last
    /// device was freed (both the unmap and `VFIO_GROUP_UNSET_CONTAINER`
    /// failed), so the IOMMU may still map the memory: the mapping, and its
    /// memory, stay until the context is dropped.
    DmaStranded,
    /// The IOMMU unmapped less than the whole mapping; the mapping (and its
    /// memory) is kept.
    PartialUnmap {
        /// Bytes the kernel reported unmapped.
        unmapped: u64,
        /// Bytes of the mapping.
        len: u64,
    },
    /// A DMA request with a zero length, or an address or length that is
    /// not a multiple of the IOMMU page size.
    BadDmaRange {
        /// The page size required.
        page: u64,
    },
    /// The device has no region with this index.
    NoSuchRegion {
        /// The index asked for.
        index: u32,
        /// The number of regions the device has.
        count: u32,
    },
    /// An access to a region was refused; nothing was read or written. What
    /// `?` makes of a [`Region`](crate::Region) accessor's [`AccessError`]:
    /// a region does not know its device, so neither is named (the
    /// [`Device`](crate::Device) methods give [`ErrorKind::RegionAccess`]).
    Access(AccessError),
    /// An access to region `region` of the error's device was refused;
    /// nothing was read or written. From [`Device::block`](crate::Device::block),
    /// [`Device::read_region`](crate::Device::read_region) and
    /// [`Device::write_region`](crate::Device::write_region), or
    /// [`Device::access_error`](crate::Device::access_error).
    RegionAccess {
        /// The region index.
        region: u32,
        /// Why it was refused.
        error: AccessError,
    },
    /// `pread`/`pwrite` moved fewer bytes than asked.
    ShortTransfer {
        /// The region index.
        region: u32,
        /// Bytes moved.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// A system call failed; [`Error::errno`] says how.
    Syscall(Step),
    /// A driver name given to [`bind`](crate::bind::bind) was refused before
    /// any system call (the same rules as device names, at most [`MAX_DRIVER_LEN`] bytes).
    InvalidDriverName(NameError),
    /// The driver asked for is not loaded: `/sys/bus/BUS/drivers/DRIVER` does
    /// not exist.
    DriverMissing {
        /// The device's bus.
        bus: Bus,
        /// The driver asked for.
        driver: Label,
    },
    /// A process holds the device through VFIO (its group node or cdev is
    /// open there): Linux would block the unbind until it lets go.
    DeviceHeld {
        /// The first holding process found.
        pid: u32,
    },
    /// The device's driver refused to let it go (`EBUSY`): it is in use.
    DeviceBusy {
        /// The device's bus.
        bus: Bus,
        /// The driver it is bound to.
        driver: Label,
    },
    /// The kernel refused the device for its VF token (`EACCES` from
    /// `VFIO_GROUP_GET_DEVICE_FD`): a VF whose PF is bound to vfio-pci was
    /// opened without the PF's token or with another one, or a PF whose VFs
    /// are in use was opened without their token. Nothing is left open.
    VfTokenRefused {
        /// The VF's PF; `None` when the device is the PF itself.
        pf: Option<Label>,
    },
    /// A VF token was given with [`Backend::Iommufd`](crate::Backend::Iommufd)
    /// forced: the VFIO cdev carries a token only with
    /// `VFIO_DEVICE_BIND_FLAG_TOKEN`, which the crate does not send yet (the
    /// boards' kernels, 6.6 to 6.12, have no such flag, and their cdev checks
    /// no VF token); the group path carries it.
    VfTokenNeedsGroup,
    /// A VF token was given to a context of [`Backend::Auto`](crate::Backend::Auto)
    /// whose devices already use iommufd: the token passes only through the
    /// device's group (the legacy container), and a context has one IOMMU
    /// address space.
    VfTokenBesideIommufd,
    /// Removing a PF's VFs was refused: a process holds one of them (the
    /// error's device) through VFIO, and Linux would block the removal
    /// until it lets go.
    VfHeld {
        /// The process.
        pid: u32,
    },
    /// A VF token's text was refused.
    InvalidVfToken(crate::vf_token::VfTokenError),
    /// An SR-IOV operation on a device that is not an SR-IOV PF (it has no
    /// `sriov_totalvfs`), or on a VF.
    NotSriovPf {
        /// The PF, when the device is a VF.
        vf_of: Option<Label>,
    },
    /// More VFs were asked for than the PF's `sriov_totalvfs`.
    TooManyVfs {
        /// VFs asked for.
        asked: u32,
        /// `sriov_totalvfs`.
        total: u32,
    },
    /// The PF has VFs already, and Linux changes their number only through 0.
    VfsEnabled {
        /// `sriov_numvfs`.
        current: u32,
    },
    /// The PF is bound to vfio-pci, loaded without `enable_sriov=1`: it
    /// creates no VFs.
    SriovDisabled,
    /// The driver did not take the device (its `driver` link named another
    /// driver, or none, afterwards); what was changed was put back.
    BindFailed {
        /// The device's bus.
        bus: Bus,
        /// The driver asked for.
        driver: Label,
    },
}

/// An error of this crate: what went wrong, the errno if a system call said
/// so, and the device concerned. `Copy`, allocation-free, and its `Display`
/// says how to fix it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    errno: Option<Errno>,
    device: Option<DeviceName>,
}

impl Error {
    pub(crate) const fn new(kind: ErrorKind) -> Self {
        Error { kind, errno: None, device: None }
    }

    pub(crate) const fn syscall(step: Step, errno: Errno) -> Self {
        Error { kind: ErrorKind::Syscall(step), errno: Some(errno), device: None }
    }

    pub(crate) const fn with_errno(mut self, errno: Errno) -> Self {
        self.errno = Some(errno);
        self
    }

    pub(crate) fn for_device(mut self, name: DeviceName) -> Self {
        if self.device.is_none() {
            self.device = Some(name);
        }
        self
    }

    /// What went wrong.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno a system call returned, if one failed.
    pub const fn errno(&self) -> Option<Errno> {
        self.errno
    }

    /// The device concerned, if any.
    pub fn device(&self) -> Option<&str> {
        self.device.as_ref().map(DeviceName::as_str)
    }
}

impl From<AccessError> for Error {
    fn from(e: AccessError) -> Self {
        Error::new(ErrorKind::Access(e))
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Error::new(ErrorKind::InvalidName(e))
    }
}

/// The name of an errno, to make messages greppable: every errno Linux's
/// system calls can return to this crate (the generic numbering, which
/// x86_64 and aarch64 share).
fn errno_name(e: Errno) -> Option<&'static str> {
    Some(match e {
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::SRCH => "ESRCH",
        Errno::INTR => "EINTR",
        Errno::IO => "EIO",
        Errno::NXIO => "ENXIO",
        Errno::TOOBIG => "E2BIG",
        Errno::NOEXEC => "ENOEXEC",
        Errno::BADF => "EBADF",
        Errno::CHILD => "ECHILD",
        Errno::AGAIN => "EAGAIN",
        Errno::NOMEM => "ENOMEM",
        Errno::ACCESS => "EACCES",
        Errno::FAULT => "EFAULT",
        Errno::NOTBLK => "ENOTBLK",
        Errno::BUSY => "EBUSY",
        Errno::EXIST => "EEXIST",
        Errno::XDEV => "EXDEV",
        Errno::NODEV => "ENODEV",
        Errno::NOTDIR => "ENOTDIR",
        Errno::ISDIR => "EISDIR",
        Errno::INVAL => "EINVAL",
        Errno::NFILE => "ENFILE",
        Errno::MFILE => "EMFILE",
        Errno::NOTTY => "ENOTTY",
        Errno::TXTBSY => "ETXTBSY",
        Errno::FBIG => "EFBIG",
        Errno::NOSPC => "ENOSPC",
        Errno::SPIPE => "ESPIPE",
        Errno::ROFS => "EROFS",
        Errno::MLINK => "EMLINK",
        Errno::PIPE => "EPIPE",
        Errno::DOM => "EDOM",
        Errno::RANGE => "ERANGE",
        Errno::DEADLK => "EDEADLK",
        Errno::NAMETOOLONG => "ENAMETOOLONG",
        Errno::NOLCK => "ENOLCK",
        Errno::NOSYS => "ENOSYS",
        Errno::NOTEMPTY => "ENOTEMPTY",
        Errno::LOOP => "ELOOP",
        Errno::NOMSG => "ENOMSG",
        Errno::IDRM => "EIDRM",
        Errno::NOSTR => "ENOSTR",
        Errno::NODATA => "ENODATA",
        Errno::TIME => "ETIME",
        Errno::NOLINK => "ENOLINK",
        Errno::PROTO => "EPROTO",
        Errno::BADMSG => "EBADMSG",
        Errno::OVERFLOW => "EOVERFLOW",
        Errno::ILSEQ => "EILSEQ",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::ADDRINUSE => "EADDRINUSE",
        Errno::NOBUFS => "ENOBUFS",
        Errno::TIMEDOUT => "ETIMEDOUT",
        Errno::ALREADY => "EALREADY",
        Errno::INPROGRESS => "EINPROGRESS",
        Errno::STALE => "ESTALE",
        Errno::DQUOT => "EDQUOT",
        Errno::CANCELED => "ECANCELED",
        Errno::OWNERDEAD => "EOWNERDEAD",
        Errno::NOTRECOVERABLE => "ENOTRECOVERABLE",
        Errno::HWPOISON => "EHWPOISON",
        _ => return None,
    })
}

/// An errno as messages print it: its name and number (`EDEADLK (errno 35)`).
pub(crate) struct ErrnoDisplay(pub(crate) Errno);

impl fmt::Display for ErrnoDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno_name(self.0) {
            Some(name) => write!(f, "{name} (errno {})", self.0.raw_os_error()),
            None => write!(f, "errno {}", self.0.raw_os_error()),
        }
    }
}

/// The commands that bind `dev` on `bus` to its VFIO driver.
fn bind_recipe(f: &mut fmt::Formatter<'_>, bus: Bus, dev: &str) -> fmt::Result {
    let drv = bus.vfio_driver();
    let b = bus.sysfs_name();
    match bus {
        Bus::Pci => write!(
            f,
            "modprobe {drv}; echo {drv} > /sys/bus/{b}/devices/{dev}/driver_override; echo {dev} > /sys/bus/{b}/drivers_probe"
        ),
        Bus::Platform => write!(
            f,
            "modprobe {drv}; echo {drv} > /sys/bus/{b}/devices/{dev}/driver_override; echo {dev} > /sys/bus/{b}/drivers/{drv}/bind"
        ),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = self.device().unwrap_or("<device>");
        if let Some(name) = self.device() {
            write!(f, "{name}: ")?;
        }
        match self.kind {
            ErrorKind::InvalidName(e) => write!(f, "{e}")?,
            ErrorKind::NoVfio => f.write_str(
                "/dev/vfio/vfio does not exist: load VFIO (modprobe vfio-pci, or modprobe vfio-platform); a kernel built without CONFIG_VFIO_CONTAINER has none, and then needs iommufd (/dev/iommu, CONFIG_IOMMUFD; noiommu devices cannot do without the container)",
            )?,
            ErrorKind::NoIommufd => f.write_str(
                "/dev/iommu does not exist: the iommufd backend needs Linux 6.2+ with CONFIG_IOMMUFD (modprobe iommufd); or open the context with Backend::Auto or Backend::Legacy",
            )?,
            ErrorKind::NoDeviceCdev { bus } => write!(
                f,
                "/sys/bus/{bus}/devices/{dev}/vfio-dev names no vfioN: the iommufd backend needs VFIO device cdevs (Linux 6.6+, CONFIG_VFIO_DEVICE_CDEV=y); or open the context with Backend::Auto or Backend::Legacy"
            )?,
            ErrorKind::MixedBackends => f.write_str(
                "this context's devices use iommufd, but this device has no VFIO cdev and needs the legacy container; a context has one IOMMU address space: open this device in a context made with Backend::Legacy",
            )?,
            ErrorKind::DeviceClaimed => match self.errno {
                Some(Errno::PERM) => f.write_str(
                    "iommufd refused the device: another process or context holds a device of its IOMMU group (close it there first), or the platform cannot isolate MSIs (iommufd.allow_unsafe_interrupts=1 accepts that; Backend::Legacy needs vfio_iommu_type1.allow_unsafe_interrupts=1)",
                )?,
                _ => f.write_str(
                    "the device is already open through VFIO by another process or context (a device can be opened once): close it there first; if nothing else holds it, the IOMMU may lack DMA cache coherency, which iommufd refuses: use Backend::Legacy",
                )?,
            },
            ErrorKind::Permission { node: DevNode::Container } => f.write_str(
                "permission denied on /dev/vfio/vfio: Linux creates it mode 0666, for every user (the legacy container holds no device); restore that (chmod 0666 /dev/vfio/vfio), or run as root",
            )?,
            ErrorKind::Permission { node } => write!(
                f,
                "permission denied on {node}: give the device's nodes to the user that runs this program (as root: vfio-bind grant {dev} USER[:GROUP]; it owns /dev/vfio/N, and for iommufd /dev/iommu and /dev/vfio/devices/vfioN), or run as root"
            )?,
            ErrorKind::NoiommuNeedsRawio { group } => write!(
                f,
                "/dev/vfio/noiommu-{group} is a noiommu group (no IOMMU: the device can DMA anywhere in memory), which Linux opens only for a process with CAP_SYS_RAWIO: give the program that capability (setcap cap_sys_rawio+ep PROGRAM, or AmbientCapabilities=CAP_SYS_RAWIO in its systemd unit), or run as root"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::MemlockLimit { charge, needed, limit } => {
                let kib = needed.div_ceil(1024);
                if needed > limit {
                    write!(f, "RLIMIT_MEMLOCK ({limit} bytes) is too low: this context's DMA mappings, with this one, need {needed} bytes ({kib} KiB) of it")?;
                } else {
                    write!(f, "RLIMIT_MEMLOCK ({limit} bytes) is used up: this context's DMA mappings, with this one, need {needed} bytes ({kib} KiB) of it, and the kernel counts more pinned or locked memory besides")?;
                }
                write!(
                    f,
                    "; {charge}. Raise the limit to at least that: `ulimit -l {kib}` in the shell that starts the program (its hard limit must allow it), `prlimit --pid PID --memlock={needed}:{needed}`, or `USER - memlock {kib}` in /etc/security/limits.conf (LimitMEMLOCK= in a systemd unit); CAP_IPC_LOCK lifts the limit"
                )?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NoSuchUser { name } => {
                write!(f, "no user {name} in /etc/passwd: give a user name it lists, or a numeric uid")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NoSuchGroup { name } => {
                write!(f, "no group {name} in /etc/group: give a group name it lists, or a numeric gid")?
            }
            ErrorKind::ApiVersion { found } => write!(
                f,
                "the kernel's VFIO API version is {found}; this crate speaks version {}",
                crate::sys::API_VERSION
            )?,
            ErrorKind::NoSuchDevice { bus: Some(bus) } => {
                write!(f, "no such device: /sys/bus/{bus}/devices/{dev} does not exist")?
            }
            ErrorKind::NoSuchDevice { bus: None } => write!(
                f,
                "no such device: neither /sys/bus/pci/devices/{dev} nor /sys/bus/platform/devices/{dev} exists"
            )?,
            ErrorKind::NotBound { bus } => {
                write!(f, "the device is bound to no driver; bind it to {}: ", bus.vfio_driver())?;
                bind_recipe(f, bus, dev)?
            }
            ErrorKind::WrongDriver { bus, driver } => {
                write!(
                    f,
                    "the device is bound to {driver}, not to a VFIO driver; unbind it (echo {dev} > /sys/bus/{bus}/devices/{dev}/driver/unbind), then: "
                )?;
                bind_recipe(f, bus, dev)?
            }
            ErrorKind::NoIommuGroup { bus } => write!(
                f,
                "/sys/bus/{bus}/devices/{dev}/iommu_group does not exist: enable the IOMMU (intel_iommu=on, or the SMMU in the device tree), or, on a system without one, load vfio with enable_unsafe_noiommu_mode=1"
            )?,
            ErrorKind::GroupNodeMissing { group } => write!(
                f,
                "neither /dev/vfio/{group} nor /dev/vfio/noiommu-{group} exists: is the device bound to a VFIO driver?"
            )?,
            ErrorKind::GroupBusy { group } => write!(
                f,
                "IOMMU group {group} is already open, by another process or another context (a group can be opened once)"
            )?,
            ErrorKind::GroupNotViable { group, blocker: Some(b) } => write!(
                f,
                "IOMMU group {group} is not viable: {} is in it and bound to {}{}; unbind it (echo {0} > /sys/kernel/iommu_groups/{group}/devices/{0}/driver/unbind) or bind it to VFIO too: every device in /sys/kernel/iommu_groups/{group}/devices must be bound to a VFIO driver or to none",
                b.device(),
                b.driver(),
                if b.is_cut() { " (names cut short)" } else { "" }
            )?,
            ErrorKind::GroupNotViable { group, blocker: None } => write!(
                f,
                "IOMMU group {group} is not viable: every device in /sys/kernel/iommu_groups/{group}/devices must be bound to a VFIO driver or to none"
            )?,
            ErrorKind::NoIommuType => f.write_str(
                "the kernel offers neither the type1v2 nor the type1 IOMMU backend (load vfio_iommu_type1)",
            )?,
            ErrorKind::BusMismatch { bus } => {
                write!(f, "the kernel does not describe the device as a {bus} device")?
            }
            ErrorKind::AlreadyOpen => f.write_str("the device is already open in this context")?,
            ErrorKind::DeviceTableFull { capacity } => write!(
                f,
                "the device table is full ({capacity} devices): free one, or raise the context's DEVICES parameter"
            )?,
            ErrorKind::GroupTableFull { capacity } => write!(
                f,
                "the group table is full ({capacity} groups): free a device, or raise the context's GROUPS parameter"
            )?,
            ErrorKind::ContextNotOpen => {
                f.write_str("the context is not open: call Context::open_in_place first")?
            }
            ErrorKind::DevicesOpen { count } => {
                write!(f, "{count} device(s) are still open: free them before closing the context")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::ForeignHandle => {
                f.write_str("this handle belongs to another context, or what it named was released")?
            }
            ErrorKind::NoSuchIrq { index } => {
                write!(f, "interrupt index {index} does not exist or cannot signal an eventfd")?
            }
            ErrorKind::TooManyVectors { requested, available } => {
                write!(f, "{requested} interrupt vectors asked for, {available} available")?
            }
            ErrorKind::IrqAlreadyEnabled { index } => {
                write!(f, "interrupt index {index} is already enabled: disable it first")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::IrqNotEnabled { index, vector } => {
                write!(f, "interrupt index {index}, vector {vector} has no eventfd: enable the index first (Context::irq_enable(handle, {index}, count) with count > {vector})")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NotMaskable { index } => write!(f, "interrupt index {index} cannot be masked")?,
            ErrorKind::NoNotification { which } => write!(
                f,
                "the device offers no {which} notification: its interrupt index has no vector (an error notification needs a device with AER)"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::ResetUnsupported => {
                f.write_str("the device does not support VFIO_DEVICE_RESET (no function-level or bus reset)")?
            }
            ErrorKind::NotPci => f.write_str("this operation needs a PCI device")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::PciCapabilities(e) => write!(f, "malformed PCI capability list: {e}")?,
            ErrorKind::CapabilityChain(e) => write!(f, "malformed VFIO capability chain from the kernel: {e}")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NoDmaDomain => {
                f.write_str("no device behind an IOMMU is open: set one up before mapping DMA memory")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NoIommuDma => f.write_str(
                "the open devices are noiommu devices: without an IOMMU there is no DMA mapping (their DMA uses physical addresses)",
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DmaTableFull { capacity } => write!(
                f,
                "the DMA mapping table is full ({capacity} mappings): free one, or raise the context's DMA parameter"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NoIova { len } => write!(f, "no free IOVA range of {len:#x} bytes is left")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::IovaUnusable { iova, len, reserved: true } => write!(
                f,
                "the IOVA range {iova:#x}..{:#x} chosen is not usable: it is outside the IOMMU's usable ranges (inside a reserved range such as the MSI window, or past the end; Context::iommu_info lists them): choose an IOVA inside one, or let dma_alloc choose",
                iova.saturating_add(len)
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::IovaUnusable { iova, len, reserved: false } => write!(
                f,
                "the IOVA range {iova:#x}..{:#x} chosen overlaps a DMA mapping of this context: choose another, or let dma_alloc choose",
                iova.saturating_add(len)
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DmaMemoryMapped { iova, len } => write!(
                f,
                "this memory is already mapped for DMA (the mapping at IOVA {iova:#x}, {len:#x} bytes, covers some of it): use that mapping's handle, or free it first"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DmaStranded => f.write_str(
                "the IOMMU domain of this mapping was kept by the kernel when its last device was freed (the unmap and the detach failed): the mapping and its memory stay until the context is dropped",
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::PartialUnmap { unmapped, len } => write!(
                f,
                "the IOMMU unmapped {unmapped:#x} of {len:#x} bytes; the mapping and its memory are kept"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::BadDmaRange { page } => write!(
                f,
                "DMA address and length must be non-zero multiples of the IOMMU page size ({page:#x})"
            )?,
            ErrorKind::NoSuchRegion { index, count } => {
                write!(f, "region {index} does not exist (the device has {count} regions)")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::Access(error) => write!(f, "region access refused: {error}")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::RegionAccess { region, error } => {
                let pci = self.device.as_ref().map(DeviceName::looks_like_pci);
                write!(f, "{}: access refused: {error}", RegionName { index: region, pci })?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::ShortTransfer { region, done, wanted } => {
                let pci = self.device.as_ref().map(DeviceName::looks_like_pci);
                write!(f, "{}: moved {done} of {wanted} bytes", RegionName { index: region, pci })?
            }
            ErrorKind::Syscall(step) => {
                step.write(f, self.device.as_ref().map(DeviceName::looks_like_pci))?;
                f.write_str(" failed")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::InvalidDriverName(NameError::TooLong(len)) => {
                write!(f, "bad driver name: it is {len} bytes long; driver names are at most {MAX_DRIVER_LEN} bytes")?
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::InvalidDriverName(e) => write!(f, "bad driver name: {e}")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DriverMissing { bus, driver } => {
                let d = driver;
                write!(f, "driver {d} is not loaded (/sys/bus/{bus}/drivers/{d} does not exist): modprobe {d}")?;
                if d.as_str() == "vfio-platform" {
                    f.write_str(" (reset_required=0 for devices without a reset driver)")?;
                }
            }
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::VfHeld { pid } => write!(
                f,
                "process {pid} holds this VF through VFIO (see /proc/{pid}/fd): Linux would block the removal of the VFs (sriov_numvfs 0) until it frees it; stop that process or have it free the VF, then retry"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DeviceHeld { pid } => write!(
                f,
                "process {pid} holds the device through VFIO (see /proc/{pid}/fd): Linux would block the unbind until it frees the device; stop that process or have it free the device, or unbind with --wait (bind::unbind_wait), which signals its request notifier and waits"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::DeviceBusy { bus, driver } => write!(
                f,
                "the device is in use: {driver} refused to release it (/sys/bus/{bus}/devices/{dev}/driver/unbind); stop what uses it (close its VFIO fds, unmount, bring the interface down), then retry"
            )?,
            ErrorKind::VfTokenRefused { pf: Some(pf) } => write!(
                f,
                "the kernel refused the VF token: this VF's PF {pf} is bound to vfio-pci, which lets a VF open only with the PF's VF token; get the token (a UUID) from the program that holds the PF (it sets it with Context::set_vf_token, or VFIO_DEVICE_FEATURE PCI_VF_TOKEN; DPDK: --vfio-vf-token) and open the VF with Context::setup_vf (C: dao_vfio_vf_token_set)"
            )?,
            ErrorKind::VfTokenRefused { pf: None } => f.write_str(
                "the kernel refused the VF token: this PF's VFs are in use, so the PF opens only with their VF token; give the token the PF's VFs were opened with (Context::setup_vf; C: dao_vfio_vf_token_set)",
            )?,
            ErrorKind::VfTokenNeedsGroup => f.write_str(
                "a VF token cannot be given through the VFIO cdev (this crate does not send VFIO_DEVICE_BIND_FLAG_TOKEN, which kernels up to 6.12 lack): open the device in a context made with Backend::Auto or Backend::Legacy, which pass the token through its group",
            )?,
            ErrorKind::VfTokenBesideIommufd => f.write_str(
                "a VF token passes only through the device's group (the legacy container), and this context's devices already use iommufd (a context has one IOMMU address space): set up the PF and its VFs before the iommufd devices in this context (the devices after them then follow the legacy container), or use a context made with Backend::Legacy",
            )?,
            ErrorKind::InvalidVfToken(e) => write!(f, "bad VF token: {e}")?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NotSriovPf { vf_of: Some(pf) } => write!(
                f,
                "the device is a VF (of PF {pf}), not an SR-IOV PF: create and remove VFs on {pf}"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::NotSriovPf { vf_of: None } => write!(
                f,
                "the device is not an SR-IOV PF (/sys/bus/pci/devices/{dev}/sriov_totalvfs does not exist; a kernel without CONFIG_PCI_IOV has none)"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::TooManyVfs { asked, total } => write!(
                f,
                "{asked} VFs asked for, but the PF can have at most {total} (/sys/bus/pci/devices/{dev}/sriov_totalvfs)"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::VfsEnabled { current } => write!(
                f,
                "the PF has {current} VFs already, and Linux changes their number only through 0: remove them first (vfio-bind sriov {dev} 0, or echo 0 > /sys/bus/pci/devices/{dev}/sriov_numvfs)"
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::SriovDisabled => f.write_str(
                "the PF is bound to vfio-pci, which creates VFs only when loaded with enable_sriov=1: modprobe vfio-pci enable_sriov=1 (vfio_pci.enable_sriov=1 on the kernel command line when built in; or echo 1 > /sys/module/vfio_pci/parameters/enable_sriov)",
            )?,
            #[cfg(not(all(feature = "clib", not(feature = "std"))))]
            ErrorKind::BindFailed { bus, driver } => {
                let d = driver;
                write!(
                    f,
                    "{d} did not take the device; its previous driver and driver_override were restored. Does {d} support this {bus} device? See dmesg"
                )?;
                if d.as_str() == "vfio-pci" {
                    f.write_str(" (vfio-pci needs an IOMMU, or vfio enable_unsafe_noiommu_mode=1)")?;
                }
            }
            // The C interface never reports the kinds above compiled out of its
            // library (DMA, binding, SR-IOV administration, register access...):
            // their messages stay out of libdao_vfio (clib without std).
            #[cfg(all(feature = "clib", not(feature = "std")))]
            _ => f.write_str("an error the C interface does not report")?,
        }
        if let Some(errno) = self.errno {
            write!(f, " [{}]", ErrnoDisplay(errno))?;
        }
        Ok(())
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn blockers_keep_both_names_and_mark_cuts() {
        let b = Blocker::new("0000:01:03.0", "e1000e");
        assert_eq!((b.device(), b.driver(), b.is_cut()), ("0000:01:03.0", "e1000e", false));
        // A long device name leaves the driver at least 16 bytes.
        let long = "x".repeat(60);
        let b = Blocker::new(&long, "pci-host-generic-driver");
        assert_eq!((b.device().len(), b.driver(), b.is_cut()), (24, "pci-host-generic", true));
        // A long driver name takes what the device leaves.
        let b = Blocker::new("9010000.pl031", &"d".repeat(50));
        assert_eq!((b.device(), b.driver().len(), b.is_cut()), ("9010000.pl031", 27, true));
    }

    #[test]
    fn labels_cut_on_character_boundaries() {
        let l = Label::new("é".repeat(20).as_bytes());
        assert!(l.is_cut());
        assert_eq!(l.as_str(), "é".repeat(15));
        assert_eq!(format!("{l}"), format!("{}...", "é".repeat(15)));
        assert!(!Label::new(b"vfio-pci").is_cut());
    }
}
