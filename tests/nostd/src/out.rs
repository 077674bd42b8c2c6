//! Output without std: each line formatted into a buffer on the stack and
//! written with `write(2)` (rustix, no libc), so a line is one system call.

use core::fmt::{self, Write as _};

use rustix::fd::BorrowedFd;
use rustix::io::{self, Errno};

/// fd 1.
pub const STDOUT: i32 = 1;
/// fd 2.
pub const STDERR: i32 = 2;

/// Bytes formatted before a write: more than the longest line printed.
const BUFFER: usize = 1024;

/// Writes `args` and a newline to `fd` (1 or 2); write errors are dropped.
pub fn line(fd: i32, args: fmt::Arguments<'_>) {
    let mut out = Line { fd, buf: [0; BUFFER], len: 0 };
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
    out.flush();
}

/// A buffer written to its fd when full, and when flushed.
struct Line {
    fd: i32,
    buf: [u8; BUFFER],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        // SAFETY: fd 1 or 2, open for the whole run (the board's init gives
        // the program the console), borrowed for these writes only.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let mut rest = &self.buf[..self.len];
        self.len = 0;
        while !rest.is_empty() {
            match io::write(fd, rest) {
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

/// Prints a line on stdout, like `println!`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line($crate::out::STDOUT, format_args!($($arg)*))
    };
}
pub(crate) use say;
