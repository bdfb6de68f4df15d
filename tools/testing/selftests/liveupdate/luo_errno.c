// SPDX-License-Identifier: GPL-2.0

/*
 * Error paths of the Live Update Orchestrator's userspace ABI.
 *
 * Every errno of the /dev/liveupdate and session ioctls that can be reached
 * on a cold boot (no incoming live update data) and that liveupdate.c does
 * not already check: the size-versioned argument structs (short, larger with
 * a non-zero or a zero tail), faulting argument pointers, command numbers
 * with another type byte or with size/direction bits, session names, tokens,
 * files that cannot be preserved, ioctls of the wrong direction, and what
 * closing a session releases.
 *
 * Two behaviours are deliberately different between implementations, so
 * their cases take the expectation from the command line
 * ("--expect=upstream|fixed" as the first argument) or from the LUO_EXPECT
 * environment variable, and are skipped when neither is given:
 *
 * - an ioctl number outside a file's table: upstream returns EINVAL, the
 *   fixed behaviour is ENOTTY (the ioctl number is not supported at all);
 * - a reply that cannot be copied back to userspace: upstream keeps a file
 *   preserved although PRESERVE_FD failed with EFAULT, the fixed behaviour
 *   leaves nothing changed when an ioctl fails.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libliveupdate.h>
#include <linux/liveupdate.h>

#include "../kselftest.h"
#include "../kselftest_harness.h"

#define NAME_LEN LIVEUPDATE_SESSION_NAME_LENGTH

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

enum luo_expect {
	LUO_EXPECT_UNSET,
	LUO_EXPECT_UPSTREAM,
	LUO_EXPECT_FIXED,
};

static enum luo_expect luo_expect;

static const char *const luo_expect_names[] = {
	[LUO_EXPECT_UNSET] = "unset",
	[LUO_EXPECT_UPSTREAM] = "upstream",
	[LUO_EXPECT_FIXED] = "fixed",
};

/* A struct followed by bytes the kernel does not know about. */
struct create_big {
	struct liveupdate_ioctl_create_session s;
	__u8 tail[8];
};

struct preserve_big {
	struct liveupdate_session_preserve_fd s;
	__u8 tail[8];
};

struct get_name_big {
	struct liveupdate_session_get_name s;
	__u8 tail[8];
};

struct unpreserve_big {
	struct liveupdate_session_unpreserve_fd s;
	__u8 tail[8];
};

/* ioctl() as 0 or -errno. */
static int luo_ioctl(int fd, unsigned long cmd, void *arg)
{
	if (ioctl(fd, cmd, arg) < 0)
		return -errno;
	return 0;
}

static void set_name(__u8 *dst, const char *name)
{
	memset(dst, 0, NAME_LEN);
	memcpy(dst, name, strnlen(name, NAME_LEN));
}

static int create_session(int dev, const char *name)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };
	int ret;

	set_name(arg.name, name);
	ret = luo_ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg);
	return ret ? ret : arg.fd;
}

static int retrieve_session(int dev, const __u8 *name)
{
	struct liveupdate_ioctl_retrieve_session arg = { .size = sizeof(arg) };
	int ret;

	memcpy(arg.name, name, NAME_LEN);
	ret = luo_ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg);
	return ret ? ret : arg.fd;
}

static int preserve(int session, int fd, __u64 token)
{
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg),
		.fd = fd,
		.token = token,
	};

	return luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &arg);
}

static long page_size(void)
{
	return sysconf(_SC_PAGESIZE);
}

/* n anonymous read-write pages, or NULL. */
static void *map_pages(int n)
{
	void *p = mmap(NULL, n * page_size(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* The number the next new file descriptor would get. */
static int lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY);

	if (fd >= 0)
		close(fd);
	return fd;
}

static int expected_unknown_nr(void)
{
	return luo_expect == LUO_EXPECT_FIXED ? -ENOTTY : -EINVAL;
}

static int unpreserve(int session, __u64 token)
{
	struct liveupdate_session_unpreserve_fd arg = {
		.size = sizeof(arg),
		.token = token,
	};

	return luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD, &arg);
}

/*
 * LIVEUPDATE_SESSION_UNPRESERVE_FD is not in Linux 7.3: upstream's kernel
 * fails it as an unknown command (EINVAL); the Rust core ("fixed") has it.
 */
static int unpreserve_expect(int fixed)
{
	return luo_expect == LUO_EXPECT_FIXED ? fixed : -EINVAL;
}

FIXTURE(luo) {
	int dev;
};

