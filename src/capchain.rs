//! Walks a VFIO capability chain: the `vfio_info_cap_header` list the kernel
//! appends to region, IRQ, device and IOMMU info replies.
//!
//! Each header is `{ id: u16, version: u16, next: u32 }`, little-endian, and
//! `next` is the byte offset of the following header from the start of the
//! info buffer (0 ends the chain). The buffer comes from the kernel, but the
//! walk trusts nothing in it: every offset is checked before it is read, and
//! offsets must strictly increase, so the walk always ends.

use core::fmt;
use core::iter::FusedIterator;

/// Size of `struct vfio_info_cap_header`.
const HEADER_LEN: usize = 8;

/// The most capabilities followed in one chain; the kernel emits a handful,
/// so more means a corrupt buffer.
pub(crate) const MAX_CAPS: usize = 64;

/// Why a capability chain was refused. Offsets are in bytes from the start of
/// the info buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A capability at `offset` would start inside the `min`-byte fixed info struct.
    BelowMin {
        /// Where the capability would start.
        offset: usize,
        /// Size of the fixed info struct.
        min: usize,
    },
    /// A capability offset is not a multiple of 4.
    Misaligned {
        /// The offending offset.
        offset: usize,
    },
    /// A capability would start at or past the end of the `len`-byte buffer.
    PastEnd {
        /// Where the capability would start.
        offset: usize,
        /// Length of the info buffer.
        len: usize,
    },
    /// A capability header starts inside the `len`-byte buffer but does not fit in it.
    Truncated {
        /// Where the header starts.
        offset: usize,
        /// Length of the info buffer.
        len: usize,
    },
    /// The capability at `offset` links to `next`, at or before itself: following it would loop.
    Backwards {
        /// The capability holding the bad link.
        offset: usize,
        /// Where the link points.
        next: usize,
    },
    /// The capability at `offset` links to `next`, inside its own 8-byte header.
    Overlap {
        /// The capability holding the bad link.
        offset: usize,
        /// Where the link points.
        next: usize,
    },
    /// The chain goes on past 64 capabilities (`MAX_CAPS`).
    TooMany {
        /// Where the first capability over the limit would start.
        offset: usize,
    },
}

impl core::error::Error for ChainError {}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChainError::BelowMin { offset, min } => {
                write!(f, "VFIO capability at offset {offset:#x} starts inside the {min}-byte info struct")
            }
            ChainError::Misaligned { offset } => {
                write!(f, "VFIO capability at offset {offset:#x} is not 4-byte aligned")
            }
            ChainError::PastEnd { offset, len } => {
                write!(f, "VFIO capability at offset {offset:#x} starts past the end of the {len}-byte info buffer")
            }
            ChainError::Truncated { offset, len } => {
                write!(
                    f,
                    "VFIO capability header at offset {offset:#x} runs past the end of the {len}-byte info buffer"
                )
            }
            ChainError::Backwards { offset, next } => {
                write!(f, "VFIO capability at offset {offset:#x} links back to {next:#x}: the chain loops")
            }
            ChainError::Overlap { offset, next } => {
                write!(f, "VFIO capability at offset {offset:#x} links to {next:#x}, inside its own header")
            }
            ChainError::TooMany { offset } => {
                write!(f, "VFIO capability chain has more than {MAX_CAPS} entries (the next is at offset {offset:#x})")
            }
        }
    }
}

/// One capability of a chain, borrowed from the info buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cap<'a> {
    /// The capability id (`VFIO_REGION_INFO_CAP_*`, `VFIO_IOMMU_TYPE1_INFO_CAP_*`, ...).
    pub id: u16,
    /// The capability's version.
    pub version: u16,
    /// Where its header starts, from the start of the info buffer.
    pub offset: usize,
    /// The bytes after the header, up to the next capability or the end of the buffer.
    pub body: &'a [u8],
}

