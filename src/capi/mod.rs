//! The C ABI of Marvell DAO's VFIO library (`dao_vfio_init`,
//! `dao_vfio_device_setup`, `dao_vfio_device_free`, `dao_vfio_fini`), over
//! one process-wide [`Context`]: existing DAO C code links against this crate
//! unchanged. Feature `capi` (`no_std`, like the crate); build the libraries,
//! without Rust's std, with feature `clib` and the `clib` profile
//!
//! ```text
//! cargo rustc --profile clib --lib --no-default-features --features clib --crate-type staticlib  # libdao_vfio.a
//! cargo rustc --profile clib --lib --no-default-features --features clib --crate-type cdylib     # libdao_vfio.so
//! ```
//!
//! (in `target/clib/`, or `target/TRIPLE/clib/` with `--target`) and include
//! `src/capi/dao_vfio.h`. This layer is the only global state of the crate; a
//! lock (on a futex) makes every call thread-safe. Register access
//! through `pdev->mem[i].addr` takes no lock, as in DAO. Errors are also
//! described by a line on stderr (one `write(2)` to fd 2).

use core::ffi::{c_char, c_int, c_uint, CStr};
use core::mem::{offset_of, size_of};
use core::ptr;

use crate::backend::Backend;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::kernel::Host;
use crate::name::{Bus, DeviceName, NameError};
use crate::notify::Notification;
use crate::{DeviceHandle, Errno, VfToken, MAX_REGIONS};

mod lock;
mod log;
#[cfg(all(feature = "clib", not(feature = "std"), not(test)))]
mod panic;

use lock::{Guard, Lock};

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
    /// Size of the region (0 for a PCI device's ROM and VGA entries, which
    /// setup does not describe).
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

/// One open device: its handle and what identifies its `struct
/// dao_vfio_device` (the fd alone does not: fds are reused).
struct Slot {
    handle: DeviceHandle,
    device_fd: c_int,
    name: DeviceName,
    /// Which of the slot's two `mem` cells this setup points at.
    cell: usize,
}

/// The process-wide state behind the C functions.
struct Library {
    context: Opened,
    slots: [Option<Slot>; CAPI_DEVICES],
    /// `pdev->mem` of slot i points at `mem[2 * i + cell]`: fixed storage,
    /// never moved (it lives in a static). Each setup of a slot takes the
    /// other cell than the last, so a stale copy of a freed device's struct
    /// never matches the slot's next device, even the same device set up
    /// again with the same fds.
    mem: [[dao_vfio_mem_resouce; MAX_REGIONS]; 2 * CAPI_DEVICES],
    /// The cell each slot used last.
    last_cell: [usize; CAPI_DEVICES],
    /// The VF token given by `dao_vfio_vf_token_set` (all zero with
    /// `has_vf_token` false: no token; plain bytes keep the static in `.bss`).
    vf_token: [u8; 16],
    has_vf_token: bool,
}

/// The process-wide context, open between `dao_vfio_init` and `dao_vfio_fini`.
///
/// Not an `Option`: `None` would be a niche value inside the context, a
/// non-zero byte that puts the whole static (140 KiB, mostly `mem`) into
/// `.data`, on disk in every program that links the library. Tag 0 keeps the
/// static's initial value all zero, in `.bss`.
#[repr(u8)]
#[allow(clippy::large_enum_variant, reason = "one, in a static: there is no heap to box it into")]
enum Opened {
    Closed = 0,
    Open(Context<Host, CAPI_DEVICES>) = 1,
}

impl Opened {
    fn is_some(&self) -> bool {
        matches!(self, Opened::Open(_))
    }

    fn as_mut(&mut self) -> Option<&mut Context<Host, CAPI_DEVICES>> {
        match self {
            Opened::Open(context) => Some(context),
            Opened::Closed => None,
        }
    }

    fn take(&mut self) -> Option<Context<Host, CAPI_DEVICES>> {
        match core::mem::replace(self, Opened::Closed) {
            Opened::Open(context) => Some(context),
            Opened::Closed => None,
        }
    }
}

