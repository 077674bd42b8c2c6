//! What the process holds, from `/proc/self`: open fds and memory mappings,
//! counted before the library opens anything and after it closed everything.

use core::mem::MaybeUninit;

use rustix::fs::{self, Mode, OFlags, RawDir};
use rustix::io::{self, Errno};

/// Open fds and mappings of this process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Entries of `/proc/self/fd`, less the one this count reads it through.
    pub fds: usize,
    /// Lines of `/proc/self/maps`.
    pub mappings: usize,
}

/// Counts what the process holds now.
pub fn now() -> Result<Held, Errno> {
    Ok(Held { fds: fds()?, mappings: mappings()? })
}

fn fds() -> Result<usize, Errno> {
    let dir = fs::open("/proc/self/fd", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut entries = RawDir::new(&dir, &mut buf);
    let mut n = 0;
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            n += 1;
        }
    }
    Ok(n - 1) // `dir` itself
}

fn mappings() -> Result<usize, Errno> {
    let maps = fs::open("/proc/self/maps", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buf = [0u8; 1024];
    let mut lines = 0;
    loop {
        match io::read(&maps, &mut buf) {
            Ok(0) => return Ok(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}
