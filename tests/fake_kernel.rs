//! Every setup and free path against the fake kernel: results, errors, and
//! the failure walk (each system call failing in turn).

use dao_vfio::fake::{FakeDevice, FakeKernel, FakeRegion};
use dao_vfio::sys::{self, pci_region, RegionFlags};
use dao_vfio::{AccessError, Backend, Bus, Context, Errno, ErrorKind, NameError, RegionKind, Step};

const EDU: &str = "0000:00:02.0";
const EDU2: &str = "0000:00:03.0";
const RTC: &str = "9010000.pl031";
const GPIO: &str = "9030000.pl061";

type Ctx<'k> = Context<&'k FakeKernel>;

/// A system like the aarch64 virtual board: edu in IOMMU group 3, pl031 and
/// pl061 in noiommu groups 0 and 1, an unbound virtio-mmio transport, a
/// device bound to a non-VFIO driver, and a device without a group.
fn board() -> FakeKernel {
    let k = FakeKernel::new();
    k.add_device(FakeDevice::edu(EDU, 3));
    k.add_device(FakeDevice::platform(RTC, 0));
    k.add_device(FakeDevice::platform(GPIO, 1));
    k.add_device(FakeDevice::platform("a000000.virtio_mmio", 9).with_driver(None));
    k.add_device(FakeDevice::platform("4010000000.pcie", 10).with_driver(Some("pci-host-generic")));
    k.add_device(FakeDevice::edu("0000:00:05.0", 0).with_group(None));
    k
}

/// What must not change when a call fails.
#[derive(Debug, PartialEq)]
struct Snapshot {
    fds: usize,
    mappings: usize,
    devices: usize,
    groups: usize,
}

fn snapshot(k: &FakeKernel, ctx: &Ctx<'_>) -> Snapshot {
    Snapshot { fds: k.open_fds(), mappings: k.live_mappings(), devices: ctx.device_count(), groups: ctx.group_count() }
}

#[test]
fn edu_setup_describes_and_maps_regions() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let dev = ctx.device(&edu).unwrap();
    let calls = k.calls();
    assert_eq!((dev.name(), dev.bus(), dev.group().unwrap(), dev.is_noiommu()), (EDU, Bus::Pci, 3, false));
    assert_eq!(k.calls(), calls, "known from setup: no system call");
    assert_eq!(dev.num_regions(), 9);
    let kinds: Vec<RegionKind> = dev.regions().iter().map(|r| r.kind()).collect();
    let mut expected = vec![RegionKind::Mapped];
    expected.extend([RegionKind::Empty; 5]);
    expected.extend([RegionKind::Deferred, RegionKind::Unmapped, RegionKind::Deferred]);
    assert_eq!(kinds, expected, "ROM and VGA are described when asked for");
    let rom = dev.describe_region(pci_region::ROM).unwrap();
    assert_eq!((rom.index(), rom.kind(), rom.size()), (pci_region::ROM, RegionKind::Empty, 0));
    assert_eq!(dev.describe_region(pci_region::VGA).unwrap().kind(), RegionKind::Absent);
    assert_eq!(
        dev.read_region(pci_region::VGA, 0, &mut [0; 4]).unwrap_err().kind(),
        ErrorKind::RegionAccess { region: pci_region::VGA, error: AccessError::NotReadable }
    );
    assert_eq!(dev.describe_region(9).unwrap_err().kind(), ErrorKind::NoSuchRegion { index: 9, count: 9 });
    let bar0 = dev.region(pci_region::BAR0).unwrap();
    assert_eq!(bar0.size(), 0x10_0000);
    assert_eq!(bar0.read32(0), Ok(0x010000ed));
    assert_eq!(dev.irqs().count(), 5);
    assert_eq!(dev.irq(sys::pci_irq::MSI).unwrap().count(), 1);
    // Config space: not mapped, reached with pread/pwrite.
    let config = dev.region(pci_region::CONFIG).unwrap();
    assert_eq!(config.read32(0), Err(AccessError::NotMapped));
    let mut id = [0u8; 4];
    dev.read_region(pci_region::CONFIG, 0, &mut id).unwrap();
    assert_eq!(id, [0x34, 0x12, 0xe8, 0x11]);
    assert_eq!(ctx.iommu_type(), Some(sys::TYPE1V2_IOMMU));
    // container + group + device
    assert_eq!(k.open_fds(), 3);
    assert_eq!(k.live_mappings(), 1);
    ctx.free(edu).unwrap();
    assert_eq!(k.open_fds(), 1, "only the container is left");
    assert_eq!(k.live_mappings(), 0);
    assert_eq!(ctx.iommu_type(), None, "the kernel drops the IOMMU type with the last group");
    // Setup again after free works: the type is set again.
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.iommu_type(), Some(sys::TYPE1V2_IOMMU));
    ctx.free(edu).unwrap();
    ctx.close().map_err(|(_, e)| e).unwrap();
    assert_eq!(k.open_fds(), 0);
    assert_eq!(k.bad_closes(), 0);
}

