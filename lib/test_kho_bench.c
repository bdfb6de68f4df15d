// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark of KHO's folio preservation and of its boot-time restore
 *
 * Booted with test_kho_bench.mib=M (default 0: the test does nothing), the
 * first kernel allocates M MiB of folios of order test_kho_bench.order at
 * late_initcall.  It then runs test_kho_bench.reps rounds (default 1) of
 * kho_preserve_folio() on every folio followed by kho_unpreserve_folio() on
 * every folio, and preserves every folio a last time: they stay preserved
 * across the next kexec, so that the next kernel's KHO has M MiB of folios
 * to restore at boot.  Each pass over the folios prints one line:
 *
 *   test_kho_bench: preserve round=R order=O folios=N ns=T free_delta=D
 *   test_kho_bench: unpreserve round=R order=O folios=N ns=T free_delta=D
 *   test_kho_bench: preserve round=final order=O folios=N ns=T free_delta=D
 *
 * T is the time of the pass (ktime_get_ns()) and D the drop of free pages
 * across it, counting the pages of the buddy allocator and of the per-CPU
 * lists: the pages KHO allocated for its radix tree (negative: freed).
 * The folios and their array are allocated before the first pass.
 *
 * With CONFIG_TEST_KHO_BENCH, mm/mm_init.c measures the time a kernel booted
 * by KHO spends in kho_memory_init_early() and kho_memory_init() in cycles
 * of get_cycles().  For these to be converted, this test prints the
 * counter's frequency (0 if unknown) and the pages the kernel manages, once
 * on a KHO boot and, before it allocates, on a boot with test_kho_bench.mib:
 *
 *   test_kho_bench: boot kho=K counter_khz=F totalram_pages=P page_size=S
 *
 * A kernel booted by KHO takes the preserved folios out of its memory, so
 * its totalram_pages is lower than the first kernel's by at least N << O.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/init.h>
#include <linux/kexec_handover.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sprintf.h>
#include <linux/timex.h>
#include <linux/vmstat.h>
#ifdef CONFIG_ARM_ARCH_TIMER
#include <clocksource/arm_arch_timer.h>
#endif

static unsigned int kho_bench_mib;
module_param_named(mib, kho_bench_mib, uint, 0444);
MODULE_PARM_DESC(mib, "MiB of folios to preserve (0: do nothing)");

static unsigned int kho_bench_order;
module_param_named(order, kho_bench_order, uint, 0444);
MODULE_PARM_DESC(order, "order of the folios");

static unsigned int kho_bench_reps = 1;
module_param_named(reps, kho_bench_reps, uint, 0444);
MODULE_PARM_DESC(reps, "preserve + unpreserve rounds before the last preserve");

/* Folios between two chances to reschedule. */
#define KHO_BENCH_BATCH 4096

/* The frequency of get_cycles() in kHz, or 0 if not known. */
static unsigned long kho_bench_counter_khz(void)
{
#if defined(CONFIG_X86_TSC)
	return tsc_khz;
#elif defined(CONFIG_ARM_ARCH_TIMER)
	return arch_timer_get_rate() / 1000;
#else
	return 0;
#endif
}

/* Free pages: in the buddy allocator and on the per-CPU lists. */
static long kho_bench_free_pages(void)
{
	struct zone *zone;
	long free = 0;
	int cpu;

	for_each_populated_zone(zone) {
		free += zone_page_state_snapshot(zone, NR_FREE_PAGES);
		for_each_online_cpu(cpu)
			free += READ_ONCE(per_cpu_ptr(zone->per_cpu_pageset, cpu)->count);
	}
	return free;
}

static void kho_bench_unpreserve(struct folio **folios, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		kho_unpreserve_folio(folios[i]);
		if (!(i % KHO_BENCH_BATCH))
			cond_resched();
	}
}

/* Preserve every folio; on an error, unpreserve those preserved and fail. */
static int kho_bench_preserve(struct folio **folios, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		int err = kho_preserve_folio(folios[i]);

		if (err) {
			pr_err("FAIL: kho_preserve_folio() of folio %lu: %d\n", i, err);
			kho_bench_unpreserve(folios, i);
			return err;
		}
		if (!(i % KHO_BENCH_BATCH))
			cond_resched();
	}
	return 0;
}

static void kho_bench_report(const char *pass, const char *round,
			     unsigned long n, u64 ns, long free_delta)
{
	pr_info("%s round=%s order=%u folios=%lu ns=%llu free_delta=%ld\n",
		pass, round, kho_bench_order, n, ns, free_delta);
}

/* One timed pass of preserve (or unpreserve) over the folios. */
static int kho_bench_pass(struct folio **folios, unsigned long n,
			  bool preserve, const char *round)
{
	long free = kho_bench_free_pages();
	u64 t0 = ktime_get_ns();
	int err = 0;

	if (preserve)
		err = kho_bench_preserve(folios, n);
	else
		kho_bench_unpreserve(folios, n);
	if (!err)
		kho_bench_report(preserve ? "preserve" : "unpreserve", round, n,
				 ktime_get_ns() - t0,
				 free - kho_bench_free_pages());
	return err;
}

static int __init kho_bench_init(void)
{
	struct folio **folios;
	unsigned long i, n;
	char round[16];
	int err = 0;

	if (is_kho_boot() || kho_bench_mib)
		pr_info("boot kho=%d counter_khz=%lu totalram_pages=%lu page_size=%lu\n",
			is_kho_boot(), kho_bench_counter_khz(), totalram_pages(),
			PAGE_SIZE);
	if (is_kho_boot() || !kho_bench_mib)
		return 0;

	if (kho_bench_order > MAX_PAGE_ORDER) {
		pr_err("FAIL: order %u above MAX_PAGE_ORDER\n", kho_bench_order);
		return 0;
	}
	n = ((unsigned long)kho_bench_mib << 20) >> (PAGE_SHIFT + kho_bench_order);
	if (!n) {
		pr_err("FAIL: %u MiB is less than one folio\n", kho_bench_mib);
		return 0;
	}
	folios = kvmalloc_array(n, sizeof(*folios), GFP_KERNEL);
	if (!folios)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		folios[i] = folio_alloc(GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN,
					kho_bench_order);
		if (!folios[i])
			break;
		if (!(i % KHO_BENCH_BATCH))
			cond_resched();
	}
	if (i < n) {
		pr_err("FAIL: allocated %lu of %lu folios of order %u\n", i, n,
		       kho_bench_order);
		goto free;
	}

	for (unsigned int r = 1; r <= kho_bench_reps; r++) {
		snprintf(round, sizeof(round), "%u", r);
		err = kho_bench_pass(folios, n, true, round);
		if (err)
			goto free;
		kho_bench_pass(folios, n, false, round);
	}
	/* The last pass stays preserved for the next kernel. */
	err = kho_bench_pass(folios, n, true, "final");
	if (err)
		goto free;
	kvfree(folios);
	return 0;

free:
	while (i--)
		folio_put(folios[i]);
	kvfree(folios);
	return 0;
}
late_initcall(kho_bench_init);
