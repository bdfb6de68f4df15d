// SPDX-License-Identifier: GPL-2.0

/*
 * The memfd file handler of the Live Update Orchestrator across a kexec.
 *
 * Run as "luo_memfd -s 1 --kernel=K --prev=K" before the kexec and as
 * "luo_memfd -s 2 --kernel=K2 --prev=K" after it: --kernel names the flavor
 * of the running kernel, --prev the flavor of the kernel that ran stage 1;
 * "c" is upstream's mm/memfd_luo.c, "rust" the Rust handler. Stage 1
 * preserves memfds in five sessions and leaves the sessions open in a
 * detached holder process; stage 2 retrieves, checks and finishes them.
 * Output is KTAP, one test point per check, with the values seen on a "#"
 * line before each point; the exit status is non-zero if any check failed.
 * The VM needs about 9 GiB of RAM (upstream fills the 4 GiB sparse memfd,
 * and the pinned folios must leave the KHO scratch area, which is CMA).
 *
 * Cases across the kexec (session "memfd-data" unless said otherwise;
 * PRESERVE_FD token in brackets); the same on both flavors unless said:
 *
 *  thp [6]        64 MiB written with shmem THP "always", so in 2 MiB
 *                 folios: ShmemHugePages grows by 64 MiB when it is filled
 *                 and again when it is retrieved (large folios keep their
 *                 order); every word back.
 *  pattern [1]    1 GiB, each 8-byte word a function of its offset and a
 *                 seed; st_blocks * 512 = 1 GiB; every word back (the
 *                 number of wrong words is reported).
 *  sparse [2]     4 GiB, 655 runs of 64 KiB at pseudo-random page offsets
 *                 (1%) written with pwrite(). After PRESERVE_FD one word is
 *                 stored through a mapping into a run, one through a mapping
 *                 into a hole and one with pwrite() into another hole; after
 *                 the kexec the runs, the three words and zeros everywhere
 *                 else read back (with pread(), which allocates nothing).
 *                 st_blocks * 512 before PRESERVE_FD: the populated bytes.
 *                 After it: the same on rust (only populated folios are
 *                 preserved), 4 GiB on c (upstream allocates every hole);
 *                 after the two hole writes: populated + 2 pages on rust.
 *                 After the retrieve: populated + 2 pages if --prev=rust,
 *                 4 GiB if --prev=c; reading the file does not change it.
 *  empty [3]      size 0: size 0, st_blocks 0, read() returns 0.
 *  seals [4]      F_SEAL_SEAL|SHRINK|GROW|WRITE|FUTURE_WRITE: F_GET_SEALS
 *                 gives exactly those back; write() EPERM, growing and
 *                 shrinking ftruncate() EPERM, a shared writable mmap()
 *                 EPERM, F_ADD_SEALS EPERM; the data is intact.
 *  pos [5]        lseek() to 12345 before PRESERVE_FD and to 54321 after it:
 *                 54321 after the retrieve (the position is taken at reboot).
 *  frozen [7]     1 MiB; after PRESERVE_FD its size is frozen: growing and
 *                 shrinking ftruncate(), fallocate() (allocating or punching
 *                 a hole) and a write past the end fail with EPERM, while
 *                 write(), pwrite() and stores through a mapping inside the
 *                 size work; all three are there after the kexec.
 *  multi          sessions "memfd-multi-0..2", two memfds each (4 MiB and
 *                 2 MiB + 3 pages, a seed each), tokens 1 and 2: every word
 *                 back; each session finishes.
 *  unretrieved    session "memfd-unretrieved" holds a 256 MiB memfd that
 *                 stage 2 never retrieves: FINISH and close of the session
 *                 free it, MemFree rises by at least 90% of it.
 *  cloexec        every retrieved fd has FD_CLOEXEC.
 *
 * Before the kexec only (exact errno, both flavors): PRESERVE_FD of an
 * MFD_HUGETLB memfd and of a named file on a tmpfs we mount: ENOENT (no
 * handler takes them); of a memfd of more than UINT_MAX pages (sparse):
 * EFBIG, and its size is not left frozen. (EOPNOTSUPP for unknown seals
 * cannot be reached from userspace: every seal a memfd can have is known.)
 *
 * Three deliberate differences from upstream; the handover format is the
 * same, so which behaviour shows depends on the kernel that wrote the data
 * (--prev) or the one that reads it (--kernel):
 *
 *  rdonly [8]     an O_RDONLY file of a memfd (reopened through
 *                 /proc/self/fd, the original closed) is preserved. Fixed
 *                 (--prev=rust and --kernel=rust): retrieved O_RDONLY,
 *                 write() EBADF. Upstream: O_RDWR, write() works.
 *  noexec [9]     a memfd created with MFD_NOEXEC_SEAL (seals F_SEAL_EXEC,
 *                 mode 0666). Fixed (--kernel=rust): seals exactly
 *                 F_SEAL_EXEC, mode 0666, write() works. Upstream recreates
 *                 an executable memfd and sealing exec on it implies the
 *                 write seals: F_SEAL_EXEC|SHRINK|GROW|WRITE|FUTURE_WRITE.
 *  late seals [10] F_SEAL_GROW|F_SEAL_SHRINK added after PRESERVE_FD.
 *                 Fixed (--prev=rust: seals taken again at reboot): both
 *                 seals after the retrieve. Upstream keeps the seals of
 *                 PRESERVE_FD time: none.
 *
 * Upstream's values, seen on 7.3.4 (c>c, x86_64 and arm64): rdonly comes
 * back with F_GETFL & O_ACCMODE = O_RDWR and takes an 8-byte pwrite();
 * noexec comes back with F_GET_SEALS 0x3e, mode 0777, and pwrite() fails
 * with EPERM; late seals come back as F_GET_SEALS 0; the sparse memfd has
 * st_blocks * 512 = 4294967296 after PRESERVE_FD and after the retrieve.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <libliveupdate.h>
#include <linux/types.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

#define STAGE1_TESTS 44
#define STAGE2_TESTS 50

#define SESSION_DATA "memfd-data"
#define SESSION_MULTI "memfd-multi-%d"
#define SESSION_UNRETRIEVED "memfd-unretrieved"
#define MULTI_SESSIONS 3
#define MULTI_MEMFDS 2

enum token {
	TOKEN_PATTERN = 1,
	TOKEN_SPARSE,
	TOKEN_EMPTY,
	TOKEN_SEALS,
	TOKEN_POS,
	TOKEN_THP,
	TOKEN_FROZEN,
	TOKEN_RDONLY,
	TOKEN_NOEXEC,
	TOKEN_LATE_SEALS,
	/* PRESERVE_FD attempts that must fail. */
	TOKEN_HUGETLB = 100,
	TOKEN_TMPFS,
	TOKEN_EFBIG,
};

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

