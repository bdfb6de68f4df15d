// SPDX-License-Identifier: GPL-2.0

//! memfds as the live update memfd handler sees them.
//!
//! C headers: [`include/linux/shmem_luo.h`](srctree/include/linux/shmem_luo.h) and
//! [`include/linux/memfd.h`](srctree/include/linux/memfd.h)
//!
//! A [`Memfd`] is a file the memfd handler may preserve: an unlinked shmem file, that is a memfd
//! not backed by hugetlb. Under its inode lock ([`Memfd::lock`]) its size can be frozen and the
//! folios it holds pinned, without filling holes. In the next kernel a [`NewMemfd`] is built
//! around the folios the previous kernel preserved, charged to the retrieving task's memory
//! cgroup and accounted to the file like pages it faulted in.

use crate::{
    alloc::{
        KVVec,
        VVec, //
    },
    bindings,
    error::{
        from_err_ptr,
        to_result, //
    },
    folio::{
        Folio,
        PinnedFolio, //
    },
    fs::File,
    liveupdate::{
        abi::MemfdFolio,
        kho::{
            KhoVmalloc,
            PreservedFolio,
            PreservedVVec,
            RestoredFolio, //
        },
    },
    physmem::PageFrame,
    prelude::*,
    sync::aref::ARef,
    types::NotThreadSafe, //
};
use core::{
    ops::Deref,
    ptr::NonNull, //
};

pub use bindings::{
    F_SEAL_EXEC,
    F_SEAL_FUTURE_WRITE,
    F_SEAL_GROW,
    F_SEAL_SEAL,
    F_SEAL_SHRINK,
    F_SEAL_WRITE, //
};

/// The access mode a file is opened with: the `O_ACCMODE` bits of its flags.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::memfd::AccessMode;
///
/// for mode in [AccessMode::ReadOnly, AccessMode::WriteOnly, AccessMode::ReadWrite] {
///     assert_eq!(AccessMode::from_flags(mode.bits()), Some(mode));
/// }
/// // `O_ACCMODE` itself: neither reading nor writing.
/// assert_eq!(AccessMode::from_flags(3), None);
/// // Only the `O_ACCMODE` bits count.
/// assert_eq!(AccessMode::from_flags(0o100 | 2), Some(AccessMode::ReadWrite));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// `O_RDONLY`.
    ReadOnly,
    /// `O_WRONLY`.
    WriteOnly,
    /// `O_RDWR`.
    ReadWrite,
}

impl AccessMode {
    /// Returns the mode as the `O_ACCMODE` bits of file flags: `O_RDONLY`, `O_WRONLY` or
    /// `O_RDWR`.
    pub const fn bits(self) -> u32 {
        match self {
            Self::ReadOnly => bindings::O_RDONLY,
            Self::WriteOnly => bindings::O_WRONLY,
            Self::ReadWrite => bindings::O_RDWR,
        }
    }

    /// Returns the mode of the `O_ACCMODE` bits of `flags`, or `None` if they are `O_ACCMODE`
    /// itself, which opens a file for neither reading nor writing (ioctls only).
    pub const fn from_flags(flags: u32) -> Option<Self> {
        match flags & bindings::O_ACCMODE {
            bindings::O_RDONLY => Some(Self::ReadOnly),
            bindings::O_WRONLY => Some(Self::WriteOnly),
            bindings::O_RDWR => Some(Self::ReadWrite),
            _ => None,
        }
    }
}

/// How many folios one call of `memfd_pin_present_folios()` pins at most.
///
/// Large batches matter: folios that must be migrated before they can be pinned (in CMA, such
/// as KHO's scratch areas after a live update) cost an LRU drain on every CPU per batch.
const PIN_BATCH: usize = 1 << 16;

/// A memfd as the live update memfd handler sees it: a shmem file.
///
/// # Invariants
///
/// The file is a shmem file (`shmem_file()` returned true for it).
#[repr(transparent)]
pub struct Memfd(File);

impl Memfd {
    /// Returns `file` as a memfd the handler can preserve, or `None` if it is not an unlinked
    /// shmem file (hugetlb memfds and files with a name on tmpfs are not).
    pub fn from_file(file: &File) -> Option<&Memfd> {
        // SAFETY: `file` is a valid file.
        if unsafe { bindings::shmem_luo_can_preserve(file.as_ptr()) } {
            // SAFETY: `Memfd` is a transparent wrapper of `File`.
            // INVARIANT: An unlinked shmem file is a shmem file.
            Some(unsafe { &*core::ptr::from_ref(file).cast::<Memfd>() })
        } else {
            None
        }
    }

