//! Chooses I/O virtual addresses for DMA mappings inside the ranges the
//! IOMMU allows (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`), away from the
//! mappings already made.
//!
//! Arithmetic is done on `u128` exclusive ends, so ranges that end at
//! `u64::MAX` and mappings that reach the top of the address space need no
//! special cases and cannot overflow.

/// An IOVA range the IOMMU accepts, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IovaRange {
    /// The first usable address.
    pub start: u64,
    /// The last usable address (inclusive).
    pub end: u64,
}

/// The lowest address `a` with `a % align == 0` and `a >= floor` such that
/// `[a, a + len)` lies inside one of `ranges` and overlaps none of `taken`
/// (`(iova, len)` pairs, in any order). `None` if there is none, if `len` is
/// 0, or if `align` is not a power of two.
///
/// The answer is either the first aligned address of a range (at or above
/// `floor`) or the first aligned address after a taken interval, so only
/// those candidates are tried: O(ranges × taken²), no allocation.
pub(crate) fn choose_iova(ranges: &[IovaRange], taken: &[(u64, u64)], len: u64, align: u64, floor: u64) -> Option<u64> {
    if len == 0 || !align.is_power_of_two() {
        return None;
    }
    let mut best: Option<u64> = None;
    for r in ranges {
        let range_start = r.start.max(floor);
        let candidates = core::iter::once(u128::from(range_start)).chain(taken.iter().map(|&(t, l)| end_of(t, l)));
        for c in candidates {
            let Some(a) = align_up(c, align) else { continue };
            if a < range_start || best.is_some_and(|b| a >= b) {
                continue;
            }
            if fits_in(r, a, len) && !overlaps(taken, a, len) {
                best = Some(a);
            }
        }
    }
    best
}

/// Whether `[iova, iova + len)` overlaps any of `taken` (`(iova, len)`
/// pairs). Empty intervals overlap nothing.
pub(crate) fn overlaps(taken: &[(u64, u64)], iova: u64, len: u64) -> bool {
    let end = end_of(iova, len);
    len != 0 && taken.iter().any(|&(t, l)| l != 0 && u128::from(t) < end && u128::from(iova) < end_of(t, l))
}

/// Whether `[iova, iova + len)` lies inside one of `ranges`. An empty
/// interval is never inside (no mapping has length 0).
pub(crate) fn inside(ranges: &[IovaRange], iova: u64, len: u64) -> bool {
    len != 0 && ranges.iter().any(|r| fits_in(r, iova, len))
}

/// Whether `[a, a + len)` (`len > 0`) lies inside `r`.
fn fits_in(r: &IovaRange, a: u64, len: u64) -> bool {
    a >= r.start && end_of(a, len) <= end_of(r.end, 1)
}

/// The exclusive end of `[start, start + len)`; up to 2^65, so it always fits.
fn end_of(start: u64, len: u64) -> u128 {
    u128::from(start).saturating_add(u128::from(len))
}

