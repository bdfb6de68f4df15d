// SPDX-License-Identifier: GPL-2.0
/*
 * The userspace side of the kexec:fd_query suite (CONFIG_LIVEUPDATE_QUERY_TEST,
 * kernel/liveupdate/luo_query_test.c).
 *
 * "lu-query-check hold", before the kexec: creates session "query-a" with a
 * memfd (token 1) and a test-handler file (token 7), and session "query-b"
 * with two test-handler files (tokens 3 and 4), in that order, then leaves a
 * detached child holding both sessions open. The test handler gives its files
 * the data handles 0x5100, 0x5101 and 0x5102 in preservation order.
 *
 * "lu-query-check check", after it: retrieves both sessions, checks that
 * token 7 comes back as the test handler's file, that UNPRESERVE_FD on an
 * incoming session fails with EINVAL, and finishes both.
 *
 * Prints one "LU-QUERY ok|FAIL ..." line per check; exits 0 if all hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/liveupdate.h>
#include "lu-check.h"

#define TEST_FILE "/sys/kernel/debug/luo_query_test"

static void check(int ok, const char *what, int err)
{
	lu_check("LU-QUERY", ok, what, err);
}

static int preserve(int s, int fd, __u64 token)
{
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg), .fd = fd, .token = token,
	};

	return ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &arg) ? -errno : 0;
}

static int hold(int dev)
{
	int a = lu_session(dev, "query-a", 1), b = lu_session(dev, "query-b", 1);
	int m = memfd_create("query-memfd", 0);
	int err;

	check(a >= 0 && b >= 0, "create query-a and query-b", a < 0 ? -a : b < 0 ? -b : 0);
	check(m >= 0, "memfd_create", m < 0 ? errno : 0);
	if (a < 0 || b < 0 || m < 0)
		return 1;
	err = preserve(a, m, 1);
	check(!err, "preserve a memfd as query-a/1", -err);
	err = preserve(a, open(TEST_FILE, O_RDWR), 7);
	check(!err, "preserve " TEST_FILE " as query-a/7", -err);
	err = preserve(b, open(TEST_FILE, O_RDWR), 3);
	check(!err, "preserve " TEST_FILE " as query-b/3", -err);
	err = preserve(b, open(TEST_FILE, O_RDWR), 4);
	check(!err, "preserve " TEST_FILE " as query-b/4", -err);
	if (failures)
		return 1;
	lu_hold();
	return 0;
}

static int verify(int dev)
{
	struct liveupdate_session_retrieve_fd rf = { .size = sizeof(rf), .token = 7 };
	struct liveupdate_session_unpreserve_fd uf = { .size = sizeof(uf), .token = 7 };
	struct liveupdate_session_finish fin = { .size = sizeof(fin) };
	int a = lu_session(dev, "query-a", 0), b = lu_session(dev, "query-b", 0);
	char target[128];
	int ret;

	check(a >= 0 && b >= 0, "retrieve query-a and query-b", a < 0 ? -a : b < 0 ? -b : 0);
	if (a < 0 || b < 0)
		return 1;
	ret = ioctl(a, LIVEUPDATE_SESSION_RETRIEVE_FD, &rf) ? errno : 0;
	check(!ret, "retrieve query-a/7", ret);
	if (!ret) {
		lu_fd_target(rf.fd, target, sizeof(target));
		printf("LU-QUERY query-a/7 is %s\n", target);
		check(!strcmp(target, "anon_inode:[luo_query_test]"),
		      "query-a/7 is the test handler's file", 0);
	}
	ret = ioctl(a, LIVEUPDATE_SESSION_UNPRESERVE_FD, &uf) ? errno : 0;
	check(ret == EINVAL, "UNPRESERVE_FD on an incoming session: EINVAL", ret);
	ret = ioctl(a, LIVEUPDATE_SESSION_FINISH, &fin) ? errno : 0;
	check(!ret, "finish query-a", ret);
	ret = ioctl(b, LIVEUPDATE_SESSION_FINISH, &fin) ? errno : 0;
	check(!ret, "finish query-b", ret);
	return failures != 0;
}

int main(int argc, char **argv)
{
	int dev = open("/dev/liveupdate", O_RDWR);

	if (dev < 0) {
		check(0, "open /dev/liveupdate", errno);
		return 1;
	}
	if (argc > 1 && !strcmp(argv[1], "hold"))
		return hold(dev);
	if (argc > 1 && !strcmp(argv[1], "check"))
		return verify(dev);
	fprintf(stderr, "usage: lu-query-check hold|check\n");
	return 2;
}
