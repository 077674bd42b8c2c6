//! SR-IOV as Linux shows it and vfio-pci guards it: a PF's
//! `sriov_totalvfs` and `sriov_numvfs` (writing N creates N VFs, each a PCI
//! device in its own IOMMU group, with `physfn` and `virtfnK` links; 0
//! removes them), vfio-pci's `enable_sriov` parameter, and the VF token
//! rules of `vfio_pci_core_match`, `vfio_pci_validate_vf_token` and
//! `vfio_pci_core_feature_token` (Linux 6.12).

use std::collections::BTreeMap;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use rustix::io::Errno;

use super::builder::{FakeBar, PciDeviceBuilder};
use super::model::{Object, State};
use crate::name::Bus;
use crate::sys;

/// vfio-pci's name, as its `driver` link and `driver_override` show it.
const VFIO_PCI: &str = "vfio-pci";
const PARAMETER: &str = "/sys/module/vfio_pci/parameters/enable_sriov";
const PCI_DEVICES: &str = "/sys/bus/pci/devices/";
/// `VFIO_DEVICE_FEATURE_GET`, `_PROBE` and `_MASK` (the SET flag is in `sys`).
const FEATURE_GET: u32 = 1 << 16;
const FEATURE_PROBE: u32 = 1 << 18;
const FEATURE_MASK: u32 = 0xffff;

/// One SR-IOV PF.
#[derive(Debug)]
pub(super) struct Pf {
    total_vfs: u16,
    /// Its VFs now, by device index, in `virtfnK` order.
    vfs: Vec<usize>,
    /// Device slots of VFs it had before (reused when it creates VFs again,
    /// so that other devices' indices never move).
    spare: Vec<usize>,
    /// Its VF token (vfio-pci draws one at random when it binds the PF).
    token: [u8; 16],
}

/// The SR-IOV state of the fake system.
#[derive(Debug, Default)]
pub(super) struct Sriov {
    /// vfio-pci's `enable_sriov` (off by default, as in Linux).
    pub(super) enable_sriov: bool,
    /// PFs by device index.
    pfs: BTreeMap<usize, Pf>,
}

/// A token nobody knows: vfio-pci's `uuid_gen` at bind.
fn unknown_token(seed: usize) -> [u8; 16] {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new();
    let (a, b) = (random.hash_one(seed), random.hash_one(!seed));
    let mut token = [0u8; 16];
    token[..8].copy_from_slice(&a.to_le_bytes());
    token[8..].copy_from_slice(&b.to_le_bytes());
    token
}

/// `DDDD:BB:DD.F` as a domain and a routing ID.
fn routing_id(name: &str) -> Option<(u32, u32)> {
    let (domain, rest) = name.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |t: &str| u32::from_str_radix(t, 16).ok();
    Some((hex(domain)?, hex(bus)? << 8 | hex(dev)? << 3 | hex(func)?))
}

/// The name of the PF's VF `i`: First VF Offset 1, VF Stride 1 (as QEMU's
/// emulated SR-IOV devices have).
fn vf_name(pf: &str, i: u32) -> Option<String> {
    let (domain, rid) = routing_id(pf)?;
    let rid = rid + 1 + i;
    (rid <= 0xffff).then(|| format!("{domain:04x}:{:02x}:{:02x}.{:x}", rid >> 8, (rid >> 3) & 0x1f, rid & 7))
}

/// The kernel's `uuid_parse`: exactly `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid_parse(text: &[u8]) -> Result<[u8; 16], Errno> {
    let text = text.get(..36).ok_or(Errno::INVAL)?;
    let mut out = [0u8; 16];
    let mut nibble = 0;
    for (at, &c) in text.iter().enumerate() {
        if [8, 13, 18, 23].contains(&at) {
            if c != b'-' {
                return Err(Errno::INVAL);
            }
            continue;
        }
        let v = (c as char).to_digit(16).ok_or(Errno::INVAL)? as u8;
        out[nibble / 2] |= if nibble % 2 == 0 { v << 4 } else { v };
        nibble += 1;
    }
    Ok(out)
}

