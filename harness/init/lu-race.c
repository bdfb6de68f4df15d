// SPDX-License-Identifier: GPL-2.0
/*
 * lu-race: races on /dev/liveupdate and its sessions (issue 18,
 * reliability:races), a three-stage chain:
 *
 * "lu-race storm FLAVOR SECONDS [module]", stage 1: for SECONDS, threads
 * preserve and unpreserve memfds in three sessions (the same one and
 * different ones), read their names, close and re-create the sessions,
 * replace and close the memfds being preserved, close and reopen
 * /dev/liveupdate while another thread opens it too (EBUSY while it is
 * held); with "module" (rust), one thread loads and unloads the test module
 * (kernel/liveupdate/luo_test_module.rs, its handler registered and
 * unregistered) while another preserves files of its device: with such a
 * file preserved, removing the module must fail with EWOULDBLOCK. Every
 * return is tallied against the documented errno set of its call. After the
 * storm, a clean sequence must work (every memfd preservable again: nothing
 * left behind). Then sessions "ho-0" .. "ho-3", four memfds each, are held
 * for the kexec.
 *
 * "lu-race retrieve FLAVOR", stage 2: four threads race RETRIEVE_SESSION on
 * each "ho-N" (exactly one succeeds, the others get EINVAL), then
 * RETRIEVE_FD of every token (every call succeeds and gives the same file,
 * whose bytes are checked; on "ho-2" and "ho-3" a FINISH races them, after
 * which RETRIEVE_FD fails with ENOENT).
 *
 * "lu-race reboot FLAVOR", stage 2: sessions "rb-0" and "rb-1" are held;
 * threads churn sessions "rb-c0" and "rb-c1" (preserve, unpreserve, close and
 * re-create) while one thread calls reboot(LINUX_REBOOT_CMD_KEXEC). It must
 * either kexec (into stage 3) or fail cleanly; then init kexecs.
 *
 * "lu-race verify FLAVOR", stage 3: "rb-0" and "rb-1" come back whole, and
 * whatever of "rb-cN" came back has the right bytes under the right token.
 *
 * The program uses fixed descriptor numbers (dup2()) for the shared files,
 * so that a descriptor closed by one thread is never reused for another
 * kind of file under another thread's feet: an ioctl on it either reaches
 * the right kind of file or fails with EBADF.
 *
 * Prints one "LU-RACE ok|FAIL what (errno N: ...)" line per check and
 * "LU-RACE-STATS op=NAME calls=N e0=N eEBADF=N ..." per tallied call;
 * exits 0 if every check held.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/reboot.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include "lu-check.h"

#define DEV_FD		90
#define NSLOTS		3
#define SLOT_FD(i)	(100 + (i))
#define MOD_SLOT_FD	110
#define NMEM		6
#define MEM_FD(i)	(200 + (i))
#define NTOKENS		8
#define MEMFD_SIZE	(64 << 10)

#define NHO		4	/* handover sessions ho-N */
#define HO_TOKENS	4
#define NRACERS		4

#define NCHURN		2	/* churned sessions rb-cN */
#define CHURN_FD(i)	(120 + (i))

#define MODULE_PATH	"/lu/luo_test_module.ko"
#define MODULE_NAME	"luo_test_module"
#define MODULE_DEV	"/dev/luo_test_module"

static int rust;		/* the kernel has UNPRESERVE_FD */
static atomic_int stop;

static void check(int ok, const char *what, int err)
{
	lu_check("LU-RACE", ok, what, err);
}

/* ---- tallies of every return, against the allowed errno set ---- */

#define MAX_ERRNO 134

enum op {
	OP_PRESERVE, OP_UNPRESERVE, OP_GET_NAME, OP_CREATE, OP_DEV_REOPEN,
	OP_DEV_PROBE, OP_MOD_LOAD, OP_MOD_UNLOAD, OP_MOD_OPEN, OP_MOD_PRESERVE,
	OP_MOD_PINNED, OP_MOD_UNPRESERVE, OP_RETRIEVE_SESSION, OP_RETRIEVE_FD,
	OP_FINISH, OP_CHURN_PRESERVE, OP_CHURN_UNPRESERVE, OP_CHURN_CREATE,
	NR_OPS
};

