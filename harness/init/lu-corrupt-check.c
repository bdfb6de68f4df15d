// SPDX-License-Identifier: GPL-2.0
/*
 * Second stage of the corruption tests: the previous kernel handed over
 * deliberately damaged live update data (luo_test_corrupt=N). The kernel
 * must have refused it and still offer a working /dev/liveupdate:
 *
 *   - /dev/liveupdate opens;
 *   - RETRIEVE_SESSION of the session the first stage held fails with ENOENT;
 *   - a new session can be created and a memfd preserved in it.
 *
 * Prints one "LU-CORRUPT-CHECK ..." line per check; exits 0 if all hold.
 *
 * "lu-corrupt-check --meminfo" only prints "LU-MEMINFO MemTotal=<kB>
 * MemFree=<kB>", so that a stage can be compared with a cold boot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/liveupdate.h>

static int failures;

static void check(int ok, const char *what, int err)
{
	printf("LU-CORRUPT-CHECK %s %s (errno %d: %s)\n", ok ? "ok" : "FAIL",
	       what, err, strerror(err));
	fflush(stdout);
	if (!ok)
		failures++;
}

static int meminfo(void)
{
	long total = -1, free_kb = -1;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "MemTotal: %ld kB", &total);
		sscanf(line, "MemFree: %ld kB", &free_kb);
	}
	fclose(f);
	printf("LU-MEMINFO MemTotal=%ld MemFree=%ld\n", total, free_kb);
	fflush(stdout);
	return total < 0 || free_kb < 0;
}

int main(int argc, char **argv)
{
	const char *held = argc > 1 ? argv[1] : "corrupt";
	struct liveupdate_ioctl_retrieve_session rs = { .size = sizeof(rs) };
	struct liveupdate_ioctl_create_session cs = { .size = sizeof(cs) };
	struct liveupdate_session_preserve_fd pf = { .size = sizeof(pf) };
	int dev, memfd, ret;

	if (argc > 1 && !strcmp(argv[1], "--meminfo"))
		return meminfo();

	dev = open("/dev/liveupdate", O_RDWR);
	check(dev >= 0, "open /dev/liveupdate", dev < 0 ? errno : 0);
	if (dev < 0)
		return 1;

	strncpy((char *)rs.name, held, sizeof(rs.name) - 1);
	ret = ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &rs);
	check(ret < 0 && errno == ENOENT, "RETRIEVE_SESSION of the held session fails with ENOENT",
	      ret < 0 ? errno : 0);

	strncpy((char *)cs.name, "after-corruption", sizeof(cs.name) - 1);
	ret = ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &cs);
	check(ret == 0, "CREATE_SESSION of a new session", ret < 0 ? errno : 0);
	if (ret)
		return 1;

	memfd = memfd_create("after", 0);
	ret = memfd >= 0 ? ftruncate(memfd, 1 << 20) : -1;
	check(ret == 0, "memfd_create", ret < 0 ? errno : 0);
	if (ret)
		return 1;
	pf.fd = memfd;
	pf.token = 1;
	ret = ioctl(cs.fd, LIVEUPDATE_SESSION_PRESERVE_FD, &pf);
	check(ret == 0, "PRESERVE_FD of a memfd in the new session", ret < 0 ? errno : 0);

	close(cs.fd);
	close(dev);
	printf("LU-CORRUPT-CHECK %s\n", failures ? "FAILED" : "PASSED");
	return failures ? 1 : 0;
}
