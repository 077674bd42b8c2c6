//! An IOMMU group (`/dev/vfio/N` or `/dev/vfio/noiommu-N`), shared by the
//! devices of that group that a context has open.

use rustix::io::Errno;

use crate::container::IommuKind;
use crate::error::{DevNode, Error, ErrorKind, Step};
use crate::kernel::{Fd, Kernel, Request, TOKEN};
use crate::name::DeviceName;
use crate::path::{sys_path, Shown};
use crate::sys::{self, GroupFlags};
use crate::vf_token::VfToken;

/// An open, viable group, not yet attached to a container.
#[derive(Debug)]
pub(crate) struct Group {
    number: u32,
    fd: Fd,
    kind: IommuKind,
    /// Open devices of this context in the group.
    devices: u32,
}

impl Group {
    /// Opens group `number` (the IOMMU node, else the noiommu node) and checks
    /// it is viable. On error nothing stays open.
    pub(crate) fn open<K: Kernel>(kernel: &K, number: u32) -> Result<Self, Error> {
        let (fd, kind) = Self::open_node(kernel, number)?;
        let mut status = sys::GroupStatus { argsz: sys::argsz::<sys::GroupStatus>(), flags: 0 };
        let viable = match kernel.ioctl(&TOKEN, fd, Request::GroupGetStatus(&mut status)) {
            Ok(_) => GroupFlags::from_bits_retain(status.flags).contains(GroupFlags::VIABLE),
            Err(e) => {
                kernel.close(&TOKEN, fd);
                return Err(Error::syscall(Step::GroupStatus, e));
            }
        };
        if !viable {
            kernel.close(&TOKEN, fd);
            let blocker = crate::bind::first_blocker(kernel, number);
            return Err(Error::new(ErrorKind::GroupNotViable { group: number, blocker }));
        }
        Ok(Group { number, fd, kind, devices: 0 })
    }

    fn open_node<K: Kernel>(kernel: &K, number: u32) -> Result<(Fd, IommuKind), Error> {
        // File modes refuse with EACCES; the VFIO group's own open refuses
        // a noiommu group with EPERM to a process without CAP_SYS_RAWIO.
        let failed = |e: Errno, node: DevNode| match (e, node) {
            (Errno::BUSY, _) => Error::new(ErrorKind::GroupBusy { group: number }).with_errno(e),
            (Errno::PERM, DevNode::NoiommuGroup(_)) => {
                Error::new(ErrorKind::NoiommuNeedsRawio { group: number }).with_errno(e)
            }
            (Errno::ACCESS | Errno::PERM, _) => Error::new(ErrorKind::Permission { node }).with_errno(e),
            _ => Error::syscall(Step::OpenGroup, e),
        };
        let too_long = || Error::syscall(Step::OpenGroup, Errno::NAMETOOLONG);
        let iommu = sys_path!("/dev/vfio/", number);
        let iommu = iommu.as_c_str().ok_or_else(too_long)?;
        match kernel.open(&TOKEN, iommu) {
            Ok(fd) => return Ok((fd, IommuKind::Type1)),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(failed(e, DevNode::Group(number))),
        }
        let noiommu = sys_path!("/dev/vfio/noiommu-", number);
        let noiommu = noiommu.as_c_str().ok_or_else(too_long)?;
        match kernel.open(&TOKEN, noiommu) {
            Ok(fd) => Ok((fd, IommuKind::NoIommu)),
            Err(Errno::NOENT) => {
                Err(Error::new(ErrorKind::GroupNodeMissing { group: number }).with_errno(Errno::NOENT))
            }
            Err(e) => Err(failed(e, DevNode::NoiommuGroup(number))),
        }
    }

    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// The group's fd (for the C interface's `group_fd`).
    #[cfg(feature = "capi")]
    pub(crate) fn fd(&self) -> Fd {
        self.fd
    }

    pub(crate) fn kind(&self) -> IommuKind {
        self.kind
    }

    pub(crate) fn device_opened(&mut self) {
        self.devices += 1;
    }

    /// Returns the number of devices still open.
    pub(crate) fn device_closed(&mut self) -> u32 {
        self.devices = self.devices.saturating_sub(1);
        self.devices
    }

    /// `VFIO_GROUP_SET_CONTAINER`.
    pub(crate) fn attach<K: Kernel>(&self, kernel: &K, container: Fd) -> Result<(), Error> {
        kernel
            .ioctl(&TOKEN, self.fd, Request::GroupSetContainer(container))
            .map(drop)
            .map_err(|e| Error::syscall(Step::SetContainer, e))
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`: the fd of device `name` of this group,
    /// asked for as `"NAME vf_token=UUID"` when a VF token is given (the
    /// kernel's syntax; `name` has no spaces, so nothing else can be added).
    /// `EACCES` with a token-guarded device is the token's refusal.
    pub(crate) fn device_fd<K: Kernel>(
        &self,
        kernel: &K,
        name: &DeviceName,
        vf_token: Option<&VfToken>,
    ) -> Result<Fd, Error> {
        let too_long = Error::syscall(Step::GetDeviceFd, Errno::NAMETOOLONG);
        let cname = match vf_token {
            None => sys_path!(name),
            Some(t) => sys_path!(name, " vf_token=", Shown(t)),
        };
        let cname = cname.as_c_str().ok_or(too_long)?;
        kernel.ioctl(&TOKEN, self.fd, Request::GroupGetDeviceFd(cname)).map(Fd::from_raw).map_err(|e| match e {
            Errno::ACCESS if crate::sriov::token_guarded(kernel, name).unwrap_or(false) => {
                Error::new(crate::sriov::token_refusal(kernel, name)).with_errno(e)
            }
            _ => Error::syscall(Step::GetDeviceFd, e),
        })
    }

    /// Detaches from the container (if `attached`) and closes the group. The
    /// fd is closed whatever the detach says, so nothing leaks; the detach's
    /// error, if any, is returned for the caller to report.
    pub(crate) fn close<K: Kernel>(self, kernel: &K, attached: bool) -> Result<(), Error> {
        let detached = if attached {
            match kernel.ioctl(&TOKEN, self.fd, Request::GroupUnsetContainer) {
                Ok(_) => Ok(()),
                Err(Errno::INVAL) if self.detached_by_kernel(kernel) => Ok(()),
                Err(e) => Err(Error::syscall(Step::UnsetContainer, e)),
            }
        } else {
            Ok(())
        };
        kernel.close(&TOKEN, self.fd);
        detached
    }

    /// After `VFIO_GROUP_UNSET_CONTAINER` said `EINVAL` (no container): did
    /// the kernel detach the group itself? It does when the group's last
    /// device leaves VFIO (unbound or removed while we held it): the group
    /// then says it has no container, or, its IOMMU group gone, `ENODEV`.
    /// Nothing is left held then. A group that still says CONTAINER_SET, or
    /// a status that cannot be read, keeps the `EINVAL` a real failure.
    fn detached_by_kernel<K: Kernel>(&self, kernel: &K) -> bool {
        let mut status = sys::GroupStatus { argsz: sys::argsz::<sys::GroupStatus>(), flags: 0 };
        match kernel.ioctl(&TOKEN, self.fd, Request::GroupGetStatus(&mut status)) {
            Ok(_) => !GroupFlags::from_bits_retain(status.flags).contains(GroupFlags::CONTAINER_SET),
            Err(e) => e == Errno::NODEV,
        }
    }
}
