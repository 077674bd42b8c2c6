//! The fake kernel's state and the VFIO rules it enforces, as Linux does.

use std::collections::{BTreeMap, BTreeSet};
use std::string::String;
use std::vec;
use std::vec::Vec;

use rustix::io::Errno;

use super::device::FakeDevice;
use super::memory::{Backing, PAGE};
use crate::kernel::{Fd, Request};
use crate::sys::{self, GroupFlags, IrqFlags, IrqSetFlags, RegionFlags};

/// Region offsets within a device fd, as vfio-pci lays them out.
pub(super) const REGION_SHIFT: u32 = 40;

/// One DMA mapping of a container.
#[derive(Clone, Copy, Debug)]
pub(super) struct DmaEntry {
    pub(super) iova: u64,
    pub(super) size: u64,
    pub(super) vaddr: u64,
}

#[derive(Debug)]
pub(super) enum Object {
    Container {
        iommu: Option<u32>,
        groups: Vec<u32>,
        dma: Vec<DmaEntry>,
    },
    Group {
        number: u32,
        container: Option<i32>,
    },
    Device {
        device: usize,
    },
    EventFd {
        count: u64,
    },
    /// `/dev/iommu`: its IO address spaces by id, with their mappings.
    Iommufd {
        next_id: u32,
        ioas: BTreeMap<u32, Vec<DmaEntry>>,
    },
    /// A directory opened to be listed and looked up from (its path, past
    /// any SR-IOV link). Unlike Linux's, it does not go stale when its
    /// device is unbound and bound again; but a device keeps its cdev
    /// number here, so a proof through it names the same device either way.
    Dir {
        path: String,
    },
    /// A device opened through its cdev: usable once bound to an iommufd
    /// (`bound`: that fd), reaching memory once attached to an IOAS.
    Cdev {
        device: usize,
        bound: Option<i32>,
        ioas: Option<u32>,
    },
}

/// A device's sysfs attributes beyond its `driver` link.
#[derive(Clone, Debug, Default)]
pub(super) struct DeviceSysfs {
    /// `driver_override` (`None`: unset).
    pub(super) driver_override: Option<std::string::String>,
    /// The driver that takes the device when it is probed without an override.
    pub(super) default_driver: Option<std::string::String>,
    /// Unbinding it fails with `EBUSY`.
    pub(super) in_use: bool,
    /// A driver whose probe of this device fails.
    pub(super) refused: Option<std::string::String>,
}

/// (device, index, vector)
pub(super) type Vector = (usize, u32, u32);

pub(super) struct State {
    pub(super) vfio_loaded: bool,
    pub(super) api_version: i32,
    pub(super) type1: bool,
    pub(super) type1v2: bool,
    pub(super) noiommu_mode: bool,
    /// `/dev/iommu` exists.
    pub(super) iommufd: bool,
    /// Devices bound to VFIO have cdevs (`/dev/vfio/devices/vfioN`).
    pub(super) cdevs: bool,
    pub(super) huge_pages: bool,
    pub(super) iova_ranges: Vec<(u64, u64)>,
    pub(super) dma_limit: u32,
    pub(super) devices: Vec<FakeDevice>,
    pub(super) backing: Vec<Vec<Backing>>,
    pub(super) anonymous: BTreeMap<usize, Backing>,
    pub(super) fds: BTreeMap<i32, Object>,
    pub(super) next_fd: i32,
    /// Live mappings: address -> views (length, device, region); anonymous
    /// ones have device `usize::MAX`.
    pub(super) mappings: BTreeMap<usize, Vec<(usize, usize, u32)>>,
    /// Regions (device, region index) a register block was made over, and
    /// the thread that made it: the only one that may touch them until they
    /// are unmapped (see [`State::claim`]).
    pub(super) pinned: Vec<((usize, u32), std::thread::ThreadId)>,
    /// Devices whose unbind waits for their last VFIO fd to close.
    pub(super) unbind_on_release: BTreeSet<usize>,
    /// Groups the kernel detached itself when their last device left VFIO:
    /// dead until their fd closes.
    pub(super) dead_groups: BTreeSet<u32>,
    pub(super) irq_bindings: BTreeMap<Vector, i32>,
    pub(super) irq_masked: BTreeSet<Vector>,
    pub(super) resets: Vec<u32>,
    pub(super) calls: u64,
    /// Pending injected failures: (call number, errno).
    pub(super) fail_at: Vec<(u64, Errno)>,
    pub(super) bad_closes: u32,
    pub(super) freed_while_mapped: u32,
    pub(super) trace: Vec<super::trace::Call>,
    /// Pending injected failures by step.
    pub(super) fail_steps: Vec<super::trace::StepFailure>,
    /// Per device, in device order: its behaviour, if it has one.
    pub(super) models: Vec<Option<std::boxed::Box<dyn super::behaviour::DeviceModel>>>,
    /// Loaded drivers: (bus, name).
    pub(super) drivers: Vec<(crate::name::Bus, std::string::String)>,
    /// Per device, in device order.
    pub(super) sysfs: Vec<DeviceSysfs>,
    /// Credentials, node owners, memlock (`privilege.rs`).
    pub(super) privilege: super::privilege::Privilege,
    /// PFs, their VFs and tokens, vfio-pci's `enable_sriov` (`sriov.rs`).
    pub(super) sriov: super::sriov::Sriov,
}

