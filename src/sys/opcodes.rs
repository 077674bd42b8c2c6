//! VFIO ioctl numbers: `_IO(VFIO_TYPE, VFIO_BASE + n)`, all with no size
//! encoded (the argument's size travels in its `argsz` field).

use rustix::ioctl::{opcode, Opcode};

const VFIO_TYPE: u8 = b';';
const VFIO_BASE: u8 = 100;

const fn vfio(n: u8) -> Opcode {
    opcode::none(VFIO_TYPE, VFIO_BASE + n)
}

/// `VFIO_GET_API_VERSION` (container).
pub const GET_API_VERSION: Opcode = vfio(0);
/// `VFIO_CHECK_EXTENSION` (container), integer argument.
pub const CHECK_EXTENSION: Opcode = vfio(1);
/// `VFIO_SET_IOMMU` (container), integer argument.
pub const SET_IOMMU: Opcode = vfio(2);
/// `VFIO_GROUP_GET_STATUS` (group), `struct vfio_group_status *`.
pub const GROUP_GET_STATUS: Opcode = vfio(3);
/// `VFIO_GROUP_SET_CONTAINER` (group), `int *` container fd.
pub const GROUP_SET_CONTAINER: Opcode = vfio(4);
/// `VFIO_GROUP_UNSET_CONTAINER` (group), no argument.
pub const GROUP_UNSET_CONTAINER: Opcode = vfio(5);
/// `VFIO_GROUP_GET_DEVICE_FD` (group), `char *` device name; returns an fd.
pub const GROUP_GET_DEVICE_FD: Opcode = vfio(6);
/// `VFIO_DEVICE_GET_INFO` (device), `struct vfio_device_info *`.
pub const DEVICE_GET_INFO: Opcode = vfio(7);
/// `VFIO_DEVICE_GET_REGION_INFO` (device), `struct vfio_region_info *`.
pub const DEVICE_GET_REGION_INFO: Opcode = vfio(8);
/// `VFIO_DEVICE_GET_IRQ_INFO` (device), `struct vfio_irq_info *`.
pub const DEVICE_GET_IRQ_INFO: Opcode = vfio(9);

/// `VFIO_DEVICE_SET_IRQS` (device), `struct vfio_irq_set *`.
pub const DEVICE_SET_IRQS: Opcode = vfio(10);
/// `VFIO_DEVICE_RESET` (device), no argument.
pub const DEVICE_RESET: Opcode = vfio(11);
/// `VFIO_IOMMU_GET_INFO` (container), `struct vfio_iommu_type1_info *`.
pub const IOMMU_GET_INFO: Opcode = vfio(12);
/// `VFIO_IOMMU_MAP_DMA` (container), `struct vfio_iommu_type1_dma_map *`.
pub const IOMMU_MAP_DMA: Opcode = vfio(13);
/// `VFIO_IOMMU_UNMAP_DMA` (container), `struct vfio_iommu_type1_dma_unmap *`.
pub const IOMMU_UNMAP_DMA: Opcode = vfio(14);
/// `VFIO_DEVICE_FEATURE` (device), `struct vfio_device_feature *` with its data.
pub const DEVICE_FEATURE: Opcode = vfio(17);

// Cross-check against the numbers generated from the kernel's own headers.
const _: () = {
    use linux_raw_sys::ioctl as k;
    assert!(GET_API_VERSION as u64 == k::VFIO_GET_API_VERSION as u64);
    assert!(CHECK_EXTENSION as u64 == k::VFIO_CHECK_EXTENSION as u64);
    assert!(SET_IOMMU as u64 == k::VFIO_SET_IOMMU as u64);
    assert!(GROUP_GET_STATUS as u64 == k::VFIO_GROUP_GET_STATUS as u64);
    assert!(GROUP_SET_CONTAINER as u64 == k::VFIO_GROUP_SET_CONTAINER as u64);
    assert!(GROUP_UNSET_CONTAINER as u64 == k::VFIO_GROUP_UNSET_CONTAINER as u64);
    assert!(GROUP_GET_DEVICE_FD as u64 == k::VFIO_GROUP_GET_DEVICE_FD as u64);
    assert!(DEVICE_GET_INFO as u64 == k::VFIO_DEVICE_GET_INFO as u64);
    assert!(DEVICE_GET_REGION_INFO as u64 == k::VFIO_DEVICE_GET_REGION_INFO as u64);
    assert!(DEVICE_GET_IRQ_INFO as u64 == k::VFIO_DEVICE_GET_IRQ_INFO as u64);
    assert!(DEVICE_SET_IRQS as u64 == k::VFIO_DEVICE_SET_IRQS as u64);
    assert!(DEVICE_RESET as u64 == k::VFIO_DEVICE_RESET as u64);
    assert!(IOMMU_GET_INFO as u64 == k::VFIO_IOMMU_GET_INFO as u64);
    assert!(IOMMU_MAP_DMA as u64 == k::VFIO_IOMMU_MAP_DMA as u64);
    assert!(IOMMU_UNMAP_DMA as u64 == k::VFIO_IOMMU_UNMAP_DMA as u64);
    assert!(DEVICE_FEATURE as u64 == k::VFIO_DEVICE_FEATURE as u64);
};
