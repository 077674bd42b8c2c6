//! A [`Kernel`] that forwards every call to another one and counts the system
//! calls each makes: how the benchmarks count the crate's system calls without
//! seccomp or ptrace.
//!
//! Most methods are one system call. Four are several, per `src/kernel/host.rs`:
//! `write_file` is open, write, close; `read_file` is open, one read or more,
//! close; `list_dir_while` is open, getdents64 until it returns 0 or the visitor
//! stops, close; `list_open_dir_while` is those getdents64 alone (`open_dir`
//! counts as an open). Where the
//! number cannot be known from outside it is taken as the least possible and
//! flagged inexact, so a table never shows a guess as exact. (Of these, the
//! benchmarked operations use the listing methods and `read_file` to find a device's
//! cdev in sysfs, where the count is exact: see there.)

use core::cell::Cell;
use core::ffi::CStr;
use core::ptr::NonNull;
use core::time::Duration;

use dao_vfio::kernel::{Emulation, NodeOwner, Protection, Request, Token};
use dao_vfio::{Errno, Fd, Kernel};

/// The kernel's methods, as counter indexes.
#[derive(Clone, Copy)]
enum Method {
    Open,
    Close,
    Ioctl,
    Mmap,
    Munmap,
    Pread,
    Pwrite,
    Readlink,
    Eventfd,
    Read,
    Poll,
    MapAnonymous,
    Mlock,
    WriteFile,
    ReadFile,
    ListDir,
    /// getrlimit, stat, chown, a file read at an offset (none on the benched paths).
    Other,
}

const METHODS: usize = Method::Other as usize + 1;

/// The system call names, by [`Method`] index, for the breakdowns.
const NAMES: [&str; METHODS] = [
    "open",
    "close",
    "ioctl",
    "mmap",
    "munmap",
    "pread",
    "pwrite",
    "readlink",
    "eventfd",
    "read",
    "poll",
    "mmap(anon)",
    "mlock",
    "write_file",
    "read_file",
    "list_dir",
    "other",
];

/// Calls to the kernel seam, and the system calls they made, per method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls of each method.
    calls: [u64; METHODS],
    /// System calls made by each method (more than its calls for the
    /// multi-call methods).
    syscalls: [u64; METHODS],
    /// Multi-call uses whose count is the least they can have made.
    inexact: u64,
}

impl Counts {
    /// Every system call.
    pub fn total(&self) -> u64 {
        self.syscalls.iter().sum()
    }

    /// Calls to the kernel seam other than `close` (what the fake kernel counts).
    pub fn seam_calls_but_close(&self) -> u64 {
        self.calls.iter().sum::<u64>() - self.calls[Method::Close as usize]
    }

    /// Whether [`Counts::total`] is a lower bound.
    pub fn inexact(&self) -> bool {
        self.inexact > 0
    }

    fn zip(&self, other: &Counts, f: impl Fn(u64, u64) -> u64) -> Counts {
        Counts {
            calls: core::array::from_fn(|i| f(self.calls[i], other.calls[i])),
            syscalls: core::array::from_fn(|i| f(self.syscalls[i], other.syscalls[i])),
            inexact: f(self.inexact, other.inexact),
        }
    }

    /// The counts made since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        self.zip(earlier, |a, b| a - b)
    }

    /// These counts and `other`'s, added.
    pub fn plus(&self, other: &Counts) -> Counts {
        self.zip(other, |a, b| a + b)
    }

    /// Whether these counts over `iters` operations are, per operation, the
    /// same as `other`'s over `other_iters`.
    pub fn per_op_equal(&self, iters: u64, other: &Counts, other_iters: u64) -> bool {
        (0..METHODS).all(|i| {
            self.calls[i] * other_iters == other.calls[i] * iters
                && self.syscalls[i] * other_iters == other.syscalls[i] * iters
        })
    }

    /// System calls per operation over `iters` operations, by kind:
    /// `ioctl 21 + readlink 3 + list_dir 1 (4 syscalls) + ...`.
    pub fn breakdown(&self, iters: u64) -> String {
        let per_op = |n: u64| {
            let n = n as f64 / iters as f64;
            if n.fract() == 0.0 {
                format!("{n}")
            } else {
                format!("{n:.2}")
            }
        };
        let parts: Vec<String> = (0..METHODS)
            .filter(|&i| self.calls[i] > 0)
            .map(|i| {
                if self.syscalls[i] == self.calls[i] {
                    format!("{} {}", NAMES[i], per_op(self.calls[i]))
                } else {
                    format!("{} {} ({} syscalls)", NAMES[i], per_op(self.calls[i]), per_op(self.syscalls[i]))
                }
            })
            .collect();
        parts.join(" + ")
    }
}

