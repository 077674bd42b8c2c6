//! SR-IOV against the fake kernel: VFs created and removed through
//! `sriov_numvfs`, a PF's VF token set and given to its VFs, the kernel's
//! refusals, and the failure walks of `setup_vf`, `set_vf_token` and
//! `set_num_vfs` (each system call failing in turn, nothing left behind).

use dao_vfio::fake::{FakeBar, FakeKernel, PciDeviceBuilder};
use dao_vfio::sriov::{self, SriovRole};
use dao_vfio::{Backend, Bus, Context, DeviceHandle, Errno, Error, ErrorKind, Step, VfToken};

const PF: &str = "0000:01:00.0";
const VF0: &str = "0000:01:00.1";
const VF1: &str = "0000:01:00.2";
/// A PCI device that is neither PF nor VF.
const PLAIN: &str = "0000:00:02.0";
const A: &str = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3";
const B: &str = "6e4f0c1a-8b2d-4c3e-9f10-2a3b4c5d6e7f";

type Ctx<'k> = Context<&'k FakeKernel>;

fn token(text: &str) -> VfToken {
    text.parse().unwrap()
}

/// A PF that may have 4 VFs, bound to vfio-pci (loaded with
/// `enable_sriov=1`) in group 7, and a plain PCI device in group 3 (small
/// BARs: the walks make ~100 such systems, under Miri too); `iommufd`: the
/// kernel has iommufd and device cdevs.
fn system(iommufd: bool) -> FakeKernel {
    let k = FakeKernel::new();
    k.add_device(PciDeviceBuilder::new(PF, 7).bar(0, FakeBar::memory64(0x4000)).sriov_pf(4).build());
    k.add_device(PciDeviceBuilder::new(PLAIN, 3).bar(0, FakeBar::memory32(0x1000)).build());
    k.set_vfio_pci_enable_sriov(true);
    k.set_iommufd(iommufd, iommufd);
    k
}

/// The PF's SR-IOV state as sysfs shows it: its role and its VFs.
fn sysfs_state(k: &FakeKernel) -> (SriovRole, Vec<String>) {
    let mut vfs = Vec::new();
    sriov::vfs(k, PF, &mut |vf| vfs.push(vf.as_str().to_string())).unwrap();
    (sriov::role(k, PF).unwrap(), vfs)
}

fn pf_label(e: &Error) -> Option<String> {
    match e.kind() {
        ErrorKind::VfTokenRefused { pf } => pf.map(|p| p.as_str().to_string()),
        other => panic!("expected a VF token refusal, got {other:?}: {e}"),
    }
}

