//! The iommufd backend against the fake kernel: which interface a context
//! picks, the errors of a forced one, one owner per group, and DMA teardown
//! when the last iommufd device goes. (Regions, interrupts, DMA, config space
//! and reset through iommufd run in `fake_beyond_dao`, on both backends; the
//! setup failure walk covers the iommufd path in `fake_kernel`.)

use dao_vfio::fake::{FakeDevice, FakeKernel};
use dao_vfio::{Backend, Bus, Context, DmaOptions, Errno, ErrorKind, Step};

const EDU: &str = "0000:00:02.0";
const EDU2: &str = "0000:00:03.0";
const RTC: &str = "9010000.pl031";

type Ctx<'k> = Context<&'k FakeKernel>;

/// edu in IOMMU group 3, a second edu in group 4, pl031 in noiommu group 0;
/// `/dev/iommu` and device cdevs as given.
fn system(iommufd: bool, cdevs: bool) -> FakeKernel {
    let k = FakeKernel::new();
    k.set_iommufd(iommufd, cdevs);
    k.add_device(FakeDevice::edu(EDU, 3));
    k.add_device(FakeDevice::edu(EDU2, 4));
    k.add_device(FakeDevice::platform(RTC, 0));
    k
}

/// What an open iommufd context holds: `/dev/iommu`, and the directories it
/// looks a device's `vfio-dev` directory up from (`/sys/bus/pci/devices`,
/// `/sys/bus/platform/devices`).
const HELD: usize = 3;

fn clean(k: &FakeKernel) -> (usize, usize, u32, u32) {
    (k.open_fds(), k.live_mappings(), k.bad_closes(), k.freed_while_mapped())
}

#[test]
fn auto_picks_iommufd_where_the_kernel_and_the_device_offer_it() {
    let k = system(true, true);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    assert_eq!((ctx.backend(), ctx.active_backend()), (Backend::Auto, None));
    assert_eq!(k.open_fds(), HELD, "/dev/iommu and its directories: no container is opened");
    let edu = ctx.setup(EDU).unwrap();
    let dev = ctx.device(&edu).unwrap();
    assert_eq!((dev.backend(), dev.is_noiommu()), (Backend::Iommufd, false));
    // Not read at setup through the cdev: one readlink when asked.
    let calls = k.calls();
    assert_eq!(dev.group().unwrap(), 3);
    assert_eq!((k.calls() - calls, k.trace().last().unwrap().name), (1, "readlink"));
    assert_eq!(dev.region(0).unwrap().read32(0), Ok(0x010000ed));
    assert_eq!((ctx.active_backend(), ctx.group_count(), ctx.iommu_type()), (Some(Backend::Iommufd), 0, None));
    assert_eq!((k.open_fds(), k.iommufd_attached()), (HELD + 1, 1), "the iommufd's and the device's cdev");
    ctx.free(edu).unwrap();
    assert_eq!((k.open_fds(), k.iommufd_attached(), ctx.active_backend()), (HELD, 0, None));
    ctx.close().map_err(|(_, e)| e).unwrap();
    assert_eq!(clean(&k), (0, 0, 0, 0));
}

#[test]
fn auto_takes_the_legacy_container_otherwise() {
    // No iommufd (before Linux 6.2, or the x86_64 board's 6.1), and iommufd
    // without device cdevs (6.2 to 6.5, or CONFIG_VFIO_DEVICE_CDEV=n).
    for (iommufd, fds) in [(false, 3), (true, 3 + HELD)] {
        let k = system(iommufd, false);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Legacy);
        assert_eq!((ctx.active_backend(), ctx.group_count()), (Some(Backend::Legacy), 1));
        assert_eq!(k.open_fds(), fds, "iommufd {iommufd}: container, group and device (and what iommufd holds)");
        drop(ctx);
        assert_eq!(clean(&k), (0, 0, 0, 0));
    }
}

#[test]
fn a_forced_backend_that_is_absent_says_so() {
    let k = system(false, false);
    let err = Ctx::with_backend(&k, Backend::Iommufd).unwrap_err();
    assert_eq!((err.kind(), err.errno()), (ErrorKind::NoIommufd, Some(Errno::NOENT)));
    assert!(err.to_string().contains("CONFIG_IOMMUFD"), "{err}");
    assert_eq!(k.open_fds(), 0);

    let k = system(true, false);
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    let err = ctx.setup(EDU).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoDeviceCdev { bus: Bus::Pci });
    assert!(err.to_string().contains("CONFIG_VFIO_DEVICE_CDEV"), "{err}");
    assert!(err.to_string().contains("/sys/bus/pci/devices/0000:00:02.0/vfio-dev"), "{err}");
    assert_eq!((k.open_fds(), ctx.device_count(), ctx.group_count()), (HELD, 0, 0), "nothing stays open");
    // noiommu devices keep the legacy path, whatever was asked.
    let rtc = ctx.setup(RTC).unwrap();
    assert_eq!(ctx.device(&rtc).unwrap().backend(), Backend::Legacy);
    assert!(ctx.device(&rtc).unwrap().is_noiommu());
    ctx.free(rtc).unwrap();

    // Legacy asked for on a kernel with everything: legacy it is.
    let k = system(true, true);
    let mut ctx = Ctx::with_backend(&k, Backend::Legacy).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!((ctx.device(&edu).unwrap().backend(), ctx.backend()), (Backend::Legacy, Backend::Legacy));
    assert_eq!(k.iommufd_attached(), 0);
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0, 0));
}

