//! The fake's iommufd: `/dev/iommu` with IO address spaces, and VFIO device
//! cdevs that must be bound to it (and attached to an IOAS to reach memory),
//! with Linux's rules: one owner per group and device, no access before the
//! bind, fixed-IOVA mappings that may not overlap.

use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use rustix::io::Errno;

use super::memory::PAGE;
use super::model::{DmaEntry, Object, State};
use crate::kernel::Fd;
use crate::sys;

impl State {
    /// Opens `/dev/iommu` or `/dev/vfio/devices/vfioN`, if `path` is one of
    /// them (`None`: some other path).
    pub(super) fn open_iommufd_node(&mut self, path: &str) -> Option<Result<Fd, Errno>> {
        if path == "/dev/iommu" {
            if !self.iommufd {
                return Some(Err(Errno::NOENT));
            }
            return Some(Ok(self.new_fd(Object::Iommufd { next_id: 1, ioas: Default::default() })));
        }
        let number = path.strip_prefix("/dev/vfio/devices/vfio")?;
        let device = number.parse::<usize>().ok().filter(|&d| self.has_cdev(d) == Some(false));
        Some(match device {
            Some(device) => Ok(self.new_fd(Object::Cdev { device, bound: None, ioas: None })),
            None => Err(Errno::NOENT),
        })
    }

    /// Whether device `index` has a cdev: `Some(noiommu)` if it has one.
    pub(super) fn has_cdev(&self, index: usize) -> Option<bool> {
        let d = self.devices.get(index)?;
        let visible = self.cdevs && d.bound_to_vfio() && d.group.is_some() && (!d.noiommu || self.noiommu_mode);
        visible.then_some(d.noiommu)
    }

    /// The entries of `/sys/bus/BUS/devices/DEV/vfio-dev` for device `index`.
    /// As in Linux 6.12, noiommu devices are listed too (with no node).
    pub(super) fn list_vfio_dev(&self, index: usize) -> Result<Vec<String>, Errno> {
        match self.has_cdev(index) {
            Some(_) => Ok(vec![format!("vfio{index}")]),
            None => Err(Errno::NOENT),
        }
    }

    /// `.../vfio-dev/vfioN/dev` (the node's numbers): only devices behind an
    /// IOMMU have a node.
    pub(super) fn cdev_node_numbers(&self, index: usize, entry: &str) -> Result<String, Errno> {
        match self.has_cdev(index) {
            // The cdev's major, and its index as the minor, as Linux numbers them.
            Some(false) if entry == format!("vfio{index}/dev") => Ok(format!("253:{index}\n")),
            _ => Err(Errno::NOENT),
        }
    }

    /// Whether a device of group `number` is bound through its cdev.
    pub(super) fn group_has_bound_cdev(&self, number: u32) -> bool {
        self.fds.values().any(|o| match o {
            Object::Cdev { device, bound: Some(_), .. } => self.devices[*device].group == Some(number),
            _ => false,
        })
    }

    fn ioas_of(&mut self, fd: Fd, id: u32) -> Result<&mut Vec<DmaEntry>, Errno> {
        match self.fds.get_mut(&fd.raw()) {
            Some(Object::Iommufd { ioas, .. }) => ioas.get_mut(&id).ok_or(Errno::NOENT),
            Some(_) => Err(Errno::NOTTY),
            None => Err(Errno::BADF),
        }
    }

    /// Whether a device is attached to IOAS `id` of iommufd `fd`.
    fn ioas_in_use(&self, fd: Fd, id: u32) -> bool {
        self.fds
            .values()
            .any(|o| matches!(o, Object::Cdev { bound: Some(b), ioas: Some(i), .. } if *b == fd.raw() && *i == id))
    }

    /// The IOVA ranges IOAS `id` allows: the IOMMU's once a device is attached.
    fn ioas_ranges(&self, fd: Fd, id: u32) -> Vec<(u64, u64)> {
        if self.ioas_in_use(fd, id) {
            self.iova_ranges.clone()
        } else {
            vec![(0, u64::MAX)]
        }
    }

    pub(super) fn ioas_alloc(&mut self, fd: Fd, alloc: &mut sys::IoasAlloc) -> Result<i32, Errno> {
        if alloc.size < sys::argsz::<sys::IoasAlloc>() || alloc.flags != 0 {
            return Err(Errno::INVAL);
        }
        match self.fds.get_mut(&fd.raw()) {
            Some(Object::Iommufd { next_id, ioas }) => {
                alloc.out_ioas_id = *next_id;
                ioas.insert(*next_id, Vec::new());
                *next_id += 1;
                Ok(0)
            }
            Some(_) => Err(Errno::NOTTY),
            None => Err(Errno::BADF),
        }
    }

    pub(super) fn ioas_iova_ranges(&mut self, fd: Fd, query: &mut sys::IoasIovaRangesQuery) -> Result<i32, Errno> {
        let id = query.head.ioas_id;
        self.ioas_of(fd, id)?;
        let ranges = self.ioas_ranges(fd, id);
        let room = (query.head.num_iovas as usize).min(query.ranges.len());
        // As Linux: the room is filled, the count and alignment are written,
        // and too many ranges answer EMSGSIZE after all that.
        for (slot, &(start, last)) in query.ranges.iter_mut().zip(&ranges).take(room) {
            *slot = sys::IoasIovaRange { start, last };
        }
        query.head.num_iovas = ranges.len() as u32;
        query.head.out_iova_alignment = PAGE as u64;
        if ranges.len() > room {
            return Err(Errno::MSGSIZE);
        }
        Ok(0)
    }

