//! Binding against the fake kernel: `status` (and which devices matter for
//! VFIO), `bind`, `unbind`, every bad input's error, and the failure walk
//! (each system call of bind and unbind failing in turn leaves the device as
//! it was).

use core::ffi::CStr;
use core::ptr::NonNull;
use core::time::Duration;

use dao_vfio::bind::{self, DeviceStatus};
use dao_vfio::fake::{FakeDevice, FakeKernel};
use dao_vfio::kernel::{Emulation, NodeOwner, Protection, Request, Token};
use dao_vfio::{Bus, Context, Errno, Error, ErrorKind, Fd, Kernel, NameError, Step};

const EDU: &str = "0000:00:02.0";
const NIC: &str = "0000:00:03.0";
const BRIDGE: &str = "0000:00:04.0";
const RTC: &str = "9010000.pl031";
const GPIO: &str = "9030000.pl061";
const PCIE: &str = "4010000000.pcie";

/// edu unbound (as on the x86_64 board before init binds it), a NIC bound
/// to e1000e in group 4 with a bridge bound to pcieport, pl031 unbound,
/// pl061 bound to vfio-platform, and the PCIe host bridge without a group.
fn system() -> FakeKernel {
    let k = FakeKernel::new();
    k.add_device(FakeDevice::edu(EDU, 3).with_driver(None));
    k.add_device(FakeDevice::edu(NIC, 4).with_driver(Some("e1000e")));
    k.add_device(FakeDevice::edu(BRIDGE, 4).with_driver(Some("pcieport")));
    k.add_device(FakeDevice::platform(RTC, 0).with_driver(None));
    k.add_device(FakeDevice::platform(GPIO, 1));
    k.add_device(FakeDevice::platform(PCIE, 0).with_group(None).with_driver(Some("pci-host-generic")));
    k
}

/// What a failed call must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    driver: Option<String>,
    driver_override: Option<String>,
    fds: usize,
}

fn state(k: &FakeKernel, dev: &str) -> State {
    State { driver: k.driver(dev), driver_override: k.driver_override(dev), fds: k.open_fds() }
}

fn writes(k: &FakeKernel) -> usize {
    k.trace().iter().filter(|c| c.name == "write").count()
}

fn all_status(k: &FakeKernel) -> Result<Vec<DeviceStatus>, Error> {
    let mut out = Vec::new();
    bind::status(&k, &mut |d| out.push(*d))?;
    Ok(out)
}

#[test]
fn binds_an_unbound_pci_device_to_vfio_pci_and_back() {
    let k = system();
    let bound = bind::bind(&k, EDU, None, None).unwrap();
    assert_eq!(bound.bus, Bus::Pci);
    assert_eq!(bound.driver.as_str(), "vfio-pci");
    assert_eq!(bound.previous, None);
    assert!(bound.changed());
    assert_eq!(k.driver(EDU).as_deref(), Some("vfio-pci"));
    assert_eq!(k.driver_override(EDU).as_deref(), Some("vfio-pci"));
    assert_eq!(k.open_fds(), 0);
    // The group node appeared: the device can be set up.
    {
        let mut vfio: Context<&FakeKernel> = Context::with_kernel(&k).unwrap();
        let edu = vfio.setup(EDU).unwrap();
        // In use while open: neither unbind nor a rebind can take it.
        // A holder is named (the fake's /proc has one process, pid 1):
        // Linux would block the unbind until it lets go.
        let e = bind::unbind(&k, EDU, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeviceHeld { pid: 1 }, "{e}");
        assert!(e.to_string().contains("process 1 holds the device"), "{e}");
        let mut holders = Vec::new();
        bind::holders(&k, EDU, None, &mut |pid| holders.push(pid)).unwrap();
        assert_eq!(holders, [1]);
        assert!(matches!(bind::bind(&k, EDU, None, Some("e1000e")).unwrap_err().kind(), ErrorKind::DeviceHeld { .. }));
        // Asked to wait, the fake (which never blocks) says EBUSY instead.
        let e = bind::unbind_wait(&k, EDU, None).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::DeviceBusy { bus: Bus::Pci, .. }), "{e}");
        assert_eq!(k.driver(EDU).as_deref(), Some("vfio-pci"));
        vfio.free(edu).unwrap();
    }
    let unbound = bind::unbind(&k, EDU, None).unwrap();
    assert_eq!(unbound.bus, Bus::Pci);
    assert_eq!(unbound.previous.map(|d| d.as_str().to_string()).as_deref(), Some("vfio-pci"));
    assert_eq!(unbound.now, None, "edu has no driver of its own");
    assert_eq!((k.driver(EDU), k.driver_override(EDU)), (None, None));
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn binding_is_idempotent() {
    let k = system();
    bind::bind(&k, EDU, Some(Bus::Pci), None).unwrap();
    let before = writes(&k);
    let again = bind::bind(&k, EDU, None, Some("vfio-pci")).unwrap();
    assert!(!again.changed());
    assert_eq!(again.previous, Some(again.driver));
    assert_eq!(writes(&k), before, "nothing written when already bound");
    let pl061 = bind::bind(&k, GPIO, None, None).unwrap();
    assert!(!pl061.changed());
}

