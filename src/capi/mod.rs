//! The C ABI of Marvell DAO's VFIO library (`dao_vfio_init`,
//! `dao_vfio_device_setup`, `dao_vfio_device_free`, `dao_vfio_fini`), over
//! one process-wide [`Context`]: existing DAO C code links against this crate
//! unchanged. Feature `capi`; build the libraries with
//!
//! ```text
//! cargo rustc --release --lib --features capi --crate-type staticlib   # libdao_vfio.a
//! cargo rustc --release --lib --features capi --crate-type cdylib      # libdao_vfio.so
//! ```
//!
//! and include `src/capi/dao_vfio.h`. This layer is the only global state of
//! the crate; a mutex makes every call thread-safe. Register access through
//! `pdev->mem[i].addr` takes no lock, as in DAO.

use core::ffi::{c_char, c_int, c_uint, CStr};
use core::mem::{offset_of, size_of};
use core::ptr;
use std::sync::{Mutex, MutexGuard};

use crate::backend::Backend;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::kernel::Host;
use crate::name::{Bus, NameError};
use crate::{DeviceHandle, Errno, MAX_REGIONS};

/// Devices the C interface can hold at once.
pub const CAPI_DEVICES: usize = 32;

/// `VFIO_DEV_NAME_MAX_LEN`.
pub const VFIO_DEV_NAME_MAX_LEN: usize = 64;

/// `enum dao_vfio_dev_type`: `DAO_VFIO_DEV_PLATFORM`.
pub const DAO_VFIO_DEV_PLATFORM: c_int = 0;
/// `enum dao_vfio_dev_type`: `DAO_VFIO_DEV_PCIE`.
pub const DAO_VFIO_DEV_PCIE: c_int = 1;

/// `struct dao_vfio_mem_resouce` (DAO's spelling).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dao_vfio_mem_resouce {
    /// Mapped address; NULL if absent or not mappable.
    pub addr: *mut u8,
    /// Size of the region.
    pub len: u64,
}

/// `struct dao_vfio_device`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dao_vfio_device {
    /// Device name, NUL-terminated.
    pub name: [c_char; VFIO_DEV_NAME_MAX_LEN],
    /// VFIO device fd.
    pub device_fd: c_int,
    /// VFIO group fd.
    pub group_fd: c_int,
    /// Entries in `mem`.
    pub num_resource: c_uint,
    /// Regions, by index.
    pub mem: *mut dao_vfio_mem_resouce,
    /// `enum dao_vfio_dev_type`, set by the caller.
    pub type_: c_int,
    /// Caller's field, untouched.
    pub prime: u8,
    /// Caller's field, untouched.
    pub mbar: u8,
}

// The layout the header describes, for LP64 targets (aarch64, x86_64);
// `tests/capi_layout.rs` checks it against a C compiler.
const _: () = {
    assert!(size_of::<dao_vfio_mem_resouce>() == 16);
    assert!(offset_of!(dao_vfio_device, device_fd) == 64);
    assert!(offset_of!(dao_vfio_device, group_fd) == 68);
    assert!(offset_of!(dao_vfio_device, num_resource) == 72);
    assert!(offset_of!(dao_vfio_device, mem) == 80);
    assert!(offset_of!(dao_vfio_device, type_) == 88);
    assert!(offset_of!(dao_vfio_device, prime) == 92);
    assert!(offset_of!(dao_vfio_device, mbar) == 93);
    assert!(size_of::<dao_vfio_device>() == 96);
};

/// One open device: its handle and the storage its `mem` points into.
struct Slot {
    handle: DeviceHandle,
    device_fd: c_int,
}

/// The process-wide state behind the C functions.
struct Library {
    context: Option<Context<Host, CAPI_DEVICES>>,
    slots: [Option<Slot>; CAPI_DEVICES],
    /// `pdev->mem` of slot i points at `mem[i]`: fixed storage, never moved
    /// (it lives in a static).
    mem: [[dao_vfio_mem_resouce; MAX_REGIONS]; CAPI_DEVICES],
}

/// Raw pointers into device mappings, guarded by the mutex.
struct Guarded(Library);

