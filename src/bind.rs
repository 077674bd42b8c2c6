//! Binding devices to VFIO drivers (and back) through sysfs, without a shell.
//!
//! - [`status`]: every PCI and platform device with its driver, its IOMMU
//!   group, whether it is ready for VFIO, and how many other devices of its
//!   group block the group's viability; [`status_for_vfio`]: only those that
//!   matter for VFIO ([`DeviceStatus::matters_for_vfio`]).
//! - [`bind`]: binds a device to `vfio-pci`/`vfio-platform` (or a named
//!   driver) with `driver_override`; idempotent.
//! - [`unbind`]: unbinds it, clears `driver_override` and re-probes, so the
//!   device's own (default) driver takes it back.
//!
//! Every write goes to a sysfs attribute through the [`Kernel`] seam, from
//! stack buffers; nothing allocates. A failed [`bind`] or [`unbind`] puts the
//! device's driver and `driver_override` back as they were.
//!
//! ```no_run
//! use dao_vfio::{bind, Host};
//!
//! # fn main() -> Result<(), dao_vfio::Error> {
//! let bound = bind::bind(&Host, "0000:00:02.0", None, None)?; // vfio-pci, found on the PCI bus
//! println!("{} bound to {}", "0000:00:02.0", bound.driver.as_str());
//! bind::status(&Host, &mut |d| println!("{} {} ready={}", d.bus, d.name, d.ready))?;
//! let back = bind::unbind(&Host, "0000:00:02.0", None)?;
//! println!("now bound to {:?}", back.now);
//! # Ok(()) }
//! ```

use core::ffi::CStr;

use rustix::io::Errno;

pub use crate::error::MAX_DRIVER_LEN;
use crate::error::{Blocker, DriverName, Error, ErrorKind, Step};
use crate::kernel::{Kernel, TOKEN};
use crate::name::{check_component, Bus, DeviceName, NameError};
use crate::path::sys_path;
use crate::sysfs::{self, too_long};

/// One device as [`status`] reports it. `Copy`, names stored inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Its bus.
    pub bus: Bus,
    /// Its name.
    pub name: DeviceName,
    /// The driver it is bound to, if any.
    pub driver: Option<DriverName>,
    /// Its IOMMU group, if it has one.
    pub group: Option<u32>,
    /// Bound to a VFIO driver and in an IOMMU group: `Context::setup` can
    /// open it (if its group is viable, see `blockers`).
    pub ready: bool,
    /// Other devices of its group bound to a driver that is not VFIO's: while
    /// any is, the group is not viable and no device of it can be opened.
    pub blockers: u32,
    /// A platform device whose device-tree node describes registers (its
    /// `of_node/reg`): MMIO that `vfio-platform` can map. Always `false` for
    /// PCI devices, and for platform devices without a device-tree node
    /// (ACPI systems), whose resources sysfs does not show.
    pub mmio: bool,
}

impl DeviceStatus {
    /// Whether the device matters for VFIO: bound to a VFIO driver, or
    /// bindable to one, that is in an IOMMU group (any bus) or a platform
    /// device with MMIO registers ([`DeviceStatus::mmio`]; noiommu mode gives
    /// it a group when it is bound). Devices that are neither (CPU timers,
    /// firmware interfaces, devices of ACPI systems without an IOMMU) cannot
    /// be used through VFIO.
    pub fn matters_for_vfio(&self) -> bool {
        let vfio = self.driver.is_some_and(|d| sysfs::is_vfio_driver(d.as_str().as_bytes()));
        vfio || self.group.is_some() || self.mmio
    }
}

/// What [`bind`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The device's bus.
    pub bus: Bus,
    /// The driver it is bound to now.
    pub driver: DriverName,
    /// The driver it was bound to before, if any.
    pub previous: Option<DriverName>,
}

impl Bound {
    /// Whether anything changed (false: it was already bound to the driver).
    pub fn changed(&self) -> bool {
        self.previous != Some(self.driver)
    }
}

/// What [`unbind`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unbound {
    /// The device's bus.
    pub bus: Bus,
    /// The driver it was bound to before, if any.
    pub previous: Option<DriverName>,
    /// The driver that took it back after the re-probe (its default driver),
    /// if any.
    pub now: Option<DriverName>,
}

