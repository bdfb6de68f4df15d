/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the harness's guest programs share (lu-query-check.c,
 * lu-module-check.c, lu-iommufd-bench.c): one "<PREFIX> ok|FAIL what
 * (errno N: ...)" line per check, creating or retrieving a session, holding
 * the sessions open across the kexec, and the UNPRESERVE_FD ioctl where the
 * pristine uapi header (built against) does not have it.
 */
#ifndef LU_CHECK_H
#define LU_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/liveupdate.h>

#ifndef LIVEUPDATE_SESSION_UNPRESERVE_FD
struct liveupdate_session_unpreserve_fd {
	__u32		size;
	__u32		reserved;
	__aligned_u64	token;
};

#define LIVEUPDATE_SESSION_UNPRESERVE_FD _IO(LIVEUPDATE_IOCTL_TYPE, 0x44)
#endif

static int failures __attribute__((unused));

/* Prints one check line with the program's prefix and counts failures. */
static inline void lu_check(const char *prefix, int ok, const char *what, int err)
{
	printf("%s %s %s (errno %d: %s)\n", prefix, ok ? "ok" : "FAIL", what,
	       err, strerror(err));
	fflush(stdout);
	if (!ok)
		failures++;
}

/* Creates (or retrieves) session name on dev: its fd, or -errno. */
static inline int lu_session(int dev, const char *name, int create)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	memcpy(arg.name, name, strnlen(name, sizeof(arg.name) - 1));
	if (ioctl(dev, create ? LIVEUPDATE_IOCTL_CREATE_SESSION :
			  LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg))
		return -errno;
	return arg.fd;
}

/* PRESERVE_FD of fd under token in session s: 0 or the errno. */
static inline int lu_preserve(int s, int fd, __u64 token)
{
	struct liveupdate_session_preserve_fd a = {
		.size = sizeof(a), .fd = fd, .token = token,
	};

	return ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &a) ? errno : 0;
}

/* UNPRESERVE_FD of token in session s: 0 or the errno. */
static inline int lu_unpreserve(int s, __u64 token)
{
	struct liveupdate_session_unpreserve_fd a = { .size = sizeof(a), .token = token };

	return ioctl(s, LIVEUPDATE_SESSION_UNPRESERVE_FD, &a) ? errno : 0;
}

/* What the descriptor fd refers to ("anon_inode:[name]", ...), "" if unknown. */
static inline void lu_fd_target(int fd, char *buf, size_t size)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, size - 1);
	buf[n > 0 ? n : 0] = 0;
}

/* Leaves a detached child holding this process's descriptors (its sessions) open. */
static inline void lu_hold(void)
{
	if (fork() == 0) {
		setsid();
		for (;;)
			pause();
	}
}

#endif /* LU_CHECK_H */
