//! DMA mapping: memory made visible to devices at an I/O virtual address
//! (IOVA) through the IOMMU: the legacy type1 container, or the context's
//! iommufd IO address space ([`Backend`](crate::Backend)).
//!
//! DMA lives in the IOMMU domain of the context's IOMMU-backed devices: it
//! needs one of them open, and when the last one is freed its mappings go
//! with it (the kernel would drop them anyway); their handles then answer
//! `ForeignHandle`. noiommu devices have no IOMMU domain and cannot map DMA.
//!
//! A mapping is always removed from the IOMMU before the memory behind it is
//! released; if the kernel refuses to remove it, the memory is kept (leaked)
//! rather than handed back while a device may still write it.

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use rustix::io::Errno;

use crate::capchain;
use crate::error::{Error, ErrorKind, MemlockCharge, Step};
use crate::iova::{self, IovaRange};
use crate::kernel::{Fd, Kernel, Request, TOKEN};
use crate::region::AccessError;
use crate::sys;

/// IOVA ranges recorded from the kernel's answer.
pub const MAX_IOVA_RANGES: usize = 16;

/// The shortest mapping: `Table::map` refuses a length that is not a whole
/// number of IOMMU pages of at least 4 KiB.
const MIN_MAPPING: usize = 4096;

/// Lowest IOVA the allocator hands out: keeps address 0 (and the first MiB,
/// where a stray null-based DMA would land) unused.
const IOVA_FLOOR: u64 = 0x10_0000;

/// What the IOMMU allows, from `VFIO_IOMMU_GET_INFO` (legacy) or
/// `IOMMU_IOAS_IOVA_RANGES` (iommufd, which reports only the smallest page
/// size and no mapping count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuInfo {
    /// Bitmap of the IOMMU's page sizes (bit n set: 2^n bytes). iommufd
    /// reports only the smallest (the IOVA alignment it needs), so this has
    /// one bit there: do not test it for huge-page support.
    pub page_sizes: u64,
    /// Usable IOVA ranges: the first [`MAX_IOVA_RANGES`] if the kernel names
    /// more, which only narrows what the allocator uses. The type1 backend
    /// naming none means the whole 64-bit space; iommufd naming none means
    /// nothing can be mapped.
    pub ranges: heapless::Vec<IovaRange, MAX_IOVA_RANGES>,
    /// How many more mappings the kernel allows, if it says.
    pub dma_avail: Option<u32>,
}

impl IommuInfo {
    /// The smallest IOMMU page size (4 KiB if the kernel names none).
    pub fn min_page_size(&self) -> u64 {
        match self.page_sizes {
            0 => 4096,
            sizes => 1 << sizes.trailing_zeros(),
        }
    }
}

/// Which way the device moves data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DmaDirection {
    /// The device only reads the memory.
    ToDevice,
    /// The device only writes the memory.
    FromDevice,
    /// The device reads and writes it.
    #[default]
    Bidirectional,
}

impl DmaDirection {
    fn map_flags(self) -> u32 {
        match self {
            DmaDirection::ToDevice => sys::DMA_MAP_FLAG_READ,
            DmaDirection::FromDevice => sys::DMA_MAP_FLAG_WRITE,
            DmaDirection::Bidirectional => sys::DMA_MAP_FLAG_READ | sys::DMA_MAP_FLAG_WRITE,
        }
    }

    fn ioas_flags(self) -> u32 {
        match self {
            DmaDirection::ToDevice => sys::IOAS_MAP_READABLE,
            DmaDirection::FromDevice => sys::IOAS_MAP_WRITEABLE,
            DmaDirection::Bidirectional => sys::IOAS_MAP_READABLE | sys::IOAS_MAP_WRITEABLE,
        }
    }
}

/// How to allocate a DMA buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaOptions {
    /// Back it with 2 MiB huge pages (`MAP_HUGETLB | MAP_HUGE_2MB`; needs
    /// pages reserved in `/sys/kernel/mm/hugepages/hugepages-2048kB`). The
    /// length is rounded up to, and the IOVA aligned to, 2 MiB.
    pub huge_pages: bool,
    /// Lock it in RAM with `mlock` (the IOMMU mapping pins it anyway; this
    /// also keeps the CPU side from ever faulting).
    pub locked: bool,
    /// Map it at this IOVA instead of one the allocator picks.
    pub iova: Option<u64>,
    /// Which way the device moves data.
    pub direction: DmaDirection,
}

