//! The real kernel, through `rustix` raw syscalls (no libc).

use core::ffi::{c_void, CStr};
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};

use rustix::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};
use rustix::mm::{MapFlags, ProtFlags};

use super::{Emulation, Fd, Kernel, NodeOwner, Protection, Request, Token};
use crate::sys;

/// The running Linux kernel. A zero-sized handle: copying it is free.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

/// One ioctl call as rustix wants it: an opcode and an argument word, with the
/// ioctl's integer result as output.
struct RawIoctl {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `as_ptr` returns the argument chosen in `Host::ioctl`, where each
// opcode is paired with the argument type its uapi definition takes; the
// output is the ioctl's return value, which needs no pointer access.
unsafe impl Ioctl for RawIoctl {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

fn borrow(fd: Fd) -> BorrowedFd<'static> {
    // SAFETY: `Fd`s reach the kernel only from a context that opened them and
    // has not closed them yet; the borrow does not outlive the syscall it is
    // made for (the 'static here is never stored).
    unsafe { BorrowedFd::borrow_raw(fd.raw()) }
}

fn out_ptr<T>(value: &mut T) -> *mut c_void {
    ptr::from_mut(value).cast()
}

/// An argument the kernel only reads.
fn in_ptr<T>(value: &T) -> *mut c_void {
    ptr::from_ref(value).cast_mut().cast()
}

/// An info buffer, with `argsz` clamped to the buffer so the kernel never
/// writes past it.
fn info_ptr(buf: &mut sys::InfoBuffer) -> *mut c_void {
    buf.set_argsz(buf.argsz().min(sys::INFO_BUFFER_LEN as u32));
    out_ptr(buf)
}

// SAFETY: `mmap` below returns what the kernel mapped with MAP_SHARED, which is
// page aligned and valid until munmap.
unsafe impl Kernel for Host {
    fn emulation(&self, _: &Token) -> Option<Emulation> {
        None // Real mappings are device memory.
    }

    fn open(&self, _: &Token, path: &CStr) -> Result<Fd, Errno> {
        let fd: OwnedFd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Fd::from_raw(fd.into_raw_fd()))
    }

    fn close(&self, _: &Token, fd: Fd) {
        // SAFETY: the caller owns `fd` and closes it once (see `Fd`).
        drop(unsafe { OwnedFd::from_raw_fd(fd.raw()) });
    }