/// An iterator over a capability chain. It yields each capability in chain
/// order, or one error and then nothing more.
#[derive(Clone, Debug)]
pub(crate) struct CapChain<'a> {
    buf: &'a [u8],
    min_offset: usize,
    /// Offset of the header to read next; 0 once the chain has ended or failed.
    next: usize,
    /// Capabilities yielded so far.
    seen: usize,
}

impl<'a> CapChain<'a> {
    /// Walks `buf` (the whole info buffer, truncated to the kernel's `argsz`)
    /// from `first_offset` (the info struct's `cap_offset`; 0 means no
    /// capabilities). `min_offset` is the size of the fixed info struct, which
    /// no capability may overlap.
    pub(crate) fn new(buf: &'a [u8], first_offset: u32, min_offset: usize) -> Self {
        CapChain { buf, min_offset, next: to_usize(first_offset), seen: 0 }
    }

    /// Reads and checks the capability at `offset`; returns it and its `next`.
    fn read(&self, offset: usize) -> Result<(Cap<'a>, usize), ChainError> {
        let len = self.buf.len();
        if self.seen >= MAX_CAPS {
            return Err(ChainError::TooMany { offset });
        }
        if offset < self.min_offset {
            return Err(ChainError::BelowMin { offset, min: self.min_offset });
        }
        if !offset.is_multiple_of(4) {
            return Err(ChainError::Misaligned { offset });
        }
        if offset >= len {
            return Err(ChainError::PastEnd { offset, len });
        }
        let rest = self.buf.get(offset..).unwrap_or_default();
        let (header, after) = rest.split_first_chunk::<HEADER_LEN>().ok_or(ChainError::Truncated { offset, len })?;
        let [i0, i1, v0, v1, n0, n1, n2, n3] = *header;
        let next = to_usize(u32::from_le_bytes([n0, n1, n2, n3]));
        let body = if next == 0 {
            after
        } else if next <= offset {
            return Err(ChainError::Backwards { offset, next });
        } else {
            // `next > offset` here, so the subtraction cannot wrap.
            let gap = next.saturating_sub(offset);
            let Some(body_len) = gap.checked_sub(HEADER_LEN) else {
                return Err(ChainError::Overlap { offset, next });
            };
            // A `next` past the buffer is reported when it is visited; this
            // body ends with the buffer.
            after.get(..body_len).unwrap_or(after)
        };
        let cap = Cap { id: u16::from_le_bytes([i0, i1]), version: u16::from_le_bytes([v0, v1]), offset, body };
        Ok((cap, next))
    }
}

