/* SPDX-License-Identifier: GPL-2.0 */

/*
 * Kexec HandOver is written in Rust (kernel/liveupdate/kho/kho.rs); this header
 * declares what its C part, kho_glue.c, shares with it.
 */

#ifndef _LINUX_KHO_INTERNAL_H
#define _LINUX_KHO_INTERNAL_H

#include <linux/kexec.h>
#include <linux/kexec_handover.h>
#include <linux/kho_radix_tree.h>
#include <linux/kho/abi/kexec_handover.h>
#include <linux/kho/abi/kexec_metadata.h>
#include <linux/libfdt.h>
#include <linux/memblock.h>
#include <linux/vmalloc.h>
#include <asm/early_ioremap.h>

#include "../../kexec_internal.h"

/* Implemented in Rust, called from kho_glue.c. */
void kho_set_enabled(bool enable);
void kho_set_scratch_sizes(unsigned int scale, phys_addr_t lowmem,
			   phys_addr_t global, phys_addr_t pernode);
int kho_late_init(void);
/* Behind kho_preserve_folio() and kho_unpreserve_folio() (kho_glue.c). */
int kho_preserve_block(unsigned long pfn, unsigned int order);
void kho_unpreserve_block(unsigned long pfn, unsigned int order);

#ifdef CONFIG_KEXEC_HANDOVER_CORRUPT_TEST
/* Selects how to corrupt the outgoing handover at reboot (0: not at all). */
void kho_test_set_corrupt(int corrupt_case);
int kho_test_corrupt_case(void);
void kho_test_corrupt(void);
#endif

/*
 * Implemented in kho_glue.c, called from Rust: the memory management
 * internals KHO needs, which are declared in mm/'s private headers.
 */
struct page *kho_mm_online_page(unsigned long pfn, unsigned long *private);
void kho_mm_init_page(struct page *page, unsigned int order, bool folio);
void kho_mm_init_deferred(unsigned long pfn, unsigned int order);
void kho_mm_release_scratch(phys_addr_t addr, phys_addr_t size);
bool kho_mm_is_kdump(void);
int kho_mm_next_memory_node(int prev);
unsigned int kho_mm_vm_area_order(struct vm_struct *vm);
void *kho_mm_vmap(struct page **pages, unsigned int nr_pages,
		  unsigned int order, unsigned int vm_flags);

#endif /* _LINUX_KHO_INTERNAL_H */
