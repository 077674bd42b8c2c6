//! The context the user owns: containers, the group table and the device
//! table. No global state: two contexts are independent.
//!
//! # Threads
//! Setup, free and close take `&mut self`: they run on one thread, with no
//! device borrowed. Everything reachable from `&self` ([`Context::device`],
//! [`Device`], [`Region`](crate::Region)) may be shared among data-plane
//! threads (the context is `Sync` when its kernel is; the real one is).

use core::sync::atomic::{AtomicU64, Ordering};

mod opening;
mod releasing;
mod sriov;

use crate::backend::Backend;
use crate::container::{Container, IommuKind};
use crate::device::{Device, DeviceState};
use crate::dma::{self, DmaBuffer, DmaDirection, DmaOptions, Domain, IommuInfo};
use crate::error::{Error, ErrorKind};
use crate::group::Group;
use crate::iommufd::Iommufd;
use crate::irq;
#[cfg(feature = "capi")]
use crate::kernel::Fd;
use crate::kernel::{Host, Kernel};
use crate::name::{Bus, DeviceName};
use crate::sys::IrqFlags;

/// Distinguishes contexts, so a handle cannot be used with another one.
static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The id of a context that is not open (ids handed out start at 1).
const UNOPENED: u64 = 0;

/// Default capacity of the device table.
pub const DEFAULT_DEVICES: usize = 8;
/// Default capacity of the group table.
pub const DEFAULT_GROUPS: usize = 8;
/// Default capacity of the DMA mapping table.
pub const DEFAULT_DMA: usize = 32;

/// A device opened by [`Context::setup`]. Not `Copy` or `Clone`:
/// [`Context::free`] consumes it, so a freed device cannot be used again.
///
/// ```compile_fail
/// # fn f(mut ctx: dao_vfio::Context) -> Result<(), dao_vfio::Error> {
/// let edu = ctx.setup("0000:00:02.0")?;
/// ctx.free(edu)?;
/// let _ = ctx.device(&edu); // use after free: does not compile
/// # Ok(()) }
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a device handle is the only way to free the device before the context drops"]
pub struct DeviceHandle {
    context: u64,
    serial: u64,
}

impl DeviceHandle {
    /// A handle no context gave out, for unit tests of code that keeps them.
    #[cfg(test)]
    pub(crate) fn for_tests(serial: u64) -> Self {
        DeviceHandle { context: 0, serial }
    }
}

/// A DMA mapping made by [`Context::dma_alloc`] or [`Context::dma_map_raw`].
/// Not `Copy` or `Clone`: [`Context::dma_free`] consumes it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a DMA handle is the only way to free the mapping before the context drops"]
pub struct DmaHandle {
    context: u64,
    serial: u64,
}

/// The state of the library: what `dao_vfio_init` creates and `dao_vfio_fini`
/// destroys, as a value the caller owns (it may live in a `static`).
///
/// `K` is the kernel ([`Host`] on a real system); `DEVICES`, `GROUPS` and
/// `DMA` are the capacities of the device, group and DMA mapping tables,
/// fixed at compile time.
///
/// Borrowing rules make misuse fail to compile: a region cannot outlive the
/// context or survive the free of its device, and the context cannot be
/// dropped while a device is borrowed:
///
/// ```compile_fail
/// # fn f(mut ctx: dao_vfio::Context) -> Result<(), dao_vfio::Error> {
/// let edu = ctx.setup("0000:00:02.0")?;
/// let bar0 = ctx.device(&edu)?.region(0)?;
/// ctx.free(edu)?;            // needs `&mut ctx` while bar0 borrows it
/// let _ = bar0.read32(0);
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # fn f(ctx: dao_vfio::Context, edu: dao_vfio::DeviceHandle) -> Result<(), dao_vfio::Error> {
/// let dev = ctx.device(&edu)?;
/// drop(ctx);                  // the device cannot outlive its context
/// let _ = dev.name();
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # fn f(mut ctx: dao_vfio::Context, edu: dao_vfio::DeviceHandle) -> Result<(), dao_vfio::Error> {
/// let bar0 = ctx.device(&edu)?.region(0)?;
/// let other = ctx.setup("9010000.pl031")?; // setup needs exclusive access
/// let _ = bar0.read32(0);
/// # Ok(()) }
/// ```
pub struct Context<
    K: Kernel = Host,
    const DEVICES: usize = DEFAULT_DEVICES,
    const GROUPS: usize = DEFAULT_GROUPS,
    const DMA: usize = DEFAULT_DMA,