#[test]
fn type1_is_used_when_type1v2_is_missing() {
    let k = board();
    k.set_type1(true, false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.iommu_type(), Some(sys::TYPE1_IOMMU));
    ctx.free(edu).unwrap();
}

#[test]
fn platform_noiommu_device_gets_its_own_container() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let rtc = ctx.setup(RTC).unwrap();
    let dev = ctx.device(&rtc).unwrap();
    assert_eq!((dev.bus(), dev.group().unwrap(), dev.is_noiommu()), (Bus::Platform, 0, true));
    assert_eq!(dev.region(0).unwrap().kind(), RegionKind::Mapped);
    let mut types = k.container_types();
    types.sort();
    assert_eq!(types, vec![Some(sys::TYPE1V2_IOMMU), Some(sys::NOIOMMU_IOMMU)]);
    // Two platform devices at once share the noiommu container.
    let gpio = ctx.setup_on(Bus::Platform, GPIO).unwrap();
    assert_eq!(k.container_types().len(), 2);
    assert_eq!(ctx.group_count(), 3);
    ctx.free(rtc).unwrap();
    ctx.free(gpio).unwrap();
    // The noiommu container stays open, with no type, for the next noiommu
    // device; it closes with the context.
    assert_eq!(k.container_types(), vec![Some(sys::TYPE1V2_IOMMU), None], "noiommu container kept, its type dropped");
    ctx.free(edu).unwrap();
    assert_eq!(k.open_fds(), 2);
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn devices_of_one_group_share_it_and_the_iommu_is_set_once() {
    let k = board();
    k.add_device(FakeDevice::edu(EDU2, 3));
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let a = ctx.setup(EDU).unwrap();
    // The fake kernel answers a second VFIO_SET_IOMMU with EINVAL, as Linux does.
    let b = ctx.setup(EDU2).unwrap();
    assert_eq!(ctx.group_count(), 1);
    assert_eq!(k.open_fds(), 4, "container, one group, two devices");
    ctx.free(a).unwrap();
    assert_eq!(ctx.group_count(), 1, "the group stays open for the second device");
    assert_eq!(ctx.device(&b).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
    ctx.free(b).unwrap();
    assert_eq!((ctx.group_count(), k.open_fds()), (0, 1));
}

#[test]
fn second_group_joins_the_configured_container() {
    let k = board();
    k.add_device(FakeDevice::edu(EDU2, 4));
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let a = ctx.setup(EDU).unwrap();
    let b = ctx.setup(EDU2).unwrap();
    assert_eq!((ctx.group_count(), k.container_types()), (2, vec![Some(sys::TYPE1V2_IOMMU)]));
    ctx.free(a).unwrap();
    assert_eq!(ctx.iommu_type(), Some(sys::TYPE1V2_IOMMU), "still one group attached");
    ctx.free(b).unwrap();
}

#[test]
fn unmappable_regions_use_pread_and_pwrite() {
    let k = FakeKernel::new();
    let fw_cfg = FakeDevice::platform("9020000.fw-cfg", 2)
        .with_regions(vec![FakeRegion::unmappable(0x18).with_contents(b"QEMU")]);
    k.add_device(fw_cfg);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let h = ctx.setup("9020000.fw-cfg").unwrap();
    let dev = ctx.device(&h).unwrap();
    let region = dev.region(0).unwrap();
    assert_eq!((region.kind(), region.size(), region.is_mapped()), (RegionKind::Unmapped, 0x18, false));
    let mut sig = [0u8; 4];
    dev.read_region(0, 0, &mut sig).unwrap();
    assert_eq!(&sig, b"QEMU");
    dev.write_region(0, 8, &[0, 1]).unwrap();
    let mut sel = [0u8; 2];
    dev.read_region(0, 8, &mut sel).unwrap();
    assert_eq!(sel, [0, 1]);
    let refused = dev.read_region(0, 0x16, &mut sig).unwrap_err();
    assert_eq!(
        refused.kind(),
        ErrorKind::RegionAccess { region: 0, error: AccessError::OutOfBounds { offset: 0x16, width: 4, len: 0x18 } }
    );
    assert_eq!(
        dev.read_region(0, u64::MAX, &mut sig).unwrap_err().kind(),
        ErrorKind::RegionAccess {
            region: 0,
            error: AccessError::OutOfBounds { offset: usize::MAX, width: 4, len: 0x18 }
        }
    );
    ctx.free(h).unwrap();
}

/// A PCI device's ROM is described when first reached, then read with
/// `pread` like any unmappable region; setup never asks for it.
#[test]
fn a_pci_rom_is_described_when_reached() {
    let k = FakeKernel::new();
    let mut dev = FakeDevice::edu(EDU, 3);
    dev.regions[pci_region::ROM as usize] =
        FakeRegion { flags: RegionFlags::READ, ..FakeRegion::unmappable(0x800) }.with_contents(&[0x55, 0xaa]);
    k.add_device(dev);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let asked = |index: u32| k.trace().iter().filter(|c| c.step == Step::RegionInfo(index)).count();
    assert_eq!((asked(pci_region::ROM), asked(pci_region::VGA), asked(pci_region::CONFIG)), (0, 0, 1));
    let dev = ctx.device(&edu).unwrap();
    assert_eq!(dev.region(pci_region::ROM).unwrap().kind(), RegionKind::Deferred);
    let rom = dev.describe_region(pci_region::ROM).unwrap();
    assert_eq!(
        (rom.kind(), rom.size(), rom.flags(), rom.is_mapped()),
        (RegionKind::Unmapped, 0x800, RegionFlags::READ, false)
    );
    let mut signature = [0u8; 2];
    dev.read_region(pci_region::ROM, 0, &mut signature).unwrap();
    assert_eq!(signature, [0x55, 0xaa]);
    assert_eq!(
        dev.read_region(pci_region::ROM, 0x7ff, &mut signature).unwrap_err().kind(),
        ErrorKind::RegionAccess {
            region: pci_region::ROM,
            error: AccessError::OutOfBounds { offset: 0x7ff, width: 2, len: 0x800 }
        }
    );
    assert_eq!(
        dev.write_region(pci_region::ROM, 0, &[0]).unwrap_err().kind(),
        ErrorKind::RegionAccess { region: pci_region::ROM, error: AccessError::NotWritable }
    );
    assert_eq!(dev.region(pci_region::ROM).unwrap().kind(), RegionKind::Deferred, "nothing is kept");
    ctx.free(edu).unwrap();
    assert_eq!((k.open_fds(), k.live_mappings()), (1, 0));
}

#[test]
fn region_flags_decide_mapping_and_access() {
    let k = FakeKernel::new();
    let ro = FakeRegion { flags: RegionFlags::READ | RegionFlags::MMAP, ..FakeRegion::mmio(0x1000) };
    let wo_unmapped = FakeRegion { flags: RegionFlags::WRITE, ..FakeRegion::unmappable(0x100) };
    let no_access = FakeRegion { flags: RegionFlags::MMAP, ..FakeRegion::mmio(0x1000) };
    k.add_device(FakeDevice::platform("1000.dev", 5).with_regions(vec![ro, wo_unmapped, no_access]));
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let h = ctx.setup("1000.dev").unwrap();
    let dev = ctx.device(&h).unwrap();
    let r0 = dev.region(0).unwrap();
    assert_eq!(r0.kind(), RegionKind::Mapped);
    assert_eq!(r0.read32(0), Ok(0));
    assert_eq!(r0.write32(0, 1), Err(AccessError::NotWritable));
    assert_eq!(dev.region(1).unwrap().kind(), RegionKind::Unmapped);
    assert_eq!(
        dev.read_region(1, 0, &mut [0; 4]).unwrap_err().kind(),
        ErrorKind::RegionAccess { region: 1, error: AccessError::NotReadable }
    );
    dev.write_region(1, 0, &[1, 2, 3, 4]).unwrap();
    assert_eq!(dev.region(2).unwrap().kind(), RegionKind::Unmapped, "MMAP without READ or WRITE is not mapped");
    let missing = dev.region(3).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NoSuchRegion { index: 3, count: 3 });
    assert_eq!(k.live_mappings(), 1);
    ctx.free(h).unwrap();
}

