//! Interrupts, DMA, PCI config space, reset and sparse mmap against the fake
//! kernel, including a failure walk over each new system call path.

use std::time::Duration;

use dao_vfio::fake::{FakeDevice, FakeKernel, FakeRegion};
use dao_vfio::pci_caps::cap_id;
use dao_vfio::sys::{pci_irq, IrqFlags};
use dao_vfio::{
    AccessError, Backend, BarKind, Context, DmaDirection, DmaOptions, Errno, ErrorKind, IovaRange, PciCommand,
    RegionKind,
};

const EDU: &str = "0000:00:02.0";
const RTC: &str = "9010000.pl031";

type Ctx<'k> = Context<&'k FakeKernel>;

/// edu in IOMMU group 3 and pl031 in noiommu group 0, on a kernel with
/// iommufd and VFIO device cdevs (`Backend::Auto` opens edu through them, as
/// on the aarch64 board) or without (the legacy container, as on x86_64).
fn board(iommufd: bool) -> FakeKernel {
    let k = FakeKernel::new();
    k.set_iommufd(iommufd, iommufd);
    k.add_device(FakeDevice::edu(EDU, 3));
    k.add_device(FakeDevice::platform(RTC, 0));
    k
}

/// Runs a test against the legacy kernel, then the iommufd one.
fn on_both_backends(test: fn(bool)) {
    for iommufd in [false, true] {
        test(iommufd);
    }
}

#[test]
fn msi_eventfd_receives_interrupts() {
    on_both_backends(msi_eventfd_receives_interrupts_on);
}

fn msi_eventfd_receives_interrupts_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let held = k.open_fds();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(
        ctx.device(&edu).unwrap().interrupt(pci_irq::MSI, 0).unwrap_err().kind(),
        ErrorKind::IrqNotEnabled { index: pci_irq::MSI, vector: 0 }
    );
    ctx.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    assert!(k.irq_bound(EDU, pci_irq::MSI, 0));
    let irq = ctx.device(&edu).unwrap().interrupt(pci_irq::MSI, 0).unwrap();
    assert_eq!(irq.wait_timeout(Duration::from_millis(10)).unwrap(), None);
    // An MSI is a memory write: with bus mastering off, as on hardware, none arrives.
    assert!(!k.raise_irq(EDU, pci_irq::MSI, 0), "delivered with bus mastering off");
    ctx.device(&edu).unwrap().pci_command_set(PciCommand::BUS_MASTER).unwrap();
    assert!(k.raise_irq(EDU, pci_irq::MSI, 0));
    assert!(k.raise_irq(EDU, pci_irq::MSI, 0));
    assert_eq!(irq.wait().unwrap(), 2, "the eventfd counts both");
    assert_eq!(irq.mask().unwrap_err().kind(), ErrorKind::NotMaskable { index: pci_irq::MSI });
    let fds = k.open_fds();
    ctx.irq_disable(&edu, pci_irq::MSI).unwrap();
    assert_eq!(k.open_fds(), fds - 1, "the eventfd is closed");
    assert!(!k.raise_irq(EDU, pci_irq::MSI, 0));
    ctx.free(edu).unwrap();
    assert_eq!(k.open_fds(), held, "what the open context held");
}

#[test]
fn level_interrupt_masks_itself_until_unmasked() {
    on_both_backends(level_interrupt_masks_itself_until_unmasked_on);
}

fn level_interrupt_masks_itself_until_unmasked_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let held = k.open_fds();
    let rtc = ctx.setup(RTC).unwrap();
    ctx.irq_enable(&rtc, 0, 1).unwrap();
    let irq = ctx.device(&rtc).unwrap().interrupt(0, 0).unwrap();
    assert!(irq.flags().contains(IrqFlags::AUTOMASKED));
    assert!(k.raise_irq(RTC, 0, 0));
    assert_eq!(irq.wait().unwrap(), 1);
    assert!(k.irq_masked(RTC, 0, 0), "automasked after firing");
    assert!(!k.raise_irq(RTC, 0, 0), "masked: not delivered");
    irq.unmask().unwrap();
    assert!(k.raise_irq(RTC, 0, 0));
    assert_eq!(irq.wait_timeout(Duration::from_secs(1)).unwrap(), Some(1));
    irq.mask().unwrap();
    assert!(k.irq_masked(RTC, 0, 0));
    // Freeing the device closes its eventfds (its noiommu container stays).
    ctx.free(rtc).unwrap();
    assert_eq!(k.open_fds(), held + 1);
}

