//! The iommufd backend: `/dev/iommu` with one IO address space (IOAS) per
//! context, and devices opened through their VFIO cdev, bound to it and
//! attached to the IOAS.

use rustix::io::Errno;

use crate::error::{DevNode, Error, ErrorKind, Step};
use crate::held_dirs::HeldDirs;
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
    /// Where setup looks a device's sysfs directory up from.
    dirs: HeldDirs,
}

impl Iommufd {
    /// Opens `/dev/iommu` and allocates an IOAS, then opens the directories
    /// setup looks names up from ([`HeldDirs`]). On error nothing stays open.
    pub(crate) fn open<K: Kernel>(kernel: &K) -> Result<Self, Error> {
        let (fd, ioas) = open_ioas(kernel)?;
        Ok(Iommufd { fd, ioas, devices: 0, dirs: HeldDirs::open(kernel) })
    }

    /// A fresh `/dev/iommu` and IOAS in place of these (closed: the kernel
    /// drops their mappings), keeping the directories held. `Err(self)`,
    /// unchanged, when the fresh ones cannot be made.
    pub(crate) fn renew<K: Kernel>(self, kernel: &K) -> Result<Self, Self> {
        match open_ioas(kernel) {
            Ok((fd, ioas)) => {
                kernel.close(&TOKEN, self.fd);
                Ok(Iommufd { fd, ioas, devices: 0, dirs: self.dirs })
            }
            Err(_) => Err(self),
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

    /// `/sys/bus/BUS/devices`, if held open: where [`list_cdev`] starts.
    pub(crate) fn devices_dir(&self, bus: Bus) -> Option<Fd> {
        self.dirs.devices(bus)
    }

    /// Closes `/dev/iommu` (the kernel destroys the IOAS and its mappings)
    /// and the directories held.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        kernel.close(&TOKEN, self.fd);
        self.dirs.close(kernel);
    }

    /// Opens the device's cdev `/dev/vfio/devices/vfioN` (listed in `cdev`),
    /// checks it is still the device's, binds it to this iommufd and
    /// attaches it to the IOAS. On error the cdev is closed (which undoes
    /// the bind). Closes `cdev`'s directory either way. The device's IOMMU
    /// group is not read: iommufd's interface has none (a refused bind reads
    /// it, to tell a non-viable group from a device open elsewhere).
    pub(crate) fn open_device<K: Kernel>(
        &self,
        kernel: &K,
        cdev: ListedCdev,
        bus: Bus,
        name: &DeviceName,
    ) -> Result<Fd, CdevOpen> {
        let number = cdev.number();
        let path = sys_path!("/dev/vfio/devices/vfio", number);
        let opened = match path.as_c_str() {
            Some(path) => kernel.open(&TOKEN, path),
            None => Err(Errno::NAMETOOLONG),
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                cdev.close(kernel);
                return Err(match e {
                    // Listed without a node: a noiommu device (Linux 6.12
                    // lists those too), which only its group can open.
                    Errno::NOENT => CdevOpen::NoNode,
                    Errno::ACCESS | Errno::PERM => CdevOpen::Failed(
                        Error::new(ErrorKind::Permission { node: DevNode::Cdev(number) }).with_errno(e),
                    ),
                    _ => CdevOpen::Failed(Error::syscall(Step::OpenCdev, e)),
                });
            }
        };
        match cdev.prove(kernel).and_then(|()| self.bind_and_attach(kernel, fd, bus, name)) {
            Ok(()) => Ok(fd),
            Err(e) => {
                kernel.close(&TOKEN, fd);
                Err(CdevOpen::Failed(e))
            }
        }
    }

