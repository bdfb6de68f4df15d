// SPDX-License-Identifier: GPL-2.0
/*
 * The userspace side of the kexec:luo_module suite: a Rust file handler and
 * FLB in a loadable module (CONFIG_LIVEUPDATE_TEST_MODULE,
 * kernel/liveupdate/luo_test_module.rs) are pinned while one of their files
 * is preserved or, after a kexec, not finished.
 *
 * "lu-module-check stage1", before the kexec: loads /lu/luo_test_module.ko,
 * preserves a file of /dev/luo_test_module in session "modtest" (token 1),
 * checks that removing the module fails with EWOULDBLOCK, unpreserves the
 * file and checks that the module can be removed. Then loads it again,
 * preserves another file (token 2), checks the removal fails again and leaves
 * a detached child holding the session open.
 *
 * "lu-module-check stage2", after it: loads the module (before the first open
 * of /dev/liveupdate, so that the incoming file finds its handler), retrieves
 * "modtest", checks that the module cannot be removed while the file is
 * incoming, retrieved or not finished, finishes the session and removes the
 * module.
 *
 * The module's reference count (/sys/module/luo_test_module/refcnt) is
 * checked at each step, with the descriptors of the module's files closed: a
 * preserved file holds three references (the file itself, which the core
 * keeps open, the core's reference to its handler and the FLB's object); an
 * incoming file one (its handler's), two once retrieved (the retrieved file,
 * kept by the core until finish); the FLB is retrieved and finished by the
 * file's finish.
 *
 * Prints one "LU-MODULE ok|FAIL ..." line per check; exits 0 if all hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/liveupdate.h>
#include "lu-check.h"

#define MODULE_PATH "/lu/luo_test_module.ko"
#define MODULE_NAME "luo_test_module"
#define DEVICE "/dev/luo_test_module"
#define SESSION "modtest"

static void check(int ok, const char *what, int err)
{
	lu_check("LU-MODULE", ok, what, err);
}

/* Loads the module: 0 or an errno. */
static int load(void)
{
	int fd = open(MODULE_PATH, O_RDONLY | O_CLOEXEC);
	int err;

	if (fd < 0)
		return errno;
	err = syscall(SYS_finit_module, fd, "", 0) ? errno : 0;
	close(fd);
	return err;
}

/* The module's reference count, or -1. */
static int refcnt(void)
{
	FILE *f = fopen("/sys/module/" MODULE_NAME "/refcnt", "r");
	int n = -1;

	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

static void check_refcnt(int want, const char *when)
{
	char what[160];
	int n = refcnt();

	snprintf(what, sizeof(what), "refcnt %d %s (got %d)", want, when, n);
	check(n == want, what, 0);
}

/* Removes the module as "rmmod" does: 0 or an errno. */
static int unload(void)
{
	return syscall(SYS_delete_module, MODULE_NAME, O_NONBLOCK) ? errno : 0;
}

static int session(int dev, int create)
{
	return lu_session(dev, SESSION, create);
}

/* Preserves a new file of the device under token, and closes it. */
static int preserve_device_file(int s, __u64 token)
{
	int fd = open(DEVICE, O_RDWR);
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg), .fd = fd, .token = token,
	};
	int err;

	if (fd < 0)
		return errno;
	err = ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &arg) ? errno : 0;
	close(fd);
	return err;
}

/*
 * Loads the module (before the first open of /dev/liveupdate, so that an
 * incoming file finds its handler), opens the device and creates (stage 1) or
 * retrieves (stage 2) the session: its fd, or -1.
 */
static int start(int create)
{
	int err = load(), dev, s;

	check(!err, "load " MODULE_NAME " before the first open of /dev/liveupdate", err);
	dev = open("/dev/liveupdate", O_RDWR);
	check(dev >= 0, "open /dev/liveupdate", dev < 0 ? errno : 0);
	s = dev < 0 ? -1 : session(dev, create);
	check(s >= 0, create ? "create session " SESSION : "retrieve session " SESSION,
	      s < 0 ? -s : 0);
	return err || s < 0 ? -1 : s;
}

static int stage1(void)
{
	struct liveupdate_session_unpreserve_fd uf = { .size = sizeof(uf), .token = 1 };
	int s, err;

	s = start(1);
	if (s < 0)
		return 1;

	check_refcnt(0, "once loaded");
	err = preserve_device_file(s, 1);
	check(!err, "preserve a file of " DEVICE " as token 1", err);
	check_refcnt(3, "with a file preserved: file, handler and FLB");
	err = unload();
	check(err == EWOULDBLOCK, "remove the module while its file is preserved: EWOULDBLOCK",
	      err);
	err = ioctl(s, LIVEUPDATE_SESSION_UNPRESERVE_FD, &uf) ? errno : 0;
	check(!err, "unpreserve token 1", err);
	check_refcnt(0, "once unpreserved");
	err = unload();
	check(!err, "remove the module once its file is unpreserved", err);

	err = load();
	check(!err, "load " MODULE_NAME " again", err);
	err = preserve_device_file(s, 2);
	check(!err, "preserve a file of " DEVICE " as token 2", err);
	check_refcnt(3, "with token 2 preserved");
	err = unload();
	check(err == EWOULDBLOCK, "remove the module while its file is preserved: EWOULDBLOCK",
	      err);
	if (failures)
		return 1;
	lu_hold();
	return 0;
}

static int stage2(void)
{
	struct liveupdate_session_retrieve_fd rf = { .size = sizeof(rf), .token = 2 };
	struct liveupdate_session_finish fin = { .size = sizeof(fin) };
	char target[128];
	int s, err;

	s = start(0);
	if (s < 0)
		return 1;

	check_refcnt(1, "with a file incoming: its handler");
	err = unload();
	check(err == EWOULDBLOCK, "remove the module while its file is incoming: EWOULDBLOCK",
	      err);
	err = ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &rf) ? errno : 0;
	check(!err, "retrieve token 2", err);
	if (!err) {
		lu_fd_target(rf.fd, target, sizeof(target));
		check(!strcmp(target, "anon_inode:[luo_test_module]"),
		      "token 2 is the module handler's file", 0);
		check_refcnt(2, "with the retrieved file open: file and handler");
		close(rf.fd);
	}
	check_refcnt(2, "with the retrieved file closed, not finished: the core keeps it");
	err = unload();
	check(err == EWOULDBLOCK,
	      "remove the module while its file is retrieved, not finished: EWOULDBLOCK", err);
	err = ioctl(s, LIVEUPDATE_SESSION_FINISH, &fin) ? errno : 0;
	check(!err, "finish " SESSION, err);
	check_refcnt(0, "once finished");
	err = unload();
	check(!err, "remove the module once its file is finished", err);
	close(s);
	return failures != 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "stage1"))
		return stage1();
	if (argc > 1 && !strcmp(argv[1], "stage2"))
		return stage2();
	fprintf(stderr, "usage: lu-module-check stage1|stage2\n");
	return 2;
}
