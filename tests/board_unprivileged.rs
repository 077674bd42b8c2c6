//! The data plane run by an unprivileged user, on the real kernel: run on
//! the virtual boards (`tests/board/test`), ignored on the host (issue 14).
//!
//! Root (this test) gives edu's nodes to user 1000 with the bind tool, as
//! README's "On a real board" tells a user (`vfio-bind grant DEV USER`), then
//! forks a child that drops to uid/gid 1000 with no capability left
//! (checked: `CapEff` is 0) and the `RLIMIT_MEMLOCK` README says is needed.
//! The child reports through its exit status and a pipe (a panic's message,
//! or what it measured), and the parent asserts. Checked: edu set up, its
//! registers, an MSI and a DMA round trip within that limit, and what the
//! kernel charges for it; a limit too low refused with the limit and the
//! amount needed, nothing left mapped; each node without permission named;
//! a noiommu platform device without `CAP_SYS_RAWIO` (aarch64 boards); the
//! bind tool run unprivileged changing nothing.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use dao_vfio::sys::{pci_irq, pci_region};
use dao_vfio::{Backend, Context, DevNode, DmaOptions, ErrorKind, MemlockCharge};

mod common;
use common::{dev, edu_dma, open_fds, Edu};

/// The unprivileged user the tests run as, and its group.
const UID: u32 = 1000;
const GID: u32 = 1000;
/// Its name, which the tests put in the guest's `/etc/passwd` and `/etc/group`.
const USER: &str = "dao";
/// edu's own buffer, at this device address, and a transfer shorter than it.
const EDU_BUFFER: u64 = 0x40000;
const XFER: usize = 2048;

/// Runs `/bin/vfio-bind ARGS` (as root, or from a child dropped to the
/// test user); its success and what it printed.
fn tool(args: &[&str], unprivileged: bool) -> (bool, String) {
    let run = || {
        let out = Command::new("/bin/vfio-bind").args(args).output().expect("running /bin/vfio-bind");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        format!("{}{said}", if out.status.success() { 'y' } else { 'n' })
    };
    let said = if unprivileged { as_user(0, run) } else { run() };
    (said.starts_with('y'), said[1..].to_string())
}

/// Puts the test user in the guest's account files (the initramfs has none).
fn ensure_user() {
    std::fs::create_dir_all("/etc").unwrap();
    for (file, line) in [
        ("/etc/passwd", format!("{USER}:x:{UID}:{GID}:dao-vfio test:/tmp:/bin/sh\n")),
        ("/etc/group", format!("{USER}:x:{GID}:\n")),
    ] {
        let now = std::fs::read_to_string(file).unwrap_or_default();
        if !now.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
            std::fs::write(file, format!("root:x:0:0:root:/root:/bin/sh\n{now}{line}")).unwrap();
        }
    }
}

/// edu (or another device) granted to the test user while this lives; revoked on drop.
struct Granted(String);

impl Granted {
    fn new(name: &str) -> (Self, String) {
        ensure_user();
        let (ok, said) = tool(&["grant", name, USER], false);
        assert!(ok, "vfio-bind grant {name} {USER}: {said}");
        (Granted(name.to_string()), said)
    }
}

impl Drop for Granted {
    fn drop(&mut self) {
        let (ok, said) = tool(&["revoke", &self.0], false);
        assert!(ok || std::thread::panicking(), "vfio-bind revoke {}: {said}", self.0);
    }
}

/// The device's IOMMU group, from sysfs.
fn group_of(bus: &str, name: &str) -> u32 {
    let link = std::fs::read_link(format!("/sys/bus/{bus}/devices/{name}/iommu_group")).unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// The device's VFIO cdev number, where the kernel made one.
fn cdev_of(name: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/bus/pci/devices/{name}/vfio-dev")).ok()?;
    dir.flatten().find_map(|e| e.file_name().to_str()?.strip_prefix("vfio")?.parse().ok())
}

fn owner(path: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// The nodes edu needs on this board: its group, and iommufd's pair where the kernel has it.
fn edu_nodes(name: &str) -> Vec<String> {
    let mut nodes = vec![format!("/dev/vfio/{}", group_of("pci", name))];
    if common::board_has_iommufd() {
        nodes.push("/dev/iommu".into());
        nodes.push(format!("/dev/vfio/devices/vfio{}", cdev_of(name).expect("edu has a cdev on 6.12")));
    }
    nodes
}

/// A field of `/proc/self/status` in kB (`VmLck`, `VmPin`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cap_eff() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string()
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

/// Runs `body` in a forked child that drops to uid/gid 1000, no
/// supplementary groups and no capabilities, with `RLIMIT_MEMLOCK` at
/// `memlock` bytes (soft and hard). Returns what `body` returned; panics
/// with the child's panic message if it failed.
fn as_user(memlock: u64, body: impl FnOnce() -> String) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fork with the tests run one at a time (--test-threads=1): the
    // harness's other thread only waits, holding no lock the child needs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop_privileges(memlock);
            body()
        }));
        let (code, text) = match result {
            Ok(report) => (0, report),
            Err(payload) => (
                1,
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into()),
            ),
        };
        // SAFETY: the pipe's write end, open in the child; then the child
        // ends without running the parent's exit handlers.
        unsafe {
            libc::write(fds[1], text.as_ptr().cast(), text.len());
            libc::_exit(code)
        }
    }
    // SAFETY: the parent's copy of the write end is closed, and the read end
    // is owned by this File from here on.
    let mut from_child = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut said = String::new();
    from_child.read_to_string(&mut said).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the unprivileged child failed: {said}");
    said
}

