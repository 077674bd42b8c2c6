//! The fake's privileges: who the process is (its user, group and
//! capabilities), the device nodes' owners and modes, `/etc/passwd` and
//! `/etc/group`, and `RLIMIT_MEMLOCK` with what Linux charges against it.
//!
//! As Linux does: root passes every file mode check; others need read and
//! write permission on a node (`EACCES`); a noiommu group opens only with
//! `CAP_SYS_RAWIO` (`EPERM`); only root chowns (`EPERM`). Pins count
//! against the memlock limit unless the process has `CAP_IPC_LOCK`: type1
//! pins with the process's mlocked memory (one account), iommufd pins apart;
//! over the limit a map or mlock fails with `ENOMEM` (an mlock with `EPERM`
//! when the limit is 0).

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use rustix::io::Errno;

use super::model::{Object, State};
use super::FakeKernel;
use crate::kernel::NodeOwner;

/// The process's credentials and limits, and the nodes' owners.
pub(super) struct Privilege {
    uid: u32,
    gid: u32,
    rawio: bool,
    ipc_lock: bool,
    memlock: Option<u64>,
    /// Nodes whose owner was changed from the default (root's).
    owners: BTreeMap<String, NodeOwner>,
    /// Files by path (`/etc/passwd`, `/etc/group`).
    files: BTreeMap<String, String>,
    /// Ranges locked with mlock: base address -> length.
    mlocked: BTreeMap<usize, usize>,
}

impl Privilege {
    /// Root, with every capability, no memlock limit, nodes as Linux makes them.
    pub(super) fn new() -> Self {
        Privilege {
            uid: 0,
            gid: 0,
            rawio: true,
            ipc_lock: true,
            memlock: None,
            owners: BTreeMap::new(),
            files: BTreeMap::new(),
            mlocked: BTreeMap::new(),
        }
    }
}

impl FakeKernel {
    /// Makes the process user `uid` in group `gid`: root (0) has every
    /// capability, any other user none (see [`FakeKernel::set_capabilities`]).
    pub fn set_user(&self, uid: u32, gid: u32) {
        let p = &mut self.state().privilege;
        (p.uid, p.gid, p.rawio, p.ipc_lock) = (uid, gid, uid == 0, uid == 0);
    }

    /// Gives or takes `CAP_SYS_RAWIO` (noiommu groups) and `CAP_IPC_LOCK`
    /// (no memlock limit).
    pub fn set_capabilities(&self, sys_rawio: bool, ipc_lock: bool) {
        let p = &mut self.state().privilege;
        (p.rawio, p.ipc_lock) = (sys_rawio, ipc_lock);
    }

    /// Sets the soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited, the default).
    pub fn set_memlock_limit(&self, limit: Option<u64>) {
        self.state().privilege.memlock = limit;
    }

    /// Bytes Linux would count against the memlock limit: (type1 pins plus
    /// mlocked memory, iommufd pins).
    pub fn memlock_charged(&self) -> (u64, u64) {
        let s = self.state();
        (s.type1_pinned() + s.mlocked(), s.ioas_pinned())
    }

    /// A device node's owner and mode (`None`: no such node).
    pub fn node_owner(&self, path: &str) -> Option<NodeOwner> {
        self.state().owner_of(path)
    }

    /// Sets a device node's owner and mode, as by hand.
    pub fn set_node_owner(&self, path: &str, owner: NodeOwner) {
        self.state().privilege.owners.insert(path.to_string(), owner);
    }

    /// Puts a file at `path` (`/etc/passwd`, `/etc/group`) for
    /// [`Kernel::read_file_at`](crate::Kernel::read_file_at).
    pub fn set_file(&self, path: &str, contents: &str) {
        self.state().privilege.files.insert(path.to_string(), contents.to_string());
    }
}

impl State {
    /// `open`'s permission checks on an existing node (a missing one is
    /// left to `open`, which says `ENOENT`).
    pub(super) fn check_open(&self, path: &str) -> Result<(), Errno> {
        let Some(owner) = self.owner_of(path) else { return Ok(()) };
        let p = &self.privilege;
        let bits = if p.uid == 0 {
            0o6
        } else if owner.uid == p.uid {
            owner.mode >> 6
        } else if owner.gid == p.gid {
            owner.mode >> 3
        } else {
            owner.mode
        };
        if bits & 0o6 != 0o6 {
            return Err(Errno::ACCESS);
        }
        if path.starts_with("/dev/vfio/noiommu-") && !p.rawio {
            return Err(Errno::PERM);
        }
        Ok(())
    }

