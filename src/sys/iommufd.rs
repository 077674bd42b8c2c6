//! The iommufd half of the ABI: `include/uapi/linux/iommufd.h` (`/dev/iommu`)
//! and the VFIO device cdev ioctls that bind a device to it
//! (`include/uapi/linux/vfio.h`, Linux 6.6+). `linux-raw-sys` does not carry
//! these numbers, so they are written out here, from the uapi headers, and the
//! virtual board's 6.12 kernel checks them (a wrong number answers `ENOTTY`).

use core::mem::{offset_of, size_of};

use rustix::ioctl::{opcode, Opcode};

/// Both `/dev/iommu` and VFIO use the `';'` ioctl type.
const IOMMUFD_TYPE: u8 = b';';

/// `IOMMU_IOAS_ALLOC` (iommufd), `struct iommu_ioas_alloc *`.
pub const IOMMU_IOAS_ALLOC: Opcode = opcode::none(IOMMUFD_TYPE, 0x81);
/// `IOMMU_IOAS_IOVA_RANGES` (iommufd), `struct iommu_ioas_iova_ranges *`.
pub const IOMMU_IOAS_IOVA_RANGES: Opcode = opcode::none(IOMMUFD_TYPE, 0x84);
/// `IOMMU_IOAS_MAP` (iommufd), `struct iommu_ioas_map *`.
pub const IOMMU_IOAS_MAP: Opcode = opcode::none(IOMMUFD_TYPE, 0x85);
/// `IOMMU_IOAS_UNMAP` (iommufd), `struct iommu_ioas_unmap *`.
pub const IOMMU_IOAS_UNMAP: Opcode = opcode::none(IOMMUFD_TYPE, 0x86);
/// `VFIO_DEVICE_BIND_IOMMUFD` (device cdev), `struct vfio_device_bind_iommufd *`.
pub const DEVICE_BIND_IOMMUFD: Opcode = opcode::none(IOMMUFD_TYPE, 100 + 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (device cdev), `struct vfio_device_attach_iommufd_pt *`.
pub const DEVICE_ATTACH_IOMMUFD_PT: Opcode = opcode::none(IOMMUFD_TYPE, 100 + 19);

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the IOVA given, not one the kernel picks.
pub const IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`: the device may write the memory.
pub const IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`: the device may read the memory.
pub const IOAS_MAP_READABLE: u32 = 1 << 2;

/// `struct iommu_ioas_alloc`: argument of `IOMMU_IOAS_ALLOC`.
#[doc(alias = "iommu_ioas_alloc")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasAlloc {
    /// Size of this structure.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// The new IO address space's id (written by the kernel).
    pub out_ioas_id: u32,
}

/// `struct iommu_iova_range`: one allowed IOVA range, inclusive.
#[doc(alias = "iommu_iova_range")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasIovaRange {
    /// First usable address.
    pub start: u64,
    /// Last usable address.
    pub last: u64,
}

/// `struct iommu_ioas_iova_ranges`: argument of `IOMMU_IOAS_IOVA_RANGES`.
#[doc(alias = "iommu_ioas_iova_ranges")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasIovaRanges {
    /// Size of this structure.
    pub size: u32,
    /// The IO address space asked about.
    pub ioas_id: u32,
    /// In: room at `allowed_iovas`; out: how many ranges there are (more than
    /// the room: the room is filled and the call answers `EMSGSIZE`).
    pub num_iovas: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Address of an array of [`IoasIovaRange`].
    pub allowed_iovas: u64,
    /// The IOVA alignment every mapping needs (the smallest IOMMU page).
    pub out_iova_alignment: u64,
}

/// Ranges one `IOMMU_IOAS_IOVA_RANGES` answer is read into.
pub const IOAS_MAX_RANGES: usize = 16;

/// An [`IoasIovaRanges`] query with room for its answer. The kernel seam
/// points `head.allowed_iovas` at `ranges` right before the call, so the
/// pointer is always this value's own array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasIovaRangesQuery {
    /// The ioctl's structure (`num_iovas` is set to the room by the seam).
    pub head: IoasIovaRanges,
    /// The ranges the kernel writes.
    pub ranges: [IoasIovaRange; IOAS_MAX_RANGES],
}

/// `struct iommu_ioas_map`: argument of `IOMMU_IOAS_MAP`.
#[doc(alias = "iommu_ioas_map")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasMap {
    /// Size of this structure.
    pub size: u32,
    /// `IOAS_MAP_*` bits.
    pub flags: u32,
    /// The IO address space to map into.
    pub ioas_id: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Process virtual address of the memory.
    pub user_va: u64,
    /// Length in bytes.
    pub length: u64,
    /// Device address (with `IOAS_MAP_FIXED_IOVA`).
    pub iova: u64,
}

/// `struct iommu_ioas_unmap`: argument of `IOMMU_IOAS_UNMAP`.
#[doc(alias = "iommu_ioas_unmap")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoasUnmap {
    /// Size of this structure.
    pub size: u32,
    /// The IO address space.
    pub ioas_id: u32,
    /// Device address of the mapping.
    pub iova: u64,
    /// Length; the kernel writes back how much it unmapped.
    pub length: u64,
}

/// `struct vfio_device_bind_iommufd`: argument of `VFIO_DEVICE_BIND_IOMMUFD`.
#[doc(alias = "vfio_device_bind_iommufd")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindIommufd {
    /// Size of this structure.
    pub argsz: u32,
    /// Must be 0.
    pub flags: u32,
    /// The iommufd to bind to.
    pub iommufd: i32,
    /// The device's id within the iommufd (written by the kernel).
    pub out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt`: argument of
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
#[doc(alias = "vfio_device_attach_iommufd_pt")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachIommufdPt {
    /// Size of this structure.
    pub argsz: u32,
    /// Must be 0.
    pub flags: u32,
    /// In: the IO address space; out: the page table the kernel attached.
    pub pt_id: u32,
}

const _: () = {
    assert!(size_of::<IoasAlloc>() == 12);
    assert!(offset_of!(IoasAlloc, out_ioas_id) == 8);
    assert!(size_of::<IoasIovaRange>() == 16);
    assert!(size_of::<IoasIovaRanges>() == 32);
    assert!(offset_of!(IoasIovaRanges, num_iovas) == 8);
    assert!(offset_of!(IoasIovaRanges, allowed_iovas) == 16);
    assert!(offset_of!(IoasIovaRanges, out_iova_alignment) == 24);
    assert!(offset_of!(IoasIovaRangesQuery, ranges) == 32);
    assert!(size_of::<IoasMap>() == 40);
    assert!(offset_of!(IoasMap, ioas_id) == 8);
    assert!(offset_of!(IoasMap, user_va) == 16);
    assert!(offset_of!(IoasMap, length) == 24);
    assert!(offset_of!(IoasMap, iova) == 32);
    assert!(size_of::<IoasUnmap>() == 24);
    assert!(offset_of!(IoasUnmap, iova) == 8);
    assert!(offset_of!(IoasUnmap, length) == 16);
    assert!(size_of::<BindIommufd>() == 16);
    assert!(offset_of!(BindIommufd, iommufd) == 8);
    assert!(offset_of!(BindIommufd, out_devid) == 12);
    assert!(size_of::<AttachIommufdPt>() == 12);
    assert!(offset_of!(AttachIommufdPt, pt_id) == 8);
};