#[test]
fn takes_a_device_from_its_driver_and_gives_it_back() {
    let k = system();
    let bound = bind::bind(&k, NIC, None, None).unwrap();
    assert_eq!(bound.previous.map(|d| d.as_str().to_string()).as_deref(), Some("e1000e"));
    assert_eq!(k.driver(NIC).as_deref(), Some("vfio-pci"));
    let unbound = bind::unbind(&k, NIC, Some(Bus::Pci)).unwrap();
    assert_eq!(unbound.now.map(|d| d.as_str().to_string()).as_deref(), Some("e1000e"));
    assert_eq!(k.driver(NIC).as_deref(), Some("e1000e"));
    assert_eq!(k.driver_override(NIC), None);
}

#[test]
fn binds_platform_devices_through_the_drivers_bind_file() {
    let k = system();
    let bound = bind::bind(&k, RTC, None, None).unwrap();
    assert_eq!(bound.bus, Bus::Platform);
    assert_eq!(bound.driver.as_str(), "vfio-platform");
    assert!(k.trace().iter().any(|c| c.name == "write"));
    assert_eq!(k.driver(RTC).as_deref(), Some("vfio-platform"));
    let mut vfio: Context<&FakeKernel> = Context::with_kernel(&k).unwrap();
    let rtc = vfio.setup(RTC).unwrap();
    vfio.free(rtc).unwrap();
    drop(vfio);
    let unbound = bind::unbind(&k, RTC, Some(Bus::Platform)).unwrap();
    assert_eq!(unbound.now, None);
    assert_eq!((k.driver(RTC), k.driver_override(RTC)), (None, None));
}

#[test]
fn binds_to_a_named_driver() {
    let k = system();
    k.set_driver_loaded(Bus::Pci, "uio_pci_generic", true);
    let bound = bind::bind(&k, EDU, None, Some("uio_pci_generic")).unwrap();
    assert_eq!(bound.driver.as_str(), "uio_pci_generic");
    assert_eq!(k.driver(EDU).as_deref(), Some("uio_pci_generic"));
    // From one override to another.
    bind::bind(&k, EDU, None, None).unwrap();
    assert_eq!(k.driver(EDU).as_deref(), Some("vfio-pci"));
}

#[test]
fn refuses_bad_names_before_any_system_call() {
    let k = system();
    let cases: [(&str, Option<&str>, ErrorKind); 6] = [
        ("", None, ErrorKind::InvalidName(NameError::Empty)),
        ("../x", None, ErrorKind::InvalidName(NameError::Slash)),
        (&"a".repeat(64), None, ErrorKind::InvalidName(NameError::TooLong(64))),
        (EDU, Some(""), ErrorKind::InvalidDriverName(NameError::Empty)),
        (EDU, Some("../vfio-pci"), ErrorKind::InvalidDriverName(NameError::Slash)),
        (EDU, Some(&"d".repeat(256)), ErrorKind::InvalidDriverName(NameError::TooLong(256))),
    ];
    for (name, driver, kind) in cases {
        assert_eq!(bind::bind(&k, name, None, driver).unwrap_err().kind(), kind, "{name:?} {driver:?}");
    }
    assert_eq!(bind::unbind(&k, "..", None).unwrap_err().kind(), ErrorKind::InvalidName(NameError::Dot));
    assert_eq!(k.calls(), 0);
    let e = bind::bind(&k, EDU, None, Some("a b")).unwrap_err();
    assert!(e.to_string().contains("driver name"), "{e}");
}

#[test]
fn missing_device() {
    let k = system();
    let e = bind::bind(&k, "0000:00:09.0", None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchDevice { bus: None });
    assert_eq!(e.device(), Some("0000:00:09.0"));
    let e = bind::bind(&k, RTC, Some(Bus::Pci), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchDevice { bus: Some(Bus::Pci) });
    assert!(e.to_string().contains("/sys/bus/pci/devices/9010000.pl031 does not exist"), "{e}");
    let e = bind::unbind(&k, "nothing", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchDevice { bus: None });
    assert_eq!(writes(&k), 0);
}

