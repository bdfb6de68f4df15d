// SPDX-License-Identifier: GPL-2.0

/*
 * The iommufd file handler of the Live Update Orchestrator ("iommufd-ioas-v1")
 * across a kexec, with a real device doing DMA through the IO address spaces.
 *
 * Run as "luo_iommufd -s 1 --kernel=rust --prev=rust" before the kexec and as
 * "luo_iommufd -s 2 --kernel=K --prev=rust" after it: --kernel names the
 * flavor of the running kernel, --prev the flavor of the kernel that ran
 * stage 1. Only the rust flavor has the handler, so stage 1 always runs on
 * rust (chains rust>rust and rust>c). Stage 1 leaves its session open in a
 * detached holder process; stage 2 retrieves, checks and finishes it.
 * Output is KTAP, one test point per check, with the values seen on a "#"
 * line before each point; the exit status is non-zero if any check failed.
 *
 * The VM has an IOMMU (q35 with intel-iommu,caching-mode=on and
 * intel_iommu=on, or virt with iommu=smmuv3) and QEMU's edu device with
 * dma_mask=0xffffffffffffffff. The test binds edu to vfio-pci and drives it
 * through its VFIO cdev bound to the iommufd: an edu DMA copies at most 4 KiB
 * from an IOVA into the device's buffer (at device address 0x40000) or from
 * the buffer to an IOVA. dma_copy(src, dst) does both, so the device reads
 * and writes through the IOAS. Each copy is checked with pread() of the
 * memfd, and the copies are ordered so that the device's buffer never
 * already holds the data a copy is expected to bring (a DMA that silently
 * fails cannot pass).
 *
 * Objects (base = 0x100000000; the memfd "guest-ram" is 64 MiB; pattern A,
 * B, C: each 8-byte word a function of its file offset and a seed):
 *
 *  guest-ram      memfd, token 1. Pattern A in [0, 4 MiB) and [32, 34 MiB),
 *                 the rest a hole.
 *  iommufd        token 2. IOASes allocated as 1, 2 and 3, then 1 destroyed.
 *   IOAS 2        ALLOW_IOVAS [base, 0x1ffffffff]; MAP_FILE of the whole
 *                 memfd at base (read/write); after PRESERVE_FD also 1 MiB of
 *                 the memfd at offset 16 MiB mapped at base + 0x10000000.
 *   IOAS 3        no allowed ranges; MAP_FILE of memfd [0, 1 MiB) at 0x200000,
 *                 read-only. After PRESERVE_FD 64 KiB more are mapped at
 *                 0x400000 and unmapped again.
 *
 * Attaching a device pins every page of the IOAS's areas, and pinning a
 * memfd page allocates it. To keep a real hole in the memfd, the stage 1 DMA
 * runs while IOAS 2 maps only [0, 16 MiB) of it; that mapping is then
 * replaced by the one of the whole memfd. So the memfd has data in
 * [0, 16 MiB) and [32, 34 MiB): st_blocks * 512 = 18 MiB from then on, until
 * a device attaches in stage 2.
 *
 * Stage 1 (rust), session "iommufd":
 *  - memfd filled: st_blocks * 512 = 6 MiB, data extents (SEEK_DATA and
 *    SEEK_HOLE) [0, 4 MiB) and [32, 34 MiB).
 *  - IOAS IDs 1, 2, 3; IOMMU_DESTROY of 1; ALLOW_IOVAS and MAP_FILE work;
 *    a 64 KiB MAP_FILE at a kernel-picked IOVA in IOAS 2 lands inside
 *    [base, 0x1ffffffff] (IOVA_RANGES reports what devices do not reserve,
 *    not the allowed ranges; the allocator honours them).
 *  - edu bound, attached to IOAS 2, its ID register 0x010000ed;
 *    dma_copy(base, base + 8 MiB, 4 KiB) puts pattern A of offset 0 at
 *    8 MiB. st_blocks * 512 = 18 MiB, extents [0, 16 MiB) [32, 34 MiB).
 *  - PRESERVE_FD of the iommufd before the memfd is preserved: ENOENT;
 *    PRESERVE_FD of the memfd, then of the iommufd (same token): 0.
 *  - after PRESERVE_FD: the late MAP_FILE into IOAS 2 and the map+unmap in
 *    IOAS 3 work (UNMAP returns 64 KiB); st_blocks * 512 still 18 MiB.
 * Refusals at PRESERVE_FD, in session "iommufd-refuse", each on a throwaway
 * iommufd with one IOAS (exact errno); each time the same iommufd is then
 * preserved under the same token once the cause is removed (so the refusal
 * left nothing behind) and unpreserved again:
 *  - EXDEV: an IOMMU_IOAS_MAP of 64 KiB of anonymous memory.
 *  - ENOENT: a MAP_FILE of a memfd preserved nowhere; fixed by preserving
 *    that memfd in the session first.
 *  - EBUSY: UNPRESERVE_FD of that memfd while the iommufd mapping it is
 *    preserved; UNPRESERVE_FD of the iommufd, then of the memfd: 0, 0.
 *  - EOPNOTSUPP: a fault queue (IOMMU_FAULT_QUEUE_ALLOC); fixed by closing
 *    its fd and IOMMU_DESTROY.
 *  - allowed: edu bound to the iommufd and attached to its IOAS (a device
 *    object and an automatic HWPT): PRESERVE_FD 0, UNPRESERVE_FD 0.
 *  - EOPNOTSUPP: a user-allocated HWPT (IOMMU_HWPT_ALLOC on the IOAS for
 *    edu) besides that; fixed by IOMMU_DESTROY of the HWPT.
 *  - ENOENT: a MAP_FILE of guest-ram, which is preserved in session
 *    "iommufd" but not in this one (done after guest-ram is preserved).
 *  The refuse session is empty and closed before the kexec.
 *
 * Stage 2 (--kernel=rust):
 *  - RETRIEVE_FD of token 2 (the iommufd) first, then of token 1 (the
 *    memfd); both FD_CLOEXEC.
 *  - memfd: size 64 MiB; st_blocks * 512 = 18 MiB and extents [0, 16 MiB)
 *    [32, 34 MiB) (nothing was pinned by the retrieve); pattern A in
 *    [0, 4 MiB) and [32, 34 MiB), pattern A of offset 0 at [8 MiB, +4 KiB)
 *    (stage 1's DMA), zeros everywhere else; st_blocks unchanged by reading.
 *  - allowed ranges: a kernel-picked IOVA in IOAS 2 inside [base,
 *    0x1ffffffff], in IOAS 3 (none allowed) below base. IDs 1 and 4:
 *    ENOENT. A new IOAS gets ID 1 (the lowest free ID).
 *  - pwrite() pattern B at 40 MiB and pattern C at 16 MiB (4 KiB each);
 *    edu attached to IOAS 2: st_blocks * 512 = 64 MiB (the pinned areas are
 *    the retrieved memfd's pages).
 *  - dma_copy(base + 40 MiB, base + 48 MiB): B at 48 MiB;
 *    dma_copy(base + 8 MiB, base + 56 MiB): stage 1's A at 56 MiB;
 *    dma_copy(base + 0x10000000, base + 12 MiB): C at 12 MiB (the area
 *    mapped after PRESERVE_FD).
 *  - read-only area of IOAS 3: with edu attached to IOAS 3, a DMA write of
 *    B to 0x200000 does not reach the memfd (offset 0 still holds A); a DMA
 *    read of 0x200000, written back through IOAS 2 to base + 60 MiB, gives A.
 *    The blocked write is logged by the kernel as an IOMMU fault (a DMAR
 *    fault or an SMMU event): expected.
 *  - device closed; MAP_FILE at base in IOAS 2: EEXIST; MAP_FILE of 64 KiB
 *    at 0x400000 in IOAS 3: 0 (the area unmapped after PRESERVE_FD is
 *    absent), its UNMAP 64 KiB.
 *  - IOMMU_IOAS_UNMAP of everything (iova 0, length UINT64_MAX): 65 MiB in
 *    IOAS 2, 1 MiB in IOAS 3.
 *  - LIVEUPDATE_SESSION_FINISH: 0, which finishes the second iommufd (token
 *    3, preserved in stage 1 mapping 1 MiB of guest-ram, never retrieved)
 *    without a new message of the handler ("iommufd_luo: ...", which a
 *    handover it cannot restore and free would print) in the kernel log.
 *
 * Stage 2 (--kernel=c, a rust>c chain): upstream's C LUO has no handler for
 * "iommufd-ioas-v1", cannot deserialize the session and refuses the whole
 * incoming state: opening /dev/liveupdate fails with EIO. That is the one
 * check.
 */