static const char *const op_names[NR_OPS] = {
	"PRESERVE_FD", "UNPRESERVE_FD", "GET_NAME", "CREATE_SESSION",
	"reopen /dev/liveupdate", "second open of /dev/liveupdate",
	"load " MODULE_NAME, "remove " MODULE_NAME, "open " MODULE_DEV,
	"PRESERVE_FD of a module file", "remove with a module file preserved",
	"UNPRESERVE_FD of a module file", "RETRIEVE_SESSION", "RETRIEVE_FD",
	"FINISH", "PRESERVE_FD in a churned session",
	"UNPRESERVE_FD in a churned session", "CREATE_SESSION of a churned session",
};

static atomic_long tally[NR_OPS][MAX_ERRNO];
static int allowed[NR_OPS][MAX_ERRNO];

static void allow(enum op op, const int *errs, int n)
{
	for (int i = 0; i < n; i++)
		allowed[op][errs[i]] = 1;
}

#define ALLOW(op, ...) do {						\
	static const int e_[] = { __VA_ARGS__ };			\
	allow(op, e_, sizeof(e_) / sizeof(e_[0]));			\
} while (0)

/* Records the result of one call: 0 or an errno. */
static int note(enum op op, int err)
{
	atomic_fetch_add(&tally[op][err >= 0 && err < MAX_ERRNO ? err : MAX_ERRNO - 1], 1);
	return err;
}

/*
 * One check per op that was called: every return in its allowed set, and
 * (need_ok) at least one success, so that the race really ran the call.
 */
static void report_op(enum op op, int need_ok)
{
	char line[1024], what[1200];
	long calls = 0, bad = 0;
	int first_bad = 0, n;

	n = snprintf(line, sizeof(line), "LU-RACE-STATS op=\"%s\"", op_names[op]);
	for (int e = 0; e < MAX_ERRNO; e++) {
		long c = atomic_load(&tally[op][e]);

		if (!c)
			continue;
		calls += c;
		if (!allowed[op][e]) {
			bad += c;
			if (!first_bad)
				first_bad = e;
		}
		n += snprintf(line + n, sizeof(line) - n, " e%d=%ld", e, c);
	}
	printf("%s calls=%ld\n", line, calls);
	if (!calls)
		return;
	snprintf(what, sizeof(what), "%s: every return documented (%ld calls, %ld not)",
		 op_names[op], calls, bad);
	check(!bad, what, first_bad);
	if (need_ok) {
		snprintf(what, sizeof(what), "%s: succeeded at least once under the race",
			 op_names[op]);
		check(atomic_load(&tally[op][0]) > 0, what, 0);
	}
}

/* ---- helpers ---- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned int rnd(unsigned int *seed, unsigned int n)
{
	*seed = *seed * 1103515245 + 12345;
	return (*seed >> 8) % n;
}

static uint64_t word(uint64_t key, uint64_t i)
{
	uint64_t z = key * 0x9e3779b97f4a7c15ull + i + 1;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A memfd of MEMFD_SIZE bytes holding key's pattern: its fd, or -errno. */
static int pattern_memfd(uint64_t key)
{
	uint64_t buf[MEMFD_SIZE / 8];
	int fd = memfd_create("lu-race", 0);

	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < MEMFD_SIZE / 8; i++)
		buf[i] = word(key, i);
	if (pwrite(fd, buf, sizeof(buf), 0) != sizeof(buf)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/* Whether fd holds key's pattern, MEMFD_SIZE bytes. */
static int pattern_ok(int fd, uint64_t key)
{
	uint64_t buf[MEMFD_SIZE / 8];
	struct stat st;

	if (fstat(fd, &st) || st.st_size != MEMFD_SIZE)
		return 0;
	if (pread(fd, buf, sizeof(buf), 0) != sizeof(buf))
		return 0;
	for (size_t i = 0; i < MEMFD_SIZE / 8; i++)
		if (buf[i] != word(key, i))
			return 0;
	return 1;
}

/* RETRIEVE_FD: the new fd in *fd, 0 or an errno. */
static int retrieve_fd(int s, __u64 token, int *fd)
{
	struct liveupdate_session_retrieve_fd a = { .size = sizeof(a), .token = token };

	if (ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &a))
		return errno;
	*fd = a.fd;
	return 0;
}

