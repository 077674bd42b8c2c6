//! The kernel wanting a device back while a driver holds it, on the real
//! kernel: run on the virtual boards (`tests/board/test`), ignored on the
//! host. An unbind with and without the request notifier (issues 12 and
//! 21), a driver killed mid-loop and its devices set up again at once, the
//! bind tool refusing to hang on a held device, and what tells setup that a
//! cdev it listed went to another device meanwhile.
//!
//! Issue 21's sequence, met on the x86_64 board: a process holds edu (BAR 0
//! mapped, MSI enabled, a DMA buffer) and reads its registers; another
//! process writes edu to its driver's `unbind`, which blocks while edu is
//! held; the holder frees the buffer and edu. The kernel detaches the group
//! from the container itself once the device fd closes, so the detach that
//! follows answers EINVAL: `free` must tell that apart and succeed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{bind, Backend, Context, DmaOptions, ErrorKind, Host, Notification, PciCommand};

mod common;
use common::{dev, edu_dma, open_fds, Edu};

/// Starts another process that unbinds `name` from its driver.
fn unbind_in_another_process(name: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo {name} > /sys/bus/pci/devices/{name}/driver/unbind"))
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the unbinding process")
}

/// Waits at most `limit` for `child` to end; its exit status.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn driver_of(name: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{name}/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The issue's sequence through a context opened with `backend`.
fn free_while_unbinding(backend: Backend) {
    let name = dev("DAO_VFIO_EDU");
    let mut vfio: Context = Context::open_with(backend).unwrap();
    let fds_before = open_fds();
    let edu = vfio.setup(&name).unwrap();
    let opened_with = vfio.device(&edu).unwrap().backend();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let buffer = vfio.dma_alloc(4096, DmaOptions::default()).unwrap();
    let bar0 = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap();
    assert_eq!(bar0.read32(0), Ok(0x010000ed));

    let mut unbinding = unbind_in_another_process(&name);
    // The unbind waits while edu is held: keep reading it meanwhile.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        assert_eq!(bar0.read32(0), Ok(0x010000ed));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(unbinding.try_wait().unwrap().is_none(), "the unbind returned while edu was held");

    vfio.dma_free(buffer).unwrap();
    vfio.free(edu).unwrap_or_else(|e| panic!("free during an unbind ({opened_with:?}): {e}"));
    assert_eq!((vfio.device_count(), vfio.group_count()), (0, 0));
    let status =
        wait_for(&mut unbinding, Duration::from_secs(1)).expect("the unbind did not return within 1 s of the free");
    assert!(status.success(), "unbind: {status}");
    assert_eq!(driver_of(&name), None, "edu is driverless");
    assert_eq!(open_fds(), fds_before, "every fd of edu is closed");

    // Bound back, the same context sets it up again.
    bind::bind(&Host, &name, None, None).unwrap();
    let edu = vfio.setup(&name).unwrap();
    assert_eq!(vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
    vfio.close().map_err(|(_, e)| e).unwrap();
}

/// What setup's proof that an opened cdev is still its device's rests on
/// (`ListedCdev::prove`, src/iommufd.rs): from the device's `vfio-dev`
/// directory, opened when its cdev was listed, `vfioN` is found while it is
/// the device's, and never once the device was unbound: not after it is
/// bound again either, when its cdev may even have the same number (the
/// directory then is a new one). As setup does, the directory is opened
/// from an open `/sys/bus/pci/devices`, and `vfioN` looked up with a
/// `readlinkat` (`EINVAL`: there, not a link). Linux lists `vfio-dev/vfioN`
/// from 6.1; the node is 6.6+.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_listed_cdev_directory_proves_nothing_once_its_device_was_unbound() {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let name = dev("DAO_VFIO_EDU");
    let listed = format!("/sys/bus/pci/devices/{name}/vfio-dev");
    let directory = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let devices = rustix::fs::open("/sys/bus/pci/devices", directory, Mode::empty()).unwrap();
    let open_listed = || rustix::fs::openat(&devices, format!("{name}/vfio-dev"), directory, Mode::empty()).unwrap();
    let cdev = || -> String {
        let mut entries = std::fs::read_dir(&listed).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
        entries.find(|e| e.starts_with("vfio")).expect("edu's vfio-dev directory lists its cdev")
    };
    let proof = |dir: &rustix::fd::OwnedFd, cdev: &str| {
        let mut target = [0u8; 1];
        match rustix::fs::readlinkat_raw(dir, cdev, &mut target[..]) {
            Ok(_) | Err(Errno::INVAL) => Ok(()),
            Err(e) => Err(e),
        }
    };
    let dir = open_listed();
    let before = cdev();
    assert_eq!(proof(&dir, &before), Ok(()), "bound: the proof holds");
    assert_eq!(proof(&dir, "vfio4095"), Err(Errno::NOENT), "a cdev not listed proves nothing");

    /// Binds edu back if an assertion fails while it is unbound, so that
    /// the tests after this one still find it.
    struct BindBack<'a>(&'a str);
    impl Drop for BindBack<'_> {
        fn drop(&mut self) {
            if driver_of(self.0).is_none() {
                let _ = bind::bind(&Host, self.0, None, None);
            }
        }
    }
    let _bind_back = BindBack(&name);
    std::fs::write(format!("/sys/bus/pci/devices/{name}/driver/unbind"), &name).unwrap();
    assert_eq!(driver_of(&name), None);
    assert_eq!(proof(&dir, &before), Err(Errno::NOENT), "unbound: the proof fails");
    bind::bind(&Host, &name, None, None).unwrap();
    let after = cdev();
    println!("edu's cdev: {before} before the unbind, {after} after the bind");
    assert_eq!(proof(&dir, &before), Err(Errno::NOENT), "bound again: the old directory is gone");
    assert_eq!(proof(&dir, &after), Err(Errno::NOENT), "bound again: the old directory is gone");
    // Listed anew, the proof holds again, and a context sets edu up.
    assert_eq!(proof(&open_listed(), &after), Ok(()));
    let mut vfio = common::context();
    let edu = vfio.setup(&name).unwrap();
    assert_eq!(vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn free_during_an_unbind_through_the_legacy_container() {
    free_while_unbinding(Backend::Legacy);
}

/// The board run's interface: iommufd where Auto takes it (the 6.12
/// aarch64 board), the legacy container elsewhere.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn free_during_an_unbind_through_the_boards_interface() {
    free_while_unbinding(common::backend());
}

