// SPDX-License-Identifier: GPL-2.0

//! Live update of memfds: the `memfd-v2` file handler of the Live Update Orchestrator.
//!
//! A VMM keeps guest RAM in memfds; this handler lets them survive a kexec. PRESERVE_FD pins the
//! folios the memfd holds and preserves them with KHO, freezes the memfd's size and writes a
//! `struct memfd_luo_ser` (include/linux/kho/abi/memfd.h) pointing to a preserved array of
//! `struct memfd_luo_folio_ser`. The next kernel builds a new memfd around the same folios.
//! The bytes are upstream's `memfd-v2`, so memfds move between this kernel and upstream's C
//! handler in both directions.
//!
//! Where this handler differs from upstream's (Documentation/core-api/liveupdate.rst):
//!
//! - Sparse memfds stay sparse: only populated folios are preserved, a hole stays a hole and
//!   reads as zeros. Holes written after PRESERVE_FD are caught at reboot: `freeze` pins and
//!   preserves the folios that appeared since (the VMM has stopped its vCPUs by then).
//! - Seals, permission bits and the file position are captured again at reboot.
//! - The access mode and permission bits travel in `memfd_luo_ser.flags`, which upstream
//!   neither sets nor reads: a read-only memfd comes back read-only, and an `MFD_NOEXEC_SEAL`
//!   memfd comes back non-executable and writable instead of write-sealed.

use kernel::{
    fs::File,
    liveupdate::{
        abi::{
            MemfdFolio,
            MemfdSer,
            MEMFD_ALL_SEALS,
            MEMFD_COMPATIBLE,
            MEMFD_FOLIO_DIRTY,
            MEMFD_FOLIO_UPTODATE, //
        },
        handler::{
            FileHandler,
            FileHandlerRegistration,
            IncomingSession,
            OutgoingSession,
            RetrieveStatus, //
        },
        kho::{
            KhoVmalloc,
            PreservedFolio,
            PreservedMem,
            RestoredFolio,
            RestoredMem, //
        },
        memfd::{
            AccessMode,
            KeptFolios,
            Memfd,
            MemfdGuard,
            NewMemfd,
            PreservedFolios,
            F_SEAL_EXEC,
            F_SEAL_WRITE, //
        },
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        Mutex, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
    types::ScopeGuard, //
};

module! {
    type: MemfdLuo,
    name: "memfd_luo",
    authors: ["The Live Update in Rust authors"],
    description: "Live update support for memfds (memfd-v2)",
    license: "GPL",
}

/// `memfd_luo_ser.flags`: the access mode and permission bits below are recorded.
///
/// Upstream's `memfd-v2` defines no flag and ignores the field, so a kernel that does not know
/// these bits retrieves the memfd as upstream does (read-write, executable).
const FLAG_EXT: u32 = 1 << 0;
/// `memfd_luo_ser.flags`: the access mode (`O_RDONLY`, `O_WRONLY`, `O_RDWR`) in bits 1..3.
const FLAG_ACCESS_SHIFT: u32 = 1;
/// `memfd_luo_ser.flags`: the inode's permission bits in bits 3..12.
const FLAG_MODE_SHIFT: u32 = 3;
/// The flag bits this version knows.
const FLAGS_KNOWN: u32 = (1 << 12) - 1;

/// Permission bits of a memfd retrieved from a kernel that did not record them.
const MODE_EXEC: u32 = 0o777;
const MODE_NOEXEC: u32 = 0o666;

/// The access mode and permission bits of a memfd in the next kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileMode {
    access: AccessMode,
    mode: u32,
}

impl FileMode {
    fn encode(self) -> u32 {
        FLAG_EXT
            | (self.access.bits() << FLAG_ACCESS_SHIFT)
            | ((self.mode & 0o777) << FLAG_MODE_SHIFT)
    }

    /// Decodes `memfd_luo_ser.flags`; without [`FLAG_EXT`] (upstream's C handler wrote it),
    /// the memfd is read-write, and executable unless its seals say that it was not: sealing
    /// `F_SEAL_EXEC` on an executable memfd implies the write seals, so `F_SEAL_EXEC` without
    /// them means the memfd had no execute bits.
    fn decode(flags: u32, seals: u32) -> Result<Self> {
        if flags & !FLAGS_KNOWN != 0 {
            return Err(EINVAL);
        }
        if flags & FLAG_EXT == 0 {
            if flags != 0 {
                return Err(EINVAL);
            }
            let noexec = seals & F_SEAL_EXEC != 0 && seals & F_SEAL_WRITE == 0;
            return Ok(Self {
                access: AccessMode::ReadWrite,
                mode: if noexec { MODE_NOEXEC } else { MODE_EXEC },
            });
        }
        let access = AccessMode::from_flags(flags >> FLAG_ACCESS_SHIFT).ok_or(EINVAL)?;
        Ok(Self {
            access,
            mode: (flags >> FLAG_MODE_SHIFT) & 0o777,
        })
    }
}

