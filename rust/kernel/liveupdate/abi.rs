// SPDX-License-Identifier: GPL-2.0

//! The handover ABI of the Live Update Orchestrator, `luo-v5`.
//!
//! C headers: [`include/linux/kho/abi/luo.h`](srctree/include/linux/kho/abi/luo.h),
//! [`include/linux/kho/abi/block.h`](srctree/include/linux/kho/abi/block.h) and, for the memfd
//! handler's `memfd-v2`, [`include/linux/kho/abi/memfd.h`](srctree/include/linux/kho/abi/memfd.h)
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
    luo_session_ser as SessionSer,
    memfd_luo_folio_ser as MemfdFolioSer,
    memfd_luo_ser as MemfdSer, //
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

/// Marks handover structs of `bindings` as [`FromBytes`] and [`AsBytes`] and asserts their
/// sizes; for structs that are packed and made of integers, integer arrays and `struct
/// kho_vmalloc`s only.
macro_rules! abi_struct {
    ($($ty:ident: $size:expr),* $(,)?) => {
        $(
            // SAFETY: The struct is packed and made of integers, integer arrays and
            // `struct kho_vmalloc`s (integers and a union of a `u64` and a raw pointer): every
            // bit pattern is valid for each.
            unsafe impl $crate::transmute::FromBytes for $crate::bindings::$ty {}

            // SAFETY: The struct is packed, so it has no padding bytes.
            unsafe impl $crate::transmute::AsBytes for $crate::bindings::$ty {}

            $crate::static_assert!(
                ::core::mem::size_of::<$crate::bindings::$ty>() == $size
            );
        )*
    };
}
// Other handover ABIs of the kernel crate (`iommufd`) invoke it by this path, as does this file.
pub(crate) use abi_struct;

self::abi_struct!(
    luo_ser: 32,
    luo_session_ser: 80,
    luo_file_set_ser: 16,
    luo_file_ser: 64,
    luo_flb_header_ser: 16,
    luo_flb_ser: 64,
    kho_block_header_ser: 16,
    memfd_luo_ser: 48,
    memfd_luo_folio_ser: 16,
);

// SAFETY: `struct kho_vmalloc` is a `u64`-sized union of a physical address and a pointer (any
// bit pattern is valid for both), a `u32` and two `u16`s.
unsafe impl FromBytes for bindings::kho_vmalloc {}

// SAFETY: The fields add up to the struct's size (asserted below), so there is no padding.
unsafe impl AsBytes for bindings::kho_vmalloc {}

static_assert!(size_of::<bindings::kho_vmalloc>() == 16);
static_assert!(
    size_of::<bindings::kho_vmalloc__bindgen_ty_1>() + 4 + 2 + 2
        == size_of::<bindings::kho_vmalloc>()
);

/// The compatible string of the memfd handler's format.
pub const MEMFD_COMPATIBLE: &crate::str::CStr = c"memfd-v2";

/// [`MemfdFolioSer`] flag: the folio holds data from the user.
pub const MEMFD_FOLIO_DIRTY: u64 = 1 << 0;

/// [`MemfdFolioSer`] flag: the folio's contents are valid (it was zeroed or written).
pub const MEMFD_FOLIO_UPTODATE: u64 = 1 << 1;

/// The seals `memfd-v2` can carry (`MEMFD_LUO_ALL_SEALS`).
pub const MEMFD_ALL_SEALS: u32 = bindings::F_SEAL_SEAL
    | bindings::F_SEAL_SHRINK
    | bindings::F_SEAL_GROW
    | bindings::F_SEAL_WRITE
    | bindings::F_SEAL_FUTURE_WRITE
    | bindings::F_SEAL_EXEC;

/// Width of [`MemfdFolioSer`]'s `pfn` bit field.
pub const MEMFD_PFN_BITS: u32 = 52;

/// Width of [`MemfdFolioSer`]'s `flags` bit field.
pub const MEMFD_FLAG_BITS: u32 = 12;

