//! Serves QEMU's `edu` device until the kernel wants it back: a driver loop
//! that reacts to an unbind (or hot-unplug) by finishing its work item and
//! freeing the device, so the unbind completes at once instead of hanging.
//!
//! ```text
//! serve 0000:00:01.0 [SECONDS]
//! ```
//! Each work item asks edu for a factorial and waits for its MSI. Between
//! items the loop checks the request notifier (one `read` that never
//! blocks); a real driver would put [`dao_vfio::Interrupt::fd`] of both in
//! its epoll set. Try it on the aarch64 virtual board with another process
//! unbinding edu: `vfio-bind unbind --wait 0000:00:01.0`. Ends after SECONDS
//! (default 60) if nobody asks.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{register_block, Context, Notification, PciCommand, Reserved, RO, RW, WO};

register_block! {
    /// The part of edu's BAR 0 this driver uses.
    struct EduRegs {
        0x00 => id: RO<u32>,
        0x04 => _liveness: RW<u32>,
        0x08 => factorial: RW<u32>,
        0x0c => _gap0: Reserved<0x14>,
        0x20 => status: RW<u32>,
        0x24 => irq_status: RO<u32>,
        0x28 => _gap1: Reserved<0x3c>,
        0x64 => irq_ack: WO<u32>,
    }
}

fn serve(name: &str, limit: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let mut vfio = Context::open()?;
    let edu = vfio.setup(name)?;
    vfio.device(&edu)?.pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER)?;
    vfio.irq_enable(&edu, pci_irq::MSI, 1)?;
    vfio.notify_enable(&edu, Notification::Request)?;

    let start = Instant::now();
    let mut items = 0u64;
    let asked = {
        let dev = vfio.device(&edu)?;
        let regs = dev.block::<EduRegs>(pci_region::BAR0, 0)?;
        let (msi, request) = (dev.interrupt(pci_irq::MSI, 0)?, dev.notifier(Notification::Request)?);
        println!("serving edu {name} (id {:#010x}) until the kernel wants it back", regs.id.read());
        loop {
            // One work item: 10! by edu, with an interrupt when it is done.
            // SAFETY: the status and factorial registers only compute.
            unsafe {
                regs.status.write(0x80);
                regs.factorial.write(10);
            }
            msi.wait_timeout(Duration::from_secs(5))?.ok_or("edu did not answer")?;
            assert_eq!(regs.factorial.read(), 3_628_800);
            // SAFETY: acknowledges the interrupt.
            unsafe { regs.irq_ack.write(regs.irq_status.read()) };
            items += 1;
            if request.take()?.is_some() {
                break true;
            }
            if start.elapsed() > limit {
                break false;
            }
        }
    };
    if asked {
        println!("the kernel asks for edu back: {items} work items done; freeing it");
    } else {
        println!("nobody asked for edu in {limit:?}: {items} work items done");
    }
    vfio.free(edu)?; // the waiting unbind completes now
    vfio.close().map_err(|(_, e)| e)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), seconds) = (args.first(), args.get(1).map(|s| s.parse::<u64>())) else {
        eprintln!("usage: serve PCI-ADDRESS [SECONDS]   (e.g. serve 0000:00:01.0 60)");
        return ExitCode::from(2);
    };
    let Ok(seconds) = seconds.unwrap_or(Ok(60)) else {
        eprintln!("serve: SECONDS must be a whole number");
        return ExitCode::from(2);
    };
    match serve(name, Duration::from_secs(seconds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve: {e}");
            ExitCode::FAILURE
        }
    }
}
