// SPDX-License-Identifier: GPL-2.0

//! File handlers and FLBs written in Rust.
//!
//! C header: [`include/linux/liveupdate.h`](srctree/include/linux/liveupdate.h)
//!
//! A file handler knows how to preserve one kind of file across a live update; it implements
//! [`FileHandler`] and registers with [`FileHandlerRegistration`]. An FLB (file-lifecycle-bound
//! data) is global state that lives as long as at least one file of its handler is preserved; it
//! implements [`FlbOps`] and registers with [`FlbRegistration`].
//!
//! # Lifetimes
//!
//! The orchestrator calls a handler for as long as it has files: preserved ones until they are
//! unpreserved (or the kernel reboots), incoming ones until they are finished. Each such file
//! holds a reference on the handler's module (`THIS_MODULE` of the `module!` that implements
//! it), so that a module with preserved files cannot be removed; the same holds for an FLB with
//! an outgoing or incoming object. Dropping a registration unregisters it: no new file can use
//! it, and the drop waits until the orchestrator no longer uses it. An [`FlbRegistration`] keeps
//! its handler's registration alive.

use crate::{
    bindings,
    error::{
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    fs::File,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
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

use super::{
    abi::{
        FLB_COMPAT_LENGTH,
        HANDLER_COMPAT_LENGTH, //
    },
    registered::field_bytes,
};

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
    pub(super) unsafe fn from_raw(ptr: *mut bindings::liveupdate_session) -> Self {
        // INVARIANT: The caller guarantees that `ptr` is valid for the lifetime.
        Self {
            ptr,
            _callback: PhantomData,
        }
    }

    /// Returns the session as the C API names it.
    pub(super) fn as_raw(&self) -> *mut bindings::liveupdate_session {
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
    pub(super) fn from_c(status: c_int) -> Self {
        match status {
            0 => Self::NotRetrieved,
            s if s > 0 => Self::Retrieved,
            e => Self::Failed(Error::from_errno(e)),
        }
    }

    /// Encodes the status as the C API's `retrieve_status`.
    pub(super) fn to_c(self) -> c_int {
        match self {
            Self::NotRetrieved => 0,
            Self::Retrieved => 1,
            Self::Failed(e) => e.to_errno(),
        }
    }
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
/// Dropping it unregisters the handler and waits until the orchestrator no longer uses it: until
/// every file it preserved is unpreserved and every incoming file it restored is finished. A
/// handler in a module never waits there, as its files pin the module (see the module
/// documentation).
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
    /// initcall. Must not be called from one of the handler's callbacks.
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

/// File-lifecycle-bound global state written in Rust, registered with [`FlbRegistration`].
///
/// `preserve` runs when the first file of the handler the FLB is registered with is preserved
/// and `unpreserve` when the last one is unpreserved; in the next kernel, `retrieve` runs on
/// first use and `finish` when the last file that needed it is finished. The object they create
/// is owned by the orchestrator in between; the FLB's users borrow it with
/// [`FlbRegistration::outgoing`] and [`FlbRegistration::incoming`].
#[vtable]
pub trait FlbOps: Sized + Send + Sync + 'static {
    /// The compatible string naming the FLB's serialized format, at most 47 bytes.
    const COMPATIBLE: &'static CStr;

    /// The live object of the FLB's state.
    type Object: ForeignOwnable + Send + Sync;

    /// Creates the outgoing state: returns its serialized handle and live object.
    fn preserve() -> Result<(u64, Self::Object)>;

    /// Drops the outgoing state.
    fn unpreserve(data: u64, obj: Self::Object);

    /// Recreates the incoming state from the previous kernel's handle.
    fn retrieve(data: u64) -> Result<Self::Object>;

    /// Ends the incoming state.
    fn finish(obj: Self::Object);
}

/// The registration of [`FlbOps`] `T` with the file handler `H`: registered while this value
/// lives.
///
/// It holds a reference to the handler's registration, which stays registered as long. Dropping
/// it unregisters the FLB and waits until the orchestrator no longer uses it (no file of `H`
/// preserved or unfinished, no borrowed object).
///
/// # Invariants
///
/// `inner` is a `struct liveupdate_flb` with the operations of `T`, registered with `handler`
/// until the value is dropped.
#[pin_data(PinnedDrop)]
pub struct FlbRegistration<T: FlbOps, H: FileHandler> {
    #[pin]
    inner: Opaque<bindings::liveupdate_flb>,
    handler: Arc<FileHandlerRegistration<H>>,
    _t: PhantomData<T>,
}

// SAFETY: The registration may be used and dropped from any thread, as the C API allows.
unsafe impl<T: FlbOps, H: FileHandler> Send for FlbRegistration<T, H> {}
// SAFETY: The C API's FLB functions may be called concurrently.
unsafe impl<T: FlbOps, H: FileHandler> Sync for FlbRegistration<T, H> {}

impl<T: FlbOps, H: FileHandler> FlbRegistration<T, H> {
    /// Registers `T` with the registered handler `handler`.
    ///
    /// Fails with [`EOPNOTSUPP`] if live update is disabled, [`EEXIST`] if another FLB has the
    /// same compatible string and [`ENOSPC`] beyond 63 FLBs.
    pub fn register(handler: Arc<FileHandlerRegistration<H>>) -> impl PinInit<Self, Error> {
        let fh = handler.inner.get();
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::liveupdate_flb| {
                let mut flb: bindings::liveupdate_flb = pin_init::zeroed();
                flb.ops = &FlbVTable::<T>::OPS;
                flb.compatible = FlbVTable::<T>::COMPATIBLE;
                // SAFETY: The initializer can write to the provided `slot`.
                unsafe { slot.write(flb) };
                // SAFETY: `fh` is a registered handler, kept registered by `handler`, and `slot`
                // a valid FLB that stays pinned and unchanged until `drop` unregisters it.
                // INVARIANT: On success the FLB is registered with `fh`.
                to_result(unsafe { bindings::liveupdate_register_flb(fh, slot) })
            }),
            handler,
            _t: PhantomData,
        })
    }

    /// Borrows the incoming object, retrieving it on first use; the borrow holds a reference
    /// that keeps the object until it is dropped.
    pub fn incoming(&self) -> Result<FlbBorrow<'_, T, H, true>> {
        let mut obj = null_mut();
        // SAFETY: The FLB is registered and `obj` is valid for writes.
        to_result(unsafe { bindings::liveupdate_flb_get_incoming(self.inner.get(), &mut obj) })?;
        // INVARIANT: The reference was taken.
        Ok(FlbBorrow { reg: self, obj })
    }

    /// Borrows the outgoing object; [`ENOENT`] if no file needs it.
    pub fn outgoing(&self) -> Result<FlbBorrow<'_, T, H, false>> {
        let mut obj = null_mut();
        // SAFETY: The FLB is registered and `obj` is valid for writes.
        to_result(unsafe { bindings::liveupdate_flb_get_outgoing(self.inner.get(), &mut obj) })?;
        // INVARIANT: The reference was taken.
        Ok(FlbBorrow { reg: self, obj })
    }
}