#[test]
fn a_context_keeps_one_io_address_space() {
    let k = system(true, false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Legacy);
    // Cdevs appear (a module reloaded): the next device follows the legacy
    // container all the same, so one DMA mapping reaches both.
    k.set_iommufd(true, true);
    let edu2 = ctx.setup(EDU2).unwrap();
    assert_eq!(ctx.device(&edu2).unwrap().backend(), Backend::Legacy);
    ctx.free(edu).unwrap();
    ctx.free(edu2).unwrap();
    // With no IOMMU-backed device left, the next one may take iommufd...
    let edu2 = ctx.setup(EDU2).unwrap();
    assert_eq!(ctx.device(&edu2).unwrap().backend(), Backend::Iommufd);
    // ...and then a device that only the legacy container could open is refused.
    k.set_iommufd(true, false);
    let fds = k.open_fds();
    let err = ctx.setup(EDU).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MixedBackends, "{err}");
    assert!(err.to_string().contains("Backend::Legacy"), "{err}");
    assert_eq!((k.open_fds(), ctx.device_count(), ctx.group_count()), (fds, 1, 0), "nothing stays open");
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0, 0));
}

#[test]
fn a_group_has_one_owner() {
    let k = system(true, true);
    k.add_device(FakeDevice::edu("0000:00:04.0", 3)); // edu's group mate
    let mut a: Ctx = Context::with_kernel(&k).unwrap();
    let edu = a.setup(EDU).unwrap();
    let fds = k.open_fds();
    // Linux's answers to a second owner, through iommufd: the device itself is
    // bound already (EINVAL); its group mate's group has another owner (EPERM).
    let mut b = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    for (name, errno) in [(EDU, Errno::INVAL), ("0000:00:04.0", Errno::PERM)] {
        let err = b.setup(name).unwrap_err();
        assert_eq!((err.kind(), err.errno()), (ErrorKind::DeviceClaimed, Some(errno)), "{name}");
        assert!(err.to_string().contains("close it there first"), "{err}");
        assert_eq!(k.open_fds(), fds + HELD, "{name}: the cdev is closed again");
    }
    // Auto tries the legacy path after an EPERM; the group node is busy there
    // too, so iommufd's refusal is the one reported.
    let mut auto: Ctx = Context::with_kernel(&k).unwrap();
    let fds = k.open_fds();
    let err = auto.setup("0000:00:04.0").unwrap_err();
    assert_eq!((err.kind(), err.errno()), (ErrorKind::DeviceClaimed, Some(Errno::PERM)));
    assert_eq!(k.open_fds(), fds);
    let mut legacy = Ctx::with_backend(&k, Backend::Legacy).unwrap();
    assert_eq!(legacy.setup(EDU).unwrap_err().kind(), ErrorKind::GroupBusy { group: 3 });
    // The group mate shares the owner's address space: same context, fine.
    let mate = a.setup("0000:00:04.0").unwrap();
    a.free(mate).unwrap();
    a.free(edu).unwrap();
    // The other way round: a group held through the legacy node (EBUSY).
    let held = legacy.setup(EDU).unwrap();
    let err = b.setup("0000:00:04.0").unwrap_err();
    assert_eq!((err.kind(), err.errno()), (ErrorKind::GroupBusy { group: 3 }, Some(Errno::BUSY)));
    legacy.free(held).unwrap();
    let edu = b.setup(EDU).unwrap();
    b.free(edu).unwrap();
    drop((a, b, auto, legacy));
    assert_eq!(clean(&k), (0, 0, 0, 0));

    // A driver holds another device of the group: not viable (EPERM).
    let k = system(true, true);
    k.add_device(FakeDevice::edu("0000:00:04.0", 3).with_driver(Some("e1000e")));
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    let err = ctx.setup(EDU).unwrap_err();
    let e = &err;
    assert!(
        matches!(e.kind(), ErrorKind::GroupNotViable { group: 3, blocker: Some(b) } if b.device() == "0000:00:04.0" && b.driver() == "e1000e"),
        "{e}"
    );
    assert_eq!(err.errno(), Some(Errno::PERM));
    assert_eq!(k.open_fds(), HELD);
}