#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <libliveupdate.h>
#include <linux/iommufd.h>
#include <linux/pci_regs.h>
#include <linux/types.h>
#include <linux/vfio.h>

#ifndef LIVEUPDATE_SESSION_UNPRESERVE_FD
/*
 * Not in Linux 7.3's header, which this test may be built against: the
 * layout of this tree's include/uapi/linux/liveupdate.h.
 */
struct liveupdate_session_unpreserve_fd {
	__u32		size;
	__u32		reserved;
	__aligned_u64	token;
};

#define LIVEUPDATE_SESSION_UNPRESERVE_FD _IO(LIVEUPDATE_IOCTL_TYPE, 0x44)
#endif

#define STAGE1_TESTS 47
#define STAGE2_TESTS 31
#define STAGE2_C_TESTS 1

#define SESSION_MAIN "iommufd"
#define SESSION_REFUSE "iommufd-refuse"

enum token {
	TOKEN_MEMFD = 1,
	TOKEN_IOMMUFD = 2,
	/* A second iommufd mapping guest-ram, never retrieved. */
	TOKEN_UNRETRIEVED = 3,
	/* Session "iommufd-refuse". */
	TOKEN_EXDEV = 10,
	TOKEN_STRAY_MEMFD,
	TOKEN_ENOENT,
	TOKEN_FAULT,
	TOKEN_DEVICE,
	TOKEN_OTHER_SESSION,
};

#define KIB 1024ULL
#define MIB (1024 * KIB)

/* The memfd and where it has data. */
#define RAM_SIZE (64 * MIB)
#define RUN0_OFF 0ULL
#define RUN0_LEN (4 * MIB)
#define RUN1_OFF (32 * MIB)
#define RUN1_LEN (2 * MIB)
/* What IOAS 2 maps while the device DMAs in stage 1; pinned, so populated. */
#define TEMP_LEN (16 * MIB)

/* IOAS IDs in a fresh iommufd: a, b (main) and c (read-only). */
#define ID_A 1
#define ID_B 2
#define ID_C 3
/* The automatic HWPT of stage 1's attach took this ID; it is gone. */
#define ID_GONE 4

#define IOVA_BASE 0x100000000ULL
#define IOVA_LAST 0x1ffffffffULL
/* Mapped in IOAS 2 after PRESERVE_FD: memfd [16 MiB, 17 MiB). */
#define LATE_IOVA (IOVA_BASE + 0x10000000ULL)
#define LATE_OFF (16 * MIB)
#define LATE_LEN MIB
/* IOAS 3: memfd [0, 1 MiB), read-only. */
#define C_IOVA 0x200000ULL
#define C_LEN MIB
/* Mapped in IOAS 3 after PRESERVE_FD and unmapped again. */
#define C_EXTRA_IOVA 0x400000ULL
#define C_EXTRA_OFF MIB
#define C_EXTRA_LEN (64 * KIB)

/* DMA copies: memfd offsets (IOVA = base + offset in IOAS 2). */
#define DMA_LEN 4096ULL
#define DMA1_DST (8 * MIB)	/* stage 1: from offset 0 */
#define B_OFF (40 * MIB)	/* stage 2: pattern B written here ... */
#define B_DST (48 * MIB)	/* ... and copied here */
#define A_DST (56 * MIB)	/* stage 1's copy at 8 MiB copied here */
#define C_DST (12 * MIB)	/* the late area's first 4 KiB copied here */
#define RO_DST (60 * MIB)	/* read through IOAS 3, written here */

#define REFUSE_IOVA 0x100000ULL
#define REFUSE_LEN (64 * KIB)
#define STRAY_SIZE MIB

#define SEED_A 0x5eed0a01d1ce0a01ULL
#define SEED_B 0x5eed0b02d1ce0b02ULL
#define SEED_C 0x5eed0c03d1ce0c03ULL

/* QEMU's edu device (hw/misc/edu.c). */
#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_REG_ID 0x00
#define EDU_ID 0x010000edU
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_CNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1ULL
#define EDU_DMA_TO_RAM 0x2ULL
#define EDU_BUF 0x40000ULL
#define EDU_TIMEOUT 10.0

#define IO_CHUNK MIB
#define MAX_RANGES 8
/* The mapping that probes where the kernel picks IOVAs (auto_iova_in()). */
#define PROBE_LEN 0x10000ULL
#define MAX_EXTENTS 8

struct extent {
	__u64 start;
	__u64 end;
};

/* The edu device, bound to vfio-pci, and its cdev when open. */
struct edu {
	char bdf[64];
	char cdev[128];
	bool found;
	int fd;
	__u32 devid;
	void *bar;		/* BAR0 mapped, or NULL: pread()/pwrite() */
	__u64 bar_off;
	__u64 bar_size;
	__u64 cfg_off;
};

static bool kernel_rust, prev_rust;
static __u64 *iobuf;
static struct edu edu = { .fd = -1 };

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "success" for 0 (or more), the errno's name for -errno. */
static const char *errname(long long ret)
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
	char detail[768];
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
	if (got < 0)
		result(false, name, "%s: %s, expected %lld", what,
		       errname(got), want);
	else
		result(got == want, name, "%s %lld, expected %lld", what, got,
		       want);
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

/*
 * An expected error of a call that needs something set up first: a failed
 * setup (setup < 0) fails the check instead of passing it by chance.
 */
static void expect_refused(const char *name, const char *what,
			   long long setup, long long ret, int err)
{
	if (setup < 0)
		result(false, name, "%s not tried: setup failed (%s)", what,
		       errname(setup));
	else
		expect_err(name, what, ret, err);
}

/* A syscall's return value as itself or -errno. */
static long long ret_errno(long long ret)
{
	return ret < 0 ? -errno : ret;
}

/* The first error of two results (or the first if both failed). */
static long long first_err(long long a, long long b)
{
	return a < 0 ? a : b;
}

/* The word at byte offset off of a run filled with seed. */
static inline __u64 pattern(__u64 off, __u64 seed)
{
	__u64 x = (off + seed) * 0x9e3779b97f4a7c15ULL;

	return x ^ (x >> 29);
}

/* Write the pattern of seed for offset off to [off, off + len); 0 or -errno. */
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

/*
 * Words of [off, off + len) of the file that are not the pattern of seed
 * for offset src onwards (zeros if seed is 0). A failed read counts every
 * word it should have read.
 */