#[test]
fn interrupt_requests_are_checked() {
    on_both_backends(interrupt_requests_are_checked_on);
}

fn interrupt_requests_are_checked_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let fds = k.open_fds();
    let err = |r: Result<(), dao_vfio::Error>| r.unwrap_err().kind();
    assert_eq!(err(ctx.irq_enable(&edu, 9, 1)), ErrorKind::NoSuchIrq { index: 9 });
    assert_eq!(err(ctx.irq_enable(&edu, pci_irq::ERR, 1)), ErrorKind::NoSuchIrq { index: pci_irq::ERR });
    assert_eq!(err(ctx.irq_enable(&edu, pci_irq::MSI, 2)), ErrorKind::TooManyVectors { requested: 2, available: 1 });
    assert_eq!(err(ctx.irq_enable(&edu, pci_irq::MSI, 0)), ErrorKind::TooManyVectors { requested: 0, available: 1 });
    assert_eq!(err(ctx.irq_disable(&edu, pci_irq::MSI)), ErrorKind::IrqNotEnabled { index: pci_irq::MSI, vector: 0 });
    ctx.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    assert_eq!(err(ctx.irq_enable(&edu, pci_irq::MSI, 1)), ErrorKind::IrqAlreadyEnabled { index: pci_irq::MSI });
    assert_eq!(k.open_fds(), fds + 1);
    ctx.free(edu).unwrap();
}

#[test]
fn every_irq_enable_failure_point_leaves_nothing_behind() {
    on_both_backends(every_irq_enable_failure_point_leaves_nothing_behind_on);
}

fn every_irq_enable_failure_point_leaves_nothing_behind_on(iommufd: bool) {
    let mut n = 1;
    loop {
        let k = board(iommufd);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let fds = k.open_fds();
        k.fail_call(n, Errno::IO);
        let result = ctx.irq_enable(&edu, pci_irq::MSI, 1);
        if k.failure_pending() {
            k.clear_failure();
            result.unwrap();
            break;
        }
        assert_eq!(result.unwrap_err().errno(), Some(Errno::IO));
        assert_eq!(k.open_fds(), fds, "call {n} leaked an eventfd");
        assert!(!k.irq_bound(EDU, pci_irq::MSI, 0));
        ctx.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
        ctx.free(edu).unwrap();
        n += 1;
    }
    println!("irq enable failure walk: {} failure points", n - 1);
    assert_eq!(n - 1, 3, "VFIO_DEVICE_GET_IRQ_INFO, eventfd and VFIO_DEVICE_SET_IRQS");
}