fn drop_privileges(memlock: u64) {
    let limit = libc::rlimit { rlim_cur: memlock, rlim_max: memlock };
    // SAFETY: plain system calls on this process's credentials and limits.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit), 0, "setrlimit");
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(GID, GID, GID), 0, "setresgid");
        assert_eq!(libc::setresuid(UID, UID, UID), 0, "setresuid");
        assert_eq!((libc::getuid(), libc::geteuid(), libc::getgid()), (UID, UID, GID));
    }
    assert_eq!(cap_eff(), "0000000000000000", "no capability is left");
}

/// What the kernel is expected to charge DMA pins to on this board run.
fn expected_charge() -> MemlockCharge {
    match common::expected_backend() {
        Backend::Iommufd => MemlockCharge::Iommufd,
        _ => MemlockCharge::Type1,
    }
}

/// README's recipe: grant edu, then as the user with the memlock README
/// computes (the DMA the program maps: here 4 KiB + 64 KiB), set up edu,
/// use its registers, an MSI and a DMA round trip; measure what the kernel
/// charges (`VmLck`, `VmPin`) before and after mapping.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn edu_as_an_unprivileged_user_within_the_memlock_readme_computes() {
    let name = dev("DAO_VFIO_EDU");
    let (granted, said) = Granted::new(&name);
    println!("vfio-bind grant {name} {USER}:\n{said}");
    for node in edu_nodes(&name) {
        assert_eq!(owner(&node).0, UID, "{node} is the user's");
        assert!(said.contains(&node), "the tool names {node}: {said}");
    }
    let container = owner("/dev/vfio/vfio");
    assert_eq!(container, (0, 0, 0o666), "/dev/vfio/vfio: root's, and every user may open it");
    assert!(said.contains("/dev/vfio/vfio: mode 0666"), "{said}");

    const SMALL: usize = 4096;
    const LARGE: usize = 64 << 10;
    let memlock = (SMALL + LARGE) as u64;
    let report = as_user(memlock, || {
        let mut vfio = common::context();
        let edu = vfio.setup(&name).unwrap_or_else(|e| panic!("setup as uid {UID}: {e}"));
        assert_eq!(vfio.device(&edu).unwrap().backend(), common::expected_backend());
        vfio.device(&edu).unwrap().enable_bus_master().unwrap();
        vfio.irq_enable(&edu, pci_irq::MSI, 1).unwrap();
        {
            let dev = vfio.device(&edu).unwrap();
            let regs = dev.region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
            assert_eq!(regs.id.read(), 0x010000ed);
            // SAFETY: edu's liveness register returns the inverse of what is written.
            unsafe { regs.liveness.write(0x1234_5678) };
            assert_eq!(regs.liveness.read(), !0x1234_5678);
            let irq = dev.interrupt(pci_irq::MSI, 0).unwrap();
            // SAFETY: edu's interrupt registers only set and clear its status.
            unsafe { regs.irq_raise.write(0x100) };
            assert_eq!(irq.wait_timeout(Duration::from_secs(5)).unwrap(), Some(1), "MSI");
            // SAFETY: as above.
            unsafe { regs.irq_ack.write(0x100) };
        }
        let before = (status_kib("VmLck"), status_kib("VmPin"));
        assert_eq!(before, (0, 0), "setup and interrupts pin nothing");
        let mut src = vfio.dma_alloc(SMALL, DmaOptions::default()).unwrap();
        let mut dst = vfio.dma_alloc(LARGE, DmaOptions::default()).unwrap();
        let mapped = (status_kib("VmLck"), status_kib("VmPin"));
        let pattern: Vec<u8> = (0..XFER as u32).map(|i| (i * 5 + 1) as u8).collect();
        vfio.dma(&mut src).unwrap().write(0, &pattern).unwrap();
        vfio.dma(&mut dst).unwrap().fill(0, LARGE, 0).unwrap();
        let (s, d) = (vfio.dma(&mut src).unwrap().iova(), vfio.dma(&mut dst).unwrap().iova());
        {
            let regs = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
            edu_dma(regs, s, EDU_BUFFER, XFER as u64, false);
            edu_dma(regs, EDU_BUFFER, d, XFER as u64, true);
        }
        let mut back = vec![0u8; XFER];
        vfio.dma(&mut dst).unwrap().read(0, &mut back).unwrap();
        assert_eq!(back, pattern, "RAM -> edu -> RAM as uid {UID}");
        vfio.dma_free(src).unwrap();
        vfio.dma_free(dst).unwrap();
        let freed = (status_kib("VmLck"), status_kib("VmPin"));
        vfio.irq_disable(&edu, pci_irq::MSI).unwrap();
        vfio.free(edu).unwrap();
        vfio.close().map_err(|(_, e)| e).unwrap();
        // type1 charges the process's locked memory; iommufd the user's,
        // which /proc shows as this process's pinned memory.
        let kib = memlock / 1024;
        let expected = match expected_charge() {
            MemlockCharge::Type1 => (kib, 0),
            _ => (0, kib),
        };
        assert_eq!(mapped, expected, "(VmLck, VmPin) in kB after mapping {kib} KiB");
        assert_eq!(freed, (0, 0), "freeing unpins");
        format!(
            "{:?}: (VmLck, VmPin) kB after setup and MSI {before:?}, after mapping {kib} KiB {mapped:?}, after freeing {freed:?}",
            common::expected_backend()
        )
    });
    println!("{report}");
    drop(granted);
    for node in edu_nodes(&name) {
        assert_eq!(owner(&node).0, 0, "{node} is root's again after revoke");
    }
}