/// Lists every device of `/sys/bus/pci/devices` and
/// `/sys/bus/platform/devices` (a bus that does not exist is skipped), calling
/// `visit` with each one's [`DeviceStatus`], PCI first, in the directory's order.
/// Entries whose names are not valid device names are skipped.
pub fn status<K: Kernel>(kernel: &K, visit: &mut dyn FnMut(&DeviceStatus)) -> Result<(), Error> {
    for bus in [Bus::Pci, Bus::Platform] {
        let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices");
        let path = path.as_c_str().ok_or_else(too_long)?;
        let mut failed = None;
        let listed = kernel.list_dir(&TOKEN, path, &mut |raw| {
            if failed.is_some() {
                return;
            }
            let Some(name) = device_name(raw) else { return };
            match device_status(kernel, bus, name) {
                Ok(status) => visit(&status),
                Err(e) => failed = Some(e.for_device(name)),
            }
        });
        match listed {
            Ok(()) => {}
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(Error::syscall(Step::ListSysfs, e)),
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// Like [`status`], but only the devices that
/// [matter for VFIO](DeviceStatus::matters_for_vfio), in the same order.
pub fn status_for_vfio<K: Kernel>(kernel: &K, visit: &mut dyn FnMut(&DeviceStatus)) -> Result<(), Error> {
    status(kernel, &mut |d| {
        if d.matters_for_vfio() {
            visit(d)
        }
    })
}

/// Binds device `name` to `driver` (default: its bus's VFIO driver,
/// `vfio-pci` or `vfio-platform`). The bus is found in sysfs unless given.
///
/// Already bound to the driver: nothing is written. Otherwise the device is
/// unbound from its current driver, `driver_override` is set to the driver,
/// and the device is probed (`drivers_probe` for PCI, the driver's `bind` for
/// platform devices); then its `driver` link must name the driver.
///
/// # Errors
///
/// [`ErrorKind::InvalidName`], [`ErrorKind::InvalidDriverName`],
/// [`ErrorKind::NoSuchDevice`], [`ErrorKind::DriverMissing`] (load the
/// module), [`ErrorKind::DeviceBusy`] (its driver will not let it go),
/// [`ErrorKind::BindFailed`], or a failed system call. On any error after a
/// change, the device's driver and `driver_override` are put back.
pub fn bind<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>, driver: Option<&str>) -> Result<Bound, Error> {
    let dev = DeviceName::new(name)?;
    bind_device(kernel, dev, bus, driver).map_err(|e| e.for_device(dev))
}

/// Unbinds device `name` from its driver, clears its `driver_override` and
/// re-probes it (`/sys/bus/BUS/drivers_probe`), so that its default driver,
/// if the kernel has one for it, takes it back. The bus is found in sysfs
/// unless given.
///
/// # Errors
///
/// [`ErrorKind::InvalidName`], [`ErrorKind::NoSuchDevice`],
/// [`ErrorKind::DeviceHeld`] (a process holds it through VFIO: the unbind
/// would block until it lets go; see [`unbind_wait`]),
/// [`ErrorKind::DeviceBusy`] (in use: close its VFIO fds first), or a failed
/// system call. On any error after a change, the device's driver and
/// `driver_override` are put back.
pub fn unbind<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>) -> Result<Unbound, Error> {
    let dev = DeviceName::new(name)?;
    unbind_device(kernel, dev, bus, false).map_err(|e| e.for_device(dev))
}

/// Like [`unbind`], but also while a process holds the device through VFIO
/// (see [`holders`]): Linux then signals the holders' request notifiers
/// ([`crate::Notification::Request`]) and this call blocks, in the kernel,
/// until every VFIO fd of the device is closed. Tell the user what it waits
/// for first; it cannot be interrupted.
pub fn unbind_wait<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>) -> Result<Unbound, Error> {
    let dev = DeviceName::new(name)?;
    unbind_device(kernel, dev, bus, true).map_err(|e| e.for_device(dev))
}

/// Calls `visit` with the pid of every process holding device `name`
/// through VFIO (its group node or cdev open, as `/proc/PID/fd` shows;
/// processes whose fds cannot be read are passed over).
pub fn holders<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>, visit: &mut dyn FnMut(u32)) -> Result<(), Error> {
    let dev = DeviceName::new(name)?;
    let found = (|| {
        let bus = sysfs::find_bus(kernel, &dev, bus)?;
        crate::holders::holders(kernel, bus, &dev, visit)
    })();
    found.map_err(|e| e.for_device(dev))
}