/// `write64s`/`read64s`: consecutive words, one check for the span; the
/// device sees each word where `write64` would have put it; a refused span
/// (misaligned, or any part outside) writes and reads nothing.
#[test]
fn dma_word_spans_are_checked_once_and_whole() {
    let k = board(false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let mut h = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let iova = ctx.dma(&mut h).unwrap().iova();
    let buf = ctx.dma(&mut h).unwrap();
    let entry: [u64; 8] = core::array::from_fn(|i| (0x1111_0000_0000_0000 * (i as u64 + 1)) | i as u64);
    buf.write64s(0x40, &entry).unwrap();
    let mut seen = [0u8; 64];
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(unsafe { k.dma_read(iova + 0x40, &mut seen) });
    for (i, word) in seen.chunks(8).enumerate() {
        assert_eq!(u64::from_le_bytes(word.try_into().unwrap()), entry[i], "word {i} as write64 puts it");
        assert_eq!(buf.read64(0x40 + 8 * i), Ok(entry[i]));
    }
    let mut back = [0u64; 8];
    buf.read64s(0x40, &mut back).unwrap();
    assert_eq!(back, entry);
    // The last words of the buffer fit; one word further does not.
    buf.write64s(4096 - 16, &[7, 8]).unwrap();
    let mut two = [0u64; 2];
    buf.read64s(4096 - 16, &mut two).unwrap();
    assert_eq!(two, [7, 8]);
    let past = AccessError::OutOfBounds { offset: 4096 - 8, width: 16, len: 4096 };
    assert_eq!(buf.write64s(4096 - 8, &[1, 2]), Err(past));
    assert_eq!(buf.read64(4096 - 8), Ok(8), "a refused span writes not even its first word");
    let mut untouched = [9u64; 2];
    assert_eq!(buf.read64s(4096 - 8, &mut untouched), Err(past));
    assert_eq!(untouched, [9, 9], "a refused read leaves the output as it was");
    assert_eq!(buf.write64s(0x44, &entry), Err(AccessError::Misaligned { offset: 0x44, align: 8 }));
    assert_eq!(buf.read64s(0x3c, &mut back), Err(AccessError::Misaligned { offset: 0x3c, align: 8 }));
    assert_eq!(buf.read64(0x40), Ok(entry[0]), "a misaligned span writes nothing");
    // An offset near the end of the address space is refused, not wrapped.
    let far = AccessError::OutOfBounds { offset: usize::MAX - 7, width: 8, len: 4096 };
    assert_eq!(buf.write64s(usize::MAX - 7, &[0]), Err(far));
    // No words: nothing to write, but the offset must still be inside.
    assert_eq!(buf.write64s(4096, &[]), Ok(()));
    assert_eq!(buf.write64s(4104, &[]), Err(AccessError::OutOfBounds { offset: 4104, width: 0, len: 4096 }));
    ctx.dma_free(h).unwrap();
    ctx.free(edu).unwrap();
}

#[test]
fn dma_buffers_are_mapped_inside_the_iova_ranges() {
    on_both_backends(dma_buffers_are_mapped_inside_the_iova_ranges_on);
}

fn dma_buffers_are_mapped_inside_the_iova_ranges_on(iommufd: bool) {
    let k = board(iommufd);
    k.set_iova_ranges(&[(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff_ffff)]);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    assert_eq!(ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err().kind(), ErrorKind::NoDmaDomain);
    let rtc = ctx.setup(RTC).unwrap();
    assert_eq!(ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err().kind(), ErrorKind::NoIommuDma);
    let edu = ctx.setup(EDU).unwrap();
    let info = ctx.iommu_info().unwrap();
    assert_eq!(info.min_page_size(), 4096);
    assert_eq!(
        info.ranges.as_slice(),
        &[IovaRange { start: 0, end: 0xfedf_ffff }, IovaRange { start: 0xfef0_0000, end: 0xffff_ffff_ffff }]
    );
    // iommufd reports no mapping count.
    assert_eq!(info.dma_avail, if iommufd { None } else { Some(65535) });
    let expected = if iommufd { Backend::Iommufd } else { Backend::Legacy };
    assert_eq!((ctx.device(&edu).unwrap().backend(), ctx.active_backend()), (expected, Some(expected)));
    assert_eq!(ctx.device(&rtc).unwrap().backend(), Backend::Legacy, "noiommu: always the legacy path");

    let mut a = ctx.dma_alloc(4096, DmaOptions { locked: true, ..Default::default() }).unwrap();
    let mut b = ctx.dma_alloc(5000, DmaOptions::default()).unwrap();
    let (ia, ib) = (ctx.dma(&mut a).unwrap().iova(), ctx.dma(&mut b).unwrap().iova());
    assert_eq!(ia, 0x10_0000, "the allocator starts above the first MiB");
    assert_eq!((ib, ctx.dma(&mut b).unwrap().len()), (0x10_1000, 8192), "rounded to pages, no overlap");
    assert_eq!(k.dma_mappings(), vec![(ia, 4096), (ib, 8192)]);

    // The device writes through the IOMMU; the CPU sees it.
    let buf = ctx.dma(&mut a).unwrap();
    buf.write(0, b"hello").unwrap();
    let mut seen = [0u8; 5];
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(unsafe { k.dma_read(ia, &mut seen) });
    assert_eq!(&seen, b"hello");
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(unsafe { k.dma_write(ia + 8, &42u64.to_le_bytes()) });
    assert_eq!(buf.read64(8), Ok(42));
    assert_eq!(buf.read32(4096), Err(AccessError::OutOfBounds { offset: 4096, width: 4, len: 4096 }));
    assert_eq!(buf.write64(4, 0), Err(AccessError::Misaligned { offset: 4, align: 8 }));

    // A chosen IOVA: inside the ranges and free, or refused.
    let fixed = DmaOptions { iova: Some(0xfef0_0000), direction: DmaDirection::ToDevice, ..Default::default() };
    let mut c = ctx.dma_alloc(4096, fixed).unwrap();
    assert_eq!(ctx.dma(&mut c).unwrap().iova(), 0xfef0_0000);
    let in_hole = DmaOptions { iova: Some(0xfee0_0000), ..Default::default() };
    let e = ctx.dma_alloc(4096, in_hole).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IovaUnusable { iova: 0xfee0_0000, len: 4096, reserved: true });
    assert!(e.to_string().contains("reserved range such as the MSI window"), "{e}");
    let taken = DmaOptions { iova: Some(ia), ..Default::default() };
    let e = ctx.dma_alloc(4096, taken).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IovaUnusable { iova: ia, len: 4096, reserved: false });
    assert!(e.to_string().contains("overlaps a DMA mapping"), "{e}");
    let odd = DmaOptions { iova: Some(0x20_0800), ..Default::default() };
    assert_eq!(ctx.dma_alloc(4096, odd).unwrap_err().kind(), ErrorKind::BadDmaRange { page: 4096 });
    assert_eq!(ctx.dma_alloc(0, DmaOptions::default()).unwrap_err().kind(), ErrorKind::BadDmaRange { page: 4096 });
    let huge = DmaOptions { huge_pages: true, ..Default::default() };
    assert_eq!(ctx.dma_alloc(4096, huge).unwrap_err().errno(), Some(Errno::NOMEM), "no huge pages reserved");
    k.set_huge_pages(true);
    let mut h = ctx.dma_alloc(4096, huge).unwrap();
    assert_eq!(ctx.dma(&mut h).unwrap().len(), 2 << 20);

    // Unmapped before released: after free the device cannot reach it.
    ctx.dma_free(a).unwrap();
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(!unsafe { k.dma_write(ia, b"late") });
    assert_eq!(k.dma_mappings().len(), 3);
    ctx.free(rtc).unwrap();
    // The last IOMMU-backed device takes the remaining mappings with it.
    let mappings = k.live_mappings();
    ctx.free(edu).unwrap();
    assert!(k.dma_mappings().is_empty());
    assert_eq!(k.live_mappings(), mappings - 1 - 3, "BAR0 and the three buffers released");
    assert_eq!(ctx.dma(&mut b).unwrap_err().kind(), ErrorKind::ForeignHandle);
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes(), k.freed_while_mapped()), (0, 0, 0, 0));
}

