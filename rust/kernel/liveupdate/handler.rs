// SPDX-License-Identifier: GPL-2.0

//! File handlers and FLBs registered through the C API.
//!
//! C header: [`include/linux/liveupdate.h`](srctree/include/linux/liveupdate.h)
//!
//! A file handler (`struct liveupdate_file_handler`) knows how to preserve one kind of file; an
//! FLB (`struct liveupdate_flb`, file-lifecycle-bound data) is global state that lives as long as
//! at least one file of its handlers is preserved. Both are owned by their registrant, which
//! promises to unregister them before it frees them. [`Handler`] and [`Flb`] are references to
//! registered ones that call their operations with the argument conventions of the C API.
//!
//! Handlers written in Rust implement [`FileHandler`] and register with
//! [`FileHandlerRegistration`], which gives them a C handler of their own.

use crate::{
    bindings,
    error::{
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    fs::File,
    prelude::*,
    sync::aref::ARef,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::{
    marker::PhantomData,
    ptr::{
        null_mut,
        NonNull, //
    },
};

use super::abi::{
    FLB_COMPAT_LENGTH,
    HANDLER_COMPAT_LENGTH, //
};

/// Opaque per-file data of a handler, returned by its `preserve` and passed back to it.
#[derive(Clone, Copy)]
pub struct HandlerPrivate(*mut c_void);

impl HandlerPrivate {
    /// No private data, as for a file not preserved in this kernel.
    pub const NONE: Self = Self(null_mut());
}

// SAFETY: The pointer is only passed back to the handler that produced it, which the C API
// allows from any thread.
unsafe impl Send for HandlerPrivate {}
// SAFETY: As above; the value is never dereferenced in Rust.
unsafe impl Sync for HandlerPrivate {}

/// Opaque object of an FLB, returned by its `preserve` or `retrieve` and handed to its users.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlbObject(*mut c_void);

// SAFETY: The pointer is only passed back to the FLB's users, which the C API allows from any
// thread.
unsafe impl Send for FlbObject {}
// SAFETY: As above; the value is never dereferenced in Rust.
unsafe impl Sync for FlbObject {}

impl FlbObject {
    /// The absence of an object.
    pub const NONE: Self = Self(null_mut());

    /// Returns the object as the C API passes it.
    pub fn as_ptr(self) -> *mut c_void {
        self.0
    }

    /// Returns whether there is no object.
    pub fn is_none(self) -> bool {
        self.0.is_null()
    }
}

/// The direction of a [`Session`]: [`Outgoing`] or [`Incoming`].
pub trait Direction: private::Sealed {}

/// A session being prepared for the next kernel.
pub enum Outgoing {}

/// A session handed over by the previous kernel.
pub enum Incoming {}

impl Direction for Outgoing {}
impl Direction for Incoming {}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Outgoing {}
    impl Sealed for super::Incoming {}
}

/// The session a file handler's callback runs for (`struct liveupdate_session`).
///
/// The orchestrator passes one to every callback but `can_preserve` and `get_id`: an
/// [`OutgoingSession`] to those on an outgoing file (`preserve`, `unpreserve`, `freeze`,
/// `unfreeze`), an [`IncomingSession`] to those on an incoming one (`retrieve`, `can_finish`,
/// `finish`). It is valid for the duration of the callback only, which the lifetime `'a`
/// expresses. The orchestrator holds the session's lock across the callback, so the lookups take
/// no lock and may be called from it.
///
/// # Invariants
///
/// `ptr` is a session of direction `D` that the orchestrator passed to a callback that runs for
/// at least `'a`.
pub struct Session<'a, D: Direction> {
    ptr: *mut bindings::liveupdate_session,
    _callback: PhantomData<(&'a (), D)>,
}

/// The session of an outgoing file.
pub type OutgoingSession<'a> = Session<'a, Outgoing>;

/// The session of an incoming file.
pub type IncomingSession<'a> = Session<'a, Incoming>;

impl<D: Direction> Session<'_, D> {
    /// Creates a reference to the session the orchestrator passed to a callback.
    ///
    /// # Safety
    ///
    /// `ptr` must be the session, of direction `D`, handed to a callback that runs for at least
    /// the returned value's lifetime.
    pub unsafe fn from_raw(ptr: *mut bindings::liveupdate_session) -> Self {
        // INVARIANT: The caller guarantees that `ptr` is valid for the lifetime.
        Self {
            ptr,
            _callback: PhantomData,
        }
    }

    /// Returns the session as the C API names it.
    pub fn as_raw(&self) -> *mut bindings::liveupdate_session {
        self.ptr
    }
}

impl Session<'_, Outgoing> {
    /// Returns the token under which `file` is preserved in this session.
    ///
    /// Fails with [`ENOENT`] if `file` is not preserved in this session (not yet, or in another
    /// session). Called from `preserve`, a successful lookup records that the file being
    /// preserved depends on `file`: `file` is then unpreserved after it, and
    /// `LIVEUPDATE_SESSION_UNPRESERVE_FD` refuses to unpreserve `file` first ([`EBUSY`]);
    /// recording it may fail with [`ENOMEM`].
    // Inline: generated where it is used, in the orchestrator's crate and the handlers'.
    #[inline]
    pub fn token_of(&self, file: &File) -> Result<u64> {
        let mut token = 0;
        // SAFETY: By the type invariants, the session is valid; `file` is valid and `token` is
        // valid for writes.
        to_result(unsafe {
            bindings::liveupdate_get_token_outgoing(self.ptr, file.as_ptr(), &mut token)
        })?;
        Ok(token)
    }
}

