//! What the kernel tells a driver about its device besides its interrupts:
//! that it wants the device back, and that the device reported an error.
//!
//! vfio-pci signals its request interrupt (`VFIO_PCI_REQ_IRQ_INDEX`) when the
//! device is to be unbound or removed, then waits for the user to let go;
//! with no eventfd there it only logs "No device request channel registered,
//! blocked until released by user", and whoever unbinds hangs. PCIe errors
//! (AER) are signalled on `VFIO_PCI_ERR_IRQ_INDEX`. Both are ordinary
//! eventfds here: enable one explicitly, put its [`Interrupt::fd`] in your own
//! epoll loop (or call [`Interrupt::take`] between work items, one read
//! that never blocks), and on a request finish what is in flight and
//! [`Context::free`] the device. The crate runs no thread of its own, and
//! nothing here touches the register path.
//!
//! Freeing releases what the kernel waits for in an order that cannot
//! deadlock: the regions are unmapped first (each mapping holds the device
//! file), then the device fd is closed (which disables its interrupts and
//! lets the unbind finish), then the eventfds, then the device's share of its
//! group; DMA mappings go with the last device of their IOMMU domain, or
//! earlier with [`Context::dma_free`]. Borrowing enforces the rest: an
//! [`Interrupt`] borrows the context, so no eventfd is closed while a handle
//! to it is in use.
//!
//! ```no_run
//! use dao_vfio::{Context, Notification};
//! # fn main() -> Result<(), dao_vfio::Error> {
//! let mut vfio = Context::open()?;
//! let nic = vfio.setup("0002:01:00.0")?;
//! vfio.notify_enable(&nic, Notification::Request)?;
//! loop {
//!     // ... a batch of data-plane work ...
//!     if vfio.device(&nic)?.notifier(Notification::Request)?.take()?.is_some() {
//!         break; // the kernel wants the device back
//!     }
//! }
//! vfio.free(nic)?; // the unbind that asked for it now completes
//! # Ok(()) }
//! ```

use core::fmt;

use crate::context::{Context, DeviceHandle};
use crate::device::Device;
use crate::error::{Error, ErrorKind};
use crate::irq::Interrupt;
use crate::kernel::Kernel;
use crate::name::Bus;
use crate::sys::pci_irq;

/// A notification the kernel can send about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Notification {
    /// The kernel wants the device back (unbind, hot-unplug): free it.
    #[doc(alias = "VFIO_PCI_REQ_IRQ_INDEX")]
    Request,
    /// The device reported an error (PCIe AER).
    #[doc(alias = "VFIO_PCI_ERR_IRQ_INDEX")]
    Error,
}

impl Notification {
    /// The vfio-pci interrupt index that carries it.
    pub const fn index(self) -> u32 {
        match self {
            Notification::Request => pci_irq::REQ,
            Notification::Error => pci_irq::ERR,
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Notification::Request => "request (VFIO_PCI_REQ_IRQ_INDEX)",
            Notification::Error => "error (VFIO_PCI_ERR_IRQ_INDEX)",
        })
    }
}

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Binds an eventfd to the device's `which` notification
    /// (`VFIO_DEVICE_SET_IRQS` on its index); get it with
    /// [`Device::notifier`]. A PCI device without it (edu has no error
    /// interrupt: its index has no vector) gets
    /// [`ErrorKind::NoNotification`]; a platform device
    /// [`ErrorKind::NotPci`]. On error nothing stays bound.
    pub fn notify_enable(&mut self, handle: &DeviceHandle, which: Notification) -> Result<(), Error> {
        let dev = self.device(handle)?;
        if dev.bus() != Bus::Pci {
            return Err(dev.error(ErrorKind::NotPci));
        }
        let not_offered = dev.error(ErrorKind::NoNotification { which });
        self.irq_enable(handle, which.index(), 1).map_err(|e| match e.kind() {
            ErrorKind::NoSuchIrq { .. } => not_offered,
            _ => e,
        })
    }

    /// Unbinds the notification's eventfd and closes it (the kernel then
    /// blocks an unbind again until the device is freed).
    pub fn notify_disable(&mut self, handle: &DeviceHandle, which: Notification) -> Result<(), Error> {
        self.irq_disable(handle, which.index())
    }
}

impl<'a, K: Kernel> Device<'a, K> {
    /// The eventfd of an enabled notification ([`Context::notify_enable`]):
    /// [`Interrupt::fd`] for an epoll loop, [`Interrupt::take`] to check
    /// without blocking, [`Interrupt::wait_timeout`] to wait.
    pub fn notifier(&self, which: Notification) -> Result<Interrupt<'a, K>, Error> {
        self.interrupt(which.index(), 0)
    }
}