#[test]
fn raw_dma_mapping_of_caller_memory() {
    on_both_backends(raw_dma_mapping_of_caller_memory_on);
}

fn raw_dma_mapping_of_caller_memory_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    // Page-aligned caller memory that outlives its mapping.
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let mut page = Box::new(Page([0; 4096]));
    let vaddr = std::ptr::NonNull::new(page.0.as_mut_ptr()).unwrap();
    // SAFETY: `page` lives until after dma_free below and is not touched
    // through Rust references while mapped.
    let mut h = unsafe { ctx.dma_map_raw(vaddr, 4096, Some(0x4000_0000), DmaDirection::FromDevice) }.unwrap();
    // SAFETY: the device's DMA runs on this thread, the buffer's only user.
    assert!(unsafe { k.dma_write(0x4000_0000, &[7, 7, 7]) });
    assert_eq!(ctx.dma(&mut h).unwrap().read32(0), Ok(0x0007_0707));
    ctx.dma_free(h).unwrap();
    assert_eq!(&page.0[..3], &[7, 7, 7], "caller memory is the caller's again");
    // What the IOMMU allows was asked once for this set of devices: from
    // now on a map and an unmap are one system call each, as in C.
    let calls = k.calls();
    // SAFETY: as above.
    let again = unsafe { ctx.dma_map_raw(vaddr, 4096, None, DmaDirection::FromDevice) }.unwrap();
    ctx.dma_free(again).unwrap();
    assert_eq!(k.calls() - calls, 2);
    // SAFETY: misaligned length: refused before anything is mapped.
    let odd = unsafe { ctx.dma_map_raw(vaddr, 100, None, DmaDirection::Bidirectional) };
    assert_eq!(odd.unwrap_err().kind(), ErrorKind::BadDmaRange { page: 4096 });
    ctx.free(edu).unwrap();
}

/// Regression (issue 17.2): the table checked IOVAs but not host addresses,
/// so one piece of memory could be mapped twice, giving two handles and two
/// views that race on two threads.
#[test]
fn the_same_memory_is_not_mapped_twice() {
    on_both_backends(the_same_memory_is_not_mapped_twice_on);
}