FIXTURE_SETUP(luo)
{
	self->dev = open(LUO_DEVICE, O_RDWR);
	if (self->dev < 0 && errno == ENOENT)
		SKIP(return, "%s does not exist", LUO_DEVICE);
	ASSERT_GE(self->dev, 0);
}

FIXTURE_TEARDOWN(luo)
{
	if (self->dev >= 0)
		close(self->dev);
}

/* A size below the struct's current size is rejected before anything else. */
TEST_F(luo, create_size_short)
{
	struct liveupdate_ioctl_create_session arg = {};
	const __u32 sizes[] = { 0, 4, 8, sizeof(arg) - 1 };
	unsigned int i;
	int ret;

	set_name(arg.name, "errno-create-short");
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		arg.size = sizes[i];
		ret = luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg);
		EXPECT_EQ(-EINVAL, ret)
			TH_LOG("size %u", sizes[i]);
	}
}

TEST_F(luo, retrieve_size_short)
{
	struct liveupdate_ioctl_retrieve_session arg = {};
	const __u32 sizes[] = { 0, 4, 8, sizeof(arg) - 1 };
	unsigned int i;
	int ret;

	set_name(arg.name, "errno-retrieve-short");
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		arg.size = sizes[i];
		ret = luo_ioctl(self->dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg);
		EXPECT_EQ(-EINVAL, ret)
			TH_LOG("size %u", sizes[i]);
	}
}

/* A larger struct whose unknown tail is not zero: E2BIG, nothing created. */
TEST_F(luo, create_size_big_nonzero_tail)
{
	struct create_big arg = { .s.size = sizeof(arg) };
	int fd;

	set_name(arg.s.name, "errno-create-big");
	arg.tail[sizeof(arg.tail) - 1] = 1;
	EXPECT_EQ(-E2BIG, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				    &arg));

	/* The name is still free. */
	fd = create_session(self->dev, "errno-create-big");
	ASSERT_GE(fd, 0);
	close(fd);
}

TEST_F(luo, retrieve_size_big_nonzero_tail)
{
	struct create_big arg = { .s.size = sizeof(arg) };

	set_name(arg.s.name, "errno-retrieve-big");
	arg.tail[0] = 0xff;
	EXPECT_EQ(-E2BIG, luo_ioctl(self->dev,
				    LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg));
}

/* A larger struct with a zero tail is accepted as the current one. */
TEST_F(luo, create_size_big_zero_tail)
{
	struct liveupdate_session_get_name name = { .size = sizeof(name) };
	struct create_big arg = { .s.size = sizeof(arg) };
	unsigned int i;
	int tail = 0;

	set_name(arg.s.name, "errno-create-big-zero");
	ASSERT_EQ(0, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
			       &arg));
	ASSERT_GE(arg.s.fd, 0);
	/* The reply is the current struct; the tail is left alone. */
	for (i = 0; i < sizeof(arg.tail); i++)
		tail |= arg.tail[i];
	EXPECT_EQ(0, tail);

	ASSERT_EQ(0, luo_ioctl(arg.s.fd, LIVEUPDATE_SESSION_GET_NAME, &name));
	EXPECT_STREQ("errno-create-big-zero", (char *)name.name);
	close(arg.s.fd);
}

/* Past the size checks; a cold boot has no incoming session to find. */
TEST_F(luo, retrieve_size_big_zero_tail)
{
	struct create_big arg = { .s.size = sizeof(arg) };

	set_name(arg.s.name, "errno-retrieve-big-zero");
	EXPECT_EQ(-ENOENT, luo_ioctl(self->dev,
				     LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg));
}

TEST_F(luo, create_null_arg)
{
	EXPECT_EQ(-EFAULT, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     NULL));
}

TEST_F(luo, retrieve_null_arg)
{
	EXPECT_EQ(-EFAULT, luo_ioctl(self->dev,
				     LIVEUPDATE_IOCTL_RETRIEVE_SESSION, NULL));
}

TEST_F(luo, create_unmapped_arg)
{
	void *page = map_pages(1);

	ASSERT_NE(NULL, page);
	ASSERT_EQ(0, munmap(page, page_size()));
	EXPECT_EQ(-EFAULT, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     page));
}

TEST_F(luo, retrieve_unmapped_arg)
{
	void *page = map_pages(1);

	ASSERT_NE(NULL, page);
	ASSERT_EQ(0, munmap(page, page_size()));
	EXPECT_EQ(-EFAULT, luo_ioctl(self->dev,
				     LIVEUPDATE_IOCTL_RETRIEVE_SESSION, page));
}

