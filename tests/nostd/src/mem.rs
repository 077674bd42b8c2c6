//! The memory functions the compiler emits calls to (`memcpy`, `memmove`,
//! `memset`, `memcmp`, `bcmp`) and `strlen` (which `CStr::from_ptr` calls):
//! libc's job, so without libc the program brings them. compiler-builtins
//! has them only for targets without a libc, not for the musl targets.
//!
//! Byte loops through volatile accesses: the volatile keeps LLVM from
//! turning a loop back into a call of the very function it implements. Slow
//! per byte, and this program copies little (the library's tables, once).

/// Copies `n` bytes from `src` to `dst`.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes; they do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`, which may overlap.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) {
        // SAFETY: forwards, each byte is read before a write can reach it.
        unsafe { memcpy(dst, src, n) }
    } else {
        for i in (0..n).rev() {
            // SAFETY: within the `n` bytes the caller vouches for; backwards,
            // each byte is read before a write can reach it.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        }
        dst
    }
}

/// Sets `n` bytes at `dst` to `c` (as a byte).
///
/// # Safety
/// `dst` is writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        unsafe { dst.add(i).write_volatile(c as u8) };
    }
    dst
}

/// Compares `n` bytes: negative, zero or positive as `a` sorts before, with
/// or after `b`.
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: within the `n` bytes the caller vouches for.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Whether `n` bytes differ (zero when equal).
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// The length of the NUL-terminated string at `s`.
///
/// # Safety
/// `s` is readable up to and including a NUL byte.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: up to the NUL, which the caller vouches for.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}