    /// Returns `file` as a memfd if it is a shmem file, named or not.
    ///
    /// A preserved memfd stays one when it gets a name (an `O_TMPFILE` can be linked), so the
    /// handler finds it again with this rather than [`Memfd::from_file`].
    pub fn from_preserved(file: &File) -> Option<&Memfd> {
        // SAFETY: `file` is a valid file.
        if unsafe { bindings::shmem_file(file.as_ptr()) } {
            // SAFETY: `Memfd` is a transparent wrapper of `File`.
            // INVARIANT: Checked just now.
            Some(unsafe { &*core::ptr::from_ref(file).cast::<Memfd>() })
        } else {
            None
        }
    }

    /// Returns the file.
    pub fn file(&self) -> &File {
        &self.0
    }

    fn raw(&self) -> *mut bindings::file {
        self.0.as_ptr()
    }

    fn inode(&self) -> *mut bindings::inode {
        // SAFETY: The file is valid.
        unsafe { bindings::file_inode(self.raw()) }
    }

    /// Returns an identity of the memfd's contents: the address of its inode, shared by all
    /// files opened on it.
    pub fn id(&self) -> usize {
        // SAFETY: The file is valid, and `f_inode` is set at open and never changes.
        unsafe { (*self.raw()).f_inode as usize }
    }

    /// Returns the access mode the file was opened with, or `None` if it was opened with
    /// `O_ACCMODE` (for neither reading nor writing).
    pub fn access(&self) -> Option<AccessMode> {
        AccessMode::from_flags(self.0.flags())
    }

    /// Returns the file position, read without locking (a snapshot).
    pub fn pos(&self) -> i64 {
        // SAFETY: The file is valid; `f_pos` is read once without its lock, as `READ_ONCE()`
        // does, for a snapshot.
        unsafe { core::ptr::read_volatile(&raw const (*self.raw()).f_pos) }
    }

    /// Returns the size in bytes.
    pub fn size(&self) -> i64 {
        // SAFETY: The inode of a valid file is valid.
        unsafe { bindings::i_size_read(self.inode()) }
    }

    /// Returns the inode's permission bits (`0o777` at most).
    pub fn mode(&self) -> u32 {
        // SAFETY: The inode of a valid file is valid; `i_mode` is read once, as `READ_ONCE()`
        // does.
        let mode = unsafe { core::ptr::read_volatile(&raw const (*self.inode()).i_mode) };
        u32::from(mode) & 0o777
    }

    /// Returns the memfd's seals (`F_SEAL_*`).
    pub fn seals(&self) -> Result<u32> {
        // SAFETY: The file is valid.
        let seals = unsafe { bindings::memfd_get_seals(self.raw()) };
        to_result(seals)?;
        u32::try_from(seals).map_err(|_| EINVAL)
    }

    /// Returns the number of pages the memfd holds in memory and in swap.
    pub fn nr_pages(&self) -> usize {
        // SAFETY: By the type invariants, the file is a memfd.
        unsafe { bindings::shmem_luo_nr_pages(self.raw()) }
    }

    /// Takes the memfd's inode lock, which serializes against `ftruncate()`, `fallocate()`,
    /// sealing and writes that grow the file.
    pub fn lock(&self) -> MemfdGuard<'_> {
        // SAFETY: The inode of a valid file is valid.
        unsafe { bindings::inode_lock(self.inode()) };
        // INVARIANT: Locked just now.
        MemfdGuard {
            memfd: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Takes the memfd's inode lock like [`Memfd::lock`], unless a fatal signal arrives while
    /// waiting for it ([`EINTR`]).
    pub fn lock_killable(&self) -> Result<MemfdGuard<'_>> {
        // SAFETY: The inode of a valid file is valid.
        to_result(unsafe { bindings::inode_lock_killable(self.inode()) })?;
        // INVARIANT: Locked just now.
        Ok(MemfdGuard {
            memfd: self,
            _not_send: NotThreadSafe,
        })
    }
}

/// A [`Memfd`] whose inode lock is held.
///
/// # Invariants
///
/// The inode lock of `memfd` is held by this value.
pub struct MemfdGuard<'a> {
    memfd: &'a Memfd,
    // The lock must be released by the task that took it.
    _not_send: NotThreadSafe,
}

