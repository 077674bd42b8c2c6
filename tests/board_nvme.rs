//! `examples/nvme`'s polled driver, unchanged, against QEMU's NVMe controller
//! on the real kernel (the board's `DAO_VFIO_NVME`: one namespace on a fresh
//! 64 MiB disk image per boot): run on the virtual boards
//! (`tests/board/test`), ignored on the host. On aarch64 `tests/check` runs
//! it through both interfaces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

mod common;
#[path = "../examples/nvme/driver.rs"]
#[allow(dead_code)] // the example's printing helpers
mod driver;

use common::{dev, expected_backend};
use dao_vfio::Host;
use driver::{Controller, Nvme, BLOCK, MAX_DEPTH};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The board's disk image (tests/board/lib.sh, `NVME_DISK_MIB`).
const DISK_BLOCKS: u64 = (64 << 20) / BLOCK as u64;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts the allocations (and reallocations) of an armed thread.
struct Counting;

// SAFETY: every call is passed unchanged to `System`; counting touches only
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sets the controller up through the board run's backend and starts it.
fn open() -> Nvme<Host> {
    let name = dev("DAO_VFIO_NVME");
    let nvme = Nvme::open(common::context(), &name).unwrap_or_else(|e| panic!("setting up {name}: {e}"));
    assert_eq!(nvme.context().active_backend(), Some(expected_backend()));
    nvme
}

fn start(nvme: &mut Nvme<Host>) -> Controller<'_> {
    nvme.start(TIMEOUT).unwrap_or_else(|e| panic!("starting the controller: {e}"))
}

/// Nanoseconds since the first call.
fn clock() -> impl FnMut() -> u64 {
    let epoch = Instant::now();
    move || epoch.elapsed().as_nanos() as u64
}

#[test]
#[ignore = "needs an NVMe controller bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_driver_identifies_the_controller_writes_the_disk_and_reads_it_back() {
    let mut nvme = open();
    {
        let mut ctrl = start(&mut nvme);
        let id = ctrl.identity().clone();
        assert_eq!(id.model, "QEMU NVMe Ctrl");
        assert_eq!(id.serial, "dao-nvme");
        assert!(id.version >= 0x10400, "NVMe version {:#x}", id.version);
        assert_eq!(id.blocks, DISK_BLOCKS, "namespace 1 is the board's 64 MiB image");
        ctrl.write_pattern(DISK_BLOCKS, MAX_DEPTH).unwrap();
        ctrl.verify_pattern(DISK_BLOCKS, MAX_DEPTH).unwrap();
        // One at a time too (each completion before the next submission).
        ctrl.verify_pattern(64, 1).unwrap();
        for depth in [1, MAX_DEPTH] {
            let mut lat = vec![0u64; 2000];
            let run = ctrl.random_reads(DISK_BLOCKS, depth, 7, &mut lat, &mut clock(), 5_000_000_000).unwrap();
            assert_eq!(run.ios, 2000);
            assert!(lat.iter().all(|&ns| ns > 0), "every read timed");
            println!("queue depth {depth}: {:.0} IOPS", run.iops());
        }
    }
    nvme.close().unwrap();
}

#[test]
#[ignore = "needs an NVMe controller bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_io_loop_allocates_nothing() {
    let mut nvme = open();
    {
        let mut ctrl = start(&mut nvme);
        ctrl.write_pattern(256, MAX_DEPTH).unwrap();
        let mut lat = vec![0u64; 1000];
        let mut clock = clock();
        clock();
        ARMED.with(|a| a.set(true));
        let run = ctrl.random_reads(256, MAX_DEPTH, 3, &mut lat, &mut clock, 5_000_000_000);
        ARMED.with(|a| a.set(false));
        run.unwrap();
        // The control: the counter counts on this thread.
        ARMED.with(|a| a.set(true));
        drop(std::hint::black_box(vec![1u8; 16]));
        ARMED.with(|a| a.set(false));
        assert_eq!(ALLOCS.with(Cell::get), 1, "the I/O loop allocated (the control's one allocation aside)");
    }
    nvme.close().unwrap();
}

