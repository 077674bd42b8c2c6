//! Interrupts: eventfds bound to a device's interrupt vectors with
//! `VFIO_DEVICE_SET_IRQS`, and the handle that waits on them.
//!
//! Enabling and disabling an index changes the context (`&mut`); waiting,
//! masking and unmasking need only `&` and may run on data-plane threads.
//! A level-triggered interrupt (flags contain `AUTOMASKED`, e.g. INTx or a
//! platform interrupt) is masked by the kernel when it fires: serve the device
//! (clear its interrupt status), then [`Interrupt::unmask`].

use core::time::Duration;

use crate::error::{Error, ErrorKind, Step};
use crate::kernel::{Fd, Kernel, Request, TOKEN};
use crate::name::DeviceName;
use crate::sys::{self, IrqFlags, IrqSetFlags};

/// One vector bound to an eventfd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub(crate) index: u32,
    pub(crate) vector: u32,
    pub(crate) eventfd: Fd,
    pub(crate) flags: IrqFlags,
}

/// The eventfds a device has bound, at most [`sys::MAX_IRQ_VECTORS`].
pub(crate) type Bindings = heapless::Vec<Binding, { sys::MAX_IRQ_VECTORS }>;

fn set_irqs<K: Kernel>(
    kernel: &K,
    device: Fd,
    flags: IrqSetFlags,
    index: u32,
    start: u32,
    fds: &[Fd],
    count: u32,
) -> Result<(), Error> {
    let mut set = sys::IrqSetEventfds {
        head: sys::IrqSet {
            argsz: sys::argsz::<sys::IrqSet>() + 4 * fds.len() as u32,
            flags: flags.bits(),
            index,
            start,
            count,
        },
        fds: [-1; sys::MAX_IRQ_VECTORS],
    };
    for (slot, fd) in set.fds.iter_mut().zip(fds) {
        *slot = fd.raw();
    }
    kernel
        .ioctl(&TOKEN, device, Request::DeviceSetIrqs(&set))
        .map(drop)
        .map_err(|e| Error::syscall(Step::SetIrqs(index), e))
}

/// Binds `count` new eventfds to vectors `0..count` of `index`. On error
/// nothing stays open or bound.
pub(crate) fn enable<K: Kernel>(
    kernel: &K,
    device: Fd,
    bindings: &mut Bindings,
    index: u32,
    flags: IrqFlags,
    available: u32,
    count: u32,
) -> Result<(), Error> {
    if bindings.iter().any(|b| b.index == index) {
        return Err(Error::new(ErrorKind::IrqAlreadyEnabled { index }));
    }
    let room = (bindings.capacity() - bindings.len()) as u32;
    if count == 0 || count > available || count > room {
        return Err(Error::new(ErrorKind::TooManyVectors { requested: count, available: available.min(room) }));
    }
    let mut fds: heapless::Vec<Fd, { sys::MAX_IRQ_VECTORS }> = heapless::Vec::new();
    let close_all = |fds: &[Fd]| fds.iter().for_each(|&fd| kernel.close(&TOKEN, fd));
    for _ in 0..count {
        match kernel.eventfd(&TOKEN) {
            // Cannot overflow: count <= room <= capacity.
            Ok(fd) => drop(fds.push(fd)),
            Err(e) => {
                close_all(&fds);
                return Err(Error::syscall(Step::Eventfd, e));
            }
        }
    }
    let trigger = IrqSetFlags::DATA_EVENTFD | IrqSetFlags::ACTION_TRIGGER;
    if let Err(e) = set_irqs(kernel, device, trigger, index, 0, &fds, count) {
        close_all(&fds);
        return Err(e);
    }
    for (vector, &eventfd) in fds.iter().enumerate() {
        let _ = bindings.push(Binding { index, vector: vector as u32, eventfd, flags });
    }
    Ok(())
}

/// Unbinds every vector of `index` and closes their eventfds. The eventfds
/// are closed even if the kernel refuses (the kernel keeps its own reference
/// until it lets go), so nothing leaks.
pub(crate) fn disable<K: Kernel>(kernel: &K, device: Fd, bindings: &mut Bindings, index: u32) -> Result<(), Error> {
    if !bindings.iter().any(|b| b.index == index) {
        return Err(Error::new(ErrorKind::IrqNotEnabled { index, vector: 0 }));
    }
    let result = set_irqs(kernel, device, IrqSetFlags::DATA_NONE | IrqSetFlags::ACTION_TRIGGER, index, 0, &[], 0);
    close_index(kernel, bindings, index);
    result
}

/// Closes the eventfds of `index` and forgets them.
fn close_index<K: Kernel>(kernel: &K, bindings: &mut Bindings, index: u32) {
    bindings.iter().filter(|b| b.index == index).for_each(|b| kernel.close(&TOKEN, b.eventfd));
    bindings.retain(|b| b.index != index);
}