/// The bytes of a `getdents64` record for a name of `name_len` bytes.
fn listing_record(name_len: usize) -> usize {
    (19 + name_len + 1).next_multiple_of(8)
}

/// Forwards to `K`, counting. Not `Sync` (plain cells): the benchmarks use
/// one thread, and a cell costs less than an atomic in the timed loops.
pub struct Counting<K> {
    inner: K,
    calls: [Cell<u64>; METHODS],
    syscalls: [Cell<u64>; METHODS],
    inexact: Cell<u64>,
}

impl<K: Kernel> Counting<K> {
    pub fn new(inner: K) -> Self {
        Counting { inner, calls: Default::default(), syscalls: Default::default(), inexact: Cell::new(0) }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            calls: self.calls.each_ref().map(Cell::get),
            syscalls: self.syscalls.each_ref().map(Cell::get),
            inexact: self.inexact.get(),
        }
    }

    /// A method that is one system call.
    fn count(&self, method: Method) {
        self.count_multi(method, 1, true);
    }

    /// Counts a listing `list` makes with `visit`, as `around` calls (its
    /// open and close, if it makes them) plus its getdents64 calls. From the
    /// listing's size in getdents64 records (`.` and `..` included): one
    /// that fits a small buffer comes in one getdents64, and a second returns
    /// 0; one the visitor stops in its first buffer takes one getdents64.
    /// (Host lists over a 2 KiB buffer; 1 KiB leaves room to spare.)
    fn counted_listing(
        &self,
        around: u64,
        visit: &mut dyn FnMut(&[u8]) -> bool,
        list: impl FnOnce(&mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let (mut bytes, mut stopped) = (listing_record(1) + listing_record(2), false);
        let result = list(&mut |name| {
            bytes += listing_record(name.len());
            stopped = !visit(name);
            !stopped
        });
        match result {
            Ok(()) => self.count_multi(Method::ListDir, around + if stopped { 1 } else { 2 }, bytes <= 1024),
            // A failed open, or more.
            Err(_) => self.count_multi(Method::ListDir, 1, false),
        }
        result
    }

    /// A method that made `syscalls` system calls, or at least that many
    /// when not `exact`.
    fn count_multi(&self, method: Method, syscalls: u64, exact: bool) {
        let i = method as usize;
        self.calls[i].set(self.calls[i].get() + 1);
        self.syscalls[i].set(self.syscalls[i].get() + syscalls);
        if !exact {
            self.inexact.set(self.inexact.get() + 1);
        }
    }
}