#[test]
fn vfs_are_created_and_removed_through_sriov_numvfs() {
    let k = system(false);
    assert_eq!(sysfs_state(&k), (SriovRole::Pf { total_vfs: 4, num_vfs: 0 }, vec![]));
    sriov::set_num_vfs(&k, PF, 2).unwrap();
    let created = (SriovRole::Pf { total_vfs: 4, num_vfs: 2 }, vec![VF0.to_string(), VF1.to_string()]);
    assert_eq!(sysfs_state(&k), created);
    let pf = dao_vfio::DeviceName::new(PF).unwrap();
    assert_eq!(sriov::role(&k, VF1).unwrap(), SriovRole::Vf { pf });
    assert_eq!(sriov::role(&k, PLAIN).unwrap(), SriovRole::None);
    // vfio-pci captured them (driver_override), each in its own group.
    assert_eq!((k.driver(VF0).as_deref(), k.driver_override(VF1).as_deref()), (Some("vfio-pci"), Some("vfio-pci")));
    // The same count again changes nothing.
    sriov::set_num_vfs(&k, PF, 2).unwrap();
    assert_eq!(sysfs_state(&k), created);
    sriov::set_num_vfs(&k, PF, 0).unwrap();
    assert_eq!(sysfs_state(&k), (SriovRole::Pf { total_vfs: 4, num_vfs: 0 }, vec![]));
    let gone = sriov::role(&k, VF0).unwrap_err();
    assert!(matches!(gone.kind(), ErrorKind::NoSuchDevice { .. }), "{gone}");
    // A PF on another driver creates VFs bound to it.
    k.bind(0, Some("nvme"));
    sriov::set_num_vfs(&k, PF, 1).unwrap();
    assert_eq!(k.driver(VF0).as_deref(), Some("nvme"));
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn set_num_vfs_refusals_change_nothing() {
    let k = system(false);
    let refuse = |name: &str, count: u32| {
        let before = sysfs_state(&k);
        let e = sriov::set_num_vfs(&k, name, count).unwrap_err();
        assert_eq!(sysfs_state(&k), before, "{e}");
        // A held VF is named itself.
        assert_eq!(e.device(), Some(if matches!(e.kind(), ErrorKind::VfHeld { .. }) { VF1 } else { name }));
        println!("set_num_vfs({name}, {count}): {e}");
        e.kind()
    };
    assert_eq!(refuse(PLAIN, 1), ErrorKind::NotSriovPf { vf_of: None });
    assert_eq!(refuse(PF, 5), ErrorKind::TooManyVfs { asked: 5, total: 4 });
    sriov::set_num_vfs(&k, PF, 2).unwrap();
    assert_eq!(refuse(PF, 3), ErrorKind::VfsEnabled { current: 2 });
    assert!(matches!(refuse(VF0, 1), ErrorKind::NotSriovPf { vf_of: Some(p) } if p.as_str() == PF));
    // A VF held through VFIO is not removed under its user.
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let pf = ctx.setup(PF).unwrap();
    ctx.set_vf_token(&pf, &token(A)).unwrap();
    let vf = ctx.setup_vf(VF1, &token(A)).unwrap();
    assert!(matches!(refuse(PF, 0), ErrorKind::VfHeld { .. }));
    ctx.free(vf).unwrap();
    ctx.free(pf).unwrap();
    sriov::set_num_vfs(&k, PF, 0).unwrap();
    k.set_vfio_pci_enable_sriov(false);
    assert_eq!(refuse(PF, 1), ErrorKind::SriovDisabled);
    k.set_vfio_pci_enable_sriov(true);
    k.bind(0, None);
    assert_eq!(refuse(PF, 1), ErrorKind::NotBound { bus: Bus::Pci });
    // The kernel's own refusal when the check raced (enable_sriov turned
    // off after the crate read it on): vfio-pci answers the write ENOENT.
    k.bind(0, Some("vfio-pci"));
    k.fail_step(Step::WriteSysfs, 1, Errno::NOENT);
    assert_eq!(refuse(PF, 1), ErrorKind::SriovDisabled);
    assert!(!k.failure_pending(), "the write was made, and refused");
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn a_pf_token_lets_its_vfs_open_and_nothing_else_does() {
    let k = system(false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let pf = ctx.setup(PF).unwrap();
    // vfio-pci's first token is random: set ours.
    assert_ne!(k.vf_token(PF), Some(token(A)));
    ctx.set_vf_token(&pf, &token(A)).unwrap();
    assert_eq!(k.vf_token(PF), Some(token(A)));
    assert!(k.trace().iter().any(|c| c.step == Step::SetVfToken && c.failed.is_none()));
    sriov::set_num_vfs(&k, PF, 2).unwrap();
    let (fds, devices) = (k.open_fds(), ctx.device_count());
    for (what, result) in [("no token", ctx.setup(VF0)), ("a wrong token", ctx.setup_vf(VF0, &token(B)))] {
        let e = result.unwrap_err();
        assert_eq!(pf_label(&e).as_deref(), Some(PF), "{what}: {e}");
        assert_eq!((e.errno(), e.device()), (Some(Errno::ACCESS), Some(VF0)), "{what}");
        assert_eq!((k.open_fds(), ctx.device_count()), (fds, devices), "{what}: {e}");
        println!("VF with {what}: {e}");
    }
    // PF and VF in one context (one container).
    let vf = ctx.setup_vf(VF0, &token(A)).unwrap();
    assert_eq!((ctx.device_count(), ctx.active_backend()), (2, Some(Backend::Legacy)));
    assert_eq!(k.container_types().len(), 1);
    // Only the PF has a token to set.
    let e = ctx.set_vf_token(&vf, &token(B)).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::NotSriovPf { vf_of: Some(p) } if p.as_str() == PF), "{e}");
    let plain = ctx.setup(PLAIN).unwrap();
    let e = ctx.set_vf_token(&plain, &token(B)).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::NotSriovPf { vf_of: None }, Some(Errno::NOTTY)));
    assert_eq!(k.vf_token(PF), Some(token(A)));
    for h in [vf, plain, pf] {
        ctx.free(h).unwrap();
    }
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
}

