//! Memory, measured on the real kernel (the virtual boards; ignored on the
//! host): what a `Context` costs per device, group and DMA slot, the peak
//! stack of opening, setting up, freeing and closing, and a context with 64
//! device slots in static storage used from a 128 KiB thread.
//!
//! The stack is measured, not estimated: each operation runs on a thread
//! whose stack is memory of ours, painted with a pattern first; what the
//! thread overwrote, less what an empty thread overwrites (musl keeps the
//! thread's descriptor and TLS at the top of a caller's stack), is its peak.
//! `tests/check` runs this file in release, as drivers ship; a debug build
//! prints its (larger) figures without the goal.

use std::ffi::c_void;
use std::io::Write;
use std::sync::Mutex;

use dao_vfio::sys::pci_region;
use dao_vfio::{Backend, Bus, Context, Host};

mod common;
use common::dev;

/// The goal for each operation's peak stack.
const STACK_GOAL: usize = 16 * 1024;
/// The painted stack each measurement runs on (room for a debug build's
/// moves of a context opened by value).
const PAINTED: usize = 1024 * 1024;
const PAINT: u8 = 0xa5;

type Big = Context<Host, 64, 64, 8>;

// One static context per interface (the backend is part of a `const`
// initializer); the run uses the one `DAO_VFIO_BACKEND` names.
static AUTO: Mutex<Big> = Mutex::new(Context::unopened(Host, Backend::Auto));
static LEGACY: Mutex<Big> = Mutex::new(Context::unopened(Host, Backend::Legacy));
static IOMMUFD: Mutex<Big> = Mutex::new(Context::unopened(Host, Backend::Iommufd));

fn big() -> &'static Mutex<Big> {
    match common::backend() {
        Backend::Auto => &AUTO,
        Backend::Legacy => &LEGACY,
        Backend::Iommufd => &IOMMUFD,
    }
}

