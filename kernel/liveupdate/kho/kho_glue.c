// SPDX-License-Identifier: GPL-2.0-only

/*
 * The C part of Kexec HandOver, which is written in Rust (kho.rs).
 *
 * Everything here is something Rust code cannot express in this kernel, each
 * kept as thin as possible:
 *
 * - early_param(): "kho=" and "kho_scratch=" are read by setup_arch(), long
 *   before any initcall; the macro places a struct in .init.setup;
 * - fs_initcall(): Rust built-in code only gets device_initcall() (module!),
 *   and KHO must be up before the LUO and memblock's late initcalls;
 * - EXPORT_SYMBOL_GPL(): the functions of include/linux/kexec_handover.h
 *   and kho_radix_tree.h, Rust ones included, are exported to C modules here;
 * - kho_preserve_folio() and kho_unpreserve_folio(), one call per folio on
 *   the hottest path: inline C helpers compute the folio's place;
 * - the memory-management internals KHO needs (mm/internal.h, mm/mm_init.h,
 *   mm/vmalloc.h), which are private to mm/ and not part of the bindings,
 *   exactly as upstream's kexec_handover.c uses them.
 */

#define pr_fmt(fmt) "KHO: " fmt

#include <linux/crash_dump.h>
#include <linux/init.h>
#include <linux/kasan.h>
#include <linux/kmemleak.h>
#include <linux/kstrtox.h>
#include <linux/page-isolation.h>
#include <linux/pgalloc_tag.h>
#include <linux/reboot.h>
#include <linux/string.h>

#include "../../../mm/internal.h"
#include "../../../mm/mm_init.h"
#include "../../../mm/vmalloc.h"
#include "kho_internal.h"

static int __init kho_parse_enable(char *p)
{
	bool enable;
	int err = kstrtobool(p, &enable);

	if (!err)
		kho_set_enabled(enable);
	return err;
}
early_param("kho", kho_parse_enable);

/*
 * kho_scratch=N% scales the scratch areas as a percentage of the memory
 * memblock allocated for the kernel; kho_scratch=l[KMG],g[KMG],n[KMG] sets
 * the lowmem, global and per-node sizes explicitly.
 */
static int __init kho_parse_scratch_size(char *p)
{
	unsigned long sizes[3];
	unsigned int scale;
	size_t total = 0;
	size_t len;
	int i;

	if (!p)
		return -EINVAL;

	len = strlen(p);
	if (!len)
		return -EINVAL;

	if (p[len - 1] == '%') {
		/* unsigned int max is 4,294,967,295, 10 chars */
		char s_scale[11] = {};
		int ret;

		if (len > ARRAY_SIZE(s_scale))
			return -EINVAL;

		memcpy(s_scale, p, len - 1);
		ret = kstrtouint(s_scale, 10, &scale);
		if (ret)
			return ret;
		pr_notice("scratch scale is %u%%\n", scale);
		kho_set_scratch_sizes(scale, 0, 0, 0);
		return 0;
	}

	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		char *endp = p;

		if (i > 0) {
			if (*p != ',')
				return -EINVAL;
			p += 1;
		}

		sizes[i] = memparse(p, &endp);
		if (endp == p)
			return -EINVAL;
		p = endp;
		total += sizes[i];
	}

	if (!total || *p)
		return -EINVAL;

	pr_notice("scratch areas: lowmem: %luMiB global: %luMiB pernode: %luMiB\n",
		  sizes[0] >> 20, sizes[1] >> 20, sizes[2] >> 20);
	kho_set_scratch_sizes(0, sizes[0], sizes[1], sizes[2]);
	return 0;
}
early_param("kho_scratch", kho_parse_scratch_size);

#ifdef CONFIG_KEXEC_HANDOVER_CORRUPT_TEST
static int __init kho_test_corrupt_param(char *buf)
{
	int corrupt_case;
	int err = kstrtoint(buf, 0, &corrupt_case);

	if (!err)
		kho_test_set_corrupt(corrupt_case);
	return err;
}
early_param("kho_test_corrupt", kho_test_corrupt_param);

