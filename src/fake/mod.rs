//! A fake kernel for tests: `/dev/vfio`, sysfs links, groups, containers and
//! device regions modelled in memory, with the kernel's rules (viability, one
//! IOMMU type per container, noiommu groups apart, EINVAL for absent regions),
//! and failure injection: any chosen system call can fail with a chosen errno.
//!
//! Binding is modelled too ([`crate::bind`]): each device's `driver_override`,
//! `driver/unbind`, the buses' `drivers_probe` and `drivers/DRIVER/bind`,
//! loaded driver modules ([`FakeKernel::set_driver_loaded`]), a device's
//! default driver, devices in use (unbind fails with `EBUSY`), and the sysfs
//! directories `bind::status` lists.
//!
//! So is SR-IOV, as Linux 6.12 and vfio-pci do it: a PF
//! ([`PciDeviceBuilder::sriov_pf`]) creates and removes VFs through its
//! `sriov_numvfs` (each VF a PCI device in its own IOMMU group, with
//! `physfn` and `virtfnK` links, captured by vfio-pci when the PF is on it,
//! which needs its `enable_sriov`: [`FakeKernel::set_vfio_pci_enable_sriov`]),
//! and vfio-pci guards a PF's VFs with its VF token
//! ([`FakeKernel::vf_token`]): `"NAME vf_token=UUID"` in
//! `VFIO_GROUP_GET_DEVICE_FD`, `VFIO_DEVICE_FEATURE` setting it on the PF.
//!
//! Available with the `fake` feature, so drivers built on this crate can be
//! unit-tested on a machine with no VFIO at all.
//!
//! # Threads
//! The fake's regions are ordinary memory, not device memory, where two
//! threads' unsynchronized accesses to one register, one writing, would be a
//! data race. So the fake is an emulated kernel ([`crate::Kernel::emulation`]):
//! every register access of a [`Region`](crate::Region) (`read32`,
//! `write64`...) and every `pread`/`pwrite` goes through the fake, under its
//! lock, whatever the widths, and threads may share regions as they do on
//! hardware. A register block ([`Region::block`](crate::Region::block)) is
//! the exception: its cells are read and written directly, so making one
//! ties the region to the thread that made it (a block is not `Sync`), and
//! any other thread's access to that region panics, saying so, until the
//! region is unmapped. The device side of DMA ([`FakeKernel::dma_write`],
//! [`FakeKernel::dma_read`]) copies plainly into the driver's buffers, so it
//! is `unsafe`: no other thread may use those bytes during the copy.
//!
//! ```
//! use dao_vfio::fake::{FakeDevice, FakeKernel};
//! use dao_vfio::Context;
//!
//! let kernel = FakeKernel::new();
//! kernel.add_device(FakeDevice::edu("0000:00:02.0", 3));
//! let mut vfio: Context<&FakeKernel> = Context::with_kernel(&kernel).unwrap();
//! let edu = vfio.setup("0000:00:02.0").unwrap();
//! assert_eq!(vfio.device(&edu).unwrap().region(0).unwrap().read32(0), Ok(0x010000ed));
//! vfio.free(edu).unwrap();
//! drop(vfio);
//! assert_eq!(kernel.open_fds(), 0);
//! ```
//!
//! # Testing your driver
//! A driver is unit-tested against the fake in four steps; `examples/edu/`
//! is a complete driver written this way, and `tests/fake_edu.rs` its tests
//! against an edu model.
//!
//! 1. **Describe the device**: [`PciDeviceBuilder`] (IDs, class, BARs with
//!    their sizes and flags, INTx, MSI, MSI-X, capabilities: config space
//!    is written as vfio-pci shows it) or [`PlatformDeviceBuilder`]
//!    (regions, level or edge interrupts). [`FakeDevice::edu`] and
//!    [`FakeDevice::platform`] are presets matching the virtual boards.
//! 2. **Give it behaviour**: implement [`DeviceModel`] (what a register read
//!    returns, what a write does; raise interrupts and do DMA through the
//!    [`DeviceContext`]) and add it with [`FakeKernel::add_modelled_device`].
//!    The model runs synchronously when the driver touches a register or
//!    reads or polls an interrupt eventfd: deterministic, and free of data
//!    races (see [`DeviceModel`] for why). A device added with
//!    [`FakeKernel::add_device`] has plain memory for registers instead.
//! 3. **Write the driver generic over the kernel**: `struct Driver<K: Kernel>
//!    { vfio: Context<K>, dev: DeviceHandle, .. }`, built from a context the
//!    caller opens (`Context::open()` in the program,
//!    `Context::with_kernel(&kernel)` in the test). What the data plane
//!    touches borrows from the context, so it lives in a second struct
//!    made once (`driver.data_plane()?`: the region, checked once to be
//!    mapped and large enough, the `Interrupt`, the DMA views), and the
//!    loop then makes register accesses only. Reach a modelled device's
//!    registers with the offset accessors (`read32`, `write64`...): a typed
//!    register block's plain loads and stores cannot be seen by a model, so
//!    [`Region::block`](crate::Region::block) over one is refused with
//!    [`AccessError::NotEmulable`](crate::AccessError::NotEmulable).
//!    A [`Region`](crate::Region) accessor's `AccessError` does not name
//!    the device or region (a region does not know its device): where that
//!    matters, check through the device ([`Device::block`](crate::Device::block))
//!    or `map_err(|e| dev.access_error(0, e))`.
//! 4. **Break it**: [`FakeKernel::fail_step`] makes the n-th call of a step
//!    fail (`fail_step(Step::Mmap(0), 1, Errno::NOMEM)`: the next mmap of
//!    BAR 0), [`FakeKernel::fail_call`] the n-th system call from now; then
//!    check the error, and that nothing leaked: [`FakeKernel::open_fds`],
//!    [`FakeKernel::live_mappings`], [`FakeKernel::dma_mappings`].
//!    [`FakeKernel::trace`] lists every call with its step (the ioctl's
//!    name, the region of an mmap) and marks the one that failed;
//!    [`FakeKernel::failed_call`] finds it (the trace ends with the clean-up).
//!
//! The annotation: `let vfio: Context<&FakeKernel> = Context::with_kernel(&kernel)?;`.
//! `Context` has three capacity parameters (`DEVICES`, `GROUPS`, `DMA`)
//! with defaults, and Rust uses defaults only where a type is written, never
//! to infer one: without the annotation, `Context::with_kernel(&kernel)`
//! leaves them unknown and fails with E0284 ("type annotations needed").
//! Passing the context straight to a function that takes `Context<K>`, as
//! `Driver::open(Context::with_kernel(&kernel)?, name)` does, fixes them too.
//!
//! What the fake enforces, as hardware does, so that a driver bug fails the
//! test: a PCI device's MSI and MSI-X are not delivered, and its DMA is
//! refused, while bus mastering is off in its command register; DMA outside
//! the IOMMU's mappings faults; a write-only register reads as the model
//! says; contents longer than their region are a set-up bug
//! ([`FakeKernel::add_device`] panics, saying so); a poll without timeout
//! on an eventfd nothing will signal fails with `EDEADLK` instead of hanging.
//!
//! ```
//! use dao_vfio::fake::{DeviceContext, DeviceModel, FakeBar, FakeKernel, PciDeviceBuilder};
//! use dao_vfio::sys::pci_irq;
//! use dao_vfio::{Context, PciCommand};
//!
//! /// A device with a doorbell at 0x0 (write-only) and a status at 0x4:
//! /// ringing it completes one job and sends an MSI.
//! #[derive(Default)]
//! struct Doorbell { done: u32 }
//!
//! impl DeviceModel for Doorbell {
//!     fn read(&mut self, _: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize) -> u64 {
//!         if offset == 4 { u64::from(self.done) } else { 0 }
//!     }
//!     fn write(&mut self, ctx: &mut DeviceContext<'_>, _: u32, offset: u64, _: usize, _: u64) {
//!         if offset == 0 {
//!             self.done += 1;
//!             ctx.raise_irq(pci_irq::MSI, 0);
//!         }
//!     }
//! }
//!
//! let kernel = FakeKernel::new();
//! let dev = PciDeviceBuilder::new("0000:00:05.0", 4).ids(0x1af4, 0x10f0).bar(0, FakeBar::memory32(0x1000)).msi(1);
//! kernel.add_modelled_device(dev.build(), Doorbell::default());
//!
//! let mut vfio: Context<&FakeKernel> = Context::with_kernel(&kernel).unwrap();
//! let h = vfio.setup("0000:00:05.0").unwrap();
//! vfio.device(&h).unwrap().pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER).unwrap();
//! vfio.irq_enable(&h, pci_irq::MSI, 1).unwrap();
//! let dev = vfio.device(&h).unwrap();
//! let (bar, msi) = (dev.region(0).unwrap(), dev.interrupt(pci_irq::MSI, 0).unwrap());
//! bar.write32(0, 1).unwrap();
//! assert_eq!(msi.wait().unwrap(), 1);
//! assert_eq!((bar.read32(4).unwrap(), bar.read32(0).unwrap()), (1, 0));
//! vfio.free(h).unwrap();
//! ```

