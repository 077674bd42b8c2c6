//! Benchmarks of dao-vfio on the virtual board, each beside a C baseline that
//! makes the same raw VFIO system calls (`benches/baseline.c`), in one boot.
//!
//! ```text
//! benches/run aarch64 [--quick]      builds both, boots the board, prints the table
//! benches/run aarch64 --nvme          only the NVMe section (crate, C, kernel)
//! ```
//!
//! On the board this binary starts the C program as a child that serves one
//! batch per request, and alternates: for each operation a sub-batch through
//! the crate, then one of the C program, ABBA, so both sides of a comparison
//! run within a fraction of a second of each other and a slow spell of the
//! shared host falls on both. Each side sets the device up before its batch
//! and frees it after (untimed): the two never hold it at once. After one
//! warm-up round (TCG translates code the first time it runs), every round
//! times each operation's sub-batches on both sides. The table gives each
//! side's median over the rounds of the round means, and crate/C as the
//! median of the rounds' paired ratios, with their range.
//!
//! Three more kinds of row put the setup ratios in proportion, each against
//! the C program's own setup: the crate's C interface
//! (`dao_vfio_device_setup`/`_free`, the library as shipped: built for size,
//! behind the interface's lock) called from the C program's process (the
//! crate's code without the Rust process around it), the C program
//! making the crate's sequence of system calls (the calls without the
//! crate's code), and a second copy of the C program (what a ratio of two
//! identical sides looks like here).
//!
//! System calls are counted, without seccomp or ptrace, by a [`Kernel`] that
//! forwards to [`Host`] (`counting.rs`); the C program counts in its own
//! wrappers. The counting wrapper is first checked against the fake kernel,
//! which counts every call it receives on its own (`self_check`).
//!
//! Off the board (no `DAO_VFIO_EDU`) only that check runs.

mod counting;
mod nvme;
mod watchdog;

use std::error::Error;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::ptr::NonNull;
use std::time::Instant;

use dao_vfio::fake::{FakeDevice, FakeKernel};
use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{Backend, Bus, Context, DeviceHandle, DmaDirection, DmaOptions, Host, Kernel};

use counting::{Counting, Counts};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

// edu's register block, shared with the real-kernel tests.
#[path = "../../tests/common/mod.rs"]
mod common;
use common::Edu;

const EDU_ID: u32 = 0x010000ed;
const KIB4: usize = 4096;
const MIB2: usize = 2 << 20;

/// What one batch measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `setup_on` + `free` of edu.
    SetupFreeEdu,
    /// `setup_on` + `free` of pl031.
    SetupFreePl031,
    /// `regs.id.read()`.
    Read32Typed,
    /// `bar0.read32(0)`.
    Read32Offset,
    /// `regs.liveness.write(v)`.
    Write32Typed,
    /// `bar0.write32(4, v)`.
    Write32Offset,
    /// Raise edu's interrupt, [`dao_vfio::Interrupt::wait`], acknowledge.
    Irq,
    /// `dma_map_raw` + `dma_free` of this many bytes allocated beforehand.
    DmaMap(usize),
    /// `dma_alloc` + `dma_free` of this many bytes.
    DmaAlloc(usize),
}

/// A table row: an operation through the crate with one backend, and the C
/// batch it is compared with.
struct Row {
    op: Op,
    backend: Backend,
    c: &'static str,
    label: &'static str,
    /// Who runs the row's first column (by default the crate, from this process).
    ours: Ours,
}

/// Who runs a row's first column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ours {
    /// The crate, from this (Rust) process.
    Crate,
    /// Another request to the C program: the crate's C interface from its
    /// process, or its raw calls in the crate's sequence.
    CRequest(&'static str),
    /// A second copy of the C program making the same request: C against
    /// itself, the noise floor of a ratio.
    SecondC,
}

const fn row(op: Op, backend: Backend, c: &'static str, label: &'static str) -> Row {
    Row { op, backend, c, label, ours: Ours::Crate }
}

const fn other(ours: Ours, op: Op, c: &'static str, label: &'static str) -> Row {
    Row { op, backend: Legacy, c, label, ours }
}

use Backend::{Iommufd, Legacy};