/// How many times [`State::catch_up`] reads pages back from swap before it gives up.
const MAX_SWAP_ROUNDS: u32 = 8;

/// What the handler keeps for a preserved memfd.
struct State {
    /// The `memfd_luo_ser`, at the start of the block.
    ser: PreservedMem,
    /// The memfd's populated folios, in index order, pinned and preserved, and their
    /// preserved array; `None` if there are none.
    folios: Option<PreservedFolios>,
    /// Pages in `folios`.
    pages: usize,
}

struct MemfdHandler;

struct MemfdLuo {
    _registration: Option<Pin<KBox<FileHandlerRegistration<MemfdHandler>>>>,
}

impl kernel::Module for MemfdLuo {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        match KBox::pin_init(FileHandlerRegistration::register(), GFP_KERNEL) {
            Ok(registration) => Ok(Self {
                _registration: Some(registration),
            }),
            // Live update is disabled.
            Err(e) if e == EOPNOTSUPP => Ok(Self {
                _registration: None,
            }),
            Err(e) => {
                pr_err!("Could not register luo filesystem handler: {:?}\n", e);
                Err(e)
            }
        }
    }
}

/// Number of pages that hold `size` bytes.
fn size_pages(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE as u64)
}

/// Pins and preserves the folios the memfd holds between pages `first` and `last`, appending
/// them to `out` in index order, each with an entry that says it is dirty and up to date
/// (`shmem_luo_prepare_folio()` made it so); returns the number of pages added.
///
/// `out` is first given room for `hint` pages' worth of folios of the first folio's size:
/// exact for a memfd of uniform folios, grown as needed otherwise.
fn keep_present(
    memfd: &MemfdGuard<'_>,
    first: usize,
    last: usize,
    out: &mut KeptFolios,
    hint: usize,
) -> Result<usize> {
    let mut pages = 0;
    memfd.for_each_present(first, last, |pin| {
        let folio = memfd.prepare_folio(pin)?;
        let place = folio.place();
        if out.capacity() == 0 {
            out.reserve(hint / place.pages.max(1))?;
        }
        out.push(
            PreservedFolio::new(folio)?,
            MEMFD_FOLIO_DIRTY | MEMFD_FOLIO_UPTODATE,
        )?;
        pages += place.pages;
        Ok(())
    })?;
    Ok(pages)
}

impl State {
    /// Rewrites the `memfd_luo_ser` from the memfd's current seals, mode and position.
    fn write_ser(&mut self, memfd: &Memfd, size: u64) -> Result {
        let seals = memfd.seals()?;
        if seals & !MEMFD_ALL_SEALS != 0 {
            return Err(EOPNOTSUPP);
        }
        let mode = FileMode {
            access: memfd.access().ok_or(EINVAL)?,
            mode: memfd.mode(),
        };
        let mut ser = MemfdSer {
            pos: memfd.pos().try_into().map_err(|_| EINVAL)?,
            size,
            seals,
            flags: mode.encode(),
            nr_folios: self.folios.as_ref().map_or(0, |f| f.len() as u64),
            folios: pin_init::zeroed(),
        };
        if let Some(folios) = &self.folios {
            ser.folios = folios.descriptor().into();
        }
        self.ser
            .as_mut_slice()
            .get_mut(..size_of::<MemfdSer>())
            .ok_or(EINVAL)?
            .copy_from_slice(ser.as_bytes());
        Ok(())
    }

    /// Preserves the folios that filled holes since the memfd was preserved or were in swap,
    /// and preserves the array again if it changed.
    ///
    /// Pages read back from swap are not pinned until the next pass, so they may be swapped
    /// out again meanwhile: passes repeat until one finds nothing in swap.
    ///
    /// On failure the folios kept before the failing pass and their array stay in place, and
    /// that pass's new folios are unpinned and unpreserved, so the state is consistent; the
    /// next freeze tries again. The `memfd_luo_ser` may then still describe the array a
    /// successful pass replaced: harmless, as a failed freeze stops the kexec (and a failed
    /// preserve drops the state), and the next `write_ser()` rewrites it.
    fn catch_up(&mut self, memfd: &MemfdGuard<'_>, size: u64) -> Result {
        let last = match size_pages(size).checked_sub(1) {
            Some(last) => usize::try_from(last).map_err(|_| EFBIG)?,
            None => 0,
        };
        let mut rounds = 0;
        if size != 0 {
            loop {
                let swapped = memfd.swap_in(last)?;
                if swapped != 0 || memfd.nr_pages() != self.pages {
                    self.add_new_folios(memfd, last)?;
                }
                if swapped == 0 {
                    break;
                }
                rounds += 1;
                if rounds == MAX_SWAP_ROUNDS {
                    return Err(EAGAIN);
                }
            }
        }
        Ok(())
    }

