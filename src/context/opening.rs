//! How a context opens a device: through its cdev when iommufd may take it,
//! else through its group (opened or shared, and attached to the right
//! container), and how the new device is described in place in the table.

use rustix::io::Errno;

use super::Context;
use crate::backend::{self, Backend, Route, RouteInputs};
use crate::container::{Container, IommuKind};
use crate::device::{DeviceState, Placement};
use crate::error::{Error, ErrorKind, Step};
use crate::group::Group;
use crate::iommufd::{self, CdevOpen, ListedCdev};
use crate::kernel::{Fd, Kernel};
use crate::name::{Bus, DeviceName};
use crate::sriov;
use crate::sysfs::{self, Located};
use crate::vf_token::VfToken;

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Opens the device: through its cdev when iommufd may take it and it has
    /// one, else through its group. Whatever only explains a refusal (is the
    /// device bound to VFIO at all?) is read on the error path.
    /// A VF token (`vf_token`) is passed through the group (see
    /// [`Context::setup_vf`]).
    pub(super) fn open_named(
        &mut self,
        stated: Option<Bus>,
        name: DeviceName,
        serial: u64,
        vf_token: Option<&VfToken>,
    ) -> Result<(), Error> {
        let (mut stated, mut node_missing) = (stated, false);
        let cdev = match vf_token {
            // The crate passes a token through the group only (the cdev of
            // the boards' kernels, 6.6 to 6.12, cannot carry one).
            Some(_) if self.backend == Backend::Iommufd => return Err(Error::new(ErrorKind::VfTokenNeedsGroup)),
            Some(_) => None,
            None => self.cdev_to_take(&name, stated)?,
        };
        if let Some((bus, cdev)) = cdev {
            match self.open_through_iommufd(bus, name, cdev, serial) {
                Ok(()) => return Ok(()),
                // Listed without a node (noiommu): its group opens it.
                Err(CdevOpen::NoNode) => (stated, node_missing) = (Some(bus), true),
                // If the legacy path fails too, iommufd's refusal is the news.
                Err(CdevOpen::Failed(e)) if self.may_fall_back(&e) => {
                    let (bus, group) = sysfs::locate(&self.kernel, &name, Some(bus)).map_err(|_| e)?;
                    let at = Located { name, bus, group };
                    return self.open_through_group(&at, Ok(()), serial, None).map_err(|_| e);
                }
                Err(CdevOpen::Failed(e)) => return Err(sysfs::diagnose(&self.kernel, bus, &name, e)),
            }
        }
        let (bus, group) = sysfs::locate(&self.kernel, &name, stated)?;
        let iommu = match self.route(bus, None) {
            // A token-guarded device beside iommufd ones: one address space.
            _ if vf_token.is_some() && self.iommufd_in_use() => Err(ErrorKind::VfTokenBesideIommufd),
            // A device behind an IOMMU whose cdev is listed but has no node
            // (no devtmpfs, or a container given only some nodes): opening
            // the node is what failed, not the kernel's cdev support.
            Route::Group { iommu: Err(ErrorKind::NoDeviceCdev { .. }) } if node_missing => {
                Err(ErrorKind::Syscall(Step::OpenCdev))
            }
            Route::Group { iommu } => iommu,
            Route::Cdev(_) => unreachable!("no cdev was given"),
        };
        self.open_through_group(&Located { name, bus, group }, iommu, serial, vf_token)
            .map_err(|e| sysfs::diagnose(&self.kernel, bus, &name, e))
    }

    /// The device's bus and cdev, if iommufd may take it (see [`Backend`])
    /// and it has a cdev on the bus stated (or PCI, then platform). The
    /// listing is skipped when the route would not take a cdev anyway.
    /// The cdev's `vfio-dev` directory stays open, for
    /// [`Context::open_through_iommufd`] to prove the cdev is the device's.
    pub(super) fn cdev_to_take(
        &self,
        name: &DeviceName,
        stated: Option<Bus>,
    ) -> Result<Option<(Bus, ListedCdev)>, Error> {
        let candidates: &[Bus] = match stated {
            Some(Bus::Pci) => &[Bus::Pci],
            Some(Bus::Platform) => &[Bus::Platform],
            None => &[Bus::Pci, Bus::Platform],
        };
        for &bus in candidates {
            if !matches!(self.route(bus, Some(0)), Route::Cdev(_)) {
                return Ok(None);
            }
            let devices = self.iommufd.as_ref().and_then(|i| i.devices_dir(bus));
            if let Some(cdev) = iommufd::list_cdev(&self.kernel, devices, bus, name)? {
                // The boards' kernels (6.6 to 6.12) check VF tokens only on
                // the group path: under Auto, a PF and the VFs of a vfio-pci
                // PF take it while the context's address space is not
                // iommufd's already, so a VF's token is checked and a PF and
                // its VFs share one address space. Beside iommufd devices
                // they take the cdev, as the kernel allows. A sysfs file
                // the process may not read leaves the device as any other.
                if self.backend == Backend::Auto && bus == Bus::Pci && !self.iommufd_in_use() {
                    let guarded = match sriov::token_guarded(&self.kernel, name) {
                        Err(e) if matches!(e.errno(), Some(Errno::ACCESS | Errno::PERM)) => Ok(false),
                        other => other,
                    };
                    if !matches!(guarded, Ok(false)) {
                        cdev.close(&self.kernel);
                        return guarded.map(|_| None);
                    }
                }
                return Ok(Some((bus, cdev)));
            }
        }
        Ok(None)
    }

    /// How to open a device on `bus` with cdev `cdev` (see [`Backend`]).
    pub(super) fn route(&self, bus: Bus, cdev: Option<u32>) -> Route {
        backend::route(RouteInputs {
            asked: self.backend,
            iommufd: self.iommufd.is_some(),
            iommufd_in_use: self.iommufd_in_use(),
            legacy_in_use: self.legacy.as_ref().is_some_and(|c| c.groups() > 0),
            cdev,
            bus,
        })
    }

    /// Whether `Backend::Auto` tries the legacy path after iommufd refused a
    /// device: while no device uses iommufd yet, for a cdev the user may not
    /// open (access given on the group node only) or a bind the IOMMU
    /// refuses with `EPERM` (no MSI isolation, which the legacy backend may
    /// be configured to accept). Other refusals would recur there.
    pub(super) fn may_fall_back(&self, e: &Error) -> bool {
        self.backend == Backend::Auto
            && !self.iommufd_in_use()
            && (matches!(e.kind(), ErrorKind::Permission { .. }) || e.errno() == Some(rustix::io::Errno::PERM))
    }

    /// Whether the iommufd address space is in use: devices are attached,
    /// or it keeps mappings the kernel would not remove (the table then holds
    /// them with no IOMMU-backed device open; the legacy path always lets go
    /// of its own). Its next IOMMU-backed device must then be attached there.
    pub(super) fn iommufd_in_use(&self) -> bool {
        let attached = self.iommufd.as_ref().is_some_and(|i| i.devices() > 0);
        let kept = self.dma.len() > 0 && self.active_backend().is_none();
        attached || kept
    }

    /// Opens the device through its cdev, bound to the context's iommufd and
    /// attached to its IO address space. Closes `cdev`'s directory.
    pub(super) fn open_through_iommufd(
        &mut self,
        bus: Bus,
        name: DeviceName,
        cdev: ListedCdev,
        serial: u64,
    ) -> Result<(), CdevOpen> {
        let Some(iommufd) = self.iommufd.as_ref() else {
            cdev.close(&self.kernel);
            return Err(CdevOpen::Failed(Error::new(ErrorKind::NoIommufd)));
        };
        let fd = iommufd.open_device(&self.kernel, cdev, bus, &name)?;
        // Its group is read when asked (see `Device::group`).
        let placement = Placement { name, bus, group: None, noiommu: false, via: Backend::Iommufd, serial };
        self.install(placement, fd).map_err(CdevOpen::Failed)?;
        if let Some(iommufd) = self.iommufd.as_mut() {
            iommufd.device_attached();
        }
        Ok(())
    }

    /// Puts a device just opened into the table and describes it there (a
    /// device's state is kilobytes: only its empty shell is moved in; its
    /// regions are set up in the table slot, never on setup's stack). On error the state is released (regions unmapped, fd
    /// closed) and the table is as it was. The caller checked there is room.
    pub(super) fn install(&mut self, at: Placement, fd: Fd) -> Result<(), Error> {
        if let Err(mut state) = self.devices.push(DeviceState::new(at, fd)) {
            let _ = state.release(&self.kernel);
            return Err(Error::new(ErrorKind::DeviceTableFull { capacity: DEVICES }));
        }
        let last = self.devices.len() - 1;
        if let Err(e) = self.devices[last].describe(&self.kernel) {
            // The setup error is the one that matters; a failing munmap
            // during this unwind cannot be acted on either.
            let _ = self.release_slot(last);
            return Err(e);
        }
        Ok(())
    }

    /// Opens the device from its group, which is opened (or shared) and
    /// attached to the right container first.
    pub(super) fn open_through_group(
        &mut self,
        at: &Located,
        iommu: Result<(), ErrorKind>,
        serial: u64,
        vf_token: Option<&VfToken>,
    ) -> Result<(), Error> {
        let had_noiommu_container = self.noiommu.is_some();
        let slot = self.acquire_group(at.group, iommu)?;
        let group = &self.groups[slot];
        let noiommu = group.kind() == IommuKind::NoIommu;
        let opened = group.device_fd(&self.kernel, &at.name, vf_token).and_then(|fd| {
            let placement =
                Placement { name: at.name, bus: at.bus, group: Some(at.group), noiommu, via: Backend::Legacy, serial };
            self.install(placement, fd)
        });
        if opened.is_err() {
            // Undo the group's share; the setup error is the one to report.
            let _ = self.release_group(at.group);
            if noiommu && !had_noiommu_container {
                self.close_idle_noiommu_container();
            }
        }
        opened
    }

    /// Closes the noiommu container if no group uses it: a failed setup
    /// takes back the one it opened.
    pub(super) fn close_idle_noiommu_container(&mut self) {
        if self.noiommu.as_ref().is_some_and(|c| c.groups() == 0) {
            if let Some(container) = self.noiommu.take() {
                container.close(&self.kernel);
            }
        }
    }

    /// Finds or opens group `number` and takes a share of it for one device.
    /// Returns its slot in the group table. A group behind an IOMMU is
    /// refused with `iommu`'s error, if it is one.
    pub(super) fn acquire_group(&mut self, number: u32, iommu: Result<(), ErrorKind>) -> Result<usize, Error> {
        if let Some(slot) = self.groups.iter().position(|g| g.number() == number) {
            if self.groups[slot].kind() == IommuKind::Type1 {
                iommu.map_err(Error::new)?;
            }
            self.groups[slot].device_opened();
            return Ok(slot);
        }
        if self.groups.is_full() {
            return Err(Error::new(ErrorKind::GroupTableFull { capacity: GROUPS }));
        }
        let mut group = Group::open(&self.kernel, number)?;
        let kernel = &self.kernel;
        let kind = group.kind();
        if let (IommuKind::Type1, Err(refusal)) = (kind, iommu) {
            let _ = group.close(kernel, false);
            return Err(Error::new(refusal));
        }
        let slot = match kind {
            IommuKind::Type1 => &mut self.legacy,
            IommuKind::NoIommu => &mut self.noiommu,
        };
        let opened_container = slot.is_none();
        if opened_container {
            match Container::open(kernel, kind) {
                Ok(container) => *slot = Some(container),
                Err(e) => {
                    let _ = group.close(kernel, false);
                    return Err(e);
                }
            }
        }
        let joined = match slot.as_mut() {
            Some(container) => match group.attach(kernel, container.fd()) {
                Ok(()) => container.group_joined(kernel).map_err(|e| (e, true)),
                Err(e) => Err((e, false)),
            },
            None => unreachable!("opened just above"),
        };
        if let Err((e, attached)) = joined {
            let _ = group.close(kernel, attached);
            if opened_container {
                if let Some(container) = slot.take() {
                    container.close(kernel);
                }
            }
            return Err(e);
        }
        group.device_opened();
        match self.groups.push(group) {
            Ok(()) => Ok(self.groups.len() - 1),
            Err(group) => {
                // Unreachable: fullness was checked first. Undo all the same.
                let _ = self.detach(group);
                Err(Error::new(ErrorKind::GroupTableFull { capacity: GROUPS }))
            }
        }
    }
}