/// Each bad input gives its error and changes nothing.
#[test]
fn bad_inputs_are_refused_and_change_nothing() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let held = ctx.setup(EDU).unwrap();
    let before = snapshot(&k, &ctx);
    let too_long = "x".repeat(64);
    let cases: Vec<(&str, Option<Bus>, ErrorKind)> = vec![
        ("", None, ErrorKind::InvalidName(NameError::Empty)),
        (&too_long, None, ErrorKind::InvalidName(NameError::TooLong(64))),
        ("../0000:00:02.0", None, ErrorKind::InvalidName(NameError::Slash)),
        ("0000:00:02.0\0", None, ErrorKind::InvalidName(NameError::Nul)),
        ("..", None, ErrorKind::InvalidName(NameError::Dot)),
        ("0000:00:02.0\n", None, ErrorKind::InvalidName(NameError::BadByte(b'\n'))),
        ("0000:00:1f.7", None, ErrorKind::NoSuchDevice { bus: None }),
        ("0000:00:05.0", Some(Bus::Platform), ErrorKind::NoSuchDevice { bus: Some(Bus::Platform) }),
        ("a000000.virtio_mmio", None, ErrorKind::NotBound { bus: Bus::Platform }),
        ("0000:00:05.0", None, ErrorKind::NoIommuGroup { bus: Bus::Pci }),
        (EDU, None, ErrorKind::AlreadyOpen),
    ];
    for (name, bus, kind) in cases {
        let err = match bus {
            Some(bus) => ctx.setup_on(bus, name),
            None => ctx.setup(name),
        }
        .unwrap_err();
        assert_eq!(err.kind(), kind, "{name:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(snapshot(&k, &ctx), before, "{name:?} changed the state");
    }
    let wrong = ctx.setup("4010000000.pcie").unwrap_err();
    match wrong.kind() {
        ErrorKind::WrongDriver { bus: Bus::Platform, driver } => assert_eq!(driver.as_str(), "pci-host-generic"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        wrong.to_string().contains("echo vfio-platform > /sys/bus/platform/devices/4010000000.pcie/driver_override"),
        "{wrong}"
    );
    // Offsets outside a region and misaligned ones.
    let bar0 = ctx.device(&held).unwrap().region(0).unwrap();
    assert_eq!(bar0.read32(0x10_0000), Err(AccessError::OutOfBounds { offset: 0x10_0000, width: 4, len: 0x10_0000 }));
    assert_eq!(bar0.write64(0xf_fffc, 0), Err(AccessError::Misaligned { offset: 0xf_fffc, align: 8 }));
    assert_eq!(snapshot(&k, &ctx), before);
    ctx.free(held).unwrap();
}

#[test]
fn group_rules_are_reported() {
    let k = board();
    // Group 3 gets a second device bound to a normal driver: not viable.
    let intruder = k.add_device(FakeDevice::edu(EDU2, 3).with_driver(Some("e1000e")));
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let err = ctx.setup(EDU).unwrap_err();
    let e = &err;
    assert!(
        matches!(e.kind(), ErrorKind::GroupNotViable { group: 3, blocker: Some(b) } if b.device() == "0000:00:03.0" && b.driver() == "e1000e"),
        "{e}"
    );
    assert_eq!(err.device(), Some(EDU));
    // Refused before it is attached: a kernel older than 5.19 would attach
    // it (and let its IOMMU domain take the mate a driver still uses).
    assert!(k.trace().iter().all(|c| c.step != Step::SetContainer), "a non-viable group is never attached");
    assert_eq!(k.open_fds(), 1);
    k.bind(intruder, None);
    let edu = ctx.setup(EDU).unwrap();
    // A second context cannot open the same group.
    let mut other: Ctx = Context::with_kernel(&k).unwrap();
    assert_eq!(other.setup(EDU).unwrap_err().kind(), ErrorKind::GroupBusy { group: 3 });
    // ... and cannot use the first one's handle.
    assert_eq!(other.device(&edu).unwrap_err().kind(), ErrorKind::ForeignHandle);
    assert_eq!(other.free(edu).unwrap_err().kind(), ErrorKind::ForeignHandle);
    assert_eq!(ctx.device_count(), 1, "the foreign free changed nothing");
    drop(ctx);
    drop(other);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
}

#[test]
fn missing_vfio_wrong_api_and_no_iommu_backend() {
    let k = board();
    k.set_vfio_loaded(false);
    let err = Ctx::with_kernel(&k).unwrap_err();
    assert_eq!((err.kind(), err.errno()), (ErrorKind::NoVfio, Some(Errno::NOENT)));
    assert!(err.to_string().contains("modprobe vfio-pci"));
    k.set_vfio_loaded(true);
    k.set_api_version(1);
    assert_eq!(Ctx::with_kernel(&k).unwrap_err().kind(), ErrorKind::ApiVersion { found: 1 });
    assert_eq!(k.open_fds(), 0);
    k.set_api_version(0);
    k.set_type1(false, false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let before = snapshot(&k, &ctx);
    assert_eq!(ctx.setup(EDU).unwrap_err().kind(), ErrorKind::NoIommuType);
    assert_eq!(snapshot(&k, &ctx), before);
}

#[test]
fn full_tables_are_refused_before_anything_opens() {
    let k = board();
    let mut one_device: Context<&FakeKernel, 1, 8> = Context::with_kernel(&k).unwrap();
    let edu = one_device.setup(EDU).unwrap();
    let fds = k.open_fds();
    let err = one_device.setup(RTC).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceTableFull { capacity: 1 });
    assert_eq!((k.open_fds(), one_device.device_count()), (fds, 1));
    one_device.free(edu).unwrap();
    drop(one_device);

    let mut one_group: Context<&FakeKernel, 8, 1> = Context::with_kernel(&k).unwrap();
    let edu = one_group.setup(EDU).unwrap();
    let fds = k.open_fds();
    assert_eq!(one_group.setup(RTC).unwrap_err().kind(), ErrorKind::GroupTableFull { capacity: 1 });
    assert_eq!(k.open_fds(), fds);
    one_group.free(edu).unwrap();
}

#[test]
fn close_with_open_devices_is_refused_and_keeps_them() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let (ctx_back, err) = ctx.close().unwrap_err();
    let mut ctx = ctx_back;
    assert_eq!(err.kind(), ErrorKind::DevicesOpen { count: 1 });
    assert_eq!(ctx.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
    ctx.free(edu).unwrap();
    ctx.close().map_err(|(_, e)| e).unwrap();
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn dropping_the_context_releases_everything() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let _edu = ctx.setup(EDU).unwrap();
    let _rtc = ctx.setup(RTC).unwrap();
    let _gpio = ctx.setup(GPIO).unwrap();
    assert_eq!(k.live_mappings(), 3);
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
}

#[test]
fn opening_twice_is_harmless() {
    let k = board();
    let mut a: Ctx = Context::with_kernel(&k).unwrap();
    let mut b: Ctx = Context::with_kernel(&k).unwrap();
    let edu = a.setup(EDU).unwrap();
    let rtc = b.setup(RTC).unwrap();
    a.free(edu).unwrap();
    b.free(rtc).unwrap();
    drop((a, b));
    assert_eq!(k.open_fds(), 0);
}

/// Sets up `names` in order on a fresh context (on a kernel with iommufd
/// and device cdevs as given), failing the `n`th system call of the last
/// setup; checks the outcome. Returns false once `n` is past the last system
/// call (the setup then succeeded).
fn setup_walk_step(names: &[&str], extra: &[FakeDevice], (iommufd, cdevs): (bool, bool), n: u64) -> bool {
    let k = board();
    k.set_iommufd(iommufd, cdevs);
    for d in extra {
        k.add_device(d.clone());
    }
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let (last, first) = names.split_last().unwrap();
    let held: Vec<_> = first.iter().map(|name| ctx.setup(name).unwrap()).collect();
    let before = snapshot(&k, &ctx);
    let calls_before = k.calls();
    k.fail_call(n, Errno::IO);
    let result = ctx.setup(last);
    if k.failure_pending() {
        k.clear_failure();
        let handle = result.unwrap_or_else(|e| panic!("setup failed without an injected failure: {e}"));
        ctx.free(handle).unwrap();
        return false;
    }
    let failed_call = k.trace()[(calls_before + n - 1) as usize].name;
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("setup of {last} succeeded although call {n} ({failed_call}) failed"),
    };
    assert_eq!(err.errno(), Some(Errno::IO), "call {n} ({failed_call}): {err}");
    assert_eq!(err.device(), Some(*last));
    assert_eq!(snapshot(&k, &ctx), before, "call {n} ({failed_call}) of {last} leaked: {err}");
    assert_eq!(k.bad_closes(), 0);
    // The context is still usable: the same setup now succeeds.
    let handle = ctx.setup(last).unwrap();
    ctx.free(handle).unwrap();
    // A noiommu container opened by this setup stays open for the next
    // noiommu device (a failed setup closes it, as checked above).
    let platform = |name: &&str| [RTC, GPIO].contains(name);
    let kept = usize::from(platform(last) && !first.iter().any(platform));
    assert_eq!(snapshot(&k, &ctx), Snapshot { fds: before.fds + kept, ..before });
    for h in held {
        ctx.free(h).unwrap();
    }
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
    true
}

