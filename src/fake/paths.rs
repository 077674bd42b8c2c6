//! How the fake answers path lookups: what a directory lists, what a link
//! points at, and paths looked up from a directory opened by fd.

use std::format;
use std::string::String;
use std::vec::Vec;

use rustix::io::Errno;

use super::model::{Object, State};
use crate::kernel::Fd;

impl State {
    /// The entry names of directory `path` (past any SR-IOV link).
    pub(super) fn listing(&self, path: &str) -> Result<Vec<String>, Errno> {
        match (self.list_proc(path), self.list_dev(path)) {
            (Some(entries), _) => entries,
            (None, Some(entries)) => Ok(entries),
            (None, None) => self.list_sysfs(path),
        }
    }

    /// The path of directory `dir`, opened by `open_dir`.
    pub(super) fn dir_path(&self, dir: Fd) -> Result<String, Errno> {
        match self.fds.get(&dir.raw()) {
            Some(Object::Dir { path }) => Ok(path.clone()),
            Some(_) => Err(Errno::NOTDIR),
            None => Err(Errno::BADF),
        }
    }

    /// `relative` looked up from directory `base`, as Linux walks it: each
    /// name walked through (followed by `/`) must be an entry of the
    /// directory it is in, and `..` goes back to the parent. Returns the
    /// absolute path of what the last name names (not checked: the caller's
    /// lookup does).
    pub(super) fn resolve_from(&self, base: &str, relative: &str) -> Result<String, Errno> {
        if relative.starts_with('/') {
            return Ok(relative.into());
        }
        let mut at: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        let mut names = relative.split('/').filter(|p| !p.is_empty() && *p != ".").peekable();
        while let Some(name) = names.next() {
            if name == ".." {
                at.pop();
                continue;
            }
            if names.peek().is_some() {
                let dir = format!("/{}", at.join("/"));
                if !self.listing(&dir)?.iter().any(|entry| entry == name) {
                    return Err(Errno::NOENT);
                }
            }
            at.push(name);
        }
        Ok(format!("/{}", at.join("/")))
    }

    /// Whether `path` exists: it is listed in its parent directory (`/`
    /// always exists).
    pub(super) fn exists(&self, path: &str) -> Result<(), Errno> {
        match path.rsplit_once('/') {
            Some((_, "")) | None => Ok(()),
            Some((parent, name)) => {
                let parent = if parent.is_empty() { "/" } else { parent };
                if self.listing(parent)?.iter().any(|entry| entry == name) {
                    Ok(())
                } else {
                    Err(Errno::NOENT)
                }
            }
        }
    }

    /// The target of link `path`: a device's own link, its `driver` or
    /// `iommu_group`, an SR-IOV link, an IOMMU group's device, or a link in
    /// `/proc`.
    pub(super) fn link_target(&self, path: &str) -> Result<String, Errno> {
        let path = self.through_sriov_links(path);
        let path = path.as_str();
        if let Some(link) = self.sriov_readlink(path) {
            return link;
        }
        self.devices
            .iter()
            .filter(|d| !d.name.is_empty())
            .find_map(|d| {
                let dir = format!("/sys/bus/{}/devices/{}", d.bus.sysfs_name(), d.name);
                match path.strip_prefix(dir.as_str())? {
                    "" => Some(format!("../../../devices/fake/{}", d.name)),
                    "/driver" => {
                        d.driver.as_ref().map(|drv| format!("../../../../bus/{}/drivers/{drv}", d.bus.sysfs_name()))
                    }
                    "/iommu_group" => d.group.map(|g| format!("../../../../kernel/iommu_groups/{g}")),
                    _ => None,
                }
            })
            .or_else(|| self.group_link(path))
            .or_else(|| self.proc_link(path))
            .ok_or(Errno::NOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeDevice, FakeKernel};

    #[test]
    fn a_lookup_from_a_directory_walks_only_through_its_entries() {
        let k = FakeKernel::new();
        k.add_device(FakeDevice::edu("0000:00:01.0", 3));
        k.set_iommufd(true, true);
        let s = k.state();
        let dir = "/sys/bus/pci/devices/0000:00:01.0/vfio-dev";
        let group = s.resolve_from(dir, "vfio0/../../iommu_group");
        assert_eq!(group.as_deref(), Ok("/sys/bus/pci/devices/0000:00:01.0/iommu_group"));
        assert_eq!(s.link_target(&group.unwrap()).as_deref(), Ok("../../../../kernel/iommu_groups/3"));
        // vfio1 is not listed there: nothing to walk back from.
        assert_eq!(s.resolve_from(dir, "vfio1/../../iommu_group"), Err(Errno::NOENT));
        assert_eq!(s.resolve_from(dir, "./vfio0/.."), Ok(dir.into()));
        assert_eq!(s.exists(&s.resolve_from(dir, "vfio0").unwrap()), Ok(()));
        assert_eq!(s.exists(&s.resolve_from(dir, "vfio1").unwrap()), Err(Errno::NOENT));
    }
}
