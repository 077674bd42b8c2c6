/*
 * The C baseline of benches/vfio.rs: the same operations with raw VFIO
 * system calls, in the order Marvell DAO's C VFIO library makes them
 * (dao_vfio_init: open the container; dao_vfio_device_setup: group from
 * sysfs, open it, check it is viable, attach it to the container, check and
 * set the IOMMU type, get the device fd, read the device and region info,
 * mmap the regions; dao_vfio_device_free: munmap, close the device, close
 * the group), plus what DAO lacks and the crate has: interrupts through
 * VFIO_DEVICE_SET_IRQS with an eventfd, and DMA through
 * VFIO_IOMMU_MAP_DMA / UNMAP_DMA. Written from <linux/vfio.h>'s documented
 * interface.
 *
 * It also serves the crate's own C interface (src/capi/dao_vfio.h, the
 * static libdao_vfio.a linked in): capi_setup_free_edu and
 * capi_setup_free_pl031 time dao_vfio_device_setup + dao_vfio_device_free
 * from this same process, so the crate's setup is also compared with the
 * raw calls in the same kind of process (static glibc), not only from the
 * benchmark's Rust process (the library as shipped: profile clib, built for
 * size, behind the C interface's lock and slot search). Their calls are the crate's own (raw, outside
 * these wrappers): not counted here, answered as `-`. And
 * crate_calls_setup_free_edu, crate_calls_setup_free_pl031 and
 * crate_calls_setup_free_edu_iommufd make, with
 * raw calls, the sequence of calls the crate makes (see crate_calls), so
 * the cost of the crate's calls is told apart from the cost of its code.
 *
 * Deliberate differences from DAO, so the comparison is with correct C:
 * - Only regions with the MMAP flag and a non-zero size are mapped (DAO maps
 *   every region, and its failing mmaps would only add system calls).
 * - A group without /dev/vfio/N is opened as /dev/vfio/noiommu-N with the
 *   noiommu IOMMU type (DAO has no noiommu; pl031 on the board needs it).
 *
 *   baseline EDU PL031|-
 *
 * opens the container, then reads requests `OP ITERATIONS` from stdin, one a
 * line, and answers each with one batch and one line on stdout:
 * `c OP NS_PER_OP SYSCALLS_PER_OP`. The benchmark keeps it running and
 * alternates its own batches with these. OP is setup_free_edu,
 * setup_free_edu_iommufd (the device cdev, bound to an iommufd and attached
 * to its IO address space, where the kernel has them),
 * setup_free_pl031, capi_setup_free_edu, capi_setup_free_pl031,
 * crate_calls_setup_free_edu, crate_calls_setup_free_pl031,
 * crate_calls_setup_free_edu_iommufd, read32,
 * write32, irq, dma_map_4k, dma_map_2m,
 * dma_alloc_4k or dma_alloc_2m; or tail_read32, tail_write32 or tail_irq,
 * each operation timed on its own, answered with `c OP P50 P99 P99.9 MAX`
 * in nanoseconds. System calls are counted by the thin
 * wrappers below, through which every call of the timed work goes
 * (clock_gettime is the vDSO, outside the timed work).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../src/capi/dao_vfio.h"

/* iommufd and the VFIO device cdev (Linux 6.6+), from <linux/iommufd.h> and
 * <linux/vfio.h>: the build hosts' headers (6.1) predate them. */
#define BASE_IOMMUFD_TYPE ';'
#define BASE_IOMMU_IOAS_ALLOC _IO(BASE_IOMMUFD_TYPE, 0x81)
#define BASE_VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#define BASE_VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)

struct base_ioas_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_ioas_id;
};

struct base_bind_iommufd {
	uint32_t argsz;
	uint32_t flags;
	int32_t iommufd;
	uint32_t out_devid;
};

struct base_attach_pt {
	uint32_t argsz;
	uint32_t flags;
	uint32_t pt_id;
};

/* --- Counted system calls: each wrapper is exactly one system call. ----- */

static unsigned long syscalls;

static int sys_open(const char *path, int flags)
{
	syscalls++;
	return open(path, flags);
}

static int sys_close(int fd)
{
	syscalls++;
	return close(fd);
}

static int sys_ioctl(int fd, unsigned long request, void *arg)
{
	syscalls++;
	return ioctl(fd, request, arg);
}

/* For the ioctls whose argument is an integer, not a pointer. */
static int sys_ioctl_int(int fd, unsigned long request, unsigned long value)
{
	syscalls++;
	return ioctl(fd, request, value);
}

static void *sys_mmap(size_t len, int prot, int flags, int fd, off_t offset)
{
	syscalls++;
	return mmap(NULL, len, prot, flags, fd, offset);
}

static int sys_munmap(void *addr, size_t len)
{
	syscalls++;
	return munmap(addr, len);
}

static ssize_t sys_readlink(const char *path, char *buf, size_t len)
{
	syscalls++;
	return readlink(path, buf, len);
}