/// Refuses to take a device from its VFIO driver while a process holds it:
/// the unbind would block until that process lets go.
fn refuse_if_held<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName, driver: &DriverName) -> Result<(), Error> {
    if !sysfs::is_vfio_driver(driver.as_str().as_bytes()) {
        return Ok(());
    }
    let mut first = None;
    crate::holders::holders(kernel, bus, dev, &mut |pid| {
        first.get_or_insert(pid);
    })?;
    match first {
        Some(pid) => Err(Error::new(ErrorKind::DeviceHeld { pid })),
        None => Ok(()),
    }
}

fn device_name(raw: &[u8]) -> Option<DeviceName> {
    DeviceName::new(core::str::from_utf8(raw).ok()?).ok()
}

fn device_status<K: Kernel>(kernel: &K, bus: Bus, name: DeviceName) -> Result<DeviceStatus, Error> {
    let driver = sysfs::driver_of(kernel, bus, &name)?;
    let group = sysfs::group_of(kernel, bus, &name)?;
    let vfio = driver.is_some_and(|d| sysfs::is_vfio_driver(d.as_str().as_bytes()));
    let blockers = match group {
        Some(group) => group_blockers(kernel, group, &name)?,
        None => 0,
    };
    let mmio = bus == Bus::Platform && has_registers(kernel, &name)?;
    Ok(DeviceStatus { bus, name, driver, group, ready: vfio && group.is_some(), blockers, mmio })
}

/// Whether platform device `name`'s device-tree node has a `reg` property:
/// the MMIO ranges Linux gives it as resources, which `vfio-platform` maps.
/// A device without a node (or a node without `reg`) has none to show.
fn has_registers<K: Kernel>(kernel: &K, name: &DeviceName) -> Result<bool, Error> {
    let path = sys_path!("/sys/bus/platform/devices/", name, "/of_node/reg");
    let path = path.as_c_str().ok_or_else(too_long)?;
    // One address cell is enough to tell an empty property from a range.
    let mut cell = [0u8; 4];
    match kernel.read_file(&TOKEN, path, &mut cell) {
        Ok(read) => Ok(!read.is_empty()),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::syscall(Step::ReadSysfsFile, e)),
    }
}

/// Devices of `group` other than `this` bound to a non-VFIO driver.
pub(crate) fn group_blockers<K: Kernel>(kernel: &K, group: u32, this: &DeviceName) -> Result<u32, Error> {
    let mut blockers = 0;
    for_each_blocker(kernel, group, Some(this), &mut |_, _| blockers += 1)?;
    Ok(blockers)
}

/// The first device of `group` bound to a non-VFIO driver, and that driver,
/// as labels for an error; `None` when there is none or it cannot be told.
pub(crate) fn first_blocker<K: Kernel>(kernel: &K, group: u32) -> Option<Blocker> {
    let mut first = None;
    for_each_blocker(kernel, group, None, &mut |device, driver| {
        first.get_or_insert(Blocker::new(device.as_str(), driver.as_str()));
    })
    .ok()?;
    first
}

/// Calls `visit` with each device of `group` (but `this`) that is bound to a
/// non-VFIO driver, in the order sysfs lists them.
fn for_each_blocker<K: Kernel>(
    kernel: &K,
    group: u32,
    this: Option<&DeviceName>,
    visit: &mut dyn FnMut(&DeviceName, &DriverName),
) -> Result<(), Error> {
    let path = sys_path!("/sys/kernel/iommu_groups/", group, "/devices");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut failed = None;
    let listed = kernel.list_dir(&TOKEN, path, &mut |raw| {
        let Some(member) = device_name(raw) else { return };
        if failed.is_some() || this == Some(&member) {
            return;
        }
        let link = sys_path!("/sys/kernel/iommu_groups/", group, "/devices/", member, "/driver");
        let Some(link) = link.as_c_str() else {
            failed = Some(too_long());
            return;
        };
        match sysfs::driver_at(kernel, link) {
            Ok(Some(d)) if !sysfs::is_vfio_driver(d.as_str().as_bytes()) => visit(&member, &d),
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
    });
    match listed {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(Error::syscall(Step::ListSysfs, e)),
    }
    failed.map_or(Ok(()), Err)
}

/// Validates a driver name given by the caller.
fn driver_name(driver: &str) -> Result<DriverName, Error> {
    let refused = |e| Error::new(ErrorKind::InvalidDriverName(e));
    check_component(driver.as_bytes(), MAX_DRIVER_LEN).map_err(refused)?;
    DriverName::new(driver.as_bytes()).ok_or(refused(NameError::TooLong(driver.len())))
}

/// Checks `/sys/bus/BUS/drivers/DRIVER` exists (the module is loaded).
fn require_loaded<K: Kernel>(kernel: &K, bus: Bus, driver: &DriverName) -> Result<(), Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/drivers/", driver.as_str());
    let path = path.as_c_str().ok_or_else(too_long)?;
    match kernel.list_dir(&TOKEN, path, &mut |_| {}) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
            Err(Error::new(ErrorKind::DriverMissing { bus, driver: driver.into() }))
        }
        Err(e) => Err(Error::syscall(Step::ListSysfs, e)),
    }
}

