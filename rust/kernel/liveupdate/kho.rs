// SPDX-License-Identifier: GPL-2.0

//! Kexec HandOver (KHO): memory and named data that survive a kexec.
//!
//! C header: [`include/linux/kexec_handover.h`](srctree/include/linux/kexec_handover.h)
//!
//! Memory preserved with KHO keeps its physical address and contents across a `kexec_file_load`
//! kexec; the next kernel restores it by physical address. A *subtree* names one preserved blob
//! so that the next kernel can find it.
//!
//! Everything the next kernel reads was written by another kernel and is not trusted:
//! [`RestoredMem::restore`] accepts only an address that KHO recorded as the start of a
//! preserved block, so a corrupt address gives an error instead of a read of arbitrary memory.

use crate::{
    alloc::VVec,
    bindings,
    error::{
        from_err_ptr,
        to_result, //
    },
    ffi::c_ulong,
    folio::Folio,
    io::PhysAddr,
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::aref::ARef,
    transmute::{
        AsBytes,
        FromBytes, //
    },
};
use core::{
    mem::{
        ManuallyDrop,
        MaybeUninit, //
    },
    ops::Deref,
    ptr::NonNull, //
};

/// Returns whether KHO is enabled (`kho=`), i.e. whether preserved memory can survive a kexec.
pub fn is_enabled() -> bool {
    // SAFETY: `kho_is_enabled()` only reads a boolean set at boot.
    unsafe { bindings::kho_is_enabled() }
}

/// Zeroed memory that is preserved across kexec while this value lives.
///
/// The memory is one folio of `PAGE_SIZE << order` bytes, as allocated by `kho_alloc_preserve()`.
/// Dropping the value unpreserves and frees it.
///
/// # Invariants
///
/// `ptr` is the address of a folio of `len` bytes returned by `kho_alloc_preserve()`, still
/// preserved, and owned by this value alone.
pub struct PreservedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The memory is owned by the value and may be freed from any thread.
unsafe impl Send for PreservedMem {}
// SAFETY: Shared references only give `&[u8]` access.
unsafe impl Sync for PreservedMem {}

impl PreservedMem {
    /// Allocates at least `size` zeroed bytes and preserves them.
    ///
    /// Fails with [`EINVAL`] for a zero size, [`E2BIG`] beyond the largest folio and [`ENOMEM`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::liveupdate::kho::PreservedMem;
    /// use kernel::page::PAGE_SIZE;
    ///
    /// # if !kernel::liveupdate::kho::is_enabled() { return Ok(()); }
    /// let mut mem = PreservedMem::new(100)?;
    /// assert_eq!(mem.as_slice().len(), PAGE_SIZE);
    /// assert!(mem.as_slice().iter().all(|&b| b == 0));
    /// mem.as_mut_slice()[0] = 0x5a;
    /// assert_eq!(mem.phys() % PAGE_SIZE as u64, 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(size: usize) -> Result<Self> {
        // SAFETY: `kho_alloc_preserve()` may be called with any size.
        let ptr = from_err_ptr(unsafe { bindings::kho_alloc_preserve(size) })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?;
        // SAFETY: `ptr` is the address of a live folio, which `virt_to_folio()` finds.
        let folio = unsafe { bindings::virt_to_folio(ptr.as_ptr().cast()) };
        // SAFETY: `folio` is the live folio just allocated.
        let len = unsafe { bindings::folio_size(folio) };
        // INVARIANT: `ptr` and `len` describe the folio just allocated and preserved.
        Ok(Self { ptr, len })
    }

    /// Returns the physical address of the memory.
    pub fn phys(&self) -> PhysAddr {
        // SAFETY: `ptr` is a valid address in the kernel's linear map.
        unsafe { bindings::virt_to_phys(self.ptr.as_ptr().cast()) }
    }

    /// Returns the memory's contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: By the type invariants, `ptr` points to `len` initialised bytes owned by `self`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Returns the memory's contents for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: By the type invariants, `ptr` points to `len` initialised bytes owned by `self`,
        // and `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PreservedMem {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `ptr` came from `kho_alloc_preserve()` and is freed
        // only here.
        unsafe { bindings::kho_unpreserve_free(self.ptr.as_ptr().cast()) };
    }
}