/// `x` rounded up to a multiple of `align` (a power of two), if that is an address.
fn align_up(x: u128, align: u64) -> Option<u64> {
    let mask = u128::from(align).saturating_sub(1);
    u64::try_from(x.checked_add(mask)? & !mask).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const fn r(start: u64, end: u64) -> IovaRange {
        IovaRange { start, end }
    }

    #[test]
    fn first_fit_in_an_empty_space() {
        let ranges = [r(0, 0xffff_ffff)];
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, 0), Some(0));
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, 1), Some(0x1000));
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, 0x1000), Some(0x1000));
        assert_eq!(choose_iova(&[r(0x10, 0xffff)], &[], 0x100, 0x100, 0), Some(0x100));
    }

    #[test]
    fn skips_taken_intervals_in_any_order() {
        let ranges = [r(0, 0xffff)];
        let taken = [(0x3000, 0x1000), (0x0, 0x1000), (0x1000, 0x800)];
        assert_eq!(choose_iova(&ranges, &taken, 0x1000, 0x1000, 0), Some(0x2000));
        assert_eq!(choose_iova(&ranges, &taken, 0x800, 0x800, 0), Some(0x1800));
        assert_eq!(choose_iova(&ranges, &taken, 0x2000, 0x1000, 0), Some(0x4000));
        // Zero-length taken entries block nothing.
        assert_eq!(choose_iova(&ranges, &[(0, 0)], 0x10, 1, 0), Some(0));
    }

    #[test]
    fn stays_inside_one_range() {
        // Two adjacent ranges do not make one big enough.
        let ranges = [r(0x1000, 0x1fff), r(0x2000, 0x2fff), r(0x8000, 0xbfff)];
        assert_eq!(choose_iova(&ranges, &[], 0x2000, 0x1000, 0), Some(0x8000));
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, 0), Some(0x1000));
        assert_eq!(choose_iova(&ranges, &[], 0x4001, 1, 0), None);
        // Range order does not matter: the lowest address wins.
        let reversed = [ranges[2], ranges[1], ranges[0]];
        assert_eq!(choose_iova(&reversed, &[], 0x1000, 0x1000, 0), Some(0x1000));
        // An inverted range is empty.
        assert_eq!(choose_iova(&[r(0x2000, 0x1000)], &[], 1, 1, 0), None);
    }

    #[test]
    fn refuses_bad_arguments() {
        let ranges = [r(0, u64::MAX)];
        assert_eq!(choose_iova(&ranges, &[], 0, 1, 0), None);
        assert_eq!(choose_iova(&ranges, &[], 1, 0, 0), None);
        assert_eq!(choose_iova(&ranges, &[], 1, 3, 0), None);
        assert_eq!(choose_iova(&[], &[], 1, 1, 0), None);
    }

    #[test]
    fn top_of_the_address_space() {
        let ranges = [r(0, u64::MAX)];
        assert_eq!(choose_iova(&ranges, &[], u64::MAX, 1, 0), Some(0));
        assert_eq!(choose_iova(&ranges, &[], u64::MAX, 1, 1), Some(1));
        assert_eq!(choose_iova(&ranges, &[], u64::MAX, 1, 2), None);
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, u64::MAX - 0xfff), Some(u64::MAX - 0xfff));
        assert_eq!(choose_iova(&ranges, &[], 0x1000, 0x1000, u64::MAX - 0xffe), None);
        assert_eq!(choose_iova(&ranges, &[], 1, 1 << 63, u64::MAX), None);
        assert_eq!(choose_iova(&ranges, &[], 1, 1 << 63, 1), Some(1 << 63));
        // A mapping that reaches the very top leaves nothing after it.
        let taken = [(u64::MAX - 0xfff, 0x1000), (0, u64::MAX - 0xfff)];
        assert_eq!(choose_iova(&ranges, &taken, 1, 1, 0), None);
        // Bogus taken entries that wrap past 2^64 are clamped, not wrapped.
        let taken = [(u64::MAX, u64::MAX)];
        assert_eq!(choose_iova(&ranges, &taken, 1, 1, u64::MAX), None);
        assert_eq!(choose_iova(&ranges, &taken, 0x10, 0x10, 0), Some(0));
        assert!(overlaps(&taken, u64::MAX, 1));
    }

    #[test]
    fn overlap_and_inside() {
        let taken = [(0x1000, 0x1000)];
        assert!(overlaps(&taken, 0x1000, 1));
        assert!(overlaps(&taken, 0x1fff, 1));
        assert!(overlaps(&taken, 0x0, 0x1001));
        assert!(overlaps(&taken, 0x0, u64::MAX));
        assert!(!overlaps(&taken, 0x0, 0x1000));
        assert!(!overlaps(&taken, 0x2000, 0x1000));
        assert!(!overlaps(&taken, 0x1800, 0));
        assert!(!overlaps(&[], 0, u64::MAX));

        let ranges = [r(0x1000, 0x1fff), r(0xffff_0000, u64::MAX)];
        assert!(inside(&ranges, 0x1000, 0x1000));
        assert!(!inside(&ranges, 0x1000, 0x1001));
        assert!(!inside(&ranges, 0xfff, 2));
        assert!(inside(&ranges, u64::MAX, 1));
        assert!(!inside(&ranges, u64::MAX, 2));
        assert!(inside(&ranges, 0xffff_0000, 0x1_0000));
        assert!(!inside(&ranges, 0x1000, 0));
    }

    // Property tests with a fixed-seed PRNG: deterministic, no extra dependency.

    const ITERATIONS: usize = if cfg!(miri) { 50 } else { 2000 };

    use crate::test_rng::XorShift;

    /// Whether `a` satisfies every constraint, checked straight from the definition.
    fn fits(ranges: &[IovaRange], taken: &[(u64, u64)], len: u64, align: u64, floor: u64, a: u64) -> bool {
        let end = u128::from(a) + u128::from(len);
        a.is_multiple_of(align)
            && a >= floor
            && ranges.iter().any(|r| a >= r.start && end <= u128::from(r.end) + 1)
            && taken
                .iter()
                .all(|&(t, l)| l == 0 || end <= u128::from(t) || u128::from(t) + u128::from(l) <= u128::from(a))
    }

    #[test]
    fn matches_brute_force_in_a_small_space() {
        const SPACE: u64 = 4096;
        let mut rng = XorShift(0x8bad_f00d_cafe_babe);
        for _ in 0..ITERATIONS {
            let ranges: Vec<IovaRange> = (0..rng.below64(4))
                .map(|_| {
                    let start = rng.below64(SPACE);
                    r(start, (start + rng.below64(2048)).min(SPACE - 1))
                })
                .collect();
            let taken: Vec<(u64, u64)> = (0..rng.below64(8)).map(|_| (rng.below64(SPACE), rng.below64(600))).collect();
            let align = 16 << rng.below64(6);
            let len = 1 + rng.below64(1024);
            let floor = if rng.below64(2) == 0 { 0 } else { rng.below64(SPACE) };
            // Every range lies below SPACE, so nothing at or above it can fit.
            let want = (0..SPACE).step_by(align as usize).find(|&a| fits(&ranges, &taken, len, align, floor, a));
            let got = choose_iova(&ranges, &taken, len, align, floor);
            assert_eq!(got, want, "ranges {ranges:?} taken {taken:?} len {len} align {align} floor {floor}");
            if let Some(a) = got {
                assert!(inside(&ranges, a, len) && !overlaps(&taken, a, len));
            }
        }
    }

    #[test]
    fn random_wide_inputs_give_valid_answers() {
        let mut rng = XorShift(0x0f0f_1e1e_2d2d_3c3c);
        // Values spread over the whole u64 space, biased towards its edges.
        let value = |rng: &mut XorShift| match rng.below64(4) {
            0 => rng.next(),
            1 => u64::MAX - rng.below64(1 << 20),
            2 => rng.below64(1 << 20),
            _ => rng.next() >> rng.below64(64),
        };
        for _ in 0..ITERATIONS {
            let ranges: Vec<IovaRange> = (0..1 + rng.below64(4))
                .map(|_| {
                    let (a, b) = (value(&mut rng), value(&mut rng));
                    r(a.min(b), a.max(b))
                })
                .collect();
            let taken: Vec<(u64, u64)> = (0..rng.below64(8)).map(|_| (value(&mut rng), value(&mut rng))).collect();
            let align = 1 << rng.below64(64);
            let len = value(&mut rng);
            let floor = if rng.below64(2) == 0 { 0 } else { value(&mut rng) };
            let got = choose_iova(&ranges, &taken, len, align, floor);
            if let Some(a) = got {
                assert!(fits(&ranges, &taken, len, align, floor, a));
                assert!(inside(&ranges, a, len) && !overlaps(&taken, a, len));
                // Lowest: the aligned address just below does not fit.
                if let Some(below) = a.checked_sub(align) {
                    assert!(!fits(&ranges, &taken, len, align, floor, below));
                }
            } else if len != 0 && taken.is_empty() {
                // With nothing taken, the first aligned address of each range is the only candidate.
                for rg in &ranges {
                    if let Some(a) = align_up(u128::from(rg.start.max(floor)), align) {
                        assert!(!fits(&ranges, &taken, len, align, floor, a));
                    }
                }
            }
        }
    }
}