impl Session<'_, Incoming> {
    /// Returns the file preserved under `token` in this session.
    ///
    /// From `retrieve`, a file not retrieved yet is retrieved now, with the rules of
    /// `LIVEUPDATE_SESSION_RETRIEVE_FD`: a later `RETRIEVE_FD` of `token` hands out the same file,
    /// and a failed retrieve is final (its error is returned again). From `can_finish` and
    /// `finish` only files already retrieved are returned (the sticky error of a failed
    /// retrieve, [`EBUSY`] for a file not retrieved). Fails with
    /// [`ENOENT`] if the session has no file `token`, and with [`EDEADLK`] if retrieving it
    /// needs the file being retrieved (a cycle).
    // Inline: generated where it is used, in the orchestrator's crate and the handlers'.
    #[inline]
    pub fn file(&self, token: u64) -> Result<ARef<File>> {
        let mut file = null_mut();
        // SAFETY: By the type invariants, the session is valid; `file` is valid for writes.
        to_result(unsafe { bindings::liveupdate_get_file_incoming(self.ptr, token, &mut file) })?;
        let file = NonNull::new(file).ok_or(EINVAL)?;
        // SAFETY: On success the orchestrator returns a file it holds a reference to for the
        // session's life, which outlasts this call; no fdget_pos region is involved.
        let file = unsafe { File::from_raw_file(file.as_ptr()) };
        // The C API hands out no reference of its own: take one.
        Ok(ARef::from(file))
    }
}

/// An incoming file of a handler, as the boot-time query reports it
/// ([`FileHandlerRegistration::incoming_files`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingFile {
    session: [c_char; crate::liveupdate::SESSION_NAME_LENGTH],
    token: u64,
    data: u64,
}

impl IncomingFile {
    /// Returns the name of the file's session, without its NUL.
    pub fn session_name(&self) -> &[u8] {
        field_bytes(&self.session)
    }

    /// Returns the file's token in its session.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Returns the handler's serialized data handle, as its `retrieve` will get it.
    pub fn data(&self) -> u64 {
        self.data
    }
}

/// What became of an incoming file's retrieve, as `can_finish` and `finish` are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetrieveStatus {
    /// Nobody retrieved the file.
    NotRetrieved,
    /// The file was retrieved.
    Retrieved,
    /// The handler's retrieve failed with this error, which is final.
    Failed(Error),
}

impl RetrieveStatus {
    /// Decodes the C API's `retrieve_status`: 0, a positive value, or a negative errno.
    pub fn from_c(status: c_int) -> Self {
        match status {
            0 => Self::NotRetrieved,
            s if s > 0 => Self::Retrieved,
            e => Self::Failed(Error::from_errno(e)),
        }
    }

    /// Encodes the status as the C API's `retrieve_status`.
    pub fn to_c(self) -> c_int {
        match self {
            Self::NotRetrieved => 0,
            Self::Retrieved => 1,
            Self::Failed(e) => e.to_errno(),
        }
    }
}

/// Returns a NUL-padded C string field without its padding.
fn field_bytes<const N: usize>(field: &[c_char; N]) -> &[u8] {
    // SAFETY: `c_char` and `u8` have the same size and alignment, and every value is valid.
    let bytes: &[u8; N] = unsafe { &*field.as_ptr().cast() };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(N);
    &bytes[..len]
}

/// Builds a NUL-padded C string field from `s`, which must be shorter than the field.
const fn compat_field<const N: usize>(s: &CStr) -> [c_char; N] {
    let s = s.to_bytes();
    crate::build_assert::build_assert!(s.len() < N);
    let mut out = [0 as c_char; N];
    let mut i = 0;
    while i < s.len() && i < N - 1 {
        out[i] = c_char::from_ne_bytes([s[i]]);
        i += 1;
    }
    out
}

/// Takes a reference on `module` unless it is being removed.
fn module_get(module: *mut bindings::module) -> bool {
    // SAFETY: `try_module_get()` accepts NULL (built-in code) and any live module; a handler or
    // FLB's owner module is live while it is registered.
    unsafe { bindings::try_module_get(module) }
}

/// Drops a reference taken by [`module_get`].
fn module_put(module: *mut bindings::module) {
    // SAFETY: The caller took this reference with `module_get`.
    unsafe { bindings::module_put(module) }
}

/// A registered file handler.
///
/// # Invariants
///
/// `ptr` points to a `struct liveupdate_file_handler` that stays valid and unchanged while it is
/// registered, whose `ops` has every mandatory operation (`can_preserve`, `preserve`,
/// `unpreserve`, `retrieve`, `finish`), and whose `compatible` is NUL-terminated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Handler {
    ptr: NonNull<bindings::liveupdate_file_handler>,
}

// SAFETY: The C API lets the core call a handler's operations from any thread.
unsafe impl Send for Handler {}
// SAFETY: As above.
unsafe impl Sync for Handler {}