/// The bind tool's unbind, in another process, with the holder's request
/// notifier enabled: the holder hears the request, frees edu, and the unbind
/// completes within a second; edu is then driverless, and comes back.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_request_notifier_lets_an_unbind_complete() {
    let name = dev("DAO_VFIO_EDU");
    let mut vfio = common::context();
    let edu = vfio.setup(&name).unwrap();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let buffer = vfio.dma_alloc(4096, DmaOptions::default()).unwrap();
    vfio.notify_enable(&edu, Notification::Request).unwrap();
    // edu has no error interrupt (its index has no vector): a clear error.
    let e = vfio.notify_enable(&edu, Notification::Error).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoNotification { which: Notification::Error }, "{e}");

    let mut tool = Command::new("/bin/vfio-bind")
        .args(["unbind", "--wait", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting vfio-bind");
    let heard =
        vfio.device(&edu).unwrap().notifier(Notification::Request).unwrap().wait_timeout(Duration::from_secs(10));
    assert!(heard.unwrap().is_some(), "no request within 10 s");
    assert_eq!(vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    vfio.dma_free(buffer).unwrap();
    vfio.free(edu).unwrap();
    let freed = Instant::now();
    let status =
        wait_for(&mut tool, Duration::from_secs(1)).expect("the unbind did not complete within 1 s of the free");
    let said = std::io::read_to_string(tool.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "vfio-bind unbind --wait: {status}: {said}");
    assert!(said.contains(&format!("waiting for process {}", std::process::id())), "it said what it waits for: {said}");
    println!("unbind completed {:?} after the free", freed.elapsed());
    assert_eq!(driver_of(&name), None);

    bind::bind(&Host, &name, None, None).unwrap();
    let edu = vfio.setup(&name).unwrap();
    assert_eq!(vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
}

/// The bind tool never hangs on a held device without saying why: a plain
/// unbind is refused, naming the holder, and changes nothing.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_bind_tool_refuses_to_unbind_a_held_device() {
    let name = dev("DAO_VFIO_EDU");
    let mut vfio = common::context();
    let edu = vfio.setup(&name).unwrap();
    let out = Command::new("/bin/vfio-bind").args(["unbind", &name]).stdin(Stdio::null()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("process {} holds the device", std::process::id())), "{said}");
    assert_eq!(driver_of(&name).as_deref(), Some("vfio-pci"), "nothing changed");
    assert_eq!(vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
}

/// A driver holding edu (and pl031 where the board has it) with DMA mapped
/// and interrupts enabled is killed with SIGKILL mid-loop; a new context
/// sets the same devices up at once, and they work.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn devices_of_a_killed_driver_work_at_once() {
    let name = dev("DAO_VFIO_EDU");
    let rtc = std::env::var("DAO_VFIO_PL031").ok();
    let mut ready = [0 as libc::c_int; 2];
    // SAFETY: a pipe into a local array.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: the child makes only the crate's system calls and register
    // accesses (no allocation, no lock), writes to the pipe, and loops until
    // it is killed; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut vfio = common::context();
        let edu = vfio.setup(&name).unwrap_or_else(|_| unsafe { libc::_exit(10) });
        let _buffer = vfio.dma_alloc(8192, DmaOptions::default()).unwrap_or_else(|_| unsafe { libc::_exit(11) });
        vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap_or_else(|_| unsafe { libc::_exit(12) });
        vfio.notify_enable(&edu, Notification::Request).unwrap_or_else(|_| unsafe { libc::_exit(13) });
        if let Some(rtc) = &rtc {
            let h = vfio.setup(rtc).unwrap_or_else(|_| unsafe { libc::_exit(14) });
            vfio.irq_enable(&h, 0, 1).unwrap_or_else(|_| unsafe { libc::_exit(15) });
        }
        let bar0 = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap();
        // SAFETY: one byte from a local to the pipe's write end.
        unsafe { libc::write(ready[1], b"r".as_ptr().cast(), 1) };
        loop {
            let _ = bar0.read32(0);
        }
    }
    let mut byte = 0u8;
    // SAFETY: reads one byte into a local; closes our ends.
    unsafe {
        libc::close(ready[1]);
        assert_eq!(libc::read(ready[0], (&raw mut byte).cast(), 1), 1, "the driver did not get ready");
        libc::close(ready[0]);
        assert_eq!(libc::kill(pid, libc::SIGKILL), 0);
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "{status:#x}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the killed driver is gone");

    // At once: the same devices, working.
    let mut vfio = common::context();
    let edu = vfio.setup(&name).unwrap();
    let mut holders = Vec::new();
    bind::holders(&Host, &name, None, &mut |p| holders.push(p)).unwrap();
    assert_eq!(holders, [std::process::id()], "no fd of the killed driver survives");
    if let Some(rtc) = &rtc {
        let h = vfio.setup(rtc).unwrap();
        let ids = vfio.device(&h).unwrap().region(0).unwrap().block::<common::PrimeCellId>(0xfe0).unwrap();
        assert_eq!(common::id_bytes(&ids.periph_id), [0x31, 0x10, 0x14, 0x00], "pl031");
        vfio.free(h).unwrap();
    }
    let dev = vfio.device(&edu).unwrap();
    dev.pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER).unwrap();
    vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
    let mut src = vfio.dma_alloc(4096, DmaOptions::default()).unwrap();
    let mut dst = vfio.dma_alloc(4096, DmaOptions::default()).unwrap();
    {
        let dev = vfio.device(&edu).unwrap();
        let regs = dev.region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
        assert_eq!(regs.id.read(), 0x010000ed);
        let (s, d) = (vfio.dma(&mut src).unwrap(), vfio.dma(&mut dst).unwrap());
        s.write(0, b"after the crash").unwrap();
        d.fill(0, 4096, 0).unwrap();
        edu_dma(regs, s.iova(), 0x40000, 15, false);
        edu_dma(regs, 0x40000, d.iova(), 15, true);
        let mut back = [0u8; 15];
        d.read(0, &mut back).unwrap();
        assert_eq!(&back, b"after the crash", "DMA round trip");
        // SAFETY: raises and acknowledges edu's interrupt.
        unsafe { regs.irq_raise.write(1) };
        let msi = dev.interrupt(pci_irq::MSI, 0).unwrap();
        assert_eq!(msi.wait_timeout(Duration::from_secs(5)).unwrap(), Some(1), "MSI");
        // SAFETY: as above.
        unsafe { regs.irq_ack.write(1) };
    }
    vfio.dma_free(src).unwrap();
    vfio.dma_free(dst).unwrap();
    vfio.free(edu).unwrap();
}