/// Memory preserved by the previous kernel, restored in this one.
///
/// Dropping the value frees the memory.
///
/// # Invariants
///
/// `folio` was restored by `kho_restore_folio()` and is mapped in the kernel's linear map at
/// `ptr`.
pub struct RestoredMem {
    folio: ARef<Folio>,
    ptr: NonNull<u8>,
}

// SAFETY: The folio is owned by the value and may be freed from any thread.
unsafe impl Send for RestoredMem {}
// SAFETY: Shared references only give `&[u8]` access.
unsafe impl Sync for RestoredMem {}

impl RestoredMem {
    /// Restores the preserved block (a folio of any order) starting at `phys`.
    ///
    /// Fails with [`EINVAL`] unless `phys` is the start of a block that the previous kernel
    /// preserved and that was not restored yet; memory outside RAM, in the middle of a block or
    /// restored twice is refused.
    pub fn restore(phys: PhysAddr) -> Result<Self> {
        let folio = restore_folio(phys)?;
        // SAFETY: `folio` is a live folio; restored folios are in the linear map.
        let ptr = NonNull::new(unsafe { bindings::folio_address(folio.as_raw()) }.cast::<u8>());
        // INVARIANT: `folio` was just restored; `ptr` is its address.
        Ok(Self {
            ptr: ptr.ok_or(EINVAL)?,
            folio,
        })
    }

    /// Returns the memory's contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: By the type invariants, `ptr` points to the folio's bytes, owned by `self`;
        // restored memory keeps the previous kernel's contents, and any byte is a valid `u8`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.folio.size()) }
    }

    /// Returns the memory's contents for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: As in `as_slice`; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.folio.size()) }
    }
}

/// Restores the folio the previous kernel preserved at `phys`.
///
/// Fails with [`EINVAL`] unless `phys` is the head of a block the previous kernel preserved
/// and that was not restored yet.
#[inline]
pub fn restore_folio(phys: PhysAddr) -> Result<ARef<Folio>> {
    // SAFETY: `kho_restore_folio()` validates any address: it returns NULL unless `phys` is the
    // head of a block preserved by the previous kernel that was not restored yet.
    let folio = NonNull::new(unsafe { bindings::kho_restore_folio(phys) }).ok_or(EINVAL)?;
    // SAFETY: A restored folio comes with one reference, which is now ours.
    Ok(unsafe { Folio::from_raw_owned(folio) })
}

/// A folio the previous kernel preserved, restored in this one and owned by this value alone.
///
/// Unlike an [`ARef<Folio>`], which may share the folio with the page cache or other users, a
/// restored folio is known to be in no mapping, on no LRU list and referenced by nobody else, so
/// it can be handed to code that takes ownership of a fresh folio (for instance to insert it into
/// a page cache). Dropping the value frees the folio.
///
/// # Invariants
///
/// `folio` was returned by `kho_restore_folio()`; `folio` holds its only reference, and it was
/// not put into any mapping or list.
pub struct RestoredFolio {
    folio: ARef<Folio>,
}

impl RestoredFolio {
    /// Restores the folio the previous kernel preserved at `phys`.
    ///
    /// Fails with [`EINVAL`] unless `phys` is the head of a block the previous kernel preserved
    /// and that was not restored yet.
    #[inline]
    pub fn restore(phys: PhysAddr) -> Result<Self> {
        // INVARIANT: A folio is restored once, with a single reference.
        Ok(Self {
            folio: restore_folio(phys)?,
        })
    }

    /// Returns the number of pages in the folio.
    pub fn nr_pages(&self) -> usize {
        self.folio.nr_pages()
    }

    /// Hands the folio's only reference to the caller, as a raw pointer.
    ///
    /// The folio is in no mapping or list and nobody else references it; the caller must drop
    /// the reference with `folio_put()` or hand it to a function that takes it over.
    #[inline]
    pub(crate) fn into_raw(self) -> NonNull<bindings::folio> {
        ARef::into_raw(self.folio).cast()
    }
}