mod behaviour;
mod builder;
mod device;
mod iommufd;
mod memory;
mod model;
mod paths;
mod privilege;
mod procfs;
mod sriov;
mod sysfs;
mod trace;

use core::ffi::CStr;
use core::ptr::NonNull;
use core::time::Duration;
use std::boxed::Box;
use std::string::{String, ToString};
use std::sync::{Mutex, MutexGuard};
use std::vec::Vec;

use rustix::io::Errno;

pub use behaviour::{DeviceContext, DeviceModel, DmaFault, RegisterFile};
pub use builder::{FakeBar, PciDeviceBuilder, PlatformDeviceBuilder};
pub use device::{FakeDevice, FakeRegion};
use memory::{Backing, PAGE};
use model::{Object, State};
pub use trace::Call;
use trace::StepFailure;

use crate::kernel::{Emulation, Fd, Kernel, MmioAccess, NodeOwner, Protection, Request, Token};
use crate::name::Bus;
use crate::sys::RegionFlags;
use crate::Step;

/// How many times a device model ticks during one blocking wait on its
/// eventfd before the fake decides nothing will come (`EDEADLK`).
const WAIT_TICKS: u32 = 1_000;

/// The fake kernel. Share it by reference (`Context<&FakeKernel>`) to inspect
/// it while a context uses it.
///
/// It never blocks: a poll with a timeout answers at once, and a blocking
/// read ([`Interrupt::wait`](crate::Interrupt::wait)) or a poll without a
/// timeout on an eventfd with nothing pending fails with `EDEADLK` (it would
/// wait forever; a device model ticks up to 1,000 times first), so a test
/// that waits for an interrupt nobody raises fails.
pub struct FakeKernel {
    /// Boxed: region accesses reach it by address ([`FakeKernel::emulation`]),
    /// which must not change when the kernel value moves.
    state: Box<Mutex<State>>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FakeKernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.state();
        f.debug_struct("FakeKernel").field("fds", &s.fds).field("mappings", &s.mappings.len()).finish()
    }
}