#[test]
fn missing_module() {
    let k = system();
    k.set_driver_loaded(Bus::Pci, "vfio-pci", false);
    let e = bind::bind(&k, NIC, None, None).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DriverMissing { bus: Bus::Pci, driver } if driver.as_str() == "vfio-pci"));
    let text = e.to_string();
    assert!(text.contains("modprobe vfio-pci"), "{text}");
    assert!(text.contains("/sys/bus/pci/drivers/vfio-pci does not exist"), "{text}");
    assert_eq!(k.driver(NIC).as_deref(), Some("e1000e"), "nothing was touched");
    assert_eq!(writes(&k), 0);

    k.set_driver_loaded(Bus::Platform, "vfio-platform", false);
    assert_eq!(k.driver(GPIO), None, "unloading unbinds");
    let e = bind::bind(&k, RTC, None, None).unwrap_err();
    assert!(e.to_string().contains("modprobe vfio-platform"), "{e}");
    let e = bind::bind(&k, RTC, None, Some("nosuch")).unwrap_err();
    assert!(e.to_string().contains("modprobe nosuch"), "{e}");
}

#[test]
fn device_in_use() {
    let k = system();
    k.set_in_use(NIC, true);
    let before = state(&k, NIC);
    let e = bind::bind(&k, NIC, None, None).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DeviceBusy { bus: Bus::Pci, driver } if driver.as_str() == "e1000e"));
    assert_eq!(e.errno(), Some(Errno::BUSY));
    assert!(e.to_string().contains("in use"), "{e}");
    assert_eq!(state(&k, NIC), before);
    let e = bind::unbind(&k, NIC, None).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DeviceBusy { .. }));
    assert_eq!(state(&k, NIC), before);
    k.set_in_use(NIC, false);
    bind::bind(&k, NIC, None, None).unwrap();
}

#[test]
fn a_driver_that_refuses_the_device_is_reported_and_undone() {
    let k = system();
    k.set_probe_refused(NIC, Some("vfio-pci"));
    let before = state(&k, NIC);
    let e = bind::bind(&k, NIC, None, None).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::BindFailed { bus: Bus::Pci, driver } if driver.as_str() == "vfio-pci"));
    assert!(e.to_string().contains("vfio-pci did not take the device"), "{e}");
    assert_eq!(state(&k, NIC), before, "e1000e has it back");

    k.set_probe_refused(RTC, Some("vfio-platform"));
    let before = state(&k, RTC);
    let e = bind::bind(&k, RTC, None, None).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::BindFailed { bus: Bus::Platform, .. }), "{e}");
    assert_eq!(e.errno(), Some(Errno::NODEV));
    assert_eq!(state(&k, RTC), before);
}

/// Regression (issue 17.6): driver names were kept in 31 bytes, so a longer
/// original driver or `driver_override` was put back cut short, leaving the
/// device unbound.
#[test]
fn long_driver_names_are_put_back_whole() {
    // 255 bytes: the longest name sysfs can address (NAME_MAX).
    let longest = format!("{}-driver", "x".repeat(dao_vfio::MAX_DRIVER_LEN - 7));
    let forty = "a-driver-whose-name-is-forty-bytes-long!".replace('!', "x");
    assert_eq!((longest.len(), forty.len()), (255, 40));
    for original in [forty.as_str(), longest.as_str()] {
        let k = FakeKernel::new();
        k.add_device(FakeDevice::edu(NIC, 4).with_driver(Some(original)));
        // vfio-pci refuses the device: bind restores the original driver, whole.
        k.set_probe_refused(NIC, Some("vfio-pci"));
        let before = state(&k, NIC);
        let e = bind::bind(&k, NIC, None, None).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::BindFailed { .. }), "{e}");
        assert_eq!(state(&k, NIC), before, "{original} has the device back");
        k.set_probe_refused(NIC, None);

        // Taken from it and given back: `previous` holds the whole name.
        let bound = bind::bind(&k, NIC, None, None).unwrap();
        assert_eq!(bound.previous.unwrap().as_str(), original);
        k.set_default_driver(NIC, Some(original));
        bind::unbind(&k, NIC, None).unwrap();
        assert_eq!(k.driver(NIC).as_deref(), Some(original));

        // A driver_override naming it is restored whole after a failed bind.
        k.bind(0, None);
        bind::bind(&k, NIC, None, Some(original)).unwrap();
        assert_eq!(k.driver_override(NIC).as_deref(), Some(original));
        k.set_probe_refused(NIC, Some("vfio-pci"));
        bind::bind(&k, NIC, None, None).unwrap_err();
        assert_eq!(k.driver_override(NIC).as_deref(), Some(original));
        assert_eq!(k.driver(NIC).as_deref(), Some(original));

        // An error carries a label: cut to its first bytes and marked so.
        let mut vfio: Context<&FakeKernel> = Context::with_kernel(&k).unwrap();
        let e = vfio.setup(NIC).unwrap_err();
        let ErrorKind::WrongDriver { driver, .. } = e.kind() else { panic!("{e}") };
        assert_eq!(driver.is_cut(), original.len() > dao_vfio::LABEL_LEN);
        assert!(original.starts_with(driver.as_str()));
        assert!(e.to_string().contains(&format!("bound to {driver}")), "{e}");
        drop(vfio);
        assert_eq!(k.open_fds(), 0);
    }
    assert!(std::mem::size_of::<Error>() <= 128, "errors stay small: {}", std::mem::size_of::<Error>());
}

