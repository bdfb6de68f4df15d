// SPDX-License-Identifier: GPL-2.0
/*
 * lu-fail-nth: the Nth fault in every allocation of the LUO paths (issue 18,
 * reliability:fail-nth), the model of iommufd_fail_nth.c.
 *
 * For each operation, N = 1, 2, ...: write N to /proc/thread-self/fail-nth,
 * do the operation, read fail-nth back (0: the fault was injected, i.e. the
 * Nth fault point was reached and failed) and disarm it.  An attempt that
 * failed must have failed because of the fault, with a documented errno, and
 * must have changed nothing (a clean retry with the same token or name
 * succeeds, no descriptor appeared); an attempt that succeeded despite the
 * fault (the kernel absorbed it) must be a complete success.  The loop ends
 * when the operation succeeds with the fault not reached.
 *
 * "lu-fail-nth stage1 [--expect=upstream|fixed]", before the kexec:
 * CREATE_SESSION, PRESERVE_FD (a 1-page memfd, a 2 MiB one, a THP-backed
 * one if shmem gets a THP here), UNPRESERVE_FD (ours: upstream lacks it),
 * GET_NAME and closing a session holding files.  Then it preserves what
 * stage 2 needs and loops reboot(LINUX_REBOOT_CMD_KEXEC) itself (lu-init
 * loaded the kexec first): a failed attempt must leave every session intact;
 * the first successful one kexecs, so stage 1 has no LU-RESULT and prints
 * its reboot counts before each attempt.
 *
 * "lu-fail-nth stage2 [--expect=...]", after it: RETRIEVE_SESSION,
 * RETRIEVE_FD (each kind of memfd; every retrieved memfd holds exactly its
 * pattern), GET_NAME and FINISH, then a clean retrieval of session
 * "fnth-keep" whose files must be byte for byte what stage 1 wrote.
 *
 * Output goes straight to /dev/kmsg, one record per line, so that the lines
 * printed just before a successful kexec are not lost in lu-init's relay:
 *
 *   LU-FAILNTH ok|FAIL what (errno N: ...)       one per check
 *   LU-FAILNTH-COUNT op points=P injected=I clean=C absorbed=A memfree_drift_kb=D
 *   LU-FAILNTH-INFO ...                          what the kernel offers
 *
 * points: faults reached; injected: attempts that failed; clean: reached
 * faults after which the state checked out; absorbed: attempts that
 * succeeded although their fault was reached.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <linux/reboot.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "lu-check.h"

#define PREFIX "LU-FAILNTH"
#define MAX_NTH 2000
#define SMALL_SIZE 4096UL
#define MULTI_SIZE (64UL << 10)
#define BIG_SIZE (2UL << 20)
#define DBG "/sys/kernel/debug"
#define THP_SHMEM "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

/* Handover of stage 1 to stage 2: session names, tokens and their counts. */
#define KEEP "fnth-keep"
#define RFD "fnth-rfd"
#define RS_FMT "fnth-rs-%02d"
#define NR_RS 48	/* sessions for RETRIEVE_SESSION, then FINISH */
#define TOK_SMALL 100
#define TOK_MULTI 200
#define TOK_BIG 300
#define TOK_THP 400

/*
 * The memfds: 1 page, 16 pages, 2 MiB of small folios, one 2 MiB THP.  A
 * retrieve restores a memfd folio by folio, each with its fault points, and
 * each attempt of the RETRIEVE_FD loop needs a token of its own (a retrieve
 * that succeeded, or failed in the file handler, is final).
 */
enum kind { SMALL, MULTI, BIG, THP, NR_KINDS };
static const char *const kind_name[NR_KINDS] = { "small", "multi", "big", "thp" };
static const unsigned long kind_size[NR_KINDS] = {
	SMALL_SIZE, MULTI_SIZE, BIG_SIZE, BIG_SIZE,
};
/* Tokens of each kind handed over for the RETRIEVE_FD loop. */
static const int kind_count[NR_KINDS] = { 48, 64, 64, 32 };
static const __u64 kind_token[NR_KINDS] = { TOK_SMALL, TOK_MULTI, TOK_BIG, TOK_THP };

static int nth_fd = -1, dev = -1, base_fds;
static int held;	/* descriptors the loops keep on purpose (sessions) */
static int upstream;	/* --expect=upstream: the c flavor */
static int have_thp;

static void check(int ok, const char *what, int err)
{
	lu_check(PREFIX, ok, what, err);
}

static void checkf(int ok, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void checkf(int ok, int err, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	check(ok, what, err);
}

/* fail-nth: arm the Nth fault of this task, then read what is left and disarm. */
static void nth_arm(unsigned int n)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%u", n);

	if (pwrite(nth_fd, buf, len, 0) != len) {
		check(0, "arm /proc/thread-self/fail-nth", errno);
		exit(1);
	}
}

