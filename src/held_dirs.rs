//! The directories a context with an iommufd keeps open, so that opening a
//! device through its cdev looks its names up from them instead of walking
//! whole paths from `/` again at every setup: `/sys/bus/pci/devices` and
//! `/sys/bus/platform/devices` (where a device's `vfio-dev` directory is
//! listed) and `/dev/vfio/devices` (its cdev's node). Each saves the lookups
//! of the path's first components, which cost a setup microseconds on the
//! boards (README, Benchmarks).

use core::ffi::CStr;

use crate::kernel::{Fd, Kernel, TOKEN};
use crate::name::Bus;

/// Open directories, each `None` where it could not be opened: whole paths
/// are used there instead, as before any directory was held.
#[derive(Debug)]
pub(crate) struct HeldDirs {
    pci_devices: Option<Fd>,
    platform_devices: Option<Fd>,
    cdev_nodes: Option<Fd>,
}

impl HeldDirs {
    /// Opens the directories this kernel and process allow. Never fails: a
    /// kernel without PCI, a `/dev/vfio/devices` not made yet (it appears
    /// with the first cdev) or one the process may not read leaves that
    /// directory to whole paths, which then give the error setup reports.
    pub(crate) fn open<K: Kernel>(kernel: &K) -> Self {
        let open = |path: &CStr| kernel.open_dir(&TOKEN, path).ok();
        HeldDirs {
            pci_devices: open(c"/sys/bus/pci/devices"),
            platform_devices: open(c"/sys/bus/platform/devices"),
            cdev_nodes: open(c"/dev/vfio/devices"),
        }
    }

    /// `/sys/bus/BUS/devices`, if held.
    pub(crate) fn devices(&self, bus: Bus) -> Option<Fd> {
        match bus {
            Bus::Pci => self.pci_devices,
            Bus::Platform => self.platform_devices,
        }
    }

    /// `/dev/vfio/devices`, if held.
    pub(crate) fn cdev_nodes(&self) -> Option<Fd> {
        self.cdev_nodes
    }

    /// Closes every directory held.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        for fd in [self.pci_devices, self.platform_devices, self.cdev_nodes].into_iter().flatten() {
            kernel.close(&TOKEN, fd);
        }
    }
}