impl Deref for MemfdGuard<'_> {
    type Target = Memfd;

    fn deref(&self) -> &Memfd {
        self.memfd
    }
}

impl Drop for MemfdGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, we hold the lock.
        unsafe { bindings::inode_unlock(self.memfd.inode()) };
    }
}

impl MemfdGuard<'_> {
    /// Freezes or unfreezes the memfd's size: while frozen, `ftruncate()`, `fallocate()` and
    /// writes past the end fail with `EPERM`, while stores inside the size keep working.
    pub fn set_frozen(&self, frozen: bool) {
        // SAFETY: By the type invariants, the file is a memfd and its inode lock is held.
        unsafe { bindings::shmem_luo_freeze(self.raw(), frozen) };
    }

    /// Reads the memfd's swapped-out pages up to page `last` back into memory, so that
    /// [`MemfdGuard::for_each_present`] sees all its data; returns how many there were.
    ///
    /// The pages are not pinned and may be swapped out again before they are: pin, then call
    /// this again until it returns 0.
    pub fn swap_in(&self, last: usize) -> Result<usize> {
        // SAFETY: By the type invariants, the file is a memfd and its inode lock is held.
        let found = unsafe { bindings::shmem_luo_swapin(self.raw(), last) };
        usize::try_from(found)
            .map_err(|_| Error::from_errno(i32::try_from(found).unwrap_or(EINVAL.to_errno())))
    }

    /// Pins the folios the memfd holds between page indices `first` and `last` (inclusive) and
    /// hands them to `f` in index order; holes are not filled.
    ///
    /// Folios in memory that cannot be pinned long-term (movable zone, CMA) are migrated
    /// first. Stops at the first error of `f` (the folios pinned but not handed over are
    /// released) or of the pinning.
    pub fn for_each_present(
        &self,
        first: usize,
        last: usize,
        mut f: impl FnMut(PinnedFolio) -> Result,
    ) -> Result {
        if first > last {
            return Ok(());
        }
        let len = (last - first).saturating_add(1).min(PIN_BATCH);
        let mut batch = KVVec::<*mut bindings::folio>::with_capacity(len, GFP_KERNEL)?;
        // `len` is at most `PIN_BATCH`, which fits.
        let max = u32::try_from(len).unwrap_or(u32::MAX);
        let mut next = first;
        while next <= last {
            batch.clear();
            let spare = batch
                .spare_capacity_mut()
                .as_mut_ptr()
                .cast::<*mut bindings::folio>();
            // SAFETY: By the type invariants, the file is a memfd; `next` is valid for writes
            // and `spare` for writes of `max` pointers (the batch's capacity, all spare).
            let n = unsafe {
                bindings::memfd_pin_present_folios(self.raw(), &mut next, last, spare, max)
            };
            // A negative count is an errno, with nothing pinned.
            let Ok(n) = usize::try_from(n) else {
                return Err(Error::from_errno(
                    i32::try_from(n).unwrap_or(EINVAL.to_errno()),
                ));
            };
            if n == 0 {
                break;
            }
            // SAFETY: `memfd_pin_present_folios()` wrote the first `n` pointers, `n <= max`.
            unsafe { batch.inc_len(n) };
            let mut res = Ok(());
            for ptr in batch.iter().take(n).filter_map(|&ptr| NonNull::new(ptr)) {
                // SAFETY: `memfd_pin_present_folios()` pinned each of the first `n` folios once
                // for us.
                let folio = unsafe { PinnedFolio::from_raw(ptr) };
                if res.is_ok() {
                    res = f(folio);
                }
            }
            res?;
        }
        Ok(())
    }

    /// Makes a folio of this memfd ready to be handed over: marks it dirty, and zeroes it if it
    /// was allocated (by `fallocate()`) but never written, so that it is up to date. Returns
    /// where the folio is.
    ///
    /// Fails with [`EINVAL`] if `folio` is not a folio of this memfd. The memfd's size must be
    /// frozen ([`MemfdGuard::set_frozen`]), so that it cannot be truncated meanwhile.
    #[inline]
    pub fn prepare_folio(&self, folio: PinnedFolio) -> Result<PreparedFolio> {
        let mut pfn = 0;
        let mut index = 0;
        // SAFETY: By the type invariants the file is a memfd and its inode lock is held; the
        // folio is pinned, and the C function checks that it belongs to the memfd. `pfn` and
        // `index` are valid for writes.
        let pages = unsafe {
            bindings::shmem_luo_prepare_folio(self.raw(), folio.as_raw(), &mut pfn, &mut index)
        };
        let pages = usize::try_from(pages)
            .map_err(|_| Error::from_errno(i32::try_from(pages).unwrap_or(EINVAL.to_errno())))?;
        // INVARIANT: `shmem_luo_prepare_folio()` reported this folio's place.
        Ok(PreparedFolio {
            pin: folio,
            place: FolioPlace { pfn, index, pages },
        })
    }
}