// SAFETY: every method forwards to `K` with the same arguments and returns its
// answer unchanged, so the mappings handed out are `K`'s and keep its
// guarantees (`K` lives inside this value, and moving the value does not move
// what `K` mapped, by `K`'s own contract).
unsafe impl<K: Kernel> Kernel for Counting<K> {
    fn open(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        self.count(Method::Open);
        self.inner.open(t, path)
    }
    fn close(&self, t: &Token, fd: Fd) {
        self.count(Method::Close);
        self.inner.close(t, fd)
    }
    fn emulation(&self, t: &Token) -> Option<Emulation> {
        self.inner.emulation(t) // no system call
    }
    fn ioctl(&self, t: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        self.count(Method::Ioctl);
        self.inner.ioctl(t, fd, request)
    }
    fn mmap(&self, t: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        self.count(Method::Mmap);
        self.inner.mmap(t, fd, offset, len, prot)
    }
    unsafe fn munmap(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        self.count(Method::Munmap);
        // SAFETY: forwarded from this function's contract (the mapping is `K`'s).
        unsafe { self.inner.munmap(t, addr, len) }
    }
    fn pread(&self, t: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.count(Method::Pread);
        self.inner.pread(t, fd, buf, offset)
    }
    fn pwrite(&self, t: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        self.count(Method::Pwrite);
        self.inner.pwrite(t, fd, buf, offset)
    }
    fn readlink<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        self.count(Method::Readlink);
        self.inner.readlink(t, path, buf)
    }
    fn eventfd(&self, t: &Token) -> Result<Fd, Errno> {
        self.count(Method::Eventfd);
        self.inner.eventfd(t)
    }
    fn read_counter(&self, t: &Token, fd: Fd, wait: bool) -> Result<u64, Errno> {
        self.count(Method::Read);
        self.inner.read_counter(t, fd, wait)
    }
    fn poll_readable(&self, t: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno> {
        self.count(Method::Poll);
        self.inner.poll_readable(t, fd, timeout)
    }
    fn map_anonymous(&self, t: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno> {
        self.count(Method::MapAnonymous);
        self.inner.map_anonymous(t, len, huge_pages)
    }
    fn lock(&self, t: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        self.count(Method::Mlock);
        self.inner.lock(t, addr, len)
    }
    fn write_file(&self, t: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno> {
        let result = self.inner.write_file(t, path, data);
        // open, one write, close (barring EINTR retries); a failure may have
        // come from the open (one call) or the write: at least one.
        let ok = result.is_ok();
        self.count_multi(Method::WriteFile, if ok { 3 } else { 1 }, ok);
        result
    }
    fn read_file<'b>(&self, t: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let full = buf.len();
        let sysfs = path.to_bytes().starts_with(b"/sys/");
        let result = self.inner.read_file(t, path, buf);
        match &result {
            // open, a read with the data, a read that returns 0, close: a
            // sysfs attribute comes whole in the first read when it fits.
            Ok(data) if sysfs && !data.is_empty() && data.len() < full => self.count_multi(Method::ReadFile, 4, true),
            // open, close, and a read for the data (if any) and one for the
            // end of file (unless the buffer filled): at least that many.
            Ok(data) => {
                let least = 2 + u64::from(!data.is_empty()) + u64::from(data.len() < full);
                self.count_multi(Method::ReadFile, least, false)
            }
            Err(_) => self.count_multi(Method::ReadFile, 1, false),
        }
        result
    }
    fn list_dir_while(&self, t: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        // open, the getdents64 calls, close.
        self.counted_listing(2, visit, |v| self.inner.list_dir_while(t, path, v))
    }
    fn open_dir(&self, t: &Token, path: &CStr) -> Result<Fd, Errno> {
        self.count(Method::Open);
        self.inner.open_dir(t, path)
    }
    fn list_open_dir_while(&self, t: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        // The getdents64 calls alone.
        self.counted_listing(0, visit, |v| self.inner.list_open_dir_while(t, dir, v))
    }
    fn exists_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<(), Errno> {
        self.count(Method::Readlink);
        self.inner.exists_at(t, dir, path)
    }
    fn open_dir_at(&self, t: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno> {
        self.count(Method::Open);
        self.inner.open_dir_at(t, dir, path)
    }
    fn memlock_limit(&self, t: &Token) -> Option<u64> {
        self.count(Method::Other);
        self.inner.memlock_limit(t)
    }
    fn node_owner(&self, t: &Token, path: &CStr) -> Result<NodeOwner, Errno> {
        self.count(Method::Other);
        self.inner.node_owner(t, path)
    }
    fn chown(&self, t: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        self.count(Method::Other);
        self.inner.chown(t, path, uid, gid)
    }
    fn read_file_at<'b>(&self, t: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        // open, at least one pread, close.
        self.count_multi(Method::Other, 3, false);
        self.inner.read_file_at(t, path, offset, buf)
    }
}
