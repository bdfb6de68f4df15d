// SPDX-License-Identifier: GPL-2.0
/*
 * The shmem operations behind the memfd live update handler.
 *
 * mm/memfd_luo.rs, the memfd handler of the Live Update Orchestrator, is
 * written in Rust and uses shmem only through this file: it reads a memfd's
 * state, freezes its size while it is preserved, and in the next kernel
 * builds a new memfd around the folios the previous kernel preserved, with
 * the same charging and block accounting as a page fault would do.  The
 * folios themselves are found and pinned with memfd_pin_present_folios().
 */

#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/memcontrol.h>
#include <linux/memfd.h>
#include <linux/pagemap.h>
#include <linux/sched/mm.h>
#include <linux/shmem_fs.h>
#include <linux/shmem_luo.h>
#include <linux/swap.h>
#include <uapi/linux/memfd.h>

#include "internal.h"

/**
 * shmem_luo_can_preserve - whether the memfd handler can preserve a file
 * @file: any file
 *
 * Return: true for an unlinked shmem file, that is a memfd (or an O_TMPFILE
 * on tmpfs, which behaves the same); false for hugetlb memfds, files with a
 * name on tmpfs and everything else.
 */
bool shmem_luo_can_preserve(struct file *file)
{
	return shmem_file(file) && !file_inode(file)->i_nlink;
}

/**
 * shmem_luo_freeze - freeze or unfreeze the memfd's size
 * @file: the memfd, inode lock held
 * @freeze: whether to freeze
 *
 * While frozen, ftruncate(), fallocate() and writes past the end fail with
 * -EPERM; stores inside the size keep working.
 */
void shmem_luo_freeze(struct file *file, bool freeze)
{
	lockdep_assert_held_write(&file_inode(file)->i_rwsem);
	shmem_freeze(file_inode(file), freeze);
}

/**
 * shmem_luo_nr_pages - pages the memfd holds in memory and in swap
 * @file: the memfd
 *
 * Cheap; used to tell whether holes were filled since the last look.
 *
 * Return: the number of pages in the page cache plus those in swap.
 */
unsigned long shmem_luo_nr_pages(struct file *file)
{
	struct inode *inode = file_inode(file);

	return READ_ONCE(inode->i_mapping->nrpages) +
	       READ_ONCE(SHMEM_I(inode)->swapped);
}

/**
 * shmem_luo_swapin - bring the memfd's swapped-out pages back into memory
 * @file: the memfd, inode lock held
 * @last: the last page index to look at
 *
 * memfd_pin_present_folios() finds only folios in the page cache; a page in
 * swap holds data too, so it is read back.  It is not pinned here and may be
 * swapped out again before the caller pins it: the caller pins, then calls
 * this again until it finds nothing.
 *
 * Return: the number of swapped-out pages found in [0, @last] (and read
 * back), or a negative errno.
 */
long shmem_luo_swapin(struct file *file, pgoff_t last)
{
	struct inode *inode = file_inode(file);
	struct address_space *mapping = inode->i_mapping;
	XA_STATE(xas, &mapping->i_pages, 0);
	struct folio *folio;
	long found = 0;
	void *entry;
	int err = 0;

	if (!READ_ONCE(SHMEM_I(inode)->swapped))
		return 0;

	rcu_read_lock();
	xas_for_each(&xas, entry, last) {
		if (xas_retry(&xas, entry) || !xa_is_value(entry))
			continue;
		xas_pause(&xas);
		rcu_read_unlock();

		found++;
		folio = shmem_read_folio(mapping, xas.xa_index);
		if (IS_ERR(folio))
			err = PTR_ERR(folio);
		else
			folio_put(folio);
		cond_resched();

		rcu_read_lock();
		if (err)
			break;
	}
	rcu_read_unlock();
	return err ? err : found;
}

/**
 * shmem_luo_prepare_folio - make a preserved folio's state final
 * @file: the memfd, inode lock held and size frozen
 * @folio: a pinned folio of @file
 * @pfn: set to the folio's page frame number
 * @index: set to the folio's page index in the file
 *
 * A folio that fallocate() allocated but nothing wrote is zeroed and marked
 * up to date, and every folio is marked dirty, so that the next kernel gets
 * it as one holding data, which reclaim must not drop.  The folio's place is
 * returned in the same call, as the handler records it next.
 *
 * Return: the number of pages in the folio, or -EINVAL if it is not a folio
 * of @file.
 */