/// One entry of a memfd's folio array: `struct memfd_luo_folio_ser`.
///
/// The C struct packs `pfn` and `flags` into the bit fields `u64 pfn:52; u64 flags:12;`.
/// bindgen's accessors for them ([`MemfdFolioSer`]) walk the bits one at a time, which costs
/// more than the rest of preserving a 4 KiB folio; this type reads and writes the 64-bit word
/// directly, as the C compiler lays it out. It has the same size and byte layout (asserted
/// here, and checked against bindgen's accessors in the examples).
///
/// # Examples
///
/// ```
/// use kernel::liveupdate::abi::{MemfdFolio, MemfdFolioSer, MEMFD_FOLIO_DIRTY};
/// use kernel::transmute::{AsBytes, FromBytes};
///
/// let e = MemfdFolio::new(0x12345, MEMFD_FOLIO_DIRTY | 2, 7)?;
/// assert_eq!((e.pfn(), e.flags(), e.index), (0x12345, 3, 7));
/// // The same bytes as the C bit fields, as bindgen sets them.
/// let mut c = MemfdFolioSer::from_bytes_copy(&[0; 16]).ok_or(EINVAL)?;
/// c.set_pfn(0x12345);
/// c.set_flags(3);
/// c.index = 7;
/// assert_eq!(e.as_bytes(), c.as_bytes());
/// let back = MemfdFolio::from_bytes_copy(c.as_bytes()).ok_or(EINVAL)?;
/// assert_eq!((back.pfn(), back.flags()), (c.pfn(), c.flags()));
/// // The largest values of both fields.
/// let e = MemfdFolio::new((1 << 52) - 1, 0xfff, u64::MAX)?;
/// let c = MemfdFolioSer::from_bytes_copy(e.as_bytes()).ok_or(EINVAL)?;
/// assert_eq!((c.pfn(), c.flags(), c.index), ((1 << 52) - 1, 0xfff, u64::MAX));
/// assert!(MemfdFolio::new(1 << 52, 0, 0).is_err());
/// assert!(MemfdFolio::new(1, 1 << 12, 0).is_err());
/// # Ok::<(), Error>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemfdFolio {
    word: u64,
    /// The folio's offset in pages within the file.
    pub index: u64,
}

// SAFETY: Two integers, so any bit pattern is valid.
unsafe impl FromBytes for MemfdFolio {}

// SAFETY: Two `u64`s, so there is no padding.
unsafe impl AsBytes for MemfdFolio {}

static_assert!(size_of::<MemfdFolio>() == size_of::<MemfdFolioSer>());

/// Mask of [`MemfdFolio::pfn`].
const MEMFD_PFN_MASK: u64 = (1 << MEMFD_PFN_BITS) - 1;

/// Mask of [`MemfdFolio::flags`].
const MEMFD_FLAGS_MASK: u64 = (1 << MEMFD_FLAG_BITS) - 1;

impl MemfdFolio {
    /// Returns the entry of the folio at page frame `pfn` with `flags`, at page `index`.
    ///
    /// Fails with [`EINVAL`](crate::error::code::EINVAL) if `pfn` or `flags` do not fit their
    /// bit fields.
    #[inline]
    pub fn new(pfn: u64, flags: u64, index: u64) -> crate::error::Result<Self> {
        if pfn & !MEMFD_PFN_MASK != 0 || flags & !MEMFD_FLAGS_MASK != 0 {
            return Err(crate::error::code::EINVAL);
        }
        // GCC allocates bit fields from the least significant bit on little-endian machines
        // and from the most significant one on big-endian machines.
        let word = if cfg!(target_endian = "little") {
            pfn | (flags << MEMFD_PFN_BITS)
        } else {
            (pfn << MEMFD_FLAG_BITS) | flags
        };
        Ok(Self { word, index })
    }

    /// Returns the folio's page frame number.
    #[inline]
    pub fn pfn(&self) -> u64 {
        if cfg!(target_endian = "little") {
            self.word & MEMFD_PFN_MASK
        } else {
            self.word >> MEMFD_FLAG_BITS
        }
    }

    /// Returns the folio's flags ([`MEMFD_FOLIO_DIRTY`], [`MEMFD_FOLIO_UPTODATE`]).
    #[inline]
    pub fn flags(&self) -> u64 {
        if cfg!(target_endian = "little") {
            self.word >> MEMFD_PFN_BITS
        } else {
            self.word & MEMFD_FLAGS_MASK
        }
    }
}

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