/// The description of a vmalloc area preserved by KHO (`struct kho_vmalloc`): where its chain
/// of chunks starts and how many pages it has.
///
/// A [`PreservedVVec`] gives it out; the user stores it in its own preserved data, and the next
/// kernel maps the area again with [`RestoredVmalloc::restore`]. The handover structs of
/// [`abi`](super::abi) and of the iommufd handler hold it as the C headers lay it out; [`From`]
/// converts between the two. Any bytes are a value: one read from the previous kernel is only
/// checked when it is restored.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::kho::KhoVmalloc;
/// use kernel::transmute::{AsBytes, FromBytes};
///
/// let empty = KhoVmalloc::default();
/// assert_eq!(empty.total_pages(), 0);
/// assert_eq!(empty.as_bytes(), &[0u8; 16]);
/// let read = KhoVmalloc::from_bytes_copy(&[0xff; 16]).ok_or(EINVAL)?;
/// assert_eq!(read.total_pages(), u32::MAX);
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct KhoVmalloc(bindings::kho_vmalloc);

// SAFETY: A transparent wrapper of `struct kho_vmalloc`, for which any bit pattern is valid
// (`FromBytes` of `bindings::kho_vmalloc`, in `abi.rs`).
unsafe impl FromBytes for KhoVmalloc {}

// SAFETY: A transparent wrapper of `struct kho_vmalloc`, which has no padding (`AsBytes` of
// `bindings::kho_vmalloc`, in `abi.rs`).
unsafe impl AsBytes for KhoVmalloc {}

impl KhoVmalloc {
    /// Returns the number of pages of the area.
    pub fn total_pages(&self) -> u32 {
        self.0.total_pages
    }

    /// Restores the area's pages one at a time, calls `f` with each in order and frees it.
    ///
    /// Unlike [`RestoredVmalloc::restore`], this maps nothing and allocates nothing, so it
    /// cannot fail for lack of memory: a user that only reads the area once (to find the memory
    /// it describes, or to free that memory) loses nothing to an allocation failure.
    ///
    /// Returns the number of pages visited. Fails with [`EINVAL`] if the descriptor, a chunk or
    /// a block is not a valid preservation (unknown flags, a page count that does not add up, a
    /// page that was not preserved); `f` has then seen the pages before the bad one, and the
    /// rest stays preserved.
    pub fn restore_each(&self, mut f: impl FnMut(&RestoredPage<'_>)) -> Result<usize> {
        /// `KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP`: the flags a preservation may have.
        const KNOWN_FLAGS: u16 = 0x0003;
        let desc = &self.0;
        let order = u32::from(desc.order);
        if desc.flags & !KNOWN_FLAGS != 0 || order > bindings::MAX_PAGE_ORDER {
            return Err(EINVAL);
        }
        let step = 1usize << order;
        let total = desc.total_pages as usize;
        if total == 0 || total % step != 0 {
            return Err(EINVAL);
        }
        let mut visited = 0usize;
        // SAFETY: Any bit pattern of the union is a valid `phys`.
        let mut next = unsafe { desc.first.phys };
        while next != 0 {
            // A chunk: the address of the next chunk, then those of blocks, up to a zero.
            let chunk_pages = RestoredPages::restore(next, 1)?;
            let chunk = chunk_pages.page(0).ok_or(EINVAL)?;
            next = chunk.read::<u64>(0).ok_or(EINVAL)?;
            for i in 1..PAGE_SIZE / size_of::<u64>() {
                let phys = chunk.read::<u64>(i * size_of::<u64>()).ok_or(EINVAL)?;
                if phys == 0 {
                    break;
                }
                visited = visited
                    .checked_add(step)
                    .filter(|&v| v <= total)
                    .ok_or(EINVAL)?;
                let block = RestoredPages::restore(phys, step)?;
                for j in 0..step {
                    f(&block.page(j).ok_or(EINVAL)?);
                }
            }
        }
        if visited != total {
            return Err(EINVAL);
        }
        Ok(visited)
    }
}

/// Contiguous order-0 pages restored with `kho_restore_pages()`, freed on drop.
///
/// # Invariants
///
/// `first` is the first of `nr` pages restored by `kho_restore_pages()`, each with one
/// reference owned by this value. They are one preserved block, inside one memory section, so
/// their `struct page`s are contiguous in the memory map (as `kho_restore_vmalloc()` assumes).
struct RestoredPages {
    first: NonNull<bindings::page>,
    nr: usize,
}

impl RestoredPages {
    /// Restores the `nr` pages the previous kernel preserved at `phys`.
    fn restore(phys: PhysAddr, nr: usize) -> Result<Self> {
        let nr_pages = c_ulong::try_from(nr).map_err(|_| EINVAL)?;
        // SAFETY: `kho_restore_pages()` checks that the range was preserved and not restored
        // yet; it may be called from any context that may sleep.
        let first = unsafe { bindings::kho_restore_pages(phys, nr_pages) };
        let first = NonNull::new(first).ok_or(EINVAL)?;
        // INVARIANT: On success the `nr` pages of one preserved block are restored, with one
        // reference each.
        Ok(Self { first, nr })
    }

