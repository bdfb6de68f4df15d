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
 * Everything the host needs is printed on the console as lines starting with
 * "LU-" so that the runner can parse them out of the serial log:
 *
 *   LU-STAGE K N <uname -r> <uname -v>
 *   LU-RESULT K NAME <exit status or -signal>
 *   LU-KEXEC-LOADED K <0 or -errno>
 *   LU-REBOOT K kexec|restart
 *
 * Static glibc binary; nothing here is specific to a flavor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
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

static int run(char **argv)
{
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *envp[] = { "PATH=/bin", "HOME=/", "TERM=dumb", NULL };

		execve(argv[0], argv, envp);
		say("LU-INIT: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return -WTERMSIG(status);
}

static void finish(int kexec_loaded)
{
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
