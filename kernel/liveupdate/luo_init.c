// SPDX-License-Identifier: GPL-2.0

/*
 * Boot-time entry points of the Live Update Orchestrator.
 *
 * The orchestrator is written in Rust (luo.rs). Rust code in the kernel can
 * only run from device_initcall() through module!, and cannot define a
 * command-line parameter without a module prefix. The orchestrator needs
 * "liveupdate=" and two other initcall levels, so they stay here:
 *
 * - early_initcall: read the previous kernel's data before any file handler
 *   registers (handlers and the FLB test look it up while registering);
 * - late_initcall: prepare the outgoing data and register /dev/liveupdate
 *   once KHO is up (fs_initcall), and before the handlers' own late
 *   initcalls (kernel/ links before mm/).
 */

#define pr_fmt(fmt) "luo: " fmt

#include <linux/init.h>
#include <linux/export.h>
#include <linux/kstrtox.h>
#include <linux/liveupdate.h>
#include "luo_internal.h"

static bool luo_enabled_param;

static int __init early_liveupdate_param(char *buf)
{
	return kstrtobool(buf, &luo_enabled_param);
}
early_param("liveupdate", early_liveupdate_param);

#ifdef CONFIG_LIVEUPDATE_CORRUPT_TEST
static int __init luo_test_corrupt_param(char *buf)
{
	int corrupt_case;
	int err = kstrtoint(buf, 0, &corrupt_case);

	if (!err)
		luo_test_set_corrupt(corrupt_case);
	return err;
}
early_param("luo_test_corrupt", luo_test_corrupt_param);
#endif

static int __init liveupdate_early_init(void)
{
	return luo_early_init(luo_enabled_param);
}
early_initcall(liveupdate_early_init);

static int __init liveupdate_late_init(void)
{
	return luo_late_init();
}
late_initcall(liveupdate_late_init);

/*
 * The C API of include/linux/liveupdate.h, defined in Rust (ffi.rs): a file
 * handler or FLB in a module registers through it, and its files hold a
 * reference on the module.
 */
EXPORT_SYMBOL_GPL(liveupdate_register_file_handler);
EXPORT_SYMBOL_GPL(liveupdate_unregister_file_handler);
EXPORT_SYMBOL_GPL(liveupdate_register_flb);
EXPORT_SYMBOL_GPL(liveupdate_unregister_flb);
EXPORT_SYMBOL_GPL(liveupdate_flb_get_incoming);
EXPORT_SYMBOL_GPL(liveupdate_flb_put_incoming);
EXPORT_SYMBOL_GPL(liveupdate_flb_get_outgoing);
EXPORT_SYMBOL_GPL(liveupdate_flb_put_outgoing);
EXPORT_SYMBOL_GPL(liveupdate_get_token_outgoing);
EXPORT_SYMBOL_GPL(liveupdate_get_file_incoming);
EXPORT_SYMBOL_GPL(liveupdate_fd_data_query);
