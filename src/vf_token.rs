//! VF tokens: the UUID that vfio-pci shares between an SR-IOV PF's user and
//! the users of its VFs (Linux 5.7+, `vfio-pci.enable_sriov=1`).
//!
//! The PF's user sets it ([`Context::set_vf_token`](crate::Context::set_vf_token));
//! a VF is then opened with it ([`Context::setup_vf`](crate::Context::setup_vf)),
//! which the kernel checks. The token is its own argument, never spliced into
//! a device name by the caller.

use core::fmt;
use core::str::FromStr;

/// A VF token: a UUID, kept as its 16 bytes (in text order, as the kernel's
/// `uuid_t`), parsed from and printed as
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case).
///
/// ```
/// use dao_vfio::VfToken;
/// let t: VfToken = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3".parse().unwrap();
/// assert_eq!(t.to_string(), "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3");
/// assert!("bd8d9d2b5a5f4f5aa211f591514ba1f3".parse::<VfToken>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfToken([u8; 16]);

/// Length of a token's text form.
pub const VF_TOKEN_TEXT_LEN: usize = 36;

/// Why a token's text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfTokenError {
    /// Not 36 characters long.
    Length(usize),
    /// A character that is not a hex digit where one belongs, or not a `-`
    /// at offsets 8, 13, 18 and 23; the offset is given.
    BadCharacter(usize),
}

impl fmt::Display for VfTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VfTokenError::Length(n) => write!(
                f,
                "a VF token is a UUID of {VF_TOKEN_TEXT_LEN} characters (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), this one has {n}"
            ),
            VfTokenError::BadCharacter(at) => write!(
                f,
                "a VF token is a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits and dashes): character {at} is wrong"
            ),
        }
    }
}

impl core::error::Error for VfTokenError {}

const DASHES: [usize; 4] = [8, 13, 18, 23];

impl VfToken {
    /// The token with these 16 bytes (in text order).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        VfToken(bytes)
    }

    /// Its 16 bytes (in text order).
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the text form (either case).
    pub fn parse(text: &str) -> Result<Self, VfTokenError> {
        let b = text.as_bytes();
        if b.len() != VF_TOKEN_TEXT_LEN {
            return Err(VfTokenError::Length(b.len()));
        }
        let mut bytes = [0u8; 16];
        let mut nibble = 0;
        for (at, &c) in b.iter().enumerate() {
            if DASHES.contains(&at) {
                if c != b'-' {
                    return Err(VfTokenError::BadCharacter(at));
                }
                continue;
            }
            let v = (c as char).to_digit(16).ok_or(VfTokenError::BadCharacter(at))? as u8;
            bytes[nibble / 2] |= if nibble % 2 == 0 { v << 4 } else { v };
            nibble += 1;
        }
        Ok(VfToken(bytes))
    }

    /// The text form, NUL-free, in a fixed buffer (for messages and the
    /// kernel's `"NAME vf_token=UUID"`).
    pub fn text(&self) -> [u8; VF_TOKEN_TEXT_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; VF_TOKEN_TEXT_LEN];
        let mut at = 0;
        for byte in self.0 {
            while DASHES.contains(&at) {
                at += 1;
            }
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0xf)];
            at += 2;
        }
        out
    }
}

impl FromStr for VfToken {
    type Err = VfTokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VfToken::parse(s)
    }
}

impl fmt::Display for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        f.write_str(core::str::from_utf8(&text).unwrap_or("?"))
    }
}

impl fmt::Debug for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VfToken({self})")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_text_is_named() {
        let t = VfToken::parse("BD8D9D2B-5A5F-4F5A-A211-F591514BA1F3").unwrap();
        assert_eq!(t.as_bytes()[0], 0xbd);
        assert_eq!(t.as_bytes()[15], 0xf3);
        assert_eq!(t.to_string(), "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3");
        assert_eq!(VfToken::parse(""), Err(VfTokenError::Length(0)));
        assert_eq!(VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1fg"), Err(VfTokenError::BadCharacter(35)));
        assert_eq!(VfToken::parse("bd8d9d2b 5a5f-4f5a-a211-f591514ba1f3"), Err(VfTokenError::BadCharacter(8)));
        assert_eq!(VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f+"), Err(VfTokenError::BadCharacter(35)));
        let zero = VfToken::from_bytes([0; 16]);
        assert_eq!(zero.to_string(), "00000000-0000-0000-0000-000000000000");
    }
}
