//! A fake kernel for tests: `/dev/vfio`, sysfs links, groups, containers and
//! device regions modelled in memory, with the kernel's rules (viability, one
//! IOMMU type per container, noiommu groups apart, EINVAL for absent regions),
//! and failure injection: any chosen system call can fail with a chosen errno.
//!
//! Available with the `fake` feature, so drivers built on this crate can be
//! unit-tested on a machine with no VFIO at all.
//!
//! The fake's regions are ordinary memory, not device memory: two threads
//! accessing the *same* register at the same time, one of them writing, is a
//! data race there (undefined behaviour), whereas on a real mapping it is what
//! hardware drivers do. Tests that share a fake region between threads must
//! keep each thread on its own registers.
//!
//! ```
//! use dao_vfio::fake::{FakeDevice, FakeKernel};
//! use dao_vfio::Context;
//!
//! let kernel = FakeKernel::new();
//! kernel.add_device(FakeDevice::edu("0000:00:02.0", 3));
//! let mut vfio: Context<&FakeKernel> = Context::with_kernel(&kernel).unwrap();
//! let edu = vfio.setup("0000:00:02.0").unwrap();
//! assert_eq!(vfio.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
//! vfio.free(edu).unwrap();
//! drop(vfio);
//! assert_eq!(kernel.open_fds(), 0);
//! ```

use core::ffi::CStr;
use core::ptr::NonNull;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::sync::{Mutex, MutexGuard};
use std::vec::Vec;
use std::{format, vec};

use rustix::io::Errno;

use crate::kernel::{Fd, Kernel, Protection, Request, Token};
use crate::name::Bus;
use crate::sys::{self, DeviceFlags, GroupFlags, IrqFlags, RegionFlags};

/// Region offsets within a device fd, as vfio-pci lays them out.
const REGION_SHIFT: u32 = 40;
const PAGE: usize = 4096;

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
}

impl FakeRegion {
    /// A readable, writable, mappable region of `size` bytes.
    pub fn mmio(size: u64) -> Self {
        FakeRegion {
            flags: RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP,
            size,
            info_errno: None,
            contents: Vec::new(),
        }
    }

    /// A readable, writable region that cannot be mapped.
    pub fn unmappable(size: u64) -> Self {
        FakeRegion { flags: RegionFlags::READ | RegionFlags::WRITE, size, info_errno: None, contents: Vec::new() }
    }

    /// A region of size 0 (an unimplemented BAR).
    pub fn empty() -> Self {
        FakeRegion { flags: RegionFlags::empty(), size: 0, info_errno: None, contents: Vec::new() }
    }

    /// An index whose info request fails with EINVAL (the VGA index).
    pub fn absent() -> Self {
        FakeRegion { flags: RegionFlags::empty(), size: 0, info_errno: Some(Errno::INVAL), contents: Vec::new() }
    }

    /// Sets the initial contents.
    pub fn with_contents(mut self, bytes: &[u8]) -> Self {
        self.contents = bytes.to_vec();
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
}

impl FakeDevice {
    /// QEMU's edu as the virtual board shows it: BAR0 of 1 MiB (id register
    /// 0x010000ed), BARs 1-6 empty, config space unmappable, VGA absent, 5 IRQ
    /// indexes (MSI with one vector). Bound to vfio-pci, in `group`.
    pub fn edu(name: &str, group: u32) -> Self {
        let mut regions = vec![FakeRegion::mmio(0x10_0000).with_contents(&0x010000edu32.to_le_bytes())];
        regions.extend((1..=6).map(|_| FakeRegion::empty()));
        regions.push(FakeRegion::unmappable(0x100).with_contents(&[0x34, 0x12, 0xe8, 0x11]));
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
                // ERR: only PCIe devices have it; conventional PCI answers EINVAL.
                None,
                Some((eventfd, 1)),
            ],
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