static int finish(int s)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };

	return ioctl(s, LIVEUPDATE_SESSION_FINISH, &a) ? errno : 0;
}

static int get_name(int s, char *name)
{
	struct liveupdate_session_get_name a = { .size = sizeof(a) };

	if (ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &a))
		return errno;
	memcpy(name, a.name, sizeof(a.name));
	name[sizeof(a.name) - 1] = 0;
	return 0;
}

/* Moves descriptor fd to number to (replacing what was there). */
static int move_fd(int fd, int to)
{
	int err = dup2(fd, to) < 0 ? errno : 0;

	close(fd);
	return err;
}

static int open_dev(void)
{
	int fd = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

static void run_threads(void *(*fns[])(void *), int n, pthread_t *t)
{
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, fns[i], (void *)(long)i);
}

static void join_threads(pthread_t *t, int n)
{
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
}

/* ---- stage 1: the storm ---- */

static const char *slot_name(int i)
{
	static const char *const names[NSLOTS] = { "race-0", "race-1", "race-2" };

	return names[i];
}

static void *preserver(void *arg)
{
	unsigned int seed = 1 + (long)arg;

	while (!atomic_load(&stop)) {
		int s = SLOT_FD(rnd(&seed, NSLOTS)), m = MEM_FD(rnd(&seed, NMEM));

		note(OP_PRESERVE, lu_preserve(s, m, 1 + rnd(&seed, NTOKENS)));
	}
	return NULL;
}

static void *unpreserver(void *arg)
{
	unsigned int seed = 100 + (long)arg;

	while (!atomic_load(&stop))
		note(OP_UNPRESERVE, lu_unpreserve(SLOT_FD(rnd(&seed, NSLOTS)),
					       1 + rnd(&seed, NTOKENS)));
	return NULL;
}

static atomic_long bad_names;

static void *namer(void *arg)
{
	unsigned int seed = 200 + (long)arg;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];

	while (!atomic_load(&stop)) {
		int i = rnd(&seed, NSLOTS);

		if (!note(OP_GET_NAME, get_name(SLOT_FD(i), name)) &&
		    strcmp(name, slot_name(i)))
			atomic_fetch_add(&bad_names, 1);
	}
	return NULL;
}

/* Creates session name on DEV_FD at descriptor number to: 0 or an errno. */
static int create_at(const char *name, int to, enum op op)
{
	int s = lu_session(DEV_FD, name, 1);

	if (s < 0)
		return note(op, -s);
	note(op, 0);
	return move_fd(s, to);
}

static void *session_cycler(void *arg)
{
	unsigned int seed = 300 + (long)arg;

	while (!atomic_load(&stop)) {
		int i = rnd(&seed, NSLOTS);

		close(SLOT_FD(i));
		usleep(rnd(&seed, 2000));
		/* The old session may live on in another thread's ioctl. */
		while (create_at(slot_name(i), SLOT_FD(i), OP_CREATE) == EEXIST &&
		       !atomic_load(&stop))
			;
		usleep(rnd(&seed, 20000));
	}
	return NULL;
}

static void *memfd_cycler(void *arg)
{
	unsigned int seed = 400 + (long)arg;

	while (!atomic_load(&stop)) {
		int i = rnd(&seed, NMEM), m;

		if (rnd(&seed, 4) == 0) {
			close(MEM_FD(i));
			usleep(rnd(&seed, 1000));
		}
		m = pattern_memfd(i);
		if (m >= 0)
			move_fd(m, MEM_FD(i));
		usleep(rnd(&seed, 3000));
	}
	return NULL;
}

static void *dev_cycler(void *arg)
{
	unsigned int seed = 500 + (long)arg;

	while (!atomic_load(&stop)) {
		int fd;

		close(DEV_FD);
		/* EBUSY while an ioctl or the prober still holds it. */
		while ((fd = open_dev()) < 0) {
			note(OP_DEV_REOPEN, -fd);
			usleep(100);
		}
		note(OP_DEV_REOPEN, 0);
		move_fd(fd, DEV_FD);
		usleep(rnd(&seed, 5000));
	}
	return NULL;
}