static unsigned int nth_disarm(void)
{
	char buf[16] = "";
	ssize_t n = pread(nth_fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0 || pwrite(nth_fd, "0", 1, 0) != 1) {
		check(0, "read and disarm /proc/thread-self/fail-nth", errno);
		exit(1);
	}
	return strtoul(buf, NULL, 10);
}

static long meminfo_kb(const char *key)
{
	char line[128];
	size_t len = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Writes a debugfs or sysfs attribute; 0 or an errno. */
static int write_attr(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY), err = 0;

	if (fd < 0)
		return errno;
	if (write(fd, val, strlen(val)) < 0)
		err = errno;
	close(fd);
	return err;
}

static void read_attr(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

	buf[n > 0 ? n : 0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	if (fd >= 0)
		close(fd);
}

/* Lets failslab and fail_page_alloc inject into every allocation, quietly. */
static int setup_fault_injection(void)
{
	static const char *const attrs[][2] = {
		{ DBG "/failslab/ignore-gfp-wait", "N" },
		{ DBG "/failslab/verbose", "0" },
		{ DBG "/fail_page_alloc/ignore-gfp-wait", "N" },
		{ DBG "/fail_page_alloc/ignore-gfp-highmem", "N" },
		{ DBG "/fail_page_alloc/min-order", "0" },
		{ DBG "/fail_page_alloc/verbose", "0" },
	};
	char old[64];
	unsigned int i;
	int err, bad = 0;

	for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		read_attr(attrs[i][0], old, sizeof(old));
		err = write_attr(attrs[i][0], attrs[i][1]);
		printf(PREFIX "-INFO %s was %s, now %s\n", attrs[i][0], old, attrs[i][1]);
		bad |= err;
		if (err)
			checkf(0, err, "set %s", attrs[i][0]);
	}
	check(!bad, "let failslab and fail_page_alloc fail any allocation", bad);
	nth_fd = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
	check(nth_fd >= 0, "open /proc/thread-self/fail-nth", nth_fd < 0 ? errno : 0);
	return bad || nth_fd < 0;
}

/* The pattern of memfd seed: a word per 4 bytes, different in every page and file. */
static void fill(uint32_t *buf, size_t words, uint64_t seed, size_t first)
{
	size_t i;

	for (i = 0; i < words; i++)
		buf[i] = (uint32_t)((seed << 24) ^ ((first + i) * 2654435761u) ^ (first + i));
}

/* 0 if fd holds exactly size bytes of seed's pattern; else 1 + first bad offset. */
static long verify(int fd, unsigned long size, uint64_t seed)
{
	static uint32_t got[16384], want[16384];
	unsigned long off;
	struct stat st;

	if (fstat(fd, &st) || (unsigned long)st.st_size != size)
		return 1;
	for (off = 0; off < size; off += sizeof(got)) {
		size_t len = size - off < sizeof(got) ? size - off : sizeof(got);

		if (pread(fd, got, len, off) != (ssize_t)len)
			return 1 + off;
		fill(want, len / 4, seed, off / 4);
		if (memcmp(got, want, len))
			return 1 + off;
	}
	return 0;
}

/* A memfd of the kind holding seed's pattern, or -1. */
static int make_memfd(enum kind k, uint64_t seed)
{
	static uint32_t buf[16384];
	unsigned long size = kind_size[k], off;
	int fd = memfd_create("fnth", 0);
	char *map;

	if (fd < 0 || ftruncate(fd, size))
		return -1;
	if (k == THP) {
		map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED)
			return -1;
		madvise(map, size, MADV_HUGEPAGE);
		for (off = 0; off < size; off += sizeof(buf)) {
			fill(buf, sizeof(buf) / 4, seed, off / 4);
			memcpy(map + off, buf, sizeof(buf));
		}
		munmap(map, size);
		return fd;
	}
	for (off = 0; off < size; off += sizeof(buf)) {
		size_t len = size - off < sizeof(buf) ? size - off : sizeof(buf);

		fill(buf, len / 4, seed, off / 4);
		if (pwrite(fd, buf, len, off) != (ssize_t)len)
			return -1;
	}
	return fd;
}

/* Whether shmem gives a memfd THPs here: asks for them, and looks. */
static void probe_thp(void)
{
	long before, after;
	char mode[128];
	int fd;

	write_attr(THP_SHMEM, "advise");
	read_attr(THP_SHMEM, mode, sizeof(mode));
	before = meminfo_kb("ShmemHugePages");
	fd = make_memfd(THP, 3);
	after = meminfo_kb("ShmemHugePages");
	have_thp = fd >= 0 && after - before >= 2048;
	printf(PREFIX "-INFO shmem_enabled: %s; ShmemHugePages %ld -> %ld kB: THP memfds %s\n",
	       mode, before, after, have_thp ? "yes" : "no (skipped)");
	if (fd >= 0)
		close(fd);
}

