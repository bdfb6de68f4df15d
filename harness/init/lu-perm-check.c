// SPDX-License-Identifier: GPL-2.0
/*
 * lu-perm-check: who may open /dev/liveupdate (issue 18, reliability:perms).
 *
 * Upstream 7.3 registers the misc device without a mode and checks no
 * capability in open(): the node devtmpfs makes is 0600 root:root, so
 * a non-root process gets EACCES from the VFS, and root keeps access even
 * with every capability dropped (root owns the node; CAP_DAC_OVERRIDE is
 * not needed).  Both flavors must behave exactly so; each check prints
 * "LU-PERM ok|FAIL what (errno N: ...)".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include "lu-check.h"

#define DEV "/dev/liveupdate"
#define NOBODY 65534

static void check(int ok, const char *what, int err)
{
	lu_check("LU-PERM", ok, what, err);
}

/* In a child with the given credentials: open(DEV, flags); 0 or errno. */
static int open_as(uid_t uid, int drop_caps, int flags)
{
	int status, pipefd[2], result = -1;
	pid_t pid;

	if (pipe(pipefd))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int err = 0, fd;

		close(pipefd[0]);
		if (uid && (setgroups(0, NULL) || setgid(NOBODY) || setuid(uid)))
			err = 1000 + errno;
		if (!err && drop_caps) {
			struct __user_cap_header_struct hdr = {
				.version = _LINUX_CAPABILITY_VERSION_3,
			};
			struct __user_cap_data_struct data[2] = {};

			if (syscall(SYS_capset, &hdr, data))
				err = 2000 + errno;
		}
		if (!err) {
			fd = open(DEV, flags | O_CLOEXEC);
			err = fd < 0 ? errno : 0;
			if (fd >= 0)
				close(fd);
		}
		if (write(pipefd[1], &err, sizeof(err)) != sizeof(err))
			_exit(1);
		_exit(0);
	}
	close(pipefd[1]);
	if (read(pipefd[0], &result, sizeof(result)) != sizeof(result))
		result = -1;
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	return result;
}

int main(void)
{
	struct stat st;
	int err;

	err = stat(DEV, &st) ? errno : 0;
	check(!err && S_ISCHR(st.st_mode), "/dev/liveupdate is a character device", err);
	if (!err) {
		printf("LU-PERM mode %04o uid %u gid %u\n", st.st_mode & 07777,
		       st.st_uid, st.st_gid);
		check((st.st_mode & 07777) == 0600, "mode 0600", 0);
		check(st.st_uid == 0 && st.st_gid == 0, "owned by root:root", 0);
	}

	err = open_as(0, 0, O_RDWR);
	check(err == 0, "root opens it", err);
	err = open_as(0, 1, O_RDWR);
	check(err == 0, "root without any capability opens it (no capability check)",
	      err);
	err = open_as(NOBODY, 0, O_RDWR);
	check(err == EACCES, "uid 65534 gets EACCES (O_RDWR)", err);
	err = open_as(NOBODY, 0, O_RDONLY);
	check(err == EACCES, "uid 65534 gets EACCES (O_RDONLY)", err);
	/* The device is still free: nothing above left it open. */
	err = open_as(0, 0, O_RDWR);
	check(err == 0, "root opens it again afterwards", err);

	printf("LU-PERM %s: %d failures\n", failures ? "FAIL" : "ok", failures);
	return failures ? 1 : 0;
}
