// SPDX-License-Identifier: GPL-2.0

//! Kexec HandOver (KHO): memory and named data that survive a kexec.
//!
//! A kernel that is about to kexec into its successor preserves folios, page ranges and
//! vmalloc areas with KHO, and names blobs of them as *subtrees*. KHO records every preserved
//! block in a radix tree of pages, lists the tree and the subtrees in a root FDT, and gives the
//! next kernel the FDT and a list of *scratch* areas: memory in which the next kernel makes all of
//! its early allocations, so that nothing overwrites preserved memory before that kernel has read
//! the tree and reserved it. The format is the `kho-v4` handover ABI of
//! `include/linux/kho/abi/kexec_handover.h`, byte for byte, so that a kernel with the C KHO and
//! one with this KHO can kexec into each other.
//!
//! The crate's modules follow the life of a handover:
//!
//! - [`radix`]: the radix tree of preserved blocks, and the C API of `kho_radix_tree.h`;
//! - [`mem`]: preserving folios, page ranges and vmalloc areas, and restoring them;
//! - [`fdt`]: the root FDT and its subtrees, outgoing and incoming;
//! - [`boot`]: the next kernel's early boot: validation of everything the previous kernel left,
//!   scratch areas, and the reservation of preserved memory;
//! - [`kexec`]: the segments `kexec_file_load()` adds for KHO;
//! - [`decode`]: the decoders of untrusted handover data; they use nothing but `core`, so that
//!   the same source is tested and fuzzed on the host (`tools/testing/kho_decode`).
//!
//! The C parts are in `kho_glue.c`: command-line parameters, the initcall, symbol exports, and
//! the memory-management internals of `mm/`'s private headers.
//!
//! # Boot phases
//!
//! KHO code runs in three phases with different rules:
//!
//! 1. `setup_arch()` ([`boot::kho_populate`]): nothing is mapped but through `early_memremap()`,
//!    there is no allocator; the FDT and scratch list are validated in place.
//! 2. `mm_core_init_early()` and `mm_core_init()` ([`boot`]): memblock is the allocator. These
//!    functions are in `.text` like the rest of the crate; they reach memblock's `__init`
//!    functions only through [`EarlyBoot`](kernel::memblock::EarlyBoot), whose methods are in
//!    `.ref.text`, and the `__ref` helpers of `kho_glue.c`.
//! 3. From `fs_initcall()` ([`kho_late_init`]) on: the page allocator, locks and debugfs.
//!
//! # Locking
//!
//! The outgoing radix tree has its own mutex ([`radix::OUT_TREE`]), as does the outgoing FDT
//! ([`fdt::OUT_FDT`]); no path takes both. `kho_memory_init()` initializes them before anybody
//! can use KHO, and what they protect is `None` or empty until KHO set it up. The boot state
//! (the accepted handover and the scratch areas) is published once by each boot phase that
//! changes it, and read without a lock (see [`boot`]).

use kernel::{
    bindings,
    ffi::c_int,
    page::PAGE_SHIFT,
    physmem::MAX_PAGE_ORDER,
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
};

mod boot;
#[cfg(CONFIG_KEXEC_HANDOVER_CORRUPT_TEST)]
mod corrupt;
#[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
mod debugfs;
pub mod decode;
mod fdt;
mod kexec;
mod mem;
mod radix;

const __LOG_PREFIX: &[u8] = b"KHO\0";

/// The largest order of a preserved block the next kernel accepts.
///
/// Not `MAX_PAGE_ORDER`: `kho_preserve_pages()` records a range as the largest naturally aligned
/// blocks, so a 1 GiB aligned range is one block of order 18 (with 4 KiB pages), and upstream
/// does the same (memblock's `reserve_mem=` regions are such ranges). Only a folio is limited to
/// `MAX_PAGE_ORDER`, which `kho_restore_folio()` checks. A block of order 40 (4 PiB with 4 KiB
/// pages) is larger than any RAM; every block must also lie in RAM.
pub(crate) const MAX_BLOCK_ORDER: u32 = 40;