#define PATTERN_SIZE GIB
#define SPARSE_SIZE (4 * GIB)
#define SPARSE_RUN (64 * KIB)
#define SPARSE_RUNS 655
#define THP_SIZE (64 * MIB)
#define SMALL_SIZE (64 * KIB)
#define SEALS_SIZE (16 * KIB)
#define FROZEN_SIZE MIB
#define UNRETRIEVED_SIZE (256 * MIB)
#define POS_BEFORE 12345
#define POS_AFTER 54321

#define SEED_PATTERN 0x5eed0001d1ce0001ULL
#define SEED_SPARSE 0x5eed0002d1ce0002ULL
#define SEED_SEALS 0x5eed0004d1ce0004ULL
#define SEED_POS 0x5eed0005d1ce0005ULL
#define SEED_THP 0x5eed0006d1ce0006ULL
#define SEED_FROZEN 0x5eed0007d1ce0007ULL
#define SEED_RDONLY 0x5eed0008d1ce0008ULL
#define SEED_NOEXEC 0x5eed0009d1ce0009ULL
#define SEED_LATE_SEALS 0x5eed000ad1ce000aULL
#define SEED_MULTI 0x5eed0100d1ce0100ULL
#define SEED_UNRETRIEVED 0x5eed0200d1ce0200ULL

#define ALL_WRITE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | \
			 F_SEAL_FUTURE_WRITE)
#define ALL_SEALS (F_SEAL_SEAL | ALL_WRITE_SEALS)
#define LATE_SEALS (F_SEAL_GROW | F_SEAL_SHRINK)

#define THP_CONTROL "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define TMPFS_DIR "/tmp/luo_memfd"

#define IO_CHUNK MIB

/* A word written after PRESERVE_FD at a given offset. */
struct mark {
	__u64 off;
	__u64 val;
};

static long pagesz;
static bool kernel_rust, prev_rust;
static __u64 *iobuf;
static __u64 sparse_slot;
static __u64 sparse_run[SPARSE_RUNS];
static struct mark sparse_marks[3];
static struct mark frozen_marks[3];

/* Every fd retrieved in stage 2, for the FD_CLOEXEC check. */
static int retrieved[32];
static int nr_retrieved;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "success" for 0, the errno's name for -errno. */
static const char *errname(int ret)
{
	const char *name;

	if (ret >= 0)
		return "success";
	name = strerrorname_np(-ret);
	return name ? name : strerror(-ret);
}

/* One test point, with what was seen on a diagnostic line before it. */
static __printf(3, 4) void result(bool ok, const char *name,
				   const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	ksft_print_msg("%s: %s\n", name, detail);
	if (ok)
		ksft_test_result_pass("%s\n", name);
	else
		ksft_test_result_fail("%s\n", name);
}

static void expect_val(const char *name, const char *what, long long got,
		       long long want)
{
	result(got == want, name, "%s %lld, expected %lld", what, got, want);
}

/* ret is 0 (or a count) on success, -errno on failure. */
static void expect_ok(const char *name, const char *what, long long ret)
{
	result(ret >= 0, name, "%s: %s", what, errname(ret));
}

static void expect_err(const char *name, const char *what, long long ret,
		       int err)
{
	result(ret == -err, name, "%s: %s, expected %s", what, errname(ret),
	       errname(-err));
}

/* A read or write that must transfer exactly want bytes. */
static void expect_bytes(const char *name, const char *what, long long ret,
			 long long want)
{
	if (ret < 0)
		result(false, name, "%s: %s, expected %lld bytes", what,
		       errname(ret), want);
	else
		result(ret == want, name, "%s: %lld bytes, expected %lld", what,
		       ret, want);
}

/* A syscall's return value as itself or -errno. */
static long long ret_errno(long long ret)
{
	return ret < 0 ? -errno : ret;
}

/* The word at byte offset off of a file filled with seed. */
static inline __u64 pattern(__u64 off, __u64 seed)
{
	__u64 x = (off + seed) * 0x9e3779b97f4a7c15ULL;

	return x ^ (x >> 29);
}

/* Write the pattern to [off, off + len) with pwrite(); 0 or -errno. */
static int fill(int fd, __u64 off, __u64 len, __u64 seed)
{
	while (len) {
		size_t n = len < IO_CHUNK ? len : IO_CHUNK;
		size_t i;
		ssize_t w;

		for (i = 0; i < n / 8; i++)
			iobuf[i] = pattern(off + i * 8, seed);
		w = pwrite(fd, iobuf, n, off);
		if (w < 0)
			return -errno;
		if ((size_t)w != n)
			return -EIO;
		off += n;
		len -= n;
	}
	return 0;
}

static bool is_mark(__u64 off, const struct mark *marks, int nr)
{
	int i;

	for (i = 0; i < nr; i++)
		if (marks[i].off == off)
			return true;
	return false;
}

/* Marks whose word does not read back. */
static __u64 bad_marks(int fd, const struct mark *marks, int nr)
{
	__u64 bad = 0, word;
	int i;

	for (i = 0; i < nr; i++)
		if (pread(fd, &word, 8, marks[i].off) != 8 ||
		    word != marks[i].val)
			bad++;
	return bad;
}

