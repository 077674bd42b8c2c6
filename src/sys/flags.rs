//! Kernel flag words, as `bitflags`. Unknown bits are kept (`from_bits_retain`)
//! so that a newer kernel's flags survive a round trip.

use bitflags::bitflags;

bitflags! {
    /// `struct vfio_group_status.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GroupFlags: u32 {
        /// `VFIO_GROUP_FLAGS_VIABLE`: every device of the group is bound to a
        /// VFIO driver or to none, so the group may be used.
        const VIABLE = 1 << 0;
        /// `VFIO_GROUP_FLAGS_CONTAINER_SET`: the group is attached to a container.
        const CONTAINER_SET = 1 << 1;
        const _ = !0;
    }
}

bitflags! {
    /// `struct vfio_device_info.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DeviceFlags: u32 {
        /// `VFIO_DEVICE_FLAGS_RESET`: `VFIO_DEVICE_RESET` is supported.
        const RESET = 1 << 0;
        /// `VFIO_DEVICE_FLAGS_PCI`: a vfio-pci device.
        const PCI = 1 << 1;
        /// `VFIO_DEVICE_FLAGS_PLATFORM`: a vfio-platform device.
        const PLATFORM = 1 << 2;
        /// `VFIO_DEVICE_FLAGS_AMBA`: a vfio-amba device.
        const AMBA = 1 << 3;
        /// `VFIO_DEVICE_FLAGS_CCW`: an s390 channel device.
        const CCW = 1 << 4;
        /// `VFIO_DEVICE_FLAGS_AP`: an s390 adjunct processor.
        const AP = 1 << 5;
        /// `VFIO_DEVICE_FLAGS_FSL_MC`: an NXP fsl-mc device.
        const FSL_MC = 1 << 6;
        /// `VFIO_DEVICE_FLAGS_CAPS`: the info has a capability chain.
        const CAPS = 1 << 7;
        /// `VFIO_DEVICE_FLAGS_CDX`: an AMD CDX device.
        const CDX = 1 << 8;
        const _ = !0;
    }
}

bitflags! {
    /// `struct vfio_region_info.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RegionFlags: u32 {
        /// `VFIO_REGION_INFO_FLAG_READ`.
        const READ = 1 << 0;
        /// `VFIO_REGION_INFO_FLAG_WRITE`.
        const WRITE = 1 << 1;
        /// `VFIO_REGION_INFO_FLAG_MMAP`: the region may be mapped.
        const MMAP = 1 << 2;
        /// `VFIO_REGION_INFO_FLAG_CAPS`: the info has a capability chain.
        const CAPS = 1 << 3;
        const _ = !0;
    }
}

bitflags! {
    /// `struct vfio_irq_info.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct IrqFlags: u32 {
        /// `VFIO_IRQ_INFO_EVENTFD`: signalled through an eventfd.
        const EVENTFD = 1 << 0;
        /// `VFIO_IRQ_INFO_MASKABLE`: may be masked and unmasked.
        const MASKABLE = 1 << 1;
        /// `VFIO_IRQ_INFO_AUTOMASKED`: level triggered, masked by the kernel
        /// when it fires; unmask it after serving the device.
        const AUTOMASKED = 1 << 2;
        /// `VFIO_IRQ_INFO_NORESIZE`: the vector count cannot change once set.
        const NORESIZE = 1 << 3;
        const _ = !0;
    }
}

bitflags! {
    /// `struct vfio_irq_set.flags`: one `DATA_*` and one `ACTION_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct IrqSetFlags: u32 {
        /// `VFIO_IRQ_SET_DATA_NONE`: no data.
        const DATA_NONE = 1 << 0;
        /// `VFIO_IRQ_SET_DATA_BOOL`: one byte per vector.
        const DATA_BOOL = 1 << 1;
        /// `VFIO_IRQ_SET_DATA_EVENTFD`: one eventfd per vector.
        const DATA_EVENTFD = 1 << 2;
        /// `VFIO_IRQ_SET_ACTION_MASK`.
        const ACTION_MASK = 1 << 3;
        /// `VFIO_IRQ_SET_ACTION_UNMASK`.
        const ACTION_UNMASK = 1 << 4;
        /// `VFIO_IRQ_SET_ACTION_TRIGGER`.
        const ACTION_TRIGGER = 1 << 5;
    }
}
