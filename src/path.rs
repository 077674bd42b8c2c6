//! NUL-terminated paths built on the stack, so no syscall path allocates.

use core::ffi::CStr;
use core::fmt::{self, Write};

/// Room for the longest path the crate builds:
/// `/sys/bus/platform/drivers/` + a 255-byte driver name + `/bind` + NUL.
const CAPACITY: usize = 320;

/// A path being built in a fixed buffer.
pub(crate) struct PathBuf {
    len: usize,
    bytes: [u8; CAPACITY],
}

impl PathBuf {
    /// Formats a path. Callers only format validated names and numbers, whose
    /// total length fits `CAPACITY` by construction; an overflow is reported
    /// as `None` all the same.
    pub(crate) fn format(args: fmt::Arguments<'_>) -> Option<Self> {
        let mut path = PathBuf { len: 0, bytes: [0; CAPACITY] };
        path.write_fmt(args).ok()?;
        if path.len >= CAPACITY {
            return None;
        }
        path.bytes[path.len] = 0;
        Some(path)
    }

    /// The path, NUL-terminated.
    pub(crate) fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).unwrap_or(c"")
    }
}

impl Write for PathBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        // Keep one byte for the terminating NUL; refuse interior NULs.
        if end >= CAPACITY || s.as_bytes().contains(&0) {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Builds a [`PathBuf`] with `format_args!` syntax.
macro_rules! sys_path {
    ($($arg:tt)*) => {
        $crate::path::PathBuf::format(format_args!($($arg)*))
    };
}
pub(crate) use sys_path;

#[cfg(test)]
mod tests {
    #[test]
    fn builds_nul_terminated_paths() {
        let p = sys_path!("/dev/vfio/{}", 12).unwrap();
        assert_eq!(p.as_c_str().to_bytes(), b"/dev/vfio/12");
    }

    #[test]
    fn refuses_overflow_and_nul() {
        let long = "x".repeat(super::CAPACITY);
        assert!(sys_path!("/sys/{long}").is_none());
        assert!(sys_path!("/sys/{}", "a\0b").is_none());
        let exact = "y".repeat(super::CAPACITY - 1);
        assert_eq!(sys_path!("{exact}").unwrap().as_c_str().to_bytes().len(), super::CAPACITY - 1);
    }
}