impl FakeKernel {
    /// A system with VFIO loaded, type1 and type1v2 IOMMU backends, noiommu
    /// mode enabled, x86-like IOVA ranges, no huge pages, and no devices.
    pub fn new() -> Self {
        FakeKernel { state: Box::new(Mutex::new(State::new())) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide later reports.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a device whose registers are plain memory; returns its index.
    ///
    /// # Panics
    /// If a region's initial contents are longer than the region (a test
    /// set-up bug: the bytes would be lost).
    pub fn add_device(&self, device: FakeDevice) -> usize {
        self.add(device, None)
    }

    /// Adds a device whose registers are `model`'s (see [`DeviceModel`]:
    /// every region but a PCI device's config space); returns its index.
    ///
    /// # Panics
    /// As [`FakeKernel::add_device`].
    pub fn add_modelled_device(&self, device: FakeDevice, model: impl DeviceModel + 'static) -> usize {
        self.add(device, Some(Box::new(model)))
    }

    fn add(&self, device: FakeDevice, model: Option<Box<dyn DeviceModel>>) -> usize {
        for (i, r) in device.regions.iter().enumerate() {
            assert!(
                r.contents.len() as u64 <= r.size,
                "fake device {}: region {i} is {:#x} bytes but its contents (FakeRegion::with_contents) are {:#x}: make the region larger or the contents shorter",
                device.name,
                r.size,
                r.contents.len()
            );
        }
        self.state().insert_device(device, model, None)
    }

    fn device_index(s: &State, name: &str) -> usize {
        s.devices.iter().position(|d| d.name == name).unwrap_or_else(|| panic!("no fake device {name}"))
    }

    /// Binds device `index` to `driver` (`None`: unbinds it) directly, as if
    /// by hand, leaving its `driver_override` as it is.
    pub fn bind(&self, index: usize, driver: Option<&str>) {
        self.state().devices[index].driver = driver.map(str::to_string);
    }

    /// The driver device `device` is bound to, if any.
    pub fn driver(&self, device: &str) -> Option<String> {
        let s = self.state();
        s.devices[Self::device_index(&s, device)].driver.clone()
    }

    /// The device's `driver_override`, if set. A device added bound to a
    /// VFIO driver has it set to that driver (as binding it would have).
    pub fn driver_override(&self, device: &str) -> Option<String> {
        let s = self.state();
        s.sysfs[Self::device_index(&s, device)].driver_override.clone()
    }

    /// Sets the driver that takes the device when it is probed with no
    /// `driver_override` (`None`: no driver has it). A device added bound to
    /// a driver that is not VFIO's has that one.
    pub fn set_default_driver(&self, device: &str, driver: Option<&str>) {
        let mut s = self.state();
        let index = Self::device_index(&s, device);
        s.sysfs[index].default_driver = driver.map(str::to_string);
    }

    /// A process writes the device's name to its driver's `unbind` while a
    /// VFIO fd of it may be open. Linux's vfio-pci then waits (the writer
    /// blocks) until the last fd closes; the fake records it, and completes
    /// the unbind when that happens (at once if none is open), signalling the
    /// device's request notifier meanwhile, if one is enabled: the device is
    /// driverless, and if no device of its IOMMU group is left open, the
    /// kernel detaches the group from its container (its DMA mappings go),
    /// after which the group answers `VFIO_GROUP_GET_STATUS` with `ENODEV`
    /// and `VFIO_GROUP_UNSET_CONTAINER` with `EINVAL` until its fd is closed.
    pub fn unbind_when_released(&self, device: &str) {
        let mut s = self.state();
        let index = Self::device_index(&s, device);
        if s.device_open(index) {
            s.unbind_on_release.insert(index);
            // vfio-pci asks the user for the device while it waits.
            s.raise(index, crate::sys::pci_irq::REQ, 0);
        } else {
            s.complete_unbind(index);
        }
    }

    /// Marks the device in use: unbinding it fails with `EBUSY` (it does as
    /// well while a VFIO device fd of it is open).
    pub fn set_in_use(&self, device: &str, in_use: bool) {
        let mut s = self.state();
        let index = Self::device_index(&s, device);
        s.sysfs[index].in_use = in_use;
    }

    /// Makes `driver`'s probe of the device fail (`None`: no probe fails):
    /// `drivers_probe` leaves it unbound, the driver's `bind` fails with `ENODEV`.
    pub fn set_probe_refused(&self, device: &str, driver: Option<&str>) {
        let mut s = self.state();
        let index = Self::device_index(&s, device);
        s.sysfs[index].refused = driver.map(str::to_string);
    }

    /// Loads or unloads a driver module: `/sys/bus/BUS/drivers/DRIVER`
    /// appears or disappears; unloading unbinds the devices bound to it.
    /// `vfio-pci` and `vfio-platform` are loaded at first, as is any driver
    /// an added device is bound to.
    pub fn set_driver_loaded(&self, bus: Bus, driver: &str, loaded: bool) {
        let mut s = self.state();
        s.drivers.retain(|(b, d)| !(*b == bus && d == driver));
        if loaded {
            s.drivers.push((bus, driver.to_string()));
        } else {
            for d in s.devices.iter_mut().filter(|d| d.bus == bus && d.driver.as_deref() == Some(driver)) {
                d.driver = None;
            }
        }
    }

    /// Whether a driver module is loaded.
    pub fn driver_loaded(&self, bus: Bus, driver: &str) -> bool {
        self.state().driver_loaded(bus, driver)
    }

    /// Sets vfio-pci's `enable_sriov` parameter
    /// (`/sys/module/vfio_pci/parameters/enable_sriov`, `N` at first as in
    /// Linux, and absent while vfio-pci is not loaded): off, vfio-pci
    /// refuses to create or remove its PFs' VFs (`ENOENT`).
    pub fn set_vfio_pci_enable_sriov(&self, enabled: bool) {
        self.state().sriov.enable_sriov = enabled;
    }

    /// The VF token of SR-IOV PF `pf` now (`None`: not a PF), as vfio-pci
    /// holds it: random at first, then what its user set.
    pub fn vf_token(&self, pf: &str) -> Option<crate::VfToken> {
        self.state().vf_token_of(pf).map(crate::VfToken::from_bytes)
    }

    /// Unloads (or loads) VFIO: `/dev/vfio/vfio` disappears (or comes back).
    pub fn set_vfio_loaded(&self, loaded: bool) {
        self.state().vfio_loaded = loaded;
    }

    /// Sets the API version `VFIO_GET_API_VERSION` reports.
    pub fn set_api_version(&self, version: i32) {
        self.state().api_version = version;
    }

    /// Turns `enable_unsafe_noiommu_mode` on or off: off, noiommu group nodes
    /// disappear and the noiommu backend is not offered.
    pub fn set_noiommu_mode(&self, enabled: bool) {
        self.state().noiommu_mode = enabled;
    }

    /// Chooses which type1 backends the fake has: what `VFIO_CHECK_EXTENSION`
    /// reports and `VFIO_SET_IOMMU` accepts.
    pub fn set_type1(&self, type1: bool, type1v2: bool) {
        let mut s = self.state();
        s.type1 = type1;
        s.type1v2 = type1v2;
    }

    /// Sets the usable IOVA ranges (inclusive ends) the IOMMU reports.
    pub fn set_iova_ranges(&self, ranges: &[(u64, u64)]) {
        self.state().iova_ranges = ranges.to_vec();
    }

    /// Sets how many DMA mappings a container may hold.
    pub fn set_dma_limit(&self, limit: u32) {
        self.state().dma_limit = limit;
    }

    /// Makes huge-page anonymous mappings succeed (by default they fail with
    /// `ENOMEM`, as on a system with no huge pages reserved).
    pub fn set_huge_pages(&self, available: bool) {
        self.state().huge_pages = available;
    }

    /// Makes the `n`th system call from now (1 = the next) fail with `errno`,
    /// doing nothing else. `close` never fails and is not counted. Several
    /// failures may be pending at once (each call adds one).
    pub fn fail_call(&self, n: u64, errno: Errno) {
        let mut s = self.state();
        let at = s.calls + n;
        s.fail_at.retain(|&(c, _)| c != at);
        s.fail_at.push((at, errno));
    }

    /// Makes the `nth` call of `step` from now (1 = the next one) fail with
    /// `errno`, doing nothing else: `fail_step(Step::SetIrqs(pci_irq::MSI),
    /// 2, Errno::NOSPC)` fails the second `VFIO_DEVICE_SET_IRQS` for MSI.
    /// Each call is classified as the [`Step`] the crate's error would name
    /// (see [`Call::step`]; [`FakeKernel::trace`] shows them). Several
    /// failures may be pending at once, beside those of
    /// [`FakeKernel::fail_call`].
    ///
    /// # Panics
    /// If `nth` is 0.
    pub fn fail_step(&self, step: Step, nth: u32, errno: Errno) {
        assert!(nth > 0, "fail_step counts from 1 (the next call of the step)");
        self.state().fail_steps.push(StepFailure { step, nth, errno });
    }

    /// Whether an injected failure is still pending (it was never reached).
    pub fn failure_pending(&self) -> bool {
        let s = self.state();
        !s.fail_at.is_empty() || !s.fail_steps.is_empty()
    }

    /// Clears every pending failure.
    pub fn clear_failure(&self) {
        let mut s = self.state();
        s.fail_at.clear();
        s.fail_steps.clear();
    }

    /// System calls made so far (not counting `close`).
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    /// Open fds.
    pub fn open_fds(&self) -> usize {
        self.state().fds.len()
    }

    /// Live mappings (device regions and anonymous memory).
    pub fn live_mappings(&self) -> usize {
        self.state().mappings.values().map(Vec::len).sum()
    }

    /// Closes of fds that were not open (double closes): a bug if non-zero.
    pub fn bad_closes(&self) -> u32 {
        self.state().bad_closes
    }

    /// Memory released (munmap) while a DMA mapping still covered it: a bug
    /// if non-zero (the device could write freed memory).
    pub fn freed_while_mapped(&self) -> u32 {
        self.state().freed_while_mapped
    }

    /// The IOMMU type set on each open container, in fd order.
    pub fn container_types(&self) -> Vec<Option<u32>> {
        self.state()
            .fds
            .values()
            .filter_map(|o| match o {
                Object::Container { iommu, .. } => Some(*iommu),
                _ => None,
            })
            .collect()
    }

    /// Every DMA mapping `(iova, size)` of every container and iommufd IO
    /// address space.
    pub fn dma_mappings(&self) -> Vec<(u64, u64)> {
        self.state().all_dma().map(|m| (m.iova, m.size)).collect()
    }

    /// Gives the system iommufd (`/dev/iommu`) or takes it away, and VFIO
    /// device cdevs (`/dev/vfio/devices/vfioN` with their sysfs
    /// `vfio-dev/vfioN`, N being the device's index) for devices bound to
    /// VFIO. Both are off at first (like Linux before 6.2, or the x86_64
    /// board's 6.1); Linux 6.6+ built with them has both.
    pub fn set_iommufd(&self, iommufd: bool, cdevs: bool) {
        let mut s = self.state();
        s.iommufd = iommufd;
        s.cdevs = cdevs;
    }

    /// How many devices are attached to an iommufd IO address space.
    pub fn iommufd_attached(&self) -> usize {
        self.state().fds.values().filter(|o| matches!(o, Object::Cdev { ioas: Some(_), .. })).count()
    }

    /// The device writes `data` at device address `iova`, through the IOMMU:
    /// false (nothing written) if no mapping covers it, as an IOMMU fault.
    ///
    /// # Safety
    /// The copy is a plain one into memory the driver reaches with its own
    /// accesses ([`crate::DmaBuffer`]'s, or the caller's of
    /// [`crate::Context::dma_map_raw`]): no other thread may access the bytes
    /// at these IOVAs during the call (a real device's DMA is outside the
    /// program; this one is not). Calls from the thread that uses the
    /// buffer, or ordered with it by synchronization, are sound.
    pub unsafe fn dma_write(&self, iova: u64, data: &[u8]) -> bool {
        let s = self.state();
        let Some(vaddr) = s.translate(iova, data.len() as u64) else { return false };
        // SAFETY: `translate` found a live mapping covering the range, whose
        // memory the mapping's owner keeps valid while it is mapped; the
        // library exposed the address's provenance when it mapped it; no
        // other thread accesses these bytes meanwhile (the contract).
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                core::ptr::with_exposed_provenance_mut::<u8>(vaddr as usize),
                data.len(),
            )
        };
        true
    }

