// SPDX-License-Identifier: GPL-2.0

//! The preserved files of a session and the order in which their handlers are called.
//!
//! - preserve: handlers are asked in registration order, the first that can preserve the file
//!   wins; an object (a handler's [`Handler::id`]) is preserved at most once in all sessions;
//! - unpreserve and finish: last preserved first (LIFO);
//! - freeze at reboot: first preserved first (FIFO), unfrozen in reverse if a later one fails;
//! - retrieve: any order; a failed retrieve is sticky, a successful one can be repeated and
//!   hands out the same file again.
//!
//! # Files that depend on other files
//!
//! Every handler callback gets its session as a [`Lookup`] (`struct liveupdate_session` in C):
//! an outgoing file's callbacks can find the token of another file of the session
//! ([`Lookup::token_of`]), an incoming file's can get another file by token, retrieving it on
//! demand ([`Lookup::file`]). A lookup made while a file is preserved records that the file
//! depends on the one found. Since only files preserved before can be found, a file's
//! dependencies always come earlier in the set: LIFO unpreserve and finish handle a dependent
//! file before what it depends on, and unpreserving one file by token
//! ([`FileSet::unpreserve`]) is refused while a later file depends on it. Dependencies are not
//! part of the handover data: the next kernel keeps the order, which is all it needs.

use crate::{
    block::BlockSet,
    flb,
    incoming::FileEntry,
    registry::{
        self,
        HandlerRef, //
    },
    Core, //
};
use core::cell::{
    Cell,
    OnceCell,
    RefCell, //
};
use kernel::{
    bindings,
    fs::{
        File,
        LocalFile, //
    },
    io::PhysAddr,
    liveupdate::{
        abi::{
            self,
            FileSer, //
        },
        handler::{
            IncomingSession,
            OutgoingSession,
            RetrieveStatus, //
        },
        registered::{
            incoming_session,
            outgoing_session,
            Handler,
            HandlerPrivate, //
        },
    },
    prelude::*,
    sync::aref::ARef,
    types::ScopeGuard, //
};

/// A preserved file of a session.
///
/// It holds what it uses until it is dropped: the references of an outgoing file on the FLBs of
/// its handler (dropped first), and the reference to its handler and its module.
pub(crate) struct LuoFile {
    _flbs: Option<flb::OutgoingRefs>,
    /// For an incoming file, the FLBs its finish drops a reference on.
    in_flbs: Option<flb::IncomingFlbs>,
    handler: HandlerRef,
    /// The file: the preserved one, or the retrieved one once retrieved.
    file: OnceCell<ARef<File>>,
    /// The handler's handle to the file's serialized state (`freeze` may replace it).
    data: Cell<u64>,
    private: HandlerPrivate,
    token: u64,
    /// What became of the retrieve of an incoming file; sticky once decided.
    status: Cell<RetrieveStatus>,
    /// Whether the handler's retrieve of this file is running (to refuse a cycle).
    retrieving: Cell<bool>,
    /// The tokens of the files of the session that this one depends on.
    deps: KVec<u64>,
}

impl LuoFile {
    fn file(&self) -> Option<&File> {
        self.file.get().map(|f| &**f)
    }

    fn depends_on(&self, token: u64) -> bool {
        self.deps.contains(&token)
    }

    /// Returns the outcome of an earlier retrieve: the file, its sticky error, or `None` if the
    /// file was not retrieved.
    fn retrieved(&self) -> Option<Result<ARef<File>>> {
        match self.status.get() {
            RetrieveStatus::Failed(e) => Some(Err(e)),
            RetrieveStatus::Retrieved => Some(self.file.get().cloned().ok_or(EINVAL)),
            RetrieveStatus::NotRetrieved => None,
        }
    }
}

/// The session, as a handler callback sees it: the files of the set and what the callback may
/// do with them.
///
/// It is handed to C as `struct liveupdate_session *`, valid for the duration of the callback;
/// the session's lock is held all along, so lookups take no lock.
pub(crate) struct Lookup<'a> {
    files: &'a [LuoFile],
    kind: LookupKind<'a>,
}

enum LookupKind<'a> {
    /// An outgoing session; while a file is preserved, the tokens its handler looked up.
    Outgoing(Option<&'a RefCell<KVec<u64>>>),
    /// An incoming session; while a file is retrieved, the core, which a retrieve on demand
    /// records the retrieved object in.
    Incoming(Option<&'static Core>),
}

impl<'a> Lookup<'a> {
    fn outgoing(files: &'a [LuoFile], deps: Option<&'a RefCell<KVec<u64>>>) -> Self {
        Self {
            files,
            kind: LookupKind::Outgoing(deps),
        }
    }

    fn incoming(files: &'a [LuoFile], core: Option<&'static Core>) -> Self {
        Self {
            files,
            kind: LookupKind::Incoming(core),
        }
    }

    fn as_raw(&self) -> *mut bindings::liveupdate_session {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// Returns the lookup as the outgoing session of the kernel crate's handler API.
    fn outgoing_session(&self) -> OutgoingSession<'_> {
        // SAFETY: `self` is valid for the returned lifetime; the handler callbacks it is passed to
        // run within it, and `Lookup::from_raw` turns it back into `self`.
        unsafe { outgoing_session(self.as_raw()) }
    }

    /// Returns the lookup as the incoming session of the kernel crate's handler API.
    fn incoming_session(&self) -> IncomingSession<'_> {
        // SAFETY: As in `outgoing_session`.
        unsafe { incoming_session(self.as_raw()) }
    }

    /// Turns the session a handler got back into the lookup.
    ///
    /// # Safety
    ///
    /// `ptr` must be NULL or a session the core passed to a handler callback that is still
    /// running; the returned reference must not be used after that callback returns.
    pub(crate) unsafe fn from_raw<'b>(ptr: *mut bindings::liveupdate_session) -> Option<&'b Self> {
        // SAFETY: The core only hands out sessions made by `as_raw` from a `Lookup` that outlives
        // the callback; the caller guarantees that the callback is running.
        unsafe { ptr.cast::<Self>().cast_const().as_ref() }
    }

    /// Returns the token of the file of an outgoing session that is `file` (compared by
    /// address); during a preserve, records that the file being preserved depends on it.
    pub(crate) fn token_of(&self, file: *const bindings::file) -> Result<u64> {
        let LookupKind::Outgoing(deps) = self.kind else {
            return Err(ENOENT);
        };
        let found = self
            .files
            .iter()
            .find(|f| f.file().is_some_and(|f| core::ptr::eq(f.as_ptr(), file)))
            .ok_or(ENOENT)?;
        if let Some(deps) = deps {
            let mut deps = deps.try_borrow_mut().map_err(|_| EDEADLK)?;
            if !deps.contains(&found.token) {
                deps.push(found.token, GFP_KERNEL)?;
            }
        }
        Ok(found.token)
    }

    /// Returns the file of an incoming session preserved under `token`; during a retrieve, a
    /// file not retrieved yet is retrieved now (see [`retrieve_in`]).
    pub(crate) fn file(&self, token: u64) -> Result<ARef<File>> {
        let LookupKind::Incoming(core) = self.kind else {
            return Err(ENOENT);
        };
        match core {
            Some(core) => retrieve_in(core, self.files, token),
            None => {
                let f = self.files.iter().find(|f| f.token == token).ok_or(ENOENT)?;
                f.retrieved().unwrap_or(Err(EBUSY))
            }
        }
    }
}

