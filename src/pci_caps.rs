//! Parses the PCI capability lists of a device from an image of its
//! configuration space (as read through the vfio-pci config region).
//!
//! The standard list hangs off the pointer at 0x34 in the first 256 bytes; the
//! PCIe extended list starts at 0x100. The image comes from hardware (or a
//! misbehaving device model), so every pointer is checked before it is
//! followed and a revisited entry is refused: the walk always ends.

use core::fmt;

/// The most capabilities [`parse_capabilities`] returns (standard and extended
/// together); real devices have a dozen or two.
pub const MAX_CAPABILITIES: usize = 64;

/// The capabilities of a device, in list order: standard ones first.
pub type Capabilities = heapless::Vec<Capability, MAX_CAPABILITIES>;

/// The Status register.
const STATUS: usize = 0x06;
/// Status bit: the device has a standard capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// The Capabilities Pointer register.
const CAP_POINTER: u16 = 0x34;
/// Standard capabilities live after the 64-byte header.
const STD_START: u16 = 0x40;
/// Extended capabilities live after the 256 bytes of conventional config space.
const EXT_START: u16 = 0x100;

/// Standard capability ids (the byte at the capability's offset).
pub mod cap_id {
    /// Power Management.
    pub const PM: u16 = 0x01;
    /// Message Signalled Interrupts.
    pub const MSI: u16 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u16 = 0x09;
    /// PCI Express.
    pub const PCIE: u16 = 0x10;
    /// MSI-X.
    pub const MSIX: u16 = 0x11;
}

/// Extended capability ids (bits 0..16 of the capability header).
pub mod ext_cap_id {
    /// Advanced Error Reporting.
    pub const AER: u16 = 0x0001;
    /// Access Control Services.
    pub const ACS: u16 = 0x000d;
    /// Single Root I/O Virtualization.
    pub const SRIOV: u16 = 0x0010;
}

/// One capability found in configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The capability id: see [`cap_id`], or [`ext_cap_id`] when `extended`.
    pub id: u16,
    /// Where the capability starts in configuration space.
    pub offset: u16,
    /// Whether it is a PCIe extended capability (at 0x100 or above).
    pub extended: bool,
}

/// Why a capability list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapListError {
    /// A list pointer points into the area the list may not use: below 0x40
    /// for the standard list, below 0x100 for the extended one.
    PointerTooLow {
        /// The pointer's value.
        pointer: u16,
        /// Whether it is in the extended list.
        extended: bool,
    },
    /// A pointer leads back to an entry already visited.
    Loop {
        /// The entry visited twice.
        offset: u16,
        /// Whether it is in the extended list.
        extended: bool,
    },
    /// An entry (or the standard list's pointer at 0x34) does not fit in the
    /// configuration space image.
    PastEnd {
        /// Where the entry starts.
        offset: u16,
        /// Length of the image, in bytes.
        len: usize,
        /// Whether it is in the extended list.
        extended: bool,
    },
    /// The lists hold more than [`MAX_CAPABILITIES`] entries.
    TooMany,
}

impl core::error::Error for CapListError {}

impl fmt::Display for CapListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |extended: bool| if extended { "extended capability" } else { "capability" };
        match *self {
            CapListError::PointerTooLow { pointer, extended } => {
                let min = if extended { EXT_START } else { STD_START };
                write!(f, "{} pointer {pointer:#x} is below {min:#x}", kind(extended))
            }
            CapListError::Loop { offset, extended } => write!(f, "{} list loops at {offset:#x}", kind(extended)),
            CapListError::PastEnd { offset, len, extended } => {
                write!(f, "{} at {offset:#x} runs past the end of config space ({len} bytes)", kind(extended))
            }
            CapListError::TooMany => write!(f, "more than {MAX_CAPABILITIES} capabilities"),
        }
    }
}

/// Lists the capabilities in `config`, the device's configuration space as
/// read (256 bytes for conventional PCI, up to 4096 for PCIe). A shorter
/// image is parsed as far as it goes: without the Status register there is
/// no list, and an entry that does not fit is an error.
///
/// The standard list is read only if the Status register says there is one;
/// the extended list only if `config` is longer than 256 bytes and the header
/// at 0x100 is neither 0 nor all ones.
pub fn parse_capabilities(config: &[u8]) -> Result<Capabilities, CapListError> {
    let mut caps = Capabilities::new();
    let mut seen = Visited::default();
    standard_list(config, &mut caps, &mut seen)?;
    extended_list(config, &mut caps, &mut seen)?;
    Ok(caps)
}

