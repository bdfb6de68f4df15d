// SPDX-License-Identifier: GPL-2.0
/*
 * The narrow interface of iommufd for its live update handler
 * (iommufd_luo.rs, through rust/kernel/iommufd.rs): read the IO address
 * spaces of an iommufd, and build a new iommufd with the same address spaces
 * at the same object IDs.  See include/linux/iommufd_luo.h.
 */
#include <linux/file.h>
#include <linux/interval_tree.h>
#include <linux/iommu.h>
#include <linux/iommufd.h>
#include <linux/iommufd_luo.h>
#include <linux/slab.h>

#include "io_pagetable.h"
#include "iommufd_private.h"

/**
 * iommufd_luo_is_iommufd - Is @file an iommufd?
 * @file: a file
 */
bool iommufd_luo_is_iommufd(struct file *file)
{
	struct iommufd_ctx *ictx = iommufd_ctx_from_file(file);

	if (IS_ERR(ictx))
		return false;
	iommufd_ctx_put(ictx);
	return true;
}

static enum iommufd_luo_object luo_kind(struct iommufd_object *obj)
{
	switch (obj->type) {
	case IOMMUFD_OBJ_IOAS:
		return IOMMUFD_LUO_OBJ_IOAS;
	case IOMMUFD_OBJ_DEVICE:
		return IOMMUFD_LUO_OBJ_DEVICE;
	case IOMMUFD_OBJ_HWPT_PAGING: {
		struct iommufd_hw_pagetable *hwpt =
			container_of(obj, struct iommufd_hw_pagetable, obj);

		/* auto_domain is set when the HWPT is made and never changes. */
		if (to_hwpt_paging(hwpt)->auto_domain)
			return IOMMUFD_LUO_OBJ_AUTO_HWPT;
		return IOMMUFD_LUO_OBJ_OTHER;
	}
	default:
		return IOMMUFD_LUO_OBJ_OTHER;
	}
}

static int luo_walk_ioas(struct iommufd_ioas *ioas,
			 const struct iommufd_luo_visitor *v, void *priv)
{
	struct io_pagetable *iopt = &ioas->iopt;
	struct iopt_allowed *allowed;
	struct iopt_area *area;
	int rc;

	/* Runs at reboot too: a pinning attach holds the lock for long. */
	rc = down_read_killable(&iopt->iova_rwsem);
	if (rc)
		return rc;
	/* IOMMU_OPTION_HUGE_PAGES off is not carried. */
	if (iopt->disable_large_pages) {
		rc = -EOPNOTSUPP;
		goto out;
	}
	for (allowed = iopt_allowed_iter_first(iopt, 0, ULONG_MAX); allowed;
	     allowed = iopt_allowed_iter_next(allowed, 0, ULONG_MAX)) {
		struct iommufd_luo_range range = {
			.start = allowed->node.start,
			.last = allowed->node.last,
		};

		rc = v->allowed(priv, &range);
		if (rc)
			goto out;
	}
	for (area = iopt_area_iter_first(iopt, 0, ULONG_MAX); area;
	     area = iopt_area_iter_next(area, 0, ULONG_MAX)) {
		struct iopt_pages *pages = area->pages;
		struct iommufd_luo_area out = {
			.iova = iopt_area_iova(area),
			.length = iopt_area_length(area),
		};

		/* Another thread is still mapping or unmapping the area. */
		if (!pages) {
			rc = -EBUSY;
			goto out;
		}
		if (area->iommu_prot & IOMMU_READ)
			out.prot |= IOMMUFD_LUO_READ;
		if (area->iommu_prot & IOMMU_WRITE)
			out.prot |= IOMMUFD_LUO_WRITE;
		/* pages->file and pages->start are set at creation only. */
		if (pages->type == IOPT_ADDRESS_FILE) {
			out.file = pages->file;
			out.offset = pages->start +
				     iopt_area_start_byte(area, out.iova);
		}
		rc = v->area(priv, &out);
		if (rc)
			goto out;
	}
out:
	up_read(&iopt->iova_rwsem);
	return rc;
}

