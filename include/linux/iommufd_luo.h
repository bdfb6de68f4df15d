/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The iommufd operations behind the iommufd live update handler.
 *
 * drivers/iommu/iommufd/iommufd_luo.rs preserves the IO address spaces of an
 * iommufd across a kexec; it is Rust and reaches iommufd only through these
 * functions (drivers/iommu/iommufd/liveupdate.c), so that nothing outside
 * drivers/iommu/iommufd/ needs iommufd_private.h.
 */
#ifndef _LINUX_IOMMUFD_LUO_H
#define _LINUX_IOMMUFD_LUO_H

#include <linux/types.h>

struct file;

/**
 * enum iommufd_luo_object - An object of an iommufd, as the handler sees it
 * @IOMMUFD_LUO_OBJ_IOAS: an IO address space (IOMMU_IOAS_ALLOC)
 * @IOMMUFD_LUO_OBJ_DEVICE: a device bound to the iommufd
 * @IOMMUFD_LUO_OBJ_AUTO_HWPT: the paging domain iommufd made for a device
 *	attached to an IOAS
 * @IOMMUFD_LUO_OBJ_OTHER: any other object (user-allocated or nested HWPTs,
 *	vIOMMUs, vdevices, fault and event queues, accesses, ...)
 */
enum iommufd_luo_object {
	IOMMUFD_LUO_OBJ_IOAS,
	IOMMUFD_LUO_OBJ_DEVICE,
	IOMMUFD_LUO_OBJ_AUTO_HWPT,
	IOMMUFD_LUO_OBJ_OTHER,
};

/* iommufd_luo_area.prot: the device may read, write. */
#define IOMMUFD_LUO_READ	(1U << 0)
#define IOMMUFD_LUO_WRITE	(1U << 1)

/**
 * struct iommufd_luo_area - A mapped range of an IOAS
 * @iova: first IOVA
 * @length: length in bytes
 * @file: the file mapped with IOMMU_IOAS_MAP_FILE, or NULL if the range maps
 *	something else (user memory, a dma-buf); valid during the callback only
 * @offset: the byte offset in @file that @iova maps
 * @prot: IOMMUFD_LUO_READ and/or IOMMUFD_LUO_WRITE
 */
struct iommufd_luo_area {
	u64 iova;
	u64 length;
	struct file *file;
	u64 offset;
	u32 prot;
};

/**
 * struct iommufd_luo_range - An inclusive IOVA range
 * @start: first IOVA
 * @last: last IOVA
 */
struct iommufd_luo_range {
	u64 start;
	u64 last;
};

/**
 * struct iommufd_luo_visitor - What iommufd_luo_walk() reports
 * @object: an object, in ID order
 * @allowed: an allowed IOVA range of the IOAS reported last, in IOVA order
 * @area: a mapped range of the IOAS reported last, in IOVA order
 *
 * A callback that returns an error stops the walk, which returns it.
 */
struct iommufd_luo_visitor {
	int (*object)(void *priv, u32 id, enum iommufd_luo_object kind);
	int (*allowed)(void *priv, const struct iommufd_luo_range *range);
	int (*area)(void *priv, const struct iommufd_luo_area *area);
};

bool iommufd_luo_is_iommufd(struct file *file);
int iommufd_luo_walk(struct file *file, const struct iommufd_luo_visitor *v,
		     void *priv);
struct file *iommufd_luo_create(void);
int iommufd_luo_add_ioas(struct file *iommufd, u32 id,
			 const struct iommufd_luo_range *allowed, u32 nr_allowed);
int iommufd_luo_map_file(struct file *iommufd, u32 id, u64 iova, u64 length,
			 struct file *file, u64 offset, u32 prot);

#endif /* _LINUX_IOMMUFD_LUO_H */
