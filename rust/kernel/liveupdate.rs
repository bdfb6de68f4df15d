// SPDX-License-Identifier: GPL-2.0

//! The Live Update Orchestrator's userspace ABI.
//!
//! C header: [`include/uapi/linux/liveupdate.h`](srctree/include/uapi/linux/liveupdate.h)
//!
//! `/dev/liveupdate` and the session file descriptors it hands out take argument structs that
//! are versioned by size: each starts with a `u32 size` that userspace sets to the size of the
//! struct it was built with, while the ioctl numbers themselves are `_IO(0xBA, nr)` and carry no
//! size. [`IoctlArg`] ties each struct to its command number and to the smallest size the
//! kernel accepts for it.
//!
//! # Examples
//!
//! ```
//! use kernel::liveupdate::IoctlArg;
//! use kernel::uapi::liveupdate_session_preserve_fd as PreserveFd;
//!
//! assert_eq!(PreserveFd::CMD, 0xba40);
//! assert_eq!(PreserveFd::MIN_SIZE, 16);
//! assert_eq!(PreserveFd::NR, 0x40);
//! ```

pub mod abi;
pub mod handler;
pub mod kho;
#[cfg(CONFIG_LIVEUPDATE_MEMFD)]
pub mod memfd;
pub mod registered;

use crate::{
    ioctl::{
        _IO,
        _IOC_NR, //
    },
    static_assert,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uapi, //
};
use core::mem::{
    offset_of,
    size_of, //
};

/// The ioctl type byte of every LUO command.
pub const IOCTL_TYPE: u32 = uapi::LIVEUPDATE_IOCTL_TYPE;

/// Length of a session name, including its terminating NUL.
pub const SESSION_NAME_LENGTH: usize = uapi::LIVEUPDATE_SESSION_NAME_LENGTH as usize;

/// The argument struct of a LUO ioctl.
///
/// Implemented for the uapi structs of `include/uapi/linux/liveupdate.h`; each implementation
/// checks at build time that the struct has the size and layout of the C header.
pub trait IoctlArg: FromBytes + AsBytes {
    /// The full ioctl command number.
    const CMD: u32;

    /// The command's number within [`IOCTL_TYPE`].
    const NR: u32 = _IOC_NR(Self::CMD);

    /// The smallest `size` userspace may pass: the end of the struct's last mandatory field.
    const MIN_SIZE: usize;
}

macro_rules! ioctl_arg {
    ($ty:ident, $nr:expr, size: $size:expr, last: $last:ident: $last_ty:ty) => {
        // SAFETY: The struct is `#[repr(C)]` and made only of integers and integer arrays, for
        // which every bit pattern is valid.
        unsafe impl FromBytes for uapi::$ty {}

        // SAFETY: The struct has no padding: its size is asserted below to be the end of its
        // last field, and the C header lays its fields out back to back.
        unsafe impl AsBytes for uapi::$ty {}

        impl IoctlArg for uapi::$ty {
            const CMD: u32 = _IO(IOCTL_TYPE, $nr);
            const MIN_SIZE: usize = offset_of!(uapi::$ty, $last) + size_of::<$last_ty>();
        }

        static_assert!(size_of::<uapi::$ty>() == $size);
        static_assert!(<uapi::$ty as IoctlArg>::MIN_SIZE == $size);
    };
}

ioctl_arg!(liveupdate_ioctl_create_session, uapi::LIVEUPDATE_CMD_CREATE_SESSION,
           size: 72, last: name: [u8; SESSION_NAME_LENGTH]);
ioctl_arg!(liveupdate_ioctl_retrieve_session, uapi::LIVEUPDATE_CMD_RETRIEVE_SESSION,
           size: 72, last: name: [u8; SESSION_NAME_LENGTH]);
ioctl_arg!(liveupdate_session_preserve_fd, uapi::LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
           size: 16, last: token: u64);
ioctl_arg!(liveupdate_session_retrieve_fd, uapi::LIVEUPDATE_CMD_SESSION_RETRIEVE_FD,
           size: 16, last: token: u64);
ioctl_arg!(liveupdate_session_finish, uapi::LIVEUPDATE_CMD_SESSION_FINISH,
           size: 8, last: reserved: u32);
ioctl_arg!(liveupdate_session_get_name, uapi::LIVEUPDATE_CMD_SESSION_GET_NAME,
           size: 72, last: name: [u8; SESSION_NAME_LENGTH]);
ioctl_arg!(liveupdate_session_unpreserve_fd, uapi::LIVEUPDATE_CMD_SESSION_UNPRESERVE_FD,
           size: 16, last: token: u64);

// The token is an `__aligned_u64`: 8-byte aligned on every architecture, 32-bit ones included.
static_assert!(offset_of!(uapi::liveupdate_session_preserve_fd, token) == 8);
static_assert!(offset_of!(uapi::liveupdate_session_retrieve_fd, token) == 8);
static_assert!(offset_of!(uapi::liveupdate_session_unpreserve_fd, token) == 8);
static_assert!(offset_of!(uapi::liveupdate_ioctl_create_session, name) == 8);
static_assert!(offset_of!(uapi::liveupdate_session_get_name, name) == 8);

/// The device's command numbers, as [`IoctlArg::NR`] reports them.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::{device_commands, IoctlArg};
/// use kernel::uapi::liveupdate_ioctl_create_session as CreateSession;
///
/// assert_eq!(device_commands(), [0xba00, 0xba01]);
/// assert_eq!(CreateSession::NR, 0);
/// ```
pub const fn device_commands() -> [u32; 2] {
    [
        <uapi::liveupdate_ioctl_create_session as IoctlArg>::CMD,
        <uapi::liveupdate_ioctl_retrieve_session as IoctlArg>::CMD,
    ]
}

/// The session file descriptor's command numbers, in `nr` order.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::session_commands;
///
/// assert_eq!(session_commands(), [0xba40, 0xba41, 0xba42, 0xba43, 0xba44]);
/// ```
pub const fn session_commands() -> [u32; 5] {
    [
        <uapi::liveupdate_session_preserve_fd as IoctlArg>::CMD,
        <uapi::liveupdate_session_retrieve_fd as IoctlArg>::CMD,
        <uapi::liveupdate_session_finish as IoctlArg>::CMD,
        <uapi::liveupdate_session_get_name as IoctlArg>::CMD,
        <uapi::liveupdate_session_unpreserve_fd as IoctlArg>::CMD,
    ]
}