/// Raw pointers into device mappings, guarded by the lock.
struct Guarded(Library);

// SAFETY: the pointers in `mem` are addresses of shared device mappings owned
// by the context, which the lock guards with them; moving them between
// threads moves no ownership of anything thread-bound.
unsafe impl Send for Guarded {}

const EMPTY: dao_vfio_mem_resouce = dao_vfio_mem_resouce { addr: ptr::null_mut(), len: 0 };

static LIBRARY: Lock<Guarded> = Lock::new(Guarded(Library {
    context: Opened::Closed,
    slots: [const { None }; CAPI_DEVICES],
    mem: [[EMPTY; MAX_REGIONS]; 2 * CAPI_DEVICES],
    last_cell: [0; CAPI_DEVICES],
    vf_token: [0; 16],
    has_vf_token: false,
}));

fn library() -> Guard<'static, Guarded> {
    // No poisoning: a panic while locked (only in Rust tests; the C libraries
    // abort) cannot leave the tables half-updated in a way that matters more
    // than refusing every later call would.
    LIBRARY.lock()
}

/// The negative errno a C caller gets for `e`.
fn errno_of(e: &Error) -> c_int {
    let errno = e.errno().unwrap_or(match e.kind() {
        ErrorKind::InvalidName(NameError::TooLong(_)) => Errno::NAMETOOLONG,
        ErrorKind::InvalidName(_) => Errno::INVAL,
        ErrorKind::NoVfio => Errno::NOENT,
        ErrorKind::Permission { .. } => Errno::ACCESS,
        ErrorKind::NoSuchDevice { .. } | ErrorKind::NoIommuGroup { .. } | ErrorKind::NotBound { .. } => Errno::NODEV,
        ErrorKind::WrongDriver { .. } | ErrorKind::GroupBusy { .. } => Errno::BUSY,
        ErrorKind::GroupNotViable { .. } => Errno::PERM,
        ErrorKind::VfTokenRefused { .. } => Errno::ACCESS,
        ErrorKind::AlreadyOpen => Errno::EXIST,
        ErrorKind::DeviceTableFull { .. } | ErrorKind::GroupTableFull { .. } => Errno::NOSPC,
        _ => Errno::INVAL,
    });
    -errno.raw_os_error()
}

/// Reports an error the DAO way (a log line) and returns its negative errno.
fn fail(e: Error) -> c_int {
    log::line(format_args!("{e}"));
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
            lib.0.context = Opened::Open(context);
            0
        }
        Err(e) => fail(e),
    }
}

/// Sets up `dev_name` on the bus `pdev->type` names and fills `*pdev`'s
/// output fields (`name`, `device_fd`, `group_fd`, `num_resource`, `mem`),
/// each written on its own; `type` is the only field read, and `prime` and
/// `mbar` are left untouched. Returns 0, or a negative errno with `*pdev`
/// untouched.
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
            log::line(format_args!("pdev->type is {other}: use DAO_VFIO_DEV_PLATFORM or DAO_VFIO_DEV_PCIE"));
            return -Errno::INVAL.raw_os_error();
        }
    };
    let Ok(name) = name.to_str() else {
        return fail(Error::from(NameError::BadByte(0xff)));
    };
    let mut guard = library();
    let lib = &mut guard.0;
    let Some(context) = lib.context.as_mut() else {
        log::line(format_args!("dao_vfio_device_setup before dao_vfio_init"));
        return -Errno::NXIO.raw_os_error();
    };
    let Some(slot) = lib.slots.iter().position(Option::is_none) else {
        return fail(Error::new(ErrorKind::DeviceTableFull { capacity: CAPI_DEVICES }));
    };
    let token = lib.has_vf_token.then(|| VfToken::from_bytes(lib.vf_token));
    let setup = context.setup_on_with_token(bus, name, token.as_ref());
    let handle = match setup {
        Ok(handle) => handle,
        Err(e) => return fail(e),
    };
    let cell = 2 * slot + (1 - lib.last_cell[slot] % 2);
    let filled = context.device(&handle).map(|dev| {
        let mem = &mut lib.mem[cell];
        *mem = [EMPTY; MAX_REGIONS];
        for (entry, region) in mem.iter_mut().zip(dev.regions()) {
            entry.addr = region.as_ptr().map_or(ptr::null_mut(), |p| p.as_ptr());
            entry.len = region.size();
        }
        Outputs {
            name: dev.name_value(),
            device_fd: dev.fd().raw(),
            // Only a device opened through its group has a group fd.
            group_fd: dev.known_group().and_then(|group| context.group_fd(group)).map_or(-1, |fd| fd.raw()),
            num_resource: dev.regions().len() as c_uint,
            mem: mem.as_mut_ptr(),
        }
    });
    match filled {
        Ok(out) => {
            // SAFETY: `pdev` is valid for writes (contract).
            unsafe { out.write_to(pdev) };
            lib.slots[slot] = Some(Slot { device_fd: out.device_fd, name: out.name, cell, handle });
            lib.last_cell[slot] = cell;
            0
        }
        Err(e) => {
            let _ = context.free(handle);
            fail(e)
        }
    }
}