impl State {
    /// Signals vector `vector` of `index` of device `d`, unless unbound or
    /// masked; an automasked (level) interrupt masks itself.
    pub(super) fn raise(&mut self, d: usize, index: u32, vector: u32) -> bool {
        let s = self;
        let key = (d, index, vector);
        let Some(&efd) = s.irq_bindings.get(&key) else { return false };
        if s.irq_masked.contains(&key) || s.msi_blocked(d, index) {
            return false;
        }
        let automasked = s.devices[d]
            .irqs
            .get(index as usize)
            .copied()
            .flatten()
            .is_some_and(|(f, _)| f.contains(IrqFlags::AUTOMASKED));
        if automasked {
            s.irq_masked.insert(key);
        }
        if let Some(Object::EventFd { count }) = s.fds.get_mut(&efd) {
            *count += 1;
        }
        true
    }

    /// The region (device, index) whose memory holds `addr`.
    pub(super) fn region_at(&self, addr: usize) -> Option<(usize, u32)> {
        self.backing.iter().enumerate().find_map(|(d, regions)| {
            regions
                .iter()
                .position(|b| (b.ptr().as_ptr() as usize..b.ptr().as_ptr() as usize + b.len()).contains(&addr))
                .map(|i| (d, i as u32))
        })
    }