    /// The device reads `out.len()` bytes at device address `iova`, through
    /// the IOMMU: false if no mapping covers it.
    ///
    /// # Safety
    /// As for [`FakeKernel::dma_write`]: no other thread may write the bytes
    /// at these IOVAs during the call.
    pub unsafe fn dma_read(&self, iova: u64, out: &mut [u8]) -> bool {
        let s = self.state();
        let Some(vaddr) = s.translate(iova, out.len() as u64) else { return false };
        // SAFETY: as in `dma_write`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::ptr::with_exposed_provenance::<u8>(vaddr as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        true
    }

    /// The device raises vector `vector` of interrupt `index`: its eventfd is
    /// signalled unless it is unbound or masked, or it is a PCI device's MSI
    /// or MSI-X and bus mastering is off in its command register (as on
    /// hardware: an MSI is a memory write); an automasked (level) interrupt
    /// masks itself. Returns whether it was delivered.
    pub fn raise_irq(&self, device: &str, index: u32, vector: u32) -> bool {
        let mut s = self.state();
        let d = Self::device_index(&s, device);
        s.raise(d, index, vector)
    }

    /// The kernel sends `which` about the device (what vfio-pci does when the
    /// device is to be unbound, or reports an error): its eventfd is
    /// signalled if one is bound. Returns whether it was delivered.
    pub fn notify(&self, device: &str, which: crate::Notification) -> bool {
        self.raise_irq(device, which.index(), 0)
    }

