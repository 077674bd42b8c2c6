//! Numeric constants of the VFIO uapi.

/// The only VFIO API version there is (`VFIO_API_VERSION`).
#[doc(alias = "VFIO_API_VERSION")]
pub const API_VERSION: i32 = 0;

/// `VFIO_TYPE1_IOMMU`: the original type1 IOMMU backend.
#[doc(alias = "VFIO_TYPE1_IOMMU")]
pub const TYPE1_IOMMU: u32 = 1;
/// `VFIO_TYPE1v2_IOMMU`: type1 with stricter unmap semantics; preferred.
#[doc(alias = "VFIO_TYPE1v2_IOMMU")]
pub const TYPE1V2_IOMMU: u32 = 3;
/// `VFIO_NOIOMMU_IOMMU`: no translation, no isolation (unsafe mode).
#[doc(alias = "VFIO_NOIOMMU_IOMMU")]
pub const NOIOMMU_IOMMU: u32 = 8;

/// Region indexes of a vfio-pci device (`VFIO_PCI_*_REGION_INDEX`).
pub mod pci_region {
    /// BAR 0.
    #[doc(alias = "VFIO_PCI_BAR0_REGION_INDEX")]
    pub const BAR0: u32 = 0;
    /// BAR 1.
    pub const BAR1: u32 = 1;
    /// BAR 2.
    pub const BAR2: u32 = 2;
    /// BAR 3.
    pub const BAR3: u32 = 3;
    /// BAR 4.
    pub const BAR4: u32 = 4;
    /// BAR 5.
    pub const BAR5: u32 = 5;
    /// The expansion ROM.
    #[doc(alias = "VFIO_PCI_ROM_REGION_INDEX")]
    pub const ROM: u32 = 6;
    /// PCI configuration space (read/write through the device fd, never mapped).
    #[doc(alias = "VFIO_PCI_CONFIG_REGION_INDEX")]
    pub const CONFIG: u32 = 7;
    /// Legacy VGA ranges; only VGA devices have it (others answer EINVAL).
    #[doc(alias = "VFIO_PCI_VGA_REGION_INDEX")]
    pub const VGA: u32 = 8;
}

/// Interrupt indexes of a vfio-pci device (`VFIO_PCI_*_IRQ_INDEX`).
pub mod pci_irq {
    /// Legacy INTx.
    #[doc(alias = "VFIO_PCI_INTX_IRQ_INDEX")]
    pub const INTX: u32 = 0;
    /// MSI.
    #[doc(alias = "VFIO_PCI_MSI_IRQ_INDEX")]
    pub const MSI: u32 = 1;
    /// MSI-X.
    #[doc(alias = "VFIO_PCI_MSIX_IRQ_INDEX")]
    pub const MSIX: u32 = 2;
    /// AER error reporting.
    #[doc(alias = "VFIO_PCI_ERR_IRQ_INDEX")]
    pub const ERR: u32 = 3;
    /// Device release request.
    #[doc(alias = "VFIO_PCI_REQ_IRQ_INDEX")]
    pub const REQ: u32 = 4;
}

/// `VFIO_IOMMU_INFO_PGSIZES`: `iova_pgsizes` is valid.
pub const IOMMU_INFO_PGSIZES: u32 = 1 << 0;
/// `VFIO_IOMMU_INFO_CAPS`: the info has a capability chain.
pub const IOMMU_INFO_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`: the usable IOVA ranges.
pub const IOMMU_CAP_IOVA_RANGE: u16 = 1;
/// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`: how many more DMA mappings are allowed.
pub const IOMMU_CAP_DMA_AVAIL: u16 = 3;
/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the parts of a region that may be mapped.
pub const REGION_CAP_SPARSE_MMAP: u16 = 1;
/// `VFIO_DMA_MAP_FLAG_READ`: the device may read the memory.
pub const DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`: the device may write the memory.
pub const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