/// Retrieves the file preserved under `token` in `files` with the rules of `RETRIEVE_FD`, and
/// returns a new reference to it.
///
/// Runs for `RETRIEVE_FD` and, re-entered through [`Lookup::file`], for a handler's retrieve
/// that needs another file of the session: all state it changes is in cells, so the set is only
/// borrowed shared. A retrieve that needs the file being retrieved fails with [`EDEADLK`].
fn retrieve_in(core: &'static Core, files: &[LuoFile], token: u64) -> Result<ARef<File>> {
    let f = files.iter().find(|f| f.token == token).ok_or(ENOENT)?;
    if let Some(r) = f.retrieved() {
        return r;
    }
    if f.retrieving.get() {
        return Err(EDEADLK);
    }
    // Before the handler runs: a retrieve that cannot be recorded fails, and can be tried again.
    let node = registry::reserve_id()?;
    f.retrieving.set(true);
    let lookup = Lookup::incoming(files, Some(core));
    let r = f.handler.retrieve(&lookup.incoming_session(), f.data.get());
    f.retrieving.set(false);
    let file = match r {
        Ok(file) => file,
        Err(e) => {
            f.status.set(RetrieveStatus::Failed(e));
            return Err(e);
        }
    };
    let id = f.handler.id(&file);
    if core.registry.lock().add_id(node, id).is_err() {
        pr_warn!("retrieved file [{:#x}] is already preserved\n", token);
    }
    // The cell is empty: the file was not retrieved.
    let _ = f.file.set(file.clone());
    f.status.set(RetrieveStatus::Retrieved);
    Ok(file)
}

/// The files of one session.
pub(crate) struct FileSet {
    files: KVec<LuoFile>,
    /// Preserved pages for the files' serialized form (outgoing sessions only).
    blocks: BlockSet,
}

impl FileSet {
    pub(crate) const fn new() -> Self {
        Self {
            files: KVec::new(),
            blocks: BlockSet::new(size_of::<FileSer>()),
        }
    }

    /// Preserves the file open as `fd` under `token`.
    ///
    /// Everything that can fail happens before the handler's `preserve`, and what was done is
    /// undone on failure: either the file is preserved, or nothing changed.
    pub(crate) fn preserve(&mut self, core: &'static Core, token: u64, fd: i32) -> Result {
        self.preserve_with(core, token, || {
            let fd = u32::try_from(fd).map_err(|_| EBADF)?;
            let file = LocalFile::fget(fd)?;
            // SAFETY: Called from an ioctl; LUO never calls `fdget_pos`, so this thread has no
            // active `fdget_pos` region on the file.
            Ok(unsafe { LocalFile::assume_no_fdget_pos(file) })
        })
    }

    /// Preserves the file `get` returns under `token`, with the checks and the order of errors
    /// of `PRESERVE_FD`: token, room in the blocks, file, handler, identity.
    fn preserve_with(
        &mut self,
        core: &'static Core,
        token: u64,
        get: impl FnOnce() -> Result<ARef<File>>,
    ) -> Result {
        if self.files.iter().any(|f| f.token == token) {
            return Err(EEXIST);
        }
        self.blocks.grow(self.files.len() + 1)?;
        let r = get().and_then(|file| self.preserve_grown(core, token, file));
        if r.is_err() {
            self.blocks.shrink(self.files.len());
        }
        r
    }

    fn preserve_grown(&mut self, core: &'static Core, token: u64, file: ARef<File>) -> Result {
        let handler = core.registry.lock().preserver(core, &file).ok_or(ENOENT)?;
        let id = handler.id(&file);
        let node = registry::reserve_id()?;
        core.registry.lock().add_id(node, id)?;
        let recorded = ScopeGuard::new(|| core.registry.lock().remove_id(id));
        self.files.reserve(1, GFP_KERNEL)?;
        let flbs = flb::OutgoingRefs::take(core, *handler)?;
        let deps = RefCell::new(KVec::new());
        let lookup = Lookup::outgoing(&self.files, Some(&deps));
        let (data, private) = handler.preserve(&lookup.outgoing_session(), &file)?;
        recorded.dismiss();
        // Within the capacity reserved above.
        let _ = self.files.push_within_capacity(LuoFile {
            _flbs: Some(flbs),
            in_flbs: None,
            handler,
            file: OnceCell::from(file),
            data: Cell::new(data),
            private,
            token,
            status: Cell::new(RetrieveStatus::NotRetrieved),
            retrieving: Cell::new(false),
            deps: deps.into_inner(),
        });
        Ok(())
    }