static __u64 bad_words(int fd, __u64 off, __u64 len, __u64 seed, __u64 src)
{
	__u64 bad = 0;

	while (len) {
		size_t n = len < IO_CHUNK ? len : IO_CHUNK;
		size_t i;

		if (fd < 0 || pread(fd, iobuf, n, off) != (ssize_t)n)
			return bad + len / 8;
		for (i = 0; i < n / 8; i++)
			if (iobuf[i] != (seed ? pattern(src + i * 8, seed) : 0))
				bad++;
		off += n;
		src += n;
		len -= n;
	}
	return bad;
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

/* The data extents of a file, by SEEK_DATA and SEEK_HOLE; count or -errno. */
static int data_extents(int fd, struct extent *ext, int max)
{
	off_t off = 0, data, hole;
	int n = 0;

	for (;;) {
		data = lseek(fd, off, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? n : -errno;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		if (n == max)
			return -E2BIG;
		ext[n].start = data;
		ext[n].end = hole;
		n++;
		off = hole;
	}
}

static void format_extents(char *buf, size_t size, const struct extent *ext,
			   int n)
{
	size_t len = 0;
	int i;

	buf[0] = 0;
	for (i = 0; i < n && len < size; i++)
		len += snprintf(buf + len, size - len, "%s[%#llx, %#llx)",
				i ? " " : "", (unsigned long long)ext[i].start,
				(unsigned long long)ext[i].end);
	if (!n)
		snprintf(buf, size, "none");
}

/*
 * Two points: "<prefix>_blocks", st_blocks * 512 of the memfd, and
 * "<prefix>_extents", its data extents.
 */
static void check_sparse(const char *prefix, int fd, long long want_bytes,
			 const struct extent *want, int nwant)
{
	char name[64], got_s[256], want_s[256];
	struct extent ext[MAX_EXTENTS];
	int n;

	snprintf(name, sizeof(name), "%s_blocks", prefix);
	expect_val(name, "st_blocks * 512", fd < 0 ? fd : file_bytes(fd),
		   want_bytes);

	snprintf(name, sizeof(name), "%s_extents", prefix);
	n = fd < 0 ? fd : data_extents(fd, ext, MAX_EXTENTS);
	format_extents(want_s, sizeof(want_s), want, nwant);
	if (n < 0) {
		result(false, name, "SEEK_DATA/SEEK_HOLE: %s, expected %s",
		       errname(n), want_s);
		return;
	}
	format_extents(got_s, sizeof(got_s), ext, n);
	result(n == nwant && !memcmp(ext, want, n * sizeof(*ext)), name,
	       "data extents %s, expected %s", got_s, want_s);
}

/* The memfd's extents after stage 1's fill, and from the DMA on. */
static const struct extent extents_filled[] = {
	{ RUN0_OFF, RUN0_OFF + RUN0_LEN },
	{ RUN1_OFF, RUN1_OFF + RUN1_LEN },
};

static const struct extent extents_pinned[] = {
	{ 0, TEMP_LEN },
	{ RUN1_OFF, RUN1_OFF + RUN1_LEN },
};

static const struct extent extents_full[] = {
	{ 0, RAM_SIZE },
};

#define FILLED_BYTES (RUN0_LEN + RUN1_LEN)
#define PINNED_BYTES (TEMP_LEN + RUN1_LEN)

/* sysfs and device nodes */

/* Copy a string, truncated to size - 1 bytes. */
static void copy_str(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = 0;
}

/* The first line of a sysfs file; 0 or -errno. */
static int read_line(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

static int write_str(const char *path, const char *val)
{
	ssize_t n;
	int fd;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	close(fd);
	if (n < 0)
		return -errno;
	return n == (ssize_t)strlen(val) ? 0 : -EIO;
}

/*
 * Open a character device; if its node is missing (no devtmpfs), create
 * one in /tmp from the "major:minor" in the sysfs file sysdev.
 */
static int open_chardev(const char *path, const char *sysdev,
			const char *fallback)
{
	unsigned int major, minor;
	char buf[32];
	int fd, ret;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT)
		return fd < 0 ? -errno : fd;
	ret = read_line(sysdev, buf, sizeof(buf));
	if (ret)
		return ret;
	if (sscanf(buf, "%u:%u", &major, &minor) != 2)
		return -EINVAL;
	if (mknod(fallback, S_IFCHR | 0600, makedev(major, minor)) &&
	    errno != EEXIST)
		return -errno;
	fd = open(fallback, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int open_iommufd(void)
{
	return open_chardev("/dev/iommu", "/sys/class/misc/iommu/dev",
			    "/tmp/luo_iommufd-iommu");
}

/* iommufd ioctls; each returns 0 (or an ID, a length) or -errno. */

static int ioctl_errno(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? -errno : 0;
}

static int ioas_alloc(int fd)
{
	struct iommu_ioas_alloc cmd = { .size = sizeof(cmd) };
	int ret = ioctl_errno(fd, IOMMU_IOAS_ALLOC, &cmd);

	return ret ? ret : (int)cmd.out_ioas_id;
}

static int destroy(int fd, __u32 id)
{
	struct iommu_destroy cmd = { .size = sizeof(cmd), .id = id };

	return ioctl_errno(fd, IOMMU_DESTROY, &cmd);
}

static int allow_iovas(int fd, __u32 id, __u64 start, __u64 last)
{
	struct iommu_iova_range range = { .start = start, .last = last };
	struct iommu_ioas_allow_iovas cmd = {
		.size = sizeof(cmd),
		.ioas_id = id,
		.num_iovas = 1,
		.allowed_iovas = (uintptr_t)&range,
	};

	return ioctl_errno(fd, IOMMU_IOAS_ALLOW_IOVAS, &cmd);
}

/* The allowed IOVA ranges of an IOAS: their number, or -errno. */
static int iova_ranges(int fd, __u32 id, struct iommu_iova_range *ranges)
{
	struct iommu_ioas_iova_ranges cmd = {
		.size = sizeof(cmd),
		.ioas_id = id,
		.num_iovas = MAX_RANGES,
		.allowed_iovas = (uintptr_t)ranges,
	};
	int ret;

	memset(ranges, 0, MAX_RANGES * sizeof(*ranges));
	ret = ioctl_errno(fd, IOMMU_IOAS_IOVA_RANGES, &cmd);
	return ret ? ret : (int)cmd.num_iovas;
}

#define MAP_RW (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)
#define MAP_RO IOMMU_IOAS_MAP_READABLE

static int map_file(int fd, __u32 id, int memfd, __u64 start, __u64 len,
		    __u64 iova, __u32 prot)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | prot,
		.ioas_id = id,
		.fd = memfd,
		.start = start,
		.length = len,
		.iova = iova,
	};

	return ioctl_errno(fd, IOMMU_IOAS_MAP_FILE, &cmd);
}

/* MAP_FILE at an IOVA the kernel picks (in the allowed ranges, if any). */
static int map_file_auto(int fd, __u32 id, int memfd, __u64 len, __u64 *iova)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = MAP_RW,
		.ioas_id = id,
		.fd = memfd,
		.length = len,
	};
	int ret = ioctl_errno(fd, IOMMU_IOAS_MAP_FILE, &cmd);

	*iova = ret ? 0 : cmd.iova;
	return ret;
}

static int map_user(int fd, __u32 id, void *va, __u64 len, __u64 iova)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | MAP_RW,
		.ioas_id = id,
		.user_va = (uintptr_t)va,
		.length = len,
		.iova = iova,
	};

	return ioctl_errno(fd, IOMMU_IOAS_MAP, &cmd);
}

/* The number of bytes unmapped, or -errno. iova 0, len UINT64_MAX: all. */
static long long unmap(int fd, __u32 id, __u64 iova, __u64 len)
{
	struct iommu_ioas_unmap cmd = {
		.size = sizeof(cmd),
		.ioas_id = id,
		.iova = iova,
		.length = len,
	};
	int ret = ioctl_errno(fd, IOMMU_IOAS_UNMAP, &cmd);

	return ret ? ret : (long long)cmd.length;
}

/*
 * The allowed ranges of an IOAS are seen where the kernel puts a mapping
 * whose IOVA it picks: inside them, or from PAGE_SIZE up without any (the
 * IOVA_RANGES ioctl reports what no device reserves, not the allowed ranges).
 * A 64 KiB mapping of the memfd is made and unmapped again; returns whether
 * its IOVA was inside [IOVA_BASE, IOVA_LAST] (@inside) or below IOVA_BASE.
 */
static bool auto_iova_in(int fd, __u32 id, int memfd, bool inside, char *buf,
			 size_t size)
{
	long long un;
	__u64 iova = 0;
	int ret;

	ret = fd < 0 ? fd : map_file_auto(fd, id, memfd, PROBE_LEN, &iova);
	un = ret ? ret : unmap(fd, id, iova, PROBE_LEN);
	snprintf(buf, size,
		 "kernel-picked IOVA of a 64 KiB MAP_FILE in IOAS %u: %s, %#llx, UNMAP %lld",
		 id, errname(ret), (unsigned long long)iova, un);
	if (ret || un != PROBE_LEN)
		return false;
	if (inside)
		return iova >= IOVA_BASE && iova + PROBE_LEN - 1 <= IOVA_LAST;
	return iova + PROBE_LEN <= IOVA_BASE;
}

static int fault_alloc(int fd, __u32 *id, int *fault_fd)
{
	struct iommu_fault_alloc cmd = { .size = sizeof(cmd) };
	int ret = ioctl_errno(fd, IOMMU_FAULT_QUEUE_ALLOC, &cmd);

	if (!ret) {
		*id = cmd.out_fault_id;
		*fault_fd = cmd.out_fault_fd;
	}
	return ret;
}

/* A kernel-managed HWPT allocated by userspace: its ID, or -errno. */
static int hwpt_alloc(int fd, __u32 dev_id, __u32 pt_id)
{
	struct iommu_hwpt_alloc cmd = {
		.size = sizeof(cmd),
		.dev_id = dev_id,
		.pt_id = pt_id,
		.data_type = IOMMU_HWPT_DATA_NONE,
	};
	int ret = ioctl_errno(fd, IOMMU_HWPT_ALLOC, &cmd);

	return ret ? ret : (int)cmd.out_hwpt_id;
}

/* Sessions */

static int preserve(int session, int fd, __u64 token)
{
	if (session < 0)
		return session;
	if (fd < 0)
		return fd;
	return luo_session_preserve_fd(session, fd, token);
}