long shmem_luo_prepare_folio(struct file *file, struct folio *folio,
			     unsigned long *pfn, pgoff_t *index)
{
	/*
	 * A pinned folio is not freed, and one of @file cannot leave it while
	 * the size is frozen (no truncation, no hole punching); nor can a folio
	 * of another file join it.  So the test holds without the folio lock.
	 */
	if (READ_ONCE(folio->mapping) != file->f_mapping)
		return -EINVAL;

	if (!folio_test_uptodate(folio)) {
		folio_lock(folio);
		if (!folio_test_uptodate(folio)) {
			folio_zero_range(folio, 0, folio_size(folio));
			flush_dcache_folio(folio);
			folio_mark_uptodate(folio);
		}
		folio_unlock(folio);
	}
	if (!folio_test_dirty(folio))
		folio_mark_dirty(folio);

	*pfn = folio_pfn(folio);
	*index = folio->index;
	return folio_nr_pages(folio);
}

/**
 * shmem_luo_create - create the memfd a preserved one is restored into
 * @accmode: O_RDONLY, O_WRONLY or O_RDWR
 * @mode: the inode's permission bits
 * @seals: F_SEAL_* to apply
 * @size: i_size
 * @pos: the file position
 *
 * The permission bits are set before the seals, so that F_SEAL_EXEC on a
 * non-executable memfd does not imply the write seals.  For an access mode
 * other than O_RDWR the memfd is reopened like open("/proc/self/fd/N") would.
 *
 * Return: the new file or an ERR_PTR().
 */
struct file *shmem_luo_create(unsigned int accmode, umode_t mode,
			      unsigned int seals, loff_t size, loff_t pos)
{
	struct file *file, *reopened;
	struct inode *inode;
	int err;

	if (accmode & ~O_ACCMODE || accmode == O_ACCMODE || mode & ~0777 ||
	    size < 0 || size > MAX_LFS_FILESIZE)
		return ERR_PTR(-EINVAL);

	file = memfd_alloc_file("", MFD_ALLOW_SEALING);
	if (IS_ERR(file))
		return file;
	inode = file_inode(file);

	inode_lock(inode);
	inode->i_mode = (inode->i_mode & ~0777) | mode;
	i_size_write(inode, size);
	inode_unlock(inode);

	err = memfd_add_seals(file, seals);
	if (err)
		goto err_put;

	if (accmode != O_RDWR) {
		reopened = dentry_open(&file->f_path, accmode | O_LARGEFILE,
				       current_cred());
		fput(file);
		if (IS_ERR(reopened))
			return reopened;
		file = reopened;
	}

	if (vfs_setpos(file, pos, MAX_LFS_FILESIZE) < 0) {
		err = -EINVAL;
		goto err_put;
	}
	return file;

err_put:
	fput(file);
	return ERR_PTR(err);
}

/**
 * shmem_luo_add_folio - insert a restored folio into a new memfd
 * @file: a memfd from shmem_luo_create()
 * @folio: a folio restored by KHO, not visible to anyone else
 * @index: its page index in the file, aligned to its size
 * @uptodate: whether its contents are valid
 * @dirty: whether it holds data that must not be dropped
 *
 * The folio is charged to the current task's memory cgroup and to the
 * file's block accounting, then added to the page cache and the LRU.  The
 * caller's reference is consumed, on failure too (the folio is then freed).
 * Call shmem_luo_account() with the pages added once done.
 *
 * Return: the number of pages added, or a negative errno with the folio left
 * out of the file.
 */
long shmem_luo_add_folio(struct file *file, struct folio *folio, pgoff_t index,
			 bool uptodate, bool dirty)
{
	struct inode *inode = file_inode(file);
	struct address_space *mapping = inode->i_mapping;
	gfp_t gfp = mapping_gfp_mask(mapping);
	long nr = folio_nr_pages(folio);
	int err;

	if (!IS_ALIGNED(index, nr)) {
		folio_put(folio);
		return -EINVAL;
	}

	__folio_set_locked(folio);
	__folio_set_swapbacked(folio);

	err = mem_cgroup_charge(folio, NULL, gfp);
	if (err)
		goto unlock;

	err = shmem_add_to_page_cache(folio, mapping, index, NULL, gfp);
	if (err)
		goto unlock;

	if (uptodate)
		folio_mark_uptodate(folio);
	if (dirty)
		folio_mark_dirty(folio);

	err = shmem_inode_acct_blocks(inode, nr);
	if (err) {
		filemap_remove_folio(folio);
		goto unlock;
	}

	folio_add_lru(folio);
unlock:
	folio_unlock(folio);
	folio_put(folio);
	return err ? err : nr;
}

/**
 * shmem_luo_account - account the pages shmem_luo_add_folio() added
 * @file: the memfd
 * @pages: how many
 */
void shmem_luo_account(struct file *file, long pages)
{
	shmem_recalc_inode(file_inode(file), pages, 0);
}
