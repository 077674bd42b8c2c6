//! The sysfs attributes binding uses, modelled on Linux's driver core:
//! `driver_override`, `driver/unbind`, `drivers/DRIVER/{bind,unbind}`,
//! `drivers_probe`, and the directories `status` lists.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use rustix::io::Errno;

use super::model::State;
use crate::name::Bus;

fn bus_named(name: &str) -> Option<Bus> {
    match name {
        "pci" => Some(Bus::Pci),
        "platform" => Some(Bus::Platform),
        _ => None,
    }
}

/// What a sysfs path under `/sys/bus/BUS/` or `/sys/kernel/iommu_groups/` names.
enum Node<'a> {
    /// `/sys/bus/BUS/devices`
    Devices(Bus),
    /// `/sys/bus/BUS/devices/NAME/REST` (REST may be empty)
    Device(Bus, &'a str, &'a str),
    /// `/sys/bus/BUS/drivers`
    Drivers(Bus),
    /// `/sys/bus/BUS/drivers/DRIVER/REST` (REST may be empty)
    Driver(Bus, &'a str, &'a str),
    /// `/sys/bus/BUS/drivers_probe`
    DriversProbe(Bus),
    /// `/sys/kernel/iommu_groups`
    Groups,
    /// `/sys/kernel/iommu_groups/N/devices`
    GroupDevices(u32),
    /// `/sys/kernel/iommu_groups/N/devices/NAME/REST` (REST may be empty)
    GroupDevice(u32, &'a str, &'a str),
}

fn split(path: &str) -> (&str, &str) {
    match path.split_once('/') {
        Some((head, rest)) => (head, rest),
        None => (path, ""),
    }
}

fn parse(path: &str) -> Option<Node<'_>> {
    if let Some(rest) = path.strip_prefix("/sys/bus/") {
        let (bus, rest) = split(rest);
        let bus = bus_named(bus)?;
        let (dir, rest) = split(rest);
        return match (dir, rest) {
            ("devices", "") => Some(Node::Devices(bus)),
            ("devices", rest) => {
                let (name, rest) = split(rest);
                Some(Node::Device(bus, name, rest))
            }
            ("drivers", "") => Some(Node::Drivers(bus)),
            ("drivers", rest) => {
                let (name, rest) = split(rest);
                Some(Node::Driver(bus, name, rest))
            }
            ("drivers_probe", "") => Some(Node::DriversProbe(bus)),
            _ => None,
        };
    }
    let rest = path.strip_prefix("/sys/kernel/iommu_groups")?;
    if rest.is_empty() {
        return Some(Node::Groups);
    }
    let (number, rest) = split(rest.strip_prefix('/')?);
    let number: u32 = number.parse().ok()?;
    let (dir, rest) = split(rest);
    match (dir, rest) {
        ("devices", "") => Some(Node::GroupDevices(number)),
        ("devices", rest) => {
            let (name, rest) = split(rest);
            Some(Node::GroupDevice(number, name, rest))
        }
        _ => None,
    }
}

/// The value written to an attribute, without its trailing newline.
fn value(data: &[u8]) -> Result<&str, Errno> {
    let text = core::str::from_utf8(data).map_err(|_| Errno::INVAL)?;
    Ok(text.strip_suffix('\n').unwrap_or(text))
}

