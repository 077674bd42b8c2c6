//! Binds devices to VFIO drivers and back, and shows what is ready for VFIO.
//!
//! ```text
//! vfio-bind status                 the devices that matter for VFIO (bound to a VFIO driver,
//!                                  in an IOMMU group, or platform devices with MMIO registers):
//!                                  driver, IOMMU group, ready
//! vfio-bind status --all           every PCI and platform device
//! vfio-bind bind DEV [DRIVER]      bind DEV to DRIVER (default: vfio-pci or vfio-platform, by bus)
//! vfio-bind unbind DEV             unbind DEV; its default driver, if any, takes it back;
//!                                  refused, naming the process, while one holds DEV through VFIO
//! vfio-bind unbind --wait DEV      unbind DEV even while held: says which processes it waits
//!                                  for, then waits until they free it (Linux signals their
//!                                  request notifiers; the wait cannot be interrupted)
//! vfio-bind grant DEV USER[:GROUP] give DEV's VFIO nodes to USER (a uid or a name from
//!                                  /etc/passwd): /dev/vfio/N, and /dev/iommu and
//!                                  /dev/vfio/devices/vfioN where the kernel has iommufd
//! vfio-bind revoke DEV             give them back to root
//! vfio-bind sriov PF N             create N VFs on SR-IOV PF PF (sriov_numvfs); 0 removes them
//! ```
//!
//! Exit status: 0 done, 1 the operation failed (the message says what to do), 2 bad usage.
//! Run as root. The virtual boards' init binds its devices with this tool.
//! Installed with `cargo install dao-vfio --features tools`.

use std::process::ExitCode;

use dao_vfio::bind::{self, DeviceStatus};
use dao_vfio::{grant, DevNode, Error, Host, SriovRole};

const USAGE: &str = "usage: vfio-bind status [--all] | bind DEV [DRIVER] | unbind [--wait] DEV | grant DEV USER[:GROUP] | revoke DEV | sriov PF N   (vfio-bind --help)";

const HELP: &str = "\
vfio-bind: binds devices to VFIO drivers and back, and shows what is ready for VFIO (run as root).

  vfio-bind status               the devices that matter for VFIO: bound to a VFIO driver, in an
                                 IOMMU group, or platform devices with MMIO registers; their
                                 driver, IOMMU group, and whether they are ready
  vfio-bind status --all         every PCI and platform device
  vfio-bind bind DEV [DRIVER]    bind DEV to DRIVER (default: vfio-pci or vfio-platform, by bus)
  vfio-bind unbind DEV           unbind DEV; its default driver, if any, takes it back; refused,
                                 naming the process, while one holds DEV through VFIO
  vfio-bind unbind --wait DEV    unbind DEV even while held: says which processes it waits for,
                                 then waits until they free it (Linux signals their request
                                 notifiers; the wait cannot be interrupted)
  vfio-bind grant DEV USER[:GROUP]
                                 give USER (a name or a number) the nodes DEV needs on the interface
                                 the kernel offers: its group node, and /dev/iommu and its cdev where
                                 iommufd is; nothing else (/dev/vfio/vfio is for every user already)
  vfio-bind revoke DEV           give those nodes back to root
  vfio-bind sriov PF N           create N VFs on SR-IOV PF PF (through its sriov_numvfs; 0 removes
                                 them); refused when PF's driver will not (vfio-pci without
                                 enable_sriov=1, no driver), N is over sriov_totalvfs, PF has other
                                 VFs already, or, to remove them, a process holds one through VFIO.
                                 VFs of a PF bound to vfio-pci open only with the PF's VF token
  vfio-bind --help               this text

DEV is a PCI address (0000:01:00.0) or a platform device name (9010000.pl031), as in
/sys/bus/pci/devices and /sys/bus/platform/devices.
Exit status: 0 done, 1 the operation failed (the message says what to do), 2 bad usage.";

/// Says which nodes changed hands, and what else an unprivileged program needs.
fn print_nodes(dev: &str, nodes: &grant::DeviceNodes, to: &str) {
    let list: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    println!("{dev}: {} now {to}", list.join(" "));
    match nodes.container {
        Some(c) if c.mode & 0o006 == 0o006 => {
            println!("/dev/vfio/vfio: mode {:04o}, every user may open it (not changed)", c.mode)
        }
        Some(c) => println!(
            "warning: /dev/vfio/vfio is mode {:04o}: the legacy interface needs it readable and writable by the user (chmod 0666 /dev/vfio/vfio)",
            c.mode
        ),
        None => {}
    }
    if nodes.iter().any(|n| matches!(n, DevNode::NoiommuGroup(_))) {
        println!("{dev}: a noiommu group: Linux opens it only for a process with CAP_SYS_RAWIO");
    }
}