/// The geometry of the radix tree and of block orders on this kernel.
pub(crate) const GEOMETRY: decode::Geometry = decode::Geometry {
    // `PAGE_SHIFT` is at most 16.
    page_shift: PAGE_SHIFT as u32,
    max_order: MAX_BLOCK_ORDER,
};

/// Whether KHO is enabled (`kho=`, `CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT`); cleared if KHO
/// cannot set itself up.
static ENABLED: Atomic<bool> = Atomic::new(cfg!(CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT));

/// Returns whether KHO is enabled.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Sets whether KHO is enabled; `kho=` calls it from `kho_glue.c`.
///
/// # Safety
///
/// Called during early parameter parsing, before anything reads the flag.
#[export]
pub(crate) unsafe extern "C" fn kho_set_enabled(enable: bool) {
    ENABLED.store(enable, Relaxed);
}

/// Initializes the global locks of KHO: [`radix::OUT_TREE`], [`fdt::OUT_FDT`] and, with
/// `CONFIG_KEXEC_HANDOVER_DEBUGFS`, the one of the debugfs files.
///
/// # Safety
///
/// Called once, from `kho_memory_init()`, before anything locks them.
unsafe fn init_locks() {
    // SAFETY: As guaranteed by the caller.
    unsafe { radix::init_lock() };
    // SAFETY: As guaranteed by the caller.
    unsafe { fdt::init_lock() };
    #[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
    {
        // SAFETY: As guaranteed by the caller.
        unsafe { debugfs::init_lock() };
    }
}

/// Disables KHO after a failed setup.
fn disable() {
    ENABLED.store(false, Relaxed);
}

/// `kho_is_enabled()`: whether preserved memory can survive a kexec.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_is_enabled() -> bool {
    enabled()
}

/// `is_kho_boot()`: whether this kernel was booted by a kexec with a valid KHO handover.
///
/// Reliable once `kho_populate()` ran, and false again if the handover was refused later in
/// boot.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn is_kho_boot() -> bool {
    boot::incoming().is_some()
}

/// Sets up the outgoing handover; the `fs_initcall()` of `kho_glue.c` calls it.
///
/// # Safety
///
/// Called once, from the initcall.
#[export]
pub(crate) unsafe extern "C" fn kho_late_init() -> c_int {
    if !enabled() {
        return 0;
    }
    match late_init() {
        Ok(()) => 0,
        Err(e) => {
            pr_err!("failed to set up the outgoing handover: {:?}\n", e);
            boot::release_scratch_after_failure();
            disable();
            e.to_errno()
        }
    }
}

fn late_init() -> Result {
    radix::init_out_tree()?;
    fdt::init_out_fdt()?;
    #[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
    debugfs::init();
    fdt::kexec_metadata_init()?;
    if boot::incoming().is_none() {
        boot::release_scratch();
    }
    Ok(())
}

/// Returns `(phys, order)` of a key of the radix tree.
pub(crate) fn decode_key(key: u64) -> Option<(u64, u32)> {
    decode::decode_key(&GEOMETRY, key)
}

/// Returns the radix key of the block of `1 << order` pages at `phys`.
pub(crate) fn encode_key(phys: u64, order: u32) -> u64 {
    decode::encode_key(&GEOMETRY, phys, order)
}

/// Size in bytes of a block of `1 << order` pages.
pub(crate) const fn order_size(order: u32) -> u64 {
    (bindings::PAGE_SIZE as u64) << order
}

#[kunit_tests(kho)]
mod tests {
    use super::*;
    use core::ptr::NonNull;
    use kernel::ffi::c_ulong;
    use kernel::physmem::{pfn_to_phys, phys_to_pfn, Pages};

    /// The C formulas of `kho_encode_radix_key()` / `kho_decode_radix_key()`.
    fn c_encode(phys: u64, order: u32) -> u64 {
        let shift = PAGE_SHIFT as u32 + order;
        (1u64 << (64 - shift)) | (phys >> shift)
    }

