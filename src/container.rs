//! A VFIO container (`/dev/vfio/vfio`): one IOMMU address space that groups
//! join. The kernel resets a container's IOMMU type when its last group
//! leaves, so the type is chosen again by the next group that joins.

use rustix::io::Errno;

use crate::error::{DevNode, Error, ErrorKind, Step};
use crate::kernel::{Fd, Kernel, Request, TOKEN};
use crate::sys;

/// Which kind of IOMMU backend a container serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuKind {
    /// A real IOMMU, through the type1 (or type1v2) backend.
    Type1,
    /// No IOMMU (`enable_unsafe_noiommu_mode`): no isolation, no DMA mapping.
    NoIommu,
}

/// An open container.
#[derive(Debug)]
pub(crate) struct Container {
    fd: Fd,
    kind: IommuKind,
    /// The IOMMU type set with `VFIO_SET_IOMMU`, while groups are attached.
    iommu_type: Option<u32>,
    /// The type last set, kept after the last group left.
    last_type: Option<u32>,
    /// Groups attached.
    groups: u32,
}

impl Container {
    /// Opens `/dev/vfio/vfio` and checks the API version.
    pub(crate) fn open<K: Kernel>(kernel: &K, kind: IommuKind) -> Result<Self, Error> {
        let fd = kernel.open(&TOKEN, c"/dev/vfio/vfio").map_err(|e| match e {
            Errno::NOENT => Error::new(ErrorKind::NoVfio).with_errno(e),
            Errno::ACCESS | Errno::PERM => Error::new(ErrorKind::Permission { node: DevNode::Container }).with_errno(e),
            _ => Error::syscall(Step::OpenContainer, e),
        })?;
        match kernel.ioctl(&TOKEN, fd, Request::GetApiVersion) {
            Ok(sys::API_VERSION) => Ok(Container { fd, kind, iommu_type: None, last_type: None, groups: 0 }),
            Ok(found) => {
                kernel.close(&TOKEN, fd);
                Err(Error::new(ErrorKind::ApiVersion { found }))
            }
            Err(e) => {
                kernel.close(&TOKEN, fd);
                Err(Error::syscall(Step::ApiVersion, e))
            }
        }
    }

    pub(crate) fn fd(&self) -> Fd {
        self.fd
    }

    /// The IOMMU type in force, if any group is attached.
    pub(crate) fn iommu_type(&self) -> Option<u32> {
        self.iommu_type
    }

    pub(crate) fn groups(&self) -> u32 {
        self.groups
    }

    /// Records that a group joined (after `VFIO_GROUP_SET_CONTAINER`), and sets
    /// the IOMMU type if this is the first group. On error the group counts as
    /// not joined and the caller detaches it.
    pub(crate) fn group_joined<K: Kernel>(&mut self, kernel: &K) -> Result<(), Error> {
        if self.iommu_type.is_none() {
            let kind = self.set_type(kernel)?;
            self.iommu_type = Some(kind);
            self.last_type = Some(kind);
        }
        self.groups += 1;
        Ok(())
    }

    /// Sets the IOMMU type: the one set for an earlier group, else the
    /// preferred ones in turn. `VFIO_SET_IOMMU` itself says whether the
    /// kernel has a type (`ENODEV`: no IOMMU driver takes it), so no
    /// `VFIO_CHECK_EXTENSION` is needed.
    fn set_type<K: Kernel>(&self, kernel: &K) -> Result<u32, Error> {
        let preferred: &[u32] = match (&self.last_type, self.kind) {
            (Some(kind), _) => core::slice::from_ref(kind),
            (None, IommuKind::Type1) => &[sys::TYPE1V2_IOMMU, sys::TYPE1_IOMMU],
            (None, IommuKind::NoIommu) => &[sys::NOIOMMU_IOMMU],
        };
        for &kind in preferred {
            match kernel.ioctl(&TOKEN, self.fd, Request::SetIommu(kind)) {
                Ok(_) => return Ok(kind),
                Err(Errno::NODEV) => {}
                Err(e) => return Err(Error::syscall(Step::SetIommu, e)),
            }
        }
        Err(Error::new(ErrorKind::NoIommuType).with_errno(Errno::NODEV))
    }

    /// Records that a group left; the kernel drops the IOMMU type with the last one.
    pub(crate) fn group_left(&mut self) {
        self.groups = self.groups.saturating_sub(1);
        if self.groups == 0 {
            self.iommu_type = None;
        }
    }

    /// Keeps the last IOMMU type as set although no group of ours is attached
    /// (a group the kernel could not detach still holds it).
    pub(crate) fn assume_type_kept(&mut self) {
        self.iommu_type = self.last_type;
    }

    pub(crate) fn close<K: Kernel>(self, kernel: &K) {
        kernel.close(&TOKEN, self.fd);
    }
}