/// One mapping of the context's table.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) serial: u64,
    iova: u64,
    len: u64,
    vaddr: NonNull<u8>,
    /// Memory the context allocated (and releases) rather than the caller's.
    owned: bool,
    /// Locked with `mlock` ([`DmaOptions::locked`]): charged to the
    /// process's locked memory besides the pin.
    locked: bool,
    /// Its IOMMU domain could not be let go of (see [`Table::strand_all`]).
    stranded: bool,
}

/// A DMA buffer or mapping, borrowed from its context.
///
/// The device may write the memory at any time while it is mapped, so this
/// view hands out no references to it: copy in and out with the methods,
/// which use relaxed atomic accesses (plain loads and stores on aarch64 and
/// x86_64), after the device said it is done and after
/// [`crate::barrier::io_rmb`]; or use the raw pointer. A view is used by one
/// thread at a time (it is `Send`, not `Sync`, and borrows its handle
/// mutably):
///
/// ```compile_fail
/// fn share(view: &dao_vfio::DmaBuffer<'_>) {
///     fn shared_between_threads<T: Sync>(_: &T) {}
///     shared_between_threads(view); // DmaBuffer is not Sync
/// }
/// ```
#[derive(Debug)]
pub struct DmaBuffer<'a> {
    /// The mapping's process address, length and IOVA, copied out of the
    /// table (which the borrow keeps unchanged): each access's bounds check
    /// reads the view itself, which the compiler can keep in registers
    /// across the view's own stores, instead of the table's entry behind a
    /// pointer, which it must reload after every store to DMA memory.
    vaddr: NonNull<u8>,
    len: usize,
    iova: u64,
    _mapping: PhantomData<&'a Mapping>,
    /// Not `Sync`: one thread at a time uses a view (it is obtained through
    /// `&mut DmaHandle`), so its differently sized accesses never overlap
    /// another thread's.
    _one_thread: PhantomData<Cell<()>>,
}