static int unpreserve(int session, __u64 token)
{
	struct liveupdate_session_unpreserve_fd arg = {
		.size = sizeof(arg),
		.token = token,
	};

	if (session < 0)
		return session;
	return ioctl_errno(session, LIVEUPDATE_SESSION_UNPRESERVE_FD, &arg);
}

static int retrieve(int session, __u64 token)
{
	if (session < 0)
		return session;
	return luo_session_retrieve_fd(session, token);
}

/* The edu device through VFIO */

/* Find edu under /sys/bus/pci/devices; 0 or -errno. */
static int edu_find(struct edu *e)
{
	const char *dir_path = "/sys/bus/pci/devices";
	char path[PATH_MAX], val[32];
	struct dirent *de;
	DIR *dir;
	int ret = -ENODEV;

	dir = opendir(dir_path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/vendor", dir_path,
			 de->d_name);
		if (read_line(path, val, sizeof(val)) ||
		    strtoul(val, NULL, 0) != EDU_VENDOR)
			continue;
		snprintf(path, sizeof(path), "%s/%s/device", dir_path,
			 de->d_name);
		if (read_line(path, val, sizeof(val)) ||
		    strtoul(val, NULL, 0) != EDU_DEVICE)
			continue;
		copy_str(e->bdf, sizeof(e->bdf), de->d_name);
		ret = 0;
		break;
	}
	closedir(dir);
	return ret;
}

/* The name of the driver bound to the device, "" if none. */
static void edu_driver(const struct edu *e, char *buf, size_t size)
{
	char path[256], link[256];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", e->bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		buf[0] = 0;
		return;
	}
	link[n] = 0;
	base = strrchr(link, '/');
	copy_str(buf, size, base ? base + 1 : link);
}

/*
 * Bind edu to vfio-pci and find its VFIO cdev (creating the node if there
 * is no devtmpfs); 0 or -errno, and what failed in why.
 */
static int edu_bind_vfio(struct edu *e, char *why, size_t size)
{
	char path[256], drv[64], name[64] = "";
	struct dirent *de;
	DIR *dir;
	int ret, fd;

	ret = edu_find(e);
	if (ret) {
		snprintf(why, size, "no PCI device %04x:%04x", EDU_VENDOR,
			 EDU_DEVICE);
		return ret;
	}
	edu_driver(e, drv, sizeof(drv));
	if (strcmp(drv, "vfio-pci")) {
		if (drv[0]) {
			snprintf(path, sizeof(path),
				 "/sys/bus/pci/devices/%s/driver/unbind",
				 e->bdf);
			ret = write_str(path, e->bdf);
			if (ret) {
				snprintf(why, size, "unbind from %s", drv);
				return ret;
			}
		}
		snprintf(path, sizeof(path),
			 "/sys/bus/pci/devices/%s/driver_override", e->bdf);
		ret = write_str(path, "vfio-pci");
		if (ret) {
			snprintf(why, size, "driver_override");
			return ret;
		}
		/* Its result is checked through the driver link below. */
		ret = write_str("/sys/bus/pci/drivers_probe", e->bdf);
		edu_driver(e, drv, sizeof(drv));
		if (strcmp(drv, "vfio-pci")) {
			snprintf(why, size, "drivers_probe (%s): driver '%s'",
				 errname(ret), drv);
			return ret ? ret : -ENODEV;
		}
	}

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev",
		 e->bdf);
	dir = opendir(path);
	if (!dir) {
		snprintf(why, size, "no %s", path);
		return -errno;
	}
	while ((de = readdir(dir))) {
		if (!strncmp(de->d_name, "vfio", 4)) {
			copy_str(name, sizeof(name), de->d_name);
			break;
		}
	}
	closedir(dir);
	if (!name[0]) {
		snprintf(why, size, "no vfio cdev in %s", path);
		return -ENODEV;
	}

	snprintf(e->cdev, sizeof(e->cdev), "/dev/vfio/devices/%s", name);
	if (access(e->cdev, F_OK)) {
		char sysdev[512];

		snprintf(sysdev, sizeof(sysdev), "%s/%s/dev", path, name);
		snprintf(e->cdev, sizeof(e->cdev), "/tmp/luo_iommufd-%s", name);
		fd = open_chardev(e->cdev, sysdev, e->cdev);
		if (fd < 0) {
			snprintf(why, size, "no node for %s", name);
			return fd;
		}
		close(fd);
	}
	e->found = true;
	snprintf(why, size, "%s bound to vfio-pci, cdev %s", e->bdf, e->cdev);
	return 0;
}

/*
 * MMIO from userspace: volatile accesses of the access size the device
 * takes, never split or merged by the compiler (there is no readl() here).
 */
static __u32 edu_read32(struct edu *e, __u32 reg)
{
	__u32 val = ~0U;

	if (e->bar)
		return *(volatile __u32 *)((char *)e->bar + reg);
	if (pread(e->fd, &val, 4, e->bar_off + reg) != 4)
		return ~0U;
	return val;
}

/* The registers from 0x80 on take 8-byte accesses: full 64-bit addresses. */
static __u64 edu_read64(struct edu *e, __u32 reg)
{
	__u64 val = ~0ULL;

	if (e->bar)
		return *(volatile __u64 *)((char *)e->bar + reg);
	if (pread(e->fd, &val, 8, e->bar_off + reg) != 8)
		return ~0ULL;
	return val;
}

static void edu_write64(struct edu *e, __u32 reg, __u64 val)
{
	if (e->bar) {
		*(volatile __u64 *)((char *)e->bar + reg) = val;
		return;
	}
	/* A failed write shows when the registers are read back. */
	if (pwrite(e->fd, &val, 8, e->bar_off + reg) != 8)
		ksft_print_msg("edu: pwrite of register %#x failed\n", reg);
}

static int region_info(int fd, __u32 index, struct vfio_region_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	info->index = index;
	return ioctl_errno(fd, VFIO_DEVICE_GET_REGION_INFO, info);
}

static void edu_close(struct edu *e)
{
	/* The mapping holds the device file: unmap first, then close. */
	if (e->bar)
		munmap(e->bar, e->bar_size);
	e->bar = NULL;
	if (e->fd >= 0)
		close(e->fd);
	e->fd = -1;
}

static int edu_attach(struct edu *e, __u32 pt_id)
{
	struct vfio_device_attach_iommufd_pt attach = {
		.argsz = sizeof(attach),
		.pt_id = pt_id,
	};

	return ioctl_errno(e->fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach);
}

static int edu_detach(struct edu *e)
{
	struct vfio_device_detach_iommufd_pt detach = {
		.argsz = sizeof(detach),
	};

	return ioctl_errno(e->fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach);
}

/* Attach the device to another IOAS: detach, then attach. */
static int edu_move(struct edu *e, __u32 pt_id)
{
	int ret = e->fd < 0 ? -EBADF : edu_detach(e);

	return ret ? ret : edu_attach(e, pt_id);
}

/*
 * Open the cdev, bind it to the iommufd, attach it to pt_id, enable memory
 * space and bus mastering, map BAR0 and check the ID register; 0 or -errno,
 * and the failed step in why.
 */