const ROWS: &[Row] = &[
    row(Op::SetupFreeEdu, Legacy, "setup_free_edu", "setup + free, edu (PCI, type1 IOMMU)"),
    row(Op::SetupFreePl031, Legacy, "setup_free_pl031", "setup + free, pl031 (platform, noiommu)"),
    other(
        Ours::CRequest("capi_setup_free_edu"),
        Op::SetupFreeEdu,
        "setup_free_edu",
        "setup + free, edu, the crate's C interface from the C program",
    ),
    other(
        Ours::CRequest("capi_setup_free_pl031"),
        Op::SetupFreePl031,
        "setup_free_pl031",
        "setup + free, pl031, the crate's C interface from the C program",
    ),
    other(
        Ours::CRequest("crate_calls_setup_free_edu"),
        Op::SetupFreeEdu,
        "setup_free_edu",
        "setup + free, edu, C making the crate's system calls",
    ),
    other(
        Ours::CRequest("crate_calls_setup_free_pl031"),
        Op::SetupFreePl031,
        "setup_free_pl031",
        "setup + free, pl031, C making the crate's system calls",
    ),
    other(Ours::SecondC, Op::SetupFreeEdu, "setup_free_edu", "setup + free, edu, C against a second copy of itself"),
    row(Op::Read32Typed, Legacy, "read32", "register read, typed field (`regs.id.read()`)"),
    row(Op::Read32Offset, Legacy, "read32", "register read, offset (`bar0.read32(0)`)"),
    row(Op::Write32Typed, Legacy, "write32", "register write, typed field (`regs.liveness.write(v)`)"),
    row(Op::Write32Offset, Legacy, "write32", "register write, offset (`bar0.write32(4, v)`)"),
    row(Op::Irq, Legacy, "irq", "interrupt round trip (raise, `Interrupt::wait`, ack)"),
    row(Op::DmaMap(KIB4), Legacy, "dma_map_4k", "DMA map + unmap 4 KiB (`dma_map_raw` + `dma_free`)"),
    row(Op::DmaMap(MIB2), Legacy, "dma_map_2m", "DMA map + unmap 2 MiB (`dma_map_raw` + `dma_free`)"),
    row(Op::DmaAlloc(KIB4), Legacy, "dma_alloc_4k", "DMA alloc + free 4 KiB (`dma_alloc` + `dma_free`)"),
    row(Op::DmaAlloc(MIB2), Legacy, "dma_alloc_2m", "DMA alloc + free 2 MiB (`dma_alloc` + `dma_free`)"),
    row(Op::SetupFreeEdu, Iommufd, "setup_free_edu_iommufd", "setup + free, edu, both through iommufd (device cdev)"),
    Row {
        op: Op::SetupFreeEdu,
        backend: Iommufd,
        c: "setup_free_edu_iommufd",
        label: "setup + free, edu through iommufd, C making the crate's system calls",
        ours: Ours::CRequest("crate_calls_setup_free_edu_iommufd"),
    },
    row(Op::DmaMap(KIB4), Iommufd, "dma_map_4k", "DMA map + unmap 4 KiB, crate through iommufd"),
    row(Op::DmaMap(MIB2), Iommufd, "dma_map_2m", "DMA map + unmap 2 MiB, crate through iommufd"),
    row(Op::DmaAlloc(KIB4), Iommufd, "dma_alloc_4k", "DMA alloc + free 4 KiB, crate through iommufd"),
    row(Op::DmaAlloc(MIB2), Iommufd, "dma_alloc_2m", "DMA alloc + free 2 MiB, crate through iommufd"),
];

/// Iterations per round and side, rounds, and the sub-batches a round's
/// iterations are split into.
#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    /// Each side's iterations in a round run as this many sub-batches, the
    /// two sides alternating (ABBA), so a slow spell of the shared host
    /// falls on both sides of a round's ratio, not on one.
    subs: u64,
    setup: u64,
    registers: u64,
    irq: u64,
    dma: u64,
}

impl Plan {
    fn iters(&self, op: Op) -> u64 {
        match op {
            Op::SetupFreeEdu | Op::SetupFreePl031 => self.setup,
            Op::Read32Typed | Op::Read32Offset | Op::Write32Typed | Op::Write32Offset => self.registers,
            Op::Irq => self.irq,
            Op::DmaMap(_) | Op::DmaAlloc(_) => self.dma,
        }
    }
}

const FULL: Plan = Plan { rounds: 21, subs: 10, setup: 200, registers: 2_000_000, irq: 2_000, dma: 100 };
const QUICK: Plan = Plan { rounds: 3, subs: 1, setup: 10, registers: 10_000, irq: 50, dma: 5 };

// Each side's iterations split evenly into its sub-batches: none dropped.
const _: () = {
    let plans = [FULL, QUICK];
    let mut i = 0;
    while i < plans.len() {
        let p = plans[i];
        let n = p.subs;
        assert!(
            p.setup.is_multiple_of(n)
                && p.registers.is_multiple_of(n)
                && p.irq.is_multiple_of(n)
                && p.dma.is_multiple_of(n)
        );
        i += 1;
    }
};