#[test]
fn a_pf_whose_vfs_are_in_use_needs_their_token() {
    let k = system(false);
    sriov::set_num_vfs(&k, PF, 1).unwrap();
    let mut vfs: Ctx = Context::with_kernel(&k).unwrap();
    let mut pfs: Ctx = Context::with_kernel(&k).unwrap();
    // Without VF users, a PF given a token takes it.
    let pf = pfs.setup_vf(PF, &token(A)).unwrap();
    assert_eq!(k.vf_token(PF), Some(token(A)));
    pfs.free(pf).unwrap();
    let vf = vfs.setup_vf(VF0, &token(A)).unwrap();
    let fds = k.open_fds();
    for result in [pfs.setup(PF), pfs.setup_vf(PF, &token(B))] {
        let e = result.unwrap_err();
        assert_eq!((pf_label(&e), e.errno(), e.device()), (None, Some(Errno::ACCESS), Some(PF)), "{e}");
        assert_eq!(k.open_fds(), fds);
        println!("PF with its VF in use: {e}");
    }
    let pf = pfs.setup_vf(PF, &token(A)).unwrap();
    pfs.free(pf).unwrap();
    vfs.free(vf).unwrap();
    drop((vfs, pfs));
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn a_token_is_passed_only_where_the_kernel_checks_one() {
    let k = system(false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    // PLAIN is neither PF nor VF: the kernel would refuse a token (EINVAL).
    let plain = ctx.setup_vf(PLAIN, &token(A)).unwrap();
    ctx.free(plain).unwrap();
    // The VF (on vfio-pci) of a PF on another driver: no token is checked,
    // none is passed.
    sriov::set_num_vfs(&k, PF, 1).unwrap();
    k.bind(0, Some("nvme"));
    let vf = ctx.setup_vf(VF0, &token(A)).unwrap();
    ctx.free(vf).unwrap();
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn tokens_need_the_group_path() {
    let k = system(true);
    sriov::set_num_vfs(&k, PF, 1).unwrap();
    // Forced iommufd: refused before anything is opened.
    let mut ctx: Ctx = Context::with_backend(&k, Backend::Iommufd).unwrap();
    let (fds, calls) = (k.open_fds(), k.calls() as usize);
    let e = ctx.setup_vf(VF0, &token(A)).unwrap_err();
    assert_eq!((e.kind(), e.device()), (ErrorKind::VfTokenNeedsGroup, Some(VF0)), "{e}");
    assert_eq!(k.open_fds(), fds);
    let made: Vec<_> = k.trace()[calls..].iter().map(|c| c.name).collect();
    assert!(made.iter().all(|n| !["open", "ioctl"].contains(n)), "{made:?}");
    println!("{e}");
    // The cdev of Linux 6.12 checks no token (and takes no bind flag): a
    // VF opened through it is not refused.
    let vf = ctx.setup(VF0).unwrap();
    ctx.free(vf).unwrap();
    drop(ctx);
    // Auto: the PF and its VF take the group path, token or not, and the
    // VF's token is checked there.
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let pf = ctx.setup(PF).unwrap();
    assert_eq!(ctx.active_backend(), Some(Backend::Legacy));
    ctx.set_vf_token(&pf, &token(B)).unwrap();
    let e = ctx.setup(VF0).unwrap_err();
    assert_eq!(pf_label(&e).as_deref(), Some(PF), "{e}");
    let vf = ctx.setup_vf(VF0, &token(B)).unwrap();
    assert_eq!(k.iommufd_attached(), 0);
    ctx.free(vf).unwrap();
    ctx.free(pf).unwrap();
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
    // Auto beside a device already on iommufd: one address space, so the
    // PF takes its cdev as the kernel allows, and a token is refused, saying
    // what to do; nothing is left open.
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let plain = ctx.setup(PLAIN).unwrap();
    assert_eq!(ctx.active_backend(), Some(Backend::Iommufd));
    let fds = k.open_fds();
    let e = ctx.setup_vf(VF0, &token(B)).unwrap_err();
    assert_eq!((e.kind(), e.device()), (ErrorKind::VfTokenBesideIommufd, Some(VF0)), "{e}");
    assert!(e.to_string().contains("set up the PF and its VFs before the iommufd devices"), "{e}");
    assert_eq!((k.open_fds(), ctx.device_count(), ctx.group_count()), (fds, 1, 0));
    let pf = ctx.setup(PF).unwrap();
    assert_eq!(ctx.device(&pf).unwrap().backend(), Backend::Iommufd);
    // A kernel whose cdev checks tokens refuses the VF's bind with EACCES:
    // the same refusal as on the group path, naming the PF.
    k.fail_step(Step::BindIommufd, 1, Errno::ACCESS);
    let e = ctx.setup(VF0).unwrap_err();
    assert_eq!(pf_label(&e).as_deref(), Some(PF), "{e}");
    assert_eq!((k.open_fds(), ctx.device_count()), (fds + 1, 2));
    ctx.free(pf).unwrap();
    ctx.free(plain).unwrap();
    drop(ctx);
    assert_eq!(k.open_fds(), 0);
}

#[test]
fn injected_failures_are_traced_by_step() {
    let k = system(false);
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let pf = ctx.setup(PF).unwrap();
    k.fail_step(Step::SetVfToken, 1, Errno::IO);
    let e = ctx.set_vf_token(&pf, &token(A)).unwrap_err();
    assert_eq!((e.kind(), e.errno(), e.device()), (ErrorKind::Syscall(Step::SetVfToken), Some(Errno::IO), Some(PF)));
    assert_eq!(k.failed_call().map(|c| c.step), Some(Step::SetVfToken));
    ctx.set_vf_token(&pf, &token(A)).unwrap();
    k.fail_step(Step::WriteSysfs, 1, Errno::IO);
    let e = sriov::set_num_vfs(&k, PF, 2).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(Step::WriteSysfs), Some(Errno::IO)));
    assert_eq!(sysfs_state(&k).1.len(), 0);
    sriov::set_num_vfs(&k, PF, 2).unwrap();
    k.fail_step(Step::GetDeviceFd, 1, Errno::IO);
    let e = ctx.setup_vf(VF1, &token(A)).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::Syscall(Step::GetDeviceFd), Some(Errno::IO)));
    assert!(!k.failure_pending());
    ctx.free(pf).unwrap();
}