// SAFETY: the pointers in `mem` are addresses of shared device mappings owned
// by the context, which the mutex guards with them; moving them between
// threads moves no ownership of anything thread-bound.
unsafe impl Send for Guarded {}

const EMPTY: dao_vfio_mem_resouce = dao_vfio_mem_resouce { addr: ptr::null_mut(), len: 0 };

static LIBRARY: Mutex<Guarded> = Mutex::new(Guarded(Library {
    context: None,
    slots: [const { None }; CAPI_DEVICES],
    mem: [[EMPTY; MAX_REGIONS]; CAPI_DEVICES],
}));

fn library() -> MutexGuard<'static, Guarded> {
    // A panic while locked cannot leave the tables half-updated in a way
    // that matters more than refusing every later call would.
    LIBRARY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The negative errno a C caller gets for `e`.
fn errno_of(e: &Error) -> c_int {
    let errno = e.errno().unwrap_or(match e.kind() {
        ErrorKind::InvalidName(NameError::TooLong(_)) => Errno::NAMETOOLONG,
        ErrorKind::InvalidName(_) => Errno::INVAL,
        ErrorKind::NoVfio => Errno::NOENT,
        ErrorKind::Permission => Errno::ACCESS,
        ErrorKind::NoSuchDevice { .. } | ErrorKind::NoIommuGroup { .. } | ErrorKind::NotBound { .. } => Errno::NODEV,
        ErrorKind::WrongDriver { .. } | ErrorKind::GroupBusy { .. } => Errno::BUSY,
        ErrorKind::GroupNotViable { .. } => Errno::PERM,
        ErrorKind::AlreadyOpen => Errno::EXIST,
        ErrorKind::DeviceTableFull { .. } | ErrorKind::GroupTableFull { .. } => Errno::NOSPC,
        _ => Errno::INVAL,
    });
    -errno.raw_os_error()
}

/// Reports an error the DAO way (a log line) and returns its negative errno.
fn fail(e: Error) -> c_int {
    std::eprintln!("dao_vfio: {e}");
    errno_of(&e)
}

/// Opens the library: the legacy VFIO container, as DAO does, so every
/// device gets a `group_fd`; on a kernel built without the container,
/// iommufd (devices then have `group_fd` -1). Returns 0, or a negative
/// errno. Calling it again while open returns 0 and changes nothing.
#[no_mangle]
pub extern "C" fn dao_vfio_init() -> c_int {
    let mut lib = library();
    if lib.0.context.is_some() {
        return 0;
    }
    let opened = Context::with_backend(Host, Backend::Legacy).or_else(|legacy| match legacy.kind() {
        // No container: iommufd if the kernel has it, else the container's error.
        ErrorKind::NoVfio => Context::with_backend(Host, Backend::Iommufd).map_err(|_| legacy),
        _ => Err(legacy),
    });
    match opened {
        Ok(context) => {
            lib.0.context = Some(context);
            0
        }
        Err(e) => fail(e),
    }
}

