//! The C interface's log line on stderr, without std: `dao_vfio: ` and the
//! message, formatted into a fixed buffer on the stack (no allocation) and
//! written to fd 2 with `write(2)` through rustix (no libc). A line that fits
//! the buffer, as every message of the crate does, is one system call, so
//! lines from two threads never interleave.

use core::fmt::{self, Write as _};

use rustix::fd::BorrowedFd;
use rustix::io::{self, Errno};

/// Bytes formatted before a write: more than the longest message.
const BUFFER: usize = 1024;

/// Writes `dao_vfio: {args}` and a newline to stderr. Errors (a closed or
/// full stderr) are dropped, as std's `eprintln` to a closed fd 2 does.
pub(super) fn line(args: fmt::Arguments<'_>) {
    let mut out = Line { buf: [0; BUFFER], len: 0 };
    let _ = out.write_str("dao_vfio: ");
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
    out.flush();
}

/// A buffer that goes to stderr when full, and when flushed.
struct Line {
    buf: [u8; BUFFER],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        let mut rest = &self.buf[..self.len];
        self.len = 0;
        while !rest.is_empty() {
            match io::write(stderr(), rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == BUFFER {
                self.flush();
            }
            let n = rest.len().min(BUFFER - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// The process's fd 2.
fn stderr() -> BorrowedFd<'static> {
    // SAFETY: fd 2 is borrowed only for one `write`, never closed or kept;
    // if the process has closed it, the write fails with EBADF (dropped), and
    // if it names another file the line goes there, as it would with std.
    unsafe { BorrowedFd::borrow_raw(2) }
}
