// SPDX-License-Identifier: GPL-2.0
/*
 * Test of reserve_mem= regions across kexec with KHO
 *
 * memblock preserves the regions named by "reserve_mem=SIZE:ALIGN:NAME"
 * through Kexec HandOver, and a kernel booted by KHO with the same
 * parameter revives each at the address the previous kernel had.  This
 * test checks that their contents survive too.
 *
 * At late_initcall it looks the region up by name.  On a cold boot it
 * fills the region: a magic word, a seed (random), then a pattern made
 * from the seed and each 8-byte word's index.  On a KHO boot it first
 * checks every word against the seed found in the region and reports
 * the number of mismatching words, then refills the region with the
 * next seed, so that a chain of several kexecs is checked at each step.
 * Each step prints the region's address, size and a checksum of its
 * contents, for the checksum before a kexec to be compared with the one
 * after it:
 *
 *   test_kho_reserve_mem: fill name=N phys=P size=S seed=X csum=C
 *   test_kho_reserve_mem: PASS name=N phys=P size=S seed=X mismatches=0 csum=C
 *   test_kho_reserve_mem: FAIL name=N phys=P size=S seed=X mismatches=M csum=C
 *
 * The region's name is the parameter test_kho_reserve_mem.name
 * (default "lu_rsv").  Without such a region the test does nothing.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
#include <linux/random.h>
#include <linux/types.h>

/* "KHORSVM1": the first word of a filled region */
#define KHO_RSV_MAGIC		0x4b484f5253564d31ULL
#define KHO_RSV_HDR_WORDS	2
/* as memblock's RESERVE_MEM_NAME_SIZE */
#define KHO_RSV_NAME_SIZE	16

static char kho_rsv_name[KHO_RSV_NAME_SIZE] = "lu_rsv";
module_param_string(name, kho_rsv_name, sizeof(kho_rsv_name), 0444);
MODULE_PARM_DESC(name, "name of the reserve_mem= region to check");

/* The pattern word at index @i for @seed (splitmix64's finalizer). */
static u64 kho_rsv_word(u64 seed, u64 i)
{
	u64 x = seed * 0x9e3779b97f4a7c15ULL + i;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* FNV-1a over 8-byte words. */
static u64 kho_rsv_csum(const u64 *w, unsigned long n)
{
	u64 h = 0xcbf29ce484222325ULL;

	for (unsigned long i = 0; i < n; i++) {
		h ^= w[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void kho_rsv_fill(u64 *w, unsigned long n, u64 seed)
{
	w[0] = KHO_RSV_MAGIC;
	w[1] = seed;
	for (unsigned long i = KHO_RSV_HDR_WORDS; i < n; i++)
		w[i] = kho_rsv_word(seed, i);
}

/* Number of words that differ from a filled region of the seed it holds. */
static unsigned long kho_rsv_verify(const u64 *w, unsigned long n)
{
	unsigned long bad = w[0] != KHO_RSV_MAGIC;
	u64 seed = w[1];

	for (unsigned long i = KHO_RSV_HDR_WORDS; i < n; i++)
		bad += w[i] != kho_rsv_word(seed, i);
	return bad;
}

static int __init kho_rsv_test_init(void)
{
	phys_addr_t phys, size;
	unsigned long n, bad;
	u64 *w, seed;

	if (!reserve_mem_find_by_name(kho_rsv_name, &phys, &size)) {
		pr_info("no reserve_mem region '%s'\n", kho_rsv_name);
		return 0;
	}
	n = size / sizeof(u64);
	if (n < KHO_RSV_HDR_WORDS || !IS_ALIGNED(phys, sizeof(u64))) {
		pr_err("FAIL name=%s phys=%pa size=%pa: region too small or unaligned\n",
		       kho_rsv_name, &phys, &size);
		return 0;
	}
	w = phys_to_virt(phys);

	if (is_kho_boot()) {
		seed = w[1];
		bad = kho_rsv_verify(w, n);
		pr_info("%s name=%s phys=%pa size=%pa seed=0x%llx mismatches=%lu csum=0x%016llx\n",
			bad ? "FAIL" : "PASS", kho_rsv_name, &phys, &size, seed, bad,
			kho_rsv_csum(w, n));
		seed++;
	} else {
		seed = get_random_u32();
	}

	kho_rsv_fill(w, n, seed);
	pr_info("fill name=%s phys=%pa size=%pa seed=0x%llx csum=0x%016llx\n",
		kho_rsv_name, &phys, &size, seed, kho_rsv_csum(w, n));
	return 0;
}
late_initcall(kho_rsv_test_init);
