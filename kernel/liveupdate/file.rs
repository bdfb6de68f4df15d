// SPDX-License-Identifier: GPL-2.0

//! The preserved files of a session and the order in which their handlers are called.
//!
//! - preserve: handlers are asked in registration order, the first that can preserve the file
//!   wins; an object (a handler's [`Handler::id`]) is preserved at most once in all sessions;
//! - unpreserve and finish: last preserved first (LIFO);
//! - freeze at reboot: first preserved first (FIFO), unfrozen in reverse if a later one fails;
//! - retrieve: any order; a failed retrieve is sticky, a successful one can be repeated and
//!   hands out the same file again.

use crate::{
    block::BlockSet,
    flb,
    incoming::FileEntry,
    Luo, //
};
use kernel::{
    fs::{
        File,
        LocalFile, //
    },
    liveupdate::{
        abi::{
            self,
            FileSer, //
        },
        handler::{
            Handler,
            HandlerPrivate, //
        },
        kho::PhysAddr,
    },
    prelude::*,
    sync::aref::ARef, //
};

/// A preserved file of a session.
pub(crate) struct LuoFile {
    handler: Handler,
    /// The file: the preserved one, or the retrieved one once retrieved.
    file: Option<ARef<File>>,
    /// The handler's handle to the file's serialized state.
    data: u64,
    private: HandlerPrivate,
    token: u64,
    /// 0 before retrieve, 1 once retrieved, or the sticky error of a failed retrieve.
    retrieve_status: i32,
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
    pub(crate) fn preserve(&mut self, luo: &mut LuoLists<'_>, token: u64, fd: i32) -> Result {
        self.preserve_with(luo, token, || {
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
        luo: &mut LuoLists<'_>,
        token: u64,
        get: impl FnOnce() -> Result<ARef<File>>,
    ) -> Result {
        if self.files.iter().any(|f| f.token == token) {
            return Err(EEXIST);
        }
        self.blocks.grow(self.files.len() + 1)?;
        let r = get().and_then(|file| self.preserve_grown(luo, token, file));
        if r.is_err() {
            self.blocks.shrink(self.files.len());
        }
        r
    }

    fn preserve_grown(&mut self, luo: &mut LuoLists<'_>, token: u64, file: ARef<File>) -> Result {
        let handler = luo
            .handlers
            .iter()
            .copied()
            .find(|h| h.can_preserve(&file))
            .ok_or(ENOENT)?;
        if !handler.module_get() {
            return Err(ENOENT);
        }
        let r = (|| {
            let id = handler.id(&file);
            if luo.preserved.contains(&id) {
                return Err(EBUSY);
            }
            luo.preserved.reserve(1, GFP_KERNEL)?;
            self.files.reserve(1, GFP_KERNEL)?;
            flb::file_preserve(handler)?;
            let (data, private) = handler.preserve(&file).inspect_err(|_| {
                flb::file_unpreserve(handler);
            })?;
            // Both pushes are within the capacity reserved above and cannot fail.
            let _ = luo.preserved.push_within_capacity(id);
            let _ = self.files.push_within_capacity(LuoFile {
                handler,
                file: Some(file),
                data,
                private,
                token,
                retrieve_status: 0,
            });
            Ok(())
        })();
        if r.is_err() {
            handler.module_put();
        }
        r
    }

    /// Unpreserves every file, last preserved first, and frees the blocks.
    pub(crate) fn unpreserve_all(&mut self, preserved: &mut KVec<usize>) {
        while let Some(f) = self.files.pop() {
            if let Some(file) = &f.file {
                f.handler.unpreserve(file, f.data, f.private);
                forget_id(preserved, f.handler.id(file));
            }
            flb::file_unpreserve(f.handler);
            f.handler.module_put();
            self.blocks.shrink(self.files.len());
        }
        self.blocks.shrink(0);
    }

    /// Freezes every file, first preserved first, and writes their serialized form (see
    /// [`FileSet::serialized`]). If a handler fails, the files frozen before it are unfrozen,
    /// last first.
    pub(crate) fn freeze(&mut self) -> Result {
        let mut failed = None;
        for (i, f) in self.files.iter_mut().enumerate() {
            let Some(file) = &f.file else {
                continue;
            };
            match f.handler.freeze(file, f.data, f.private) {
                Ok(data) => f.data = data,
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
            data: f.data,
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
        for f in self.files.iter().take(n).rev() {
            if let Some(file) = &f.file {
                f.handler.unfreeze(file, f.data, f.private);
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
        if f.retrieve_status < 0 {
            return Err(Error::from_errno(f.retrieve_status));
        }
        Ok(())
    }

    /// Retrieves the file preserved under `token`: returns a new reference to it.
    pub(crate) fn retrieve(
        &mut self,
        preserved: &mut KVec<usize>,
        token: u64,
    ) -> Result<ARef<File>> {
        let f = self
            .files
            .iter_mut()
            .find(|f| f.token == token)
            .ok_or(ENOENT)?;
        if f.retrieve_status < 0 {
            return Err(Error::from_errno(f.retrieve_status));
        }
        if let (1, Some(file)) = (f.retrieve_status, &f.file) {
            return Ok(file.clone());
        }
        preserved.reserve(1, GFP_KERNEL)?;
        let file = match f.handler.retrieve(f.data) {
            Ok(file) => file,
            Err(e) => {
                f.retrieve_status = e.to_errno();
                return Err(e);
            }
        };
        // Within the capacity reserved above.
        let _ = preserved.push_within_capacity(f.handler.id(&file));
        f.file = Some(file.clone());
        f.retrieve_status = 1;
        Ok(file)
    }

    /// Checks that every handler agrees to finish now: [`EBUSY`] otherwise.
    pub(crate) fn can_finish(&self) -> Result {
        for f in self.files.iter() {
            if !f
                .handler
                .can_finish(f.file.as_deref(), f.data, f.retrieve_status)
            {
                return Err(EBUSY);
            }
        }
        Ok(())
    }

    /// Finishes every file, last first; [`FileSet::can_finish`] must have agreed.
    pub(crate) fn finish(&mut self, preserved: &mut KVec<usize>) {
        while let Some(f) = self.files.pop() {
            f.handler
                .finish(f.file.as_deref(), f.data, f.retrieve_status);
            flb::file_finish(f.handler);
            if let Some(file) = &f.file {
                forget_id(preserved, f.handler.id(file));
            }
            f.handler.module_put();
        }
    }

    /// Builds the files of an incoming session: each needs a registered handler.
    pub(crate) fn from_incoming(luo: &Luo, entries: &[FileEntry]) -> Result<Self> {
        let mut set = Self::new();
        set.files.reserve(entries.len(), GFP_KERNEL)?;
        for e in entries {
            let compatible = crate::incoming::c_string(&e.compatible).unwrap_or(&[]);
            let handler = luo
                .handler_by_compatible(compatible)
                .filter(|h| h.module_get());
            let Some(handler) = handler else {
                pr_warn!(
                    "No registered handler for compatible '{}'\n",
                    kernel::str::BStr::from_bytes(compatible)
                );
                set.drop_incoming();
                return Err(ENOENT);
            };
            // Within the capacity reserved above.
            let _ = set.files.push_within_capacity(LuoFile {
                handler,
                file: None,
                data: e.data,
                private: HandlerPrivate::NONE,
                token: e.token,
                retrieve_status: 0,
            });
        }
        Ok(set)
    }

    /// Drops the files of an incoming session that was never handed out.
    pub(crate) fn drop_incoming(&mut self) {
        while let Some(f) = self.files.pop() {
            f.handler.module_put();
        }
    }
}

/// The lists of [`Luo`] that preserving a file needs, borrowed apart from the session.
pub(crate) struct LuoLists<'a> {
    pub(crate) handlers: &'a KVec<Handler>,
    pub(crate) preserved: &'a mut KVec<usize>,
}

fn forget_id(preserved: &mut KVec<usize>, id: usize) {
    if let Some(i) = preserved.iter().position(|&p| p == id) {
        // `i` is in bounds: it was just found.
        let _ = preserved.remove(i);
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
            FlbObject,
            FlbOps,
            FlbRegistration, //
        },
        sync::atomic::{
            Atomic,
            Relaxed, //
        },
    };

    /// What the test handler was asked to do, in order: `op * 1000 + file number`.
    static EVENTS: [Atomic<u64>; 64] = [const { Atomic::new(0) }; 64];
    static NEXT: Atomic<usize> = Atomic::new(0);
    /// The test files, by number: the addresses of their `struct file`.
    static FILES: [Atomic<usize>; 8] = [const { Atomic::new(0) }; 8];
    /// The file number whose freeze fails, or 0.
    static FAIL_FREEZE: Atomic<u64> = Atomic::new(0);

    const PRESERVE: u64 = 1;
    const UNPRESERVE: u64 = 2;
    const FREEZE: u64 = 3;
    const UNFREEZE: u64 = 4;
    const RETRIEVE: u64 = 5;
    const FINISH: u64 = 6;
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
        for f in FILES.iter() {
            f.store(0, Relaxed);
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
            number(file).is_some_and(|n| n > 0)
        }

        fn preserve(file: &File) -> Result<(u64, ())> {
            let n = number(file).ok_or(EINVAL)?;
            record(PRESERVE, n);
            Ok((n, ()))
        }

        fn unpreserve(_file: &File, data: u64, _private: ()) {
            record(UNPRESERVE, data);
        }

        fn freeze(_file: &File, data: u64, _private: ()) -> Result<u64> {
            record(FREEZE, data);
            if FAIL_FREEZE.load(Relaxed) == data {
                return Err(EAGAIN);
            }
            Ok(data)
        }

        fn unfreeze(_file: &File, data: u64, _private: ()) {
            record(UNFREEZE, data);
        }

        fn retrieve(data: u64) -> Result<ARef<File>> {
            record(RETRIEVE, data);
            if data == BAD {
                return Err(ENOEXEC);
            }
            anon_inode::new_file::<TestFile>(c"[luo_kunit]", (), O_RDWR)
        }

        fn finish(_file: Option<&File>, data: u64, _retrieve_status: i32) {
            record(FINISH, data);
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

    fn preserve(set: &mut FileSet, token: u64, file: &ARef<File>) -> Result {
        let mut luo = crate::lock();
        let luo: &mut Luo = &mut luo;
        let mut lists = LuoLists {
            handlers: &luo.handlers,
            preserved: &mut luo.preserved,
        };
        set.preserve_with(&mut lists, token, || Ok(file.clone()))
    }

    fn unpreserve_all(set: &mut FileSet) {
        set.unpreserve_all(&mut crate::lock().preserved);
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
            let mut set = FileSet::from_incoming(&crate::lock(), &entries)?;
            let mut preserved = KVec::new();
            let f2 = set.retrieve(&mut preserved, 2)?;
            let again = set.retrieve(&mut preserved, 2)?;
            assert!(core::ptr::eq(f2.as_ptr(), again.as_ptr()));
            assert_eq!(set.retrieve(&mut preserved, 3).err(), Some(ENOEXEC));
            assert_eq!(set.retrieve(&mut preserved, 3).err(), Some(ENOEXEC));
            assert_eq!(set.check_retrieve(3), Err(ENOEXEC));
            assert_eq!(set.retrieve(&mut preserved, 4).err(), Some(ENOENT));
            assert_eq!(&events()?[..], &[5002, 5099]);
            set.can_finish()?;
            set.finish(&mut preserved);
            assert_eq!(&events()?[..], &[6099, 6002, 6001]);
            assert!(preserved.is_empty());
            assert_eq!(set.retrieve(&mut preserved, 1).err(), Some(ENOENT));
            Ok(())
        })
    }

    const FLB_PRESERVE: u64 = 7;
    const FLB_UNPRESERVE: u64 = 8;
    const FLB_RETRIEVE: u64 = 9;
    const FLB_FINISH: u64 = 10;

    struct TestFlb;

    impl FlbOps for TestFlb {
        const COMPATIBLE: &'static CStr = c"luo-kunit-flb-v1";

        fn preserve() -> Result<(u64, FlbObject)> {
            record(FLB_PRESERVE, 0);
            Ok((
                0x77,
                FlbObject::new(core::ptr::without_provenance_mut(0x1000)),
            ))
        }

        fn unpreserve(data: u64, _obj: FlbObject) {
            record(FLB_UNPRESERVE, data);
        }

        fn retrieve(data: u64) -> Result<FlbObject> {
            record(FLB_RETRIEVE, data);
            Ok(FlbObject::new(core::ptr::without_provenance_mut(0x2000)))
        }

        fn finish(obj: FlbObject) {
            // CAST: The test's objects are plain numbers.
            record(FLB_FINISH, obj.as_ptr() as u64);
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
        let reg = KBox::pin_init(
            FileHandlerRegistration::<TestHandler>::register(),
            GFP_KERNEL,
        )?;
        let flb = KBox::pin_init(
            FlbRegistration::<TestFlb>::register(reg.as_ref()),
            GFP_KERNEL,
        )?;
        reset();
        assert_eq!(flb.get_outgoing().err(), Some(ENOENT));

        let (a, b) = (new_file(6)?, new_file(7)?);
        let mut set = FileSet::new();
        preserve(&mut set, 1, &a)?;
        preserve(&mut set, 2, &b)?;
        assert_eq!(&events()?[..], &[7000, 1006, 1007]);
        let obj = flb.get_outgoing()?;
        assert!(obj.as_ptr() == core::ptr::without_provenance_mut(0x1000));
        flb.put_outgoing();
        unpreserve_all(&mut set);
        assert_eq!(&events()?[..], &[2007, 2006, 8119]);

        let mut compatible = [0u8; abi::FLB_COMPAT_LENGTH];
        compatible[..16].copy_from_slice(b"luo-kunit-flb-v1");
        crate::flb::add_incoming_for_test(crate::incoming::FlbEntry {
            compatible,
            data: 0x55,
            count: 2,
        })?;
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
        let mut incoming = FileSet::from_incoming(&crate::lock(), &entries)?;
        let mut preserved = KVec::new();
        incoming.can_finish()?;
        incoming.finish(&mut preserved);
        assert_eq!(&events()?[..], &[6002, 9085, 6001, 10000 + 0x2000]);
        assert_eq!(flb.get_incoming().err(), Some(ENODATA));
        drop(flb);
        drop(reg);
        Ok(())
    }
}
