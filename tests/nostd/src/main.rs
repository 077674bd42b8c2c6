//! dao-vfio in a program with no std, no alloc and no libc, on a virtual
//! board (`tests/nostd/run BOARD`). It opens a context, refuses `../etc` with
//! the crate's message, sets up edu (vfio-pci; through iommufd where the
//! board's kernel has it) and reads its registers, then:
//! - on the aarch64 boards, sets up pl031 (vfio-platform), reads its ID
//!   registers and takes its alarm interrupt (level-triggered: served, then
//!   unmasked);
//! - on x86_64, whose board has no device for vfio-platform, checks exactly
//!   that, and takes edu's MSI instead.
//!
//! On every board a platform device bound to another driver is refused,
//! naming it. It frees everything, closes the context and checks that no fd
//! or mapping is left. Prints `ok:` or `FAILED:` per check, then `PASSED: 0
//! failed` or `FAILED: N failed`, and exits 0 or 1.
//!
//! The rest of the program is what libc and std would give: `_start` and
//! `exit_group` ([`rt`]), the environment from the initial stack ([`env`]),
//! the memory functions the compiler calls ([`mem`]), output with `write(2)`
//! ([`out`]), and counts from `/proc/self` ([`held`]).
#![no_std]
#![no_main]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod env;
mod held;
mod mem;
mod out;
mod rt;

use core::fmt;

use dao_vfio::sys::pci_region;
use dao_vfio::{register_block, Backend, Bus, Context, Error, ErrorKind, NameError, Reserved, RO, RW, WO};

use crate::env::Env;
use crate::out::say;

register_block! {
    /// QEMU's edu device, BAR 0: identification and interrupt registers.
    struct Edu {
        0x00 => id: RO<u32>,
        0x04 => liveness: RW<u32>,
        0x08 => _reserved0: Reserved<0x1c>,
        0x24 => irq_status: RO<u32>,
        0x28 => _reserved1: Reserved<0x38>,
        0x60 => irq_raise: WO<u32>,
        0x64 => irq_ack: WO<u32>,
    }
}

#[cfg(target_arch = "aarch64")]
register_block! {
    /// ARM PL031 real-time clock: the counter, the alarm and its interrupt,
    /// the identification registers.
    struct Pl031 {
        0x000 => data: RO<u32>,
        0x004 => match_value: RW<u32>,
        0x008 => _reserved0: Reserved<0x8>,
        0x010 => irq_mask: RW<u32>,
        0x014 => raw_status: RO<u32>,
        0x018 => masked_status: RO<u32>,
        0x01c => irq_clear: WO<u32>,
        0x020 => _reserved1: Reserved<0xfc0>,
        0xfe0 => periph_id: [RO<u32>; 4],
    }
}

/// How long edu's MSI, raised by hand, may take to arrive.
#[cfg(target_arch = "x86_64")]
const MSI_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(5);

/// The checks so far.
struct Checks {
    failed: u32,
}

impl Checks {
    /// Prints `ok: what` or `FAILED: what`, and counts a failure.
    fn check(&mut self, ok: bool, what: fmt::Arguments<'_>) {
        say!("{}: {what}", if ok { "ok" } else { "FAILED" });
        if !ok {
            self.failed += 1;
        }
    }

    /// Prints `FAILED: what` and counts it.
    fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.check(false, what);
    }
}

/// The board run: every check, then the summary line `.ci/run` counts.
/// Returns the exit status.
fn main(env: &Env) -> i32 {
    let mut checks = Checks { failed: 0 };
    if let Err(e) = run(env, &mut checks) {
        checks.fail(format_args!("{}", Brief(&e)));
    }
    say!("{}: {} failed", if checks.failed == 0 { "PASSED" } else { "FAILED" }, checks.failed);
    i32::from(checks.failed != 0)
}

/// An error, briefly: its device, then the crate's message when the name was
/// refused, the driver when another one has the device, the bus searched
/// when there is no such device, or the system call that failed; and the
/// errno. Not `Error`'s own `Display`: that one carries every message of the
/// crate, each saying what to do, and printing with it makes this program
/// about 11 KB larger on aarch64 (README, "Without std, alloc or libc").
struct Brief<'a>(&'a Error);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if let Some(device) = e.device() {
            write!(f, "{device}: ")?;
        }
        match e.kind() {
            ErrorKind::InvalidName(why) => write!(f, "{why}")?,
            ErrorKind::WrongDriver { driver, .. } => write!(f, "bound to {driver}")?,
            ErrorKind::NoSuchDevice { bus: Some(bus) } => write!(f, "no such device on the {bus} bus")?,
            ErrorKind::NoSuchDevice { bus: None } => f.write_str("no such device")?,
            ErrorKind::NoVfio => f.write_str("no /dev/vfio/vfio")?,
            ErrorKind::NoIommufd => f.write_str("no /dev/iommu")?,
            ErrorKind::Syscall(step) => write!(f, "{step} failed")?,
            _ => f.write_str("refused (the Error's Display, left out of this program, says why)")?,
        }
        match e.errno() {
            Some(errno) => write!(f, ", errno {}", errno.raw_os_error()),
            None => Ok(()),
        }
    }
}

