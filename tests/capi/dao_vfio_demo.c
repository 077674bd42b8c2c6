/* A DAO-style C user of the VFIO library, linked against dao-vfio's static
 * library (tests/capi/run builds and boots it): it sets up edu (and, on
 * aarch64, the pl031 RTC), reads their ID registers through pdev->mem[...],
 * checks the error paths, frees and finishes. Exits 0 when every check holds.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/capi/dao_vfio.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (cond) {                                                                        \
			printf("ok: " __VA_ARGS__);                                                \
		} else {                                                                           \
			printf("FAILED: " __VA_ARGS__);                                            \
			failures++;                                                                \
		}                                                                                  \
		printf("\n");                                                                      \
	} while (0)

struct worker {
	const char *name;
	enum dao_vfio_dev_type type;
	int errors;
};

/* Sets up and frees one device many times, alongside other threads. */
static void *
churn(void *arg)
{
	struct worker *w = arg;
	struct dao_vfio_device dev;
	int n;

	for (n = 0; n < 25; n++) {
		memset(&dev, 0, sizeof(dev));
		dev.type = w->type;
		if (dao_vfio_device_setup(w->name, &dev) != 0 || !dev.mem[0].addr)
			w->errors++;
		dao_vfio_device_free(&dev);
	}
	return NULL;
}

static uint32_t
reg_read32(struct dao_vfio_device *pdev, int bar, uint64_t off)
{
	return *(volatile uint32_t *)(pdev->mem[bar].addr + off);
}

int
main(void)
{
	struct dao_vfio_device edu, rtc, bad, copy;
	const char *edu_name = getenv("DAO_VFIO_EDU");
	const char *rtc_name = getenv("DAO_VFIO_PL031");
	unsigned int i;
	int rc;

	if (!edu_name) {
		printf("DAO_VFIO_EDU is not set: run on the virtual board\n");
		return 2;
	}
	CHECK(dao_vfio_init() == 0, "dao_vfio_init");
	CHECK(dao_vfio_init() == 0, "dao_vfio_init again is harmless");

	memset(&edu, 0, sizeof(edu));
	edu.type = DAO_VFIO_DEV_PCIE;
	rc = dao_vfio_device_setup(edu_name, &edu);
	CHECK(rc == 0, "setup %s: %d", edu_name, rc);
	CHECK(strcmp(edu.name, edu_name) == 0, "pdev->name is %s", edu.name);
	CHECK(edu.device_fd >= 0 && edu.group_fd >= 0, "fds %d, %d", edu.device_fd, edu.group_fd);
	CHECK(edu.num_resource == 9, "edu has %u regions", edu.num_resource);
	CHECK(edu.mem[DAO_VFIO_DEV_BAR0].addr && edu.mem[DAO_VFIO_DEV_BAR0].len == 0x100000,
	      "BAR0 mapped, %#llx bytes", (unsigned long long)edu.mem[DAO_VFIO_DEV_BAR0].len);
	CHECK(edu.mem[DAO_VFIO_DEV_BAR2].addr == NULL && edu.mem[DAO_VFIO_DEV_BAR2].len == 0,
	      "BAR2 absent: NULL, 0");
	CHECK(edu.mem[7].addr == NULL && edu.mem[7].len == 0x100, "config space: NULL, 0x100");
	CHECK(reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "edu id %#x",
	      reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0));

	/* Errors: a negative errno, pdev untouched. */
	memset(&bad, 0x5a, sizeof(bad));
	bad.type = DAO_VFIO_DEV_PCIE;
	memcpy(&copy, &bad, sizeof(bad));
	rc = dao_vfio_device_setup("0000:7f:1f.7", &bad);
	CHECK(rc == -ENODEV && memcmp(&bad, &copy, sizeof(bad)) == 0, "missing device: %d, untouched", rc);
	rc = dao_vfio_device_setup(edu_name, &bad);
	CHECK(rc == -EEXIST && memcmp(&bad, &copy, sizeof(bad)) == 0, "already open: %d, untouched", rc);

	if (rtc_name) {
		memset(&rtc, 0, sizeof(rtc));
		rtc.type = DAO_VFIO_DEV_PLATFORM;
		rc = dao_vfio_device_setup(rtc_name, &rtc);
		CHECK(rc == 0, "setup %s: %d", rtc_name, rc);
		CHECK(rtc.num_resource == 1 && rtc.mem[0].len == 0x1000, "pl031: one 4 KiB region");
		for (i = 0; i < 4; i++)
			printf("pl031 PeriphID%u = %#x\n", i, reg_read32(&rtc, 0, 0xfe0 + 4 * i) & 0xff);
		CHECK((reg_read32(&rtc, 0, 0xfe0) & 0xff) == 0x31, "pl031 PeriphID0 0x31");
		dao_vfio_device_free(&rtc);
		CHECK(rtc.device_fd == -1 && rtc.mem == NULL, "free clears pdev");
	}

	/* Thread safety: platform devices set up and freed from threads at once. */
	if (rtc_name && getenv("DAO_VFIO_PL061")) {
		struct worker w[2] = { { rtc_name, DAO_VFIO_DEV_PLATFORM, 0 },
				       { getenv("DAO_VFIO_PL061"), DAO_VFIO_DEV_PLATFORM, 0 } };
		pthread_t t[2];

		for (i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, churn, &w[i]);
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		CHECK(w[0].errors == 0 && w[1].errors == 0, "2 threads x 25 setup/free: %d, %d errors",
		      w[0].errors, w[1].errors);
		CHECK(reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "edu untouched meanwhile");
	}

	/* fini with a device open is refused and keeps it. */
	dao_vfio_fini();
	CHECK(reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "edu still mapped after a refused fini");

	dao_vfio_device_free(&edu);
	CHECK(edu.device_fd == -1 && edu.mem == NULL && edu.num_resource == 0, "free clears pdev");
	dao_vfio_device_free(&edu);
	CHECK(1, "a second free is harmless");
	dao_vfio_fini();

	printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}