/// Closes every eventfd (after the device fd is closed, the kernel has
/// disabled the interrupts).
pub(crate) fn close_all<K: Kernel>(kernel: &K, bindings: &mut Bindings) {
    bindings.iter().for_each(|b| kernel.close(&TOKEN, b.eventfd));
    bindings.clear();
}

/// One interrupt vector bound to an eventfd, borrowed from its device.
///
/// [`Interrupt::wait`] is one blocking `read` of the eventfd, pending or
/// not; [`Interrupt::take`] is one `preadv2` with `RWF_NOWAIT`, which never
/// blocks; [`Interrupt::wait_timeout`] takes, then polls and takes again.
/// Have one waiter per vector: two threads waiting on the same eventfd share
/// its counts between them.
pub struct Interrupt<'a, K: Kernel> {
    pub(crate) kernel: &'a K,
    pub(crate) device: Fd,
    pub(crate) name: DeviceName,
    pub(crate) binding: Binding,
}

impl<K: Kernel> Clone for Interrupt<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Kernel> Copy for Interrupt<'_, K> {}

impl<K: Kernel> core::fmt::Debug for Interrupt<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Interrupt")
            .field("device", &self.name)
            .field("index", &self.binding.index)
            .field("vector", &self.binding.vector)
            .field("eventfd", &self.binding.eventfd)
            .finish()
    }
}

impl<K: Kernel> Interrupt<'_, K> {
    /// The interrupt index.
    pub fn index(&self) -> u32 {
        self.binding.index
    }

    /// The vector within the index.
    pub fn vector(&self) -> u32 {
        self.binding.vector
    }

    /// The kernel's flags for the index (`AUTOMASKED`: level triggered).
    pub fn flags(&self) -> IrqFlags {
        self.binding.flags
    }

    /// The eventfd, to add to the caller's own `epoll`/`poll` set. The
    /// context owns it: do not close it. It is blocking (so that
    /// [`Interrupt::wait`] is one `read`): once `poll` says it is readable,
    /// read it once, or call [`Interrupt::take`], which never blocks; do not
    /// read it until `EAGAIN` as with a non-blocking fd.
    pub fn fd(&self) -> Fd {
        self.binding.eventfd
    }

    fn fail(&self, step: Step, e: rustix::io::Errno) -> Error {
        Error::syscall(step, e).for_device(self.name)
    }

    /// Blocks until the interrupt fires; returns how many times it fired
    /// since the last wait: one `read`, which blocks while nothing is pending.
    pub fn wait(&self) -> Result<u64, Error> {
        loop {
            match self.kernel.read_counter(&TOKEN, self.binding.eventfd, true) {
                Ok(count) => return Ok(count),
                // A signal interrupted the wait: wait again.
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(self.fail(Step::ReadEventfd, e)),
            }
        }
    }

    /// Takes the count if the interrupt fired, without waiting (one `preadv2`
    /// with `RWF_NOWAIT`: a read that returns `EAGAIN` rather than block).
    pub fn take(&self) -> Result<Option<u64>, Error> {
        match self.kernel.read_counter(&TOKEN, self.binding.eventfd, false) {
            Ok(count) => Ok(Some(count)),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(self.fail(Step::ReadEventfd, e)),
        }
    }

    /// Waits at most `timeout`; `None` if the interrupt did not fire in time
    /// (or a signal, or another reader of the eventfd, came first).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<u64>, Error> {
        if let Some(count) = self.take()? {
            return Ok(Some(count));
        }
        match self.kernel.poll_readable(&TOKEN, self.binding.eventfd, Some(timeout)) {
            Ok(true) => self.take(),
            Ok(false) => Ok(None),
            Err(e) => Err(self.fail(Step::Poll, e)),
        }
    }

    fn mask_action(&self, action: IrqSetFlags) -> Result<(), Error> {
        if !self.binding.flags.contains(IrqFlags::MASKABLE) {
            return Err(Error::new(ErrorKind::NotMaskable { index: self.binding.index }).for_device(self.name));
        }
        let flags = IrqSetFlags::DATA_NONE | action;
        set_irqs(self.kernel, self.device, flags, self.binding.index, self.binding.vector, &[], 1)
            .map_err(|e| e.for_device(self.name))
    }

    /// Masks the vector: it stays pending in the device but does not signal.
    pub fn mask(&self) -> Result<(), Error> {
        self.mask_action(IrqSetFlags::ACTION_MASK)
    }

    /// Unmasks the vector; after a level-triggered interrupt, call this once
    /// the device no longer asserts it.
    pub fn unmask(&self) -> Result<(), Error> {
        self.mask_action(IrqSetFlags::ACTION_UNMASK)
    }
}