    #[test]
    fn keys_match_c() -> Result {
        for order in 0..=MAX_PAGE_ORDER {
            for phys in [
                0u64,
                1 << 30,
                0x1_2345_6000 & !(order_size(order) - 1),
                1 << 46,
            ] {
                let phys = phys & !(order_size(order) - 1);
                let key = encode_key(phys, order);
                assert_eq!(key, c_encode(phys, order));
                assert_eq!(decode_key(key), Some((phys, order)));
            }
        }
        assert_eq!(decode_key(0), None);
        // Page ranges make blocks beyond `MAX_PAGE_ORDER`, as in C: a 1 GiB aligned GiB.
        let gib = 1u64 << 30;
        assert_eq!(decode_key(c_encode(gib, 18)), Some((gib, 18)));
        // One order too many: C would decode it; this kernel refuses it.
        assert_eq!(decode_key(c_encode(0, MAX_BLOCK_ORDER + 1)), None);
        Ok(())
    }

    /// The hot paths' constant shifts select the same table entries as the decoders.
    #[test]
    fn radix_index_matches_decoder() -> Result {
        for order in [0, 9, MAX_PAGE_ORDER] {
            for phys in [0u64, 1 << 30, 0x1_2345_6000, (1 << 46) + (1 << 21)] {
                let key = encode_key(phys & !(order_size(order) - 1), order);
                for level in 1..GEOMETRY.depth() {
                    assert_eq!(
                        crate::radix::table_index(key, level),
                        decode::table_index(&GEOMETRY, key, level)
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn split_orders() -> Result {
        // Like C's __kho_preserve_pages_order(): natural alignment, bounded by the range (and
        // by NUMA nodes, of which the test ranges cross none).
        let base = 1usize << 20;
        assert_eq!(mem::split_order(base, base + 1), 0);
        assert_eq!(mem::split_order(base, base + 3), 1);
        assert_eq!(mem::split_order(base + 1, base + 8), 0);
        assert_eq!(mem::split_order(base + 2, base + 8), 1);
        assert_eq!(mem::split_order(base + 4, base + 8), 2);
        assert_eq!(mem::split_order(base, base + (1 << 12)), 12);
        Ok(())
    }

    /// A C-API tree: add, walk in key order, delete, and destroy.
    #[test]
    fn c_radix_tree() -> Result {
        let mut tree = kernel::bindings::kho_radix_tree::default();
        // SAFETY: `tree` is a valid, unused tree.
        let ret = unsafe { radix::kho_radix_init_tree(&mut tree, core::ptr::null_mut()) };
        assert_eq!(ret, 0);
        let keys = [
            encode_key(0x4000_0000, 9),
            encode_key(0x1000, 0),
            encode_key(0x3000, 0),
        ];
        for &k in &keys {
            // SAFETY: The tree was initialized above.
            let ret = unsafe { radix::kho_radix_add_key(&mut tree, k as c_ulong) };
            assert_eq!(ret, 0);
        }
        // Keys wider than the key width are refused.
        // SAFETY: As above.
        let ret = unsafe { radix::kho_radix_add_key(&mut tree, c_ulong::MAX) };
        assert_eq!(ret, ERANGE.to_errno());
        let mut seen = KVec::new();
        let mut nodes = 0;
        let root = NonNull::new(tree.root.cast::<radix::Node>()).ok_or(EINVAL)?;
        // SAFETY: The tree is this test's; nobody else uses it.
        let ret = unsafe {
            radix::walk(root, &mut |v| {
                match v {
                    radix::Visit::Node(_) => nodes += 1,
                    radix::Visit::Key(k) => {
                        let _ = seen.push(k, GFP_KERNEL);
                    }
                }
                0
            })
        };
        assert_eq!(ret, 0);
        // Ascending key order: the larger order (smaller order bit) first.
        assert_eq!(&seen[..], &[keys[0], keys[1], keys[2]]);
        // The root, then two paths of depth - 1 nodes: the order-0 keys share theirs (one
        // leaf), the order-9 key leaves the root at another index.
        assert_eq!(nodes, 1 + 2 * (GEOMETRY.depth() - 1));
        // SAFETY: As above.
        unsafe { radix::kho_radix_del_key(&mut tree, keys[1] as c_ulong) };
        seen.clear();
        // SAFETY: As above.
        unsafe {
            radix::walk(root, &mut |v| {
                if let radix::Visit::Key(k) = v {
                    let _ = seen.push(k, GFP_KERNEL);
                }
                0
            })
        };
        assert_eq!(&seen[..], &[keys[0], keys[2]]);
        // SAFETY: As above; the tree is not used afterwards.
        unsafe { radix::kho_radix_destroy_tree(&mut tree) };
        assert!(tree.root.is_null());
        Ok(())
    }

    /// Preserving and unpreserving page ranges leaves the outgoing tree as it was.
    #[test]
    fn preserve_pages_roundtrip() -> Result {
        let pages = Pages::alloc(3, GFP_KERNEL)?;
        let count = |t: &radix::OutTree, lo: u64, hi: u64| {
            let mut n = 0;
            if let Some(root) = t.root() {
                // SAFETY: The outgoing tree is locked by `t`.
                unsafe {
                    radix::walk(root, &mut |v| {
                        if let radix::Visit::Key(k) = v {
                            if let Some((p, _)) = decode_key(k) {
                                if p >= lo && p < hi {
                                    n += 1;
                                }
                            }
                        }
                        0
                    })
                };
            }
            n
        };
        let (lo, hi) = (pages.phys(), pages.phys() + order_size(3));
        let pfn = phys_to_pfn(lo);
        // 7 pages of an 8-aligned block: orders 2, 1 and 0.
        // SAFETY: The pages are allocated and described by the memory map.
        let ret = unsafe { mem::kho_preserve_pages(pages.first().as_ptr(), 7) };
        assert_eq!(ret, 0);
        assert_eq!(count(&radix::out_tree(), lo, hi), 3);
        // SAFETY: As above, with the same range.
        unsafe { mem::kho_unpreserve_pages(pages.first().as_ptr(), 7) };
        assert_eq!(count(&radix::out_tree(), lo, hi), 0);
        assert_eq!(pfn_to_phys(pfn), lo);
        Ok(())
    }

    /// A block marked as boot marks preserved blocks is restored once; a second restore, or a
    /// restore at an address where no block starts, is refused.
    #[test]
    fn restore_once() -> Result {
        let pages = Pages::alloc(1, GFP_KERNEL)?;
        let (first, phys) = (pages.first(), pages.phys());
        let _ = pages.into_raw();
        // SAFETY: The test owns the pages; their `private` words are unused.
        unsafe { first.set_private(mem::page_info(1)) };
        // Not where the block starts.
        assert!(mem::restore_folio(phys + kernel::page::PAGE_SIZE as u64).is_none());
        let folio = mem::restore_folio(phys).ok_or(EINVAL)?;
        assert_eq!((folio.phys(), folio.order()), (phys, 1));
        assert_eq!(first.private(), 0);
        assert!(mem::restore_folio(phys).is_none());
        // SAFETY: `kho_restore_pages()` accepts any address.
        assert!(unsafe { mem::kho_restore_pages(phys, 2) }.is_null());
        // Boot would have taken the block out of the managed pages; the restore added it back.
        // SAFETY: The pages are the test's.
        unsafe { kernel::bindings::adjust_managed_page_count(first.as_ptr(), -2) };
        drop(folio);
        Ok(())
    }

    #[test]
    fn page_info_roundtrip() -> Result {
        for order in 0..=MAX_PAGE_ORDER {
            assert_eq!(mem::info_order(mem::page_info(order)), Some(order));
        }
        assert_eq!(mem::info_order(0), None);
        assert_eq!(mem::info_order(7), None);
        Ok(())
    }
}