> {
    kernel: K,
    id: u64,
    next_serial: u64,
    /// The interface asked for.
    backend: Backend,
    /// The legacy container for groups behind a real IOMMU: opened with the
    /// context unless iommufd serves it; else opened when a group needs it,
    /// and closed with its last group.
    legacy: Option<Container>,
    /// `/dev/iommu` and the context's IO address space (iommufd backend).
    iommufd: Option<Iommufd>,
    /// The container for noiommu groups; opened with the first, kept until
    /// the context closes.
    noiommu: Option<Container>,
    groups: heapless::Vec<Group, GROUPS>,
    devices: heapless::Vec<DeviceState, DEVICES>,
    dma: dma::Table<DMA>,
    /// What the IOMMU allowed when DMA last asked (page sizes and IOVA
    /// ranges, which depend on the devices attached): forgotten whenever a
    /// device is set up or freed, so a map makes one system call, not two.
    iommu_info: Option<IommuInfo>,
}

impl Context<Host> {
    /// Opens a context on the running kernel with the default capacities and
    /// [`Backend::Auto`]: iommufd (`/dev/iommu`, with an IO address space)
    /// if the kernel has it, else the legacy container (`/dev/vfio/vfio`,
    /// whose API version is checked).
    #[doc(alias = "dao_vfio_init")]
    pub fn open() -> Result<Self, Error> {
        Self::with_kernel(Host)
    }

