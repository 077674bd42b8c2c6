//! The iommufd backend: `/dev/iommu` with one IO address space (IOAS) per
//! context, and devices opened through their VFIO cdev, bound to it and
//! attached to the IOAS.

use rustix::io::Errno;

use crate::error::{DevNode, Error, ErrorKind, Step};
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
            Errno::ACCESS | Errno::PERM => Error::new(ErrorKind::Permission { node: DevNode::Iommufd }).with_errno(e),
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
        debug_assert!(self.devices > 0, "more iommufd devices closed than opened");
        self.devices = self.devices.saturating_sub(1);
    }

    /// Closes `/dev/iommu`: the kernel destroys the IOAS and its mappings.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        kernel.close(&TOKEN, self.fd);
    }

    /// Opens cdev `/dev/vfio/devices/vfio{number}` of device `dev`, checks it
    /// is still the device's, binds it
    /// to this iommufd and attaches it to the IOAS. On error the cdev is
    /// closed (which undoes the bind). `dev`'s group serves to tell a
    /// non-viable group from a device open elsewhere when the bind is refused.
    pub(crate) fn open_device<K: Kernel>(
        &self,
        kernel: &K,
        number: u32,
        bus: Bus,
        name: &DeviceName,
    ) -> Result<(Fd, u32), CdevOpen> {
        let path = sys_path!("/dev/vfio/devices/vfio", number);
        let path = path.as_c_str().ok_or(CdevOpen::Failed(Error::syscall(Step::OpenCdev, Errno::NAMETOOLONG)))?;
        let fd = kernel.open(&TOKEN, path).map_err(|e| match e {
            // Listed without a node: a noiommu device (Linux 6.12 lists those
            // too), which only its group can open.
            Errno::NOENT => CdevOpen::NoNode,
            Errno::ACCESS | Errno::PERM => {
                CdevOpen::Failed(Error::new(ErrorKind::Permission { node: DevNode::Cdev(number) }).with_errno(e))
            }
            _ => CdevOpen::Failed(Error::syscall(Step::OpenCdev, e)),
        })?;
        let opened = cdev_group(kernel, number, bus, name).and_then(|group| {
            let dev = Located { name: *name, bus, group };
            self.bind_and_attach(kernel, fd, &dev).map(|()| group)
        });
        match opened {
            Ok(group) => Ok((fd, group)),
            Err(e) => {
                kernel.close(&TOKEN, fd);
                Err(CdevOpen::Failed(e))
            }
        }
    }

    fn bind_and_attach<K: Kernel>(&self, kernel: &K, fd: Fd, dev: &Located) -> Result<(), Error> {
        let mut bind =
            sys::BindIommufd { argsz: sys::argsz::<sys::BindIommufd>(), iommufd: self.fd.raw(), ..Default::default() };
        match kernel.ioctl(&TOKEN, fd, Request::DeviceBindIommufd(&mut bind)) {
            Ok(_) => {}
            Err(e) => return Err(bind_refusal(kernel, dev, e)),
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

/// What a refused `VFIO_DEVICE_BIND_IOMMUFD` means (Linux 6.6 to 6.12):
/// - `EBUSY`: the group is open through its legacy node (another context or
///   process holds it that way);
/// - `EINVAL`: the device is already bound through another cdev fd (a cdev
///   opens a device once); an IOMMU that cannot keep DMA coherent says it too;
/// - `EPERM`: the IOMMU refuses a second owner of the group (a driver holds a
///   group mate: sysfs tells; or another iommufd holds one), or the platform
///   cannot isolate MSIs.
fn bind_refusal<K: Kernel>(kernel: &K, dev: &Located, errno: Errno) -> Error {
    let kind = match errno {
        Errno::BUSY => ErrorKind::GroupBusy { group: dev.group },
        Errno::PERM => match crate::bind::group_blockers(kernel, dev.group, &dev.name) {
            Ok(n) if n > 0 => {
                ErrorKind::GroupNotViable { group: dev.group, blocker: crate::bind::first_blocker(kernel, dev.group) }
            }
            _ => ErrorKind::DeviceClaimed,
        },
        Errno::INVAL => ErrorKind::DeviceClaimed,
        // A kernel whose cdev checks VF tokens, refusing one without it.
        Errno::ACCESS if dev.bus == Bus::Pci && crate::sriov::token_guarded(kernel, &dev.name).unwrap_or(false) => {
            crate::sriov::token_refusal(kernel, &dev.name)
        }
        _ => return Error::syscall(Step::BindIommufd, errno),
    };
    Error::new(kind).with_errno(errno)
}

/// Why a listed cdev was not opened.
#[derive(Debug)]
pub(crate) enum CdevOpen {
    /// The cdev has no node in `/dev/vfio/devices` (a noiommu device).
    NoNode,
    /// Refused, or failed: the setup error.
    Failed(Error),
}

/// The device's VFIO cdev number `N` (`vfio-dev/vfioN` in its sysfs
/// directory), if it has one: one directory listing, which stops at the
/// entry.
pub(crate) fn find_cdev<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName) -> Result<Option<u32>, Error> {
    let failed = |e| Error::syscall(Step::FindCdev, e);
    let dir = sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/vfio-dev");
    let dir = dir.as_c_str().ok_or(failed(Errno::NAMETOOLONG))?;
    let mut found = None;
    let listed = kernel.list_dir_while(&TOKEN, dir, &mut |entry| {
        found = entry.strip_prefix(b"vfio").and_then(crate::sysfs::parse_group_number);
        found.is_none()
    });
    match listed {
        Ok(()) => Ok(found),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Once its node is open (which keeps the cdev from going to another
/// device), checks cdev `number` is still this device's and reads its IOMMU
/// group, with one `readlink` through the cdev's `device` link:
/// `.../DEV/vfio-dev/vfioN/device/iommu_group` exists only while vfioN is
/// DEV's.
fn cdev_group<K: Kernel>(kernel: &K, number: u32, bus: Bus, name: &DeviceName) -> Result<u32, Error> {
    let failed = |e| Error::syscall(Step::OpenCdev, e);
    let link =
        sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/vfio-dev/vfio", number, "/device/iommu_group");
    let link = link.as_c_str().ok_or(failed(Errno::NAMETOOLONG))?;
    const ROOM: usize = crate::sysfs::LINK_CAPACITY;
    let mut buf = [0u8; ROOM];
    match kernel.readlink(&TOKEN, link, &mut buf) {
        Ok(target) if target.len() < ROOM => crate::sysfs::parse_group_number(target).ok_or(failed(Errno::INVAL)),
        Ok(_) => Err(failed(Errno::NAMETOOLONG)),
        // The cdev opened is another device's now (this one was unbound meanwhile).
        Err(Errno::NOENT) => Err(failed(Errno::NODEV)),
        Err(e) => Err(failed(e)),
    }
}
