//! `examples/edu`'s driver logic, unchanged, against a fake edu: a PCI
//! device described with `PciDeviceBuilder` and an edu model written with
//! `DeviceModel` from QEMU's docs/specs/edu.rst. The same driver runs on the
//! boards (`tests/board/demo`, `tests/check`).

#[path = "../examples/edu/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dao_vfio::fake::{DeviceContext, DeviceModel, DmaFault, FakeBar, FakeKernel, PciDeviceBuilder, RegisterFile};
use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{AccessError, Context, Errno, ErrorKind, PciCommand, Step, RO};
use driver::{reg, Edu, EDU_BUFFER};

const EDU: &str = "0000:00:01.0";
const TIMEOUT: Duration = Duration::from_secs(1);

/// What the test can see of the model once the fake owns it.
#[derive(Default)]
struct Seen {
    dma_faults: AtomicU32,
    last_fault_bus_master: AtomicU32,
}

/// QEMU's edu, as docs/specs/edu.rst describes it (the parts the driver
/// uses): each operation completes when it is started, as edu's do from
/// the driver's point of view once it polls or waits.
struct EduModel {
    regs: RegisterFile,
    irq_status: u32,
    buffer: Vec<u8>,
    seen: Arc<Seen>,
}

impl EduModel {
    fn new(seen: Arc<Seen>) -> Self {
        EduModel { regs: RegisterFile::new(0x100), irq_status: 0, buffer: vec![0; 4096], seen }
    }

    fn interrupt(&mut self, ctx: &mut DeviceContext<'_>, bits: u32) {
        self.irq_status |= bits;
        ctx.raise_irq(pci_irq::MSI, 0);
    }

    fn run_dma(&mut self, ctx: &mut DeviceContext<'_>) {
        let (src, dst) = (self.regs.read(0x80, 8), self.regs.read(0x88, 8));
        let (count, cmd) = (self.regs.read(0x90, 8) as usize, self.regs.read(0x98, 8));
        let to_ram = cmd & 2 != 0;
        let inside = |addr: u64| addr >= EDU_BUFFER && (addr - EDU_BUFFER) as usize + count <= self.buffer.len();
        let result = if to_ram && inside(src) {
            let at = (src - EDU_BUFFER) as usize;
            // SAFETY: the driver touches its DMA buffers only from the thread
            // whose register write runs this model.
            unsafe { ctx.dma_write(dst, &self.buffer[at..at + count]) }
        } else if !to_ram && inside(dst) {
            let at = (dst - EDU_BUFFER) as usize;
            // SAFETY: as above.
            unsafe { ctx.dma_read(src, &mut self.buffer[at..at + count]) }
        } else {
            Ok(()) // edu ignores a transfer outside its buffer
        };
        if let Err(fault) = result {
            self.seen.dma_faults.fetch_add(1, Ordering::SeqCst);
            self.seen.last_fault_bus_master.store(u32::from(fault == DmaFault::BusMasterOff), Ordering::SeqCst);
        }
        self.regs.write(0x98, 8, cmd & !1);
        if cmd & 4 != 0 {
            self.interrupt(ctx, 0x100);
        }
    }
}

impl DeviceModel for EduModel {
    fn read(&mut self, _: &mut DeviceContext<'_>, region: u32, offset: u64, width: usize) -> u64 {
        assert_eq!(region, pci_region::BAR0);
        match offset {
            0x00 => 0x0100_00ed,
            0x04 => u64::from(!(self.regs.read(0x04, 4) as u32)),
            0x24 => u64::from(self.irq_status),
            // Write-only (irq raise/ack) and unknown registers read as ones, as in QEMU.
            0x60 | 0x64 => u64::MAX >> (64 - 8 * width),
            o if o < 0x100 => self.regs.read(o, width),
            _ => u64::MAX >> (64 - 8 * width),
        }
    }

    fn write(&mut self, ctx: &mut DeviceContext<'_>, _: u32, offset: u64, width: usize, value: u64) {
        match offset {
            0x08 => {
                let n = value as u32;
                let result = (1..=n).fold(1u32, |f, i| f.wrapping_mul(i));
                self.regs.write(0x08, 4, u64::from(result));
                if self.regs.read(0x20, 4) & 0x80 != 0 {
                    self.interrupt(ctx, 0x1);
                }
            }
            0x20 => self.regs.write(0x20, 4, value & 0x80),
            0x60 => self.interrupt(ctx, value as u32),
            0x64 => self.irq_status &= !(value as u32),
            0x98 => {
                self.regs.write(0x98, 8, value);
                if value & 1 != 0 {
                    self.run_dma(ctx);
                }
            }
            o if o < 0x100 => self.regs.write(o, width, value),
            _ => {}
        }
    }
}