fn the_same_memory_is_not_mapped_twice_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    #[repr(C, align(4096))]
    struct Pages([u8; 3 * 4096]);
    let mut pages = Box::new(Pages([0; 3 * 4096]));
    let base = std::ptr::NonNull::new(pages.0.as_mut_ptr()).unwrap();
    // SAFETY: `pages` outlives every mapping of it (all freed below) and is
    // not touched through references while mapped.
    let first = unsafe { ctx.dma_map_raw(base.add(4096), 4096, None, DmaDirection::Bidirectional) }.unwrap();
    let mapped = k.dma_mappings();
    for (at, len) in [(4096, 4096), (0, 2 * 4096), (4096, 2 * 4096), (0, 3 * 4096)] {
        // SAFETY: as above.
        let again = unsafe { ctx.dma_map_raw(base.add(at), len, None, DmaDirection::Bidirectional) };
        let e = again.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::DmaMemoryMapped { len: 4096, .. }), "{e}");
        assert!(e.to_string().contains("already mapped for DMA"), "{e}");
        assert_eq!(k.dma_mappings(), mapped, "nothing more mapped");
    }
    // Beside it is fine.
    // SAFETY: as above.
    let beside = unsafe { ctx.dma_map_raw(base, 4096, None, DmaDirection::Bidirectional) }.unwrap();
    // A buffer's own memory cannot be mapped again either.
    let mut buffer = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let buffer_memory = ctx.dma(&mut buffer).unwrap().as_ptr();
    // SAFETY: refused before anything is mapped.
    let e = unsafe { ctx.dma_map_raw(buffer_memory, 4096, None, DmaDirection::Bidirectional) }.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DmaMemoryMapped { .. }), "{e}");
    for h in [first, beside, buffer] {
        ctx.dma_free(h).unwrap();
    }
    ctx.free(edu).unwrap();
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.freed_while_mapped()), (0, 0, 0));
    drop(pages);
}

/// Regression (issue 17.7): when the kernel refused both the unmap and the
/// detach of the last group, the table forgot a raw mapping the container
/// might still hold, telling the caller its memory was free. Every pair of
/// failing calls of that free: a mapping is either removed from the IOMMU
/// (and from the table) or stays in the table, stranded.
#[test]
fn a_mapping_the_kernel_may_keep_is_never_forgotten() {
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let free_calls = {
        let k = board(false);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let mut page = Box::new(Page([0; 4096]));
        let vaddr = std::ptr::NonNull::new(page.0.as_mut_ptr()).unwrap();
        // SAFETY: `page` outlives the mapping, which the free removes.
        let _mapped = unsafe { ctx.dma_map_raw(vaddr, 4096, None, DmaDirection::Bidirectional) }.unwrap();
        let before = k.calls();
        ctx.free(edu).unwrap();
        drop(ctx);
        drop(page);
        k.calls() - before
    };
    let mut stranded_cases = 0;
    for first in 1..=free_calls {
        for second in first + 1..=free_calls {
            let k = board(false);
            let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
            let edu = ctx.setup(EDU).unwrap();
            let mut page = Box::new(Page([0; 4096]));
            let vaddr = std::ptr::NonNull::new(page.0.as_mut_ptr()).unwrap();
            // SAFETY: `page` outlives the context (dropped below, after it)
            // and is only reached through the mapping meanwhile.
            let mut h = unsafe { ctx.dma_map_raw(vaddr, 4096, None, DmaDirection::Bidirectional) }.unwrap();
            let iova = ctx.dma(&mut h).unwrap().iova();
            let before = k.calls() as usize;
            k.fail_call(first, Errno::IO);
            k.fail_call(second, Errno::IO);
            let result = ctx.free(edu);
            let failed = [k.trace()[before + first as usize - 1].name, k.trace()[before + second as usize - 1].name];
            let stuck_regions = failed.iter().filter(|c| **c == "munmap").count();
            match ctx.dma(&mut h) {
                Ok(_) => {
                    // Kept: the free said why, and freeing the mapping says
                    // it stays until the context drops.
                    stranded_cases += 1;
                    let e = result.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Syscall(dao_vfio::Step::UnsetContainer), "{first},{second}: {e}");
                    let (back, e) = ctx.dma_free(h).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::DmaStranded, "{e}");
                    assert!(e.to_string().contains("until the context is dropped"), "{e}");
                    h = back;
                }
                Err(e) => {
                    // Forgotten only when no IOMMU maps the memory any more.
                    assert_eq!(e.kind(), ErrorKind::ForeignHandle);
                    let live = k.dma_mappings().iter().any(|&(at, _)| at == iova);
                    assert!(!live, "calls {first},{second}: the caller was told a live mapping is gone");
                }
            }
            k.clear_failure();
            // The context goes on: another device, its DMA.
            let again = ctx.setup(EDU).unwrap();
            let buffer = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
            ctx.dma_free(buffer).unwrap();
            ctx.free(again).unwrap();
            drop(h);
            drop(ctx);
            // Only a region whose munmap the kernel refused stays mapped.
            assert_eq!(
                (k.open_fds(), k.live_mappings(), k.bad_closes()),
                (0, stuck_regions, 0),
                "calls {first},{second}"
            );
            drop(page);
        }
    }
    assert_eq!(stranded_cases, 1, "exactly one pair is the unmap and the detach");
}