/// Operations timed one by one, for their latency distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// `regs.id.read()`.
    Read,
    /// `regs.liveness.write(v)`.
    Write,
    /// Raise edu's interrupt, `Interrupt::wait`, acknowledge.
    Irq,
}

impl Tail {
    const ALL: [Tail; 3] = [Tail::Read, Tail::Write, Tail::Irq];

    /// The C baseline's request name.
    fn c(self) -> &'static str {
        match self {
            Tail::Read => "tail_read32",
            Tail::Write => "tail_write32",
            Tail::Irq => "tail_irq",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tail::Read => "register read (`regs.id.read()`)",
            Tail::Write => "register write (`regs.liveness.write(v)`)",
            Tail::Irq => "interrupt round trip (raise, `wait`, ack)",
        }
    }

    /// Operations timed per round and side.
    fn samples(self, quick: bool) -> usize {
        match (self, quick) {
            (Tail::Irq, false) => 5_000,
            (Tail::Irq, true) => 200,
            (_, false) => 200_000,
            (_, true) => 5_000,
        }
    }
}

/// Latency percentiles of one batch, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// From per-operation times (sorted here).
    fn of(mut ns: Vec<u64>) -> Percentiles {
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1] as f64;
        Percentiles { p50: at(0.50), p99: at(0.99), p999: at(0.999), max: *ns.last().unwrap_or(&0) as f64 }
    }
}

/// One batch: mean time per operation and the system calls it made.
#[derive(Clone, Copy)]
struct Sample {
    ns: f64,
    calls: f64,
}

/// A crate batch, with its system calls by method.
struct Measured {
    sample: Sample,
    counts: Counts,
    iters: u64,
}

impl Measured {
    /// One round's sub-batches as one batch: the mean time per operation
    /// and the calls over all of them.
    fn combine(subs: &[Measured]) -> Measured {
        let iters: u64 = subs.iter().map(|m| m.iters).sum();
        let counts = subs.iter().fold(Counts::default(), |sum, m| sum.plus(&m.counts));
        let ns = subs.iter().map(|m| m.sample.ns * m.iters as f64).sum::<f64>() / iters as f64;
        let calls = subs.iter().map(|m| m.sample.calls * m.iters as f64).sum::<f64>() / iters as f64;
        Measured { sample: Sample { ns, calls }, counts, iters }
    }

    /// A batch another process timed (its calls as it counted them).
    fn reported(sample: Sample, iters: u64) -> Measured {
        Measured { sample, counts: Counts::default(), iters }
    }
}

/// Starts a batch: the time and the counts so far.
struct Timer {
    start: Instant,
    before: Counts,
}

impl Timer {
    fn start<K: Kernel>(vfio: &Context<Counting<K>>) -> Self {
        let before = vfio.kernel().counts();
        Timer { start: Instant::now(), before }
    }

    fn stop<K: Kernel>(self, vfio: &Context<Counting<K>>, iters: u64) -> Measured {
        let ns = self.start.elapsed().as_nanos() as f64 / iters as f64;
        let counts = vfio.kernel().counts().since(&self.before);
        Measured { sample: Sample { ns, calls: counts.total() as f64 / iters as f64 }, counts, iters }
    }
}

/// The devices a batch uses, and how to raise edu's interrupt (a register
/// write on the board, a call into the fake kernel in the self-check).
struct Target<'a> {
    edu: &'a str,
    pl031: Option<&'a str>,
    raise: &'a dyn Fn(&Edu),
}

/// One batch of `n` operations in an open context. Everything but the loop
/// is untimed: edu is set up before and freed after.
fn batch<K: Kernel>(vfio: &mut Context<Counting<K>>, target: &Target, op: Op, n: u64) -> Result<Measured> {
    match op {
        Op::SetupFreeEdu => return setup_free(vfio, Bus::Pci, target.edu, n),
        Op::SetupFreePl031 => return setup_free(vfio, Bus::Platform, target.pl031.ok_or("no pl031")?, n),
        _ => {}
    }
    let edu = vfio.setup_on(Bus::Pci, target.edu)?;
    let measured = edu_batch(vfio, &edu, target, op, n);
    vfio.free(edu)?;
    measured
}

