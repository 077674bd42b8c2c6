//! The environment and the auxiliary vector, read from the initial stack.
//! Without libc there is no `getenv`, and the board's init passes the device
//! names (`DAO_VFIO_EDU`, `DAO_VFIO_PL031`, ...) as environment variables;
//! nor `getauxval`, which compiler-builtins' aarch64 atomics refer to (their
//! check for LSE atomics is a constructor, which this program does not run:
//! they take their ARMv8.0 path, right on every arm64 CPU).

use core::ffi::{c_char, c_ulong, CStr};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// The auxiliary vector (`AT_*` key and value pairs, ending with `AT_NULL`),
/// once `_start` found it.
static AUXV: AtomicPtr<usize> = AtomicPtr::new(ptr::null_mut());

/// The `envp` array the kernel put on the initial stack: NULL-terminated
/// pointers to NUL-terminated `NAME=value` strings, alive as long as the
/// process.
pub struct Env {
    vars: *const *const c_char,
}

impl Env {
    /// Finds `envp` on the initial stack: after `argc` and the `argc + 1`
    /// pointers of `argv` (NULL-terminated); and the auxiliary vector after
    /// `envp`'s NULL, for [`getauxval`].
    ///
    /// # Safety
    /// `sp` is the stack pointer the process started with, before anything
    /// was pushed.
    pub unsafe fn from_initial_stack(sp: *const usize) -> Env {
        // SAFETY: the initial stack starts with argc, then argv[0..argc],
        // NULL, then envp and its NULL, then the auxiliary vector (Linux's
        // exec, the ELF ABI).
        unsafe {
            let argc = sp.read();
            let vars: *const *const c_char = sp.add(1 + argc + 1).cast();
            let mut end = vars;
            while !end.read().is_null() {
                end = end.add(1);
            }
            AUXV.store(end.add(1).cast::<usize>().cast_mut(), Ordering::Relaxed);
            Env { vars }
        }
    }

    /// The value of `name`, if set and UTF-8.
    pub fn get(&self, name: &str) -> Option<&'static str> {
        let mut at = self.vars;
        loop {
            // SAFETY: `at` walks the NULL-terminated envp array and stops at
            // its NULL.
            let var = unsafe { at.read() };
            if var.is_null() {
                return None;
            }
            // SAFETY: each entry is a NUL-terminated string that lives as
            // long as the process (the initial stack is never freed).
            let bytes: &'static [u8] = unsafe { CStr::from_ptr(var) }.to_bytes();
            if let Some(value) = bytes.strip_prefix(name.as_bytes()).and_then(|rest| rest.strip_prefix(b"=")) {
                return core::str::from_utf8(value).ok();
            }
            // SAFETY: not past the terminating NULL, checked above.
            at = unsafe { at.add(1) };
        }
    }
}

/// libc's `getauxval`: the value of auxiliary-vector entry `key`, or 0.
#[no_mangle]
pub extern "C" fn getauxval(key: c_ulong) -> c_ulong {
    let mut at = AUXV.load(Ordering::Relaxed).cast_const();
    if at.is_null() {
        return 0;
    }
    loop {
        // SAFETY: `at` walks the auxiliary vector's key and value pairs on
        // the initial stack (never freed) and stops at its AT_NULL key (0).
        let (k, value) = unsafe { (at.read(), at.add(1).read()) };
        if k == 0 {
            return 0;
        }
        if k as c_ulong == key {
            return value as c_ulong;
        }
        // SAFETY: the next pair; the vector ends with AT_NULL.
        at = unsafe { at.add(2) };
    }
}