#[test]
fn status_lists_drivers_groups_and_blockers() {
    let k = system();
    bind::bind(&k, NIC, None, None).unwrap();
    let all = all_status(&k).unwrap();
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, [EDU, NIC, BRIDGE, RTC, GPIO, PCIE], "PCI first, then platform");
    let get = |n: &str| *all.iter().find(|d| d.name.as_str() == n).unwrap();
    let driver = |n: &str| get(n).driver.map(|d| d.as_str().to_string());

    let edu = get(EDU);
    assert_eq!((edu.bus, driver(EDU), edu.group, edu.ready, edu.blockers), (Bus::Pci, None, Some(3), false, 0));
    // The NIC is bound to vfio-pci, but the bridge in its group blocks it.
    let nic = get(NIC);
    assert_eq!((driver(NIC).as_deref(), nic.group, nic.ready, nic.blockers), (Some("vfio-pci"), Some(4), true, 1));
    {
        let mut vfio: Context<&FakeKernel> = Context::with_kernel(&k).unwrap();
        // The message names the device that blocks it, and its driver.
        let e = vfio.setup(NIC).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::GroupNotViable { group: 4, blocker: Some(b) } if b.device() == "0000:00:04.0" && b.driver() == "pcieport"),
            "{e}"
        );
        assert!(e.to_string().contains("0000:00:04.0 is in it and bound to pcieport"), "{e}");
    }
    let bridge = get(BRIDGE);
    assert_eq!((driver(BRIDGE).as_deref(), bridge.ready, bridge.blockers), (Some("pcieport"), false, 0));
    let gpio = get(GPIO);
    assert_eq!(
        (gpio.bus, driver(GPIO).as_deref(), gpio.ready, gpio.blockers),
        (Bus::Platform, Some("vfio-platform"), true, 0)
    );
    let pcie = get(PCIE);
    assert_eq!((driver(PCIE).as_deref(), pcie.group, pcie.ready), (Some("pci-host-generic"), None, false));

    // Freeing the group: the bridge unbound, the NIC is ready and viable.
    bind::unbind(&k, BRIDGE, None).unwrap();
    assert_eq!(k.driver(BRIDGE).as_deref(), Some("pcieport"), "its default driver takes it back");
    bind::bind(&k, BRIDGE, None, None).unwrap();
    let all = all_status(&k).unwrap();
    assert!(all.iter().filter(|d| d.group == Some(4)).all(|d| d.ready && d.blockers == 0));
    let mut vfio: Context<&FakeKernel> = Context::with_kernel(&k).unwrap();
    let nic = vfio.setup(NIC).unwrap();
    vfio.free(nic).unwrap();
}

#[test]
fn status_of_an_empty_system_and_its_failures() {
    let k = FakeKernel::new();
    assert!(all_status(&k).unwrap().is_empty());

    let k = system();
    let calls = {
        let before = k.calls();
        all_status(&k).unwrap();
        k.calls() - before
    };
    for n in 1..=calls {
        k.fail_call(n, Errno::IO);
        let e = all_status(&k).unwrap_err();
        assert!(!k.failure_pending());
        assert_eq!(e.errno(), Some(Errno::IO), "call {n}");
        assert!(
            matches!(e.kind(), ErrorKind::Syscall(Step::ListSysfs | Step::ReadSysfs | Step::ReadSysfsFile)),
            "call {n}: {e}"
        );
    }
}

/// The fake kernel, plus a device tree: platform devices named in `reg` have
/// an `of_node/reg` property (MMIO registers), which the fake's sysfs lacks.
struct WithDeviceTree<'a> {
    fake: &'a FakeKernel,
    reg: &'a [&'a str],
}

impl WithDeviceTree<'_> {
    fn has_reg(&self, path: &CStr) -> bool {
        let path = path.to_str().unwrap();
        self.reg.iter().any(|n| path == format!("/sys/bus/platform/devices/{n}/of_node/reg"))
    }
}

