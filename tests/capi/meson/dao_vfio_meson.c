/* The program of the meson project (tests/capi/meson/run builds it against the installed
 * library and boots it on a board): DAO's four calls on edu (and pl031 where the board has one),
 * the ID registers read through pdev->mem[...]. Exits 0 when every check holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dao_vfio.h> /* found through pkg-config's Cflags, as DAO includes it */

static int failures;

static void
check(int ok, const char *what, unsigned int value)
{
	printf("%s: %s (%#x)\n", ok ? "ok" : "FAILED", what, value);
	failures += !ok;
}

/* Sets up NAME, checks the 32-bit register at OFF of region 0 (masked with MASK) is WANT, frees. */
static void
probe(const char *name, enum dao_vfio_dev_type type, uint64_t off, uint32_t mask, uint32_t want)
{
	struct dao_vfio_device dev;
	uint32_t value;
	int rc;

	memset(&dev, 0, sizeof(dev));
	dev.type = type;
	rc = dao_vfio_device_setup(name, &dev);
	check(rc == 0, name, (unsigned int)rc);
	if (rc != 0)
		return;
	value = *(volatile uint32_t *)(dev.mem[0].addr + off) & mask;
	check(value == want, "ID register", value);
	dao_vfio_device_free(&dev);
	check(dev.device_fd == -1, "freed", 0);
}

int
main(void)
{
	const char *edu = getenv("DAO_VFIO_EDU");
	const char *pl031 = getenv("DAO_VFIO_PL031");
	int rc;

	if (!edu) {
		printf("DAO_VFIO_EDU is not set: run on the virtual board\n");
		return 2;
	}
	rc = dao_vfio_init();
	check(rc == 0, "dao_vfio_init", (unsigned int)rc);
	probe(edu, DAO_VFIO_DEV_PCIE, 0, 0xffffffff, 0x010000ed);
	if (pl031)
		probe(pl031, DAO_VFIO_DEV_PLATFORM, 0xfe0, 0xff, 0x31); /* PeriphID0 */
	dao_vfio_fini();
	printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}
