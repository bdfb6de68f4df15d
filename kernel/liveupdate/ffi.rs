// SPDX-License-Identifier: GPL-2.0

//! The C API of [`include/linux/liveupdate.h`](srctree/include/linux/liveupdate.h).
//!
//! File handlers and FLBs register through these functions: the C ones (the in-kernel test,
//! `lib/tests/liveupdate.c`) directly, the Rust ones (`mm/memfd_luo.rs`,
//! `drivers/iommu/iommufd/iommufd_luo.rs`) through the kernel crate's
//! [`kernel::liveupdate::handler`]. Each converts the raw pointers it gets into the kernel
//! crate's [`Handler`] and [`Flb`] references and calls the core.

use crate::{
    enabled,
    file::Lookup,
    flb,
    session,
    Core, //
};
use kernel::{
    bindings,
    liveupdate::registered::{
        Flb,
        FlbObject,
        Handler, //
    },
    prelude::*,
};

/// Returns the core if live update is enabled.
fn enabled_core() -> Option<&'static Core> {
    Core::get().filter(|_| enabled())
}

/// Registers a file handler.
///
/// Fails with `-EOPNOTSUPP` when live update is disabled, `-EINVAL` when a mandatory operation is
/// missing and `-EEXIST` when a handler with the same compatible string is registered.
///
/// # Safety
///
/// `fh` must point to a valid handler that stays valid and unchanged until it is unregistered.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_register_file_handler(
    fh: *mut bindings::liveupdate_file_handler,
) -> c_int {
    let Some(core) = enabled_core() else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: The caller guarantees that `fh` stays valid until it is unregistered, and
    // unregistration waits until the core no longer uses it.
    let handler = match unsafe { Handler::from_raw(fh) } {
        Ok(handler) => handler,
        Err(e) => return e.to_errno(),
    };
    if let Err(e) = core.registry.lock().add(handler) {
        return e.to_errno();
    }
    #[cfg(CONFIG_LIVEUPDATE_TEST)]
    handler.test_register();
    0
}

/// Unregisters a file handler and its FLB links.
///
/// No new file can use the handler; then this waits until the files that use it are gone (the
/// preserved ones unpreserved, the incoming ones finished), so that the caller may free it. A
/// handler in a module never waits: its files hold a reference on its module.
///
/// # Safety
///
/// `fh` must be a registered handler, or a handler that was never registered.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_unregister_file_handler(
    fh: *mut bindings::liveupdate_file_handler,
) {
    let Some(core) = enabled_core() else {
        return;
    };
    if let Some(handler) = core.unregister_handler(fh) {
        flb::unregister_all(core, handler);
    }
}

/// Registers `flb` with the registered handler `fh`.
///
/// Fails with `-EOPNOTSUPP` when live update is disabled, `-EINVAL` for an FLB without every
/// operation or a handler that is not registered, `-EEXIST` when already linked or when another
/// FLB has the same compatible string, `-ENOSPC` beyond 63 FLBs and `-ENOMEM`.
///
/// # Safety
///
/// `fh` must be valid; `flb` must point to a valid FLB that stays valid and unchanged until it is
/// unregistered from every handler.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_register_flb(
    fh: *mut bindings::liveupdate_file_handler,
    flb: *mut bindings::liveupdate_flb,
) -> c_int {
    let Some(core) = enabled_core() else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: The caller guarantees that `flb` is valid until it is unregistered, and the last
    // unregistration waits until the core no longer uses it.
    let flb = match unsafe { Flb::from_raw(flb) } {
        Ok(flb) => flb,
        Err(e) => {
            pr_warn!("FLB registration refused: an operation is missing\n");
            return e.to_errno();
        }
    };
    // The registry stays locked so that the handler cannot be unregistered meanwhile.
    let reg = core.registry.lock();
    let Some(handler) = reg.find_raw(fh) else {
        pr_warn!("FLB registration refused: the file handler is not registered\n");
        return EINVAL.to_errno();
    };
    match flb::register(core, handler, flb) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Unregisters `flb` from `fh`; after its last handler, waits until the core no longer uses it.
///
/// # Safety
///
/// `fh` and `flb` must be valid.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_unregister_flb(
    fh: *mut bindings::liveupdate_file_handler,
    flb: *mut bindings::liveupdate_flb,
) {
    let Some(core) = enabled_core() else {
        return;
    };
    // Not looked up in the registry: the handler may be being unregistered, waiting for its
    // files, which still hold references on the FLB.
    // SAFETY: The caller guarantees that `fh` is valid; the reference is only compared with
    // the FLB's links.
    let handler = unsafe { Handler::from_raw(fh) };
    // SAFETY: The caller guarantees that `flb` is valid.
    let flb = unsafe { Flb::from_raw(flb) };
    if let (Ok(handler), Ok(flb)) = (handler, flb) {
        flb::unregister(core, handler, flb);
    }
}

