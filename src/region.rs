//! A device region: its description, and, when mapped, checked volatile
//! access to its registers.
//!
//! # Threads
//! A [`Region`] is `Sync`: several data-plane threads may read and write the
//! same mapped region at once, each access being one volatile load or store
//! (what the kernel's `readl`/`writel` do). Ordering between threads, and
//! between normal memory and the device, is the driver's business: see
//! [`crate::barrier`].

use core::fmt;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use crate::kernel::{Emulation, MmioAccess};
use crate::regblock::RegisterBlock;
use crate::sys::RegionFlags;

/// What became of a region at setup. More kinds may come: match with a
/// wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionKind {
    /// The kernel has no region at this index (`EINVAL` from its info
    /// request; the VGA index of a non-VGA device).
    Absent,
    /// The region exists with size 0 (an unimplemented BAR).
    Empty,
    /// The region exists but cannot be mapped (no MMAP flag, e.g. PCI config
    /// space or a region that is not page aligned): reach it with
    /// [`Device::read_region`](crate::Device::read_region) and
    /// [`Device::write_region`](crate::Device::write_region).
    Unmapped,
    /// The region is mapped; register access goes straight to the device.
    Mapped,
    /// Only some areas of the region may be mapped (the sparse-mmap
    /// capability, e.g. a BAR around an MSI-X table): those areas are mapped
    /// and accessible; the rest is reached with pread/pwrite.
    Sparse,
    /// A PCI region vfio-pci never maps, the expansion ROM or the legacy VGA
    /// ranges: not described at setup, so that the drivers that never use
    /// them (data planes do not) do not pay a system call each. Ask for it
    /// with [`Device::describe_region`](crate::Device::describe_region);
    /// [`Device::read_region`](crate::Device::read_region) and
    /// [`Device::write_region`](crate::Device::write_region) describe it at
    /// each use.
    Deferred,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::Absent => "absent",
            RegionKind::Empty => "empty",
            RegionKind::Unmapped => "not mappable (pread/pwrite)",
            RegionKind::Mapped => "mapped",
            RegionKind::Sparse => "sparse: only its mmap areas are mapped",
            RegionKind::Deferred => "described when asked for",
        })
    }
}

/// Why a register access was refused. Nothing was read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// `offset + width` passes the end of the region (or of its mapping).
    OutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The access width in bytes.
        width: usize,
        /// The region's length.
        len: usize,
    },
    /// The offset is not a multiple of the access's alignment.
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The required alignment.
        align: usize,
    },
    /// The region is not mapped (see [`RegionKind`]).
    NotMapped,
    /// The region's flags do not allow reading.
    NotReadable,
    /// The region's flags do not allow writing.
    NotWritable,
    /// A register block over a fake device model's region (`dao_vfio::fake`):
    /// a block's plain loads and stores would bypass the model. Use the
    /// offset accessors (`read32`, `write32`...), which the model sees.
    NotEmulable,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AccessError::OutOfBounds { offset, width, len } => {
                write!(f, "offset {offset:#x} with width {width} is outside the region ({len:#x} bytes)")
            }
            AccessError::Misaligned { offset, align } => {
                write!(f, "offset {offset:#x} is not aligned to {align} bytes")
            }
            AccessError::NotMapped => {
                f.write_str("the region is not mapped; use read_region/write_region (pread/pwrite)")
            }
            AccessError::NotReadable => f.write_str("the region is not readable"),
            AccessError::NotWritable => f.write_str("the region is not writable"),
            AccessError::NotEmulable => f.write_str(
                "a register block cannot be placed over a fake device model's region: its plain loads and stores would bypass the model; use the offset accessors (read32, write32...), which the model answers",
            ),
        }
    }
}

/// Mapped areas recorded per sparse region.
pub const MAX_SPARSE_AREAS: usize = 4;

/// One separately mapped area of a sparse region.
#[derive(Clone, Copy, Debug)]
struct Area {
    /// Offset within the region.
    offset: usize,
    len: usize,
    base: NonNull<u8>,
}

impl core::error::Error for AccessError {}