    /// Whether a vector is bound to an eventfd.
    pub fn irq_bound(&self, device: &str, index: u32, vector: u32) -> bool {
        let s = self.state();
        let d = Self::device_index(&s, device);
        s.irq_bindings.contains_key(&(d, index, vector))
    }

    /// Whether a vector is masked.
    pub fn irq_masked(&self, device: &str, index: u32, vector: u32) -> bool {
        let s = self.state();
        let d = Self::device_index(&s, device);
        s.irq_masked.contains(&(d, index, vector))
    }

    /// How many times a device was reset.
    pub fn resets(&self, device: &str) -> u32 {
        let s = self.state();
        s.resets[Self::device_index(&s, device)]
    }

    /// The system calls made, in order, each with its step and, for the
    /// ones an injected failure hit, the errno (`close` is not listed).
    pub fn trace(&self) -> Vec<Call> {
        self.state().trace.clone()
    }

    /// The last call an injected failure hit: after a failure the crate
    /// cleans up, so this, not the end of the trace, is the call that failed.
    pub fn failed_call(&self) -> Option<Call> {
        self.state().trace.iter().rev().find(|c| c.failed.is_some()).copied()
    }

    /// Enters a system call: counts and records it, and applies an injected
    /// failure. `step` classifies it (it may look at the state).
    fn enter(&self, name: &'static str, step: impl FnOnce(&State) -> Step) -> Result<MutexGuard<'_, State>, Errno> {
        let mut s = self.state();
        let step = step(&s);
        s.enter_call(name, step)?;
        Ok(s)
    }
}

/// Calls `visit` with each name until it returns `false`, with the state's
/// lock released: the visitor may make system calls of its own.
fn visit_names(names: Vec<String>, visit: &mut dyn FnMut(&[u8]) -> bool) {
    for name in names {
        if !visit(name.as_bytes()) {
            break;
        }
    }
}

/// Every access to a mapped fake region, made under the state's lock (see
/// [`FakeKernel::emulation`]).
///
/// # Safety
/// `context` is a live `FakeKernel`'s state; the access is inside one of its
/// regions, aligned, as `Region`'s checks ensure.
unsafe fn region_access(context: NonNull<()>, what: MmioAccess) -> u64 {
    // SAFETY: the contract: a live kernel's boxed state.
    let state = unsafe { context.cast::<Mutex<State>>().as_ref() };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let (MmioAccess::Read { addr, .. } | MmioAccess::Write { addr, .. } | MmioAccess::Block { addr, .. }) = what;
    let region = s.region_at(addr.as_ptr() as usize).expect("an emulated access outside every fake region");
    if s.modelled(region.0, region.1) {
        // The model answers; its memory is never touched. A block's plain
        // accesses would bypass the model: refused (non-zero).
        let base = s.backing[region.0][region.1 as usize].ptr().as_ptr() as usize;
        let offset = (addr.as_ptr() as usize - base) as u64;
        return match what {
            MmioAccess::Read { width, .. } => s.model_access(region.0, region.1, offset, width, None),
            MmioAccess::Write { width, value, .. } => s.model_access(region.0, region.1, offset, width, Some(value)),
            MmioAccess::Block { .. } => 1,
        };
    }
    s.claim(region, matches!(what, MmioAccess::Block { .. }));
    // SAFETY: every read and write here is inside a live region, aligned for
    // its width (the contract), and made under the lock, which every other
    // access to this memory takes but the claiming thread's blocks.
    unsafe {
        match what {
            MmioAccess::Read { addr, width: 1 } => u64::from(addr.read_volatile()),
            MmioAccess::Read { addr, width: 2 } => u64::from(addr.cast::<u16>().read_volatile()),
            MmioAccess::Read { addr, width: 4 } => u64::from(addr.cast::<u32>().read_volatile()),
            MmioAccess::Read { addr, .. } => addr.cast::<u64>().read_volatile(),
            MmioAccess::Write { addr, width, value } => {
                match width {
                    1 => addr.write_volatile(value as u8),
                    2 => addr.cast::<u16>().write_volatile(value as u16),
                    4 => addr.cast::<u32>().write_volatile(value as u32),
                    _ => addr.cast::<u64>().write_volatile(value),
                }
                0
            }
            MmioAccess::Block { .. } => 0,
        }
    }
}

// SAFETY: `mmap` and `map_anonymous` return pointers into `Backing` memory,
// page aligned and at least as long as the mapping; backings are heap
// allocations that live as long as the `FakeKernel` or until unmapped (moving
// the kernel does not move them), and the kernel outlives every context using
// it (a context owns or borrows it). Region memory is ordinary memory, so
// `emulation` makes the crate reach it through `region_access` only.
unsafe impl Kernel for FakeKernel {
    fn open(&self, _: &Token, path: &CStr) -> Result<Fd, Errno> {
        let mut s = self.enter("open", |_| trace::open_step(path))?;
        let path = path.to_str().map_err(|_| Errno::NOENT)?;
        s.check_open(path)?;
        if path == "/dev/vfio/vfio" {
            if !s.vfio_loaded {
                return Err(Errno::NOENT);
            }
            return Ok(s.new_fd(Object::Container { iommu: None, groups: Vec::new(), dma: Vec::new() }));
        }
        if let Some(fd) = s.open_iommufd_node(path) {
            return fd;
        }
        let number = s.group_node(path).ok_or(Errno::NOENT)?;
        // A group is opened once, and not while a device of it is bound
        // through its cdev (Linux: the group's cdev_device_open_cnt).
        if s.group_open(number) || s.group_has_bound_cdev(number) {
            return Err(Errno::BUSY);
        }
        Ok(s.new_fd(Object::Group { number, container: None }))
    }