/* The size field is readable but the name lies in an inaccessible page. */
TEST_F(luo, create_arg_partly_unmapped)
{
	struct liveupdate_ioctl_create_session *arg;
	char *pages = map_pages(2);

	ASSERT_NE(NULL, pages);
	ASSERT_EQ(0, mprotect(pages + page_size(), page_size(), PROT_NONE));
	arg = (void *)(pages + page_size() - 8);
	arg->size = sizeof(*arg);
	EXPECT_EQ(-EFAULT, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     arg));
	munmap(pages, 2 * page_size());
}

/* The right number with another type byte is not this device's ioctl. */
TEST_F(luo, device_wrong_type)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	set_name(arg.name, "errno-wrong-type");
	EXPECT_EQ(-ENOTTY, luo_ioctl(self->dev, _IO(0xBB, 0x00), &arg));
	EXPECT_EQ(-ENOTTY, luo_ioctl(self->dev, _IO(0xBB, 0x01), &arg));
	EXPECT_EQ(-ENOTTY, luo_ioctl(self->dev, _IO(0x00, 0x00), &arg));
}

/* LUO's commands carry no size or direction bits in the number. */
TEST_F(luo, device_size_dir_bits)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };
	const unsigned long cmds[] = {
		_IOWR(LIVEUPDATE_IOCTL_TYPE, 0x00,
		      struct liveupdate_ioctl_create_session),
		_IOW(LIVEUPDATE_IOCTL_TYPE, 0x00,
		     struct liveupdate_ioctl_create_session),
		_IOR(LIVEUPDATE_IOCTL_TYPE, 0x00,
		     struct liveupdate_ioctl_create_session),
		_IOC(_IOC_NONE, LIVEUPDATE_IOCTL_TYPE, 0x00, sizeof(arg)),
		_IOWR(LIVEUPDATE_IOCTL_TYPE, 0x01,
		      struct liveupdate_ioctl_retrieve_session),
	};
	unsigned int i;
	int fd, ret;

	set_name(arg.name, "errno-dir-bits");
	for (i = 0; i < ARRAY_SIZE(cmds); i++) {
		ret = luo_ioctl(self->dev, cmds[i], &arg);
		EXPECT_EQ(-ENOTTY, ret)
			TH_LOG("cmd 0x%lx", cmds[i]);
	}

	fd = create_session(self->dev, "errno-dir-bits");
	ASSERT_GE(fd, 0);
	close(fd);
}

TEST_F(luo, create_name_max_length)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	memset(arg.name, 'm', NAME_LEN - 1);
	ASSERT_EQ(0, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
			       &arg));
	ASSERT_GE(arg.fd, 0);
	/* The 63-character name is taken now. */
	EXPECT_EQ(-EEXIST, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     &arg));
	close(arg.fd);
}

/* 64 name bytes without a NUL, even if a larger struct has zeroes after. */
TEST_F(luo, create_name_no_nul)
{
	struct create_big big = { .s.size = sizeof(big) };
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	memset(arg.name, 'n', NAME_LEN);
	EXPECT_EQ(-EINVAL, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     &arg));

	memset(big.s.name, 'n', NAME_LEN);
	EXPECT_EQ(-EINVAL, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
				     &big));
}

/* Only the bytes before the first NUL name a session. */
TEST_F(luo, create_name_bytes_after_nul)
{
	struct liveupdate_session_get_name name = { .size = sizeof(name) };
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

	memset(arg.name, 'x', NAME_LEN);
	memcpy(arg.name, "errno-after-nul", sizeof("errno-after-nul"));
	ASSERT_EQ(0, luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION,
			       &arg));
	ASSERT_EQ(0, luo_ioctl(arg.fd, LIVEUPDATE_SESSION_GET_NAME, &name));
	EXPECT_STREQ("errno-after-nul", (char *)name.name);
	EXPECT_EQ(-EEXIST, create_session(self->dev, "errno-after-nul"));
	close(arg.fd);
}

/* A cold boot has no incoming sessions: every name is unknown. */
TEST_F(luo, retrieve_unknown_name)
{
	__u8 name[NAME_LEN];

	set_name(name, "errno-unknown");
	EXPECT_EQ(-ENOENT, retrieve_session(self->dev, name));

	memset(name, 'r', NAME_LEN - 1);
	name[NAME_LEN - 1] = 0;
	EXPECT_EQ(-ENOENT, retrieve_session(self->dev, name));

	memset(name, 0, NAME_LEN);
	EXPECT_EQ(-ENOENT, retrieve_session(self->dev, name));

	/* Not validated beyond the lookup: 64 bytes without a NUL. */
	memset(name, 'r', NAME_LEN);
	EXPECT_EQ(-ENOENT, retrieve_session(self->dev, name));
}