impl DmaBuffer<'_> {
    /// The device address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The process address of the first byte.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.vaddr
    }

    /// The address of `width` bytes at `offset`, if they are inside. Written
    /// as `offset <= len - width` (no overflow): a view is never shorter than
    /// [`MIN_MAPPING`] (asserted when it is made, in `Table::get`), so for
    /// the accessors' constant widths the first test folds away and one
    /// comparison is left.
    #[inline]
    fn span(&self, offset: usize, width: usize) -> Result<NonNull<u8>, AccessError> {
        let len = self.len;
        if (width > MIN_MAPPING && width > len) || offset > len - width {
            return Err(AccessError::OutOfBounds { offset, width, len });
        }
        // SAFETY: `width <= len` (directly, or as `len >= MIN_MAPPING`,
        // asserted in `Table::get`), so `len - width` did not wrap and
        // `offset + width <= len`: inside the mapping.
        Ok(unsafe { self.vaddr.add(offset) })
    }

    /// Copies `out.len()` bytes from `offset` into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), AccessError> {
        let src = self.span(offset, out.len())?;
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above); see `byte_at`.
            *byte = unsafe { byte_at(src, i) }.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), AccessError> {
        let dst = self.span(offset, data.len())?;
        for (i, &byte) in data.iter().enumerate() {
            // SAFETY: in bounds (checked above); see `byte_at`.
            unsafe { byte_at(dst, i) }.store(byte, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), AccessError> {
        let dst = self.span(offset, len)?;
        for i in 0..len {
            // SAFETY: in bounds (checked above); see `byte_at`.
            unsafe { byte_at(dst, i) }.store(byte, Ordering::Relaxed);
        }
        Ok(())
    }

    fn aligned(&self, offset: usize, width: usize) -> Result<NonNull<u8>, AccessError> {
        if !offset.is_multiple_of(width) {
            return Err(AccessError::Misaligned { offset, align: width });
        }
        self.span(offset, width)
    }

    /// Reads a `u32` at `offset` (4-aligned) with one load: for descriptor
    /// fields the device updates.
    pub fn read32(&self, offset: usize) -> Result<u32, AccessError> {
        let p = self.aligned(offset, 4)?;
        // SAFETY: in bounds and 4-aligned (aligned offset, base aligned to at
        // least 4 KiB by `Table::map`); no other thread uses this mapping
        // through a view meanwhile (see `byte_at`).
        Ok(unsafe { AtomicU32::from_ptr(p.cast().as_ptr()) }.load(Ordering::Relaxed))
    }

    /// Writes a `u32` at `offset` (4-aligned) with one store.
    pub fn write32(&self, offset: usize, value: u32) -> Result<(), AccessError> {
        let p = self.aligned(offset, 4)?;
        // SAFETY: as in `read32`.
        unsafe { AtomicU32::from_ptr(p.cast().as_ptr()) }.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// Reads a `u64` at `offset` (8-aligned) with one load.
    pub fn read64(&self, offset: usize) -> Result<u64, AccessError> {
        let p = self.aligned(offset, 8)?;
        // SAFETY: as in `read32`, 8-aligned.
        Ok(unsafe { AtomicU64::from_ptr(p.cast().as_ptr()) }.load(Ordering::Relaxed))
    }

    /// Writes a `u64` at `offset` (8-aligned) with one store.
    pub fn write64(&self, offset: usize, value: u64) -> Result<(), AccessError> {
        let p = self.aligned(offset, 8)?;
        // SAFETY: as in `read64`.
        unsafe { AtomicU64::from_ptr(p.cast().as_ptr()) }.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `words` to consecutive `u64`s from `offset` (8-aligned), one
    /// store each in order, as [`DmaBuffer::write64`] would, but with one
    /// bounds check for all of them: for a descriptor the device reads
    /// whole, such as a 64-byte NVMe submission entry.
    ///
    /// # Errors
    /// [`AccessError::Misaligned`] if `offset` is not a multiple of 8;
    /// [`AccessError::OutOfBounds`] (with the whole span's width) if the
    /// words do not all fit in the buffer. Nothing is written then.
    #[inline]
    pub fn write64s(&self, offset: usize, words: &[u64]) -> Result<(), AccessError> {
        let p = self.words(offset, words.len())?;
        for (i, &word) in words.iter().enumerate() {
            // SAFETY: word `i` of a checked, 8-aligned span (see `words`).
            unsafe { word_at(p, i) }.store(word, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads consecutive `u64`s from `offset` (8-aligned) into `out`, one
    /// load each in order, with one bounds check for all of them (see
    /// [`DmaBuffer::write64s`]).
    ///
    /// # Errors
    /// As [`DmaBuffer::write64s`]; `out` is left unchanged then.
    #[inline]
    pub fn read64s(&self, offset: usize, out: &mut [u64]) -> Result<(), AccessError> {
        let p = self.words(offset, out.len())?;
        for (i, word) in out.iter_mut().enumerate() {
            // SAFETY: as in `write64s`.
            *word = unsafe { word_at(p, i) }.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// The address of `n` consecutive `u64`s at `offset`, checked once:
    /// 8-aligned and inside the buffer.
    #[inline]
    fn words(&self, offset: usize, n: usize) -> Result<NonNull<u8>, AccessError> {
        if !offset.is_multiple_of(8) {
            return Err(AccessError::Misaligned { offset, align: 8 });
        }
        // A span too long for the address space is out of bounds too.
        self.span(offset, n.saturating_mul(8))
    }
}

/// The byte at `base + i` as an atomic.
///
/// # Safety
/// `base + i` is inside a live DMA mapping. Only one view of a mapping is in
/// use at a time (views borrow the handle mutably and are not `Sync`), and the
/// caller of `dma_map_raw` promised not to touch bytes a view uses meanwhile;
/// the device's own accesses are outside the program.
unsafe fn byte_at<'a>(base: NonNull<u8>, i: usize) -> &'a AtomicU8 {
    // SAFETY: forwarded from this function's contract; `AtomicU8` has the
    // size and alignment of `u8`.
    unsafe { AtomicU8::from_ptr(base.as_ptr().add(i)) }
}

/// Word `i` of an 8-aligned span as an atomic.
///
/// # Safety
/// `base` is 8-aligned and `base + 8 * i..base + 8 * i + 8` is inside a live
/// DMA mapping, under the rules of [`byte_at`].
unsafe fn word_at<'a>(base: NonNull<u8>, i: usize) -> &'a AtomicU64 {
    // SAFETY: forwarded from this function's contract.
    unsafe { AtomicU64::from_ptr(base.as_ptr().cast::<u64>().add(i)) }
}

/// Where DMA mappings go: the context's IOMMU address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    /// The legacy type1 container.
    Type1(Fd),
    /// An IO address space of an iommufd.
    Ioas {
        /// `/dev/iommu`.
        iommufd: Fd,
        /// The IOAS id.
        ioas: u32,
    },
}

/// Asks the IOMMU what it allows.
pub(crate) fn iommu_info<K: Kernel>(kernel: &K, domain: Domain) -> Result<IommuInfo, Error> {
    match domain {
        Domain::Type1(container) => type1_info(kernel, container),
        Domain::Ioas { iommufd, ioas } => ioas_info(kernel, iommufd, ioas),
    }
}

/// `IOMMU_IOAS_IOVA_RANGES`: the ranges the attached devices allow, and the
/// alignment every mapping needs. With more ranges than fit
/// ([`sys::IOAS_MAX_RANGES`]) the kernel fills the room, says `EMSGSIZE`, and
/// the first ones are used (which only narrows the allocator). No range at
/// all means nothing can be mapped.
fn ioas_info<K: Kernel>(kernel: &K, iommufd: Fd, ioas: u32) -> Result<IommuInfo, Error> {
    let mut query = sys::IoasIovaRangesQuery::default();
    query.head.size = sys::argsz::<sys::IoasIovaRanges>();
    query.head.ioas_id = ioas;
    query.head.num_iovas = sys::IOAS_MAX_RANGES as u32;
    match kernel.ioctl(&TOKEN, iommufd, Request::IoasIovaRanges(&mut query)) {
        Ok(_) | Err(Errno::MSGSIZE) => {}
        Err(e) => return Err(Error::syscall(Step::IoasIovaRanges, e)),
    }
    let align = query.head.out_iova_alignment;
    let mut info = IommuInfo {
        page_sizes: if align.is_power_of_two() { align } else { 0 },
        ranges: heapless::Vec::new(),
        dma_avail: None,
    };
    let n = (query.head.num_iovas as usize).min(sys::IOAS_MAX_RANGES).min(MAX_IOVA_RANGES);
    for r in &query.ranges[..n] {
        let _ = info.ranges.push(IovaRange { start: r.start, end: r.last });
    }
    Ok(info)
}

/// `VFIO_IOMMU_GET_INFO` of the type1 container.
fn type1_info<K: Kernel>(kernel: &K, container: Fd) -> Result<IommuInfo, Error> {
    let mut buf = sys::InfoBuffer::new();
    kernel.ioctl(&TOKEN, container, Request::IommuGetInfo(&mut buf)).map_err(|e| Error::syscall(Step::IommuInfo, e))?;
    let head = core::mem::size_of::<sys::IommuType1Info>();
    let flags = buf.flags();
    let mut info = IommuInfo {
        page_sizes: if flags & sys::IOMMU_INFO_PGSIZES != 0 { buf.u64_at(8) } else { 0 },
        ranges: heapless::Vec::new(),
        dma_avail: None,
    };
    let first = buf.u32_at(16);
    // cap_offset 0 with the CAPS flag: the chain did not fit the buffer; go on
    // without it (the whole space, no count), which the kernel still polices.
    if flags & sys::IOMMU_INFO_CAPS != 0 && first != 0 {
        for cap in capchain::CapChain::new(buf.filled(), first, head) {
            let cap = cap.map_err(|e| Error::new(ErrorKind::CapabilityChain(e)))?;
            let word = |at: usize| cap.body.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let quad = |at: usize| {
                cap.body.get(at..at + 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            };
            match cap.id {
                sys::IOMMU_CAP_IOVA_RANGE => {
                    let n = word(0).unwrap_or(0) as usize;
                    for i in 0..n.min(MAX_IOVA_RANGES) {
                        if let (Some(start), Some(end)) = (quad(8 + 16 * i), quad(16 + 16 * i)) {
                            let _ = info.ranges.push(IovaRange { start, end });
                        }
                    }
                }
                sys::IOMMU_CAP_DMA_AVAIL => info.dma_avail = word(0),
                _ => {}
            }
        }
    }
    if info.ranges.is_empty() {
        let _ = info.ranges.push(IovaRange { start: 0, end: u64::MAX });
    }
    Ok(info)
}

/// Memory to map for DMA.
pub(crate) struct Memory {
    pub(crate) vaddr: NonNull<u8>,
    pub(crate) len: u64,
    /// The IOVA asked for, if any.
    pub(crate) iova: Option<u64>,
    pub(crate) direction: DmaDirection,
    /// Memory the context allocated (and releases) rather than the caller's.
    pub(crate) owned: bool,
    /// IOVA alignment wanted beyond the IOMMU page (huge pages).
    pub(crate) align: u64,
    /// Locked with `mlock` already (see [`Mapping`]).
    pub(crate) locked: bool,
}

/// The context's DMA mappings, at most `N`.
pub(crate) struct Table<const N: usize> {
    mappings: heapless::Vec<Mapping, N>,
    next_serial: u64,
}

impl<const N: usize> Table<N> {
    pub(crate) const fn new() -> Self {
        Table { mappings: heapless::Vec::new(), next_serial: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.mappings.len()
    }

    pub(crate) fn get(&self, serial: u64) -> Option<DmaBuffer<'_>> {
        self.mappings.iter().find(|m| m.serial == serial).map(|m| {
            // Every view's bounds checks rest on it (see `span`): checked here,
            // once per view, though `Table::map` already refuses shorter ones.
            assert!(m.len >= MIN_MAPPING as u64, "a DMA mapping shorter than MIN_MAPPING");
            DmaBuffer {
                vaddr: m.vaddr,
                len: m.len as usize,
                iova: m.iova,
                _mapping: PhantomData,
                _one_thread: PhantomData,
            }
        })
    }

    /// Maps `memory` at the chosen or given IOVA, inside what `info` (the
    /// domain's, as recently asked) allows. On error the caller still owns
    /// the memory and nothing is mapped.
    ///
    /// # Safety
    /// `memory.vaddr..memory.vaddr + memory.len` stays valid until the
    /// mapping is removed.
    pub(crate) unsafe fn map<K: Kernel>(
        &mut self,
        kernel: &K,
        domain: Domain,
        info: &IommuInfo,
        memory: Memory,
    ) -> Result<u64, Error> {
        let Memory { vaddr, len, iova, direction, owned, align, locked } = memory;
        if self.mappings.is_full() {
            return Err(Error::new(ErrorKind::DmaTableFull { capacity: N }));
        }
        // At least 4 KiB whatever the kernel answers: the views' alignment
        // claims and their bounds checks (`MIN_MAPPING`) rest on it.
        let page = info.min_page_size().max(MIN_MAPPING as u64);
        let bad_range = Error::new(ErrorKind::BadDmaRange { page });
        if len == 0 || !len.is_multiple_of(page) || !(vaddr.as_ptr().addr() as u64).is_multiple_of(page) {
            return Err(bad_range);
        }
        // The same memory mapped twice would give two handles, and so two
        // views on two threads, over the same bytes: refused.
        let start = vaddr.as_ptr().addr() as u64;
        if let Some(m) = self.mappings.iter().find(|m| {
            let other = m.vaddr.as_ptr().addr() as u64;
            start < other.saturating_add(m.len) && other < start.saturating_add(len)
        }) {
            return Err(Error::new(ErrorKind::DmaMemoryMapped { iova: m.iova, len: m.len }));
        }
        // Huge-page buffers get huge-page-aligned IOVAs, so the IOMMU can use
        // huge pages too.
        let align = page.max(align);
        let mut taken: heapless::Vec<(u64, u64), N> = heapless::Vec::new();
        for m in &self.mappings {
            let _ = taken.push((m.iova, m.len));
        }
        let iova = match iova {
            Some(at) if !at.is_multiple_of(page) => return Err(bad_range),
            Some(at) if !iova::inside(&info.ranges, at, len) => {
                return Err(Error::new(ErrorKind::IovaUnusable { iova: at, len, reserved: true }));
            }
            Some(at) if iova::overlaps(&taken, at, len) => {
                return Err(Error::new(ErrorKind::IovaUnusable { iova: at, len, reserved: false }));
            }
            Some(at) => at,
            None => iova::choose_iova(&info.ranges, &taken, len, align, IOVA_FLOOR)
                .ok_or(Error::new(ErrorKind::NoIova { len }))?,
        };
        // The kernel and the device will reach this memory by address:
        // expose its provenance, as for any pointer handed to another agent.
        let user_va = vaddr.as_ptr().expose_provenance() as u64;
        if let Err(e) = map_iommu(kernel, domain, user_va, iova, len, direction) {
            let (charge, needed) = self.pin_charge(domain, len, locked);
            return Err(memlock_refusal(kernel, e, charge, needed));
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        // Cannot fail: fullness was checked first.
        let _ = self.mappings.push(Mapping { serial, iova, len, vaddr, owned, locked, stranded: false });
        Ok(serial)
    }

    /// What the kernel charges for this table's mappings plus one of `len`
    /// bytes (`locked`: mlocked too) in `domain`: type1 counts pins in the
    /// process's locked memory, where mlock counts too; iommufd counts pins
    /// apart (per user).
    fn pin_charge(&self, domain: Domain, len: u64, locked: bool) -> (MemlockCharge, u64) {
        let pinned = self.mappings.iter().fold(len, |sum, m| sum.saturating_add(m.len));
        match domain {
            Domain::Type1(_) => (MemlockCharge::Type1, pinned.saturating_add(self.locked_bytes(len, locked))),
            Domain::Ioas { .. } => (MemlockCharge::Iommufd, pinned),
        }
    }

    /// What the process's locked memory holds of this table's, in `domain`:
    /// the locked buffers, and under type1 every pin too.
    pub(crate) fn mlock_charge(&self, domain: Domain) -> u64 {
        let locked = self.locked_bytes(0, false);
        match domain {
            Domain::Type1(_) => self.mappings.iter().fold(locked, |sum, m| sum.saturating_add(m.len)),
            Domain::Ioas { .. } => locked,
        }
    }

    /// Bytes of this table's locked buffers, plus `len` if `locked`.
    fn locked_bytes(&self, len: u64, locked: bool) -> u64 {
        let more = if locked { len } else { 0 };
        self.mappings.iter().filter(|m| m.locked).fold(more, |sum, m| sum.saturating_add(m.len))
    }

    /// Removes a mapping from the IOMMU, then releases its memory if owned.
    /// If the IOMMU refuses, the mapping stays in the table (retried when the
    /// context lets go of it) and the error is returned.
    pub(crate) fn unmap<K: Kernel>(&mut self, kernel: &K, domain: Domain, serial: u64) -> Result<(), Error> {
        let Some(slot) = self.mappings.iter().position(|m| m.serial == serial) else {
            return Err(Error::new(ErrorKind::ForeignHandle));
        };
        if self.mappings[slot].stranded {
            return Err(Error::new(ErrorKind::DmaStranded));
        }
        unmap_iommu(kernel, domain, &self.mappings[slot])?;
        let mapping = self.mappings.swap_remove(slot);
        release_memory(kernel, &mapping)
    }

    /// Before the last IOMMU-backed device leaves: removes every mapping from
    /// the IOMMU. Every mapping is tried; the first failure is returned.
    pub(crate) fn unmap_all_from_iommu<K: Kernel>(&self, kernel: &K, domain: Domain) -> Result<(), Error> {
        let mut result = Ok(());
        // Stranded mappings live in a domain that is not this one.
        for m in self.mappings.iter().filter(|m| !m.stranded) {
            result = result.and(unmap_iommu(kernel, domain, m));
        }
        result
    }

    /// After the domain is gone (or every mapping was removed from it):
    /// releases its mappings' owned memory and drops them from the table.
    /// Stranded mappings stay (their domain is another).
    pub(crate) fn forget_all<K: Kernel>(&mut self, kernel: &K) {
        for m in self.mappings.iter().filter(|m| !m.stranded) {
            let _ = release_memory(kernel, m);
        }
        self.mappings.retain(|m| m.stranded);
    }

    /// When the context drops, after every domain is closed: releases all.
    pub(crate) fn release_all<K: Kernel>(&mut self, kernel: &K) {
        for m in self.mappings.iter_mut() {
            m.stranded = false;
        }
        self.forget_all(kernel);
    }

    /// The kernel kept the domain (neither the unmaps nor the detach went
    /// through): every mapping stays, with its memory, until the context
    /// drops, and says so when freed.
    pub(crate) fn strand_all(&mut self) {
        for m in self.mappings.iter_mut() {
            m.stranded = true;
        }
    }

    /// Whether the mapping `serial` is stranded.
    pub(crate) fn is_stranded(&self, serial: u64) -> bool {
        self.mappings.iter().any(|m| m.serial == serial && m.stranded)
    }
}

fn map_iommu<K: Kernel>(
    kernel: &K,
    domain: Domain,
    user_va: u64,
    iova: u64,
    len: u64,
    direction: DmaDirection,
) -> Result<(), Error> {
    match domain {
        Domain::Type1(container) => {
            let map = sys::DmaMap {
                argsz: sys::argsz::<sys::DmaMap>(),
                flags: direction.map_flags(),
                vaddr: user_va,
                iova,
                size: len,
            };
            kernel.ioctl(&TOKEN, container, Request::IommuMapDma(&map)).map_err(|e| Error::syscall(Step::MapDma, e))?;
        }
        Domain::Ioas { iommufd, ioas } => {
            let mut map = sys::IoasMap {
                size: sys::argsz::<sys::IoasMap>(),
                flags: sys::IOAS_MAP_FIXED_IOVA | direction.ioas_flags(),
                ioas_id: ioas,
                reserved: 0,
                user_va,
                length: len,
                iova,
            };
            kernel.ioctl(&TOKEN, iommufd, Request::IoasMap(&mut map)).map_err(|e| Error::syscall(Step::IoasMap, e))?;
        }
    }
    Ok(())
}

/// A pin or lock refused with `ENOMEM` (or an `mlock` with `EPERM`, which a
/// zero limit gives) while `RLIMIT_MEMLOCK` is finite is the limit's doing:
/// [`ErrorKind::MemlockLimit`], with what this context needs. Anything else
/// stays as it was.
pub(crate) fn memlock_refusal<K: Kernel>(kernel: &K, error: Error, charge: MemlockCharge, needed: u64) -> Error {
    let limit_errno = match (error.errno(), charge) {
        (Some(Errno::NOMEM), _) | (Some(Errno::PERM), MemlockCharge::Mlock) => error.errno(),
        _ => None,
    };
    match (limit_errno, kernel.memlock_limit(&TOKEN)) {
        (Some(errno), Some(limit)) => Error::new(ErrorKind::MemlockLimit { charge, needed, limit }).with_errno(errno),
        _ => error,
    }
}

/// Removes one mapping; the kernel's count of bytes removed must be the
/// whole mapping.
fn unmap_iommu<K: Kernel>(kernel: &K, domain: Domain, m: &Mapping) -> Result<(), Error> {
    let unmapped = match domain {
        Domain::Type1(container) => {
            let mut unmap = sys::DmaUnmap { argsz: sys::argsz::<sys::DmaUnmap>(), flags: 0, iova: m.iova, size: m.len };
            kernel
                .ioctl(&TOKEN, container, Request::IommuUnmapDma(&mut unmap))
                .map_err(|e| Error::syscall(Step::UnmapDma, e))?;
            unmap.size
        }
        Domain::Ioas { iommufd, ioas } => {
            let mut unmap =
                sys::IoasUnmap { size: sys::argsz::<sys::IoasUnmap>(), ioas_id: ioas, iova: m.iova, length: m.len };
            kernel
                .ioctl(&TOKEN, iommufd, Request::IoasUnmap(&mut unmap))
                .map_err(|e| Error::syscall(Step::IoasUnmap, e))?;
            unmap.length
        }
    };
    if unmapped != m.len {
        return Err(Error::new(ErrorKind::PartialUnmap { unmapped, len: m.len }));
    }
    Ok(())
}

fn release_memory<K: Kernel>(kernel: &K, m: &Mapping) -> Result<(), Error> {
    if !m.owned {
        return Ok(());
    }
    // SAFETY: owned memory came from `kernel.map_anonymous` with this length,
    // and the IOMMU no longer maps it; the mapping is being dropped.
    unsafe { kernel.munmap(&TOKEN, m.vaddr, m.len as usize) }.map_err(|e| Error::syscall(Step::UnmapMemory, e))
}

/// The size a buffer is allocated and aligned in: 2 MiB with huge pages, else
/// the IOMMU's smallest page (at least 4 KiB).
pub(crate) fn allocation_unit(info: &IommuInfo, opts: &DmaOptions) -> usize {
    let page = usize::try_from(info.min_page_size()).unwrap_or(usize::MAX).max(4096);
    if opts.huge_pages {
        page.max(HUGE_PAGE)
    } else {
        page
    }
}

/// The huge page size buffers ask for (`MAP_HUGE_2MB`).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Allocates anonymous memory for a buffer of at least `len` bytes, in whole
/// `unit`s: returns the address and the rounded length. On error nothing
/// stays mapped.
/// `locked_before` is what the process's locked memory already holds of the
/// context's (see [`Table::mlock_charge`]), for the error a refused `mlock` gives.
pub(crate) fn allocate<K: Kernel>(
    kernel: &K,
    len: usize,
    unit: usize,
    opts: &DmaOptions,
    locked_before: u64,
) -> Result<(NonNull<u8>, u64), Error> {
    let len = len
        .checked_next_multiple_of(unit)
        .filter(|&l| l > 0)
        .ok_or(Error::new(ErrorKind::BadDmaRange { page: unit as u64 }))?;
    let base = kernel.map_anonymous(&TOKEN, len, opts.huge_pages).map_err(|e| Error::syscall(Step::MapMemory, e))?;
    if opts.locked {
        if let Err(e) = kernel.lock(&TOKEN, base, len) {
            // SAFETY: mapped just above with this length, never shared.
            let _ = unsafe { kernel.munmap(&TOKEN, base, len) };
            let needed = locked_before.saturating_add(len as u64);
            return Err(memlock_refusal(kernel, Error::syscall(Step::LockMemory, e), MemlockCharge::Mlock, needed));
        }
    }
    Ok((base, len as u64))
}

/// Releases memory from [`allocate`] that was never mapped for DMA.
pub(crate) fn deallocate<K: Kernel>(kernel: &K, base: NonNull<u8>, len: u64) {
    // SAFETY: from `allocate`, never mapped for DMA, and dropped by the caller.
    let _ = unsafe { kernel.munmap(&TOKEN, base, len as usize) };
}

// SAFETY: a mapping is plain data plus the address of memory the table owns
// or the caller promised to keep valid. Sharing `&Mapping` reads only that
// data; the memory is reached only through a `DmaBuffer`, which one thread
// at a time uses.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapping {}

// SAFETY: a view is a copy of its mapping's address, length and IOVA plus
// the borrow that keeps the mapping in place (what `&Mapping` was, which is
// `Send` as `Mapping` is `Sync`); moving it to another thread moves its one
// user there. It stays `!Sync` (`_one_thread`), so no two threads use it at once.
unsafe impl Send for DmaBuffer<'_> {}