/// A fake system with an edu (built from scratch: IDs, a 1 MiB BAR 0, MSI)
/// running the model.
fn system() -> (FakeKernel, Arc<Seen>) {
    let k = FakeKernel::new();
    let seen = Arc::new(Seen::default());
    let edu =
        PciDeviceBuilder::new(EDU, 3).ids(0x1234, 0x11e8).revision(0x10).bar(0, FakeBar::memory32(1 << 20)).msi(1);
    k.add_modelled_device(edu.build(), EduModel::new(seen.clone()));
    (k, seen)
}

#[test]
fn the_edu_example_runs_unchanged_against_an_edu_model() {
    let (k, seen) = system();
    // No annotation needed: `Edu::open` takes a `Context<K>`, which fixes the
    // context's capacities to their defaults.
    let mut edu = Edu::open(Context::with_kernel(&k).unwrap(), EDU).unwrap();
    {
        let plane = edu.data_plane().unwrap();
        assert_eq!(plane.id().unwrap(), 0x0100_00ed);
        assert_eq!(plane.liveness(0x1234_5678).unwrap(), !0x1234_5678);
        assert_eq!(plane.factorial(10, TIMEOUT).unwrap(), (3_628_800, 1));
        let message = b"through the IOMMU and back";
        assert_eq!(plane.dma_round_trip(message, TIMEOUT).unwrap(), message);
        assert_eq!(plane.raise(0x42, TIMEOUT).unwrap(), (1, 0x42));
    }
    assert_eq!(seen.dma_faults.load(Ordering::SeqCst), 0);
    edu.close().unwrap();
    assert_eq!((k.open_fds(), k.live_mappings(), k.dma_mappings().len()), (0, 0, 0));
}

type Ctx<'k> = Context<&'k FakeKernel>;

#[test]
fn without_bus_mastering_no_msi_arrives_and_dma_is_refused() {
    let (k, seen) = system();
    // Annotated: `with_kernel` alone cannot infer the context's capacities
    // (const parameters with defaults), which is error E0284.
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let edu = vfio.setup(EDU).unwrap();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let mut buf = vfio.dma_alloc(4096, Default::default()).unwrap();
    let iova = vfio.dma(&mut buf).unwrap().iova();
    let dev = vfio.device(&edu).unwrap();
    assert!(!dev.pci_command().unwrap().contains(PciCommand::BUS_MASTER));
    let (bar, msi) = (dev.region(0).unwrap(), dev.interrupt(pci_irq::MSI, 0).unwrap());
    // The driver forgot bus mastering: its MSI never arrives...
    bar.write32(reg::IRQ_RAISE, 1).unwrap();
    assert_eq!(msi.wait_timeout(TIMEOUT).unwrap(), None);
    // ...and its DMA is refused, not done.
    bar.write64(reg::DMA_SRC, iova).unwrap();
    bar.write64(reg::DMA_DST, EDU_BUFFER).unwrap();
    bar.write64(reg::DMA_COUNT, 8).unwrap();
    bar.write64(reg::DMA_CMD, 1).unwrap();
    assert_eq!(seen.dma_faults.load(Ordering::SeqCst), 1);
    assert_eq!(seen.last_fault_bus_master.load(Ordering::SeqCst), 1, "refused for bus mastering");
    // With it, both work; an address the IOMMU does not map still faults.
    dev.pci_command_set(PciCommand::BUS_MASTER).unwrap();
    bar.write32(reg::IRQ_RAISE, 1).unwrap();
    assert_eq!(msi.wait_timeout(TIMEOUT).unwrap(), Some(1));
    bar.write64(reg::DMA_CMD, 1).unwrap();
    assert_eq!(seen.dma_faults.load(Ordering::SeqCst), 1);
    bar.write64(reg::DMA_SRC, 0x7000_0000).unwrap();
    bar.write64(reg::DMA_CMD, 1).unwrap();
    assert_eq!(seen.dma_faults.load(Ordering::SeqCst), 2);
    assert_eq!(seen.last_fault_bus_master.load(Ordering::SeqCst), 0, "an IOMMU fault");
    vfio.dma_free(buf).unwrap();
    vfio.free(edu).unwrap();
}

dao_vfio::register_block! {
    struct Id {
        0x00 => id: RO<u32>,
    }
}