static int get_name(int s, char *name)
{
	struct liveupdate_session_get_name a = { .size = sizeof(a) };

	if (ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &a))
		return errno;
	memcpy(name, a.name, sizeof(a.name));
	return 0;
}

/* RETRIEVE_FD: the fd, or -errno. */
static int retrieve_fd(int s, __u64 token)
{
	struct liveupdate_session_retrieve_fd a = { .size = sizeof(a), .token = token };

	return ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &a) ? -errno : a.fd;
}

static int finish(int s)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };

	return ioctl(s, LIVEUPDATE_SESSION_FINISH, &a) ? errno : 0;
}

/*
 * One operation under the loop.  prepare() sets up attempt n (fail-nth
 * off); op() is the operation alone, 0 or an errno; after() checks the state
 * once fail-nth is off again (err: what op() returned; reached: whether the
 * fault was reached) and undoes what the attempt did, 0 if all was right.
 */
struct nth_op {
	const char *name;
	const int *errnos;	/* documented errnos of an injected failure, 0-terminated */
	int (*prepare)(void *ctx, int n);
	int (*op)(void *ctx);
	int (*after)(void *ctx, int n, int err, int reached);
	void *ctx;
};

struct tally {
	int points, injected, clean, absorbed;
};

static int documented(const int *errnos, int err)
{
	for (; *errnos; errnos++)
		if (*errnos == err)
			return 1;
	return 0;
}

static void print_count(const char *name, const struct tally *t, long drift)
{
	printf(PREFIX "-COUNT %s points=%d injected=%d clean=%d absorbed=%d memfree_drift_kb=%ld\n",
	       name, t->points, t->injected, t->clean, t->absorbed, drift);
}

/* Runs the loop of o: its count line and the checks of its summary. */
static void run_loop(const struct nth_op *o)
{
	struct tally t = { 0 };
	long mem0 = meminfo_kb("MemFree"), drift;
	int n, err, reached, bad_errno = 0, done = 0, ok;

	for (n = 1; n <= MAX_NTH && !done; n++) {
		if (o->prepare && o->prepare(o->ctx, n)) {
			checkf(0, 0, "%s N=%d: set up the attempt", o->name, n);
			break;
		}
		nth_arm(n);
		err = o->op(o->ctx);
		reached = nth_disarm() == 0;
		if (!reached && err) {
			checkf(0, err, "%s N=%d: failed although the fault was not reached",
			       o->name, n);
			o->after(o->ctx, n, err, reached);
			break;
		}
		done = !reached;
		t.points += reached;
		if (err) {
			t.injected++;
			if (!documented(o->errnos, err)) {
				bad_errno++;
				checkf(0, err, "%s N=%d: injected failure has an undocumented errno",
				       o->name, n);
			}
		} else {
			t.absorbed += reached;
		}
		ok = !o->after(o->ctx, n, err, reached);
		t.clean += ok && reached;
		if (!ok)
			checkf(0, err, "%s N=%d: state after the attempt", o->name, n);
	}
	drift = meminfo_kb("MemFree") - mem0;
	print_count(o->name, &t, drift);
	checkf(done, 0, "%s: succeeds once the fault is beyond its last point", o->name);
	checkf(!bad_errno, 0, "%s: every injected failure has a documented errno", o->name);
	checkf(t.clean == t.points, 0, "%s: the state checks out after every injected fault",
	       o->name);
	checkf(count_fds() == base_fds + held, 0, "%s: no descriptor left behind", o->name);
}

static const int enomem[] = { ENOMEM, 0 };

/* Checks no descriptor appeared; 0 if none did. */
static int fds_unchanged(const char *op, int n, int extra)
{
	int now = count_fds();

	if (now == base_fds + held + extra)
		return 0;
	printf(PREFIX "-INFO %s N=%d: %d descriptors, expected %d\n", op, n, now,
	       base_fds + held + extra);
	return 1;
}

/* --- stage 1 --- */

