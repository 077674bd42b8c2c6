//! Compile-time-typed register blocks over mapped regions.
//!
//! A register block is a `#[repr(C)]` struct of `volatile-register` cells
//! ([`RO`], [`RW`], [`WO`]) laid out as the device's datasheet says. Declare one
//! with [`register_block!`](crate::register_block), which checks every field's
//! offset at compile time, and place it over a region with
//! [`Region::block`](crate::Region::block), which checks bounds and alignment
//! once at run time.
//!
//! ```
//! use dao_vfio::{register_block, Reserved, RO, RW, WO};
//!
//! register_block! {
//!     /// The QEMU `edu` device's BAR 0.
//!     pub struct Edu {
//!         0x00 => pub id: RO<u32>,
//!         0x04 => pub liveness: RW<u32>,
//!         0x08 => pub factorial: RW<u32>,
//!         0x0c => _gap: Reserved<0x14>,
//!         0x20 => pub status: RW<u32>,
//!         0x24 => pub irq_status: RO<u32>,
//!         0x28 => _gap2: Reserved<0x38>,
//!         0x60 => pub irq_raise: WO<u32>,
//!     }
//! }
//! assert_eq!(core::mem::size_of::<Edu>(), 0x64);
//! ```
//!
//! A field at the wrong offset does not build:
//!
//! ```compile_fail
//! dao_vfio::register_block! {
//!     struct Bad {
//!         0x00 => a: dao_vfio::RO<u32>,
//!         0x08 => b: dao_vfio::RO<u32>, // really at 0x04
//!     }
//! }
//! ```
//!
//! Nor does a field that is not a register (a plain integer would be read
//! without `volatile`):
//!
//! ```compile_fail
//! dao_vfio::register_block! { struct R { 0x0 => id: u32 } }
//! ```
//!
//! Nor does writing a read-only register:
//!
//! ```compile_fail
//! dao_vfio::register_block! { struct R { 0x0 => id: dao_vfio::RO<u32> } }
//! fn poke(r: &R) { unsafe { r.id.write(1) } }
//! ```
//!
//! # The `&T` over MMIO caveat
//! `volatile-register` hands out `&RW<T>` references into device memory
//! (rust-embedded/volatile-register#10): formally, a reference lets the
//! compiler insert spurious reads. Each cell wraps an `UnsafeCell`, and
//! current rustc does not mark references to `UnsafeCell` types as
//! dereferenceable, so no such read is emitted; this is the same footing as
//! the embedded ecosystem's PACs. We accept it because the user asked for
//! `volatile-register` blocks; the offset accessors
//! ([`Region::read32`](crate::Region::read32) and friends) use raw pointers
//! and `read_volatile` only, for code that wants no references at all.
//!
//! Writes through [`RW`] and [`WO`] are `unsafe` in `volatile-register`: a
//! register write can start DMA or otherwise reach memory Rust owns, which
//! only the driver can vouch for.

use core::cell::UnsafeCell;

pub use volatile_register::{RO, RW, WO};

/// A type that is made only of volatile register cells and plain padding,
/// so a reference to it over device memory reads nothing by itself.
///
/// # Safety
/// The type is `#[repr(C)]`, every field is a [`Register`] (a cell, an array
/// of cells, or [`Reserved`] bytes), and its alignment is at most 4096 (a
/// mapping's alignment). Use
/// [`register_block!`](crate::register_block), which checks this.
pub unsafe trait RegisterBlock: Sized {}

/// A field type allowed in a register block.
///
/// # Safety
/// Implementors are made only of `UnsafeCell`-based volatile cells (or plain
/// bytes never read), so a shared reference to them over device memory is
/// sound and causes no access by itself.
pub unsafe trait Register {}

macro_rules! registers {
    ($($t:ty),*) => {$(
        // SAFETY: volatile-register cells wrap `vcell::VolatileCell`, an
        // `UnsafeCell` accessed only with volatile operations.
        unsafe impl Register for RO<$t> {}
        // SAFETY: as above.
        unsafe impl Register for RW<$t> {}
        // SAFETY: as above.
        unsafe impl Register for WO<$t> {}
    )*};
}
registers!(u8, u16, u32, u64);

// SAFETY: an array of registers is registers.
unsafe impl<R: Register, const N: usize> Register for [R; N] {}

/// `N` reserved bytes in a register block: a gap between registers. It has no
/// accessors, so nothing reads or writes it, and, being an `UnsafeCell`, a
/// reference to a block over device memory promises nothing about its bytes.
#[repr(transparent)]
pub struct Reserved<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: an `UnsafeCell` that is never accessed.
unsafe impl<const N: usize> Register for Reserved<N> {}

/// Declares a `#[repr(C)]` register block whose field offsets are checked at
/// compile time, and implements [`RegisterBlock`] for it.
///
/// Each field is written `OFFSET => [pub] name: Type`; gaps between registers
/// are [`Reserved<N>`](Reserved) fields.
#[macro_export]
macro_rules! register_block {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $offset:literal => $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty ),*
        }

        const _: () = {
            $(
                assert!(
                    ::core::mem::offset_of!($name, $field) == $offset,
                    concat!("register `", stringify!($field), "` of `", stringify!($name), "` is not at offset ", stringify!($offset)),
                );
            )*
            const fn is_register<T: $crate::Register>() {}
            $( is_register::<$ty>(); )*
            assert!(::core::mem::align_of::<$name>() <= 4096, "a register block cannot be aligned beyond a page");
        };

        // SAFETY: `#[repr(C)]`, and every field was checked above to be a `Register`.
        unsafe impl $crate::RegisterBlock for $name {}
    };
}