fn walk_setup(names: &[&str], extra: &[FakeDevice], kernel: (bool, bool)) -> u64 {
    let mut n = 1;
    while setup_walk_step(names, extra, kernel, n) {
        n += 1;
    }
    n - 1
}

#[test]
fn every_setup_failure_point_leaves_nothing_behind() {
    // The kernel: (iommufd, device cdevs).
    type Kernel = (bool, bool);
    const LEGACY: Kernel = (false, false);
    const IOMMUFD: Kernel = (true, true);
    let scenarios: Vec<(&str, Vec<&str>, Vec<FakeDevice>, Kernel)> = vec![
        ("first PCI device (new group, IOMMU type set)", vec![EDU], vec![], LEGACY),
        ("platform device (noiommu container opened)", vec![RTC], vec![], LEGACY),
        ("second device of a shared group", vec![EDU, EDU2], vec![FakeDevice::edu(EDU2, 3)], LEGACY),
        ("second group in a configured container", vec![EDU, EDU2], vec![FakeDevice::edu(EDU2, 4)], LEGACY),
        ("second noiommu group", vec![RTC, GPIO], vec![], LEGACY),
        ("PCI next to a platform device", vec![RTC, EDU], vec![], LEGACY),
        ("first PCI device through iommufd (cdev, bind, attach)", vec![EDU], vec![], IOMMUFD),
        ("second iommufd device", vec![EDU, EDU2], vec![FakeDevice::edu(EDU2, 4)], IOMMUFD),
        ("second iommufd device of the same group", vec![EDU, EDU2], vec![FakeDevice::edu(EDU2, 3)], IOMMUFD),
        ("noiommu platform device beside iommufd", vec![EDU, RTC], vec![], IOMMUFD),
        ("iommufd device next to a platform device", vec![RTC, EDU], vec![], IOMMUFD),
        ("PCI device, iommufd without cdevs (container opened for it)", vec![EDU], vec![], (true, false)),
    ];
    let mut total = 0;
    for (what, names, extra, kernel) in scenarios {
        let points = walk_setup(&names, &extra, kernel);
        assert!(points >= 5, "{what}: only {points} failure points");
        println!("setup failure walk, {what}: {points} failure points, each refused cleanly");
        total += points;
    }
    println!("setup failure walk: {total} failure points in all");
}

