// SPDX-License-Identifier: GPL-2.0
/*
 * lu-fdstore: the service of client:systemd, a systemd unit with
 * FileDescriptorStorePreserve=yes that keeps guest-RAM-like memfds in its
 * fd store across `systemctl kexec`.
 *
 * Started without stored fds (LISTEN_FDS unset), it creates two memfds,
 * "ram" (RAM_BYTES) and "state" (one page), fills them with a pattern of a
 * random seed, and hands them to systemd with sd_notify(3)'s FDSTORE=1 and
 * FDNAME=.  Started with them (LISTEN_FDS/LISTEN_FDNAMES, what systemd
 * passes from the fd store), it checks both against the seed that "state"
 * carries and prints what it found.  A memfd comes back from LUO as a shmem
 * file without its name (memfd-v2 does not carry names, on both flavors), so
 * the check is on the file system (tmpfs), the size and every byte.  With
 * --expect-stored (the boot after the kexec) it fails when the fds are not
 * there instead of creating them: they can only have come from the fd store
 * that systemd preserved.
 *
 * It speaks sd_notify's datagram protocol itself (no libsystemd), stays
 * running (Type=notify) and prints one line per event, to the journal and
 * to the kernel log:
 *   LU-FDSTORE created seed=S ram=N state=N
 *   LU-FDSTORE stored names=ram:state
 *   LU-FDSTORE received name=NAME fd=N fs=tmpfs|other seals=N bytes=N bad=N seed=S
 *   LU-FDSTORE result ok|FAIL what
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/un.h>
#include <unistd.h>

#define RAM_BYTES	(16u << 20)
#define STATE_BYTES	4096u
#define STATE_MAGIC	0x4c5546445354524full	/* "LUFDSTRO" */
#define SD_LISTEN_FDS_START 3
#define TMPFS_MAGIC	0x01021994

static int failed;
static int kmsg = -1;

/*
 * One line to the journal (stdout) and one kernel log record (the VMs boot
 * with printk.devkmsg=on), which reaches the serial console whole.
 */
static void __attribute__((format(printf, 1, 2))) say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n >= (int)sizeof(line))
		n = sizeof(line) - 1;
	printf("%s\n", line);
	fflush(stdout);
	if (kmsg >= 0 && write(kmsg, line, n) < 0)
		kmsg = -1;
}

static void result(int ok, const char *what)
{
	say("LU-FDSTORE result %s %s", ok ? "ok" : "FAIL", what);
	if (!ok)
		failed = 1;
}

/* splitmix64: word i of a memfd filled from seed s is mix(s + i). */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int sd_notify_fds(const char *msg, const int *fds, int nfds)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) };
	struct msghdr mh = {
		.msg_name = &sa, .msg_iov = &iov, .msg_iovlen = 1,
	};
	socklen_t len;
	int s, ret;

	if (!path || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sa.sun_path) || nfds > 4) {
		errno = EINVAL;
		return -1;
	}
	strcpy(sa.sun_path, path);
	len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
	if (path[0] == '@')
		sa.sun_path[0] = 0;
	mh.msg_namelen = len;
	if (nfds) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	ret = sendmsg(s, &mh, 0) < 0 ? -1 : 0;
	close(s);
	return ret;
}

static int make_memfd(const char *name, size_t bytes, uint64_t seed, uint64_t *first)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	uint64_t *p;

	if (fd < 0)
		return -1;
	p = ftruncate(fd, bytes) < 0 ? MAP_FAILED :
	    mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		close(fd);
		return -1;
	}
	for (size_t i = 0; i < bytes / 8; i++)
		p[i] = first && i < 2 ? first[i] : mix(seed + i);
	munmap(p, bytes);
	return fd;
}

/* Word i of fd must be mix(seed + i), from word skip on. */
static long check_memfd(int fd, size_t *bytes, uint64_t seed, size_t skip)
{
	struct stat st;
	uint64_t *p;
	long bad = 0;

	if (fstat(fd, &st) < 0)
		return -1;
	*bytes = st.st_size;
	if (!st.st_size)
		return 0;
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	for (size_t i = skip; i < (size_t)st.st_size / 8; i++)
		bad += p[i] != mix(seed + i);
	munmap(p, st.st_size);
	return bad;
}

