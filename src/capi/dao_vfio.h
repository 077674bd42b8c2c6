/* SPDX-License-Identifier: MIT
 *
 * dao-vfio's C interface: a drop-in replacement for Marvell DAO's VFIO
 * library header (same names, constants and structure layout), backed by the
 * dao-vfio Rust crate, without Rust's std (build: cargo rustc --profile clib
 * --lib --no-default-features --features clib --crate-type staticlib, or
 * cdylib). Differences from DAO, all in the caller's favour:
 * errors return a negative errno and leave *pdev untouched; regions that are
 * absent or cannot be mapped have addr == NULL and their len (a PCI device's
 * ROM and VGA entries, which vfio-pci never maps, are not described: NULL
 * and 0, sparing each setup two system calls); free clears
 * *pdev, so a second free does nothing; fini with devices open keeps them
 * open; every call is thread-safe; `mem` points into the library's own fixed
 * storage (no malloc). Errors are also described on stderr.
 */

#ifndef __DAO_VFIO_H__
#define __DAO_VFIO_H__

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Size of dao_vfio_device.name, terminating NUL included. */
#define VFIO_DEV_NAME_MAX_LEN 64

/** Region indexes of the PCI BARs DAO drivers use. */
#define DAO_VFIO_DEV_BAR0 (0)
#define DAO_VFIO_DEV_BAR2 (2)
#define DAO_VFIO_DEV_BAR4 (4)

/** The bus of a device, chosen by the caller before setup. */
enum dao_vfio_dev_type {
	DAO_VFIO_DEV_PLATFORM = 0, /**< Bound to vfio-platform. */
	DAO_VFIO_DEV_PCIE = 1      /**< Bound to vfio-pci. */
};

/** One region of a device (DAO's spelling is kept for source compatibility). */
struct dao_vfio_mem_resouce {
	uint8_t *addr; /**< Mapped address; NULL if absent or not mappable. */
	uint64_t len;  /**< Size of the region in bytes (0: PCI ROM and VGA). */
};

/** The same structure, correctly spelled. */
#define dao_vfio_mem_resource dao_vfio_mem_resouce

/** A device set up by dao_vfio_device_setup(). */
struct dao_vfio_device {
	char name[VFIO_DEV_NAME_MAX_LEN]; /**< Device name (set by setup). */
	int device_fd;                    /**< VFIO device fd (set by setup). */
	int group_fd;                     /**< VFIO group fd (set by setup; -1 for a device
	                                       opened through iommufd, which has none). */
	unsigned int num_resource;        /**< Entries in mem (set by setup). */
	struct dao_vfio_mem_resouce *mem; /**< Regions, by index (set by setup). */
	enum dao_vfio_dev_type type;      /**< The bus: set by the caller. */
	uint8_t prime;                    /**< Caller's field; left untouched. */
	uint8_t mbar;                     /**< Caller's field; left untouched. */
};

/* End of structure dao_vfio_device. */

/** Opens the library (the VFIO container). Returns 0, or a negative errno.
 *  Calling it again while open returns 0 and changes nothing. */
int dao_vfio_init(void);

/** Sets up device dev_name on the bus pdev->type names: maps its regions
 *  and fills *pdev's output fields (name, device_fd, group_fd, num_resource,
 *  mem), each on its own. Only pdev->type is read; prime and mbar are left
 *  untouched, and may be uninitialized. Returns 0, or a negative errno with
 *  *pdev untouched. */
int dao_vfio_device_setup(const char *dev_name, struct dao_vfio_device *pdev);

/** Unmaps and closes the device *pdev describes and clears *pdev's output
 *  fields. A struct describes a device when its mem, device_fd and name are
 *  what that device's setup wrote (a copy of it too). Harmless on a cleared,
 *  zeroed or never set-up *pdev, and on a stale copy of a freed device's
 *  struct, even when its fd now belongs to another device. */
void dao_vfio_device_free(struct dao_vfio_device *pdev);

/** Beyond DAO: the eventfd through which the kernel asks for the device
 *  *pdev describes back (an unbind or hot-unplug waits until it is freed).
 *  The first call enables it; later calls return the same fd. Add it to your
 *  epoll loop; when it becomes readable, finish your work and call
 *  dao_vfio_device_free(). The fd is blocking (a read() waits for the
 *  request): poll it, or read it once it is readable. The library owns the
 *  fd (closed with the device):
 *  do not close it. Returns the fd, or a negative errno: -ENODEV if *pdev
 *  describes no open device, -EINVAL for a platform device or a device
 *  without a request interrupt. */
int dao_vfio_device_request_fd(const struct dao_vfio_device *pdev);

/** Beyond DAO: gives the VF token (a UUID, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
 *  that the following dao_vfio_device_setup() calls pass to the kernel for the
 *  PCI devices that need one. With vfio-pci loaded with enable_sriov=1 and an
 *  SR-IOV PF bound to it, a VF of that PF opens only with the PF's token: call
 *  this first with the token the PF's user chose. Set up a PF after this
 *  call (while none of its VFs is in use) and the token becomes its VFs'.
 *  Devices that take no token are set up as before. A missing or wrong token
 *  fails the setup with -EACCES and a log line naming the PF. NULL forgets
 *  the token. Returns 0, or -EINVAL for text that is not a UUID (the token
 *  kept is then unchanged). */
int dao_vfio_vf_token_set(const char *uuid);

/** Closes the library. Refused (devices stay open) while devices are open. */
void dao_vfio_fini(void);

#ifdef __cplusplus
}
#endif

#endif /* __DAO_VFIO_H__ */