    fn open_dir_at(&self, _: &Token, dir: Fd, path: &CStr) -> Result<Fd, Errno> {
        let step = |s: &State| s.path_at(dir, path).map_or(Step::ListSysfs, |p| trace::list_step(p.as_bytes()));
        let mut s = self.enter("openat", step)?;
        let path = s.path_at(dir, path)?;
        s.open_dir_path(&path)
    }

    fn close(&self, _: &Token, fd: Fd) {
        let mut s = self.state();
        match s.fds.remove(&fd.raw()) {
            None => s.bad_closes += 1,
            Some(Object::Group { number, container: Some(cfd) }) => s.detach(cfd, number),
            Some(Object::Group { number, container: None }) => {
                s.dead_groups.remove(&number);
            }
            Some(Object::Device { device }) | Some(Object::Cdev { device, .. }) => s.device_closed(device),
            Some(_) => {}
        }
    }

    fn ioctl(&self, _: &Token, fd: Fd, request: Request<'_>) -> Result<i32, Errno> {
        let step = trace::ioctl_step(&request);
        self.enter("ioctl", |_| step)?.ioctl(fd, request)
    }

    fn emulation(&self, _: &Token) -> Option<Emulation> {
        let context = NonNull::from(&*self.state).cast::<()>();
        // SAFETY: `context` is this kernel's boxed state, which stays at this
        // address while the kernel lives, and the kernel outlives every
        // mapping it hands out (see the impl's SAFETY). `region_access`
        // makes each access under the state's lock, after `State::claim`,
        // so it races with no access of the fake's, nor of another thread's
        // register block.
        Some(unsafe { Emulation::new(context, region_access) })
    }

