//! Real-kernel tests. They need devices bound to VFIO, so on the host they are
//! ignored; `tests/board/test` runs them (with `--include-ignored`) inside the
//! QEMU virtual boards, where the guest's init binds edu (both boards) and
//! pl031, pl061 and fw-cfg (aarch64) and names them in `DAO_VFIO_*`.
//! A test whose device is missing fails: nothing passes by skipping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dao_vfio::sys::{self, pci_region, RegionFlags};
use dao_vfio::{AccessError, Backend, Bus, Context, ErrorKind, NameError, RegionKind};

mod common;
use common::{dev, Edu};

/// The open fds of this process, with their fdinfo flags.
fn open_fds() -> BTreeSet<(i32, u32)> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc is mounted on the board")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            Some((fd, u32::from_str_radix(flags, 8).ok()?))
        })
        .collect()
}

fn fd_numbers() -> BTreeSet<i32> {
    open_fds().into_iter().map(|(fd, _)| fd).collect()
}

fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_regions_registers_and_setup_after_free() {
    let edu_name = dev("DAO_VFIO_EDU");
    let mut vfio = common::context();
    for round in 0..2 {
        let edu = vfio.setup(&edu_name).unwrap();
        let dev = vfio.device(&edu).unwrap();
        assert_eq!((dev.bus(), dev.is_noiommu()), (Bus::Pci, false));
        assert!(dev.flags().contains(sys::DeviceFlags::PCI));
        assert_eq!(dev.num_regions(), 9);
        let bar0 = dev.region(pci_region::BAR0).unwrap();
        assert_eq!((bar0.kind(), bar0.size()), (RegionKind::Mapped, 0x10_0000));
        assert!(bar0.flags().contains(RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP));
        for bar in 1..=5 {
            assert_eq!(dev.region(bar).unwrap().kind(), RegionKind::Empty, "BAR{bar}");
        }
        let config = dev.region(pci_region::CONFIG).unwrap();
        assert_eq!((config.kind(), config.size()), (RegionKind::Unmapped, 0x100));
        // ROM and VGA: not described at setup; the kernel's answer when asked.
        for (index, kernel_says) in [(pci_region::ROM, RegionKind::Empty), (pci_region::VGA, RegionKind::Absent)] {
            assert_eq!(dev.region(index).unwrap().kind(), RegionKind::Deferred);
            assert_eq!(dev.describe_region(index).unwrap().kind(), kernel_says, "region {index}");
            let refused = dev.read_region(index, 0, &mut [0; 4]).unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::RegionAccess { region: index, error: AccessError::NotReadable });
        }
        assert_eq!(dev.num_irqs(), 5);
        assert_eq!(dev.irq(sys::pci_irq::MSI).unwrap().count(), 1);

        let regs = bar0.block::<Edu>(0).unwrap();
        assert_eq!(regs.id.read(), 0x010000ed, "round {round}");
        for value in [0u32, 0x1234_5678, u32::MAX] {
            // SAFETY: edu's liveness register only stores the value.
            unsafe { regs.liveness.write(value) };
            assert_eq!(regs.liveness.read(), !value);
        }
        // SAFETY: starts edu's factorial computation; no DMA involved.
        unsafe { regs.factorial.write(5) };
        let start = Instant::now();
        while regs.status.read() & 1 != 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "edu stayed busy");
        }
        assert_eq!(regs.factorial.read(), 120);
        // The offset accessors see the same registers.
        assert_eq!(bar0.read32(0), Ok(0x010000ed));
        // edu takes 64-bit accesses only from 0x80 on (its DMA registers).
        bar0.write64(0x80, 0x1234_5678_9abc_def0).unwrap();
        assert_eq!(bar0.read64(0x80), Ok(0x1234_5678_9abc_def0));
        bar0.write32(0x04, 0xf0f0_f0f0).unwrap();
        assert_eq!(bar0.read32(0x04), Ok(0x0f0f_0f0f));
        assert_eq!(dev.backend(), common::expected_backend());
        // The legacy container has its IOMMU type set while a group is attached.
        assert_eq!(vfio.iommu_type().is_some(), common::expected_backend() == Backend::Legacy);
        vfio.free(edu).unwrap();
    }
    vfio.close().map_err(|(_, e)| e).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_config_space_through_pread_and_pwrite() {
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let mut id = [0u8; 4];
    dev.read_region(pci_region::CONFIG, 0, &mut id).unwrap();
    assert_eq!(id, [0x34, 0x12, 0xe8, 0x11], "vendor 1234, device 11e8");
    // The cache line size register (0x0c) is plain read/write storage.
    dev.write_region(pci_region::CONFIG, 0x0c, &[0x10]).unwrap();
    let mut cls = [0u8];
    dev.read_region(pci_region::CONFIG, 0x0c, &mut cls).unwrap();
    assert_eq!(cls, [0x10]);
    let outside = dev.read_region(pci_region::CONFIG, 0xfe, &mut id).unwrap_err();
    assert!(
        matches!(
            outside.kind(),
            ErrorKind::RegionAccess { region: pci_region::CONFIG, error: AccessError::OutOfBounds { .. } }
        ),
        "{outside}"
    );
    assert_eq!(dev.region(pci_region::CONFIG).unwrap().read32(0), Err(AccessError::NotMapped));
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn fds_are_cloexec_and_nothing_leaks() {
    let fds_before = fd_numbers();
    let maps_before = mapping_count();
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    let opened: Vec<(i32, u32)> = open_fds().into_iter().filter(|(fd, _)| !fds_before.contains(fd)).collect();
    match common::expected_backend() {
        // The context holds /sys/bus/pci/devices and /sys/bus/platform/devices
        // beside /dev/iommu.
        Backend::Iommufd => assert_eq!(opened.len(), 4, "/dev/iommu, its 2 directories, the cdev: {opened:?}"),
        _ => assert_eq!(opened.len(), 3, "container, group and device: {opened:?}"),
    }
    for (fd, flags) in &opened {
        assert_ne!(flags & 0o2000000, 0, "fd {fd} lacks O_CLOEXEC (flags {flags:o})");
    }
    assert!(mapping_count() > maps_before, "BAR0 is mapped");
    vfio.free(edu).unwrap();
    drop(vfio);
    assert_eq!(fd_numbers(), fds_before, "fds leaked");
    assert_eq!(mapping_count(), maps_before, "mappings leaked");
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn errors_from_the_real_kernel() {
    let edu_name = dev("DAO_VFIO_EDU");
    let fds_before = fd_numbers();
    let mut vfio: Context<dao_vfio::Host, 1, 4> = Context::with_backend(dao_vfio::Host, common::backend()).unwrap();
    let fds_open = fd_numbers();
    let expect = |r: Result<dao_vfio::DeviceHandle, dao_vfio::Error>, kind: ErrorKind| {
        let err = r.map(drop).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        println!("  refused as expected: {err}");
    };
    expect(vfio.setup("0000:7f:1f.7"), ErrorKind::NoSuchDevice { bus: None });
    expect(vfio.setup("no-such-device"), ErrorKind::NoSuchDevice { bus: None });
    expect(vfio.setup(&"z".repeat(64)), ErrorKind::InvalidName(NameError::TooLong(64)));
    expect(vfio.setup("../../../../etc/passwd"), ErrorKind::InvalidName(NameError::Slash));
    expect(vfio.setup_on(Bus::Platform, &edu_name), ErrorKind::NoSuchDevice { bus: Some(Bus::Platform) });
    // The aarch64 board always has an unbound virtio-mmio transport and the PCIe
    // host bridge bound to pci-host-generic; the x86_64 board may have neither.
    let aarch64 = cfg!(target_arch = "aarch64");
    if let Some(unbound) = aarch64.then(|| dev("DAO_VFIO_UNBOUND")).or(std::env::var("DAO_VFIO_UNBOUND").ok()) {
        expect(vfio.setup(&unbound), ErrorKind::NotBound { bus: Bus::Platform });
    }
    if let Some(other) = aarch64.then(|| dev("DAO_VFIO_OTHER_DRIVER")).or(std::env::var("DAO_VFIO_OTHER_DRIVER").ok()) {
        let err = vfio.setup(&other).map(drop).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WrongDriver { .. }), "{err}");
        println!("  refused as expected: {err}");
    }
    assert_eq!(fd_numbers(), fds_open, "a refused setup left an fd");
    let edu = vfio.setup(&edu_name).unwrap();
    // Full device table (capacity 1): refused before touching anything.
    let fds_with_edu = fd_numbers();
    expect(
        vfio.setup(&std::env::var("DAO_VFIO_PL031").unwrap_or("0000:00:1f.0".into())),
        ErrorKind::DeviceTableFull { capacity: 1 },
    );
    expect(vfio.setup(&edu_name), ErrorKind::AlreadyOpen);
    // A second context cannot take the same group (the kernel says EBUSY),
    // through either interface.
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let mut second = match Context::open_with(backend) {
            Ok(second) => second,
            // The 6.1 boards (x86_64, aarch64-6.1) have no iommufd.
            Err(err) => {
                assert!(!common::board_has_iommufd() && backend == Backend::Iommufd, "{backend:?}: {err}");
                assert_eq!(err.kind(), ErrorKind::NoIommufd, "{err}");
                continue;
            }
        };
        let busy = second.setup(&edu_name).map(drop).unwrap_err();
        // Linux: a group held through its node is busy to both interfaces
        // (EBUSY); a device bound through its cdev cannot be bound again
        // (EINVAL), and its group node is busy.
        let group = vfio.device(&edu).unwrap().group().unwrap();
        let expected = match (common::expected_backend(), backend) {
            (Backend::Iommufd, Backend::Iommufd) => ErrorKind::DeviceClaimed,
            _ => ErrorKind::GroupBusy { group },
        };
        assert_eq!(busy.kind(), expected, "{backend:?}: {busy}");
        println!("  refused as expected: {busy}");
    }
    assert_eq!(fd_numbers(), fds_with_edu);
    // Offsets outside the region.
    let bar0 = vfio.device(&edu).unwrap().region(0).unwrap();
    assert_eq!(bar0.read32(0x10_0000), Err(AccessError::OutOfBounds { offset: 0x10_0000, width: 4, len: 0x10_0000 }));
    assert_eq!(bar0.write32(0x2, 0), Err(AccessError::Misaligned { offset: 2, align: 4 }));
    // Closing with a device open is refused and keeps it open.
    let (mut vfio, err) = vfio.close().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DevicesOpen { count: 1 });
    assert_eq!(vfio.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
    vfio.close().map_err(|(_, e)| e).unwrap();
    assert_eq!(fd_numbers(), fds_before);
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn bind_tool_unbinds_and_binds_back_on_the_real_kernel() {
    use dao_vfio::bind;
    let edu = dev("DAO_VFIO_EDU");
    let mut statuses = Vec::new();
    bind::status(&dao_vfio::Host, &mut |s| statuses.push(*s)).unwrap();
    let listed = statuses.iter().find(|s| s.name.as_str() == edu).expect("status lists edu");
    assert!(listed.ready && listed.blockers == 0, "{listed:?}");
    assert_eq!(listed.driver.map(|d| d.as_str().to_string()).as_deref(), Some("vfio-pci"));

    let unbound = bind::unbind(&dao_vfio::Host, &edu, None).unwrap();
    assert_eq!(unbound.previous.map(|d| d.as_str().to_string()).as_deref(), Some("vfio-pci"));
    assert!(unbound.now.is_none(), "no driver in the guest claims edu: {unbound:?}");
    let mut vfio = common::context();
    let err = vfio.setup(&edu).map(drop).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotBound { bus: Bus::Pci }, "{err}");

    let bound = bind::bind(&dao_vfio::Host, &edu, None, None).unwrap();
    assert!(bound.changed());
    assert_eq!(bound.driver.as_str(), "vfio-pci");
    assert!(!bind::bind(&dao_vfio::Host, &edu, None, None).unwrap().changed(), "binding again changes nothing");
    let handle = vfio.setup(&edu).unwrap();
    assert_eq!(vfio.device(&handle).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(handle).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn auto_picks_what_this_kernel_offers() {
    let edu = dev("DAO_VFIO_EDU");
    let has_iommufd = std::path::Path::new("/dev/iommu").exists();
    // Since 6.1 sysfs lists `vfio-dev/vfioN`; only with cdevs (6.6+) does it have a node (`dev`).
    let cdev = std::fs::read_dir(format!("/sys/bus/pci/devices/{edu}/vfio-dev"))
        .ok()
        .and_then(|mut d| d.next()?.ok())
        .filter(|entry| entry.path().join("dev").exists())
        .map(|entry| entry.file_name());
    // The aarch64 board's 6.12 has iommufd and device cdevs; the 6.1 boards (x86_64's stock
    // kernel, aarch64-6.1 built like DAO's) have neither.
    let iommufd = common::board_has_iommufd();
    assert_eq!((has_iommufd, cdev.is_some()), (iommufd, iommufd), "{cdev:?}");
    let mut auto = Context::open().unwrap();
    let handle = auto.setup(&edu).unwrap();
    let expected = if iommufd { Backend::Iommufd } else { Backend::Legacy };
    assert_eq!((auto.device(&handle).unwrap().backend(), auto.active_backend()), (expected, Some(expected)));
    auto.free(handle).unwrap();
    drop(auto);
    if iommufd {
        // Either interface may be forced; both reach the same registers.
        for backend in [Backend::Iommufd, Backend::Legacy] {
            let mut vfio = Context::open_with(backend).unwrap();
            let handle = vfio.setup(&edu).unwrap();
            let dev = vfio.device(&handle).unwrap();
            assert_eq!((dev.backend(), dev.region(0).unwrap().read32(0)), (backend, Ok(0x010000ed)));
            vfio.free(handle).unwrap();
        }
    } else {
        let err = Context::open_with(Backend::Iommufd).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoIommufd, "{err}");
        println!("  refused as expected: {err}");
    }
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use super::common::{id_bytes, Pl031, PrimeCellId};
    use super::*;

    #[test]
    #[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
    fn pl031_registers_and_clock() {
        let mut vfio = common::context();
        let rtc = vfio.setup(&dev("DAO_VFIO_PL031")).unwrap();
        let dev = vfio.device(&rtc).unwrap();
        assert_eq!((dev.bus(), dev.is_noiommu(), dev.num_regions()), (Bus::Platform, true, 1));
        let region = dev.region(0).unwrap();
        assert_eq!((region.kind(), region.size()), (RegionKind::Mapped, 0x1000));
        let regs = region.block::<Pl031>(0).unwrap();
        assert_eq!(id_bytes(&regs.periph_id), [0x31, 0x10, 0x14, 0x00]);
        assert_eq!(id_bytes(&regs.cell_id), [0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(dev.irqs().count(), 1);
        assert!(
            dev.irq(0).unwrap().flags().contains(sys::IrqFlags::AUTOMASKED),
            "pl031's interrupt is level triggered"
        );
        let t0 = regs.data.read();
        std::thread::sleep(Duration::from_millis(2100));
        let t1 = regs.data.read();
        assert!(t1 > t0 && t1 <= t0 + 4, "the RTC advanced from {t0} to {t1}");
        vfio.free(rtc).unwrap();
    }

    #[test]
    #[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
    fn two_platform_devices_and_a_pci_device_at_once() {
        let mut vfio = common::context();
        let rtc = vfio.setup(&dev("DAO_VFIO_PL031")).unwrap();
        let gpio = vfio.setup_on(Bus::Platform, &dev("DAO_VFIO_PL061")).unwrap();
        let edu = vfio.setup_on(Bus::Pci, &dev("DAO_VFIO_EDU")).unwrap();
        // Two noiommu groups, and edu's group unless it came through its cdev.
        let edu_group = usize::from(common::expected_backend() == Backend::Legacy);
        assert_eq!(vfio.group_count(), 2 + edu_group);
        assert_eq!(vfio.device(&edu).unwrap().backend(), common::expected_backend());
        assert_eq!(vfio.device(&rtc).unwrap().backend(), Backend::Legacy, "noiommu: always the legacy path");
        let gpio_ids = vfio.device(&gpio).unwrap().region(0).unwrap().block::<PrimeCellId>(0xfe0).unwrap();
        assert_eq!(id_bytes(&gpio_ids.periph_id), [0x61, 0x10, 0x04, 0x00]);
        assert_eq!(id_bytes(&gpio_ids.cell_id), [0x0d, 0xf0, 0x05, 0xb1]);
        let rtc_ids = vfio.device(&rtc).unwrap().region(0).unwrap().block_at::<PrimeCellId, 0xfe0>().unwrap();
        assert_eq!(id_bytes(&rtc_ids.periph_id), [0x31, 0x10, 0x14, 0x00]);
        assert_eq!(vfio.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
        assert!(!vfio.device(&edu).unwrap().is_noiommu());
        // Freeing the platform devices leaves the PCI device working.
        vfio.free(rtc).unwrap();
        vfio.free(gpio).unwrap();
        assert_eq!(vfio.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
        vfio.free(edu).unwrap();
        vfio.close().map_err(|(_, e)| e).unwrap();
    }

    #[test]
    #[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
    fn fw_cfg_is_reached_through_pread_and_pwrite() {
        let mut vfio = common::context();
        let fw = vfio.setup(&dev("DAO_VFIO_FWCFG")).unwrap();
        let dev = vfio.device(&fw).unwrap();
        let region = dev.region(0).unwrap();
        assert_eq!((region.kind(), region.size(), region.is_mapped()), (RegionKind::Unmapped, 0x18, false));
        assert_eq!(region.read32(0), Err(AccessError::NotMapped));
        // Selector register at +8 (16-bit big endian): key 0, the signature.
        dev.write_region(0, 8, &0u16.to_be_bytes()).unwrap();
        let mut signature = [0u8; 4];
        for byte in signature.iter_mut() {
            dev.read_region(0, 0, std::slice::from_mut(byte)).unwrap();
        }
        assert_eq!(&signature, b"QEMU");
        vfio.free(fw).unwrap();
    }
}