/// A borrow of an FLB's incoming (`INCOMING`) or outgoing object.
///
/// # Invariants
///
/// The value holds a reference on the FLB's incoming or outgoing state, whose object is `obj`,
/// made by `T`'s `retrieve` or `preserve` with `into_foreign()`.
pub struct FlbBorrow<'a, T: FlbOps, H: FileHandler, const INCOMING: bool> {
    reg: &'a FlbRegistration<T, H>,
    obj: *mut c_void,
}

impl<T: FlbOps, H: FileHandler, const INCOMING: bool> FlbBorrow<'_, T, H, INCOMING> {
    /// Returns the object.
    pub fn get(&self) -> <T::Object as ForeignOwnable>::Borrowed<'_> {
        // SAFETY: By the type invariants, `obj` came from `into_foreign()` and the reference held
        // keeps the orchestrator from releasing it while `self` lives.
        unsafe { T::Object::borrow(self.obj) }
    }
}

impl<T: FlbOps, H: FileHandler, const INCOMING: bool> Drop for FlbBorrow<'_, T, H, INCOMING> {
    fn drop(&mut self) {
        let flb = self.reg.inner.get();
        if INCOMING {
            // SAFETY: The FLB is registered and, by the type invariants, this value holds a
            // reference on its incoming state.
            unsafe { bindings::liveupdate_flb_put_incoming(flb) };
        } else {
            // SAFETY: As above, for the outgoing state.
            unsafe { bindings::liveupdate_flb_put_outgoing(flb) };
        }
    }
}

#[pinned_drop]
impl<T: FlbOps, H: FileHandler> PinnedDrop for FlbRegistration<T, H> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants, the FLB is registered with the handler, which `handler`
        // keeps registered.
        unsafe { bindings::liveupdate_unregister_flb(self.handler.inner.get(), self.inner.get()) };
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
        owner: crate::module::this_module::<T::OwnerModule>().as_ptr(),
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
                args.obj = obj.into_foreign();
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid, with the object `preserve` made, which is not used afterwards.
    unsafe extern "C" fn unpreserve(args: *mut bindings::liveupdate_flb_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        // SAFETY: `obj` came from `into_foreign()` in `preserve`; this is its last use.
        let obj = unsafe { T::Object::from_foreign(args.obj) };
        T::unpreserve(args.data, obj);
    }

    /// # Safety
    ///
    /// `args` must be valid.
    unsafe extern "C" fn retrieve(args: *mut bindings::liveupdate_flb_op_args) -> c_int {
        // SAFETY: The caller guarantees that `args` is valid and not aliased during the call.
        let args = unsafe { &mut *args };
        match T::retrieve(args.data) {
            Ok(obj) => {
                args.obj = obj.into_foreign();
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `args` must be valid, with the object `retrieve` made, which is not used afterwards.
    unsafe extern "C" fn finish(args: *mut bindings::liveupdate_flb_op_args) {
        // SAFETY: The caller guarantees that `args` is valid.
        let args = unsafe { &*args };
        // SAFETY: `obj` came from `into_foreign()` in `retrieve`; this is its last use.
        let obj = unsafe { T::Object::from_foreign(args.obj) };
        T::finish(obj);
    }
}