    fn mmap(&self, _: &Token, fd: Fd, offset: u64, len: usize, prot: Protection) -> Result<NonNull<u8>, Errno> {
        let mut s = self.enter("mmap", |_| Step::Mmap(trace::region_of(offset)))?;
        let device = s.device_of(fd).map_err(|_| Errno::BADF)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        let room = (region.size as usize).next_multiple_of(PAGE);
        let in_area = region.sparse.is_empty() && within == 0
            || within.is_multiple_of(PAGE as u64) && region.sparse.iter().any(|&(o, n)| within == o && len as u64 <= n);
        let allowed = region.flags.contains(RegionFlags::MMAP)
            && (!prot.read || region.flags.contains(RegionFlags::READ))
            && (!prot.write || region.flags.contains(RegionFlags::WRITE));
        if !allowed || !in_area || len == 0 || within as usize + len > room {
            return Err(Errno::INVAL);
        }
        // SAFETY: `within + len <= room`, the backing's length.
        let base = unsafe { s.backing[device][index as usize].ptr().add(within as usize) };
        // Mapping the same region twice returns the same address here (both
        // views share the memory, as MAP_SHARED views of one region would).
        s.mappings.entry(base.as_ptr() as usize).or_default().push((len, device, index));
        Ok(base)
    }

    unsafe fn munmap(&self, _: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        let mut s = self.enter("munmap", |s| s.munmap_step(addr.as_ptr() as usize))?;
        let key = addr.as_ptr() as usize;
        if s.dma_covers(key, len) {
            // Linux would let the device keep writing freed memory: record it.
            s.freed_while_mapped += 1;
        }
        let views = s.mappings.get_mut(&key).ok_or(Errno::INVAL)?;
        let view = views.iter().position(|&(mapped, _, _)| mapped == len).ok_or(Errno::INVAL)?;
        let (_, device, index) = views.remove(view);
        if views.is_empty() {
            s.mappings.remove(&key);
            s.anonymous.remove(&key);
            s.unlock(key);
            // Unmapped: no block over it is left, any thread may map it anew.
            if !s.mappings.values().flatten().any(|&(_, d, i)| (d, i) == (device, index)) {
                s.pinned.retain(|&(r, _)| r != (device, index));
            }
        }
        Ok(())
    }

    fn pread(&self, _: &Token, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let mut s = self.enter("pread", |_| Step::Pread(trace::region_of(offset)))?;
        let device = s.device_of(fd)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        if !region.flags.contains(RegionFlags::READ) {
            return Err(Errno::INVAL);
        }
        let n = (region.size.saturating_sub(within) as usize).min(buf.len());
        if s.modelled(device, index) {
            s.model_transfer(device, index, within, Some(&mut buf[..n]), &[]);
            return Ok(n);
        }
        s.claim((device, index), false);
        Ok(s.backing[device][index as usize].read(within as usize, &mut buf[..n]))
    }

    fn pwrite(&self, _: &Token, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        let mut s = self.enter("pwrite", |_| Step::Pwrite(trace::region_of(offset)))?;
        let device = s.device_of(fd)?;
        let (index, within) = s.locate(device, offset)?;
        let region = &s.devices[device].regions[index as usize];
        if !region.flags.contains(RegionFlags::WRITE) {
            return Err(Errno::INVAL);
        }
        let n = (region.size.saturating_sub(within) as usize).min(buf.len());
        if s.modelled(device, index) {
            s.model_transfer(device, index, within, None, &buf[..n]);
            return Ok(n);
        }
        s.claim((device, index), false);
        Ok(s.backing[device][index as usize].write(within as usize, &buf[..n]))
    }

    fn readlink<'b>(&self, _: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let s = self.enter("readlink", |_| Step::ReadSysfs)?;
        let target = s.link_target(path.to_str().map_err(|_| Errno::NOENT)?)?;
        let n = target.len().min(buf.len());
        buf[..n].copy_from_slice(&target.as_bytes()[..n]);
        Ok(&buf[..n])
    }

    fn exists_at(&self, _: &Token, dir: Fd, path: &CStr) -> Result<(), Errno> {
        // The crate's one lookup of a name alone from a directory: the cdev proof.
        let s = self.enter("readlinkat", |_| Step::OpenCdev)?;
        s.entry_exists(dir, path.to_str().map_err(|_| Errno::NOENT)?)
    }

    fn eventfd(&self, _: &Token) -> Result<Fd, Errno> {
        Ok(self.enter("eventfd", |_| Step::Eventfd)?.new_fd(Object::EventFd { count: 0 }))
    }