static void *dev_prober(void *arg)
{
	unsigned int seed = 600 + (long)arg;

	while (!atomic_load(&stop)) {
		int fd = open_dev();

		note(OP_DEV_PROBE, fd < 0 ? -fd : 0);
		if (fd >= 0)
			close(fd);
		usleep(rnd(&seed, 1000));
	}
	return NULL;
}

static int mod_load(void)
{
	int fd = open(MODULE_PATH, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0)
		return errno;
	err = syscall(SYS_finit_module, fd, "", 0) ? errno : 0;
	close(fd);
	return err;
}

static int mod_unload(void)
{
	return syscall(SYS_delete_module, MODULE_NAME, O_NONBLOCK) ? errno : 0;
}

/* Registers and unregisters the test module's handler and FLB. */
static void *module_cycler(void *arg)
{
	unsigned int seed = 700 + (long)arg;

	while (!atomic_load(&stop)) {
		note(OP_MOD_LOAD, mod_load());
		usleep(rnd(&seed, 3000));
		note(OP_MOD_UNLOAD, mod_unload());
		usleep(rnd(&seed, 1000));
	}
	return NULL;
}

/* Preserves files of the test module's device while it comes and goes. */
static void *module_preserver(void *arg)
{
	unsigned int seed = 800 + (long)arg;
	__u64 token = 1;

	while (!atomic_load(&stop)) {
		int fd = open(MODULE_DEV, O_RDWR | O_CLOEXEC), err;

		if (note(OP_MOD_OPEN, fd < 0 ? errno : 0)) {
			usleep(rnd(&seed, 1000));
			continue;
		}
		err = note(OP_MOD_PRESERVE, lu_preserve(MOD_SLOT_FD, fd, token));
		close(fd);
		if (err)
			continue;
		/* Only the preserved file pins the module now. */
		note(OP_MOD_PINNED, mod_unload());
		usleep(rnd(&seed, 1000));
		note(OP_MOD_PINNED, mod_unload());
		note(OP_MOD_UNPRESERVE, lu_unpreserve(MOD_SLOT_FD, token));
		token++;
	}
	return NULL;
}

static void allow_storm(void)
{
	ALLOW(OP_PRESERVE, 0, EBADF, EEXIST, EBUSY);
	if (rust)
		ALLOW(OP_UNPRESERVE, 0, EBADF, ENOENT);
	else
		ALLOW(OP_UNPRESERVE, EBADF, EINVAL);
	ALLOW(OP_GET_NAME, 0, EBADF);
	ALLOW(OP_CREATE, 0, EBADF, EEXIST);
	ALLOW(OP_DEV_REOPEN, 0, EBUSY);
	ALLOW(OP_DEV_PROBE, 0, EBUSY);
	/* EBUSY: an earlier instance still going away. */
	ALLOW(OP_MOD_LOAD, 0, EEXIST, EBUSY);
	/* EWOULDBLOCK: pinned; ENOENT: not loaded; EBUSY: loading or going. */
	ALLOW(OP_MOD_UNLOAD, 0, EWOULDBLOCK, ENOENT, EBUSY);
	/* The device node or its misc device is gone with the module. */
	ALLOW(OP_MOD_OPEN, 0, ENOENT, ENXIO, ENODEV);
	/* Our open file pins the module: its handler is registered. */
	ALLOW(OP_MOD_PRESERVE, 0);
	/*
	 * Refused: EWOULDBLOCK, or EBUSY while the module is still coming
	 * (its init registered the device, which a file was opened on and
	 * preserved, but has not returned yet).
	 */
	ALLOW(OP_MOD_PINNED, EWOULDBLOCK, EBUSY);
	ALLOW(OP_MOD_UNPRESERVE, 0);
}