/// Writes `data` to the sysfs attribute at `path`.
fn write<K: Kernel>(kernel: &K, path: &CStr, data: &[u8]) -> Result<(), Errno> {
    match kernel.write_file(&TOKEN, path, data)? {
        n if n == data.len() => Ok(()),
        _ => Err(Errno::IO),
    }
}

fn write_sysfs<K: Kernel>(kernel: &K, path: &CStr, data: &[u8]) -> Result<(), Error> {
    write(kernel, path, data).map_err(|e| Error::syscall(Step::WriteSysfs, e))
}

/// The device's `driver_override`: `None` when unset (the kernel shows `(null)`).
fn read_override<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName) -> Result<Option<DriverName>, Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", dev, "/driver_override");
    let path = path.as_c_str().ok_or_else(too_long)?;
    // Room for the longest name, its newline, and one byte more to tell a
    // longer value (the kernel takes up to a page) from one that fits.
    let mut buf = [0u8; MAX_DRIVER_LEN + 2];
    let text = kernel.read_file(&TOKEN, path, &mut buf).map_err(|e| Error::syscall(Step::ReadSysfsFile, e))?;
    let full = text.len() == MAX_DRIVER_LEN + 2;
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    match text {
        b"" | b"(null)" => Ok(None),
        // Never restored cut short: no driver has such a name anyway.
        name if full => Err(Error::new(ErrorKind::InvalidDriverName(NameError::TooLong(name.len())))),
        name => DriverName::new(name)
            .map(Some)
            .ok_or(Error::new(ErrorKind::InvalidDriverName(NameError::TooLong(name.len())))),
    }
}

/// Sets (or, with `None`, clears) the device's `driver_override`.
fn write_override<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName, driver: Option<DriverName>) -> Result<(), Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", dev, "/driver_override");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let value = match &driver {
        Some(d) => d.as_str().as_bytes(),
        None => b"\n",
    };
    write_sysfs(kernel, path, value)
}

/// Unbinds the device from `driver`, its current driver.
fn release<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName, driver: DriverName) -> Result<(), Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", dev, "/driver/unbind");
    let path = path.as_c_str().ok_or_else(too_long)?;
    match write(kernel, path, dev.as_str().as_bytes()) {
        Ok(()) => Ok(()),
        Err(Errno::BUSY) => {
            Err(Error::new(ErrorKind::DeviceBusy { bus, driver: (&driver).into() }).with_errno(Errno::BUSY))
        }
        Err(e) => Err(Error::syscall(Step::WriteSysfs, e)),
    }
}

/// Asks the bus to find a driver for the device (`/sys/bus/BUS/drivers_probe`).
fn probe<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName) -> Result<(), Error> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/drivers_probe");
    let path = path.as_c_str().ok_or_else(too_long)?;
    write_sysfs(kernel, path, dev.as_str().as_bytes())
}

/// Binds the device to `driver` through the driver's `bind` attribute.
fn attach<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName, driver: DriverName) -> Result<(), Errno> {
    let path = sys_path!("/sys/bus/", bus.sysfs_name(), "/drivers/", driver.as_str(), "/bind");
    let path = path.as_c_str().ok_or(Errno::NAMETOOLONG)?;
    write(kernel, path, dev.as_str().as_bytes())
}

/// The device's driver and `driver_override` before a change.
#[derive(Clone, Copy)]
struct Saved {
    driver: Option<DriverName>,
    driver_override: Option<DriverName>,
}