/// What must not change when a call fails.
#[derive(Debug, PartialEq)]
struct Snapshot {
    fds: usize,
    mappings: usize,
    devices: usize,
    groups: usize,
    sysfs: (SriovRole, Vec<String>),
    token: Option<VfToken>,
}

fn snapshot(k: &FakeKernel, ctx: &Ctx<'_>) -> Snapshot {
    Snapshot {
        fds: k.open_fds(),
        mappings: k.live_mappings(),
        devices: ctx.device_count(),
        groups: ctx.group_count(),
        sysfs: sysfs_state(k),
        token: k.vf_token(PF),
    }
}

/// An operation under test: it runs on a context holding the PF (its token
/// set to `A`) and, with `vfs`, two VFs created.
struct Walk {
    what: &'static str,
    iommufd: bool,
    vfs: u32,
    run: fn(&FakeKernel, &mut Ctx<'_>, &DeviceHandle) -> Result<Option<DeviceHandle>, Error>,
    /// The devices its error may name.
    device: &'static [&'static str],
    /// At least this many calls.
    points: u64,
}

/// Fails call `n` of the operation; false once the operation made fewer
/// calls (it then succeeded).
fn walk_step(w: &Walk, n: u64) -> bool {
    let k = system(w.iommufd);
    sriov::set_num_vfs(&k, PF, w.vfs).unwrap();
    let mut ctx: Ctx = Context::with_kernel(&k).unwrap();
    let pf = ctx.setup(PF).unwrap();
    ctx.set_vf_token(&pf, &token(A)).unwrap();
    let before = snapshot(&k, &ctx);
    let calls_before = k.calls();
    k.fail_call(n, Errno::IO);
    let result = (w.run)(&k, &mut ctx, &pf);
    if k.failure_pending() {
        k.clear_failure();
        let made = result.unwrap_or_else(|e| panic!("{}: failed without an injected failure: {e}", w.what));
        if let Some(h) = made {
            ctx.free(h).unwrap();
        }
        ctx.free(pf).unwrap();
        return false;
    }
    let failed = k.trace()[(calls_before + n - 1) as usize];
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("{}: succeeded although call {n} ({}, {:?}) failed", w.what, failed.name, failed.step),
    };
    assert_eq!(err.errno(), Some(Errno::IO), "{}: call {n} ({}): {err}", w.what, failed.name);
    assert!(err.device().is_some_and(|d| w.device.contains(&d)), "{}: call {n}: {err}", w.what);
    assert_eq!(snapshot(&k, &ctx), before, "{}: call {n} ({}) left something: {err}", w.what, failed.name);
    assert_eq!(k.bad_closes(), 0);
    // Nothing is stuck: the same operation now succeeds.
    if let Some(h) = (w.run)(&k, &mut ctx, &pf).unwrap_or_else(|e| panic!("{}: retry after call {n}: {e}", w.what)) {
        ctx.free(h).unwrap();
    }
    ctx.free(pf).unwrap();
    drop(ctx);
    assert_eq!((k.open_fds(), k.live_mappings(), k.bad_closes()), (0, 0, 0));
    true
}

