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

/// `struct vfio_irq_set` without its variable-length data.
#[doc(alias = "vfio_irq_set")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqSet {
    /// Size of this header plus the data that follows it.
    pub argsz: u32,
    /// [`IrqSetFlags`](super::IrqSetFlags) bits: one DATA_ and one ACTION_ flag.
    pub flags: u32,
    /// The interrupt index.
    pub index: u32,
    /// The first vector.
    pub start: u32,
    /// The number of vectors (0 with `DATA_NONE | ACTION_TRIGGER`: disable).
    pub count: u32,
}

/// Vectors one `VFIO_DEVICE_SET_IRQS` call can bind, and one device can have
/// bound at a time (fixed at compile time; MSI-X devices with more vectors
/// use the first 32).
pub const MAX_IRQ_VECTORS: usize = 32;

/// `struct vfio_irq_set` followed by room for [`MAX_IRQ_VECTORS`] eventfds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqSetEventfds {
    /// The header; its `argsz` says how much of `fds` is used.
    pub head: IrqSet,
    /// Eventfd numbers, one per vector (`-1` unbinds that vector).
    pub fds: [i32; MAX_IRQ_VECTORS],
}

/// `struct vfio_iommu_type1_info`: answer of `VFIO_IOMMU_GET_INFO` (its
/// capability chain follows in an [`InfoBuffer`]).
#[doc(alias = "vfio_iommu_type1_info")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuType1Info {
    /// Size of this structure and of the capability chain.
    pub argsz: u32,
    /// `IOMMU_INFO_PGSIZES` and `IOMMU_INFO_CAPS` bits.
    pub flags: u32,
    /// Bitmap of the IOMMU page sizes.
    pub iova_pgsizes: u64,
    /// Offset of the first capability.
    pub cap_offset: u32,
    /// Padding (kernel ABI).
    pub pad: u32,
}

/// `struct vfio_iommu_type1_dma_map`: argument of `VFIO_IOMMU_MAP_DMA`.
#[doc(alias = "vfio_iommu_type1_dma_map")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaMap {
    /// Size of this structure.
    pub argsz: u32,
    /// `DMA_MAP_FLAG_READ` (device may read) and `DMA_MAP_FLAG_WRITE` (device may write).
    pub flags: u32,
    /// Process virtual address of the memory.
    pub vaddr: u64,
    /// Device address it is mapped at.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`: argument of `VFIO_IOMMU_UNMAP_DMA`.
#[doc(alias = "vfio_iommu_type1_dma_unmap")]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaUnmap {
    /// Size of this structure.
    pub argsz: u32,
    /// Unmap flags (none used).
    pub flags: u32,
    /// Device address of the mapping.
    pub iova: u64,
    /// Length; the kernel writes back how much it unmapped.
    pub size: u64,
}

/// Room for an info structure and its capability chain, aligned for any of
/// them. The first four bytes are the `argsz` the kernel may fill.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoBuffer {
    /// The raw bytes.
    pub bytes: [u8; INFO_BUFFER_LEN],
}

/// Size of an [`InfoBuffer`]: enough for dozens of IOVA ranges or sparse areas.
pub const INFO_BUFFER_LEN: usize = 1024;

impl Default for InfoBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl InfoBuffer {
    /// A zeroed buffer whose `argsz` is its full length.
    pub const fn new() -> Self {
        let mut bytes = [0; INFO_BUFFER_LEN];
        let argsz = (INFO_BUFFER_LEN as u32).to_le_bytes();
        bytes[0] = argsz[0];
        bytes[1] = argsz[1];
        bytes[2] = argsz[2];
        bytes[3] = argsz[3];
        InfoBuffer { bytes }
    }

    /// A buffer for `VFIO_DEVICE_GET_REGION_INFO` of region `index`.
    pub fn region_info(index: u32) -> Self {
        let mut buf = Self::new();
        buf.bytes[8..12].copy_from_slice(&index.to_le_bytes());
        buf
    }

    /// The `argsz` field (the kernel's answer after a call).
    pub fn argsz(&self) -> u32 {
        u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]])
    }

    /// The info structure's flags word (offset 4 in every VFIO info struct).
    pub fn flags(&self) -> u32 {
        self.u32_at(4)
    }

    /// Sets the `argsz` field.
    pub fn set_argsz(&mut self, argsz: u32) {
        self.bytes[..4].copy_from_slice(&argsz.to_le_bytes());
    }

    /// Reads a little-endian `u32` at `offset` (0 past the end).
    pub fn u32_at(&self, offset: usize) -> u32 {
        match self.bytes.get(offset..offset.saturating_add(4)) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }

    /// Reads a little-endian `u64` at `offset` (0 past the end).
    pub fn u64_at(&self, offset: usize) -> u64 {
        match self.bytes.get(offset..offset.saturating_add(8)) {
            Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => 0,
        }
    }

    /// The bytes the kernel described (`argsz` of them, at most the buffer).
    pub fn filled(&self) -> &[u8] {
        let n = (self.argsz() as usize).min(INFO_BUFFER_LEN);
        &self.bytes[..n]
    }
}

const _: () = {
    assert!(size_of::<IrqSet>() == 20);
    assert!(offset_of!(IrqSet, start) == 12);
    assert!(offset_of!(IrqSet, count) == 16);
    assert!(offset_of!(IrqSetEventfds, fds) == 20);
    assert!(size_of::<IommuType1Info>() == 24);
    assert!(offset_of!(IommuType1Info, iova_pgsizes) == 8);
    assert!(offset_of!(IommuType1Info, cap_offset) == 16);
    assert!(size_of::<DmaMap>() == 32);
    assert!(offset_of!(DmaMap, vaddr) == 8);
    assert!(offset_of!(DmaMap, iova) == 16);
    assert!(offset_of!(DmaMap, size) == 24);
    assert!(size_of::<DmaUnmap>() == 24);
    assert!(offset_of!(DmaUnmap, iova) == 8);
    assert!(offset_of!(DmaUnmap, size) == 16);
};

/// `VFIO_DEVICE_FEATURE_SET` in `struct vfio_device_feature`'s flags.
pub const DEVICE_FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`: the feature that sets a PF's VF token.
pub const DEVICE_FEATURE_PCI_VF_TOKEN: u32 = 0;

/// `struct vfio_device_feature` carrying a VF token (a UUID, 16 bytes):
/// argument of `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_SET |
/// VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureVfToken {
    /// Size of this structure.
    pub argsz: u32,
    /// `VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`.
    pub flags: u32,
    /// The token, as `uuid_t` holds it (the bytes in text order).
    pub uuid: [u8; 16],
}

const _: () = {
    assert!(size_of::<FeatureVfToken>() == 24);
    assert!(offset_of!(FeatureVfToken, uuid) == 8);
};
