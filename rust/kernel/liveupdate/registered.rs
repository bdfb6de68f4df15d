// SPDX-License-Identifier: GPL-2.0

//! The orchestrator's view of registered file handlers and FLBs.
//!
//! C header: [`include/linux/liveupdate.h`](srctree/include/linux/liveupdate.h)
//!
//! A file handler (`struct liveupdate_file_handler`) knows how to preserve one kind of file; an
//! FLB (`struct liveupdate_flb`, file-lifecycle-bound data) is global state that lives as long as
//! at least one file of its handlers is preserved. Both are owned by their registrant; the
//! orchestrator (`kernel/liveupdate/`) gets them through the C registration functions and keeps
//! [`Handler`] and [`Flb`] references to them, which call their operations with the argument
//! conventions of the C API. The registrant promises that they stay valid until they are
//! unregistered; the orchestrator's unregistration waits until it no longer uses them.
//!
//! This module is the orchestrator's side of the C API, and so takes and gives the C types.
//! Handlers and FLBs written in Rust use [`super::handler`] instead.

use super::{
    abi::{
        FLB_COMPAT_LENGTH,
        HANDLER_COMPAT_LENGTH, //
    },
    handler::{
        IncomingSession,
        OutgoingSession,
        RetrieveStatus, //
    },
};
use crate::{
    bindings,
    error::to_result,
    fs::File,
    prelude::*,
    sync::aref::ARef, //
};
use core::ptr::{
    null_mut,
    NonNull, //
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

/// Returns a NUL-padded C string field without its padding.
pub(super) fn field_bytes<const N: usize>(field: &[c_char; N]) -> &[u8] {
    // SAFETY: `c_char` and `u8` have the same size and alignment, and every value is valid.
    let bytes: &[u8; N] = unsafe { &*field.as_ptr().cast() };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(N);
    &bytes[..len]
}

/// A reference on the owner module of a handler or FLB, dropped with the value.
///
/// # Invariants
///
/// `module` is NULL (built-in code) or a module on which this value holds a reference.
pub struct ModuleRef {
    module: *mut bindings::module,
}

// SAFETY: A module reference may be dropped from any thread.
unsafe impl Send for ModuleRef {}
// SAFETY: Shared references give no access to the module.
unsafe impl Sync for ModuleRef {}

impl ModuleRef {
    /// Takes a reference on `module` unless it is being removed.
    ///
    /// # Safety
    ///
    /// `module` must be NULL or a live module (the owner of a registered handler or FLB).
    unsafe fn try_get(module: *mut bindings::module) -> Option<Self> {
        // SAFETY: `try_module_get()` accepts NULL and, by the caller's guarantee, `module` is
        // live.
        // INVARIANT: On success the reference is held.
        unsafe { bindings::try_module_get(module) }.then_some(Self { module })
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, this value holds a reference on `module` (or it is
        // NULL, which `module_put()` accepts).
        unsafe { bindings::module_put(self.module) }
    }
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

    /// Takes a reference on the handler's owner module; `None` if it is going away.
    pub fn try_module_get(&self) -> Option<ModuleRef> {
        // SAFETY: The owner of a registered handler is NULL or live: it unregisters the handler
        // before it goes away.
        unsafe { ModuleRef::try_get(self.ops().owner) }
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

    /// Takes a reference on the FLB's owner module; `None` if it is going away.
    pub fn try_module_get(&self) -> Option<ModuleRef> {
        // SAFETY: The owner of a registered FLB is NULL or live: it unregisters the FLB before it
        // goes away.
        unsafe { ModuleRef::try_get(self.ops().owner) }
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

/// Turns the session pointer the orchestrator hands to an outgoing file's callbacks into the
/// session of the handler API.
///
/// # Safety
///
/// `ptr` must be an outgoing session valid for the duration of a callback that runs for at least
/// `'a`, whose lookups (`liveupdate_get_token_outgoing()`) accept it.
pub unsafe fn outgoing_session<'a>(ptr: *mut bindings::liveupdate_session) -> OutgoingSession<'a> {
    // SAFETY: As the caller guarantees.
    unsafe { OutgoingSession::from_raw(ptr) }
}

/// Turns the session pointer the orchestrator hands to an incoming file's callbacks into the
/// session of the handler API.
///
/// # Safety
///
/// As for [`outgoing_session`], for an incoming session (`liveupdate_get_file_incoming()`).
pub unsafe fn incoming_session<'a>(ptr: *mut bindings::liveupdate_session) -> IncomingSession<'a> {
    // SAFETY: As the caller guarantees.
    unsafe { IncomingSession::from_raw(ptr) }
}