// SAFETY: forwards every call to the fake kernel, whose contract it inherits;
// only reads of `of_node/reg` are answered here, from memory.
unsafe impl Kernel for WithDeviceTree<'_> {
    fn open(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        self.fake.open(t, path)
    }
    fn close(&self, t: &Token, fd: Fd) {
        self.fake.close(t, fd)
    }
    fn ioctl(&self, t: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        self.fake.ioctl(t, fd, request)
    }
    fn mmap(&self, t: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        self.fake.mmap(t, fd, offset, len, prot)
    }
    fn emulation(&self, t: &Token) -> Option<Emulation> {
        self.fake.emulation(t)
    }
    unsafe fn munmap(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        // SAFETY: forwarded from this function's contract (the mapping is the fake's).
        unsafe { self.fake.munmap(t, addr, len) }
    }
    fn pread(&self, t: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.fake.pread(t, fd, buf, offset)
    }
    fn pwrite(&self, t: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        self.fake.pwrite(t, fd, buf, offset)
    }
    fn readlink<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        self.fake.readlink(t, path, buf)
    }
    fn exists_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<(), Errno> {
        self.fake.exists_at(t, dir, path)
    }
    fn open_dir_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno> {
        self.fake.open_dir_at(t, dir, path)
    }
    fn open_dir(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        self.fake.open_dir(t, path)
    }
    fn list_open_dir_while(&self, t: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        self.fake.list_open_dir_while(t, dir, visit)
    }
    fn eventfd(&self, t: &Token) -> Result<Fd, Errno> {
        self.fake.eventfd(t)
    }
    fn read_counter(&self, t: &Token, fd: Fd, wait: bool) -> Result<u64, Errno> {
        self.fake.read_counter(t, fd, wait)
    }
    fn poll_readable(&self, t: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno> {
        self.fake.poll_readable(t, fd, timeout)
    }
    fn map_anonymous(&self, t: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno> {
        self.fake.map_anonymous(t, len, huge_pages)
    }
    fn lock(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        self.fake.lock(t, addr, len)
    }
    fn write_file(&self, t: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno> {
        self.fake.write_file(t, path, data)
    }
    fn read_file<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        if !self.has_reg(path) {
            return self.fake.read_file(t, path, buf);
        }
        // reg = <0x0 0x9010000 0x0 0x1000>, big-endian cells, as Linux shows it.
        let reg = [0u32, 0x901_0000, 0, 0x1000].map(u32::to_be_bytes).concat();
        let n = reg.len().min(buf.len());
        buf[..n].copy_from_slice(&reg[..n]);
        Ok(&buf[..n])
    }
    fn list_dir_while(&self, t: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        self.fake.list_dir_while(t, path, visit)
    }
    fn memlock_limit(&self, t: &Token) -> Option<u64> {
        Kernel::memlock_limit(self.fake, t)
    }
    fn node_owner(&self, t: &Token, path: &CStr) -> Result<NodeOwner, Errno> {
        Kernel::node_owner(self.fake, t, path)
    }
    fn chown(&self, t: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        Kernel::chown(self.fake, t, path, uid, gid)
    }
    fn read_file_at<'b>(&self, t: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        self.fake.read_file_at(t, path, offset, buf)
    }
}

#[test]
fn status_for_vfio_shows_bound_grouped_and_mmio_devices_only() {
    const SATA: &str = "0000:00:05.0";
    const UART: &str = "9000000.pl011";
    const TIMER: &str = "alarmtimer.0.auto";
    let k = FakeKernel::new();
    k.add_device(FakeDevice::edu(EDU, 3).with_driver(None)); // in a group: bindable
    k.add_device(FakeDevice::edu(SATA, 0).with_group(None).with_driver(Some("ahci"))); // no IOMMU
    k.add_device(FakeDevice::platform(RTC, 0).with_group(None).with_driver(None)); // MMIO, unbound
    k.add_device(FakeDevice::platform(UART, 0).with_group(None).with_driver(Some("uart-pl011"))); // MMIO
    k.add_device(FakeDevice::platform(GPIO, 1)); // bound to vfio-platform
    k.add_device(FakeDevice::platform(TIMER, 0).with_group(None).with_driver(Some("alarmtimer"))); // no MMIO
    let dt = WithDeviceTree { fake: &k, reg: &[RTC, UART] };
    let names = |all: bool| {
        let mut out = Vec::new();
        let list = if all { bind::status::<WithDeviceTree> } else { bind::status_for_vfio::<WithDeviceTree> };
        list(&dt, &mut |d| out.push((d.name.as_str().to_string(), d.mmio, d.matters_for_vfio()))).unwrap();
        out
    };
    let shown = names(false);
    let expect = |n: &str, mmio: bool| (n.to_string(), mmio, true);
    assert_eq!(shown, [expect(EDU, false), expect(RTC, true), expect(UART, true), expect(GPIO, false)]);
    // --all: every device, the others marked as not mattering.
    let all = names(true);
    let hidden: Vec<&str> = all.iter().filter(|d| !d.2).map(|d| d.0.as_str()).collect();
    assert_eq!(hidden, [SATA, TIMER]);
    assert_eq!(all.len(), 6);
    // Without a device tree (ACPI systems) platform devices show no MMIO:
    // only the bound and grouped ones matter.
    let mut plain = Vec::new();
    bind::status_for_vfio(&k, &mut |d| plain.push(d.name.as_str().to_string())).unwrap();
    assert_eq!(plain, [EDU, GPIO]);

    // Bound to a VFIO driver matters even without a group; a group or MMIO
    // registers make any device matter.
    let mut statuses = Vec::new();
    bind::status(&dt, &mut |d| statuses.push(*d)).unwrap();
    let get = |n: &str| *statuses.iter().find(|d| d.name.as_str() == n).unwrap();
    let (gpio, timer) = (get(GPIO), get(TIMER));
    assert!(DeviceStatus { group: None, ..gpio }.matters_for_vfio());
    assert!(DeviceStatus { group: Some(7), ..timer }.matters_for_vfio());
    assert!(DeviceStatus { mmio: true, ..timer }.matters_for_vfio());
    assert!(!timer.matters_for_vfio());
    assert!(!DeviceStatus { driver: None, ..timer }.matters_for_vfio());
}