    /// Unpreserves the file preserved under `token`.
    ///
    /// Fails, changing nothing, with [`ENOENT`] if there is none and with [`EBUSY`] if another
    /// file depends on it.
    pub(crate) fn unpreserve(&mut self, core: &Core, token: u64) -> Result {
        let i = self
            .files
            .iter()
            .position(|f| f.token == token)
            .ok_or(ENOENT)?;
        if self.files.iter().any(|f| f.depends_on(token)) {
            return Err(EBUSY);
        }
        let f = self.files.remove(i).map_err(|_| EINVAL)?;
        self.unpreserve_removed(core, f);
        self.blocks.shrink(self.files.len());
        Ok(())
    }

    /// Calls the handler of `f`, just removed from the set, to unpreserve it, then drops it with
    /// what it holds.
    fn unpreserve_removed(&self, core: &Core, f: LuoFile) {
        if let Some(file) = f.file() {
            let lookup = Lookup::outgoing(&self.files, None);
            f.handler
                .unpreserve(&lookup.outgoing_session(), file, f.data.get(), f.private);
            let id = f.handler.id(file);
            core.registry.lock().remove_id(id);
        }
    }

    /// Unpreserves every file, last preserved first, and frees the blocks.
    pub(crate) fn unpreserve_all(&mut self, core: &Core) {
        while let Some(f) = self.files.pop() {
            self.unpreserve_removed(core, f);
            self.blocks.shrink(self.files.len());
        }
        self.blocks.shrink(0);
    }