    /// The owner and mode of a device node that exists.
    pub(super) fn owner_of(&self, path: &str) -> Option<NodeOwner> {
        let exists = match path {
            "/dev/vfio/vfio" => self.vfio_loaded,
            "/dev/iommu" => self.iommufd,
            _ => {
                self.group_node(path).is_some()
                    || path.strip_prefix("/dev/vfio/devices/").is_some_and(|n| self.cdev_names().any(|c| c == n))
            }
        };
        if !exists {
            return None;
        }
        // Linux: the container 0666, /dev/iommu 0660, groups and cdevs 0600.
        let mode = match path {
            "/dev/vfio/vfio" => 0o666,
            "/dev/iommu" => 0o660,
            _ => 0o600,
        };
        Some(self.privilege.owners.get(path).copied().unwrap_or(NodeOwner { uid: 0, gid: 0, mode }))
    }

    /// `vfioN` of each device cdev with a node.
    fn cdev_names(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.devices.len()).filter(|&i| self.has_cdev(i) == Some(false)).map(|i| std::format!("vfio{i}"))
    }

    /// `chown`: root only.
    pub(super) fn chown(&mut self, path: &str, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        let owner = self.owner_of(path).ok_or(Errno::NOENT)?;
        if self.privilege.uid != 0 {
            return Err(Errno::PERM);
        }
        let gid = gid.unwrap_or(owner.gid);
        self.privilege.owners.insert(path.to_string(), NodeOwner { uid, gid, ..owner });
        Ok(())
    }

    /// `/dev/vfio/devices` listed, if that is `path`.
    pub(super) fn list_dev(&self, path: &str) -> Option<Vec<String>> {
        (path == "/dev/vfio/devices").then(|| self.cdev_names().collect())
    }

    /// A piece of a file set with [`FakeKernel::set_file`].
    pub(super) fn file_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let text = self.privilege.files.get(path).ok_or(Errno::NOENT)?.as_bytes();
        let from = (offset as usize).min(text.len());
        let n = (text.len() - from).min(buf.len());
        buf[..n].copy_from_slice(&text[from..from + n]);
        Ok(n)
    }

    pub(super) fn memlock_limit(&self) -> Option<u64> {
        self.privilege.memlock
    }

    fn type1_pinned(&self) -> u64 {
        self.fds
            .values()
            .map(|o| match o {
                Object::Container { dma, .. } => dma.iter().map(|m| m.size).sum(),
                _ => 0,
            })
            .sum()
    }

    fn ioas_pinned(&self) -> u64 {
        self.fds
            .values()
            .map(|o| match o {
                Object::Iommufd { ioas, .. } => ioas.values().flatten().map(|m| m.size).sum(),
                _ => 0,
            })
            .sum()
    }

    fn mlocked(&self) -> u64 {
        self.privilege.mlocked.values().map(|&n| n as u64).sum()
    }

    /// The limit to check against, if the process is subject to one.
    fn enforced_limit(&self) -> Option<u64> {
        self.privilege.memlock.filter(|_| !self.privilege.ipc_lock)
    }

    /// Charges a pin of `size` more bytes: type1 or iommufd.
    pub(super) fn charge_pin(&self, type1: bool, size: u64) -> Result<(), Errno> {
        let Some(limit) = self.enforced_limit() else { return Ok(()) };
        let charged = if type1 { self.type1_pinned() + self.mlocked() } else { self.ioas_pinned() };
        if charged + size > limit {
            return Err(Errno::NOMEM);
        }
        Ok(())
    }

    /// mlock of `len` bytes at `base`: charged, then recorded.
    pub(super) fn charge_mlock(&mut self, base: usize, len: usize) -> Result<(), Errno> {
        if let Some(limit) = self.enforced_limit() {
            if limit == 0 {
                return Err(Errno::PERM);
            }
            if self.type1_pinned() + self.mlocked() + len as u64 > limit {
                return Err(Errno::NOMEM);
            }
        }
        self.privilege.mlocked.insert(base, len);
        Ok(())
    }

    /// munmap of memory that may be mlocked: its lock goes with it.
    pub(super) fn unlock(&mut self, base: usize) {
        self.privilege.mlocked.remove(&base);
    }
}
