//! Proofs of the data-plane promises on the real kernel (the virtual boards;
//! ignored on the host, except the counter's own check):
//!
//! - no allocation: a counting global allocator sees none while setup,
//!   register access, MSI, DMA, free and close run on edu (and pl031);
//! - no system call in the data path: a forked child in seccomp strict mode
//!   (only read, write, exit and sigreturn) runs register loops and waits
//!   for two MSIs (`Interrupt::wait`: one blocking `read` each), and exits
//!   normally; the controls show that the
//!   harness does catch a system call (getpid, and the library's own poll).
//!
//! The allocation proof needs a real device: the fake kernel allocates by
//! itself, so it cannot show that the library does not.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, Barrier};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{Backend, Context, DmaOptions, Error, Host, Interrupt, Region};

mod common;
use common::{dev, Edu};

// --- Zero allocation -----------------------------------------------------------------------

thread_local! {
    // `const` initialised, without destructors: reading them never allocates
    // or registers anything, so the allocator may use them.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

/// Counts heap calls made on an armed thread; other threads (libtest's) are
/// not counted.
struct Counting;

fn note(counter: &'static LocalKey<Cell<u64>>) {
    // `try_with` fails only while the thread's locals are being torn down;
    // nothing is armed then.
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is passed unchanged to `System`, which upholds the
// contract; counting only touches the const-initialised thread locals above,
// which neither allocate nor call back into the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(&FREES);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` with this thread armed; returns its result and the allocations
/// (alloc, alloc_zeroed, realloc) and frees it made.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.set(false); // also when `f` panics: the panic's report is not ours
        }
    }
    ALLOCS.set(0);
    FREES.set(0);
    let disarm = Disarm;
    ARMED.set(true);
    let result = f();
    drop(disarm);
    (result, ALLOCS.get(), FREES.get())
}

