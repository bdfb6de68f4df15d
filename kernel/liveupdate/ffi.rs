// SPDX-License-Identifier: GPL-2.0

//! The C API of [`include/linux/liveupdate.h`](srctree/include/linux/liveupdate.h).
//!
//! C file handlers (`mm/memfd_luo.c`) and FLB users (`lib/tests/liveupdate.c`) register
//! through these functions. Each converts the raw pointers it gets into the kernel crate's
//! [`Handler`] and [`Flb`] references and calls the core.

use crate::{
    enabled,
    flb,
    lock, //
};
use kernel::{
    bindings,
    liveupdate::handler::{
        Flb,
        Handler, //
    },
    prelude::*,
};

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
    if !enabled() {
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: The caller guarantees that `fh` stays valid until it is unregistered, and the
    // core drops its copies of the reference when it is.
    let handler = match unsafe { Handler::from_raw(fh) } {
        Ok(handler) => handler,
        Err(e) => return e.to_errno(),
    };
    {
        let mut luo = lock();
        if let Some(other) = luo.handler_by_compatible(handler.compatible()) {
            pr_err!(
                "File handler registration failed: Compatible string '{}' already registered.\n",
                other.compatible_cstr()
            );
            return EEXIST.to_errno();
        }
        if let Err(e) = luo.handlers.push(handler, GFP_KERNEL) {
            return Error::from(e).to_errno();
        }
    }
    #[cfg(CONFIG_LIVEUPDATE_TEST)]
    handler.test_register();
    0
}

/// Unregisters a file handler and its FLB links.
///
/// # Safety
///
/// `fh` must be a registered handler, or a handler that was never registered.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_unregister_file_handler(
    fh: *mut bindings::liveupdate_file_handler,
) {
    if !enabled() {
        return;
    }
    let mut luo = lock();
    let Some(i) = luo.handlers.iter().position(|h| h.as_raw() == fh) else {
        return;
    };
    // `i` is in bounds: it was just found.
    if let Ok(handler) = luo.handlers.remove(i) {
        flb::unregister_all(handler);
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
/// unregistered from every handler and no longer in use.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_register_flb(
    fh: *mut bindings::liveupdate_file_handler,
    flb: *mut bindings::liveupdate_flb,
) -> c_int {
    if !enabled() {
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: The caller guarantees that `flb` is valid for as long as the core uses it.
    let flb = match unsafe { Flb::from_raw(flb) } {
        Ok(flb) => flb,
        Err(e) => {
            pr_warn!("FLB registration refused: an operation is missing\n");
            return e.to_errno();
        }
    };
    let luo = lock();
    let Some(handler) = luo.handlers.iter().copied().find(|h| h.as_raw() == fh) else {
        pr_warn!("FLB registration refused: the file handler is not registered\n");
        return EINVAL.to_errno();
    };
    match flb::register(handler, flb) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Unregisters `flb` from `fh`.
///
/// # Safety
///
/// `fh` and `flb` must be valid.
#[export]
pub(crate) unsafe extern "C" fn liveupdate_unregister_flb(
    fh: *mut bindings::liveupdate_file_handler,
    flb: *mut bindings::liveupdate_flb,
) {
    if !enabled() {
        return;
    }
    let luo = lock();
    let handler = luo.handlers.iter().copied().find(|h| h.as_raw() == fh);
    // SAFETY: The caller guarantees that `flb` is valid.
    let flb = unsafe { Flb::from_raw(flb) };
    if let (Some(handler), Ok(flb)) = (handler, flb) {
        flb::unregister(handler, flb);
    }
}

/// Stores the FLB object through `objp` on success.
///
/// # Safety
///
/// `objp` must be valid for writes.
unsafe fn store(
    objp: *mut *mut c_void,
    r: Result<kernel::liveupdate::handler::FlbObject>,
) -> c_int {
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
    if !enabled() {
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: The caller guarantees that `flb` is valid.
    let r = unsafe { Flb::from_raw(flb) }.and_then(flb::get_incoming);
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
    if let (true, Ok(flb)) = (enabled(), unsafe { Flb::from_raw(flb) }) {
        flb::put_incoming(flb);
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
    if !enabled() {
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: The caller guarantees that `flb` is valid.
    let r = unsafe { Flb::from_raw(flb) }.and_then(flb::get_outgoing);
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
    if let (true, Ok(flb)) = (enabled(), unsafe { Flb::from_raw(flb) }) {
        flb::put_outgoing(flb);
    }
}
