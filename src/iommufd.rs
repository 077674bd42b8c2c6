//! The iommufd backend: `/dev/iommu` with one IO address space (IOAS) per
//! context, and devices opened through their VFIO cdev, bound to it and
//! attached to the IOAS.

use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Step};
use crate::kernel::{Fd, Kernel, Request, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::path::sys_path;
use crate::sys;

/// An open `/dev/iommu` and the context's IO address space in it.
#[derive(Debug)]
pub(crate) struct Iommufd {
    fd: Fd,
    ioas: u32,
    /// Devices attached to the IOAS.
    devices: u32,
}

impl Iommufd {
    /// Opens `/dev/iommu` and allocates an IOAS. On error nothing stays open.
    pub(crate) fn open<K: Kernel>(kernel: &K) -> Result<Self, Error> {
        let fd = kernel.open(&TOKEN, c"/dev/iommu").map_err(|e| match e {
            Errno::NOENT | Errno::NODEV | Errno::NXIO => Error::new(ErrorKind::NoIommufd).with_errno(e),
            Errno::ACCESS | Errno::PERM => Error::new(ErrorKind::Permission).with_errno(e),
            _ => Error::syscall(Step::OpenIommufd, e),
        })?;
        let mut alloc = sys::IoasAlloc { size: sys::argsz::<sys::IoasAlloc>(), ..Default::default() };
        match kernel.ioctl(&TOKEN, fd, Request::IoasAlloc(&mut alloc)) {
            Ok(_) => Ok(Iommufd { fd, ioas: alloc.out_ioas_id, devices: 0 }),
            Err(e) => {
                kernel.close(&TOKEN, fd);
                Err(Error::syscall(Step::IoasAlloc, e))
            }
        }
    }

    pub(crate) fn fd(&self) -> Fd {
        self.fd
    }

    pub(crate) fn ioas(&self) -> u32 {
        self.ioas
    }

    pub(crate) fn devices(&self) -> u32 {
        self.devices
    }

    pub(crate) fn device_attached(&mut self) {
        self.devices += 1;
    }

    pub(crate) fn device_detached(&mut self) {
        self.devices = self.devices.saturating_sub(1);
    }

    /// Closes `/dev/iommu`: the kernel destroys the IOAS and its mappings.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        kernel.close(&TOKEN, self.fd);
    }

    /// Opens cdev `/dev/vfio/devices/vfio{number}` of device `dev`, binds it
    /// to this iommufd and attaches it to the IOAS. On error the cdev is
    /// closed (which undoes the bind). `dev`'s group serves to tell a
    /// non-viable group from a device open elsewhere when the bind is refused.
    pub(crate) fn open_device<K: Kernel>(&self, kernel: &K, number: u32, dev: &Located) -> Result<Fd, Error> {
        let path =
            sys_path!("/dev/vfio/devices/vfio{number}").ok_or(Error::syscall(Step::OpenCdev, Errno::NAMETOOLONG))?;
        let fd = kernel.open(&TOKEN, path.as_c_str()).map_err(|e| match e {
            Errno::ACCESS | Errno::PERM => Error::new(ErrorKind::Permission).with_errno(e),
            _ => Error::syscall(Step::OpenCdev, e),
        })?;
        match self.bind_and_attach(kernel, fd, dev) {
            Ok(()) => Ok(fd),
            Err(e) => {
                kernel.close(&TOKEN, fd);
                Err(e)
            }
        }
    }

    fn bind_and_attach<K: Kernel>(&self, kernel: &K, fd: Fd, dev: &Located) -> Result<(), Error> {
        let mut bind =
            sys::BindIommufd { argsz: sys::argsz::<sys::BindIommufd>(), iommufd: self.fd.raw(), ..Default::default() };
        match kernel.ioctl(&TOKEN, fd, Request::DeviceBindIommufd(&mut bind)) {
            Ok(_) => {}
            // The device is open through VFIO elsewhere (a cdev opens a
            // device only once: EINVAL), or the IOMMU refuses a second owner
            // of its group (EBUSY): another context, or a driver.
            Err(e @ (Errno::BUSY | Errno::INVAL)) => return Err(busy_cause(kernel, dev).with_errno(e)),
            Err(e) => return Err(Error::syscall(Step::BindIommufd, e)),
        }
        let mut attach = sys::AttachIommufdPt {
            argsz: sys::argsz::<sys::AttachIommufdPt>(),
            pt_id: self.ioas,
            ..Default::default()
        };
        kernel
            .ioctl(&TOKEN, fd, Request::DeviceAttachIommufdPt(&mut attach))
            .map(drop)
            .map_err(|e| Error::syscall(Step::AttachIoas, e))
    }
}

/// A device found in sysfs: its name, bus and IOMMU group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    pub(crate) name: DeviceName,
    pub(crate) bus: Bus,
    pub(crate) group: u32,
}

/// Why binding was refused: a non-viable group if sysfs shows another
/// member bound to a non-VFIO driver, else the device (or its group) is
/// open elsewhere.
fn busy_cause<K: Kernel>(kernel: &K, dev: &Located) -> Error {
    match crate::bind::group_blockers(kernel, dev.group, &dev.name) {
        Ok(n) if n > 0 => Error::new(ErrorKind::GroupNotViable { group: dev.group }),
        _ => Error::new(ErrorKind::DeviceClaimed),
    }
}

/// The device's VFIO cdev number `N` (`/dev/vfio/devices/vfioN`), from
/// `/sys/bus/BUS/devices/DEV/vfio-dev/vfioN`, if the kernel made one with a
/// device node (`vfioN/dev`). Linux lists `vfioN` there since 6.1, before
/// cdevs existed (6.6), and 6.12 lists noiommu devices with no node: those,
/// and `noiommu-vfioN` entries, count as none.
pub(crate) fn find_cdev<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName) -> Result<Option<u32>, Error> {
    let failed = |e| Error::syscall(Step::FindCdev, e);
    let dir = sys_path!("/sys/bus/{}/devices/{}/vfio-dev", bus.sysfs_name(), name).ok_or(failed(Errno::NAMETOOLONG))?;
    let mut found = None;
    let listed = kernel.list_dir(&TOKEN, dir.as_c_str(), &mut |entry| {
        if found.is_none() {
            found = entry.strip_prefix(b"vfio").and_then(crate::sysfs::parse_group_number);
        }
    });
    match listed {
        Ok(()) => {}
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(failed(e)),
    }
    let Some(number) = found else { return Ok(None) };
    let node = sys_path!("/sys/bus/{}/devices/{}/vfio-dev/vfio{number}/dev", bus.sysfs_name(), name)
        .ok_or(failed(Errno::NAMETOOLONG))?;
    let mut buf = [0u8; 16];
    match kernel.read_file(&TOKEN, node.as_c_str(), &mut buf) {
        Ok(_) => Ok(Some(number)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}
