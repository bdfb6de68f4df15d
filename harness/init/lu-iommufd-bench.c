// SPDX-License-Identifier: GPL-2.0
/*
 * The guest side of `lu bench --bench iommufd`: what carrying an iommufd
 * across a live update costs, against what a VMM does without it, in the
 * same VM and the same run. The VM is luo_iommufd's: a vIOMMU and QEMU's edu
 * device, which the program binds to vfio-pci and drives through its cdev.
 *
 * Without the handler, a VMM builds its IO address space again: open
 * /dev/iommu, IOMMU_IOAS_ALLOC, bind and attach the device, and map guest
 * RAM with IOMMU_IOAS_MAP_FILE, which pins it ("re-create"). With it, the
 * VMM retrieves the iommufd and binds and attaches the device, which pins
 * the same pages ("retrieve + attach").
 *
 * "lu-iommufd-bench preserve --size BYTES [--thp] [--populate-pct P]",
 * before the kexec: fills a memfd of BYTES (every page, or a word on P% of
 * the pages), preserves it in session "bench-iommufd" (token 1); times
 * PRESERVE_FD of an iommufd whose IOAS 1 maps the memfd (PRESERVE_REPS
 * rounds with UNPRESERVE_FD between them) and keeps the last one (token 2);
 * leaves a detached child holding the session across the kexec.
 *
 * "lu-iommufd-bench retrieve" with the same options, after it: times
 * RETRIEVE_FD of the memfd; times the re-creation on the retrieved memfd,
 * once first (the first pin: a sparse memfd's holes are filled, pages in
 * KHO's scratch area migrated) and ATTACH_REPS times more; then times
 * RETRIEVE_FD of the iommufd with the device's bind and attach to IOAS 1,
 * which pins the same memfd as the later re-creations did (once: a file is
 * retrieved once); checks that IOAS 1 maps the memfd (UNMAP of everything
 * unmaps BYTES) and finishes the session.
 *
 * The device's cdev is opened before each timed part (opening it resets the
 * device, the same for both ways). Prints "LU-BENCH phase=... key=value ..."
 * lines (seconds; medians where repeated); exits non-zero if a step failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <linux/iommufd.h>
#include <linux/liveupdate.h>
#include <linux/vfio.h>

#include "lu-check.h"

#define SESSION "bench-iommufd"
#define TOKEN_MEMFD 1
#define TOKEN_IOMMUFD 2
#define IOVA (1ULL << 32)
#define PRESERVE_REPS 21
#define ATTACH_REPS 5

static void die(const char *what)
{
	printf("LU-BENCH-ERROR %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[n / 2];
}

static int session(int dev, int create)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	strncpy((char *)arg.name, SESSION, sizeof(arg.name) - 1);
	if (ioctl(dev, create ? LIVEUPDATE_IOCTL_CREATE_SESSION :
			  LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg))
		die(create ? "CREATE_SESSION" : "RETRIEVE_SESSION");
	return arg.fd;
}

static void preserve(int s, int fd, __u64 token)
{
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg), .fd = fd, .token = token,
	};

	if (ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &arg))
		die("PRESERVE_FD");
}

static void unpreserve(int s, __u64 token)
{
	struct liveupdate_session_unpreserve_fd arg = {
		.size = sizeof(arg), .token = token,
	};

	if (ioctl(s, LIVEUPDATE_SESSION_UNPRESERVE_FD, &arg))
		die("UNPRESERVE_FD");
}

static int retrieve(int s, __u64 token)
{
	struct liveupdate_session_retrieve_fd arg = {
		.size = sizeof(arg), .token = token,
	};

	if (ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &arg))
		die("RETRIEVE_FD");
	return arg.fd;
}

static char cdev[300];

static int read_str(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

static void write_str(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || write(fd, val, strlen(val)) < 0)
		printf("LU-BENCH-NOTE writing %s to %s: %s\n", val, path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Binds QEMU's edu device (1234:11e8) to vfio-pci and finds its cdev. */
