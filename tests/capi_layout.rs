//! The C header's layout against the Rust side: a C compiler prints the
//! header's sizes, offsets and constants, and they must equal Rust's. Needs a
//! C compiler, so it runs on the host (not inside the boards).
#![cfg(not(target_env = "musl"))]

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use dao_vfio::capi::{self, dao_vfio_device, dao_vfio_mem_resouce};

fn c_layout() -> BTreeMap<String, usize> {
    let exe = concat!(env!("CARGO_TARGET_TMPDIR"), "/capi-layout");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/capi/layout.c");
    let cc = Command::new("cc").args(["-std=c11", "-Wall", "-Werror", "-o", exe, source]).status();
    assert!(cc.expect("a C compiler (cc) is needed for this test").success(), "the header does not compile");
    let out = Command::new(exe).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn header_layout_matches_rust() {
    let c = c_layout();
    let rust = [
        ("sizeof_mem", size_of::<dao_vfio_mem_resouce>()),
        ("mem_addr", offset_of!(dao_vfio_mem_resouce, addr)),
        ("mem_len", offset_of!(dao_vfio_mem_resouce, len)),
        ("sizeof_device", size_of::<dao_vfio_device>()),
        ("name", offset_of!(dao_vfio_device, name)),
        ("device_fd", offset_of!(dao_vfio_device, device_fd)),
        ("group_fd", offset_of!(dao_vfio_device, group_fd)),
        ("num_resource", offset_of!(dao_vfio_device, num_resource)),
        ("mem", offset_of!(dao_vfio_device, mem)),
        ("type", offset_of!(dao_vfio_device, type_)),
        ("prime", offset_of!(dao_vfio_device, prime)),
        ("mbar", offset_of!(dao_vfio_device, mbar)),
        ("sizeof_type", size_of::<core::ffi::c_int>()),
        ("name_max", capi::VFIO_DEV_NAME_MAX_LEN),
        ("bar0", 0),
        ("bar2", 2),
        ("bar4", 4),
        ("platform", capi::DAO_VFIO_DEV_PLATFORM as usize),
        ("pcie", capi::DAO_VFIO_DEV_PCIE as usize),
    ];
    for (key, value) in rust {
        assert_eq!(c.get(key), Some(&value), "{key}: C says {:?}, Rust says {value}", c.get(key));
    }
    assert_eq!(c.len(), rust.len(), "every C line is checked");
}

#[test]
fn errors_leave_pdev_untouched_and_free_is_harmless() {
    // Setup before init fails with -ENXIO and writes nothing; freeing a
    // struct that names no open device does nothing. (The boards run the
    // successful paths from C: tests/capi/run.)
    let mut pdev = dao_vfio_device {
        name: [7; 64],
        device_fd: 42,
        group_fd: 43,
        num_resource: 9,
        mem: std::ptr::null_mut(),
        type_: capi::DAO_VFIO_DEV_PCIE,
        prime: 1,
        mbar: 2,
    };
    let before = format!("{pdev:?}");
    // SAFETY: a valid name and a valid struct.
    let r = unsafe { capi::dao_vfio_device_setup(c"0000:00:02.0".as_ptr(), &mut pdev) };
    assert_eq!(r, -6, "ENXIO before init");
    assert_eq!(format!("{pdev:?}"), before, "pdev untouched");
    // SAFETY: NULLs are refused, not dereferenced.
    assert_eq!(unsafe { capi::dao_vfio_device_setup(std::ptr::null(), &mut pdev) }, -22);
    pdev.type_ = 5;
    // SAFETY: a valid name and a valid struct with a bad type.
    assert_eq!(unsafe { capi::dao_vfio_device_setup(c"x".as_ptr(), &mut pdev) }, -22, "EINVAL for a bad type");
    pdev.type_ = capi::DAO_VFIO_DEV_PCIE;
    // SAFETY: a valid struct that names no open device.
    unsafe { capi::dao_vfio_device_free(&mut pdev) };
    assert_eq!(format!("{pdev:?}"), before, "free of an unknown device does nothing");
    // Without /dev/vfio (this host), init fails with -ENOENT and stays closed.
    let expected = if std::path::Path::new("/dev/vfio/vfio").exists() { 0 } else { -2 };
    assert_eq!(capi::dao_vfio_init(), expected);
    capi::dao_vfio_fini();
}