impl Handler {
    /// Creates a reference to the handler at `ptr`.
    ///
    /// Fails with [`EINVAL`] if a mandatory operation is missing or the compatible string is not
    /// NUL-terminated.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid handler that stays valid and unchanged until the returned value
    /// and all its copies are dropped (for a registered handler: until it is unregistered).
    pub unsafe fn from_raw(ptr: *mut bindings::liveupdate_file_handler) -> Result<Self> {
        let ptr = NonNull::new(ptr).ok_or(EINVAL)?;
        // SAFETY: The caller guarantees that `ptr` is valid.
        let fh = unsafe { ptr.as_ref() };
        // SAFETY: `ops` of a valid handler is NULL or points to its operations table.
        let ops = unsafe { fh.ops.as_ref() }.ok_or(EINVAL)?;
        if ops.can_preserve.is_none()
            || ops.preserve.is_none()
            || ops.unpreserve.is_none()
            || ops.retrieve.is_none()
            || ops.finish.is_none()
        {
            return Err(EINVAL);
        }
        if !fh.compatible.contains(&0) {
            return Err(EINVAL);
        }
        // INVARIANT: Checked above; the caller guarantees validity and lifetime.
        Ok(Self { ptr })
    }

    /// Returns the raw handler, as the C API names it.
    pub fn as_raw(self) -> *mut bindings::liveupdate_file_handler {
        self.ptr.as_ptr()
    }

    fn fh(&self) -> &bindings::liveupdate_file_handler {
        // SAFETY: By the type invariants, the handler is valid.
        unsafe { self.ptr.as_ref() }
    }

    fn ops(&self) -> &bindings::liveupdate_file_ops {
        // SAFETY: By the type invariants, `ops` points to the handler's operations table.
        unsafe { &*self.fh().ops }
    }

    /// Returns the compatible string without its NUL padding.
    pub fn compatible(&self) -> &[u8] {
        field_bytes(&self.fh().compatible)
    }

    /// Returns the compatible string as its NUL-padded C field, as the handover ABI stores it.
    pub fn compatible_field(&self) -> [c_char; HANDLER_COMPAT_LENGTH] {
        self.fh().compatible
    }

    /// Returns the compatible string as a C string.
    pub fn compatible_cstr(&self) -> &CStr {
        // SAFETY: By the type invariants, `compatible` is NUL-terminated and unchanged.
        unsafe { CStr::from_char_ptr(self.fh().compatible.as_ptr()) }
    }

    /// Takes a reference on the handler's owner module; `false` if it is going away.
    pub fn module_get(&self) -> bool {
        module_get(self.ops().owner)
    }

    /// Drops a reference taken by [`Handler::module_get`].
    pub fn module_put(&self) {
        module_put(self.ops().owner)
    }

    fn args(
        &self,
        session: *mut bindings::liveupdate_session,
        file: Option<&File>,
        data: u64,
    ) -> bindings::liveupdate_file_op_args {
        bindings::liveupdate_file_op_args {
            handler: self.as_raw(),
            session,
            retrieve_status: 0,
            file: file.map_or(null_mut(), |f| f.as_ptr()),
            serialized_data: data,
            private_data: null_mut(),
        }
    }

    /// Asks the handler whether it can preserve `file`.
    pub fn can_preserve(&self, file: &File) -> bool {
        match self.ops().can_preserve {
            // SAFETY: The handler and `file` are valid for the duration of the call.
            Some(f) => unsafe { f(self.as_raw(), file.as_ptr()) },
            None => false,
        }
    }

    /// Preserves `file`: returns the handle of its serialized state and the handler's private
    /// data for it.
    pub fn preserve(
        &self,
        session: &OutgoingSession<'_>,
        file: &File,
    ) -> Result<(u64, HandlerPrivate)> {
        let mut args = self.args(session.as_raw(), Some(file), 0);
        if let Some(f) = self.ops().preserve {
            // SAFETY: `args` is valid and names a valid handler and file.
            to_result(unsafe { f(&mut args) })?;
        }
        Ok((args.serialized_data, HandlerPrivate(args.private_data)))
    }

    /// Undoes [`Handler::preserve`].
    pub fn unpreserve(
        &self,
        session: &OutgoingSession<'_>,
        file: &File,
        data: u64,
        private: HandlerPrivate,
    ) {
        let mut args = self.args(session.as_raw(), Some(file), data);
        args.private_data = private.0;
        if let Some(f) = self.ops().unpreserve {
            // SAFETY: `args` is valid and names a valid handler and file.
            unsafe { f(&mut args) };
        }
    }

    /// Freezes the preserved `file` just before kexec; returns its final serialized handle.
    pub fn freeze(
        &self,
        session: &OutgoingSession<'_>,
        file: &File,
        data: u64,
        private: HandlerPrivate,
    ) -> Result<u64> {
        let mut args = self.args(session.as_raw(), Some(file), data);
        args.private_data = private.0;
        if let Some(f) = self.ops().freeze {
            // SAFETY: `args` is valid and names a valid handler and file.
            to_result(unsafe { f(&mut args) })?;
        }
        Ok(args.serialized_data)
    }