/// Prints a measurement past the test harness's capture (which takes only
/// `print!`), so that the board log keeps it whatever the outcome.
fn report(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// What the thread's start routine returns when `f` panicked.
const PANICKED: usize = 1;

extern "C" fn run_boxed(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Box<dyn FnOnce() + Send>>` that `stack_used`
    // leaked for this thread alone.
    let f = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send>>()) };
    // A panic must not unwind out of an `extern "C"` function (that aborts
    // the whole test binary): it is reported to the joining thread instead.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(()) => std::ptr::null_mut(),
        Err(_) => std::ptr::without_provenance_mut(PANICKED),
    }
}

/// Runs `f` on a new thread whose stack is a painted buffer of ours, with a
/// guard page below it (an overflow faults rather than writing into another
/// mapping); returns how many bytes at its top were overwritten. Panics if
/// `f` did.
fn stack_used(f: impl FnOnce() + Send) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("the page size");
    // SAFETY: a fresh private anonymous mapping; checked below.
    let mapping = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page + PAINTED,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mapping, libc::MAP_FAILED, "mmap of the painted stack");
    // SAFETY: the lowest page of the mapping just made becomes the guard.
    assert_eq!(unsafe { libc::mprotect(mapping, page, libc::PROT_NONE) }, 0, "the guard page");
    // SAFETY: inside the mapping: its part above the guard page.
    let stack = unsafe { mapping.cast::<u8>().add(page) }.cast::<c_void>();
    // SAFETY: the PAINTED bytes above the guard are ours alone.
    unsafe { std::ptr::write_bytes(stack.cast::<u8>(), PAINT, PAINTED) };
    let f: Box<Box<dyn FnOnce() + Send + '_>> = Box::new(Box::new(f));
    // SAFETY: the thread is joined below, before anything `f` borrows can go,
    // so erasing its lifetime for the thread's start routine is sound.
    let f: Box<Box<dyn FnOnce() + Send>> = unsafe { std::mem::transmute(f) };
    let mut result = std::ptr::null_mut();
    // SAFETY: standard pthread calls on local, initialized values; the stack
    // stays mapped until after the join.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_attr_init(&mut attr), 0);
        assert_eq!(libc::pthread_attr_setstack(&mut attr, stack, PAINTED), 0);
        let mut thread: libc::pthread_t = std::mem::zeroed();
        let arg = Box::into_raw(f).cast::<c_void>();
        assert_eq!(libc::pthread_create(&mut thread, &attr, run_boxed, arg), 0);
        assert_eq!(libc::pthread_join(thread, &mut result), 0);
        libc::pthread_attr_destroy(&mut attr);
    }
    // SAFETY: the thread is gone; the painted part is ours again.
    let bytes = unsafe { std::slice::from_raw_parts(stack.cast::<u8>(), PAINTED) };
    let untouched = bytes.iter().position(|&b| b != PAINT).unwrap_or(PAINTED);
    // SAFETY: unmapped once, after its last use.
    unsafe { libc::munmap(mapping, page + PAINTED) };
    assert!(result.is_null(), "the measured operation panicked (its message is above)");
    PAINTED - untouched
}

/// The peak stack of `f`: its thread's use less an empty thread's.
fn peak(what: &str, baseline: usize, f: impl FnOnce() + Send) -> usize {
    let used = stack_used(f).saturating_sub(baseline);
    report(format_args!("  peak stack of {what}: {used} bytes"));
    used
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn context_sizes_per_slot() {
    use std::mem::size_of;
    let one = size_of::<Context<Host, 1, 1, 1>>();
    let device = size_of::<Context<Host, 2, 1, 1>>() - one;
    let group = size_of::<Context<Host, 1, 2, 1>>() - one;
    let dma = size_of::<Context<Host, 1, 1, 2>>() - one;
    let default = size_of::<Context>();
    report(format_args!(
        "Context: {default} bytes by default (8 devices, 8 groups, 32 DMA mappings); {} with 64/64/8",
        size_of::<Big>()
    ));
    report(format_args!(
        "  per device slot {device}, per group slot {group}, per DMA slot {dma}, fixed {}",
        one - device - group - dma
    ));
    assert_eq!(default, one + 7 * device + 7 * group + 31 * dma, "the size is linear in the slots");
    assert!(device <= 4096, "a device slot grew past 4 KiB: {device}");
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn peak_stack_of_open_setup_free_and_close() {
    let edu = dev("DAO_VFIO_EDU");
    let pl031 = std::env::var("DAO_VFIO_PL031").ok();
    let baseline = stack_used(|| {});
    report(format_args!("an empty thread uses {baseline} bytes of its stack (descriptor, TLS, start)"));
    let mut guard = big().lock().unwrap();
    let vfio: &mut Big = &mut guard;
    let mut peaks = vec![peak("open_in_place (64/64/8, static)", baseline, || vfio.open_in_place().unwrap())];
    let mut handle = None;
    peaks.push(peak("setup of edu", baseline, || handle = Some(vfio.setup_on(Bus::Pci, &edu).unwrap())));
    let handle = handle.unwrap();
    assert_eq!(vfio.device(&handle).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
    peaks.push(peak("free of edu", baseline, || vfio.free(handle).unwrap()));
    if let Some(pl031) = pl031 {
        let mut handle = None;
        peaks.push(peak("setup of pl031", baseline, || handle = Some(vfio.setup_on(Bus::Platform, &pl031).unwrap())));
        let handle = handle.unwrap();
        peaks.push(peak("free of pl031", baseline, || vfio.free(handle).unwrap()));
    }
    peaks.push(peak("close_in_place", baseline, || vfio.close_in_place().unwrap()));
    // For comparison: a context opened by value has it all on the stack.
    peak("Context::open_with (default capacities, by value) and its drop", baseline, || {
        drop(Context::open_with(common::backend()).unwrap())
    });
    let worst = peaks.iter().copied().max().unwrap();
    if cfg!(debug_assertions) {
        report(format_args!("debug build: the {STACK_GOAL}-byte goal is checked in release (tests/check)"));
    } else {
        assert!(worst <= STACK_GOAL, "an operation's peak stack is {worst} bytes, over the {STACK_GOAL}-byte goal");
    }
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_static_context_with_64_device_slots_serves_a_128_kib_thread() {
    let edu = dev("DAO_VFIO_EDU");
    let pl031 = std::env::var("DAO_VFIO_PL031").ok();
    let thread = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
        let mut vfio = big().lock().unwrap();
        vfio.open_in_place().unwrap();
        let e = vfio.setup_on(Bus::Pci, &edu).unwrap();
        let p = pl031.map(|name| vfio.setup_on(Bus::Platform, &name).unwrap());
        assert_eq!(vfio.device(&e).unwrap().region(pci_region::BAR0).unwrap().read32(0), Ok(0x010000ed));
        assert_eq!(vfio.device_count(), 1 + usize::from(p.is_some()));
        vfio.free(e).unwrap();
        if let Some(p) = p {
            vfio.free(p).unwrap();
        }
        vfio.close_in_place().unwrap();
    });
    thread.unwrap().join().expect("the 128 KiB thread completed");
}