/// Gives the VF token (a UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) that
/// the following `dao_vfio_device_setup` calls pass to the kernel for the
/// PCI devices that need one (see [`Context::setup_vf`]): a VF whose PF is
/// bound to vfio-pci opens only with its PF's token, and a PF set up with a
/// token (while none of its VFs is in use) takes it as its VFs' token.
/// NULL forgets the token. Returns 0, or `-EINVAL` for text that is not a
/// UUID (the token kept is then unchanged).
///
/// # Safety
/// `uuid` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dao_vfio_vf_token_set(uuid: *const c_char) -> c_int {
    let token = if uuid.is_null() {
        None
    } else {
        // SAFETY: non-null, and NUL-terminated by the caller's contract.
        let text = unsafe { CStr::from_ptr(uuid) };
        match text.to_str().map_err(|e| crate::VfTokenError::BadCharacter(e.valid_up_to())).and_then(VfToken::parse) {
            Ok(token) => Some(token),
            Err(e) => return fail(Error::new(ErrorKind::InvalidVfToken(e))),
        }
    };
    let mut guard = library();
    let lib = &mut guard.0;
    lib.has_vf_token = token.is_some();
    lib.vf_token = token.map_or([0; 16], |t| *t.as_bytes());
    0
}

/// What setup gives the caller: every field of `struct dao_vfio_device` but
/// the caller's own (`type`, `prime`, `mbar`).
struct Outputs {
    name: DeviceName,
    device_fd: c_int,
    group_fd: c_int,
    num_resource: c_uint,
    mem: *mut dao_vfio_mem_resouce,
}

impl Outputs {
    /// What free leaves: a struct that names nothing.
    const CLEARED: Outputs =
        Outputs { name: DeviceName::EMPTY, device_fd: -1, group_fd: -1, num_resource: 0, mem: ptr::null_mut() };

    /// Writes each output field on its own: nothing else of `*pdev` is read
    /// or written, so the caller's fields may even be uninitialized.
    ///
    /// # Safety
    /// `pdev` is valid for writes of a `dao_vfio_device`.
    unsafe fn write_to(&self, pdev: *mut dao_vfio_device) {
        let mut name = [0 as c_char; VFIO_DEV_NAME_MAX_LEN];
        for (dst, &src) in name.iter_mut().zip(self.name.as_str().as_bytes()) {
            *dst = src as c_char;
        }
        // SAFETY: fields of a struct valid for writes (contract).
        unsafe {
            ptr::addr_of_mut!((*pdev).name).write(name);
            ptr::addr_of_mut!((*pdev).device_fd).write(self.device_fd);
            ptr::addr_of_mut!((*pdev).group_fd).write(self.group_fd);
            ptr::addr_of_mut!((*pdev).num_resource).write(self.num_resource);
            ptr::addr_of_mut!((*pdev).mem).write(self.mem);
        }
    }
}