/// A pinned folio of a memfd made ready to be handed over, with its place in the memfd, as
/// [`MemfdGuard::prepare_folio`] returns it.
///
/// # Invariants
///
/// `place` is where `shmem_luo_prepare_folio()` reported `pin`'s folio to be.
pub struct PreparedFolio {
    pin: PinnedFolio,
    place: FolioPlace,
}

impl PreparedFolio {
    /// Returns where the folio is.
    #[inline]
    pub fn place(&self) -> FolioPlace {
        self.place
    }
}

impl Deref for PreparedFolio {
    type Target = Folio;

    #[inline]
    fn deref(&self) -> &Folio {
        &self.pin
    }
}

/// Where a folio of a memfd is, as [`MemfdGuard::prepare_folio`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct FolioPlace {
    /// The page frame number of its first page.
    pub pfn: usize,
    /// Its offset in pages within the file.
    pub index: usize,
    /// Its number of pages.
    pub pages: usize,
}

/// The populated folios of a memfd, kept for the next kernel: each one pinned and preserved
/// with KHO, and recorded by nothing but its entry of the memfd's folio array (16 bytes a
/// folio, the array upstream's C handler hands over, and no pointer besides it).
///
/// Built in index order with [`KeptFolios::push`], then handed over as one preserved array by
/// [`KeptFolios::preserve`]. Dropping it unpreserves and unpins every folio.
///
/// # Invariants
///
/// For each entry of `entries`, the memory map covers its `pfn`, the first page frame of a
/// folio on which this value owns one `FOLL_PIN` pin and which it preserved with
/// `kho_preserve_folio()` (KHO records a folio once: unpreserving it twice is harmless).
/// The entries are in increasing index order.
pub struct KeptFolios {
    entries: VVec<MemfdFolio>,
}

impl KeptFolios {
    /// Returns an empty list.
    pub fn new() -> Self {
        Self {
            entries: VVec::new(),
        }
    }

    /// Returns the number of folios.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns `true` if there are no folios.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the number of folios the list holds without allocating.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Makes room for `additional` more folios.
    pub fn reserve(&mut self, additional: usize) -> Result {
        Ok(self.entries.reserve(additional, GFP_KERNEL)?)
    }

    /// Keeps `folio`, with `flags` in its entry; on failure ([`ENOMEM`], or [`EINVAL`] for a
    /// page frame or flags that do not fit an entry or a folio not after the last one kept)
    /// the folio is unpreserved and unpinned.
    #[inline]
    pub fn push(&mut self, folio: PreservedFolio<PreparedFolio>, flags: u64) -> Result {
        let place = folio.get().place();
        if self
            .entries
            .last()
            .is_some_and(|last| last.index >= place.index as u64)
        {
            return Err(EINVAL);
        }
        let entry = MemfdFolio::new(place.pfn as u64, flags, place.index as u64)?;
        self.entries.push(entry, GFP_KERNEL)?;
        // INVARIANT: The entry names the folio by its first page frame (`prepare_folio()`
        // reported it for this folio); its pin and its preservation are ours from here.
        let _ = folio.keep().pin.into_raw();
        Ok(())
    }

    /// Preserves the array of entries for the next kernel; `None` if there are no folios.
    ///
    /// KHO preserves the array's whole allocation, so an array much larger than its entries is
    /// copied to one of their size first. On failure every folio is unpreserved and unpinned.
    pub fn preserve(mut self) -> Result<Option<PreservedFolios>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let len = self.entries.len();
        let taken = self.entries.capacity() - len <= len / 8;
        let vec = if taken {
            core::mem::take(&mut self.entries)
        } else {
            let mut exact = VVec::with_capacity(len, GFP_KERNEL)?;
            exact.extend_from_slice(&self.entries, GFP_KERNEL)?;
            exact
        };
        let array = match PreservedVVec::try_new(vec) {
            Ok(array) => array,
            Err((e, vec)) => {
                // Back in `self` if it was taken from it, so that dropping `self` releases
                // every folio.
                if taken {
                    self.entries = vec;
                }
                return Err(e);
            }
        };
        // INVARIANT: The folios the entries name are owned by the array now.
        self.entries.clear();
        Ok(Some(PreservedFolios { array }))
    }
}