static void edu_vfio(void)
{
	char path[1200], buf[64], bdf[256] = "", name[256] = "";
	unsigned int maj, min;
	struct dirent *de;
	DIR *dir;

	dir = opendir("/sys/bus/pci/devices");
	if (!dir)
		die("/sys/bus/pci/devices");
	while ((de = readdir(dir))) {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", de->d_name);
		if (read_str(path, buf, sizeof(buf)) || strncmp(buf, "0x1234", 6))
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", de->d_name);
		if (!read_str(path, buf, sizeof(buf)) && !strncmp(buf, "0x11e8", 6)) {
			snprintf(bdf, sizeof(bdf), "%s", de->d_name);
			break;
		}
	}
	closedir(dir);
	if (!bdf[0]) {
		errno = ENODEV;
		die("edu device");
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override", bdf);
	write_str(path, "vfio-pci");
	write_str("/sys/bus/pci/drivers_probe", bdf);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	dir = opendir(path);
	if (!dir)
		die("vfio-dev");
	while ((de = readdir(dir)))
		if (!strncmp(de->d_name, "vfio", 4))
			snprintf(name, sizeof(name), "%s", de->d_name);
	closedir(dir);
	snprintf(cdev, sizeof(cdev), "/dev/vfio/devices/%s", name);
	if (!access(cdev, F_OK))
		return;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev/%s/dev", bdf, name);
	if (read_str(path, buf, sizeof(buf)) || sscanf(buf, "%u:%u", &maj, &min) != 2)
		die("vfio cdev numbers");
	snprintf(cdev, sizeof(cdev), "/tmp/%s", name);
	if (mknod(cdev, S_IFCHR | 0600, makedev(maj, min)) && errno != EEXIST)
		die("mknod");
}

static int open_device(void)
{
	int fd = open(cdev, O_RDWR);

	if (fd < 0)
		die("open the vfio cdev");
	return fd;
}

/* Binds the device to iommufd and attaches it to IOAS id. */
static void attach(int dev, int iommufd, __u32 id)
{
	struct vfio_device_bind_iommufd bind = {
		.argsz = sizeof(bind), .iommufd = iommufd,
	};
	struct vfio_device_attach_iommufd_pt at = {
		.argsz = sizeof(at), .pt_id = id,
	};

	if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		die("VFIO_DEVICE_BIND_IOMMUFD");
	if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at))
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
}

/*
 * A new iommufd with IOAS 1 mapping the whole memfd at IOVA; with dev >= 0
 * the device is attached before the mapping, which then pins the memfd.
 */
static int iommufd_with_ioas(int memfd, unsigned long size, int dev)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_ioas_map_file map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.fd = memfd,
		.length = size,
		.iova = IOVA,
	};
	int fd = open("/dev/iommu", O_RDWR);

	if (fd < 0)
		die("open /dev/iommu");
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOMMU_IOAS_ALLOC");
	if (dev >= 0)
		attach(dev, fd, alloc.out_ioas_id);
	map.ioas_id = alloc.out_ioas_id;
	if (ioctl(fd, IOMMU_IOAS_MAP_FILE, &map))
		die("IOMMU_IOAS_MAP_FILE");
	return fd;
}

/*
 * What a VMM does without the handler: the IOAS with the device attached and
 * the memfd mapped (pinned); returns the time, everything closed again.
 */
static double recreate_once(int memfd, unsigned long size)
{
	int dev = open_device(), fd;
	double t0 = now(), t;

	fd = iommufd_with_ioas(memfd, size, dev);
	t = now() - t0;
	close(dev);
	close(fd);
	return t;
}

/* The first (cold) re-creation and the median of ATTACH_REPS more. */
static void recreate(int memfd, unsigned long size, double *first, double *med)
{
	double t[ATTACH_REPS];
	int i;

	*first = recreate_once(memfd, size);
	for (i = 0; i < ATTACH_REPS; i++)
		t[i] = recreate_once(memfd, size);
	*med = median(t, ATTACH_REPS);
}

static void set_thp(const char *mode)
{
	int fd = open("/sys/kernel/mm/transparent_hugepage/shmem_enabled", O_WRONLY);

	if (fd < 0 || write(fd, mode, strlen(mode)) < 0)
		die("shmem_enabled");
	close(fd);
}