/// Forks; the child sets the controller up, enters seccomp strict mode (only
/// read, write, exit and sigreturn), runs the I/O loop with a clock that is
/// a counter, and leaves with the exit system call: 0 when the loop
/// returned Ok, 1 on its error, 2 when setup failed, 3 when prctl did.
fn io_loop_in_strict_child(depth: usize) -> libc::c_int {
    // SAFETY: fork with libtest's other thread waiting; the child sets up
    // with the crate (allocation included) before strict mode, then runs
    // only the I/O loop and ends with the exit system call.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = (|| {
            // The child's own context: DMA memory inherited through fork
            // would be the parent's pinned pages, copied for the child.
            // Leaked, with everything the loop uses: nothing is dropped
            // (no munmap, no close) after strict mode begins.
            let nvme = Box::leak(Box::new(Nvme::open(common::context(), &dev("DAO_VFIO_NVME")).map_err(|_| 2)?));
            let ctrl = Box::leak(Box::new(nvme.start(TIMEOUT).map_err(|_| 2)?));
            ctrl.write_pattern(256, MAX_DEPTH).map_err(|_| 2)?;
            let lat = vec![0u64; 1000].leak();
            let mut ticks = 0u64;
            let mut clock = || {
                ticks += 1;
                ticks
            };
            let (strict, none) = (libc::SECCOMP_MODE_STRICT as libc::c_ulong, 0 as libc::c_ulong);
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_SECCOMP, strict, none, none) } != 0 {
                return Err(3);
            }
            match ctrl.random_reads(256, depth, 5, lat, &mut clock, 1 << 32) {
                Ok(_) => Ok(0),
                Err(e) => {
                    std::mem::forget(e);
                    Err(1)
                }
            }
        })()
        .unwrap_or_else(|c| c);
        // SAFETY: exit (not exit_group, which strict mode kills) ends the
        // child's only thread, running no destructor.
        unsafe {
            libc::syscall(libc::SYS_exit, libc::c_long::from(code));
            libc::_exit(9)
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place to write.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
#[ignore = "needs an NVMe controller bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_io_loop_makes_no_system_call() {
    for depth in [1, MAX_DEPTH] {
        let status = io_loop_in_strict_child(depth);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "queue depth {depth}: the strict-mode child {}",
            if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
                "was killed: the I/O loop made a system call".to_string()
            } else {
                format!(
                    "ended with wait status {status:#x} (exit 1: the loop failed, 2: setup failed, 3: prctl failed)"
                )
            }
        );
    }
}

/// The kernel's log from now on (`/dev/kmsg`, read without blocking).
struct KernelLog(std::fs::File);

impl KernelLog {
    fn open() -> Self {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").unwrap();
        f.seek(std::io::SeekFrom::End(0)).unwrap(); // skip what is already there
        KernelLog(f)
    }

    /// The IOMMU driver's fault lines (intel-iommu's `DMAR` faults,
    /// arm-smmu-v3's events) logged since `open`, waiting up to `wait` for
    /// the first.
    fn iommu_faults(&mut self, wait: Duration) -> Vec<String> {
        use std::io::Read;
        let start = Instant::now();
        let mut found = Vec::new();
        while found.is_empty() && start.elapsed() < wait {
            let mut record = [0u8; 8192];
            // One record per read; EAGAIN when there is no more.
            while let Ok(n @ 1..) = self.0.read(&mut record) {
                let line = String::from_utf8_lossy(&record[..n]);
                let text = line.split_once(';').map_or(&*line, |(_, t)| t).trim().to_string();
                // intel-iommu: "DMAR: [DMA Write ...] ... fault addr ...";
                // arm-smmu-v3: "arm-smmu-v3 ...: event 0x10 received:".
                let dmar_fault = text.contains("DMAR") && text.contains("fault");
                let smmu_event = text.contains("smmu") && text.contains("event");
                if dmar_fault || smmu_event {
                    found.push(text);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    }
}

#[test]
#[ignore = "needs an NVMe controller bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_read_into_an_unmapped_iova_is_refused_and_the_controller_is_set_up_again() {
    let mut nvme = open();
    {
        let mut ctrl = start(&mut nvme);
        ctrl.write_pattern(64, MAX_DEPTH).unwrap();
        // 256 MiB past the driver's only mapping: nothing is mapped there.
        let unmapped = ctrl.slot_iova(0) + (256 << 20);
        let mut kmsg = KernelLog::open();
        let done = ctrl.read_to(0, unmapped);
        let csts = ctrl.bar().read32(driver::reg::CSTS).unwrap();
        // QEMU's controller writes the data through a bounce buffer, and the
        // IOMMU drops the write: the command itself may still succeed. What
        // must be seen is the IOMMU's fault, in the kernel's log.
        let faults = kmsg.iommu_faults(Duration::from_secs(2));
        println!("read of block 0 into unmapped IOVA {unmapped:#x}: {done:?}, CSTS {csts:#x}; the IOMMU reported:");
        for line in &faults {
            println!("  {line}");
        }
        assert!(!faults.is_empty(), "no IOMMU fault in the kernel log for the DMA to {unmapped:#x}");
        match done {
            Ok(c) if c.status == 0 => {
                println!("the command completed with success: the controller did not see the fault")
            }
            Ok(c) => println!("the command completed with status {:#x} (SCT {}, SC {:#x})", c.status, c.sct(), c.sc()),
            Err(e) => assert_ne!(csts & 2, 0, "no completion and no controller fatal status: {e}"),
        }
        // The crate is unaffected: the same mapping still reads and writes.
        ctrl.verify_pattern(64, 1).unwrap();
    }
    nvme.close().unwrap();
    // Freed and set up again: the controller reset, the data still there.
    let mut nvme = open();
    {
        let mut ctrl = start(&mut nvme);
        ctrl.verify_pattern(64, MAX_DEPTH).unwrap();
    }
    nvme.close().unwrap();
}