static ssize_t sys_read(int fd, void *buf, size_t len)
{
	syscalls++;
	return read(fd, buf, len);
}

static ssize_t sys_pread(int fd, void *buf, size_t len, off_t offset)
{
	syscalls++;
	return pread(fd, buf, len, offset);
}

static ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
	syscalls++;
	return pwrite(fd, buf, len, offset);
}

static int sys_openat(int dir, const char *path, int flags)
{
	syscalls++;
	return openat(dir, path, flags);
}

/* Whether path (from dir) exists: readlinkat, as the crate's proof makes it
 * (EINVAL: there, and not a link). */
static int sys_exists_at(int dir, const char *path)
{
	char target[1];

	syscalls++;
	return readlinkat(dir, path, target, sizeof(target)) >= 0 || errno == EINVAL ? 0 : -1;
}

/* getdents64 has no glibc wrapper in the glibc of the build hosts. */
static long sys_getdents64(int fd, void *buf, size_t len)
{
	syscalls++;
	return syscall(SYS_getdents64, fd, buf, len);
}

static int sys_eventfd(void)
{
	syscalls++;
	return eventfd(0, EFD_CLOEXEC);
}

/* --- Setup and free, as DAO does them. ---------------------------------- */

#define MAX_REGIONS 16

struct region {
	uint8_t *addr; /* NULL when not mapped */
	uint64_t len;
	uint64_t offset; /* within the device fd */
};

struct device {
	char name[64];
	int device_fd;
	int group_fd;
	unsigned num_regions;
	struct region mem[MAX_REGIONS];
};

static int container = -1;

/* Set for the crate_calls_ requests: make the crate's sequence of calls
 * instead of DAO's (no VFIO_CHECK_EXTENSION before VFIO_SET_IOMMU, a PCI
 * device's ROM and VGA regions not described, an explicit
 * VFIO_GROUP_UNSET_CONTAINER before the group is closed; through iommufd,
 * the cdev's directory kept open to prove the cdev opened is the device's,
 * and looked up from /sys/bus/pci/devices held open). */
static int crate_calls;

static void die(const char *what)
{
	fprintf(stderr, "baseline: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Describes the device and its regions, and maps those the kernel allows;
 * on failure, unmaps what it mapped. */
static int map_regions(struct device *dev)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };

	if (sys_ioctl(dev->device_fd, VFIO_DEVICE_GET_INFO, &info) < 0)
		return -1;
	dev->num_regions = info.num_regions < MAX_REGIONS ? info.num_regions : MAX_REGIONS;
	for (unsigned i = 0; i < dev->num_regions; i++) {
		struct vfio_region_info reg = { .argsz = sizeof(reg), .index = i };
		void *addr;
		int prot = 0;

		if (crate_calls && (info.flags & VFIO_DEVICE_FLAGS_PCI) &&
		    (i == VFIO_PCI_ROM_REGION_INDEX || i == VFIO_PCI_VGA_REGION_INDEX))
			continue;

		if (sys_ioctl(dev->device_fd, VFIO_DEVICE_GET_REGION_INFO, &reg) < 0)
			continue; /* EINVAL: no such region (VGA) */
		dev->mem[i].len = reg.size;
		dev->mem[i].offset = reg.offset;
		if (reg.size == 0 || !(reg.flags & VFIO_REGION_INFO_FLAG_MMAP))
			continue;
		if (reg.flags & VFIO_REGION_INFO_FLAG_READ)
			prot |= PROT_READ;
		if (reg.flags & VFIO_REGION_INFO_FLAG_WRITE)
			prot |= PROT_WRITE;
		addr = sys_mmap(reg.size, prot, MAP_SHARED, dev->device_fd, (off_t)reg.offset);
		if (addr == MAP_FAILED)
			goto unmap;
		dev->mem[i].addr = addr;
	}
	return 0;

unmap:
	for (unsigned i = 0; i < dev->num_regions; i++)
		if (dev->mem[i].addr)
			sys_munmap(dev->mem[i].addr, dev->mem[i].len);
	return -1;
}

