//! A polled NVMe driver on the crate: controller reset and enable, admin
//! queue, Identify, one I/O queue pair, 4 KiB writes and reads by polling
//! completions (phase bits), doorbells after `io_wmb`. Its logic
//! (`driver.rs`) is shared with the board tests (`tests/board_nvme.rs`) and
//! the benchmark (`benches/run`).
//!
//! ```text
//! nvme [0000:00:04.0 [BLOCKS]]
//! ```
//! The controller defaults to `$DAO_VFIO_NVME` (the virtual boards set it:
//! `cargo run --target aarch64-unknown-linux-musl --example nvme` boots one).
//! Writes a pattern over the first BLOCKS 4 KiB blocks (default: the whole
//! namespace), reads it all back and compares every word, then times random
//! reads at queue depth 1 and 32 (each read checked): IOPS and latency
//! percentiles. Run as root with the controller bound to vfio-pci (the
//! virtual boards do that, and name it in `DAO_VFIO_NVME`).

#[allow(dead_code)] // the board tests and the benchmark use the rest
mod driver;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dao_vfio::Context;
use driver::{Nvme, Result};

const TIMEOUT: Duration = Duration::from_secs(5);
const READS: usize = 20_000;

/// The `q` quantile of sorted `ns`.
fn quantile(ns: &[u64], q: f64) -> f64 {
    ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1] as f64 / 1e3
}

fn run(name: &str, blocks: Option<u64>) -> Result<()> {
    let mut nvme = Nvme::open(Context::open()?, name)?;
    {
        let mut ctrl = nvme.start(TIMEOUT)?;
        let id = ctrl.identity().clone();
        println!(
            "nvme {name}: {:?}, serial {:?}, NVMe {}.{}",
            id.model,
            id.serial,
            id.version >> 16,
            id.version >> 8 & 0xff
        );
        println!("  namespace 1: {} blocks of 4 KiB ({} B LBAs)", id.blocks, id.lba_bytes);
        let blocks = blocks.unwrap_or(id.blocks).min(id.blocks);
        let start = Instant::now();
        ctrl.write_pattern(blocks, driver::MAX_DEPTH)?;
        ctrl.verify_pattern(blocks, driver::MAX_DEPTH)?;
        println!("  wrote {blocks} blocks and read them back, every word as written ({:.2?})", start.elapsed());
        // The buffer of latencies is allocated here, before the loop.
        let mut lat = vec![0u64; READS];
        let epoch = Instant::now();
        let mut clock = || epoch.elapsed().as_nanos() as u64;
        for depth in [1, driver::MAX_DEPTH] {
            let run = ctrl.random_reads(blocks, depth, 0x5eed, &mut lat, &mut clock, 5_000_000_000)?;
            lat.sort_unstable();
            println!(
                "  random 4 KiB reads, queue depth {depth:>2}: {:>8.0} IOPS, latency p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
                run.iops(),
                quantile(&lat, 0.5),
                quantile(&lat, 0.99),
                quantile(&lat, 0.999)
            );
        }
    }
    nvme.close()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    // On the virtual boards the controller is named in DAO_VFIO_NVME.
    let Some(name) = args.next().or_else(|| std::env::var("DAO_VFIO_NVME").ok()) else {
        eprintln!("usage: nvme PCI-ADDRESS [BLOCKS]   (e.g. nvme 0000:00:04.0; default: $DAO_VFIO_NVME)");
        return ExitCode::from(2);
    };
    let blocks = match args.next().map(|b| b.parse::<u64>()) {
        None => None,
        Some(Ok(b)) if b > 0 => Some(b),
        Some(_) => {
            eprintln!("nvme: BLOCKS must be a positive number of 4 KiB blocks");
            return ExitCode::from(2);
        }
    };
    match run(&name, blocks) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