#[test]
fn every_open_failure_point_leaves_nothing_behind() {
    let k = board();
    k.set_iommufd(true, true);
    let walks = [
        (Backend::Legacy, [Step::OpenContainer, Step::ApiVersion]),
        (Backend::Iommufd, [Step::OpenIommufd, Step::IoasAlloc]),
    ];
    for (backend, steps) in walks {
        for (n, step) in (1..).zip(steps) {
            k.fail_call(n, Errno::IO);
            let err = Ctx::with_backend(&k, backend).unwrap_err();
            assert_eq!((err.kind(), err.errno()), (ErrorKind::Syscall(step), Some(Errno::IO)), "{backend:?}");
            assert_eq!(k.open_fds(), 0, "{backend:?}, call {n}");
        }
    }
    // Auto takes the legacy container when iommufd fails at any point.
    for n in 1..=2 {
        k.fail_call(n, Errno::IO);
        let mut ctx = Ctx::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Legacy);
        ctx.free(edu).unwrap();
        drop(ctx);
        assert_eq!((k.open_fds(), k.bad_closes()), (0, 0));
    }
    println!("open failure walk: 4 failure points, and 2 fallbacks");
}

/// Runs `op` with the `n`th system call from now failing with `EIO`. `Err`
/// with `op`'s result when `op` made fewer calls (nothing failed); else the
/// name of the call that failed, and the result.
fn with_call_failing<T>(k: &FakeKernel, n: u64, op: impl FnOnce() -> T) -> Result<(&'static str, T), T> {
    let calls_before = k.calls();
    k.fail_call(n, Errno::IO);
    let result = op();
    if k.failure_pending() {
        k.clear_failure();
        return Err(result);
    }
    Ok((k.trace()[(calls_before + n - 1) as usize].name, result))
}

