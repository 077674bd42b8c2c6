//! SR-IOV as sysfs shows it: whether a PCI device is a PF (how many VFs it
//! may have and has, and their names) or a VF (and its PF), and creating or
//! removing VFs through `sriov_numvfs`. Nothing allocates.
//!
//! With vfio-pci loaded with `enable_sriov=1` and the PF bound to it, the
//! kernel guards the PF's VFs with a [`VfToken`](crate::VfToken): see
//! [`Context::setup_vf`](crate::Context::setup_vf).

use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Label, Step};
use crate::kernel::{Kernel, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::path::sys_path;
use crate::sysfs;

/// A PCI device's place in SR-IOV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SriovRole {
    /// A physical function that can have VFs (`sriov_totalvfs` exists).
    Pf {
        /// `sriov_totalvfs`: the most VFs it may have.
        total_vfs: u32,
        /// `sriov_numvfs`: the VFs it has now.
        num_vfs: u32,
    },
    /// A virtual function (its `physfn` link names the PF).
    Vf {
        /// Its PF.
        pf: DeviceName,
    },
    /// Neither (or not a PCI device).
    None,
}

fn failed(e: Errno) -> Error {
    Error::syscall(Step::ReadSriov, e)
}

fn too_long() -> Error {
    failed(Errno::NAMETOOLONG)
}