    fn add_new_folios(&mut self, memfd: &MemfdGuard<'_>, last: usize) -> Result {
        // The holes between the kept folios, in index order.
        let mut added = KeptFolios::new();
        let mut pages = 0usize;
        let mut next = 0usize;
        if let Some(folios) = &self.folios {
            folios.for_each(|entry, folio| {
                let index = usize::try_from(entry.index).map_err(|_| EINVAL)?;
                if index > next {
                    pages += keep_present(memfd, next, index - 1, &mut added, 0)?;
                }
                next = index.saturating_add(folio.nr_pages());
                Ok(())
            })?;
        }
        if next <= last {
            pages += keep_present(memfd, next, last, &mut added, 0)?;
        }
        if added.is_empty() {
            return Ok(());
        }
        match &mut self.folios {
            Some(folios) => folios.merge(added)?,
            None => self.folios = added.preserve()?,
        }
        self.pages += pages;
        Ok(())
    }
}

#[vtable]
impl FileHandler for MemfdHandler {
    const COMPATIBLE: &'static CStr = MEMFD_COMPATIBLE;
    type Private = Pin<KBox<Mutex<State>>>;

    fn can_preserve(file: &File) -> bool {
        Memfd::from_file(file).is_some()
    }

    fn preserve(_session: &OutgoingSession<'_>, file: &File) -> Result<(u64, Self::Private)> {
        let memfd = Memfd::from_file(file).ok_or(EINVAL)?;
        let guard = memfd.lock();
        guard.set_frozen(true);
        let unfreeze = ScopeGuard::new(|| guard.set_frozen(false));

        let ser = PreservedMem::new(size_of::<MemfdSer>())?;
        let seals = memfd.seals()?;
        if seals & !MEMFD_ALL_SEALS != 0 {
            return Err(EOPNOTSUPP);
        }
        let size = u64::try_from(memfd.size()).map_err(|_| EINVAL)?;
        // The array counts folios in a u64, but upstream's C handler refuses more than
        // UINT_MAX pages (the limit of memfd_pin_folios()); so does this one, so that every
        // memfd it preserves can be retrieved by either.
        let pages = size_pages(size);
        if pages > u64::from(u32::MAX) {
            return Err(EFBIG);
        }

        // O_ACCMODE itself opens a file for neither reading nor writing (ioctls only); there
        // is no such memfd to hand back, and handing back a read-write one would widen access.
        if memfd.access().is_none() {
            return Err(EINVAL);
        }

        let mut kept = KeptFolios::new();
        let mut held = 0;
        if let Some(last) = pages.checked_sub(1) {
            let last = usize::try_from(last).map_err(|_| EFBIG)?;
            let hint = memfd
                .nr_pages()
                .min(usize::try_from(pages).map_err(|_| EFBIG)?);
            held = keep_present(&guard, 0, last, &mut kept, hint)?;
        }
        let mut state = State {
            ser,
            pages: held,
            folios: kept.preserve()?,
        };
        // Pages in swap, if any.
        state.catch_up(&guard, size)?;
        state.write_ser(memfd, size)?;
        let data = state.ser.phys();
        let private = KBox::pin_init(new_mutex!(state), GFP_KERNEL)?;
        unfreeze.dismiss();
        Ok((data, private))
    }

    fn unpreserve(_session: &OutgoingSession<'_>, file: &File, _data: u64, private: Self::Private) {
        if let Some(memfd) = Memfd::from_preserved(file) {
            memfd.lock().set_frozen(false);
        }
        // Unpreserves the `memfd_luo_ser`, the folios (and unpins them) and their array.
        drop(private);
    }

    fn freeze(
        _session: &OutgoingSession<'_>,
        file: &File,
        data: u64,
        private: Pin<&Mutex<State>>,
    ) -> Result<u64> {
        let memfd = Memfd::from_preserved(file).ok_or(EINVAL)?;
        let mut state = private.lock();
        // Inside reboot(): a task that holds the inode lock forever must not hang it.
        let guard = memfd.lock_killable()?;
        let size = u64::try_from(memfd.size()).map_err(|_| EINVAL)?;
        state.catch_up(&guard, size)?;
        state.write_ser(memfd, size)?;
        Ok(data)
    }