#[test]
fn full_dma_table_and_kernel_limit() {
    on_both_backends(full_dma_table_and_kernel_limit_on);
}

fn full_dma_table_and_kernel_limit_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Context<&FakeKernel, 8, 8, 2> = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let a = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let b = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let mappings = k.live_mappings();
    assert_eq!(ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err().kind(), ErrorKind::DmaTableFull { capacity: 2 });
    assert_eq!(k.live_mappings(), mappings, "refused before allocating");
    ctx.dma_free(a).unwrap();
    if !iommufd {
        // type1's own limit on mappings (dma_entry_limit); iommufd has none.
        k.set_dma_limit(1);
        let err = ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::NOSPC), "{err}");
        assert_eq!(k.live_mappings(), mappings - 1, "the refused buffer's memory is released");
    }
    ctx.dma_free(b).unwrap();
    ctx.free(edu).unwrap();
}

#[test]
fn every_dma_failure_point_leaves_nothing_behind() {
    on_both_backends(every_dma_failure_point_leaves_nothing_behind_on);
}

fn every_dma_failure_point_leaves_nothing_behind_on(iommufd: bool) {
    let mut points = 0;
    for locked in [false, true] {
        let mut n = 1;
        loop {
            let k = board(iommufd);
            let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
            let edu = ctx.setup(EDU).unwrap();
            let (fds, mappings) = (k.open_fds(), k.live_mappings());
            k.fail_call(n, Errno::IO);
            let result = ctx.dma_alloc(8192, DmaOptions { locked, ..Default::default() });
            if k.failure_pending() {
                k.clear_failure();
                let h = result.unwrap();
                // Free: unmap from the IOMMU, then release; a failed unmap keeps the memory.
                let mut m = 1;
                loop {
                    let k2 = board(iommufd);
                    let mut ctx2: Ctx = Context::with_kernel(&k2).unwrap();
                    let edu2 = ctx2.setup(EDU).unwrap();
                    let mut h2 = ctx2.dma_alloc(8192, DmaOptions::default()).unwrap();
                    let iova = ctx2.dma(&mut h2).unwrap().iova();
                    k2.fail_call(m, Errno::IO);
                    let freed = ctx2.dma_free(h2);
                    if k2.failure_pending() {
                        freed.unwrap();
                        break;
                    }
                    let failed_call = k2.failed_call().expect("a call failed").name;
                    let (mut back, err) = freed.unwrap_err();
                    assert_eq!(err.errno(), Some(Errno::IO));
                    if failed_call == "ioctl" {
                        // SAFETY: the device's DMA runs on this thread, the buffer's only user.
                        assert!(unsafe { k2.dma_write(iova, b"x") }, "still mapped, so its memory was kept");
                        assert_eq!(ctx2.dma(&mut back).unwrap().iova(), iova, "the handle came back");
                        ctx2.dma_free(back).unwrap();
                    }
                    drop(ctx2);
                    let _ = edu2;
                    assert_eq!((k2.open_fds(), k2.dma_mappings().len(), k2.freed_while_mapped()), (0, 0, 0));
                    m += 1;
                    points += 1;
                }
                ctx.dma_free(h).unwrap();
                break;
            }
            assert_eq!(result.unwrap_err().errno(), Some(Errno::IO));
            assert_eq!((k.open_fds(), k.live_mappings(), k.dma_mappings().len()), (fds, mappings, 0), "call {n}");
            let h = ctx.dma_alloc(8192, DmaOptions::default()).unwrap();
            ctx.dma_free(h).unwrap();
            ctx.free(edu).unwrap();
            n += 1;
            points += 1;
        }
    }
    println!("DMA failure walk: {points} failure points");
    assert!(points >= 7);
}