    /// Undoes [`Handler::freeze`] when the kexec is aborted.
    pub fn unfreeze(
        &self,
        session: &OutgoingSession<'_>,
        file: &File,
        data: u64,
        private: HandlerPrivate,
    ) {
        let mut args = self.args(session.as_raw(), Some(file), data);
        args.private_data = private.0;
        if let Some(f) = self.ops().unfreeze {
            // SAFETY: `args` is valid and names a valid handler and file.
            unsafe { f(&mut args) };
        }
    }

    /// Recreates a file from the serialized handle `data` of the previous kernel.
    pub fn retrieve(&self, session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
        let mut args = self.args(session.as_raw(), None, data);
        if let Some(f) = self.ops().retrieve {
            // SAFETY: `args` is valid and names a valid handler.
            to_result(unsafe { f(&mut args) })?;
        }
        let file = NonNull::new(args.file).ok_or(EINVAL)?;
        // SAFETY: A successful `retrieve` hands over one reference to a new file. `File` is a
        // transparent wrapper of `struct file`.
        Ok(unsafe { ARef::from_raw(file.cast::<File>()) })
    }

    /// Asks the handler whether the incoming file may be finished now.
    pub fn can_finish(
        &self,
        session: &IncomingSession<'_>,
        file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    ) -> bool {
        let mut args = self.args(session.as_raw(), file, data);
        args.retrieve_status = status.to_c();
        match self.ops().can_finish {
            // SAFETY: `args` is valid and names a valid handler and, if any, a valid file.
            Some(f) => unsafe { f(&mut args) },
            None => true,
        }
    }

    /// Ends the life of an incoming file's preserved state.
    pub fn finish(
        &self,
        session: &IncomingSession<'_>,
        file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    ) {
        let mut args = self.args(session.as_raw(), file, data);
        args.retrieve_status = status.to_c();
        if let Some(f) = self.ops().finish {
            // SAFETY: `args` is valid and names a valid handler and, if any, a valid file.
            unsafe { f(&mut args) };
        }
    }

    /// Returns the identity of the object behind `file`; one object is preserved at most once.
    pub fn id(&self, file: &File) -> usize {
        match self.ops().get_id {
            // SAFETY: The file is valid for the duration of the call.
            Some(f) => unsafe { f(file.as_ptr()) },
            // CAST: Without `get_id`, the file itself is the object.
            None => file.as_ptr() as usize,
        }
    }

    /// Runs the in-kernel test's registration hook (`CONFIG_LIVEUPDATE_TEST`) on this handler.
    #[cfg(CONFIG_LIVEUPDATE_TEST)]
    pub fn test_register(&self) {
        // SAFETY: The handler is registered and valid.
        unsafe { bindings::liveupdate_test_register(self.as_raw()) };
    }
}

/// A registered FLB.
///
/// # Invariants
///
/// `ptr` points to a `struct liveupdate_flb` that stays valid and unchanged while it is
/// registered or in use, whose `ops` has every operation, and whose `compatible` is
/// NUL-terminated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Flb {
    ptr: NonNull<bindings::liveupdate_flb>,
}

// SAFETY: The C API lets the core call an FLB's operations from any thread.
unsafe impl Send for Flb {}
// SAFETY: As above.
unsafe impl Sync for Flb {}

impl Flb {
    /// Creates a reference to the FLB at `ptr`.
    ///
    /// Fails with [`EINVAL`] if an operation is missing or the compatible string is not
    /// NUL-terminated.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid FLB that stays valid and unchanged until the returned value and
    /// all its copies are dropped.
    pub unsafe fn from_raw(ptr: *mut bindings::liveupdate_flb) -> Result<Self> {
        let ptr = NonNull::new(ptr).ok_or(EINVAL)?;
        // SAFETY: The caller guarantees that `ptr` is valid.
        let flb = unsafe { ptr.as_ref() };
        // SAFETY: `ops` of a valid FLB is NULL or points to its operations table.
        let ops = unsafe { flb.ops.as_ref() }.ok_or(EINVAL)?;
        if ops.preserve.is_none()
            || ops.unpreserve.is_none()
            || ops.retrieve.is_none()
            || ops.finish.is_none()
        {
            return Err(EINVAL);
        }
        if !flb.compatible.contains(&0) {
            return Err(EINVAL);
        }
        // INVARIANT: Checked above; the caller guarantees validity and lifetime.
        Ok(Self { ptr })
    }

    /// Returns the raw FLB, as the C API names it.
    pub fn as_raw(self) -> *mut bindings::liveupdate_flb {
        self.ptr.as_ptr()
    }

    fn flb(&self) -> &bindings::liveupdate_flb {
        // SAFETY: By the type invariants, the FLB is valid.
        unsafe { self.ptr.as_ref() }
    }

    fn ops(&self) -> &bindings::liveupdate_flb_ops {
        // SAFETY: By the type invariants, `ops` points to the FLB's operations table.
        unsafe { &*self.flb().ops }
    }

    /// Returns the compatible string without its NUL padding.
    pub fn compatible(&self) -> &[u8] {
        field_bytes(&self.flb().compatible)
    }

    /// Returns the compatible string as its NUL-padded C field, as the handover ABI stores it.
    pub fn compatible_field(&self) -> [c_char; FLB_COMPAT_LENGTH] {
        self.flb().compatible
    }

