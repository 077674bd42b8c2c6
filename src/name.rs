//! Device names and buses, validated before anything touches the filesystem.

use core::fmt;

/// The longest device name accepted, in bytes: DAO's `char name[64]` less its
/// terminating NUL. Longer names are refused, never truncated.
pub const MAX_NAME_LEN: usize = 63;

/// The bus a device sits on, which decides its sysfs directory and VFIO driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bus {
    /// `/sys/bus/pci`, bound to `vfio-pci`; names like `0000:00:02.0`.
    Pci,
    /// `/sys/bus/platform`, bound to `vfio-platform`; names like `9010000.pl031`.
    Platform,
}

impl Bus {
    /// The sysfs bus directory name (`pci`, `platform`).
    pub const fn sysfs_name(self) -> &'static str {
        match self {
            Bus::Pci => "pci",
            Bus::Platform => "platform",
        }
    }

    /// The VFIO driver a device of this bus is bound to.
    pub const fn vfio_driver(self) -> &'static str {
        match self {
            Bus::Pci => "vfio-pci",
            Bus::Platform => "vfio-platform",
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sysfs_name())
    }
}

/// Why a device name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes (its length is given).
    TooLong(usize),
    /// The name contains `/`, which would leave the sysfs directory.
    Slash,
    /// The name contains a NUL byte.
    Nul,
    /// The name is `.` or `..`.
    Dot,
    /// The name contains a byte that is not printable ASCII (the byte is given).
    BadByte(u8),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("the device name is empty"),
            NameError::TooLong(len) => {
                write!(f, "the device name is {len} bytes long; at most {MAX_NAME_LEN} are accepted")
            }
            NameError::Slash => f.write_str("the device name contains '/': give the name only, not a path"),
            NameError::Nul => f.write_str("the device name contains a NUL byte"),
            NameError::Dot => f.write_str("'.' and '..' are not device names"),
            NameError::BadByte(b) => {
                write!(f, "the device name contains byte 0x{b:02x}, which is not printable ASCII")
            }
        }
    }
}

impl core::error::Error for NameError {}

/// Checks a name that becomes one sysfs path component (a device or driver
/// name): 1 to `max` bytes of printable ASCII without `/`, not `.` or `..`.
pub(crate) fn check_component(raw: &[u8], max: usize) -> Result<(), NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > max {
        return Err(NameError::TooLong(raw.len()));
    }
    if raw == b"." || raw == b".." {
        return Err(NameError::Dot);
    }
    for &b in raw {
        match b {
            b'/' => return Err(NameError::Slash),
            0 => return Err(NameError::Nul),
            b'!'..=b'~' => {}
            other => return Err(NameError::BadByte(other)),
        }
    }
    Ok(())
}

/// A validated device name, stored inline (`Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl DeviceName {
    /// No name: what a cleared C struct holds (never a valid device name).
    #[cfg(feature = "capi")]
    pub(crate) const EMPTY: DeviceName = DeviceName { len: 0, bytes: [0; MAX_NAME_LEN] };

    /// Validates `name`: 1 to [`MAX_NAME_LEN`] bytes of printable ASCII
    /// without `/`, and not `.` or `..`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let raw = name.as_bytes();
        check_component(raw, MAX_NAME_LEN)?;
        let mut bytes = [0; MAX_NAME_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(DeviceName { len: raw.len() as u8, bytes })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII was ever stored, so this cannot fail.
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The name's bytes (printable ASCII), without the UTF-8 check of
    /// [`DeviceName::as_str`].
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Guesses the bus from the name's shape: `DDDD:BB:DD.F` is PCI.
    /// Setup does not rely on this; it asks sysfs.
    pub fn looks_like_pci(&self) -> bool {
        let b = self.as_str().as_bytes();
        let hex = |r: &[u8]| r.iter().all(u8::is_ascii_hexdigit);
        b.len() == 12
            && b[4] == b':'
            && b[7] == b':'
            && b[10] == b'.'
            && hex(&b[..4])
            && hex(&b[5..7])
            && hex(&b[8..10])
            && hex(&b[11..])
    }
}

impl fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_pci_and_platform_names() {
        assert_eq!(DeviceName::new("0000:00:02.0").unwrap().as_str(), "0000:00:02.0");
        assert!(DeviceName::new("0000:00:02.0").unwrap().looks_like_pci());
        assert!(!DeviceName::new("9010000.pl031").unwrap().looks_like_pci());
        let longest = "a".repeat(MAX_NAME_LEN);
        assert_eq!(DeviceName::new(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(DeviceName::new(""), Err(NameError::Empty));
        assert_eq!(DeviceName::new(&"a".repeat(64)), Err(NameError::TooLong(64)));
        assert_eq!(DeviceName::new("../../etc"), Err(NameError::Slash));
        assert_eq!(DeviceName::new("a\0b"), Err(NameError::Nul));
        assert_eq!(DeviceName::new("."), Err(NameError::Dot));
        assert_eq!(DeviceName::new(".."), Err(NameError::Dot));
        assert_eq!(DeviceName::new("a b"), Err(NameError::BadByte(b' ')));
        assert_eq!(DeviceName::new("a\nb"), Err(NameError::BadByte(b'\n')));
        assert_eq!(DeviceName::new("é"), Err(NameError::BadByte(0xc3)));
    }
}
