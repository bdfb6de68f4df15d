// SPDX-License-Identifier: GPL-2.0

//! The early boot memory allocator (memblock).
//!
//! C header: [`include/linux/memblock.h`](srctree/include/linux/memblock.h)
//!
//! memblock manages physical memory from the first steps of `setup_arch()` until
//! `memblock_free_all()` hands free memory to the page allocator. Its functions are `__init`:
//! they are discarded after boot. Every call therefore goes through an [`EarlyBoot`] token, which
//! only code running before `memblock_free_all()` can create (unsafely, once, at its entry point),
//! so the rest of the code cannot call memblock too late by mistake.
//!
//! The methods of [`EarlyBoot`] are placed in `.ref.text`, like C's `__ref` functions: code in
//! `.text` may call them, and they may call memblock's `__init` functions, because the token
//! proves that those still exist. ([`EarlyBoot::new`] itself is inlined, so nothing else is
//! needed to create the token.)

use crate::{
    bindings,
    error::{to_result, Result},
    io::PhysAddr,
};
use core::{marker::PhantomData, ptr::NonNull};

/// No NUMA node preference (`NUMA_NO_NODE`).
pub const NUMA_NO_NODE: i32 = bindings::NUMA_NO_NODE;

/// Allocate anywhere (`MEMBLOCK_ALLOC_ANYWHERE`), as an upper limit.
pub const ALLOC_ANYWHERE: PhysAddr = PhysAddr::MAX;

/// Allocate where the kernel can already access memory (`MEMBLOCK_ALLOC_ACCESSIBLE`).
pub const ALLOC_ACCESSIBLE: PhysAddr = 0;

/// Proof that memblock is still the memory allocator.
///
/// # Invariants
///
/// `memblock_free_all()` has not run yet, so memblock's `__init` code and data still exist.
pub struct EarlyBoot(());

impl EarlyBoot {
    /// Creates the token.
    ///
    /// # Safety
    ///
    /// The caller runs before `memblock_free_all()` (from `setup_arch()`, `mm_core_init_early()`
    /// or `mm_core_init()`), and the token does not outlive that phase.
    #[inline(always)]
    pub unsafe fn new() -> Self {
        // INVARIANT: The caller guarantees that memblock is still active.
        Self(())
    }

