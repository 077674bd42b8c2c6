//! Sets up each device named on the command line, prints what VFIO says about
//! it (bus, IOMMU group, the kernel interface it was opened through, regions,
//! interrupts) and frees it.
//!
//! ```text
//! vfio-probe 0000:00:02.0 9010000.pl031
//! vfio-probe --bus platform 9020000.fw-cfg
//! ```
//! Run it as root on a board whose devices are bound to vfio-pci or
//! vfio-platform (`vfio-bind bind DEV`). Exits 1 if any device could not be
//! set up, 2 on bad usage. Installed with `cargo install dao-vfio --features tools`.

use std::process::ExitCode;

use dao_vfio::{Bus, Context, Device, Host, RegionKind};

const USAGE: &str = "usage: vfio-probe [--bus pci|platform] DEVICE...   (e.g. vfio-probe 0000:00:02.0 9010000.pl031)";

const HELP: &str = "\
vfio-probe: sets up each device named through VFIO, prints what VFIO says about it (bus, IOMMU
group, the kernel interface it was opened through, regions, interrupts) and frees it. Run as root;
the devices must be bound to vfio-pci or vfio-platform first (vfio-bind bind DEV).

  vfio-probe DEVICE...                      the bus of each found in sysfs
  vfio-probe --bus pci|platform DEVICE...   on the bus stated
  vfio-probe --help                         this text

Exit status: 0 every device was set up and freed, 1 one was not (the message says why), 2 bad usage.";

fn print_device(dev: &Device<'_, Host>) {
    let iommu = if dev.is_noiommu() { "noiommu" } else { "iommu" };
    // Read from sysfs for a device opened through its cdev.
    let group = dev.group().map_or_else(|e| format!("unknown ({e})"), |g| g.to_string());
    println!(
        "{}: bus {}, group {group} ({iommu}), opened through {:?}, flags {:?}",
        dev.name(),
        dev.bus(),
        dev.backend(),
        dev.flags()
    );
    println!("  regions: {}", dev.num_regions());
    for set_up in dev.regions() {
        // A diagnostic tool shows them all: ask for the ones setup deferred.
        let described;
        let r = match set_up.kind() {
            RegionKind::Deferred => match dev.describe_region(set_up.index()) {
                Ok(region) => {
                    described = region;
                    &described
                }
                Err(e) => {
                    println!("    [{}] {e}", set_up.index());
                    continue;
                }
            },
            _ => set_up,
        };
        match r.kind() {
            RegionKind::Absent => println!("    [{}] absent", r.index()),
            kind => println!("    [{}] size {:#x}, flags {:?}, {kind}", r.index(), r.size(), r.flags()),
        }
        for (offset, len) in r.mapped_areas() {
            println!("        mapped area {offset:#x}..{:#x}", offset + len);
        }
    }
    println!("  interrupt indexes: {}", dev.num_irqs());
    for irq in dev.irqs() {
        match irq {
            Ok(irq) => println!("    [{}] count {}, flags {:?}", irq.index(), irq.count(), irq.flags()),
            Err(e) => println!("    {e}"),
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let mut bus = None;
    if matches!(args.peek().map(String::as_str), Some("--help" | "-h")) {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.peek().map(String::as_str) == Some("--bus") {
        args.next();
        bus = match args.next().as_deref() {
            Some("pci") => Some(Bus::Pci),
            Some("platform") => Some(Bus::Platform),
            other => {
                eprintln!("--bus takes pci or platform, not {other:?}");
                return ExitCode::from(2);
            }
        };
    }
    let names: Vec<String> = args.collect();
    if names.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut vfio = match Context::open() {
        Ok(vfio) => vfio,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for name in &names {
        let setup = match bus {
            Some(bus) => vfio.setup_on(bus, name),
            None => vfio.setup(name),
        };
        let handle = match setup {
            Ok(handle) => handle,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        match vfio.device(&handle) {
            Ok(dev) => print_device(&dev),
            Err(e) => eprintln!("error: {e}"),
        }
        if let Err(e) = vfio.free(handle) {
            eprintln!("error: {e}");
            failed = true;
        }
    }
    if let Err((_, e)) = vfio.close() {
        eprintln!("error: {e}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