    /// Returns page `i`, readable while `self` lives.
    fn page(&self, i: usize) -> Option<RestoredPage<'_>> {
        if i >= self.nr {
            return None;
        }
        // SAFETY: By the type invariants the `nr` pages are contiguous in the memory map, so
        // page `i < nr` is in it.
        let ptr = unsafe { self.first.add(i) };
        // SAFETY: The page is valid while `self` lives, which the returned value borrows.
        Some(RestoredPage(unsafe { BorrowedPage::from_raw(ptr) }))
    }
}

impl Drop for RestoredPages {
    fn drop(&mut self) {
        for i in 0..self.nr {
            // SAFETY: By the type invariants the `nr` pages are contiguous in the memory map, so
            // page `i < nr` is in it.
            let page = unsafe { self.first.add(i) };
            // SAFETY: By the type invariants, the page is a restored order-0 page whose only
            // reference is ours; it is freed only here.
            unsafe { bindings::__free_pages(page.as_ptr(), 0) };
        }
    }
}

/// A page of memory restored from the previous kernel, given by [`KhoVmalloc::restore_each`].
pub struct RestoredPage<'a>(BorrowedPage<'a>);

impl RestoredPage<'_> {
    /// Reads a `T` at byte `offset`; `None` if it does not fit in the page.
    pub fn read<T: FromBytes>(&self, offset: usize) -> Option<T> {
        let mut value = MaybeUninit::<T>::uninit();
        // SAFETY: `value` is valid for writing `size_of::<T>()` bytes; the restored page is
        // owned by the restore and nothing writes it while it is read.
        unsafe {
            self.0
                .read_raw(value.as_mut_ptr().cast(), offset, size_of::<T>())
                .ok()?
        };
        // SAFETY: `read_raw` wrote all `size_of::<T>()` bytes, and any bytes are a valid `T`.
        Some(unsafe { value.assume_init() })
    }

    /// Calls `f` with each `T` of the page in order (the `i`-th at byte `i * size_of::<T>()`),
    /// while `f` returns `true`.
    ///
    /// The page is mapped once for all of them, not once per value as by [`RestoredPage::read`]:
    /// this is how an array of many small entries is walked. `f` runs with the page mapped
    /// (`kmap_local_page()`; KHO only runs on 64-bit, where that is the direct map) and may
    /// sleep; local mappings it makes must be undone before it returns, as the kernel crate's
    /// own (made and undone inside one call) are.
    pub fn read_each<T: FromBytes>(&self, mut f: impl FnMut(T) -> bool) {
        let size = size_of::<T>();
        if size == 0 {
            return;
        }
        // SAFETY: The page is valid while `self` lives; the mapping is undone below.
        let base = unsafe { bindings::kmap_local_page(self.0.as_ptr()) }.cast::<u8>();
        for i in 0..PAGE_SIZE / size {
            // SAFETY: `(i + 1) * size <= PAGE_SIZE`, so the `T` is inside the mapped page, which
            // the restore owns and nothing writes meanwhile; any bytes are a valid `T`.
            let value = unsafe { base.add(i * size).cast::<T>().read_unaligned() };
            if !f(value) {
                break;
            }
        }
        // SAFETY: `base` is the mapping made above; `f` undid any local mapping it made, so
        // it is the last one this task holds.
        unsafe { bindings::kunmap_local(base.cast()) };
    }
}