/// The name of a backend, for the output.
fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Iommufd => "iommufd",
        Backend::Legacy => "the legacy container",
        _ => "auto",
    }
}

/// The boards this architecture's binary runs on.
#[cfg(target_arch = "aarch64")]
const BOARDS: [&str; 2] = ["aarch64", "aarch64-6.1"];
#[cfg(target_arch = "x86_64")]
const BOARDS: [&str; 1] = ["x86_64"];

/// The checks; a library error on a step that must succeed ends them.
fn run(env: &Env, checks: &mut Checks) -> Result<(), Error> {
    let board = env.get("DAO_VFIO_BOARD").unwrap_or("");
    if !BOARDS.contains(&board) {
        checks.fail(format_args!("DAO_VFIO_BOARD is '{board}': run this on a virtual board (tests/nostd/run BOARD)"));
        return Ok(());
    }
    let Some(edu_name) = env.get("DAO_VFIO_EDU") else {
        checks.fail(format_args!("DAO_VFIO_EDU is not set"));
        return Ok(());
    };
    let backend = match env.get("DAO_VFIO_BACKEND") {
        None | Some("auto") => Backend::Auto,
        Some("iommufd") => Backend::Iommufd,
        Some("legacy") => Backend::Legacy,
        Some(other) => {
            checks.fail(format_args!("DAO_VFIO_BACKEND={other}: expected auto, iommufd or legacy"));
            return Ok(());
        }
    };
    // Only the aarch64 board's 6.12 has iommufd and VFIO cdevs.
    let expected = match backend {
        Backend::Auto if board == "aarch64" => Backend::Iommufd,
        Backend::Auto => Backend::Legacy,
        asked => asked,
    };
    let Ok(before) = held::now() else {
        checks.fail(format_args!("cannot read /proc/self"));
        return Ok(());
    };
    say!("board {board}: no std, no alloc, no libc; {} fds, {} mappings", before.fds, before.mappings);

    let mut vfio: Context = Context::open_with(backend)?;

    match vfio.setup("../etc") {
        Err(e) => checks.check(
            matches!(e.kind(), ErrorKind::InvalidName(NameError::Slash)),
            format_args!("../etc refused: {}", Brief(&e)),
        ),
        Ok(handle) => {
            checks.fail(format_args!("../etc was set up"));
            vfio.free(handle)?;
        }
    }

    let edu = vfio.setup(edu_name)?;
    {
        let dev = vfio.device(&edu)?;
        let through = dev.backend();
        checks.check(through == expected, format_args!("{edu_name} (edu) set up through {}", backend_name(through)));
        let regs = dev.region(pci_region::BAR0)?.block::<Edu>(0)?;
        let id = regs.id.read();
        // SAFETY: edu's liveness register returns the complement of what is
        // written; nothing else happens.
        unsafe { regs.liveness.write(0x1234_5678) };
        let live = regs.liveness.read();
        checks.check(
            id == 0x0100_00ed && live == !0x1234_5678,
            format_args!("edu registers: ID {id:#x}, liveness {live:#x}"),
        );
    }
    platform(&mut vfio, env, board, checks)?;
    #[cfg(target_arch = "x86_64")]
    edu_msi(&mut vfio, &edu, checks)?;
    // On every board, a platform device bound to another driver: refused,
    // naming the driver (aarch64: the PCIe host bridge; x86_64: alarmtimer).
    match env.get("DAO_VFIO_OTHER_DRIVER") {
        Some(other) => match vfio.setup_on(Bus::Platform, other) {
            Err(e) => checks.check(
                matches!(e.kind(), ErrorKind::WrongDriver { .. }),
                format_args!("platform device bound to another driver refused: {}", Brief(&e)),
            ),
            Ok(handle) => {
                checks.fail(format_args!("{other} was set up although another driver has it"));
                vfio.free(handle)?;
            }
        },
        None => checks.fail(format_args!("DAO_VFIO_OTHER_DRIVER is not set on board {board}")),
    }

    vfio.free(edu)?;
    vfio.close().map_err(|(_, e)| e)?;
    let after = held::now();
    checks.check(
        after == Ok(before),
        format_args!(
            "everything freed, context closed: {} fds and {} mappings, as before",
            before.fds, before.mappings
        ),
    );
    Ok(())
}

