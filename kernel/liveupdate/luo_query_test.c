// SPDX-License-Identifier: GPL-2.0
/*
 * Test of liveupdate_fd_data_query(): a file handler that, like an IOMMU
 * driver, looks at its incoming files at boot, before userspace opens
 * /dev/liveupdate.
 *
 * The handler ("luo-query-test-v1") preserves the files of its debugfs file
 * /sys/kernel/debug/luo_query_test. Their data handle is 0x5100 plus the
 * number of files it preserved before; nothing else is kept, so there is
 * nothing to free. After a kexec, at late_initcall, the test registers the
 * handler and prints what the query reports:
 *
 *   luo_query_test: N incoming files
 *   luo_query_test: session=NAME token=T data=0xD     (one line per file)
 *
 * It first asks with no room (the count, -ENOSPC), then with exactly enough.
 * A retrieved file is an anonymous file "[luo_query_test]".
 *
 * The test only runs when the kernel is booted with luo_query_test.enable=1,
 * so that its handler is not seen by other tests.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/liveupdate.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>

#define LUO_QUERY_TEST_COMPATIBLE "luo-query-test-v1"

static bool enable;
module_param(enable, bool, 0444);
MODULE_PARM_DESC(enable, "Register the test handler and report its incoming files");

static u64 luo_query_test_count;

static const struct file_operations luo_query_test_fops = {
	.owner = THIS_MODULE,
};

static bool luo_query_test_can_preserve(struct liveupdate_file_handler *fh,
					struct file *file)
{
	return file->f_op == &luo_query_test_fops;
}

static int luo_query_test_preserve(struct liveupdate_file_op_args *args)
{
	args->serialized_data = 0x5100 + luo_query_test_count++;
	return 0;
}

static void luo_query_test_unpreserve(struct liveupdate_file_op_args *args)
{
}

static int luo_query_test_retrieve(struct liveupdate_file_op_args *args)
{
	struct file *file;

	file = anon_inode_getfile("[luo_query_test]", &luo_query_test_fops,
				  NULL, O_RDWR);
	if (IS_ERR(file))
		return PTR_ERR(file);
	args->file = file;
	return 0;
}

static void luo_query_test_finish(struct liveupdate_file_op_args *args)
{
}

static const struct liveupdate_file_ops luo_query_test_ops = {
	.can_preserve = luo_query_test_can_preserve,
	.preserve = luo_query_test_preserve,
	.unpreserve = luo_query_test_unpreserve,
	.retrieve = luo_query_test_retrieve,
	.finish = luo_query_test_finish,
	.owner = THIS_MODULE,
};

static struct liveupdate_file_handler luo_query_test_handler = {
	.ops = &luo_query_test_ops,
	.compatible = LUO_QUERY_TEST_COMPATIBLE,
};

static void __init luo_query_test_report(void)
{
	struct liveupdate_fd *fds;
	long count = 0, i;
	int err;

	err = liveupdate_fd_data_query(&luo_query_test_handler, NULL, &count);
	if (err && err != -ENOSPC) {
		pr_err("query failed: %d\n", err);
		return;
	}
	if (err != (count ? -ENOSPC : 0)) {
		pr_err("query without room: %d for %ld files\n", err, count);
		return;
	}
	pr_info("%ld incoming files\n", count);
	if (!count)
		return;

	fds = kcalloc(count, sizeof(*fds), GFP_KERNEL);
	if (!fds)
		return;
	err = liveupdate_fd_data_query(&luo_query_test_handler, fds, &count);
	if (err) {
		pr_err("query failed: %d\n", err);
		goto out;
	}
	for (i = 0; i < count; i++)
		pr_info("session=%.*s token=%llu data=%#llx\n",
			LIVEUPDATE_SESSION_NAME_LENGTH, fds[i].session,
			fds[i].token, fds[i].data);
out:
	kfree(fds);
}

static int __init luo_query_test_init(void)
{
	int err;

	if (!enable || !liveupdate_enabled())
		return 0;
	err = liveupdate_register_file_handler(&luo_query_test_handler);
	if (err) {
		pr_err("cannot register the handler: %d\n", err);
		return 0;
	}
	/* Unsafe: an open file gets luo_query_test_fops itself, not a proxy. */
	debugfs_create_file_unsafe("luo_query_test", 0600, NULL, NULL,
				   &luo_query_test_fops);
	luo_query_test_report();
	return 0;
}
late_initcall(luo_query_test_init);
