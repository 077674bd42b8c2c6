//! The kernel seam: the few system calls the crate makes, behind one trait.
//!
//! [`Host`] implements it with `rustix` raw syscalls for real use; the fake
//! kernel (`dao_vfio::fake`, feature `fake`) implements it for tests, and can
//! fail any chosen call. Nothing outside this module and [`crate::sys`] talks
//! to the kernel.

mod host;

pub use host::Host;

use core::ffi::CStr;
use core::ptr::NonNull;
use core::time::Duration;

use rustix::io::Errno;

use crate::sys;

/// A file descriptor number handed out by a [`Kernel`].
///
/// It is a plain number: the context that received it closes it exactly once,
/// through [`Kernel::close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fd(i32);

impl Fd {
    /// Wraps a descriptor number (for kernels implementing [`Kernel`]).
    pub const fn from_raw(raw: i32) -> Self {
        Fd(raw)
    }

    /// The descriptor number, for the user's own `poll`/`epoll` or syscalls.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

/// Who owns a file and its permission bits, from `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeOwner {
    /// The owning user.
    pub uid: u32,
    /// The owning group.
    pub gid: u32,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Memory protection of a mapping, derived from a region's READ/WRITE flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
}

/// One VFIO ioctl with its typed argument. The real kernel turns each variant
/// into `ioctl(fd, VFIO_..., arg)`; a fake matches on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `ioctl(container, VFIO_GET_API_VERSION)`; returns the version.
    GetApiVersion,
    /// `ioctl(container, VFIO_CHECK_EXTENSION, ext)`; returns > 0 if present.
    CheckExtension(u32),
    /// `ioctl(container, VFIO_SET_IOMMU, type)`.
    SetIommu(u32),
    /// `ioctl(group, VFIO_GROUP_GET_STATUS, &status)`.
    GroupGetStatus(&'a mut sys::GroupStatus),
    /// `ioctl(group, VFIO_GROUP_SET_CONTAINER, &container_fd)`.
    GroupSetContainer(Fd),
    /// `ioctl(group, VFIO_GROUP_UNSET_CONTAINER)`.
    GroupUnsetContainer,
    /// `ioctl(group, VFIO_GROUP_GET_DEVICE_FD, name)`; returns a new fd.
    GroupGetDeviceFd(&'a CStr),
    /// `ioctl(device, VFIO_DEVICE_GET_INFO, &info)`.
    DeviceGetInfo(&'a mut sys::DeviceInfo),
    /// `ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &info)`.
    DeviceGetRegionInfo(&'a mut sys::RegionInfo),
    /// `ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, &info)`.
    DeviceGetIrqInfo(&'a mut sys::IrqInfo),
    /// `ioctl(device, VFIO_DEVICE_GET_REGION_INFO, buf)` with room for the
    /// region's capability chain.
    DeviceGetRegionInfoCaps(&'a mut sys::InfoBuffer),
    /// `ioctl(device, VFIO_DEVICE_SET_IRQS, &set)`.
    DeviceSetIrqs(&'a sys::IrqSetEventfds),
    /// `ioctl(device, VFIO_DEVICE_RESET)`.
    DeviceReset,
    /// `ioctl(container, VFIO_IOMMU_GET_INFO, buf)`.
    IommuGetInfo(&'a mut sys::InfoBuffer),
    /// `ioctl(container, VFIO_IOMMU_MAP_DMA, &map)`.
    IommuMapDma(&'a sys::DmaMap),
    /// `ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap)`.
    IommuUnmapDma(&'a mut sys::DmaUnmap),
    /// `ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc)`.
    IoasAlloc(&'a mut sys::IoasAlloc),
    /// `ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &query.head)`, with
    /// `query.head.allowed_iovas` pointing at `query.ranges` (set by the
    /// kernel seam, with `num_iovas` the room there).
    IoasIovaRanges(&'a mut sys::IoasIovaRangesQuery),
    /// `ioctl(iommufd, IOMMU_IOAS_MAP, &map)`; the kernel writes the IOVA back.
    IoasMap(&'a mut sys::IoasMap),
    /// `ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap)`.
    IoasUnmap(&'a mut sys::IoasUnmap),
    /// `ioctl(device cdev, VFIO_DEVICE_BIND_IOMMUFD, &bind)`.
    DeviceBindIommufd(&'a mut sys::BindIommufd),
    /// `ioctl(device cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach)`.
    DeviceAttachIommufdPt(&'a mut sys::AttachIommufdPt),
    /// `ioctl(device, VFIO_DEVICE_FEATURE, &feature)` with
    /// `VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`: sets a
    /// PF's VF token.
    DeviceSetVfToken(&'a sys::FeatureVfToken),
}

/// One access to an emulated mapping, made by the kernel on the crate's
/// behalf (see [`Emulation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAccess {
    /// Read `width` bytes (1, 2, 4 or 8, aligned) at `addr`; the kernel
    /// returns the value, zero-extended.
    Read {
        /// Inside a mapping the kernel returned.
        addr: NonNull<u8>,
        /// Bytes.
        width: usize,
    },
    /// Write the low `width` bytes (1, 2, 4 or 8, aligned) of `value` at `addr`.
    Write {
        /// Inside a mapping the kernel returned.
        addr: NonNull<u8>,
        /// Bytes.
        width: usize,
        /// The value.
        value: u64,
    },
    /// A register block of `len` bytes at `addr` is about to be handed out:
    /// its cells are then read and written directly (volatile accesses the
    /// kernel does not see), from the calling thread only (a block is not
    /// `Sync`). The kernel must make sure no other thread accesses that
    /// memory from then on, or refuse: by returning non-zero (the block is
    /// then refused with [`AccessError::NotEmulable`](crate::AccessError::NotEmulable):
    /// a device model must see every access) or by panicking. Zero allows it.
    Block {
        /// Inside a mapping the kernel returned.
        addr: NonNull<u8>,
        /// Bytes of the block.
        len: usize,
    },
}

/// How the crate reaches mappings that are not device memory but ordinary
/// memory standing in for it (the fake kernel's): through the kernel, never
/// with plain volatile accesses of its own. Ordinary memory shared between
/// threads is not what a device register is: two threads' unsynchronized
/// accesses to it, one writing, are a data race, so the kernel serializes
/// them (and may model a device behind them). [`Kernel::emulation`] returns
/// one for such a kernel; a region's register accesses then go through it,
/// off the fast path that real mappings take.
#[derive(Clone, Copy)]
pub struct Emulation {
    context: NonNull<()>,
    access: unsafe fn(NonNull<()>, MmioAccess) -> u64,
}

impl Emulation {
    /// An emulation that calls `access(context, what)` for every access.
    ///
    /// # Safety
    /// For as long as any mapping of the kernel that returns it lives,
    /// `access` may be called with `context` from any thread, at any time,
    /// with an access inside one of those mappings, as the
    /// [`Region`](crate::Region) checks allow (in bounds, aligned, permitted
    /// by the region's flags); it performs the access without a data race
    /// with any other access to that memory it can see, or panics.
    pub const unsafe fn new(context: NonNull<()>, access: unsafe fn(NonNull<()>, MmioAccess) -> u64) -> Self {
        Emulation { context, access }
    }

    /// Performs `what` through the kernel.
    pub(crate) fn access(&self, what: MmioAccess) -> u64 {
        // SAFETY: `new`'s contract: callable with this context while the
        // mapping lives, which the region holding this value guarantees.
        unsafe { (self.access)(self.context, what) }
    }
}

impl core::fmt::Debug for Emulation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Emulation")
    }
}

// SAFETY: `new`'s contract lets `access` be called from any thread.
unsafe impl Send for Emulation {}
// SAFETY: as for `Send`; the value is only copied and called.
unsafe impl Sync for Emulation {}

/// A token that only this crate creates. Every [`Kernel`] method takes one,
/// so code outside the crate cannot call them: they trust the fds and
/// arguments they are given (an fd closed behind the context's back, or an
/// `argsz` larger than its struct, would break memory and I/O safety).
/// An implementor receives it, inside its own `unsafe impl`, only to forward it.
#[derive(Debug)]
pub struct Token(());

/// The token the crate passes to its kernel.
pub(crate) const TOKEN: Token = Token(());

/// The system calls the crate makes: implemented by [`Host`] and, with the
/// `fake` feature, by `dao_vfio::fake::FakeKernel`.
///
/// Every path is absolute and NUL-terminated (but those of the `_at`
/// methods, relative to a directory); every fd is opened `O_RDWR | O_CLOEXEC`
/// (but directories'; the sysfs methods open their own fd with
/// `O_CLOEXEC` and close it before returning). The methods can only be called by this crate (see [`Token`]).
///
/// # Safety
///
/// Implementors promise that a pointer returned by [`Kernel::mmap`] or
/// [`Kernel::map_anonymous`] is valid
/// for volatile reads and writes of `len` bytes (as its protection allows),
/// aligned to at least 4096 bytes, and stays valid until it is passed to
/// [`Kernel::munmap`], even if the kernel value is moved. For [`Kernel::mmap`]
/// mappings the crate hands out references into that memory and lets several
/// threads access it at once: that is device memory's nature, and a kernel
/// whose mappings are ordinary memory returns an [`Emulation`] from
/// [`Kernel::emulation`], through which the crate then makes every access.
/// An implementor that wraps another kernel (to count or trace calls) passes
/// every call on with the same arguments: a [`Request`] is built by the crate
/// with sizes and pointers that fit it.
pub unsafe trait Kernel {
    /// `open(path, O_RDWR | O_CLOEXEC)`.
    fn open(&self, token: &Token, path: &CStr) -> Result<Fd, Errno>;

    /// `close(fd)`. Linux releases the fd even when close reports an error,
    /// so there is nothing for the caller to do about one.
    fn close(&self, token: &Token, fd: Fd);

    /// `ioctl(fd, request...)`; returns the ioctl's non-negative result.
    fn ioctl(&self, token: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno>;

    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    fn mmap(&self, token: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno>;

    /// How to reach [`Kernel::mmap`] mappings that are not device memory;
    /// `None` for a real kernel, whose mappings are (see [`Emulation`]). The
    /// answer never changes for a kernel value.
    fn emulation(&self, token: &Token) -> Option<Emulation>;

    /// `munmap(addr, len)`.
    ///
    /// # Safety
    ///
    /// `addr` and `len` describe a mapping returned by [`Kernel::mmap`] or
    /// [`Kernel::map_anonymous`] of this kernel, and nothing uses that memory
    /// afterwards.
    unsafe fn munmap(&self, token: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno>;

    /// `pread(fd, buf, offset)`; returns the number of bytes read.
    fn pread(&self, token: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno>;

    /// `pwrite(fd, buf, offset)`; returns the number of bytes written.
    fn pwrite(&self, token: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno>;

    /// `readlink(path, buf)`; returns the link's target, which may fill `buf`
    /// completely (the caller treats a full buffer as possibly truncated).
    fn readlink<'b>(&self, token: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno>;

    /// `eventfd(0, EFD_CLOEXEC)`: a blocking eventfd, so that a wait is one
    /// `read` (see [`Kernel::read_counter`] for the non-blocking take).
    fn eventfd(&self, token: &Token) -> Result<Fd, Errno>;

    /// Reads and clears an eventfd's counter with one system call. `wait`:
    /// `read(fd, &counter, 8)`, which blocks while the counter is zero.
    /// Otherwise `preadv2(fd, [&counter], -1, RWF_NOWAIT)`, which never
    /// blocks: `EAGAIN` when the counter is zero (eventfds honour
    /// `RWF_NOWAIT`; Linux 6.1 and 6.12 do).
    fn read_counter(&self, token: &Token, fd: Fd, wait: bool) -> Result<u64, Errno>;

    /// `poll(fd, POLLIN, timeout)`: whether `fd` became readable in time
    /// (`None`: wait forever). A signal may end the wait early (`false`).
    fn poll_readable(&self, token: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno>;

    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_POPULATE [| MAP_HUGETLB | MAP_HUGE_2MB], -1, 0)`: memory for DMA buffers.
    fn map_anonymous(&self, token: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno>;

    /// `mlock(addr, len)`.
    fn lock(&self, token: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno>;

    /// `open(path, O_WRONLY | O_CLOEXEC)`, one `write(data)`, `close`: sets a
    /// sysfs attribute (`driver_override`, `bind`, `drivers_probe`...). Returns
    /// the bytes written. The fd never leaves the method.
    fn write_file(&self, token: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno>;

    /// `open(path, O_RDONLY | O_CLOEXEC)`, `read` until end of file or until
    /// `buf` is full, `close`: reads a small sysfs attribute. Returns what was
    /// read (a full buffer may be truncated).
    fn read_file<'b>(&self, token: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno>;

    /// `open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)`, `getdents64` over a
    /// stack buffer, `close`: calls `visit` with each entry's name, `.` and
    /// `..` excepted, in the directory's order, and stops reading (no further
    /// `getdents64`) once `visit` returns `false`. Nothing is allocated.
    fn list_dir_while(&self, token: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno>;

    /// `open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)`: a directory to list
    /// ([`Kernel::list_open_dir_while`]) and to look paths up from
    /// ([`Kernel::exists_at`], [`Kernel::open_dir_at`]) while it is open;
    /// closed with [`Kernel::close`].
    /// A path looked up from it finds nothing once the directory is removed,
    /// even if another of the same name replaces it.
    fn open_dir(&self, token: &Token, path: &CStr) -> Result<Fd, Errno>;

    /// `getdents64` on `dir` (from [`Kernel::open_dir`]) over a stack buffer,
    /// from the directory's position: as [`Kernel::list_dir_while`], without
    /// the open and the close.
    fn list_open_dir_while(&self, token: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno>;

    /// Whether `path`, relative to directory `dir` (from [`Kernel::open_dir`]
    /// or [`Kernel::open_dir_at`]), exists (`ENOENT` if not): one `readlinkat(dir, path, buf, 1)`, a
    /// lookup that checks no permission on the entry and reads none of its
    /// attributes, whose `EINVAL` (not a link) says the entry is there.
    fn exists_at(&self, token: &Token, dir: Fd, path: &CStr) -> Result<(), Errno>;

    /// `openat(dir, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)`: as
    /// [`Kernel::open_dir`], `path` relative to directory `dir` (itself
    /// from [`Kernel::open_dir`]).
    fn open_dir_at(&self, token: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno>;

    /// [`Kernel::list_dir_while`] over every entry.
    fn list_dir(&self, token: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8])) -> Result<(), Errno> {
        self.list_dir_while(token, path, &mut |name| {
            visit(name);
            true
        })
    }

    /// `getrlimit(RLIMIT_MEMLOCK)`: the soft limit in bytes, `None` when
    /// unlimited.
    fn memlock_limit(&self, token: &Token) -> Option<u64>;

    /// `stat(path)`: the owner, group and permission bits of a file.
    fn node_owner(&self, token: &Token, path: &CStr) -> Result<NodeOwner, Errno>;

    /// `chown(path, uid, gid)` (`gid` `None`: the group is left as it is).
    fn chown(&self, token: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno>;

    /// `open(path, O_RDONLY | O_CLOEXEC)`, `pread` from `offset` until end of
    /// file or until `buf` is full, `close`: reads a piece of a file too
    /// large for one buffer (`/etc/passwd`).
    fn read_file_at<'b>(&self, token: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno>;
}

// SAFETY: forwards to `K`, whose contract it inherits; `K` outlives the
// borrow, so its mappings do too.
unsafe impl<K: Kernel> Kernel for &K {
    fn open(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        (**self).open(t, path)
    }
    fn close(&self, t: &Token, fd: Fd) {
        (**self).close(t, fd)
    }
    fn ioctl(&self, t: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        (**self).ioctl(t, fd, request)
    }
    fn mmap(&self, t: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        (**self).mmap(t, fd, offset, len, prot)
    }
    fn emulation(&self, t: &Token) -> Option<Emulation> {
        (**self).emulation(t)
    }
    unsafe fn munmap(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        // SAFETY: forwarded from this function's contract.
        unsafe { (**self).munmap(t, addr, len) }
    }
    fn pread(&self, t: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        (**self).pread(t, fd, buf, offset)
    }
    fn pwrite(&self, t: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        (**self).pwrite(t, fd, buf, offset)
    }
    fn readlink<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        (**self).readlink(t, path, buf)
    }
    fn eventfd(&self, t: &Token) -> Result<Fd, Errno> {
        (**self).eventfd(t)
    }
    fn read_counter(&self, t: &Token, fd: Fd, wait: bool) -> Result<u64, Errno> {
        (**self).read_counter(t, fd, wait)
    }
    fn poll_readable(&self, t: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno> {
        (**self).poll_readable(t, fd, timeout)
    }
    fn map_anonymous(&self, t: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno> {
        (**self).map_anonymous(t, len, huge_pages)
    }
    fn lock(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        (**self).lock(t, addr, len)
    }
    fn write_file(&self, t: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno> {
        (**self).write_file(t, path, data)
    }
    fn read_file<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        (**self).read_file(t, path, buf)
    }
    fn list_dir(&self, t: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8])) -> Result<(), Errno> {
        (**self).list_dir(t, path, visit)
    }
    fn list_dir_while(&self, t: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        (**self).list_dir_while(t, path, visit)
    }
    fn open_dir(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        (**self).open_dir(t, path)
    }
    fn list_open_dir_while(&self, t: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        (**self).list_open_dir_while(t, dir, visit)
    }
    fn exists_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<(), Errno> {
        (**self).exists_at(t, dir, path)
    }
    fn open_dir_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno> {
        (**self).open_dir_at(t, dir, path)
    }
    fn memlock_limit(&self, t: &Token) -> Option<u64> {
        (**self).memlock_limit(t)
    }
    fn node_owner(&self, t: &Token, path: &CStr) -> Result<NodeOwner, Errno> {
        (**self).node_owner(t, path)
    }
    fn chown(&self, t: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        (**self).chown(t, path, uid, gid)
    }
    fn read_file_at<'b>(&self, t: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        (**self).read_file_at(t, path, offset, buf)
    }
}
