//! An unprivileged process against the fake kernel (issue 14): each device
//! node without permission named, a noiommu group without `CAP_SYS_RAWIO`,
//! and DMA over `RLIMIT_MEMLOCK` on both interfaces (type1 charging pins
//! with mlocked memory, iommufd apart), each refused with nothing left
//! open, mapped or locked.

use dao_vfio::fake::{FakeDevice, FakeKernel};
use dao_vfio::kernel::NodeOwner;
use dao_vfio::{Backend, Context, DevNode, DmaOptions, Errno, ErrorKind, MemlockCharge};

const EDU: &str = "0000:00:02.0";
const RTC: &str = "9010000.pl031";
const UID: u32 = 1000;

type Ctx<'k> = Context<&'k FakeKernel>;

/// edu (device 0, cdev vfio0) in IOMMU group 3, pl031 in noiommu group 0;
/// iommufd as given; the process is user 1000, edu's nodes given to it.
fn system(iommufd: bool) -> FakeKernel {
    let k = FakeKernel::new();
    k.set_iommufd(iommufd, iommufd);
    k.add_device(FakeDevice::edu(EDU, 3));
    k.add_device(FakeDevice::platform(RTC, 0));
    let mine = |mode| NodeOwner { uid: UID, gid: UID, mode };
    k.set_node_owner("/dev/vfio/3", mine(0o600));
    if iommufd {
        k.set_node_owner("/dev/iommu", mine(0o660));
        k.set_node_owner("/dev/vfio/devices/vfio0", mine(0o600));
    }
    k.set_user(UID, UID);
    k
}

fn clean(k: &FakeKernel) -> (usize, usize, usize) {
    (k.open_fds(), k.live_mappings(), k.dma_mappings().len())
}

fn backend(iommufd: bool) -> Backend {
    if iommufd {
        Backend::Iommufd
    } else {
        Backend::Legacy
    }
}

#[test]
fn an_unprivileged_user_with_the_nodes_sets_up_edu_on_both_interfaces() {
    for iommufd in [false, true] {
        let k = system(iommufd);
        let mut ctx: Ctx = Context::with_backend(&k, backend(iommufd)).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        assert_eq!(ctx.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
        let buf = ctx.dma_alloc(4096, DmaOptions::default()).unwrap();
        ctx.dma_free(buf).unwrap();
        ctx.free(edu).unwrap();
        drop(ctx);
        assert_eq!(clean(&k), (0, 0, 0));
    }
}

#[test]
fn each_node_without_permission_is_named_and_nothing_stays_open() {
    let root = NodeOwner { uid: 0, gid: 0, mode: 0o600 };
    let cases = [
        (false, "/dev/vfio/3", DevNode::Group(3)),
        (false, "/dev/vfio/vfio", DevNode::Container),
        (true, "/dev/iommu", DevNode::Iommufd),
        (true, "/dev/vfio/devices/vfio0", DevNode::Cdev(0)),
    ];
    for (iommufd, path, node) in cases {
        let k = system(iommufd);
        k.set_node_owner(path, root);
        let e = match Ctx::with_backend(&k, backend(iommufd)) {
            Err(e) => e,
            Ok(mut ctx) => {
                let e = ctx.setup(EDU).unwrap_err();
                assert_eq!(ctx.device_count(), 0);
                drop(ctx);
                e
            }
        };
        assert_eq!((e.kind(), e.errno()), (ErrorKind::Permission { node }, Some(Errno::ACCESS)), "{e}");
        let text = e.to_string();
        let fix = if node == DevNode::Container { "chmod 0666 /dev/vfio/vfio" } else { "vfio-bind grant" };
        assert!(text.contains(&format!("permission denied on {path}")) && text.contains(fix), "{text}");
        assert_eq!(clean(&k), (0, 0, 0), "{path}");
    }
    // Auto with the cdev refused falls back to the group node, which the
    // user has: edu is set up through the legacy container.
    let k = system(true);
    k.set_node_owner("/dev/vfio/devices/vfio0", root);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    assert_eq!(ctx.device(&edu).unwrap().backend(), Backend::Legacy);
    ctx.free(edu).unwrap();
    drop(ctx);
    // Neither node: the iommufd refusal is the news.
    k.set_node_owner("/dev/vfio/3", root);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let e = ctx.setup(EDU).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission { node: DevNode::Cdev(0) }, "{e}");
    drop(ctx);
    assert_eq!(clean(&k), (0, 0, 0));
}

