//! The directories a context with an iommufd keeps open, so that setup
//! opens a device's `vfio-dev` directory (where its cdev is listed) from
//! them instead of walking the whole path from `/` at every setup:
//! `/sys/bus/pci/devices` and `/sys/bus/platform/devices`. Both live as long
//! as their bus, so a held one never goes stale. (`/dev/vfio/devices` is not
//! held: devtmpfs removes it with its last node and makes a new one with the
//! next, which a held fd would not see.)

use core::ffi::CStr;

use crate::kernel::{Fd, Kernel, TOKEN};
use crate::name::Bus;

/// Open directories, each `None` where it could not be opened: the whole
/// path is used there instead, as before any directory was held.
#[derive(Debug)]
pub(crate) struct HeldDirs {
    pci_devices: Option<Fd>,
    platform_devices: Option<Fd>,
}

impl HeldDirs {
    /// Opens the directories this kernel and process allow. Never fails: a
    /// kernel without PCI, or a directory the process may not read, leaves
    /// that directory to whole paths, which then give the error setup
    /// reports.
    pub(crate) fn open<K: Kernel>(kernel: &K) -> Self {
        let open = |path: &CStr| kernel.open_dir(&TOKEN, path).ok();
        HeldDirs { pci_devices: open(c"/sys/bus/pci/devices"), platform_devices: open(c"/sys/bus/platform/devices") }
    }

    /// `/sys/bus/BUS/devices`, if held.
    pub(crate) fn devices(&self, bus: Bus) -> Option<Fd> {
        match bus {
            Bus::Pci => self.pci_devices,
            Bus::Platform => self.platform_devices,
        }
    }

    /// Closes every directory held.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        for fd in [self.pci_devices, self.platform_devices].into_iter().flatten() {
            kernel.close(&TOKEN, fd);
        }
    }
}