#[test]
fn a_failed_detach_of_the_last_group_renews_the_container() {
    let mut n = 1;
    loop {
        let k = board();
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let (failed_call, result) = match with_call_failing(&k, n, || ctx.free(edu)) {
            Ok(failed) => failed,
            Err(result) => {
                result.unwrap();
                break;
            }
        };
        assert_eq!(result.unwrap_err().errno(), Some(Errno::IO));
        assert_eq!((ctx.device_count(), ctx.group_count()), (0, 0));
        assert_eq!(k.open_fds(), 1, "call {n} ({failed_call}): one container");
        assert_eq!(k.container_types(), vec![None]);
        // A new setup sets the IOMMU type on the (possibly renewed) container.
        let again = ctx.setup(EDU).unwrap();
        assert_eq!(ctx.iommu_type(), Some(sys::TYPE1V2_IOMMU));
        ctx.free(again).unwrap();
        drop(ctx);
        assert_eq!((k.open_fds(), k.bad_closes()), (0, 0));
        n += 1;
    }
    assert_eq!(n, 3, "munmap and unset-container");
}

#[test]
fn every_free_failure_point_releases_everything() {
    let mut n = 1;
    loop {
        let k = board();
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let rtc = ctx.setup(RTC).unwrap();
        let (failed_call, result) = match with_call_failing(&k, n, || ctx.free(rtc)) {
            Ok(failed) => failed,
            Err(result) => {
                result.unwrap();
                break;
            }
        };
        let err = result.unwrap_err();
        assert_eq!((err.errno(), err.device()), (Some(Errno::IO), Some(RTC)), "{err}");
        // The fds, the table slot and the noiommu container are released even
        // so. Only a mapping whose munmap the kernel refused can remain.
        assert_eq!(ctx.device_count(), 1);
        assert_eq!(ctx.group_count(), 1);
        assert_eq!(k.open_fds(), 4, "the two containers, edu's group, edu");
        let stuck = usize::from(failed_call == "munmap");
        assert_eq!(k.live_mappings(), 1 + stuck, "call {n} ({failed_call})");
        // The context is still usable.
        let again = ctx.setup(RTC).unwrap();
        ctx.free(again).unwrap();
        ctx.free(edu).unwrap();
        assert_eq!(k.bad_closes(), 0);
        n += 1;
    }
    assert!(n > 2, "free makes at least munmap and unset-container calls");
    println!("free failure walk: {} failure points", n - 1);
}

