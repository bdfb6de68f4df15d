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
//!    functions are placed in `.init.text`, as they call memblock's `__init` functions.
//! 3. From `fs_initcall()` ([`kho_late_init`]) on: the page allocator, locks and debugfs.
//!
//! # Locking
//!
//! The outgoing radix tree has its own mutex ([`radix::OUT_TREE`]), as does the outgoing FDT
//! ([`fdt::OUT_FDT`]); no path takes both. Boot-time state is written once, before other CPUs
//! run, and read-only afterwards.

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

/// The geometry of the radix tree and of page orders on this kernel.
pub(crate) const GEOMETRY: decode::Geometry = decode::Geometry {
    // `PAGE_SHIFT` is at most 16 and `MAX_PAGE_ORDER` at most a few tens.
    page_shift: PAGE_SHIFT as u32,
    max_order: MAX_PAGE_ORDER,
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