fn edu_batch<K: Kernel>(
    vfio: &mut Context<Counting<K>>,
    edu: &DeviceHandle,
    target: &Target,
    op: Op,
    n: u64,
) -> Result<Measured> {
    match op {
        Op::Irq => {
            vfio.device(edu)?.enable_bus_master()?;
            vfio.irq_enable(edu, pci_irq::MSI, 1)?;
            let measured = irq_round_trips(vfio, edu, n, target.raise);
            vfio.irq_disable(edu, pci_irq::MSI)?;
            measured
        }
        Op::DmaMap(len) => {
            let memory = anonymous(len)?;
            // SAFETY: `memory` is `len` bytes, never touched by this program,
            // and released below only once no mapping of it is left; on an
            // error it is never released (the context removes the mapping
            // when it drops).
            let measured = unsafe { dma_map_unmap(vfio, memory, len, n) }?;
            // SAFETY: every mapping of `memory` was removed (dma_free succeeded).
            unsafe { rustix::mm::munmap(memory.as_ptr().cast(), len) }?;
            Ok(measured)
        }
        Op::DmaAlloc(len) => dma_alloc_free(vfio, len, n),
        _ => registers(vfio, edu, op, n),
    }
}

/// `setup_on` + `free` of one device, `n` times.
fn setup_free<K: Kernel>(vfio: &mut Context<Counting<K>>, bus: Bus, name: &str, n: u64) -> Result<Measured> {
    let t = Timer::start(vfio);
    for _ in 0..n {
        let dev = vfio.setup_on(bus, name)?;
        vfio.free(dev)?;
    }
    Ok(t.stop(vfio, n))
}

/// A register read or write loop on edu's BAR 0, typed or by offset.
fn registers<K: Kernel>(vfio: &Context<Counting<K>>, edu: &DeviceHandle, op: Op, n: u64) -> Result<Measured> {
    let bar0 = vfio.device(edu)?.region(pci_region::BAR0)?;
    let regs = bar0.block::<Edu>(0)?;
    let mut sum = 0u32;
    let t = Timer::start(vfio);
    match op {
        Op::Read32Typed => {
            for _ in 0..n {
                sum = sum.wrapping_add(regs.id.read());
            }
        }
        Op::Read32Offset => {
            for _ in 0..n {
                sum = sum.wrapping_add(bar0.read32(0x00)?);
            }
        }
        Op::Write32Typed => {
            for i in 0..n {
                // SAFETY: edu's liveness register only stores the value.
                unsafe { regs.liveness.write(i as u32) };
            }
        }
        Op::Write32Offset => {
            for i in 0..n {
                bar0.write32(0x04, i as u32)?;
            }
        }
        _ => unreachable!("not a register operation: {op:?}"),
    }
    let measured = t.stop(vfio, n);
    let reads = matches!(op, Op::Read32Typed | Op::Read32Offset);
    check(!reads || black_box(sum) == EDU_ID.wrapping_mul(n as u32), "edu's id register read back wrong")?;
    Ok(measured)
}

/// `n` interrupt round trips on edu's MSI (enabled by the caller): `raise`,
/// [`dao_vfio::Interrupt::wait`], acknowledge.
fn irq_round_trips<K: Kernel>(
    vfio: &Context<Counting<K>>,
    edu: &DeviceHandle,
    n: u64,
    raise: &dyn Fn(&Edu),
) -> Result<Measured> {
    let dev = vfio.device(edu)?;
    let regs = dev.region(pci_region::BAR0)?.block::<Edu>(0)?;
    let irq = dev.interrupt(pci_irq::MSI, 0)?;
    let t = Timer::start(vfio);
    for _ in 0..n {
        raise(regs);
        irq.wait()?;
        // SAFETY: edu's interrupt acknowledge only clears its status bits.
        unsafe { regs.irq_ack.write(1) };
    }
    Ok(t.stop(vfio, n))
}

