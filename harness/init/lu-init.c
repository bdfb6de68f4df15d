// SPDX-License-Identifier: GPL-2.0
/*
 * lu-init: the init of the harness's test VMs.
 *
 * Runs one stage of a chain of kernels.  The initramfs carries /lu/plan, a
 * text file of commands for this stage, one per line:
 *
 *   stage K N            this is stage K of an N-stage chain
 *   run NAME PATH ARG... run a program, wait for it, report its exit status
 *   kexec                kexec_file_load /lu/next/kernel with /lu/next/initrd
 *                        and this kernel's command line
 *
 * kexec is loaded where it appears in the plan (before the tests, as
 * upstream's selftest init does, so that a test's daemonized child already
 * holds its sessions when we reboot); after the last command the stage ends
 * with reboot(LINUX_REBOOT_CMD_KEXEC) if a kexec was loaded, otherwise with
 * a restart, which QEMU -no-reboot turns into an exit.
 *
 * Programs' stdout and stderr, and init's own messages, are written to the
 * kernel log (/dev/kmsg, one record per line, level 5) rather than straight to
 * the console: the console prints whole records, so a line of ours is never
 * cut in two by a kernel message printed at the same moment (the runner
 * boots with printk.devkmsg=on so that no line is rate-limited away).
 * Everything the host needs is a line starting with "LU-":
 *
 *   LU-STAGE K N <uname -r> <uname -v>
 *   LU-RESULT K NAME <exit status or -signal>
 *   LU-KEXEC-LOADED K <0 or -errno>
 *   LU-REBOOT K kexec|restart
 *   LU-KMEMLEAK K <objects reported>   (kernels with kmemleak: the debug builds)
 *
 * Static glibc binary; nothing here is specific to a flavor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/reboot.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PLAN "/lu/plan"
#define NEXT_KERNEL "/lu/next/kernel"
#define NEXT_INITRD "/lu/next/initrd"
#define CMDLINE_MAX 4096
#define MAX_ARGS 32

static int stage = 0, nstages = 0;
static int kmsg = -1;

/* One kernel log record per line; long lines are split. */
static void klog_line(const char *line, size_t len)
{
	char rec[900];

	do {
		size_t n = len > sizeof(rec) - 8 ? sizeof(rec) - 8 : len;
		int m = snprintf(rec, sizeof(rec), "<5>%.*s\n", (int)n, line);

		if (kmsg < 0 || write(kmsg, rec, m) < 0) {
			fwrite(rec + 3, 1, m - 3, stdout);
			fflush(stdout);
		}
		line += n;
		len -= n;
	} while (len);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n >= (int)sizeof(buf))
		n = sizeof(buf) - 1;
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	klog_line(buf, n);
}

/* Forward a program's output, line by line, to the kernel log. */
struct relay {
	char buf[4096];
	size_t len;
};

static void relay_feed(struct relay *r, const char *data, size_t n)
{
	while (n--) {
		char c = *data++;

		if (c == '\n' || r->len == sizeof(r->buf)) {
			klog_line(r->buf, r->len);
			r->len = 0;
			if (c == '\n')
				continue;
		}
		r->buf[r->len++] = c;
	}
}

static void mount_fs(void)
{
	mkdir("/dev", 0755);
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mkdir("/tmp", 01777);
	mkdir("/debugfs", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) && errno != EBUSY)
		say("LU-INIT: devtmpfs: %s\n", strerror(errno));
	if (mount("proc", "/proc", "proc", 0, NULL))
		say("LU-INIT: proc: %s\n", strerror(errno));
	if (mount("sysfs", "/sys", "sysfs", 0, NULL))
		say("LU-INIT: sysfs: %s\n", strerror(errno));
	if (mount("debugfs", "/debugfs", "debugfs", 0, NULL))
		say("LU-INIT: debugfs: %s\n", strerror(errno));
	mkdir("/sys/kernel/debug", 0755);
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	if (mount("tmpfs", "/tmp", "tmpfs", 0, NULL))
		say("LU-INIT: tmpfs: %s\n", strerror(errno));
}

static int read_cmdline(char *buf, size_t size)
{
	ssize_t len;
	int fd;

	fd = open("/proc/cmdline", O_RDONLY);
	if (fd < 0)
		return -errno;
	len = read(fd, buf, size - 1);
	close(fd);
	if (len < 0)
		return -errno;
	buf[len] = 0;
	while (len > 0 && buf[len - 1] == '\n')
		buf[--len] = 0;
	return 0;
}

