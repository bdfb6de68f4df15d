// SPDX-License-Identifier: GPL-2.0
/*
 * The guest side of "lu bench --bench parallel": do sessions preserve in
 * parallel? Two memfds of --size MiB, every page written, are preserved each
 * into its own session, in one thread (session "a" then session "b") and from
 * two threads at once (one session each), alternating, --reps times. Each
 * figure is the wall time from the first CREATE_SESSION to the last
 * PRESERVE_FD's return; closing the sessions (which unpreserves) is not timed.
 *
 * Prints "LU-PAR rep=N serial_s=X parallel_s=Y" per repetition and
 * "LU-PAR-RESULT serial_s=X parallel_s=Y ratio=Z" with the medians; exits
 * non-zero on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/liveupdate.h>

#define MAX_REPS 64

static int dev;
static int memfds[2];
static pthread_barrier_t start;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	printf("LU-PAR FAIL %s (errno %d: %s)\n", what, err, strerror(err));
	exit(1);
}

/* Creates session name and preserves memfd i in it; returns the session's fd. */
static int session_with(const char *name, int i)
{
	struct liveupdate_ioctl_create_session cs = { .size = sizeof(cs) };
	struct liveupdate_session_preserve_fd pf = {
		.size = sizeof(pf), .fd = memfds[i], .token = 1,
	};

	strncpy((char *)cs.name, name, sizeof(cs.name) - 1);
	if (ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &cs))
		die("CREATE_SESSION", errno);
	if (ioctl(cs.fd, LIVEUPDATE_SESSION_PRESERVE_FD, &pf))
		die("PRESERVE_FD", errno);
	return cs.fd;
}

static int thread_fd[2];

static void *thread_main(void *arg)
{
	long i = (long)arg;

	pthread_barrier_wait(&start);
	thread_fd[i] = session_with(i ? "par-b" : "par-a", i);
	return NULL;
}

static double serial(void)
{
	double t0 = now(), t;
	int a = session_with("ser-a", 0);
	int b = session_with("ser-b", 1);

	t = now() - t0;
	close(a);
	close(b);
	return t;
}

static double parallel(void)
{
	pthread_t th[2];
	double t0, t;
	long i;

	pthread_barrier_init(&start, NULL, 3);
	for (i = 0; i < 2; i++)
		if (pthread_create(&th[i], NULL, thread_main, (void *)i))
			die("pthread_create", errno);
	pthread_barrier_wait(&start);
	t0 = now();
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	t = now() - t0;
	pthread_barrier_destroy(&start);
	close(thread_fd[0]);
	close(thread_fd[1]);
	return t;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	long size = 1024L << 20;
	int reps = 5, i;
	double s[MAX_REPS], p[MAX_REPS];

	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--size"))
			size = atol(argv[i + 1]) << 20;
		else if (!strcmp(argv[i], "--reps"))
			reps = atoi(argv[i + 1]);
	}
	if (reps < 1 || reps > MAX_REPS || size <= 0) {
		fprintf(stderr, "usage: lu-parallel-bench [--size MiB] [--reps 1..%d]\n",
			MAX_REPS);
		return 2;
	}
	dev = open("/dev/liveupdate", O_RDWR);
	if (dev < 0)
		die("open /dev/liveupdate", errno);
	for (i = 0; i < 2; i++) {
		char *m;

		memfds[i] = memfd_create(i ? "par-b" : "par-a", 0);
		if (memfds[i] < 0 || ftruncate(memfds[i], size))
			die("memfd", errno);
		m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfds[i], 0);
		if (m == MAP_FAILED)
			die("mmap", errno);
		memset(m, 0x5a + i, size);
		munmap(m, size);
	}
	for (i = 0; i < reps; i++) {
		/* Alternate which goes first. */
		if (i % 2) {
			p[i] = parallel();
			s[i] = serial();
		} else {
			s[i] = serial();
			p[i] = parallel();
		}
		printf("LU-PAR rep=%d serial_s=%.6f parallel_s=%.6f\n", i, s[i], p[i]);
		fflush(stdout);
	}
	{
		double ms = median(s, reps), mp = median(p, reps);

		printf("LU-PAR-RESULT serial_s=%.6f parallel_s=%.6f ratio=%.3f\n", ms, mp,
		       mp / ms);
	}
	return 0;
}
