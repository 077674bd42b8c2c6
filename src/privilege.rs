//! What an unprivileged process needs to use VFIO, as errors name it: the
//! device nodes it opens ([`DevNode`]) and who the kernel charges the memory
//! that DMA mappings pin ([`MemlockCharge`]).
//!
//! - Nodes: the legacy interface opens `/dev/vfio/vfio` (Linux creates it
//!   mode 0666, usable by every user) and the group's `/dev/vfio/N` (0600,
//!   root's); iommufd opens `/dev/iommu` and the device's
//!   `/dev/vfio/devices/vfioN`. [`crate::grant`] gives a device's nodes to a
//!   user. A refused open is [`ErrorKind::Permission`](crate::ErrorKind::Permission),
//!   naming the node.
//! - noiommu groups (`/dev/vfio/noiommu-N`) open only with `CAP_SYS_RAWIO`:
//!   [`ErrorKind::NoiommuNeedsRawio`](crate::ErrorKind::NoiommuNeedsRawio).
//! - DMA mappings pin memory against `RLIMIT_MEMLOCK` (unless the process has
//!   `CAP_IPC_LOCK`): [`ErrorKind::MemlockLimit`](crate::ErrorKind::MemlockLimit).

use core::fmt;

/// A device node the crate opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevNode {
    /// `/dev/vfio/vfio`, the legacy container.
    Container,
    /// `/dev/vfio/N`, IOMMU group `N`.
    Group(u32),
    /// `/dev/vfio/noiommu-N`, noiommu group `N`.
    NoiommuGroup(u32),
    /// `/dev/iommu`.
    Iommufd,
    /// `/dev/vfio/devices/vfioN`, a device's VFIO cdev.
    Cdev(u32),
}

impl fmt::Display for DevNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DevNode::Container => f.write_str("/dev/vfio/vfio"),
            DevNode::Group(n) => write!(f, "/dev/vfio/{n}"),
            DevNode::NoiommuGroup(n) => write!(f, "/dev/vfio/noiommu-{n}"),
            DevNode::Iommufd => f.write_str("/dev/iommu"),
            DevNode::Cdev(n) => write!(f, "/dev/vfio/devices/vfio{n}"),
        }
    }
}

/// Which kernel account a refused pin or lock is charged to. Linux lets a
/// process with `CAP_IPC_LOCK` past both limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemlockCharge {
    /// The type1 IOMMU (legacy container): pinned pages are charged to the
    /// process's locked memory (`VmLck` in `/proc/PID/status`), the same
    /// account `mlock` uses, so a locked DMA buffer counts twice.
    Type1,
    /// iommufd: pinned pages are charged to the user (every process of the
    /// user together; `VmPin` in `/proc/PID/status` shows this process's share).
    Iommufd,
    /// `mlock` of a buffer asked for with `DmaOptions::locked`: the
    /// process's locked memory (`VmLck`), which type1 mappings also count.
    Mlock,
}

impl fmt::Display for MemlockCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemlockCharge::Type1 => {
                "the type1 IOMMU charges the pages it pins to this process's locked memory (VmLck in /proc/PID/status), which mlock()ed memory (DmaOptions::locked) counts too, so a locked buffer counts twice"
            }
            MemlockCharge::Iommufd => {
                "iommufd charges the pages it pins to the user: all of this user's processes share the limit (VmPin in /proc/PID/status shows this process's share)"
            }
            MemlockCharge::Mlock => {
                "mlock charges this process's locked memory (VmLck in /proc/PID/status), which type1 DMA mappings count too"
            }
        })
    }
}