static void describe(const char *name, int fd, uint64_t seed, size_t skip, size_t want)
{
	int shmem, seals = fcntl(fd, F_GET_SEALS);
	size_t bytes = 0;
	struct statfs sf;
	long bad;

	shmem = fstatfs(fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
	bad = check_memfd(fd, &bytes, seed, skip);
	say("LU-FDSTORE received name=%s fd=%d fs=%s seals=%d bytes=%zu bad=%ld seed=%016" PRIx64,
	    name, fd, shmem ? "tmpfs" : "other", seals, bytes, bad, seed);
	result(bad == 0 && bytes == want && shmem, name);
}

static int restore(int n, const char *names)
{
	int ram = -1, state = -1;
	char *list = strdup(names ? names : ""), *save = NULL, *tok;
	uint64_t hdr[2];
	int i = 0;

	if (!list) {
		result(0, "strdup");
		return 1;
	}
	for (tok = strtok_r(list, ":", &save); tok && i < n; tok = strtok_r(NULL, ":", &save), i++) {
		if (!strcmp(tok, "ram"))
			ram = SD_LISTEN_FDS_START + i;
		else if (!strcmp(tok, "state"))
			state = SD_LISTEN_FDS_START + i;
	}
	free(list);
	say("LU-FDSTORE listen fds=%d names=%s", n, names ? names : "");
	if (ram < 0 || state < 0 || i != n) {
		result(0, "the fd store holds ram and state");
		return 1;
	}
	if (pread(state, hdr, sizeof(hdr), 0) != sizeof(hdr) || hdr[0] != STATE_MAGIC) {
		result(0, "state starts with its magic");
		return 1;
	}
	describe("state", state, hdr[1], 2, STATE_BYTES);
	describe("ram", ram, hdr[1], 0, RAM_BYTES);
	return failed;
}

int main(int argc, char **argv)
{
	const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
	int expect = argc > 1 && !strcmp(argv[1], "--expect-stored");
	uint64_t seed, hdr[2];
	int ram, state, sent[2];

	setvbuf(stdout, NULL, _IOLBF, 0);
	kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fds && pid && strtol(pid, NULL, 10) == getpid()) {
		if (restore(atoi(fds), getenv("LISTEN_FDNAMES")))
			return 1;
	} else if (expect) {
		result(0, "fds from the fd store (LISTEN_FDS is not set)");
		return 1;
	} else {
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
			result(0, "getrandom");
			return 1;
		}
		hdr[0] = STATE_MAGIC;
		hdr[1] = seed;
		ram = make_memfd("lu-fdstore-ram", RAM_BYTES, seed, NULL);
		state = make_memfd("lu-fdstore-state", STATE_BYTES, seed, hdr);
		if (ram < 0 || state < 0) {
			result(0, "memfd_create");
			return 1;
		}
		say("LU-FDSTORE created seed=%016" PRIx64 " ram=%u state=%u", seed, RAM_BYTES,
		    STATE_BYTES);
		sent[0] = ram;
		if (sd_notify_fds("FDSTORE=1\nFDNAME=ram", sent, 1) < 0) {
			result(0, "sd_notify FDSTORE=1 FDNAME=ram");
			return 1;
		}
		sent[0] = state;
		if (sd_notify_fds("FDSTORE=1\nFDNAME=state", sent, 1) < 0) {
			result(0, "sd_notify FDSTORE=1 FDNAME=state");
			return 1;
		}
		close(ram);
		close(state);
		say("LU-FDSTORE stored names=ram:state");
		result(1, "stored");
	}
	if (sd_notify_fds("READY=1\nSTATUS=holding ram and state", NULL, 0) < 0) {
		result(0, "sd_notify READY=1");
		return 1;
	}
	for (;;)
		pause();
}
