/* A DAO-style C user of the VFIO library, linked against dao-vfio's static
 * library (tests/capi/run builds and boots it): it sets up edu (and, on
 * aarch64, the pl031 RTC), reads their ID registers through pdev->mem[...],
 * checks the error paths, frees and finishes. Exits 0 when every check holds.
 */
#define _DEFAULT_SOURCE /* usleep, dup2 and friends under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Writes text to a sysfs attribute; 0 on success. */
static int
write_attr(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* SR-IOV (issue 11): the PF set up with a VF token, two VFs created, the first
 * set up with the token (refused without it, and with another), its NVMe
 * version register read, then the VFs removed. */
static void
sriov_vf_with_token(const char *pf_name)
{
	struct dao_vfio_device pf, vf;
	char path[256], link[256], *vf_name;
	ssize_t n;
	int rc;

	CHECK(dao_vfio_vf_token_set("not-a-uuid") == -EINVAL, "a bad VF token is refused");
	CHECK(dao_vfio_vf_token_set("6f1d2c3b-4a59-4e6d-8c7b-0a1b2c3d4e5f") == 0, "VF token given");
	memset(&pf, 0, sizeof(pf));
	pf.type = DAO_VFIO_DEV_PCIE;
	rc = dao_vfio_device_setup(pf_name, &pf);
	CHECK(rc == 0 && reg_read32(&pf, DAO_VFIO_DEV_BAR0, 8) == 0x00010400, "PF %s set up with the token: %d", pf_name, rc);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/sriov_numvfs", pf_name);
	CHECK(write_attr(path, "2") == 0, "two VFs created");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/virtfn0", pf_name);
	n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	vf_name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	CHECK(n > 0, "VF 0 is %s", vf_name);

	memset(&vf, 0, sizeof(vf));
	vf.type = DAO_VFIO_DEV_PCIE;
	dao_vfio_vf_token_set(NULL);
	rc = dao_vfio_device_setup(vf_name, &vf);
	CHECK(rc == -EACCES && vf.mem == NULL, "VF without a token refused: %d", rc);
	dao_vfio_vf_token_set("00000000-0000-0000-0000-000000000001");
	rc = dao_vfio_device_setup(vf_name, &vf);
	CHECK(rc == -EACCES && vf.mem == NULL, "VF with another token refused: %d", rc);
	dao_vfio_vf_token_set("6F1D2C3B-4A59-4E6D-8C7B-0A1B2C3D4E5F");
	rc = dao_vfio_device_setup(vf_name, &vf);
	/* Opened and mapped. (Its registers read 0 until the PF's user brings its
	 * controller online with NVMe's Virtualization Management command, which
	 * tests/board_sriov.rs does: not DAO's business.) */
	CHECK(rc == 0 && vf.mem != NULL, "VF %s set up with the token, BAR 0 mapped: %d", vf_name, rc);
	if (rc == 0)
		dao_vfio_device_free(&vf);
	dao_vfio_vf_token_set(NULL);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/sriov_numvfs", pf_name);
	CHECK(write_attr(path, "0") == 0, "VFs removed");
	CHECK(pf.mem && reg_read32(&pf, DAO_VFIO_DEV_BAR0, 8) == 0x00010400, "PF still answers");
	if (pf.mem)
		dao_vfio_device_free(&pf);
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
	CHECK(edu.mem[6].addr == NULL && edu.mem[6].len == 0 && edu.mem[8].addr == NULL && edu.mem[8].len == 0,
	      "ROM and VGA: not described, NULL and 0");
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
		CHECK(dao_vfio_device_request_fd(&rtc) == -EINVAL, "no request fd for a platform device");
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

	/* Free identifies a device by more than its fd: a zeroed struct, a forged
	 * one with edu's fd, and a stale copy of a freed device free nothing. */
	memset(&bad, 0, sizeof(bad));
	dao_vfio_device_free(&bad);
	bad.device_fd = edu.device_fd;
	dao_vfio_device_free(&bad);
	CHECK(reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "zeroed and forged structs free nothing");
	memset(&copy, 0, sizeof(copy));
	copy.type = DAO_VFIO_DEV_PCIE;
	rc = dao_vfio_device_setup(edu_name, &copy);
	CHECK(rc == -EEXIST, "edu still open after them: %d", rc);
	{
		/* The same device freed and set up again reuses the slot and the
		 * fds: the stale copy of the first setup must not free the second. */
		struct dao_vfio_device stale = edu, again;

		dao_vfio_device_free(&edu);
		memset(&again, 0, sizeof(again));
		again.type = DAO_VFIO_DEV_PCIE;
		rc = dao_vfio_device_setup(edu_name, &again);
		CHECK(rc == 0 && again.device_fd == stale.device_fd, "edu again: %d, fd %d (was %d)", rc,
		      again.device_fd, stale.device_fd);
		dao_vfio_device_free(&stale);
		CHECK(reg_read32(&again, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "a stale copy frees nothing");
		rc = dao_vfio_device_setup(edu_name, &copy);
		CHECK(rc == -EEXIST, "edu still open after the stale free: %d", rc);
		edu = again;
	}

	/* fini with a device open is refused and keeps it. */
	dao_vfio_fini();
	CHECK(reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "edu still mapped after a refused fini");

	dao_vfio_device_free(&edu);
	CHECK(edu.device_fd == -1 && edu.mem == NULL && edu.num_resource == 0, "free clears pdev");
	dao_vfio_device_free(&edu);
	CHECK(1, "a second free is harmless");

	/* Freed while another process unbinds it (the unbind waits for the
	 * free): the free logs nothing, the unbind then returns, and edu can be
	 * bound back and set up. (The device's driver link goes at once: the
	 * unbinding process itself tells whether the unbind still waits.) */
	{
		char cmd[256], path[160];
		int err_fd, saved, n, fd, req, st = -1;
		off_t logged;
		pid_t unbinding;

		memset(&edu, 0, sizeof(edu));
		edu.type = DAO_VFIO_DEV_PCIE;
		CHECK(dao_vfio_device_setup(edu_name, &edu) == 0, "edu set up again");
		req = dao_vfio_device_request_fd(&edu);
		CHECK(req >= 0 && dao_vfio_device_request_fd(&edu) == req, "request fd %d, the same when asked again", req);
		memset(&bad, 0, sizeof(bad));
		CHECK(dao_vfio_device_request_fd(&bad) == -ENODEV, "no request fd for a zeroed struct");
		snprintf(cmd, sizeof(cmd), "echo %s > /sys/bus/pci/devices/%s/driver/unbind", edu_name, edu_name);
		unbinding = fork();
		if (unbinding == 0) {
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		CHECK(unbinding > 0, "unbind started");
		{
			struct pollfd p = { .fd = req, .events = POLLIN };

			CHECK(poll(&p, 1, 5000) == 1, "the kernel asks for edu back through the request fd");
		}
		CHECK(waitpid(unbinding, &st, WNOHANG) == 0, "the unbind waits while edu is held");
		fflush(stderr);
		saved = dup(2);
		err_fd = open("/tmp/free.err", O_RDWR | O_CREAT | O_TRUNC, 0600);
		dup2(err_fd, 2);
		dao_vfio_device_free(&edu);
		dup2(saved, 2);
		close(saved);
		logged = lseek(err_fd, 0, SEEK_END);
		close(err_fd);
		CHECK(logged == 0, "free during the unbind logs nothing (%ld bytes)", (long)logged);
		for (n = 0; n < 100 && waitpid(unbinding, &st, WNOHANG) == 0; n++)
			usleep(10000);
		CHECK(n < 100 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the unbind returned within 1 s of the free");
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", edu_name);
		CHECK(access(path, F_OK) != 0, "edu is driverless");
		fd = open("/sys/bus/pci/drivers/vfio-pci/bind", O_WRONLY);
		CHECK(fd >= 0 && write(fd, edu_name, strlen(edu_name)) == (ssize_t)strlen(edu_name),
		      "edu bound back to vfio-pci");
		if (fd >= 0)
			close(fd);
		memset(&edu, 0, sizeof(edu));
		edu.type = DAO_VFIO_DEV_PCIE;
		rc = dao_vfio_device_setup(edu_name, &edu);
		CHECK(rc == 0 && reg_read32(&edu, DAO_VFIO_DEV_BAR0, 0) == 0x010000ed, "edu set up after the rebind: %d", rc);
		if (rc == 0)
			dao_vfio_device_free(&edu);
	}
	if (getenv("DAO_VFIO_NVME_PF"))
		sriov_vf_with_token(getenv("DAO_VFIO_NVME_PF"));
	else
		CHECK(0, "DAO_VFIO_NVME_PF is set by the board");
	dao_vfio_fini();

	printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
	return failures ? 1 : 0;
}