#[test]
fn every_iommufd_free_failure_point_releases_everything() {
    let mut n = 1;
    loop {
        let k = board();
        k.set_iommufd(true, true);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let held = k.open_fds();
        let edu = ctx.setup(EDU).unwrap();
        let mut buf = ctx.dma_alloc(8192, dao_vfio::DmaOptions::default()).unwrap();
        let iova = ctx.dma(&mut buf).unwrap().iova();
        let (failed_call, result) = match with_call_failing(&k, n, || ctx.free(edu)) {
            Ok(failed) => failed,
            Err(result) => {
                result.unwrap();
                break;
            }
        };
        // A refused unmap is made good by a fresh address space, and a refused
        // munmap of the buffer (memory the context lets go of) is only a
        // leak: free reports the failures that leave something for the caller.
        match (failed_call, result) {
            ("ioctl" | "munmap", Ok(())) => {}
            (_, result) => assert_eq!(result.unwrap_err().errno(), Some(Errno::IO), "call {n} ({failed_call})"),
        }
        assert_eq!((ctx.device_count(), k.iommufd_attached(), k.open_fds()), (0, 0, held), "call {n} ({failed_call})");
        assert!(k.dma_mappings().is_empty(), "call {n} ({failed_call})");
        // SAFETY: the device's DMA runs on this thread, the buffer's only user.
        assert!(!unsafe { k.dma_write(iova, b"x") }, "no device reaches the buffer");
        assert_eq!(ctx.dma(&mut buf).unwrap_err().kind(), ErrorKind::ForeignHandle);
        // Only a mapping whose munmap the kernel refused can remain.
        let stuck = usize::from(failed_call == "munmap");
        assert_eq!((k.live_mappings(), k.freed_while_mapped()), (stuck, 0), "call {n} ({failed_call})");
        // The context is still usable.
        let again = ctx.setup(EDU).unwrap();
        assert_eq!(ctx.device(&again).unwrap().backend(), Backend::Iommufd);
        ctx.free(again).unwrap();
        drop(ctx);
        assert_eq!((k.open_fds(), k.bad_closes()), (0, 0));
        n += 1;
    }
    println!("iommufd free failure walk: {} failure points", n - 1);
    assert!(n > 3, "IOMMU_IOAS_UNMAP, and the munmaps of BAR0 and the buffer");
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<dao_vfio::Region>();
    send_sync::<Context>();
    send_sync::<dao_vfio::Device<'static, dao_vfio::Host>>();
    send_sync::<dao_vfio::DeviceHandle>();
    send_sync::<dao_vfio::Error>();
    // A DMA view moves to the thread that uses it (one thread at a time).
    fn send<T: Send>() {}
    send::<dao_vfio::DmaBuffer<'static>>();
}

/// Regression (issue 17.1): the fake's registers are ordinary memory, and
/// two threads' volatile accesses to one of them, one writing, were a data
/// race (Miri: "Data race detected between non-atomic write and non-atomic
/// read"); so were `read_region` (the fake's pread) against a mapped write.
/// Every such access now goes through the fake, which serializes them, any
/// widths mixed. (Run under Miri by tests/check.)
#[test]
fn threads_may_share_one_fake_register() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let dev = ctx.device(&edu).unwrap();
    let bar0 = dev.region(0).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..50u32 {
                bar0.write32(0x100, i).unwrap();
                bar0.write8(0x101, 0xff).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..50 {
                let _ = bar0.read32(0x100).unwrap();
                let _ = bar0.read64(0x100).unwrap();
            }
        });
        s.spawn(|| {
            let mut buf = [0u8; 8];
            for _ in 0..50 {
                dev.read_region(0, 0x100, &mut buf).unwrap();
                dev.write_region(0, 0x104, &buf[..4]).unwrap();
            }
        });
    });
    assert_eq!(bar0.read8(0x101), Ok(0xff));
    ctx.free(edu).unwrap();
}

/// A register block's accesses are plain volatile ones the fake cannot
/// serialize, so making one ties the fake region to its thread: another
/// thread's access is refused (a panic, not a race), until the region is
/// unmapped.
#[test]
fn a_register_block_ties_a_fake_region_to_its_thread() {
    dao_vfio::register_block! {
        struct Regs { 0x00 => id: dao_vfio::RO<u32>, 0x04 => scratch: dao_vfio::RW<u32> }
    }
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    {
        let dev = ctx.device(&edu).unwrap();
        let bar0 = dev.region(0).unwrap();
        // Before any block, threads share it.
        std::thread::scope(|s| s.spawn(|| bar0.write32(4, 7).unwrap()).join().unwrap());
        let regs = bar0.block::<Regs>(0).unwrap();
        assert_eq!(regs.id.read(), 0x010000ed);
        assert_eq!(regs.scratch.read(), 7);
        assert_eq!(bar0.read32(4), Ok(7), "its own thread keeps every access");
        let other = std::thread::scope(|s| {
            [
                s.spawn(|| bar0.read32(0).is_ok()).join(),
                s.spawn(|| bar0.block::<Regs>(0).is_ok()).join(),
                s.spawn(|| dev.read_region(0, 0, &mut [0; 4]).is_ok()).join(),
            ]
        });
        for joined in other {
            let panic = joined.unwrap_err();
            let message = panic.downcast_ref::<String>().unwrap();
            assert!(message.contains("only that thread may touch it"), "{message}");
        }
        assert_eq!(regs.id.read(), 0x010000ed);
    }
    // Unmapped and mapped again: free for any thread.
    ctx.free(edu).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let bar0 = ctx.device(&edu).unwrap().region(0).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(bar0.block::<Regs>(0).unwrap().id.read(), 0x010000ed)).join().unwrap()
    });
    ctx.free(edu).unwrap();
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings()), (0, 0));
}