/* An outgoing session cannot be retrieved by its name. */
TEST_F(luo, retrieve_outgoing_name)
{
	__u8 name[NAME_LEN];
	int fd;

	fd = create_session(self->dev, "errno-outgoing");
	ASSERT_GE(fd, 0);
	set_name(name, "errno-outgoing");
	EXPECT_EQ(-ENOENT, retrieve_session(self->dev, name));
	close(fd);
}

/* Sessions belong to their own fds, not to the /dev/liveupdate fd. */
TEST_F(luo, session_outlives_device_fd)
{
	int fd;

	fd = create_session(self->dev, "errno-outlives");
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, close(self->dev));
	self->dev = open(LUO_DEVICE, O_RDWR);
	ASSERT_GE(self->dev, 0);
	EXPECT_EQ(-EEXIST, create_session(self->dev, "errno-outlives"));
	close(fd);
}

TEST_F(luo, preserve_bad_fd)
{
	int session, fd;

	session = create_session(self->dev, "errno-bad-fd");
	ASSERT_GE(session, 0);

	EXPECT_EQ(-EBADF, preserve(session, -1, 1));
	fd = memfd_create("errno-closed", 0);
	ASSERT_GE(fd, 0);
	close(fd);
	EXPECT_EQ(-EBADF, preserve(session, fd, 2));
	EXPECT_EQ(-EBADF, preserve(session, 1 << 20, 3));
	close(session);
}

/* Tokens are unique within a session. */
TEST_F(luo, preserve_token_reused)
{
	int session, mfd1, mfd2;

	session = create_session(self->dev, "errno-token");
	ASSERT_GE(session, 0);
	mfd1 = memfd_create("errno-token-1", 0);
	ASSERT_GE(mfd1, 0);
	mfd2 = memfd_create("errno-token-2", 0);
	ASSERT_GE(mfd2, 0);

	ASSERT_EQ(0, preserve(session, mfd1, 0x5eed));
	EXPECT_EQ(-EEXIST, preserve(session, mfd2, 0x5eed));
	/* The refused memfd was not taken. */
	EXPECT_EQ(0, preserve(session, mfd2, 0x5eee));

	close(session);
	close(mfd1);
	close(mfd2);
}

/* ... but not across sessions. */
TEST_F(luo, preserve_token_two_sessions)
{
	int s1, s2, mfd1, mfd2;

	s1 = create_session(self->dev, "errno-token-a");
	ASSERT_GE(s1, 0);
	s2 = create_session(self->dev, "errno-token-b");
	ASSERT_GE(s2, 0);
	mfd1 = memfd_create("errno-token-a", 0);
	ASSERT_GE(mfd1, 0);
	mfd2 = memfd_create("errno-token-b", 0);
	ASSERT_GE(mfd2, 0);

	EXPECT_EQ(0, preserve(s1, mfd1, 42));
	EXPECT_EQ(0, preserve(s2, mfd2, 42));

	close(s1);
	close(s2);
	close(mfd1);
	close(mfd2);
}

TEST_F(luo, preserve_pipe)
{
	int session, fds[2];

	session = create_session(self->dev, "errno-pipe");
	ASSERT_GE(session, 0);
	ASSERT_EQ(0, pipe(fds));
	EXPECT_EQ(-ENOENT, preserve(session, fds[0], 1));
	EXPECT_EQ(-ENOENT, preserve(session, fds[1], 2));
	close(fds[0]);
	close(fds[1]);
	close(session);
}

/* A linked file, even one on tmpfs (shmem), is not a memfd. */
TEST_F(luo, preserve_regular_file)
{
	char path[] = "/tmp/luo_errno.XXXXXX";
	int session, fd;

	session = create_session(self->dev, "errno-regular");
	ASSERT_GE(session, 0);
	fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(-ENOENT, preserve(session, fd, 1));
	unlink(path);
	close(fd);
	close(session);
}

/* LUO's own files cannot be preserved. */
TEST_F(luo, preserve_luo_fds)
{
	int s1, s2;

	s1 = create_session(self->dev, "errno-self-1");
	ASSERT_GE(s1, 0);
	s2 = create_session(self->dev, "errno-self-2");
	ASSERT_GE(s2, 0);
	EXPECT_EQ(-ENOENT, preserve(s1, s1, 1));
	EXPECT_EQ(-ENOENT, preserve(s1, s2, 2));
	EXPECT_EQ(-ENOENT, preserve(s1, self->dev, 3));
	close(s1);
	close(s2);
}

