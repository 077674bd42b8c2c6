//! Giving a device's VFIO nodes to a user, so that an unprivileged program
//! can use it, and taking them back.
//!
//! A device needs, on the interface the kernel offers:
//! - legacy: `/dev/vfio/vfio`, which Linux creates mode 0666 (every user may
//!   open it: [`DeviceNodes::container`] reports its mode, and it is never
//!   changed), and its group's `/dev/vfio/N` (0600, root's);
//! - iommufd (where the kernel has `/dev/iommu` and the device a cdev):
//!   `/dev/iommu` and `/dev/vfio/devices/vfioN`.
//!
//! [`grant`] chowns exactly those (the group node, and the iommufd pair where
//! it exists, so either [`Backend`](crate::Backend) works); modes are left as
//! they are. [`revoke`] gives them back to root (`/dev/iommu` only once no
//! other device cdev is the user's). A failed chown (`EPERM` unless run as
//! root) puts back what was changed. Noiommu groups (`/dev/vfio/noiommu-N`)
//! are granted too, but Linux opens them only with `CAP_SYS_RAWIO`.
//!
//! Users and groups are numbers, or names looked up in `/etc/passwd` and
//! `/etc/group` (read in pieces from a stack buffer: nothing allocates).
//!
//! ```no_run
//! use dao_vfio::{grant, Host};
//!
//! # fn main() -> Result<(), dao_vfio::Error> {
//! let owner = grant::parse_owner(&Host, "dpdk:dpdk")?;
//! let nodes = grant::grant(&Host, "0000:00:02.0", None, owner)?;
//! for node in nodes.iter() {
//!     println!("{node} is now uid {}'s", owner.uid);
//! }
//! # Ok(()) }
//! ```

use core::ffi::CStr;

use rustix::io::Errno;

use crate::error::{DevNode, Error, ErrorKind, Label, Step};
use crate::kernel::{Kernel, NodeOwner, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::path::{sys_path, PathBuf, Shown};
use crate::sysfs::{self, too_long};

/// Who a device's nodes are given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The user.
    pub uid: u32,
    /// The group (`None`: each node keeps its group).
    pub gid: Option<u32>,
}

/// The nodes a device needs, as [`grant`] and [`revoke`] found (and changed) them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceNodes {
    nodes: [Option<DevNode>; 3],
    /// `/dev/vfio/vfio`'s owner and mode, if it exists: the legacy container
    /// every user shares, never changed (Linux makes it 0666).
    pub container: Option<NodeOwner>,
}

impl DeviceNodes {
    /// The device's own nodes: its group node, then `/dev/iommu` and its cdev
    /// where the kernel offers iommufd.
    pub fn iter(&self) -> impl Iterator<Item = DevNode> + '_ {
        self.nodes.iter().flatten().copied()
    }
}

/// Parses `USER[:GROUP]`: numbers, or names from `/etc/passwd` and
/// `/etc/group`. A user name without a group gives its primary group; a
/// numeric user without one leaves each node's group as it is.
pub fn parse_owner<K: Kernel>(kernel: &K, spec: &str) -> Result<Owner, Error> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let (uid, primary) = match number(user) {
        Some(uid) => (uid, None),
        None => lookup(kernel, c"/etc/passwd", user)?
            .ok_or(Error::new(ErrorKind::NoSuchUser { name: Label::new(user.as_bytes()) }))?,
    };
    let gid = match group {
        None => primary,
        Some(group) => Some(match number(group) {
            Some(gid) => gid,
            None => {
                lookup(kernel, c"/etc/group", group)?
                    .ok_or(Error::new(ErrorKind::NoSuchGroup { name: Label::new(group.as_bytes()) }))?
                    .0
            }
        }),
    };
    Ok(Owner { uid, gid })
}

/// Gives device `name`'s nodes to `owner` (see the module). The device must be
/// bound to VFIO (its group node exists then). On error nothing is changed.
///
/// # Errors
/// [`ErrorKind::InvalidName`], [`ErrorKind::NoSuchDevice`],
/// [`ErrorKind::NotBound`], [`ErrorKind::WrongDriver`],
/// [`ErrorKind::NoIommuGroup`], [`ErrorKind::GroupNodeMissing`], or a failed
/// system call: [`Step::Chown`] with `EPERM` when not run as root.
pub fn grant<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>, owner: Owner) -> Result<DeviceNodes, Error> {
    let dev = DeviceName::new(name)?;
    change(kernel, dev, bus, Some(owner)).map_err(|e| e.for_device(dev))
}