impl Default for KhoVmalloc {
    /// Returns the description of no area: all zeroes, as an unused field of a handover struct.
    fn default() -> Self {
        Self(pin_init::zeroed())
    }
}

impl From<bindings::kho_vmalloc> for KhoVmalloc {
    fn from(desc: bindings::kho_vmalloc) -> Self {
        Self(desc)
    }
}

impl From<KhoVmalloc> for bindings::kho_vmalloc {
    fn from(desc: KhoVmalloc) -> Self {
        desc.0
    }
}

/// A vmalloc'd vector whose memory is preserved across kexec while this value lives.
///
/// KHO records the vector's pages in a chain of chunks described by a [`KhoVmalloc`],
/// [`PreservedVVec::descriptor`], which the user stores in its own preserved data; the next
/// kernel maps the same pages again with [`RestoredVmalloc::restore`]. The elements may still be
/// written after preservation: the next kernel sees them as they are at kexec. Dropping the value
/// unpreserves and frees the memory.
///
/// # Invariants
///
/// `desc` describes the preservation of `vec`'s allocation by `kho_preserve_vmalloc()`, which is
/// not unpreserved yet; `vec` is not empty and is never reallocated.
///
/// # Examples
///
/// ```
/// use kernel::alloc::VVec;
/// use kernel::liveupdate::kho::{self, PreservedVVec};
///
/// # if !kho::is_enabled() { return Ok(()); }
/// let mut v = VVec::<u64>::with_capacity(1000, GFP_KERNEL)?;
/// for i in 0..1000 {
///     v.push(i, GFP_KERNEL)?;
/// }
/// let mut p = PreservedVVec::new(v)?;
/// p.as_mut_slice()[3] = 42;
/// assert_eq!(p.as_slice()[3], 42);
/// // 8000 bytes span two pages.
/// assert_eq!(p.descriptor().total_pages(), 2);
/// assert!(PreservedVVec::new(VVec::<u64>::new()).is_err());
/// # Ok::<(), Error>(())
/// ```
pub struct PreservedVVec<T> {
    vec: VVec<T>,
    desc: KhoVmalloc,
}

// SAFETY: The vector is owned by the value; KHO's records may be updated from any thread.
unsafe impl<T: Send> Send for PreservedVVec<T> {}
// SAFETY: Shared references give only `&[T]` access.
unsafe impl<T: Sync> Sync for PreservedVVec<T> {}

impl<T: AsBytes> PreservedVVec<T> {
    /// Preserves the memory of `vec`, which must not be empty.
    ///
    /// Fails with [`EINVAL`] for an empty vector and [`ENOMEM`]; `vec` is freed on failure.
    pub fn new(vec: VVec<T>) -> Result<Self> {
        Self::try_new(vec).map_err(|(e, _)| e)
    }

    /// As [`PreservedVVec::new`], but hands `vec` back on failure.
    pub fn try_new(vec: VVec<T>) -> core::result::Result<Self, (Error, VVec<T>)> {
        if vec.is_empty() || size_of::<T>() == 0 {
            return Err((EINVAL, vec));
        }
        let mut desc = KhoVmalloc::default();
        // SAFETY: A non-empty `VVec` of a sized type owns a `vmalloc()` allocation starting at
        // `as_ptr()`, which stays allocated and unmoved while `vec` is not reallocated; `desc`
        // is valid for writes.
        if let Err(e) = to_result(unsafe {
            bindings::kho_preserve_vmalloc(vec.as_ptr().cast_mut().cast(), &mut desc.0)
        }) {
            return Err((e, vec));
        }
        // INVARIANT: Preserved just now; the vector is never reallocated (no `&mut VVec` is
        // handed out).
        Ok(Self { vec, desc })
    }
}