/// One region of a device, as the kernel described it, and its mapping.
#[derive(Debug)]
pub struct Region {
    index: u32,
    kind: RegionKind,
    flags: RegionFlags,
    size: u64,
    offset: u64,
    /// Start of the mapping, if mapped.
    base: Option<NonNull<u8>>,
    /// Bytes that may be read through the mapping (0 if not mapped or not readable).
    readable: usize,
    /// Bytes that may be written through the mapping (0 if not mapped or not writable).
    writable: usize,
    /// The mapped areas of a sparse region.
    areas: heapless::Vec<Area, MAX_SPARSE_AREAS>,
    /// An emulated mapping (a fake kernel's ordinary memory): every access
    /// goes through the kernel, so the fast path's limits above are 0.
    emulated: Option<Emulated>,
}

/// How an emulated mapping is reached, and its real limits.
#[derive(Clone, Copy, Debug)]
struct Emulated {
    via: Emulation,
    readable: usize,
    writable: usize,
}

/// The widths a register access comes in.
trait Word: Copy {
    fn from_u64(value: u64) -> Self;
    fn to_u64(self) -> u64;
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            fn from_u64(value: u64) -> Self {
                value as $t
            }
            fn to_u64(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
word!(u8, u16, u32, u64);

// SAFETY: a `Region` is plain data plus a pointer to a shared mapping that
// lives as long as the `Region` (it is unmapped only by the context, which
// must first get `&mut` access and so outlive every borrow of the region).
// Accesses through it are single volatile loads and stores of device memory,
// which other threads may make too, as kernel drivers do with readl/writel;
// the `Kernel` contract requires mappings that allow this. A mapping that is
// ordinary memory (the fake kernel's) is emulated: every access goes through
// its kernel, which serializes them (`Emulation`'s contract).
unsafe impl Send for Region {}
// SAFETY: see `Send`; `&Region` only permits volatile accesses.
unsafe impl Sync for Region {}

impl Region {
    pub(crate) fn unmapped(index: u32, kind: RegionKind, flags: RegionFlags, size: u64, offset: u64) -> Self {
        Region {
            index,
            kind,
            flags,
            size,
            offset,
            base: None,
            readable: 0,
            writable: 0,
            areas: heapless::Vec::new(),
            emulated: None,
        }
    }

    /// # Safety
    /// `base` points to a live mapping of `len` bytes with the protections
    /// `flags` allows, which stays mapped until [`Region::take_mappings`];
    /// `emulation` is its kernel's (see [`crate::Kernel::emulation`]).
    pub(crate) unsafe fn mapped(
        index: u32,
        flags: RegionFlags,
        size: u64,
        offset: u64,
        base: NonNull<u8>,
        len: usize,
        emulation: Option<Emulation>,
    ) -> Self {
        let readable = if flags.contains(RegionFlags::READ) { len } else { 0 };
        let writable = if flags.contains(RegionFlags::WRITE) { len } else { 0 };
        let emulated = emulation.map(|via| Emulated { via, readable, writable });
        Region {
            index,
            kind: RegionKind::Mapped,
            flags,
            size,
            offset,
            base: Some(base),
            // An emulated mapping never takes the fast path.
            readable: if emulated.is_some() { 0 } else { readable },
            writable: if emulated.is_some() { 0 } else { writable },
            areas: heapless::Vec::new(),
            emulated,
        }
    }

    /// A sparse region with no areas yet; see [`Region::add_area`].
    pub(crate) fn sparse(index: u32, flags: RegionFlags, size: u64, offset: u64, emulation: Option<Emulation>) -> Self {
        let mut region = Region::unmapped(index, RegionKind::Sparse, flags, size, offset);
        region.emulated = emulation.map(|via| Emulated { via, readable: 0, writable: 0 });
        region
    }

    /// Records a mapped area of a sparse region. Returns false (recording
    /// nothing) when the area table is full.
    ///
    /// # Safety
    /// `base` points to a live mapping of `len` bytes of this region at
    /// `offset`, with the protections `flags` allows, which stays mapped until
    /// [`Region::take_mappings`].
    pub(crate) unsafe fn add_area(&mut self, offset: usize, len: usize, base: NonNull<u8>) -> bool {
        self.areas.push(Area { offset, len, base }).is_ok()
    }

    /// Removes every mapping from the region, for the context to unmap them.
    pub(crate) fn take_mappings(&mut self) -> heapless::Vec<(NonNull<u8>, usize), { MAX_SPARSE_AREAS + 1 }> {
        let mut out = heapless::Vec::new();
        if let Some(base) = self.base.take() {
            let _ = out.push((base, self.mapped_len()));
        }
        for area in self.areas.iter() {
            let _ = out.push((area.base, area.len));
        }
        self.areas.clear();
        self.readable = 0;
        self.writable = 0;
        if let Some(e) = &mut self.emulated {
            (e.readable, e.writable) = (0, 0);
        }
        if self.kind != RegionKind::Sparse {
            self.kind = RegionKind::Unmapped;
        }
        out
    }

    /// The mapped areas of a sparse region: `(offset, length)` pairs.
    pub fn mapped_areas(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.areas.iter().map(|a| (a.offset, a.len))
    }

    fn mapped_len(&self) -> usize {
        usize::try_from(self.size).unwrap_or(usize::MAX)
    }

    /// The region index (for PCI see [`crate::sys::pci_region`]).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// What became of the region at setup.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }

    /// The kernel's flags for the region.
    pub fn flags(&self) -> RegionFlags {
        self.flags
    }

    /// The region's size in bytes (0 when absent or empty).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The region's offset within the device fd.
    pub fn fd_offset(&self) -> u64 {
        self.offset
    }

    /// Whether the whole region is mapped (a sparse region is not: see
    /// [`Region::mapped_areas`]).
    pub fn is_mapped(&self) -> bool {
        self.base.is_some()
    }

    /// The mapping's start address, for code that must hand it on (a C
    /// driver, a DMA engine's doorbell table). Prefer the checked accessors.
    pub fn as_ptr(&self) -> Option<NonNull<u8>> {
        self.base
    }

    /// The address of `width` bytes at `offset` inside one mapped area of a
    /// sparse region (the slow path: no whole-region mapping).
    #[cold]
    fn in_area(&self, offset: usize, width: usize, align: usize, write: bool) -> Option<NonNull<u8>> {
        let allowed = if write { RegionFlags::WRITE } else { RegionFlags::READ };
        if !self.flags.contains(allowed) {
            return None;
        }
        let area =
            self.areas.iter().find(|a| offset >= a.offset && offset - a.offset <= a.len.saturating_sub(width))?;
        if width > area.len {
            return None;
        }
        // SAFETY: `offset - area.offset + width <= area.len`: inside the area's mapping.
        let p = unsafe { area.base.add(offset - area.offset) };
        (p.as_ptr().addr() & (align - 1) == 0).then_some(p)
    }

    #[cold]
    fn refusal(&self, offset: usize, width: usize, align: usize, write: bool) -> AccessError {
        if self.kind == RegionKind::Sparse {
            let len = usize::try_from(self.size).unwrap_or(usize::MAX);
            return if !offset.is_multiple_of(align) {
                AccessError::Misaligned { offset, align }
            } else if write && !self.flags.contains(RegionFlags::WRITE) {
                AccessError::NotWritable
            } else if !write && !self.flags.contains(RegionFlags::READ) {
                AccessError::NotReadable
            } else if offset.checked_add(width).is_some_and(|end| end <= len) {
                // Inside the region, outside its mappable areas.
                AccessError::NotMapped
            } else {
                AccessError::OutOfBounds { offset, width, len }
            };
        }
        if self.base.is_none() {
            AccessError::NotMapped
        } else if write && !self.flags.contains(RegionFlags::WRITE) {
            AccessError::NotWritable
        } else if !write && !self.flags.contains(RegionFlags::READ) {
            AccessError::NotReadable
        } else if !self.base.is_some_and(|b| b.as_ptr().addr().wrapping_add(offset).is_multiple_of(align)) {
            AccessError::Misaligned { offset, align }
        } else {
            AccessError::OutOfBounds { offset, width, len: self.mapped_len() }
        }
    }

    /// The address of `width` bytes at `offset`, if `limit` covers them and
    /// `offset` is aligned. One comparison and one mask on the fast path.
    #[inline(always)]
    fn checked(&self, offset: usize, width: usize, align: usize, limit: usize) -> Option<NonNull<u8>> {
        let base = self.base?;
        // Alignment of the address, not just of the offset: a block type may
        // be aligned beyond what the offset alone guarantees.
        let misaligned = base.as_ptr().addr().wrapping_add(offset) & (align - 1) != 0;
        if limit < width || offset > limit - width || misaligned {
            return None;
        }
        // SAFETY: `offset + width <= limit <= mapping length`, so the result
        // stays inside the mapping.
        Some(unsafe { base.add(offset) })
    }

    #[inline(always)]
    fn read<T: Word>(&self, offset: usize) -> Result<T, AccessError> {
        let (width, align) = (size_of::<T>(), align_of::<T>());
        match self.checked(offset, width, align, self.readable) {
            // SAFETY: in bounds of a live, readable mapping and aligned for T.
            Some(p) => Ok(unsafe { p.cast::<T>().read_volatile() }),
            None => self.read_slow(offset),
        }
    }

    #[inline(always)]
    fn write<T: Word>(&self, offset: usize, value: T) -> Result<(), AccessError> {
        let (width, align) = (size_of::<T>(), align_of::<T>());
        match self.checked(offset, width, align, self.writable) {
            Some(p) => {
                // SAFETY: in bounds of a live, writable mapping and aligned for
                // T. The mapping is device memory outside any Rust object, so
                // the store breaks no aliasing guarantee of Rust-owned memory.
                unsafe { p.cast::<T>().write_volatile(value) };
                Ok(())
            }
            None => self.write_slow(offset, value),
        }
    }

    /// The address of `width` bytes at `offset` of an emulated mapping, as
    /// [`Region::checked`] finds it with the mapping's real limits.
    #[cold]
    fn in_emulated(&self, offset: usize, width: usize, align: usize, write: bool) -> Option<(Emulation, NonNull<u8>)> {
        let e = self.emulated?;
        let limit = if write { e.writable } else { e.readable };
        let p = self.in_area(offset, width, align, write).or_else(|| self.checked(offset, width, align, limit))?;
        Some((e.via, p))
    }

    /// An access the fast check refused: through a sparse area's mapping,
    /// through the kernel (an emulated mapping), or refused. Out of line and
    /// cold, so the inlined fast path stays one check and one access.
    #[cold]
    #[inline(never)]
    fn read_slow<T: Word>(&self, offset: usize) -> Result<T, AccessError> {
        let (width, align) = (size_of::<T>(), align_of::<T>());
        if let Some((via, addr)) = self.in_emulated(offset, width, align, false) {
            return Ok(T::from_u64(via.access(MmioAccess::Read { addr, width })));
        }
        match self.in_area(offset, width, align, false) {
            // SAFETY: inside a live, readable area mapping, aligned for T.
            Some(p) => Ok(unsafe { p.cast::<T>().read_volatile() }),
            None => Err(self.refusal(offset, width, align, false)),
        }
    }

    /// See [`Region::read_slow`].
    #[cold]
    #[inline(never)]
    fn write_slow<T: Word>(&self, offset: usize, value: T) -> Result<(), AccessError> {
        let (width, align) = (size_of::<T>(), align_of::<T>());
        if let Some((via, addr)) = self.in_emulated(offset, width, align, true) {
            via.access(MmioAccess::Write { addr, width, value: value.to_u64() });
            return Ok(());
        }
        match self.in_area(offset, width, align, true) {
            Some(p) => {
                // SAFETY: inside a live, writable area mapping, aligned for T
                // (device memory, as in `write`).
                unsafe { p.cast::<T>().write_volatile(value) };
                Ok(())
            }
            None => Err(self.refusal(offset, width, align, true)),
        }
    }

    /// Reads 8 bits at `offset` (one volatile load).
    #[inline]
    pub fn read8(&self, offset: usize) -> Result<u8, AccessError> {
        self.read(offset)
    }
    /// Reads 16 bits at `offset`, which must be 2-aligned.
    #[inline]
    pub fn read16(&self, offset: usize) -> Result<u16, AccessError> {
        self.read(offset)
    }
    /// Reads 32 bits at `offset`, which must be 4-aligned.
    #[inline]
    pub fn read32(&self, offset: usize) -> Result<u32, AccessError> {
        self.read(offset)
    }
    /// Reads 64 bits at `offset`, which must be 8-aligned.
    #[inline]
    pub fn read64(&self, offset: usize) -> Result<u64, AccessError> {
        self.read(offset)
    }
    /// Writes 8 bits at `offset` (one volatile store).
    #[inline]
    pub fn write8(&self, offset: usize, value: u8) -> Result<(), AccessError> {
        self.write(offset, value)
    }
    /// Writes 16 bits at `offset`, which must be 2-aligned.
    #[inline]
    pub fn write16(&self, offset: usize, value: u16) -> Result<(), AccessError> {
        self.write(offset, value)
    }
    /// Writes 32 bits at `offset`, which must be 4-aligned.
    #[inline]
    pub fn write32(&self, offset: usize, value: u32) -> Result<(), AccessError> {
        self.write(offset, value)
    }
    /// Writes 64 bits at `offset`, which must be 8-aligned.
    #[inline]
    pub fn write64(&self, offset: usize, value: u64) -> Result<(), AccessError> {
        self.write(offset, value)
    }

    /// A typed register block over the region at `offset`, checked once here
    /// (bounds against the mapping, alignment for `T`); its field accesses
    /// then need no checks. The borrow keeps the device open.
    ///
    /// A block needs a readable and writable mapping: its cells may be read
    /// or written.
    pub fn block<T: RegisterBlock>(&self, offset: usize) -> Result<&T, AccessError> {
        let (width, align) = (size_of::<T>(), align_of::<T>());
        let limit = self.readable.min(self.writable);
        match self.checked(offset, width, align, limit) {
            // SAFETY: the block is in bounds of a live read/write mapping and
            // aligned; `RegisterBlock` guarantees `T` consists only of
            // volatile cells, so creating `&T` reads nothing and every access
            // through it is volatile. The borrow is tied to `&self`, which the
            // mapping outlives (see the `Send` impl).
            Some(p) => Ok(unsafe { p.cast::<T>().as_ref() }),
            None => {
                let read_write = self.flags.contains(RegionFlags::READ | RegionFlags::WRITE);
                let emulated = self.emulated.map(|e| (e.via, e.readable.min(e.writable)));
                let found = self
                    .in_area(offset, width, align, false)
                    .filter(|_| read_write)
                    .or_else(|| emulated.and_then(|(_, limit)| self.checked(offset, width, align, limit)));
                match found {
                    Some(p) => {
                        if let Some((via, _)) = emulated {
                            // The block's accesses bypass the kernel: it keeps
                            // other threads off this memory from now on, or
                            // refuses (a device model must see every access).
                            if via.access(MmioAccess::Block { addr: p, len: width }) != 0 {
                                return Err(AccessError::NotEmulable);
                            }
                        }
                        // SAFETY: as above, inside one live read/write mapping
                        // (an area of a sparse region, or an emulated one).
                        Ok(unsafe { p.cast::<T>().as_ref() })
                    }
                    None => Err(self.refusal(offset, width, align, !self.flags.contains(RegionFlags::WRITE))),
                }
            }
        }
    }

    /// Like [`Region::block`], with the offset's alignment for `T` checked at
    /// compile time.
    ///
    /// ```compile_fail
    /// dao_vfio::register_block! { struct R { 0x0 => a: dao_vfio::RW<u32> } }
    /// fn regs(bar: &dao_vfio::Region) -> Option<&R> {
    ///     bar.block_at::<R, 2>().ok() // 2 is not 4-aligned: refused at build time
    /// }
    /// # fn main() { let _ = regs as fn(&dao_vfio::Region) -> Option<&R>; }
    /// ```
    pub fn block_at<T: RegisterBlock, const OFFSET: usize>(&self) -> Result<&T, AccessError> {
        const { assert!(OFFSET.is_multiple_of(align_of::<T>()), "register block offset is misaligned for its type") };
        self.block(OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region over ordinary memory, standing in for a mapping.
    fn over(buf: &mut [u64], flags: RegionFlags) -> Region {
        let len = core::mem::size_of_val(buf);
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` outlives the region in each test and is not otherwise used.
        unsafe { Region::mapped(0, flags, len as u64, 0, base, len, None) }
    }

    #[test]
    fn reads_and_writes_every_width() {
        let mut mem = [0u64; 4];
        let r = over(&mut mem, RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP);
        r.write64(8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(r.read64(8).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(r.read32(8).unwrap(), 0x5566_7788);
        assert_eq!(r.read16(12).unwrap(), 0x3344);
        assert_eq!(r.read8(15).unwrap(), 0x11);
        r.write8(0, 0xab).unwrap();
        r.write16(2, 0xcdef).unwrap();
        r.write32(4, 0x0102_0304).unwrap();
        assert_eq!(r.read64(0).unwrap(), 0x0102_0304_cdef_00ab);
    }

    #[test]
    fn refuses_out_of_bounds_and_misaligned() {
        let mut mem = [0u64; 4];
        let r = over(&mut mem, RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP);
        assert_eq!(r.read32(32), Err(AccessError::OutOfBounds { offset: 32, width: 4, len: 32 }));
        assert_eq!(r.read64(28), Err(AccessError::Misaligned { offset: 28, align: 8 }));
        assert_eq!(r.read64(32), Err(AccessError::OutOfBounds { offset: 32, width: 8, len: 32 }));
        assert_eq!(
            r.write32(usize::MAX - 3, 1),
            Err(AccessError::OutOfBounds { offset: usize::MAX - 3, width: 4, len: 32 })
        );
        assert_eq!(r.read16(1), Err(AccessError::Misaligned { offset: 1, align: 2 }));
        assert_eq!(r.read32(28).unwrap(), 0);
        assert_eq!(mem, [0; 4], "refused writes changed nothing");
    }

    #[test]
    fn honours_flags_and_unmapped() {
        let mut mem = [7u64; 1];
        let ro = over(&mut mem, RegionFlags::READ | RegionFlags::MMAP);
        assert_eq!(ro.read64(0).unwrap(), 7);
        assert_eq!(ro.write64(0, 1), Err(AccessError::NotWritable));
        let none = Region::unmapped(7, RegionKind::Unmapped, RegionFlags::READ, 256, 0x7000);
        assert_eq!(none.read32(0), Err(AccessError::NotMapped));
        assert_eq!(none.write32(0, 1), Err(AccessError::NotMapped));
        assert_eq!(mem, [7]);
    }

    crate::register_block! {
        /// A block for tests.
        struct Block {
            0x00 => id: crate::RO<u32>,
            0x04 => scratch: crate::RW<u32>,
            0x08 => wide: crate::RW<u64>,
        }
    }

    crate::register_block! {
        /// A block aligned beyond its registers.
        #[repr(align(64))]
        struct Wide {
            0x00 => a: crate::RW<u64>,
        }
    }

    #[test]
    fn blocks_are_aligned_by_address_not_only_by_offset() {
        let mut mem = [0u64; 32];
        let r = over(&mut mem, RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP);
        let base = r.as_ptr().unwrap().as_ptr().addr();
        let aligned = (64 - base % 64) % 64;
        assert!(r.block::<Wide>(aligned).is_ok());
        let off = aligned + 8;
        assert_eq!(r.block::<Wide>(off).err(), Some(AccessError::Misaligned { offset: off, align: 64 }));
    }

    #[test]
    fn typed_blocks() {
        let mut mem = [0x0000_0001_0000_00edu64, 0, 0];
        let r = over(&mut mem, RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP);
        let b = r.block::<Block>(0).unwrap();
        assert_eq!(b.id.read(), 0xed);
        // SAFETY: ordinary memory stands in for the device here.
        unsafe { b.wide.write(42) };
        assert_eq!(r.read64(8).unwrap(), 42);
        assert_eq!(r.block::<Block>(8).unwrap().id.read(), 42);
        assert_eq!(r.block::<Block>(16).err(), Some(AccessError::OutOfBounds { offset: 16, width: 16, len: 24 }));
        assert_eq!(r.block::<Block>(4).err(), Some(AccessError::Misaligned { offset: 4, align: 8 }));
        assert_eq!(r.block_at::<Block, 0>().unwrap().scratch.read(), 1);
    }
}