#[test]
fn every_sriov_failure_point_leaves_nothing_behind() {
    let walks = [
        Walk {
            what: "setup_vf of a VF",
            iommufd: false,
            vfs: 2,
            run: |_, ctx, _| ctx.setup_vf(VF1, &token(A)).map(Some),
            device: &[VF1],
            points: 5,
        },
        Walk {
            what: "setup_vf of a VF, iommufd beside (Auto takes the group)",
            iommufd: true,
            vfs: 2,
            run: |_, ctx, _| ctx.setup_vf(VF1, &token(A)).map(Some),
            device: &[VF1],
            points: 5,
        },
        Walk {
            what: "setup_vf of a device that is neither PF nor VF",
            iommufd: false,
            vfs: 0,
            run: |_, ctx, _| ctx.setup_vf(PLAIN, &token(A)).map(Some),
            device: &[PLAIN],
            points: 5,
        },
        Walk {
            what: "set_vf_token",
            iommufd: false,
            vfs: 2,
            run: |_, ctx, pf| ctx.set_vf_token(pf, &token(B)).map(|()| None),
            device: &[PF],
            points: 1,
        },
        Walk {
            what: "set_num_vfs creating VFs",
            iommufd: false,
            vfs: 0,
            run: |k, _, _| sriov::set_num_vfs(k, PF, 3).map(|()| None),
            device: &[PF],
            points: 1,
        },
        Walk {
            what: "set_num_vfs removing VFs",
            iommufd: false,
            vfs: 2,
            run: |k, _, _| sriov::set_num_vfs(k, PF, 0).map(|()| None),
            // Reading who holds a VF names that VF.
            device: &[PF, VF0, VF1],
            points: 1,
        },
    ];
    for w in &walks {
        let mut n = 1;
        while walk_step(w, n) {
            n += 1;
        }
        let points = n - 1;
        assert!(points >= w.points, "{}: only {points} failure points", w.what);
        println!("SR-IOV failure walk, {}: {points} failure points, each refused cleanly", w.what);
    }
}
