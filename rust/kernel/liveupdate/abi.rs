// SPDX-License-Identifier: GPL-2.0

//! The handover ABI of the Live Update Orchestrator, `luo-v5`.
//!
//! C headers: [`include/linux/kho/abi/luo.h`](srctree/include/linux/kho/abi/luo.h) and
//! [`include/linux/kho/abi/block.h`](srctree/include/linux/kho/abi/block.h)
//!
//! These are the structs one kernel writes into preserved memory and the next kernel reads, so
//! their layout is the contract between two kernels that may be built from different sources
//! (upstream's C implementation and this one). They are the C header's structs as bindgen sees
//! them; their sizes are asserted here. All are packed and made of integers and byte arrays, so
//! any byte sequence of the right length is a valid value: the next kernel reads them with
//! [`FromBytes`] and validates every field before it uses it.

use crate::{
    bindings, static_assert,
    transmute::{
        AsBytes,
        FromBytes, //
    },
};
use core::mem::size_of;

pub use bindings::{
    kho_block_header_ser as BlockHeader,
    luo_file_ser as FileSer,
    luo_file_set_ser as FileSetSer,
    luo_flb_header_ser as FlbHeader,
    luo_flb_ser as FlbSer,
    luo_ser as LuoSer,
    luo_session_ser as SessionSer, //
};

/// The name of the KHO subtree that holds a [`LuoSer`].
pub const KHO_ENTRY_NAME: &crate::str::CStr = c"LUO";

/// The compatible string of this ABI, NUL-padded to the size of [`LuoSer::compatible`].
pub const COMPATIBLE: [u8; 8] = *b"luo-v5\0\0";

/// Length of a file handler's compatible string, including the terminating NUL.
pub const HANDLER_COMPAT_LENGTH: usize = bindings::LIVEUPDATE_HNDL_COMPAT_LENGTH as usize;

/// Length of an FLB's compatible string, including the terminating NUL.
pub const FLB_COMPAT_LENGTH: usize = bindings::LIVEUPDATE_FLB_COMPAT_LENGTH as usize;

/// Size of one block of a block chain ([`BlockHeader`] followed by entries).
pub const BLOCK_SIZE: usize = crate::page::PAGE_SIZE;

/// The most blocks a chain may have; a longer chain is refused as corrupt.
pub const MAX_BLOCKS: usize = 10000;

macro_rules! abi_struct {
    ($($ty:ident: $size:expr),* $(,)?) => {
        $(
            // SAFETY: The struct is packed and made only of integers and integer arrays, for
            // which every bit pattern is valid.
            unsafe impl FromBytes for bindings::$ty {}

            // SAFETY: The struct is packed, so it has no padding bytes.
            unsafe impl AsBytes for bindings::$ty {}

            static_assert!(size_of::<bindings::$ty>() == $size);
        )*
    };
}

abi_struct!(
    luo_ser: 32,
    luo_session_ser: 80,
    luo_file_set_ser: 16,
    luo_file_ser: 64,
    luo_flb_header_ser: 16,
    luo_flb_ser: 64,
    kho_block_header_ser: 16,
);

/// Number of `entry_size`-byte entries one block holds.
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::abi::{entries_per_block, FileSer, SessionSer};
///
/// # if kernel::page::PAGE_SIZE == 4096 {
/// assert_eq!(entries_per_block(size_of::<SessionSer>()), 51);
/// assert_eq!(entries_per_block(size_of::<FileSer>()), 63);
/// # }
/// ```
pub const fn entries_per_block(entry_size: usize) -> usize {
    (BLOCK_SIZE - size_of::<BlockHeader>()) / entry_size
}

/// Most FLBs the FLB page ([`FlbHeader`] followed by [`FlbSer`] entries) can describe.
pub const FLB_MAX: usize = (BLOCK_SIZE - size_of::<FlbHeader>()) / size_of::<FlbSer>();