/// Huge pages as the user: root reserves them (README), the user needs no
/// more than a memlock of 2 MiB per huge-page buffer; the buffer works for DMA.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_huge_page_buffer_needs_a_reservation_and_2_mib_of_memlock() {
    const RESERVE: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let name = dev("DAO_VFIO_EDU");
    let (_granted, _) = Granted::new(&name);
    std::fs::write(RESERVE, "1").unwrap();
    let reserved: u32 = std::fs::read_to_string(RESERVE).unwrap().trim().parse().unwrap();
    assert_eq!(reserved, 1, "one 2 MiB page reserved");
    let report = std::panic::catch_unwind(|| {
        as_user(2 << 20, || {
            let mut vfio = common::context();
            let edu = vfio.setup(&name).unwrap();
            vfio.device(&edu).unwrap().enable_bus_master().unwrap();
            let mut buf = vfio.dma_alloc(4096, DmaOptions { huge_pages: true, ..Default::default() }).unwrap();
            let counted = (status_kib("VmLck"), status_kib("VmPin"));
            let view = vfio.dma(&mut buf).unwrap();
            assert_eq!(view.len(), 2 << 20);
            let pattern: Vec<u8> = (0..XFER as u32).map(|i| (i * 3 + 2) as u8).collect();
            view.write(0, &pattern).unwrap();
            let iova = view.iova();
            assert_eq!(iova % (2 << 20), 0, "a 2 MiB aligned IOVA");
            {
                let regs = vfio.device(&edu).unwrap().region(pci_region::BAR0).unwrap().block::<Edu>(0).unwrap();
                edu_dma(regs, iova, EDU_BUFFER, XFER as u64, false);
                edu_dma(regs, EDU_BUFFER, iova + (1 << 20), XFER as u64, true);
            }
            let mut back = vec![0u8; XFER];
            vfio.dma(&mut buf).unwrap().read(1 << 20, &mut back).unwrap();
            assert_eq!(back, pattern, "through the huge page");
            let expected = match expected_charge() {
                MemlockCharge::Type1 => (2048, 0),
                _ => (0, 2048),
            };
            assert_eq!(counted, expected, "(VmLck, VmPin) kB with one huge page mapped");
            vfio.dma_free(buf).unwrap();
            vfio.free(edu).unwrap();
            format!("a huge-page buffer: (VmLck, VmPin) {counted:?} kB")
        })
    });
    std::fs::write(RESERVE, "0").unwrap();
    println!("{}", report.unwrap());
}