/* A memfd of size bytes, every page written or a word on pct% of them. */
static int guest_ram(unsigned long size, int pct, double *filled)
{
	unsigned long off, page = sysconf(_SC_PAGESIZE);
	double t0 = now();
	int memfd;
	char *p;

	memfd = memfd_create("guest-ram", 0);
	if (memfd < 0 || ftruncate(memfd, size))
		die("memfd");
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	for (off = 0; off < size; off += page)
		if (pct >= 100 || (off / page) % 100 < (unsigned long)pct)
			*(volatile unsigned long *)(p + off) = off ^ 0x5a5a;
	munmap(p, size);
	if (filled)
		*filled = now() - t0;
	return memfd;
}

static int stage1(unsigned long size, int thp, int pct)
{
	double t[PRESERVE_REPS], filled;
	int dev, s, memfd, fd = -1, i;

	if (thp)
		set_thp("always");
	memfd = guest_ram(size, pct, &filled);

	dev = open("/dev/liveupdate", O_RDWR);
	if (dev < 0)
		die("open /dev/liveupdate");
	s = session(dev, 1);
	preserve(s, memfd, TOKEN_MEMFD);

	for (i = 0; i < PRESERVE_REPS; i++) {
		double t0;

		fd = iommufd_with_ioas(memfd, size, -1);
		t0 = now();
		preserve(s, fd, TOKEN_IOMMUFD);
		t[i] = now() - t0;
		if (i == PRESERVE_REPS - 1)
			break;
		unpreserve(s, TOKEN_IOMMUFD);
		close(fd);
	}
	printf("LU-BENCH phase=iommufd-preserve size=%lu fill_s=%.6f preserve_s=%.9f\n",
	       size, filled, median(t, PRESERVE_REPS));
	fflush(stdout);

	/* A detached child keeps the session open until the kexec. */
	if (fork() == 0) {
		setsid();
		for (;;)
			pause();
	}
	return 0;
}

static int stage2(unsigned long size)
{
	struct iommu_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = 1, .length = UINT64_MAX,
	};
	double t0, t_memfd, t_iommufd, t_attach, first, med;
	int dev, s, memfd, fd, vdev;

	dev = open("/dev/liveupdate", O_RDWR);
	if (dev < 0)
		die("open /dev/liveupdate");
	s = session(dev, 0);
	t0 = now();
	memfd = retrieve(s, TOKEN_MEMFD);
	t_memfd = now() - t0;

	/* Without the handler: the IOAS built again on the retrieved memfd. */
	edu_vfio();
	recreate(memfd, size, &first, &med);

	vdev = open_device();
	t0 = now();
	fd = retrieve(s, TOKEN_IOMMUFD);
	t_iommufd = now() - t0;
	/* IOAS 1 kept its ID: attaching pins the memfd. */
	attach(vdev, fd, 1);
	t_attach = now() - t0;
	close(vdev);

	/* IOAS 1 maps the whole memfd. */
	if (ioctl(fd, IOMMU_IOAS_UNMAP, &unmap) || unmap.length != size) {
		printf("LU-BENCH-ERROR UNMAP of IOAS 1: %s, %llu bytes, expected %lu\n",
		       strerror(errno), (unsigned long long)unmap.length, size);
		return 1;
	}
	close(fd);
	close(memfd);
	if (ioctl(s, LIVEUPDATE_SESSION_FINISH,
		  &(struct liveupdate_session_finish){ .size = sizeof(struct liveupdate_session_finish) }))
		die("FINISH");
	printf("LU-BENCH phase=iommufd-retrieve size=%lu memfd_retrieve_s=%.9f retrieve_s=%.9f retrieve_attach_s=%.9f recreate_first_s=%.9f recreate_s=%.9f\n",
	       size, t_memfd, t_iommufd, t_attach, first, med);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "thp", no_argument, NULL, 't' },
		{ "populate-pct", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long size = 0;
	int opt, thp = 0, pct = 100;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			size = strtoul(optarg, NULL, 0);
			break;
		case 't':
			thp = 1;
			break;
		case 'p':
			pct = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1 || !size) {
		fprintf(stderr, "usage: %s preserve|retrieve --size BYTES [--thp] [--populate-pct P]\n",
			argv[0]);
		return 2;
	}
	if (!strcmp(argv[optind], "preserve"))
		return stage1(size, thp, pct);
	if (!strcmp(argv[optind], "retrieve"))
		return stage2(size);
	return 2;
}