/**
 * iommufd_luo_walk - Report the objects of an iommufd and its IOASes' contents
 * @file: an iommufd
 * @v: the callbacks
 * @priv: their first argument
 *
 * Each IOAS is read under its IOVA lock, so its allowed ranges and areas are
 * a consistent snapshot; objects created or destroyed meanwhile may or may
 * not be reported.  The callbacks may sleep.
 *
 * Return: 0, -EBADFD if @file is not an iommufd, -EOPNOTSUPP if it uses an
 * option the handover does not carry (IOMMU_OPTION_RLIMIT_MODE, the VFIO
 * container emulation, IOMMU_OPTION_HUGE_PAGES off), -EBUSY if an area is
 * being mapped or unmapped, -EINTR if killed while waiting for an IOAS, or
 * the error of a callback.
 */
int iommufd_luo_walk(struct file *file, const struct iommufd_luo_visitor *v,
		     void *priv)
{
	struct iommufd_ctx *ictx = iommufd_ctx_from_file(file);
	struct iommufd_object *obj;
	unsigned long index;
	int rc = 0;

	if (IS_ERR(ictx))
		return PTR_ERR(ictx);

	/*
	 * What the handover does not carry: the accounting of the VFIO
	 * container emulation and IOMMU_OPTION_RLIMIT_MODE.
	 */
	if (READ_ONCE(ictx->account_mode) == IOPT_PAGES_ACCOUNT_MM ||
	    READ_ONCE(ictx->vfio_ioas)) {
		rc = -EOPNOTSUPP;
		goto out;
	}

	xa_for_each(&ictx->objects, index, obj) {
		enum iommufd_luo_object kind;
		bool live;

		/*
		 * Only an object with users can be used outside the lock; one
		 * being destroyed is skipped.
		 */
		xa_lock(&ictx->objects);
		obj = xa_load(&ictx->objects, index);
		live = obj && !xa_is_zero(obj) && iommufd_lock_obj(obj);
		xa_unlock(&ictx->objects);
		if (!live)
			continue;
		kind = luo_kind(obj);
		rc = v->object(priv, obj->id, kind);
		if (!rc && kind == IOMMUFD_LUO_OBJ_IOAS)
			rc = luo_walk_ioas(container_of(obj, struct iommufd_ioas,
							obj),
					   v, priv);
		iommufd_put_object(ictx, obj);
		if (rc)
			break;
	}
out:
	iommufd_ctx_put(ictx);
	return rc;
}

/**
 * iommufd_luo_create - A new iommufd, as if /dev/iommu was opened
 *
 * Return: the file, or an ERR_PTR.
 */
struct file *iommufd_luo_create(void)
{
	return iommufd_file_create();
}

static void luo_free_allowed(struct rb_root_cached *itree)
{
	struct interval_tree_node *node;

	while ((node = interval_tree_iter_first(itree, 0, ULONG_MAX))) {
		interval_tree_remove(node, itree);
		kfree(container_of(node, struct iopt_allowed, node));
	}
}

static int luo_load_allowed(struct rb_root_cached *itree,
			    const struct iommufd_luo_range *ranges, u32 nr)
{
	u32 i;

	for (i = 0; i != nr; i++) {
		struct iopt_allowed *allowed;

		/* As IOMMU_IOAS_ALLOW_IOVAS checks them. */
		if (ranges[i].start >= ranges[i].last ||
		    ranges[i].last > ULONG_MAX)
			return -EINVAL;
		if (interval_tree_iter_first(itree, ranges[i].start,
					     ranges[i].last))
			return -EINVAL;
		allowed = kzalloc_obj(*allowed, GFP_KERNEL_ACCOUNT);
		if (!allowed)
			return -ENOMEM;
		allowed->node.start = ranges[i].start;
		allowed->node.last = ranges[i].last;
		interval_tree_insert(&allowed->node, itree);
	}
	return 0;
}

/**
 * iommufd_luo_add_ioas - Add an IOAS with a given ID to a new iommufd
 * @iommufd: an iommufd from iommufd_luo_create() that no one else uses yet
 * @id: the object ID of the IOAS
 * @allowed: its allowed IOVA ranges
 * @nr_allowed: the number of @allowed
 *
 * Return: 0, -EINVAL for a bad ID or range, -EBUSY if @id is in use, or
 * -ENOMEM.
 */