/// A limit below what is mapped: the DMA call names RLIMIT_MEMLOCK, the
/// amount and how to raise it; nothing is left mapped, and the context goes on.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn memlock_too_low_is_refused_naming_the_limit_and_the_amount() {
    let name = dev("DAO_VFIO_EDU");
    let (_granted, _) = Granted::new(&name);
    const LIMIT: u64 = 64 << 10;
    let report = as_user(LIMIT, || {
        let mut vfio = common::context();
        let edu = vfio.setup(&name).unwrap();
        let (maps, fds) = (mappings(), open_fds());
        let e = vfio.dma_alloc(128 << 10, DmaOptions::default()).unwrap_err();
        // Before anything here allocates (the heap may grow by a mapping).
        let after = (mappings(), open_fds());
        let charge = expected_charge();
        assert_eq!(e.kind(), ErrorKind::MemlockLimit { charge, needed: 128 << 10, limit: LIMIT }, "{e}");
        assert_eq!(e.errno(), Some(dao_vfio::Errno::NOMEM));
        let text = e.to_string();
        for hint in ["RLIMIT_MEMLOCK", "ulimit -l 128", "prlimit --pid PID --memlock=131072:131072", "limits.conf"] {
            assert!(text.contains(hint), "the message says {hint}: {text}");
        }
        assert_eq!(after, (maps, fds), "nothing left mapped or open");
        assert_eq!((status_kib("VmLck"), status_kib("VmPin")), (0, 0), "nothing left pinned");
        // Exactly the limit is allowed.
        let at_limit = vfio.dma_alloc(LIMIT as usize, DmaOptions::default()).unwrap();
        // One more locked page: under type1 its mlock is refused already
        // (the pins fill the process's locked memory); iommufd counts
        // pins apart, so the pin is refused.
        let locked = DmaOptions { locked: true, ..Default::default() };
        let e = vfio.dma_alloc(4096, locked).unwrap_err();
        let lock_charge = if charge == MemlockCharge::Type1 { MemlockCharge::Mlock } else { charge };
        assert_eq!(
            e.kind(),
            ErrorKind::MemlockLimit { charge: lock_charge, needed: LIMIT + 4096, limit: LIMIT },
            "{e}"
        );
        vfio.dma_free(at_limit).unwrap();
        // A locked buffer counts twice under type1 (mlock and pin share the
        // account), once under iommufd.
        let half = vfio.dma_alloc(48 << 10, locked);
        let outcome = match (charge, half) {
            (MemlockCharge::Type1, Err(e)) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::MemlockLimit { charge, needed: 96 << 10, limit: LIMIT },
                    "a locked 48 KiB buffer needs 96 KiB under type1: {e}"
                );
                format!("a locked 48 KiB buffer refused under type1: {e}")
            }
            (MemlockCharge::Iommufd, Ok(b)) => {
                let counted = (status_kib("VmLck"), status_kib("VmPin"));
                assert_eq!(counted, (48, 48), "mlock and the iommufd pin, each once");
                vfio.dma_free(b).unwrap();
                format!("a locked 48 KiB buffer under iommufd: (VmLck, VmPin) {counted:?} kB")
            }
            (charge, other) => panic!("a locked 48 KiB buffer with {charge:?}: {other:?}"),
        };
        assert_eq!((status_kib("VmLck"), status_kib("VmPin"), open_fds()), (0, 0, fds), "nothing left pinned or open");
        vfio.free(edu).unwrap();
        format!("{e}\n{outcome}")
    });
    println!("{report}");
}