/// pl031 on the aarch64 boards: set up, ID registers, the alarm interrupt
/// (level-triggered, so automasked: served, then unmasked), freed.
#[cfg(target_arch = "aarch64")]
fn platform(vfio: &mut Context, env: &Env, board: &str, checks: &mut Checks) -> Result<(), Error> {
    let Some(name) = env.get("DAO_VFIO_PL031") else {
        checks.fail(format_args!("DAO_VFIO_PL031 is not set on board {board}"));
        return Ok(());
    };
    let rtc = vfio.setup_on(Bus::Platform, name)?;
    vfio.irq_enable(&rtc, 0, 1)?;
    {
        let dev = vfio.device(&rtc)?;
        let regs = dev.region(0)?.block::<Pl031>(0)?;
        let id = u32::from_le_bytes(regs.periph_id.each_ref().map(|r| r.read() as u8));
        checks.check(id == 0x0014_1031, format_args!("{name} (pl031) set up, PeriphID0-3 {id:#x}"));
        let irq = dev.interrupt(0, 0)?;
        // The alarm: pl031 counts seconds, so it rings within two. Polled
        // with `take` (one non-blocking read), as a data-plane loop would,
        // and bounded by the RTC itself.
        // SAFETY: pl031's alarm registers; no DMA.
        let deadline = unsafe {
            let now = regs.data.read();
            regs.match_value.write(now + 1);
            regs.irq_mask.write(1);
            now + 3
        };
        let mut got = None;
        while got.is_none() && regs.data.read() < deadline {
            got = irq.take()?;
        }
        let pending = regs.masked_status.read() & 1;
        // SAFETY: as above.
        unsafe {
            regs.irq_clear.write(1);
            regs.irq_mask.write(0);
        }
        irq.unmask()?;
        checks.check(
            got == Some(1) && pending == 1 && regs.raw_status.read() & 1 == 0,
            format_args!("pl031 alarm interrupt taken, cleared, unmasked"),
        );
    }
    vfio.irq_disable(&rtc, 0)?;
    vfio.free(rtc)?;
    Ok(())
}

/// x86_64: the board (q35) has no device for vfio-platform, so the
/// platform-device part is that none is named, and that the platform bus is
/// searched by name: the aarch64 boards' pl031 is not on it.
#[cfg(target_arch = "x86_64")]
fn platform(vfio: &mut Context, env: &Env, board: &str, checks: &mut Checks) -> Result<(), Error> {
    checks.check(
        env.get("DAO_VFIO_PL031").is_none(),
        format_args!("board {board}: no platform device is bound to VFIO (DAO_VFIO_PL031 unset)"),
    );
    match vfio.setup_on(Bus::Platform, "9010000.pl031") {
        Err(e) => checks.check(
            matches!(e.kind(), ErrorKind::NoSuchDevice { bus: Some(Bus::Platform) }),
            format_args!("no pl031 on the platform bus: {}", Brief(&e)),
        ),
        Ok(handle) => {
            checks.fail(format_args!("9010000.pl031 was set up on board {board}"));
            vfio.free(handle)?;
        }
    }
    Ok(())
}

/// x86_64's interrupt: edu's MSI, raised by hand.
#[cfg(target_arch = "x86_64")]
fn edu_msi(vfio: &mut Context, edu: &dao_vfio::DeviceHandle, checks: &mut Checks) -> Result<(), Error> {
    use dao_vfio::sys::pci_irq::MSI;
    vfio.device(edu)?.enable_bus_master()?;
    vfio.irq_enable(edu, MSI, 1)?;
    {
        let dev = vfio.device(edu)?;
        let irq = dev.interrupt(MSI, 0)?;
        let regs = dev.region(pci_region::BAR0)?.block::<Edu>(0)?;
        let early = irq.take()?;
        // SAFETY: edu's interrupt registers set and clear its status; no DMA.
        unsafe { regs.irq_raise.write(0x100) };
        let got = irq.wait_timeout(MSI_TIMEOUT)?;
        let status = regs.irq_status.read();
        // SAFETY: as above.
        unsafe { regs.irq_ack.write(0x100) };
        checks.check(
            early.is_none() && got == Some(1) && status == 0x100,
            format_args!("edu MSI taken (status {status:#x}), acknowledged"),
        );
    }
    vfio.irq_disable(edu, MSI)
}