/* After the storm: nothing is left preserved, and a clean sequence works. */
static void storm_after(int module)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	int s, err, fd, all = 1;

	for (int i = 0; i < NSLOTS; i++)
		close(SLOT_FD(i));
	close(MOD_SLOT_FD);
	fd = open_dev();
	check(fd == -EBUSY, "open /dev/liveupdate while held: EBUSY", fd < 0 ? -fd : 0);
	if (fd >= 0)
		close(fd);
	s = lu_session(DEV_FD, "race-final", 1);
	check(s >= 0, "create session race-final after the storm", s < 0 ? -s : 0);
	for (int i = 0; i < NMEM && s >= 0; i++) {
		fd = fcntl(MEM_FD(i), F_GETFD) < 0 ? pattern_memfd(i) : MEM_FD(i);
		err = fd < 0 ? -fd : lu_preserve(s, fd, i + 1);
		all &= !err;
		if (err)
			check(0, "preserve a memfd of the storm again", err);
	}
	check(s >= 0 && all, "every memfd of the storm preservable again (none left behind)", 0);
	if (s >= 0) {
		err = get_name(s, name);
		check(!err && !strcmp(name, "race-final"), "GET_NAME race-final", err);
		if (rust) {
			err = lu_unpreserve(s, 1);
			check(!err, "UNPRESERVE_FD token 1", err);
			err = lu_unpreserve(s, 1);
			check(err == ENOENT, "UNPRESERVE_FD token 1 again: ENOENT", err);
		}
		close(s);
	}
	for (int i = 0; i < NSLOTS; i++) {
		s = lu_session(DEV_FD, slot_name(i), 1);
		check(s >= 0, "the storm's session names are free again", s < 0 ? -s : 0);
		if (s >= 0)
			close(s);
	}
	if (module) {
		err = mod_unload();
		check(!err || err == ENOENT, "remove " MODULE_NAME " after the storm", err);
		check(access("/sys/module/" MODULE_NAME, F_OK) && errno == ENOENT,
		      MODULE_NAME " is gone", 0);
	}
}

/* Sessions ho-N, tokens 1..HO_TOKENS, held for the kexec. */
static int handover(void)
{
	char name[16];

	for (int n = 0; n < NHO; n++) {
		int s, err = 0;

		snprintf(name, sizeof(name), "ho-%d", n);
		s = lu_session(DEV_FD, name, 1);
		for (int t = 1; t <= HO_TOKENS && s >= 0 && !err; t++) {
			int m = pattern_memfd(n * 100 + t);

			err = m < 0 ? -m : lu_preserve(s, m, t);
			if (m >= 0)
				close(m);
		}
		check(s >= 0 && !err, "preserve session ho-N for the kexec", s < 0 ? -s : err);
	}
	return failures;
}

static int storm(int seconds, int module)
{
	void *(*fns[12])(void *);
	pthread_t t[12];
	int n = 0, fd;
	double t0;

	allow_storm();
	fd = open_dev();
	check(fd >= 0, "open /dev/liveupdate", fd < 0 ? -fd : 0);
	if (fd < 0)
		return 1;
	move_fd(fd, DEV_FD);
	for (int i = 0; i < NSLOTS; i++)
		check(!create_at(slot_name(i), SLOT_FD(i), OP_CREATE), "create a race session", 0);
	for (int i = 0; i < NMEM; i++) {
		fd = pattern_memfd(i);
		check(fd >= 0 && !move_fd(fd, MEM_FD(i)), "memfd_create", fd < 0 ? -fd : 0);
	}
	if (module) {
		int err = mod_load();

		check(!err, "load " MODULE_NAME, err);
		fd = lu_session(DEV_FD, "race-mod", 1);
		check(fd >= 0, "create session race-mod", fd < 0 ? -fd : 0);
		if (fd >= 0)
			move_fd(fd, MOD_SLOT_FD);
	}
	if (failures)
		return 1;

	fns[n++] = preserver;
	fns[n++] = preserver;
	fns[n++] = unpreserver;
	fns[n++] = namer;
	fns[n++] = session_cycler;
	fns[n++] = memfd_cycler;
	fns[n++] = dev_cycler;
	fns[n++] = dev_prober;
	if (module) {
		fns[n++] = module_cycler;
		fns[n++] = module_preserver;
	}
	t0 = now();
	run_threads(fns, n, t);
	sleep(seconds);
	atomic_store(&stop, 1);
	join_threads(t, n);
	printf("LU-RACE-STORM threads=%d seconds=%.1f\n", n, now() - t0);

	report_op(OP_PRESERVE, 1);
	report_op(OP_UNPRESERVE, rust);
	report_op(OP_GET_NAME, 1);
	report_op(OP_CREATE, 1);
	report_op(OP_DEV_REOPEN, 1);
	report_op(OP_DEV_PROBE, 0);
	check(!atomic_load(&bad_names), "GET_NAME always gave the slot's name", 0);
	if (module) {
		report_op(OP_MOD_LOAD, 1);
		report_op(OP_MOD_UNLOAD, 1);
		report_op(OP_MOD_OPEN, 1);
		report_op(OP_MOD_PRESERVE, 1);
		report_op(OP_MOD_PINNED, 0);
		report_op(OP_MOD_UNPRESERVE, 1);
	}
	storm_after(module);
	/* Stage 2 races on these whatever happened above. */
	handover();
	lu_hold();
	return failures != 0;
}