#[test]
fn auto_falls_back_to_the_group_when_the_cdev_is_refused() {
    // Access given on /dev/vfio/N only: the cdev's open fails with EACCES.
    let k = system(true, true);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let calls = k.calls();
    // The cdev's listing (openat, getdents), two readlinks (a VF of which
    // driver, `physfn/driver`, or an SR-IOV PF, `sriov_totalvfs`? Auto opens
    // those through the group; not here), then the cdev's open.
    k.fail_call(5, Errno::ACCESS);
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(k.trace()[calls as usize].name, "openat");
    assert_eq!(k.trace()[calls as usize + 1].name, "getdents");
    assert_eq!(k.trace()[calls as usize + 2].name, "readlink");
    assert_eq!(k.trace()[calls as usize + 3].name, "readlink");
    assert_eq!(k.trace()[calls as usize + 4].name, "open");
    assert_eq!(k.trace()[calls as usize + 4].step, Step::OpenCdev);
    assert!(!k.failure_pending());
    assert_eq!((ctx.device(&edu).unwrap().backend(), ctx.active_backend()), (Backend::Legacy, Some(Backend::Legacy)));
    // One address space: the next device follows the legacy container.
    let edu2 = ctx.setup(EDU2).unwrap();
    assert_eq!(ctx.device(&edu2).unwrap().backend(), Backend::Legacy);
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0, 0));
    // Forced iommufd does not fall back: the refusal is the answer.
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    k.fail_call(3, Errno::ACCESS);
    let e = ctx.setup(EDU).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Permission { node: dao_vfio::DevNode::Cdev(_) }), "{e}");
    assert_eq!(k.open_fds(), HELD);
}

#[test]
fn many_iova_ranges_narrow_the_allocator() {
    // More holes than one IOMMU_IOAS_IOVA_RANGES answer holds (16): the kernel
    // fills the room and says EMSGSIZE; the first 16 are used.
    let k = system(true, true);
    let ranges: Vec<(u64, u64)> = (0..20u64).map(|i| (0x100_0000 * (i + 1), 0x100_0000 * (i + 1) + 0xf_ffff)).collect();
    k.set_iova_ranges(&ranges);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let info = ctx.iommu_info().unwrap();
    assert_eq!(info.ranges.len(), 16);
    assert_eq!((info.ranges[0].start, info.ranges[15].end), (0x100_0000, 0x1000_0000 + 0xf_ffff));
    assert_eq!((info.min_page_size(), info.dma_avail), (4096, None));
    let mut buf = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    assert_eq!(ctx.dma(&mut buf).unwrap().iova(), 0x100_0000);
    ctx.dma_free(buf).map_err(|(_, e)| e).unwrap();
    // No range at all: nothing can be mapped. (The ranges are asked again
    // when the devices change, as they depend on them.)
    k.set_iova_ranges(&[]);
    ctx.free(edu).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err().kind(), ErrorKind::NoIova { len: 4096 });
    assert_eq!(k.live_mappings(), 1, "BAR0 only: the refused buffer was released");
    ctx.free(edu).unwrap();
}

#[test]
fn the_last_iommufd_device_takes_dma_with_it_even_when_an_unmap_fails() {
    let k = system(true, true);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let mut buf = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let iova = ctx.dma(&mut buf).unwrap().iova();
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(unsafe { k.dma_write(iova, b"dma") });
    // The first call of the free is IOMMU_IOAS_UNMAP: the kernel keeps the
    // mapping, so the address space is replaced before the memory goes.
    k.fail_call(1, Errno::IO);
    ctx.free(edu).unwrap();
    assert!(!k.failure_pending());
    assert!(k.dma_mappings().is_empty(), "the old address space went with its iommufd");
    assert_eq!((k.open_fds(), k.freed_while_mapped()), (HELD, 0), "a fresh iommufd; no memory freed while mapped");
    assert_eq!(ctx.dma(&mut buf).unwrap_err().kind(), ErrorKind::ForeignHandle);
    // The fresh address space serves the next device, at the same IOVA.
    let edu = ctx.setup(EDU).unwrap();
    let mut again = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    assert_eq!(ctx.dma(&mut again).unwrap().iova(), iova);
    ctx.free(edu).unwrap();
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0, 0));
}

