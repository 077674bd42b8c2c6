//! # dao-vfio
//!
//! Deterministic user-space access to Linux devices through VFIO: platform
//! devices bound to `vfio-platform` and PCI devices bound to `vfio-pci`. A
//! Rust successor to Marvell DAO's VFIO library (`dao_vfio_init`,
//! `dao_vfio_device_setup`, `dao_vfio_device_free`, `dao_vfio_fini`).
//!
//! - `no_std`, no heap (the crate does not use `alloc`), no libc: system
//!   calls go through `rustix`.
//! - Fixed-capacity tables; every failure is an [`Error`] that says what to do,
//!   and leaves nothing open or mapped.
//! - The data path (register access) makes no system call, takes no lock and
//!   allocates nothing.
//! - Either kernel interface, chosen at run time ([`Backend`]): iommufd with
//!   the device's VFIO cdev where the kernel offers it, else the legacy
//!   container and groups.
//!
//! ```no_run
//! use dao_vfio::{register_block, Context, RO, RW};
//!
//! register_block! {
//!     /// QEMU's edu device, BAR 0.
//!     struct Edu {
//!         0x00 => id: RO<u32>,
//!         0x04 => liveness: RW<u32>,
//!         0x08 => factorial: RW<u32>,
//!     }
//! }
//!
//! # fn main() -> Result<(), dao_vfio::Error> {
//! let mut vfio = Context::open()?;                 // dao_vfio_init
//! let edu = vfio.setup("0000:00:02.0")?;           // dao_vfio_device_setup
//! {
//!     let regs = vfio.device(&edu)?.block::<Edu>(0, 0)?; // region 0, offset 0: checked once
//!     assert_eq!(regs.id.read(), 0x010000ed);
//! }
//! vfio.free(edu)?;                                 // dao_vfio_device_free
//! vfio.close().map_err(|(_, e)| e)?;               // dao_vfio_fini
//! # Ok(()) }
//! ```
//!
//! # Threads
//! Setup, free and close need `&mut Context`; register access needs only
//! `&Region`, which is `Sync`. See [`context`] and [`region`].
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(any(feature = "std", test))]
extern crate std;

// The kernel structures are read as little-endian (native on aarch64 and
// x86_64, the targets this crate is for).
#[cfg(target_endian = "big")]
compile_error!("dao-vfio reads VFIO structures as little-endian; big-endian targets are not supported");

#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
mod backend;
pub mod barrier;
pub mod bind;
mod capchain;
#[cfg(feature = "capi")]
pub mod capi;
mod container;
pub mod context;
mod device;
pub mod dma;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod grant;
mod group;
mod held_dirs;
mod holders;
mod iommufd;
mod iova;
pub mod irq;
pub mod kernel;
mod name;
pub mod notify;
mod path;
pub mod pci;
pub mod pci_caps;
mod privilege;
pub mod regblock;
pub mod region;
pub mod sriov;
pub mod sys;
mod sysfs;
#[cfg(test)]
mod test_rng;
mod vf_token;

pub use backend::Backend;
pub use capchain::ChainError;
pub use container::IommuKind;
pub use context::{Context, DeviceHandle, DmaHandle};
pub use device::{Device, IrqIndex, MAX_REGIONS};
pub use dma::{DmaBuffer, DmaDirection, DmaOptions, IommuInfo};
pub use error::{
    Blocker, DevNode, DriverName, Error, ErrorKind, Label, MemlockCharge, Step, LABEL_LEN, MAX_DRIVER_LEN,
};
pub use iova::IovaRange;
pub use irq::Interrupt;
pub use kernel::{Fd, Host, Kernel};
pub use name::{Bus, DeviceName, NameError, MAX_NAME_LEN};
pub use notify::Notification;
pub use pci::{Bar, BarKind, PciCommand};
pub use pci_caps::{Capabilities, Capability};
pub use regblock::{Register, RegisterBlock, Reserved, RO, RW, WO};
pub use region::{AccessError, Region, RegionKind};
pub use rustix::io::Errno;
pub use sriov::SriovRole;
pub use vf_token::{VfToken, VfTokenError, VF_TOKEN_TEXT_LEN};

/// The examples in README.md, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
