// SPDX-License-Identifier: GPL-2.0

//! The C key formulas of upstream's `kernel/liveupdate/kexec_handover.c`, transcribed literally.
//!
//! Independent of the decoders under test: the image builder uses these to lay out radix trees
//! as the C code does, and the tests compare the decoders against them. Like the C code they
//! are only defined for sensible inputs (they panic on a shift overflow where C is undefined).

/// `KHO_RADIX_KEY_WIDTH`.
pub fn key_width(page_shift: u32) -> u32 {
    64 - page_shift + 1
}

/// `KHO_TABLE_SIZE_LOG2`: `const_ilog2(PAGE_SIZE / sizeof(phys_addr_t))`.
pub fn table_log2(page_shift: u32) -> u32 {
    ((1u64 << page_shift) / 8).ilog2()
}

/// `KHO_BITMAP_SIZE_LOG2`: `PAGE_SHIFT + const_ilog2(BITS_PER_BYTE)`.
pub fn bitmap_log2(page_shift: u32) -> u32 {
    page_shift + 8u32.ilog2()
}

/// `KHO_TREE_MAX_DEPTH`.
pub fn depth(page_shift: u32) -> u32 {
    (key_width(page_shift) - bitmap_log2(page_shift)).div_ceil(table_log2(page_shift)) + 1
}

/// `kho_encode_radix_key()`.
pub fn encode(page_shift: u32, phys: u64, order: u32) -> u64 {
    let shift = page_shift + order;
    let h = 1u64 << (64 - shift);
    let l = phys >> shift;
    h | l
}

/// `kho_decode_radix_key()`: returns (phys, order).
pub fn decode(page_shift: u32, key: u64) -> (u64, u32) {
    let fls64 = 64 - key.leading_zeros();
    let order_bit = fls64 - 1;
    let order = 64 - (page_shift + order_bit);
    let phys = key << (page_shift + order);
    (phys, order)
}

/// `kho_radix_get_bitmap_index()`.
pub fn bitmap_index(page_shift: u32, key: u64) -> usize {
    (key % (1u64 << bitmap_log2(page_shift))) as usize
}

/// `kho_radix_get_table_index()`.
pub fn table_index(page_shift: u32, key: u64, level: u32) -> usize {
    let s = ((level - 1) * table_log2(page_shift)) + bitmap_log2(page_shift);
    ((key >> s) % (1u64 << table_log2(page_shift))) as usize
}

/// `__kho_preserve_pages_order()` without NUMA nodes: the order of the block preserved at
/// `start_pfn` for the pages up to `end_pfn`.
pub fn preserve_pages_order(start_pfn: u64, end_pfn: u64) -> u32 {
    start_pfn
        .trailing_zeros()
        .min((end_pfn - start_pfn).ilog2())
}