/// Whether `*pdev` describes the device open in `slot`, whose `mem` storage
/// is `mem`: the same `mem` pointer (the slot and this very setup), the same
/// fd and the same name. Reads the name only when the others match, so a
/// cleared or never set-up struct is told apart by its `mem` alone.
///
/// # Safety
/// `pdev` is valid for reads of a `dao_vfio_device`.
unsafe fn describes(pdev: *const dao_vfio_device, slot: &Slot, mem: *const dao_vfio_mem_resouce) -> bool {
    // SAFETY: fields of a struct valid for reads (contract).
    let (their_mem, their_fd) = unsafe { (ptr::addr_of!((*pdev).mem).read(), ptr::addr_of!((*pdev).device_fd).read()) };
    if !ptr::eq(their_mem, mem) || their_fd != slot.device_fd {
        return false;
    }
    // SAFETY: as above.
    let name = unsafe { ptr::addr_of!((*pdev).name).read() };
    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    name[..len].iter().map(|c| c.to_ne_bytes()[0]).eq(slot.name.as_str().bytes())
}

/// Frees the device `*pdev` describes and clears its output fields; does
/// nothing for a cleared, never set-up or stale `*pdev`. A struct describes
/// an open device when its `mem`, `device_fd` and `name` are what that
/// device's setup wrote: a copy made before a free, whose fd now belongs to
/// another device, or a zeroed struct while some device has fd 0, names
/// nothing. (A copy of a live struct describes its device, like the struct.)
///
/// # Safety
/// `pdev` is NULL or points to a readable and writable `struct dao_vfio_device`.
#[no_mangle]
pub unsafe extern "C" fn dao_vfio_device_free(pdev: *mut dao_vfio_device) {
    if pdev.is_null() {
        return;
    }
    let mut guard = library();
    let lib = &mut guard.0;
    let found = lib.slots.iter().position(|open| {
        open.as_ref().is_some_and(|open| {
            // SAFETY: non-null and readable (contract).
            unsafe { describes(pdev, open, lib.mem[open.cell].as_ptr()) }
        })
    });
    let Some(slot) = found else {
        return;
    };
    if let (Some(context), Some(open)) = (lib.context.as_mut(), lib.slots[slot].take()) {
        if let Err(e) = context.free(open.handle) {
            fail(e);
        }
        lib.mem[open.cell] = [EMPTY; MAX_REGIONS];
    }
    // SAFETY: writable (contract). The caller's fields are left as they are.
    unsafe { Outputs::CLEARED.write_to(pdev) };
}

/// The request eventfd of the device `*pdev` describes (see
/// [`dao_vfio_device_free`]): the kernel signals it when it wants the device
/// back (an unbind, a hot-unplug), and waits until the device is freed. The
/// first call enables it (later calls return the same fd); add it to your
/// epoll loop, and on a request finish your work and free the device. The
/// library owns the fd: do not close it; it is closed with the device.
/// Returns the fd, or a negative errno: `-ENODEV` for a struct that
/// describes no open device, `-EINVAL` for a platform device or one without
/// a request interrupt.
///
/// # Safety
/// `pdev` is NULL or points to a readable `struct dao_vfio_device`.
#[no_mangle]
pub unsafe extern "C" fn dao_vfio_device_request_fd(pdev: *const dao_vfio_device) -> c_int {
    if pdev.is_null() {
        return -Errno::INVAL.raw_os_error();
    }
    let mut guard = library();
    let lib = &mut guard.0;
    let found = lib.slots.iter().flatten().find(|open| {
        // SAFETY: non-null and readable (contract).
        unsafe { describes(pdev, open, lib.mem[open.cell].as_ptr()) }
    });
    let (Some(open), Some(context)) = (found, lib.context.as_mut()) else {
        return -Errno::NODEV.raw_os_error();
    };
    let enabled = match context.notify_enable(&open.handle, Notification::Request) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::IrqAlreadyEnabled { .. }) => Ok(()),
        Err(e) => Err(e),
    };
    let fd = enabled.and_then(|()| {
        let dev = context.device(&open.handle)?;
        let fd = dev.notifier(Notification::Request)?.fd();
        Ok(fd.raw())
    });
    fd.unwrap_or_else(fail)
}