/// Runs `op` on a fresh system with system call `n` failing, for every `n`
/// until `op` makes fewer calls than that: each failure must be reported and
/// leave `dev` as it was. Returns how many calls the successful run made.
fn failure_walk(dev: &str, prepare: impl Fn(&FakeKernel), op: impl Fn(&FakeKernel) -> Result<(), Error>) -> u64 {
    for n in 1.. {
        let k = system();
        prepare(&k);
        let before = state(&k, dev);
        let start = k.calls();
        k.fail_call(n, Errno::IO);
        let result = op(&k);
        if k.failure_pending() {
            assert!(result.is_ok(), "{dev}: no failure injected, yet {:?}", result.err());
            return k.calls() - start;
        }
        let e = result.expect_err(&format!(
            "{dev}: call {n} ({}) failed but the operation succeeded",
            k.trace()[(start + n - 1) as usize].name
        ));
        assert_eq!(e.device(), Some(dev));
        assert_eq!(state(&k, dev), before, "{dev}: call {n} failed: {e}; trace {:?}", &k.trace()[start as usize..]);
        assert_eq!(k.bad_closes(), 0);
    }
    unreachable!()
}

#[test]
fn failure_walk_of_bind_and_unbind() {
    let none = |_: &FakeKernel| {};
    let to_vfio = |k: &FakeKernel| {
        bind::bind(k, NIC, None, None).unwrap();
        bind::bind(k, RTC, None, None).unwrap();
    };
    // PCI: from e1000e (unbind, override, drivers_probe, check) and from no driver.
    let calls = failure_walk(NIC, none, |k| bind::bind(k, NIC, None, None).map(drop));
    assert_eq!(calls, 8, "find bus, driver dir, driver, override read, unbind, override, probe, check");
    failure_walk(EDU, none, |k| bind::bind(k, EDU, None, None).map(drop));
    // Platform: through vfio-platform's bind file, the bus found after PCI.
    failure_walk(RTC, none, |k| bind::bind(k, RTC, None, None).map(drop));
    failure_walk(RTC, none, |k| bind::bind(k, RTC, Some(Bus::Platform), Some("vfio-platform")).map(drop));
    // Unbind: back to e1000e, and to no driver.
    let calls = failure_walk(NIC, to_vfio, |k| bind::unbind(k, NIC, None).map(drop));
    assert_eq!(
        calls, 11,
        "find bus, driver, its group, its cdev, /proc, /proc/1/fd, override read, unbind, override, probe, driver"
    );
    failure_walk(RTC, to_vfio, |k| bind::unbind(k, RTC, None).map(drop));
    failure_walk(EDU, none, |k| bind::unbind(k, EDU, None).map(drop));
}

#[test]
fn error_messages_say_what_to_do() {
    let k = system();
    k.set_in_use(NIC, true);
    let busy = bind::bind(&k, NIC, None, None).unwrap_err().to_string();
    assert!(busy.starts_with("0000:00:03.0: the device is in use: e1000e refused to release it"), "{busy}");
    assert!(busy.contains("[EBUSY"), "{busy}");
    k.set_driver_loaded(Bus::Platform, "vfio-platform", false);
    let missing = bind::bind(&k, RTC, None, None).unwrap_err().to_string();
    assert!(missing.contains("reset_required=0"), "{missing}");
}