/// Gives device `name`'s nodes back to root (`/dev/iommu` stays with its
/// owner while another device cdev is that owner's). On error nothing is changed.
///
/// # Errors
/// As [`grant`].
pub fn revoke<K: Kernel>(kernel: &K, name: &str, bus: Option<Bus>) -> Result<DeviceNodes, Error> {
    let dev = DeviceName::new(name)?;
    change(kernel, dev, bus, None).map_err(|e| e.for_device(dev))
}

/// Finds the device's nodes and their owners, then chowns each to `to`
/// (`None`: root), putting back the ones done if one fails.
fn change<K: Kernel>(kernel: &K, dev: DeviceName, bus: Option<Bus>, to: Option<Owner>) -> Result<DeviceNodes, Error> {
    let mut found = nodes(kernel, dev, bus)?;
    let mut before: [Option<NodeOwner>; 3] = [None; 3];
    for (node, was) in found.nodes.iter().zip(before.iter_mut()) {
        if let Some(node) = *node {
            let path = node_path(node);
            let path = path.as_c_str().ok_or_else(too_long)?;
            *was = Some(kernel.node_owner(&TOKEN, path).map_err(|e| Error::syscall(Step::StatNode(node), e))?);
        }
    }
    // /dev/iommu is shared by every device: a revoke leaves it while another
    // cdev is its owner's.
    if to.is_none() {
        let own = found.iter().find_map(|n| match n {
            DevNode::Cdev(n) => Some(n),
            _ => None,
        });
        for (node, was) in found.nodes.iter_mut().zip(before) {
            if let (Some(DevNode::Iommufd), Some(was)) = (*node, was) {
                if was.uid != 0 && other_cdev_owned(kernel, own, was.uid)? {
                    *node = None;
                }
            }
        }
    }
    let target = to.unwrap_or(Owner { uid: 0, gid: Some(0) });
    for i in 0..found.nodes.len() {
        let Some(node) = found.nodes[i] else { continue };
        let path = node_path(node);
        let path = path.as_c_str().ok_or_else(too_long)?;
        if let Err(e) = kernel.chown(&TOKEN, path, target.uid, target.gid) {
            put_back(kernel, &found.nodes[..i], &before[..i]);
            return Err(Error::syscall(Step::Chown(node), e));
        }
    }
    Ok(found)
}

/// Restores the owners recorded in `before` (best effort: this runs after a
/// failure, whose error is the news).
fn put_back<K: Kernel>(kernel: &K, nodes: &[Option<DevNode>], before: &[Option<NodeOwner>]) {
    for (node, was) in nodes.iter().zip(before) {
        if let (Some(node), Some(was)) = (node, was) {
            if let Some(path) = node_path(*node).as_c_str() {
                let _ = kernel.chown(&TOKEN, path, was.uid, Some(was.gid));
            }
        }
    }
}

/// Whether a cdev in `/dev/vfio/devices` other than the device's own
/// (`vfio{own}`) is owned by `uid`.
fn other_cdev_owned<K: Kernel>(kernel: &K, own: Option<u32>, uid: u32) -> Result<bool, Error> {
    let mut owned = false;
    let mut failed = None;
    let listed = kernel.list_dir(&TOKEN, c"/dev/vfio/devices", &mut |entry| {
        let Some(n) = entry.strip_prefix(b"vfio").and_then(sysfs::parse_group_number) else { return };
        if owned || Some(n) == own {
            return;
        }
        match node_path(DevNode::Cdev(n)).as_c_str().ok_or_else(too_long).map(|p| kernel.node_owner(&TOKEN, p)) {
            Ok(Ok(o)) => owned = o.uid == uid,
            Ok(Err(Errno::NOENT)) => {}
            Ok(Err(e)) => failed = Some(Error::syscall(Step::StatNode(DevNode::Cdev(n)), e)),
            Err(e) => failed = Some(e),
        }
    });
    match (listed, failed) {
        (_, Some(e)) => Err(e),
        (Ok(()) | Err(Errno::NOENT), None) => Ok(owned),
        (Err(e), None) => Err(Error::syscall(Step::ListSysfs, e)),
    }
}

