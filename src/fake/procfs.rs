//! A minimal `/proc` for the fake: one process (pid 1, the test) whose
//! `/proc/1/fd` lists the fake's open fds, each a link to what it opened,
//! so [`crate::bind`] can find who holds a device.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use rustix::io::Errno;

use super::model::{Object, State};

/// The pid the fake's processes all run as.
pub(super) const PID: u32 = 1;

impl State {
    /// Entries of a `/proc` directory, or `None` for a path outside `/proc`.
    pub(super) fn list_proc(&self, path: &str) -> Option<Result<Vec<String>, Errno>> {
        let rest = path.strip_prefix("/proc")?;
        Some(match rest {
            "" | "/" => Ok(std::vec![PID.to_string()]),
            _ if rest == format!("/{PID}/fd") => Ok(self.fds.keys().map(i32::to_string).collect()),
            _ => Err(Errno::NOENT),
        })
    }

    /// The target of `/proc/1/fd/N`.
    pub(super) fn proc_link(&self, path: &str) -> Option<String> {
        let fd: i32 = path.strip_prefix(&format!("/proc/{PID}/fd/"))?.parse().ok()?;
        Some(match self.fds.get(&fd)? {
            Object::Container { .. } => "/dev/vfio/vfio".to_string(),
            Object::Group { number, .. } => {
                let noiommu = self.devices.iter().any(|d| d.group == Some(*number) && d.noiommu);
                if noiommu {
                    format!("/dev/vfio/noiommu-{number}")
                } else {
                    format!("/dev/vfio/{number}")
                }
            }
            Object::Device { .. } => "anon_inode:[vfio-device]".to_string(),
            Object::EventFd { .. } => "anon_inode:[eventfd]".to_string(),
            Object::Iommufd { .. } => "/dev/iommu".to_string(),
            Object::Cdev { device, .. } => format!("/dev/vfio/devices/vfio{device}"),
            Object::Dir { path } => path.clone(),
        })
    }
}