/*
 * Words of the file's first len bytes that differ from the pattern, marks
 * excepted (they are checked by bad_marks()); a failed read counts every
 * word it should have read.
 */
static __u64 bad_words(int fd, __u64 len, __u64 seed,
		       const struct mark *marks, int nr)
{
	__u64 off = 0, bad = 0;

	while (off < len) {
		size_t n = len - off < IO_CHUNK ? len - off : IO_CHUNK;
		size_t i;

		if (pread(fd, iobuf, n, off) != (ssize_t)n) {
			bad += (len - off) / 8;
			break;
		}
		for (i = 0; i < n / 8; i++)
			if (iobuf[i] != pattern(off + i * 8, seed) &&
			    !is_mark(off + i * 8, marks, nr))
				bad++;
		off += n;
	}
	return bad + bad_marks(fd, marks, nr);
}

static long long file_size(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? -errno : st.st_size;
}

/* st_blocks * 512: the bytes the memfd has allocated. */
static long long file_bytes(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? -errno : (long long)st.st_blocks * 512;
}

static long long file_mode(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? -errno : st.st_mode & 07777;
}

static long long get_seals(int fd)
{
	return ret_errno(fcntl(fd, F_GET_SEALS));
}

static void expect_seals(const char *name, int fd, long long want)
{
	long long seals = get_seals(fd);

	if (seals < 0)
		result(false, name, "F_GET_SEALS: %s", errname(seals));
	else
		result(seals == want, name, "F_GET_SEALS %#llx, expected %#llx",
		       seals, want);
}

/* A field of /proc/meminfo in kB, or -1. */
static long long meminfo_kb(const char *key)
{
	size_t len = strlen(key);
	long long val = -1;
	char line[256];
	FILE *f;

	f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, len) && line[len] == ':') {
			val = strtoll(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return val;
}

/* Store one word through a shared mapping of the page holding it. */
static int store_mapped(int fd, __u64 off, __u64 val)
{
	__u64 base = off & ~(__u64)(pagesz - 1);
	char *map;

	map = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, base);
	if (map == MAP_FAILED)
		return -errno;
	memcpy(map + (off - base), &val, sizeof(val));
	munmap(map, pagesz);
	return 0;
}

static int store_pwrite(int fd, __u64 off, __u64 val)
{
	ssize_t w = pwrite(fd, &val, sizeof(val), off);

	if (w < 0)
		return -errno;
	return w == sizeof(val) ? 0 : -EIO;
}

/* A memfd of size bytes filled with the pattern; -errno on failure. */
static int pattern_memfd(const char *name, unsigned int flags, __u64 size,
			 __u64 seed)
{
	int fd, ret;

	fd = memfd_create(name, flags);
	if (fd < 0)
		return -errno;
	ret = ftruncate(fd, size) ? -errno : fill(fd, 0, size, seed);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

static int preserve(int session, int fd, __u64 token)
{
	if (fd < 0)
		return fd;
	return luo_session_preserve_fd(session, fd, token);
}

static int retrieve(int session, __u64 token)
{
	int fd;

	if (session < 0)
		return session;
	fd = luo_session_retrieve_fd(session, token);
	if (fd >= 0 && nr_retrieved < (int)ARRAY_SIZE(retrieved))
		retrieved[nr_retrieved++] = fd;
	return fd;
}

/*
 * Where the sparse memfd has data: one run in each slot, never in its last
 * page; and where words are written after PRESERVE_FD.
 */
static void layout(void)
{
	__u64 slot_pages, run_pages, x = 0x2545f4914f6cdd1dULL;
	int i;

	slot_pages = SPARSE_SIZE / SPARSE_RUNS / pagesz;
	run_pages = SPARSE_RUN / pagesz;
	sparse_slot = slot_pages * pagesz;
	for (i = 0; i < SPARSE_RUNS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		sparse_run[i] = i * sparse_slot +
				(x % (slot_pages - run_pages)) * pagesz;
	}
	/* Into a run through a mapping, into two holes (a slot's last page). */
	sparse_marks[0].off = sparse_run[200] + pagesz + 16;
	sparse_marks[0].val = 0x6d6d61702d72756eULL;
	sparse_marks[1].off = 301 * sparse_slot - pagesz + 24;
	sparse_marks[1].val = 0x6d6d61702d686f6cULL;
	sparse_marks[2].off = 501 * sparse_slot - pagesz + 40;
	sparse_marks[2].val = 0x7077726974652d68ULL;

	/* write() at position 0, pwrite(), a store through a mapping. */
	frozen_marks[0].off = 0;
	frozen_marks[0].val = 0x77726974652d3030ULL;
	frozen_marks[1].off = 3 * pagesz + 8;
	frozen_marks[1].val = 0x7077726974652d31ULL;
	frozen_marks[2].off = 5 * pagesz + 16;
	frozen_marks[2].val = 0x6d6d61702d2d2d32ULL;
}

static bool in_run(__u64 off)
{
	__u64 slot = off / sparse_slot;

	return slot < SPARSE_RUNS && off >= sparse_run[slot] &&
	       off < sparse_run[slot] + SPARSE_RUN;
}

/* Words of the sparse memfd that differ from runs, marks and zeros. */
static __u64 sparse_bad_words(int fd)
{
	__u64 off = 0, bad = 0;

	while (off < SPARSE_SIZE) {
		size_t p, i, words = pagesz / 8;

		if (pread(fd, iobuf, IO_CHUNK, off) != IO_CHUNK) {
			bad += (SPARSE_SIZE - off) / 8;
			break;
		}
		for (p = 0; p < IO_CHUNK; p += pagesz, off += pagesz) {
			const __u64 *w = iobuf + p / 8;
			bool run = in_run(off);

			for (i = 0; i < words; i++) {
				__u64 want = run ? pattern(off + i * 8, SEED_SPARSE) : 0;

				if (w[i] != want &&
				    !is_mark(off + i * 8, sparse_marks, 3))
					bad++;
			}
		}
	}
	return bad + bad_marks(fd, sparse_marks, 3);
}

static __u64 sparse_populated(void)
{
	return (__u64)SPARSE_RUNS * SPARSE_RUN;
}

/* The bracketed value of a sysfs mode file, e.g. "never". */
static int read_mode(const char *path, char *mode, size_t size)
{
	char buf[256], *lb, *rb;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	lb = strchr(buf, '[');
	rb = lb ? strchr(lb, ']') : NULL;
	if (!rb)
		return -EINVAL;
	*rb = 0;
	snprintf(mode, size, "%s", lb + 1);
	return 0;
}

static int write_mode(const char *path, const char *mode)
{
	ssize_t n;
	int fd;

	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, mode, strlen(mode));
	close(fd);
	return n < 0 ? -errno : 0;
}