    fn retrieve(_session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
        let ser = RestoredMem::restore(data)?;
        let ser =
            MemfdSer::from_bytes_copy(ser.as_slice().get(..size_of::<MemfdSer>()).ok_or(EINVAL)?)
                .ok_or(EINVAL)?;
        let res = rebuild(&ser);
        if let Err(e) = res {
            pr_err!("failed to retrieve a memfd: {:?}\n", e);
        }
        res
    }

    fn finish(
        _session: &IncomingSession<'_>,
        _file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    ) {
        // Retrieved, or the failed retrieve freed the folios.
        if status != RetrieveStatus::NotRetrieved {
            return;
        }
        let Ok(ser) = RestoredMem::restore(data) else {
            pr_warn!("cannot restore the state of a memfd at {:#x}\n", data);
            return;
        };
        let Some(ser) = ser
            .as_slice()
            .get(..size_of::<MemfdSer>())
            .and_then(MemfdSer::from_bytes_copy)
        else {
            return;
        };
        // Allocates nothing: an allocation failure cannot leave the folios behind.
        if let Err(e) = free_folios(|f| for_each_entry(&ser, f)) {
            pr_warn!("cannot free the folios of a memfd: {:?}\n", e);
        }
    }

    fn get_id(file: &File) -> usize {
        Memfd::from_preserved(file).map_or(core::ptr::from_ref(file) as usize, Memfd::id)
    }
}

/// Calls `f` with each of the `nr_folios` entries of the folio array `ser` points to, in order;
/// the array is restored a page at a time and freed, with no allocation.
///
/// Fails with [`EINVAL`] if the array is not a valid preservation or holds fewer entries than
/// `nr_folios`; `f` has then seen the entries before.
fn for_each_entry(ser: &MemfdSer, mut f: impl FnMut(MemfdFolio)) -> Result {
    // Entries never straddle two pages of the array.
    static_assert!(PAGE_SIZE % size_of::<MemfdFolio>() == 0);
    let Ok(nr) = usize::try_from(ser.nr_folios) else {
        return Err(EINVAL);
    };
    if nr == 0 {
        return Ok(());
    }
    let mut seen = 0usize;
    KhoVmalloc::from(ser.folios).restore_each(|page| {
        page.read_each::<MemfdFolio>(|entry| {
            if seen == nr {
                return false;
            }
            seen += 1;
            f(entry);
            true
        });
    })?;
    if seen != nr {
        pr_err!("a memfd's folio array is shorter than its folio count\n");
        return Err(EINVAL);
    }
    Ok(())
}

/// Restores and frees the folio of `entry`, if it has one; returns `false` if it could not.
fn free_folio(entry: MemfdFolio) -> bool {
    let pfn = entry.pfn();
    // Upstream's C handler skips a zero pfn; so does this one.
    pfn == 0 || RestoredFolio::restore(pfn << kernel::page::PAGE_SHIFT).is_ok()
}

/// Frees the folios of the entries `f` is given, and reports those it could not free.
fn free_folios(walk: impl FnOnce(&mut dyn FnMut(MemfdFolio)) -> Result) -> Result {
    let mut lost = 0usize;
    let r = walk(&mut |entry| {
        if !free_folio(entry) {
            lost += 1;
        }
    });
    if lost != 0 {
        pr_warn!(
            "{} preserved folios could not be restored and freed\n",
            lost
        );
    }
    r
}

/// Builds the memfd that `ser` describes from its folios.
///
/// Whatever happens, every folio the array lists (up to a corrupt part of it) is restored
/// exactly once: into the memfd, or freed. The memfd is made first, so a lack of memory there
/// costs no folio a restore; on any failure the memfd is dropped with the folios it holds, and
/// the rest of the array is freed.
fn rebuild(ser: &MemfdSer) -> Result<ARef<File>> {
    let seals = ser.seals;
    let size = ser.size;
    let memfd = (|| {
        if seals & !MEMFD_ALL_SEALS != 0 {
            return Err(EOPNOTSUPP);
        }
        let mode = FileMode::decode(ser.flags, seals)?;
        let size_i = i64::try_from(size).map_err(|_| EINVAL)?;
        let pos = i64::try_from(ser.pos).map_err(|_| EINVAL)?;
        NewMemfd::create(mode.access, mode.mode, seals, size_i, pos)
    })();
    let mut memfd = match memfd {
        Ok(memfd) => memfd,
        Err(e) => {
            // Nothing to build into: free the folios.
            let _ = free_folios(|f| for_each_entry(ser, f));
            return Err(e);
        }
    };
    let pages = size_pages(size);
    let mut failed = None;
    let walk = free_folios(|free| {
        for_each_entry(ser, |entry| {
            if failed.is_some() {
                free(entry);
            } else if let Err(e) = add_entry(&mut memfd, entry, pages) {
                failed = Some(e);
            }
        })
    });
    match failed.map_or(walk, Err) {
        Ok(()) => Ok(memfd.finish()),
        // Dropping `memfd` frees the folios added to it.
        Err(e) => Err(e),
    }
}