    fn bind_and_attach<K: Kernel>(&self, kernel: &K, fd: Fd, bus: Bus, name: &DeviceName) -> Result<(), Error> {
        let mut bind =
            sys::BindIommufd { argsz: sys::argsz::<sys::BindIommufd>(), iommufd: self.fd.raw(), ..Default::default() };
        match kernel.ioctl(&TOKEN, fd, Request::DeviceBindIommufd(&mut bind)) {
            Ok(_) => {}
            Err(e) => return Err(bind_refusal(kernel, bus, name, e)),
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

/// Opens `/dev/iommu` and allocates an IOAS in it; returns both. On error
/// nothing stays open.
fn open_ioas<K: Kernel>(kernel: &K) -> Result<(Fd, u32), Error> {
    let fd = kernel.open(&TOKEN, c"/dev/iommu").map_err(|e| match e {
        Errno::NOENT | Errno::NODEV | Errno::NXIO => Error::new(ErrorKind::NoIommufd).with_errno(e),
        Errno::ACCESS | Errno::PERM => Error::new(ErrorKind::Permission { node: DevNode::Iommufd }).with_errno(e),
        _ => Error::syscall(Step::OpenIommufd, e),
    })?;
    let mut alloc = sys::IoasAlloc { size: sys::argsz::<sys::IoasAlloc>(), ..Default::default() };
    match kernel.ioctl(&TOKEN, fd, Request::IoasAlloc(&mut alloc)) {
        Ok(_) => Ok((fd, alloc.out_ioas_id)),
        Err(e) => {
            kernel.close(&TOKEN, fd);
            Err(Error::syscall(Step::IoasAlloc, e))
        }
    }
}

/// What a refused `VFIO_DEVICE_BIND_IOMMUFD` means (Linux 6.6 to 6.12):
/// - `EBUSY`: the group is open through its legacy node (another context or
///   process holds it that way);
/// - `EINVAL`: the device is already bound through another cdev fd (a cdev
///   opens a device once); an IOMMU that cannot keep DMA coherent says it too;
/// - `EPERM`: the IOMMU refuses a second owner of the group (a driver holds a
///   group mate: sysfs tells; or another iommufd holds one), or the platform
///   cannot isolate MSIs.
///
/// The group, which `EBUSY` and `EPERM` are about, is read here (if sysfs
/// cannot tell it, the refusal is reported as it came).
fn bind_refusal<K: Kernel>(kernel: &K, bus: Bus, name: &DeviceName, errno: Errno) -> Error {
    let kind = match errno {
        Errno::BUSY | Errno::PERM => {
            let Ok(Some(group)) = crate::sysfs::group_of(kernel, bus, name) else {
                return Error::syscall(Step::BindIommufd, errno);
            };
            if errno == Errno::BUSY {
                ErrorKind::GroupBusy { group }
            } else {
                match crate::bind::group_blockers(kernel, group, name) {
                    Ok(n) if n > 0 => {
                        ErrorKind::GroupNotViable { group, blocker: crate::bind::first_blocker(kernel, group) }
                    }
                    _ => ErrorKind::DeviceClaimed,
                }
            }
        }
        Errno::INVAL => ErrorKind::DeviceClaimed,
        // A kernel whose cdev checks VF tokens, refusing one without it.
        Errno::ACCESS if bus == Bus::Pci && crate::sriov::token_guarded(kernel, name).unwrap_or(false) => {
            crate::sriov::token_refusal(kernel, name)
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
    Ok(list_cdev(kernel, None, bus, name)?.map(|cdev| cdev.close(kernel)))
}

/// As [`find_cdev`], keeping the device's `vfio-dev` directory open: what
/// proves, once the cdev's node is open, that the node is still the device's.
/// `devices`: `/sys/bus/BUS/devices`, if held open ([`Iommufd::devices_dir`]),
/// to look `DEV/vfio-dev` up from.
pub(crate) fn list_cdev<K: Kernel>(
    kernel: &K,
    devices: Option<Fd>,
    bus: Bus,
    name: &DeviceName,
) -> Result<Option<ListedCdev>, Error> {
    let failed = |e| Error::syscall(Step::FindCdev, e);
    let opened = match devices {
        Some(devices) => sys_path!(name, "/vfio-dev").as_c_str().map(|path| kernel.open_dir_at(&TOKEN, devices, path)),
        None => sys_path!("/sys/bus/", bus.sysfs_name(), "/devices/", name, "/vfio-dev")
            .as_c_str()
            .map(|path| kernel.open_dir(&TOKEN, path)),
    };
    let dir = match opened.ok_or(failed(Errno::NAMETOOLONG))? {
        Ok(dir) => dir,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let mut found = None;
    let listed = kernel.list_open_dir_while(&TOKEN, dir, &mut |entry| {
        found = entry.strip_prefix(b"vfio").and_then(crate::sysfs::parse_group_number);
        found.is_none()
    });
    match (listed, found) {
        (Ok(()), Some(number)) => Ok(Some(ListedCdev { number, dir })),
        (Ok(()), None) => {
            kernel.close(&TOKEN, dir);
            Ok(None)
        }
        (Err(e), _) => {
            kernel.close(&TOKEN, dir);
            Err(failed(e))
        }
    }
}

/// A device's cdev number, found in its sysfs `vfio-dev` directory, with
/// that directory still open. Whoever holds it closes it, with
/// [`ListedCdev::close`] or [`ListedCdev::prove`].
#[derive(Debug)]
#[must_use = "the listed directory stays open until closed"]
pub(crate) struct ListedCdev {
    number: u32,
    dir: Fd,
}

impl ListedCdev {
    /// The cdev's number `N` (`/dev/vfio/devices/vfioN`).
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// Closes the directory; returns the cdev's number.
    pub(crate) fn close<K: Kernel>(self, kernel: &K) -> u32 {
        kernel.close(&TOKEN, self.dir);
        self.number
    }

    /// Once the cdev's node is open (which keeps its number from going to
    /// another device), checks it is still this device's: `vfioN` is still
    /// in the directory listed (one `readlinkat` from it, which finds nothing
    /// once that directory is removed, as it is when the device is unbound).
    /// Relative to the open directory, the lookup walks one name, not the
    /// device's path from `/sys/bus` again; nothing else is read (README,
    /// Benchmarks, gives the bench runs of the longer proofs this replaced).
    /// Closes the directory.
    pub(crate) fn prove<K: Kernel>(self, kernel: &K) -> Result<(), Error> {
        let failed = |e| Error::syscall(Step::OpenCdev, e);
        let entry = sys_path!("vfio", self.number);
        let found = match entry.as_c_str() {
            Some(entry) => kernel.exists_at(&TOKEN, self.dir, entry),
            None => Err(Errno::NAMETOOLONG),
        };
        kernel.close(&TOKEN, self.dir);
        match found {
            Ok(()) => Ok(()),
            // The cdev opened is another device's now (this one was unbound meanwhile).
            Err(Errno::NOENT) => Err(failed(Errno::NODEV)),
            Err(e) => Err(failed(e)),
        }
    }
}
