/* SPDX-License-Identifier: GPL-2.0 */

/*
 * Copyright (c) 2025, Google LLC.
 * Pasha Tatashin <pasha.tatashin@soleen.com>
 *
 * The Live Update Orchestrator is written in Rust (kernel/liveupdate/luo.rs);
 * this header declares what its C parts share with it.
 */

#ifndef _LINUX_LUO_INTERNAL_H
#define _LINUX_LUO_INTERNAL_H

#include <linux/liveupdate.h>

/*
 * Entry points of the Rust core for the initcalls in luo_init.c: the early
 * one reads the previous kernel's data, the late one prepares the outgoing
 * data and registers /dev/liveupdate.
 */
int luo_early_init(bool enabled);
int luo_late_init(void);

#ifdef CONFIG_LIVEUPDATE_CORRUPT_TEST
/* Selects how to corrupt the outgoing data at reboot (0: leave it intact). */
void luo_test_set_corrupt(int corrupt_case);
#endif

#ifdef CONFIG_LIVEUPDATE_TEST
void liveupdate_test_register(struct liveupdate_file_handler *fh);
#else
static inline void liveupdate_test_register(struct liveupdate_file_handler *fh) { }
#endif

#endif /* _LINUX_LUO_INTERNAL_H */