struct s1 {
	int s;			/* the session of the attempt */
	int fd[NR_KINDS];	/* one memfd of each kind (-1: none) */
	enum kind k;		/* the memfd an attempt preserves */
	__u64 token;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

static int op_create(void *p)
{
	struct s1 *c = p;

	c->s = lu_session(dev, c->name, 1);
	return c->s < 0 ? -c->s : 0;
}

static int after_create(void *p, int n, int err, int reached)
{
	struct s1 *c = p;
	int bad = 0;

	if (err) {
		bad |= fds_unchanged("create", n, 0);
		c->s = lu_session(dev, c->name, 1);
		if (c->s < 0) {
			checkf(0, -c->s, "create N=%d: clean retry with the same name", n);
			return 1;
		}
	}
	/* The name is taken now: a second create must say so. */
	err = lu_session(dev, c->name, 1);
	if (err != -EEXIST) {
		checkf(0, err < 0 ? -err : 0, "create N=%d: the session exists (EEXIST)", n);
		bad = 1;
		if (err >= 0)
			close(err);
	}
	close(c->s);
	c->s = -1;
	return bad;
}

static int prep_preserve(void *p, int n)
{
	struct s1 *c = p;

	c->s = lu_session(dev, c->name, 1);
	return c->s < 0;
}

static int op_preserve(void *p)
{
	struct s1 *c = p;

	return lu_preserve(c->s, c->fd[c->k], c->token);
}

static int after_preserve(void *p, int n, int err, int reached)
{
	struct s1 *c = p;
	int bad = 0, e;

	if (err) {
		bad |= fds_unchanged("preserve", n, 1);
		if (!upstream) {
			e = lu_unpreserve(c->s, c->token);
			if (e != ENOENT) {
				checkf(0, e, "preserve %s N=%d: token not preserved (ENOENT)",
				       kind_name[c->k], n);
				bad = 1;
			}
		}
		e = lu_preserve(c->s, c->fd[c->k], c->token);
		if (e) {
			checkf(0, e, "preserve %s N=%d: clean retry with the same token",
			       kind_name[c->k], n);
			bad = 1;
		}
	}
	/* Preserved now, exactly once: the same token again is EEXIST. */
	e = lu_preserve(c->s, c->fd[c->k], c->token);
	if (e != EEXIST && e != EBUSY) {
		checkf(0, e, "preserve %s N=%d: preserved (EEXIST or EBUSY again)",
		       kind_name[c->k], n);
		bad = 1;
	}
	close(c->s);
	c->s = -1;
	/* Closing unpreserved it: it can be preserved in another session. */
	c->s = lu_session(dev, c->name, 1);
	e = c->s < 0 ? -c->s : lu_preserve(c->s, c->fd[c->k], c->token);
	if (e) {
		checkf(0, e, "preserve %s N=%d: preserve again after the session closed",
		       kind_name[c->k], n);
		bad = 1;
	}
	if (c->s >= 0)
		close(c->s);
	c->s = -1;
	return bad;
}

static int prep_unpreserve(void *p, int n)
{
	struct s1 *c = p;

	return lu_preserve(c->s, c->fd[SMALL], c->token);
}

static int op_unpreserve(void *p)
{
	struct s1 *c = p;

	return lu_unpreserve(c->s, c->token);
}

static int after_unpreserve(void *p, int n, int err, int reached)
{
	struct s1 *c = p;
	int e;

	if (err) {
		/* Still preserved: unpreserving it cleanly works. */
		e = lu_unpreserve(c->s, c->token);
		if (e) {
			checkf(0, e, "unpreserve N=%d: clean retry", n);
			return 1;
		}
	}
	e = lu_unpreserve(c->s, c->token);
	if (e != ENOENT) {
		checkf(0, e, "unpreserve N=%d: token gone (ENOENT)", n);
		return 1;
	}
	return fds_unchanged("unpreserve", n, 0);
}

static int op_get_name(void *p)
{
	struct s1 *c = p;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];

	return get_name(c->s, name);
}

static int after_get_name(void *p, int n, int err, int reached)
{
	struct s1 *c = p;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH] = "";
	int e = get_name(c->s, name);

	if (e || strcmp(name, c->name)) {
		checkf(0, e, "get-name N=%d: clean retry gives the name", n);
		return 1;
	}
	return 0;
}

static int prep_close(void *p, int n)
{
	struct s1 *c = p;

	c->s = lu_session(dev, c->name, 1);
	if (c->s < 0)
		return 1;
	return lu_preserve(c->s, c->fd[SMALL], 1) || lu_preserve(c->s, c->fd[BIG], 2);
}

static int op_close(void *p)
{
	struct s1 *c = p;

	return close(c->s) ? errno : 0;
}

static int after_close(void *p, int n, int err, int reached)
{
	struct s1 *c = p;
	int bad = fds_unchanged("close", n, 0), e;

	/* Everything was released: name and files can be used again. */
	c->s = lu_session(dev, c->name, 1);
	if (c->s < 0) {
		checkf(0, -c->s, "close N=%d: the name is free again", n);
		return 1;
	}
	e = lu_preserve(c->s, c->fd[SMALL], 1);
	e = e ? e : lu_preserve(c->s, c->fd[BIG], 2);
	if (e) {
		checkf(0, e, "close N=%d: its files can be preserved again", n);
		bad = 1;
	}
	close(c->s);
	c->s = -1;
	return bad;
}

