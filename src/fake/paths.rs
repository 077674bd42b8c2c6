//! How the fake answers path lookups: what a directory lists, what a link
//! points at, and the entries of a directory opened by fd.

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

    /// Opens directory `path` (through SR-IOV links, as Linux follows them)
    /// if it can be listed: what `open_dir` and `open_dir_at` return.
    pub(super) fn open_dir_path(&mut self, path: &str) -> Result<Fd, Errno> {
        let path = self.through_sriov_links(path);
        self.listing(&path)?;
        Ok(self.new_fd(Object::Dir { path }))
    }

    /// `path` relative to directory `dir`, opened by `open_dir`, as one path.
    pub(super) fn path_at(&self, dir: Fd, path: &core::ffi::CStr) -> Result<String, Errno> {
        let path = path.to_str().map_err(|_| Errno::NOENT)?;
        Ok(format!("{}/{path}", self.dir_path(dir)?))
    }

    /// The entries of directory `dir` now. One Linux removed (its device
    /// unbound) lists nothing but `.` and `..`: here, nothing.
    pub(super) fn open_dir_listing(&self, dir: Fd) -> Result<Vec<String>, Errno> {
        match self.listing(&self.dir_path(dir)?) {
            Err(Errno::NOENT) => Ok(Vec::new()),
            listed => listed,
        }
    }

    /// Whether `name` is an entry of directory `dir` now. The crate looks up
    /// one name from an open directory; a path is not modelled (`EINVAL`).
    pub(super) fn entry_exists(&self, dir: Fd, name: &str) -> Result<(), Errno> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Errno::INVAL);
        }
        match self.open_dir_listing(dir)?.iter().any(|entry| entry == name) {
            true => Ok(()),
            false => Err(Errno::NOENT),
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
    fn an_open_directory_answers_for_its_entries_now() {
        let k = FakeKernel::new();
        k.add_device(FakeDevice::edu("0000:00:01.0", 3));
        k.set_iommufd(true, true);
        let dir = k.state().new_fd(Object::Dir { path: "/sys/bus/pci/devices/0000:00:01.0/vfio-dev".into() });
        let s = k.state();
        assert_eq!(s.entry_exists(dir, "vfio0"), Ok(()));
        assert_eq!(s.entry_exists(dir, "vfio1"), Err(Errno::NOENT));
        assert_eq!(s.entry_exists(dir, "vfio0/dev"), Err(Errno::INVAL), "one name, not a path");
        drop(s);
        // Unbound, the device's vfio-dev directory lists nothing.
        k.bind(0, None);
        let s = k.state();
        assert_eq!(s.open_dir_listing(dir), Ok(Vec::new()));
        assert_eq!(s.entry_exists(dir, "vfio0"), Err(Errno::NOENT));
    }
}