impl<'a> Iterator for CapChain<'a> {
    type Item = Result<Cap<'a>, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == 0 {
            return None;
        }
        match self.read(self.next) {
            Ok((cap, next)) => {
                self.next = next;
                self.seen = self.seen.saturating_add(1);
                Some(Ok(cap))
            }
            Err(e) => {
                self.next = 0;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for CapChain<'_> {}

/// The first capability with `id` in the chain of `buf` starting at `first`
/// (see [`CapChain::new`]), or `None` if the chain has none. Every capability
/// up to and including the one found must be valid.
pub(crate) fn find(buf: &[u8], first: u32, min_offset: usize, id: u16) -> Result<Option<Cap<'_>>, ChainError> {
    for cap in CapChain::new(buf, first, min_offset) {
        let cap = cap?;
        if cap.id == id {
            return Ok(Some(cap));
        }
    }
    Ok(None)
}

/// Widens a kernel offset; one that does not fit `usize` is past any buffer.
fn to_usize(offset: u32) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Size of the fixed info struct in the hand-written tests.
    const MIN: usize = 16;

    /// Writes a header at `offset`.
    fn put(buf: &mut [u8], offset: usize, id: u16, version: u16, next: u32) {
        buf[offset..offset + 2].copy_from_slice(&id.to_le_bytes());
        buf[offset + 2..offset + 4].copy_from_slice(&version.to_le_bytes());
        buf[offset + 4..offset + 8].copy_from_slice(&next.to_le_bytes());
    }

    fn collect(buf: &[u8], first: u32, min: usize) -> Vec<Result<Cap<'_>, ChainError>> {
        // More than any valid chain can yield, so a walk that does not end shows.
        CapChain::new(buf, first, min).take(MAX_CAPS + 10).collect()
    }

    #[test]
    fn walks_a_valid_chain() {
        let mut buf = vec![0xaa; 64];
        put(&mut buf, 16, 1, 1, 32);
        put(&mut buf, 32, 3, 2, 48);
        put(&mut buf, 48, 7, 1, 0);
        let caps: Vec<_> = collect(&buf, 16, MIN).into_iter().map(Result::unwrap).collect();
        assert_eq!(caps.len(), 3);
        assert_eq!((caps[0].id, caps[0].version, caps[0].offset, caps[0].body.len()), (1, 1, 16, 8));
        assert_eq!((caps[1].id, caps[1].version, caps[1].offset, caps[1].body.len()), (3, 2, 32, 8));
        assert_eq!((caps[2].id, caps[2].version, caps[2].offset), (7, 1, 48));
        assert_eq!(caps[2].body, &buf[56..]);
        assert_eq!(caps[0].body, &[0xaa; 8]);
    }

    #[test]
    fn no_capabilities() {
        assert!(collect(&[0; 32], 0, MIN).is_empty());
        assert!(collect(&[], 0, MIN).is_empty());
        assert_eq!(find(&[0; 32], 0, MIN, 1), Ok(None));
    }

    #[test]
    fn header_only_capability_has_empty_body() {
        let mut buf = vec![0; 24];
        put(&mut buf, 16, 5, 1, 0);
        let caps = collect(&buf, 16, MIN);
        assert_eq!(caps, [Ok(Cap { id: 5, version: 1, offset: 16, body: &[] })]);
    }

    #[test]
    fn body_ends_with_the_buffer_when_next_is_past_it() {
        let mut buf = vec![0; 32];
        put(&mut buf, 16, 5, 1, 64);
        let caps = collect(&buf, 16, MIN);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps[0].unwrap().body.len(), 8);
        assert_eq!(caps[1], Err(ChainError::PastEnd { offset: 64, len: 32 }));
    }

    #[test]
    fn refuses_offset_inside_the_info_struct() {
        let mut buf = vec![0; 64];
        put(&mut buf, 8, 1, 1, 0);
        assert_eq!(collect(&buf, 8, MIN), [Err(ChainError::BelowMin { offset: 8, min: MIN })]);
        assert_eq!(collect(&buf, 4, MIN), [Err(ChainError::BelowMin { offset: 4, min: MIN })]);
    }

    #[test]
    fn refuses_misaligned_offsets() {
        let mut buf = vec![0; 64];
        put(&mut buf, 16, 1, 1, 34);
        let caps = collect(&buf, 16, MIN);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps[1], Err(ChainError::Misaligned { offset: 34 }));
        assert_eq!(collect(&buf, 18, MIN), [Err(ChainError::Misaligned { offset: 18 })]);
    }

    #[test]
    fn refuses_truncated_header_and_offsets_past_the_end() {
        let mut buf = vec![0; 36];
        put(&mut buf, 16, 1, 1, 32);
        let caps = collect(&buf, 16, MIN);
        assert_eq!(caps[1], Err(ChainError::Truncated { offset: 32, len: 36 }));
        assert_eq!(collect(&buf, 36, MIN), [Err(ChainError::PastEnd { offset: 36, len: 36 })]);
        assert_eq!(collect(&buf, 0xffff_fffc, MIN), [Err(ChainError::PastEnd { offset: 0xffff_fffc, len: 36 })]);
    }

    #[test]
    fn refuses_loops_and_overlaps() {
        let mut buf = vec![0; 64];
        put(&mut buf, 16, 1, 1, 16);
        assert_eq!(collect(&buf, 16, MIN), [Err(ChainError::Backwards { offset: 16, next: 16 })]);
        put(&mut buf, 16, 1, 1, 32);
        put(&mut buf, 32, 1, 1, 16);
        let caps = collect(&buf, 16, MIN);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps[1], Err(ChainError::Backwards { offset: 32, next: 16 }));
        put(&mut buf, 32, 1, 1, 36);
        assert_eq!(collect(&buf, 16, MIN)[1], Err(ChainError::Overlap { offset: 32, next: 36 }));
    }

    #[test]
    fn refuses_more_than_64_caps() {
        let mut buf = vec![0; 8 + 8 * (MAX_CAPS + 1)];
        for i in 0..=MAX_CAPS {
            let off = 8 + 8 * i;
            let next = if i == MAX_CAPS { 0 } else { off + 8 };
            put(&mut buf, off, i as u16, 0, next as u32);
        }
        let caps = collect(&buf, 8, 8);
        assert_eq!(caps.len(), MAX_CAPS + 1);
        assert!(caps[..MAX_CAPS].iter().all(Result::is_ok));
        assert_eq!(caps[MAX_CAPS], Err(ChainError::TooMany { offset: 8 + 8 * MAX_CAPS }));
        // Exactly 64 is fine.
        put(&mut buf, 8 + 8 * (MAX_CAPS - 1), 0, 0, 0);
        assert!(collect(&buf, 8, 8).iter().all(Result::is_ok));
    }

    #[test]
    fn iteration_stops_after_an_error() {
        let mut buf = vec![0; 64];
        put(&mut buf, 16, 1, 1, 16);
        let mut chain = CapChain::new(&buf, 16, MIN);
        assert!(chain.next().unwrap().is_err());
        assert_eq!(chain.next(), None);
        assert_eq!(chain.next(), None);
    }

    #[test]
    fn find_needs_a_valid_chain_up_to_the_match() {
        let mut buf = vec![0; 64];
        put(&mut buf, 16, 1, 1, 32);
        put(&mut buf, 32, 3, 1, 2);
        assert_eq!(find(&buf, 16, MIN, 1).unwrap().unwrap().offset, 16);
        // The match's own link is checked too.
        assert_eq!(find(&buf, 16, MIN, 3), Err(ChainError::Backwards { offset: 32, next: 2 }));
        assert_eq!(find(&buf, 16, MIN, 9), Err(ChainError::Backwards { offset: 32, next: 2 }));
        put(&mut buf, 32, 3, 1, 0);
        assert_eq!(find(&buf, 16, MIN, 3).unwrap().unwrap().offset, 32);
        assert_eq!(find(&buf, 16, MIN, 9), Ok(None));
    }

    #[test]
    fn errors_name_the_offset() {
        let errors = [
            ChainError::BelowMin { offset: 0x8, min: 16 },
            ChainError::Misaligned { offset: 0x22 },
            ChainError::PastEnd { offset: 0x40, len: 32 },
            ChainError::Truncated { offset: 0x1c, len: 32 },
            ChainError::Backwards { offset: 0x20, next: 0x10 },
            ChainError::Overlap { offset: 0x20, next: 0x24 },
            ChainError::TooMany { offset: 0x210 },
        ];
        for e in errors {
            let text = std::format!("{e}");
            let offset = match e {
                ChainError::BelowMin { offset, .. }
                | ChainError::Misaligned { offset }
                | ChainError::PastEnd { offset, .. }
                | ChainError::Truncated { offset, .. }
                | ChainError::Backwards { offset, .. }
                | ChainError::Overlap { offset, .. }
                | ChainError::TooMany { offset } => offset,
            };
            assert!(text.contains(&std::format!("{offset:#x}")), "{text}");
        }
    }

    // Property tests with a fixed-seed PRNG: deterministic, no extra dependency.

    const ITERATIONS: usize = if cfg!(miri) { 50 } else { 2000 };
    /// Building a model takes hundreds of PRNG steps, about 100 µs each under Miri.
    const MODEL_ITERATIONS: usize = if cfg!(miri) { 20 } else { 2000 };

    use crate::test_rng::XorShift;

    /// A capability in a generated chain.
    #[derive(Debug)]
    struct Model {
        id: u16,
        version: u16,
        offset: usize,
        body: Vec<u8>,
    }

    /// A random valid chain: the buffer, its first offset, the fixed struct size and the model.
    fn valid_chain(rng: &mut XorShift, count: usize) -> (Vec<u8>, u32, usize, Vec<Model>) {
        // At least 4: offset 0 would read as "no capabilities".
        let min = 4 * (1 + rng.below(8));
        let mut buf = rng.bytes(min);
        // Optional padding between the struct and the first cap, and between caps.
        let mut offset = min + 4 * rng.below(3);
        buf.resize(offset, 0);
        let mut models: Vec<Model> = Vec::new();
        for i in 0..count {
            let body_len = 4 * rng.below(6);
            let pad = if i + 1 == count { rng.below(7) } else { 4 * rng.below(2) };
            let body = rng.bytes(body_len + pad);
            let next = if i + 1 == count { 0 } else { offset + 8 + body.len() };
            let id = rng.next() as u16;
            let version = rng.next() as u16;
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&version.to_le_bytes());
            buf.extend_from_slice(&(next as u32).to_le_bytes());
            buf.extend_from_slice(&body);
            models.push(Model { id, version, offset, body });
            offset = next;
        }
        let first = models.first().map_or(0, |m| m.offset as u32);
        (buf, first, min, models)
    }

    /// Walks a chain and checks every invariant of the result; returns it.
    fn checked_walk(buf: &[u8], first: u32, min: usize) -> Vec<Result<Cap<'_>, ChainError>> {
        let mut chain = CapChain::new(buf, first, min);
        let mut out = Vec::new();
        // The walk must end within MAX_CAPS caps plus one error.
        for _ in 0..=MAX_CAPS + 1 {
            match chain.next() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        assert_eq!(chain.next(), None, "the walk did not end");
        let mut last = None;
        for (i, item) in out.iter().enumerate() {
            match item {
                Ok(cap) => {
                    assert!(cap.offset >= min && cap.offset % 4 == 0);
                    assert!(cap.offset + 8 + cap.body.len() <= buf.len());
                    assert_eq!(cap.body.as_ptr(), buf[cap.offset + 8..].as_ptr());
                    assert!(last.is_none_or(|l| cap.offset >= l + 8), "offsets must increase past the header");
                    if let Some(prev) = last {
                        let prev_cap = out[i - 1].unwrap();
                        assert_eq!(prev_cap.offset + 8 + prev_cap.body.len(), cap.offset.min(buf.len()));
                        assert!(cap.offset > prev);
                    }
                    last = Some(cap.offset);
                }
                Err(_) => assert_eq!(i + 1, out.len(), "an error must end the walk"),
            }
        }
        assert!(out.iter().filter(|r| r.is_ok()).count() <= MAX_CAPS);
        out
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // How often each outcome was seen: every error but TooMany, walks of 2+ caps, others.
        let mut seen = [0usize; 8];
        for _ in 0..ITERATIONS {
            let len = rng.below(200);
            let mut buf = rng.bytes(len);
            // Bias links so walks get somewhere: mostly short hops forward,
            // some ends, some anywhere, some backwards.
            for at in (0..len.saturating_sub(7)).step_by(4) {
                if rng.below(8) != 0 {
                    let next = match rng.below(8) {
                        0 => 0,
                        1 => rng.below(len + 16),
                        2 => rng.below(at + 1) & !3,
                        _ => at + 4 + 4 * rng.below(6),
                    };
                    buf[at + 4..at + 8].copy_from_slice(&(next as u32).to_le_bytes());
                }
            }
            let first = match rng.below(4) {
                0 => rng.next() as u32,
                1 => rng.below(len + 8) as u32,
                _ => rng.below(len + 8) as u32 & !3,
            };
            let min = rng.below(20);
            let walk = checked_walk(&buf, first, min);
            let outcome = match walk.last() {
                Some(Err(ChainError::BelowMin { .. })) => 0,
                Some(Err(ChainError::Misaligned { .. })) => 1,
                Some(Err(ChainError::PastEnd { .. })) => 2,
                Some(Err(ChainError::Truncated { .. })) => 3,
                Some(Err(ChainError::Backwards { .. })) => 4,
                Some(Err(ChainError::Overlap { .. })) => 5,
                Some(Err(ChainError::TooMany { .. })) => unreachable!("too short for 65 caps"),
                Some(Ok(_)) if walk.len() >= 2 => 6,
                _ => 7,
            };
            seen[outcome] += 1;
            for id in 0..4 {
                let _ = find(&buf, first, min, id);
            }
        }
        if !cfg!(miri) {
            assert!(seen.iter().all(|&n| n > 0), "outcomes not all reached: {seen:?}");
        }
    }

    #[test]
    fn valid_chains_parse_back_to_the_model() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for i in 0..MODEL_ITERATIONS {
            let count = match i % 10 {
                0 => MAX_CAPS,
                1 => 0,
                _ => rng.below(8),
            };
            let (buf, first, min, models) = valid_chain(&mut rng, count);
            let caps = checked_walk(&buf, first, min);
            assert_eq!(caps.len(), models.len());
            for (cap, model) in caps.iter().zip(&models) {
                let cap = cap.unwrap();
                assert_eq!(
                    (cap.id, cap.version, cap.offset, cap.body),
                    (model.id, model.version, model.offset, &model.body[..])
                );
            }
            if let Some(m) = models.get(rng.below(models.len().max(1))) {
                assert_eq!(find(&buf, first, min, m.id).unwrap().unwrap().id, m.id);
            }
        }
    }

    #[test]
    fn one_cap_too_many_is_refused() {
        let mut rng = XorShift(0xfeed_f00d_dead_beef);
        for _ in 0..MODEL_ITERATIONS / 10 {
            let (buf, first, min, models) = valid_chain(&mut rng, MAX_CAPS + 1);
            let caps = checked_walk(&buf, first, min);
            assert_eq!(caps.len(), MAX_CAPS + 1);
            assert_eq!(caps[MAX_CAPS], Err(ChainError::TooMany { offset: models[MAX_CAPS].offset }));
        }
    }

    #[test]
    fn mutated_chains_never_panic_and_loops_are_caught() {
        let mut rng = XorShift(0x5555_aaaa_1234_8765);
        for _ in 0..MODEL_ITERATIONS {
            let count = 1 + rng.below(10);
            let (mut buf, first, min, models) = valid_chain(&mut rng, count);
            match rng.below(4) {
                // Random byte writes.
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(buf.len());
                        buf[i] = rng.next() as u8;
                    }
                    checked_walk(&buf, first, min);
                }
                // Truncation: caps before the cut survive unchanged.
                1 => {
                    let cut = rng.below(buf.len() + 1);
                    buf.truncate(cut);
                    let caps = checked_walk(&buf, first, min);
                    let whole = models.iter().take_while(|m| m.offset + 8 <= cut).count();
                    for (cap, m) in caps.iter().zip(&models).take(whole) {
                        let cap = cap.unwrap();
                        assert_eq!((cap.id, cap.offset), (m.id, m.offset));
                    }
                    if whole < models.len() {
                        assert_eq!(caps.len(), whole + 1);
                        let offset = models[whole].offset;
                        let len = cut;
                        let want = if offset >= cut {
                            ChainError::PastEnd { offset, len }
                        } else {
                            ChainError::Truncated { offset, len }
                        };
                        assert_eq!(caps[whole], Err(want));
                    } else {
                        assert_eq!(caps.len(), whole);
                    }
                }
                // A link rewritten to point at or before its own cap: a loop.
                _ => {
                    let k = rng.below(models.len());
                    let target = models[rng.below(k + 1)].offset;
                    let at = models[k].offset;
                    buf[at + 4..at + 8].copy_from_slice(&(target as u32).to_le_bytes());
                    let caps = checked_walk(&buf, first, min);
                    assert_eq!(caps.len(), k + 1);
                    assert_eq!(caps[k], Err(ChainError::Backwards { offset: at, next: target }));
                }
            }
        }
    }
}