    /// Takes a reference on the FLB's owner module; `false` if it is going away.
    pub fn module_get(&self) -> bool {
        module_get(self.ops().owner)
    }

    /// Drops a reference taken by [`Flb::module_get`].
    pub fn module_put(&self) {
        module_put(self.ops().owner)
    }

    fn args(&self, data: u64, obj: FlbObject) -> bindings::liveupdate_flb_op_args {
        bindings::liveupdate_flb_op_args {
            flb: self.as_raw(),
            data,
            obj: obj.0,
        }
    }

    /// Creates the outgoing global state: returns its serialized handle and live object.
    pub fn preserve(&self) -> Result<(u64, FlbObject)> {
        let mut args = self.args(0, FlbObject::NONE);
        if let Some(f) = self.ops().preserve {
            // SAFETY: `args` is valid and names a valid FLB.
            to_result(unsafe { f(&mut args) })?;
        }
        Ok((args.data, FlbObject(args.obj)))
    }

    /// Drops the outgoing global state when its last file is unpreserved.
    pub fn unpreserve(&self, data: u64, obj: FlbObject) {
        let mut args = self.args(data, obj);
        if let Some(f) = self.ops().unpreserve {
            // SAFETY: `args` is valid and names a valid FLB.
            unsafe { f(&mut args) };
        }
    }

    /// Recreates the incoming global state from the previous kernel's handle `data`.
    pub fn retrieve(&self, data: u64) -> Result<FlbObject> {
        let mut args = self.args(data, FlbObject::NONE);
        if let Some(f) = self.ops().retrieve {
            // SAFETY: `args` is valid and names a valid FLB.
            to_result(unsafe { f(&mut args) })?;
        }
        Ok(FlbObject(args.obj))
    }

    /// Ends the incoming global state when its last file is finished.
    pub fn finish(&self, obj: FlbObject) {
        let mut args = self.args(0, obj);
        if let Some(f) = self.ops().finish {
            // SAFETY: `args` is valid and names a valid FLB.
            unsafe { f(&mut args) };
        }
    }
}