impl<T> PreservedVVec<T> {
    /// Returns the description of the preservation, to be stored for the next kernel.
    pub fn descriptor(&self) -> KhoVmalloc {
        self.desc
    }

    /// Returns the elements.
    pub fn as_slice(&self) -> &[T] {
        &self.vec
    }

    /// Returns the elements for writing.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.vec
    }
}

impl<T> Drop for PreservedVVec<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `desc` describes a preservation that is still in
        // place; it is undone only here, before `vec` frees the memory.
        unsafe { bindings::kho_unpreserve_vmalloc(&mut self.desc.0) };
    }
}

/// Memory the previous kernel preserved with [`PreservedVVec`] (or `kho_preserve_vmalloc()`),
/// mapped again in this one.
///
/// Dropping the value unmaps and frees the memory.
///
/// # Invariants
///
/// `ptr` was returned by `kho_restore_vmalloc()` for a preservation of `len` bytes, and is
/// owned by this value.
pub struct RestoredVmalloc {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The mapping is owned by the value and may be freed from any thread.
unsafe impl Send for RestoredVmalloc {}
// SAFETY: Shared references only give `&[u8]` access.
unsafe impl Sync for RestoredVmalloc {}

impl RestoredVmalloc {
    /// Maps again the memory that `desc`, read from the previous kernel, describes.
    ///
    /// Fails with [`EINVAL`] if `desc` or the chunks it points to are not a valid
    /// preservation: unknown flags, page counts that do not add up, or pages that were not
    /// preserved.
    ///
    /// `desc` comes from the previous kernel. `kho_restore_vmalloc()` restores each chunk page
    /// (which checks that it was preserved) before it reads it, and frees what it restored if
    /// the descriptor turns out to be wrong.
    pub fn restore(desc: &KhoVmalloc) -> Result<Self> {
        let len = (desc.total_pages() as usize)
            .checked_mul(PAGE_SIZE)
            .ok_or(EINVAL)?;
        if len == 0 {
            return Err(EINVAL);
        }
        // SAFETY: `desc` is a valid `struct kho_vmalloc`; `kho_restore_vmalloc()` returns NULL
        // unless the chunks and pages it describes were preserved and not restored yet.
        let ptr = unsafe { bindings::kho_restore_vmalloc(&desc.0) };
        // INVARIANT: On success `ptr` maps `total_pages` pages and is ours.
        Ok(Self {
            ptr: NonNull::new(ptr.cast::<u8>()).ok_or(EINVAL)?,
            len,
        })
    }

    /// Returns the memory's contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: By the type invariants, `ptr` maps `len` bytes owned by `self`; restored
        // memory keeps the previous kernel's contents, and any byte is a valid `u8`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for RestoredVmalloc {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `ptr` came from `kho_restore_vmalloc()`, whose
        // mapping and pages `vfree()` releases; it is freed only here.
        unsafe { bindings::vfree(self.ptr.as_ptr().cast()) };
    }
}

/// A folio that is preserved across kexec while this value lives.
///
/// The value holds the folio through `F`, a reference ([`ARef<Folio>`], the default) or a pin
/// ([`PinnedFolio`](crate::folio::PinnedFolio)). Dropping it unpreserves the folio, then
/// releases `F`; [`PreservedFolio::keep`] leaves the folio preserved for the next kernel and
/// returns `F`.
///
/// # Invariants
///
/// `folio` was preserved with `kho_preserve_folio()` and is not unpreserved yet.
///
/// # Examples
///
/// ```
/// use kernel::folio::Folio;
/// use kernel::liveupdate::kho::{self, PreservedFolio};
///
/// # if !kho::is_enabled() { return Ok(()); }
/// let folio = Folio::alloc(1, GFP_KERNEL)?;
/// let preserved = PreservedFolio::new(folio.clone())?;
/// assert_eq!(preserved.folio().pfn(), folio.pfn());
/// drop(preserved);
/// // Unpreserved, it can be preserved again.
/// drop(PreservedFolio::new(folio)?);
/// # Ok::<(), Error>(())
/// ```
pub struct PreservedFolio<F: Deref<Target = Folio> = ARef<Folio>> {
    folio: ManuallyDrop<F>,
}

