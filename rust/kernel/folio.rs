// SPDX-License-Identifier: GPL-2.0

//! Folios: physically contiguous, naturally aligned groups of `2^order` pages.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)
//!
//! A folio is the unit in which the page cache, the page allocator and Kexec HandOver deal with
//! memory. [`Folio`] is a reference-counted handle: `ARef<Folio>` owns one reference
//! (`folio_get()` / `folio_put()`); a [`PinnedFolio`] owns one pin (`FOLL_PIN`), which also
//! keeps the folio from being migrated.

use crate::{
    alloc::Flags,
    bindings,
    io::PhysAddr,
    prelude::*,
    sync::aref::{
        ARef,
        AlwaysRefCounted, //
    },
    types::Opaque,
};
use core::{
    ops::Deref,
    ptr::NonNull, //
};

/// A folio.
///
/// # Invariants
///
/// The inner `struct folio` is a valid folio with a positive reference count for as long as a
/// reference to this value exists.
///
/// # Examples
///
/// ```
/// use kernel::folio::Folio;
/// use kernel::io::PhysAddr;
/// use kernel::page::PAGE_SIZE;
///
/// let folio = Folio::alloc(2, GFP_KERNEL)?;
/// assert_eq!(folio.order(), 2);
/// assert_eq!(folio.nr_pages(), 4);
/// assert_eq!(folio.size(), 4 * PAGE_SIZE);
/// // Naturally aligned: the physical address is a multiple of the folio's size.
/// assert_eq!(folio.phys() % folio.size() as PhysAddr, 0);
/// assert_eq!(folio.phys(), (folio.pfn() as PhysAddr) * PAGE_SIZE as PhysAddr);
/// let other = folio.clone();
/// assert_eq!(other.pfn(), folio.pfn());
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
pub struct Folio(Opaque<bindings::folio>);

// SAFETY: Folios may be used and released from any thread.
unsafe impl Send for Folio {}
// SAFETY: Shared references only read the folio's properties, which C allows concurrently.
unsafe impl Sync for Folio {}

// SAFETY: The reference count is managed by `folio_get()` and `folio_put()`.
unsafe impl AlwaysRefCounted for Folio {
    fn inc_ref(&self) {
        // SAFETY: By the type invariants, the folio's reference count is positive.
        unsafe { bindings::folio_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns one reference to the folio.
        unsafe { bindings::folio_put(obj.cast::<bindings::folio>().as_ptr()) };
    }
}

impl Folio {
    /// Allocates a folio of `2^order` pages.
    ///
    /// Fails with [`EINVAL`] beyond the largest order and with [`ENOMEM`].
    pub fn alloc(order: u32, flags: Flags) -> Result<ARef<Self>> {
        if order > bindings::MAX_PAGE_ORDER {
            return Err(EINVAL);
        }
        // SAFETY: `folio_alloc()` may be called with any flags and order up to the maximum.
        let folio = NonNull::new(unsafe { bindings::folio_alloc(flags.as_raw(), order) });
        let folio = folio.ok_or(ENOMEM)?;
        // SAFETY: The new folio's one reference is ours. `Folio` is a transparent wrapper.
        Ok(unsafe { ARef::from_raw(folio.cast()) })
    }

    /// Takes over one reference to the folio at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid folio, and the caller must own one reference to it, which is
    /// handed to the returned value.
    pub(crate) unsafe fn from_raw_owned(ptr: NonNull<bindings::folio>) -> ARef<Self> {
        // SAFETY: The caller hands over one reference. `Folio` is a transparent wrapper.
        unsafe { ARef::from_raw(ptr.cast()) }
    }

    /// Returns a reference to the folio at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid folio whose reference count stays positive for `'a`.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::folio) -> &'a Self {
        // SAFETY: The caller guarantees validity for `'a`. `Folio` is a transparent wrapper.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `struct folio`.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// Returns the folio's order: it has `2^order` pages.
    #[inline]
    pub fn order(&self) -> u32 {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_order(self.as_raw()) }
    }

    /// Returns the number of pages in the folio.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_nr_pages(self.as_raw()) }
    }

    /// Returns the folio's size in bytes.
    pub fn size(&self) -> usize {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_size(self.as_raw()) }
    }

    /// Returns the page frame number of the folio's first page.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_pfn(self.as_raw()) }
    }

    /// Returns the physical address of the folio's first byte.
    pub fn phys(&self) -> PhysAddr {
        (self.pfn() as PhysAddr) << bindings::PAGE_SHIFT
    }

    /// Returns the folio's offset in pages within its file; meaningful while the folio is in a
    /// file's page cache.
    #[inline]
    pub fn index(&self) -> usize {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_index(self.as_raw()) }
    }

    /// Returns whether the folio holds data not yet written back (or, for shmem, data at all).
    pub fn test_dirty(&self) -> bool {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_test_dirty(self.as_raw()) }
    }

    /// Returns whether the folio's contents are valid.
    pub fn test_uptodate(&self) -> bool {
        // SAFETY: By the type invariants, the folio is valid.
        unsafe { bindings::folio_test_uptodate(self.as_raw()) }
    }
}

/// A folio pinned with `FOLL_PIN`: resident, not migrated, and released with `unpin_folio()`.
///
/// Pins are taken by the functions that find folios for long-term use (for instance a memfd's
/// folios, pinned by [`crate::liveupdate::memfd`]); this type only owns and releases one.
///
/// # Invariants
///
/// `ptr` points to a valid folio on which this value owns one `FOLL_PIN` pin.
pub struct PinnedFolio {
    ptr: NonNull<bindings::folio>,
}

// SAFETY: A pin may be released from any thread.
unsafe impl Send for PinnedFolio {}
// SAFETY: Shared references only read the folio's properties.
unsafe impl Sync for PinnedFolio {}

impl PinnedFolio {
    /// Takes over one pin on the folio at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid folio on which the caller owns one `FOLL_PIN` pin, which is
    /// handed to the returned value.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<bindings::folio>) -> Self {
        // INVARIANT: The caller hands over one pin.
        Self { ptr }
    }

    /// Gives up ownership of the pin, returning the folio; the caller releases the pin later
    /// with `unpin_folio()`.
    #[must_use = "the pin is released only with unpin_folio()"]
    pub(crate) fn into_raw(self) -> NonNull<bindings::folio> {
        let this = core::mem::ManuallyDrop::new(self);
        this.ptr
    }
}

impl Deref for PinnedFolio {
    type Target = Folio;

    #[inline]
    fn deref(&self) -> &Folio {
        // SAFETY: By the type invariants, the pin keeps the folio's reference count positive
        // while `self` lives.
        unsafe { Folio::from_raw(self.ptr.as_ptr()) }
    }
}

impl Drop for PinnedFolio {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, we own one pin on the folio.
        unsafe { bindings::unpin_folio(self.ptr.as_ptr()) };
    }
}
