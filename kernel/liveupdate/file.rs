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
    sync::aref::ARef,
    transmute::AsBytes, //
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
        if self.files.iter().any(|f| f.token == token) {
            return Err(EEXIST);
        }
        self.blocks.grow(self.files.len() + 1)?;
        let r = self.preserve_grown(luo, token, fd);
        if r.is_err() {
            self.blocks.shrink(self.files.len());
        }
        r
    }

    fn preserve_grown(&mut self, luo: &mut LuoLists<'_>, token: u64, fd: i32) -> Result {
        let fd = u32::try_from(fd).map_err(|_| EBADF)?;
        let file = LocalFile::fget(fd)?;
        // SAFETY: Called from an ioctl; LUO never calls `fdget_pos`, so this thread has no
        // active `fdget_pos` region on the file.
        let file = unsafe { LocalFile::assume_no_fdget_pos(file) };

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

    /// Freezes every file, first preserved first, and writes their serialized form: returns the
    /// head of the file chain and the file count. If a handler fails, the files frozen before it
    /// are unfrozen, last first.
    pub(crate) fn freeze(&mut self) -> Result<(PhysAddr, u64)> {
        if self.files.is_empty() {
            return Ok((0, 0));
        }
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
        self.write()
            .inspect_err(|_| self.unfreeze_first(self.files.len()))
    }

    /// Writes the serialized form of the frozen files into the blocks.
    fn write(&mut self) -> Result<(PhysAddr, u64)> {
        let mut entries = KVec::with_capacity(self.files.len(), GFP_KERNEL)?;
        for f in self.files.iter() {
            let mut compatible = [0u8; abi::HANDLER_COMPAT_LENGTH];
            let c = f.handler.compatible();
            compatible
                .get_mut(..c.len())
                .ok_or(EINVAL)?
                .copy_from_slice(c);
            entries.push(
                FileSer {
                    compatible: compatible.map(|b| c_char::from_ne_bytes([b])),
                    data: f.data,
                    token: f.token,
                },
                GFP_KERNEL,
            )?;
        }
        let head = self.blocks.write(entries.iter().map(|e| e.as_bytes()))?;
        Ok((head, self.files.len() as u64))
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