/// Sets up `dev_name` on the bus `pdev->type` names and fills `*pdev`.
/// Returns 0, or a negative errno with `*pdev` untouched.
///
/// # Safety
/// `dev_name` is NULL or a NUL-terminated string; `pdev` is NULL or points to
/// a writable `struct dao_vfio_device` whose `type` field is initialized.
#[no_mangle]
pub unsafe extern "C" fn dao_vfio_device_setup(dev_name: *const c_char, pdev: *mut dao_vfio_device) -> c_int {
    if dev_name.is_null() || pdev.is_null() {
        return -Errno::INVAL.raw_os_error();
    }
    // SAFETY: non-null, and NUL-terminated by the caller's contract.
    let name = unsafe { CStr::from_ptr(dev_name) };
    // SAFETY: non-null and points to a readable `dao_vfio_device` (contract);
    // only the `type` field is read before the device is set up.
    let bus = match unsafe { ptr::addr_of!((*pdev).type_).read() } {
        DAO_VFIO_DEV_PLATFORM => Bus::Platform,
        DAO_VFIO_DEV_PCIE => Bus::Pci,
        other => {
            std::eprintln!("dao_vfio: pdev->type is {other}: use DAO_VFIO_DEV_PLATFORM or DAO_VFIO_DEV_PCIE");
            return -Errno::INVAL.raw_os_error();
        }
    };
    let Ok(name) = name.to_str() else {
        return fail(Error::from(NameError::BadByte(0xff)));
    };
    let mut guard = library();
    let lib = &mut guard.0;
    let Some(context) = lib.context.as_mut() else {
        std::eprintln!("dao_vfio: dao_vfio_device_setup before dao_vfio_init");
        return -Errno::NXIO.raw_os_error();
    };
    let Some(slot) = lib.slots.iter().position(Option::is_none) else {
        return fail(Error::new(ErrorKind::DeviceTableFull { capacity: CAPI_DEVICES }));
    };
    let handle = match context.setup_on(bus, name) {
        Ok(handle) => handle,
        Err(e) => return fail(e),
    };
    let filled = context.device(&handle).map(|dev| {
        let mem = &mut lib.mem[slot];
        *mem = [EMPTY; MAX_REGIONS];
        for (entry, region) in mem.iter_mut().zip(dev.regions()) {
            entry.addr = region.as_ptr().map_or(ptr::null_mut(), |p| p.as_ptr());
            entry.len = region.size();
        }
        let mut out: dao_vfio_device = {
            // SAFETY: `pdev` is valid for reads (contract); the caller's
            // `type`, `prime` and `mbar` are kept.
            unsafe { pdev.read() }
        };
        out.name = [0; VFIO_DEV_NAME_MAX_LEN];
        for (dst, &src) in out.name.iter_mut().zip(name.as_bytes()) {
            *dst = src as c_char;
        }
        out.device_fd = dev.fd().raw();
        out.group_fd = context.group_fd(dev.group()).map_or(-1, |fd| fd.raw());
        out.num_resource = dev.regions().len() as c_uint;
        out.mem = mem.as_mut_ptr();
        out
    });
    match filled {
        Ok(out) => {
            // SAFETY: `pdev` is valid for writes (contract).
            unsafe { pdev.write(out) };
            lib.slots[slot] = Some(Slot { device_fd: out.device_fd, handle });
            0
        }
        Err(e) => {
            let _ = context.free(handle);
            fail(e)
        }
    }
}

/// Frees the device `*pdev` describes and clears `*pdev`; does nothing for a
/// cleared or unknown `*pdev`.
///
/// # Safety
/// `pdev` is NULL or points to a readable and writable `struct dao_vfio_device`.
#[no_mangle]
pub unsafe extern "C" fn dao_vfio_device_free(pdev: *mut dao_vfio_device) {
    if pdev.is_null() {
        return;
    }
    // SAFETY: non-null and readable (contract).
    let device_fd = unsafe { ptr::addr_of!((*pdev).device_fd).read() };
    let mut guard = library();
    let lib = &mut guard.0;
    let Some(slot) = lib.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.device_fd == device_fd)) else {
        return;
    };
    if let (Some(context), Some(open)) = (lib.context.as_mut(), lib.slots[slot].take()) {
        if let Err(e) = context.free(open.handle) {
            fail(e);
        }
    }
    lib.mem[slot] = [EMPTY; MAX_REGIONS];
    // SAFETY: writable (contract). Cleared, with fds that name nothing.
    unsafe {
        let keep = pdev.read();
        pdev.write(dao_vfio_device {
            name: [0; VFIO_DEV_NAME_MAX_LEN],
            device_fd: -1,
            group_fd: -1,
            num_resource: 0,
            mem: ptr::null_mut(),
            type_: keep.type_,
            prime: keep.prime,
            mbar: keep.mbar,
        });
    }
}

/// Closes the library; refused (with a log line) while devices are open.
#[no_mangle]
pub extern "C" fn dao_vfio_fini() {
    let mut guard = library();
    let lib = &mut guard.0;
    if let Some(context) = lib.context.take() {
        if let Err((context, e)) = context.close() {
            fail(e);
            lib.context = Some(context);
        }
    }
}