#[test]
fn pci_config_space_command_bars_and_capabilities() {
    on_both_backends(pci_config_space_command_bars_and_capabilities_on);
}

fn pci_config_space_command_bars_and_capabilities_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let dev = ctx.device(&edu).unwrap();
    assert_eq!(dev.config_read16(0).unwrap(), 0x1234);
    assert_eq!(dev.config_read16(2).unwrap(), 0x11e8);
    assert_eq!(dev.pci_command().unwrap(), PciCommand::empty());
    dev.enable_bus_master().unwrap();
    let cmd = dev.pci_command_set(PciCommand::MEMORY_SPACE).unwrap();
    assert_eq!(cmd, PciCommand::BUS_MASTER | PciCommand::MEMORY_SPACE);
    assert_eq!(dev.pci_command_clear(PciCommand::BUS_MASTER).unwrap(), PciCommand::MEMORY_SPACE);
    let caps = dev.pci_capabilities().unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!((caps[0].id, caps[0].offset, caps[0].extended), (cap_id::MSI, 0x40, false));
    let bars = dev.pci_bars().unwrap();
    assert_eq!(bars[0].kind, BarKind::Memory { is_64bit: false, prefetchable: false });
    assert_eq!(bars[0].size, 0x10_0000);
    assert!(bars[1..].iter().all(|b| b.kind == BarKind::Unused));
    assert_eq!(
        dev.config_read32(0x100).unwrap_err().kind(),
        ErrorKind::RegionAccess { region: 7, error: AccessError::OutOfBounds { offset: 0x100, width: 4, len: 0x100 } }
    );
    // Reset: edu has none; refused without a system call.
    let calls = k.calls();
    assert_eq!(dev.reset().unwrap_err().kind(), ErrorKind::ResetUnsupported);
    assert_eq!(k.calls(), calls);
    let rtc = ctx.setup(RTC).unwrap();
    assert_eq!(ctx.device(&rtc).unwrap().config_read8(0).unwrap_err().kind(), ErrorKind::NotPci);
    ctx.free(rtc).unwrap();
    ctx.free(edu).unwrap();
}

#[test]
fn reset_where_the_device_supports_it() {
    on_both_backends(reset_where_the_device_supports_it_on);
}

fn reset_where_the_device_supports_it_on(iommufd: bool) {
    let k = FakeKernel::new();
    k.set_iommufd(iommufd, iommufd);
    k.add_device(FakeDevice::edu(EDU, 3).with_reset());
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    ctx.device(&edu).unwrap().reset().unwrap();
    assert_eq!(k.resets(EDU), 1);
    ctx.free(edu).unwrap();
}

#[test]
fn sparse_regions_map_only_their_areas() {
    on_both_backends(sparse_regions_map_only_their_areas_on);
}