    /// Adds `[base, base + size)` to the memory memblock knows about.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn add(&self, base: PhysAddr, size: PhysAddr) -> Result {
        // SAFETY: By the type invariant memblock is active; any range is accepted.
        to_result(unsafe { bindings::memblock_add(base, size) })
    }

    /// Reserves `[base, base + size)`, so that no early allocation and, later, no page
    /// allocator allocation uses it.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn reserve(&self, base: PhysAddr, size: PhysAddr) -> Result {
        // SAFETY: By the type invariant memblock is active; any range is accepted. This is what
        // the inline `memblock_reserve()` calls.
        to_result(unsafe { bindings::__memblock_reserve(base, size, NUMA_NO_NODE, 0) })
    }

    /// Marks reserved `[base, base + size)` as not needing its `struct page`s initialized.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn reserved_mark_noinit(&self, base: PhysAddr, size: PhysAddr) -> Result {
        // SAFETY: By the type invariant memblock is active; any range is accepted.
        to_result(unsafe { bindings::memblock_reserved_mark_noinit(base, size) })
    }

    /// Frees reserved `[base, base + size)` (`memblock_phys_free()`).
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn phys_free(&self, base: PhysAddr, size: PhysAddr) {
        // SAFETY: By the type invariant memblock is active; freeing an unreserved range is a
        // no-op.
        unsafe { bindings::memblock_phys_free(base, size) };
    }

    /// Marks `[base, base + size)` as KHO scratch memory.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn mark_kho_scratch(&self, base: PhysAddr, size: PhysAddr) -> Result {
        // SAFETY: By the type invariant memblock is active; any range is accepted.
        to_result(unsafe { bindings::memblock_mark_kho_scratch(base, size) })
    }

    /// Clears the KHO scratch mark of `[base, base + size)`.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn clear_kho_scratch(&self, base: PhysAddr, size: PhysAddr) -> Result {
        // SAFETY: By the type invariant memblock is active; any range is accepted.
        to_result(unsafe { bindings::memblock_clear_kho_scratch(base, size) })
    }

    /// Restricts early allocations to KHO scratch memory.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn set_kho_scratch_only(&self) {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_set_kho_scratch_only() };
    }

    /// Lifts the restriction of [`EarlyBoot::set_kho_scratch_only`].
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn clear_kho_scratch_only(&self) {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_clear_kho_scratch_only() };
    }

    /// Allocates `size` bytes aligned to `align` in `[start, end)`; returns the physical address.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn phys_alloc_range(
        &self,
        size: PhysAddr,
        align: PhysAddr,
        start: PhysAddr,
        end: PhysAddr,
    ) -> Option<PhysAddr> {
        // SAFETY: By the type invariant memblock is active.
        let pa = unsafe { bindings::memblock_phys_alloc_range(size, align, start, end) };
        (pa != 0).then_some(pa)
    }

    /// Allocates `size` bytes aligned to `align` on node `nid` in `[start, end)`; with `exact`,
    /// only on that node.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn alloc_range_nid(
        &self,
        size: PhysAddr,
        align: PhysAddr,
        start: PhysAddr,
        end: PhysAddr,
        nid: i32,
        exact: bool,
    ) -> Option<PhysAddr> {
        // SAFETY: By the type invariant memblock is active.
        let pa = unsafe { bindings::memblock_alloc_range_nid(size, align, start, end, nid, exact) };
        (pa != 0).then_some(pa)
    }

    /// Allocates `size` zeroed bytes aligned to `align`, mapped in the direct map.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn alloc_zeroed(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // SAFETY: By the type invariant memblock is active. `memblock_alloc()` is the same
        // call with these limits.
        let p = unsafe {
            bindings::memblock_alloc_try_nid(
                size as PhysAddr,
                align as PhysAddr,
                0,
                ALLOC_ACCESSIBLE,
                NUMA_NO_NODE,
            )
        };
        NonNull::new(p.cast())
    }

    /// Frees memory from [`EarlyBoot::alloc_zeroed`].
    ///
    /// # Safety
    ///
    /// `ptr` and `size` are those of an allocation from [`EarlyBoot::alloc_zeroed`] that is no
    /// longer used.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub unsafe fn free(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: By the type invariant memblock is active; the caller passes an allocation.
        unsafe { bindings::memblock_free(ptr.as_ptr().cast(), size) };
    }

    /// Returns whether `[base, base + size)` lies within memory memblock knows about.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn is_region_memory(&self, base: PhysAddr, size: PhysAddr) -> bool {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_is_region_memory(base, size) }
    }

    /// The end of the last memory region.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn end_of_dram(&self) -> PhysAddr {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_end_of_DRAM() }
    }

    /// Memory reserved for the kernel below `limit` on node `nid` ([`NUMA_NO_NODE`]: all).
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn reserved_kern_size(&self, limit: PhysAddr, nid: i32) -> PhysAddr {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_reserved_kern_size(limit, nid) }
    }

    /// Memory reserved for HugeTLB below `limit` on node `nid` ([`NUMA_NO_NODE`]: all).
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn reserved_hugetlb_size(&self, limit: PhysAddr, nid: i32) -> PhysAddr {
        // SAFETY: By the type invariant memblock is active.
        unsafe { bindings::memblock_reserved_hugetlb_size(limit, nid) }
    }

    /// The highest address of "low" memory (`ARCH_LOW_ADDRESS_LIMIT`).
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn low_address_limit(&self) -> PhysAddr {
        // SAFETY: The helper reads an architecture constant or variable.
        unsafe { bindings::memblock_low_address_limit() }
    }

    /// Maps `len` bytes at `phys` before the direct map or `ioremap()` exist
    /// (`early_memremap()`); `None` if the fixmap slots do not suffice.
    #[inline(never)]
    #[link_section = ".ref.text"]
    pub fn memremap(&self, phys: PhysAddr, len: usize) -> Option<EarlyMap<'_>> {
        if len == 0 {
            return None;
        }
        // SAFETY: By the type invariant it is still early boot; any range may be mapped.
        let p = unsafe { bindings::early_memremap(phys as bindings::resource_size_t, len) };
        let ptr = NonNull::new(p.cast::<u8>())?;
        // INVARIANT: `early_memremap()` mapped `len` bytes at `ptr`.
        Some(EarlyMap {
            ptr,
            len,
            _early: PhantomData,
        })
    }
}

/// A temporary mapping from [`EarlyBoot::memremap`], unmapped when dropped.
///
/// # Invariants
///
/// `ptr` maps `len` bytes until the value is dropped, during early boot, when only the boot CPU
/// runs: nothing else writes the memory while it is borrowed.
pub struct EarlyMap<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _early: PhantomData<&'a EarlyBoot>,
}

impl EarlyMap<'_> {
    /// The mapped bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: By the type invariant `ptr` maps `len` readable bytes, unchanged while
        // borrowed.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for EarlyMap<'_> {
    #[inline(never)]
    #[link_section = ".ref.text"]
    fn drop(&mut self) {
        // SAFETY: By the type invariant the mapping exists; the lifetime keeps it early boot.
        unsafe { bindings::early_memunmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