    /// Lets the calling thread touch `region`'s memory, or panics. A register
    /// block's accesses are plain volatile ones the fake cannot serialize,
    /// so making one (`block`) ties the region to its thread until it is
    /// unmapped; every other access is made under the fake's lock.
    pub(super) fn claim(&mut self, region: (usize, u32), block: bool) {
        let me = std::thread::current().id();
        match self.pinned.iter().find(|(r, _)| *r == region) {
            Some(&(_, owner)) if owner != me => panic!(
                "fake device {} region {}: a register block over it was made on thread {owner:?}, so only that thread may touch it (the fake's registers are ordinary memory: a block's accesses from two threads would be a data race); this is thread {me:?}",
                self.devices[region.0].name, region.1
            ),
            Some(_) => {}
            None if block => self.pinned.push((region, me)),
            None => {}
        }
    }
    pub(super) fn new() -> Self {
        State {
            vfio_loaded: true,
            api_version: sys::API_VERSION,
            type1: true,
            type1v2: true,
            noiommu_mode: true,
            iommufd: false,
            cdevs: false,
            huge_pages: false,
            // Like x86 with an IOMMU: everything but the MSI window.
            iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x000f_ffff_ffff_ffff)],
            dma_limit: 65535,
            devices: Vec::new(),
            backing: Vec::new(),
            anonymous: BTreeMap::new(),
            fds: BTreeMap::new(),
            next_fd: 100,
            mappings: BTreeMap::new(),
            irq_bindings: BTreeMap::new(),
            irq_masked: BTreeSet::new(),
            resets: Vec::new(),
            calls: 0,
            fail_at: Vec::new(),
            pinned: Vec::new(),
            unbind_on_release: BTreeSet::new(),
            dead_groups: BTreeSet::new(),
            bad_closes: 0,
            freed_while_mapped: 0,
            trace: Vec::new(),
            fail_steps: Vec::new(),
            models: Vec::new(),
            drivers: vec![
                (crate::name::Bus::Pci, std::string::String::from("vfio-pci")),
                (crate::name::Bus::Platform, std::string::String::from("vfio-platform")),
            ],
            sysfs: Vec::new(),
            privilege: super::privilege::Privilege::new(),
            sriov: super::sriov::Sriov::default(),
        }
    }

    /// Adds a device (in slot `reuse` if given: a removed VF's); returns
    /// its index.
    pub(super) fn insert_device(
        &mut self,
        device: FakeDevice,
        model: Option<std::boxed::Box<dyn super::behaviour::DeviceModel>>,
        reuse: Option<usize>,
    ) -> usize {
        let backing = device.regions.iter().map(|r| Backing::new(r.size, &r.contents)).collect();
        let index = match reuse {
            Some(i) => {
                (self.devices[i], self.backing[i], self.models[i], self.resets[i]) = (device, backing, model, 0);
                i
            }
            None => {
                self.backing.push(backing);
                self.devices.push(device);
                self.models.push(model);
                self.resets.push(0);
                self.devices.len() - 1
            }
        };
        self.add_sysfs(index);
        self.add_sriov(index);
        index
    }

    pub(super) fn new_fd(&mut self, object: Object) -> Fd {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.fds.insert(fd, object);
        Fd::from_raw(fd)
    }

    fn group_members(&self, number: u32) -> impl Iterator<Item = &FakeDevice> {
        self.devices.iter().filter(move |d| d.group == Some(number))
    }

    pub(super) fn group_viable(&self, number: u32) -> bool {
        self.group_members(number).all(|d| d.driver.is_none() || d.bound_to_vfio())
    }

    pub(super) fn group_open(&self, number: u32) -> bool {
        self.fds.values().any(|o| matches!(o, Object::Group { number: n, .. } if *n == number))
    }

    pub(super) fn device_open(&self, index: usize) -> bool {
        self.fds.values().any(|o| match o {
            Object::Device { device } | Object::Cdev { device, .. } => *device == index,
            _ => false,
        })
    }

    fn group_has_open_device(&self, number: u32) -> bool {
        self.devices.iter().enumerate().any(|(i, d)| d.group == Some(number) && self.device_open(i))
    }

    /// The group a `/dev/vfio/...` path names, if its node exists.
    pub(super) fn group_node(&self, path: &str) -> Option<u32> {
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

    /// Detaches group `number` from container `cfd`; the last group takes the
    /// IOMMU type and every DMA mapping with it.
    pub(super) fn detach(&mut self, cfd: i32, number: u32) {
        if let Some(Object::Container { iommu, groups, dma }) = self.fds.get_mut(&cfd) {
            groups.retain(|&g| g != number);
            if groups.is_empty() {
                *iommu = None;
                dma.clear();
            }
        }
    }

    /// Forgets a closed device's interrupt bindings (the kernel disables them).
    pub(super) fn device_closed(&mut self, device: usize) {
        self.irq_bindings.retain(|&(d, _, _), _| d != device);
        self.irq_masked.retain(|&(d, _, _)| d != device);
        if !self.device_open(device) && self.unbind_on_release.remove(&device) {
            self.complete_unbind(device);
        }
    }

    /// The driver lets the device go (a waiting unbind completes). Linux
    /// then detaches the device's group from its container if no device of
    /// it is left open, taking the group's DMA mappings, and the group is
    /// dead: GET_STATUS says ENODEV, UNSET_CONTAINER EINVAL.
    pub(super) fn complete_unbind(&mut self, device: usize) {
        self.devices[device].driver = None;
        let Some(number) = self.devices[device].group else { return };
        if self.group_has_open_device(number) {
            return;
        }
        let attached: Vec<(i32, i32)> = self
            .fds
            .iter()
            .filter_map(|(&fd, o)| match o {
                Object::Group { number: n, container: Some(c) } if *n == number => Some((fd, *c)),
                _ => None,
            })
            .collect();
        for (fd, cfd) in attached {
            self.detach(cfd, number);
            if let Some(Object::Group { container, .. }) = self.fds.get_mut(&fd) {
                *container = None;
            }
        }
        if self.fds.values().any(|o| matches!(o, Object::Group { number: n, .. } if *n == number)) {
            self.dead_groups.insert(number);
        }
    }

    pub(super) fn device_of(&self, fd: Fd) -> Result<usize, Errno> {
        match self.fds.get(&fd.raw()) {
            Some(Object::Device { device }) | Some(Object::Cdev { device, bound: Some(_), .. }) => Ok(*device),
            // No access before the cdev is bound to an iommufd.
            Some(Object::Cdev { .. }) => Err(Errno::INVAL),
            Some(_) => Err(Errno::NOTTY),
            None => Err(Errno::BADF),
        }
    }

    /// The region and in-region offset an fd offset points at.
    pub(super) fn locate(&self, device: usize, offset: u64) -> Result<(u32, u64), Errno> {
        let index = (offset >> REGION_SHIFT) as u32;
        let region = self.devices[device].regions.get(index as usize).ok_or(Errno::INVAL)?;
        if region.info_errno.is_some() {
            return Err(Errno::INVAL);
        }
        Ok((index, offset & ((1 << REGION_SHIFT) - 1)))
    }

    /// The type1 container an fd is, with its IOMMU type set.
    fn type1_container(&self, fd: Fd) -> Result<(), Errno> {
        match self.fds.get(&fd.raw()) {
            Some(Object::Container { iommu: Some(sys::TYPE1_IOMMU | sys::TYPE1V2_IOMMU), .. }) => Ok(()),
            // No backend set, or the noiommu one, which has no such ioctls.
            Some(Object::Container { iommu: Some(_), .. }) => Err(Errno::NOTTY),
            Some(Object::Container { .. }) => Err(Errno::INVAL),
            Some(_) => Err(Errno::NOTTY),
            None => Err(Errno::BADF),
        }
    }

    fn dma_of(&mut self, fd: Fd) -> &mut Vec<DmaEntry> {
        match self.fds.get_mut(&fd.raw()) {
            Some(Object::Container { dma, .. }) => dma,
            _ => unreachable!("checked by type1_container"),
        }
    }

    /// Every DMA mapping of every container and IO address space.
    pub(super) fn all_dma(&self) -> impl Iterator<Item = &DmaEntry> {
        self.fds.values().flat_map(|o| {
            let (dma, ioas): (&[DmaEntry], _) = match o {
                Object::Container { dma, .. } => (dma, None),
                Object::Iommufd { ioas, .. } => (&[], Some(ioas)),
                _ => (&[], None),
            };
            dma.iter().chain(ioas.into_iter().flat_map(|spaces| spaces.values().flatten()))
        })
    }

    /// Whether a DMA mapping covers part of `addr..addr + len`.
    pub(super) fn dma_covers(&self, addr: usize, len: usize) -> bool {
        let (start, end) = (addr as u64, (addr + len) as u64);
        self.all_dma().any(|m| m.vaddr < end && start < m.vaddr + m.size)
    }

    /// Translates a device address range to process memory, as the IOMMU would.
    pub(super) fn translate(&self, iova: u64, len: u64) -> Option<u64> {
        let end = iova.checked_add(len)?;
        self.all_dma().find(|m| iova >= m.iova && end <= m.iova + m.size).map(|m| m.vaddr + (iova - m.iova))
    }

    pub(super) fn ioctl(&mut self, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        match request {
            Request::IommuGetInfo(buf) => return self.iommu_info(fd, buf),
            Request::IommuMapDma(map) => return self.map_dma(fd, map),
            Request::IommuUnmapDma(unmap) => return self.unmap_dma(fd, unmap),
            Request::DeviceSetIrqs(set) => return self.set_irqs(fd, set),
            Request::DeviceGetRegionInfoCaps(buf) => return self.region_info_caps(fd, buf),
            Request::IoasAlloc(alloc) => return self.ioas_alloc(fd, alloc),
            Request::IoasIovaRanges(query) => return self.ioas_iova_ranges(fd, query),
            Request::IoasMap(map) => return self.ioas_map(fd, map),
            Request::IoasUnmap(unmap) => return self.ioas_unmap(fd, unmap),
            Request::DeviceBindIommufd(bind) => return self.bind_iommufd(fd, bind),
            Request::DeviceAttachIommufdPt(attach) => return self.attach_ioas(fd, attach),
            _ => {}
        }
        let cdev_view;
        let object = match self.fds.get(&fd.raw()).ok_or(Errno::BADF)? {
            // A bound cdev answers as the device fd it is.
            Object::Cdev { device, bound: Some(_), .. } => {
                cdev_view = Object::Device { device: *device };
                &cdev_view
            }
            Object::Cdev { .. } => return Err(Errno::INVAL),
            object => object,
        };
        match (object, request) {
            (Object::Container { .. }, Request::GetApiVersion) => Ok(self.api_version),
            (Object::Container { .. }, Request::CheckExtension(ext)) => Ok(i32::from(match ext {
                sys::TYPE1_IOMMU => self.type1,
                sys::TYPE1V2_IOMMU => self.type1v2,
                sys::NOIOMMU_IOMMU => self.noiommu_mode,
                _ => false,
            })),
            (Object::Container { iommu, groups, .. }, Request::SetIommu(kind)) => {
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
                    // As Linux: no IOMMU driver takes this type.
                    return Err(Errno::NODEV);
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
                if self.dead_groups.contains(number) {
                    return Err(Errno::NODEV);
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
                if container.is_some() {
                    return Err(Errno::INVAL);
                }
                // Linux 5.19+: the group's DMA ownership is claimed here,
                // which a group mate's kernel driver refuses.
                if !self.group_viable(number) {
                    return Err(Errno::PERM);
                }
                let Some(Object::Container { iommu, groups, .. }) = self.fds.get(&cfd.raw()) else {
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
                let device = self.match_device(number, name)?;
                if self.device_open(device) {
                    return Err(Errno::BUSY);
                }
                Ok(self.new_fd(Object::Device { device }).raw())
            }
            (Object::Device { device }, Request::DeviceSetVfToken(feature)) => {
                let device = *device;
                self.feature_vf_token(device, feature)
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
            (Object::Device { device }, Request::DeviceReset) => {
                let device = *device;
                if !self.devices[device].flags.contains(sys::DeviceFlags::RESET) {
                    return Err(Errno::INVAL);
                }
                self.resets[device] += 1;
                Ok(0)
            }
            _ => Err(Errno::NOTTY),
        }
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` with room for a capability chain.
    fn region_info_caps(&mut self, fd: Fd, buf: &mut sys::InfoBuffer) -> Result<i32, Errno> {
        let device = self.device_of(fd)?;
        let index = buf.u32_at(8);
        let region = self.devices[device].regions.get(index as usize).ok_or(Errno::INVAL)?;
        if let Some(errno) = region.info_errno {
            return Err(errno);
        }
        let argsz = buf.argsz() as usize;
        let mut flags = region.flags;
        let head = 32usize;
        let caps_len = if region.sparse.is_empty() { 0 } else { 16 + 16 * region.sparse.len() };
        let mut cap_offset = 0u32;
        if caps_len > 0 {
            flags |= RegionFlags::CAPS;
            if argsz < head + caps_len {
                buf.set_argsz((head + caps_len) as u32);
            } else {
                let b = &mut buf.bytes;
                b[head..head + 2].copy_from_slice(&sys::REGION_CAP_SPARSE_MMAP.to_le_bytes());
                b[head + 2..head + 4].copy_from_slice(&1u16.to_le_bytes());
                b[head + 4..head + 8].copy_from_slice(&0u32.to_le_bytes());
                b[head + 8..head + 12].copy_from_slice(&(region.sparse.len() as u32).to_le_bytes());
                for (i, &(off, size)) in region.sparse.iter().enumerate() {
                    let at = head + 16 + 16 * i;
                    b[at..at + 8].copy_from_slice(&off.to_le_bytes());
                    b[at + 8..at + 16].copy_from_slice(&size.to_le_bytes());
                }
                cap_offset = head as u32;
            }
        }
        let b = &mut buf.bytes;
        b[4..8].copy_from_slice(&flags.bits().to_le_bytes());
        b[12..16].copy_from_slice(&cap_offset.to_le_bytes());
        b[16..24].copy_from_slice(&region.size.to_le_bytes());
        b[24..32].copy_from_slice(&(u64::from(index) << REGION_SHIFT).to_le_bytes());
        Ok(0)
    }

    fn set_irqs(&mut self, fd: Fd, set: &sys::IrqSetEventfds) -> Result<i32, Errno> {
        let device = self.device_of(fd)?;
        let head = set.head;
        let (flags, count) =
            self.devices[device].irqs.get(head.index as usize).copied().flatten().ok_or(Errno::INVAL)?;
        let action = IrqSetFlags::from_bits_retain(head.flags);
        let data = action & (IrqSetFlags::DATA_NONE | IrqSetFlags::DATA_BOOL | IrqSetFlags::DATA_EVENTFD);
        let act = action & (IrqSetFlags::ACTION_MASK | IrqSetFlags::ACTION_UNMASK | IrqSetFlags::ACTION_TRIGGER);
        if data.bits().count_ones() != 1 || act.bits().count_ones() != 1 {
            return Err(Errno::INVAL);
        }
        let end = head.start.checked_add(head.count).ok_or(Errno::INVAL)?;
        if act == IrqSetFlags::ACTION_TRIGGER && data == IrqSetFlags::DATA_NONE && head.count == 0 {
            self.irq_bindings.retain(|&(d, i, _), _| !(d == device && i == head.index));
            self.irq_masked.retain(|&(d, i, _)| !(d == device && i == head.index));
            return Ok(0);
        }
        if end > count || head.count as usize > sys::MAX_IRQ_VECTORS {
            return Err(Errno::INVAL);
        }
        match (act, data) {
            (IrqSetFlags::ACTION_TRIGGER, IrqSetFlags::DATA_EVENTFD) => {
                if head.argsz < 20 + 4 * head.count {
                    return Err(Errno::INVAL);
                }
                // vfio-pci: INTx, MSI and MSI-X exclude each other.
                let pci = self.devices[device].flags.contains(sys::DeviceFlags::PCI);
                let other_mode = self
                    .irq_bindings
                    .keys()
                    .any(|&(d, i, _)| d == device && i != head.index && i <= sys::pci_irq::MSIX);
                if pci && head.index <= sys::pci_irq::MSIX && other_mode {
                    return Err(Errno::INVAL);
                }
                for (i, &efd) in set.fds[..head.count as usize].iter().enumerate() {
                    let vector = (device, head.index, head.start + i as u32);
                    if efd < 0 {
                        self.irq_bindings.remove(&vector);
                    } else if matches!(self.fds.get(&efd), Some(Object::EventFd { .. })) {
                        self.irq_bindings.insert(vector, efd);
                    } else {
                        return Err(Errno::BADF);
                    }
                }
                Ok(0)
            }
            (IrqSetFlags::ACTION_MASK | IrqSetFlags::ACTION_UNMASK, IrqSetFlags::DATA_NONE) => {
                if !flags.contains(IrqFlags::MASKABLE) {
                    return Err(Errno::INVAL);
                }
                for v in head.start..end {
                    let vector = (device, head.index, v);
                    if act == IrqSetFlags::ACTION_MASK {
                        self.irq_masked.insert(vector);
                    } else {
                        self.irq_masked.remove(&vector);
                    }
                }
                Ok(0)
            }
            _ => Err(Errno::INVAL),
        }
    }

    fn iommu_info(&mut self, fd: Fd, buf: &mut sys::InfoBuffer) -> Result<i32, Errno> {
        self.type1_container(fd)?;
        let argsz = buf.argsz() as usize;
        let head = 24usize;
        let ranges = self.iova_ranges.len();
        let range_cap = 16 + 16 * ranges;
        let avail_cap = 16;
        let caps = range_cap + avail_cap;
        let flags = sys::IOMMU_INFO_PGSIZES | sys::IOMMU_INFO_CAPS;
        let b = &mut buf.bytes;
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&(0x4020_1000u64).to_le_bytes()); // 4 KiB, 2 MiB, 1 GiB
        if argsz < head + caps {
            b[16..20].copy_from_slice(&0u32.to_le_bytes());
            buf.set_argsz((head + caps) as u32);
            return Ok(0);
        }
        b[16..20].copy_from_slice(&(head as u32).to_le_bytes());
        let r = head;
        b[r..r + 2].copy_from_slice(&sys::IOMMU_CAP_IOVA_RANGE.to_le_bytes());
        b[r + 2..r + 4].copy_from_slice(&1u16.to_le_bytes());
        b[r + 4..r + 8].copy_from_slice(&((r + range_cap) as u32).to_le_bytes());
        b[r + 8..r + 12].copy_from_slice(&(ranges as u32).to_le_bytes());
        for (i, &(start, end)) in self.iova_ranges.iter().enumerate() {
            let at = r + 16 + 16 * i;
            b[at..at + 8].copy_from_slice(&start.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&end.to_le_bytes());
        }
        let a = r + range_cap;
        let used = self
            .fds
            .get(&fd.raw())
            .map(|o| match o {
                Object::Container { dma, .. } => dma.len() as u32,
                _ => 0,
            })
            .unwrap_or(0);
        b[a..a + 2].copy_from_slice(&sys::IOMMU_CAP_DMA_AVAIL.to_le_bytes());
        b[a + 2..a + 4].copy_from_slice(&1u16.to_le_bytes());
        b[a + 4..a + 8].copy_from_slice(&0u32.to_le_bytes());
        b[a + 8..a + 12].copy_from_slice(&self.dma_limit.saturating_sub(used).to_le_bytes());
        Ok(0)
    }

    fn map_dma(&mut self, fd: Fd, map: &sys::DmaMap) -> Result<i32, Errno> {
        self.type1_container(fd)?;
        let page = PAGE as u64;
        let rw = sys::DMA_MAP_FLAG_READ | sys::DMA_MAP_FLAG_WRITE;
        let aligned = map.iova.is_multiple_of(page) && map.size.is_multiple_of(page) && map.vaddr.is_multiple_of(page);
        if map.size == 0 || !aligned || map.flags & !rw != 0 || map.flags == 0 {
            return Err(Errno::INVAL);
        }
        let end = map.iova.checked_add(map.size - 1).ok_or(Errno::INVAL)?;
        if !self.iova_ranges.iter().any(|&(s, e)| map.iova >= s && end <= e) {
            return Err(Errno::INVAL);
        }
        let limit = self.dma_limit as usize;
        // Linux pins last, after the overlap and count checks.
        let pinned = self.charge_pin(true, map.size);
        let dma = self.dma_of(fd);
        if dma.iter().any(|m| map.iova < m.iova + m.size && m.iova < map.iova + map.size) {
            return Err(Errno::EXIST);
        }
        if dma.len() >= limit {
            return Err(Errno::NOSPC);
        }
        pinned?;
        dma.push(DmaEntry { iova: map.iova, size: map.size, vaddr: map.vaddr });
        Ok(0)
    }

    fn unmap_dma(&mut self, fd: Fd, unmap: &mut sys::DmaUnmap) -> Result<i32, Errno> {
        self.type1_container(fd)?;
        let dma = self.dma_of(fd);
        let before = dma.len();
        dma.retain(|m| !(m.iova == unmap.iova && m.size == unmap.size));
        if dma.len() == before {
            unmap.size = 0;
        }
        Ok(0)
    }
}
