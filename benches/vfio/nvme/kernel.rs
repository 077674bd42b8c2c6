//! The NVMe section's third side: the kernel's own nvme driver on the same
//! controller (rebound to `nvme`), `O_DIRECT` random reads of its block device:
//! `pread` at depth 1, Linux AIO (`io_submit`/`io_getevents`) at depth 32.
//!
//! The kernel's driver can stall on the virtual boards: its reads go
//! unanswered, its own abort and controller reset do not bring them back,
//! and the process waits in `io_getevents` for good (at depth 32 only: in
//! most full runs on the x86_64 board, once in a CI run on aarch64-6.1;
//! never with the crate's or C's polled loops on the same controller, which
//! use neither the driver's interrupts nor its shadow doorbells). So each batch runs on a
//! thread of its own, watched: when no read completes for [`STALL`], the
//! controller is unbound from `nvme` (the driver cancels what is in flight
//! and the waits return), and the caller binds it again and reruns the
//! round's kernel batches. The stalls are counted and printed with the table.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::driver::{pattern, BLOCK, MAX_DEPTH};
use super::Side;
use crate::watchdog::kernel_log_tail;
use crate::{now_ns, Percentiles, Result};

/// How long the kernel's batch may go without a read completing before it
/// counts as stalled (its reads take well under a millisecond).
pub const STALL: Duration = Duration::from_secs(10);

/// A kernel batch's outcome.
pub enum Outcome {
    /// The batch ran: its IOPS and latencies.
    Done(Side),
    /// No read completed for [`STALL`]: the controller was unbound from
    /// `nvme` (and is back on vfio-pci).
    Stalled,
}

/// Runs [`batch`] on its own thread, watching it; see the module's doc.
pub fn watched_batch(name: &str, dev: &str, blocks: u64, depth: usize, n: usize) -> Result<Outcome> {
    let progress = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| batch(dev, blocks, depth, n, &progress).map_err(|e| e.to_string()));
        let (mut seen, mut since) = (0, Instant::now());
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            let now = progress.load(Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= STALL {
                eprintln!(
                    "bench: the kernel's nvme driver completed no read on {dev} for {STALL:?} ({seen} of {n} done at \
                     depth {depth}); unbinding {name} from nvme to end its reads. The kernel's log (last 20 lines):\n{}",
                    kernel_log_tail(20)
                );
                // Unbinding waits for the driver to cancel its reads (at its
                // next timeout); should it fail, the scope's join waits on.
                bind(name, None)?;
                // The reads were cancelled with the driver: the batch failed.
                let ended = worker.join().map_err(|_| "the kernel batch's thread panicked")?;
                eprintln!(
                    "bench: the stalled batch ended: {}",
                    ended.err().unwrap_or_else(|| "without an error".into())
                );
                return Ok(Outcome::Stalled);
            }
        }
        let side = worker.join().map_err(|_| "the kernel batch's thread panicked")??;
        Ok(Outcome::Done(side))
    })
}

