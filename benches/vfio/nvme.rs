//! The NVMe section: random 4 KiB reads at queue depth 1 and 32 over the
//! board's disk, through the crate's polled loop (`examples/nvme/driver.rs`),
//! the same loop in C on raw VFIO (`benches/baseline.c`), and the kernel's
//! nvme driver (the controller rebound to `nvme`, `O_DIRECT` reads: `pread`
//! at depth 1, Linux AIO, `io_submit`/`io_getevents`, at depth 32), in one
//! boot, each round running the three sides one after another.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use dao_vfio::{Backend, Context};

#[path = "../../examples/nvme/driver.rs"]
#[allow(dead_code)] // the example's and the tests' parts
mod driver;

use super::{median, now_ns, time, Baseline, Percentiles, Result};
use driver::{pattern, Nvme, BLOCK, MAX_DEPTH};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One side's batch: IOPS and latency percentiles.
type Side = (f64, Percentiles);

/// The crate's batch: a context of its own (legacy, like the C program's).
fn crate_batch(name: &str, depth: usize, n: usize) -> Result<Side> {
    let mut nvme = Nvme::open(Context::open_with(Backend::Legacy)?, name)?;
    let mut lat = vec![0u64; n];
    let run = {
        let mut ctrl = nvme.start(TIMEOUT)?;
        let blocks = ctrl.identity().blocks;
        ctrl.random_reads(blocks, depth, 0x5eed, &mut lat, &mut now_ns, 5_000_000_000)?
    };
    nvme.close()?;
    Ok((run.iops(), Percentiles::of(lat)))
}

/// Writes the pattern over the whole disk, once, through the crate.
fn write_disk(name: &str) -> Result<u64> {
    let mut nvme = Nvme::open(Context::open_with(Backend::Legacy)?, name)?;
    let blocks = {
        let mut ctrl = nvme.start(TIMEOUT)?;
        let blocks = ctrl.identity().blocks;
        ctrl.write_pattern(blocks, MAX_DEPTH)?;
        blocks
    };
    nvme.close()?;
    Ok(blocks)
}

fn bind(name: &str, driver: Option<&str>) -> Result<()> {
    let out = Command::new("/bin/vfio-bind").arg("bind").arg(name).args(driver).output()?;
    if !out.status.success() {
        return Err(format!("vfio-bind bind {name} {driver:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// The block device the kernel's nvme driver made for `name`'s namespace 1,
/// once it opens (the driver scans namespaces after probing, so the node can
/// be there a moment before the disk answers: `ENXIO`).
fn block_device(name: &str) -> Result<String> {
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

/// The kernel's batch: `n` random reads with `O_DIRECT` on the block device.
fn kernel_batch(dev: &str, blocks: u64, depth: usize, n: usize) -> Result<Side> {
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
            // SAFETY: `events` has room for `depth` events; no timeout.
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

/// The C program's batch.
fn c_batch(baseline: &mut Baseline, depth: usize, n: usize) -> Result<Side> {
    let op = if depth == 1 { "nvme_qd1" } else { "nvme_qd32" };
    let line = baseline.ask(op, n as u64)?;
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["c", answered, iops, p50, p99, p999, max] if *answered == op => Ok((
            iops.parse()?,
            Percentiles { p50: p50.parse()?, p99: p99.parse()?, p999: p999.parse()?, max: max.parse()? },
        )),
        _ => Err(format!("unexpected answer from the C baseline to {op}: {line}").into()),
    }
}

/// One round at one depth: (crate, C, kernel), in an order that rotates.
type Round = [Side; 3];

/// Runs the section and prints its table.
pub fn run(baseline: &mut Baseline, name: &str, rounds: usize, n: usize) -> Result<()> {
    let blocks = write_disk(name)?;
    let depths = [1, MAX_DEPTH];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); depths.len()];
    // Warm-up (TCG translates code the first time it runs).
    for &depth in &depths {
        crate_batch(name, depth, 200)?;
        c_batch(baseline, depth, 200)?;
    }
    for round in 0..rounds {
        let mut kernel = Vec::new();
        bind(name, Some("nvme"))?;
        let dev = block_device(name)?;
        for &depth in &depths {
            kernel_batch(&dev, blocks, depth, 200)?; // warm-up
            kernel.push(kernel_batch(&dev, blocks, depth, n)?);
        }
        bind(name, None)?;
        for (i, &depth) in depths.iter().enumerate() {
            let (ours, theirs) = if round % 2 == 0 {
                let ours = crate_batch(name, depth, n)?;
                (ours, c_batch(baseline, depth, n)?)
            } else {
                let theirs = c_batch(baseline, depth, n)?;
                (crate_batch(name, depth, n)?, theirs)
            };
            results[i].push([ours, theirs, kernel[i]]);
        }
        eprintln!("bench: NVMe round {}/{rounds} done", round + 1);
    }
    println!();
    println!(
        "NVMe: random 4 KiB reads over the {} MiB namespace (each read checked against the pattern written first), \
         {n} reads per batch, {rounds} rounds; the crate's polled loop and the C one on raw VFIO (legacy container), the \
         kernel's nvme driver with O_DIRECT (`pread` at depth 1, Linux AIO at depth 32). IOPS and latencies are medians \
         over the rounds; the ratios are the medians of the rounds' paired IOPS ratios, with their range:",
        (blocks * BLOCK as u64) >> 20
    );
    println!();
    println!("| queue depth | side | IOPS | p50 | p99 | p99.9 | IOPS crate/side (range) |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (i, depth) in depths.iter().enumerate() {
        let rows = &results[i];
        for (s, label) in ["crate", "C (raw VFIO)", "kernel nvme driver"].iter().enumerate() {
            let med = |f: &dyn Fn(&Side) -> f64| median(rows.iter().map(|r| f(&r[s])).collect());
            let ratio = if s == 0 {
                String::new()
            } else {
                let ratios: Vec<f64> = rows.iter().map(|r| r[0].0 / r[s].0).collect();
                let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
                format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios))
            };
            println!(
                "| {} | {label} | {:.0} | {} | {} | {} | {ratio} |",
                if s == 0 { depth.to_string() } else { String::new() },
                med(&|x| x.0),
                time(med(&|x| x.1.p50)),
                time(med(&|x| x.1.p99)),
                time(med(&|x| x.1.p999)),
            );
        }
    }
    Ok(())
}