/// Stores the FLB object through `objp` on success.
///
/// # Safety
///
/// `objp` must be valid for writes.
unsafe fn store(objp: *mut *mut c_void, r: Result<FlbObject>) -> c_int {
    match r {
        Ok(obj) => {
            // SAFETY: The caller guarantees that `objp` is valid for writes.
            unsafe { objp.write(obj.as_ptr()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Takes a reference on `flb`'s incoming object, retrieving it on first use.
///
/// # Safety
///
/// `flb` must be a valid FLB and `objp` valid for writes.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_flb_get_incoming(
    flb: *mut bindings::liveupdate_flb,
    objp: *mut *mut c_void,
) -> c_int {
    let Some(core) = enabled_core() else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: The caller guarantees that `flb` is valid.
    let r = unsafe { Flb::from_raw(flb) }.and_then(|flb| flb::get_incoming(core, flb));
    // SAFETY: The caller guarantees that `objp` is valid for writes.
    unsafe { store(objp, r) }
}

/// Drops a reference on `flb`'s incoming object.
///
/// # Safety
///
/// `flb` must be a valid FLB.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_flb_put_incoming(flb: *mut bindings::liveupdate_flb) {
    // SAFETY: The caller guarantees that `flb` is valid.
    if let (Some(core), Ok(flb)) = (enabled_core(), unsafe { Flb::from_raw(flb) }) {
        flb::put_incoming(core, flb);
    }
}

/// Takes a reference on `flb`'s outgoing object.
///
/// # Safety
///
/// `flb` must be a valid FLB and `objp` valid for writes.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_flb_get_outgoing(
    flb: *mut bindings::liveupdate_flb,
    objp: *mut *mut c_void,
) -> c_int {
    let Some(core) = enabled_core() else {
        return EOPNOTSUPP.to_errno();
    };
    // SAFETY: The caller guarantees that `flb` is valid.
    let r = unsafe { Flb::from_raw(flb) }.and_then(|flb| flb::get_outgoing(core, flb));
    // SAFETY: The caller guarantees that `objp` is valid for writes.
    unsafe { store(objp, r) }
}

/// Drops a reference on `flb`'s outgoing object.
///
/// # Safety
///
/// `flb` must be a valid FLB.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_flb_put_outgoing(flb: *mut bindings::liveupdate_flb) {
    // SAFETY: The caller guarantees that `flb` is valid.
    if let (Some(core), Ok(flb)) = (enabled_core(), unsafe { Flb::from_raw(flb) }) {
        flb::put_outgoing(core, flb);
    }
}

/// Finds the token of `file` in the outgoing session `s`; see
/// [`kernel::liveupdate::handler::OutgoingSession::token_of`].
///
/// Stores the token through `tokenp` unless it is NULL. Fails with `-ENOENT` if `file` is not
/// preserved in `s` (or `s` is an incoming session) and `-ENOMEM` if the dependency cannot be
/// recorded.
///
/// # Safety
///
/// `s` must be the session passed to a handler callback that is running; `tokenp` must be NULL
/// or valid for writes.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_get_token_outgoing(
    s: *mut bindings::liveupdate_session,
    file: *mut bindings::file,
    tokenp: *mut u64,
) -> c_int {
    // SAFETY: The caller guarantees that `s` is the session of a running callback; the reference
    // is only used during this call.
    let Some(lookup) = (unsafe { Lookup::from_raw(s) }) else {
        return EINVAL.to_errno();
    };
    match lookup.token_of(file) {
        Ok(token) => {
            if !tokenp.is_null() {
                // SAFETY: The caller guarantees that a non-NULL `tokenp` is valid for writes.
                unsafe { tokenp.write(token) };
            }
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Gets the file preserved under `token` in the incoming session `s`; see
/// [`kernel::liveupdate::handler::IncomingSession::file`].
///
/// As upstream's proposal has it, no reference is handed out: the file stays valid while the
/// session holds it (until it is finished); a caller that keeps it takes its own reference.
///
/// # Safety
///
/// `s` must be the session passed to a handler callback that is running; `filep` must be valid
/// for writes.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_get_file_incoming(
    s: *mut bindings::liveupdate_session,
    token: u64,
    filep: *mut *mut bindings::file,
) -> c_int {
    // SAFETY: The caller guarantees that `s` is the session of a running callback; the reference
    // is only used during this call.
    let Some(lookup) = (unsafe { Lookup::from_raw(s) }) else {
        return EINVAL.to_errno();
    };
    if filep.is_null() {
        return EINVAL.to_errno();
    }
    match lookup.file(token) {
        Ok(file) => {
            // SAFETY: The caller guarantees that `filep` is valid for writes. The session keeps
            // its own reference to the file.
            unsafe { filep.write(file.as_ptr()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Reports every incoming file of the registered handler `fh` that is not finished: its session
/// name, token and serialized data handle, retrieving nothing.
///
/// `*count` is the capacity of `fds` on entry (`fds` may be NULL if it is 0) and the number of
/// such files on return; if they do not all fit, the first `*count` on entry are written and the
/// call fails with `-ENOSPC`. Before `/dev/liveupdate` is first opened the files come in the
/// previous kernel's order, afterwards by session name, each session's in preservation order.
/// Fails with `-EOPNOTSUPP` when live update is disabled and `-EINVAL` for a handler that is not
/// registered or a bad count, and `-ENOMEM`. Works from an initcall. Takes the core's
/// device-level lock, then (without it) the incoming sessions' locks: it must not be called from a
/// handler callback (which runs with its session locked).
///
/// # Safety
///
/// `count` must be valid for reads and writes, and `fds` valid for writes of `*count` entries.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_fd_data_query(
    fh: *mut bindings::liveupdate_file_handler,
    fds: *mut bindings::liveupdate_fd,
    count: *mut c_long,
) -> c_int {
    let Some(core) = enabled_core() else {
        return EOPNOTSUPP.to_errno();
    };
    if count.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: The caller guarantees that `count` is valid for reads.
    let Ok(cap) = usize::try_from(unsafe { count.read() }) else {
        return EINVAL.to_errno();
    };
    if cap > 0 && fds.is_null() {
        return EINVAL.to_errno();
    }
    let Some(handler) = core.registry.lock().find_raw(fh) else {
        return EINVAL.to_errno();
    };
    let mut n = 0usize;
    let r = session::for_each_incoming_file(core.luo.lock(), handler, |name, token, data| {
        if n < cap {
            let entry = bindings::liveupdate_fd {
                session: name.map(|b| c_char::from_ne_bytes([b])),
                token,
                data,
            };
            // SAFETY: The caller guarantees that `fds` is valid for `cap` entries, and `n < cap`.
            unsafe { fds.add(n).write(entry) };
        }
        n += 1;
    });
    if let Err(e) = r {
        return e.to_errno();
    }
    // SAFETY: The caller guarantees that `count` is valid for writes.
    unsafe { count.write(c_long::try_from(n).unwrap_or(c_long::MAX)) };
    if n > cap {
        return ENOSPC.to_errno();
    }
    0
}