#[test]
fn the_counter_counts_this_thread_only() {
    let ((), allocs, frees) = counted(|| drop(std::hint::black_box(Box::new(7u64))));
    assert_eq!((allocs, frees), (1, 1), "a Box made and dropped while armed");
    let ((), allocs, frees) = counted(|| {
        let mut v: Vec<u8> = std::hint::black_box(Vec::with_capacity(1));
        v.extend_from_slice(&[1, 2, 3]); // grows: a realloc
        drop(v);
    });
    assert_eq!((allocs, frees), (2, 1));
    // Another thread allocates while this one is armed (the barriers do not allocate).
    let (go, done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let other = {
        let (go, done) = (go.clone(), done.clone());
        std::thread::spawn(move || {
            go.wait();
            drop(std::hint::black_box(Box::new(7u64)));
            done.wait();
        })
    };
    let ((), allocs, frees) = counted(|| {
        go.wait();
        done.wait();
    });
    other.join().unwrap();
    assert_eq!((allocs, frees), (0, 0), "another thread's allocations are not counted");
    assert_eq!(counted(|| 1).1, 0, "nothing armed, nothing counted");
}

/// What the counted run saw, checked after disarming.
#[derive(Debug, Default)]
struct Seen {
    backend: Option<Backend>,
    id: u32,
    id_by_offset: u32,
    liveness: [u32; 3],
    wide: u64,
    pending_before: Option<u64>,
    wait: u64,
    irq_status: u32,
    wait_timeout: Option<u64>,
    iova: u64,
    dma_done: bool,
    dma_equal: bool,
    pl031_ids: [u8; 8],
}

const EDU_BUFFER: u64 = 0x40000; // edu's own 4 KiB buffer, as the device addresses it
const XFER: usize = 2048; // QEMU's edu refuses a transfer ending at the buffer's end
const DMA_START: u64 = 1;
const DMA_TO_RAM: u64 = 2;
const DMA_IRQ: u64 = 4;

/// One edu DMA transfer; false if it did not finish within 5 s.
fn edu_dma(regs: &Edu, src: u64, dst: u64, to_ram: bool) -> bool {
    // SAFETY: programs edu's DMA engine with IOVAs mapped by the caller.
    unsafe {
        regs.dma_src.write(src);
        regs.dma_dst.write(dst);
        regs.dma_count.write(XFER as u64);
        dao_vfio::barrier::io_wmb();
        regs.dma_cmd.write(DMA_START | if to_ram { DMA_TO_RAM } else { 0 });
    }
    let start = Instant::now();
    while regs.dma_cmd.read() & DMA_START != 0 {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
    }
    dao_vfio::barrier::io_rmb();
    true
}

/// Everything the library does for a driver, on stack data only.
fn whole_life(backend: Backend, edu_name: &str, pl031_name: Option<&str>) -> Result<Seen, Error> {
    let mut seen = Seen::default();
    let mut vfio = Context::open_with(backend)?;
    let edu = vfio.setup(edu_name)?;
    seen.backend = Some(vfio.device(&edu)?.backend());
    vfio.device(&edu)?.enable_bus_master()?;
    vfio.irq_enable(&edu, pci_irq::MSI, 1)?;
    let mut src = vfio.dma_alloc(4096, DmaOptions::default())?;
    let mut dst = vfio.dma_alloc(4096, DmaOptions::default())?;
    {
        let dev = vfio.device(&edu)?;
        let bar0 = dev.region(pci_region::BAR0)?;
        let regs = bar0.block::<Edu>(0)?;
        seen.id = regs.id.read();
        seen.id_by_offset = bar0.read32(0)?;
        // SAFETY: liveness only stores the value (and reads it back inverted).
        unsafe { regs.liveness.write(0x1234_5678) };
        seen.liveness[0] = regs.liveness.read();
        bar0.write32(0x04, 0xf0f0_f0f0)?;
        seen.liveness[1] = bar0.read32(0x04)?;
        seen.liveness[2] = regs.liveness.read();
        bar0.write64(0x80, 0x1122_3344_5566_7788)?; // 64-bit access only from 0x80 on
        seen.wide = bar0.read64(0x80)?;

        let irq = dev.interrupt(pci_irq::MSI, 0)?;
        seen.pending_before = irq.take()?;
        // SAFETY: edu's interrupt registers only set and clear its status.
        unsafe { regs.irq_raise.write(0x100) };
        seen.wait = irq.wait()?;
        seen.irq_status = regs.irq_status.read();
        // SAFETY: as above.
        unsafe {
            regs.irq_ack.write(0x100);
            regs.irq_raise.write(0x200);
        }
        seen.wait_timeout = irq.wait_timeout(Duration::from_secs(5))?;
        // SAFETY: as above.
        unsafe { regs.irq_ack.write(0x200) };

        let mut pattern = [0u8; XFER];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        vfio.dma(&mut src)?.write(0, &pattern)?;
        vfio.dma(&mut dst)?.fill(0, 4096, 0)?;
        let (src_iova, dst_iova) = (vfio.dma(&mut src)?.iova(), vfio.dma(&mut dst)?.iova());
        seen.iova = dst_iova;
        seen.dma_done = edu_dma(regs, src_iova, EDU_BUFFER, false) && edu_dma(regs, EDU_BUFFER, dst_iova, true);
        let mut back = [0u8; XFER];
        vfio.dma(&mut dst)?.read(0, &mut back)?;
        seen.dma_equal = back == pattern;
    }
    vfio.dma_free(src).map_err(|(_, e)| e)?;
    vfio.dma_free(dst).map_err(|(_, e)| e)?;
    vfio.irq_disable(&edu, pci_irq::MSI)?;
    vfio.free(edu)?;
    if let Some(name) = pl031_name {
        let rtc = vfio.setup(name)?;
        let regs = vfio.device(&rtc)?.region(0)?.block::<common::Pl031>(0)?;
        let periph = common::id_bytes(&regs.periph_id);
        let cell = common::id_bytes(&regs.cell_id);
        seen.pl031_ids[..4].copy_from_slice(&periph);
        seen.pl031_ids[4..].copy_from_slice(&cell);
        vfio.free(rtc)?;
    }
    vfio.close().map_err(|(_, e)| e)?;
    Ok(seen)
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn setup_registers_msi_dma_and_free_allocate_nothing() {
    // The names are Strings, and the backend comes from the environment: both before arming.
    let (edu, backend) = (dev("DAO_VFIO_EDU"), common::backend());
    let pl031 = cfg!(target_arch = "aarch64").then(|| dev("DAO_VFIO_PL031"));
    let (seen, allocs, frees) = counted(|| whole_life(backend, &edu, pl031.as_deref()));
    println!("heap calls while armed: {allocs} allocations, {frees} frees; saw {seen:x?}");
    assert_eq!((allocs, frees), (0, 0), "the library used the heap");
    let seen = seen.unwrap();
    assert_eq!(seen.backend, Some(common::expected_backend()));
    assert_eq!((seen.id, seen.id_by_offset), (0x010000ed, 0x010000ed));
    assert_eq!(seen.liveness, [!0x1234_5678, !0xf0f0_f0f0, !0xf0f0_f0f0]);
    assert_eq!(seen.wide, 0x1122_3344_5566_7788);
    assert_eq!(seen.pending_before, None);
    assert_eq!((seen.wait, seen.irq_status, seen.wait_timeout), (1, 0x100, Some(1)), "two MSIs taken");
    assert!(seen.dma_done && seen.dma_equal, "RAM -> edu -> RAM through the IOMMU at {:#x}", seen.iova);
    if pl031.is_some() {
        assert_eq!(seen.pl031_ids, [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }
}

// --- No system call in the data path -------------------------------------------------------

/// Exit codes of the strict-mode child (0: every check held).
mod code {
    pub const PRCTL_FAILED: u8 = 10;
    pub const PANICKED: u8 = 11;
    pub const EXIT_RETURNED: u8 = 12;
    pub const TYPED: u8 = 20;
    pub const OFFSET_REFUSED: u8 = 21;
    pub const OFFSET: u8 = 22;
    pub const WIDE: u8 = 23;
    pub const ID: u8 = 24;
    pub const WAIT_FAILED: u8 = 30;
    pub const COUNT: u8 = 32;
    pub const IRQ_STATUS: u8 = 33;
    pub const ACK: u8 = 34;
    pub const REPORT: u8 = 35;
    pub const DMA: u8 = 37;
    pub const SURVIVED: u8 = 40;

    pub fn meaning(code: i32) -> &'static str {
        match code as u8 {
            0 => "ok",
            PRCTL_FAILED => "prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) failed",
            PANICKED => "the child panicked",
            EXIT_RETURNED => "the exit system call returned",
            TYPED => "typed liveness did not read back inverted",
            OFFSET_REFUSED => "read32/write32/read64/write64 refused an access",
            OFFSET => "read32 of liveness did not read back inverted",
            WIDE => "read64 did not read back write64",
            ID => "the id register changed",
            WAIT_FAILED => "Interrupt::wait failed",
            COUNT => "the eventfd counted other than 1",
            IRQ_STATUS => "irq_status was not the raised value",
            ACK => "irq_status stayed set after the ack",
            REPORT => "writing the report to the pipe failed",
            DMA => "the DMA-done MSI came with the DMA still running, or without status 0x100",
            SURVIVED => "the child survived a forbidden system call",
            _ => "unknown",
        }
    }
}

const ROUNDS: u32 = 5000;

/// The child's report to the parent, through a pipe.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
#[repr(C)]
struct Report {
    /// Register rounds done.
    rounds: u64,
    /// 1 if edu's DMA was still running when the wait for its MSI began
    /// (so the wait did block).
    waited_on_dma: u64,
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        let c = libc::WEXITSTATUS(status);
        format!("exited with {c} ({})", code::meaning(c))
    } else if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
        "killed by SIGKILL: in strict mode, a system call other than read, write, exit or sigreturn".into()
    } else {
        format!("ended with wait status {status:#x}")
    }
}

/// Forks; the child enters seccomp strict mode, runs `body` and leaves with
/// the exit system call and `body`'s code. Returns the child's wait status.
fn in_strict_child(body: impl FnOnce() -> u8) -> libc::c_int {
    // SAFETY: fork in a multithreaded process; the child runs only `body`
    // (which allocates nothing and takes no lock, since another thread may
    // have held one at the fork) and then ends with the exit system call.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let (strict, none) = (libc::SECCOMP_MODE_STRICT as libc::c_ulong, 0 as libc::c_ulong);
        // SAFETY: prctl with integer arguments only.
        let code = match unsafe { libc::prctl(libc::PR_SET_SECCOMP, strict, none, none) } {
            // A panic must not unwind into libtest's copy in the child.
            0 => std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(code::PANICKED),
            _ => code::PRCTL_FAILED,
        };
        // SAFETY: exit (not exit_group, which process::exit uses and strict
        // mode kills) ends the child's only thread, running no destructor.
        unsafe {
            libc::syscall(libc::SYS_exit, libc::c_long::from(code));
            libc::_exit(code::EXIT_RETURNED.into())
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place to write.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

/// Fails clearly on a kernel built without seccomp (its prctl says EINVAL).
fn require_seccomp() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Seccomp:")),
        "this kernel has no seccomp (CONFIG_SECCOMP): /proc/self/status has no Seccomp line"
    );
}

/// The data path, in the strict child: register loops through the typed block
/// and the offset accessors, then two MSIs waited for with `Interrupt::wait`,
/// one blocking `read` each (`take` is `preadv2` and `wait_timeout` polls:
/// strict mode forbids both).
fn data_path(bar0: &Region, regs: &Edu, irq: &Interrupt<'_, Host>, dma_iova: u64, report: &mut Report) -> u8 {
    for i in 0..ROUNDS {
        let v = i.wrapping_mul(0x9e37_79b9);
        // SAFETY: liveness only stores the value.
        unsafe { regs.liveness.write(v) };
        if regs.liveness.read() != !v {
            return code::TYPED;
        }
        if bar0.write32(0x04, !v).is_err() || bar0.write64(0x80, u64::from(v) << 32 | u64::from(i)).is_err() {
            return code::OFFSET_REFUSED;
        }
        match (bar0.read32(0x04), bar0.read64(0x80)) {
            (Ok(back), _) if back != v => return code::OFFSET,
            (_, Ok(wide)) if wide != u64::from(v) << 32 | u64::from(i) => return code::WIDE,
            (Ok(_), Ok(_)) => {}
            _ => return code::OFFSET_REFUSED,
        }
        report.rounds += 1;
    }
    if regs.id.read() != 0x010000ed {
        return code::ID;
    }
    // An MSI raised by hand, then one edu raises when a DMA transfer is done
    // (100 ms later, by QEMU's edu timer: the child blocks in `read`).
    // SAFETY: edu's interrupt registers only set and clear its status.
    unsafe { regs.irq_raise.write(0x100) };
    let raised = match irq.wait() {
        Ok(count) => count,
        Err(_) => return code::WAIT_FAILED,
    };
    if raised != 1 {
        return code::COUNT;
    }
    if regs.irq_status.read() != 0x100 {
        return code::IRQ_STATUS;
    }
    // SAFETY: the ack only clears the status; the DMA reads the buffer the
    // parent mapped at `dma_iova` into edu's own buffer.
    unsafe {
        regs.irq_ack.write(0x100);
        regs.dma_src.write(dma_iova);
        regs.dma_dst.write(EDU_BUFFER);
        regs.dma_count.write(XFER as u64);
        dao_vfio::barrier::io_wmb();
        regs.dma_cmd.write(DMA_START | DMA_IRQ);
    }
    report.waited_on_dma = u64::from(regs.dma_cmd.read() & DMA_START != 0);
    let done = match irq.wait() {
        Ok(count) => count,
        Err(_) => return code::WAIT_FAILED,
    };
    if done != 1 {
        return code::COUNT;
    }
    if regs.dma_cmd.read() & DMA_START != 0 || regs.irq_status.read() != 0x100 {
        return code::DMA;
    }
    // SAFETY: as above.
    unsafe { regs.irq_ack.write(0x100) };
    if regs.irq_status.read() != 0 {
        return code::ACK;
    }
    0
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn register_loops_and_an_msi_make_no_system_call() {
    require_seccomp();
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    vfio.device(&edu).unwrap().enable_bus_master().unwrap();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let mut buf = vfio.dma_alloc(4096, DmaOptions::default()).unwrap();
    let dma_iova = vfio.dma(&mut buf).unwrap().iova();
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two fds.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let status = {
        let dev = vfio.device(&edu).unwrap();
        let bar0 = dev.region(pci_region::BAR0).unwrap();
        let regs = bar0.block::<Edu>(0).unwrap();
        let irq = dev.interrupt(pci_irq::MSI, 0).unwrap();
        assert_eq!(irq.take().unwrap(), None, "no MSI pending before the child raises one");
        in_strict_child(|| {
            let mut report = Report::default();
            let code = data_path(bar0, regs, &irq, dma_iova, &mut report);
            let size = size_of::<Report>();
            // SAFETY: writes the report's bytes to the pipe (`write` is allowed).
            let wrote = unsafe { libc::write(pipe[1], (&raw const report).cast(), size) };
            if code == 0 && wrote != size as isize {
                return code::REPORT;
            }
            code
        })
    };
    let mut report = Report::default();
    // SAFETY: reads at most one report into `report`; the child has exited, so
    // closing the write end first makes the read return at once.
    let read = unsafe {
        libc::close(pipe[1]);
        let n = libc::read(pipe[0], (&raw mut report).cast(), size_of::<Report>());
        libc::close(pipe[0]);
        n
    };
    println!("strict child: {}; {report:?} ({read} bytes)", describe(status));
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "strict child {}", describe(status));
    assert_eq!(report.rounds, u64::from(ROUNDS));
    assert_eq!(report.waited_on_dma, 1, "the child blocked in wait until the DMA-done MSI: {report:?}");
    // The control: the library's own poll, in `wait_timeout` with nothing
    // pending, is caught.
    let status = {
        let irq = vfio.device(&edu).unwrap().interrupt(pci_irq::MSI, 0).unwrap();
        in_strict_child(|| match irq.wait_timeout(Duration::from_millis(1)) {
            Ok(_) => code::SURVIVED,
            Err(_) => code::WAIT_FAILED,
        })
    };
    println!("strict child in Interrupt::wait_timeout: {}", describe(status));
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "wait_timeout {}", describe(status));
    // The parent still drives the device, and nothing is left pending.
    let dev = vfio.device(&edu).unwrap();
    let regs = dev.region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
    assert_eq!(regs.irq_status.read(), 0);
    assert_eq!(dev.interrupt(pci_irq::MSI, 0).unwrap().take().unwrap(), None);
    vfio.dma_free(buf).unwrap();
    vfio.irq_disable(&edu, pci_irq::MSI).unwrap();
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs the board's kernel (seccomp): runs on the virtual board (tests/board/test)"]
fn strict_mode_harness_kills_a_system_call_and_lets_exit_through() {
    require_seccomp();
    let status = in_strict_child(|| {
        // SAFETY: getpid has no arguments and no effect.
        unsafe { libc::syscall(libc::SYS_getpid) };
        code::SURVIVED
    });
    println!("strict child calling getpid: {}", describe(status));
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "a getpid in strict mode must be killed, but the child {}",
        describe(status)
    );
    let status = in_strict_child(|| 0);
    println!("strict child doing nothing: {}", describe(status));
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the empty child {}", describe(status));
}