/* A reboot notifier runs after the LUO and every other user wrote its data. */
static int kho_test_corrupt_notify(struct notifier_block *nb,
				   unsigned long action, void *data)
{
	/* kexec reboots through kernel_restart_prepare(): SYS_RESTART. */
	if (action == SYS_RESTART)
		kho_test_corrupt();
	return NOTIFY_DONE;
}

static struct notifier_block kho_test_corrupt_nb = {
	.notifier_call = kho_test_corrupt_notify,
};
#endif

/*
 * kho_preserve_folio() and kho_unpreserve_folio() compute the folio's place
 * here, where folio_pfn() and folio_order() are inline: from Rust they are
 * two calls per folio, on KHO's hottest path.
 */

/**
 * kho_preserve_folio - preserve a folio across kexec.
 * @folio: folio to preserve.
 *
 * Instructs KHO to preserve the whole folio across kexec. The order
 * will be preserved as well.
 *
 * Return: 0 on success, error code on failure
 */
int kho_preserve_folio(struct folio *folio)
{
	return kho_preserve_block(folio_pfn(folio), folio_order(folio));
}

/**
 * kho_unpreserve_folio - unpreserve a folio.
 * @folio: folio to unpreserve.
 *
 * Instructs KHO to unpreserve a folio that was preserved by
 * kho_preserve_folio() before. The provided @folio (pfn and order)
 * must exactly match a previously preserved folio.
 */
void kho_unpreserve_folio(struct folio *folio)
{
	kho_unpreserve_block(folio_pfn(folio), folio_order(folio));
}

static int __init kho_init(void)
{
	int err = kho_late_init();

	/*
	 * Folios in the scratch areas (CMA) are migrated when they are
	 * preserved: keep movable memory, such as a VMM's guest RAM, out of
	 * them while there is other free memory.
	 */
	if (!err && kho_is_enabled())
		cma_last_resort_enable();

#ifdef CONFIG_KEXEC_HANDOVER_CORRUPT_TEST
	if (!err && kho_test_corrupt_case())
		register_reboot_notifier(&kho_test_corrupt_nb);
#endif
	return err;
}
fs_initcall(kho_init);

EXPORT_SYMBOL_GPL(kho_is_enabled);
EXPORT_SYMBOL_GPL(is_kho_boot);
EXPORT_SYMBOL_GPL(kho_preserve_folio);
EXPORT_SYMBOL_GPL(kho_unpreserve_folio);
EXPORT_SYMBOL_GPL(kho_preserve_pages);
EXPORT_SYMBOL_GPL(kho_unpreserve_pages);
EXPORT_SYMBOL_GPL(kho_preserve_vmalloc);
EXPORT_SYMBOL_GPL(kho_unpreserve_vmalloc);
EXPORT_SYMBOL_GPL(kho_alloc_preserve);
EXPORT_SYMBOL_GPL(kho_unpreserve_free);
EXPORT_SYMBOL_GPL(kho_restore_free);
EXPORT_SYMBOL_GPL(kho_restore_folio);
EXPORT_SYMBOL_GPL(kho_restore_pages);
EXPORT_SYMBOL_GPL(kho_restore_vmalloc);
EXPORT_SYMBOL_GPL(kho_add_subtree);
EXPORT_SYMBOL_GPL(kho_remove_subtree);
EXPORT_SYMBOL_GPL(kho_retrieve_subtree);
EXPORT_SYMBOL_GPL(kho_radix_add_key);
EXPORT_SYMBOL_GPL(kho_radix_del_key);
EXPORT_SYMBOL_GPL(kho_radix_walk_tree);
EXPORT_SYMBOL_GPL(kho_radix_init_tree);
EXPORT_SYMBOL_GPL(kho_radix_destroy_tree);

/*
 * The first step of a restore, in one call: the page of @pfn if it is
 * online, and its private word (where this kernel marked a preserved block)
 * in @private.
 */
struct page *kho_mm_online_page(unsigned long pfn, unsigned long *private)
{
	struct page *page = pfn_to_online_page(pfn);

	if (page)
		*private = page_private(page);
	return page;
}

/*
 * Turns a restored block into pages the page allocator owns: one reference
 * on each order-0 page, or a compound folio with one reference on its head.
 * Clears the mark in the first page's private word, so that a second
 * restore of the block fails.
 */