impl State {
    fn device_on(&self, bus: Bus, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.bus == bus && d.name == name)
    }

    pub(super) fn driver_loaded(&self, bus: Bus, driver: &str) -> bool {
        self.drivers.iter().any(|(b, d)| *b == bus && d == driver)
    }

    /// Whether `driver` would take device `index`: its override names it, or
    /// there is no override and it is the device's default driver.
    fn matches(&self, index: usize, driver: &str) -> bool {
        let sysfs = &self.sysfs[index];
        match &sysfs.driver_override {
            Some(o) => o == driver,
            None => sysfs.default_driver.as_deref() == Some(driver),
        }
    }

    /// Binds device `index` to `driver` if the driver is loaded, matches it,
    /// and its probe succeeds; returns whether it did.
    fn try_attach(&mut self, index: usize, driver: &str) -> bool {
        let bus = self.devices[index].bus;
        if !self.driver_loaded(bus, driver)
            || !self.matches(index, driver)
            || self.sysfs[index].refused.as_deref() == Some(driver)
        {
            return false;
        }
        self.devices[index].driver = Some(driver.to_string());
        true
    }

    /// Unbinds device `index` (EBUSY when it is in use or open through VFIO).
    fn detach_driver(&mut self, index: usize) -> Result<(), Errno> {
        if self.sysfs[index].in_use || self.device_open(index) {
            return Err(Errno::BUSY);
        }
        self.devices[index].driver = None;
        Ok(())
    }

    /// Adds a device's sysfs state: a device bound to a VFIO driver was bound
    /// through `driver_override`; one bound to another driver has it as its
    /// default driver. Both drivers count as loaded.
    pub(super) fn add_sysfs(&mut self, index: usize) {
        let device = &self.devices[index];
        let (bus, driver) = (device.bus, device.driver.clone());
        let mut sysfs = super::model::DeviceSysfs::default();
        if let Some(driver) = driver {
            if device.bound_to_vfio() {
                sysfs.driver_override = Some(driver.clone());
            } else {
                sysfs.default_driver = Some(driver.clone());
            }
            if !self.driver_loaded(bus, &driver) {
                self.drivers.push((bus, driver));
            }
        }
        match self.sysfs.get_mut(index) {
            Some(slot) => *slot = sysfs,
            None => self.sysfs.push(sysfs),
        }
    }

    /// `write(path, data)` on a sysfs attribute.
    pub(super) fn write_sysfs(&mut self, path: &str, data: &[u8]) -> Result<usize, Errno> {
        let text = value(data)?;
        if let Some(written) = self.write_sriov(path, text) {
            return written.map(|()| data.len());
        }
        match parse(path).ok_or(Errno::NOENT)? {
            Node::Device(bus, name, "driver_override") => {
                let index = self.device_on(bus, name).ok_or(Errno::NOENT)?;
                self.sysfs[index].driver_override = (!text.is_empty()).then(|| text.to_string());
            }
            Node::Device(bus, name, "driver/unbind") => {
                let index = self.device_on(bus, name).ok_or(Errno::NOENT)?;
                if self.devices[index].driver.is_none() {
                    return Err(Errno::NOENT);
                }
                if text != name {
                    return Err(Errno::NODEV);
                }
                self.detach_driver(index)?;
            }
            Node::Driver(bus, driver, "unbind") => {
                if !self.driver_loaded(bus, driver) {
                    return Err(Errno::NOENT);
                }
                let index = self.device_on(bus, text).ok_or(Errno::NODEV)?;
                if self.devices[index].driver.as_deref() != Some(driver) {
                    return Err(Errno::NODEV);
                }
                self.detach_driver(index)?;
            }
            Node::Driver(bus, driver, "bind") => {
                if !self.driver_loaded(bus, driver) {
                    return Err(Errno::NOENT);
                }
                let index = self.device_on(bus, text).ok_or(Errno::NODEV)?;
                if self.devices[index].driver.is_some() {
                    return Err(Errno::BUSY);
                }
                if !self.try_attach(index, driver) {
                    return Err(Errno::NODEV);
                }
            }
            Node::DriversProbe(bus) => {
                let index = self.device_on(bus, text).ok_or(Errno::NODEV)?;
                if self.devices[index].driver.is_none() {
                    let candidate = {
                        let s = &self.sysfs[index];
                        s.driver_override.clone().or_else(|| s.default_driver.clone())
                    };
                    // No driver taking it is not an error (as in Linux).
                    if let Some(candidate) = candidate {
                        self.try_attach(index, &candidate);
                    }
                }
            }
            Node::Device(bus, name, _) => {
                self.device_on(bus, name).ok_or(Errno::NOENT)?;
                return Err(Errno::ACCESS);
            }
            _ => return Err(Errno::NOENT),
        }
        Ok(data.len())
    }

    /// The contents of a sysfs attribute.
    pub(super) fn read_sysfs(&self, path: &str) -> Result<String, Errno> {
        if let Some(text) = self.read_sriov(path) {
            return text;
        }
        match parse(path).ok_or(Errno::NOENT)? {
            Node::Device(bus, name, "driver_override") => {
                let index = self.device_on(bus, name).ok_or(Errno::NOENT)?;
                Ok(format!("{}\n", self.sysfs[index].driver_override.as_deref().unwrap_or("(null)")))
            }
            Node::Device(bus, name, rest) if rest.starts_with("vfio-dev/") => {
                let index = self.device_on(bus, name).ok_or(Errno::NOENT)?;
                self.cdev_node_numbers(index, &rest["vfio-dev/".len()..])
            }
            _ => Err(Errno::NOENT),
        }
    }

    /// The entry names of a sysfs directory.
    pub(super) fn list_sysfs(&self, path: &str) -> Result<Vec<String>, Errno> {
        match parse(path).ok_or(Errno::NOENT)? {
            // A removed VF's slot is nameless.
            Node::Devices(bus) => {
                Ok(self.devices.iter().filter(|d| d.bus == bus && !d.name.is_empty()).map(|d| d.name.clone()).collect())
            }
            Node::Drivers(bus) => Ok(self.drivers.iter().filter(|(b, _)| *b == bus).map(|(_, d)| d.clone()).collect()),
            Node::Driver(bus, driver, "") => {
                if !self.driver_loaded(bus, driver) {
                    return Err(Errno::NOENT);
                }
                let mut entries: Vec<String> = ["bind", "unbind", "uevent"].iter().map(|e| e.to_string()).collect();
                entries.extend(
                    self.devices
                        .iter()
                        .filter(|d| d.bus == bus && d.driver.as_deref() == Some(driver))
                        .map(|d| d.name.clone()),
                );
                Ok(entries)
            }
            Node::Groups => {
                let mut groups: Vec<u32> = self.devices.iter().filter_map(|d| d.group).collect();
                groups.sort_unstable();
                groups.dedup();
                Ok(groups.iter().map(u32::to_string).collect())
            }
            Node::GroupDevices(number) => {
                let members: Vec<String> =
                    self.devices.iter().filter(|d| d.group == Some(number)).map(|d| d.name.clone()).collect();
                if members.is_empty() {
                    return Err(Errno::NOENT);
                }
                Ok(members)
            }
            Node::Device(bus, name, "vfio-dev") => self.list_vfio_dev(self.device_on(bus, name).ok_or(Errno::NOENT)?),
            Node::Device(bus, name, "") => {
                let index = self.device_on(bus, name).ok_or(Errno::NOENT)?;
                let mut entries = self.sriov_entries(index, false);
                entries.extend(self.sriov_entries(index, true));
                Ok(entries)
            }
            _ => Err(Errno::NOENT),
        }
    }

    /// The target of a link under `/sys/kernel/iommu_groups/N/devices/`.
    pub(super) fn group_link(&self, path: &str) -> Option<String> {
        let Some(Node::GroupDevice(number, name, rest)) = parse(path) else { return None };
        let d = self.devices.iter().find(|d| d.group == Some(number) && d.name == name)?;
        match rest {
            "" => Some(format!("../../../../devices/fake/{name}")),
            "driver" => d.driver.as_ref().map(|drv| format!("../../../../bus/{}/drivers/{drv}", d.bus.sysfs_name())),
            _ => None,
        }
    }
}