fn sparse_regions_map_only_their_areas_on(iommufd: bool) {
    let k = FakeKernel::new();
    k.set_iommufd(iommufd, iommufd);
    // A 16 KiB BAR whose MSI-X table page (0x1000..0x2000) may not be mapped.
    let bar = FakeRegion::mmio(0x4000).with_sparse_areas(&[(0, 0x1000), (0x2000, 0x2000)]);
    let mut edu = FakeDevice::edu(EDU, 3);
    edu.regions[0] = bar;
    k.add_device(edu);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let h = ctx.setup(EDU).unwrap();
    let dev = ctx.device(&h).unwrap();
    let r = dev.region(0).unwrap();
    assert_eq!(r.kind(), RegionKind::Sparse);
    assert!(!r.is_mapped());
    assert_eq!(r.mapped_areas().collect::<Vec<_>>(), vec![(0, 0x1000), (0x2000, 0x2000)]);
    assert_eq!(k.live_mappings(), 2);
    r.write32(0x10, 5).unwrap();
    assert_eq!(r.read32(0x10), Ok(5));
    r.write64(0x3ff8, 6).unwrap();
    assert_eq!(r.read64(0x3ff8), Ok(6));
    assert_eq!(r.read32(0x1000), Err(AccessError::NotMapped), "the hole is not mapped");
    assert_eq!(r.read32(0x0ffe), Err(AccessError::Misaligned { offset: 0xffe, align: 4 }));
    assert_eq!(r.read32(0x4000), Err(AccessError::OutOfBounds { offset: 0x4000, width: 4, len: 0x4000 }));
    // The hole is still reachable through pread/pwrite.
    dev.write_region(0, 0x1000, &[1, 2, 3, 4]).unwrap();
    let mut back = [0u8; 4];
    dev.read_region(0, 0x1000, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
    ctx.free(h).unwrap();
    assert_eq!(k.live_mappings(), 0);
}

#[test]
fn every_sparse_setup_failure_point_leaves_nothing_behind() {
    on_both_backends(every_sparse_setup_failure_point_leaves_nothing_behind_on);
}

fn every_sparse_setup_failure_point_leaves_nothing_behind_on(iommufd: bool) {
    let mut n = 1;
    loop {
        let k = FakeKernel::new();
        k.set_iommufd(iommufd, iommufd);
        let mut edu = FakeDevice::edu(EDU, 3);
        edu.regions[0] = FakeRegion::mmio(0x4000).with_sparse_areas(&[(0, 0x1000), (0x2000, 0x2000)]);
        k.add_device(edu);
        let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
        let held = k.open_fds();
        k.fail_call(n, Errno::IO);
        let result = ctx.setup(EDU);
        if k.failure_pending() {
            k.clear_failure();
            ctx.free(result.unwrap()).unwrap();
            break;
        }
        assert!(result.is_err());
        assert_eq!((k.open_fds(), k.live_mappings()), (held, 0), "call {n}");
        n += 1;
    }
    println!("sparse setup failure walk: {} failure points", n - 1);
}

#[test]
fn single_call_operations_report_their_failure() {
    on_both_backends(single_call_operations_report_their_failure_on);
}

fn single_call_operations_report_their_failure_on(iommufd: bool) {
    let k = board(iommufd);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    let rtc = ctx.setup(RTC).unwrap();
    ctx.irq_enable(&rtc, 0, 1).unwrap();
    ctx.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let buf = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
    let fds = k.open_fds();
    let check = |what: &str, result: Result<(), dao_vfio::Error>, step: dao_vfio::Step| {
        let err = result.unwrap_err();
        assert_eq!((err.kind(), err.errno()), (ErrorKind::Syscall(step), Some(Errno::IO)), "{what}: {err}");
    };
    {
        let dev = ctx.device(&edu).unwrap();
        let irq = ctx.device(&rtc).unwrap().interrupt(0, 0).unwrap();
        k.fail_call(1, Errno::IO);
        check("config read", dev.config_read16(0).map(drop), dao_vfio::Step::Pread(7));
        k.fail_call(1, Errno::IO);
        check("config write", dev.config_write8(0x0c, 0), dao_vfio::Step::Pwrite(7));
        k.fail_call(1, Errno::IO);
        check("wait", irq.wait().map(drop), dao_vfio::Step::ReadEventfd);
        // Nothing pending: the read answers EAGAIN, then the poll fails.
        k.fail_call(2, Errno::IO);
        check("wait with timeout", irq.wait_timeout(Duration::from_millis(1)).map(drop), dao_vfio::Step::Poll);
        // The fake never blocks: a wait nobody will answer fails instead.
        assert_eq!(irq.wait().unwrap_err().errno(), Some(Errno::DEADLK));
        assert_eq!(irq.take().unwrap(), None);
        k.fail_call(1, Errno::IO);
        check("unmask", irq.unmask(), dao_vfio::Step::SetIrqs(0));
        k.fail_call(1, Errno::IO);
        check("capabilities", dev.pci_capabilities().map(drop), dao_vfio::Step::Pread(7));
        k.fail_call(1, Errno::IO);
        let step = if iommufd { dao_vfio::Step::IoasIovaRanges } else { dao_vfio::Step::IommuInfo };
        check("iommu info", ctx.iommu_info().map(drop), step);
    }
    // A refused disable still closes the eventfd: nothing leaks.
    k.fail_call(1, Errno::IO);
    check("irq disable", ctx.irq_disable(&edu, pci_irq::MSI), dao_vfio::Step::SetIrqs(pci_irq::MSI));
    assert_eq!(k.open_fds(), fds - 1);
    assert!(ctx.device(&edu).unwrap().interrupt(pci_irq::MSI, 0).is_err());
    ctx.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    ctx.dma_free(buf).unwrap();
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
}
