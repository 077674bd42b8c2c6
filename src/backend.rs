//! Which kernel interface a context opens IOMMU-backed devices through.
//!
//! - **Legacy**: VFIO containers and groups (`/dev/vfio/vfio`, `/dev/vfio/N`),
//!   the interface DAO's C library uses; every VFIO kernel has it unless it
//!   was built without `CONFIG_VFIO_CONTAINER`.
//! - **iommufd**: the device's own cdev (`/dev/vfio/devices/vfioN`, Linux
//!   6.6+ with `CONFIG_VFIO_DEVICE_CDEV`) bound to an IO address space of
//!   `/dev/iommu` (Linux 6.2+ with `CONFIG_IOMMUFD`), with no containers or
//!   groups to manage.
//!
//! Regions, register blocks, interrupts, reset, PCI config space and DMA work
//! the same through either. noiommu devices always take the legacy path (their
//! noiommu container): iommufd's noiommu mode is not used.

/// The kernel interface a [`Context`](crate::Context) uses for devices behind
/// an IOMMU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// iommufd where the kernel has `/dev/iommu` and the device has a VFIO
    /// cdev, the legacy container otherwise. A context keeps one IOMMU
    /// address space: once a device is open through one interface, the
    /// context's next IOMMU-backed devices use that one too.
    #[default]
    Auto,
    /// Always iommufd: opening the context fails with
    /// [`ErrorKind::NoIommufd`](crate::ErrorKind::NoIommufd) without
    /// `/dev/iommu`, and setting up a device without a cdev fails with
    /// [`ErrorKind::NoDeviceCdev`](crate::ErrorKind::NoDeviceCdev).
    Iommufd,
    /// Always the legacy container and groups (what DAO's C library does).
    Legacy,
}

/// How [`Context::setup`](crate::Context::setup) opens one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Through cdev `/dev/vfio/devices/vfioN` and the context's iommufd.
    Cdev(u32),
    /// Through the device's group. If the group turns out to be behind an
    /// IOMMU (not noiommu) and `iommu` is `Err`, that error is the answer.
    Group { iommu: Result<(), crate::ErrorKind> },
}

/// What the context knows when it routes a device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteInputs {
    pub(crate) asked: Backend,
    /// `/dev/iommu` is open.
    pub(crate) iommufd: bool,
    /// The iommufd address space is in use: devices are attached to it, or
    /// it keeps DMA mappings the kernel would not remove.
    pub(crate) iommufd_in_use: bool,
    /// IOMMU-backed groups are attached to the legacy container.
    pub(crate) legacy_in_use: bool,
    /// The device's cdev `/dev/vfio/devices/vfioN`, if it has one (noiommu
    /// devices have none, or one iommufd cannot serve).
    pub(crate) cdev: Option<u32>,
    pub(crate) bus: crate::Bus,
}

/// The routing rule (pure, so every case is unit-tested).
pub(crate) fn route(at: RouteInputs) -> Route {
    use crate::ErrorKind;
    let open = Route::Group { iommu: Ok(()) };
    // Without a cdev the group path is taken: a noiommu group is always
    // welcome there; an IOMMU-backed one may be refused.
    match (at.asked, at.cdev) {
        (Backend::Legacy, _) => open,
        (Backend::Iommufd, Some(n)) => Route::Cdev(n),
        (Backend::Iommufd, None) => Route::Group { iommu: Err(ErrorKind::NoDeviceCdev { bus: at.bus }) },
        (Backend::Auto, _) if !at.iommufd => open,
        // One address space per context: follow the interface in use.
        (Backend::Auto, Some(_)) if at.legacy_in_use => open,
        (Backend::Auto, Some(n)) => Route::Cdev(n),
        (Backend::Auto, None) if at.iommufd_in_use => Route::Group { iommu: Err(ErrorKind::MixedBackends) },
        (Backend::Auto, None) => open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bus, ErrorKind};

    fn inputs(asked: Backend, iommufd: bool, cdev: Option<u32>) -> RouteInputs {
        RouteInputs { asked, iommufd, iommufd_in_use: false, legacy_in_use: false, cdev, bus: Bus::Pci }
    }

    const GROUP: Route = Route::Group { iommu: Ok(()) };

    #[test]
    fn legacy_always_takes_the_group() {
        for cdev in [None, Some(3)] {
            assert_eq!(route(inputs(Backend::Legacy, true, cdev)), GROUP);
        }
    }

    #[test]
    fn iommufd_takes_the_cdev_and_leaves_only_noiommu_groups_to_the_group_path() {
        assert_eq!(route(inputs(Backend::Iommufd, true, Some(3))), Route::Cdev(3));
        assert_eq!(
            route(inputs(Backend::Iommufd, true, None)),
            Route::Group { iommu: Err(ErrorKind::NoDeviceCdev { bus: Bus::Pci }) }
        );
    }

    #[test]
    fn auto_prefers_iommufd_and_keeps_one_address_space() {
        assert_eq!(route(inputs(Backend::Auto, true, Some(0))), Route::Cdev(0));
        assert_eq!(route(inputs(Backend::Auto, false, Some(0))), GROUP);
        assert_eq!(route(inputs(Backend::Auto, true, None)), GROUP);
        let legacy_in_use = RouteInputs { legacy_in_use: true, ..inputs(Backend::Auto, true, Some(0)) };
        assert_eq!(route(legacy_in_use), GROUP);
        // A device without a cdev beside iommufd ones: only a noiommu group may pass.
        let iommufd_in_use = RouteInputs { iommufd_in_use: true, ..inputs(Backend::Auto, true, None) };
        assert_eq!(route(iommufd_in_use), Route::Group { iommu: Err(ErrorKind::MixedBackends) });
    }
}
