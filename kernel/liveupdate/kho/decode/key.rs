// SPDX-License-Identifier: GPL-2.0

//! The geometry of the radix tree and the radix keys of preserved blocks.
//!
//! A preserved block of `PAGE_SIZE << order` bytes at `phys` is the key
//! `1 << (64 - (PAGE_SHIFT + order)) | phys >> (PAGE_SHIFT + order)`; the key's bits select the
//! table entries from the top level down and its lowest bits the bit of the bitmap leaf. The
//! functions here compute exactly what upstream's C radix tree code (`kho_encode_radix_key()` and
//! its siblings) computes.

/// The deepest radix tree of any valid [`Geometry`] (4 to 6 levels for 4 KiB to 64 KiB pages).
pub const MAX_DEPTH: usize = 8;

/// The shape of the radix tree, which follows from the page size.
///
/// Only a geometry for which [`Geometry::is_valid`] holds is meaningful; the functions of this
/// module never panic on an invalid one, and [`walk`](super::walk) and
/// [`parse_root`](super::parse_root) refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `PAGE_SHIFT`: log2 of the page size, which is also the size of a radix tree node.
    pub page_shift: u32,
    /// The largest order of a preserved block that is accepted.
    pub max_order: u32,
}

/// The geometry of 4 KiB pages.
///
/// The largest order is 40: `kho_preserve_pages()` preserves naturally aligned blocks of any
/// order (it is not bounded by `MAX_PAGE_ORDER`), and a block of order 40 (4 PiB) already spans
/// the widest physical address space of any 64-bit architecture (52 bits).
pub const GEOMETRY_4K: Geometry = Geometry {
    page_shift: 12,
    max_order: 40,
};

impl Geometry {
    /// Whether the geometry is one this module works with.
    ///
    /// The page size must be 4 KiB to 64 KiB and a block of the largest order must fit in 63
    /// bits, so that `PAGE_SIZE << order` never overflows.
    #[inline]
    pub const fn is_valid(&self) -> bool {
        matches!(self.page_shift, 12..=16) && self.max_order <= 63 - self.page_shift
    }

    /// `PAGE_SIZE`, also the size of a radix tree node; 0 if `page_shift` is 64 or more.
    #[inline]
    pub const fn page_size(&self) -> u64 {
        match 1u64.checked_shl(self.page_shift) {
            Some(size) => size,
            None => 0,
        }
    }

    /// `KHO_RADIX_KEY_WIDTH`: the bits of a key, the PFN plus one bit for the order.
    #[inline]
    pub const fn key_width(&self) -> u32 {
        65u32.saturating_sub(self.page_shift)
    }

    /// `KHO_TABLE_SIZE_LOG2`: log2 of the number of entries of a table node.
    #[inline]
    pub const fn table_log2(&self) -> u32 {
        // log2(PAGE_SIZE / sizeof(u64)).
        self.page_shift.saturating_sub(3)
    }

    /// `KHO_BITMAP_SIZE_LOG2`: log2 of the number of bits of a bitmap leaf.
    #[inline]
    pub const fn bitmap_log2(&self) -> u32 {
        // log2(PAGE_SIZE * BITS_PER_BYTE).
        self.page_shift.saturating_add(3)
    }

    /// `KHO_TREE_MAX_DEPTH`: the table levels plus the bitmap level (6 for 4 KiB pages).
    #[inline]
    pub const fn depth(&self) -> u32 {
        let table = self.table_log2();
        if table == 0 {
            return 0;
        }
        self.key_width()
            .saturating_sub(self.bitmap_log2())
            .div_ceil(table)
            .saturating_add(1)
    }

    /// The number of `u64` words of a node (512 for 4 KiB pages).
    #[inline]
    pub const fn words_per_node(&self) -> usize {
        // At most 2^13 for a valid geometry and a page size below 2^32 otherwise, so the cast
        // of a 64-bit value to usize loses nothing on the (64-bit) targets of KHO.
        (self.page_size() / 8) as usize
    }

    /// The shift of the table index of `level` (1 ..= depth - 1) within a key.
    #[inline]
    pub const fn table_shift(&self, level: u32) -> Option<u32> {
        match level.checked_sub(1) {
            Some(below) => match below.checked_mul(self.table_log2()) {
                Some(s) => s.checked_add(self.bitmap_log2()),
                None => None,
            },
            None => None,
        }
    }
}

/// Encodes a block of `PAGE_SIZE << order` bytes at `phys` as a radix key.
///
/// Bit-identical to the C `kho_encode_radix_key()`, including that the bits of `phys` below the
/// block size are dropped. Returns 0, which is no valid key, if the geometry is invalid or
/// `order` exceeds `max_order`.
#[inline]
pub fn encode_key(g: &Geometry, phys: u64, order: u32) -> u64 {
    if !g.is_valid() || order > g.max_order {
        return 0;
    }
    // 12 <= shift <= 63 for a valid geometry and order, so neither shift below overflows.
    let shift = g.page_shift + order;
    let h = 1u64.checked_shl(64 - shift).unwrap_or(0);
    let l = phys.checked_shr(shift).unwrap_or(0);
    h | l
}

/// Decodes a radix key into the physical address and order of its block.
///
/// Bit-identical to the C `kho_decode_radix_key()` for every key the C code can decode; returns
/// `None` where the C code is undefined or meaningless: for the key 0, a key wider than
/// [`Geometry::key_width`], an order above `max_order`, or an invalid geometry.
#[inline]
pub fn decode_key(g: &Geometry, key: u64) -> Option<(u64, u32)> {
    if !g.is_valid() || key == 0 {
        return None;
    }
    // fls64(key) - 1, in 0..=63 as key != 0.
    let order_bit = 63 - key.leading_zeros();
    // 64 - (PAGE_SHIFT + order_bit); negative means the key is wider than the key width.
    let order = 64u32.checked_sub(g.page_shift)?.checked_sub(order_bit)?;
    if order > g.max_order {
        return None;
    }
    // 12 <= PAGE_SHIFT + order <= 63; the order bit is shifted out.
    let phys = key.checked_shl(g.page_shift + order)?;
    Some((phys, order))
}

/// The index into a table node of `level` (1 ..= depth - 1) that `key` selects.
///
/// Bit-identical to the C `kho_radix_get_table_index()`; 0 for level 0 (undefined in C).
#[inline]
pub fn table_index(g: &Geometry, key: u64, level: u32) -> usize {
    let Some(shift) = g.table_shift(level) else {
        return 0;
    };
    let mask = g.words_per_node().wrapping_sub(1);
    // Truncating the u64 to usize is harmless: the mask keeps at most 13 bits.
    (key.checked_shr(shift).unwrap_or(0) as usize) & mask
}

/// The bit of a bitmap leaf that `key` selects.
///
/// Bit-identical to the C `kho_radix_get_bitmap_index()`.
#[inline]
pub fn bitmap_index(g: &Geometry, key: u64) -> usize {
    let mask = 1u64
        .checked_shl(g.bitmap_log2())
        .unwrap_or(0)
        .wrapping_sub(1);
    // At most 19 bits remain after the mask, so the cast to usize loses nothing.
    (key & mask) as usize
}
