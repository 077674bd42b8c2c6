//! What a register access does once the device's memory is switched off
//! (issue 17.5), on the real kernel: run on the virtual boards
//! (`tests/board/test`), ignored on the host.
//!
//! vfio-pci zaps a device's BAR mappings when its command register loses
//! MEMORY_SPACE, and a later access through them faults with SIGBUS until
//! MEMORY_SPACE is set again. That is a clean termination of the process,
//! not undefined behaviour: the access never reaches memory. The crate
//! documents it, with the recovery, rather than checking a state on every
//! register access. `reset()` is different: the kernel restores the command
//! register after the reset (pci_try_reset_function saves and restores the
//! config space), so the mappings fault back in; edu has no reset, and
//! refuses it, leaving its mappings as they were.

use dao_vfio::sys::pci_region;
use dao_vfio::{ErrorKind, PciCommand};

mod common;
use common::dev;

/// Forks; the child runs `body` and exits 0 if it returns. Returns the
/// child's wait status.
fn in_child(body: impl FnOnce()) -> libc::c_int {
    // SAFETY: fork in a process whose other threads hold no lock the child
    // needs: the child only makes the crate's system calls and register
    // accesses (no allocation, no lock) and then exits without unwinding.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        body();
        // SAFETY: ends the child at once, running no destructor of the parent's state.
        unsafe { libc::_exit(0) }
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place to write.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_register_access_with_memory_space_off_ends_the_process_with_sigbus() {
    let name = dev("DAO_VFIO_EDU");
    // The child opens edu itself, so the mapping it reads is its own (one
    // inherited through fork would keep the parent's page table entries).
    let status = in_child(|| {
        let code = (|| {
            let mut vfio = common::context();
            let edu = vfio.setup(&name).map_err(|_| 10)?;
            let dev = vfio.device(&edu).map_err(|_| 10)?;
            let bar0 = dev.region(pci_region::BAR0).map_err(|_| 10)?;
            if bar0.read32(0) != Ok(0x010000ed) {
                return Err(11);
            }
            let cleared = dev.pci_command_clear(PciCommand::MEMORY_SPACE).map_err(|_| 12)?;
            if cleared.contains(PciCommand::MEMORY_SPACE) {
                return Err(13);
            }
            let _ = bar0.read32(0); // faults: the child ends here
            Err(14)
        })()
        .unwrap_or_else(|code| code);
        // SAFETY: reached only if the access did not fault.
        unsafe { libc::_exit(code) }
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "the child should die of SIGBUS; wait status {status:#x}"
    );
    // The recovery, in this process: memory space off, then on again before
    // any access, and the mapping works.
    let mut vfio = common::context();
    let edu = vfio.setup(&name).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let bar0 = dev.region(pci_region::BAR0).unwrap();
    assert_eq!(bar0.read32(0), Ok(0x010000ed));
    assert!(!dev.pci_command_clear(PciCommand::MEMORY_SPACE).unwrap().contains(PciCommand::MEMORY_SPACE));
    assert!(dev.pci_command_set(PciCommand::MEMORY_SPACE).unwrap().contains(PciCommand::MEMORY_SPACE));
    assert_eq!(bar0.read32(0), Ok(0x010000ed));
    bar0.write32(4, 0x1234_5678).unwrap();
    assert_eq!(bar0.read32(4), Ok(!0x1234_5678), "edu's liveness register inverts");
    vfio.free(edu).unwrap();
}

#[test]
#[ignore = "needs a device bound to VFIO: runs on the virtual board (tests/board/test)"]
fn a_refused_reset_leaves_the_mappings_working() {
    let mut vfio = common::context();
    let edu = vfio.setup(&dev("DAO_VFIO_EDU")).unwrap();
    let dev = vfio.device(&edu).unwrap();
    let bar0 = dev.region(pci_region::BAR0).unwrap();
    let status = in_child(|| {
        let refused = dev.reset().is_err_and(|e| e.kind() == ErrorKind::ResetUnsupported);
        let readable = bar0.read32(0) == Ok(0x010000ed);
        if !(refused && readable) {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(4) }
        }
    });
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "wait status {status:#x}");
    assert_eq!(bar0.read32(0), Ok(0x010000ed));
    vfio.free(edu).unwrap();
}