fn driver_str(driver: Option<dao_vfio::DriverName>) -> String {
    driver.map_or_else(|| "-".to_string(), |d| d.as_str().to_string())
}

fn print_status(all: bool) -> Result<(), Error> {
    println!("{:<9} {:<24} {:<20} {:>6}  state", "bus", "device", "driver", "group");
    let mut warnings = Vec::new();
    let list = if all { bind::status::<Host> } else { bind::status_for_vfio::<Host> };
    let mut shown = 0;
    list(&Host, &mut |d: &DeviceStatus| {
        shown += 1;
        let group = d.group.map_or_else(|| "-".to_string(), |g| g.to_string());
        let state = match (d.ready, d.blockers) {
            (true, 0) => "ready",
            (true, _) => "ready, group not viable",
            (false, _) => "-",
        };
        let sriov = match dao_vfio::sriov::role(&Host, d.name.as_str()) {
            Ok(SriovRole::Pf { total_vfs, num_vfs }) => format!(", SR-IOV PF: {num_vfs} of {total_vfs} VFs"),
            Ok(SriovRole::Vf { pf }) => format!(", VF of {pf}"),
            _ => String::new(),
        };
        println!(
            "{:<9} {:<24} {:<20} {:>6}  {state}{sriov}",
            d.bus.to_string(),
            d.name.as_str(),
            driver_str(d.driver),
            group
        );
        if d.ready && d.blockers > 0 {
            warnings.push(format!(
                "warning: {}: {} other device(s) of IOMMU group {} are bound to non-VFIO drivers; \
                 bind or unbind them (see /sys/kernel/iommu_groups/{}/devices) before using it",
                d.name,
                d.blockers,
                d.group.unwrap_or(0),
                d.group.unwrap_or(0)
            ));
        }
    })?;
    for w in warnings {
        println!("{w}");
    }
    if shown == 0 && !all {
        println!("no device is bound to VFIO or bindable (none in an IOMMU group, no platform device with MMIO registers): is the IOMMU on? `vfio-bind status --all` lists every device");
    }
    Ok(())
}

fn run(args: &[String]) -> Result<Option<()>, Error> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--help"] | ["-h"] | ["help"] => println!("{HELP}"),
        ["status"] => print_status(false)?,
        ["status", "--all"] => print_status(true)?,
        ["bind", dev] | ["bind", dev, _] => {
            let driver = args.get(2).copied();
            let bound = bind::bind(&Host, dev, None, driver)?;
            if bound.changed() {
                println!("{dev}: bound to {} (was: {})", bound.driver.as_str(), driver_str(bound.previous));
            } else {
                println!("{dev}: already bound to {}", bound.driver.as_str());
            }
        }
        ["unbind", dev] => {
            let unbound = bind::unbind(&Host, dev, None)?;
            println!("{dev}: unbound from {}; now bound to {}", driver_str(unbound.previous), driver_str(unbound.now));
        }
        ["unbind", "--wait", dev] => {
            bind::holders(&Host, dev, None, &mut |pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                println!(
                    "{dev}: waiting for process {pid} ({}) to free it; Linux signals its request notifier, if it enabled one",
                    comm.trim()
                );
            })?;
            let unbound = bind::unbind_wait(&Host, dev, None)?;
            println!("{dev}: unbound from {}; now bound to {}", driver_str(unbound.previous), driver_str(unbound.now));
        }
        ["grant", dev, user] => {
            let owner = grant::parse_owner(&Host, user)?;
            let nodes = grant::grant(&Host, dev, None, owner)?;
            let gid = owner.gid.map_or_else(String::new, |g| format!(" gid {g}"));
            print_nodes(dev, &nodes, &format!("owned by uid {}{gid}", owner.uid));
        }
        ["revoke", dev] => {
            let nodes = grant::revoke(&Host, dev, None)?;
            print_nodes(dev, &nodes, "owned by root");
        }
        ["sriov", pf, count] => {
            let Ok(count) = count.parse::<u32>() else { return Ok(None) };
            dao_vfio::sriov::set_num_vfs(&Host, pf, count)?;
            let mut names = Vec::new();
            dao_vfio::sriov::vfs(&Host, pf, &mut |vf| names.push(vf.as_str().to_string()))?;
            match names.as_slice() {
                [] => println!("{pf}: no VFs"),
                _ => println!("{pf}: {} VFs: {}", names.len(), names.join(" ")),
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Some(())) => ExitCode::SUCCESS,
        Ok(None) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vfio-bind: {e}");
            ExitCode::from(1)
        }
    }
}