impl<F: Deref<Target = Folio>> PreservedFolio<F> {
    /// Preserves `folio` (all its pages, at its order).
    ///
    /// KHO records a folio once, not a count: preserving a folio that is already preserved
    /// succeeds, and the first unpreserve ends both. Callers keep one [`PreservedFolio`] per
    /// folio. On failure `folio` is released.
    #[inline]
    pub fn new(folio: F) -> Result<Self> {
        // SAFETY: `folio` is a valid folio that `F` keeps alive.
        let ret = unsafe { bindings::kho_preserve_folio(folio.as_raw()) };
        if ret < 0 {
            // Not `to_result()`, an out-of-line call: this runs once per folio.
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: Preserved just now.
        Ok(Self {
            folio: ManuallyDrop::new(folio),
        })
    }

    /// Returns the preserved folio.
    #[inline]
    pub fn folio(&self) -> &Folio {
        &self.folio
    }

    /// Returns what holds the folio.
    #[inline]
    pub fn get(&self) -> &F {
        &self.folio
    }

    /// Leaves the folio preserved for the next kernel and returns it.
    #[inline]
    pub fn keep(self) -> F {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the folio is taken exactly once.
        unsafe { ManuallyDrop::take(&mut this.folio) }
    }
}

impl<F: Deref<Target = Folio>> Drop for PreservedFolio<F> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, the folio is preserved; it is unpreserved only here.
        unsafe { bindings::kho_unpreserve_folio(self.folio.as_raw()) };
        // SAFETY: `folio` is not used after this.
        drop(unsafe { ManuallyDrop::take(&mut self.folio) });
    }
}

/// A named blob in the handover data of the next kernel, removed when this value is dropped.
///
/// The blob is the start of a [`PreservedMem`] owned by the subtree, so the memory stays
/// preserved while the next kernel can find it.
pub struct Subtree {
    mem: PreservedMem,
}

impl Subtree {
    /// Adds `mem`'s first `size` bytes to the handover data under `name`.
    ///
    /// Fails with [`EINVAL`] if `size` exceeds the memory, [`EEXIST`] if the name is taken and
    /// [`ENOMEM`] if KHO's table of subtrees is full. On failure `mem` is freed.
    pub fn add(name: &CStr, mut mem: PreservedMem, size: usize) -> Result<Self> {
        if size > mem.as_slice().len() {
            return Err(EINVAL);
        }
        let blob = mem.as_mut_slice().as_mut_ptr();
        // SAFETY: `name` is a NUL-terminated string, and `blob` points to `size` bytes of
        // preserved memory that stays allocated until `kho_remove_subtree()` in `drop`.
        to_result(unsafe { bindings::kho_add_subtree(name.as_char_ptr(), blob.cast(), size) })?;
        Ok(Self { mem })
    }

    /// Returns the blob's memory.
    pub fn mem(&self) -> &PreservedMem {
        &self.mem
    }

    /// Returns the blob's memory for writing; the next kernel reads it as it is at kexec.
    pub fn mem_mut(&mut self) -> &mut PreservedMem {
        &mut self.mem
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        let blob = self.mem.as_mut_slice().as_mut_ptr();
        // SAFETY: `blob` was added by `kho_add_subtree()` in `add` and is removed only here.
        unsafe { bindings::kho_remove_subtree(blob.cast()) };
    }
}

/// Looks up the blob the previous kernel named `name`: returns its physical address and size.
///
/// Fails with [`ENOENT`] if this is not a KHO boot or there is no such blob, and with [`EINVAL`]
/// if its description is malformed. The blob's memory is not restored: see
/// [`RestoredMem::restore`].
pub fn retrieve_subtree(name: &CStr) -> Result<(PhysAddr, usize)> {
    let mut phys: PhysAddr = 0;
    let mut size: usize = 0;
    // SAFETY: `name` is a NUL-terminated string and both out-pointers are valid for writes.
    to_result(unsafe { bindings::kho_retrieve_subtree(name.as_char_ptr(), &mut phys, &mut size) })?;
    Ok((phys, size))
}