/// The first capability in `caps` with `id`, standard or extended as asked.
pub fn find(caps: &[Capability], id: u16, extended: bool) -> Option<Capability> {
    caps.iter().copied().find(|c| c.id == id && c.extended == extended)
}

/// Appends the standard list, if the Status register says there is one.
fn standard_list(config: &[u8], caps: &mut Capabilities, seen: &mut Visited) -> Result<(), CapListError> {
    let len = config.len();
    let Some(status) = read_u16(config, STATUS) else {
        return Ok(());
    };
    if status & STATUS_CAP_LIST == 0 {
        return Ok(());
    }
    let first = config.get(usize::from(CAP_POINTER)).ok_or(CapListError::PastEnd {
        offset: CAP_POINTER,
        len,
        extended: false,
    })?;
    // The low two bits of every pointer are reserved.
    let mut pointer = u16::from(first & 0xfc);
    while pointer != 0 {
        if pointer < STD_START {
            return Err(CapListError::PointerTooLow { pointer, extended: false });
        }
        if !seen.insert(pointer) {
            return Err(CapListError::Loop { offset: pointer, extended: false });
        }
        let at = usize::from(pointer);
        let (Some(&id), Some(&next)) = (config.get(at), config.get(at.saturating_add(1))) else {
            return Err(CapListError::PastEnd { offset: pointer, len, extended: false });
        };
        push(caps, Capability { id: u16::from(id), offset: pointer, extended: false })?;
        pointer = u16::from(next & 0xfc);
    }
    Ok(())
}

/// Appends the PCIe extended list, if the image reaches past 0x100 and has one.
fn extended_list(config: &[u8], caps: &mut Capabilities, seen: &mut Visited) -> Result<(), CapListError> {
    let len = config.len();
    if len <= usize::from(EXT_START) {
        return Ok(());
    }
    let mut pointer = EXT_START;
    seen.insert(pointer);
    loop {
        let header = read_u32(config, usize::from(pointer)).ok_or(CapListError::PastEnd {
            offset: pointer,
            len,
            extended: true,
        })?;
        // At 0x100, 0 means no extended capabilities and all ones that the
        // extended space is not there (a conventional device, or a failed read).
        if pointer == EXT_START && (header == 0 || header == u32::MAX) {
            return Ok(());
        }
        // Bits 0..16: id; 16..20: version; 20..32: next, low two bits reserved.
        push(caps, Capability { id: (header & 0xffff) as u16, offset: pointer, extended: true })?;
        let next = ((header >> 20) & 0xffc) as u16;
        if next == 0 {
            return Ok(());
        }
        if next < EXT_START {
            return Err(CapListError::PointerTooLow { pointer: next, extended: true });
        }
        if !seen.insert(next) {
            return Err(CapListError::Loop { offset: next, extended: true });
        }
        pointer = next;
    }
}

/// The entries visited so far, one bit per 4-byte slot of the 4 KiB config
/// space. Pointers are masked to 4-byte slots below 0x1000, and the two lists
/// live in disjoint areas, so one set serves both.
#[derive(Default)]
struct Visited([u64; 16]);