static void stage1_loops(int fds[NR_KINDS])
{
	static const int preserve_errnos[] = { ENOMEM, 0 };
	struct s1 c = { .s = -1, .token = 7 };
	struct nth_op o;
	enum kind k;
	int e;

	memcpy(c.fd, fds, sizeof(c.fd));

	strcpy(c.name, "fnth-create");
	o = (struct nth_op){ "create", enomem, NULL, op_create, after_create, &c };
	run_loop(&o);

	for (k = SMALL; k < NR_KINDS; k++) {
		char name[32];

		if (c.fd[k] < 0)
			continue;
		snprintf(name, sizeof(name), "preserve-%s", kind_name[k]);
		snprintf(c.name, sizeof(c.name), "fnth-preserve-%s", kind_name[k]);
		c.k = k;
		o = (struct nth_op){ strdup(name), preserve_errnos, prep_preserve, op_preserve,
				     after_preserve, &c };
		run_loop(&o);
	}

	strcpy(c.name, "fnth-unpreserve");
	c.s = lu_session(dev, c.name, 1);
	held++;
	e = lu_unpreserve(c.s, 12345);
	if (e == ENOENT) {
		o = (struct nth_op){ "unpreserve", enomem, prep_unpreserve, op_unpreserve,
				     after_unpreserve, &c };
		run_loop(&o);
	} else {
		/* Upstream 7.3 has no UNPRESERVE_FD: recorded, not looped. */
		checkf(upstream && (e == ENOTTY || e == EINVAL), e,
		       "unpreserve: %s", upstream ? "not in upstream 7.3 (ENOTTY or EINVAL)" :
		       "supported (ENOENT for an unknown token)");
		printf(PREFIX "-COUNT unpreserve points=0 injected=0 clean=0 absorbed=0 "
		       "memfree_drift_kb=0 supported=0\n");
	}

	/* GET_NAME on a session holding a file, its longest name. */
	memset(c.name, 0, sizeof(c.name));
	memset(c.name, 'n', sizeof(c.name) - 1);
	memcpy(c.name, "fnth-get-name-", 14);
	close(c.s);
	c.s = lu_session(dev, c.name, 1);
	e = c.s < 0 ? -c.s : lu_preserve(c.s, c.fd[SMALL], 1);
	check(!e, "get-name: session with the longest name and a file", e);
	o = (struct nth_op){ "get-name", enomem, NULL, op_get_name, after_get_name, &c };
	run_loop(&o);
	close(c.s);
	held--;
	c.s = -1;

	strcpy(c.name, "fnth-close");
	o = (struct nth_op){ "close", enomem, prep_close, op_close, after_close, &c };
	run_loop(&o);
}

/* Scans for leaks now (objects older than 5 s); the number reported, or -1. */
static int kmemleak_scan(const char *when)
{
	static const char path[] = DBG "/kmemleak";
	char buf[512];
	int fd, n = 0;
	FILE *f;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	sleep(6);
	if (write(fd, "scan", 4) != 4) {
		close(fd);
		return -1;
	}
	close(fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = 0;
		printf("%s\n", buf);
		n += !!strstr(buf, "unreferenced object");
	}
	fclose(f);
	checkf(n == 0, 0, "kmemleak: nothing unreferenced %s", when);
	return n;
}

/* The sessions handed over: their fds, kept open by this process. */
struct handover {
	int keep, rfd, rs[NR_RS];
	int keep_fd[NR_KINDS];
};

static int preserve_new(int s, enum kind k, uint64_t seed, __u64 token, int keep_open)
{
	int fd = make_memfd(k, seed), e;

	if (fd < 0)
		return errno ? errno : EIO;
	e = lu_preserve(s, fd, token);
	if (!keep_open) {
		close(fd);
		return e;
	}
	return e ? e : -fd - 1;
}

static int prepare_handover(struct handover *h)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	enum kind k;
	int i, e, bad = 0;

	h->keep = lu_session(dev, KEEP, 1);
	h->rfd = lu_session(dev, RFD, 1);
	if (h->keep < 0 || h->rfd < 0) {
		check(0, "create sessions " KEEP " and " RFD, 0);
		return 1;
	}
	for (k = SMALL; k < NR_KINDS; k++) {
		h->keep_fd[k] = -1;
		if (k == THP && !have_thp)
			continue;
		e = preserve_new(h->keep, k, 1 + k, 1 + k, 1);
		if (e < 0)
			h->keep_fd[k] = -e - 1;
		else
			bad |= e;
		for (i = 0; i < kind_count[k] && !bad; i++)
			bad |= preserve_new(h->rfd, k, kind_token[k] + i, kind_token[k] + i, 0);
	}
	for (i = 0; i < NR_RS && !bad; i++) {
		snprintf(name, sizeof(name), RS_FMT, i);
		h->rs[i] = lu_session(dev, name, 1);
		bad |= h->rs[i] < 0 ? -h->rs[i] : preserve_new(h->rs[i], SMALL, 1000 + i, 1, 0);
	}
	check(!bad, "preserve the handover: " KEEP ", " RFD " and the " RS_FMT " sessions",
	      bad);
	return bad;
}