/* A second open file of an already preserved memfd is the same object. */
TEST_F(luo, preserve_same_memfd_reopened)
{
	int s1, s2, mfd, again;
	char path[64];

	s1 = create_session(self->dev, "errno-reopen-1");
	ASSERT_GE(s1, 0);
	s2 = create_session(self->dev, "errno-reopen-2");
	ASSERT_GE(s2, 0);
	mfd = memfd_create("errno-reopen", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(s1, mfd, 1));

	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	again = open(path, O_RDWR);
	ASSERT_GE(again, 0);
	EXPECT_EQ(-EBUSY, preserve(s2, again, 1));
	EXPECT_EQ(-EBUSY, preserve(s1, again, 2));

	close(again);
	close(mfd);
	close(s1);
	close(s2);
}

/* RETRIEVE_FD and FINISH are for incoming (retrieved) sessions only. */
TEST_F(luo, retrieve_fd_outgoing)
{
	struct liveupdate_session_retrieve_fd arg = { .size = sizeof(arg) };
	int session, mfd;

	session = create_session(self->dev, "errno-retrieve-fd");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-retrieve-fd", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 7));

	arg.token = 7;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD,
				     &arg));
	arg.token = 8;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD,
				     &arg));
	close(mfd);
	close(session);
}

TEST_F(luo, finish_outgoing)
{
	struct liveupdate_session_finish arg = { .size = sizeof(arg) };
	int session;

	session = create_session(self->dev, "errno-finish");
	ASSERT_GE(session, 0);
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_FINISH, &arg));
	close(session);
}

/*
 * UNPRESERVE_FD takes one file back out of an outgoing session: the token and
 * the file are free again, and the memfd's size is no longer frozen.
 */
TEST_F(luo, unpreserve_fd)
{
	int session, other, mfd;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");
	session = create_session(self->dev, "errno-unpreserve");
	ASSERT_GE(session, 0);
	other = create_session(self->dev, "errno-unpreserve-other");
	ASSERT_GE(other, 0);
	mfd = memfd_create("errno-unpreserve", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, ftruncate(mfd, 8192));
	ASSERT_EQ(0, preserve(session, mfd, 5));
	EXPECT_EQ(-1, ftruncate(mfd, 4096));
	EXPECT_EQ(unpreserve_expect(0), unpreserve(session, 5));
	if (luo_expect == LUO_EXPECT_FIXED) {
		EXPECT_EQ(0, ftruncate(mfd, 4096));
		EXPECT_EQ(-ENOENT, unpreserve(session, 5));
		/* The memfd can go into another session, the token is free. */
		EXPECT_EQ(0, preserve(other, mfd, 5));
		EXPECT_EQ(0, unpreserve(other, 5));
		EXPECT_EQ(0, preserve(session, mfd, 5));
	} else {
		EXPECT_EQ(-EEXIST, preserve(session, mfd, 5));
	}
	close(mfd);
	close(other);
	close(session);
}

TEST_F(luo, unpreserve_fd_bad_token)
{
	int session, mfd;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");
	session = create_session(self->dev, "errno-unpreserve-token");
	ASSERT_GE(session, 0);
	EXPECT_EQ(unpreserve_expect(-ENOENT), unpreserve(session, 0));
	mfd = memfd_create("errno-unpreserve-token", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 1));
	EXPECT_EQ(unpreserve_expect(-ENOENT), unpreserve(session, 2));
	EXPECT_EQ(unpreserve_expect(-ENOENT), unpreserve(session, ~0ULL));
	/* Nothing changed: the file is still preserved under its token. */
	EXPECT_EQ(-EEXIST, preserve(session, mfd, 1));
	close(mfd);
	close(session);
}

TEST_F(luo, unpreserve_fd_reserved)
{
	struct liveupdate_session_unpreserve_fd arg = { .size = sizeof(arg) };
	int session, mfd;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");
	session = create_session(self->dev, "errno-unpreserve-reserved");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-unpreserve-reserved", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 1));
	arg.token = 1;
	arg.reserved = 1;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD,
				     &arg));
	arg.reserved = 0x80000000;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD,
				     &arg));
	EXPECT_EQ(-EEXIST, preserve(session, mfd, 1));
	close(mfd);
	close(session);
}

TEST_F(luo, unpreserve_fd_size_rules)
{
	struct liveupdate_session_unpreserve_fd arg = { .token = 1 };
	struct unpreserve_big big = { .s.size = sizeof(big), .s.token = 1 };
	const __u32 sizes[] = { 0, 4, 8, sizeof(arg) - 1 };
	int session, mfd;
	unsigned int i;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");
	session = create_session(self->dev, "errno-unpreserve-size");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-unpreserve-size", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 1));
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		arg.size = sizes[i];
		EXPECT_EQ(-EINVAL,
			  luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD,
				    &arg))
			TH_LOG("size %u", sizes[i]);
	}
	big.tail[7] = 1;
	EXPECT_EQ(unpreserve_expect(-E2BIG),
		  luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD, &big));
	/* Nothing changed so far. */
	EXPECT_EQ(-EEXIST, preserve(session, mfd, 1));
	big.tail[7] = 0;
	EXPECT_EQ(unpreserve_expect(0),
		  luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD, &big));
	close(mfd);
	close(session);
}