/// CLOCK_MONOTONIC in nanoseconds, read as the C baseline reads it (libc's
/// `clock_gettime`, the vDSO), so both sides' samples carry the same clock
/// overhead (`Instant` adds its own arithmetic).
///
/// `t` is left uninitialised, as the C side's is: zeroing it first would be
/// work in every sample that C does not do.
fn now_ns() -> u64 {
    let mut t = core::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `t` is a valid timespec to write; CLOCK_MONOTONIC always
    // exists, so the call always succeeds and fills `t`.
    let t = unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, t.as_mut_ptr());
        t.assume_init()
    };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One crate tail batch: `n` operations, each timed on its own (the clock
/// read is inside every sample, on both sides alike).
fn crate_tail(target: &Target, op: Tail, n: usize) -> Result<Percentiles> {
    let mut vfio: Context<Counting<Host>> = Context::with_backend(Counting::new(Host), Legacy)?;
    let edu = vfio.setup_on(Bus::Pci, target.edu)?;
    if op == Tail::Irq {
        vfio.device(&edu)?.enable_bus_master()?;
        vfio.irq_enable(&edu, pci_irq::MSI, 1)?;
    }
    let mut ns = Vec::with_capacity(n);
    {
        let dev = vfio.device(&edu)?;
        let regs = dev.region(pci_region::BAR0)?.block::<Edu>(0)?;
        let mut sum = 0u32;
        match op {
            Tail::Read => {
                for _ in 0..n {
                    let t = now_ns();
                    sum = sum.wrapping_add(regs.id.read());
                    ns.push(now_ns() - t);
                }
                check(black_box(sum) == EDU_ID.wrapping_mul(n as u32), "edu's id register read back wrong")?;
            }
            Tail::Write => {
                for i in 0..n {
                    let t = now_ns();
                    // SAFETY: edu's liveness register only stores the value.
                    unsafe { regs.liveness.write(i as u32) };
                    ns.push(now_ns() - t);
                }
            }
            Tail::Irq => {
                let irq = dev.interrupt(pci_irq::MSI, 0)?;
                for _ in 0..n {
                    let t = now_ns();
                    (target.raise)(regs);
                    irq.wait()?;
                    // SAFETY: edu's interrupt acknowledge only clears its status bits.
                    unsafe { regs.irq_ack.write(1) };
                    ns.push(now_ns() - t);
                }
            }
        }
    }
    vfio.free(edu)?;
    vfio.close().map_err(|(_, e)| e)?;
    Ok(Percentiles::of(ns))
}

/// `dma_map_raw` + `dma_free` of `len` bytes of `memory`, `n` times: the
/// mapping alone, no allocation.
///
/// # Safety
/// `memory` is valid for `len` bytes, is not accessed through references
/// while mapped, and is not released while a mapping of it is left (after an
/// error, until the context drops).
unsafe fn dma_map_unmap<K: Kernel>(
    vfio: &mut Context<Counting<K>>,
    memory: NonNull<u8>,
    len: usize,
    n: u64,
) -> Result<Measured> {
    // The first map after a setup asks the IOMMU what it allows (once per set
    // of devices): untimed, so the batch is the steady state a driver sees.
    // SAFETY: forwarded from this function's contract.
    let handle = unsafe { vfio.dma_map_raw(memory, len, None, DmaDirection::Bidirectional) }?;
    vfio.dma_free(handle).map_err(|(_, e)| e)?;
    let t = Timer::start(vfio);
    for _ in 0..n {
        // SAFETY: forwarded from this function's contract.
        let handle = unsafe { vfio.dma_map_raw(memory, len, None, DmaDirection::Bidirectional) }?;
        vfio.dma_free(handle).map_err(|(_, e)| e)?;
    }
    Ok(t.stop(vfio, n))
}

/// `dma_alloc` + `dma_free` of `len` bytes, `n` times.
fn dma_alloc_free<K: Kernel>(vfio: &mut Context<Counting<K>>, len: usize, n: u64) -> Result<Measured> {
    // Untimed first, as in `dma_map_unmap`.
    let handle = vfio.dma_alloc(len, DmaOptions::default())?;
    vfio.dma_free(handle).map_err(|(_, e)| e)?;
    let t = Timer::start(vfio);
    for _ in 0..n {
        let handle = vfio.dma_alloc(len, DmaOptions::default())?;
        vfio.dma_free(handle).map_err(|(_, e)| e)?;
    }
    Ok(t.stop(vfio, n))
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// Anonymous memory, populated, as the C baseline allocates it.
fn anonymous(len: usize) -> Result<NonNull<u8>> {
    use rustix::mm::{MapFlags, ProtFlags};
    // SAFETY: a new private mapping at an address the kernel picks aliases
    // nothing.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::POPULATE,
        )
    }?;
    Ok(NonNull::new(p.cast()).ok_or("mmap returned NULL")?)
}

/// The processes a row's two columns run in.
struct Sides<'a> {
    target: &'a Target<'a>,
    baseline: &'a mut Baseline,
    second: &'a mut Baseline,
}

impl Sides<'_> {
    /// One batch of a row's first column.
    fn ours(&mut self, row: &Row, n: u64) -> Result<Measured> {
        match row.ours {
            Ours::Crate => crate_batch(self.target, row, n),
            Ours::CRequest(request) => Ok(Measured::reported(self.baseline.batch(request, n)?, n)),
            Ours::SecondC => Ok(Measured::reported(self.second.batch(row.c, n)?, n)),
        }
    }
}