/// The kernel's `kstrtobool` for a module parameter.
fn parse_bool(text: &str) -> Result<bool, Errno> {
    match text.as_bytes().first() {
        Some(b'1' | b'y' | b'Y') => Ok(true),
        Some(b'0' | b'n' | b'N') => Ok(false),
        _ => Err(Errno::INVAL),
    }
}

/// What `vfio_pci_core_match` makes of `GET_DEVICE_FD`'s string for
/// device `name`: `None` when it names another device, else the token
/// given (if any), or the error.
fn match_pci(name: &str, buf: &str) -> Option<Result<Option<[u8; 16]>, Errno>> {
    let rest = buf.as_bytes().strip_prefix(name.as_bytes())?;
    if rest.is_empty() {
        return Some(Ok(None));
    }
    if rest[0] != b' ' {
        return None;
    }
    let (mut rest, mut token) = (rest, None);
    while let Some((&c, after)) = rest.split_first() {
        if c == b' ' {
            rest = after;
            continue;
        }
        match rest.strip_prefix(b"vf_token=") {
            Some(uuid) if token.is_none() => match uuid_parse(uuid) {
                Ok(t) => {
                    token = Some(t);
                    rest = &uuid[36..];
                }
                Err(e) => return Some(Err(e)),
            },
            // An unknown or repeated option.
            _ => return Some(Err(Errno::INVAL)),
        }
    }
    Some(Ok(token))
}

impl State {
    /// Registers device `index` as a PF if it was described as one.
    pub(super) fn add_sriov(&mut self, index: usize) {
        let total_vfs = self.devices[index].sriov_total_vfs;
        if total_vfs > 0 {
            let pf = Pf { total_vfs, vfs: Vec::new(), spare: Vec::new(), token: unknown_token(index) };
            self.sriov.pfs.insert(index, pf);
        }
    }

    /// The PF of VF `index`, if it is one.
    fn pf_of(&self, index: usize) -> Option<usize> {
        self.sriov.pfs.iter().find(|(_, pf)| pf.vfs.contains(&index)).map(|(&p, _)| p)
    }