/// Each node the device needs, without permission: setup (or the
/// context's open) refuses with `Permission` naming it, and nothing stays open.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_node_without_permission_is_named() {
    let name = dev("DAO_VFIO_EDU");
    let group = group_of("pci", &name);
    let (_granted, _) = Granted::new(&name);
    let refused = |backend: Backend, node: DevNode| {
        let name = name.clone();
        as_user(0, move || {
            let fds = open_fds();
            let e = match Context::open_with(backend) {
                Err(e) => e,
                Ok(mut vfio) => {
                    let e = vfio.setup(&name).unwrap_err();
                    assert_eq!(vfio.device_count(), 0);
                    e
                }
            };
            assert_eq!(e.kind(), ErrorKind::Permission { node }, "{e}");
            let text = e.to_string();
            assert!(text.contains(&format!("permission denied on {node}")), "{text}");
            let fix = if node == DevNode::Container { "chmod 0666 /dev/vfio/vfio" } else { "vfio-bind grant" };
            assert!(text.contains(fix), "{text}");
            assert_eq!(open_fds(), fds, "nothing stays open");
            text
        })
    };
    // Owner and group: /dev/iommu is 0660, so its group must go too.
    let chown = |path: &str, id: u32| std::os::unix::fs::chown(path, Some(id), Some(id)).unwrap();

    let group_node = format!("/dev/vfio/{group}");
    chown(&group_node, 0);
    println!("{}", refused(Backend::Legacy, DevNode::Group(group)));
    chown(&group_node, UID);

    std::fs::set_permissions("/dev/vfio/vfio", std::fs::Permissions::from_mode(0o600)).unwrap();
    let container = std::panic::catch_unwind(|| refused(Backend::Legacy, DevNode::Container));
    std::fs::set_permissions("/dev/vfio/vfio", std::fs::Permissions::from_mode(0o666)).unwrap();
    println!("{}", container.unwrap());

    if common::board_has_iommufd() {
        chown("/dev/iommu", 0);
        println!("{}", refused(Backend::Iommufd, DevNode::Iommufd));
        chown("/dev/iommu", UID);
        let cdev = cdev_of(&name).unwrap();
        let node = format!("/dev/vfio/devices/vfio{cdev}");
        chown(&node, 0);
        println!("{}", refused(Backend::Iommufd, DevNode::Cdev(cdev)));
        chown(&node, UID);
    }

    // Nothing granted (the nodes are root's): the board run's interface
    // names the group node (Auto on 6.12 finds /dev/iommu root's and takes
    // the legacy container).
    let (ok, said) = tool(&["revoke", &name], false);
    assert!(ok, "{said}");
    println!("{}", refused(common::backend(), DevNode::Group(group)));
}

/// The bind tool run by the user refuses (only root chowns or unbinds),
/// naming what to do, and changes nothing.
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn the_bind_tool_run_unprivileged_refuses_and_changes_nothing() {
    let name = dev("DAO_VFIO_EDU");
    ensure_user();
    let nodes = edu_nodes(&name);
    let owners: Vec<_> = nodes.iter().map(|n| owner(n)).collect();
    let driver = || std::fs::read_link(format!("/sys/bus/pci/devices/{name}/driver")).unwrap();
    let bound = driver();

    let (ok, said) = tool(&["grant", &name, USER], true);
    assert!(!ok, "an unprivileged grant succeeded: {said}");
    assert!(said.contains("EPERM") && said.contains("run vfio-bind as root"), "{said}");
    assert_eq!(nodes.iter().map(|n| owner(n)).collect::<Vec<_>>(), owners, "no node changed hands");

    let (_granted, _) = Granted::new(&name);
    let (ok, said) = tool(&["revoke", &name], true);
    assert!(!ok && said.contains("EPERM"), "an unprivileged revoke: {said}");
    for node in &nodes {
        assert_eq!(owner(node).0, UID, "{node} is still the user's");
    }

    let (ok, said) = tool(&["unbind", &name], true);
    assert!(!ok && said.contains("run as root"), "an unprivileged unbind: {said}");
    assert_eq!(driver(), bound, "edu is still bound");
    println!("unprivileged vfio-bind unbind: {said}");
}

/// A noiommu platform device: its node root's, `Permission` names it;
/// granted, Linux still wants `CAP_SYS_RAWIO`, which the error names.
#[cfg(target_arch = "aarch64")]
#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_noiommu_device_needs_cap_sys_rawio() {
    let name = dev("DAO_VFIO_PL031");
    let group = group_of("platform", &name);
    ensure_user();
    let open = |name: String| {
        as_user(0, move || {
            let mut vfio = common::context();
            let fds = open_fds();
            let e = vfio.setup(&name).unwrap_err();
            assert_eq!((vfio.device_count(), open_fds()), (0, fds), "nothing stays open");
            format!("{:?}|{e}", e.kind())
        })
    };
    let said = open(name.clone());
    assert!(
        said.starts_with(&format!("{:?}|", ErrorKind::Permission { node: DevNode::NoiommuGroup(group) })),
        "{said}"
    );

    let (_granted, granted) = Granted::new(&name);
    assert!(granted.contains(&format!("/dev/vfio/noiommu-{group}")), "{granted}");
    assert!(granted.contains("CAP_SYS_RAWIO"), "the tool says the capability is needed: {granted}");
    let said = open(name.clone());
    assert!(said.starts_with(&format!("{:?}|", ErrorKind::NoiommuNeedsRawio { group })), "{said}");
    assert!(said.contains("CAP_SYS_RAWIO") && said.contains("setcap cap_sys_rawio+ep"), "{said}");
    println!("{said}");
}