/// One crate batch on the real kernel, in a context of its own.
fn crate_batch(target: &Target, row: &Row, n: u64) -> Result<Measured> {
    let mut vfio: Context<Counting<Host>> = Context::with_backend(Counting::new(Host), row.backend)?;
    let measured = batch(&mut vfio, target, row.op, n).map_err(|e| format!("{}: {e}", row.label))?;
    vfio.close().map_err(|(_, e)| e)?;
    Ok(measured)
}

/// The C baseline, running as a child that serves one batch per request.
struct Baseline {
    child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Baseline {
    fn start(path: &str, edu: &str, pl031: Option<&str>, nvme: Option<&str>) -> Result<Self> {
        let mut child = Command::new(path)
            .args([edu, pl031.unwrap_or("-"), nvme.unwrap_or("-")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the C baseline {path}: {e}"))?;
        let requests = child.stdin.take().ok_or("no stdin")?;
        let answers = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Baseline { child, requests, answers })
    }

    /// Sends one request and reads the C program's answer line.
    fn ask(&mut self, op: &str, n: u64) -> Result<String> {
        writeln!(self.requests, "{op} {n}")?;
        self.requests.flush()?;
        let mut line = String::new();
        if self.answers.read_line(&mut line)? == 0 {
            return Err(format!("the C baseline ended during {op} (its message is above)").into());
        }
        Ok(line)
    }

    fn batch(&mut self, op: &str, n: u64) -> Result<Sample> {
        let line = self.ask(op, n)?;
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            // `-`: calls the C program cannot count (the crate's own, through its C interface).
            ["c", answered, ns, "-"] if *answered == op => Ok(Sample { ns: ns.parse()?, calls: f64::NAN }),
            ["c", answered, ns, calls] if *answered == op => Ok(Sample { ns: ns.parse()?, calls: calls.parse()? }),
            _ => Err(format!("unexpected answer from the C baseline to {op}: {line}").into()),
        }
    }

    fn tail(&mut self, op: &str, n: usize) -> Result<Percentiles> {
        let line = self.ask(op, n as u64)?;
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["c", answered, p50, p99, p999, max] if *answered == op => {
                Ok(Percentiles { p50: p50.parse()?, p99: p99.parse()?, p999: p999.parse()?, max: max.parse()? })
            }
            _ => Err(format!("unexpected answer from the C baseline to {op}: {line}").into()),
        }
    }