void kho_mm_init_page(struct page *page, unsigned int order, bool folio)
{
	unsigned long nr_pages = 1UL << order;
	unsigned long i;

	set_page_private(page, 0);

	if (folio) {
		/* The head holds the folio's reference, tails none. */
		set_page_count(page, 1);
		/* Clear the codetag to avoid an accounting mismatch. */
		clear_page_tag_ref(page);
		for (i = 1; i < nr_pages; i++)
			set_page_count(page + i, 0);
		if (order)
			prep_compound_page(page, order);
	} else {
		for (i = 0; i < nr_pages; i++) {
			set_page_count(page + i, 1);
			clear_page_tag_ref(page + i);
		}
	}

	adjust_managed_page_count(page, nr_pages);
}

/*
 * With CONFIG_DEFERRED_STRUCT_PAGE_INIT, the struct pages of preserved
 * memory must be initialized before KHO writes its metadata into them.
 *
 * This and kho_mm_release_scratch() are __ref: the Rust callers are in .text
 * and only run at boot (they hold a memblock EarlyBoot token, or run from
 * KHO's initcall).
 */
void __ref kho_mm_init_deferred(unsigned long pfn, unsigned int order)
{
	int nid;
	unsigned long i;

	if (!IS_ENABLED(CONFIG_DEFERRED_STRUCT_PAGE_INIT))
		return;

	nid = early_pfn_to_nid(pfn);
	for (i = 0; i < (1UL << order); i++)
		init_deferred_page(pfn + i, nid);
}

/* Releases a cold boot's scratch area to the page allocator as CMA. */
void __ref kho_mm_release_scratch(phys_addr_t addr, phys_addr_t size)
{
	unsigned long base_pfn = PHYS_PFN(addr);
	unsigned long count = size >> PAGE_SHIFT;
	unsigned long pfn;

	/*
	 * With debug_pagealloc, freeing clears the pages' PRESENT bits and
	 * kmemleak scans of them would fault: exclude them from kmemleak.
	 */
	kmemleak_ignore_phys(addr);
	for (pfn = base_pfn; pfn < base_pfn + count; pfn += pageblock_nr_pages)
		init_cma_reserved_pageblock(pfn_to_page(pfn));
}

bool kho_mm_is_kdump(void)
{
	return is_kdump_kernel();
}

/* The next node with memory after @prev (-1: the first), or -1. */
int kho_mm_next_memory_node(int prev)
{
	int nid = prev < 0 ? first_node(node_states[N_MEMORY]) :
			     next_node(prev, node_states[N_MEMORY]);

	return nid < MAX_NUMNODES ? nid : -1;
}

unsigned int kho_mm_vm_area_order(struct vm_struct *vm)
{
	return get_vm_area_page_order(vm);
}

/*
 * Maps restored pages as a vmalloc area that vfree() can free. On success the
 * area owns @pages and the pages; on failure nothing was taken.
 */
void *kho_mm_vmap(struct page **pages, unsigned int nr_pages,
		  unsigned int order, unsigned int vm_flags)
{
	kasan_vmalloc_flags_t kasan_flags = KASAN_VMALLOC_PROT_NORMAL;
	unsigned int shift = PAGE_SHIFT + order;
	struct vm_struct *area;
	unsigned long addr;
	int err;

	area = __get_vm_area_node((unsigned long)nr_pages * PAGE_SIZE,
				  1UL << shift, shift,
				  vm_flags | VM_UNINITIALIZED,
				  VMALLOC_START, VMALLOC_END, NUMA_NO_NODE,
				  GFP_KERNEL, __builtin_return_address(0));
	if (!area)
		return NULL;

	addr = (unsigned long)area->addr;
	err = vmap_pages_range(addr, addr + get_vm_area_size(area), PAGE_KERNEL,
			       pages, shift);
	if (err) {
		free_vm_area(area);
		return NULL;
	}

	area->nr_pages = nr_pages;
	area->pages = pages;

	if (vm_flags & VM_ALLOC)
		kasan_flags |= KASAN_VMALLOC_VM_ALLOC;

	area->addr = kasan_unpoison_vmalloc(area->addr,
					    (unsigned long)nr_pages * PAGE_SIZE,
					    kasan_flags);
	clear_vm_uninitialized_flag(area);

	return area->addr;
}