    fn ioctl(&self, _: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        let (opcode, arg): (Opcode, *mut c_void) = match request {
            Request::GetApiVersion => (sys::GET_API_VERSION, ptr::null_mut()),
            Request::CheckExtension(ext) => (sys::CHECK_EXTENSION, ext as usize as *mut c_void),
            Request::SetIommu(kind) => (sys::SET_IOMMU, kind as usize as *mut c_void),
            Request::GroupGetStatus(status) => (sys::GROUP_GET_STATUS, out_ptr(status)),
            Request::GroupSetContainer(container) => {
                let mut raw = container.raw();
                // The kernel copies the int before returning; `raw` outlives the call.
                return self.call(fd, sys::GROUP_SET_CONTAINER, out_ptr(&mut raw));
            }
            Request::GroupUnsetContainer => (sys::GROUP_UNSET_CONTAINER, ptr::null_mut()),
            Request::GroupGetDeviceFd(name) => (sys::GROUP_GET_DEVICE_FD, name.as_ptr().cast_mut().cast()),
            Request::DeviceGetInfo(info) => (sys::DEVICE_GET_INFO, out_ptr(info)),
            Request::DeviceGetRegionInfo(info) => (sys::DEVICE_GET_REGION_INFO, out_ptr(info)),
            Request::DeviceGetIrqInfo(info) => (sys::DEVICE_GET_IRQ_INFO, out_ptr(info)),
            Request::DeviceGetRegionInfoCaps(buf) => (sys::DEVICE_GET_REGION_INFO, info_ptr(buf)),
            Request::DeviceSetIrqs(set) => (sys::DEVICE_SET_IRQS, in_ptr(set)),
            Request::DeviceReset => (sys::DEVICE_RESET, ptr::null_mut()),
            Request::IommuGetInfo(buf) => (sys::IOMMU_GET_INFO, info_ptr(buf)),
            Request::IommuMapDma(map) => (sys::IOMMU_MAP_DMA, in_ptr(map)),
            Request::IommuUnmapDma(unmap) => (sys::IOMMU_UNMAP_DMA, out_ptr(unmap)),
            // The kernel reads and writes back as much of each iommufd or cdev
            // structure as its size field says: make it this structure's.
            Request::IoasAlloc(alloc) => {
                alloc.size = sys::argsz::<sys::IoasAlloc>();
                (sys::IOMMU_IOAS_ALLOC, out_ptr(alloc))
            }
            Request::IoasIovaRanges(query) => {
                // The kernel writes at most `num_iovas` ranges at `allowed_iovas`:
                // point it at this query's own array, whatever the caller set.
                query.head.size = sys::argsz::<sys::IoasIovaRanges>();
                query.head.num_iovas = sys::IOAS_MAX_RANGES as u32;
                query.head.allowed_iovas = query.ranges.as_mut_ptr() as u64;
                (sys::IOMMU_IOAS_IOVA_RANGES, out_ptr(&mut query.head))
            }
            Request::IoasMap(map) => {
                map.size = sys::argsz::<sys::IoasMap>();
                (sys::IOMMU_IOAS_MAP, out_ptr(map))
            }
            Request::IoasUnmap(unmap) => {
                unmap.size = sys::argsz::<sys::IoasUnmap>();
                (sys::IOMMU_IOAS_UNMAP, out_ptr(unmap))
            }
            Request::DeviceBindIommufd(bind) => {
                bind.argsz = sys::argsz::<sys::BindIommufd>();
                (sys::DEVICE_BIND_IOMMUFD, out_ptr(bind))
            }
            Request::DeviceSetVfToken(feature) => (sys::DEVICE_FEATURE, in_ptr(feature)),
            Request::DeviceAttachIommufdPt(attach) => {
                attach.argsz = sys::argsz::<sys::AttachIommufdPt>();
                (sys::DEVICE_ATTACH_IOMMUFD_PT, out_ptr(attach))
            }
        };
        self.call(fd, opcode, arg)
    }

    fn mmap(&self, _: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        let mut flags = ProtFlags::empty();
        if prot.read {
            flags |= ProtFlags::READ;
        }
        if prot.write {
            flags |= ProtFlags::WRITE;
        }
        // SAFETY: a new shared mapping at an address the kernel picks (NULL
        // hint) cannot alias any memory Rust knows about.
        let addr = unsafe { rustix::mm::mmap(ptr::null_mut(), len, flags, MapFlags::SHARED, borrow(fd), offset)? };
        NonNull::new(addr.cast()).ok_or(Errno::FAULT)
    }

    unsafe fn munmap(&self, _: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        // SAFETY: forwarded from this function's contract.
        unsafe { rustix::mm::munmap(addr.as_ptr().cast(), len) }
    }

    fn pread(&self, _: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        rustix::io::pread(borrow(fd), buf, offset)
    }

    fn pwrite(&self, _: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        rustix::io::pwrite(borrow(fd), buf, offset)
    }

