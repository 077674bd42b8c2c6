//! Start and end of the process without libc: the ELF entry point `_start`,
//! the initial stack the kernel hands it, `exit_group`, and the panic
//! handler. No constructors run (nothing in the program has one).

use core::arch::naked_asm;
use core::panic::PanicInfo;

use crate::env::Env;

/// The entry point (`e_entry`). The kernel jumps here with the stack pointer
/// at `argc`, followed by `argv`, NULL, `envp`, NULL and the auxiliary vector;
/// no return address, nothing to return to. Clears the frame pointer (and,
/// on aarch64, the link register) so backtraces end here, aligns the stack as
/// the ABI wants at a call, and calls [`entry`] with the initial stack.
#[unsafe(naked)]
#[no_mangle]
extern "C" fn _start() -> ! {
    #[cfg(target_arch = "aarch64")]
    naked_asm!("mov x29, xzr", "mov x30, xzr", "mov x0, sp", "bl {entry}", "udf #0", entry = sym entry);
    #[cfg(target_arch = "x86_64")]
    naked_asm!("xor ebp, ebp", "mov rdi, rsp", "and rsp, -16", "call {entry}", "ud2", entry = sym entry);
}

/// Runs the program on the environment from the initial stack and exits
/// with its status.
///
/// # Safety
/// `sp` is the stack pointer the kernel started the process with.
unsafe extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: `sp` is the initial stack (contract), laid out as Linux's exec
    // does for every ELF program.
    let env = unsafe { Env::from_initial_stack(sp) };
    exit(crate::main(&env))
}

/// Ends the process (every thread) with `status`: `exit_group(2)`.
pub fn exit(status: i32) -> ! {
    // SAFETY: `exit_group` takes one integer, touches no memory of ours and
    // does not return.
    unsafe {
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc #0", in("x8") 94, in("x0") status, options(noreturn, nostack));
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", in("rax") 231, in("rdi") status, options(noreturn, nostack));
    }
}

/// A panic is a failed run: where it happened on stderr, exit status 101
/// (as a std program's panic). The message is left out: formatting panic
/// messages would link core's formatting of every panic in the program
/// (about 2.4 KB); the file and line say which check it was.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => crate::out::line(crate::out::STDERR, format_args!("FAILED: panic at {}:{}", at.file(), at.line())),
        None => crate::out::line(crate::out::STDERR, format_args!("FAILED: panic")),
    }
    exit(101)
}