    /// Like [`Context::open`], with the interface given.
    pub fn open_with(backend: Backend) -> Result<Self, Error> {
        Self::with_backend(Host, backend)
    }
}

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Opens a context on `kernel` (the real [`Host`], or a fake one in
    /// tests), with [`Backend::Auto`].
    pub fn with_kernel(kernel: K) -> Result<Self, Error> {
        Self::with_backend(kernel, Backend::Auto)
    }

    /// Opens a context on `kernel` with the interface given. With
    /// [`Backend::Auto`] a kernel without a usable `/dev/iommu` gets the
    /// legacy container, whose errors then say what is missing.
    pub fn with_backend(kernel: K, backend: Backend) -> Result<Self, Error> {
        let mut context = Self::unopened(kernel, backend);
        context.open_in_place()?;
        Ok(context)
    }

    /// A context that has opened nothing yet, with empty tables. `const`, so
    /// that it can initialize a `static`: a context with large tables then
    /// lives in static storage and never passes through the stack (its size
    /// grows with `DEVICES`; see README's "Memory"). Open it with
    /// [`Context::open_in_place`]; until then, [`Context::setup`] refuses
    /// with [`ErrorKind::ContextNotOpen`].
    ///
    /// ```no_run
    /// use std::sync::Mutex;
    /// use dao_vfio::{Backend, Context, Host};
    ///
    /// static VFIO: Mutex<Context<Host, 64, 64, 8>> = Mutex::new(Context::unopened(Host, Backend::Auto));
    ///
    /// # fn f() -> Result<(), dao_vfio::Error> {
    /// let mut vfio = VFIO.lock().unwrap();
    /// vfio.open_in_place()?;
    /// let edu = vfio.setup("0000:00:01.0")?;
    /// vfio.free(edu)?;
    /// vfio.close_in_place()?;
    /// # Ok(()) }
    /// ```
    pub const fn unopened(kernel: K, backend: Backend) -> Self {
        Context {
            kernel,
            id: UNOPENED,
            next_serial: 0,
            backend,
            legacy: None,
            iommufd: None,
            noiommu: None,
            groups: heapless::Vec::new(),
            devices: heapless::Vec::new(),
            dma: dma::Table::new(),
            iommu_info: None,
        }
    }

    /// Opens an [unopened](Context::unopened) context where it is, as
    /// [`Context::with_backend`] opens a new one; an open context is left as
    /// it is. On error nothing is opened.
    pub fn open_in_place(&mut self) -> Result<(), Error> {
        if self.id != UNOPENED {
            return Ok(());
        }
        let kernel = &self.kernel;
        let (legacy, iommufd) = match self.backend {
            Backend::Legacy => (Some(Container::open(kernel, IommuKind::Type1)?), None),
            Backend::Iommufd => (None, Some(Iommufd::open(kernel)?)),
            Backend::Auto => match Iommufd::open(kernel) {
                Ok(iommufd) => (None, Some(iommufd)),
                Err(_) => (Some(Container::open(kernel, IommuKind::Type1)?), None),
            },
        };
        (self.legacy, self.iommufd) = (legacy, iommufd);
        self.id = NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the context where it is, as [`Context::close`] does, leaving it
    /// [unopened](Context::unopened) (it may be opened again). Refused while
    /// devices are open ([`ErrorKind::DevicesOpen`]), changing nothing.
    pub fn close_in_place(&mut self) -> Result<(), Error> {
        if !self.devices.is_empty() {
            return Err(Error::new(ErrorKind::DevicesOpen { count: self.devices.len() }));
        }
        self.release_all();
        self.id = UNOPENED;
        self.next_serial = 0;
        self.iommu_info = None;
        Ok(())
    }

    /// The kernel this context talks to.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// How many devices are open.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// How many groups are open (devices opened through iommufd hold none).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The interface asked for when the context was opened.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The interface the context's IOMMU-backed devices use now:
    /// [`Backend::Iommufd`] or [`Backend::Legacy`]; `None` while none is open.
    pub fn active_backend(&self) -> Option<Backend> {
        if self.iommufd.as_ref().is_some_and(|i| i.devices() > 0) {
            Some(Backend::Iommufd)
        } else if self.legacy.as_ref().is_some_and(|c| c.groups() > 0) {
            Some(Backend::Legacy)
        } else {
            None
        }
    }

    /// Sets up device `name` on whichever bus has it (PCI is tried first):
    /// opens its cdev (iommufd) or opens (or shares) its group and attaches
    /// it to the right container, gets the device fd, and describes and maps
    /// its regions. A device not bound to VFIO is refused as such
    /// ([`ErrorKind::NotBound`], [`ErrorKind::WrongDriver`]), found out when a
    /// step fails. On error nothing is left open or mapped and the tables
    /// are as they were.
    #[doc(alias = "dao_vfio_device_setup")]
    pub fn setup(&mut self, name: &str) -> Result<DeviceHandle, Error> {
        self.setup_checked(None, name)
    }

    /// Like [`Context::setup`], on the bus given.
    pub fn setup_on(&mut self, bus: Bus, name: &str) -> Result<DeviceHandle, Error> {
        self.setup_checked(Some(bus), name)
    }

    fn setup_checked(&mut self, bus: Option<Bus>, name: &str) -> Result<DeviceHandle, Error> {
        let name = DeviceName::new(name)?;
        self.setup_named(bus, name, None).map_err(|e| e.for_device(name))
    }

    fn setup_named(
        &mut self,
        bus: Option<Bus>,
        name: DeviceName,
        vf_token: Option<&crate::VfToken>,
    ) -> Result<DeviceHandle, Error> {
        if self.id == UNOPENED {
            return Err(Error::new(ErrorKind::ContextNotOpen));
        }
        if self.devices.iter().any(|d| d.name == name) {
            return Err(Error::new(ErrorKind::AlreadyOpen));
        }
        if self.devices.is_full() {
            return Err(Error::new(ErrorKind::DeviceTableFull { capacity: DEVICES }));
        }
        let serial = self.next_serial;
        self.open_named(bus, name, serial, vf_token)?;
        self.next_serial = serial + 1; // u64: cannot wrap in practice
        self.iommu_info = None;
        Ok(DeviceHandle { context: self.id, serial })
    }

    /// The device behind `handle`. The borrow keeps the device open.
    pub fn device(&self, handle: &DeviceHandle) -> Result<Device<'_, K>, Error> {
        self.slot(handle).map(|slot| self.devices[slot].view(&self.kernel))
    }

    fn slot(&self, handle: &DeviceHandle) -> Result<usize, Error> {
        if handle.context != self.id {
            return Err(Error::new(ErrorKind::ForeignHandle));
        }
        self.devices.iter().position(|d| d.serial == handle.serial).ok_or(Error::new(ErrorKind::ForeignHandle))
    }

    /// Every open device.
    pub fn devices(&self) -> impl Iterator<Item = Device<'_, K>> {
        self.devices.iter().map(|d| d.view(&self.kernel))
    }

    /// Frees a device: unmaps its regions, closes its fd and gives back its
    /// share of the group (the last device detaches and closes the group) or
    /// of the iommufd.
    /// Everything is released even when a step fails; the first failure is
    /// returned. A handle of another context is refused and changes nothing.
    #[doc(alias = "dao_vfio_device_free")]
    pub fn free(&mut self, handle: DeviceHandle) -> Result<(), Error> {
        let slot = self.slot(&handle)?;
        let name = self.devices[slot].name;
        self.release_device(slot).map_err(|e| e.for_device(name))
    }

    /// Closes the context. Refused while devices are open: the context comes
    /// back with the error, unchanged.
    #[doc(alias = "dao_vfio_fini")]
    // Handing the context back is the point (as heapless' `push` hands the
    // item back); it is as large as its tables, by design.
    #[allow(clippy::result_large_err)]
    pub fn close(self) -> Result<(), (Self, Error)> {
        if !self.devices.is_empty() {
            let count = self.devices.len();
            return Err((self, Error::new(ErrorKind::DevicesOpen { count })));
        }
        drop(self);
        Ok(())
    }

    /// Binds `count` new eventfds to vectors `0..count` of interrupt `index`
    /// (`VFIO_DEVICE_SET_IRQS` with `ACTION_TRIGGER`); get them with
    /// [`Device::interrupt`]. For PCI, enable bus mastering for MSI/MSI-X
    /// first ([`Device::enable_bus_master`]). On error nothing stays bound.
    pub fn irq_enable(&mut self, handle: &DeviceHandle, index: u32, count: u32) -> Result<(), Error> {
        let slot = self.slot(handle)?;
        let state = &mut self.devices[slot];
        let name = state.name;
        let (flags, available) = match state.describe_irq(&self.kernel, index)? {
            irq if irq.count() > 0 && irq.flags().contains(IrqFlags::EVENTFD) => (irq.flags(), irq.count()),
            _ => return Err(Error::new(ErrorKind::NoSuchIrq { index }).for_device(name)),
        };
        let fd = state.fd();
        irq::enable(&self.kernel, fd, &mut state.bound, index, flags, available, count).map_err(|e| e.for_device(name))
    }

    /// Unbinds every vector of interrupt `index` and closes their eventfds.
    pub fn irq_disable(&mut self, handle: &DeviceHandle, index: u32) -> Result<(), Error> {
        let slot = self.slot(handle)?;
        let state = &mut self.devices[slot];
        let (name, fd) = (state.name, state.fd());
        irq::disable(&self.kernel, fd, &mut state.bound, index).map_err(|e| e.for_device(name))
    }

    /// The IOMMU address space DMA maps into: the iommufd IOAS or the type1
    /// container, whichever has IOMMU-backed devices (never both).
    fn dma_domain(&self) -> Result<Domain, Error> {
        if let Some(iommufd) = self.iommufd.as_ref().filter(|i| i.devices() > 0) {
            return Ok(Domain::Ioas { iommufd: iommufd.fd(), ioas: iommufd.ioas() });
        }
        if let Some(container) = self.legacy.as_ref().filter(|c| c.groups() > 0) {
            return Ok(Domain::Type1(container.fd()));
        }
        match self.noiommu.as_ref().filter(|c| c.groups() > 0) {
            Some(_) => Err(Error::new(ErrorKind::NoIommuDma)),
            None => Err(Error::new(ErrorKind::NoDmaDomain)),
        }
    }

    /// What the IOMMU allows: page sizes, usable IOVA ranges, mappings left
    /// (asked afresh).
    pub fn iommu_info(&self) -> Result<IommuInfo, Error> {
        dma::iommu_info(&self.kernel, self.dma_domain()?)
    }

    /// The DMA domain and what it allows, asked once per set of devices.
    fn domain_and_info(&mut self) -> Result<(Domain, IommuInfo), Error> {
        let domain = self.dma_domain()?;
        if let Some(info) = &self.iommu_info {
            return Ok((domain, info.clone()));
        }
        let info = dma::iommu_info(&self.kernel, domain)?;
        self.iommu_info = Some(info.clone());
        Ok((domain, info))
    }

    /// Allocates anonymous memory of at least `len` bytes (rounded up to the
    /// page size) and maps it for DMA at an IOVA inside the IOMMU's allowed
    /// ranges. The memory is released after its mapping is removed, by
    /// [`Context::dma_free`] or when the context lets go of it.
    pub fn dma_alloc(&mut self, len: usize, options: DmaOptions) -> Result<DmaHandle, Error> {
        self.dma_domain()?;
        if self.dma.len() == DMA {
            return Err(Error::new(ErrorKind::DmaTableFull { capacity: DMA }));
        }
        let (domain, info) = self.domain_and_info()?;
        let unit = dma::allocation_unit(&info, &options);
        let locked_before = self.dma.mlock_charge(domain);
        let (base, len) = dma::allocate(&self.kernel, len, unit, &options, locked_before)?;
        let memory = dma::Memory {
            vaddr: base,
            len,
            iova: options.iova,
            direction: options.direction,
            owned: true,
            align: unit as u64,
            locked: options.locked,
        };
        // SAFETY: the memory is fresh, owned by the table from here on, and
        // released only after its mapping is removed.
        match unsafe { self.dma.map(&self.kernel, domain, &info, memory) } {
            Ok(serial) => Ok(DmaHandle { context: self.id, serial }),
            Err(e) => {
                dma::deallocate(&self.kernel, base, len);
                Err(e)
            }
        }
    }

    /// Maps the caller's memory `vaddr..vaddr + len` for DMA, at `iova` or at
    /// an address the allocator picks. `vaddr` and `len` must be multiples of
    /// the IOMMU page size (and of 4 KiB). Memory this context already maps
    /// (a buffer's, or another raw mapping's) is refused with
    /// [`ErrorKind::DmaMemoryMapped`]: one piece of memory has one handle,
    /// so one view at a time.
    ///
    /// # Safety
    /// - `vaddr..vaddr + len` is valid for reads and writes (whatever the
    ///   direction: [`DmaBuffer`] may write it) for as long as it is mapped.
    /// - From this call until the mapping is removed — by a successful
    ///   [`Context::dma_free`], by dropping the context, or by freeing the
    ///   last IOMMU-backed device — the memory must not be freed, unmapped or
    ///   remapped, and must be used only through raw pointers with atomic or
    ///   volatile accesses (or system calls): the device may read or write it
    ///   at any moment, so creating a Rust reference to it, or having one alive
    ///   at this call, is undefined behaviour.
    /// - Accesses made outside [`DmaBuffer`] while a view of it is in use on
    ///   another thread must not overlap the bytes that view touches.
    pub unsafe fn dma_map_raw(
        &mut self,
        vaddr: core::ptr::NonNull<u8>,
        len: usize,
        iova: Option<u64>,
        direction: DmaDirection,
    ) -> Result<DmaHandle, Error> {
        let (domain, info) = self.domain_and_info()?;
        let memory = dma::Memory { vaddr, len: len as u64, iova, direction, owned: false, align: 0, locked: false };
        // SAFETY: forwarded from this function's contract.
        let serial = unsafe { self.dma.map(&self.kernel, domain, &info, memory)? };
        Ok(DmaHandle { context: self.id, serial })
    }

    /// The DMA buffer or mapping behind `handle`. The view borrows the handle
    /// exclusively, so one thread at a time copies in and out of a buffer
    /// (other threads may use other buffers, and the context, meanwhile).
    pub fn dma<'a>(&'a self, handle: &'a mut DmaHandle) -> Result<DmaBuffer<'a>, Error> {
        if handle.context != self.id {
            return Err(Error::new(ErrorKind::ForeignHandle));
        }
        self.dma.get(handle.serial).ok_or(Error::new(ErrorKind::ForeignHandle))
    }

    /// Removes a DMA mapping from the IOMMU, then releases its memory (for
    /// buffers from [`Context::dma_alloc`]). If the IOMMU refuses, the handle
    /// comes back with the error and the mapping (and the memory behind it)
    /// is still in place, to retry or to leave to the context, which removes
    /// it when it drops or when the last IOMMU-backed device is freed. (If
    /// only the release of the memory fails, the mapping is gone and the
    /// returned handle names nothing.)
    #[allow(clippy::result_large_err)] // handing the handle back is the point
    pub fn dma_free(&mut self, handle: DmaHandle) -> Result<(), (DmaHandle, Error)> {
        if handle.context != self.id {
            return Err((handle, Error::new(ErrorKind::ForeignHandle)));
        }
        if self.dma.is_stranded(handle.serial) {
            return Err((handle, Error::new(ErrorKind::DmaStranded)));
        }
        let domain = match self.dma_domain() {
            Ok(domain) => domain,
            Err(e) => return Err((handle, e)),
        };
        self.dma.unmap(&self.kernel, domain, handle.serial).map_err(|e| (handle, e))
    }

    /// The fd of open group `number` (for the C interface's `group_fd`).
    #[cfg(feature = "capi")]
    pub(crate) fn group_fd(&self, number: u32) -> Option<Fd> {
        self.groups.iter().find(|g| g.number() == number).map(Group::fd)
    }

    /// The IOMMU type in force in the type1 container (`VFIO_TYPE1v2_IOMMU`,
    /// `VFIO_TYPE1_IOMMU`), while it has groups.
    pub fn iommu_type(&self) -> Option<u32> {
        self.legacy.as_ref().and_then(Container::iommu_type)
    }
}

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Drop for Context<K, DEVICES, GROUPS, DMA> {
    /// Frees every device (removing DMA mappings before the last
    /// IOMMU-backed device goes), then closes the containers and the
    /// iommufd. Never panics; errors are dropped (use [`Context::free`] to
    /// see them).
    fn drop(&mut self) {
        self.release_all();
    }
}

impl<K: Kernel + core::fmt::Debug, const DEVICES: usize, const GROUPS: usize, const DMA: usize> core::fmt::Debug
    for Context<K, DEVICES, GROUPS, DMA>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context")
            .field("kernel", &self.kernel)
            .field("devices", &self.devices.len())
            .field("groups", &self.groups.len())
            .field("dma_mappings", &self.dma.len())
            .field("backend", &self.backend)
            .field("active_backend", &self.active_backend())
            .field("iommu_type", &self.iommu_type())
            .finish_non_exhaustive()
    }
}