/* ---- stage 2: racing the retrieval of ho-N ---- */

static pthread_barrier_t barrier;
static atomic_int ho_fd[NHO];
static atomic_int ho_wins[NHO];
/* Inode of each token's file as the racers saw it; 0 = not yet. */
static atomic_ulong ho_ino[NHO][HO_TOKENS + 1];
static atomic_long ho_bad_bytes, ho_other_file, ho_after_finish;

static void *retriever(void *arg)
{
	int me = (long)arg;
	char name[16];

	for (int n = 0; n < NHO; n++) {
		int s, fd = -1, err;

		snprintf(name, sizeof(name), "ho-%d", n);
		pthread_barrier_wait(&barrier);
		s = lu_session(DEV_FD, name, 0);
		if (note(OP_RETRIEVE_SESSION, s < 0 ? -s : 0) == 0) {
			atomic_fetch_add(&ho_wins[n], 1);
			atomic_store(&ho_fd[n], s);
		}
		pthread_barrier_wait(&barrier);
		s = atomic_load(&ho_fd[n]);
		pthread_barrier_wait(&barrier);
		if (s < 0) {
			pthread_barrier_wait(&barrier);
			continue;
		}
		/* ho-2, ho-3: racer 0 finishes while the others retrieve. */
		if (n >= 2 && me == 0) {
			usleep(n == 2 ? 0 : 2000);
			note(OP_FINISH, finish(s));
		}
		for (int t = 1; t <= HO_TOKENS; t++) {
			unsigned long ino, zero = 0;
			struct stat st;

			err = note(OP_RETRIEVE_FD, retrieve_fd(s, t, &fd));
			if (err) {
				if (n < 2)
					atomic_fetch_add(&ho_after_finish, 1);
				continue;
			}
			if (!pattern_ok(fd, n * 100 + t))
				atomic_fetch_add(&ho_bad_bytes, 1);
			ino = fstat(fd, &st) ? 1 : st.st_ino;
			if (!atomic_compare_exchange_strong(&ho_ino[n][t], &zero, ino) &&
			    zero != ino)
				atomic_fetch_add(&ho_other_file, 1);
			close(fd);
		}
		pthread_barrier_wait(&barrier);
	}
	return NULL;
}

static int retrieve_stage(void)
{
	void *(*fns[NRACERS])(void *);
	pthread_t t[NRACERS];
	char name[16], what[128];
	int fd, err;

	ALLOW(OP_RETRIEVE_SESSION, 0, EINVAL);
	ALLOW(OP_RETRIEVE_FD, 0, ENOENT);
	ALLOW(OP_FINISH, 0);
	fd = open_dev();
	check(fd >= 0, "open /dev/liveupdate", fd < 0 ? -fd : 0);
	if (fd < 0)
		return 1;
	move_fd(fd, DEV_FD);
	pthread_barrier_init(&barrier, NULL, NRACERS);
	for (int n = 0; n < NHO; n++)
		atomic_store(&ho_fd[n], -1);
	for (int i = 0; i < NRACERS; i++)
		fns[i] = retriever;
	run_threads(fns, NRACERS, t);
	join_threads(t, NRACERS);

	report_op(OP_RETRIEVE_SESSION, 1);
	report_op(OP_RETRIEVE_FD, 1);
	report_op(OP_FINISH, 1);
	for (int n = 0; n < NHO; n++) {
		snprintf(what, sizeof(what),
			 "ho-%d: exactly one of %d racing RETRIEVE_SESSION succeeded (%d did)",
			 n, NRACERS, atomic_load(&ho_wins[n]));
		check(atomic_load(&ho_wins[n]) == 1, what, 0);
	}
	check(!atomic_load(&ho_after_finish),
	      "ho-0, ho-1 (no FINISH racing): every RETRIEVE_FD succeeded", 0);
	check(!atomic_load(&ho_other_file), "racing RETRIEVE_FD of a token give the same file", 0);
	check(!atomic_load(&ho_bad_bytes), "every retrieved memfd holds its token's bytes", 0);
	for (int n = 0; n < NHO; n++) {
		int s = atomic_load(&ho_fd[n]);

		if (s < 0)
			continue;
		if (n < 2) {
			err = finish(s);
			check(!err, "FINISH ho-0, ho-1 after the race", err);
		}
		err = retrieve_fd(s, 1, &fd);
		check(err == ENOENT, "RETRIEVE_FD after FINISH: ENOENT", err);
		err = finish(s);
		check(!err, "FINISH a finished session again: 0", err);
		close(s);
		snprintf(name, sizeof(name), "ho-%d", n);
		s = lu_session(DEV_FD, name, 0);
		check(s == -ENOENT, "RETRIEVE_SESSION of a finished, closed session: ENOENT",
		      s < 0 ? -s : 0);
	}
	close(DEV_FD);
	return failures != 0;
}