/// A file handler written in Rust, registered with [`FileHandlerRegistration`].
///
/// The orchestrator calls it like any handler of the C API, with the same ordering rules:
/// [`FileHandler::can_preserve`] is asked in registration order and the first handler that
/// accepts a file preserves it; `unpreserve` (when a session is closed) and `finish` run
/// last-preserved first, and `LIVEUPDATE_SESSION_UNPRESERVE_FD` unpreserves one file that no
/// other file depends on; `freeze` runs
/// first-preserved first at reboot, and `unfreeze` undoes it in reverse if the reboot is
/// aborted; `retrieve` runs in any order, once per file.
///
/// `data`, the `u64` returned by [`FileHandler::preserve`] and [`FileHandler::freeze`], is the
/// handle of the file's serialized state that the next kernel gets back in
/// [`FileHandler::retrieve`]; usually the physical address of a preserved block.
#[vtable]
pub trait FileHandler: Sized + Send + Sync + 'static {
    /// The compatible string naming the handler's serialized format, at most 47 bytes.
    const COMPATIBLE: &'static CStr;

    /// What the handler keeps for a preserved file until it is unpreserved or the kernel
    /// reboots.
    type Private: ForeignOwnable + Send + Sync;

    /// Returns whether the handler can preserve `file`; must be cheap.
    fn can_preserve(file: &File) -> bool;

    /// Preserves `file` in `session`: returns the handle of its serialized state and the
    /// private data. A file this one depends on is found with [`OutgoingSession::token_of`],
    /// which records the dependency.
    fn preserve(session: &OutgoingSession<'_>, file: &File) -> Result<(u64, Self::Private)>;

    /// Undoes [`FileHandler::preserve`]: the file was unpreserved, or its session closed, before
    /// reboot. Files that depend on it were unpreserved before.
    fn unpreserve(session: &OutgoingSession<'_>, file: &File, data: u64, private: Self::Private);

    /// Makes the preserved state final just before kexec; returns the final handle.
    fn freeze(
        _session: &OutgoingSession<'_>,
        _file: &File,
        _data: u64,
        _private: <Self::Private as ForeignOwnable>::Borrowed<'_>,
    ) -> Result<u64> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Undoes [`FileHandler::freeze`] when the reboot is aborted.
    fn unfreeze(
        _session: &OutgoingSession<'_>,
        _file: &File,
        _data: u64,
        _private: <Self::Private as ForeignOwnable>::Borrowed<'_>,
    ) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Recreates, in the next kernel, the file whose serialized state is `data`. A file this one
    /// depends on is retrieved with [`IncomingSession::file`].
    fn retrieve(session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>>;

    /// Returns whether the incoming file may be finished now.
    fn can_finish(
        _session: &IncomingSession<'_>,
        _file: Option<&File>,
        _data: u64,
        _status: RetrieveStatus,
    ) -> bool {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Ends the life of the incoming file's preserved state; `file` is the retrieved file, if
    /// any. Files preserved after this one were finished before.
    fn finish(
        session: &IncomingSession<'_>,
        file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    );

    /// Returns the identity of the object behind `file`: an object is preserved at most once.
    /// By default, the file itself.
    fn get_id(_file: &File) -> usize {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The registration of a [`FileHandler`]: registered while this value lives.
///
/// # Invariants
///
/// `inner` is a `struct liveupdate_file_handler` whose operations are those of `T`, registered
/// with `liveupdate_register_file_handler()` until the value is dropped.
#[pin_data(PinnedDrop)]
pub struct FileHandlerRegistration<T: FileHandler> {
    #[pin]
    inner: Opaque<bindings::liveupdate_file_handler>,
    _t: PhantomData<T>,
}

// SAFETY: The registration may be dropped, that is unregistered, from any thread.
unsafe impl<T: FileHandler> Send for FileHandlerRegistration<T> {}
// SAFETY: Shared references give no access to the handler.
unsafe impl<T: FileHandler> Sync for FileHandlerRegistration<T> {}

impl<T: FileHandler> FileHandlerRegistration<T> {
    /// Registers `T`.
    ///
    /// Fails with [`EOPNOTSUPP`] when live update is disabled and [`EEXIST`] when a handler with
    /// the same compatible string is registered.
    pub fn register() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::liveupdate_file_handler| {
                let mut fh: bindings::liveupdate_file_handler = pin_init::zeroed();
                fh.ops = &FileHandlerVTable::<T>::OPS;
                fh.compatible = FileHandlerVTable::<T>::COMPATIBLE;
                // SAFETY: The initializer can write to the provided `slot`.
                unsafe { slot.write(fh) };
                // SAFETY: `slot` holds a valid handler that stays pinned and unchanged until
                // `drop` unregisters it.
                // INVARIANT: On success the handler is registered.
                to_result(unsafe { bindings::liveupdate_register_file_handler(slot) })
            }),
            _t: PhantomData,
        })
    }
}

impl<T: FileHandler> FileHandlerRegistration<T> {
    /// Returns the handler's incoming files that are not finished: their session, token and data
    /// handle, without retrieving anything (`liveupdate_fd_data_query()`).
    ///
    /// For a subsystem that must act at boot, before userspace retrieves its files; works from an
    /// initcall. Must not be called from one of the handler's callbacks, and blocks once the
    /// reboot into the next kernel has serialized the sessions.
    pub fn incoming_files(&self) -> Result<impl Iterator<Item = IncomingFile>> {
        let fh = self.inner.get();
        let mut count: c_long = 0;
        // SAFETY: The handler is registered; `count` is valid and 0, so `fds` may be NULL.
        let r = unsafe { bindings::liveupdate_fd_data_query(fh, null_mut(), &mut count) };
        let mut fds = KVec::new();
        // More files cannot appear: the incoming files are only ever finished.
        if r == ENOSPC.to_errno() {
            let n = usize::try_from(count).map_err(|_| EINVAL)?;
            fds = KVec::from_elem(pin_init::zeroed::<bindings::liveupdate_fd>(), n, GFP_KERNEL)?;
            // SAFETY: The handler is registered; `fds` has room for `count` entries.
            to_result(unsafe {
                bindings::liveupdate_fd_data_query(fh, fds.as_mut_ptr(), &mut count)
            })?;
            fds.truncate(usize::try_from(count).map_err(|_| EINVAL)?);
        } else {
            to_result(r)?;
        }
        Ok(fds.into_iter().map(|fd| IncomingFile {
            session: fd.session,
            token: fd.token,
            data: fd.data,
        }))
    }
}

#[pinned_drop]
impl<T: FileHandler> PinnedDrop for FileHandlerRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants, the handler is registered.
        unsafe { bindings::liveupdate_unregister_file_handler(self.inner.get()) };
    }
}

/// The C operations of a [`FileHandler`].
struct FileHandlerVTable<T: FileHandler>(PhantomData<T>);

impl<T: FileHandler> FileHandlerVTable<T> {
    const COMPATIBLE: [c_char; HANDLER_COMPAT_LENGTH] = compat_field(T::COMPATIBLE);

    const OPS: bindings::liveupdate_file_ops = bindings::liveupdate_file_ops {
        can_preserve: Some(Self::can_preserve),
        preserve: Some(Self::preserve),
        unpreserve: Some(Self::unpreserve),
        freeze: if T::HAS_FREEZE {
            Some(Self::freeze)
        } else {
            None
        },
        unfreeze: if T::HAS_UNFREEZE {
            Some(Self::unfreeze)
        } else {
            None
        },
        retrieve: Some(Self::retrieve),
        can_finish: if T::HAS_CAN_FINISH {
            Some(Self::can_finish)
        } else {
            None
        },
        finish: Some(Self::finish),
        get_id: if T::HAS_GET_ID {
            Some(Self::get_id)
        } else {
            None
        },
        owner: crate::module::this_module::<T::OwnerModule>().as_ptr(),
    };

    /// # Safety
    ///
    /// `file` must be valid for the duration of the call.
    unsafe extern "C" fn can_preserve(
        _fh: *mut bindings::liveupdate_file_handler,
        file: *mut bindings::file,
    ) -> bool {
        // SAFETY: The caller guarantees that `file` is valid; the orchestrator holds no
        // fdget_pos region on it.
        T::can_preserve(unsafe { File::from_raw_file(file) })
    }