/* A reply that cannot be written back fails the call before it unpreserves. */
TEST_F(luo, unpreserve_fd_reply_fault)
{
	struct liveupdate_session_unpreserve_fd *arg;
	int session, mfd;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");
	session = create_session(self->dev, "errno-unpreserve-fault");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-unpreserve-fault", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 1));
	arg = map_pages(1);
	ASSERT_NE(NULL, arg);
	arg->size = sizeof(*arg);
	arg->token = 1;
	ASSERT_EQ(0, mprotect(arg, page_size(), PROT_READ));
	EXPECT_EQ(unpreserve_expect(-EFAULT),
		  luo_ioctl(session, LIVEUPDATE_SESSION_UNPRESERVE_FD, arg));
	EXPECT_EQ(-EEXIST, preserve(session, mfd, 1));
	EXPECT_EQ(unpreserve_expect(0), unpreserve(session, 1));
	munmap(arg, page_size());
	close(mfd);
	close(session);
}

TEST_F(luo, get_name_reserved)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	int session;

	session = create_session(self->dev, "errno-reserved");
	ASSERT_GE(session, 0);
	arg.reserved = 1;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME,
				     &arg));
	arg.reserved = 0x80000000;
	EXPECT_EQ(-EINVAL, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME,
				     &arg));
	close(session);
}

TEST_F(luo, preserve_size_short)
{
	struct liveupdate_session_preserve_fd arg = {};
	const __u32 sizes[] = { 0, 4, 8, sizeof(arg) - 1 };
	int session, mfd, ret;
	unsigned int i;

	session = create_session(self->dev, "errno-preserve-short");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-preserve-short", 0);
	ASSERT_GE(mfd, 0);
	arg.fd = mfd;
	arg.token = 1;
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		arg.size = sizes[i];
		ret = luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &arg);
		EXPECT_EQ(-EINVAL, ret)
			TH_LOG("size %u", sizes[i]);
	}
	/* Nothing was preserved. */
	EXPECT_EQ(0, preserve(session, mfd, 1));
	close(mfd);
	close(session);
}

TEST_F(luo, preserve_size_big_nonzero_tail)
{
	struct preserve_big arg = { .s.size = sizeof(arg) };
	int session, mfd;

	session = create_session(self->dev, "errno-preserve-big");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-preserve-big", 0);
	ASSERT_GE(mfd, 0);
	arg.s.fd = mfd;
	arg.s.token = 1;
	arg.tail[3] = 0x10;
	EXPECT_EQ(-E2BIG, luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD,
				    &arg));
	EXPECT_EQ(0, preserve(session, mfd, 1));
	close(mfd);
	close(session);
}

TEST_F(luo, preserve_size_big_zero_tail)
{
	struct preserve_big arg = { .s.size = sizeof(arg) };
	int session, mfd;

	session = create_session(self->dev, "errno-preserve-big-zero");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-preserve-big-zero", 0);
	ASSERT_GE(mfd, 0);
	arg.s.fd = mfd;
	arg.s.token = 1;
	EXPECT_EQ(0, luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &arg));
	EXPECT_EQ(-EEXIST, preserve(session, mfd, 1));
	close(mfd);
	close(session);
}

TEST_F(luo, get_name_size_short)
{
	struct liveupdate_session_get_name arg = {};
	const __u32 sizes[] = { 0, 4, 8, sizeof(arg) - 1 };
	int session, ret;
	unsigned int i;

	session = create_session(self->dev, "errno-name-short");
	ASSERT_GE(session, 0);
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		arg.size = sizes[i];
		ret = luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME, &arg);
		EXPECT_EQ(-EINVAL, ret)
			TH_LOG("size %u", sizes[i]);
	}
	close(session);
}

TEST_F(luo, get_name_size_big_nonzero_tail)
{
	struct get_name_big arg = { .s.size = sizeof(arg) };
	int session;

	session = create_session(self->dev, "errno-name-big");
	ASSERT_GE(session, 0);
	arg.tail[7] = 1;
	EXPECT_EQ(-E2BIG, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME,
				    &arg));
	close(session);
}