/* Stage 1 */

static void stage1_thp(int session)
{
	long long before, filled, preserved;
	char mode[32] = "";
	int fd, ret;

	ret = read_mode(THP_CONTROL, mode, sizeof(mode));
	if (!ret)
		ret = write_mode(THP_CONTROL, "always");
	result(!ret, "thp_enable", "%s: '%s' -> 'always': %s", THP_CONTROL,
	       mode, errname(ret));

	before = meminfo_kb("ShmemHugePages");
	fd = pattern_memfd("luo_memfd-thp", 0, THP_SIZE, SEED_THP);
	filled = meminfo_kb("ShmemHugePages");
	if (mode[0])
		write_mode(THP_CONTROL, mode);
	result(fd >= 0 && filled - before == THP_SIZE / KIB, "thp_huge_folios",
	       "memfd: %s; ShmemHugePages %lld kB -> %lld kB, expected +%llu kB (shmem_enabled restored to %s)",
	       errname(fd), before, filled, THP_SIZE / KIB, mode);

	ret = preserve(session, fd, TOKEN_THP);
	expect_ok("thp_preserve", "PRESERVE_FD", ret);
	preserved = meminfo_kb("ShmemHugePages");
	expect_val("thp_huge_after_preserve", "ShmemHugePages grew (kB) by",
		   preserved - before, THP_SIZE / KIB);
	if (fd >= 0)
		close(fd);
}

static void stage1_pattern(int session)
{
	double t0, t1, t2;
	int fd, ret;

	t0 = now();
	fd = pattern_memfd("luo_memfd-pattern", 0, PATTERN_SIZE, SEED_PATTERN);
	t1 = now();
	result(fd >= 0, "pattern_fill", "1 GiB memfd filled: %s (%.2f s)",
	       errname(fd), t1 - t0);
	expect_val("pattern_blocks", "st_blocks * 512", file_bytes(fd),
		   PATTERN_SIZE);
	ret = preserve(session, fd, TOKEN_PATTERN);
	t2 = now();
	result(!ret, "pattern_preserve", "PRESERVE_FD: %s (%.0f ms)",
	       errname(ret), (t2 - t1) * 1000);
	if (fd >= 0)
		close(fd);
}

static void stage1_sparse(int session)
{
	__u64 pop = sparse_populated();
	long long want;
	double t0, t1;
	int fd, i, ret = 0;

	fd = memfd_create("luo_memfd-sparse", 0);
	if (fd < 0 || ftruncate(fd, SPARSE_SIZE))
		ret = -errno;
	for (i = 0; !ret && i < SPARSE_RUNS; i++)
		ret = fill(fd, sparse_run[i], SPARSE_RUN, SEED_SPARSE);
	result(!ret, "sparse_fill", "%d runs of %llu KiB in a 4 GiB memfd: %s",
	       SPARSE_RUNS, SPARSE_RUN / KIB, errname(ret));
	expect_val("sparse_blocks_before_preserve", "st_blocks * 512",
		   file_bytes(fd), pop);

	t0 = now();
	ret = preserve(session, fd, TOKEN_SPARSE);
	t1 = now();
	result(!ret, "sparse_preserve", "PRESERVE_FD: %s (%.0f ms)",
	       errname(ret), (t1 - t0) * 1000);
	/* Upstream allocates every hole when it pins the folios. */
	want = kernel_rust ? pop : SPARSE_SIZE;
	expect_val("sparse_blocks_after_preserve", "st_blocks * 512",
		   file_bytes(fd), want);

	ret = store_mapped(fd, sparse_marks[0].off, sparse_marks[0].val);
	expect_ok("sparse_mmap_store_populated", "store through a mapping", ret);
	ret = store_mapped(fd, sparse_marks[1].off, sparse_marks[1].val);
	expect_ok("sparse_mmap_store_hole", "store through a mapping", ret);
	ret = store_pwrite(fd, sparse_marks[2].off, sparse_marks[2].val);
	expect_ok("sparse_pwrite_hole", "pwrite()", ret);
	want = kernel_rust ? pop + 2 * pagesz : SPARSE_SIZE;
	expect_val("sparse_blocks_after_writes", "st_blocks * 512",
		   file_bytes(fd), want);
	if (fd >= 0)
		close(fd);
}

static void stage1_empty(int session)
{
	int fd = ret_errno(memfd_create("luo_memfd-empty", 0));

	expect_ok("empty_preserve", "PRESERVE_FD of a size 0 memfd",
		  preserve(session, fd, TOKEN_EMPTY));
	if (fd >= 0)
		close(fd);
}

static void stage1_seals(int session)
{
	int fd, ret;

	fd = pattern_memfd("luo_memfd-seals", MFD_ALLOW_SEALING, SEALS_SIZE,
			   SEED_SEALS);
	ret = fd < 0 ? fd : ret_errno(fcntl(fd, F_ADD_SEALS, ALL_SEALS));
	result(!ret && get_seals(fd) == ALL_SEALS, "seals_all_set",
	       "F_ADD_SEALS: %s; F_GET_SEALS %#llx, expected %#x",
	       errname(ret), get_seals(fd), ALL_SEALS);
	expect_ok("seals_all_preserve", "PRESERVE_FD",
		  preserve(session, fd, TOKEN_SEALS));
	if (fd >= 0)
		close(fd);
}

