//! The NVMe section: random 4 KiB reads at queue depth 1 and 32 over the
//! board's disk, through the crate's polled loop (`examples/nvme/driver.rs`),
//! the same loop in C on raw VFIO (`benches/baseline.c`), and the kernel's
//! nvme driver (the controller rebound to `nvme`, `O_DIRECT` reads: `pread`
//! at depth 1, Linux AIO, `io_submit`/`io_getevents`, at depth 32), in one
//! boot, each round running the three sides one after another.

use std::time::Duration;

use dao_vfio::{Backend, Context};

#[path = "../../examples/nvme/driver.rs"]
#[allow(dead_code)] // the example's and the tests' parts
mod driver;

mod kernel;

use super::watchdog::Watchdog;
use super::{median, now_ns, time, Baseline, Percentiles, Result};
use driver::{Nvme, BLOCK, MAX_DEPTH};
use kernel::{bind, block_device, watched_batch, Outcome};

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a step may run before the watchdog names it (the longest, a
/// full run's kernel batch, takes a few seconds).
const STEP_STALL: Duration = Duration::from_secs(30);
/// How many times in a run the kernel's driver may stall (each time its
/// round's batches are rerun, about a minute each) before the section gives
/// up: at least this many, and one a round (a `--quick` run then stays well
/// inside the board's 300 s, a full one inside its 1800 s).
const MIN_KERNEL_STALLS: usize = 3;

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

/// The kernel's batches of one round, a warm-up before each; `None` when the
/// driver stalled (the controller is back on vfio-pci then).
fn kernel_round(
    watchdog: &Watchdog,
    round: usize,
    name: &str,
    dev: &str,
    blocks: u64,
    depths: &[usize],
    n: usize,
) -> Result<Option<Vec<Side>>> {
    let mut sides = Vec::new();
    for &depth in depths {
        watchdog.step(format!("round {}: the kernel's reads at depth {depth} on {dev}", round + 1));
        for (batch, reads) in [200, n].into_iter().enumerate() {
            match watched_batch(name, dev, blocks, depth, reads)? {
                Outcome::Done(_) if batch == 0 => {} // the warm-up
                Outcome::Done(side) => sides.push(side),
                Outcome::Stalled => return Ok(None),
            }
        }
    }
    Ok(Some(sides))
}

/// One round at one depth: (crate, C, kernel), in an order that rotates.
type Round = [Side; 3];

/// Runs the section and prints its table.
pub fn run(baseline: &mut Baseline, name: &str, rounds: usize, n: usize) -> Result<()> {
    let watchdog = Watchdog::start("NVMe", STEP_STALL);
    watchdog.step("writing the pattern through the crate");
    let blocks = write_disk(name)?;
    let depths = [1, MAX_DEPTH];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); depths.len()];
    // Warm-up (TCG translates code the first time it runs).
    for &depth in &depths {
        watchdog.step(format!("warm-up at depth {depth}, crate"));
        crate_batch(name, depth, 200)?;
        watchdog.step(format!("warm-up at depth {depth}, C"));
        c_batch(baseline, depth, 200)?;
    }
    let mut stalls = 0;
    for round in 0..rounds {
        let kernel = loop {
            watchdog.step(format!("round {}: binding {name} to nvme", round + 1));
            bind(name, Some("nvme"))?;
            watchdog.step(format!("round {}: waiting for {name}'s block device", round + 1));
            let dev = block_device(name)?;
            match kernel_round(&watchdog, round, name, &dev, blocks, &depths, n)? {
                Some(sides) => {
                    watchdog.step(format!("round {}: unbinding {name} from nvme", round + 1));
                    bind(name, None)?;
                    break sides;
                }
                None if stalls < MIN_KERNEL_STALLS.max(rounds) => stalls += 1,
                None => return Err(format!("the kernel's nvme driver stalled {} times", stalls + 1).into()),
            }
        };
        for (i, &depth) in depths.iter().enumerate() {
            watchdog.step(format!("round {}: crate and C at depth {depth}", round + 1));
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
    drop(watchdog);
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
    if stalls > 0 {
        println!();
        println!(
            "The kernel's nvme driver stalled {stalls} time(s) in this run (no read completed for {:?}): each time the \
             controller was unbound from nvme, bound again, and that round's kernel batches were rerun.",
            kernel::STALL
        );
    }
    Ok(())
}