/// Binds `name` with the board's tool (`vfio-bind`): to `driver`, or back to
/// its VFIO driver when `None`.
pub fn bind(name: &str, driver: Option<&str>) -> Result<()> {
    let out = Command::new("/bin/vfio-bind").arg("bind").arg(name).args(driver).output()?;
    if !out.status.success() {
        return Err(format!("vfio-bind bind {name} {driver:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// The block device the kernel's nvme driver made for `name`'s namespace 1,
/// once it opens (the driver scans namespaces after probing, so the node can
/// be there a moment before the disk answers: `ENXIO`).
pub fn block_device(name: &str) -> Result<String> {
    let start = Instant::now();
    loop {
        let dir = format!("/sys/bus/pci/devices/{name}/nvme");
        for ctrl in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let c = ctrl.file_name().to_string_lossy().into_owned();
            let dev = format!("/dev/{c}n1");
            if std::fs::File::open(&dev).is_ok() {
                return Ok(dev);
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("no /dev/nvmeXn1 of {name} opens 30 s after binding it to nvme").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Linux AIO's control block (`struct iocb`, little-endian).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// A Linux AIO context, destroyed when dropped: `io_destroy` waits for the
/// reads still in flight, so an early return never frees a buffer the kernel
/// may still write.
struct AioContext(libc::c_ulong);

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: the context was made by io_setup and is destroyed once.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
    }
}

fn check_block(buf: &[u64], block: u64) -> Result<()> {
    if buf[0] != pattern(block, 0) || buf[BLOCK / 8 - 1] != pattern(block, BLOCK / 8 - 1) {
        return Err(format!("the kernel read block {block}: not its pattern").into());
    }
    Ok(())
}

fn xorshift(rng: &mut u64, blocks: u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng % blocks
}

/// The kernel's batch: `n` random reads with `O_DIRECT` on the block device,
/// each one done counted in `progress`.
fn batch(dev: &str, blocks: u64, depth: usize, n: usize, progress: &AtomicUsize) -> Result<Side> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(dev)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // Page-aligned buffers (O_DIRECT), one per command in flight.
    let mut bufs = vec![[0u64; BLOCK / 8]; MAX_DEPTH + 1];
    // One block more than needed: the first page boundary inside is the base.
    let base = {
        let p = bufs.as_mut_ptr() as usize;
        (p + BLOCK - 1) & !(BLOCK - 1)
    };
    let buf = |slot: usize| (base + slot * BLOCK) as *mut u64;
    let mut lat = vec![0u64; n];
    let mut rng = 0x5eedu64 | 1;
    let (first, last);
    if depth == 1 {
        first = now_ns();
        for l in lat.iter_mut() {
            let block = xorshift(&mut rng, blocks);
            let t = now_ns();
            // SAFETY: `buf(0)` is BLOCK bytes inside `bufs`.
            let got = unsafe { libc::pread(fd, buf(0).cast(), BLOCK, (block * BLOCK as u64) as i64) };
            *l = now_ns() - t;
            if got != BLOCK as isize {
                return Err(format!("pread of {dev}: {}", std::io::Error::last_os_error()).into());
            }
            // SAFETY: as above, just written by the kernel.
            check_block(unsafe { std::slice::from_raw_parts(buf(0), BLOCK / 8) }, block)?;
            progress.fetch_add(1, Relaxed);
        }
        last = now_ns();
    } else {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the context id to `ctx`.
        if unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_long, &mut ctx) } != 0 {
            return Err(format!("io_setup: {}", std::io::Error::last_os_error()).into());
        }
        // Declared after `bufs`, so dropped before them on every path.
        let aio = AioContext(ctx);
        let mut iocbs = vec![Iocb::default(); depth];
        let mut started = vec![0u64; depth];
        let mut block_of = vec![0u64; depth];
        let mut events = vec![IoEvent::default(); depth];
        let submit = |iocbs: &mut [Iocb], slot: usize, block: u64| -> Result<()> {
            iocbs[slot] = Iocb {
                data: slot as u64,
                fildes: fd as u32,
                buf: buf(slot) as u64,
                nbytes: BLOCK as u64,
                offset: (block * BLOCK as u64) as i64,
                ..Iocb::default()
            };
            let mut one = [&mut iocbs[slot] as *mut Iocb];
            // SAFETY: one valid iocb; its buffer outlives the read, which ends
            // before `aio` is dropped (io_destroy waits for it) and `aio` is
            // dropped before `bufs`.
            if unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1 as libc::c_long, one.as_mut_ptr()) } != 1 {
                return Err(format!("io_submit: {}", std::io::Error::last_os_error()).into());
            }
            Ok(())
        };
        first = now_ns();
        let (mut submitted, mut done) = (0, 0);
        while submitted < depth.min(n) {
            block_of[submitted] = xorshift(&mut rng, blocks);
            started[submitted] = now_ns();
            submit(&mut iocbs, submitted, block_of[submitted])?;
            submitted += 1;
        }
        while done < n {
            // SAFETY: `events` has room for `depth` events; no timeout (a
            // stall is the rescuer's: `watched_batch`).
            let got = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    ctx,
                    1 as libc::c_long,
                    depth as libc::c_long,
                    events.as_mut_ptr(),
                    0usize,
                )
            };
            if got < 1 {
                return Err(format!("io_getevents: {}", std::io::Error::last_os_error()).into());
            }
            let now = now_ns();
            for e in &events[..got as usize] {
                let slot = e.data as usize;
                if e.res != BLOCK as i64 {
                    return Err(format!("AIO read of {dev}: result {}", e.res).into());
                }
                // SAFETY: the kernel finished writing this slot's buffer.
                check_block(unsafe { std::slice::from_raw_parts(buf(slot), BLOCK / 8) }, block_of[slot])?;
                lat[done] = now - started[slot];
                done += 1;
                progress.fetch_add(1, Relaxed);
                if submitted < n {
                    block_of[slot] = xorshift(&mut rng, blocks);
                    started[slot] = now_ns();
                    submit(&mut iocbs, slot, block_of[slot])?;
                    submitted += 1;
                }
            }
        }
        last = now_ns();
        drop(aio);
    }
    drop(bufs);
    Ok((n as f64 * 1e9 / (last - first) as f64, Percentiles::of(lat)))
}
