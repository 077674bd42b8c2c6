//! The context the user owns: containers, the group table and the device
//! table. No global state: two contexts are independent.
//!
//! # Threads
//! Setup, free and close take `&mut self`: they run on one thread, with no
//! device borrowed. Everything reachable from `&self` ([`Context::device`],
//! [`Device`], [`Region`](crate::Region)) may be shared among data-plane
//! threads (the context is `Sync` when its kernel is; the real one is).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{self, Backend, Route, RouteInputs};
use crate::container::{Container, IommuKind};
use crate::device::{Device, DeviceState, Placement};
use crate::dma::{self, DmaBuffer, DmaDirection, DmaOptions, Domain, IommuInfo};
use crate::error::{Error, ErrorKind};
use crate::group::Group;
use crate::iommufd::{self, CdevOpen, Iommufd, Located};
use crate::irq;
use crate::kernel::{Fd, Host, Kernel};
use crate::name::{Bus, DeviceName};
use crate::sys::IrqFlags;
use crate::sysfs;

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
    /// checks it is bound to VFIO, opens (or shares) its group, attaches the
    /// group to the right container, gets the device fd, and describes and
    /// maps its regions. On error nothing is left open or mapped and the
    /// tables are as they were.
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
        self.setup_named(bus, name).map_err(|e| e.for_device(name))
    }

    fn setup_named(&mut self, bus: Option<Bus>, name: DeviceName) -> Result<DeviceHandle, Error> {
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
        self.open_named(bus, name, serial)?;
        self.next_serial = serial + 1; // u64: cannot wrap in practice
        self.iommu_info = None;
        Ok(DeviceHandle { context: self.id, serial })
    }

    /// Opens the device: through its cdev when iommufd may take it and it has
    /// one, else through its group. Whatever only explains a refusal (is the
    /// device bound to VFIO at all?) is read on the error path.
    fn open_named(&mut self, stated: Option<Bus>, name: DeviceName, serial: u64) -> Result<(), Error> {
        let mut stated = stated;
        if let Some((bus, cdev)) = self.cdev_to_take(&name, stated)? {
            match self.open_through_iommufd(bus, name, cdev, serial) {
                Ok(()) => return Ok(()),
                // Listed without a node (noiommu): its group opens it.
                Err(CdevOpen::NoNode) => stated = Some(bus),
                // If the legacy path fails too, iommufd's refusal is the news.
                Err(CdevOpen::Failed(e)) if self.may_fall_back(&e) => {
                    let (bus, group) = sysfs::locate(&self.kernel, &name, Some(bus)).map_err(|_| e)?;
                    return self.open_through_group(&Located { name, bus, group }, Ok(()), serial).map_err(|_| e);
                }
                Err(CdevOpen::Failed(e)) => return Err(sysfs::diagnose(&self.kernel, bus, &name, e)),
            }
        }
        let (bus, group) = sysfs::locate(&self.kernel, &name, stated)?;
        let iommu = match self.route(bus, None) {
            Route::Group { iommu } => iommu,
            Route::Cdev(_) => unreachable!("no cdev was given"),
        };
        self.open_through_group(&Located { name, bus, group }, iommu, serial)
            .map_err(|e| sysfs::diagnose(&self.kernel, bus, &name, e))
    }

    /// The device's bus and cdev, if iommufd may take it (see [`Backend`])
    /// and it has a cdev on the bus stated (or PCI, then platform). The
    /// listing is skipped when the route would not take a cdev anyway.
    fn cdev_to_take(&self, name: &DeviceName, stated: Option<Bus>) -> Result<Option<(Bus, u32)>, Error> {
        let candidates: &[Bus] = match stated {
            Some(Bus::Pci) => &[Bus::Pci],
            Some(Bus::Platform) => &[Bus::Platform],
            None => &[Bus::Pci, Bus::Platform],
        };
        for &bus in candidates {
            if !matches!(self.route(bus, Some(0)), Route::Cdev(_)) {
                return Ok(None);
            }
            if let Some(cdev) = iommufd::find_cdev(&self.kernel, bus, name)? {
                return Ok(Some((bus, cdev)));
            }
        }
        Ok(None)
    }

    /// How to open a device on `bus` with cdev `cdev` (see [`Backend`]).
    fn route(&self, bus: Bus, cdev: Option<u32>) -> Route {
        backend::route(RouteInputs {
            asked: self.backend,
            iommufd: self.iommufd.is_some(),
            iommufd_in_use: self.iommufd_in_use(),
            legacy_in_use: self.legacy.as_ref().is_some_and(|c| c.groups() > 0),
            cdev,
            bus,
        })
    }

    /// Whether `Backend::Auto` tries the legacy path after iommufd refused a
    /// device: while no device uses iommufd yet, for a cdev the user may not
    /// open (access given on the group node only) or a bind the IOMMU
    /// refuses with `EPERM` (no MSI isolation, which the legacy backend may
    /// be configured to accept). Other refusals would recur there.
    fn may_fall_back(&self, e: &Error) -> bool {
        self.backend == Backend::Auto
            && !self.iommufd_in_use()
            && (matches!(e.kind(), ErrorKind::Permission { .. }) || e.errno() == Some(rustix::io::Errno::PERM))
    }

    /// Whether the iommufd address space is in use: devices are attached,
    /// or it keeps mappings the kernel would not remove (the table then holds
    /// them with no IOMMU-backed device open; the legacy path always lets go
    /// of its own). Its next IOMMU-backed device must then be attached there.
    fn iommufd_in_use(&self) -> bool {
        let attached = self.iommufd.as_ref().is_some_and(|i| i.devices() > 0);
        let kept = self.dma.len() > 0 && self.active_backend().is_none();
        attached || kept
    }

    /// Opens the device through its cdev, bound to the context's iommufd and
    /// attached to its IO address space.
    fn open_through_iommufd(&mut self, bus: Bus, name: DeviceName, cdev: u32, serial: u64) -> Result<(), CdevOpen> {
        let iommufd = self.iommufd.as_ref().ok_or(CdevOpen::Failed(Error::new(ErrorKind::NoIommufd)))?;
        let (fd, group) = iommufd.open_device(&self.kernel, cdev, bus, &name)?;
        let placement = Placement { name, bus, group, noiommu: false, via: Backend::Iommufd, serial };
        self.install(placement, fd).map_err(CdevOpen::Failed)?;
        if let Some(iommufd) = self.iommufd.as_mut() {
            iommufd.device_attached();
        }
        Ok(())
    }

    /// Puts a device just opened into the table and describes it there (a
    /// device's state is kilobytes: built in place, it never passes through
    /// setup's stack). On error the state is released (regions unmapped, fd
    /// closed) and the table is as it was. The caller checked there is room.
    fn install(&mut self, at: Placement, fd: Fd) -> Result<(), Error> {
        if let Err(state) = self.devices.push(DeviceState::new(at, fd)) {
            let _ = state.release(&self.kernel);
            return Err(Error::new(ErrorKind::DeviceTableFull { capacity: DEVICES }));
        }
        let described = match self.devices.last_mut() {
            Some(state) => state.describe(&self.kernel),
            None => unreachable!("pushed just above"),
        };
        if let Err(e) = described {
            if let Some(state) = self.devices.pop() {
                // The setup error is the one that matters; a failing munmap
                // during this unwind cannot be acted on either.
                let _ = state.release(&self.kernel);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Opens the device from its group, which is opened (or shared) and
    /// attached to the right container first.
    fn open_through_group(&mut self, at: &Located, iommu: Result<(), ErrorKind>, serial: u64) -> Result<(), Error> {
        let had_noiommu_container = self.noiommu.is_some();
        let slot = self.acquire_group(at.group, iommu)?;
        let group = &self.groups[slot];
        let noiommu = group.kind() == IommuKind::NoIommu;
        let opened = group.device_fd(&self.kernel, &at.name).and_then(|fd| {
            let placement =
                Placement { name: at.name, bus: at.bus, group: at.group, noiommu, via: Backend::Legacy, serial };
            self.install(placement, fd)
        });
        if opened.is_err() {
            // Undo the group's share; the setup error is the one to report.
            let _ = self.release_group(at.group);
            if noiommu && !had_noiommu_container {
                self.close_idle_noiommu_container();
            }
        }
        opened
    }

    /// Closes the noiommu container if no group uses it: a failed setup
    /// takes back the one it opened.
    fn close_idle_noiommu_container(&mut self) {
        if self.noiommu.as_ref().is_some_and(|c| c.groups() == 0) {
            if let Some(container) = self.noiommu.take() {
                container.close(&self.kernel);
            }
        }
    }

    /// Finds or opens group `number` and takes a share of it for one device.
    /// Returns its slot in the group table. A group behind an IOMMU is
    /// refused with `iommu`'s error, if it is one.
    fn acquire_group(&mut self, number: u32, iommu: Result<(), ErrorKind>) -> Result<usize, Error> {
        if let Some(slot) = self.groups.iter().position(|g| g.number() == number) {
            if self.groups[slot].kind() == IommuKind::Type1 {
                iommu.map_err(Error::new)?;
            }
            self.groups[slot].device_opened();
            return Ok(slot);
        }
        if self.groups.is_full() {
            return Err(Error::new(ErrorKind::GroupTableFull { capacity: GROUPS }));
        }
        let mut group = Group::open(&self.kernel, number)?;
        let kernel = &self.kernel;
        let kind = group.kind();
        if let (IommuKind::Type1, Err(refusal)) = (kind, iommu) {
            let _ = group.close(kernel, false);
            return Err(Error::new(refusal));
        }
        let slot = match kind {
            IommuKind::Type1 => &mut self.legacy,
            IommuKind::NoIommu => &mut self.noiommu,
        };
        let opened_container = slot.is_none();
        if opened_container {
            match Container::open(kernel, kind) {
                Ok(container) => *slot = Some(container),
                Err(e) => {
                    let _ = group.close(kernel, false);
                    return Err(e);
                }
            }
        }
        let joined = match slot.as_mut() {
            Some(container) => match group.attach(kernel, container.fd()) {
                Ok(()) => container.group_joined(kernel).map_err(|e| (e, true)),
                Err(e) => Err((e, false)),
            },
            None => unreachable!("opened just above"),
        };
        if let Err((e, attached)) = joined {
            let _ = group.close(kernel, attached);
            if opened_container {
                if let Some(container) = slot.take() {
                    container.close(kernel);
                }
            }
            return Err(e);
        }
        group.device_opened();
        match self.groups.push(group) {
            Ok(()) => Ok(self.groups.len() - 1),
            Err(group) => {
                // Unreachable: fullness was checked first. Undo all the same.
                let _ = self.detach(group);
                Err(Error::new(ErrorKind::GroupTableFull { capacity: GROUPS }))
            }
        }
    }

    /// Releases an open device taken out of the table: its regions, fd and
    /// eventfds, then its share of its group or of the iommufd.
    fn release_device(&mut self, state: DeviceState) -> Result<(), Error> {
        self.iommu_info = None;
        if state.via == Backend::Iommufd {
            return self.release_iommufd_device(state);
        }
        let group = state.group;
        let released = state.release(&self.kernel);
        let detached = self.release_group(group);
        released.and(detached)
    }

    /// Closes a device opened through iommufd. The last one takes the DMA
    /// mappings with it, as the last legacy group does: they are removed
    /// from the IO address space while it is still attached, then the
    /// memory is released. If the kernel keeps some, the address space is
    /// replaced (closing the old one drops them) before the memory goes. If
    /// even that fails, the mappings stay, in the table as in the address
    /// space (the next device attached finds them; `dma_free` can retry; the
    /// context's drop releases them after closing the iommufd), and the
    /// unmap's error is returned.
    fn release_iommufd_device(&mut self, state: DeviceState) -> Result<(), Error> {
        let Some(iommufd) = self.iommufd.as_mut() else {
            return state.release(&self.kernel);
        };
        let domain = Domain::Ioas { iommufd: iommufd.fd(), ioas: iommufd.ioas() };
        let takes_dma = iommufd.devices() == 1 && self.dma.len() > 0;
        let unmapped = if takes_dma { self.dma.unmap_all_from_iommu(&self.kernel, domain) } else { Ok(()) };
        // Closing the cdev detaches the device from the IO address space.
        let result = state.release(&self.kernel);
        iommufd.device_detached();
        if !takes_dma {
            return result;
        }
        match unmapped {
            Ok(()) => self.dma.forget_all(&self.kernel),
            Err(_) if self.renew_iommufd() => self.dma.forget_all(&self.kernel),
            Err(e) => return result.and(Err(e)),
        }
        result
    }

    /// Replaces the iommufd with a fresh one; returns whether it did (the
    /// old one, closed, took its mappings with it).
    fn renew_iommufd(&mut self) -> bool {
        let Ok(fresh) = Iommufd::open(&self.kernel) else { return false };
        if let Some(old) = self.iommufd.replace(fresh) {
            old.close(&self.kernel);
        }
        true
    }

    /// Gives back one device's share of group `number`; the last share
    /// detaches and closes it.
    fn release_group(&mut self, number: u32) -> Result<(), Error> {
        let Some(slot) = self.groups.iter().position(|g| g.number() == number) else {
            return Ok(());
        };
        if self.groups[slot].device_closed() > 0 {
            return Ok(());
        }
        let group = self.groups.swap_remove(slot);
        self.detach(group)
    }

    /// Detaches a group from its container and closes it.
    fn detach(&mut self, group: Group) -> Result<(), Error> {
        let kind = group.kind();
        // The last IOMMU-backed group takes the IOMMU domain, and with it the
        // DMA mappings: remove them first, while the domain still exists.
        let legacy = self.legacy.as_ref().filter(|_| kind == IommuKind::Type1);
        let last_domain_group = legacy.is_some_and(|c| c.groups() == 1) && self.dma.len() > 0;
        let dma_unmapped = match legacy {
            Some(c) if last_domain_group => self.dma.unmap_all_from_iommu(&self.kernel, Domain::Type1(c.fd())).is_ok(),
            _ => false,
        };
        let result = group.close(&self.kernel, true);
        // Mappings go only once no device can reach them: every one removed,
        // or the domain gone with the group. If the kernel refused both the
        // unmaps and the detach, the domain may live on (another reference
        // to the group keeps it attached): the mappings stay in the table,
        // stranded, so the caller is never told that memory the IOMMU may
        // still map is free. They go when the context drops.
        if last_domain_group && !dma_unmapped && result.is_err() {
            self.dma.strand_all();
        } else if last_domain_group {
            self.dma.forget_all(&self.kernel);
        }
        match kind {
            IommuKind::Type1 => {
                if let Some(container) = &mut self.legacy {
                    container.group_left();
                    if container.groups() == 0 && self.iommufd.is_some() {
                        // Opened for its groups (Auto, beside iommufd): it
                        // goes with the last.
                        if let Some(container) = self.legacy.take() {
                            container.close(&self.kernel);
                        }
                    } else if container.groups() == 0 && result.is_err() {
                        self.renew_iommu_container();
                    }
                }
            }
            IommuKind::NoIommu => {
                // The container stays open for the next noiommu group (its
                // open and close would cost every setup and free three
                // system calls); it closes with the context.
                if let Some(container) = &mut self.noiommu {
                    container.group_left();
                }
            }
        }
        result
    }

    /// After a failed `VFIO_GROUP_UNSET_CONTAINER` the kernel may keep the
    /// group attached (its release waits for every reference to the device
    /// file), and with it the container's IOMMU type, which a new group could
    /// then not set. Start over with a fresh container; the kernel frees the
    /// old one with its last reference. If none can be opened, keep the old
    /// one and assume its type is still set.
    fn renew_iommu_container(&mut self) {
        match Container::open(&self.kernel, IommuKind::Type1) {
            Ok(fresh) => {
                if let Some(old) = self.legacy.replace(fresh) {
                    old.close(&self.kernel);
                }
            }
            Err(_) => {
                if let Some(container) = &mut self.legacy {
                    container.assume_type_kept();
                }
            }
        }
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
        let state = self.devices.swap_remove(slot);
        let name = state.name;
        self.release_device(state).map_err(|e| e.for_device(name))
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

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Releases every device, group, container, the iommufd and the DMA
    /// memory: a drop, or a close in place.
    fn release_all(&mut self) {
        while let Some(state) = self.devices.pop() {
            let _ = self.release_device(state);
        }
        while let Some(group) = self.groups.pop() {
            let _ = self.detach(group);
        }
        for container in [self.noiommu.take(), self.legacy.take()].into_iter().flatten() {
            container.close(&self.kernel);
        }
        if let Some(iommufd) = self.iommufd.take() {
            iommufd.close(&self.kernel);
        }
        // Mappings an IO address space kept (see `release_iommufd_device`)
        // went with the iommufd just closed, and stranded ones (see
        // `detach`) with their container: their memory can go too.
        self.dma.release_all(&self.kernel);
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
