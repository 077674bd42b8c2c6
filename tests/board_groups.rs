//! A shared IOMMU group on the real kernel: run on the virtual boards
//! (`tests/board/test BOARD --test board_groups`), ignored on the host. Slot 6
//! of every board is one multifunction device without ACS, so Linux puts its
//! two functions in one group: `$DAO_VFIO_GROUP_MATE` (an edu, bound to
//! vfio-pci) and `$DAO_VFIO_GROUP_BLOCKER` (an NVMe controller, left to the
//! kernel's nvme driver by the board's init).
//!
//! One test, in order: while the blocker has a kernel driver the group is not
//! viable, and setting up the mate is refused through each interface the
//! board has, naming the blocker and its driver, with nothing left open; with
//! the blocker on vfio-pci too, both devices open in one context and share
//! the group; the blocker goes back to nvme.

use dao_vfio::{Backend, Context, ErrorKind};

mod common;
use common::{backend, board_has_iommufd, dev, expected_backend, link_name, open_fds, vfio_bind};

const EDU_ID: u32 = 0x0100_00ed;
/// NVMe's version register (BAR 0, offset 8): QEMU 7.2's nvme is NVMe 1.4.
const NVME_VS: usize = 0x08;
const NVME_1_4: u32 = 0x0001_0400;

fn group_of(name: &str) -> u32 {
    let group = link_name(&format!("/sys/bus/pci/devices/{name}/iommu_group"));
    group.and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("{name} has no IOMMU group"))
}

fn driver_of(name: &str) -> Option<String> {
    link_name(&format!("/sys/bus/pci/devices/{name}/driver"))
}

/// Binds `name` to `driver` (vfio-pci when `None`) with the board's tool,
/// and waits for the driver's probe (nvme's is asynchronous).
fn bind(name: &str, driver: Option<&str>) {
    let mut args = vec!["bind", name];
    args.extend(driver);
    let (code, out) = vfio_bind(&args);
    assert_eq!(code, 0, "vfio-bind {args:?}: {out}");
    let wanted = driver.unwrap_or("vfio-pci");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while driver_of(name).as_deref() != Some(wanted) {
        assert!(std::time::Instant::now() < deadline, "{name} not bound to {wanted}: {out}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs the virtual board: tests/board/test BOARD --test board_groups"]
fn a_shared_group_is_refused_until_viable_then_shared() {
    let (mate, blocker) = (dev("DAO_VFIO_GROUP_MATE"), dev("DAO_VFIO_GROUP_BLOCKER"));
    let group = group_of(&mate);
    assert_eq!(group_of(&blocker), group, "the board's slot 6 is one IOMMU group");
    assert_eq!(driver_of(&mate).as_deref(), Some("vfio-pci"));
    assert_eq!(driver_of(&blocker).as_deref(), Some("nvme"), "the init leaves the blocker to nvme");

    let mut backends = vec![backend(), Backend::Legacy];
    if board_has_iommufd() {
        backends.push(Backend::Iommufd);
    }
    for asked in backends {
        let before = open_fds();
        let mut vfio = Context::open_with(asked).unwrap();
        let opened = open_fds();
        let e = vfio.setup(&mate).unwrap_err();
        assert_eq!(open_fds(), opened, "{asked:?}: the refused setup left nothing open in the context");
        match e.kind() {
            ErrorKind::GroupNotViable { group: g, blocker: Some(b) } => {
                assert_eq!((g, b.device(), b.driver()), (group, blocker.as_str(), "nvme"), "{asked:?}: {e}");
            }
            other => panic!("{asked:?}: expected GroupNotViable naming {blocker}, got {other:?}: {e}"),
        }
        assert_eq!(e.device(), Some(mate.as_str()));
        let message = e.to_string();
        assert!(message.contains(&blocker) && message.contains("nvme"), "{asked:?}: {message}");
        assert_eq!(vfio.device_count(), 0);
        // The refusal left the context usable.
        let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
        vfio.free(edu).unwrap();
        vfio.close().map_err(|(_, e)| e).unwrap();
        assert_eq!(open_fds(), before, "{asked:?}: nothing left open");
    }

    bind(&blocker, None);
    let shared = std::panic::catch_unwind(|| both_devices_share_the_group(&mate, &blocker, group));
    bind(&blocker, Some("nvme"));
    if let Err(panic) = shared {
        std::panic::resume_unwind(panic);
    }
}

/// Both functions on vfio-pci: one context opens both, in one group.
fn both_devices_share_the_group(mate: &str, blocker: &str, group: u32) {
    let before = open_fds();
    let mut vfio = common::context();
    let m = vfio.setup(mate).unwrap();
    let b = vfio.setup(blocker).unwrap();
    let (dm, db) = (vfio.device(&m).unwrap(), vfio.device(&b).unwrap());
    assert_eq!((dm.group().unwrap(), db.group().unwrap()), (group, group));
    assert_eq!((dm.backend(), db.backend()), (expected_backend(), expected_backend()));
    assert_eq!(dm.region(0).unwrap().read32(0), Ok(EDU_ID));
    assert_eq!(db.region(0).unwrap().read32(NVME_VS), Ok(NVME_1_4));

    // A second context cannot take a device of the group while it is held:
    // its group node is open here (legacy), or its DMA is owned by this
    // context's iommufd.
    let mut other = common::context();
    vfio.free(m).unwrap();
    let refused = other.setup(mate).unwrap_err();
    match expected_backend() {
        Backend::Legacy => assert_eq!(refused.kind(), ErrorKind::GroupBusy { group }, "{refused}"),
        _ => assert_eq!(refused.kind(), ErrorKind::DeviceClaimed, "{refused}"),
    }
    // The blocker keeps the group open here and still answers.
    let db = vfio.device(&b).unwrap();
    assert_eq!(db.region(0).unwrap().read32(NVME_VS), Ok(NVME_1_4));
    vfio.free(b).unwrap();
    // Freed: the other context takes it.
    let m = other.setup(mate).unwrap();
    assert_eq!(other.device(&m).unwrap().region(0).unwrap().read32(0), Ok(EDU_ID));
    other.free(m).unwrap();
    drop(other);
    vfio.close().map_err(|(_, e)| e).unwrap();
    assert_eq!(open_fds(), before, "nothing left open");
}