static void stage1_pos(int session)
{
	long long pos;
	int fd, ret;

	fd = pattern_memfd("luo_memfd-pos", 0, SMALL_SIZE, SEED_POS);
	pos = fd < 0 ? fd : ret_errno(lseek(fd, POS_BEFORE, SEEK_SET));
	ret = pos < 0 ? pos : preserve(session, fd, TOKEN_POS);
	result(pos == POS_BEFORE && !ret, "pos_preserve",
	       "lseek to %d: %lld; PRESERVE_FD: %s", POS_BEFORE, pos,
	       errname(ret));
	pos = ret_errno(lseek(fd, POS_AFTER, SEEK_SET));
	expect_val("pos_seek_after_preserve", "lseek", pos, POS_AFTER);
	if (fd >= 0)
		close(fd);
}

static void stage1_frozen(int session)
{
	const __u64 size = FROZEN_SIZE;
	__u64 word, val;
	int fd, ret;

	fd = pattern_memfd("luo_memfd-frozen", 0, size, SEED_FROZEN);
	expect_ok("frozen_preserve", "PRESERVE_FD",
		  preserve(session, fd, TOKEN_FROZEN));
	expect_err("frozen_ftruncate_grow", "ftruncate(size + page)",
		   ret_errno(ftruncate(fd, size + pagesz)), EPERM);
	expect_err("frozen_ftruncate_shrink", "ftruncate(size - page)",
		   ret_errno(ftruncate(fd, size - pagesz)), EPERM);
	expect_err("frozen_fallocate", "fallocate(0, 0, page)",
		   ret_errno(fallocate(fd, 0, 0, pagesz)), EPERM);
	ret = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			pagesz);
	expect_err("frozen_punch_hole", "fallocate(PUNCH_HOLE|KEEP_SIZE)",
		   ret_errno(ret), EPERM);
	val = 0x6f7574736964652eULL;
	expect_err("frozen_write_past_eof", "pwrite() at the size",
		   ret_errno(pwrite(fd, &val, sizeof(val), size)), EPERM);

	/* Inside the size everything works; stage 2 finds the three words. */
	ret = fd < 0 ? fd : ret_errno(write(fd, &frozen_marks[0].val, 8));
	expect_bytes("frozen_write", "write() at position 0", ret, 8);
	ret = store_pwrite(fd, frozen_marks[1].off, frozen_marks[1].val);
	expect_ok("frozen_pwrite", "pwrite()", ret);
	ret = store_mapped(fd, frozen_marks[2].off, frozen_marks[2].val);
	if (!ret && pread(fd, &word, 8, frozen_marks[2].off) != 8)
		ret = -errno;
	result(!ret && word == frozen_marks[2].val, "frozen_mmap_store",
	       "store through a mapping and pread(): %s", errname(ret));
	expect_val("frozen_size", "st_size", file_size(fd), size);
	if (fd >= 0)
		close(fd);
}

static void stage1_rdonly(int session)
{
	char path[64];
	int fd, ro = -1;
	long long fl;

	fd = pattern_memfd("luo_memfd-rdonly", 0, SMALL_SIZE, SEED_RDONLY);
	if (fd >= 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ro = ret_errno(open(path, O_RDONLY));
		close(fd);
	}
	fl = ro < 0 ? ro : ret_errno(fcntl(ro, F_GETFL));
	result(fl >= 0 && (fl & O_ACCMODE) == O_RDONLY, "rdonly_reopen",
	       "reopened through /proc/self/fd: %s, F_GETFL %#llx",
	       errname(ro), fl);
	expect_ok("rdonly_preserve", "PRESERVE_FD of the O_RDONLY file",
		  preserve(session, ro, TOKEN_RDONLY));
	if (ro >= 0)
		close(ro);
}

static void stage1_noexec(int session)
{
	long long seals, mode;
	int fd;

	fd = pattern_memfd("luo_memfd-noexec", MFD_NOEXEC_SEAL, SMALL_SIZE,
			   SEED_NOEXEC);
	seals = get_seals(fd);
	mode = file_mode(fd);
	result(seals == F_SEAL_EXEC && mode >= 0 && !(mode & 0111),
	       "noexec_create", "MFD_NOEXEC_SEAL: %s, seals %#llx, mode %#llo",
	       errname(fd), seals, mode);
	expect_ok("noexec_preserve", "PRESERVE_FD",
		  preserve(session, fd, TOKEN_NOEXEC));
	if (fd >= 0)
		close(fd);
}

static void stage1_late_seals(int session)
{
	int fd, ret;

	fd = pattern_memfd("luo_memfd-late-seals", MFD_ALLOW_SEALING,
			   SMALL_SIZE, SEED_LATE_SEALS);
	expect_ok("late_seals_preserve", "PRESERVE_FD with no seals",
		  preserve(session, fd, TOKEN_LATE_SEALS));
	ret = fd < 0 ? fd : ret_errno(fcntl(fd, F_ADD_SEALS, LATE_SEALS));
	result(!ret && get_seals(fd) == LATE_SEALS, "late_seals_add",
	       "F_ADD_SEALS after PRESERVE_FD: %s; F_GET_SEALS %#llx, expected %#x",
	       errname(ret), get_seals(fd), LATE_SEALS);
	if (fd >= 0)
		close(fd);
}

static __u64 multi_size(int m)
{
	return m ? 2 * MIB + 3 * pagesz : 4 * MIB;
}

static __u64 multi_seed(int s, int m)
{
	return SEED_MULTI + s * 0x10000000000ULL + m * 0x100000000ULL;
}

