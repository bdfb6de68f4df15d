// SPDX-License-Identifier: GPL-2.0

//! Physical memory: page frame numbers, the direct map and the memory map.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/io.h`](srctree/include/linux/io.h)
//!
//! Code that hands memory over to another kernel names it by physical address. This module
//! converts between physical addresses, page frame numbers, direct-map addresses and the
//! `struct page`s of the memory map, and owns higher-order page allocations ([`Pages`]).
//!
//! Conversions are plain arithmetic and safe; reading or writing the memory behind an address
//! is not, and stays with the caller.

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    folio::Folio,
    io::PhysAddr,
    page::PAGE_SHIFT,
};
use core::ptr::NonNull;

/// The largest order of a buddy allocation (`MAX_PAGE_ORDER`).
pub const MAX_PAGE_ORDER: u32 = bindings::MAX_PAGE_ORDER;

/// Returns the page frame number of `phys`.
#[inline]
pub const fn phys_to_pfn(phys: PhysAddr) -> usize {
    // A page frame number fits in `usize` on every architecture with Rust support.
    (phys >> PAGE_SHIFT) as usize
}

/// Returns the physical address of page frame `pfn`.
#[inline]
pub const fn pfn_to_phys(pfn: usize) -> PhysAddr {
    (pfn as PhysAddr) << PAGE_SHIFT
}

/// Returns the direct-map address of `phys`.
///
/// The result is only meaningful for memory in the direct map; dereferencing it is up to the
/// caller.
#[inline]
pub fn phys_to_virt(phys: PhysAddr) -> *mut u8 {
    // SAFETY: `phys_to_virt()` is arithmetic on its argument.
    unsafe { bindings::phys_to_virt(phys) }.cast()
}

/// Returns the physical address of direct-map address `virt`.
#[inline]
pub fn virt_to_phys(virt: *const u8) -> PhysAddr {
    // SAFETY: `virt_to_phys()` is arithmetic on its argument (with `CONFIG_DEBUG_VIRTUAL` it
    // also warns about addresses outside the direct map).
    unsafe { bindings::virt_to_phys(virt.cast_mut().cast()) }
}

/// Returns the NUMA node of page frame `pfn`.
#[inline]
pub fn pfn_to_nid(pfn: usize) -> i32 {
    // SAFETY: `pfn_to_nid()` only reads the memory map's section data for a valid pfn; callers
    // pass frames of memory they own.
    unsafe { bindings::pfn_to_nid(pfn) }
}

/// A `struct page` of the memory map, named by its page frame number; it owns nothing.
///
/// # Invariants
///
/// `ptr` is the `struct page` of an online page frame: it stays valid for the life of the
/// kernel (memory hot-remove is not supported by the users of this type).
#[derive(Clone, Copy)]
pub struct PageFrame {
    ptr: NonNull<bindings::page>,
}

impl PageFrame {
    /// Returns the `struct page` of `pfn` if `pfn` is online memory.
    #[inline]
    pub fn online(pfn: usize) -> Option<Self> {
        // SAFETY: `pfn_to_online_page()` accepts any pfn and returns NULL for an offline one.
        let ptr = NonNull::new(unsafe { bindings::pfn_to_online_page(pfn) })?;
        // INVARIANT: `pfn_to_online_page()` returned the page of an online frame.
        Some(Self { ptr })
    }