TEST_F(luo, get_name_size_big_zero_tail)
{
	struct get_name_big arg = { .s.size = sizeof(arg) };
	int session;

	session = create_session(self->dev, "errno-name-big-zero");
	ASSERT_GE(session, 0);
	EXPECT_EQ(0, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME, &arg));
	EXPECT_STREQ("errno-name-big-zero", (char *)arg.s.name);
	close(session);
}

TEST_F(luo, session_null_arg)
{
	int session;

	session = create_session(self->dev, "errno-session-null");
	ASSERT_GE(session, 0);
	EXPECT_EQ(-EFAULT, luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD,
				     NULL));
	EXPECT_EQ(-EFAULT, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME,
				     NULL));
	close(session);
}

TEST_F(luo, session_wrong_type)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	int session;

	session = create_session(self->dev, "errno-session-type");
	ASSERT_GE(session, 0);
	EXPECT_EQ(-ENOTTY, luo_ioctl(session, _IO(0xBB, 0x40), &arg));
	EXPECT_EQ(-ENOTTY, luo_ioctl(session, _IO(0xBB, 0x43), &arg));
	close(session);
}

TEST_F(luo, session_size_dir_bits)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	const unsigned long cmds[] = {
		_IOWR(LIVEUPDATE_IOCTL_TYPE, 0x40,
		      struct liveupdate_session_preserve_fd),
		_IOW(LIVEUPDATE_IOCTL_TYPE, 0x40,
		     struct liveupdate_session_preserve_fd),
		_IOWR(LIVEUPDATE_IOCTL_TYPE, 0x43,
		      struct liveupdate_session_get_name),
		_IOR(LIVEUPDATE_IOCTL_TYPE, 0x43,
		     struct liveupdate_session_get_name),
	};
	unsigned int i;
	int session, ret;

	session = create_session(self->dev, "errno-session-dir");
	ASSERT_GE(session, 0);
	for (i = 0; i < ARRAY_SIZE(cmds); i++) {
		ret = luo_ioctl(session, cmds[i], &arg);
		EXPECT_EQ(-ENOTTY, ret)
			TH_LOG("cmd 0x%lx", cmds[i]);
	}
	close(session);
}

/* A failed reply copy is a failure on both sides of the deviation. */
TEST_F(luo, get_name_reply_fault)
{
	struct liveupdate_session_get_name *arg;
	void *page = map_pages(1);
	int session;

	ASSERT_NE(NULL, page);
	session = create_session(self->dev, "errno-name-fault");
	ASSERT_GE(session, 0);
	arg = page;
	arg->size = sizeof(*arg);
	ASSERT_EQ(0, mprotect(page, page_size(), PROT_READ));
	EXPECT_EQ(-EFAULT, luo_ioctl(session, LIVEUPDATE_SESSION_GET_NAME,
				     arg));
	close(session);
	munmap(page, page_size());
}

/* Closing an outgoing session unpreserves its files and frees its name. */
TEST_F(luo, close_releases_session)
{
	int session, mfd;

	session = create_session(self->dev, "errno-release");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-release", 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, preserve(session, mfd, 1));
	ASSERT_EQ(0, close(session));

	session = create_session(self->dev, "errno-release");
	ASSERT_GE(session, 0);
	EXPECT_EQ(0, preserve(session, mfd, 1));
	ASSERT_EQ(0, close(session));

	/* ... also in a session of another name. */
	session = create_session(self->dev, "errno-release-2");
	ASSERT_GE(session, 0);
	EXPECT_EQ(0, preserve(session, mfd, 2));
	close(session);
	close(mfd);
}

/* Deviation: an ioctl number outside the device's table. */
TEST_F(luo, deviation_unknown_nr_device)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };
	const unsigned long cmds[] = {
		_IO(LIVEUPDATE_IOCTL_TYPE, 0x05),
		_IO(LIVEUPDATE_IOCTL_TYPE, 0x02),
		_IO(LIVEUPDATE_IOCTL_TYPE, 0xff),
		LIVEUPDATE_SESSION_PRESERVE_FD,
		LIVEUPDATE_SESSION_GET_NAME,
		_IO(0xBB, 0x05),
	};
	unsigned int i;
	int ret;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");

	set_name(arg.name, "errno-unknown-nr");
	for (i = 0; i < ARRAY_SIZE(cmds); i++) {
		ret = luo_ioctl(self->dev, cmds[i], &arg);
		TH_LOG("device cmd 0x%lx: %s (expect %s: %s)", cmds[i],
		       strerror(-ret), luo_expect_names[luo_expect],
		       strerror(-expected_unknown_nr()));
		EXPECT_EQ(expected_unknown_nr(), ret);
	}
}