/* ---- stage 2: reboot(KEXEC) while others are mid-ioctl ---- */

static const char *churn_name(int i)
{
	return i ? "rb-c1" : "rb-c0";
}

/* The memfd of token t in churned session c: the same file every time. */
static int churn_mem[NCHURN][NTOKENS + 1];

static void *churner(void *arg)
{
	unsigned int seed = 900 + (long)arg;

	while (!atomic_load(&stop)) {
		int c = rnd(&seed, NCHURN), t = 1 + rnd(&seed, NTOKENS);

		if (rnd(&seed, 2))
			note(OP_CHURN_PRESERVE, lu_preserve(CHURN_FD(c), churn_mem[c][t], t));
		else
			note(OP_CHURN_UNPRESERVE, lu_unpreserve(CHURN_FD(c), t));
	}
	return NULL;
}

static void *churn_cycler(void *arg)
{
	unsigned int seed = 1000 + (long)arg;

	while (!atomic_load(&stop)) {
		int c = rnd(&seed, NCHURN);

		close(CHURN_FD(c));
		while (create_at(churn_name(c), CHURN_FD(c), OP_CHURN_CREATE) == EEXIST &&
		       !atomic_load(&stop))
			;
		usleep(rnd(&seed, 20000));
	}
	return NULL;
}

static int reboot_stage(void)
{
	void *(*fns[4])(void *) = { churner, churner, churn_cycler };
	pthread_t t[4];
	char name[16];
	int fd, err;

	ALLOW(OP_CHURN_PRESERVE, 0, EBADF, EEXIST, EBUSY);
	if (rust)
		ALLOW(OP_CHURN_UNPRESERVE, 0, EBADF, ENOENT);
	else
		ALLOW(OP_CHURN_UNPRESERVE, EBADF, EINVAL);
	ALLOW(OP_CHURN_CREATE, 0, EEXIST);
	fd = open_dev();
	check(fd >= 0, "open /dev/liveupdate", fd < 0 ? -fd : 0);
	if (fd < 0)
		return 1;
	move_fd(fd, DEV_FD);
	for (int n = 0; n < 2; n++) {
		int s;

		snprintf(name, sizeof(name), "rb-%d", n);
		s = lu_session(DEV_FD, name, 1);
		err = s < 0 ? -s : 0;
		for (int tk = 1; tk <= HO_TOKENS && !err; tk++) {
			int m = pattern_memfd(1000 + n * 100 + tk);

			err = m < 0 ? -m : lu_preserve(s, m, tk);
			if (m >= 0)
				close(m);
		}
		check(!err, "preserve session rb-N", err);
	}
	for (int c = 0; c < NCHURN; c++) {
		check(!create_at(churn_name(c), CHURN_FD(c), OP_CHURN_CREATE),
		      "create a churned session", 0);
		for (int tk = 1; tk <= NTOKENS; tk++)
			churn_mem[c][tk] = pattern_memfd(2000 + c * 100 + tk);
	}
	if (failures)
		return 1;
	run_threads(fns, 3, t);
	sleep(2);
	/* What the churn did so far: a kexec ends it mid-call. */
	report_op(OP_CHURN_PRESERVE, 1);
	report_op(OP_CHURN_UNPRESERVE, rust);
	report_op(OP_CHURN_CREATE, 1);
	printf("LU-RACE reboot: calling reboot(LINUX_REBOOT_CMD_KEXEC) mid-ioctl\n");
	fflush(stdout);
	err = reboot(LINUX_REBOOT_CMD_KEXEC) ? errno : 0;
	/* Only reached if the reboot failed: then it must fail cleanly. */
	atomic_store(&stop, 1);
	join_threads(t, 3);
	printf("LU-RACE reboot: reboot(LINUX_REBOOT_CMD_KEXEC) returned, errno %d\n", err);
	fd = lu_session(DEV_FD, "rb-after", 1);
	err = fd < 0 ? -fd : 0;
	if (!err) {
		int m = pattern_memfd(1);

		err = m < 0 ? -m : lu_preserve(fd, m, 1);
		close(fd);
	}
	check(!err, "after a failed reboot, sessions and PRESERVE_FD still work", err);
	if (failures)
		return 1;
	lu_hold();
	return 0;
}