    fn bound_to_vfio(&self) -> bool {
        self.driver.as_deref().is_some_and(|d| crate::sysfs::is_vfio_driver(d.as_bytes()))
    }
}

/// Page-aligned, zeroed memory standing in for a region's registers.
struct Backing {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Backing {
    fn new(size: u64, contents: &[u8]) -> Self {
        let len = (size as usize).max(1).next_multiple_of(PAGE);
        let layout = Layout::from_size_align(len, PAGE).expect("fake region too large");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory for a fake region");
        let n = contents.len().min(len);
        // SAFETY: `ptr` is valid for `len >= n` bytes and does not overlap `contents`.
        unsafe { core::ptr::copy_nonoverlapping(contents.as_ptr(), ptr.as_ptr(), n) };
        Backing { ptr, layout }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[derive(Debug)]
enum Object {
    Container { iommu: Option<u32>, groups: Vec<u32> },
    Group { number: u32, container: Option<i32> },
    Device { device: usize },
}

struct State {
    vfio_loaded: bool,
    api_version: i32,
    type1: bool,
    type1v2: bool,
    noiommu_mode: bool,
    devices: Vec<FakeDevice>,
    backing: Vec<Vec<Backing>>,
    fds: BTreeMap<i32, Object>,
    next_fd: i32,
    mappings: BTreeMap<usize, (usize, usize, u32)>,
    calls: u64,
    fail_at: Option<(u64, Errno)>,
    bad_closes: u32,
    trace: Vec<&'static str>,
}

/// The fake kernel. Share it by reference (`Context<&FakeKernel>`) to inspect
/// it while a context uses it.
pub struct FakeKernel {
    state: Mutex<State>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FakeKernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.lock();
        f.debug_struct("FakeKernel").field("fds", &s.fds).field("mappings", &s.mappings.len()).finish()
    }
}

impl FakeKernel {
    /// A system with VFIO loaded, type1 and type1v2 IOMMU backends, noiommu
    /// mode enabled, and no devices.
    pub fn new() -> Self {
        FakeKernel {
            state: Mutex::new(State {
                vfio_loaded: true,
                api_version: sys::API_VERSION,
                type1: true,
                type1v2: true,
                noiommu_mode: true,
                devices: Vec::new(),
                backing: Vec::new(),
                fds: BTreeMap::new(),
                next_fd: 100,
                mappings: BTreeMap::new(),
                calls: 0,
                fail_at: None,
                bad_closes: 0,
                trace: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide later reports.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a device; returns its index.
    pub fn add_device(&self, device: FakeDevice) -> usize {
        let mut s = self.lock();
        s.backing.push(device.regions.iter().map(|r| Backing::new(r.size, &r.contents)).collect());
        s.devices.push(device);
        s.devices.len() - 1
    }

    /// Binds device `index` to `driver` (`None`: unbinds it).
    pub fn bind(&self, index: usize, driver: Option<&str>) {
        self.lock().devices[index].driver = driver.map(str::to_string);
    }

    /// Unloads (or loads) VFIO: `/dev/vfio/vfio` disappears (or comes back).
    pub fn set_vfio_loaded(&self, loaded: bool) {
        self.lock().vfio_loaded = loaded;
    }

    /// Sets the API version `VFIO_GET_API_VERSION` reports.
    pub fn set_api_version(&self, version: i32) {
        self.lock().api_version = version;
    }

    /// Turns `enable_unsafe_noiommu_mode` on or off: off, noiommu group nodes
    /// disappear and the noiommu backend is not offered.
    pub fn set_noiommu_mode(&self, enabled: bool) {
        self.lock().noiommu_mode = enabled;
    }

    /// Chooses which type1 backends `VFIO_CHECK_EXTENSION` reports.
    pub fn set_type1(&self, type1: bool, type1v2: bool) {
        let mut s = self.lock();
        s.type1 = type1;
        s.type1v2 = type1v2;
    }

    /// Makes the `n`th system call from now (1 = the next) fail with `errno`,
    /// doing nothing else. `close` never fails and is not counted.
    pub fn fail_call(&self, n: u64, errno: Errno) {
        let mut s = self.lock();
        s.fail_at = Some((s.calls + n, errno));
    }

    /// Whether an injected failure is still pending (it was never reached).
    pub fn failure_pending(&self) -> bool {
        self.lock().fail_at.is_some()
    }

    /// Clears a pending failure.
    pub fn clear_failure(&self) {
        self.lock().fail_at = None;
    }

    /// System calls made so far (not counting `close`).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Open fds.
    pub fn open_fds(&self) -> usize {
        self.lock().fds.len()
    }

    /// Live mappings.
    pub fn live_mappings(&self) -> usize {
        self.lock().mappings.len()
    }

    /// Closes of fds that were not open (double closes): a bug if non-zero.
    pub fn bad_closes(&self) -> u32 {
        self.lock().bad_closes
    }

    /// The IOMMU type set on each open container, in fd order.
    pub fn container_types(&self) -> Vec<Option<u32>> {
        self.lock()
            .fds
            .values()
            .filter_map(|o| match o {
                Object::Container { iommu, .. } => Some(*iommu),
                _ => None,
            })
            .collect()
    }

    /// The names of the system calls made, in order (for failure reports).
    pub fn trace(&self) -> Vec<&'static str> {
        self.lock().trace.clone()
    }

    /// Enters a system call: counts it and applies an injected failure.
    fn enter(&self, name: &'static str) -> Result<MutexGuard<'_, State>, Errno> {
        let mut s = self.lock();
        s.calls += 1;
        s.trace.push(name);
        if let Some((n, errno)) = s.fail_at {
            if s.calls == n {
                s.fail_at = None;
                return Err(errno);
            }
        }
        Ok(s)
    }
}

impl State {
    fn new_fd(&mut self, object: Object) -> Fd {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.fds.insert(fd, object);
        Fd::from_raw(fd)
    }

    fn group_members(&self, number: u32) -> impl Iterator<Item = &FakeDevice> {
        self.devices.iter().filter(move |d| d.group == Some(number))
    }

    fn group_viable(&self, number: u32) -> bool {
        self.group_members(number).all(|d| d.driver.is_none() || d.bound_to_vfio())
    }

    fn group_open(&self, number: u32) -> bool {
        self.fds.values().any(|o| matches!(o, Object::Group { number: n, .. } if *n == number))
    }

    fn device_open(&self, index: usize) -> bool {
        self.fds.values().any(|o| matches!(o, Object::Device { device } if *device == index))
    }

    fn group_has_open_device(&self, number: u32) -> bool {
        self.devices.iter().enumerate().any(|(i, d)| d.group == Some(number) && self.device_open(i))
    }

    /// The node `/dev/vfio/<node>` for a path, if it names a group that exists.
    fn group_node(&self, path: &str) -> Option<u32> {
        let (noiommu, digits) = match path.strip_prefix("/dev/vfio/noiommu-") {
            Some(d) => (true, d),
            None => (false, path.strip_prefix("/dev/vfio/")?),
        };
        let number: u32 = digits.parse().ok()?;
        let mut members = self.group_members(number).peekable();
        members.peek()?;
        let mut any_vfio = false;
        for d in members {
            if d.noiommu != noiommu {
                return None;
            }
            any_vfio |= d.bound_to_vfio();
        }
        (any_vfio && (!noiommu || self.noiommu_mode)).then_some(number)
    }

    /// Detaches group `number` from the container `cfd`.
    fn detach(&mut self, cfd: i32, number: u32) {
        if let Some(Object::Container { iommu, groups }) = self.fds.get_mut(&cfd) {
            groups.retain(|&g| g != number);
            if groups.is_empty() {
                *iommu = None;
            }
        }
    }

    fn device_of(&self, fd: Fd) -> Result<usize, Errno> {
        match self.fds.get(&fd.raw()) {
            Some(Object::Device { device }) => Ok(*device),
            Some(_) => Err(Errno::NOTTY),
            None => Err(Errno::BADF),
        }
    }

    /// The region and in-region offset an fd offset points at.
    fn locate(&self, device: usize, offset: u64) -> Result<(u32, u64), Errno> {
        let index = (offset >> REGION_SHIFT) as u32;
        let region = self.devices[device].regions.get(index as usize).ok_or(Errno::INVAL)?;
        if region.info_errno.is_some() {
            return Err(Errno::INVAL);
        }
        Ok((index, offset & ((1 << REGION_SHIFT) - 1)))
    }

    fn ioctl(&mut self, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        let object = self.fds.get(&fd.raw()).ok_or(Errno::BADF)?;
        match (object, request) {
            (Object::Container { .. }, Request::GetApiVersion) => Ok(self.api_version),
            (Object::Container { .. }, Request::CheckExtension(ext)) => Ok(i32::from(match ext {
                sys::TYPE1_IOMMU => self.type1,
                sys::TYPE1V2_IOMMU => self.type1v2,
                sys::NOIOMMU_IOMMU => self.noiommu_mode,
                _ => false,
            })),
            (Object::Container { iommu, groups }, Request::SetIommu(kind)) => {
                if groups.is_empty() || iommu.is_some() {
                    return Err(Errno::INVAL);
                }
                let noiommu_groups = groups.iter().all(|&g| self.group_members(g).all(|d| d.noiommu));
                let supported = match kind {
                    sys::TYPE1_IOMMU => self.type1 && !noiommu_groups,
                    sys::TYPE1V2_IOMMU => self.type1v2 && !noiommu_groups,
                    sys::NOIOMMU_IOMMU => self.noiommu_mode && noiommu_groups,
                    _ => false,
                };
                if !supported {
                    return Err(Errno::INVAL);
                }
                if let Some(Object::Container { iommu, .. }) = self.fds.get_mut(&fd.raw()) {
                    *iommu = Some(kind);
                }
                Ok(0)
            }
            (Object::Group { number, container }, Request::GroupGetStatus(status)) => {
                if status.argsz < sys::argsz::<sys::GroupStatus>() {
                    return Err(Errno::INVAL);
                }
                let mut flags = GroupFlags::empty();
                if self.group_viable(*number) {
                    flags |= GroupFlags::VIABLE;
                }
                if container.is_some() {
                    flags |= GroupFlags::CONTAINER_SET;
                }
                status.flags = flags.bits();
                Ok(0)
            }
            (Object::Group { number, container }, Request::GroupSetContainer(cfd)) => {
                let number = *number;
                if container.is_some() || !self.group_viable(number) {
                    return Err(Errno::INVAL);
                }
                let Some(Object::Container { iommu, groups }) = self.fds.get(&cfd.raw()) else {
                    return Err(Errno::BADF);
                };
                let noiommu = self.group_members(number).all(|d| d.noiommu);
                let container_noiommu = match (iommu, groups.first()) {
                    (Some(kind), _) => Some(*kind == sys::NOIOMMU_IOMMU),
                    (None, Some(&g)) => Some(self.group_members(g).all(|d| d.noiommu)),
                    (None, None) => None,
                };
                if container_noiommu.is_some_and(|c| c != noiommu) {
                    return Err(Errno::PERM);
                }
                if let Some(Object::Container { groups, .. }) = self.fds.get_mut(&cfd.raw()) {
                    groups.push(number);
                }
                if let Some(Object::Group { container, .. }) = self.fds.get_mut(&fd.raw()) {
                    *container = Some(cfd.raw());
                }
                Ok(0)
            }
            (Object::Group { number, container }, Request::GroupUnsetContainer) => {
                let (number, cfd) = (*number, container.ok_or(Errno::INVAL)?);
                if self.group_has_open_device(number) {
                    return Err(Errno::BUSY);
                }
                self.detach(cfd, number);
                if let Some(Object::Group { container, .. }) = self.fds.get_mut(&fd.raw()) {
                    *container = None;
                }
                Ok(0)
            }
            (Object::Group { number, container }, Request::GroupGetDeviceFd(name)) => {
                let number = *number;
                let ready = container.and_then(|c| match self.fds.get(&c) {
                    Some(Object::Container { iommu, .. }) => *iommu,
                    _ => None,
                });
                if ready.is_none() {
                    return Err(Errno::INVAL);
                }
                let name = name.to_str().map_err(|_| Errno::INVAL)?;
                let device = self
                    .devices
                    .iter()
                    .position(|d| d.group == Some(number) && d.name == name && d.bound_to_vfio())
                    .ok_or(Errno::NODEV)?;
                if self.device_open(device) {
                    return Err(Errno::BUSY);
                }
                Ok(self.new_fd(Object::Device { device }).raw())
            }
            (Object::Device { device }, Request::DeviceGetInfo(info)) => {
                let d = &self.devices[*device];
                info.flags = d.flags.bits();
                info.num_regions = d.regions.len() as u32;
                info.num_irqs = d.irqs.len() as u32;
                Ok(0)
            }
            (Object::Device { device }, Request::DeviceGetRegionInfo(info)) => {
                let region = self.devices[*device].regions.get(info.index as usize).ok_or(Errno::INVAL)?;
                if let Some(errno) = region.info_errno {
                    return Err(errno);
                }
                info.flags = region.flags.bits();
                info.size = region.size;
                info.offset = u64::from(info.index) << REGION_SHIFT;
                info.cap_offset = 0;
                Ok(0)
            }
            (Object::Device { device }, Request::DeviceGetIrqInfo(info)) => {
                let (flags, count) =
                    self.devices[*device].irqs.get(info.index as usize).copied().flatten().ok_or(Errno::INVAL)?;
                info.flags = flags.bits();
                info.count = count;
                Ok(0)
            }
            _ => Err(Errno::NOTTY),
        }
    }
}

// SAFETY: `mmap` returns pointers into `Backing` memory, page aligned and at
// least as long as the mapping; backings are heap allocations that live as
// long as the `FakeKernel` (moving it does not move them), which outlives
// every context using it (a context owns or borrows it). Concurrent access is
// allowed to disjoint registers only (see the module documentation).
unsafe impl Kernel for FakeKernel {
    fn open(&self, _: &Token, path: &CStr) -> Result<Fd, Errno> {
        let mut s = self.enter("open")?;
        let path = path.to_str().map_err(|_| Errno::NOENT)?;
        if path == "/dev/vfio/vfio" {
            if !s.vfio_loaded {
                return Err(Errno::NOENT);
            }
            return Ok(s.new_fd(Object::Container { iommu: None, groups: Vec::new() }));
        }
        let number = s.group_node(path).ok_or(Errno::NOENT)?;
        if s.group_open(number) {
            return Err(Errno::BUSY);
        }
        Ok(s.new_fd(Object::Group { number, container: None }))
    }

    fn close(&self, _: &Token, fd: Fd) {
        let mut s = self.lock();
        match s.fds.remove(&fd.raw()) {
            None => s.bad_closes += 1,
            Some(Object::Group { number, container: Some(cfd) }) => s.detach(cfd, number),
            Some(_) => {}
        }
    }

    fn ioctl(&self, _: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        self.enter("ioctl")?.ioctl(fd, request)
    }

    fn mmap(&self, _: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        let mut s = self.enter("mmap")?;
        let device = s.device_of(fd).map_err(|_| Errno::BADF)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        let room = (region.size as usize).next_multiple_of(PAGE);
        let allowed = region.flags.contains(RegionFlags::MMAP)
            && (!prot.read || region.flags.contains(RegionFlags::READ))
            && (!prot.write || region.flags.contains(RegionFlags::WRITE));
        if !allowed || within != 0 || len == 0 || len > room {
            return Err(Errno::INVAL);
        }
        let base = s.backing[device][index as usize].ptr;
        s.mappings.insert(base.as_ptr() as usize, (len, device, index));
        Ok(base)
    }

    unsafe fn munmap(&self, _: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        let mut s = self.enter("munmap")?;
        match s.mappings.get(&(addr.as_ptr() as usize)) {
            Some(&(mapped, _, _)) if mapped == len => {
                s.mappings.remove(&(addr.as_ptr() as usize));
                Ok(())
            }
            _ => Err(Errno::INVAL),
        }
    }

    fn pread(&self, _: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let s = self.enter("pread")?;
        let device = s.device_of(fd)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        if !region.flags.contains(RegionFlags::READ) {
            return Err(Errno::INVAL);
        }
        let n = (region.size.saturating_sub(within) as usize).min(buf.len());
        let src = s.backing[device][index as usize].ptr;
        // SAFETY: `within + n <= size <= backing length`; `buf` is ours.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr().add(within as usize), buf.as_mut_ptr(), n) };
        Ok(n)
    }

    fn pwrite(&self, _: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        let s = self.enter("pwrite")?;
        let device = s.device_of(fd)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        if !region.flags.contains(RegionFlags::WRITE) {
            return Err(Errno::INVAL);
        }
        let n = (region.size.saturating_sub(within) as usize).min(buf.len());
        let dst = s.backing[device][index as usize].ptr;
        // SAFETY: `within + n <= size <= backing length`; `buf` is ours.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), dst.as_ptr().add(within as usize), n) };
        Ok(n)
    }

    fn readlink<'b>(&self, _: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let s = self.enter("readlink")?;
        let path = path.to_str().map_err(|_| Errno::NOENT)?;
        let target = s
            .devices
            .iter()
            .find_map(|d| {
                let dir = format!("/sys/bus/{}/devices/{}", d.bus.sysfs_name(), d.name);
                let rest = path.strip_prefix(dir.as_str())?;
                match rest {
                    "" => Some(format!("../../../devices/fake/{}", d.name)),
                    "/driver" => {
                        d.driver.as_ref().map(|drv| format!("../../../../bus/{}/drivers/{drv}", d.bus.sysfs_name()))
                    }
                    "/iommu_group" => d.group.map(|g| format!("../../../../kernel/iommu_groups/{g}")),
                    _ => None,
                }
            })
            .ok_or(Errno::NOENT)?;
        let n = target.len().min(buf.len());
        buf[..n].copy_from_slice(&target.as_bytes()[..n]);
        Ok(&buf[..n])
    }
}