/// Closes the library; refused (with a log line) while devices are open.
#[no_mangle]
pub extern "C" fn dao_vfio_fini() {
    let mut guard = library();
    let lib = &mut guard.0;
    if let Some(context) = lib.context.take() {
        if let Err((context, e)) = context.close() {
            fail(e);
            lib.context = Opened::Open(context);
        }
    }
}

#[cfg(test)]
mod tests {
    use core::mem::MaybeUninit;

    use super::*;

    fn outputs(name: &str, fd: c_int, mem: *mut dao_vfio_mem_resouce) -> Outputs {
        Outputs { name: DeviceName::new(name).unwrap(), device_fd: fd, group_fd: 5, num_resource: 9, mem }
    }

    /// Regression (issue 17.3): setup read the whole struct, although only
    /// `type` is the caller's to initialize. Under Miri, reading any other
    /// field of this struct is an error.
    #[test]
    fn setup_writes_each_output_field_and_reads_none() {
        let mut storage = [EMPTY; MAX_REGIONS];
        let mut dev = MaybeUninit::<dao_vfio_device>::uninit();
        let p = dev.as_mut_ptr();
        // SAFETY: a field of a local struct.
        unsafe { ptr::addr_of_mut!((*p).type_).write(DAO_VFIO_DEV_PCIE) };
        // SAFETY: `p` is valid for writes.
        unsafe { outputs("0000:00:02.0", 7, storage.as_mut_ptr()).write_to(p) };
        // SAFETY: every field read here was written above.
        unsafe {
            let name = ptr::addr_of!((*p).name).read();
            assert_eq!(
                name[..13].iter().map(|c| c.to_ne_bytes()[0]).collect::<heapless::Vec<u8, 13>>(),
                b"0000:00:02.0\0"
            );
            assert_eq!(ptr::addr_of!((*p).device_fd).read(), 7);
            assert_eq!(ptr::addr_of!((*p).group_fd).read(), 5);
            assert_eq!(ptr::addr_of!((*p).num_resource).read(), 9);
            assert_eq!(ptr::addr_of!((*p).mem).read(), storage.as_mut_ptr());
            assert_eq!(ptr::addr_of!((*p).type_).read(), DAO_VFIO_DEV_PCIE);
        }
    }

    /// Regression (issue 17.4): free found its device by fd alone, so a stale
    /// copy or a zeroed struct could free whichever device now has that fd.
    #[test]
    fn a_struct_describes_only_the_setup_that_wrote_it() {
        let mut cells = [[EMPTY; MAX_REGIONS]; 2];
        let (now, before) = {
            let [a, b] = &mut cells;
            (a.as_mut_ptr(), b.as_mut_ptr())
        };
        let open = Slot {
            handle: DeviceHandle::for_tests(1),
            device_fd: 0,
            name: DeviceName::new("0000:00:02.0").unwrap(),
            cell: 0,
        };
        let check = |out: Outputs| {
            let mut dev = MaybeUninit::<dao_vfio_device>::uninit();
            // SAFETY: a local struct, valid for writes.
            unsafe { out.write_to(dev.as_mut_ptr()) };
            // SAFETY: its name, fd and mem were written (the rest is not read).
            unsafe { describes(dev.as_ptr(), &open, now) }
        };
        assert!(check(outputs("0000:00:02.0", 0, now)), "the struct setup wrote");
        // A stale copy: the same fd and name, the slot's other cell.
        assert!(!check(outputs("0000:00:02.0", 0, before)));
        // Another device that reused the slot and the fd.
        assert!(!check(outputs("0000:00:03.0", 0, now)));
        assert!(!check(outputs("0000:00:02.0", 4, now)));
        // A zeroed struct, while the open device has fd 0.
        let zeroed = MaybeUninit::<dao_vfio_device>::zeroed();
        // SAFETY: zeroed is a valid struct.
        assert!(!unsafe { describes(zeroed.as_ptr(), &open, now) });
        // A cleared one.
        assert!(!check(Outputs::CLEARED));
    }
}
