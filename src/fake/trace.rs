//! What the fake records of each system call, and failure injection by step:
//! every call the crate makes is classified as the [`Step`] its error would
//! name, so a test can say "the second `VFIO_DEVICE_SET_IRQS` for MSI fails"
//! instead of counting calls.

use core::fmt;

use rustix::io::Errno;

use super::model::{Object, State, REGION_SHIFT};
use crate::error::{ErrnoDisplay, Step};
use crate::kernel::{Fd, Request};

/// One system call the fake answered, as [`FakeKernel::trace`](super::FakeKernel::trace) lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The system call: `open`, `ioctl`, `mmap`, `pread`, `read`, `poll`...
    pub name: &'static str,
    /// What the crate was doing, as its errors name it (the ioctl's name,
    /// the region of an `mmap`...).
    pub step: Step,
    /// The injected failure, if this call was made to fail.
    pub failed: Option<Errno>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.step, self.name)?;
        if let Some(errno) = self.failed {
            write!(f, " FAILED with {}", ErrnoDisplay(errno))?;
        }
        Ok(())
    }
}

/// A failure waiting for the `nth` call of a step (1: the next one).
#[derive(Clone, Copy, Debug)]
pub(super) struct StepFailure {
    pub(super) step: Step,
    pub(super) nth: u32,
    pub(super) errno: Errno,
}

/// The step of an `ioctl`.
pub(super) fn ioctl_step(request: &Request<'_>) -> Step {
    match request {
        Request::GetApiVersion => Step::ApiVersion,
        Request::CheckExtension(_) => Step::CheckExtension,
        Request::SetIommu(_) => Step::SetIommu,
        Request::GroupGetStatus(_) => Step::GroupStatus,
        Request::GroupSetContainer(_) => Step::SetContainer,
        Request::GroupUnsetContainer => Step::UnsetContainer,
        Request::GroupGetDeviceFd(_) => Step::GetDeviceFd,
        Request::DeviceGetInfo(_) => Step::DeviceInfo,
        Request::DeviceGetRegionInfo(info) => Step::RegionInfo(info.index),
        Request::DeviceGetIrqInfo(info) => Step::IrqInfo(info.index),
        Request::DeviceGetRegionInfoCaps(buf) => Step::RegionInfo(buf.u32_at(8)),
        Request::DeviceSetIrqs(set) => Step::SetIrqs(set.head.index),
        Request::DeviceReset => Step::Reset,
        Request::IommuGetInfo(_) => Step::IommuInfo,
        Request::IommuMapDma(_) => Step::MapDma,
        Request::IommuUnmapDma(_) => Step::UnmapDma,
        Request::IoasAlloc(_) => Step::IoasAlloc,
        Request::IoasIovaRanges(_) => Step::IoasIovaRanges,
        Request::IoasMap(_) => Step::IoasMap,
        Request::IoasUnmap(_) => Step::IoasUnmap,
        Request::DeviceBindIommufd(_) => Step::BindIommufd,
        Request::DeviceAttachIommufdPt(_) => Step::AttachIoas,
        Request::DeviceSetVfToken(_) => Step::SetVfToken,
    }
}

/// The step of an `open`.
pub(super) fn open_step(path: &core::ffi::CStr) -> Step {
    match path.to_bytes() {
        b"/dev/vfio/vfio" => Step::OpenContainer,
        b"/dev/iommu" => Step::OpenIommufd,
        p if p.starts_with(b"/dev/vfio/devices/") => Step::OpenCdev,
        _ => Step::OpenGroup,
    }
}

/// The device node a path names (for `stat` and `chown`), parsed as
/// Linux names them; anything else counts as the container.
pub(super) fn node_of(path: &core::ffi::CStr) -> crate::DevNode {
    use crate::DevNode;
    let p = path.to_str().unwrap_or("");
    let number = |rest: &str| rest.parse::<u32>().ok();
    if p == "/dev/iommu" {
        DevNode::Iommufd
    } else if let Some(n) = p.strip_prefix("/dev/vfio/devices/vfio").and_then(number) {
        DevNode::Cdev(n)
    } else if let Some(n) = p.strip_prefix("/dev/vfio/noiommu-").and_then(number) {
        DevNode::NoiommuGroup(n)
    } else if let Some(n) = p.strip_prefix("/dev/vfio/").and_then(number) {
        DevNode::Group(n)
    } else {
        DevNode::Container
    }
}

/// The step of a directory listing.
pub(super) fn list_step(path: &[u8]) -> Step {
    if path.ends_with(b"/vfio-dev") {
        Step::FindCdev
    } else {
        Step::ListSysfs
    }
}

/// The region an fd offset points at.
pub(super) fn region_of(offset: u64) -> u32 {
    (offset >> REGION_SHIFT) as u32
}

impl State {
    /// The step of a `munmap`: a device region's, or DMA memory's.
    pub(super) fn munmap_step(&self, addr: usize) -> Step {
        match self.mappings.get(&addr).and_then(|views| views.first()) {
            Some(&(_, device, index)) if device != usize::MAX => Step::Munmap(index),
            _ => Step::UnmapMemory,
        }
    }

    /// The device whose interrupt `fd` is bound to, if any.
    pub(super) fn device_of_eventfd(&self, fd: Fd) -> Option<usize> {
        if !matches!(self.fds.get(&fd.raw()), Some(Object::EventFd { .. })) {
            return None;
        }
        self.irq_bindings.iter().find(|(_, &efd)| efd == fd.raw()).map(|(&(d, _, _), _)| d)
    }

    /// Counts a call, records it, and returns the injected failure it meets.
    pub(super) fn enter_call(&mut self, name: &'static str, step: Step) -> Result<(), Errno> {
        self.calls += 1;
        let now = self.calls;
        let mut failed = self.fail_at.iter().position(|&(at, _)| at == now).map(|i| self.fail_at.swap_remove(i).1);
        for pending in self.fail_steps.iter_mut().filter(|p| p.step == step) {
            pending.nth -= 1;
            if pending.nth == 0 {
                failed = failed.or(Some(pending.errno));
            }
        }
        self.fail_steps.retain(|p| p.nth > 0);
        self.trace.push(Call { name, step, failed });
        failed.map_or(Ok(()), Err)
    }
}