/* After a failed reboot: every session as it was, the kernel not frozen. */
static int handover_intact(struct handover *h, int n)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	enum kind k;
	int e, s, bad = 0;
	long off;

	e = get_name(h->keep, name);
	if (e || strcmp(name, KEEP)) {
		checkf(0, e, "reboot N=%d: " KEEP " still there", n);
		bad = 1;
	}
	for (k = SMALL; k < NR_KINDS; k++) {
		if (h->keep_fd[k] < 0)
			continue;
		e = lu_preserve(h->keep, h->keep_fd[k], 1 + k);
		if (e != EEXIST && e != EBUSY) {
			checkf(0, e, "reboot N=%d: " KEEP " token %d still preserved", n, 1 + k);
			bad = 1;
		}
		off = verify(h->keep_fd[k], kind_size[k], 1 + k);
		if (off) {
			checkf(0, 0, "reboot N=%d: " KEEP " token %d bytes (offset %ld)", n,
			       1 + k, off - 1);
			bad = 1;
		}
	}
	/* Not frozen: a new session can be created, used and closed. */
	s = lu_session(dev, "fnth-after-reboot", 1);
	e = s < 0 ? -s : preserve_new(s, SMALL, 99, 1, 0);
	if (e) {
		checkf(0, e, "reboot N=%d: a new session can preserve a memfd", n);
		bad = 1;
	}
	if (s >= 0)
		close(s);
	return bad;
}

static void reboot_loop(struct handover *h)
{
	struct tally t = { 0 };
	long mem0 = meminfo_kb("MemFree");
	int n, err, reached, fds;
	char when[64];

	for (n = 1; n <= MAX_NTH; n++) {
		print_count("reboot", &t, meminfo_kb("MemFree") - mem0);
		printf(PREFIX "-REBOOT attempt %d\n", n);
		fds = count_fds();
		sync();
		nth_arm(n);
		err = reboot(LINUX_REBOOT_CMD_KEXEC) ? errno : 0;
		reached = nth_disarm() == 0;
		/* Still here: the reboot failed. */
		if (!reached) {
			checkf(0, err, "reboot N=%d: failed although the fault was not reached", n);
			break;
		}
		t.points++;
		t.injected++;
		if (!documented(enomem, err))
			checkf(0, err, "reboot N=%d: injected failure has an undocumented errno", n);
		if (!handover_intact(h, n) && count_fds() == fds)
			t.clean++;
		/* The next attempt may kexec: lu-init would not scan this kernel. */
		snprintf(when, sizeof(when), "after failed reboot N=%d", n);
		kmemleak_scan(when);
	}
	print_count("reboot", &t, meminfo_kb("MemFree") - mem0);
	check(0, "reboot: kexec'd", 0);
}

static int stage1(void)
{
	int fds[NR_KINDS], k;
	struct handover h;

	probe_thp();
	for (k = SMALL; k < NR_KINDS; k++) {
		fds[k] = k == THP && !have_thp ? -1 : make_memfd(k, 10 + k);
		if (k != THP || have_thp)
			checkf(fds[k] >= 0, fds[k] < 0 ? errno : 0, "make the %s memfd",
			       kind_name[k]);
	}
	base_fds = count_fds();
	stage1_loops(fds);
	for (k = SMALL; k < NR_KINDS; k++)
		if (fds[k] >= 0) {
			long off = verify(fds[k], kind_size[k], 10 + k);

			checkf(!off, 0, "the %s memfd still holds its pattern", kind_name[k]);
			close(fds[k]);
		}
	if (prepare_handover(&h))
		return 1;
	kmemleak_scan("after the stage 1 loops");
	printf(PREFIX "-INFO stage 1 checks failed so far: %d\n", failures);
	reboot_loop(&h);
	return 1;
}

/* --- stage 2 --- */

struct s2 {
	int s, idx, limit;
	int got[NR_RS];		/* retrieved fnth-rs sessions, for FINISH */
	int ngot;
	enum kind k;
	int fd;
	int sticky;	/* failed retrieves that stayed failed */
};

static int op_retrieve_session(void *p)
{
	struct s2 *c = p;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];

	snprintf(name, sizeof(name), RS_FMT, c->idx);
	c->s = lu_session(dev, name, 0);
	return c->s < 0 ? -c->s : 0;
}

static int after_retrieve_session(void *p, int n, int err, int reached)
{
	struct s2 *c = p;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH], got[LIVEUPDATE_SESSION_NAME_LENGTH] = "";
	int bad = 0, e;

	snprintf(name, sizeof(name), RS_FMT, c->idx);
	if (err) {
		bad |= fds_unchanged("retrieve-session", n, 0);
		c->s = lu_session(dev, name, 0);
		if (c->s < 0) {
			checkf(0, -c->s, "retrieve-session N=%d: clean retry of %s", n, name);
			c->idx++;
			return 1;
		}
	}
	e = get_name(c->s, got);
	if (e || strcmp(got, name)) {
		checkf(0, e, "retrieve-session N=%d: %s has its name", n, name);
		bad = 1;
	}
	c->got[c->ngot++] = c->s;
	held++;
	c->idx++;
	if (c->idx == NR_RS && reached) {
		check(0, "retrieve-session: ran out of sessions", 0);
		exit(1);
	}
	return bad;
}

