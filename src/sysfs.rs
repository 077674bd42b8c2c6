//! What sysfs says about a device: its bus, its driver, its IOMMU group.
//! Links are read into stack buffers; nothing allocates.

use rustix::io::Errno;

use crate::error::{DriverName, Error, ErrorKind, Label, Step};
use crate::kernel::{Kernel, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::path::sys_path;

/// Room for a sysfs link target (`../../../devices/platform/...`).
pub(crate) const LINK_CAPACITY: usize = 320;

/// The last `/`-separated component of a link target.
pub(crate) fn last_component(link: &[u8]) -> &[u8] {
    let trimmed = link.strip_suffix(b"/").unwrap_or(link);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

/// The group number at the end of an `iommu_group` link
/// (`../../../kernel/iommu_groups/12` gives 12).
pub(crate) fn parse_group_number(link: &[u8]) -> Option<u32> {
    let digits = last_component(link);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// Whether a driver name is one of VFIO's (`vfio-pci`, `vfio-platform`,
/// `vfio-amba`, or a variant driver such as `mlx5_vfio_pci`).
pub(crate) fn is_vfio_driver(driver: &[u8]) -> bool {
    driver.starts_with(b"vfio") || driver.windows(5).any(|w| w == b"_vfio" || w == b"-vfio")
}

/// Reads a link; `Ok(None)` when it does not exist. A target that fills the
/// whole buffer may be truncated and is refused as `ENAMETOOLONG`.
fn read_link<'b, K: Kernel>(kernel: &K, path: &core::ffi::CStr, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Error> {
    let cap = buf.len();
    match kernel.readlink(&TOKEN, path, buf) {
        Ok(target) if target.len() >= cap => Err(Error::syscall(Step::ReadSysfs, Errno::NAMETOOLONG)),
        Ok(target) => Ok(Some(target)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(Error::syscall(Step::ReadSysfs, e)),
    }
}

pub(crate) fn too_long() -> Error {
    Error::syscall(Step::ReadSysfs, Errno::NAMETOOLONG)
}

/// A device found in sysfs ([`locate`]): its name, bus and IOMMU group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    pub(crate) name: DeviceName,
    pub(crate) bus: Bus,
    pub(crate) group: u32,
}

/// Finds the device's bus (the one stated, or PCI then platform) and IOMMU
/// group with one `readlink` per bus tried: the `iommu_group` link exists
/// only for a device that exists and has a group. Without it, the reason is
/// found on this error path ([`diagnose`]).
pub(crate) fn locate<K: Kernel>(kernel: &K, name: &DeviceName, stated: Option<Bus>) -> Result<(Bus, u32), Error> {
    let candidates: &[Bus] = match stated {
        Some(Bus::Pci) => &[Bus::Pci],
        Some(Bus::Platform) => &[Bus::Platform],
        None => &[Bus::Pci, Bus::Platform],
    };
    for &bus in candidates {
        if let Some(group) = group_of(kernel, bus, name)? {
            return Ok((bus, group));
        }
    }
    let bus = find_bus(kernel, name, stated)?;
    check_driver(kernel, bus, name)?;
    Err(Error::new(ErrorKind::NoIommuGroup { bus }))
}

/// On a setup's error path: a device that is not bound to a VFIO driver is
/// refused as such ([`ErrorKind::NotBound`], [`ErrorKind::WrongDriver`]),
/// whatever step noticed it first (a missing group node, a group that is
/// not viable, a refused device fd). Otherwise, or if sysfs cannot tell,
/// the error stands.
pub(crate) fn diagnose<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName, error: Error) -> Error {
    match check_driver(kernel, bus, name) {
        Err(e) if matches!(e.kind(), ErrorKind::NotBound { .. } | ErrorKind::WrongDriver { .. }) => e,
        _ => error,
    }
}

/// Finds the bus the device is on: the one stated, or PCI then platform.
pub(crate) fn find_bus<K: Kernel>(kernel: &K, name: &DeviceName, stated: Option<Bus>) -> Result<Bus, Error> {
    let candidates: &[Bus] = match stated {
        Some(Bus::Pci) => &[Bus::Pci],
        Some(Bus::Platform) => &[Bus::Platform],
        None => &[Bus::Pci, Bus::Platform],
    };
    let mut buf = [0u8; LINK_CAPACITY];
    for &bus in candidates {
        let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name);
        let path = path.as_c_str().ok_or_else(too_long)?;
        if read_link(kernel, path, &mut buf)?.is_some() {
            return Ok(bus);
        }
    }
    Err(Error::new(ErrorKind::NoSuchDevice { bus: stated }))
}

