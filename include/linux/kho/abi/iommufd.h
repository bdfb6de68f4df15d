/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The handover ABI of the iommufd live update handler, "iommufd-ioas-v1".
 *
 * A preserved iommufd is a header in a block of KHO-preserved memory, whose
 * physical address is the file's serialized data in the Live Update
 * Orchestrator's handover (luo-v5), and, if it has an IOAS, its arrays in
 * KHO-preserved vmalloc memory (@arrays), back to back:
 *
 *   struct iommufd_ioas_luo_ioas   [nr_ioas]         in ID order
 *   struct iommufd_ioas_luo_range  [nr_ranges]       IOAS by IOAS, in IOVA order
 *   struct iommufd_ioas_luo_area   [nr_areas]        IOAS by IOAS, in IOVA order
 *
 * Each IOAS owns the next nr_ranges ranges and nr_areas areas; the per-IOAS
 * counts add up to the header's.  An area maps @length bytes of the file
 * preserved in the same session under @token, from byte @offset, at @iova.
 * Fields are in the machine's byte order (the next kernel runs on the same
 * machine); every reserved field and unknown flag is zero, and the next
 * kernel refuses a handover that is not.
 *
 * The compatible string is not upstream's in-flight "iommufd-v1", which
 * describes preserved IOMMU page tables and devices; this format carries
 * address spaces only.
 */
#ifndef _LINUX_KHO_ABI_IOMMUFD_H
#define _LINUX_KHO_ABI_IOMMUFD_H

#include <linux/kho/abi/kexec_handover.h>
#include <linux/types.h>

#define IOMMUFD_IOAS_LUO_COMPATIBLE	"iommufd-ioas-v1"

/* iommufd_ioas_luo_area.flags: the device may read, write. */
#define IOMMUFD_IOAS_LUO_AREA_READ	(1U << 0)
#define IOMMUFD_IOAS_LUO_AREA_WRITE	(1U << 1)

/**
 * struct iommufd_ioas_luo_ser - The header of a preserved iommufd
 * @nr_ioas: the number of IOASes
 * @nr_ranges: the number of allowed IOVA ranges, of all IOASes
 * @nr_areas: the number of mapped areas, of all IOASes
 * @flags: none defined, zero
 * @arrays: the preserved vmalloc memory of the arrays; zero if @nr_ioas is 0
 */
struct iommufd_ioas_luo_ser {
	__u32 nr_ioas;
	__u32 nr_ranges;
	__u32 nr_areas;
	__u32 flags;
	struct kho_vmalloc arrays;
} __packed;

/**
 * struct iommufd_ioas_luo_ioas - An IO address space
 * @id: its object ID, kept in the next kernel
 * @nr_ranges: the number of its allowed IOVA ranges (IOMMU_IOAS_ALLOW_IOVAS)
 * @nr_areas: the number of its areas
 * @reserved: zero
 */
struct iommufd_ioas_luo_ioas {
	__u32 id;
	__u32 nr_ranges;
	__u32 nr_areas;
	__u32 reserved;
} __packed;

/**
 * struct iommufd_ioas_luo_range - An allowed IOVA range
 * @start: its first IOVA
 * @last: its last IOVA
 */
struct iommufd_ioas_luo_range {
	__u64 start;
	__u64 last;
} __packed;

/**
 * struct iommufd_ioas_luo_area - A range mapped with IOMMU_IOAS_MAP_FILE
 * @iova: its first IOVA
 * @length: its length in bytes
 * @token: the token of the mapped file in the same session
 * @offset: the byte offset in the file mapped at @iova
 * @flags: IOMMUFD_IOAS_LUO_AREA_READ and/or IOMMUFD_IOAS_LUO_AREA_WRITE
 * @reserved: zero
 */
struct iommufd_ioas_luo_area {
	__u64 iova;
	__u64 length;
	__u64 token;
	__u64 offset;
	__u32 flags;
	__u32 reserved;
} __packed;

#endif /* _LINUX_KHO_ABI_IOMMUFD_H */