mod grant {
    //! `grant` and `revoke` (issue 14): exactly the nodes a device needs on
    //! the interfaces the kernel offers, users and groups from the account
    //! files, refused (changing nothing) when not run as root, and each
    //! system call failing in turn.

    use dao_vfio::fake::{FakeDevice, FakeKernel};
    use dao_vfio::grant::{self, Owner};
    use dao_vfio::kernel::NodeOwner;
    use dao_vfio::{DevNode, Errno, ErrorKind, Step};

    const EDU: &str = "0000:00:02.0";
    const EDU2: &str = "0000:00:03.0";
    const RTC: &str = "9010000.pl031";
    const NODES: [&str; 5] =
        ["/dev/vfio/3", "/dev/vfio/4", "/dev/iommu", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"];

    fn system(iommufd: bool) -> FakeKernel {
        let k = FakeKernel::new();
        k.set_iommufd(iommufd, iommufd);
        k.add_device(FakeDevice::edu(EDU, 3));
        k.add_device(FakeDevice::edu(EDU2, 4));
        k.add_device(FakeDevice::platform(RTC, 0));
        k.set_file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndao:x:1000:1001:dao:/home/dao:/bin/sh\n");
        k.set_file("/etc/group", "root:x:0:\nvfio:x:2000:dao\n");
        k
    }

    fn owners(k: &FakeKernel) -> Vec<Option<(u32, u32)>> {
        NODES.iter().map(|n| k.node_owner(n).map(|o| (o.uid, o.gid))).collect()
    }

    #[test]
    fn grants_exactly_the_nodes_of_each_interface_and_revokes_them() {
        let k = system(true);
        let owner = grant::parse_owner(&k, "dao").unwrap();
        assert_eq!(owner, Owner { uid: 1000, gid: Some(1001) });
        let nodes = grant::grant(&k, EDU, None, owner).unwrap();
        assert_eq!(nodes.iter().collect::<Vec<_>>(), [DevNode::Group(3), DevNode::Iommufd, DevNode::Cdev(0)]);
        assert_eq!(nodes.container, Some(NodeOwner { uid: 0, gid: 0, mode: 0o666 }), "shared, not changed");
        let mine = Some((1000, 1001));
        let root = Some((0, 0));
        assert_eq!(owners(&k), [mine, root, mine, mine, root], "edu's nodes only (EDU2 is in group 4, vfio1)");
        assert_eq!(k.node_owner("/dev/vfio/vfio").unwrap().uid, 0);
        // A second device: /dev/iommu stays while either is granted.
        grant::grant(&k, EDU2, None, owner).unwrap();
        let nodes = grant::revoke(&k, EDU, None).unwrap();
        assert_eq!(nodes.iter().collect::<Vec<_>>(), [DevNode::Group(3), DevNode::Cdev(0)], "/dev/iommu kept");
        assert_eq!(owners(&k), [Some((0, 0)), mine, mine, Some((0, 0)), mine]);
        grant::revoke(&k, EDU2, None).unwrap();
        assert!(owners(&k).iter().flatten().all(|&o| o == (0, 0)), "{:?}", owners(&k));
    }

    #[test]
    fn the_legacy_interface_needs_the_group_node_and_noiommu_its_own() {
        let k = system(false);
        let nodes = grant::grant(&k, EDU, None, Owner { uid: 1000, gid: None }).unwrap();
        assert_eq!(nodes.iter().collect::<Vec<_>>(), [DevNode::Group(3)]);
        assert_eq!(k.node_owner("/dev/vfio/3").unwrap(), NodeOwner { uid: 1000, gid: 0, mode: 0o600 }, "group kept");
        let nodes = grant::grant(&k, RTC, None, Owner { uid: 1000, gid: None }).unwrap();
        assert_eq!(nodes.iter().collect::<Vec<_>>(), [DevNode::NoiommuGroup(0)]);
        assert_eq!(k.node_owner("/dev/vfio/noiommu-0").unwrap().uid, 1000);
    }

    #[test]
    fn a_noiommu_device_gets_its_group_node_only_beside_iommufd() {
        // Linux 6.12 lists a noiommu device under vfio-dev but gives it no
        // /dev/vfio/devices node: only its noiommu group opens it.
        let k = system(true);
        k.set_noiommu_mode(true);
        let nodes = grant::grant(&k, RTC, None, Owner { uid: 1000, gid: None }).unwrap();
        assert_eq!(nodes.iter().collect::<Vec<_>>(), [DevNode::NoiommuGroup(0)]);
        assert_eq!(k.node_owner("/dev/vfio/noiommu-0").unwrap().uid, 1000);
        assert_eq!(k.node_owner("/dev/iommu").unwrap().uid, 0, "not needed by a noiommu device");
        grant::revoke(&k, RTC, None).unwrap();
        assert_eq!(k.node_owner("/dev/vfio/noiommu-0").unwrap().uid, 0);
    }

    #[test]
    fn owners_are_numbers_or_names_from_the_account_files() {
        let k = system(false);
        let parse = |s: &str| grant::parse_owner(&k, s);
        assert_eq!(parse("1000").unwrap(), Owner { uid: 1000, gid: None });
        assert_eq!(parse("1000:7").unwrap(), Owner { uid: 1000, gid: Some(7) });
        assert_eq!(parse("dao:vfio").unwrap(), Owner { uid: 1000, gid: Some(2000) });
        assert_eq!(parse("root").unwrap(), Owner { uid: 0, gid: Some(0) });
        let e = parse("nobody").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::NoSuchUser { name } if name.as_str() == "nobody"), "{e}");
        assert!(e.to_string().contains("/etc/passwd"), "{e}");
        let e = parse("dao:wheel").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::NoSuchGroup { name } if name.as_str() == "wheel"), "{e}");
        // -1 means "unchanged" to chown: not a user.
        assert!(matches!(parse("4294967295").unwrap_err().kind(), ErrorKind::NoSuchUser { .. }));
        // Lines longer than the reader's buffer are passed over, and a line
        // across two reads is found.
        let long = format!("{}:x:5:5::/:/bin/sh\n", "l".repeat(3000));
        let pad = "p".repeat(1000);
        k.set_file("/etc/passwd", &format!("{long}{pad}:x:6:6::/:/bin/sh\nlate:x:4242:42::/:/bin/sh\n"));
        assert_eq!(parse("late").unwrap(), Owner { uid: 4242, gid: Some(42) });
        assert_eq!(parse(&pad).unwrap(), Owner { uid: 6, gid: Some(6) });
        assert!(matches!(parse(&"l".repeat(3000)).unwrap_err().kind(), ErrorKind::NoSuchUser { .. }));
        k.set_file("/etc/passwd", "last:x:9:9::/:/bin/sh");
        assert_eq!(parse("last").unwrap(), Owner { uid: 9, gid: Some(9) }, "no final newline");
    }

    #[test]
    fn an_unprivileged_grant_or_revoke_is_refused_and_changes_nothing() {
        let k = system(true);
        k.set_user(1000, 1000);
        let before = owners(&k);
        let e = grant::grant(&k, EDU, None, Owner { uid: 1000, gid: None }).unwrap_err();
        assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(Step::Chown(DevNode::Group(3))), Some(Errno::PERM)));
        assert!(e.to_string().contains("run vfio-bind as root"), "{e}");
        assert_eq!(owners(&k), before);
        let e = grant::revoke(&k, EDU, None).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::PERM));
        assert_eq!(owners(&k), before);
    }

    #[test]
    fn bad_devices_are_refused() {
        let k = system(true);
        let to = Owner { uid: 1000, gid: None };
        assert!(matches!(grant::grant(&k, "../x", None, to).unwrap_err().kind(), ErrorKind::InvalidName(_)));
        assert!(matches!(
            grant::grant(&k, "0000:00:09.0", None, to).unwrap_err().kind(),
            ErrorKind::NoSuchDevice { .. }
        ));
        k.bind(0, None);
        assert!(matches!(grant::grant(&k, EDU, None, to).unwrap_err().kind(), ErrorKind::NotBound { .. }));
        assert!(owners(&k).iter().flatten().all(|&o| o == (0, 0)));
    }

    /// Each system call of a grant, then of a revoke, fails in turn: the
    /// error is reported and every node keeps its owner.
    #[test]
    fn every_grant_and_revoke_failure_point_changes_nothing() {
        let to = Owner { uid: 1000, gid: Some(1000) };
        for revoking in [false, true] {
            let mut n = 1;
            loop {
                let k = system(true);
                if revoking {
                    grant::grant(&k, EDU, None, to).unwrap();
                }
                let before = owners(&k);
                k.fail_call(n, Errno::IO);
                let result = if revoking { grant::revoke(&k, EDU, None) } else { grant::grant(&k, EDU, None, to) };
                if !k.failure_pending() {
                    let e = result.unwrap_err();
                    assert_eq!(e.errno(), Some(Errno::IO), "call {n}: {e}");
                    assert_eq!(owners(&k), before, "revoking {revoking}, call {n} failed: {:?}", k.trace());
                    n += 1;
                    continue;
                }
                k.clear_failure();
                result.unwrap();
                assert!(n > 8, "only {n} calls");
                break;
            }
        }
    }
}