/* bus: "pci" or "platform" (DAO's caller states it in pdev->type). */
static int device_setup(const char *bus, const char *name, struct device *dev)
{
	char path[256], link[256], node[288];
	ssize_t n;
	const char *group;
	int noiommu = 0;
	unsigned long type;
	struct vfio_group_status status = { .argsz = sizeof(status) };

	memset(dev, 0, sizeof(*dev));
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	snprintf(path, sizeof(path), "/sys/bus/%s/devices/%s/iommu_group", bus, name);
	n = sys_readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -1;
	link[n] = '\0';
	group = strrchr(link, '/');
	group = group ? group + 1 : link;

	snprintf(node, sizeof(node), "/dev/vfio/%s", group);
	dev->group_fd = sys_open(node, O_RDWR);
	if (dev->group_fd < 0 && errno == ENOENT) {
		snprintf(node, sizeof(node), "/dev/vfio/noiommu-%s", group);
		dev->group_fd = sys_open(node, O_RDWR);
		noiommu = 1;
	}
	if (dev->group_fd < 0)
		return -1;
	if (sys_ioctl(dev->group_fd, VFIO_GROUP_GET_STATUS, &status) < 0 ||
	    !(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		goto close_group;
	if (sys_ioctl(dev->group_fd, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		goto close_group;
	type = noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU;
	if (!crate_calls && sys_ioctl_int(container, VFIO_CHECK_EXTENSION, type) <= 0)
		goto close_group;
	if (sys_ioctl_int(container, VFIO_SET_IOMMU, type) < 0)
		goto close_group;
	dev->device_fd = sys_ioctl(dev->group_fd, VFIO_GROUP_GET_DEVICE_FD, dev->name);
	if (dev->device_fd < 0)
		goto close_group;
	if (map_regions(dev) < 0)
		goto close_device;
	return 0;

close_device:
	sys_close(dev->device_fd);
close_group:
	sys_close(dev->group_fd);
	return -1;
}

/* Through iommufd (set up in main when the kernel has it), with the
 * directory the crate's context holds beside it (opened there too, used by
 * the crate_calls_ request; -1 if it cannot be opened, as for the crate). */
static int iommufd = -1;
static uint32_t ioas;
static int pci_devices = -1;

/* The device's cdev number N, from its sysfs vfio-dev/vfioN: open the
 * directory, read entries until vfioN, close (readdir's calls, without
 * DIR's allocation). With crate_calls the directory is left open in
 * *listed, for the crate's proof that the cdev opened is still the
 * device's (device_setup_iommufd). */
static int find_cdev(const char *name, int *listed)
{
	char path[256];
	union {
		char bytes[2048];
		uint64_t align;
	} buf;
	int dir, number = -1;
	long n;

	if (crate_calls && pci_devices >= 0) {
		snprintf(path, sizeof(path), "%s/vfio-dev", name);
		dir = sys_openat(pci_devices, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} else {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", name);
		dir = sys_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (dir < 0)
		return -1;
	while (number < 0 && (n = sys_getdents64(dir, buf.bytes, sizeof(buf.bytes))) > 0) {
		for (long at = 0; at < n && number < 0;) {
			/* struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name */
			uint16_t reclen;
			const char *entry = buf.bytes + at + 19;

			memcpy(&reclen, buf.bytes + at + 16, sizeof(reclen));
			if (strncmp(entry, "vfio", 4) == 0 && entry[4] >= '0' && entry[4] <= '9')
				number = atoi(entry + 4);
			at += reclen;
		}
	}
	if (crate_calls && number >= 0)
		*listed = dir;
	else
		sys_close(dir);
	return number;
}

/* Open the cdev, bind it to the iommufd, attach it to the IO address
 * space, then describe and map the regions as device_setup does. */
static int device_setup_iommufd(const char *name, struct device *dev)
{
	char node[64];
	int listed = -1;
	int number = find_cdev(name, &listed);
	struct base_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	struct base_attach_pt attach = { .argsz = sizeof(attach), .pt_id = ioas };

	memset(dev, 0, sizeof(*dev));
	dev->group_fd = -1;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	if (number < 0)
		return -1;
	snprintf(node, sizeof(node), "/dev/vfio/devices/vfio%d", number);
	dev->device_fd = sys_open(node, O_RDWR | O_CLOEXEC);
	if (listed >= 0) {
		/* The crate's proof: vfioN is still in the directory listed. */
		snprintf(node, sizeof(node), "vfio%d", number);
		int found = dev->device_fd < 0 ? 0 : sys_exists_at(listed, node);

		sys_close(listed);
		if (found < 0) {
			sys_close(dev->device_fd);
			return -1;
		}
	}
	if (dev->device_fd < 0)
		return -1;
	if (sys_ioctl(dev->device_fd, BASE_VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0 ||
	    sys_ioctl(dev->device_fd, BASE_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0 || map_regions(dev) < 0) {
		sys_close(dev->device_fd);
		return -1;
	}
	return 0;
}

static void device_free(struct device *dev)
{
	for (unsigned i = 0; i < dev->num_regions; i++)
		if (dev->mem[i].addr)
			sys_munmap(dev->mem[i].addr, dev->mem[i].len);
	sys_close(dev->device_fd);
	if (crate_calls && dev->group_fd >= 0)
		sys_ioctl(dev->group_fd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	if (dev->group_fd >= 0)
		sys_close(dev->group_fd);
	memset(dev, 0, sizeof(*dev));
}

/* --- Measurement. -------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct batch {
	uint64_t start;
	unsigned long calls;
};

static struct batch begin(void)
{
	struct batch b = { now_ns(), syscalls };
	return b;
}

static void report(const char *op, struct batch b, unsigned long iters)
{
	uint64_t ns = now_ns() - b.start;

	printf("c %s %.1f %.2f\n", op, (double)ns / iters, (double)(syscalls - b.calls) / iters);
}

static void bench_setup_free(const char *op, const char *bus, const char *name, unsigned long iters)
{
	struct device dev;
	struct batch b = begin();

	for (unsigned long i = 0; i < iters; i++) {
		int failed = bus ? device_setup(bus, name, &dev) : device_setup_iommufd(name, &dev);

		if (failed < 0)
			die(name);
		device_free(&dev);
	}
	report(op, b, iters);
}

/* The same cycle through the crate's C interface (DAO's API functions),
 * from this process: the library opens its container on the first request
 * (untimed) and keeps it, as the raw side keeps its own. */
static void bench_capi_setup_free(const char *op, enum dao_vfio_dev_type type, const char *name,
				  unsigned long iters)
{
	struct dao_vfio_device dev;
	uint64_t start;
	int rc = dao_vfio_init();

	if (rc < 0) {
		errno = -rc;
		die("dao_vfio_init");
	}
	start = now_ns();
	for (unsigned long i = 0; i < iters; i++) {
		dev.type = type;
		rc = dao_vfio_device_setup(name, &dev);
		if (rc < 0) {
			errno = -rc;
			die(name);
		}
		dao_vfio_device_free(&dev);
	}
	printf("c %s %.1f -\n", op, (double)(now_ns() - start) / iters);
}

/* edu's BAR 0 registers (QEMU docs/specs/edu.rst). */
#define EDU_ID 0x00
#define EDU_LIVENESS 0x04
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64

static volatile uint32_t *reg32(uint8_t *bar, size_t offset)
{
	return (volatile uint32_t *)(bar + offset);
}

static void bench_read32(uint8_t *bar0, unsigned long iters)
{
	uint32_t sum = 0;
	struct batch b = begin();

	for (unsigned long i = 0; i < iters; i++)
		sum += *reg32(bar0, EDU_ID);
	report("read32", b, iters);
	if (sum != (uint32_t)(0x010000edu * iters)) {
		fprintf(stderr, "baseline: edu id read wrong\n");
		exit(1);
	}
}

static void bench_write32(uint8_t *bar0, unsigned long iters)
{
	struct batch b = begin();

	for (unsigned long i = 0; i < iters; i++)
		*reg32(bar0, EDU_LIVENESS) = (uint32_t)i;
	report("write32", b, iters);
}

/* Sets BUS_MASTER and MEMORY in the PCI command register (config offset 4):
 * edu sends MSIs only as a bus master. */
static void enable_bus_master(struct device *edu)
{
	uint64_t at = edu->mem[VFIO_PCI_CONFIG_REGION_INDEX].offset + 4;
	uint16_t command;

	if (sys_pread(edu->device_fd, &command, 2, (off_t)at) != 2)
		die("pread PCI command");
	command |= 0x6;
	if (sys_pwrite(edu->device_fd, &command, 2, (off_t)at) != 2)
		die("pwrite PCI command");
}

/* VFIO_DEVICE_SET_IRQS on edu's MSI with one eventfd (or none: fd < 0). */
static void set_msi(struct device *edu, int fd)
{
	union {
		struct vfio_irq_set set;
		uint8_t bytes[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} u;
	int32_t data = fd;

	memset(&u, 0, sizeof(u));
	u.set.argsz = fd < 0 ? sizeof(u.set) : sizeof(u.bytes);
	u.set.flags = VFIO_IRQ_SET_ACTION_TRIGGER | (fd < 0 ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD);
	u.set.index = VFIO_PCI_MSI_IRQ_INDEX;
	u.set.start = 0;
	u.set.count = fd < 0 ? 0 : 1;
	memcpy(u.set.data, &data, sizeof(data));
	if (sys_ioctl(edu->device_fd, VFIO_DEVICE_SET_IRQS, &u) < 0)
		die("VFIO_DEVICE_SET_IRQS");
}

/* Raise, wait for the eventfd (a blocking read), acknowledge. */
static void bench_irq(struct device *edu, unsigned long iters)
{
	uint8_t *bar0 = edu->mem[VFIO_PCI_BAR0_REGION_INDEX].addr;
	int efd;
	struct batch b;

	enable_bus_master(edu);
	efd = sys_eventfd();
	if (efd < 0)
		die("eventfd");
	set_msi(edu, efd);
	b = begin();
	for (unsigned long i = 0; i < iters; i++) {
		uint64_t count;

		*reg32(bar0, EDU_IRQ_RAISE) = 1;
		if (sys_read(efd, &count, sizeof(count)) != sizeof(count))
			die("read eventfd");
		*reg32(bar0, EDU_IRQ_ACK) = 1;
	}
	report("irq", b, iters);
	set_msi(edu, -1);
	sys_close(efd);
}

/* --- Latency of single operations (tail_* requests). --------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The value at quantile q of n sorted samples (nearest rank). */
static double quantile(const uint64_t *sorted, unsigned long n, double q)
{
	unsigned long rank = (unsigned long)(q * (double)n + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1];
}

/* Answers `c OP P50 P99 P99.9 MAX` (ns) for n samples. */
static void report_tail(const char *op, uint64_t *ns, unsigned long n)
{
	qsort(ns, n, sizeof(*ns), cmp_u64);
	printf("c %s %.0f %.0f %.0f %.0f\n", op, quantile(ns, n, 0.50), quantile(ns, n, 0.99),
	       quantile(ns, n, 0.999), (double)ns[n - 1]);
}

/* Each operation timed on its own, the clock read included, as the crate's side does. */
static void bench_tail(const char *op, struct device *edu, unsigned long n)
{
	uint8_t *bar0 = edu->mem[VFIO_PCI_BAR0_REGION_INDEX].addr;
	uint64_t *ns = malloc(n * sizeof(*ns));
	uint32_t sum = 0;
	int efd = -1;

	if (!ns)
		die("malloc");
	if (strcmp(op, "tail_irq") == 0) {
		enable_bus_master(edu);
		efd = sys_eventfd();
		if (efd < 0)
			die("eventfd");
		set_msi(edu, efd);
	}
	for (unsigned long i = 0; i < n; i++) {
		uint64_t t = now_ns();

		if (efd >= 0) {
			uint64_t count;

			*reg32(bar0, EDU_IRQ_RAISE) = 1;
			if (sys_read(efd, &count, sizeof(count)) != sizeof(count))
				die("read eventfd");
			*reg32(bar0, EDU_IRQ_ACK) = 1;
		} else if (strcmp(op, "tail_read32") == 0) {
			sum += *reg32(bar0, EDU_ID);
		} else {
			*reg32(bar0, EDU_LIVENESS) = (uint32_t)i;
		}
		ns[i] = now_ns() - t;
	}
	if (efd >= 0) {
		set_msi(edu, -1);
		sys_close(efd);
	}
	if (strcmp(op, "tail_read32") == 0 && sum != (uint32_t)(0x010000edu * n)) {
		fprintf(stderr, "baseline: edu id read wrong\n");
		exit(1);
	}
	report_tail(op, ns, n);
	free(ns);
}

/* The IOVA the C side maps at (the crate's allocator starts at 1 MiB too). */
#define IOVA 0x100000u

static void dma_map(void *vaddr, uint64_t len)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uint64_t)(uintptr_t)vaddr,
		.iova = IOVA,
		.size = len,
	};

	if (sys_ioctl(container, VFIO_IOMMU_MAP_DMA, &map) < 0)
		die("VFIO_IOMMU_MAP_DMA");
}

static void dma_unmap(uint64_t len)
{
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap), .iova = IOVA, .size = len };

	if (sys_ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0 || unmap.size != len)
		die("VFIO_IOMMU_UNMAP_DMA");
}

static void *anonymous(size_t len)
{
	void *p = sys_mmap(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap anonymous");
	return p;
}

/* Map and unmap of memory allocated beforehand: the IOMMU work alone. */
static void bench_dma_map(const char *op, size_t len, unsigned long iters)
{
	void *memory = anonymous(len);
	struct batch b;

	/* One untimed round first, as the crate's side has (it warms the IOMMU
	 * page tables the same way on both sides). */
	dma_map(memory, len);
	dma_unmap(len);
	b = begin();

	for (unsigned long i = 0; i < iters; i++) {
		dma_map(memory, len);
		dma_unmap(len);
	}
	report(op, b, iters);
	sys_munmap(memory, len);
}

/* Allocate, map, unmap, release: what the crate's dma_alloc/dma_free do. */
static void bench_dma_alloc(const char *op, size_t len, unsigned long iters)
{
	struct batch b;
	void *first = anonymous(len);

	/* One untimed round first, as in bench_dma_map. */
	dma_map(first, len);
	dma_unmap(len);
	if (sys_munmap(first, len) < 0)
		die("munmap");
	b = begin();

	for (unsigned long i = 0; i < iters; i++) {
		void *p = anonymous(len);

		dma_map(p, len);
		dma_unmap(len);
		if (sys_munmap(p, len) < 0)
			die("munmap");
	}
	report(op, b, iters);
}

/* --- NVMe: the same polled loop as examples/nvme/driver.rs, on raw VFIO. -- */

#define NVME_BLOCK 4096u
#define NVME_MAX_DEPTH 32u
#define NVME_ENTRIES 64u
#define NVME_ADMIN_ENTRIES 16u
#define NVME_ASQ 0x0000u
#define NVME_ACQ 0x1000u
#define NVME_IOSQ 0x2000u
#define NVME_IOCQ 0x3000u
#define NVME_DATA 0x4000u
#define NVME_DMA_LEN (NVME_DATA + NVME_MAX_DEPTH * NVME_BLOCK)
#define NVME_POISON 0xdeadbeefdeadbeefull

/* The driver's barriers: a store barrier before a doorbell, a
 * load barrier after a completion's phase bit (the crate's io_wmb/io_rmb). */
#if defined(__aarch64__)
#define nvme_wmb() __asm__ volatile("dmb oshst" ::: "memory")
#define nvme_rmb() __asm__ volatile("dmb oshld" ::: "memory")
#else
#define nvme_wmb() __asm__ volatile("" ::: "memory")
#define nvme_rmb() __asm__ volatile("" ::: "memory")
#endif

struct nvme_queue {
	unsigned sq, cq, entries, tail, head, phase, sq_db, cq_db;
};

struct nvme {
	uint8_t *bar;
	uint8_t *mem;
	struct nvme_queue admin, io;
	uint32_t per_block; /* LBAs per 4 KiB */
	uint64_t blocks;
};

static uint64_t nvme_pattern(uint64_t block, uint64_t w)
{
	return (block << 16 | w) ^ 0x0da0000000000000ull ^ w << 40;
}

static void nvme_submit(struct nvme *n, struct nvme_queue *q, const uint64_t c[8])
{
	volatile uint64_t *e = (volatile uint64_t *)(n->mem + q->sq + q->tail * 64);

	for (int i = 0; i < 8; i++)
		e[i] = c[i];
	q->tail = (q->tail + 1) % q->entries;
	nvme_wmb();
	*reg32(n->bar, q->sq_db) = q->tail;
}

/* 1 and the completion's dword 3 when one was posted, else 0. */
static int nvme_poll(struct nvme *n, struct nvme_queue *q, uint32_t *dw3)
{
	volatile uint32_t *e = (volatile uint32_t *)(n->mem + q->cq + q->head * 16);
	uint32_t d = e[3];

	if (((d >> 16) & 1) != q->phase)
		return 0;
	nvme_rmb();
	*dw3 = d;
	if (++q->head == q->entries) {
		q->head = 0;
		q->phase ^= 1;
	}
	*reg32(n->bar, q->cq_db) = q->head;
	return 1;
}

static void nvme_admin(struct nvme *n, uint64_t c[8])
{
	uint32_t dw3;
	uint64_t start = now_ns();

	nvme_submit(n, &n->admin, c);
	while (!nvme_poll(n, &n->admin, &dw3))
		if (now_ns() - start > 5000000000ull)
			die("NVMe admin command timed out");
	if (dw3 >> 17) {
		fprintf(stderr, "baseline: NVMe admin opcode %#x: status %#x\n", (unsigned)(c[0] & 0xff), dw3 >> 17);
		exit(1);
	}
}

static void nvme_wait_ready(struct nvme *n, uint32_t ready)
{
	uint64_t start = now_ns();

	while ((*reg32(n->bar, 0x1c) & 1) != ready)
		if (now_ns() - start > 10000000000ull)
			die("NVMe CSTS.RDY");
}

static void nvme_start(struct nvme *n)
{
	uint64_t cap = *(volatile uint64_t *)n->bar, c[8];
	unsigned stride = 4u << ((cap >> 32) & 0xf);
	uint32_t lbaf;

	*reg32(n->bar, 0x14) &= ~1u;
	nvme_wait_ready(n, 0);
	memset(n->mem, 0, NVME_DATA);
	*reg32(n->bar, 0x24) = (NVME_ADMIN_ENTRIES - 1) << 16 | (NVME_ADMIN_ENTRIES - 1);
	*(volatile uint64_t *)(n->bar + 0x28) = IOVA + NVME_ASQ;
	*(volatile uint64_t *)(n->bar + 0x30) = IOVA + NVME_ACQ;
	*reg32(n->bar, 0x14) = 1 | 6 << 16 | 4 << 20;
	nvme_wait_ready(n, 1);
	n->admin = (struct nvme_queue){ NVME_ASQ, NVME_ACQ, NVME_ADMIN_ENTRIES, 0, 0, 1, 0x1000, 0x1000 + stride };
	n->io = (struct nvme_queue){ NVME_IOSQ, NVME_IOCQ, NVME_ENTRIES, 0, 0, 1, 0x1000 + 2 * stride, 0x1000 + 3 * stride };
	/* Identify namespace 1: its size and LBA format. */
	memset(c, 0, sizeof(c));
	c[0] = 0x06 | 1ull << 16 | 1ull << 32;
	c[3] = IOVA + NVME_DATA;
	nvme_admin(n, c);
	lbaf = *(volatile uint32_t *)(n->mem + NVME_DATA + 128 + 4 * (n->mem[NVME_DATA + 26] & 0xf));
	n->per_block = NVME_BLOCK >> ((lbaf >> 16) & 0xff);
	n->blocks = *(volatile uint64_t *)(n->mem + NVME_DATA) / n->per_block;
	memset(c, 0, sizeof(c));
	c[0] = 0x09 | 2ull << 16;
	c[5] = 0x07; /* number of queues: one pair */
	nvme_admin(n, c);
	memset(c, 0, sizeof(c));
	c[0] = 0x05 | 3ull << 16;
	c[3] = IOVA + NVME_IOCQ;
	c[5] = (uint64_t)((NVME_ENTRIES - 1) << 16 | 1) | 1ull << 32;
	nvme_admin(n, c);
	memset(c, 0, sizeof(c));
	c[0] = 0x01 | 4ull << 16;
	c[3] = IOVA + NVME_IOSQ;
	c[5] = (uint64_t)((NVME_ENTRIES - 1) << 16 | 1) | (uint64_t)(1u << 16 | 1) << 32;
	nvme_admin(n, c);
}

struct nvme_slots {
	uint64_t rng, block[NVME_MAX_DEPTH], started[NVME_MAX_DEPTH];
};

static void nvme_issue_read(struct nvme *n, struct nvme_slots *s, unsigned slot, uint64_t now)
{
	uint64_t c[8] = { 0 }, block, slba;
	volatile uint64_t *data = (volatile uint64_t *)(n->mem + NVME_DATA + slot * NVME_BLOCK);

	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	block = s->rng % n->blocks;
	data[0] = NVME_POISON;
	data[NVME_BLOCK / 8 - 1] = NVME_POISON;
	s->block[slot] = block;
	s->started[slot] = now;
	slba = block * n->per_block;
	c[0] = 0x02 | (uint64_t)slot << 16 | 1ull << 32;
	c[3] = IOVA + NVME_DATA + slot * NVME_BLOCK;
	c[5] = slba;
	c[6] = n->per_block - 1;
	nvme_submit(n, &n->io, c);
}

/* `iters` random 4 KiB reads, `depth` in flight, each checked and timed:
 * answers `c OP IOPS P50 P99 P99.9 MAX` (latencies in ns). The disk holds the
 * pattern the crate's side wrote. */
static void bench_nvme(const char *op, const char *name, unsigned depth, unsigned long iters)
{
	struct device dev;
	struct nvme n;
	struct nvme_slots s = { .rng = 0x5eed | 1 };
	uint64_t *ns = malloc(iters * sizeof(*ns)), first, last;
	unsigned long submitted = 0, done = 0;

	if (!ns)
		die("malloc");
	if (device_setup("pci", name, &dev) < 0)
		die(name);
	enable_bus_master(&dev);
	n.bar = dev.mem[VFIO_PCI_BAR0_REGION_INDEX].addr;
	n.mem = anonymous(NVME_DMA_LEN);
	dma_map(n.mem, NVME_DMA_LEN);
	nvme_start(&n);
	first = last = now_ns();
	while (submitted < depth && submitted < iters) {
		nvme_issue_read(&n, &s, (unsigned)submitted, now_ns());
		submitted++;
	}
	while (done < iters) {
		uint32_t dw3;
		uint64_t now, block;
		unsigned slot;
		volatile uint64_t *data;

		if (!nvme_poll(&n, &n.io, &dw3)) {
			if (now_ns() - last > 5000000000ull)
				die("NVMe read timed out");
			continue;
		}
		now = last = now_ns();
		slot = dw3 & 0xffff;
		if (slot >= depth) {
			fprintf(stderr, "baseline: NVMe completion for command %u, never submitted\n", slot);
			exit(1);
		}
		block = s.block[slot];
		data = (volatile uint64_t *)(n.mem + NVME_DATA + slot * NVME_BLOCK);
		if (dw3 >> 17 || data[0] != nvme_pattern(block, 0) ||
		    data[NVME_BLOCK / 8 - 1] != nvme_pattern(block, NVME_BLOCK / 8 - 1)) {
			fprintf(stderr, "baseline: NVMe read of block %llu: status %#x, wrong data\n",
				(unsigned long long)block, dw3 >> 17);
			exit(1);
		}
		ns[done++] = now - s.started[slot];
		if (submitted < iters) {
			nvme_issue_read(&n, &s, slot, now);
			submitted++;
		}
	}
	*reg32(n.bar, 0x14) &= ~1u;
	nvme_wait_ready(&n, 0);
	dma_unmap(NVME_DMA_LEN);
	sys_munmap(n.mem, NVME_DMA_LEN);
	device_free(&dev);
	qsort(ns, iters, sizeof(*ns), cmp_u64);
	printf("c %s %.1f %.0f %.0f %.0f %.0f\n", op, (double)iters * 1e9 / (double)(last - first),
	       quantile(ns, iters, 0.50), quantile(ns, iters, 0.99), quantile(ns, iters, 0.999),
	       (double)ns[iters - 1]);
	free(ns);
}

/* One batch of OP: edu is set up before and freed after (untimed), so that
 * between batches the benchmark's Rust side can open it. */
static void batch(const char *op, unsigned long iters, const char *edu_name, const char *pl031_name,
		  const char *nvme_name)
{
	struct device edu;

	if (strcmp(op, "nvme_qd1") == 0 || strcmp(op, "nvme_qd32") == 0) {
		bench_nvme(op, nvme_name, strcmp(op, "nvme_qd1") == 0 ? 1 : NVME_MAX_DEPTH, iters);
		return;
	}

	if (strcmp(op, "setup_free_edu") == 0) {
		bench_setup_free(op, "pci", edu_name, iters);
		return;
	}
	if (strcmp(op, "setup_free_edu_iommufd") == 0) {
		if (iommufd < 0) {
			fprintf(stderr, "baseline: no /dev/iommu for %s\n", op);
			exit(2);
		}
		bench_setup_free(op, NULL, edu_name, iters);
		return;
	}
	if (strcmp(op, "setup_free_pl031") == 0) {
		bench_setup_free(op, "platform", pl031_name, iters);
		return;
	}
	if (strcmp(op, "crate_calls_setup_free_edu") == 0 || strcmp(op, "crate_calls_setup_free_pl031") == 0) {
		int edu = strcmp(op, "crate_calls_setup_free_edu") == 0;

		crate_calls = 1;
		bench_setup_free(op, edu ? "pci" : "platform", edu ? edu_name : pl031_name, iters);
		crate_calls = 0;
		return;
	}
	if (strcmp(op, "crate_calls_setup_free_edu_iommufd") == 0) {
		if (iommufd < 0) {
			fprintf(stderr, "baseline: no /dev/iommu for %s\n", op);
			exit(2);
		}
		crate_calls = 1;
		bench_setup_free(op, NULL, edu_name, iters);
		crate_calls = 0;
		return;
	}
	if (strcmp(op, "capi_setup_free_edu") == 0) {
		bench_capi_setup_free(op, DAO_VFIO_DEV_PCIE, edu_name, iters);
		return;
	}
	if (strcmp(op, "capi_setup_free_pl031") == 0) {
		bench_capi_setup_free(op, DAO_VFIO_DEV_PLATFORM, pl031_name, iters);
		return;
	}
	if (device_setup("pci", edu_name, &edu) < 0)
		die(edu_name);
	if (strcmp(op, "read32") == 0)
		bench_read32(edu.mem[VFIO_PCI_BAR0_REGION_INDEX].addr, iters);
	else if (strcmp(op, "write32") == 0)
		bench_write32(edu.mem[VFIO_PCI_BAR0_REGION_INDEX].addr, iters);
	else if (strcmp(op, "irq") == 0)
		bench_irq(&edu, iters);
	else if (strncmp(op, "tail_", 5) == 0 &&
		 (strcmp(op, "tail_read32") == 0 || strcmp(op, "tail_write32") == 0 || strcmp(op, "tail_irq") == 0))
		bench_tail(op, &edu, iters);
	else if (strcmp(op, "dma_map_4k") == 0)
		bench_dma_map(op, 4096, iters);
	else if (strcmp(op, "dma_map_2m") == 0)
		bench_dma_map(op, 2 << 20, iters);
	else if (strcmp(op, "dma_alloc_4k") == 0)
		bench_dma_alloc(op, 4096, iters);
	else if (strcmp(op, "dma_alloc_2m") == 0)
		bench_dma_alloc(op, 2 << 20, iters);
	else {
		fprintf(stderr, "baseline: unknown operation '%s'\n", op);
		exit(2);
	}
	device_free(&edu);
}

int main(int argc, char **argv)
{
	char op[64];
	unsigned long iters;

	if (argc != 4) {
		fprintf(stderr, "usage: baseline EDU PL031|- NVME|-   (then `OP ITERATIONS` lines on stdin)\n");
		return 2;
	}
	/* dao_vfio_init */
	container = sys_open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		die("/dev/vfio/vfio");
	if (sys_ioctl_int(container, VFIO_GET_API_VERSION, 0) != VFIO_API_VERSION)
		die("VFIO_GET_API_VERSION");
	/* iommufd, where the kernel has it: one IO address space for the cdev rows. */
	iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (iommufd >= 0) {
		struct base_ioas_alloc alloc = { .size = sizeof(alloc) };

		if (ioctl(iommufd, BASE_IOMMU_IOAS_ALLOC, &alloc) < 0)
			die("IOMMU_IOAS_ALLOC");
		ioas = alloc.out_ioas_id;
		pci_devices = open("/sys/bus/pci/devices", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}

	while (scanf("%63s %lu", op, &iters) == 2) {
		if (iters == 0 || (strstr(op, "setup_free_pl031") && strcmp(argv[2], "-") == 0) ||
		    (strncmp(op, "nvme_", 5) == 0 && strcmp(argv[3], "-") == 0)) {
			fprintf(stderr, "baseline: bad request '%s %lu'\n", op, iters);
			return 2;
		}
		batch(op, iters, argv[1], argv[2], argv[3]);
		fflush(stdout);
	}
	sys_close(container); /* dao_vfio_fini */
	dao_vfio_fini();      /* the crate's, if a capi_ request opened it */
	return 0;
}