/* ---- stage 3: what the reboot handed over ---- */

static int verify_stage(void)
{
	char name[16], what[128];
	int fd, err, carried = 0;

	fd = open_dev();
	check(fd >= 0, "open /dev/liveupdate", fd < 0 ? -fd : 0);
	if (fd < 0)
		return 1;
	move_fd(fd, DEV_FD);
	for (int n = 0; n < 2; n++) {
		int s, bad = 0;

		snprintf(name, sizeof(name), "rb-%d", n);
		s = lu_session(DEV_FD, name, 0);
		check(s >= 0, "retrieve session rb-N", s < 0 ? -s : 0);
		if (s < 0)
			continue;
		for (int tk = 1; tk <= HO_TOKENS; tk++) {
			err = retrieve_fd(s, tk, &fd);
			bad += err || !pattern_ok(fd, 1000 + n * 100 + tk);
			if (!err)
				close(fd);
		}
		check(!bad, "rb-N: every token retrieved with its bytes", 0);
		err = finish(s);
		check(!err, "FINISH rb-N", err);
		close(s);
	}
	for (int c = 0; c < NCHURN; c++) {
		int s = lu_session(DEV_FD, churn_name(c), 0), bad = 0, first = 0;

		check(s >= 0 || s == -ENOENT, "retrieve a churned session: 0 or ENOENT",
		      s < 0 ? -s : 0);
		if (s < 0)
			continue;
		for (int tk = 1; tk <= NTOKENS; tk++) {
			err = retrieve_fd(s, tk, &fd);
			if (err && err != ENOENT) {
				bad++;
				first = first ? first : err;
			} else if (!err) {
				carried++;
				bad += !pattern_ok(fd, 2000 + c * 100 + tk);
				close(fd);
			}
		}
		snprintf(what, sizeof(what),
			 "%s: every token came back with its own bytes or is ENOENT",
			 churn_name(c));
		check(!bad, what, first);
		err = finish(s);
		check(!err, "FINISH a churned session", err);
		close(s);
	}
	printf("LU-RACE-CARRIED churned_files=%d\n", carried);
	fd = lu_session(DEV_FD, "after", 1);
	check(fd >= 0, "a clean sequence works after the handover", fd < 0 ? -fd : 0);
	if (fd >= 0) {
		int m = pattern_memfd(1);

		err = m < 0 ? -m : lu_preserve(fd, m, 1);
		check(!err, "preserve a memfd after the handover", err);
		close(fd);
	}
	close(DEV_FD);
	return failures != 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3)
		goto usage;
	rust = !strcmp(argv[2], "rust");
	if (!strcmp(argv[1], "storm") && argc >= 4)
		return storm(atoi(argv[3]), argc > 4 && !strcmp(argv[4], "module"));
	if (!strcmp(argv[1], "retrieve"))
		return retrieve_stage();
	if (!strcmp(argv[1], "reboot"))
		return reboot_stage();
	if (!strcmp(argv[1], "verify"))
		return verify_stage();
usage:
	fprintf(stderr, "usage: lu-race storm|retrieve|reboot|verify c|rust [SECONDS [module]]\n");
	return 2;
}
