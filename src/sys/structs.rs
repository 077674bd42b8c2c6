//! `#[repr(C)]` structures of `include/uapi/linux/vfio.h`, with their layout
//! asserted at compile time. Flag words are kept raw (`u32`) here; the typed
//! views live on the safe types that wrap them.

use core::mem::{offset_of, size_of};

/// The size of `T` as the kernel's `argsz` field wants it.
pub const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// `struct vfio_group_status`: answer of `VFIO_GROUP_GET_STATUS`.
#[doc(alias = "vfio_group_status")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// Size of this structure.
    pub argsz: u32,
    /// [`GroupFlags`](super::GroupFlags) bits.
    pub flags: u32,
}

/// `struct vfio_device_info`: answer of `VFIO_DEVICE_GET_INFO`.
#[doc(alias = "vfio_device_info")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Size of this structure (and of any capability chain after it).
    pub argsz: u32,
    /// [`DeviceFlags`](super::DeviceFlags) bits.
    pub flags: u32,
    /// Number of regions (the highest valid index plus one).
    pub num_regions: u32,
    /// Number of interrupt indexes.
    pub num_irqs: u32,
    /// Offset of the first capability, if `DeviceFlags::CAPS`.
    pub cap_offset: u32,
    /// Padding (kernel ABI).
    pub pad: u32,
}

/// `struct vfio_region_info`: answer of `VFIO_DEVICE_GET_REGION_INFO`.
#[doc(alias = "vfio_region_info")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size of this structure (and of any capability chain after it).
    pub argsz: u32,
    /// [`RegionFlags`](super::RegionFlags) bits.
    pub flags: u32,
    /// The region index asked for.
    pub index: u32,
    /// Offset of the first capability, if `RegionFlags::CAPS`.
    pub cap_offset: u32,
    /// Region size in bytes.
    pub size: u64,
    /// Offset of the region within the device fd (for mmap and pread/pwrite).
    pub offset: u64,
}

/// `struct vfio_irq_info`: answer of `VFIO_DEVICE_GET_IRQ_INFO`.
#[doc(alias = "vfio_irq_info")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqInfo {
    /// Size of this structure.
    pub argsz: u32,
    /// [`IrqFlags`](super::IrqFlags) bits.
    pub flags: u32,
    /// The interrupt index asked for.
    pub index: u32,
    /// Number of vectors at this index.
    pub count: u32,
}

// Layout assertions: the kernel reads these structures by offset.
const _: () = {
    assert!(size_of::<GroupStatus>() == 8);
    assert!(offset_of!(GroupStatus, flags) == 4);

    assert!(size_of::<DeviceInfo>() == 24);
    assert!(offset_of!(DeviceInfo, flags) == 4);
    assert!(offset_of!(DeviceInfo, num_regions) == 8);
    assert!(offset_of!(DeviceInfo, num_irqs) == 12);
    assert!(offset_of!(DeviceInfo, cap_offset) == 16);

    assert!(size_of::<RegionInfo>() == 32);
    assert!(offset_of!(RegionInfo, index) == 8);
    assert!(offset_of!(RegionInfo, cap_offset) == 12);
    assert!(offset_of!(RegionInfo, size) == 16);
    assert!(offset_of!(RegionInfo, offset) == 24);

    assert!(size_of::<IrqInfo>() == 16);
    assert!(offset_of!(IrqInfo, index) == 8);
    assert!(offset_of!(IrqInfo, count) == 12);
};