    pub(super) fn ioas_map(&mut self, fd: Fd, map: &sys::IoasMap) -> Result<i32, Errno> {
        let known = sys::IOAS_MAP_FIXED_IOVA | sys::IOAS_MAP_READABLE | sys::IOAS_MAP_WRITEABLE;
        if map.flags & !known != 0 {
            return Err(Errno::OPNOTSUPP);
        }
        let page = PAGE as u64;
        let aligned =
            map.iova.is_multiple_of(page) && map.length.is_multiple_of(page) && map.user_va.is_multiple_of(page);
        // The fake only models fixed IOVAs (what the library asks for).
        if map.flags & sys::IOAS_MAP_FIXED_IOVA == 0 || map.length == 0 || !aligned {
            return Err(Errno::INVAL);
        }
        let last = map.iova.checked_add(map.length - 1).ok_or(Errno::OVERFLOW)?;
        let allowed = self.ioas_ranges(fd, map.ioas_id);
        // Linux pins last, after the range and overlap checks.
        let pinned = self.charge_pin(false, map.length);
        let dma = self.ioas_of(fd, map.ioas_id)?;
        if !allowed.iter().any(|&(s, e)| map.iova >= s && last <= e) {
            return Err(Errno::INVAL);
        }
        if dma.iter().any(|m| map.iova < m.iova + m.size && m.iova < map.iova + map.length) {
            return Err(Errno::EXIST);
        }
        pinned?;
        dma.push(DmaEntry { iova: map.iova, size: map.length, vaddr: map.user_va });
        Ok(0)
    }

    pub(super) fn ioas_unmap(&mut self, fd: Fd, unmap: &mut sys::IoasUnmap) -> Result<i32, Errno> {
        let dma = self.ioas_of(fd, unmap.ioas_id)?;
        let at = dma.iter().position(|m| m.iova == unmap.iova && m.size == unmap.length).ok_or(Errno::NOENT)?;
        dma.remove(at);
        Ok(0)
    }

    pub(super) fn bind_iommufd(&mut self, fd: Fd, bind: &mut sys::BindIommufd) -> Result<i32, Errno> {
        let device = match self.fds.get(&fd.raw()) {
            Some(Object::Cdev { device, bound: None, .. }) => *device,
            Some(_) => return Err(Errno::INVAL),
            None => return Err(Errno::BADF),
        };
        if bind.argsz < sys::argsz::<sys::BindIommufd>() || bind.flags != 0 {
            return Err(Errno::INVAL);
        }
        if !matches!(self.fds.get(&bind.iommufd), Some(Object::Iommufd { .. })) {
            return Err(Errno::BADF);
        }
        // The IOMMU has one owner per group (EBUSY): not a driver holding
        // another member, not the group's own node, not another iommufd.
        let group = self.devices[device].group.ok_or(Errno::NODEV)?;
        // Linux 6.6-6.12: the group open through its legacy node: EBUSY; the
        // device bound through another cdev fd: EINVAL (only a bind counts);
        // the IOMMU refusing a second owner of the group (a driver on a
        // group mate, or another iommufd holding one): EPERM.
        if self.group_open(group) {
            return Err(Errno::BUSY);
        }
        let bound_elsewhere = self.fds.iter().any(
            |(&f, o)| matches!(o, Object::Cdev { device: d, bound: Some(_), .. } if f != fd.raw() && *d == device),
        );
        if bound_elsewhere {
            return Err(Errno::INVAL);
        }
        let other_iommufd = self.fds.values().any(|o| match o {
            Object::Cdev { device: d, bound: Some(b), .. } => {
                *b != bind.iommufd && self.devices[*d].group == Some(group)
            }
            _ => false,
        });
        if !self.group_viable(group) || other_iommufd {
            return Err(Errno::PERM);
        }
        if let Some(Object::Cdev { bound, .. }) = self.fds.get_mut(&fd.raw()) {
            *bound = Some(bind.iommufd);
        }
        bind.out_devid = device as u32 + 1;
        Ok(0)
    }

    pub(super) fn attach_ioas(&mut self, fd: Fd, attach: &mut sys::AttachIommufdPt) -> Result<i32, Errno> {
        let iommufd = match self.fds.get(&fd.raw()) {
            Some(Object::Cdev { bound: Some(iommufd), .. }) => *iommufd,
            Some(_) => return Err(Errno::INVAL),
            None => return Err(Errno::BADF),
        };
        if attach.argsz < sys::argsz::<sys::AttachIommufdPt>() || attach.flags != 0 {
            return Err(Errno::INVAL);
        }
        self.ioas_of(Fd::from_raw(iommufd), attach.pt_id)?;
        if let Some(Object::Cdev { ioas, .. }) = self.fds.get_mut(&fd.raw()) {
            *ioas = Some(attach.pt_id);
        }
        Ok(0)
    }
}
