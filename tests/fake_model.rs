//! Device models beyond edu: a platform device whose work finishes only
//! when the driver waits (`DeviceModel::tick`), a level interrupt that
//! masks itself until served, config space and BARs written by the PCI
//! builder, and a model shared by threads.

use dao_vfio::fake::{DeviceContext, DeviceModel, FakeBar, FakeKernel, PciDeviceBuilder, PlatformDeviceBuilder};
use dao_vfio::sys::{pci_irq, IrqFlags, RegionFlags};
use dao_vfio::{BarKind, Context, Errno, ErrorKind, PciCommand, RegionKind, Step};

type Ctx<'k> = Context<&'k FakeKernel>;

const TIMER: &str = "9030000.timer";

/// A countdown timer: writing n to 0x0 starts it; it counts one down each
/// time the driver looks at its interrupt, then raises its level interrupt
/// and sets 0x4 until the driver writes 0x4 to clear it.
#[derive(Default)]
struct Timer {
    remaining: u32,
    expired: bool,
}

impl DeviceModel for Timer {
    fn read(&mut self, _: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize) -> u64 {
        match offset {
            0x0 => u64::from(self.remaining),
            0x4 => u64::from(self.expired),
            _ => 0,
        }
    }

    fn write(&mut self, _: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize, value: u64) {
        match offset {
            0x0 => self.remaining = value as u32,
            0x4 => self.expired = false,
            _ => {}
        }
    }

    fn tick(&mut self, ctx: &mut DeviceContext<'_>) {
        if self.remaining > 0 {
            self.remaining -= 1;
            if self.remaining == 0 {
                self.expired = true;
                assert!(ctx.bus_master(), "a platform device needs no command register");
                ctx.raise_irq(0, 0);
            }
        }
    }
}

#[test]
fn a_device_progresses_when_the_driver_waits_and_its_level_interrupt_masks_itself() {
    let k = FakeKernel::new();
    let timer = PlatformDeviceBuilder::new(TIMER, 1).region(0x1000).level_irq().build();
    k.add_modelled_device(timer, Timer::default());
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let t = vfio.setup(TIMER).unwrap();
    vfio.irq_enable(&t, 0, 1).unwrap();
    let dev = vfio.device(&t).unwrap();
    let (regs, irq) = (dev.region(0).unwrap(), dev.interrupt(0, 0).unwrap());
    assert!(irq.flags().contains(IrqFlags::AUTOMASKED));
    regs.write32(0x0, 3).unwrap();
    // Polled as a data-plane loop does: each look is one tick.
    let mut looks = 0;
    while irq.take().unwrap().is_none() {
        looks += 1;
        assert!(looks < 10, "the timer never fired");
    }
    assert_eq!((looks, regs.read32(0x4).unwrap()), (2, 1), "fired on the third look");
    // Level-triggered: masked until served and unmasked.
    assert!(k.irq_masked(TIMER, 0, 0));
    regs.write32(0x4, 1).unwrap();
    irq.unmask().unwrap();
    // A blocking wait ticks the device too; with nothing armed, it would
    // wait forever: the fake says EDEADLK instead of hanging.
    regs.write32(0x0, 1).unwrap();
    assert_eq!(irq.wait().unwrap(), 1);
    regs.write32(0x4, 1).unwrap();
    irq.unmask().unwrap();
    let e = irq.wait().unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(Step::ReadEventfd), Some(Errno::DEADLK)));
    assert!(e.to_string().contains("[EDEADLK (errno 35)]"), "{e}");
    vfio.free(t).unwrap();
}

/// Registers that are plain storage, counting accesses.
#[derive(Default)]
struct Scratch {
    words: [u64; 4],
    accesses: u64,
}

impl DeviceModel for Scratch {
    fn read(&mut self, _: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize) -> u64 {
        self.accesses += 1;
        if offset == 0x20 {
            return self.accesses;
        }
        self.words[(offset / 8) as usize % 4]
    }

    fn write(&mut self, _: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize, value: u64) {
        self.accesses += 1;
        self.words[(offset / 8) as usize % 4] = value;
    }
}

#[test]
fn the_pci_builder_writes_config_space_bars_and_interrupts_as_vfio_pci_shows_them() {
    let k = FakeKernel::new();
    let nic = PciDeviceBuilder::new("0000:00:03.0", 7)
        .ids(0x1af4, 0x1041)
        .class(0x02_00_00)
        .revision(1)
        .bar(0, FakeBar::memory64(0x4000).prefetchable())
        .bar(2, FakeBar::memory32(0x1000))
        .bar(4, FakeBar::io(0x20))
        .intx()
        .msi(4)
        .msix(8)
        .capability(0x09, &[0xaa, 0xbb])
        .reset();
    k.add_modelled_device(nic.build(), Scratch::default());
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let h = vfio.setup("0000:00:03.0").unwrap();
    let dev = vfio.device(&h).unwrap();
    assert_eq!((dev.config_read16(0).unwrap(), dev.config_read16(2).unwrap()), (0x1af4, 0x1041));
    assert_eq!(dev.config_read32(8).unwrap() >> 8, 0x02_00_00);
    let bars = dev.pci_bars().unwrap();
    assert_eq!(bars[0].kind, BarKind::Memory { is_64bit: true, prefetchable: true });
    assert_eq!(bars[2].kind, BarKind::Memory { is_64bit: false, prefetchable: false });
    assert_eq!((bars[1].kind, bars[4].kind, bars[4].size), (BarKind::Unused, BarKind::Io, 0x20));
    let caps: Vec<u16> = dev.pci_capabilities().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(caps, [0x05, 0x11, 0x09]);
    let irqs: Vec<u32> = dev.irqs().map(|i| i.unwrap().count()).collect();
    assert_eq!(irqs[..3], [1, 4, 8]);
    assert_eq!(dev.region(0).unwrap().kind(), RegionKind::Mapped);
    assert_eq!(dev.region(1).unwrap().kind(), RegionKind::Empty, "the upper half of BAR 0");
    assert_eq!(dev.region(4).unwrap().kind(), RegionKind::Unmapped, "I/O ports: pread/pwrite");
    assert!(dev.region(2).unwrap().flags().contains(RegionFlags::MMAP));
    // The I/O BAR reaches the model through pwrite/pread.
    dev.write_region(4, 8, &0x1122u16.to_le_bytes()).unwrap();
    let mut back = [0u8; 2];
    dev.read_region(4, 8, &mut back).unwrap();
    assert_eq!(u16::from_le_bytes(back), 0x1122);
    dev.reset().unwrap();
    vfio.free(h).unwrap();
}

#[test]
fn threads_share_a_modelled_region_through_the_fakes_lock() {
    let k = FakeKernel::new();
    let dev = PciDeviceBuilder::new("0000:00:04.0", 8).bar(0, FakeBar::memory32(0x1000)).msix(2).build();
    k.add_modelled_device(dev, Scratch::default());
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let h = vfio.setup("0000:00:04.0").unwrap();
    vfio.device(&h).unwrap().pci_command_set(PciCommand::BUS_MASTER).unwrap();
    vfio.irq_enable(&h, pci_irq::MSIX, 2).unwrap();
    let bar = vfio.device(&h).unwrap().region(0).unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                for i in 0..20 {
                    bar.write64(8 * t as usize, i).unwrap();
                    assert_eq!(bar.read64(8 * t as usize).unwrap(), i);
                }
            });
        }
    });
    // Every access reached the model, one at a time: 2 threads x 20 x 2.
    assert_eq!(bar.read64(0x20).unwrap(), 81);
    vfio.free(h).unwrap();
}
