// SPDX-License-Identifier: GPL-2.0
/*
 * lu-soak: one stage of a long chain of live updates (issue 18, "lu soak"
 * and reliability:soak-smoke).
 *
 * "lu-soak K N SIZE_MIB SPARSE_MIB", in stage K of N: session "soak" holds
 * a memfd of SIZE_MIB (token 1, every page written), a sparse memfd of
 * SPARSE_MIB (token 2, about one page in 512 written) and up to NSMALL small
 * memfds (tokens 1000 + i, 1 to 20000 bytes each). Stage 1 creates them.
 * Stage K > 1 retrieves everything stage K - 1 preserved, checks that the
 * small files that should be absent are (RETRIEVE_FD: ENOENT), verifies
 * every byte, FINISHes and reads MemFree. Then, unless K == N, it mutates
 * the files (rewrites one page in 16 of the big memfd, writes or punches
 * pages of the sparse one, adds, removes and rewrites small files),
 * preserves them again in a new session "soak" and leaves a child holding
 * it for the kexec.
 *
 * Every content is a deterministic function of (stage that last wrote it,
 * file, offset), and which stage last wrote what is a function of the stage
 * numbers, so stage K computes what it must find without a copy.
 *
 * Prints one "LU-SOAK ok|FAIL what (errno N: ...)" line per check and
 *   LU-SOAK stage=K bytes_verified=B memfree_kb=M t_ms=T files=F
 *           sparse_data_pages=D data_kb=X retrieve_ms=.. verify_ms=..
 *           finish_ms=.. mutate_ms=.. preserve_ms=.. next_kb=N shmem_kb=S
 * (one line): memfree_kb and shmem_kb are MemFree and Shmem (the memfds'
 * pages) after FINISH (stage 1: after creating the files), data_kb the
 * memfds' populated bytes as this program expects them at the next stage,
 * next_kb the size of the next stages' kernel and initramfs (dropped from
 * the rootfs; kexec holds a copy). Exits 0 if every check held.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include "lu-check.h"

#define PAGE		4096ul
#define WORDS		(PAGE / 8)
#define NSMALL		128
#define SMALL_START	96	/* stage 1 creates small files 0 .. SMALL_START - 1 */
#define SMALL_MAX	20000
#define TOKEN_BIG	1
#define TOKEN_SPARSE	2
#define TOKEN_SMALL	1000

/* Domains of the hash, so that the files' choices are independent. */
enum { D_BIG = 1, D_SPARSE, D_SMALL, D_SIZE, K_BIG, K_SPARSE, K_SMALL };

static int stage, nstages;
static uint64_t big_size, sparse_size;