static void stage1_multi(const int *sessions)
{
	int s, m, fd, ret, failed = 0;

	for (s = 0; s < MULTI_SESSIONS; s++) {
		for (m = 0; m < MULTI_MEMFDS; m++) {
			fd = pattern_memfd("luo_memfd-multi", 0, multi_size(m),
					   multi_seed(s, m));
			ret = preserve(sessions[s], fd, m + 1);
			if (ret) {
				ksft_print_msg("multi: session %d memfd %d: %s\n",
					       s, m, errname(ret));
				failed++;
			}
			if (fd >= 0)
				close(fd);
		}
	}
	expect_val("multi_preserve", "memfds not preserved", failed, 0);
}

static void stage1_unretrieved(int session)
{
	int fd;

	fd = pattern_memfd("luo_memfd-unretrieved", 0, UNRETRIEVED_SIZE,
			   SEED_UNRETRIEVED);
	expect_ok("unretrieved_preserve", "PRESERVE_FD of 256 MiB",
		  preserve(session, fd, 1));
	if (fd >= 0)
		close(fd);
}

static void stage1_refused(int session)
{
	int fd, ret;

	fd = ret_errno(memfd_create("luo_memfd-hugetlb", MFD_HUGETLB));
	ret = fd < 0 ? fd : preserve(session, fd, TOKEN_HUGETLB);
	result(fd >= 0 && ret == -ENOENT, "hugetlb_enoent",
	       "memfd_create(MFD_HUGETLB): %s; PRESERVE_FD: %s, expected ENOENT",
	       errname(fd), errname(ret));
	if (fd >= 0)
		close(fd);

	mkdir(TMPFS_DIR, 0700);
	ret = ret_errno(mount("tmpfs", TMPFS_DIR, "tmpfs", 0, "size=1m"));
	fd = ret ? ret : ret_errno(open(TMPFS_DIR "/file", O_RDWR | O_CREAT, 0600));
	if (fd >= 0 && pwrite(fd, "tmpfs", 5, 0) != 5)
		fd = -errno;
	ret = fd < 0 ? fd : preserve(session, fd, TOKEN_TMPFS);
	result(fd >= 0 && ret == -ENOENT, "tmpfs_enoent",
	       "a file on a tmpfs: %s; PRESERVE_FD: %s, expected ENOENT",
	       errname(fd), errname(ret));
	if (fd >= 0)
		close(fd);
	umount2(TMPFS_DIR, MNT_DETACH);
	rmdir(TMPFS_DIR);

	/* One page more than UINT_MAX pages; it stays sparse. */
	fd = ret_errno(memfd_create("luo_memfd-efbig", 0));
	ret = fd < 0 ? fd : ret_errno(ftruncate(fd, (1ULL << 32) * pagesz + pagesz));
	ret = ret < 0 ? ret : preserve(session, fd, TOKEN_EFBIG);
	expect_err("efbig", "PRESERVE_FD of (2^32 + 1) pages", ret, EFBIG);
	expect_ok("efbig_not_frozen", "ftruncate(0) after the failed PRESERVE_FD",
		  fd < 0 ? fd : ret_errno(ftruncate(fd, 0)));
	if (fd >= 0)
		close(fd);
}

/* Keep the sessions open in a detached child until the kexec. */
static void hold_sessions(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		setsid();
		close(STDIN_FILENO);
		close(STDOUT_FILENO);
		close(STDERR_FILENO);
		if (chdir("/"))
			_exit(1);
		for (;;)
			pause();
	}
	result(pid > 0, "holder", "holder pid %d keeps the sessions open",
	       (int)pid);
}

static void stage1(int dev)
{
	int data, multi[MULTI_SESSIONS], unretrieved, s, bad = 0;
	char name[32];

	data = luo_create_session(dev, SESSION_DATA);
	bad += data < 0;
	for (s = 0; s < MULTI_SESSIONS; s++) {
		snprintf(name, sizeof(name), SESSION_MULTI, s);
		multi[s] = luo_create_session(dev, name);
		bad += multi[s] < 0;
	}
	unretrieved = luo_create_session(dev, SESSION_UNRETRIEVED);
	bad += unretrieved < 0;
	expect_val("sessions_create", "sessions not created", bad, 0);

	/* First: shmem THP is switched on only while this memfd is filled. */
	stage1_thp(data);
	stage1_pattern(data);
	stage1_sparse(data);
	stage1_empty(data);
	stage1_seals(data);
	stage1_pos(data);
	stage1_frozen(data);
	stage1_rdonly(data);
	stage1_noexec(data);
	stage1_late_seals(data);
	stage1_multi(multi);
	stage1_unretrieved(unretrieved);
	stage1_refused(data);

	close(dev);
	hold_sessions();
}

/* Stage 2 */

static void check_pattern(const char *name, int fd, __u64 size, __u64 seed,
			  const struct mark *marks, int nr)
{
	long long got = file_size(fd);
	__u64 bad = got < 0 ? size / 8 : bad_words(fd, size, seed, marks, nr);

	result(got == (long long)size && !bad, name,
	       "size %lld (expected %llu), %llu of %llu words wrong", got,
	       size, bad, size / 8);
}

static void stage2_unretrieved(int dev)
{
	long long before, after, want = UNRETRIEVED_SIZE / KIB * 9 / 10;
	int session, ret;
	double t0, t1;

	session = luo_retrieve_session(dev, SESSION_UNRETRIEVED);
	expect_ok("unretrieved_session", "RETRIEVE_SESSION", session);
	before = meminfo_kb("MemFree");
	t0 = now();
	ret = session < 0 ? session : luo_session_finish(session);
	if (session >= 0)
		close(session);
	t1 = now();
	after = meminfo_kb("MemFree");
	result(!ret, "unretrieved_finish",
	       "FINISH without RETRIEVE_FD, then close: %s (%.0f ms)",
	       errname(ret), (t1 - t0) * 1000);
	result(after - before >= want, "unretrieved_memfree",
	       "MemFree %lld kB -> %lld kB: +%lld kB, expected at least +%lld kB",
	       before, after, after - before, want);
}