/// Restores the folio of `entry` into `memfd`, a file of `pages` pages; on failure the folio
/// is freed.
fn add_entry(memfd: &mut NewMemfd, entry: MemfdFolio, pages: u64) -> Result {
    let pfn = entry.pfn();
    if pfn == 0 {
        return Ok(());
    }
    // Restored first, so that a bad entry's folio is freed with it.
    let folio = RestoredFolio::restore(pfn << kernel::page::PAGE_SHIFT)?;
    let flags = entry.flags();
    if flags & !(MEMFD_FOLIO_DIRTY | MEMFD_FOLIO_UPTODATE) != 0 {
        return Err(EINVAL);
    }
    let index = entry.index;
    // Inside the file; `add_folio()` refuses an index not aligned to the folio's size, as the
    // page cache requires.
    if index >= pages {
        return Err(EINVAL);
    }
    memfd.add_folio(
        folio,
        usize::try_from(index).map_err(|_| EINVAL)?,
        flags & MEMFD_FOLIO_UPTODATE != 0,
        flags & MEMFD_FOLIO_DIRTY != 0,
    )
}

#[kunit_tests(memfd_luo)]
mod tests {
    use super::*;

    const ALL_WRITE: u32 = F_SEAL_WRITE | kernel::liveupdate::memfd::F_SEAL_SHRINK;

    #[test]
    fn mode_from_upstream() -> Result {
        // Upstream's C handler writes no flags: read-write; executable unless F_SEAL_EXEC was
        // applied without the write seals it implies on an executable memfd.
        let m = |seals| FileMode::decode(0, seals);
        assert_eq!(
            m(0)?,
            FileMode {
                access: AccessMode::ReadWrite,
                mode: 0o777
            }
        );
        assert_eq!(
            m(F_SEAL_EXEC)?,
            FileMode {
                access: AccessMode::ReadWrite,
                mode: 0o666
            }
        );
        assert_eq!(
            m(F_SEAL_EXEC | ALL_WRITE)?,
            FileMode {
                access: AccessMode::ReadWrite,
                mode: 0o777
            }
        );
        Ok(())
    }

    #[test]
    fn mode_round_trip() -> Result {
        for access in [
            AccessMode::ReadOnly,
            AccessMode::WriteOnly,
            AccessMode::ReadWrite,
        ] {
            for mode in [0, 0o600, 0o666, 0o777, 0o751] {
                let fm = FileMode { access, mode };
                let flags = fm.encode();
                assert_eq!(flags & !FLAGS_KNOWN, 0);
                assert_eq!(FileMode::decode(flags, F_SEAL_EXEC | ALL_WRITE)?, fm);
            }
        }
        // O_RDONLY, 0o640: bit 0, access 0 in bits 1..3, 0o640 in bits 3..12.
        assert_eq!(
            FileMode {
                access: AccessMode::ReadOnly,
                mode: 0o640
            }
            .encode(),
            1 | (0o640 << 3)
        );
        Ok(())
    }

    #[test]
    fn mode_refused() {
        // Unknown bits, an access mode of 3, bits without the "recorded" bit.
        assert_eq!(FileMode::decode(1 << 12, 0), Err(EINVAL));
        assert_eq!(
            FileMode::decode(FLAG_EXT | (3 << FLAG_ACCESS_SHIFT), 0),
            Err(EINVAL)
        );
        assert_eq!(FileMode::decode(0o644 << FLAG_MODE_SHIFT, 0), Err(EINVAL));
    }

    #[test]
    fn pages_of_size() {
        let p = PAGE_SIZE as u64;
        assert_eq!(size_pages(0), 0);
        assert_eq!(size_pages(1), 1);
        assert_eq!(size_pages(p), 1);
        assert_eq!(size_pages(p + 1), 2);
        assert_eq!(
            size_pages((u64::from(u32::MAX) + 1) * p),
            u64::from(u32::MAX) + 1
        );
    }
}