static void check(int ok, const char *what, int err)
{
	lu_check("LU-SOAK", ok, what, err);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The hash deciding what stage j does to item x of domain d. */
static uint64_t h(uint64_t d, uint64_t j, uint64_t x)
{
	return mix((d << 56 ^ j << 40 ^ x) * 0x9e3779b97f4a7c15ull + 1);
}

/* Word i of a content written by stage g into item x of kind k. */
static uint64_t pattern(uint64_t k, uint64_t g, uint64_t x, uint64_t i)
{
	return mix(h(k, g, x) + i);
}

/* ---- what each stage did: last writer of each page or file ---- */

/* The stage whose pattern page p of the big memfd holds at stage k. */
static int big_gen(uint64_t p, int k)
{
	for (int j = k - 1; j >= 2; j--)
		if (h(D_BIG, j, p) % 16 == 0)
			return j;
	return 1;
}

/* Sparse page p at stage k: the writer's stage, or 0 for a hole. */
static int sparse_event(uint64_t p, int j)
{
	uint64_t e;

	if (j == 1)
		return h(D_SPARSE, 1, p) % 512 == 0 ? 1 : 0;
	e = h(D_SPARSE, j, p) % 1024;
	return e == 0 ? 1 : e == 1 ? -1 : 0;	/* write, punch, nothing */
}

static int sparse_gen(uint64_t p, int k)
{
	for (int j = k - 1; j >= 1; j--) {
		int e = sparse_event(p, j);

		if (e)
			return e > 0 ? j : 0;
	}
	return 0;
}

/* Small file i at stage k: its writer's stage, or 0 if it does not exist. */
static int small_gen(int i, int k)
{
	int g = i < SMALL_START ? 1 : 0;

	for (int j = 2; j < k; j++) {
		uint64_t e = h(D_SMALL, j, i) % 8;

		if (e == 0)
			g = g ? 0 : j;
		else if (e == 1 && g)
			g = j;
	}
	return g;
}

static size_t small_size(int i, int g)
{
	return 1 + h(D_SIZE, g, i) % SMALL_MAX;
}

/* ---- files ---- */

static void fill_page(uint64_t *dst, uint64_t kind, int g, uint64_t p)
{
	for (uint64_t i = 0; i < WORDS; i++)
		dst[i] = pattern(kind, g, p, i);
}

static void small_content(uint64_t *buf, int i, int g)
{
	for (size_t w = 0; w < (SMALL_MAX + 7) / 8; w++)
		buf[w] = pattern(K_SMALL, g, i, w);
}

static int write_small(int fd, int i, int g)
{
	static uint64_t buf[(SMALL_MAX + 7) / 8];
	size_t n = small_size(i, g);

	small_content(buf, i, g);
	if (ftruncate(fd, 0) || pwrite(fd, buf, n, 0) != (ssize_t)n)
		return errno ? errno : EIO;
	return 0;
}

static int small_ok(int fd, int i, int g)
{
	static uint64_t want[(SMALL_MAX + 7) / 8], got[(SMALL_MAX + 7) / 8 + 1];
	size_t n = small_size(i, g);
	struct stat st;

	if (fstat(fd, &st) || (size_t)st.st_size != n)
		return 0;
	small_content(want, i, g);
	if (pread(fd, got, n, 0) != (ssize_t)n)
		return 0;
	return !memcmp(want, got, n);
}

static void *map(int fd, uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int big_fd = -1, sparse_fd = -1, small_fd[NSMALL];
static uint64_t verified, sparse_data_pages;

/* Every page of the big memfd: the number of bad pages. */
static uint64_t verify_big(int k)
{
	uint64_t *m = map(big_fd, big_size), bad = 0;

	if (!m)
		return big_size / PAGE;
	for (uint64_t p = 0; p < big_size / PAGE; p++) {
		int g = big_gen(p, k);
		uint64_t *w = m + p * WORDS;

		for (uint64_t i = 0; i < WORDS; i++) {
			if (w[i] != pattern(K_BIG, g, p, i)) {
				if (!bad++)
					printf("LU-SOAK big: page %lu word %lu: %#lx, expected %#lx "
					       "(stage %d)\n", (unsigned long)p, (unsigned long)i,
					       (unsigned long)w[i],
					       (unsigned long)pattern(K_BIG, g, p, i), g);
				break;
			}
		}
		verified += PAGE;
	}
	munmap(m, big_size);
	return bad;
}

/*
 * Every page of the sparse memfd: pages in holes must be expected holes,
 * pages with data must hold their pattern or, for an expected hole, zeros
 * (upstream's handler fills the holes at PRESERVE_FD). The bad pages.
 */
static uint64_t verify_sparse(int k)
{
	static uint64_t buf[WORDS], want[WORDS];
	uint64_t bad = 0, pages = sparse_size / PAGE;
	off_t data = -1, hole = 0;

	for (uint64_t p = 0; p < pages; p++) {
		off_t off = p * PAGE;
		int g = sparse_gen(p, k), in_data;

		if (off >= hole) {
			data = lseek(sparse_fd, off, SEEK_DATA);
			if (data < 0)
				data = sparse_size;
			hole = data < (off_t)sparse_size ? lseek(sparse_fd, data, SEEK_HOLE)
							 : (off_t)sparse_size;
		}
		in_data = off >= data && off < hole;
		if (in_data) {
			sparse_data_pages++;
			if (g)
				fill_page(want, K_SPARSE, g, p);
			else
				memset(want, 0, PAGE);
			if (pread(sparse_fd, buf, PAGE, off) != PAGE || memcmp(buf, want, PAGE)) {
				if (!bad)
					printf("LU-SOAK sparse: page %lu differs (stage %d)\n",
					       (unsigned long)p, g);
				bad++;
			}
		} else if (g) {
			if (!bad)
				printf("LU-SOAK sparse: page %lu is a hole, expected stage %d's data\n",
				       (unsigned long)p, g);
			bad++;
		}
		verified += PAGE;
	}
	return bad;
}

/* ---- the stage ---- */

static int retrieve(int s, __u64 token, int *fd)
{
	struct liveupdate_session_retrieve_fd a = { .size = sizeof(a), .token = token };

	if (ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &a))
		return errno;
	*fd = a.fd;
	return 0;
}

/*
 * The next stages' kernels and initramfs, nested in ours: kexec_file_load()
 * has copied them already, so the rootfs copies are dropped to keep MemFree
 * comparable between stages; the copies kexec keeps are reported (KiB).
 */
static long drop_next(void)
{
	static const char *const next[] = { "/lu/next/kernel", "/lu/next/initrd" };
	struct stat st;
	long kb = 0;

	for (int i = 0; i < 2; i++) {
		if (stat(next[i], &st))
			continue;
		kb += st.st_size / 1024;
		unlink(next[i]);
	}
	return kb;
}

/* A /proc/meminfo figure ("MemFree: %ld kB"), or -1. */
static long meminfo_kb(const char *fmt)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long kb = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

/* Stage 1: the files, as stage 1 writes them. */
static int create(void)
{
	uint64_t *m;
	int err = 0;

	big_fd = memfd_create("soak-big", 0);
	sparse_fd = memfd_create("soak-sparse", 0);
	if (big_fd < 0 || sparse_fd < 0 || ftruncate(big_fd, big_size) ||
	    ftruncate(sparse_fd, sparse_size))
		return errno;
	m = map(big_fd, big_size);
	if (!m)
		return errno;
	for (uint64_t p = 0; p < big_size / PAGE; p++)
		fill_page(m + p * WORDS, K_BIG, 1, p);
	munmap(m, big_size);
	for (uint64_t p = 0; p < sparse_size / PAGE && !err; p++) {
		static uint64_t buf[WORDS];

		if (!sparse_event(p, 1))
			continue;
		fill_page(buf, K_SPARSE, 1, p);
		if (pwrite(sparse_fd, buf, PAGE, p * PAGE) != PAGE)
			err = errno;
	}
	for (int i = 0; i < NSMALL && !err; i++) {
		small_fd[i] = -1;
		if (!small_gen(i, 2))
			continue;
		small_fd[i] = memfd_create("soak-small", 0);
		err = small_fd[i] < 0 ? errno : write_small(small_fd[i], i, 1);
	}
	return err;
}

/* Stage k's changes, which stage k + 1 expects. */
static int mutate(int k)
{
	static uint64_t buf[WORDS];
	uint64_t *m = map(big_fd, big_size);
	int err = 0;

	if (!m)
		return errno;
	for (uint64_t p = 0; p < big_size / PAGE; p++)
		if (h(D_BIG, k, p) % 16 == 0)
			fill_page(m + p * WORDS, K_BIG, k, p);
	munmap(m, big_size);
	for (uint64_t p = 0; p < sparse_size / PAGE && !err; p++) {
		int e = sparse_event(p, k);

		if (e > 0) {
			fill_page(buf, K_SPARSE, k, p);
			if (pwrite(sparse_fd, buf, PAGE, p * PAGE) != PAGE)
				err = errno;
		} else if (e < 0 && fallocate(sparse_fd, FALLOC_FL_PUNCH_HOLE |
					      FALLOC_FL_KEEP_SIZE, p * PAGE, PAGE)) {
			err = errno;
		}
	}
	for (int i = 0; i < NSMALL && !err; i++) {
		int before = small_gen(i, k), after = small_gen(i, k + 1);

		if (before == after)
			continue;
		if (!after) {
			close(small_fd[i]);
			small_fd[i] = -1;
			continue;
		}
		if (!before)
			small_fd[i] = memfd_create("soak-small", 0);
		err = small_fd[i] < 0 ? errno : write_small(small_fd[i], i, k);
	}
	return err;
}

static int soak(void)
{
	double t0 = now_ms(), t1, t_ret = 0, t_ver = 0, t_fin = 0, t_mut = 0, t_pres = 0;
	uint64_t bad, data_kb;
	int dev, s, err, files = 0;
	long mf, shmem, next_kb = drop_next();

	for (int i = 0; i < NSMALL; i++)
		small_fd[i] = -1;
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	check(dev >= 0, "open /dev/liveupdate", dev < 0 ? errno : 0);
	if (dev < 0)
		return 1;
	if (stage == 1) {
		err = create();
		check(!err, "create the files", err);
		if (err)
			return 1;
		mf = meminfo_kb("MemFree: %ld kB");
		shmem = meminfo_kb("Shmem: %ld kB");
	} else {
		int missing = 0, extra = 0, bad_small = 0;

		t1 = now_ms();
		s = lu_session(dev, "soak", 0);
		check(s >= 0, "retrieve session soak", s < 0 ? -s : 0);
		if (s < 0)
			return 1;
		err = retrieve(s, TOKEN_BIG, &big_fd);
		check(!err, "retrieve the big memfd", err);
		err = err ? err : retrieve(s, TOKEN_SPARSE, &sparse_fd);
		check(!err, "retrieve the sparse memfd", err);
		if (err)
			return 1;
		for (int i = 0; i < NSMALL; i++) {
			int g = small_gen(i, stage);

			err = retrieve(s, TOKEN_SMALL + i, &small_fd[i]);
			if (!err && !g) {
				extra++;
				close(small_fd[i]);
			}
			if (err)
				small_fd[i] = -1;
			missing += g && err;
		}
		t_ret = now_ms() - t1;
		check(!missing && !extra, "the small files of the previous stage, no more", 0);
		t1 = now_ms();
		bad = verify_big(stage);
		check(!bad, "every byte of the big memfd", 0);
		bad = verify_sparse(stage);
		check(!bad, "every byte of the sparse memfd", 0);
		for (int i = 0; i < NSMALL; i++) {
			int g = small_gen(i, stage);

			if (g && small_fd[i] >= 0) {
				bad_small += !small_ok(small_fd[i], i, g);
				verified += small_size(i, g);
			}
		}
		check(!bad_small, "every byte of the small files", 0);
		t_ver = now_ms() - t1;
		t1 = now_ms();
		{
			struct liveupdate_session_finish fin = { .size = sizeof(fin) };

			err = ioctl(s, LIVEUPDATE_SESSION_FINISH, &fin) ? errno : 0;
		}
		check(!err, "FINISH soak", err);
		close(s);
		t_fin = now_ms() - t1;
		mf = meminfo_kb("MemFree: %ld kB");
		shmem = meminfo_kb("Shmem: %ld kB");
	}
	if (stage < nstages) {
		t1 = now_ms();
		err = stage > 1 ? mutate(stage) : 0;
		check(!err, "mutate the files", err);
		t_mut = now_ms() - t1;
		t1 = now_ms();
		s = lu_session(dev, "soak", 1);
		err = s < 0 ? -s : 0;
		err = err ? err : lu_preserve(s, big_fd, TOKEN_BIG);
		err = err ? err : lu_preserve(s, sparse_fd, TOKEN_SPARSE);
		for (int i = 0; i < NSMALL && !err; i++)
			if (small_fd[i] >= 0)
				err = lu_preserve(s, small_fd[i], TOKEN_SMALL + i);
		check(!err, "preserve everything for the next stage", err);
		t_pres = now_ms() - t1;
	}
	data_kb = big_size / 1024;
	for (uint64_t p = 0; p < sparse_size / PAGE; p++)
		data_kb += sparse_gen(p, stage + 1) ? PAGE / 1024 : 0;
	for (int i = 0; i < NSMALL; i++) {
		int g = small_gen(i, stage + 1);

		files += !!g;
		data_kb += g ? (small_size(i, g) + PAGE - 1) / PAGE * (PAGE / 1024) : 0;
	}
	printf("LU-SOAK stage=%d bytes_verified=%lu memfree_kb=%ld t_ms=%.0f files=%d "
	       "sparse_data_pages=%lu data_kb=%lu retrieve_ms=%.0f verify_ms=%.0f "
	       "finish_ms=%.0f mutate_ms=%.0f preserve_ms=%.0f next_kb=%ld shmem_kb=%ld\n", stage,
	       (unsigned long)verified, mf, now_ms() - t0, files + 2,
	       (unsigned long)sparse_data_pages, (unsigned long)data_kb, t_ret, t_ver, t_fin,
	       t_mut, t_pres, next_kb, shmem);
	if (failures)
		return 1;
	if (stage < nstages)
		lu_hold();
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 5) {
		fprintf(stderr, "usage: lu-soak STAGE NSTAGES SIZE_MIB SPARSE_MIB\n");
		return 2;
	}
	stage = atoi(argv[1]);
	nstages = atoi(argv[2]);
	big_size = strtoull(argv[3], NULL, 0) << 20;
	sparse_size = strtoull(argv[4], NULL, 0) << 20;
	if (stage < 1 || stage > nstages || !big_size || !sparse_size)
		return 2;
	return soak();
}