#[test]
fn registers_read_as_the_model_says_through_every_path_but_blocks() {
    let (k, _) = system();
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let edu = vfio.setup(EDU).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let bar = dev.region(0).unwrap();
    // A write-only doorbell reads as the device defines (all ones on edu),
    // not as the last value written.
    bar.write32(reg::IRQ_ACK, 5).unwrap();
    assert_eq!(bar.read32(reg::IRQ_ACK).unwrap(), 0xffff_ffff);
    assert_eq!(bar.read16(reg::IRQ_ACK).unwrap(), 0xffff);
    // pread/pwrite reach the model too, register by register.
    let mut id = [0u8; 4];
    dev.read_region(0, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x0100_00ed);
    dev.write_region(0, reg::LIVENESS as u64, &7u32.to_le_bytes()).unwrap();
    assert_eq!(bar.read32(reg::LIVENESS).unwrap(), !7);
    // A block's plain loads would bypass the model: refused, saying why.
    let e = bar.block::<Id>(0).err().unwrap();
    assert_eq!(e, AccessError::NotEmulable);
    assert!(e.to_string().contains("use the offset accessors"), "{e}");
    // Through the device, the refusal names the device and the region; so
    // does a bare AccessError given to Device::access_error.
    let named = dev.block::<Id>(0, 0).err().unwrap();
    assert_eq!(named.kind(), ErrorKind::RegionAccess { region: 0, error: AccessError::NotEmulable });
    assert_eq!(named.device(), Some(dev.name()));
    let text = named.to_string();
    assert!(text.contains(dev.name()) && text.contains("BAR 0: access refused"), "{text}");
    let far = bar.read32(0x10_0000).map_err(|e| dev.access_error(0, e)).unwrap_err().to_string();
    assert!(far.contains(dev.name()) && far.contains("BAR 0") && far.contains("outside the region"), "{far}");
    let missing = dev.block::<Id>(9, 0).err().unwrap();
    assert!(matches!(missing.kind(), ErrorKind::NoSuchRegion { index: 9, .. }), "{missing}");
    // Config space is not the model's: the builder wrote it.
    assert_eq!(dev.config_read32(0).unwrap(), 0x11e8_1234);
    vfio.free(edu).unwrap();
}

#[test]
fn failures_injected_by_step_are_traced_and_leave_nothing() {
    for (step, nth, errno) in [
        (Step::SetIrqs(pci_irq::MSI), 1, Errno::NOSPC),
        (Step::Mmap(0), 1, Errno::NOMEM),
        (Step::MapMemory, 2, Errno::NOMEM),
        (Step::MapDma, 2, Errno::NOSPC),
        (Step::Pwrite(pci_region::CONFIG), 1, Errno::IO),
    ] {
        let (k, _) = system();
        k.fail_step(step, nth, errno);
        let e = Edu::open(Context::with_kernel(&k).unwrap(), EDU).err().expect("setup fails");
        let e = e.downcast::<dao_vfio::Error>().expect("a dao_vfio error");
        assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(step), Some(errno)), "{e}");
        assert!(!k.failure_pending());
        let failed = k.failed_call().expect("a call failed");
        assert_eq!((failed.step, failed.failed), (step, Some(errno)));
        assert_eq!(k.trace().iter().filter(|c| c.failed.is_some()).count(), 1);
        assert!(failed.to_string().contains("FAILED with E"), "{failed}");
        assert_eq!((k.open_fds(), k.live_mappings(), k.dma_mappings().len()), (0, 0, 0), "{step:?}");
    }
    // The trace names each ioctl, not "ioctl".
    let (k, _) = system();
    let edu = Edu::open(Context::with_kernel(&k).unwrap(), EDU).unwrap();
    let trace = k.trace();
    assert!(trace.iter().any(|c| c.name == "ioctl" && c.step == Step::SetIrqs(pci_irq::MSI)));
    assert!(trace.iter().any(|c| c.to_string() == "VFIO_GROUP_GET_DEVICE_FD (ioctl)"), "{trace:?}");
    edu.close().unwrap();
}

#[test]
fn messages_name_the_vector_the_errno_and_the_region() {
    let (k, _) = system();
    let mut vfio: Ctx = Context::with_kernel(&k).unwrap();
    let edu = vfio.setup(EDU).unwrap();
    let e = vfio.device(&edu).unwrap().interrupt(pci_irq::MSI, 0).unwrap_err();
    assert!(e.to_string().contains("interrupt index 1, vector 0 has no eventfd"), "{e}");
    k.fail_step(Step::Pread(pci_region::CONFIG), 1, Errno::DEADLK);
    let e = vfio.device(&edu).unwrap().config_read16(0).unwrap_err();
    assert_eq!(e.to_string(), format!("{EDU}: pread from config space (region 7) failed [EDEADLK (errno 35)]"));
    k.fail_step(Step::Pread(0), 1, Errno::TIMEDOUT);
    let e = vfio.device(&edu).unwrap().read_region(0, 0, &mut [0; 4]).unwrap_err();
    assert!(e.to_string().contains("pread from BAR 0 failed [ETIMEDOUT"), "{e}");
    vfio.free(edu).unwrap();
}

#[test]
#[should_panic(expected = "region 0 is 0x4 bytes but its contents (FakeRegion::with_contents) are 0x8")]
fn contents_longer_than_their_region_are_a_setup_bug() {
    let mut dev = PciDeviceBuilder::new(EDU, 3).bar(0, FakeBar::memory32(4)).build();
    dev.regions[0] = dev.regions[0].clone().with_contents(&[0; 8]);
    FakeKernel::new().add_device(dev);
}