#[test]
fn mappings_the_kernel_keeps_stay_in_the_table_until_they_can_go() {
    for drop_early in [false, true] {
        let k = system(true, true);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let mut buf = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
        let iova = ctx.dma(&mut buf).unwrap().iova();
        // The unmap fails, and no fresh iommufd can be opened either.
        k.fail_call(1, Errno::IO);
        k.set_iommufd(false, true);
        let err = ctx.free(edu).unwrap_err();
        assert_eq!((err.kind(), err.errno()), (dao_vfio::ErrorKind::Syscall(Step::IoasUnmap), Some(Errno::IO)));
        assert_eq!((ctx.device_count(), k.iommufd_attached()), (0, 0), "the device is closed all the same");
        assert_eq!(k.dma_mappings(), vec![(iova, 4096)], "kept by the kernel, and so by the table");
        assert_eq!(ctx.dma(&mut buf).unwrap().iova(), iova);
        assert_eq!(k.freed_while_mapped(), 0);
        if drop_early {
            // Dropping the context closes the iommufd, then releases the memory.
            drop(ctx);
        } else {
            // The address space holding them stays the context's: a device
            // only the legacy container could open is refused...
            k.set_iommufd(true, false);
            assert_eq!(ctx.setup(EDU).unwrap_err().kind(), ErrorKind::MixedBackends);
            // ...and the next one attached there finds the mapping in place.
            k.set_iommufd(true, true);
            let edu = ctx.setup(EDU).unwrap();
            // SAFETY: the device's DMA runs on this thread, the buffer's only user.
            assert!(unsafe { k.dma_write(iova, b"still here") });
            ctx.dma_free(buf).map_err(|(_, e)| e).unwrap();
            ctx.free(edu).unwrap();
            drop(ctx);
        }
        assert_eq!(clean(&k), (0, 0, 0, 0), "drop early: {drop_early}");
    }
}

#[test]
fn a_cdev_that_went_to_another_device_is_refused() {
    // Between the cdev's listing and its open, the device was unbound and
    // its cdev's number went to another device: the lookup from the listed
    // directory finds no `vfioN` (ENOENT). Setup says the device went away
    // and leaves nothing open.
    let k = system(true, true);
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    let (fds, calls) = (k.open_fds(), k.calls() as usize);
    // The listing (open, getdents), the cdev's open, then the proof.
    k.fail_call(4, Errno::NOENT);
    let e = ctx.setup(EDU).unwrap_err();
    let trace = k.trace();
    let names: Vec<&str> = trace[calls..calls + 4].iter().map(|c| c.name).collect();
    assert_eq!(names, ["openat", "getdents", "open", "readlinkat"]);
    assert_eq!((trace[calls].step, trace[calls + 2].step), (Step::FindCdev, Step::OpenCdev));
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(Step::OpenCdev), Some(Errno::NODEV)), "{e}");
    assert_eq!((k.open_fds(), ctx.device_count(), ctx.group_count()), (fds, 0, 0));
    // Without the failure the proof holds: the same setup succeeds.
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Iommufd);
    assert_eq!(ctx.device(&edu).unwrap().group().unwrap(), 3);
}

#[test]
fn a_cdev_without_its_node_says_so_when_iommufd_is_forced() {
    // The cdev is listed in sysfs, but /dev/vfio/devices/vfioN is not there
    // (no devtmpfs, or a container given only some nodes): the open's ENOENT
    // is the news, not a kernel without cdevs.
    let k = system(true, true);
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    let fds = k.open_fds();
    // The cdev's listing (open, getdents), then the cdev's open.
    k.fail_call(3, Errno::NOENT);
    let e = ctx.setup(EDU).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Syscall(Step::OpenCdev), "{e}");
    assert_eq!((k.open_fds(), ctx.device_count(), ctx.group_count()), (fds, 0, 0));
    // Without the failure, the same setup succeeds through the cdev.
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Iommufd);
}

#[test]
fn a_directory_the_context_could_not_hold_leaves_whole_paths() {
    // Context open: /dev/iommu, the IOAS, then /sys/bus/pci/devices and
    // /sys/bus/platform/devices. One that fails to open is not held, and
    // setup walks the whole path there instead.
    let k = system(true, true);
    k.fail_call(3, Errno::MFILE);
    let mut ctx = Ctx::with_backend(&k, Backend::Iommufd).unwrap();
    assert!(!k.failure_pending());
    assert_eq!(k.open_fds(), HELD - 1, "/sys/bus/pci/devices is not held");
    let calls = k.calls() as usize;
    let edu = ctx.setup(EDU).unwrap();
    let trace = k.trace();
    let names: Vec<&str> = trace[calls..calls + 4].iter().map(|c| c.name).collect();
    assert_eq!(names, ["open", "getdents", "open", "readlinkat"]);
    let dev = ctx.device(&edu).unwrap();
    assert_eq!((dev.backend(), dev.region(0).unwrap().read32(0)), (Backend::Iommufd, Ok(0x010000ed)));
    ctx.free(edu).unwrap();
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0, 0));
}