    /// Returns the `struct page` of `pfn` without checking that it is online.
    ///
    /// # Safety
    ///
    /// `pfn` is a frame of memory the memory map describes (e.g. memory reserved at boot).
    #[inline]
    pub unsafe fn from_pfn(pfn: usize) -> Self {
        // SAFETY: The caller guarantees that the memory map covers `pfn`.
        let ptr = unsafe { bindings::pfn_to_page(pfn) };
        // INVARIANT: As guaranteed by the caller; `pfn_to_page()` never returns NULL for it.
        Self {
            // SAFETY: `pfn_to_page()` of a described frame is a valid, non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    /// Wraps a `struct page` pointer.
    ///
    /// # Safety
    ///
    /// `ptr` is a `struct page` of the memory map.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<bindings::page>) -> Self {
        // INVARIANT: As guaranteed by the caller.
        Self { ptr }
    }

    /// The raw `struct page` pointer, never null.
    #[inline]
    pub fn as_non_null(self) -> NonNull<bindings::page> {
        self.ptr
    }

    /// The raw `struct page` pointer.
    #[inline]
    pub fn as_ptr(self) -> *mut bindings::page {
        self.ptr.as_ptr()
    }

    /// The page frame number.
    #[inline]
    pub fn pfn(self) -> usize {
        // SAFETY: By the type invariant `ptr` is a page of the memory map.
        unsafe { bindings::page_to_pfn(self.ptr.as_ptr()) }
    }

    /// The physical address.
    #[inline]
    pub fn phys(self) -> PhysAddr {
        pfn_to_phys(self.pfn())
    }

    /// The page `n` frames further; both must be in the same contiguous memory map range, as
    /// the pages of one allocation are.
    ///
    /// # Safety
    ///
    /// Frames `pfn()` to `pfn() + n` are described by the memory map.
    #[inline]
    pub unsafe fn add(self, n: usize) -> Self {
        // SAFETY: As guaranteed by the caller.
        unsafe { Self::from_pfn(self.pfn() + n) }
    }

    /// The `private` word of the page.
    #[inline]
    pub fn private(self) -> usize {
        // SAFETY: By the type invariant `ptr` is valid; `private` is a plain word.
        unsafe { bindings::page_private(self.ptr.as_ptr()) }
    }

    /// Sets the `private` word of the page.
    ///
    /// # Safety
    ///
    /// The caller owns the page and its `private` word is not in use by anybody else.
    #[inline]
    pub unsafe fn set_private(self, private: usize) {
        // SAFETY: By the type invariant `ptr` is valid; the caller owns the word.
        unsafe { bindings::set_page_private(self.ptr.as_ptr(), private) };
    }

    /// The folio the page belongs to.
    ///
    /// The pointer holds no reference: the caller must know how long the folio lives (e.g. own
    /// a reference to it, as [`ARef::from_raw`](crate::sync::aref::ARef::from_raw) takes over).
    #[inline]
    pub fn folio(self) -> NonNull<Folio> {
        // SAFETY: By the type invariant `ptr` is valid; `page_folio()` reads its compound head.
        let f = unsafe { bindings::page_folio(self.ptr.as_ptr()) };
        // SAFETY: Every page belongs to a folio (possibly itself). `Folio` is a transparent
        // wrapper of `struct folio`.
        unsafe { NonNull::new_unchecked(f.cast()) }
    }
}

/// A block of `1 << order` physically contiguous, zeroed pages from the page allocator.
///
/// # Invariants
///
/// `first` is the first page of an allocation of `1 << order` pages by `alloc_pages()` that this
/// value owns; the pages are in the direct map.
pub struct Pages {
    first: PageFrame,
    order: u32,
}

// SAFETY: The pages are owned by the value and may be freed from any thread.
unsafe impl Send for Pages {}
// SAFETY: Shared references give no access to the contents.
unsafe impl Sync for Pages {}

impl Pages {
    /// Allocates `1 << order` zeroed pages.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::io::PhysAddr;
    /// use kernel::page::PAGE_SIZE;
    /// use kernel::physmem::{phys_to_virt, Pages};
    ///
    /// let p = Pages::alloc(2, GFP_KERNEL)?;
    /// assert_eq!(p.len(), 4 * PAGE_SIZE);
    /// assert_eq!(p.phys() % (4 * PAGE_SIZE) as PhysAddr, 0);
    /// assert_eq!(phys_to_virt(p.phys()), p.as_ptr());
    /// let raw = p.into_raw();
    /// // SAFETY: `raw` came from `into_raw()` of an order-2 block.
    /// let p = unsafe { Pages::from_raw(raw, 2) };
    /// assert_eq!(p.order(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn alloc(order: u32, flags: Flags) -> Result<Self, AllocError> {
        // SAFETY: `alloc_pages()` accepts any flags and order; it fails for a too large order.
        let page = unsafe { bindings::alloc_pages(flags.as_raw() | bindings::__GFP_ZERO, order) };
        let ptr = NonNull::new(page).ok_or(AllocError)?;
        // INVARIANT: `alloc_pages()` returned `1 << order` pages, owned by the new value; page
        // allocator memory of these flags is in the direct map.
        Ok(Self {
            // SAFETY: `ptr` is a page of the memory map.
            first: unsafe { PageFrame::from_raw(ptr) },
            order,
        })
    }

    /// The order of the block.
    #[inline]
    pub fn order(&self) -> u32 {
        self.order
    }

    /// The size of the block in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        crate::page::PAGE_SIZE << self.order
    }

    /// Whether the block is empty; it never is.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first page.
    #[inline]
    pub fn first(&self) -> PageFrame {
        self.first
    }

    /// The physical address of the block.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.first.phys()
    }

    /// The direct-map address of the block.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        phys_to_virt(self.phys())
    }

    /// Gives up ownership; [`Pages::from_raw`] takes it back.
    pub fn into_raw(self) -> PageFrame {
        let first = self.first;
        core::mem::forget(self);
        first
    }

    /// Takes ownership of a block.
    ///
    /// # Safety
    ///
    /// `first` and `order` describe a block of pages from `alloc_pages()` (for example one
    /// given up by [`Pages::into_raw`], or restored from a previous kernel with a reference
    /// count of one on each page) that the caller owns and hands over.
    pub unsafe fn from_raw(first: PageFrame, order: u32) -> Self {
        // INVARIANT: As guaranteed by the caller.
        Self { first, order }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the value owns the block allocated with this order.
        unsafe { bindings::__free_pages(self.first.as_ptr(), self.order) };
    }
}
