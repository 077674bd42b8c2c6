//! A small driver for QEMU's `edu` PCI device: DMA through the IOMMU, and
//! MSI through an eventfd. Its logic (`driver.rs`) is generic over the
//! kernel, and unit-tested against a fake edu in `tests/fake_edu.rs`.
//!
//! ```text
//! edu 0000:00:01.0
//! ```
//! Run as root with the device bound to vfio-pci (the aarch64 virtual board
//! does that: `cargo run --target aarch64-unknown-linux-musl --example edu -- 0000:00:01.0`).

mod driver;

use std::process::ExitCode;
use std::time::Duration;

use dao_vfio::Context;
use driver::{Edu, Result};

const TIMEOUT: Duration = Duration::from_secs(5);

fn run(name: &str) -> Result<()> {
    let mut edu = Edu::open(Context::open()?, name)?;
    {
        let edu = edu.data_plane()?;
        println!("edu {name}: id {:#010x}", edu.id()?);
        let back = edu.liveness(0x1234_5678)?;
        println!("  liveness: wrote 0x12345678, read {back:#010x} (its complement)");
        let (result, fired) = edu.factorial(10, TIMEOUT)?;
        println!("  factorial: 10! = {result} (MSI received, count {fired})");
        let message = b"through the IOMMU and back";
        let back = edu.dma_round_trip(message, TIMEOUT)?;
        let (src, dst) = edu.iovas();
        println!("  DMA: {src:#x} -> edu -> {dst:#x}: {:?}", String::from_utf8_lossy(&back));
        if back != message {
            return Err("DMA round trip returned other bytes".into());
        }
        let (fired, status) = edu.raise(0x42, TIMEOUT)?;
        println!("  MSI: raised by hand, received (count {fired}), status {status:#x}");
    }
    edu.close()
}

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: edu PCI-ADDRESS   (e.g. edu 0000:00:01.0)");
        return ExitCode::from(2);
    };
    match run(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
