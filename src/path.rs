//! NUL-terminated paths built on the stack, so no syscall path allocates.
//!
//! A path is put together from parts (text, names, numbers) byte by byte,
//! not through `core::fmt`: setup builds a few paths per device, and the
//! formatting machinery cost more instructions than the rest of setup's own
//! code between its system calls (callgrind, against the fake kernel). Only
//! rare paths ([`Shown`]: a VF token, a device node's name for `grant`)
//! still format.

use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::name::DeviceName;

/// Room for the longest path the crate builds:
/// `/sys/bus/platform/drivers/` + a 255-byte driver name + `/bind` + NUL.
const CAPACITY: usize = 320;

/// A path being built in a fixed buffer.
pub(crate) struct PathBuf {
    len: usize,
    /// A part did not fit ([`PathBuf::as_c_str`] then refuses the path).
    overflowed: bool,
    bytes: [u8; CAPACITY],
}

impl PathBuf {
    /// An empty path, to append parts to.
    pub(crate) const fn new() -> Self {
        PathBuf { len: 0, overflowed: false, bytes: [0; CAPACITY] }
    }

    /// Appends `bytes`, or marks the path as overflowed if they do not fit
    /// beside the terminating NUL.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) if end < CAPACITY => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            _ => self.overflowed = true,
        }
    }

    /// The path, NUL-terminated; `None` if a part did not fit or it holds
    /// a NUL. Callers only join validated names and numbers, whose total
    /// length fits `CAPACITY` by construction; they report `None` all the
    /// same. (The byte after the path is always NUL: the buffer starts
    /// zeroed, parts are only appended, and `push_bytes` keeps the last
    /// byte free.)
    pub(crate) fn as_c_str(&self) -> Option<&CStr> {
        if self.overflowed {
            return None;
        }
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).ok()
    }
}

/// Something a path is built from.
pub(crate) trait PathPart {
    /// Appends the part's bytes to `path`.
    fn append_to(&self, path: &mut PathBuf);
}

impl<T: PathPart + ?Sized> PathPart for &T {
    fn append_to(&self, path: &mut PathBuf) {
        (**self).append_to(path);
    }
}

impl PathPart for str {
    fn append_to(&self, path: &mut PathBuf) {
        path.push_bytes(self.as_bytes());
    }
}

impl PathPart for DeviceName {
    fn append_to(&self, path: &mut PathBuf) {
        path.push_bytes(self.as_bytes());
    }
}

impl PathPart for u32 {
    /// In decimal.
    fn append_to(&self, path: &mut PathBuf) {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut rest = *self;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        path.push_bytes(&digits[at..]);
    }
}

/// A part written with its `Display` form (for the rare paths built from
/// such values, where the cost of formatting does not matter).
pub(crate) struct Shown<T>(pub(crate) T);

impl<T: fmt::Display> PathPart for Shown<T> {
    fn append_to(&self, path: &mut PathBuf) {
        let _ = write!(path, "{}", self.0);
    }
}

impl Write for PathBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes());
        if self.overflowed {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Builds a [`PathBuf`] from parts, in order: `sys_path!("/dev/vfio/", group)`.
/// It is built where it is kept (no `Option` around it to move it into);
/// [`PathBuf::as_c_str`] tells whether it fitted.
macro_rules! sys_path {
    ($($part:expr),+ $(,)?) => {{
        let mut path = $crate::path::PathBuf::new();
        $( $crate::path::PathPart::append_to(&$part, &mut path); )+
        path
    }};
}
pub(crate) use sys_path;

#[cfg(test)]
mod tests {
    use super::Shown;

    #[test]
    fn builds_nul_terminated_paths() {
        let p = sys_path!("/dev/vfio/", 12u32);
        assert_eq!(p.as_c_str().unwrap().to_bytes(), b"/dev/vfio/12");
        let name = crate::name::DeviceName::new("0000:00:02.0").unwrap();
        let p = sys_path!("/sys/bus/pci/devices/", name, "/iommu_group");
        assert_eq!(p.as_c_str().unwrap().to_bytes(), b"/sys/bus/pci/devices/0000:00:02.0/iommu_group");
        let p = sys_path!(Shown(format_args!("{}-{}", 1, "x")), "/", 0u32, "/", u32::MAX);
        assert_eq!(p.as_c_str().unwrap().to_bytes(), b"1-x/0/4294967295");
    }

    #[test]
    fn refuses_overflow_and_nul() {
        let long = "x".repeat(super::CAPACITY);
        assert!(sys_path!("/sys/", long.as_str()).as_c_str().is_none());
        assert!(sys_path!("/sys/", "a\0b").as_c_str().is_none());
        assert!(sys_path!(Shown(long.as_str())).as_c_str().is_none());
        let exact = "y".repeat(super::CAPACITY - 1);
        assert_eq!(sys_path!(exact.as_str()).as_c_str().unwrap().to_bytes().len(), super::CAPACITY - 1);
        assert!(sys_path!(exact.as_str(), "z").as_c_str().is_none());
    }
}