int iommufd_luo_add_ioas(struct file *iommufd, u32 id,
			 const struct iommufd_luo_range *allowed, u32 nr_allowed)
{
	struct rb_root_cached itree = RB_ROOT_CACHED;
	struct iommufd_ctx *ictx;
	struct iommufd_ioas *ioas;
	u32 first;
	int rc;

	if (!id || id > xa_limit_31b.max)
		return -EINVAL;
	ictx = iommufd_ctx_from_file(iommufd);
	if (IS_ERR(ictx))
		return PTR_ERR(ictx);

	rc = luo_load_allowed(&itree, allowed, nr_allowed);
	if (rc)
		goto out;

	ioas = iommufd_ioas_alloc(ictx);
	if (IS_ERR(ioas)) {
		rc = PTR_ERR(ioas);
		goto out;
	}
	/* Move the reserved ID to @id: a NULL insert reserves the index. */
	first = ioas->obj.id;
	if (first != id) {
		rc = xa_insert(&ictx->objects, id, NULL, GFP_KERNEL_ACCOUNT);
		if (rc) {
			iommufd_object_abort_and_destroy(ictx, &ioas->obj);
			goto out;
		}
		xa_erase(&ictx->objects, first);
		ioas->obj.id = id;
	}

	rc = iopt_set_allow_iova(&ioas->iopt, &itree);
	if (rc) {
		iommufd_object_abort_and_destroy(ictx, &ioas->obj);
		goto out;
	}

	down_read(&ictx->ioas_creation_lock);
	iommufd_object_finalize(ictx, &ioas->obj);
	up_read(&ictx->ioas_creation_lock);
out:
	/* After iopt_set_allow_iova() swapped them, the IOAS's old ones. */
	luo_free_allowed(&itree);
	iommufd_ctx_put(ictx);
	return rc;
}

/**
 * iommufd_luo_map_file - Map a file into an IOAS, as IOMMU_IOAS_MAP_FILE does
 * @iommufd: an iommufd
 * @id: the object ID of the IOAS
 * @iova: the IOVA to map at
 * @length: the length in bytes
 * @file: the file
 * @offset: the byte offset in @file to map at @iova
 * @prot: IOMMUFD_LUO_READ and/or IOMMUFD_LUO_WRITE
 *
 * Like IOMMU_IOAS_MAP_FILE, nothing is pinned until a device attaches.
 *
 * Return: 0 or the errno IOMMU_IOAS_MAP_FILE would give.
 */
int iommufd_luo_map_file(struct file *iommufd, u32 id, u64 iova, u64 length,
			 struct file *file, u64 offset, u32 prot)
{
	int iommu_prot = IOMMU_CACHE;
	unsigned long addr = iova;
	struct iommufd_ctx *ictx;
	struct iommufd_ioas *ioas;
	int rc;

	if (!prot || prot & ~(IOMMUFD_LUO_READ | IOMMUFD_LUO_WRITE))
		return -EINVAL;
	if (prot & IOMMUFD_LUO_READ)
		iommu_prot |= IOMMU_READ;
	if (prot & IOMMUFD_LUO_WRITE)
		iommu_prot |= IOMMU_WRITE;
	/* As IOMMU_IOAS_MAP_FILE checks them. */
	if (iova >= ULONG_MAX || length >= ULONG_MAX || offset >= ULONG_MAX)
		return -EOVERFLOW;

	ictx = iommufd_ctx_from_file(iommufd);
	if (IS_ERR(ictx))
		return PTR_ERR(ictx);
	ioas = iommufd_get_ioas(ictx, id);
	if (IS_ERR(ioas)) {
		rc = PTR_ERR(ioas);
		goto out_ctx;
	}
	rc = iopt_map_file(ictx, &ioas->iopt, &addr, file, offset, length,
			   iommu_prot, 0);
	iommufd_put_object(ictx, &ioas->obj);
out_ctx:
	iommufd_ctx_put(ictx);
	return rc;
}