/// Reads a small decimal sysfs attribute; `None` when it does not exist.
fn read_number<K: Kernel>(kernel: &K, name: &DeviceName, attr: &str) -> Result<Option<u32>, Error> {
    let path = sys_path!("/sys/bus/pci/devices/", name, "/", attr);
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut buf = [0u8; 16];
    match kernel.read_file(&TOKEN, path, &mut buf) {
        Ok(text) => {
            let digits = text.strip_suffix(b"\n").unwrap_or(text);
            let parsed = core::str::from_utf8(digits).ok().and_then(|t| t.parse().ok());
            parsed.map(Some).ok_or(failed(Errno::INVAL))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Reads a link under the device's directory naming another PCI device
/// (`physfn`, `virtfnN`); `None` when it does not exist.
fn read_device_link<K: Kernel>(kernel: &K, name: &DeviceName, link: &str) -> Result<Option<DeviceName>, Error> {
    let path = sys_path!("/sys/bus/pci/devices/", name, "/", link);
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut buf = [0u8; sysfs::LINK_CAPACITY];
    match kernel.readlink(&TOKEN, path, &mut buf) {
        Ok(target) if target.len() < sysfs::LINK_CAPACITY => {
            let last = core::str::from_utf8(sysfs::last_component(target)).map_err(|_| failed(Errno::INVAL))?;
            DeviceName::new(last).map(Some).map_err(|_| failed(Errno::INVAL))
        }
        Ok(_) => Err(too_long()),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// The device's SR-IOV role (see [`SriovRole`]). A device that is not on
/// the PCI bus is [`SriovRole::None`]; one that does not exist at all is
/// refused with [`ErrorKind::NoSuchDevice`].
pub fn role<K: Kernel>(kernel: &K, name: &str) -> Result<SriovRole, Error> {
    let dev = DeviceName::new(name)?;
    role_of(kernel, &dev).map_err(|e| e.for_device(dev))
}

pub(crate) fn role_of<K: Kernel>(kernel: &K, dev: &DeviceName) -> Result<SriovRole, Error> {
    if sysfs::find_bus(kernel, dev, None)? != Bus::Pci {
        return Ok(SriovRole::None);
    }
    if let Some(pf) = read_device_link(kernel, dev, "physfn")? {
        return Ok(SriovRole::Vf { pf });
    }
    match read_number(kernel, dev, "sriov_totalvfs")? {
        None => Ok(SriovRole::None),
        Some(total_vfs) => {
            let num_vfs = read_number(kernel, dev, "sriov_numvfs")?.unwrap_or(0);
            Ok(SriovRole::Pf { total_vfs, num_vfs })
        }
    }
}

/// Calls `visit` with the name of each VF PF `pf` has now (`virtfn0`,
/// `virtfn1`... in order); returns how many there were. A device that is
/// not a PF has none.
pub fn vfs<K: Kernel>(kernel: &K, pf: &str, visit: &mut dyn FnMut(&DeviceName)) -> Result<u32, Error> {
    let dev = DeviceName::new(pf)?;
    vfs_of(kernel, &dev, visit).map_err(|e| e.for_device(dev))
}

fn vfs_of<K: Kernel>(kernel: &K, pf: &DeviceName, visit: &mut dyn FnMut(&DeviceName)) -> Result<u32, Error> {
    let num_vfs = match role_of(kernel, pf)? {
        SriovRole::Pf { num_vfs, .. } => num_vfs,
        _ => return Ok(0),
    };
    let mut seen = 0;
    for i in 0..num_vfs {
        let link = sys_path!("virtfn", i);
        let link = link.as_c_str().ok_or_else(too_long)?;
        let link = core::str::from_utf8(link.to_bytes()).map_err(|_| too_long())?;
        if let Some(vf) = read_device_link(kernel, pf, link)? {
            visit(&vf);
            seen += 1;
        }
    }
    Ok(seen)
}

/// Whether vfio-pci's `enable_sriov` parameter is on (`None`: vfio-pci is
/// not loaded, or has no such parameter: a kernel without `CONFIG_PCI_IOV`).
pub(crate) fn vfio_pci_enable_sriov<K: Kernel>(kernel: &K) -> Result<Option<bool>, Error> {
    let mut buf = [0u8; 4];
    match kernel.read_file(&TOKEN, c"/sys/module/vfio_pci/parameters/enable_sriov", &mut buf) {
        Ok(text) => Ok(Some(text.first() == Some(&b'Y'))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Whether the kernel guards `dev` with a VF token: a VF whose PF is bound
/// to vfio-pci, or a PF (bound to vfio-pci, as a device being opened through
/// VFIO is). Such devices take the group path under
/// [`Backend::Auto`](crate::Backend::Auto) (see [`crate::Context::setup_vf`]).
/// Two `readlink`s, no directory listing: `physfn/driver` (only a VF has
/// `physfn`; the link names its PF's driver), and `sriov_totalvfs`, a file
/// only PFs have, which `readlink` answers `EINVAL` when it exists.
pub(crate) fn token_guarded<K: Kernel>(kernel: &K, dev: &DeviceName) -> Result<bool, Error> {
    let path = sys_path!("/sys/bus/pci/devices/", dev, "/physfn/driver");
    let path = path.as_c_str().ok_or_else(too_long)?;
    if let Some(pf_driver) = sysfs::driver_at(kernel, path)? {
        return Ok(pf_driver.as_str() == "vfio-pci");
    }
    let path = sys_path!("/sys/bus/pci/devices/", dev, "/sriov_totalvfs");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let mut buf = [0u8; 1];
    match kernel.readlink(&TOKEN, path, &mut buf) {
        Err(Errno::INVAL) => Ok(true),
        Err(Errno::NOENT) | Ok(_) => Ok(false),
        Err(e) => Err(failed(e)),
    }
}

/// The PF to name when the kernel refuses `dev` for its VF token: its PF
/// if it is a VF; `None` if it is a PF itself (whose VFs are in use).
pub(crate) fn token_refusal<K: Kernel>(kernel: &K, dev: &DeviceName) -> ErrorKind {
    let pf = read_device_link(kernel, dev, "physfn").ok().flatten();
    ErrorKind::VfTokenRefused { pf: pf.map(|p| Label::new(p.as_str().as_bytes())) }
}

/// Creates `count` VFs on PF `pf` (`count` 0: removes them), through its
/// `sriov_numvfs`. Refused, changing nothing, when `pf` is not an SR-IOV PF
/// ([`ErrorKind::NotSriovPf`]), is bound to no driver
/// ([`ErrorKind::NotBound`]), is bound to vfio-pci loaded without
/// `enable_sriov=1` ([`ErrorKind::SriovDisabled`]), when `count` exceeds
/// `sriov_totalvfs` ([`ErrorKind::TooManyVfs`]), when it has other VFs
/// already ([`ErrorKind::VfsEnabled`]: Linux changes the count only through
/// 0), or, to remove them, when a process holds one of its VFs through VFIO
/// ([`ErrorKind::VfHeld`]: Linux would block until it lets go). The same
/// count again does nothing.
pub fn set_num_vfs<K: Kernel>(kernel: &K, pf: &str, count: u32) -> Result<(), Error> {
    let dev = DeviceName::new(pf)?;
    set_num_vfs_of(kernel, &dev, count).map_err(|e| e.for_device(dev))
}

fn set_num_vfs_of<K: Kernel>(kernel: &K, dev: &DeviceName, count: u32) -> Result<(), Error> {
    let (total_vfs, num_vfs) = match role_of(kernel, dev)? {
        SriovRole::Pf { total_vfs, num_vfs } => (total_vfs, num_vfs),
        SriovRole::Vf { pf } => {
            return Err(Error::new(ErrorKind::NotSriovPf { vf_of: Some(Label::new(pf.as_str().as_bytes())) }))
        }
        SriovRole::None => return Err(Error::new(ErrorKind::NotSriovPf { vf_of: None })),
    };
    if count > total_vfs {
        return Err(Error::new(ErrorKind::TooManyVfs { asked: count, total: total_vfs }));
    }
    if count == num_vfs {
        return Ok(());
    }
    if count > 0 && num_vfs > 0 {
        return Err(Error::new(ErrorKind::VfsEnabled { current: num_vfs }));
    }
    let driver = sysfs::driver_of(kernel, Bus::Pci, dev)?.ok_or(Error::new(ErrorKind::NotBound { bus: Bus::Pci }))?;
    let vfio_pci = driver.as_str() == "vfio-pci";
    if vfio_pci && count > 0 && vfio_pci_enable_sriov(kernel)? != Some(true) {
        return Err(Error::new(ErrorKind::SriovDisabled));
    }
    if count == 0 {
        // Every VF is asked (no list to fill: a PF may have hundreds).
        let (mut held, mut failed) = (None, None);
        vfs_of(kernel, dev, &mut |vf| {
            if held.is_some() || failed.is_some() {
                return;
            }
            let asked = crate::bind::holders(kernel, vf.as_str(), Some(Bus::Pci), &mut |pid| {
                held.get_or_insert((pid, *vf));
            });
            failed = asked.err();
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((pid, vf)) = held {
            return Err(Error::new(ErrorKind::VfHeld { pid }).for_device(vf));
        }
    }
    let path = sys_path!("/sys/bus/pci/devices/", dev, "/sriov_numvfs");
    let path = path.as_c_str().ok_or_else(too_long)?;
    let text = sys_path!(count);
    let text = text.as_c_str().ok_or_else(too_long)?;
    match kernel.write_file(&TOKEN, path, text.to_bytes()) {
        Ok(_) => Ok(()),
        // vfio-pci without enable_sriov (read above, but it may have changed),
        // or a driver that cannot create VFs.
        Err(Errno::NOENT) if vfio_pci => Err(Error::new(ErrorKind::SriovDisabled).with_errno(Errno::NOENT)),
        Err(e) => Err(Error::syscall(Step::WriteSysfs, e)),
    }
}