/// The nodes device `dev` needs on the interfaces the kernel offers.
fn nodes<K: Kernel>(kernel: &K, dev: DeviceName, bus: Option<Bus>) -> Result<DeviceNodes, Error> {
    let bus = sysfs::find_bus(kernel, &dev, bus)?;
    sysfs::check_driver(kernel, bus, &dev)?;
    let group = sysfs::group_of(kernel, bus, &dev)?.ok_or(Error::new(ErrorKind::NoIommuGroup { bus }))?;
    let group_node = if exists(kernel, DevNode::Group(group))?.is_some() {
        DevNode::Group(group)
    } else if exists(kernel, DevNode::NoiommuGroup(group))?.is_some() {
        DevNode::NoiommuGroup(group)
    } else {
        return Err(Error::new(ErrorKind::GroupNodeMissing { group }).with_errno(Errno::NOENT));
    };
    let mut nodes = [Some(group_node), None, None];
    // A noiommu device is listed under vfio-dev on Linux 6.12 but has no
    // node in /dev/vfio/devices: only its group opens it.
    let behind_iommu = matches!(group_node, DevNode::Group(_));
    if behind_iommu && exists(kernel, DevNode::Iommufd)?.is_some() {
        if let Some(cdev) = crate::iommufd::find_cdev(kernel, bus, &dev)? {
            if exists(kernel, DevNode::Cdev(cdev))?.is_some() {
                nodes[1] = Some(DevNode::Iommufd);
                nodes[2] = Some(DevNode::Cdev(cdev));
            }
        }
    }
    Ok(DeviceNodes { nodes, container: exists(kernel, DevNode::Container)? })
}

/// The node's owner, `None` if it does not exist.
fn exists<K: Kernel>(kernel: &K, node: DevNode) -> Result<Option<NodeOwner>, Error> {
    let path = node_path(node);
    match kernel.node_owner(&TOKEN, path.as_c_str().ok_or_else(too_long)?) {
        Ok(owner) => Ok(Some(owner)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::syscall(Step::StatNode(node), e)),
    }
}

fn node_path(node: DevNode) -> PathBuf {
    sys_path!(Shown(node))
}

/// A decimal id; `u32::MAX` (-1, "unchanged" to chown) is refused.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n != u32::MAX)
}

/// Looks `name` up in `file` (`/etc/passwd` or `/etc/group` format:
/// `name:password:id:...`): its id and the next field as a number
/// (the primary group, for `/etc/passwd`).
fn lookup<K: Kernel>(kernel: &K, file: &CStr, name: &str) -> Result<Option<(u32, Option<u32>)>, Error> {
    let mut found = None;
    for_each_line(kernel, file, &mut |line| {
        let mut fields = line.split(|&b| b == b':');
        if fields.next() != Some(name.as_bytes()) {
            return false;
        }
        let mut id = || fields.next().and_then(|f| core::str::from_utf8(f).ok()).and_then(number);
        let _password = id();
        if let Some(uid) = id() {
            found = Some((uid, id()));
        }
        true
    })?;
    Ok(found)
}

/// Calls `visit` with each line of `file` (without its newline) until it
/// returns true. Lines longer than the buffer (1 KiB) are passed over.
fn for_each_line<K: Kernel>(kernel: &K, file: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Error> {
    let mut buf = [0u8; LINE_BUF];
    let mut offset = 0u64;
    let mut skipping = false;
    loop {
        let got =
            kernel.read_file_at(&TOKEN, file, offset, &mut buf).map_err(|e| Error::syscall(Step::ReadAccounts, e))?;
        if got.is_empty() {
            return Ok(());
        }
        let full = got.len() == LINE_BUF;
        // Whole lines only, unless this is the end of the file.
        let end = match got.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if full => {
                skipping = true;
                offset += got.len() as u64;
                continue;
            }
            None => got.len(),
        };
        for line in got[..end].split(|&b| b == b'\n') {
            if core::mem::take(&mut skipping) {
                continue;
            }
            if visit(line) {
                return Ok(());
            }
        }
        if !full && end == got.len() {
            return Ok(());
        }
        offset += end as u64;
    }
}

/// The piece of `/etc/passwd` or `/etc/group` read at once.
const LINE_BUF: usize = 1024;
