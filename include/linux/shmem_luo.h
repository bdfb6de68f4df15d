/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The shmem operations behind the memfd live update handler.
 *
 * mm/memfd_luo.rs preserves memfds across a kexec; it is Rust and reaches
 * shmem only through these functions (and memfd_pin_present_folios()), so
 * that nothing outside mm/ needs mm/internal.h.  All of them take a file for
 * which shmem_luo_can_preserve() returned true.
 */
#ifndef _LINUX_SHMEM_LUO_H
#define _LINUX_SHMEM_LUO_H

#include <linux/fs.h>
#include <linux/types.h>

struct folio;

bool shmem_luo_can_preserve(struct file *file);
void shmem_luo_freeze(struct file *file, bool freeze);
unsigned long shmem_luo_nr_pages(struct file *file);
long shmem_luo_swapin(struct file *file, pgoff_t last);
long shmem_luo_prepare_folio(struct file *file, struct folio *folio,
			     unsigned long *pfn, pgoff_t *index);
struct file *shmem_luo_create(unsigned int accmode, umode_t mode,
			      unsigned int seals, loff_t size, loff_t pos);
long shmem_luo_add_folio(struct file *file, struct folio *folio, pgoff_t index,
			 bool uptodate, bool dirty);
void shmem_luo_account(struct file *file, long pages);

#endif /* _LINUX_SHMEM_LUO_H */