impl Visited {
    /// Marks `offset` visited; false if it already was.
    fn insert(&mut self, offset: u16) -> bool {
        let slot = offset / 4;
        let Some(word) = self.0.get_mut(usize::from(slot / 64)) else {
            // Out of config space; the caller's bounds check refuses it.
            return true;
        };
        let bit = 1u64 << (slot % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// Appends `cap`, or fails once [`MAX_CAPABILITIES`] are held.
fn push(caps: &mut Capabilities, cap: Capability) -> Result<(), CapListError> {
    caps.push(cap).map_err(|_| CapListError::TooMany)
}

/// The little-endian `u16` at `at`, if the image holds it.
fn read_u16(config: &[u8], at: usize) -> Option<u16> {
    let bytes = config.get(at..)?.first_chunk::<2>()?;
    Some(u16::from_le_bytes(*bytes))
}

/// The little-endian `u32` at `at`, if the image holds it.
fn read_u32(config: &[u8], at: usize) -> Option<u32> {
    let bytes = config.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_le_bytes(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn std_cap(id: u16, offset: u16) -> Capability {
        Capability { id, offset, extended: false }
    }

    fn ext_cap(id: u16, offset: u16) -> Capability {
        Capability { id, offset, extended: true }
    }

    /// A config image of `len` bytes with the Status capability bit set and
    /// the standard list at 0x34 pointing at `first`.
    fn image(len: usize, first: u8) -> Vec<u8> {
        let mut config = vec![0; len];
        config[STATUS] = STATUS_CAP_LIST as u8;
        config[usize::from(CAP_POINTER)] = first;
        config
    }

    fn put_std(config: &mut [u8], at: usize, id: u8, next: u8) {
        config[at] = id;
        config[at + 1] = next;
    }

    fn put_ext(config: &mut [u8], at: usize, id: u16, version: u32, next: u16) {
        let header = u32::from(id) | (version & 0xf) << 16 | u32::from(next) << 20;
        config[at..at + 4].copy_from_slice(&header.to_le_bytes());
    }

    #[test]
    fn parses_a_standard_list() {
        let mut config = image(256, 0x40);
        put_std(&mut config, 0x40, 0x01, 0x50);
        put_std(&mut config, 0x50, 0x05, 0x70);
        put_std(&mut config, 0x70, 0x10, 0x00);
        let caps = parse_capabilities(&config).unwrap();
        assert_eq!(caps, [std_cap(cap_id::PM, 0x40), std_cap(cap_id::MSI, 0x50), std_cap(cap_id::PCIE, 0x70)]);
        assert_eq!(find(&caps, cap_id::MSI, false), Some(std_cap(cap_id::MSI, 0x50)));
        assert_eq!(find(&caps, cap_id::MSI, true), None);
        assert_eq!(find(&caps, cap_id::MSIX, false), None);
    }

    #[test]
    fn masks_reserved_pointer_bits() {
        let mut config = image(256, 0x43);
        put_std(&mut config, 0x40, 0x11, 0xff);
        put_std(&mut config, 0xfc, 0x09, 0x02);
        let caps = parse_capabilities(&config).unwrap();
        assert_eq!(caps, [std_cap(cap_id::MSIX, 0x40), std_cap(cap_id::VENDOR, 0xfc)]);
    }

    #[test]
    fn no_list_without_the_status_bit() {
        let mut config = image(256, 0x40);
        put_std(&mut config, 0x40, 0x01, 0);
        config[STATUS] = 0;
        assert!(parse_capabilities(&config).unwrap().is_empty());
        // A null first pointer is an empty list even with the bit set.
        assert!(parse_capabilities(&image(256, 0)).unwrap().is_empty());
    }

    #[test]
    fn short_images() {
        assert!(parse_capabilities(&[]).unwrap().is_empty());
        assert!(parse_capabilities(&[0xff; 7]).unwrap().is_empty());
        let config = image(256, 0);
        assert_eq!(
            parse_capabilities(&config[..0x34]),
            Err(CapListError::PastEnd { offset: 0x34, len: 0x34, extended: false })
        );
        // A list that ends before the end of a short image is fine.
        let mut config = image(0x48, 0x40);
        put_std(&mut config, 0x40, 0x01, 0);
        assert_eq!(parse_capabilities(&config).unwrap(), [std_cap(1, 0x40)]);
        // The entry's next byte is missing.
        assert_eq!(
            parse_capabilities(&config[..0x41]),
            Err(CapListError::PastEnd { offset: 0x40, len: 0x41, extended: false })
        );
        put_std(&mut config, 0x40, 0x01, 0x80);
        assert_eq!(
            parse_capabilities(&config),
            Err(CapListError::PastEnd { offset: 0x80, len: 0x48, extended: false })
        );
    }

    #[test]
    fn refuses_pointers_into_the_header() {
        assert_eq!(
            parse_capabilities(&image(256, 0x12)),
            Err(CapListError::PointerTooLow { pointer: 0x10, extended: false })
        );
        let mut config = image(256, 0x40);
        put_std(&mut config, 0x40, 0x01, 0x3c);
        assert_eq!(parse_capabilities(&config), Err(CapListError::PointerTooLow { pointer: 0x3c, extended: false }));
    }

    #[test]
    fn refuses_standard_loops() {
        let mut config = image(256, 0x40);
        put_std(&mut config, 0x40, 0x01, 0x40);
        assert_eq!(parse_capabilities(&config), Err(CapListError::Loop { offset: 0x40, extended: false }));
        put_std(&mut config, 0x40, 0x01, 0x50);
        put_std(&mut config, 0x50, 0x05, 0x60);
        put_std(&mut config, 0x60, 0x05, 0x51);
        assert_eq!(parse_capabilities(&config), Err(CapListError::Loop { offset: 0x50, extended: false }));
    }

    #[test]
    fn parses_an_extended_list() {
        let mut config = image(4096, 0x40);
        put_std(&mut config, 0x40, 0x10, 0);
        put_ext(&mut config, 0x100, ext_cap_id::AER, 2, 0x148);
        put_ext(&mut config, 0x148, ext_cap_id::ACS, 1, 0xffc);
        put_ext(&mut config, 0xffc, ext_cap_id::SRIOV, 1, 0);
        let caps = parse_capabilities(&config).unwrap();
        assert_eq!(
            caps,
            [
                std_cap(cap_id::PCIE, 0x40),
                ext_cap(ext_cap_id::AER, 0x100),
                ext_cap(ext_cap_id::ACS, 0x148),
                ext_cap(ext_cap_id::SRIOV, 0xffc),
            ]
        );
        assert_eq!(find(&caps, ext_cap_id::SRIOV, true), Some(ext_cap(ext_cap_id::SRIOV, 0xffc)));
        assert_eq!(find(&caps, ext_cap_id::AER, false), None);
        // Reserved low bits of the next field are ignored.
        put_ext(&mut config, 0x100, ext_cap_id::AER, 2, 0x14b);
        assert_eq!(parse_capabilities(&config).unwrap(), caps);
        // Extended caps without a standard list.
        config[STATUS] = 0;
        assert_eq!(parse_capabilities(&config).unwrap()[..], caps[1..]);
    }

    #[test]
    fn no_extended_list() {
        let mut config = image(4096, 0);
        assert!(parse_capabilities(&config).unwrap().is_empty());
        config[0x100..0x104].fill(0xff);
        assert!(parse_capabilities(&config).unwrap().is_empty());
        // Exactly 256 bytes: the extended area is not looked at.
        config[0x100..0x104].fill(0x11);
        assert!(parse_capabilities(&config[..256]).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_extended_lists() {
        let mut config = image(0x200, 0);
        put_ext(&mut config, 0x100, 1, 1, 0x80);
        assert_eq!(parse_capabilities(&config), Err(CapListError::PointerTooLow { pointer: 0x80, extended: true }));
        put_ext(&mut config, 0x100, 1, 1, 0x100);
        assert_eq!(parse_capabilities(&config), Err(CapListError::Loop { offset: 0x100, extended: true }));
        put_ext(&mut config, 0x100, 1, 1, 0x140);
        put_ext(&mut config, 0x140, 2, 1, 0x100);
        assert_eq!(parse_capabilities(&config), Err(CapListError::Loop { offset: 0x100, extended: true }));
        put_ext(&mut config, 0x140, 2, 1, 0x1fe);
        assert_eq!(parse_capabilities(&config).unwrap().last(), Some(&ext_cap(0, 0x1fc)));
        assert_eq!(
            parse_capabilities(&config[..0x1fe]),
            Err(CapListError::PastEnd { offset: 0x1fc, len: 0x1fe, extended: true })
        );
        put_ext(&mut config, 0x140, 2, 1, 0x400);
        assert_eq!(
            parse_capabilities(&config),
            Err(CapListError::PastEnd { offset: 0x400, len: 0x200, extended: true })
        );
        // A header at 0x100 cut short.
        assert_eq!(
            parse_capabilities(&config[..0x102]),
            Err(CapListError::PastEnd { offset: 0x100, len: 0x102, extended: true })
        );
    }

    #[test]
    fn refuses_more_than_64() {
        // 48 standard (every slot) plus 16 extended is exactly 64.
        let mut config = image(4096, 0x40);
        for at in (0x40..0x100).step_by(4) {
            put_std(&mut config, at, 0x09, if at == 0xfc { 0 } else { at as u8 + 4 });
        }
        for i in 0..16 {
            let at = 0x100 + 4 * i;
            put_ext(&mut config, at, 0x0b, 1, if i == 15 { 0 } else { at as u16 + 4 });
        }
        assert_eq!(parse_capabilities(&config).unwrap().len(), MAX_CAPABILITIES);
        put_ext(&mut config, 0x100 + 4 * 15, 0x0b, 1, 0x200);
        put_ext(&mut config, 0x200, 0x0b, 1, 0);
        assert_eq!(parse_capabilities(&config), Err(CapListError::TooMany));
        // 65 extended alone.
        config[STATUS] = 0;
        for i in 0..65 {
            let at = 0x100 + 8 * i;
            put_ext(&mut config, at, 0x0b, 1, if i == 64 { 0 } else { at as u16 + 8 });
        }
        assert_eq!(parse_capabilities(&config), Err(CapListError::TooMany));
    }

    #[test]
    fn error_messages() {
        let text = |e: CapListError| std::format!("{e}");
        assert_eq!(
            text(CapListError::PointerTooLow { pointer: 0x12, extended: false }),
            "capability pointer 0x12 is below 0x40"
        );
        assert_eq!(
            text(CapListError::PointerTooLow { pointer: 0x80, extended: true }),
            "extended capability pointer 0x80 is below 0x100"
        );
        assert_eq!(text(CapListError::Loop { offset: 0x50, extended: false }), "capability list loops at 0x50");
        assert_eq!(
            text(CapListError::PastEnd { offset: 0x1fe, len: 256, extended: false }),
            "capability at 0x1fe runs past the end of config space (256 bytes)"
        );
        assert_eq!(text(CapListError::TooMany), "more than 64 capabilities");
    }

    // Property tests with a fixed-seed PRNG: deterministic, no extra dependency.

    const ITERATIONS: usize = if cfg!(miri) { 50 } else { 2000 };
    /// Building a model takes hundreds of PRNG steps, about 100 µs each under Miri.
    const MODEL_ITERATIONS: usize = if cfg!(miri) { 20 } else { 2000 };

    use crate::test_rng::XorShift;

    /// Checks every invariant of a parse result.
    fn check(config: &[u8], result: &Result<Capabilities, CapListError>) {
        let Ok(caps) = result else { return };
        assert!(caps.len() <= MAX_CAPABILITIES);
        let mut listed = [false; 0x1000];
        let mut in_extended = false;
        for c in caps {
            let at = usize::from(c.offset);
            assert_eq!(c.offset % 4, 0);
            assert!(!core::mem::replace(&mut listed[at], true), "offset {at:#x} listed twice");
            if c.extended {
                assert!(c.offset >= EXT_START && at + 4 <= config.len());
                assert_eq!(u32::from(c.id), read_u32(config, at).unwrap() & 0xffff);
                in_extended = true;
            } else {
                assert!(c.offset >= STD_START && c.offset < EXT_START && at + 2 <= config.len());
                assert_eq!(c.id, u16::from(config[at]));
                assert!(!in_extended, "standard entries come first");
            }
        }
    }

    /// A random valid image and the capabilities it holds, in list order.
    fn valid_image(rng: &mut XorShift) -> (Vec<u8>, Vec<Capability>) {
        let len = match rng.below(4) {
            0 => 256,
            1 => 4096,
            // A short PCIe image: the extended list must fit in it.
            _ => 0x100 + 4 * (1 + rng.below(0x3c0)),
        };
        // Random noise everywhere the lists do not use.
        let mut config = rng.bytes(len);
        let mut model = Vec::new();

        let mut slots: Vec<u16> = (STD_START..EXT_START).step_by(4).collect();
        rng.shuffle(&mut slots);
        let n_std = if rng.below(4) == 0 { 0 } else { rng.below(slots.len() + 1) };
        if n_std == 0 && rng.below(2) == 0 {
            config[STATUS] &= !(STATUS_CAP_LIST as u8);
        } else {
            config[STATUS] |= STATUS_CAP_LIST as u8;
            // The reserved low bits are noise; the pointer is what the mask leaves.
            let first = slots.first().filter(|_| n_std > 0).map_or(0, |&s| s as u8);
            config[usize::from(CAP_POINTER)] = first | (rng.next() as u8 & 3);
            for (k, &at) in slots[..n_std].iter().enumerate() {
                let next = if k + 1 == n_std { 0 } else { slots[k + 1] as u8 };
                config[usize::from(at) + 1] = next | (rng.next() as u8 & 3);
                model.push(std_cap(u16::from(config[usize::from(at)]), at));
            }
        }

        if len > 256 {
            let slots = (len - 0x104) / 4;
            let room = MAX_CAPABILITIES - model.len();
            let n_ext = if rng.below(4) == 0 { 0 } else { 1 + rng.below(room.min(slots + 1)) };
            if n_ext == 0 {
                let none = if rng.below(2) == 0 { 0 } else { u32::MAX };
                config[0x100..0x104].copy_from_slice(&none.to_le_bytes());
            }
            // The list starts at 0x100, then distinct random slots above it.
            let mut order = vec![EXT_START];
            while order.len() < n_ext {
                let at = 0x104 + 4 * rng.below(slots) as u16;
                if !order.contains(&at) {
                    order.push(at);
                }
            }
            order.truncate(n_ext);
            for (k, &at) in order.iter().enumerate() {
                let next = order.get(k + 1).copied().unwrap_or(0);
                // Never 0 nor all ones at 0x100: those mean "no list".
                let id = 1 + rng.below(0xfffe) as u16;
                let header =
                    u32::from(id) | (rng.next() as u32 & 0xf) << 16 | u32::from(next | (rng.next() as u16 & 3)) << 20;
                config[usize::from(at)..usize::from(at) + 4].copy_from_slice(&header.to_le_bytes());
                model.push(ext_cap(id, at));
            }
        }
        (config, model)
    }

    #[test]
    fn random_images_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        // How often each outcome was seen: no caps, some caps, each error.
        let mut seen = [0usize; 6];
        for _ in 0..ITERATIONS {
            let len = match rng.below(4) {
                0 => rng.below(0x120),
                1 => 256,
                2 => 4096,
                _ => rng.below(4097),
            };
            let mut config = rng.bytes(len);
            if rng.below(2) == 0 {
                if let Some(s) = config.get_mut(STATUS) {
                    *s |= STATUS_CAP_LIST as u8;
                }
            }
            let result = parse_capabilities(&config);
            check(&config, &result);
            let outcome = match result {
                Ok(caps) if caps.is_empty() => 0,
                Ok(_) => 1,
                Err(CapListError::PointerTooLow { .. }) => 2,
                Err(CapListError::Loop { .. }) => 3,
                Err(CapListError::PastEnd { .. }) => 4,
                Err(CapListError::TooMany) => 5,
            };
            seen[outcome] += 1;
        }
        if !cfg!(miri) {
            assert!(seen[..5].iter().all(|&n| n > 0), "outcomes not all reached: {seen:?}");
        }
    }

    #[test]
    fn valid_images_parse_back_to_the_model() {
        let mut rng = XorShift(0x0bad_cafe_f00d_1234);
        for _ in 0..MODEL_ITERATIONS {
            let (config, model) = valid_image(&mut rng);
            let result = parse_capabilities(&config);
            check(&config, &result);
            assert_eq!(result.unwrap()[..], model[..]);
        }
    }

    #[test]
    fn mutated_images_never_panic_and_loops_are_caught() {
        let mut rng = XorShift(0x1357_9bdf_2468_ace0);
        for _ in 0..MODEL_ITERATIONS {
            let (mut config, model) = valid_image(&mut rng);
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(config.len());
                        config[i] = rng.next() as u8;
                    }
                    let result = parse_capabilities(&config);
                    check(&config, &result);
                }
                1 => {
                    config.truncate(rng.below(config.len() + 1));
                    let result = parse_capabilities(&config);
                    check(&config, &result);
                }
                // Point one entry's link back at itself or an earlier entry of its list.
                _ => {
                    if model.is_empty() {
                        continue;
                    }
                    let k = rng.below(model.len());
                    let extended = model[k].extended;
                    let first = model.iter().position(|c| c.extended == extended).unwrap();
                    let target = model[first + rng.below(k - first + 1)].offset;
                    let at = usize::from(model[k].offset);
                    if extended {
                        let header = read_u32(&config, at).unwrap() & 0x000f_ffff | u32::from(target) << 20;
                        config[at..at + 4].copy_from_slice(&header.to_le_bytes());
                    } else {
                        config[at + 1] = target as u8;
                    }
                    let result = parse_capabilities(&config);
                    check(&config, &result);
                    assert_eq!(result, Err(CapListError::Loop { offset: target, extended }));
                }
            }
        }
    }
}