#[test]
fn a_noiommu_group_needs_cap_sys_rawio() {
    let k = system(false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    // Its node root's: the file mode refuses first.
    let e = ctx.setup(RTC).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission { node: DevNode::NoiommuGroup(0) }, "{e}");
    // Given to the user: Linux still wants the capability.
    k.set_node_owner("/dev/vfio/noiommu-0", NodeOwner { uid: UID, gid: UID, mode: 0o600 });
    let e = ctx.setup(RTC).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::NoiommuNeedsRawio { group: 0 }, Some(Errno::PERM)), "{e}");
    let text = e.to_string();
    assert!(text.contains("/dev/vfio/noiommu-0") && text.contains("CAP_SYS_RAWIO"), "{text}");
    assert_eq!((ctx.device_count(), k.open_fds()), (0, 1), "the container alone");
    k.set_capabilities(true, false);
    let rtc = ctx.setup(RTC).unwrap();
    ctx.free(rtc).unwrap();
}

#[test]
fn dma_over_the_memlock_limit_names_it_on_both_interfaces() {
    const LIMIT: u64 = 64 << 10;
    for iommufd in [false, true] {
        let k = system(iommufd);
        k.set_memlock_limit(Some(LIMIT));
        let charge = if iommufd { MemlockCharge::Iommufd } else { MemlockCharge::Type1 };
        let mut ctx: Ctx = Context::with_backend(&k, backend(iommufd)).unwrap();
        let edu = ctx.setup(EDU).unwrap();
        let before = clean(&k);
        let e = ctx.dma_alloc(128 << 10, DmaOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MemlockLimit { charge, needed: 128 << 10, limit: LIMIT }, "{e}");
        assert_eq!(e.errno(), Some(Errno::NOMEM));
        let text = e.to_string();
        for hint in [
            "RLIMIT_MEMLOCK (65536 bytes) is too low",
            "131072 bytes (128 KiB)",
            "ulimit -l 128",
            "prlimit",
            "limits.conf",
        ] {
            assert!(text.contains(hint), "{hint}: {text}");
        }
        assert_eq!((clean(&k), k.memlock_charged()), (before, (0, 0)), "nothing left mapped");

        // The context's own mappings count: 32 KiB mapped, 48 more refused.
        let held = ctx.dma_alloc(32 << 10, DmaOptions::default()).unwrap();
        let e = ctx.dma_alloc(48 << 10, DmaOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MemlockLimit { charge, needed: 80 << 10, limit: LIMIT }, "{e}");
        // A locked buffer: type1 counts its mlock too (32 + 24 pinned + 24
        // locked > 64), iommufd does not (32 + 24).
        let locked = ctx.dma_alloc(24 << 10, DmaOptions { locked: true, ..Default::default() });
        match charge {
            MemlockCharge::Type1 => assert_eq!(
                locked.unwrap_err().kind(),
                ErrorKind::MemlockLimit { charge, needed: 80 << 10, limit: LIMIT },
                "type1: 32 + 24 pinned + 24 locked"
            ),
            _ => ctx.dma_free(locked.unwrap()).unwrap(),
        }
        ctx.dma_free(held).unwrap();
        // Limit 0: even a locked buffer's mlock is refused (EPERM).
        k.set_memlock_limit(Some(0));
        let e = ctx.dma_alloc(4096, DmaOptions { locked: true, ..Default::default() }).unwrap_err();
        assert_eq!(
            (e.kind(), e.errno()),
            (ErrorKind::MemlockLimit { charge: MemlockCharge::Mlock, needed: 4096, limit: 0 }, Some(Errno::PERM))
        );
        // CAP_IPC_LOCK lifts the limit; no limit, no MemlockLimit.
        k.set_capabilities(false, true);
        let big = ctx.dma_alloc(128 << 10, DmaOptions::default()).unwrap();
        ctx.dma_free(big).unwrap();
        k.set_capabilities(false, false);
        k.set_memlock_limit(None);
        let big = ctx.dma_alloc(128 << 10, DmaOptions::default()).unwrap();
        ctx.dma_free(big).unwrap();
        ctx.free(edu).unwrap();
        drop(ctx);
        assert_eq!((clean(&k), k.memlock_charged()), ((0, 0, 0), (0, 0)));
    }
}

#[test]
fn an_enomem_without_a_memlock_limit_stays_a_system_call_error() {
    let k = system(false);
    let mut ctx: Ctx = Context::with_backend(&k, Backend::Legacy).unwrap();
    let edu = ctx.setup(EDU).unwrap();
    // mmap, then the map ioctl (the IOMMU info is asked first: 3 calls).
    k.fail_call(3, Errno::NOMEM);
    let e = ctx.dma_alloc(4096, DmaOptions::default()).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(dao_vfio::Step::MapDma), Some(Errno::NOMEM)), "{e}");
    ctx.free(edu).unwrap();
}
