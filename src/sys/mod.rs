//! The VFIO kernel ABI, and nothing else.
//!
//! This module is the only place that knows ioctl numbers and the layout of the
//! structures the kernel reads and writes (`include/uapi/linux/vfio.h`, `iommufd.h`). Every
//! structure carries `const` size and offset assertions, and every VFIO opcode
//! is checked at compile time against `linux-raw-sys`, which is generated from
//! the kernel headers (the iommufd ones, which it lacks, are checked by the
//! virtual board's kernel).
//!
//! # References
//! - `include/uapi/linux/vfio.h`
//! - `include/uapi/linux/iommufd.h`
//! - `Documentation/driver-api/vfio.rst`

mod consts;
mod flags;
mod iommufd;
mod opcodes;
mod structs;

pub use consts::*;
pub use flags::*;
pub use iommufd::*;
pub use opcodes::*;
pub use structs::*;