static void stage2_thp(int session)
{
	long long before, after;
	int fd;

	before = meminfo_kb("ShmemHugePages");
	fd = retrieve(session, TOKEN_THP);
	after = meminfo_kb("ShmemHugePages");
	expect_ok("thp_retrieve", "RETRIEVE_FD", fd);
	result(after - before == THP_SIZE / KIB, "thp_huge_folios",
	       "ShmemHugePages %lld kB -> %lld kB, expected +%llu kB", before,
	       after, THP_SIZE / KIB);
	check_pattern("thp_data", fd, THP_SIZE, SEED_THP, NULL, 0);
}

static void stage2_pattern(int session)
{
	double t0, t1, t2;
	__u64 bad;
	int fd;

	t0 = now();
	fd = retrieve(session, TOKEN_PATTERN);
	t1 = now();
	result(fd >= 0, "pattern_retrieve", "RETRIEVE_FD: %s (%.0f ms)",
	       errname(fd), (t1 - t0) * 1000);
	expect_val("pattern_size", "st_size", file_size(fd), PATTERN_SIZE);
	bad = fd < 0 ? PATTERN_SIZE / 8 :
	      bad_words(fd, PATTERN_SIZE, SEED_PATTERN, NULL, 0);
	t2 = now();
	result(!bad, "pattern_data", "%llu of %llu words wrong (%.2f s)", bad,
	       PATTERN_SIZE / 8, t2 - t1);
}

static void stage2_sparse(int session)
{
	long long blocks, want;
	double t0, t1;
	__u64 bad;
	int fd;

	fd = retrieve(session, TOKEN_SPARSE);
	expect_ok("sparse_retrieve", "RETRIEVE_FD", fd);
	expect_val("sparse_size", "st_size", file_size(fd), SPARSE_SIZE);
	/* The previous kernel decided which folios were handed over. */
	want = prev_rust ? sparse_populated() + 2 * pagesz : SPARSE_SIZE;
	blocks = file_bytes(fd);
	expect_val("sparse_blocks", "st_blocks * 512", blocks, want);
	t0 = now();
	bad = fd < 0 ? SPARSE_SIZE / 8 : sparse_bad_words(fd);
	t1 = now();
	result(!bad, "sparse_data",
	       "%llu of %llu words wrong (runs, 3 words written after PRESERVE_FD, zeros) (%.2f s)",
	       bad, SPARSE_SIZE / 8, t1 - t0);
	expect_val("sparse_blocks_after_read", "st_blocks * 512",
		   file_bytes(fd), blocks);
}

static void stage2_empty(int session)
{
	long long size, bytes, n;
	char c;
	int fd;

	fd = retrieve(session, TOKEN_EMPTY);
	expect_ok("empty_retrieve", "RETRIEVE_FD", fd);
	size = file_size(fd);
	bytes = file_bytes(fd);
	result(size == 0 && bytes == 0, "empty_size_blocks",
	       "st_size %lld, st_blocks * 512 %lld, expected 0 and 0", size,
	       bytes);
	n = ret_errno(read(fd, &c, 1));
	expect_bytes("empty_read", "read()", n, 0);
}

static void stage2_seals(int session)
{
	__u64 val = 0;
	void *map;
	int fd;

	fd = retrieve(session, TOKEN_SEALS);
	expect_ok("seals_all_retrieve", "RETRIEVE_FD", fd);
	expect_seals("seals_all_get", fd, ALL_SEALS);
	check_pattern("seals_all_data", fd, SEALS_SIZE, SEED_SEALS, NULL, 0);
	expect_err("seals_all_write", "write()", ret_errno(write(fd, &val, 8)),
		   EPERM);
	expect_err("seals_all_grow", "ftruncate(size + page)",
		   ret_errno(ftruncate(fd, SEALS_SIZE + pagesz)), EPERM);
	expect_err("seals_all_shrink", "ftruncate(size - page)",
		   ret_errno(ftruncate(fd, SEALS_SIZE - pagesz)), EPERM);
	map = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	expect_err("seals_all_mmap_write", "mmap(PROT_WRITE, MAP_SHARED)",
		   map == MAP_FAILED ? -errno : 0, EPERM);
	if (map != MAP_FAILED)
		munmap(map, pagesz);
	expect_err("seals_all_add_seal", "F_ADD_SEALS(F_SEAL_EXEC)",
		   ret_errno(fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC)), EPERM);
}

static void stage2_pos(int session)
{
	int fd;

	fd = retrieve(session, TOKEN_POS);
	expect_ok("pos_retrieve", "RETRIEVE_FD", fd);
	expect_val("pos_offset", "file position",
		   ret_errno(lseek(fd, 0, SEEK_CUR)), POS_AFTER);
}

static void stage2_frozen(int session)
{
	int fd;

	fd = retrieve(session, TOKEN_FROZEN);
	expect_ok("frozen_retrieve", "RETRIEVE_FD", fd);
	check_pattern("frozen_data", fd, FROZEN_SIZE, SEED_FROZEN,
		      frozen_marks, 3);
}

static void stage2_rdonly(int session)
{
	/* Fixed only when both kernels are: the access mode is in ser.flags. */
	bool fixed = prev_rust && kernel_rust;
	long long fl, ret;
	__u64 val = 0;
	int fd;

	fd = retrieve(session, TOKEN_RDONLY);
	expect_ok("rdonly_retrieve", "RETRIEVE_FD", fd);
	check_pattern("rdonly_data", fd, SMALL_SIZE, SEED_RDONLY, NULL, 0);
	fl = ret_errno(fcntl(fd, F_GETFL));
	expect_val("rdonly_access_mode", "F_GETFL & O_ACCMODE",
		   fl < 0 ? fl : fl & O_ACCMODE, fixed ? O_RDONLY : O_RDWR);
	ret = ret_errno(pwrite(fd, &val, sizeof(val), 0));
	if (fixed)
		expect_err("rdonly_write", "pwrite()", ret, EBADF);
	else
		expect_bytes("rdonly_write", "pwrite()", ret, 8);
}