#[test]
fn errors_are_small_and_say_what_to_do() {
    // The name is stored inline (no heap): two cache lines at most; layouts differ a little between compilers.
    println!(
        "size_of Error = {}, AccessError = {}",
        std::mem::size_of::<dao_vfio::Error>(),
        std::mem::size_of::<AccessError>()
    );
    assert!(std::mem::size_of::<dao_vfio::Error>() <= 128, "{}", std::mem::size_of::<dao_vfio::Error>());
    assert!(std::mem::size_of::<AccessError>() <= 32);
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let unbound = ctx.setup("a000000.virtio_mmio").unwrap_err().to_string();
    assert!(unbound.contains("echo a000000.virtio_mmio > /sys/bus/platform/drivers/vfio-platform/bind"), "{unbound}");
    let group = ctx.setup("0000:00:05.0").unwrap_err().to_string();
    assert!(group.contains("enable_unsafe_noiommu_mode"), "{group}");
    let name = ctx.setup(&"y".repeat(80)).unwrap_err().to_string();
    assert!(name.contains("80 bytes"), "{name}");
}

#[test]
fn permission_missing_group_node_and_bus_mismatch() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let before = snapshot(&k, &ctx);
    // readlink (the group), then the group node's open: EACCES.
    k.fail_call(2, Errno::ACCESS);
    let err = ctx.setup(EDU).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Permission { node: dao_vfio::DevNode::Group(_) }), "{err}");
    assert_eq!(err.errno(), Some(Errno::ACCESS));
    assert!(err.to_string().contains("run as root"), "{err}");
    assert_eq!(snapshot(&k, &ctx), before);
    // noiommu mode switched off after binding: no /dev/vfio/noiommu-0.
    k.set_noiommu_mode(false);
    assert_eq!(ctx.setup(RTC).unwrap_err().kind(), ErrorKind::GroupNodeMissing { group: 0 });
    k.set_noiommu_mode(true);
    // The kernel describes a "PCI" device as a platform one.
    let mut odd = FakeDevice::edu("0000:00:09.0", 7);
    odd.flags = sys::DeviceFlags::PLATFORM;
    k.add_device(odd);
    assert_eq!(ctx.setup("0000:00:09.0").unwrap_err().kind(), ErrorKind::BusMismatch { bus: Bus::Pci });
    assert_eq!(snapshot(&k, &ctx), before);
}

#[test]
fn absent_interrupt_indexes_count_zero() {
    let k = board();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let err_irq = ctx.device(&edu).unwrap().irq(sys::pci_irq::ERR).unwrap();
    assert_eq!((err_irq.count(), err_irq.flags()), (0, sys::IrqFlags::empty()));
    ctx.free(edu).unwrap();
}

#[test]
fn a_context_opens_and_closes_in_place() {
    let k = board();
    let mut ctx: Ctx = Context::unopened(&k, dao_vfio::Backend::Auto);
    let calls = k.calls();
    assert_eq!(ctx.setup(EDU).unwrap_err().kind(), ErrorKind::ContextNotOpen);
    assert_eq!((k.calls(), k.open_fds()), (calls, 0), "an unopened context touches nothing");
    ctx.open_in_place().unwrap();
    ctx.open_in_place().unwrap(); // already open: nothing more
    assert_eq!(k.open_fds(), 1, "the legacy container");
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.close_in_place().unwrap_err().kind(), ErrorKind::DevicesOpen { count: 1 });
    assert_eq!(ctx.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
    ctx.free(edu).unwrap();
    ctx.close_in_place().unwrap();
    assert_eq!((k.open_fds(), k.live_mappings()), (0, 0));
    assert_eq!(ctx.setup(EDU).unwrap_err().kind(), ErrorKind::ContextNotOpen);
    // Opened again, it serves as before.
    ctx.open_in_place().unwrap();
    let rtc = ctx.setup(RTC).unwrap();
    assert_eq!(ctx.device(&rtc).unwrap().name(), RTC);
    ctx.free(rtc).unwrap();
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
}