/// Puts the device back as `saved` says, as far as the kernel lets it (every
/// step is tried; a failure here cannot be reported better than the error
/// that caused the restore).
fn restore<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName, saved: Saved) {
    let _ = write_override(kernel, bus, dev, saved.driver_override);
    let Ok(now) = sysfs::driver_of(kernel, bus, dev) else { return };
    if now == saved.driver {
        return;
    }
    if let Some(now) = now {
        if release(kernel, bus, dev, now).is_err() {
            return;
        }
    }
    if let Some(original) = saved.driver {
        let _ = attach(kernel, bus, dev, original);
    }
}

fn bind_device<K: Kernel>(kernel: &K, dev: DeviceName, bus: Option<Bus>, driver: Option<&str>) -> Result<Bound, Error> {
    // Refuse a bad driver name before any system call.
    let named = driver.map(driver_name).transpose()?;
    let bus = sysfs::find_bus(kernel, &dev, bus)?;
    let driver = named.or(DriverName::new(bus.vfio_driver().as_bytes())).ok_or_else(too_long)?;
    require_loaded(kernel, bus, &driver)?;
    let previous = sysfs::driver_of(kernel, bus, &dev)?;
    if previous == Some(driver) {
        return Ok(Bound { bus, driver, previous });
    }
    if let Some(previous) = &previous {
        refuse_if_held(kernel, bus, &dev, previous)?;
    }
    let saved = Saved { driver: previous, driver_override: read_override(kernel, bus, &dev)? };
    if let Some(previous) = previous {
        release(kernel, bus, &dev, previous)?;
    }
    let result = (|| {
        write_override(kernel, bus, &dev, Some(driver))?;
        let attached = match bus {
            Bus::Pci => probe(kernel, bus, &dev),
            Bus::Platform => attach(kernel, bus, &dev, driver).map_err(|e| match e {
                // The driver refused the device (no match, or its probe failed).
                Errno::NODEV | Errno::INVAL | Errno::NXIO => {
                    Error::new(ErrorKind::BindFailed { bus, driver: (&driver).into() }).with_errno(e)
                }
                e => Error::syscall(Step::WriteSysfs, e),
            }),
        };
        attached?;
        match sysfs::driver_of(kernel, bus, &dev)? {
            Some(now) if now == driver => Ok(()),
            _ => Err(Error::new(ErrorKind::BindFailed { bus, driver: (&driver).into() })),
        }
    })();
    match result {
        Ok(()) => Ok(Bound { bus, driver, previous }),
        Err(e) => {
            restore(kernel, bus, &dev, saved);
            Err(e)
        }
    }
}

fn unbind_device<K: Kernel>(kernel: &K, dev: DeviceName, bus: Option<Bus>, wait: bool) -> Result<Unbound, Error> {
    let bus = sysfs::find_bus(kernel, &dev, bus)?;
    let previous = sysfs::driver_of(kernel, bus, &dev)?;
    if let (Some(previous), false) = (&previous, wait) {
        refuse_if_held(kernel, bus, &dev, previous)?;
    }
    let saved = Saved { driver: previous, driver_override: read_override(kernel, bus, &dev)? };
    if let Some(previous) = previous {
        release(kernel, bus, &dev, previous)?;
    }
    let result = (|| {
        write_override(kernel, bus, &dev, None)?;
        probe(kernel, bus, &dev)?;
        sysfs::driver_of(kernel, bus, &dev)
    })();
    match result {
        Ok(now) => Ok(Unbound { bus, previous, now }),
        Err(e) => {
            restore(kernel, bus, &dev, saved);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        assert_eq!(driver_name("vfio-pci").unwrap().as_str(), "vfio-pci");
        let long = "d".repeat(MAX_DRIVER_LEN);
        assert_eq!(driver_name(&long).unwrap().as_str(), long);
        let kind = |d: &str| driver_name(d).unwrap_err().kind();
        assert_eq!(kind(&"d".repeat(256)), ErrorKind::InvalidDriverName(NameError::TooLong(256)));
        assert_eq!(kind(""), ErrorKind::InvalidDriverName(NameError::Empty));
        assert_eq!(kind("../x"), ErrorKind::InvalidDriverName(NameError::Slash));
        assert_eq!(kind(".."), ErrorKind::InvalidDriverName(NameError::Dot));
        assert_eq!(kind("a b"), ErrorKind::InvalidDriverName(NameError::BadByte(b' ')));
    }
}