static void stage2_noexec(int session)
{
	/* Upstream: an executable memfd, where F_SEAL_EXEC implies the rest. */
	long long want_seals = kernel_rust ? F_SEAL_EXEC :
			       F_SEAL_EXEC | ALL_WRITE_SEALS;
	long long want_mode = kernel_rust ? 0666 : 0777;
	long long ret, mode;
	__u64 val = 0;
	int fd;

	fd = retrieve(session, TOKEN_NOEXEC);
	expect_ok("noexec_retrieve", "RETRIEVE_FD", fd);
	check_pattern("noexec_data", fd, SMALL_SIZE, SEED_NOEXEC, NULL, 0);
	expect_seals("noexec_seals", fd, want_seals);
	mode = file_mode(fd);
	result(mode == want_mode, "noexec_mode", "mode %#llo, expected %#llo",
	       mode, want_mode);
	ret = ret_errno(pwrite(fd, &val, sizeof(val), 0));
	if (kernel_rust)
		expect_bytes("noexec_write", "pwrite()", ret, 8);
	else
		expect_err("noexec_write", "pwrite()", ret, EPERM);
}

static void stage2_late_seals(int session)
{
	int fd;

	fd = retrieve(session, TOKEN_LATE_SEALS);
	expect_ok("late_seals_retrieve", "RETRIEVE_FD", fd);
	expect_seals("late_seals_get", fd, prev_rust ? LATE_SEALS : 0);
}

static void stage2_multi(int dev)
{
	int s, m, fd, session[MULTI_SESSIONS], bad = 0;
	char name[32];

	for (s = 0; s < MULTI_SESSIONS; s++) {
		snprintf(name, sizeof(name), SESSION_MULTI, s);
		session[s] = luo_retrieve_session(dev, name);
		for (m = 0; m < MULTI_MEMFDS; m++) {
			fd = retrieve(session[s], m + 1);
			snprintf(name, sizeof(name), "multi_s%d_m%d", s, m);
			if (fd < 0) {
				result(false, name, "RETRIEVE_SESSION: %s, RETRIEVE_FD: %s",
				       errname(session[s]), errname(fd));
				continue;
			}
			check_pattern(name, fd, multi_size(m), multi_seed(s, m),
				      NULL, 0);
		}
	}
	for (s = 0; s < MULTI_SESSIONS; s++) {
		int ret = session[s] < 0 ? session[s] :
			  luo_session_finish(session[s]);

		if (ret) {
			ksft_print_msg("multi: FINISH of session %d: %s\n", s,
				       errname(ret));
			bad++;
		}
	}
	expect_val("multi_finish", "sessions not finished", bad, 0);
}

static void stage2_cloexec(void)
{
	int i, fl, bad = 0;

	for (i = 0; i < nr_retrieved; i++) {
		fl = fcntl(retrieved[i], F_GETFD);
		if (fl < 0 || !(fl & FD_CLOEXEC)) {
			ksft_print_msg("fd %d: F_GETFD %d\n", retrieved[i], fl);
			bad++;
		}
	}
	result(nr_retrieved == 16 && !bad, "cloexec",
	       "%d of %d retrieved fds without FD_CLOEXEC (expected 16 fds)",
	       bad, nr_retrieved);
}

static void stage2(int dev)
{
	int data, ret;

	stage2_unretrieved(dev);
	data = luo_retrieve_session(dev, SESSION_DATA);
	expect_ok("data_session", "RETRIEVE_SESSION", data);
	stage2_thp(data);
	stage2_pattern(data);
	stage2_sparse(data);
	stage2_empty(data);
	stage2_seals(data);
	stage2_pos(data);
	stage2_frozen(data);
	stage2_rdonly(data);
	stage2_noexec(data);
	stage2_late_seals(data);
	stage2_multi(dev);
	stage2_cloexec();
	ret = data < 0 ? data : luo_session_finish(data);
	expect_ok("data_finish", "FINISH", ret);
}

static bool parse_flavor(const char *arg, bool *rust)
{
	if (!strcmp(arg, "c") || !strcmp(arg, "rust")) {
		*rust = !strcmp(arg, "rust");
		return true;
	}
	return false;
}

int main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "stage", required_argument, NULL, 's' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "prev", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_kernel = false, have_prev = false;
	struct utsname uts;
	int opt, stage = 0, dev;

	while ((opt = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			stage = atoi(optarg);
			break;
		case 'k':
			have_kernel = parse_flavor(optarg, &kernel_rust);
			break;
		case 'p':
			have_prev = parse_flavor(optarg, &prev_rust);
			break;
		default:
			stage = 0;
			break;
		}
	}
	if ((stage != 1 && stage != 2) || !have_kernel || !have_prev ||
	    (stage == 1 && kernel_rust != prev_rust))
		ksft_exit_fail_msg("usage: %s -s 1|2 --kernel=c|rust --prev=c|rust\n",
				   argv[0]);

	setvbuf(stdout, NULL, _IOLBF, 0);
	pagesz = sysconf(_SC_PAGESIZE);
	iobuf = malloc(IO_CHUNK);
	if (!iobuf)
		ksft_exit_fail_msg("no memory for the I/O buffer\n");
	layout();

	ksft_print_header();
	ksft_set_plan(stage == 1 ? STAGE1_TESTS : STAGE2_TESTS);
	uname(&uts);
	ksft_print_msg("stage %d on %s: expectations of kernel=%s, prev=%s\n",
		       stage, uts.release, kernel_rust ? "rust" : "c",
		       prev_rust ? "rust" : "c");
	ksft_print_msg("MemTotal %lld kB, MemFree %lld kB, CmaFree %lld kB (KHO scratch)\n",
		       meminfo_kb("MemTotal"), meminfo_kb("MemFree"),
		       meminfo_kb("CmaFree"));

	dev = luo_open_device();
	if (dev < 0)
		ksft_exit_fail_msg("open %s: %s\n", LUO_DEVICE, strerror(errno));
	if (stage == 1)
		stage1(dev);
	else
		stage2(dev);
	ksft_finished();
}