    fn read_counter(&self, _: &Token, fd: Fd, wait: bool) -> Result<u64, Errno> {
        let mut s = self.enter(if wait { "read" } else { "preadv2" }, |_| Step::ReadEventfd)?;
        s.run_model_for(fd);
        // A blocking read lets time pass: the device keeps working until it
        // interrupts, or until it plainly never will.
        let pending = |s: &State| matches!(s.fds.get(&fd.raw()), Some(Object::EventFd { count }) if *count > 0);
        for _ in 1..if wait { WAIT_TICKS } else { 1 } {
            if pending(&s) {
                break;
            }
            s.run_model_for(fd);
        }
        match s.fds.get_mut(&fd.raw()) {
            // Nothing else could raise it while the caller blocks here: a
            // wait on a zero counter would never end.
            Some(Object::EventFd { count: 0 }) if wait => Err(Errno::DEADLK),
            Some(Object::EventFd { count: 0 }) => Err(Errno::AGAIN),
            Some(Object::EventFd { count }) => Ok(core::mem::take(count)),
            Some(_) => Err(Errno::INVAL),
            None => Err(Errno::BADF),
        }
    }

    fn poll_readable(&self, _: &Token, fd: Fd, timeout: Option<Duration>) -> Result<bool, Errno> {
        let mut s = self.enter("poll", |_| Step::Poll)?;
        s.run_model_for(fd);
        match (s.fds.get(&fd.raw()), timeout) {
            (Some(Object::EventFd { count: 0 }), None) => Err(Errno::DEADLK),
            (Some(Object::EventFd { count }), _) => Ok(*count > 0),
            (Some(_), _) => Ok(true),
            (None, _) => Err(Errno::BADF),
        }
    }

    fn map_anonymous(&self, _: &Token, len: usize, huge_pages: bool) -> Result<NonNull<u8>, Errno> {
        let mut s = self.enter("mmap", |_| Step::MapMemory)?;
        if len == 0 {
            return Err(Errno::INVAL);
        }
        if huge_pages && !s.huge_pages {
            return Err(Errno::NOMEM);
        }
        let memory = Backing::new(len as u64, &[]);
        let base = memory.ptr();
        s.mappings.entry(base.as_ptr() as usize).or_default().push((len, usize::MAX, 0));
        s.anonymous.insert(base.as_ptr() as usize, memory);
        Ok(base)
    }

    fn write_file(&self, _: &Token, path: &CStr, data: &[u8]) -> Result<usize, Errno> {
        let mut s = self.enter("write", |_| Step::WriteSysfs)?;
        let path = s.through_sriov_links(path.to_str().map_err(|_| Errno::NOENT)?);
        s.write_sysfs(&path, data)
    }

    fn read_file<'b>(&self, _: &Token, path: &CStr, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let s = self.enter("read", |_| Step::ReadSysfsFile)?;
        let path = s.through_sriov_links(path.to_str().map_err(|_| Errno::NOENT)?);
        let text = s.read_sysfs(&path)?;
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(&buf[..n])
    }

    fn list_dir_while(&self, _: &Token, path: &CStr, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        let names = {
            let s = self.enter("getdents", |_| trace::list_step(path.to_bytes()))?;
            s.listing(&s.through_sriov_links(path.to_str().map_err(|_| Errno::NOENT)?))?
        };
        visit_names(names, visit);
        Ok(())
    }

    fn open_dir(&self, _: &Token, path: &CStr) -> Result<Fd, Errno> {
        let mut s = self.enter("open", |_| trace::list_step(path.to_bytes()))?;
        s.open_dir_path(path.to_str().map_err(|_| Errno::NOENT)?)
    }

    fn list_open_dir_while(&self, _: &Token, dir: Fd, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
        let names = {
            let s = self.enter("getdents", |s| trace::list_step(s.dir_path(dir).unwrap_or_default().as_bytes()))?;
            // Listed whole each time (the crate lists an open directory once).
            s.open_dir_listing(dir)?
        };
        visit_names(names, visit);
        Ok(())
    }

    fn lock(&self, _: &Token, addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
        let mut s = self.enter("mlock", |_| Step::LockMemory)?;
        let start = addr.as_ptr() as usize;
        let covered = s.anonymous.range(..=start).next_back().is_some_and(|(&base, m)| start + len <= base + m.len());
        if covered {
            s.charge_mlock(start, len)
        } else {
            Err(Errno::NOMEM)
        }
    }

    fn memlock_limit(&self, _: &Token) -> Option<u64> {
        // getrlimit: a system call that cannot fail.
        self.enter("prlimit64", |_| Step::MapDma).map_or(None, |s| s.memlock_limit())
    }

    fn node_owner(&self, _: &Token, path: &CStr) -> Result<NodeOwner, Errno> {
        let s = self.enter("stat", |_| Step::StatNode(trace::node_of(path)))?;
        s.owner_of(path.to_str().map_err(|_| Errno::NOENT)?).ok_or(Errno::NOENT)
    }

    fn chown(&self, _: &Token, path: &CStr, uid: u32, gid: Option<u32>) -> Result<(), Errno> {
        let mut s = self.enter("chown", |_| Step::Chown(trace::node_of(path)))?;
        s.chown(path.to_str().map_err(|_| Errno::NOENT)?, uid, gid)
    }

    fn read_file_at<'b>(&self, _: &Token, path: &CStr, offset: u64, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        let s = self.enter("pread", |_| Step::ReadAccounts)?;
        let n = s.file_at(path.to_str().map_err(|_| Errno::NOENT)?, offset, buf)?;
        Ok(&buf[..n])
    }
}
