//! The C libraries' panic handler (feature `clib`, built without `std`).
//!
//! `libdao_vfio.a` and `.so` link no Rust std, so something must handle a
//! panic: this writes `dao_vfio: panic: ...` to stderr and stops the process
//! with the architecture's trap instruction (SIGILL), as std's
//! `panic = "abort"` stops it with SIGABRT. The library does not panic by
//! design (every failure is an `Error`); this is for a bug.
//!
//! Why a feature of its own, and not simply "without `std`": a crate may have
//! one panic handler, and std has one. Building the crate without its `std`
//! feature does not mean std is absent from the program (any other crate may
//! link it), so the handler is only in the build that is surely the final
//! artifact, the C library, and never when `std` (or a test) links std.

/// Reports the panic on stderr and traps.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    super::log::line(format_args!("panic: {info}"));
    trap()
}

/// Stops the process: an undefined instruction, which the kernel answers
/// with SIGILL (a core dump where enabled).
fn trap() -> ! {
    // SAFETY: executing the permanently undefined instruction touches no
    // memory and never returns (the kernel delivers SIGILL; should a handler
    // return, the instruction runs again).
    unsafe {
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("udf #0", options(noreturn, nomem, nostack));
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("ud2", options(noreturn, nomem, nostack));
    }
}