    /// Freezes every file, first preserved first, and writes their serialized form (see
    /// [`FileSet::serialized`]). If a handler fails, the files frozen before it are unfrozen,
    /// last first.
    pub(crate) fn freeze(&mut self) -> Result {
        let mut failed = None;
        let lookup = Lookup::outgoing(&self.files, None);
        for (i, f) in self.files.iter().enumerate() {
            let Some(file) = f.file() else {
                continue;
            };
            match f
                .handler
                .freeze(&lookup.outgoing_session(), file, f.data.get(), f.private)
            {
                Ok(data) => f.data.set(data),
                Err(e) => {
                    pr_warn!(
                        "Freeze failed for token[{:#x}] handler[{}] err[{:?}]\n",
                        f.token,
                        f.handler.compatible_cstr(),
                        e
                    );
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            self.unfreeze_first(i);
            return Err(e);
        }
        let entries = self.files.iter().map(|f| FileSer {
            compatible: f.handler.compatible_field(),
            data: f.data.get(),
            token: f.token,
        });
        if let Err(e) = self.blocks.write(entries) {
            self.unfreeze_first(self.files.len());
            return Err(e);
        }
        Ok(())
    }

    /// Returns the serialized form of the set as the session entry records it: the head of the
    /// file chain (0 if there are no files) and the file count.
    pub(crate) fn serialized(&self) -> (PhysAddr, u64) {
        (self.blocks.head(), self.files.len() as u64)
    }

    /// Unfreezes the first `n` files, last first, and clears their serialized form.
    fn unfreeze_first(&mut self, n: usize) {
        let lookup = Lookup::outgoing(&self.files, None);
        for f in self.files.iter().take(n).rev() {
            if let Some(file) = f.file() {
                f.handler
                    .unfreeze(&lookup.outgoing_session(), file, f.data.get(), f.private);
            }
        }
        self.blocks.clear();
    }

    /// Unfreezes every file after an aborted reboot.
    pub(crate) fn unfreeze(&mut self) {
        self.unfreeze_first(self.files.len());
    }

    /// Checks that the file with `token` exists and was not refused by its handler.
    pub(crate) fn check_retrieve(&self, token: u64) -> Result {
        let f = self.files.iter().find(|f| f.token == token).ok_or(ENOENT)?;
        match f.retrieved() {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Retrieves the file preserved under `token`: returns a new reference to it.
    pub(crate) fn retrieve(&mut self, core: &'static Core, token: u64) -> Result<ARef<File>> {
        retrieve_in(core, &self.files, token)
    }

    /// Checks that every handler agrees to finish now: [`EBUSY`] otherwise.
    pub(crate) fn can_finish(&self) -> Result {
        let lookup = Lookup::incoming(&self.files, None);
        for f in self.files.iter() {
            if !f.handler.can_finish(
                &lookup.incoming_session(),
                f.file(),
                f.data.get(),
                f.status.get(),
            ) {
                return Err(EBUSY);
            }
        }
        Ok(())
    }

    /// Finishes every file, last first; [`FileSet::can_finish`] must have agreed.
    pub(crate) fn finish(&mut self, core: &Core) {
        while let Some(mut f) = self.files.pop() {
            let lookup = Lookup::incoming(&self.files, None);
            f.handler.finish(
                &lookup.incoming_session(),
                f.file(),
                f.data.get(),
                f.status.get(),
            );
            if let Some(flbs) = f.in_flbs.take() {
                flbs.finish(core);
            }
            if let Some(file) = f.file() {
                let id = f.handler.id(file);
                core.registry.lock().remove_id(id);
            }
        }
    }

    /// Calls `f` with the token and data handle of every file of `handler`'s, in order.
    pub(crate) fn for_each_of(&self, handler: Handler, mut f: impl FnMut(u64, u64)) {
        for file in self.files.iter().filter(|file| *file.handler == handler) {
            f(file.token, file.data.get());
        }
    }

    /// Builds the files of an incoming session: each needs a registered handler.
    pub(crate) fn from_incoming(core: &'static Core, entries: &[FileEntry]) -> Result<Self> {
        let mut set = Self::new();
        set.files.reserve(entries.len(), GFP_KERNEL)?;
        for e in entries {
            let compatible = crate::incoming::c_string(&e.compatible).unwrap_or(&[]);
            let handler = core.registry.lock().by_compatible(core, compatible);
            let Some(handler) = handler else {
                pr_warn!(
                    "No registered handler for compatible '{}'\n",
                    kernel::str::BStr::from_bytes(compatible)
                );
                // Dropping `set` drops the references taken for the files before this one.
                return Err(ENOENT);
            };
            let in_flbs = flb::IncomingFlbs::of(core, *handler)?;
            // Within the capacity reserved above.
            let _ = set.files.push_within_capacity(LuoFile {
                _flbs: None,
                in_flbs: Some(in_flbs),
                handler,
                file: OnceCell::new(),
                data: Cell::new(e.data),
                private: HandlerPrivate::NONE,
                token: e.token,
                status: Cell::new(RetrieveStatus::NotRetrieved),
                retrieving: Cell::new(false),
                deps: KVec::new(),
            });
        }
        Ok(set)
    }
}

#[kunit_tests(luo_file)]
mod tests {
    use super::*;
    use crate::incoming::FileEntry;
    use kernel::{
        fs::{
            anon_inode::{
                self,
                AnonInodeFile, //
            },
            file::flags::O_RDWR,
        },
        liveupdate::handler::{
            FileHandler,
            FileHandlerRegistration,
            FlbOps,
            FlbRegistration,
            IncomingSession,
            OutgoingSession,
            RetrieveStatus, //
        },
        sync::{
            atomic::{
                Acquire,
                Atomic,
                Relaxed,
                Release, //
            },
            Arc,
        },
        time::{
            delay::fsleep,
            Delta, //
        },
        workqueue,
    };

    /// What the test handler was asked to do, in order: `op * 1000 + file number`.
    static EVENTS: [Atomic<u64>; 64] = [const { Atomic::new(0) }; 64];
    static NEXT: Atomic<usize> = Atomic::new(0);
    /// The test files, by number: the addresses of their `struct file`.
    static FILES: [Atomic<usize>; 8] = [const { Atomic::new(0) }; 8];
    /// The file number whose freeze fails, or 0.
    static FAIL_FREEZE: Atomic<u64> = Atomic::new(0);
    /// For each file number, the number of the file it depends on (0: none, a plain file).
    static DEPS: [Atomic<u64>; 8] = [const { Atomic::new(0) }; 8];
    /// The address of the file the dependent handler's last retrieve got by token.
    static GOT: Atomic<usize> = Atomic::new(0);

    const PRESERVE: u64 = 1;
    const UNPRESERVE: u64 = 2;
    const FREEZE: u64 = 3;
    const UNFREEZE: u64 = 4;
    const RETRIEVE: u64 = 5;
    const FINISH: u64 = 6;
    /// The dependent handler: a lookup failed with this errno (negated).
    const LOOKUP_FAILED: u64 = 11;
    /// The dependent handler: its retrieve got its dependency (file number) by token.
    const GOT_DEP: u64 = 12;
    /// A handle whose retrieve fails with `ENOEXEC`.
    const BAD: u64 = 99;

    fn record(op: u64, n: u64) {
        let i = NEXT.fetch_add(1, Relaxed);
        if let Some(e) = EVENTS.get(i) {
            e.store(op * 1000 + n, Relaxed);
        }
    }

    /// Forgets the events and the files of earlier tests (whose addresses may be reused).
    fn reset() {
        NEXT.store(0, Relaxed);
        FAIL_FREEZE.store(0, Relaxed);
        GOT.store(0, Relaxed);
        for f in FILES.iter() {
            f.store(0, Relaxed);
        }
        for d in DEPS.iter() {
            d.store(0, Relaxed);
        }
    }

    fn events() -> Result<KVec<u64>> {
        let mut v = KVec::new();
        for e in EVENTS.iter().take(NEXT.load(Relaxed)) {
            v.push(e.load(Relaxed), GFP_KERNEL)?;
        }
        NEXT.store(0, Relaxed);
        Ok(v)
    }

    fn number(file: &File) -> Option<u64> {
        // CAST: Only compared with the addresses recorded in `FILES`.
        let addr = file.as_ptr() as usize;
        FILES
            .iter()
            .position(|f| f.load(Relaxed) == addr)
            .map(|i| i as u64)
    }

    struct TestFile;

    #[vtable]
    impl AnonInodeFile for TestFile {
        type Ptr = ();
    }

    fn new_file(n: usize) -> Result<ARef<File>> {
        let file = anon_inode::new_file::<TestFile>(c"[luo_kunit]", (), O_RDWR)?;
        if let Some(slot) = FILES.get(n) {
            // CAST: Recorded to recognise the file.
            slot.store(file.as_ptr() as usize, Relaxed);
        }
        Ok(file)
    }

    struct TestHandler;

    #[vtable]
    impl FileHandler for TestHandler {
        const COMPATIBLE: &'static CStr = c"luo-kunit-v1";
        type Private = ();

        fn can_preserve(file: &File) -> bool {
            number(file).is_some_and(|n| n > 0 && dep_of(n) == 0)
        }

        fn preserve(_session: &OutgoingSession<'_>, file: &File) -> Result<(u64, ())> {
            let n = number(file).ok_or(EINVAL)?;
            record(PRESERVE, n);
            Ok((n, ()))
        }

        fn unpreserve(_session: &OutgoingSession<'_>, _file: &File, data: u64, _private: ()) {
            record(UNPRESERVE, data);
        }

        fn freeze(
            _session: &OutgoingSession<'_>,
            _file: &File,
            data: u64,
            _private: (),
        ) -> Result<u64> {
            record(FREEZE, data);
            if FAIL_FREEZE.load(Relaxed) == data {
                return Err(EAGAIN);
            }
            Ok(data)
        }

        fn unfreeze(_session: &OutgoingSession<'_>, _file: &File, data: u64, _private: ()) {
            record(UNFREEZE, data);
        }

        fn retrieve(_session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
            record(RETRIEVE, data);
            if data == BAD {
                return Err(ENOEXEC);
            }
            anon_inode::new_file::<TestFile>(c"[luo_kunit]", (), O_RDWR)
        }

        fn finish(
            _session: &IncomingSession<'_>,
            _file: Option<&File>,
            data: u64,
            _status: RetrieveStatus,
        ) {
            record(FINISH, data);
        }
    }

    fn dep_of(n: u64) -> u64 {
        usize::try_from(n)
            .ok()
            .and_then(|n| DEPS.get(n))
            .map_or(0, |d| d.load(Relaxed))
    }

    /// Calls `f` with test file number `n`.
    fn with_file<R>(n: u64, f: impl FnOnce(&File) -> R) -> Option<R> {
        let addr = FILES.get(usize::try_from(n).ok()?)?.load(Relaxed);
        if addr == 0 {
            return None;
        }
        // SAFETY: Every test holds a reference to each file it recorded in `FILES` until after
        // the last callback of its handlers, and `reset()` forgets them before the next test.
        Some(f(unsafe {
            File::from_raw_file(core::ptr::with_exposed_provenance(addr))
        }))
    }

    /// A handler whose files depend on a file of [`TestHandler`]'s, as an iommufd depends on the
    /// memfds it maps: its preserve looks up the token of the file `DEPS` names and keeps it in
    /// its data (`file number << 32 | token`); its retrieve gets that file by token.
    struct DepHandler;

    #[vtable]
    impl FileHandler for DepHandler {
        const COMPATIBLE: &'static CStr = c"luo-kunit-dep-v1";
        type Private = ();

        fn can_preserve(file: &File) -> bool {
            number(file).is_some_and(|n| dep_of(n) != 0)
        }

        fn preserve(session: &OutgoingSession<'_>, file: &File) -> Result<(u64, ())> {
            let n = number(file).ok_or(EINVAL)?;
            let token = with_file(dep_of(n), |dep| session.token_of(dep)).ok_or(EINVAL)?;
            let token = token.inspect_err(|e| {
                record(LOOKUP_FAILED, e.to_errno().unsigned_abs().into());
            });
            // The handler's own error for a dependency that is not in the session.
            let token = token.map_err(|_| ENOLINK)?;
            record(PRESERVE, n);
            Ok(((n << 32) | token, ()))
        }

        fn unpreserve(_session: &OutgoingSession<'_>, _file: &File, data: u64, _private: ()) {
            record(UNPRESERVE, data >> 32);
        }

        fn retrieve(session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
            record(RETRIEVE, data >> 32);
            let dep = session.file(data & 0xffff_ffff)?;
            // CAST: Only compared with the address of the file `RETRIEVE_FD` hands out.
            GOT.store(dep.as_ptr() as usize, Relaxed);
            record(GOT_DEP, data & 0xffff_ffff);
            anon_inode::new_file::<TestFile>(c"[luo_kunit]", (), O_RDWR)
        }

        fn finish(
            session: &IncomingSession<'_>,
            _file: Option<&File>,
            data: u64,
            _status: RetrieveStatus,
        ) {
            // Finished before what it depends on: its dependency is still there, retrieved.
            if session.file(data & 0xffff_ffff).is_ok() {
                record(GOT_DEP, data & 0xffff_ffff);
            }
            record(FINISH, data >> 32);
        }
    }

    /// Runs `f` with the test handler registered; skipped when live update is disabled.
    fn with_handler(f: impl FnOnce() -> Result) -> Result {
        if !crate::enabled() {
            return Ok(());
        }
        let _reg = KBox::pin_init(
            FileHandlerRegistration::<TestHandler>::register(),
            GFP_KERNEL,
        )?;
        reset();
        f()
    }

    fn the_core() -> Result<&'static Core> {
        Core::get().ok_or(EINVAL)
    }

    fn preserve(set: &mut FileSet, token: u64, file: &ARef<File>) -> Result {
        set.preserve_with(the_core()?, token, || Ok(file.clone()))
    }

    fn unpreserve_all(set: &mut FileSet) {
        if let Ok(core) = the_core() {
            set.unpreserve_all(core);
        }
    }

    /// Returns the number of objects the core records as preserved or retrieved.
    fn ids() -> Result<usize> {
        Ok(the_core()?.registry.lock().id_count())
    }

    /// Freeze runs first-preserved first; a failing freeze unfreezes the earlier files last
    /// first; unpreserve runs last-preserved first.
    #[test]
    fn outgoing_order() -> Result {
        with_handler(|| {
            let files = [new_file(1)?, new_file(2)?, new_file(3)?];
            let mut set = FileSet::new();
            for (i, f) in files.iter().enumerate() {
                preserve(&mut set, 10 + i as u64, f)?;
            }
            assert_eq!(&events()?[..], &[1001, 1002, 1003]);

            FAIL_FREEZE.store(3, Relaxed);
            assert_eq!(set.freeze().err(), Some(EAGAIN));
            assert_eq!(&events()?[..], &[3001, 3002, 3003, 4002, 4001]);

            FAIL_FREEZE.store(0, Relaxed);
            set.freeze()?;
            let (head, count) = set.serialized();
            assert!(head != 0);
            assert_eq!(count, 3);
            set.unfreeze();
            assert_eq!(&events()?[..], &[3001, 3002, 3003, 4003, 4002, 4001]);

            unpreserve_all(&mut set);
            assert_eq!(&events()?[..], &[2003, 2002, 2001]);
            Ok(())
        })
    }

    /// Tokens are unique per session, objects in all sessions; a refused preserve changes
    /// nothing.
    #[test]
    fn preserve_errors() -> Result {
        with_handler(|| {
            let (a, b) = (new_file(4)?, new_file(5)?);
            let mut s1 = FileSet::new();
            let mut s2 = FileSet::new();
            preserve(&mut s1, 1, &a)?;
            assert_eq!(preserve(&mut s1, 1, &b), Err(EEXIST));
            assert_eq!(preserve(&mut s2, 2, &a), Err(EBUSY));
            preserve(&mut s2, 1, &b)?;
            // File number 0 is not the handler's: no handler takes it.
            let other = new_file(0)?;
            assert_eq!(preserve(&mut s2, 3, &other), Err(ENOENT));
            assert_eq!(&events()?[..], &[1004, 1005]);
            unpreserve_all(&mut s2);
            unpreserve_all(&mut s1);
            // Unpreserved, the object can be preserved again.
            preserve(&mut s2, 2, &a)?;
            unpreserve_all(&mut s2);
            assert_eq!(&events()?[..], &[2005, 2004, 1004, 2004]);
            Ok(())
        })
    }

    /// Retrieve runs in any order, a success can be repeated, a failure is sticky; finish
    /// runs last first, for retrieved and never-retrieved files alike.
    #[test]
    fn incoming_order() -> Result {
        with_handler(|| {
            let mut entries = KVec::new();
            for (token, data) in [(1u64, 1u64), (2, 2), (3, BAD)] {
                let mut compatible = [0u8; abi::HANDLER_COMPAT_LENGTH];
                compatible[..12].copy_from_slice(b"luo-kunit-v1");
                entries.push(
                    FileEntry {
                        compatible,
                        data,
                        token,
                    },
                    GFP_KERNEL,
                )?;
            }
            let c = the_core()?;
            let mut set = FileSet::from_incoming(c, &entries)?;
            let f2 = set.retrieve(c, 2)?;
            let again = set.retrieve(c, 2)?;
            assert!(core::ptr::eq(f2.as_ptr(), again.as_ptr()));
            assert_eq!(ids()?, 1);
            assert_eq!(set.retrieve(c, 3).err(), Some(ENOEXEC));
            assert_eq!(set.retrieve(c, 3).err(), Some(ENOEXEC));
            assert_eq!(set.check_retrieve(3), Err(ENOEXEC));
            assert_eq!(set.retrieve(c, 4).err(), Some(ENOENT));
            assert_eq!(&events()?[..], &[5002, 5099]);
            set.can_finish()?;
            set.finish(c);
            assert_eq!(&events()?[..], &[6099, 6002, 6001]);
            assert_eq!(ids()?, 0);
            assert_eq!(set.retrieve(c, 1).err(), Some(ENOENT));
            Ok(())
        })
    }

    /// Runs `f` with both test handlers registered, the plain one first.
    fn with_handlers(f: impl FnOnce() -> Result) -> Result {
        with_handler(|| {
            let _dep = KBox::pin_init(
                FileHandlerRegistration::<DepHandler>::register(),
                GFP_KERNEL,
            )?;
            f()
        })
    }

    fn unpreserve(set: &mut FileSet, token: u64) -> Result {
        set.unpreserve(the_core()?, token)
    }

    fn entry(compatible: &[u8], token: u64, data: u64) -> FileEntry {
        let mut field = [0u8; abi::HANDLER_COMPAT_LENGTH];
        if let Some(dst) = field.get_mut(..compatible.len()) {
            dst.copy_from_slice(compatible);
        }
        FileEntry {
            compatible: field,
            data,
            token,
        }
    }

    /// A dependent file's preserve finds its dependency's token and the set records it: the
    /// dependency cannot be unpreserved before it (`EBUSY`, nothing changed), and closing the
    /// session unpreserves the dependent file first.
    #[test]
    fn dependent_outgoing() -> Result {
        with_handlers(|| {
            let files = [new_file(1)?, new_file(2)?, new_file(3)?];
            DEPS[3].store(1, Relaxed);
            let mut set = FileSet::new();
            preserve(&mut set, 10, &files[0])?;
            preserve(&mut set, 11, &files[1])?;
            preserve(&mut set, 12, &files[2])?;
            assert_eq!(&events()?[..], &[1001, 1002, 1003]);
            assert_eq!(set.files.len(), 3);
            assert_eq!(&set.files[2].deps[..], &[10]);
            assert_eq!(set.files[2].data.get(), (3 << 32) | 10);
            assert!(set.files[0].deps.is_empty() && set.files[1].deps.is_empty());

            assert_eq!(unpreserve(&mut set, 10), Err(EBUSY));
            assert_eq!(unpreserve(&mut set, 13), Err(ENOENT));
            assert!(events()?.is_empty());
            assert_eq!(set.files.len(), 3);
            assert_eq!(preserve(&mut set, 10, &files[0]), Err(EEXIST));

            // The dependent file first, then its dependency: both tokens are free again.
            unpreserve(&mut set, 12)?;
            unpreserve(&mut set, 10)?;
            assert_eq!(&events()?[..], &[2003, 2001]);
            assert_eq!(set.files.len(), 1);
            assert_eq!(set.serialized().1, 1);

            // Its dependency gone, the dependent handler's lookup fails with ENOENT and its
            // preserve with the handler's own error; nothing is preserved.
            assert_eq!(preserve(&mut set, 12, &files[2]), Err(ENOLINK));
            assert_eq!(&events()?[..], &[11002]);
            assert_eq!(set.files.len(), 1);

            preserve(&mut set, 10, &files[0])?;
            preserve(&mut set, 12, &files[2])?;
            // Last preserved first: the dependent file before its dependency.
            unpreserve_all(&mut set);
            assert_eq!(&events()?[..], &[1001, 1003, 2003, 2001, 2002]);
            assert_eq!(ids()?, 0);
            Ok(())
        })
    }

    /// A lookup finds only the files of its own session.
    #[test]
    fn lookup_other_session() -> Result {
        with_handlers(|| {
            let (a, b) = (new_file(1)?, new_file(2)?);
            DEPS[2].store(1, Relaxed);
            let (mut s1, mut s2) = (FileSet::new(), FileSet::new());
            preserve(&mut s1, 1, &a)?;
            assert_eq!(preserve(&mut s2, 2, &b), Err(ENOLINK));
            assert_eq!(&events()?[..], &[1001, 11002]);
            preserve(&mut s1, 2, &b)?;
            assert_eq!(&s1.files[1].deps[..], &[1]);
            unpreserve_all(&mut s1);
            assert_eq!(&events()?[..], &[1002, 2002, 2001]);
            Ok(())
        })
    }

    /// A dependent file's retrieve gets its dependency by token, retrieving it on demand; a
    /// later retrieve of the dependency hands out the same file without calling its handler
    /// again. A file that needs itself is refused (`EDEADLK`, sticky). Finish runs last first,
    /// and a dependent file still finds its dependency.
    #[test]
    fn dependent_incoming() -> Result {
        with_handlers(|| {
            let mut entries = KVec::new();
            entries.push(entry(b"luo-kunit-v1", 1, 1), GFP_KERNEL)?;
            entries.push(entry(b"luo-kunit-v1", 2, 2), GFP_KERNEL)?;
            entries.push(entry(b"luo-kunit-dep-v1", 3, (3 << 32) | 1), GFP_KERNEL)?;
            entries.push(entry(b"luo-kunit-dep-v1", 4, (4 << 32) | 4), GFP_KERNEL)?;
            let c = the_core()?;
            let mut set = FileSet::from_incoming(c, &entries)?;

            let _three = set.retrieve(c, 3)?;
            assert_eq!(&events()?[..], &[5003, 5001, 12001]);
            assert_eq!(ids()?, 2);
            let one = set.retrieve(c, 1)?;
            // CAST: Compared with the recorded address.
            assert_eq!(GOT.load(Relaxed), one.as_ptr() as usize);
            assert!(events()?.is_empty());
            assert_eq!(ids()?, 2);

            assert_eq!(set.retrieve(c, 4).err(), Some(EDEADLK));
            assert_eq!(set.retrieve(c, 4).err(), Some(EDEADLK));
            assert_eq!(set.check_retrieve(4), Err(EDEADLK));
            assert_eq!(&events()?[..], &[5004]);

            set.can_finish()?;
            set.finish(c);
            assert_eq!(&events()?[..], &[6004, 12001, 6003, 6002, 6001]);
            assert_eq!(ids()?, 0);
            Ok(())
        })
    }

    /// The boot-time query reports every incoming file of one handler, with its session, from
    /// the previous kernel's data before the first open and from the sessions afterwards.
    #[test]
    fn fd_data_query() -> Result {
        with_handlers(|| {
            let c = the_core()?;
            let mut luo = crate::Luo::new();
            let dep_ref = c
                .registry
                .lock()
                .by_compatible(c, b"luo-kunit-dep-v1")
                .ok_or(EINVAL)?;
            let plain_ref = c
                .registry
                .lock()
                .by_compatible(c, b"luo-kunit-v1")
                .ok_or(EINVAL)?;
            let (dep, plain) = (*dep_ref, *plain_ref);
            let mut sessions = KVec::new();
            for (name, files) in [
                (&b"vm-a"[..], [(1u64, 0x11u64, false), (2, 0x22, true)]),
                (&b"vm-b"[..], [(7, 0x77, true), (8, 0x88, false)]),
            ] {
                let mut n = [0u8; kernel::liveupdate::SESSION_NAME_LENGTH];
                n[..name.len()].copy_from_slice(name);
                let mut v = KVec::new();
                for (token, data, is_dep) in files {
                    let c: &[u8] = if is_dep {
                        b"luo-kunit-dep-v1"
                    } else {
                        b"luo-kunit-v1"
                    };
                    v.push(entry(c, token, data), GFP_KERNEL)?;
                }
                sessions.push(
                    crate::incoming::SessionEntry { name: n, files: v },
                    GFP_KERNEL,
                )?;
            }
            luo.pending = Some(crate::incoming::Data {
                liveupdate_num: 1,
                sessions,
                flbs: KVec::new(),
            });
            let query = |luo: &crate::Luo, h| -> Result<KVec<(u8, u64, u64)>> {
                let mut out = KVec::new();
                let mut r = Ok(());
                crate::session::for_each_incoming_file(luo, h, |name, token, data| {
                    if r.is_ok() {
                        r = out
                            .push((name[3], token, data), GFP_KERNEL)
                            .map_err(Error::from);
                    }
                })?;
                r.map(|()| out)
            };
            assert_eq!(&query(&luo, dep)?[..], &[(b'a', 2, 0x22), (b'b', 7, 0x77)]);
            assert_eq!(
                &query(&luo, plain)?[..],
                &[(b'a', 1, 0x11), (b'b', 8, 0x88)]
            );
            // Turned into sessions, as the first open does: the same files, nothing retrieved.
            crate::session::deserialize(c, &mut luo)?;
            assert_eq!(&query(&luo, dep)?[..], &[(b'a', 2, 0x22), (b'b', 7, 0x77)]);
            assert!(events()?.is_empty());
            // Dropping the sessions drops their files' references to the handlers, which are
            // then unregistered without waiting.
            drop(luo);
            Ok(())
        })
    }

    /// The kernel crate's query (`FileHandlerRegistration::incoming_files`) of a handler that
    /// has no incoming files: none, and nothing retrieved.
    #[test]
    fn incoming_files_none() -> Result {
        with_handler(|| {
            let reg = KBox::pin_init(
                FileHandlerRegistration::<DepHandler>::register(),
                GFP_KERNEL,
            )?;
            assert_eq!(reg.incoming_files()?.count(), 0);
            assert!(events()?.is_empty());
            Ok(())
        })
    }

    const FLB_PRESERVE: u64 = 7;
    const FLB_UNPRESERVE: u64 = 8;
    const FLB_RETRIEVE: u64 = 9;
    const FLB_FINISH: u64 = 10;

    struct TestFlb;

    #[vtable]
    impl FlbOps for TestFlb {
        const COMPATIBLE: &'static CStr = c"luo-kunit-flb-v1";
        type Object = KBox<u64>;

        fn preserve() -> Result<(u64, KBox<u64>)> {
            record(FLB_PRESERVE, 0);
            Ok((0x77, KBox::new(0x1000, GFP_KERNEL)?))
        }

        fn unpreserve(data: u64, _obj: KBox<u64>) {
            record(FLB_UNPRESERVE, data);
        }

        fn retrieve(data: u64) -> Result<KBox<u64>> {
            record(FLB_RETRIEVE, data);
            Ok(KBox::new(0x2000, GFP_KERNEL)?)
        }

        fn finish(obj: KBox<u64>) {
            record(FLB_FINISH, *obj);
        }
    }

    /// The first preserved file preserves the FLB and the last unpreserved one unpreserves
    /// it; incoming, the FLB is retrieved on first use, counted down from the previous
    /// kernel's count and finished with the last file.
    #[test]
    fn flb_refcounts() -> Result {
        if !crate::enabled() {
            return Ok(());
        }
        let c = the_core()?;
        let reg = Arc::pin_init(
            FileHandlerRegistration::<TestHandler>::register(),
            GFP_KERNEL,
        )?;
        let flb = KBox::pin_init(
            FlbRegistration::<TestFlb, TestHandler>::register(reg.clone()),
            GFP_KERNEL,
        )?;
        reset();
        assert_eq!(flb.outgoing().err(), Some(ENOENT));

        let (a, b) = (new_file(6)?, new_file(7)?);
        let mut set = FileSet::new();
        preserve(&mut set, 1, &a)?;
        preserve(&mut set, 2, &b)?;
        assert_eq!(&events()?[..], &[7000, 1006, 1007]);
        let obj = flb.outgoing()?;
        assert_eq!(*obj.get(), 0x1000);
        drop(obj);
        unpreserve_all(&mut set);
        assert_eq!(&events()?[..], &[2007, 2006, 8119]);

        let mut compatible = [0u8; abi::FLB_COMPAT_LENGTH];
        compatible[..16].copy_from_slice(b"luo-kunit-flb-v1");
        crate::flb::add_incoming_for_test(
            c,
            crate::incoming::FlbEntry {
                compatible,
                data: 0x55,
                count: 2,
            },
        )?;
        let mut entries = KVec::new();
        for token in [1u64, 2] {
            let mut compatible = [0u8; abi::HANDLER_COMPAT_LENGTH];
            compatible[..12].copy_from_slice(b"luo-kunit-v1");
            entries.push(
                FileEntry {
                    compatible,
                    data: token,
                    token,
                },
                GFP_KERNEL,
            )?;
        }
        let mut incoming = FileSet::from_incoming(c, &entries)?;
        incoming.can_finish()?;
        incoming.finish(c);
        assert_eq!(&events()?[..], &[6002, 9085, 6001, 10000 + 0x2000]);
        assert_eq!(flb.incoming().err(), Some(ENODATA));
        drop(flb);
        drop(reg);
        Ok(())
    }

    /// Polls `cond` every 10 ms for up to 5 s; returns its last value.
    fn wait_for(cond: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if cond() {
                return true;
            }
            fsleep(Delta::from_millis(10));
        }
        cond()
    }

    /// Dropping a handler's registration while it has a preserved file unregisters it at once,
    /// so that no new file can use it, but waits until that file is unpreserved: the core never
    /// calls a handler that its registrant freed.
    #[test]
    fn unregister_waits() -> Result {
        if !crate::enabled() {
            return Ok(());
        }
        let c = the_core()?;
        let reg = KBox::pin_init(
            FileHandlerRegistration::<TestHandler>::register(),
            GFP_KERNEL,
        )?;
        reset();
        let (a, b) = (new_file(1)?, new_file(2)?);
        let mut set = FileSet::new();
        preserve(&mut set, 1, &a)?;
        assert_eq!(&events()?[..], &[1001]);

        let done = Arc::new(Atomic::new(false), GFP_KERNEL)?;
        let done_in_work = done.clone();
        workqueue::system_unbound().try_spawn(GFP_KERNEL, move || {
            drop(reg);
            done_in_work.store(true, Release);
        })?;
        let unregistering = || c.registry.lock().is_unregistering(b"luo-kunit-v1");
        assert!(wait_for(unregistering));
        // The handler is no longer offered to new files, and the drop still waits.
        assert_eq!(preserve(&mut set, 2, &b), Err(ENOENT));
        fsleep(Delta::from_millis(100));
        assert!(!done.load(Acquire));
        assert_eq!(set.files.len(), 1);

        // The handler, still registered, unpreserves its file; then the drop ends.
        unpreserve_all(&mut set);
        assert!(wait_for(|| done.load(Acquire)));
        assert_eq!(&events()?[..], &[2001]);
        assert!(!c.registry.lock().is_unregistering(b"luo-kunit-v1"));
        assert_eq!(ids()?, 0);
        Ok(())
    }
}
