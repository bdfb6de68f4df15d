// SPDX-License-Identifier: GPL-2.0
/*
 * lu-demo-agent: a VMM-like agent for the harness's live-update demo.
 *
 *   lu-demo-agent preserve SIZE_MIB   fill a memfd ("guest RAM") with a
 *                                     position-dependent pattern, preserve it
 *                                     in session "lu-demo", keep the session
 *                                     open in a daemonized child
 *   lu-demo-agent retrieve SIZE_MIB   after the kexec: retrieve the session
 *                                     and the memfd, verify every byte, finish
 *
 * Prints "LU-DEMO key=value ..." lines that the harness reads for its report.
 * The Rust userspace crate will replace this program.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/liveupdate.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SESSION "lu-demo"
#define TOKEN 0x6775657374ULL /* "guest" */
#define SEED 0x4c55444d4f5f3031ULL

static uint64_t pattern(uint64_t off)
{
	uint64_t x = off * 0x9E3779B97F4A7C15ULL + SEED;

	return x ^ (x >> 29);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	printf("LU-DEMO error=\"%s: %s\"\n", what, strerror(errno));
	exit(1);
}

static int preserve(size_t size)
{
	struct liveupdate_ioctl_create_session cs = { .size = sizeof(cs) };
	struct liveupdate_session_preserve_fd pf = { .size = sizeof(pf) };
	double t0, t1, t2;
	uint64_t *p;
	int luo, mfd;
	size_t i;

	luo = open("/dev/liveupdate", O_RDWR);
	if (luo < 0)
		die("open /dev/liveupdate");
	strcpy((char *)cs.name, SESSION);
	if (ioctl(luo, LIVEUPDATE_IOCTL_CREATE_SESSION, &cs))
		die("CREATE_SESSION");

	mfd = memfd_create("guest-ram", 0);
	if (mfd < 0)
		die("memfd_create");
	if (ftruncate(mfd, size))
		die("ftruncate");
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	t0 = now();
	for (i = 0; i < size / 8; i++)
		p[i] = pattern(i * 8);
	t1 = now();
	munmap(p, size);

	pf.fd = mfd;
	pf.token = TOKEN;
	if (ioctl(cs.fd, LIVEUPDATE_SESSION_PRESERVE_FD, &pf))
		die("PRESERVE_FD");
	t2 = now();
	close(mfd);

	printf("LU-DEMO stage=preserve session=%s token=0x%llx bytes=%zu fill_s=%.3f preserve_s=%.3f\n",
	       SESSION, (unsigned long long)TOKEN, size, t1 - t0, t2 - t1);
	fflush(stdout);

	/* Keep the session fd open across the reboot, as a VMM agent does. */
	switch (fork()) {
	case -1:
		die("fork");
	case 0:
		setsid();
		close(0);
		close(1);
		close(2);
		close(luo);
		for (;;)
			pause();
	default:
		return 0;
	}
}

static int retrieve(size_t size)
{
	struct liveupdate_ioctl_retrieve_session rs = { .size = sizeof(rs) };
	struct liveupdate_session_retrieve_fd rf = { .size = sizeof(rf) };
	struct liveupdate_session_finish fin = { .size = sizeof(fin) };
	size_t i, bad = 0, first_bad = 0;
	double t0, t1, t2, t3;
	const uint64_t *p;
	struct stat st;
	int luo;

	t0 = now();
	luo = open("/dev/liveupdate", O_RDWR);
	if (luo < 0)
		die("open /dev/liveupdate");
	strcpy((char *)rs.name, SESSION);
	if (ioctl(luo, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &rs))
		die("RETRIEVE_SESSION");
	rf.token = TOKEN;
	if (ioctl(rs.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &rf))
		die("RETRIEVE_FD");
	t1 = now();
	if (fstat(rf.fd, &st))
		die("fstat");
	if ((size_t)st.st_size != size) {
		printf("LU-DEMO error=\"size %lld, expected %zu\"\n",
		       (long long)st.st_size, size);
		return 1;
	}
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, rf.fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	for (i = 0; i < size / 8; i++) {
		if (p[i] != pattern(i * 8)) {
			if (!bad++)
				first_bad = i * 8;
		}
	}
	t2 = now();
	munmap((void *)p, size);
	close(rf.fd);
	if (ioctl(rs.fd, LIVEUPDATE_SESSION_FINISH, &fin))
		die("FINISH");
	t3 = now();
	close(rs.fd);
	close(luo);

	printf("LU-DEMO stage=retrieve session=%s bytes=%zu bad_words=%zu first_bad=%zu retrieve_s=%.3f verify_s=%.3f finish_s=%.3f\n",
	       SESSION, size, bad, first_bad, t1 - t0, t2 - t1, t3 - t2);
	printf("LU-DEMO verify=%s\n", bad ? "FAIL" : "OK");
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t size;

	if (argc != 3) {
		fprintf(stderr, "usage: %s preserve|retrieve SIZE_MIB\n", argv[0]);
		return 2;
	}
	size = strtoull(argv[2], NULL, 0) << 20;
	if (!strcmp(argv[1], "preserve"))
		return preserve(size);
	if (!strcmp(argv[1], "retrieve"))
		return retrieve(size);
	fprintf(stderr, "unknown mode %s\n", argv[1]);
	return 2;
}
