//! Real-kernel tests of interrupts, DMA, PCI config space and reset: run on
//! the virtual boards (`tests/board/test`), ignored on the host.

use std::time::Duration;

use dao_vfio::pci_caps::{self, cap_id};
use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{DmaDirection, DmaOptions, ErrorKind, PciCommand};

mod common;
use common::{dev, edu_dma, Edu};

/// edu's own buffer, at this device address.
const EDU_BUFFER: u64 = 0x40000;
/// Bytes per transfer: less than edu's 4 KiB buffer, because QEMU's edu
/// rejects (with a fatal hardware error) a transfer that ends exactly at the
/// buffer's end.
const XFER: usize = 2048;

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_dma_round_trip_through_the_iommu() {
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    let info = vfio.iommu_info().unwrap();
    assert!(info.page_sizes & 0x1000 != 0, "4 KiB IOMMU pages: {info:?}");
    assert!(!info.ranges.is_empty());
    let cmd = vfio.device(&edu).unwrap().pci_command_set(PciCommand::BUS_MASTER | PciCommand::MEMORY_SPACE).unwrap();
    assert!(cmd.contains(PciCommand::BUS_MASTER), "{cmd:?}");

    let mut src = vfio.dma_alloc(4096, DmaOptions { locked: true, ..Default::default() }).unwrap();
    let mut dst =
        vfio.dma_alloc(4096, DmaOptions { direction: DmaDirection::FromDevice, ..Default::default() }).unwrap();
    let pattern: Vec<u8> = (0..XFER as u32).map(|i| (i * 7 + 3) as u8).collect();
    vfio.dma(&mut src).unwrap().write(0, &pattern).unwrap();
    vfio.dma(&mut dst).unwrap().fill(0, 4096, 0).unwrap();
    let (src_iova, dst_iova) = (vfio.dma(&mut src).unwrap().iova(), vfio.dma(&mut dst).unwrap().iova());
    assert!(dst_iova < 1 << 28, "edu's DMA mask is 28 bits; the allocator starts low");
    {
        let regs = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
        edu_dma(regs, src_iova, EDU_BUFFER, XFER as u64, false);
        edu_dma(regs, EDU_BUFFER, dst_iova, XFER as u64, true);
    }
    let mut back = vec![0u8; XFER];
    vfio.dma(&mut dst).unwrap().read(0, &mut back).unwrap();
    assert_eq!(back, pattern, "RAM -> edu -> RAM through the IOMMU");

    // Caller memory mapped raw, then unmapped: the same DMA no longer reaches it.
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let mut page = Box::new(Page([0; 4096]));
    let vaddr = std::ptr::NonNull::new(page.0.as_mut_ptr()).unwrap();
    // SAFETY: `page` outlives the mapping (freed below before it drops) and
    // is not touched through Rust references while mapped.
    let mut raw = unsafe { vfio.dma_map_raw(vaddr, 4096, None, DmaDirection::FromDevice) }.unwrap();
    let raw_iova = vfio.dma(&mut raw).unwrap().iova();
    {
        let regs = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
        edu_dma(regs, EDU_BUFFER, raw_iova, XFER as u64, true);
    }
    vfio.dma_free(raw).unwrap();
    assert_eq!(&page.0[..XFER], &pattern[..], "the device wrote the mapped page");
    page.0.fill(0xee);
    {
        let regs = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
        edu_dma(regs, EDU_BUFFER, raw_iova, XFER as u64, true);
    }
    assert!(page.0.iter().all(|&b| b == 0xee), "after unmap the IOMMU blocked the DMA");

    vfio.dma_free(src).unwrap();
    vfio.dma_free(dst).unwrap();
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_msi_raised_and_factorial_done() {
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    vfio.device(&edu).unwrap().enable_bus_master().unwrap();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let irq = dev.interrupt(pci_irq::MSI, 0).unwrap();
    let regs = dev.region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
    assert_eq!(irq.wait_timeout(Duration::from_millis(50)).unwrap(), None, "nothing pending yet");
    // SAFETY: edu's interrupt registers only set and clear its status.
    unsafe { regs.irq_raise.write(0x100) };
    assert_eq!(irq.wait_timeout(Duration::from_secs(5)).unwrap(), Some(1), "MSI through the eventfd");
    assert_eq!(regs.irq_status.read(), 0x100);
    // SAFETY: as above.
    unsafe { regs.irq_ack.write(0x100) };
    assert_eq!(regs.irq_status.read(), 0);

    // Factorial with "raise an interrupt when done" (status bit 7).
    // SAFETY: starts a computation; no DMA involved.
    unsafe {
        regs.status.write(0x80);
        regs.factorial.write(6);
    }
    assert_eq!(irq.wait_timeout(Duration::from_secs(5)).unwrap(), Some(1), "factorial-done interrupt");
    assert_eq!(regs.factorial.read(), 720);
    assert_eq!(regs.irq_status.read(), 0x1);
    // SAFETY: as above.
    unsafe { regs.irq_ack.write(0x1) };
    vfio.irq_disable(&edu, pci_irq::MSI).unwrap();
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_reset_is_refused_and_capabilities_match_the_kernel() {
    let bdf = dev("DAO_VFIO_EDU");
    let mut vfio = common::context();
    let edu = vfio.setup(&bdf).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let err = dev.reset().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResetUnsupported, "{err}");
    let caps = dev.pci_capabilities().unwrap();
    println!("edu capabilities through VFIO: {caps:?}");
    assert!(pci_caps::find(&caps, cap_id::MSI, false).is_some(), "edu has MSI: {caps:?}");
    // The same walk over the kernel's own view of config space.
    let raw = std::fs::read(format!("/sys/bus/pci/devices/{bdf}/config")).unwrap();
    let kernel_caps = pci_caps::parse_capabilities(&raw[..raw.len().min(256)]).unwrap();
    assert_eq!(caps.as_slice(), kernel_caps.as_slice());
    assert_eq!(dev.config_read16(0).unwrap(), 0x1234);
    let bars = dev.pci_bars().unwrap();
    assert_eq!(bars[0].size, 0x10_0000);
    assert!(matches!(bars[0].kind, dao_vfio::BarKind::Memory { .. }));
    vfio.free(edu).unwrap();
}

/// The IOVA ranges the kernel gives edu on the aarch64 boards, through
/// either interface: all of the SMMUv3's input address space but the MSI
/// window (0x8000000, 1 MiB, reserved for the GIC ITS doorbell). How far it
/// reaches differs: the SMMU's input size is capped at the kernel's VA_BITS,
/// which is 52 on the 6.12 board (so the SMMU's own 48 bits) but 39 on 6.1,
/// whose arm64 Kconfig defaults to 39-bit VAs with 4 KiB pages: there an
/// IOVA at or above 2^39 cannot be mapped.
#[cfg(target_arch = "aarch64")]
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn iova_ranges_end_at_48_bits_on_6_12_and_at_39_bits_on_6_1() {
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    let info = vfio.iommu_info().unwrap();
    let top = if common::board_is_6_1() { (1u64 << 39) - 1 } else { (1u64 << 48) - 1 };
    let ranges: Vec<(u64, u64)> = info.ranges.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(ranges, [(0, 0x7ff_ffff), (0x810_0000, top)], "{:?} on {}", common::expected_backend(), common::board());
    vfio.free(edu).unwrap();
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use super::common::Pl031;
    use super::*;

    #[test]
    #[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
    fn pl031_alarm_is_a_level_interrupt() {
        let mut vfio = common::context();
        let rtc = vfio.setup(&dev("DAO_VFIO_PL031")).unwrap();
        assert_eq!(vfio.dma_alloc(4096, DmaOptions::default()).unwrap_err().kind(), ErrorKind::NoIommuDma);
        vfio.irq_enable(&rtc, 0, 1).unwrap();
        let dev = vfio.device(&rtc).unwrap();
        let irq = dev.interrupt(0, 0).unwrap();
        let regs = dev.region(0).unwrap().block::<Pl031>(0).unwrap();
        for round in 1..=2 {
            // SAFETY: pl031 alarm registers; no DMA.
            unsafe {
                regs.match_value.write(regs.data.read() + 1);
                regs.irq_mask.write(1);
            }
            let got = irq.wait_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(got, Some(1), "alarm {round}");
            assert_eq!(regs.masked_status.read() & 1, 1);
            // Serve the device, then unmask the automasked interrupt.
            // SAFETY: as above.
            unsafe { regs.irq_clear.write(1) };
            assert_eq!(regs.raw_status.read() & 1, 0);
            irq.unmask().unwrap();
        }
        // SAFETY: as above.
        unsafe { regs.irq_mask.write(0) };
        vfio.irq_disable(&rtc, 0).unwrap();
        vfio.free(rtc).unwrap();
    }
}