static int edu_open(struct edu *e, int iommufd, __u32 pt_id, char *why,
		    size_t size)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_region_info info;
	const char *step;
	__u16 cmd;
	__u32 id;
	void *map;
	int ret;

	e->fd = -1;
	e->bar = NULL;
	step = "edu not bound to vfio-pci";
	ret = -ENODEV;
	if (!e->found || iommufd < 0)
		goto fail;

	step = "open cdev";
	e->fd = open(e->cdev, O_RDWR | O_CLOEXEC);
	ret = e->fd < 0 ? -errno : 0;
	if (ret)
		goto fail;

	step = "VFIO_DEVICE_BIND_IOMMUFD";
	bind.iommufd = iommufd;
	ret = ioctl_errno(e->fd, VFIO_DEVICE_BIND_IOMMUFD, &bind);
	if (ret)
		goto fail;
	e->devid = bind.out_devid;

	step = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
	ret = edu_attach(e, pt_id);
	if (ret)
		goto fail;

	step = "config region";
	ret = region_info(e->fd, VFIO_PCI_CONFIG_REGION_INDEX, &info);
	if (ret)
		goto fail;
	e->cfg_off = info.offset;
	step = "PCI_COMMAND";
	errno = 0;
	if (pread(e->fd, &cmd, 2, e->cfg_off + PCI_COMMAND) != 2) {
		ret = errno ? -errno : -EIO;
		goto fail;
	}
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
	       PCI_COMMAND_INTX_DISABLE;
	if (pwrite(e->fd, &cmd, 2, e->cfg_off + PCI_COMMAND) != 2 ||
	    pread(e->fd, &cmd, 2, e->cfg_off + PCI_COMMAND) != 2) {
		ret = errno ? -errno : -EIO;
		goto fail;
	}
	ret = -EIO;
	if ((cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) !=
	    (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))
		goto fail;

	step = "BAR0 region";
	ret = region_info(e->fd, VFIO_PCI_BAR0_REGION_INDEX, &info);
	if (ret)
		goto fail;
	ret = -ENODEV;
	if (info.size < 0x100)
		goto fail;
	e->bar_off = info.offset;
	e->bar_size = info.size;
	if (info.flags & VFIO_REGION_INFO_FLAG_MMAP) {
		step = "mmap of BAR0";
		map = mmap(NULL, info.size, PROT_READ | PROT_WRITE, MAP_SHARED,
			   e->fd, info.offset);
		ret = map == MAP_FAILED ? -errno : 0;
		if (ret)
			goto fail;
		e->bar = map;
	}

	step = "ID register";
	id = edu_read32(e, EDU_REG_ID);
	ret = id == EDU_ID ? 0 : -ENODEV;
	snprintf(why, size,
		 "%s bound (dev ID %u), attached to %u; ID register %#x, expected %#x; BAR0 %s",
		 e->bdf, e->devid, pt_id, id, EDU_ID,
		 e->bar ? "mapped" : "through pread/pwrite");
	if (ret)
		edu_close(e);
	return ret;
fail:
	snprintf(why, size, "%s: %s", step, errname(ret));
	edu_close(e);
	return ret;
}

static int edu_wait_idle(struct edu *e)
{
	double t0 = now();

	while (edu_read64(e, EDU_REG_DMA_CMD) & EDU_DMA_RUN) {
		if (now() - t0 > EDU_TIMEOUT)
			return -ETIMEDOUT;
		usleep(1000);
	}
	return 0;
}

/*
 * One DMA of len bytes between iova and the device's buffer: to_ram from the
 * buffer to iova, else from iova to the buffer. 0 when the device is done
 * (it reports no error for a faulting DMA), or -errno.
 */
static int edu_dma(struct edu *e, bool to_ram, __u64 iova, __u64 len)
{
	__u64 src = to_ram ? EDU_BUF : iova;
	__u64 dst = to_ram ? iova : EDU_BUF;
	int ret;

	if (e->fd < 0)
		return -EBADF;
	ret = edu_wait_idle(e);
	if (ret)
		return ret;
	__sync_synchronize();
	edu_write64(e, EDU_REG_DMA_SRC, src);
	edu_write64(e, EDU_REG_DMA_DST, dst);
	edu_write64(e, EDU_REG_DMA_CNT, len);
	if (edu_read64(e, EDU_REG_DMA_SRC) != src ||
	    edu_read64(e, EDU_REG_DMA_DST) != dst ||
	    edu_read64(e, EDU_REG_DMA_CNT) != len) {
		ksft_print_msg("edu: DMA registers %#llx %#llx %#llx, wrote %#llx %#llx %#llx\n",
			       (unsigned long long)edu_read64(e, EDU_REG_DMA_SRC),
			       (unsigned long long)edu_read64(e, EDU_REG_DMA_DST),
			       (unsigned long long)edu_read64(e, EDU_REG_DMA_CNT),
			       (unsigned long long)src, (unsigned long long)dst,
			       (unsigned long long)len);
		return -EIO;
	}
	edu_write64(e, EDU_REG_DMA_CMD,
		    EDU_DMA_RUN | (to_ram ? EDU_DMA_TO_RAM : 0));
	ret = edu_wait_idle(e);
	__sync_synchronize();
	return ret;
}

/* The device reads len bytes at src into its buffer and writes them to dst. */
static int dma_copy(struct edu *e, __u64 src, __u64 dst, __u64 len)
{
	int ret = edu_dma(e, false, src, len);

	return ret ? ret : edu_dma(e, true, dst, len);
}

/*
 * One point: a DMA copy through IOAS 2 from memfd offset src to dst, and dst
 * then holding the pattern of seed for offset pat.
 */
static void check_copy(const char *name, int memfd, __u64 src, __u64 dst,
		       __u64 seed, __u64 pat, const char *what)
{
	int ret = dma_copy(&edu, IOVA_BASE + src, IOVA_BASE + dst, DMA_LEN);
	__u64 bad = bad_words(memfd, dst, DMA_LEN, seed, pat);

	result(!ret && !bad, name,
	       "dma_copy(base + %#llx, base + %#llx, 4 KiB): %s; memfd at %#llx: %llu of %llu words differ from %s",
	       (unsigned long long)src, (unsigned long long)dst, errname(ret),
	       (unsigned long long)dst, (unsigned long long)bad, DMA_LEN / 8,
	       what);
}

/* Stage 1 */

/* The memfd "guest-ram" with pattern A in its two runs. */
static int stage1_memfd(void)
{
	int fd, ret;

	fd = ret_errno(memfd_create("guest-ram", 0));
	ret = fd < 0 ? fd : ret_errno(ftruncate(fd, RAM_SIZE));
	if (!ret)
		ret = fill(fd, RUN0_OFF, RUN0_LEN, SEED_A);
	if (!ret)
		ret = fill(fd, RUN1_OFF, RUN1_LEN, SEED_A);
	result(!ret, "memfd_fill",
	       "64 MiB memfd, pattern A in [0, 4 MiB) and [32, 34 MiB): %s",
	       errname(ret));
	check_sparse("memfd_filled", fd, FILLED_BYTES, extents_filled,
		     ARRAY_SIZE(extents_filled));
	return fd;
}

/* The main iommufd: IOASes 2 and 3, 1 destroyed; 3 maps memfd read-only. */
static int stage1_iommufd(int memfd)
{
	int fd, a, b, c, ret;
	char s[320];
	bool ok;

	fd = open_iommufd();
	expect_ok("iommufd_open", "open /dev/iommu", fd);
	a = fd < 0 ? fd : ioas_alloc(fd);
	b = fd < 0 ? fd : ioas_alloc(fd);
	c = fd < 0 ? fd : ioas_alloc(fd);
	result(a == ID_A && b == ID_B && c == ID_C, "ioas_alloc",
	       "IOAS_ALLOC three times: %d %d %d, expected %d %d %d", a, b, c,
	       ID_A, ID_B, ID_C);
	ret = fd < 0 ? fd : destroy(fd, ID_A);
	expect_ok("ioas_destroy", "IOMMU_DESTROY of IOAS 1", ret);
	ret = fd < 0 ? fd : allow_iovas(fd, ID_B, IOVA_BASE, IOVA_LAST);
	expect_ok("allow_iovas", "ALLOW_IOVAS [0x100000000, 0x1ffffffff] on IOAS 2",
		  ret);
	ok = auto_iova_in(fd, ID_B, memfd, true, s, sizeof(s));
	result(ok, "allowed_b", "%s, expected inside [%#llx, %#llx]", s,
	       IOVA_BASE, IOVA_LAST);
	ret = fd < 0 ? fd : map_file(fd, ID_C, memfd, 0, C_LEN, C_IOVA, MAP_RO);
	expect_ok("map_file_c",
		  "MAP_FILE memfd [0, 1 MiB) at 0x200000 read-only in IOAS 3",
		  ret);
	return fd;
}

/*
 * The device DMAs through IOAS 2 while it maps memfd [0, 16 MiB); then IOAS
 * 2 maps the whole memfd instead.
 */
static void stage1_dma(int iommufd, int memfd)
{
	char why[512];
	long long len;
	int ret;

	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_B, memfd, 0, TEMP_LEN, IOVA_BASE, MAP_RW);
	expect_ok("map_file_b_temp",
		  "MAP_FILE memfd [0, 16 MiB) at base in IOAS 2 (for the DMA)",
		  ret);
	ret = edu_open(&edu, iommufd, ID_B, why, sizeof(why));
	result(!ret, "edu_open", "%s", why);
	check_copy("dma_stage1", memfd, 0, DMA1_DST, SEED_A, 0,
		   "pattern A of offset 0");
	edu_close(&edu);
	/* The attach pinned, so allocated, every page of [0, 16 MiB). */
	check_sparse("memfd_pinned", memfd, PINNED_BYTES, extents_pinned,
		     ARRAY_SIZE(extents_pinned));
	len = iommufd < 0 ? iommufd : unmap(iommufd, ID_B, IOVA_BASE, TEMP_LEN);
	expect_val("unmap_b_temp", "UNMAP base, 16 MiB in IOAS 2: bytes", len,
		   TEMP_LEN);
	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_B, memfd, 0, RAM_SIZE, IOVA_BASE, MAP_RW);
	expect_ok("map_file_b", "MAP_FILE of the whole memfd at base in IOAS 2",
		  ret);
}