static int do_kexec_load(void)
{
	char cmdline[CMDLINE_MAX];
	int kfd, ifd, err;

	err = read_cmdline(cmdline, sizeof(cmdline));
	if (err)
		return err;
	kfd = open(NEXT_KERNEL, O_RDONLY);
	if (kfd < 0)
		return -errno;
	ifd = open(NEXT_INITRD, O_RDONLY);
	if (ifd < 0) {
		err = -errno;
		close(kfd);
		return err;
	}
	err = syscall(SYS_kexec_file_load, kfd, ifd, strlen(cmdline) + 1,
		      cmdline, 0UL) ? -errno : 0;
	close(ifd);
	close(kfd);
	return err;
}

/*
 * Run a program with its stdout and stderr relayed to the kernel log. Daemons
 * it leaves behind may keep the pipe open: once the program itself has exited
 * only what is already buffered is read.
 */
static int run(char **argv)
{
	struct relay r = { .len = 0 };
	int status = 0, exited = 0;
	int fds[2];
	char chunk[4096];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *envp[] = { "PATH=/bin", "HOME=/", "TERM=dumb", NULL };

		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execve(argv[0], argv, envp);
		dprintf(2, "LU-INIT: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		int ready = poll(&p, 1, exited ? 0 : 100);
		ssize_t n;

		if (ready > 0) {
			n = read(fds[0], chunk, sizeof(chunk));
			if (n > 0) {
				relay_feed(&r, chunk, n);
				continue;
			}
			if (n == 0 || errno != EINTR)
				break; /* EOF: every writer is gone */
		}
		if (exited)
			break; /* drained what the program left */
		if (waitpid(pid, &status, WNOHANG) == pid)
			exited = 1;
	}
	if (r.len)
		klog_line(r.buf, r.len);
	close(fds[0]);
	if (!exited && waitpid(pid, &status, 0) < 0)
		return -errno;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return -WTERMSIG(status);
}

/*
 * On a kernel with kmemleak (the debug builds), scan for leaks before the
 * stage ends and print the report, one line per record: the runner counts
 * every "unreferenced object" line as a failure.  kmemleak reports only
 * objects older than 5 s, so the scan waits that long after the programs.
 */
static void kmemleak_scan(void)
{
	static const char path[] = "/sys/kernel/debug/kmemleak";
	char buf[1024];
	int fd, n = 0;
	FILE *f;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	sleep(6);
	if (write(fd, "scan", 4) != 4) {
		say("LU-KMEMLEAK %d error %s\n", stage, strerror(errno));
		close(fd);
		return;
	}
	close(fd);
	f = fopen(path, "r");
	if (!f) {
		say("LU-KMEMLEAK %d error %s\n", stage, strerror(errno));
		return;
	}
	while (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = 0;
		say("%s\n", buf);
		if (strstr(buf, "unreferenced object"))
			n++;
	}
	fclose(f);
	say("LU-KMEMLEAK %d %d\n", stage, n);
}

static void finish(int kexec_loaded)
{
	kmemleak_scan();
	say("LU-REBOOT %d %s\n", stage, kexec_loaded ? "kexec" : "restart");
	sync();
	if (kexec_loaded)
		reboot(LINUX_REBOOT_CMD_KEXEC);
	reboot(LINUX_REBOOT_CMD_RESTART);
	/* Not reached; if it is, QEMU's timeout ends the run. */
	for (;;)
		pause();
}

int main(void)
{
	char line[1024];
	struct utsname uts;
	int kexec_loaded = 0;
	FILE *plan;

	mount_fs();
	setvbuf(stdout, NULL, _IOLBF, 0);
	kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	plan = fopen(PLAN, "r");
	if (!plan) {
		say("LU-INIT: no plan: %s\n", strerror(errno));
		finish(0);
	}

	while (fgets(line, sizeof(line), plan)) {
		char *argv[MAX_ARGS + 1], *save = NULL, *tok;
		int argc = 0;

		line[strcspn(line, "\n")] = 0;
		for (tok = strtok_r(line, " ", &save); tok && argc < MAX_ARGS;
		     tok = strtok_r(NULL, " ", &save))
			argv[argc++] = tok;
		argv[argc] = NULL;
		if (argc == 0 || argv[0][0] == '#')
			continue;

		if (!strcmp(argv[0], "stage") && argc == 3) {
			stage = atoi(argv[1]);
			nstages = atoi(argv[2]);
			uname(&uts);
			say("LU-STAGE %d %d %s %s\n", stage, nstages,
			    uts.release, uts.version);
		} else if (!strcmp(argv[0], "kexec")) {
			int err = do_kexec_load();

			say("LU-KEXEC-LOADED %d %d\n", stage, err);
			kexec_loaded = !err;
		} else if (!strcmp(argv[0], "run") && argc >= 3) {
			int rc = run(&argv[2]);

			say("LU-RESULT %d %s %d\n", stage, argv[1], rc);
		} else {
			say("LU-INIT: bad plan line: %s\n", argv[0]);
		}
	}
	fclose(plan);
	finish(kexec_loaded);
	return 0;
}