impl Default for KeptFolios {
    fn default() -> Self {
        Self::new()
    }
}

/// Unpreserves and unpins the folio of `entry`.
///
/// # Safety
///
/// The caller owns the pin and the preservation of the folio `entry` names (the invariant of
/// [`KeptFolios`] and [`PreservedFolios`]) and gives them up.
unsafe fn release(entry: &MemfdFolio) {
    // SAFETY: The memory map covers the entry's page frame, as the caller guarantees.
    let folio = unsafe { PageFrame::from_pfn(entry.pfn() as usize) }.folio();
    // SAFETY: The folio is preserved; the caller gives up the preservation.
    unsafe { bindings::kho_unpreserve_folio(folio.as_ptr().cast()) };
    // SAFETY: The caller owns one pin on the folio and gives it up.
    unsafe { bindings::unpin_folio(folio.as_ptr().cast()) };
}

impl Drop for KeptFolios {
    fn drop(&mut self) {
        for entry in self.entries.iter() {
            // SAFETY: By the type invariants we own each entry's folio's pin and preservation,
            // which are not used again.
            unsafe { release(entry) };
        }
    }
}

/// [`KeptFolios`] whose array of entries is preserved for the next kernel.
///
/// # Invariants
///
/// As for [`KeptFolios`], for each entry of `array`.
pub struct PreservedFolios {
    array: PreservedVVec<MemfdFolio>,
}

impl PreservedFolios {
    /// Returns the number of folios.
    pub fn len(&self) -> usize {
        self.array.as_slice().len()
    }

    /// Returns `true` if there are no folios (never: an empty list is not preserved).
    pub fn is_empty(&self) -> bool {
        self.array.as_slice().is_empty()
    }

    /// Returns the description of the array's preservation, for the memfd's serialized state.
    pub fn descriptor(&self) -> KhoVmalloc {
        self.array.descriptor()
    }

    /// Calls `f` with each folio and its entry, in index order.
    pub fn for_each(&self, mut f: impl FnMut(&MemfdFolio, &Folio) -> Result) -> Result {
        for entry in self.array.as_slice() {
            // SAFETY: By the type invariants the memory map covers the entry's page frame.
            let folio = unsafe { PageFrame::from_pfn(entry.pfn() as usize) }.folio();
            // SAFETY: Our pin keeps the folio's reference count positive while `self` lives.
            f(entry, unsafe { folio.as_ref() })?;
        }
        Ok(())
    }

    /// Adds `added`'s folios, merged by index with these (both are in index order), and
    /// preserves the new array in place of the old one.
    ///
    /// On failure these folios and their preserved array are unchanged and `added`'s folios
    /// are unpreserved and unpinned.
    pub fn merge(&mut self, mut added: KeptFolios) -> Result {
        let old = self.array.as_slice();
        let total = old.len().checked_add(added.len()).ok_or(ENOMEM)?;
        let mut merged = VVec::with_capacity(total, GFP_KERNEL)?;
        let (mut a, mut b) = (old.iter().peekable(), added.entries.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.index < y.index => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            if let Some(&entry) = next {
                // `merged` has room for both lists.
                merged.push_within_capacity(entry).map_err(|_| ENOMEM)?;
            }
        }
        let array = PreservedVVec::new(merged)?;
        // INVARIANT: The new array names every folio of both lists; the old array and `added`
        // give up theirs without releasing them.
        added.entries.clear();
        self.array = array;
        Ok(())
    }
}

impl Drop for PreservedFolios {
    fn drop(&mut self) {
        for entry in self.array.as_slice() {
            // SAFETY: By the type invariants we own each entry's folio's pin and preservation,
            // which are not used again: the array is unpreserved and freed next.
            unsafe { release(entry) };
        }
    }
}