/* A throwaway iommufd with one IOAS (ID 1); the IOAS ID or -errno. */
static int throwaway(int *fd)
{
	*fd = open_iommufd();
	return *fd < 0 ? *fd : ioas_alloc(*fd);
}

/* Preserve fd under token, then unpreserve it: "PRESERVE_FD x, UNPRESERVE_FD y". */
static void preserve_unpreserve(const char *name, const char *what,
				int session, int fd, __u64 token, int pre)
{
	int p = pre < 0 ? pre : preserve(session, fd, token);
	int u = p ? p : unpreserve(session, token);

	result(!pre && !p && !u, name,
	       "%s: %s; PRESERVE_FD again: %s; UNPRESERVE_FD: %s", what,
	       errname(pre), errname(p), errname(u));
}

static void stage1_exdev(int session)
{
	int fd, id, ret;
	long long len;
	void *buf;

	id = throwaway(&fd);
	buf = mmap(NULL, REFUSE_LEN, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ret = id < 0 ? id : buf == MAP_FAILED ? -errno :
	      map_user(fd, id, buf, REFUSE_LEN, REFUSE_IOVA);
	expect_ok("exdev_setup",
		  "IOAS with IOMMU_IOAS_MAP of 64 KiB of anonymous memory", ret);
	expect_refused("exdev", "PRESERVE_FD", ret,
		       ret ? ret : preserve(session, fd, TOKEN_EXDEV), EXDEV);
	len = fd < 0 ? fd : unmap(fd, id, REFUSE_IOVA, REFUSE_LEN);
	preserve_unpreserve("exdev_then_ok", "UNMAP of the area",
			    session, fd, TOKEN_EXDEV,
			    len == REFUSE_LEN ? 0 : len < 0 ? len : -EIO);
	if (buf != MAP_FAILED)
		munmap(buf, REFUSE_LEN);
	if (fd >= 0)
		close(fd);
}

/* ENOENT for a memfd preserved nowhere, then EBUSY for unpreserving it. */
static void stage1_enoent_ebusy(int session)
{
	int fd, id, stray, ret, pm, pi, um, ui, um2;

	stray = ret_errno(memfd_create("stray", 0));
	if (stray >= 0 && ftruncate(stray, STRAY_SIZE))
		stray = -errno;
	id = throwaway(&fd);
	ret = first_err(stray, id);
	ret = ret < 0 ? ret : map_file(fd, id, stray, 0, STRAY_SIZE, 0, MAP_RW);
	expect_ok("enoent_setup", "IOAS with MAP_FILE of a memfd preserved nowhere",
		  ret);
	expect_refused("enoent", "PRESERVE_FD", ret,
		       ret ? ret : preserve(session, fd, TOKEN_ENOENT), ENOENT);

	pm = ret ? ret : preserve(session, stray, TOKEN_STRAY_MEMFD);
	pi = pm ? pm : preserve(session, fd, TOKEN_ENOENT);
	result(!pm && !pi, "enoent_then_ok",
	       "PRESERVE_FD of the memfd: %s; of the iommufd again: %s",
	       errname(pm), errname(pi));

	um = pi ? pi : unpreserve(session, TOKEN_STRAY_MEMFD);
	expect_refused("ebusy",
		       "UNPRESERVE_FD of the memfd the preserved iommufd maps",
		       pi, um, EBUSY);
	ui = pi ? pi : unpreserve(session, TOKEN_ENOENT);
	um2 = pm ? pm : unpreserve(session, TOKEN_STRAY_MEMFD);
	result(!ui && !um2, "ebusy_order",
	       "UNPRESERVE_FD of the iommufd: %s, then of the memfd: %s",
	       errname(ui), errname(um2));
	if (fd >= 0)
		close(fd);
	if (stray >= 0)
		close(stray);
}

static void stage1_fault(int session)
{
	int fd, id, ffd = -1, ret;
	__u32 fault_id = 0;

	id = throwaway(&fd);
	ret = id < 0 ? id : fault_alloc(fd, &fault_id, &ffd);
	result(!ret, "eopnotsupp_fault_setup",
	       "IOAS and IOMMU_FAULT_QUEUE_ALLOC: %s (fault ID %u)",
	       errname(ret), fault_id);
	expect_refused("eopnotsupp_fault", "PRESERVE_FD", ret,
		       ret ? ret : preserve(session, fd, TOKEN_FAULT), EOPNOTSUPP);
	if (ffd >= 0)
		close(ffd);
	ret = fd < 0 ? fd : ffd < 0 ? -EBADF : destroy(fd, fault_id);
	preserve_unpreserve("eopnotsupp_fault_then_ok",
			    "fault fd closed, IOMMU_DESTROY of the fault queue",
			    session, fd, TOKEN_FAULT, ret);
	if (fd >= 0)
		close(fd);
}

/*
 * A bound and attached device (its automatic HWPT) is allowed; an HWPT
 * allocated by userspace is not.
 */
static void stage1_device(int session)
{
	int fd, id, hwpt, ret, p, u;
	char why[512];

	id = throwaway(&fd);
	ret = id < 0 ? id : edu_open(&edu, fd, id, why, sizeof(why));
	if (id < 0)
		snprintf(why, sizeof(why), "throwaway iommufd: %s", errname(id));
	result(!ret, "device_setup", "%s", why);
	p = ret ? ret : preserve(session, fd, TOKEN_DEVICE);
	u = p ? p : unpreserve(session, TOKEN_DEVICE);
	result(!p && !u, "device_allowed",
	       "PRESERVE_FD with edu bound and attached: %s; UNPRESERVE_FD: %s",
	       errname(p), errname(u));

	hwpt = edu.fd < 0 ? -EBADF : hwpt_alloc(fd, edu.devid, id);
	result(hwpt > 0, "eopnotsupp_hwpt_setup",
	       "IOMMU_HWPT_ALLOC for edu on the IOAS: %s (HWPT ID %d)",
	       errname(hwpt), hwpt);
	expect_refused("eopnotsupp_hwpt", "PRESERVE_FD", hwpt,
		       hwpt < 0 ? hwpt : preserve(session, fd, TOKEN_DEVICE),
		       EOPNOTSUPP);
	ret = hwpt < 0 ? hwpt : destroy(fd, hwpt);
	preserve_unpreserve("eopnotsupp_hwpt_then_ok",
			    "IOMMU_DESTROY of the HWPT", session, fd,
			    TOKEN_DEVICE, ret);
	edu_close(&edu);
	if (fd >= 0)
		close(fd);
}

/* guest-ram is preserved in session "iommufd", not in this one. */
static void stage1_other_session(int session, int memfd)
{
	int fd, id, ret;
	long long len;

	id = throwaway(&fd);
	ret = id < 0 ? id : map_file(fd, id, memfd, 0, MIB, 0, MAP_RW);
	expect_ok("enoent_other_session_setup",
		  "IOAS with MAP_FILE of guest-ram (preserved in session \"iommufd\")",
		  ret);
	expect_refused("enoent_other_session", "PRESERVE_FD in \"iommufd-refuse\"",
		       ret, ret ? ret : preserve(session, fd, TOKEN_OTHER_SESSION),
		       ENOENT);
	len = fd < 0 ? fd : unmap(fd, id, 0, MIB);
	preserve_unpreserve("enoent_other_session_then_ok", "UNMAP of the area",
			    session, fd, TOKEN_OTHER_SESSION,
			    len == MIB ? 0 : len < 0 ? len : -EIO);
	if (fd >= 0)
		close(fd);
}

/* Changes after PRESERVE_FD, taken at reboot. */
static void stage1_after_preserve(int iommufd, int memfd)
{
	long long len;
	int ret;

	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_B, memfd, LATE_OFF, LATE_LEN, LATE_IOVA,
		       MAP_RW);
	expect_ok("map_after_preserve",
		  "MAP_FILE memfd [16 MiB, 17 MiB) at base + 0x10000000 in IOAS 2",
		  ret);
	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_C, memfd, C_EXTRA_OFF, C_EXTRA_LEN,
		       C_EXTRA_IOVA, MAP_RO);
	len = ret ? ret : unmap(iommufd, ID_C, C_EXTRA_IOVA, C_EXTRA_LEN);
	result(!ret && len == C_EXTRA_LEN, "map_unmap_after_preserve",
	       "MAP_FILE of 64 KiB at 0x400000 in IOAS 3: %s; UNMAP: %lld bytes (%s), expected %llu",
	       errname(ret), len < 0 ? 0 : len, errname(len), C_EXTRA_LEN);
	/* Mapping without a device pins nothing. */
	check_sparse("memfd_final", memfd, PINNED_BYTES, extents_pinned,
		     ARRAY_SIZE(extents_pinned));
}