    fn readlink<'b>(&self, _: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let len = rustix::fs::readlinkat_raw(rustix::fs::CWD, path, &mut *buf)?;
        Ok(&buf[..len])
    }

    fn eventfd(&self, _: &Token) -> Result<Fd, Errno> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC)?;
        Ok(Fd::from_raw(fd.into_raw_fd()))
    }

    fn read_counter(&self, _: &Token, fd: Fd, wait: bool) -> Result<u64, Errno> {
        let mut counter = [0u8; 8];
        let read = if wait {
            rustix::io::read(borrow(fd), &mut counter)?
        } else {
            // Offset -1: the file's own position (an eventfd has none), as
            // `read` does, but with RWF_NOWAIT: EAGAIN instead of blocking.
            let mut bufs = [rustix::io::IoSliceMut::new(&mut counter)];
            rustix::io::preadv2(borrow(fd), &mut bufs, u64::MAX, rustix::io::ReadWriteFlags::NOWAIT)?
        };
        match read {
            8 => Ok(u64::from_ne_bytes(counter)),
            _ => Err(Errno::IO),
        }
    }

    fn poll_readable(&self, _: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno> {
        let timeout = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [PollFd::from_borrowed_fd(borrow(fd), PollFlags::IN)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) => Ok(n > 0),
            // A signal ended the wait early: report "not yet" (restarting
            // with the full timeout could wait forever under steady signals).
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn map_anonymous(&self, _: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno> {
        let mut flags = MapFlags::PRIVATE | MapFlags::POPULATE;
        if huge_pages {
            // 2 MiB explicitly: the default huge page size differs with the
            // kernel's base page size (512 MiB on 64 KiB-page arm64).
            flags |= MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        }
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // aliases nothing Rust knows about.
        let addr =
            unsafe { rustix::mm::mmap_anonymous(ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, flags)? };
        NonNull::new(addr.cast()).ok_or(Errno::FAULT)
    }

    fn lock(&self, _: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        // SAFETY: mlock only changes whether pages may be swapped out; it
        // reads and writes no memory.
        unsafe { rustix::mm::mlock(addr.as_ptr().cast(), len) }
    }

    fn write_file(&self, _: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno> {
        // The OwnedFd closes itself when this returns, on success or error.
        let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::io::retry_on_intr(|| rustix::io::write(&fd, data))
    }

    fn read_file<'b>(&self, _: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let mut len = 0;
        while len < buf.len() {
            match rustix::io::retry_on_intr(|| rustix::io::read(&fd, &mut buf[len..]))? {
                0 => break,
                n => len += n,
            }
        }
        Ok(&buf[..len])
    }

    fn list_dir_while(&self, _: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        list_entries(fd.as_fd(), visit)
    }

    fn open_dir(&self, _: &Token, path: &CStr) -> Result<Fd, Errno> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Fd::from_raw(fd.into_raw_fd()))
    }

    fn list_open_dir_while(&self, _: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        list_entries(borrow(dir), visit)
    }

    fn exists_at(&self, _: &Token, dir: Fd, path: &CStr) -> Result<(), Errno> {
        // A length of 1: with 0 Linux refuses before the lookup.
        let mut target = [0u8; 1];
        match rustix::fs::readlinkat_raw(borrow(dir), path, &mut target[..]) {
            Ok(_) | Err(Errno::INVAL) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn open_dir_at(&self, _: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(borrow(dir), path, flags, Mode::empty())?;
        Ok(Fd::from_raw(fd.into_raw_fd()))
    }

    fn memlock_limit(&self, _: &Token) -> Option<u64> {
        rustix::process::getrlimit(rustix::process::Resource::Memlock).current
    }

    fn node_owner(&self, _: &Token, path: &CStr) -> Result<NodeOwner, Errno> {
        let st = rustix::fs::stat(path)?;
        Ok(NodeOwner { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777 })
    }

    fn chown(&self, _: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        // -1 would mean "unchanged" to chown: `grant` never passes it.
        let (uid, gid) = (rustix::fs::Uid::from_raw(uid), gid.map(rustix::fs::Gid::from_raw));
        rustix::fs::chown(path, Some(uid), gid)
    }

    fn read_file_at<'b>(&self, _: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let mut len = 0;
        while len < buf.len() {
            match rustix::io::retry_on_intr(|| rustix::io::pread(&fd, &mut buf[len..], offset + len as u64))? {
                0 => break,
                n => len += n,
            }
        }
        Ok(&buf[..len])
    }
}

/// `getdents64` on an open directory over a stack buffer, calling `visit`
/// with each name but `.` and `..` until it returns `false`.
fn list_entries(dir: BorrowedFd<'_>, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
    let mut space = [MaybeUninit::<u8>::uninit(); 2048];
    let mut entries = RawDir::new(dir, &mut space);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && !visit(name) {
            break;
        }
    }
    Ok(())
}

impl Host {
    fn call(&self, fd: Fd, opcode: Opcode, arg: *mut c_void) -> Result<i32, Errno> {
        // SAFETY: `Host::ioctl` pairs each VFIO and iommufd opcode with the
        // argument its uapi definition takes (an integer, NULL, or a pointer to
        // the matching `#[repr(C)]` struct or NUL-terminated name that lives
        // across the call). Structs that carry a pointer of their own (the IOVA
        // ranges query) point into the same borrowed value, with its room.
        unsafe { rustix::ioctl::ioctl(borrow(fd), RawIoctl { opcode, arg }) }
    }
}