/// A memfd being rebuilt from preserved folios in the next kernel.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::memfd::{self, AccessMode, Memfd, NewMemfd};
///
/// let seals = memfd::F_SEAL_GROW | memfd::F_SEAL_EXEC;
/// let file = NewMemfd::create(AccessMode::ReadOnly, 0o640, seals, 12345, 77)?.finish();
/// let m = Memfd::from_file(&file).ok_or(EINVAL)?;
/// assert_eq!(m.access(), Some(AccessMode::ReadOnly));
/// assert_eq!(m.mode(), 0o640);
/// // F_SEAL_EXEC on a non-executable memfd does not imply the write seals.
/// assert_eq!(m.seals()?, seals);
/// assert_eq!((m.size(), m.pos(), m.nr_pages()), (12345, 77, 0));
/// {
///     let locked = m.lock();
///     locked.set_frozen(true);
///     let mut pinned = 0;
///     locked.for_each_present(0, 3, |_| {
///         pinned += 1;
///         Ok(())
///     })?;
///     // An empty memfd: nothing is pinned and no hole is filled.
///     assert_eq!(pinned, 0);
///     assert_eq!(m.nr_pages(), 0);
///     locked.set_frozen(false);
/// }
/// assert!(NewMemfd::create(AccessMode::ReadWrite, 0o7777, 0, 0, 0).is_err());
/// assert!(NewMemfd::create(AccessMode::ReadWrite, 0o600, 0, -1, 0).is_err());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `file` was created by `shmem_luo_create()`; `pages` pages were added to it and not yet
/// accounted with `shmem_luo_account()`.
pub struct NewMemfd {
    file: ARef<File>,
    pages: usize,
}

impl NewMemfd {
    /// Creates an empty memfd of `size` bytes opened with access mode `access`, with permission
    /// bits `mode` (at most `0o777`), seals `seals` and file position `pos`.
    ///
    /// The permission bits are set before the seals, so `F_SEAL_EXEC` on a non-executable memfd
    /// does not imply the write seals. Fails with [`EINVAL`] for an invalid mode, size or
    /// position, and with the errors of `memfd_add_seals()`.
    pub fn create(access: AccessMode, mode: u32, seals: u32, size: i64, pos: i64) -> Result<Self> {
        let mode = u16::try_from(mode).map_err(|_| EINVAL)?;
        // SAFETY: `shmem_luo_create()` validates all its arguments.
        let raw = unsafe { bindings::shmem_luo_create(access.bits(), mode, seals, size, pos) };
        let raw = from_err_ptr(raw).map(NonNull::new)?.ok_or(ENOMEM)?;
        // SAFETY: `shmem_luo_create()` returned a new file holding one reference, which we now
        // own. `File` is a transparent wrapper of `struct file`.
        let file = unsafe { ARef::from_raw(raw.cast::<File>()) };
        // INVARIANT: Created just now, with no pages.
        Ok(Self { file, pages: 0 })
    }

    /// Inserts `folio` at page `index` (a multiple of its size) of the memfd, charging it to
    /// the current task's memory cgroup.
    ///
    /// `uptodate` and `dirty` give the state of its contents. Fails with [`EINVAL`] if `index`
    /// is not a multiple of the folio's size. On failure the folio is freed and the memfd is
    /// unchanged.
    #[inline]
    pub fn add_folio(
        &mut self,
        folio: RestoredFolio,
        index: usize,
        uptodate: bool,
        dirty: bool,
    ) -> Result {
        let folio = folio.into_raw();
        // SAFETY: The file came from `shmem_luo_create()`. `folio` is a restored folio that
        // nobody else references and that is in no mapping or list; `shmem_luo_add_folio()`
        // takes over its reference.
        let pages = unsafe {
            bindings::shmem_luo_add_folio(
                self.file.as_ptr(),
                folio.as_ptr(),
                index,
                uptodate,
                dirty,
            )
        };
        // A negative count is an errno.
        let Ok(pages) = usize::try_from(pages) else {
            return Err(Error::from_errno(
                i32::try_from(pages).unwrap_or(EINVAL.to_errno()),
            ));
        };
        self.pages += pages;
        Ok(())
    }

    /// Returns the memfd's file, with all added pages accounted.
    pub fn finish(mut self) -> ARef<File> {
        self.account();
        self.file.clone()
    }

    fn account(&mut self) {
        if self.pages != 0 {
            // Page counts are bounded by the size of memory, so they fit in a `long`.
            let pages = self.pages as isize;
            // SAFETY: The file came from `shmem_luo_create()`, and `pages` pages were added to
            // it but not yet accounted.
            unsafe { bindings::shmem_luo_account(self.file.as_ptr(), pages) };
            // INVARIANT: Accounted now.
            self.pages = 0;
        }
    }
}

impl Drop for NewMemfd {
    fn drop(&mut self) {
        self.account();
    }
}