/* Keep the session open in a detached child until the kexec. */
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
	result(pid > 0, "holder", "holder pid %d keeps session \"%s\" open",
	       (int)pid, SESSION_MAIN);
}

/*
 * A second iommufd mapping 1 MiB of guest-ram, preserved under token 3 and
 * never retrieved: FINISH frees its handover.
 */
static void stage1_unretrieved(int session, int memfd)
{
	int fd, id, ret;

	id = throwaway(&fd);
	ret = id < 0 ? id : map_file(fd, id, memfd, 0, C_LEN, C_IOVA, MAP_RO);
	ret = ret ? ret : preserve(session, fd, TOKEN_UNRETRIEVED);
	expect_ok("preserve_unretrieved",
		  "a second iommufd mapping guest-ram [0, 1 MiB): PRESERVE_FD, token 3",
		  ret);
	if (fd >= 0)
		close(fd);
}

/*
 * Messages of the iommufd handler (its pr_* prefix) in the kernel log so far:
 * after FINISH, a failure to free a never retrieved iommufd shows as one.
 */
static int handler_messages(char *last, size_t size)
{
	static char rec[8192];
	int fd, n = 0;
	ssize_t len;

	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	/* EPIPE: records overwritten; EINVAL: one too long for rec (skipped). */
	while ((len = read(fd, rec, sizeof(rec) - 1)) > 0 ||
	       (len < 0 && (errno == EPIPE || errno == EINVAL || errno == EINTR))) {
		if (len <= 0)
			continue;
		rec[len] = 0;
		if (strstr(rec, "iommufd_luo: ")) {
			n++;
			copy_str(last, size, strchr(rec, ';') ? strchr(rec, ';') + 1 : rec);
		}
	}
	close(fd);
	return n;
}

static void stage1(int dev)
{
	int session, refuse, memfd, iommufd, ret;
	char why[512];

	session = luo_create_session(dev, SESSION_MAIN);
	refuse = luo_create_session(dev, SESSION_REFUSE);
	result(session >= 0 && refuse >= 0, "sessions_create",
	       "CREATE_SESSION \"%s\": %s, \"%s\": %s", SESSION_MAIN,
	       errname(session), SESSION_REFUSE, errname(refuse));

	ret = edu_bind_vfio(&edu, why, sizeof(why));
	result(!ret, "edu_vfio", "%s: %s", why, errname(ret));

	memfd = stage1_memfd();
	iommufd = stage1_iommufd(memfd);
	stage1_dma(iommufd, memfd);

	/* Refusals that need nothing preserved in session "iommufd". */
	stage1_exdev(refuse);
	stage1_enoent_ebusy(refuse);
	stage1_fault(refuse);
	stage1_device(refuse);

	expect_refused("preserve_iommufd_first",
		       "PRESERVE_FD of the iommufd before its memfd is preserved",
		       first_err(session, iommufd),
		       preserve(session, iommufd, TOKEN_IOMMUFD), ENOENT);
	expect_ok("preserve_memfd", "PRESERVE_FD of guest-ram, token 1",
		  preserve(session, memfd, TOKEN_MEMFD));
	stage1_other_session(refuse, memfd);
	ret = refuse < 0 ? refuse : ret_errno(close(refuse));
	expect_ok("refuse_close", "close of the empty session \"iommufd-refuse\"",
		  ret);
	expect_ok("preserve_iommufd", "PRESERVE_FD of the iommufd, token 2",
		  preserve(session, iommufd, TOKEN_IOMMUFD));

	stage1_after_preserve(iommufd, memfd);
	stage1_unretrieved(session, memfd);

	/* The session holds the files. */
	if (iommufd >= 0)
		close(iommufd);
	if (memfd >= 0)
		close(memfd);
	close(dev);
	hold_sessions();
}

/* Stage 2 */

static void check_cloexec(int iommufd, int memfd)
{
	int fi = iommufd < 0 ? iommufd : fcntl(iommufd, F_GETFD);
	int fm = memfd < 0 ? memfd : fcntl(memfd, F_GETFD);

	result(fi >= 0 && fm >= 0 && (fi & FD_CLOEXEC) && (fm & FD_CLOEXEC),
	       "cloexec",
	       "F_GETFD of the iommufd %d, of the memfd %d, expected FD_CLOEXEC (%d) in both",
	       fi, fm, FD_CLOEXEC);
}

static void stage2_memfd(int memfd)
{
	__u64 bad;

	expect_val("memfd_size", "st_size", memfd < 0 ? memfd : file_size(memfd),
		   RAM_SIZE);
	/* Retrieving the iommufd pinned nothing: the hole is still a hole. */
	check_sparse("memfd_retrieved", memfd, PINNED_BYTES, extents_pinned,
		     ARRAY_SIZE(extents_pinned));
	bad = bad_words(memfd, RUN0_OFF, RUN0_LEN, SEED_A, RUN0_OFF) +
	      bad_words(memfd, RUN1_OFF, RUN1_LEN, SEED_A, RUN1_OFF);
	result(!bad, "memfd_pattern_a",
	       "%llu of %llu words of [0, 4 MiB) and [32, 34 MiB) differ from pattern A",
	       (unsigned long long)bad, (RUN0_LEN + RUN1_LEN) / 8);
	bad = bad_words(memfd, DMA1_DST, DMA_LEN, SEED_A, 0);
	result(!bad, "memfd_dma_stage1",
	       "%llu of %llu words at 8 MiB differ from pattern A of offset 0 (stage 1's DMA)",
	       (unsigned long long)bad, DMA_LEN / 8);
	bad = bad_words(memfd, RUN0_LEN, DMA1_DST - RUN0_LEN, 0, 0) +
	      bad_words(memfd, DMA1_DST + DMA_LEN, RUN1_OFF - DMA1_DST - DMA_LEN,
			0, 0) +
	      bad_words(memfd, RUN1_OFF + RUN1_LEN,
			RAM_SIZE - RUN1_OFF - RUN1_LEN, 0, 0);
	result(!bad, "memfd_zeros",
	       "%llu of %llu words elsewhere are not zero",
	       (unsigned long long)bad,
	       (RAM_SIZE - RUN0_LEN - RUN1_LEN - DMA_LEN) / 8);
	expect_val("memfd_blocks_after_read", "st_blocks * 512",
		   memfd < 0 ? memfd : file_bytes(memfd), PINNED_BYTES);
}

static void stage2_ranges(int iommufd, int memfd)
{
	struct iommu_iova_range r[MAX_RANGES];
	int e1, e4, id, d;
	char s[320];

	result(auto_iova_in(iommufd, ID_B, memfd, true, s, sizeof(s)),
	       "allowed_b", "%s, expected inside [%#llx, %#llx]", s, IOVA_BASE,
	       IOVA_LAST);
	result(auto_iova_in(iommufd, ID_C, memfd, false, s, sizeof(s)),
	       "allowed_c", "%s, expected below %#llx (IOAS 3 has no allowed ranges)",
	       s, IOVA_BASE);

	e1 = iommufd < 0 ? iommufd : iova_ranges(iommufd, ID_A, r);
	e4 = iommufd < 0 ? iommufd : iova_ranges(iommufd, ID_GONE, r);
	result(iommufd >= 0 && e1 == -ENOENT && e4 == -ENOENT, "ids_free",
	       "IOVA_RANGES of ID 1: %s, of ID 4: %s, expected ENOENT",
	       errname(e1), errname(e4));
	id = iommufd < 0 ? iommufd : ioas_alloc(iommufd);
	d = id < 0 ? id : destroy(iommufd, id);
	result(id == ID_A && !d, "ioas_alloc_free_id",
	       "IOAS_ALLOC: %d (%s), expected %d; IOMMU_DESTROY: %s", id,
	       errname(id), ID_A, errname(d));
}

