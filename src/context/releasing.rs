//! How a context lets go of what it opened: a device's regions, fd and
//! eventfds, its share of its group or of the iommufd, the DMA mappings that
//! go with the last device of an IOMMU domain, and everything when it closes.

use super::Context;
use crate::container::{Container, IommuKind};
use crate::dma::Domain;
use crate::error::Error;
use crate::group::Group;
use crate::iommufd::Iommufd;
use crate::kernel::Kernel;

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Releases the open device in table slot `slot`: its regions, fd and
    /// eventfds, then its share of its group or of the iommufd.
    pub(super) fn release_device(&mut self, slot: usize) -> Result<(), Error> {
        self.iommu_info = None;
        // Known for every device opened through its group (`Backend::Legacy`).
        match self.devices[slot].known_group() {
            Some(group) => {
                let released = self.release_slot(slot);
                let detached = self.release_group(group);
                released.and(detached)
            }
            None => self.release_iommufd_device(slot),
        }
    }

    /// Releases the device in table slot `slot` where it lies (regions, fd,
    /// eventfds), then drops the slot: the last one without moving a byte,
    /// another by moving the last device into it.
    pub(super) fn release_slot(&mut self, slot: usize) -> Result<(), Error> {
        let result = self.devices[slot].release(&self.kernel);
        if slot + 1 == self.devices.len() {
            self.devices.truncate(slot);
        } else {
            let _ = self.devices.swap_remove(slot);
        }
        result
    }

    /// Closes a device opened through iommufd. The last one takes the DMA
    /// mappings with it, as the last legacy group does: they are removed
    /// from the IO address space while it is still attached, then the
    /// memory is released. If the kernel keeps some, the address space is
    /// replaced (closing the old one drops them) before the memory goes. If
    /// even that fails, the mappings stay, in the table as in the address
    /// space (the next device attached finds them; `dma_free` can retry; the
    /// context's drop releases them after closing the iommufd), and the
    /// unmap's error is returned.
    pub(super) fn release_iommufd_device(&mut self, slot: usize) -> Result<(), Error> {
        let Some(iommufd) = self.iommufd.as_ref() else {
            return self.release_slot(slot);
        };
        let domain = Domain::Ioas { iommufd: iommufd.fd(), ioas: iommufd.ioas() };
        let takes_dma = iommufd.devices() == 1 && self.dma.len() > 0;
        let unmapped = if takes_dma { self.dma.unmap_all_from_iommu(&self.kernel, domain) } else { Ok(()) };
        // Closing the cdev detaches the device from the IO address space.
        let result = self.release_slot(slot);
        if let Some(iommufd) = self.iommufd.as_mut() {
            iommufd.device_detached();
        }
        if !takes_dma {
            return result;
        }
        match unmapped {
            Ok(()) => self.dma.forget_all(&self.kernel),
            Err(_) if self.renew_iommufd() => self.dma.forget_all(&self.kernel),
            Err(e) => return result.and(Err(e)),
        }
        result
    }

    /// Replaces the iommufd and its IOAS with fresh ones (the directories it
    /// holds stay); returns whether it did (the old one, closed, took its
    /// mappings with it).
    pub(super) fn renew_iommufd(&mut self) -> bool {
        let renewed = match self.iommufd.take() {
            Some(old) => old.renew(&self.kernel).map_err(Some),
            None => Iommufd::open(&self.kernel).map_err(|_| None),
        };
        match renewed {
            Ok(fresh) => {
                self.iommufd = Some(fresh);
                true
            }
            Err(kept) => {
                self.iommufd = kept;
                false
            }
        }
    }

    /// Gives back one device's share of group `number`; the last share
    /// detaches and closes it.
    pub(super) fn release_group(&mut self, number: u32) -> Result<(), Error> {
        let Some(slot) = self.groups.iter().position(|g| g.number() == number) else {
            return Ok(());
        };
        if self.groups[slot].device_closed() > 0 {
            return Ok(());
        }
        let group = self.groups.swap_remove(slot);
        self.detach(group)
    }

    /// Detaches a group from its container and closes it.
    pub(super) fn detach(&mut self, group: Group) -> Result<(), Error> {
        let kind = group.kind();
        // The last IOMMU-backed group takes the IOMMU domain, and with it the
        // DMA mappings: remove them first, while the domain still exists.
        let legacy = self.legacy.as_ref().filter(|_| kind == IommuKind::Type1);
        let last_domain_group = legacy.is_some_and(|c| c.groups() == 1) && self.dma.len() > 0;
        let dma_unmapped = match legacy {
            Some(c) if last_domain_group => self.dma.unmap_all_from_iommu(&self.kernel, Domain::Type1(c.fd())).is_ok(),
            _ => false,
        };
        let result = group.close(&self.kernel, true);
        // Mappings go only once no device can reach them: every one removed,
        // or the domain gone with the group. If the kernel refused both the
        // unmaps and the detach, the domain may live on (another reference
        // to the group keeps it attached): the mappings stay in the table,
        // stranded, so the caller is never told that memory the IOMMU may
        // still map is free. They go when the context drops.
        if last_domain_group && !dma_unmapped && result.is_err() {
            self.dma.strand_all();
        } else if last_domain_group {
            self.dma.forget_all(&self.kernel);
        }
        match kind {
            IommuKind::Type1 => {
                if let Some(container) = &mut self.legacy {
                    container.group_left();
                    if container.groups() == 0 && self.iommufd.is_some() {
                        // Opened for its groups (Auto, beside iommufd): it
                        // goes with the last.
                        if let Some(container) = self.legacy.take() {
                            container.close(&self.kernel);
                        }
                    } else if container.groups() == 0 && result.is_err() {
                        self.renew_iommu_container();
                    }
                }
            }
            IommuKind::NoIommu => {
                // The container stays open for the next noiommu group (its
                // open and close would cost every setup and free three
                // system calls); it closes with the context.
                if let Some(container) = &mut self.noiommu {
                    container.group_left();
                }
            }
        }
        result
    }

    /// After a failed `VFIO_GROUP_UNSET_CONTAINER` the kernel may keep the
    /// group attached (its release waits for every reference to the device
    /// file), and with it the container's IOMMU type, which a new group could
    /// then not set. Start over with a fresh container; the kernel frees the
    /// old one with its last reference. If none can be opened, keep the old
    /// one and assume its type is still set.
    pub(super) fn renew_iommu_container(&mut self) {
        match Container::open(&self.kernel, IommuKind::Type1) {
            Ok(fresh) => {
                if let Some(old) = self.legacy.replace(fresh) {
                    old.close(&self.kernel);
                }
            }
            Err(_) => {
                if let Some(container) = &mut self.legacy {
                    container.assume_type_kept();
                }
            }
        }
    }

    /// Releases every device, group, container, the iommufd and the DMA
    /// memory: a drop, or a close in place.
    pub(super) fn release_all(&mut self) {
        while let Some(last) = self.devices.len().checked_sub(1) {
            let _ = self.release_device(last);
        }
        while let Some(group) = self.groups.pop() {
            let _ = self.detach(group);
        }
        for container in [self.noiommu.take(), self.legacy.take()].into_iter().flatten() {
            container.close(&self.kernel);
        }
        if let Some(iommufd) = self.iommufd.take() {
            iommufd.close(&self.kernel);
        }
        // Mappings an IO address space kept (see `release_iommufd_device`)
        // went with the iommufd just closed, and stranded ones (see
        // `detach`) with their container: their memory can go too.
        self.dma.release_all(&self.kernel);
    }
}