static int prep_retrieve_fd(void *p, int n)
{
	struct s2 *c = p;

	if (c->idx < c->limit)
		return 0;
	checkf(0, 0, "retrieve-fd-%s: ran out of tokens at N=%d", kind_name[c->k], n);
	return 1;
}

static int op_retrieve_fd(void *p)
{
	struct s2 *c = p;

	c->fd = retrieve_fd(c->s, kind_token[c->k] + c->idx);
	return c->fd < 0 ? -c->fd : 0;
}

static int after_retrieve_fd(void *p, int n, int err, int reached)
{
	struct s2 *c = p;
	__u64 token = kind_token[c->k] + c->idx;
	int bad = 0;
	long off;

	c->idx++;
	if (err) {
		bad |= fds_unchanged("retrieve-fd", n, 0);
		/*
		 * A failure in the file handler is final: the token keeps
		 * failing with its error (documented); one before it changed
		 * nothing: the retry gets the memfd.
		 */
		c->fd = retrieve_fd(c->s, token);
		if (c->fd == -err) {
			c->sticky++;
			return bad;
		}
		if (c->fd < 0) {
			checkf(0, -c->fd, "retrieve-fd-%s N=%d: retry fails the same (errno %d) "
			       "or succeeds", kind_name[c->k], n, err);
			return 1;
		}
	}
	off = verify(c->fd, kind_size[c->k], token);
	if (off) {
		checkf(0, 0, "retrieve-fd-%s N=%d: token %llu bytes (offset %ld)",
		       kind_name[c->k], n, (unsigned long long)token, off - 1);
		bad = 1;
	}
	close(c->fd);
	return bad;
}

static int prep_finish(void *p, int n)
{
	struct s2 *c = p;

	if (c->idx < c->ngot)
		return 0;
	checkf(0, 0, "finish: ran out of retrieved sessions at N=%d", n);
	return 1;
}

static int op_finish(void *p)
{
	struct s2 *c = p;

	return finish(c->got[c->idx]);
}

static int after_finish(void *p, int n, int err, int reached)
{
	struct s2 *c = p;
	int s = c->got[c->idx], e, fd;

	if (err) {
		/* Nothing finished: the file is still there to retrieve. */
		fd = retrieve_fd(s, 1);
		if (fd < 0) {
			checkf(0, -fd, "finish N=%d: file still retrievable", n);
			return 1;
		}
		close(fd);
		e = finish(s);
		if (e) {
			checkf(0, e, "finish N=%d: clean retry", n);
			return 1;
		}
	}
	fd = retrieve_fd(s, 1);
	if (fd != -ENOENT) {
		checkf(0, fd < 0 ? -fd : 0, "finish N=%d: finished (ENOENT)", n);
		if (fd >= 0)
			close(fd);
		return 1;
	}
	close(s);
	held--;
	c->got[c->idx++] = -1;
	return 0;
}