static void stage2_dma(int iommufd, int memfd)
{
	__u64 bad;
	char why[512];
	int ret, r1, r2;

	ret = fill(memfd, B_OFF, DMA_LEN, SEED_B);
	ret = first_err(ret, fill(memfd, LATE_OFF, DMA_LEN, SEED_C));
	expect_ok("pwrite_b_c",
		  "pwrite() of pattern B at 40 MiB and pattern C at 16 MiB", ret);

	ret = edu_open(&edu, iommufd, ID_B, why, sizeof(why));
	result(!ret, "edu_open", "%s", why);
	/* The pinned pages are the retrieved memfd's: it is fully populated. */
	check_sparse("memfd_attached", memfd, RAM_SIZE, extents_full,
		     ARRAY_SIZE(extents_full));

	/* Each copy brings data other than what the buffer holds. */
	check_copy("dma_new", memfd, B_OFF, B_DST, SEED_B, B_OFF,
		   "pattern B (written in stage 2)");
	check_copy("dma_old", memfd, DMA1_DST, A_DST, SEED_A, 0,
		   "pattern A of offset 0 (stage 1's DMA)");
	check_copy("dma_late_area", memfd, LATE_IOVA - IOVA_BASE, C_DST, SEED_C,
		   LATE_OFF, "pattern C (the area mapped after PRESERVE_FD)");

	/*
	 * IOAS 3's area is read-only: with B in the buffer, a DMA write to it
	 * must not reach the memfd (the IOMMU faults it).
	 */
	ret = edu_dma(&edu, false, IOVA_BASE + B_OFF, DMA_LEN);
	ret = ret ? ret : edu_move(&edu, ID_C);
	ret = ret ? ret : edu_dma(&edu, true, C_IOVA, DMA_LEN);
	bad = bad_words(memfd, 0, DMA_LEN, SEED_A, 0);
	result(!ret && !bad, "ro_write_blocked",
	       "B into the buffer, attach to IOAS 3, DMA to 0x200000: %s; memfd at 0: %llu of %llu words differ from pattern A",
	       errname(ret), (unsigned long long)bad, DMA_LEN / 8);

	/* A DMA read of it brings memfd offset 0 (A); written out via IOAS 2. */
	r1 = ret ? ret : edu_dma(&edu, false, C_IOVA, DMA_LEN);
	r2 = r1 ? r1 : edu_move(&edu, ID_B);
	r2 = r2 ? r2 : edu_dma(&edu, true, IOVA_BASE + RO_DST, DMA_LEN);
	bad = bad_words(memfd, RO_DST, DMA_LEN, SEED_A, 0);
	result(!r2 && !bad, "ro_read",
	       "DMA from 0x200000 in IOAS 3, attach to IOAS 2, DMA to base + 60 MiB: %s; %llu of %llu words there differ from pattern A",
	       errname(r2), (unsigned long long)bad, DMA_LEN / 8);
	edu_close(&edu);
}

static void stage2_areas(int iommufd, int memfd)
{
	long long len;
	int ret;

	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_B, memfd, 0, C_EXTRA_LEN, IOVA_BASE, MAP_RW);
	expect_refused("map_b_eexist", "MAP_FILE of 64 KiB at base in IOAS 2",
		       first_err(iommufd, memfd), ret, EEXIST);
	ret = iommufd < 0 ? iommufd :
	      map_file(iommufd, ID_C, memfd, C_EXTRA_OFF, C_EXTRA_LEN,
		       C_EXTRA_IOVA, MAP_RO);
	len = ret ? ret : unmap(iommufd, ID_C, C_EXTRA_IOVA, C_EXTRA_LEN);
	result(!ret && len == C_EXTRA_LEN, "map_c_free",
	       "MAP_FILE of 64 KiB at 0x400000 in IOAS 3: %s; UNMAP: %lld bytes (%s), expected %llu",
	       errname(ret), len < 0 ? 0 : len, errname(len), C_EXTRA_LEN);

	len = iommufd < 0 ? iommufd : unmap(iommufd, ID_B, 0, UINT64_MAX);
	expect_val("unmap_all_b", "UNMAP of everything in IOAS 2: bytes", len,
		   RAM_SIZE + LATE_LEN);
	len = iommufd < 0 ? iommufd : unmap(iommufd, ID_C, 0, UINT64_MAX);
	expect_val("unmap_all_c", "UNMAP of everything in IOAS 3: bytes", len,
		   C_LEN);
}

static void stage2(int dev)
{
	int session, iommufd, memfd, ret, msgs, before;
	char why[512], last[256] = "";

	session = luo_retrieve_session(dev, SESSION_MAIN);
	expect_ok("session_retrieve", "RETRIEVE_SESSION \"iommufd\"", session);
	iommufd = retrieve(session, TOKEN_IOMMUFD);
	expect_ok("retrieve_iommufd", "RETRIEVE_FD of token 2 (the iommufd)",
		  iommufd);
	memfd = retrieve(session, TOKEN_MEMFD);
	expect_ok("retrieve_memfd",
		  "RETRIEVE_FD of token 1 (the memfd), after the iommufd", memfd);
	check_cloexec(iommufd, memfd);

	stage2_memfd(memfd);
	stage2_ranges(iommufd, memfd);

	ret = edu_bind_vfio(&edu, why, sizeof(why));
	result(!ret, "edu_vfio", "%s: %s", why, errname(ret));
	stage2_dma(iommufd, memfd);
	stage2_areas(iommufd, memfd);

	before = handler_messages(last, sizeof(last));
	ret = session < 0 ? session : luo_session_finish(session);
	expect_ok("finish",
		  "LIVEUPDATE_SESSION_FINISH (token 3, an iommufd, never retrieved)",
		  ret);
	msgs = handler_messages(last, sizeof(last));
	result(before >= 0 && msgs == before, "unretrieved_finish_quiet",
	       "messages of the iommufd handler in the kernel log before FINISH %d, after %d, expected no new one (finishing token 3 frees its handover)%s%s",
	       before, msgs, msgs > before ? "; last: " : "",
	       msgs > before ? last : "");
	if (iommufd >= 0)
		close(iommufd);
	if (memfd >= 0)
		close(memfd);
	if (session >= 0)
		close(session);
	close(dev);
}

/* rust>c: upstream's LUO refuses the whole incoming state. */
static void stage2_c(void)
{
	int fd = ret_errno(luo_open_device());

	result(fd == -EIO, "luo_open_eio",
	       "open %s: %s, expected EIO (upstream's C LUO has no handler for \"iommufd-ioas-v1\" and fails the deserialization of every session)",
	       LUO_DEVICE, errname(fd));
	if (fd >= 0)
		close(fd);
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
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
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
	if ((stage != 1 && stage != 2) || !have_kernel || !have_prev)
		ksft_exit_fail_msg("usage: %s -s 1|2 --kernel=c|rust --prev=c|rust\n",
				   argv[0]);
	/* Only the rust flavor has the handler: stage 1 runs on rust. */
	if (!prev_rust || (stage == 1 && !kernel_rust))
		ksft_exit_fail_msg("only rust has the handler: %s\n",
				   "--prev=rust, and --kernel=rust for -s 1");

	setvbuf(stdout, NULL, _IOLBF, 0);
	iobuf = malloc(IO_CHUNK);
	if (!iobuf)
		ksft_exit_fail_msg("no memory for the I/O buffer\n");
	/* Pinned pages are accounted to RLIMIT_MEMLOCK without CAP_IPC_LOCK. */
	setrlimit(RLIMIT_MEMLOCK, &unlimited);

	ksft_print_header();
	ksft_set_plan(stage == 1 ? STAGE1_TESTS :
		      kernel_rust ? STAGE2_TESTS : STAGE2_C_TESTS);
	uname(&uts);
	ksft_print_msg("stage %d on %s: expectations of kernel=%s, prev=%s\n",
		       stage, uts.release, kernel_rust ? "rust" : "c",
		       prev_rust ? "rust" : "c");

	if (stage == 2 && !kernel_rust) {
		stage2_c();
		ksft_finished();
	}
	dev = luo_open_device();
	if (dev < 0)
		ksft_exit_fail_msg("open %s: %s\n", LUO_DEVICE, strerror(errno));
	if (stage == 1)
		stage1(dev);
	else
		stage2(dev);
	ksft_finished();
}