/* Deviation: an ioctl number outside the session table. */
TEST_F(luo, deviation_unknown_nr_session)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	const unsigned long cmds[] = {
		_IO(LIVEUPDATE_IOCTL_TYPE, 0x45),
		_IO(LIVEUPDATE_IOCTL_TYPE, 0x3f),
		_IO(LIVEUPDATE_IOCTL_TYPE, 0x80),
		LIVEUPDATE_IOCTL_CREATE_SESSION,
		LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
		_IO(0xBB, 0x44),
	};
	unsigned int i;
	int session, ret;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");

	session = create_session(self->dev, "errno-unknown-nr-session");
	ASSERT_GE(session, 0);
	for (i = 0; i < ARRAY_SIZE(cmds); i++) {
		ret = luo_ioctl(session, cmds[i], &arg);
		TH_LOG("session cmd 0x%lx: %s (expect %s: %s)", cmds[i],
		       strerror(-ret), luo_expect_names[luo_expect],
		       strerror(-expected_unknown_nr()));
		EXPECT_EQ(expected_unknown_nr(), ret);
	}
	close(session);
}

/*
 * Deviation: PRESERVE_FD whose reply cannot be written back. Upstream
 * preserves the file and then fails with EFAULT, so a retry finds the token
 * taken; the fixed behaviour preserves nothing and the retry succeeds.
 */
TEST_F(luo, deviation_preserve_reply_fault)
{
	struct liveupdate_session_preserve_fd *arg;
	void *page = map_pages(1);
	int session, mfd, ret, retry;

	if (luo_expect == LUO_EXPECT_UNSET)
		SKIP(return, "no expectation: --expect=upstream|fixed or LUO_EXPECT");

	ASSERT_NE(NULL, page);
	session = create_session(self->dev, "errno-preserve-fault");
	ASSERT_GE(session, 0);
	mfd = memfd_create("errno-preserve-fault", 0);
	ASSERT_GE(mfd, 0);

	arg = page;
	arg->size = sizeof(*arg);
	arg->fd = mfd;
	arg->token = 0xfa17;
	ASSERT_EQ(0, mprotect(page, page_size(), PROT_READ));
	ret = luo_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, arg);
	retry = preserve(session, mfd, 0xfa17);
	TH_LOG("read-only reply: PRESERVE_FD %s; retry: %s (expect %s)",
	       strerror(-ret), retry ? strerror(-retry) : "preserved",
	       luo_expect_names[luo_expect]);
	EXPECT_EQ(-EFAULT, ret);
	EXPECT_EQ(luo_expect == LUO_EXPECT_FIXED ? 0 : -EEXIST, retry);

	close(mfd);
	close(session);
	munmap(page, page_size());
}

/*
 * CREATE_SESSION whose reply cannot be written back: EFAULT, no fd is
 * installed and the session is gone, so the name can be used again. The
 * same on both sides of the deviation (upstream drops the new session's
 * file when the reply fails).
 */
TEST_F(luo, create_reply_fault)
{
	struct liveupdate_ioctl_create_session *arg;
	void *page = map_pages(1);
	int ret, free_before, free_after, fd;

	ASSERT_NE(NULL, page);
	arg = page;
	arg->size = sizeof(*arg);
	set_name(arg->name, "errno-create-fault");
	ASSERT_EQ(0, mprotect(page, page_size(), PROT_READ));

	free_before = lowest_free_fd();
	ret = luo_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
	free_after = lowest_free_fd();
	fd = create_session(self->dev, "errno-create-fault");
	TH_LOG("read-only reply: CREATE_SESSION %s; free fd %d -> %d; retry: %s",
	       strerror(-ret), free_before, free_after,
	       fd < 0 ? strerror(-fd) : "created");
	EXPECT_EQ(-EFAULT, ret);
	EXPECT_EQ(free_before, free_after);
	ASSERT_GE(fd, 0);
	close(fd);
	munmap(page, page_size());
}

int main(int argc, char **argv)
{
	const char *expect = getenv("LUO_EXPECT");
	unsigned int i;

	if (argc > 1 && !strncmp(argv[1], "--expect=", strlen("--expect="))) {
		expect = argv[1] + strlen("--expect=");
		argv[1] = argv[0];
		argc--;
		argv++;
	}

	if (expect && *expect) {
		for (i = LUO_EXPECT_UPSTREAM; i < ARRAY_SIZE(luo_expect_names); i++)
			if (!strcmp(expect, luo_expect_names[i]))
				luo_expect = i;
		if (luo_expect == LUO_EXPECT_UNSET) {
			fprintf(stderr, "%s: expectation '%s' is not upstream or fixed\n",
				argv[0], expect);
			return KSFT_FAIL;
		}
	}

	return test_harness_run(argc, argv);
}