    fn finish(self) -> Result<()> {
        drop(self.requests); // end of file: it closes the container and exits
        let Baseline { mut child, .. } = self;
        let status = child.wait()?;
        check(status.success(), "the C baseline failed")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn time(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e4 => format!("{:.1} µs", ns / 1e3),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

fn calls(n: f64, inexact: bool) -> String {
    let at_least = if inexact { "≥ " } else { "" };
    if n.is_nan() {
        "—".to_string() // not counted
    } else if n.fract() == 0.0 {
        format!("{at_least}{n}")
    } else {
        format!("{at_least}{n:.2}")
    }
}

/// Each row's batches: the crate's and the C baseline's, by round.
type Results<'r> = Vec<(&'r Row, Vec<(Measured, Sample)>)>;

fn print_table(results: &Results) {
    println!("| operation | crate | C | crate/C (range) | syscalls crate | syscalls C |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (row, rounds) in results {
        let ours = median(rounds.iter().map(|(m, _)| m.sample.ns).collect());
        let theirs = median(rounds.iter().map(|(_, s)| s.ns).collect());
        let ratios: Vec<f64> = rounds.iter().map(|(m, s)| m.sample.ns / s.ns).collect();
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let inexact = rounds.iter().any(|(m, _)| m.counts.inexact());
        println!(
            "| {} | {} | {} | {:.2} ({lo:.2}–{hi:.2}) | {} | {} |",
            row.label,
            time(ours),
            time(theirs),
            median(ratios),
            calls(median(rounds.iter().map(|(m, _)| m.sample.calls).collect()), inexact),
            calls(median(rounds.iter().map(|(_, s)| s.calls).collect()), false),
        );
    }
}

/// Each tail operation's percentiles, crate and C, by round.
type Tails = Vec<(Tail, Vec<(Percentiles, Percentiles)>)>;

fn print_tails(tails: &Tails) {
    println!();
    println!(
        "Latency of single operations (each timed on its own, clock read included; medians over the rounds of each \
         round's percentile; crate/C is the median of the rounds' paired p99.9 ratios, with their range):"
    );
    println!();
    println!("| operation | side | p50 | p99 | p99.9 | max | p99.9 crate/C (range) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (op, rounds) in tails {
        let med = |f: &dyn Fn(&(Percentiles, Percentiles)) -> f64| median(rounds.iter().map(f).collect());
        let ratios: Vec<f64> = rounds.iter().map(|(ours, theirs)| ours.p999 / theirs.p999).collect();
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        // One side's columns: p50, p99, p99.9, max.
        let side = |of: &dyn Fn(&(Percentiles, Percentiles)) -> Percentiles| {
            let column = |f: fn(&Percentiles) -> f64| time(med(&|r| f(&of(r))));
            [column(|p| p.p50), column(|p| p.p99), column(|p| p.p999), column(|p| p.max)].join(" | ")
        };
        let ratio = median(ratios);
        println!("| {} | crate | {} | {ratio:.2} ({lo:.2}–{hi:.2}) |", op.label(), side(&|r| r.0));
        println!("| | C | {} | |", side(&|r| r.1));
    }
}

fn print_breakdowns(results: &Results, fake: &[(Op, Backend, Counts)]) {
    println!();
    println!("System calls per operation through the crate, by kind, and whether the fake kernel agrees:");
    for (row, rounds) in results.iter().filter(|(row, _)| row.ours == Ours::Crate) {
        let total = rounds.iter().fold(Counts::default(), |sum, (m, _)| sum.plus(&m.counts));
        let iters = rounds.iter().map(|(m, _)| m.iters).sum();
        let per_op = if total.total() == 0 { "none".to_string() } else { total.breakdown(iters) };
        let fake_note = match fake.iter().find(|(op, backend, _)| *op == row.op && *backend == row.backend) {
            Some((_, _, f)) if f.per_op_equal(FAKE_ITERS, &total, iters) => "; the same on the fake kernel".to_string(),
            Some((_, _, f)) => format!("; the fake kernel: {}", f.breakdown(FAKE_ITERS)),
            None => String::new(),
        };
        println!("- {}: {per_op}{fake_note}", row.label);
    }
}

/// Iterations of each operation in the self-check.
const FAKE_ITERS: u64 = 3;

/// Runs the benchmarked operations on the fake kernel, which counts every
/// call it receives on its own (all but `close`): the counting wrapper must
/// agree with it on every operation. Returns the wrapper's counts.
fn self_check() -> Result<Vec<(Op, Backend, Counts)>> {
    let kernel = FakeKernel::new();
    let (edu, pl031) = ("0000:00:01.0", "9010000.pl031");
    kernel.add_device(FakeDevice::edu(edu, 3));
    kernel.add_device(FakeDevice::platform(pl031, 4));
    kernel.set_iommufd(true, true);
    let raise = |_: &Edu| {
        kernel.raise_irq(edu, pci_irq::MSI, 0);
    };
    let target = Target { edu, pl031: Some(pl031), raise: &raise };
    let mut found = Vec::new();
    for row in ROWS.iter().filter(|row| row.ours == Ours::Crate) {
        let mut vfio = Context::with_backend(Counting::new(&kernel), row.backend)?;
        // The whole batch, its untimed setup and free included.
        let (before, counted_before) = (kernel.calls(), vfio.kernel().counts());
        let m = batch(&mut vfio, &target, row.op, FAKE_ITERS)?;
        let fake_calls = kernel.calls() - before;
        let counted = vfio.kernel().counts().since(&counted_before).seam_calls_but_close();
        if counted != fake_calls {
            return Err(format!(
                "counting wrapper disagrees with the fake kernel on {}: {counted} calls (not counting close) against {fake_calls}",
                row.label,
            )
            .into());
        }
        if matches!(row.op, Op::Read32Typed | Op::Read32Offset | Op::Write32Typed | Op::Write32Offset) {
            check(m.counts.total() == 0, "a register access made a system call")?;
        }
        found.push((row.op, row.backend, m.counts));
        vfio.close().map_err(|(_, e)| e)?;
    }
    check(kernel.open_fds() == 0 && kernel.live_mappings() == 0, "the fake kernel has fds or mappings left")?;
    Ok(found)
}

fn run() -> Result<()> {
    let (mut plan, mut quick, mut nvme_only) = (FULL, false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => (plan, quick) = (QUICK, true),
            "--nvme" => nvme_only = true,
            "--bench" => {} // added by `cargo bench`
            other => return Err(format!("unknown argument {other} (use --quick or --nvme)").into()),
        }
    }
    let fake = self_check()?;
    println!("self-check: the counting wrapper agrees with the fake kernel on every operation");
    let Ok(edu) = std::env::var("DAO_VFIO_EDU") else {
        println!("not on a virtual board (no DAO_VFIO_EDU): run `benches/run ARCH` to benchmark");
        return Ok(());
    };
    let pl031 = std::env::var("DAO_VFIO_PL031").ok();
    let cdev = std::path::Path::new("/sys/bus/pci/devices").join(&edu).join("vfio-dev");
    let iommufd = std::path::Path::new("/dev/iommu").exists() && cdev.is_dir();
    let rows: Vec<&Row> = ROWS
        .iter()
        .filter(|r| r.op != Op::SetupFreePl031 || pl031.is_some())
        .filter(|r| r.backend != Iommufd || iommufd)
        .collect();
    // SAFETY: raising edu's interrupt only sets its status and signals the MSI.
    let raise = |regs: &Edu| unsafe { regs.irq_raise.write(1) };
    let target = Target { edu: &edu, pl031: pl031.as_deref(), raise: &raise };
    let path = std::env::var("DAO_VFIO_BASELINE").unwrap_or_else(|_| "/test/extra/baseline".into());
    let nvme = std::env::var("DAO_VFIO_NVME").ok();
    let mut baseline = Baseline::start(&path, &edu, pl031.as_deref(), nvme.as_deref())?;
    if nvme_only {
        let name = nvme.as_deref().ok_or("--nvme: the board has no DAO_VFIO_NVME")?;
        let (rounds, reads) = nvme_plan(quick);
        nvme::run(&mut baseline, name, rounds, reads)?;
        return baseline.finish();
    }

    let mut second = Baseline::start(&path, &edu, pl031.as_deref(), None)?;
    let mut sides = Sides { target: &target, baseline: &mut baseline, second: &mut second };
    for row in &rows {
        sides.ours(row, QUICK.iters(row.op))?;
        sides.baseline.batch(row.c, QUICK.iters(row.op))?;
    }
    let mut results: Results = rows.iter().map(|&r| (r, Vec::new())).collect();
    for round in 0..plan.rounds {
        for (row, rounds) in results.iter_mut() {
            let n = plan.iters(row.op) / plan.subs;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for sub in 0..plan.subs {
                // Sub-batches alternate ABBA (and rounds start on alternate
                // sides), so neither side always runs right after the other's.
                if (sub + round as u64).is_multiple_of(2) {
                    ours.push(sides.ours(row, n)?);
                    theirs.push(Measured::reported(sides.baseline.batch(row.c, n)?, n));
                } else {
                    theirs.push(Measured::reported(sides.baseline.batch(row.c, n)?, n));
                    ours.push(sides.ours(row, n)?);
                }
            }
            rounds.push((Measured::combine(&ours), Measured::combine(&theirs).sample));
        }
        eprintln!("bench: round {}/{} done", round + 1, plan.rounds);
    }
    second.finish()?;
    let mut tails: Tails = Tail::ALL.iter().map(|&op| (op, Vec::new())).collect();
    for (op, _) in &tails {
        crate_tail(&target, *op, 100)?; // warm-up
        baseline.tail(op.c(), 100)?;
    }
    for round in 0..plan.rounds {
        for (op, rounds) in tails.iter_mut() {
            let n = op.samples(quick);
            let pair = if round % 2 == 0 {
                let ours = crate_tail(&target, *op, n)?;
                (ours, baseline.tail(op.c(), n)?)
            } else {
                let theirs = baseline.tail(op.c(), n)?;
                (crate_tail(&target, *op, n)?, theirs)
            };
            rounds.push(pair);
        }
        eprintln!("bench: tail round {}/{} done", round + 1, plan.rounds);
    }

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!();
    println!(
        "Board: {} (QEMU TCG), Linux {}. {} rounds after a warm-up; per round, operation and side \
         {} setup+free cycles, {} register accesses, {} interrupt round trips or {} DMA operations, \
         in sub-batches alternating with the other side's ({} per round and side). Times are medians of the rounds' means; \
         crate/C is the median of the rounds' paired ratios.",
        std::env::var("DAO_VFIO_BOARD").unwrap_or_else(|_| std::env::consts::ARCH.into()),
        release.trim(),
        plan.rounds,
        plan.setup,
        plan.registers,
        plan.irq,
        plan.dma,
        plan.subs
    );
    println!();
    print_table(&results);
    print_tails(&tails);
    print_breakdowns(&results, &fake);
    if let Some(name) = &nvme {
        let (rounds, reads) = nvme_plan(quick);
        nvme::run(&mut baseline, name, rounds, reads)?;
    }
    baseline.finish()
}

/// The NVMe section's rounds and reads per round, side and depth.
fn nvme_plan(quick: bool) -> (usize, usize) {
    if quick {
        (1, 500)
    } else {
        (11, 20_000)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