/// Checks the device is bound to a VFIO driver.
pub(crate) fn check_driver<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName) -> Result<(), Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/driver");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut buf = [0u8; LINK_CAPACITY];
    match read_link(kernel, path, &mut buf)? {
        None => Err(Error::new(ErrorKind::NotBound { bus })),
        Some(link) => {
            let driver = last_component(link);
            if is_vfio_driver(driver) {
                Ok(())
            } else {
                Err(Error::new(ErrorKind::WrongDriver { bus, driver: Label::new(driver) }))
            }
        }
    }
}

/// The driver behind a `driver` link at `path`; `None` when the link does
/// not exist (the device is bound to no driver).
pub(crate) fn driver_at<K: Kernel>(kernel: &K, path: &core::ffi::CStr) -> Result<Option<DriverName>, Error> {
    let mut buf = [0u8; LINK_CAPACITY];
    match read_link(kernel, path, &mut buf)? {
        None => Ok(None),
        Some(link) => DriverName::new(last_component(link)).map(Some).ok_or_else(too_long),
    }
}

/// The driver the device is bound to, `None` when it is bound to none.
pub(crate) fn driver_of<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName) -> Result<Option<DriverName>, Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/driver");
    let path = path.as_c_str().ok_or_else(too_long)?;
    driver_at(kernel, path)
}

/// The device's IOMMU group number, `None` when it has no group.
pub(crate) fn group_of<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName) -> Result<Option<u32>, Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/iommu_group");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut buf = [0u8; LINK_CAPACITY];
    match read_link(kernel, path, &mut buf)? {
        None => Ok(None),
        Some(link) => parse_group_number(link).map(Some).ok_or(Error::syscall(Step::ReadSysfs, Errno::INVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_component_of_links() {
        assert_eq!(last_component(b"../../../bus/pci/drivers/vfio-pci"), b"vfio-pci");
        assert_eq!(last_component(b"vfio-pci"), b"vfio-pci");
        assert_eq!(last_component(b"a/b/"), b"b");
        assert_eq!(last_component(b""), b"");
        assert_eq!(last_component(b"/"), b"");
    }

    #[test]
    fn group_numbers() {
        assert_eq!(parse_group_number(b"../../../kernel/iommu_groups/12"), Some(12));
        assert_eq!(parse_group_number(b"../../../kernel/iommu_groups/0"), Some(0));
        assert_eq!(parse_group_number(b"../kernel/iommu_groups/4294967295"), Some(u32::MAX));
        assert_eq!(parse_group_number(b"../kernel/iommu_groups/4294967296"), None);
        assert_eq!(parse_group_number(b"../kernel/iommu_groups/"), None);
        assert_eq!(parse_group_number(b"../kernel/iommu_groups/1a"), None);
        assert_eq!(parse_group_number(b"../kernel/iommu_groups/-1"), None);
        assert_eq!(parse_group_number(b"99999999999"), None);
    }

    #[test]
    fn vfio_driver_names() {
        assert!(is_vfio_driver(b"vfio-pci"));
        assert!(is_vfio_driver(b"vfio-platform"));
        assert!(is_vfio_driver(b"vfio-amba"));
        assert!(is_vfio_driver(b"mlx5_vfio_pci"));
        assert!(!is_vfio_driver(b"e1000e"));
        assert!(!is_vfio_driver(b"pci-host-generic"));
        assert!(!is_vfio_driver(b""));
    }
}