    /// # Safety
    ///
    /// `args` must be valid and name a valid file and the valid outgoing session it is preserved
    /// in.
    unsafe extern "C" fn preserve(args: *mut bindings::liveupdate_file_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid and not aliased during the call.
        let args = unsafe { &mut *args };
        // SAFETY: The caller guarantees that `args.file` is valid.
        let file = unsafe { File::from_raw_file(args.file) };
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { OutgoingSession::from_raw(args.session) };
        match T::preserve(&session, file) {
            Ok((data, private)) => {
                args.serialized_data = data;
                args.private_data = private.into_foreign();
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid and name a valid file preserved by `T`, with the private data its
    /// `preserve` returned, and the valid outgoing session it is preserved in.
    unsafe extern "C" fn unpreserve(args: *mut bindings::liveupdate_file_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &mut *args };
        // SAFETY: The caller guarantees that `args.file` is valid.
        let file = unsafe { File::from_raw_file(args.file) };
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { OutgoingSession::from_raw(args.session) };
        // SAFETY: `private_data` came from `into_foreign()` in `preserve`; unpreserve is its last
        // use.
        let private = unsafe { T::Private::from_foreign(args.private_data) };
        T::unpreserve(&session, file, args.serialized_data, private);
    }

    /// # Safety
    ///
    /// As for [`Self::unpreserve`].
    unsafe extern "C" fn freeze(args: *mut bindings::liveupdate_file_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &mut *args };
        // SAFETY: The caller guarantees that `args.file` is valid.
        let file = unsafe { File::from_raw_file(args.file) };
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { OutgoingSession::from_raw(args.session) };
        // SAFETY: `private_data` came from `into_foreign()` in `preserve` and is not released
        // before `unpreserve`.
        let private = unsafe { T::Private::borrow(args.private_data) };
        match T::freeze(&session, file, args.serialized_data, private) {
            Ok(data) => {
                args.serialized_data = data;
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::unpreserve`].
    unsafe extern "C" fn unfreeze(args: *mut bindings::liveupdate_file_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &mut *args };
        // SAFETY: The caller guarantees that `args.file` is valid.
        let file = unsafe { File::from_raw_file(args.file) };
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { OutgoingSession::from_raw(args.session) };
        // SAFETY: As in `freeze`.
        let private = unsafe { T::Private::borrow(args.private_data) };
        T::unfreeze(&session, file, args.serialized_data, private);
    }

    /// # Safety
    ///
    /// `args` must be valid and name the valid incoming session of the file.
    unsafe extern "C" fn retrieve(args: *mut bindings::liveupdate_file_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &mut *args };
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { IncomingSession::from_raw(args.session) };
        match T::retrieve(&session, args.serialized_data) {
            Ok(file) => {
                // The reference is handed over to the orchestrator.
                args.file = ARef::into_raw(file).as_ptr().cast();
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid and name the valid incoming session of the file; `args.file` must be
    /// NULL or valid.
    unsafe extern "C" fn can_finish(args: *mut bindings::liveupdate_file_op_args) -> bool {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        // SAFETY: The caller guarantees that a non-NULL `args.file` is valid.
        let file = (!args.file.is_null()).then(|| unsafe { File::from_raw_file(args.file) });
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { IncomingSession::from_raw(args.session) };
        let status = RetrieveStatus::from_c(args.retrieve_status);
        T::can_finish(&session, file, args.serialized_data, status)
    }

    /// # Safety
    ///
    /// As for [`Self::can_finish`].
    unsafe extern "C" fn finish(args: *mut bindings::liveupdate_file_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        // SAFETY: The caller guarantees that a non-NULL `args.file` is valid.
        let file = (!args.file.is_null()).then(|| unsafe { File::from_raw_file(args.file) });
        // SAFETY: The caller guarantees that `args.session` is valid during the call.
        let session = unsafe { IncomingSession::from_raw(args.session) };
        let status = RetrieveStatus::from_c(args.retrieve_status);
        T::finish(&session, file, args.serialized_data, status);
    }

    /// # Safety
    ///
    /// `file` must be valid for the duration of the call.
    unsafe extern "C" fn get_id(file: *mut bindings::file) -> c_ulong {
        // SAFETY: The caller guarantees that `file` is valid.
        T::get_id(unsafe { File::from_raw_file(file) })
    }
}

impl FlbObject {
    /// Wraps an object pointer of the C API; the orchestrator never dereferences it.
    pub fn new(ptr: *mut c_void) -> Self {
        Self(ptr)
    }
}

/// File-lifecycle-bound global state written in Rust, registered with [`FlbRegistration`].
///
/// `preserve` runs when the first file of a handler the FLB is registered with is preserved
/// and `unpreserve` when the last one is unpreserved; in the next kernel, `retrieve` runs on
/// first use and `finish` when the last file that needed it is finished.
pub trait FlbOps: Sized + Send + Sync + 'static {
    /// The compatible string naming the FLB's serialized format, at most 47 bytes.
    const COMPATIBLE: &'static CStr;

    /// Creates the outgoing state: returns its serialized handle and live object.
    fn preserve() -> Result<(u64, FlbObject)>;

    /// Drops the outgoing state.
    fn unpreserve(data: u64, obj: FlbObject);

    /// Recreates the incoming state from the previous kernel's handle.
    fn retrieve(data: u64) -> Result<FlbObject>;

    /// Ends the incoming state.
    fn finish(obj: FlbObject);
}

/// The registration of [`FlbOps`] `T` with one file handler: registered while this value lives.
///
/// # Invariants
///
/// `inner` is a `struct liveupdate_flb` with the operations of `T`, registered with the file
/// handler `handler` until the value is dropped.
#[pin_data(PinnedDrop)]
pub struct FlbRegistration<T: FlbOps> {
    #[pin]
    inner: Opaque<bindings::liveupdate_flb>,
    handler: *mut bindings::liveupdate_file_handler,
    _t: PhantomData<T>,
}

// SAFETY: The registration may be used and dropped from any thread, as the C API allows.
unsafe impl<T: FlbOps> Send for FlbRegistration<T> {}
// SAFETY: The C API's FLB functions may be called concurrently.
unsafe impl<T: FlbOps> Sync for FlbRegistration<T> {}

impl<T: FlbOps> FlbRegistration<T> {
    /// Registers `T` with the registered handler `handler`, which must outlive the returned
    /// registration.
    pub fn register<H: FileHandler>(
        handler: Pin<&FileHandlerRegistration<H>>,
    ) -> impl PinInit<Self, Error> + '_ {
        let fh = handler.inner.get();
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::liveupdate_flb| {
                let mut flb: bindings::liveupdate_flb = pin_init::zeroed();
                flb.ops = &FlbVTable::<T>::OPS;
                flb.compatible = FlbVTable::<T>::COMPATIBLE;
                // SAFETY: The initializer can write to the provided `slot`.
                unsafe { slot.write(flb) };
                // SAFETY: `fh` is a registered handler and `slot` a valid FLB that stays pinned
                // and unchanged until `drop` unregisters it.
                // INVARIANT: On success the FLB is registered with `fh`.
                to_result(unsafe { bindings::liveupdate_register_flb(fh, slot) })
            }),
            handler: fh,
            _t: PhantomData,
        })
    }

    /// Takes a reference on the incoming object, retrieving it on first use.
    pub fn get_incoming(&self) -> Result<FlbObject> {
        let mut obj = null_mut();
        // SAFETY: The FLB is registered and `obj` is valid for writes.
        to_result(unsafe { bindings::liveupdate_flb_get_incoming(self.inner.get(), &mut obj) })?;
        Ok(FlbObject(obj))
    }

    /// Drops a reference taken by [`FlbRegistration::get_incoming`].
    pub fn put_incoming(&self) {
        // SAFETY: The FLB is registered.
        unsafe { bindings::liveupdate_flb_put_incoming(self.inner.get()) };
    }

    /// Takes a reference on the outgoing object; [`ENOENT`] if no file needs it.
    pub fn get_outgoing(&self) -> Result<FlbObject> {
        let mut obj = null_mut();
        // SAFETY: The FLB is registered and `obj` is valid for writes.
        to_result(unsafe { bindings::liveupdate_flb_get_outgoing(self.inner.get(), &mut obj) })?;
        Ok(FlbObject(obj))
    }

    /// Drops a reference taken by [`FlbRegistration::get_outgoing`].
    pub fn put_outgoing(&self) {
        // SAFETY: The FLB is registered.
        unsafe { bindings::liveupdate_flb_put_outgoing(self.inner.get()) };
    }
}

#[pinned_drop]
impl<T: FlbOps> PinnedDrop for FlbRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants, the FLB is registered with `handler`.
        unsafe { bindings::liveupdate_unregister_flb(self.handler, self.inner.get()) };
    }
}

/// The C operations of [`FlbOps`] `T`.
struct FlbVTable<T: FlbOps>(PhantomData<T>);

impl<T: FlbOps> FlbVTable<T> {
    const COMPATIBLE: [c_char; FLB_COMPAT_LENGTH] = compat_field(T::COMPATIBLE);

    const OPS: bindings::liveupdate_flb_ops = bindings::liveupdate_flb_ops {
        preserve: Some(Self::preserve),
        unpreserve: Some(Self::unpreserve),
        retrieve: Some(Self::retrieve),
        finish: Some(Self::finish),
        owner: core::ptr::null_mut(),
    };

    /// # Safety
    ///
    /// `args` must be valid.
    unsafe extern "C" fn preserve(args: *mut bindings::liveupdate_flb_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid and not aliased during the call.
        let args = unsafe { &mut *args };
        match T::preserve() {
            Ok((data, obj)) => {
                args.data = data;
                args.obj = obj.0;
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid.
    unsafe extern "C" fn unpreserve(args: *mut bindings::liveupdate_flb_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        T::unpreserve(args.data, FlbObject(args.obj));
    }

    /// # Safety
    ///
    /// `args` must be valid.
    unsafe extern "C" fn retrieve(args: *mut bindings::liveupdate_flb_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid and not aliased during the call.
        let args = unsafe { &mut *args };
        match T::retrieve(args.data) {
            Ok(obj) => {
                args.obj = obj.0;
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid.
    unsafe extern "C" fn finish(args: *mut bindings::liveupdate_flb_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        T::finish(FlbObject(args.obj));
    }
}