    fn pci_device(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.bus == Bus::Pci && d.name == name)
    }

    fn on_vfio_pci(&self, index: usize) -> bool {
        self.devices[index].driver.as_deref() == Some(VFIO_PCI)
    }

    /// The PF's current VF token, if `name` is a PF.
    pub(super) fn vf_token_of(&self, name: &str) -> Option<[u8; 16]> {
        self.sriov.pfs.get(&self.pci_device(name)?).map(|pf| pf.token)
    }

    /// Rewrites a path that goes through a `physfn` or `virtfnK` link into
    /// the directory it reaches (`/sys/bus/pci/devices/VF/physfn/driver`:
    /// `/sys/bus/pci/devices/PF/driver`); other paths are returned as they are.
    pub(super) fn through_sriov_links(&self, path: &str) -> String {
        let mut path = path.to_string();
        // Each rewrite goes one link further; a path holds few.
        for _ in 0..8 {
            let Some(rest) = path.strip_prefix(PCI_DEVICES) else { break };
            let Some((name, rest)) = rest.split_once('/') else { break };
            let Some((link, rest)) = rest.split_once('/') else { break };
            match self.sriov_link_target(name, link) {
                Some(target) => path = format!("{PCI_DEVICES}{target}/{rest}"),
                None => break,
            }
        }
        path
    }

    /// The device a VF's `physfn` or a PF's `virtfnK` names.
    fn sriov_link_target(&self, name: &str, link: &str) -> Option<String> {
        let index = self.pci_device(name)?;
        let target = if link == "physfn" {
            self.pf_of(index)?
        } else {
            let k: usize = link.strip_prefix("virtfn")?.parse().ok()?;
            *self.sriov.pfs.get(&index)?.vfs.get(k)?
        };
        Some(self.devices[target].name.clone())
    }

    /// `readlink` of an SR-IOV path (`None`: not one): `physfn` and
    /// `virtfnK` are links; a PCI device's attribute file is not (`EINVAL`,
    /// as Linux answers for a regular file).
    pub(super) fn sriov_readlink(&self, path: &str) -> Option<Result<String, Errno>> {
        let rest = path.strip_prefix(PCI_DEVICES)?;
        let (name, entry) = rest.split_once('/')?;
        let index = self.pci_device(name)?;
        if let Some(target) = self.sriov_link_target(name, entry) {
            return Some(Ok(format!("../{target}")));
        }
        self.sriov_entries(index, false).iter().any(|e| e == entry).then_some(Err(Errno::INVAL))
    }

    /// The SR-IOV entries of device `index`'s directory (`links`: with the
    /// links), and its attribute files when `links` is false.
    pub(super) fn sriov_entries(&self, index: usize, links: bool) -> Vec<String> {
        let mut entries: Vec<String> =
            if links { Vec::new() } else { ["driver_override", "uevent"].map(String::from).to_vec() };
        if let Some(pf) = self.sriov.pfs.get(&index) {
            entries.extend(["sriov_totalvfs", "sriov_numvfs"].map(String::from));
            if links {
                entries.extend((0..pf.vfs.len()).map(|k| format!("virtfn{k}")));
            }
        }
        if links && self.pf_of(index).is_some() {
            entries.push("physfn".to_string());
        }
        entries
    }

    /// `read` of an SR-IOV attribute (`None`: not one).
    pub(super) fn read_sriov(&self, path: &str) -> Option<Result<String, Errno>> {
        if path == PARAMETER {
            return Some(match self.driver_loaded(Bus::Pci, VFIO_PCI) {
                true => Ok(format!("{}\n", if self.sriov.enable_sriov { 'Y' } else { 'N' })),
                false => Err(Errno::NOENT),
            });
        }
        let (name, attr) = path.strip_prefix(PCI_DEVICES)?.split_once('/')?;
        let pf = self.sriov.pfs.get(&self.pci_device(name)?)?;
        match attr {
            "sriov_totalvfs" => Some(Ok(format!("{}\n", pf.total_vfs))),
            "sriov_numvfs" => Some(Ok(format!("{}\n", pf.vfs.len()))),
            _ => None,
        }
    }

    /// `write` of an SR-IOV attribute (`None`: not one).
    pub(super) fn write_sriov(&mut self, path: &str, text: &str) -> Option<Result<(), Errno>> {
        if path == PARAMETER {
            if !self.driver_loaded(Bus::Pci, VFIO_PCI) {
                return Some(Err(Errno::NOENT));
            }
            return Some(parse_bool(text).map(|on| self.sriov.enable_sriov = on));
        }
        let (name, attr) = path.strip_prefix(PCI_DEVICES)?.split_once('/')?;
        let index = self.pci_device(name)?;
        if attr != "sriov_numvfs" || !self.sriov.pfs.contains_key(&index) {
            return None;
        }
        Some(self.sriov_numvfs_store(index, text))
    }

    /// Linux's `sriov_numvfs_store`, with vfio-pci's `sriov_configure`.
    fn sriov_numvfs_store(&mut self, index: usize, text: &str) -> Result<(), Errno> {
        let count: u16 = text.trim_end().parse().map_err(|_| Errno::INVAL)?;
        let pf = &self.sriov.pfs[&index];
        if count > pf.total_vfs {
            return Err(Errno::RANGE);
        }
        let current = pf.vfs.len();
        if usize::from(count) == current {
            return Ok(());
        }
        let driver = self.devices[index].driver.clone().ok_or(Errno::NOENT)?;
        if driver == VFIO_PCI && !self.sriov.enable_sriov {
            return Err(Errno::NOENT);
        }
        if count == 0 {
            return self.remove_vfs(index);
        }
        if current > 0 {
            return Err(Errno::BUSY);
        }
        self.create_vfs(index, u32::from(count), &driver)
    }

    fn create_vfs(&mut self, pf: usize, count: u32, driver: &str) -> Result<(), Errno> {
        let names: Vec<String> =
            (0..count).map(|i| vf_name(&self.devices[pf].name, i)).collect::<Option<_>>().ok_or(Errno::NOSPC)?;
        if names.iter().any(|n| self.pci_device(n).is_some()) {
            return Err(Errno::EXIST);
        }
        let first_group = self.devices.iter().filter_map(|d| d.group).max().map_or(0, |g| g + 1);
        let mut vfs = Vec::new();
        for (group, name) in (first_group..).zip(names) {
            let mut vf = PciDeviceBuilder::new(&name, group).bar(0, FakeBar::memory64(0x4000)).msix(1).build();
            // vfio-pci captures its PF's VFs through their driver_override;
            // another PF driver probes its own.
            vf.driver = Some(driver.to_string());
            let slot = self.sriov.pfs.get_mut(&pf).and_then(|p| p.spare.pop());
            let index = self.insert_device(vf, None, slot);
            if driver != VFIO_PCI {
                self.sysfs[index].default_driver = Some(driver.to_string());
            }
            vfs.push(index);
        }
        if let Some(p) = self.sriov.pfs.get_mut(&pf) {
            p.vfs = vfs;
        }
        Ok(())
    }

    /// Removes the PF's VFs; the fake never blocks, so where Linux would
    /// wait for a VF's user to let go, it answers `EBUSY`.
    fn remove_vfs(&mut self, pf: usize) -> Result<(), Errno> {
        let vfs = self.sriov.pfs[&pf].vfs.clone();
        if vfs.iter().any(|&vf| self.device_open(vf)) {
            return Err(Errno::BUSY);
        }
        for &vf in &vfs {
            // The slot stays, nameless and out of every listing.
            let d = &mut self.devices[vf];
            d.name.clear();
            d.driver = None;
            d.group = None;
            self.sysfs[vf] = Default::default();
        }
        if let Some(p) = self.sriov.pfs.get_mut(&pf) {
            p.vfs.clear();
            p.spare.extend(vfs.iter().rev());
        }
        Ok(())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`'s device lookup in group `number`: the
    /// VFIO device whose driver's match takes `buf` (vfio-pci's
    /// `vfio_pci_core_match`, with its VF token check; a plain name
    /// comparison for the others). `ENODEV` when none does.
    pub(super) fn match_device(&mut self, number: u32, buf: &str) -> Result<usize, Errno> {
        let members: Vec<usize> = (0..self.devices.len())
            .filter(|&i| self.devices[i].group == Some(number) && self.devices[i].bound_to_vfio())
            .collect();
        for index in members {
            if !self.on_vfio_pci(index) {
                if self.devices[index].name == buf {
                    return Ok(index);
                }
                continue;
            }
            let Some(token) = match_pci(&self.devices[index].name, buf) else { continue };
            self.validate_vf_token(index, token?)?;
            return Ok(index);
        }
        Err(Errno::NODEV)
    }

    /// VFs of PF `pf` open through VFIO (vfio-pci's `vf_token->users`).
    fn vf_users(&self, pf: usize) -> usize {
        let vfs = &self.sriov.pfs[&pf].vfs;
        self.fds
            .values()
            .filter(|o| match o {
                Object::Device { device } | Object::Cdev { device, bound: Some(_), .. } => vfs.contains(device),
                _ => false,
            })
            .count()
    }

    /// Linux's `vfio_pci_validate_vf_token`.
    fn validate_vf_token(&mut self, index: usize, token: Option<[u8; 16]>) -> Result<(), Errno> {
        if let Some(pf) = self.pf_of(index) {
            if !self.on_vfio_pci(pf) {
                return if token.is_some() { Err(Errno::INVAL) } else { Ok(()) };
            }
            return match token {
                Some(t) if t == self.sriov.pfs[&pf].token => Ok(()),
                _ => Err(Errno::ACCESS),
            };
        }
        if self.sriov.pfs.contains_key(&index) {
            if self.vf_users(index) > 0 {
                return match token {
                    Some(t) if t == self.sriov.pfs[&index].token => Ok(()),
                    _ => Err(Errno::ACCESS),
                };
            }
            if let (Some(t), Some(pf)) = (token, self.sriov.pfs.get_mut(&index)) {
                pf.token = t;
            }
            return Ok(());
        }
        if token.is_some() {
            return Err(Errno::INVAL);
        }
        Ok(())
    }

    /// `VFIO_DEVICE_FEATURE` with `PCI_VF_TOKEN` on device `index`:
    /// `vfio_ioctl_device_feature`'s checks, then vfio-pci's (`ENOTTY` for
    /// a device that is not a PF) and `vfio_pci_core_feature_token`'s
    /// (only SET; PROBE answers 0).
    pub(super) fn feature_vf_token(&mut self, index: usize, feature: &sys::FeatureVfToken) -> Result<i32, Errno> {
        let flags = feature.flags;
        if feature.argsz < 8
            || flags & !(FEATURE_MASK | FEATURE_GET | sys::DEVICE_FEATURE_SET | FEATURE_PROBE) != 0
            || flags & FEATURE_PROBE == 0 && flags & FEATURE_GET != 0 && flags & sys::DEVICE_FEATURE_SET != 0
        {
            return Err(Errno::INVAL);
        }
        if !self.on_vfio_pci(index) {
            // vfio-platform has no device_feature at all.
            return Err(if self.devices[index].bus == Bus::Pci { Errno::NOTTY } else { Errno::INVAL });
        }
        if flags & FEATURE_MASK != sys::DEVICE_FEATURE_PCI_VF_TOKEN {
            return Err(Errno::NOTTY);
        }
        let Some(pf) = self.sriov.pfs.get_mut(&index) else { return Err(Errno::NOTTY) };
        // vfio_check_feature(flags, argsz, SET, sizeof(uuid)).
        if flags & FEATURE_GET != 0 {
            return Err(Errno::INVAL);
        }
        if flags & FEATURE_PROBE != 0 {
            return Ok(0);
        }
        if flags & sys::DEVICE_FEATURE_SET == 0 || (feature.argsz - 8) < 16 {
            return Err(Errno::INVAL);
        }
        pf.token = feature.uuid;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vf_names_follow_the_pf() {
        assert_eq!(super::vf_name("0000:01:00.0", 0).as_deref(), Some("0000:01:00.1"));
        assert_eq!(super::vf_name("0000:01:00.0", 7).as_deref(), Some("0000:01:01.0"));
        assert_eq!(super::vf_name("0001:ff:1f.7", 0), None);
    }

    #[test]
    fn names_with_tokens_are_parsed_as_the_kernel_does() {
        let uuid = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3";
        let name = "0000:01:00.1";
        assert_eq!(super::match_pci(name, name), Some(Ok(None)));
        assert_eq!(super::match_pci(name, "0000:01:00.10"), None);
        let t = super::match_pci(name, &std::format!("{name}  vf_token={uuid} ")).unwrap().unwrap().unwrap();
        assert_eq!((t[0], t[15]), (0xbd, 0xf3));
        assert_eq!(
            super::match_pci(name, &std::format!("{name} vf_token={uuid}x")),
            Some(Err(rustix::io::Errno::INVAL))
        );
        let twice = std::format!("{name} vf_token={uuid} vf_token={uuid}");
        assert_eq!(super::match_pci(name, &twice), Some(Err(rustix::io::Errno::INVAL)));
        assert_eq!(super::match_pci(name, &std::format!("{name} vf_token=bd8d")), Some(Err(rustix::io::Errno::INVAL)));
    }
}

/// The kernel's side, through raw system calls: what Linux answers.
#[cfg(test)]
mod kernel_tests {
    use std::ffi::CString;
    use std::string::{String, ToString};

    use rustix::io::Errno;

    use crate::fake::{FakeBar, FakeDevice, FakeKernel, PciDeviceBuilder};
    use crate::kernel::{Fd, Kernel, Request, TOKEN};
    use crate::name::Bus;
    use crate::sys;

    const PF: &str = "0000:01:00.0";
    const VF0: &str = "0000:01:00.1";
    const VF1: &str = "0000:01:00.2";
    const EDU: &str = "0000:00:02.0";

    fn system() -> FakeKernel {
        let k = FakeKernel::new();
        k.add_device(PciDeviceBuilder::new(PF, 7).bar(0, FakeBar::memory64(0x4000)).sriov_pf(4).build());
        k.add_device(FakeDevice::edu(EDU, 3));
        k
    }

    fn c(path: &str) -> CString {
        CString::new(path).unwrap()
    }

    fn dev(name: &str, rest: &str) -> CString {
        c(&std::format!("/sys/bus/pci/devices/{name}/{rest}"))
    }

    fn read(k: &FakeKernel, path: &CString) -> Result<String, Errno> {
        let mut buf = [0u8; 64];
        k.read_file(&TOKEN, path, &mut buf).map(|t| String::from_utf8(t.to_vec()).unwrap())
    }

    fn readlink(k: &FakeKernel, path: &CString) -> Result<String, Errno> {
        let mut buf = [0u8; 256];
        k.readlink(&TOKEN, path, &mut buf).map(|t| String::from_utf8(t.to_vec()).unwrap())
    }

    fn numvfs(k: &FakeKernel, text: &str) -> Result<usize, Errno> {
        k.write_file(&TOKEN, &dev(PF, "sriov_numvfs"), text.as_bytes())
    }

    fn list(k: &FakeKernel, path: &CString) -> std::vec::Vec<String> {
        let mut names = std::vec::Vec::new();
        k.list_dir_while(&TOKEN, path, &mut |n| {
            names.push(String::from_utf8(n.to_vec()).unwrap());
            true
        })
        .unwrap();
        names
    }

    #[test]
    fn sriov_numvfs_follows_linux() {
        let k = system();
        let param = c("/sys/module/vfio_pci/parameters/enable_sriov");
        assert_eq!(read(&k, &param).as_deref(), Ok("N\n"));
        assert_eq!(read(&k, &dev(PF, "sriov_totalvfs")).as_deref(), Ok("4\n"));
        assert_eq!(read(&k, &dev(PF, "sriov_numvfs")).as_deref(), Ok("0\n"));
        // readlink of an attribute file: EINVAL; of nothing: ENOENT.
        assert_eq!(readlink(&k, &dev(PF, "sriov_totalvfs")), Err(Errno::INVAL));
        assert_eq!(readlink(&k, &dev(EDU, "sriov_totalvfs")), Err(Errno::NOENT));
        assert_eq!(readlink(&k, &dev(PF, "physfn")), Err(Errno::NOENT));
        // vfio-pci without enable_sriov.
        assert_eq!(numvfs(&k, "2"), Err(Errno::NOENT));
        k.write_file(&TOKEN, &param, b"1\n").unwrap();
        assert_eq!(read(&k, &param).as_deref(), Ok("Y\n"));
        assert_eq!(numvfs(&k, "5"), Err(Errno::RANGE));
        assert_eq!(numvfs(&k, "two"), Err(Errno::INVAL));
        assert_eq!(numvfs(&k, "2\n"), Ok(2));
        assert_eq!(read(&k, &dev(PF, "sriov_numvfs")).as_deref(), Ok("2\n"));
        assert_eq!(readlink(&k, &dev(PF, "virtfn1")).as_deref(), Ok("../0000:01:00.2"));
        assert_eq!(readlink(&k, &dev(VF0, "physfn")).as_deref(), Ok("../0000:01:00.0"));
        assert!(readlink(&k, &dev(VF0, "physfn/driver")).unwrap().ends_with("/vfio-pci"));
        assert!(readlink(&k, &dev(VF1, "driver")).unwrap().ends_with("/vfio-pci"));
        assert_eq!(k.driver_override(VF1).as_deref(), Some("vfio-pci"));
        assert_eq!(readlink(&k, &dev(VF0, "sriov_totalvfs")), Err(Errno::NOENT));
        let (g0, g1) =
            (readlink(&k, &dev(VF0, "iommu_group")).unwrap(), readlink(&k, &dev(VF1, "iommu_group")).unwrap());
        assert!(g0 != g1 && !g0.ends_with("/7") && !g0.ends_with("/3"), "{g0} {g1}");
        assert!(list(&k, &dev(PF, "")).iter().any(|e| e == "virtfn1"));
        assert!(list(&k, &dev(VF0, "")).iter().any(|e| e == "physfn"));
        assert!(list(&k, &c("/sys/bus/pci/devices")).iter().any(|e| e == VF1));
        // Another count only through 0; the same count is no change.
        assert_eq!(numvfs(&k, "3"), Err(Errno::BUSY));
        assert_eq!(numvfs(&k, "2"), Ok(1));
        assert_eq!(numvfs(&k, "0"), Ok(1));
        assert_eq!(readlink(&k, &dev(VF0, "physfn")), Err(Errno::NOENT));
        assert!(!list(&k, &c("/sys/bus/pci/devices")).iter().any(|e| e == VF0));
        assert!(!list(&k, &dev(PF, "")).iter().any(|e| e.starts_with("virtfn")));
        // Created again (in the same slots), then the PF unbound: ENOENT.
        assert_eq!(numvfs(&k, "1"), Ok(1));
        assert_eq!(readlink(&k, &dev(VF0, "physfn")).as_deref(), Ok("../0000:01:00.0"));
        assert_eq!(numvfs(&k, "0"), Ok(1));
        k.bind(0, None);
        assert_eq!(numvfs(&k, "1"), Err(Errno::NOENT));
        // Another PF driver creates VFs whatever enable_sriov says, and keeps them.
        k.bind(0, Some("nvme"));
        k.set_vfio_pci_enable_sriov(false);
        assert_eq!(numvfs(&k, "1"), Ok(1));
        assert!(readlink(&k, &dev(VF0, "physfn/driver")).unwrap().ends_with("/nvme"));
        assert!(readlink(&k, &dev(VF0, "driver")).unwrap().ends_with("/nvme"));
        // No vfio-pci, no parameter.
        k.set_driver_loaded(Bus::Pci, "vfio-pci", false);
        assert_eq!(read(&k, &param), Err(Errno::NOENT));
    }

    /// A device fd through the legacy path, with `GET_DEVICE_FD`'s string;
    /// then its group's and container's.
    fn open(k: &FakeKernel, group: u32, name: &str) -> Result<[Fd; 3], Errno> {
        let container = k.open(&TOKEN, c"/dev/vfio/vfio").unwrap();
        let group = k.open(&TOKEN, &c(&std::format!("/dev/vfio/{group}"))).unwrap();
        k.ioctl(&TOKEN, group, Request::GroupSetContainer(container)).unwrap();
        k.ioctl(&TOKEN, container, Request::SetIommu(sys::TYPE1V2_IOMMU)).unwrap();
        let opened = k.ioctl(&TOKEN, group, Request::GroupGetDeviceFd(&c(name)));
        let fds = opened.map(|fd| [Fd::from_raw(fd), group, container]);
        if fds.is_err() {
            k.close(&TOKEN, group);
            k.close(&TOKEN, container);
        }
        fds
    }

    fn shut(k: &FakeKernel, fds: [Fd; 3]) {
        for fd in fds {
            k.close(&TOKEN, fd);
        }
    }

    const TOKEN_A: &str = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3";
    const TOKEN_B: &str = "00000000-0000-0000-0000-000000000001";

    fn feature(k: &FakeKernel, fd: Fd, flags: u32, token: &str) -> Result<i32, Errno> {
        let uuid = *crate::VfToken::parse(token).unwrap().as_bytes();
        let f = sys::FeatureVfToken { argsz: 24, flags, uuid };
        k.ioctl(&TOKEN, fd, Request::DeviceSetVfToken(&f))
    }

    #[test]
    fn vf_tokens_follow_vfio_pci() {
        let k = system();
        k.set_vfio_pci_enable_sriov(true);
        numvfs(&k, "2").unwrap();
        let group_of = |name: &str| -> u32 {
            readlink(&k, &dev(name, "iommu_group")).unwrap().rsplit('/').next().unwrap().parse().unwrap()
        };
        let (g0, g1) = (group_of(VF0), group_of(VF1));
        let set = sys::DEVICE_FEATURE_SET;
        // The initial token is vfio-pci's random one.
        assert_eq!(open(&k, g0, VF0), Err(Errno::ACCESS));
        assert_eq!(open(&k, g0, &std::format!("{VF0} vf_token={TOKEN_A}")), Err(Errno::ACCESS));
        assert_eq!(open(&k, g0, &std::format!("{VF0} verbose")), Err(Errno::INVAL));
        assert_eq!(open(&k, g0, &std::format!("{VF0}x")), Err(Errno::NODEV));
        // The PF's user sets it.
        let pf = open(&k, 7, PF).unwrap();
        assert_eq!(feature(&k, pf[0], set | super::FEATURE_PROBE, TOKEN_A), Ok(0));
        assert_eq!(feature(&k, pf[0], super::FEATURE_GET, TOKEN_A), Err(Errno::INVAL));
        assert_eq!(feature(&k, pf[0], 0, TOKEN_A), Err(Errno::INVAL));
        assert_eq!(feature(&k, pf[0], set | 1, TOKEN_A), Err(Errno::NOTTY));
        assert_eq!(feature(&k, pf[0], set, TOKEN_A), Ok(0));
        assert_eq!(k.vf_token(PF).unwrap().to_string(), TOKEN_A);
        let vf0 = open(&k, g0, &std::format!("{VF0}  vf_token={TOKEN_A}")).unwrap();
        assert_eq!(feature(&k, vf0[0], set, TOKEN_A), Err(Errno::NOTTY));
        assert_eq!(open(&k, g1, &std::format!("{VF1} vf_token={TOKEN_B}")), Err(Errno::ACCESS));
        // A PF whose VFs are in use opens only with their token.
        let name = |t: &str| std::format!("{PF} vf_token={t}");
        shut(&k, pf);
        assert_eq!(open(&k, 7, PF), Err(Errno::ACCESS));
        assert_eq!(open(&k, 7, &name(TOKEN_B)), Err(Errno::ACCESS));
        let pf = open(&k, 7, &name(TOKEN_A)).unwrap();
        shut(&k, pf);
        shut(&k, vf0);
        // Without VF users, a PF opened with a token takes it.
        let pf = open(&k, 7, &name(TOKEN_B)).unwrap();
        assert_eq!(k.vf_token(PF).unwrap().to_string(), TOKEN_B);
        shut(&k, pf);
        // A device that is neither: a token is refused.
        assert_eq!(open(&k, 3, &std::format!("{EDU} vf_token={TOKEN_A}")), Err(Errno::INVAL));
        let edu = open(&k, 3, EDU).unwrap();
        assert_eq!(feature(&k, edu[0], set, TOKEN_A), Err(Errno::NOTTY));
        shut(&k, edu);
        // The VF of a PF on another driver: no token, and none accepted.
        k.bind(0, Some("nvme"));
        assert_eq!(open(&k, g1, &std::format!("{VF1} vf_token={TOKEN_B}")), Err(Errno::INVAL));
        let vf1 = open(&k, g1, VF1).unwrap();
        shut(&k, vf1);
        assert_eq!(k.open_fds(), 0);
    }
}