static int stage2(void)
{
	static const int finish_errnos[] = { ENOMEM, 0 };
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	struct s2 c = { .s = -1 };
	struct s1 gn = { .s = -1 };
	struct nth_op o;
	enum kind k;
	int i, e, fd, keep;
	long off;

	base_fds = count_fds();
	o = (struct nth_op){ "retrieve-session", enomem, NULL, op_retrieve_session,
			     after_retrieve_session, &c };
	run_loop(&o);
	/* The rest of them, cleanly, for the FINISH loop. */
	for (i = c.idx; i < NR_RS; i++) {
		snprintf(name, sizeof(name), RS_FMT, i);
		fd = lu_session(dev, name, 0);
		checkf(fd >= 0, fd < 0 ? -fd : 0, "retrieve session %s cleanly", name);
		if (fd < 0)
			return 1;
		c.got[c.ngot++] = fd;
		held++;
	}

	c.s = lu_session(dev, RFD, 0);
	check(c.s >= 0, "retrieve session " RFD, c.s < 0 ? -c.s : 0);
	if (c.s < 0)
		return 1;
	held++;
	for (k = SMALL; k < NR_KINDS; k++) {
		/*
		 * Besides ENOMEM: ENOSPC, shmem's error when it cannot allocate
		 * the inode (memfd_create() fails so too); upstream's handler
		 * also fails with EINVAL when kho_restore_vmalloc() cannot
		 * allocate (mm/memfd_luo.c, memfd_luo_retrieve()).
		 */
		static const int fd_errnos[] = { ENOMEM, ENOSPC, 0 };
		static const int fd_errnos_upstream[] = { ENOMEM, ENOSPC, EINVAL, 0 };

		/* Token kind_token[k] + 0, cleanly: the baseline. */
		fd = kind_count[k] ? retrieve_fd(c.s, kind_token[k]) : -ENOENT;
		if (fd == -ENOENT && (k == THP || !kind_count[k])) {
			printf(PREFIX "-INFO no %s memfds for the retrieve-fd loop\n",
			       kind_name[k]);
			continue;
		}
		off = fd < 0 ? 1 : verify(fd, kind_size[k], kind_token[k]);
		checkf(!off, fd < 0 ? -fd : 0, "retrieve-fd-%s: clean retrieval byte for byte",
		       kind_name[k]);
		if (fd >= 0)
			close(fd);
		c.k = k;
		c.idx = 1;
		c.limit = kind_count[k];
		snprintf(name, sizeof(name), "retrieve-fd-%s", kind_name[k]);
		o = (struct nth_op){ strdup(name), upstream ? fd_errnos_upstream : fd_errnos,
				     prep_retrieve_fd, op_retrieve_fd, after_retrieve_fd, &c };
		c.sticky = 0;
		run_loop(&o);
		printf(PREFIX "-INFO %s: %d failed retrieves stayed failed (the file handler's)\n",
		       name, c.sticky);
	}
	gn.s = c.s;
	strcpy(gn.name, RFD);
	o = (struct nth_op){ "get-name-incoming", enomem, NULL, op_get_name, after_get_name,
			     &gn };
	run_loop(&o);

	c.idx = 0;
	o = (struct nth_op){ "finish", finish_errnos, prep_finish, op_finish, after_finish, &c };
	run_loop(&o);

	e = finish(c.s);
	check(!e, "finish " RFD " with its failed and unretrieved tokens", e);
	close(c.s);
	held--;
	for (i = c.idx; i < c.ngot; i++) {
		finish(c.got[i]);
		close(c.got[i]);
		held--;
	}

	/* The clean run: fnth-keep holds exactly what stage 1 wrote. */
	keep = lu_session(dev, KEEP, 0);
	check(keep >= 0, "retrieve session " KEEP " cleanly", keep < 0 ? -keep : 0);
	if (keep < 0)
		return 1;
	for (k = SMALL; k < NR_KINDS; k++) {
		fd = retrieve_fd(keep, 1 + k);
		if (k == THP && fd == -ENOENT)
			continue;
		off = fd < 0 ? 1 : verify(fd, kind_size[k], 1 + k);
		checkf(!off, fd < 0 ? -fd : 0, KEEP " token %d: the %s memfd byte for byte",
		       1 + k, kind_name[k]);
		if (fd >= 0)
			close(fd);
	}
	e = finish(keep);
	check(!e, "finish " KEEP, e);
	close(keep);
	return failures != 0;
}

/*
 * The first open of /dev/liveupdate in the new kernel builds the incoming
 * sessions.  Ours rolls an allocation failure there back (ENOMEM, and the
 * next open tries again); upstream's makes any failure there sticky EIO and
 * loses the handover, so the c flavor does not run this loop.
 */
static int op_first_open(void *p)
{
	int *fd = p;

	*fd = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	return *fd < 0 ? errno : 0;
}

static int after_first_open(void *p, int n, int err, int reached)
{
	int *fd = p;

	/*
	 * A failed open is checked by the next attempt: if the failure had been
	 * sticky, every later open would fail with EIO, which is not in the
	 * documented set (the check that failed before 2735deb), and the loop
	 * would never pass its last fault point; the rest of stage 2 then
	 * retrieves every session byte for byte.  Once an open succeeds with
	 * its fault absorbed, the sessions are built and later points are the
	 * VFS's only.
	 */
	if (!err) {
		close(*fd);
		*fd = -1;
	}
	return 0;
}

static void first_open_loop(void)
{
	int fd = -1;
	struct nth_op o = { "first-open", enomem, NULL, op_first_open, after_first_open,
			    &fd };

	if (upstream) {
		/* Upstream: any failure there is sticky EIO; recorded, not looped. */
		printf(PREFIX "-COUNT first-open points=0 injected=0 clean=0 absorbed=0 "
		       "memfree_drift_kb=0 supported=0\n");
		return;
	}
	base_fds = count_fds();
	run_loop(&o);
}

int main(int argc, char **argv)
{
	int kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC), i, st1;

	/* One kernel log record per line: lines survive an immediate kexec. */
	if (kmsg >= 0)
		dup2(kmsg, 1);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || (strcmp(argv[1], "stage1") && strcmp(argv[1], "stage2"))) {
		fprintf(stderr, "usage: lu-fail-nth stage1|stage2 [--expect=upstream|fixed]\n");
		return 2;
	}
	st1 = !strcmp(argv[1], "stage1");
	for (i = 2; i < argc; i++)
		upstream |= !strcmp(argv[i], "--expect=upstream");
	if (setup_fault_injection())
		return 1;
	if (!st1)
		first_open_loop();
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	check(dev >= 0, "open /dev/liveupdate", dev < 0 ? errno : 0);
	if (dev < 0)
		return 1;
	return st1 ? stage1() : stage2();
}
