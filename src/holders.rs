//! Which processes hold a device through VFIO: the ones with its group node
//! (`/dev/vfio/N`, `/dev/vfio/noiommu-N`) or its cdev
//! (`/dev/vfio/devices/vfioN`) open, found in `/proc/PID/fd`.
//!
//! Linux blocks a write to the device's `driver/unbind` until every VFIO fd
//! of the device is closed (signalling its request notifier meanwhile), and
//! the writer cannot even be killed. [`crate::bind`] asks this first, so an
//! unbind of a held device is refused with the holder's pid instead of
//! hanging. The legacy device fd itself is anonymous; a context always keeps
//! its group open beside it, so the group node names its holder (as well as
//! any process that merely has the group open, which would block setup too).

use rustix::io::Errno;

use crate::error::{Error, Step};
use crate::iommufd::find_cdev;
use crate::kernel::{Kernel, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::path::{sys_path, PathBuf};
use crate::sysfs::{self, too_long};

/// The nodes through which a device is held.
struct Nodes {
    group: Option<PathBuf>,
    noiommu: Option<PathBuf>,
    cdev: Option<PathBuf>,
}

impl Nodes {
    fn of<K: Kernel>(kernel: &K, bus: Bus, dev: &DeviceName) -> Result<Self, Error> {
        let group = sysfs::group_of(kernel, bus, dev)?;
        let cdev = find_cdev(kernel, bus, dev)?;
        let fits = |path: PathBuf| path.as_c_str().is_some().then_some(path).ok_or_else(too_long);
        Ok(Nodes {
            group: group.map(|g| fits(sys_path!("/dev/vfio/", g))).transpose()?,
            noiommu: group.map(|g| fits(sys_path!("/dev/vfio/noiommu-", g))).transpose()?,
            cdev: cdev.map(|n| fits(sys_path!("/dev/vfio/devices/vfio", n))).transpose()?,
        })
    }

    fn matches(&self, target: &[u8]) -> bool {
        let paths = [&self.group, &self.noiommu, &self.cdev].into_iter().flatten();
        paths.filter_map(PathBuf::as_c_str).any(|p| p.to_bytes() == target)
    }
}

fn pid_of(raw: &[u8]) -> Option<u32> {
    if raw.is_empty() || raw.len() > 10 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(raw).ok()?.parse().ok()
}

/// Calls `visit` with the pid of each process that has one of `dev`'s VFIO
/// nodes open. Processes whose fds cannot be read (another user's, or gone
/// meanwhile) are passed over; without `/proc`, none is found.
pub(crate) fn holders<K: Kernel>(
    kernel: &K,
    bus: Bus,
    dev: &DeviceName,
    visit: &mut dyn FnMut(u32),
) -> Result<(), Error> {
    let nodes = Nodes::of(kernel, bus, dev)?;
    // Gone meanwhile, or another user's: passed over. Anything else is a failure.
    let passed_over = |e: Errno| matches!(e, Errno::NOENT | Errno::ACCESS | Errno::PERM | Errno::SRCH);
    let mut failed = None;
    let listed = kernel.list_dir(&TOKEN, c"/proc", &mut |raw| {
        let (Some(pid), None) = (pid_of(raw), &failed) else { return };
        let fds = sys_path!("/proc/", pid, "/fd");
        let Some(fds) = fds.as_c_str() else { return };
        let mut held = false;
        let scanned = kernel.list_dir(&TOKEN, fds, &mut |fd| {
            let (Some(fd), false, None) = (pid_of(fd), held, &failed) else { return };
            let link = sys_path!("/proc/", pid, "/fd/", fd);
            let Some(link) = link.as_c_str() else { return };
            let mut buf = [0u8; 64];
            match kernel.readlink(&TOKEN, link, &mut buf) {
                Ok(target) => held = nodes.matches(target),
                Err(e) if passed_over(e) => {}
                Err(e) => failed = Some(Error::syscall(Step::ReadSysfs, e)),
            }
        });
        match scanned {
            Err(e) if !passed_over(e) => failed = Some(Error::syscall(Step::ListSysfs, e)),
            _ if held && failed.is_none() => visit(pid),
            _ => {}
        }
    });
    match listed {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => failed = Some(Error::syscall(Step::ListSysfs, e)),
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids() {
        assert_eq!(pid_of(b"1"), Some(1));
        assert_eq!(pid_of(b"4194304"), Some(4_194_304));
        for raw in [&b""[..], b"self", b"12a", b"99999999999", b"-1"] {
            assert_eq!(pid_of(raw), None, "{raw:?}");
        }
    }
}
