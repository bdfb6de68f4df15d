// SPDX-License-Identifier: GPL-2.0

//! Decoders for the Kexec HandOver (KHO) handover ABI `kho-v4`, for untrusted input.
//!
//! The previous kernel hands the next one a flattened device tree (FDT) whose root node has
//! `compatible = "kho-v4"` and `preserved-memory-map`, the physical address of the root of a
//! radix tree of preserved memory, plus one subnode per preserved blob with `preserved-data`
//! (its physical address) and `blob-size`. All three are raw native-endian `u64`s (see
//! `include/linux/kho/abi/kexec_handover.h`).
//!
//! The radix tree is made of page-sized nodes: tables of physical addresses of the nodes one
//! level down and, at level 0, bitmaps. A preserved block of `PAGE_SIZE << order` bytes at
//! `phys` is the key `1 << (64 - (PAGE_SHIFT + order)) | phys >> (PAGE_SHIFT + order)`; the
//! key's bits select the table entries from the top level down and its lowest bits the bit of
//! the bitmap leaf.
//!
//! Everything here treats that data as untrusted: the previous kernel may have been a different
//! one, buggy, or its memory may have been damaged. So
//!
//! - [`Fdt`] is a small read-only FDT reader that checks the header and the whole structure
//!   block before anything is looked up, every offset bounds-checked;
//! - [`parse_root`] checks the KHO root node and every subtree node of it;
//! - [`walk`] visits the radix tree in the same order as the C `kho_radix_walk_tree()` and
//!   checks every node before reading it (alignment, RAM, not scratch, never seen before, a
//!   bound on their number) and every key (decodable, order within bounds, in RAM, not scratch);
//! - [`Coverage`] checks that every subtree's blob is covered by preserved keys;
//! - [`validate`] does all of the above, so that a refused handover is one [`HandoverError`]
//!   and one warning.
//!
//! The module depends on `core` only: it allocates nothing, has no `unsafe`, and never panics on
//! any input (no indexing, no unchecked arithmetic on input values), so the same source is built
//! into the kernel (as `pub mod kho_decode;` of the LUO crate) and into the host test crate
//! `tools/testing/kho_decode`, which unit-tests and fuzzes it.

use core::fmt;

/// The `compatible` string of the KHO root node.
pub const KHO_FDT_COMPATIBLE: &[u8] = b"kho-v4";

/// The root node's property holding the physical address of the radix tree root.
pub const KHO_FDT_MEMORY_MAP_PROP_NAME: &[u8] = b"preserved-memory-map";

/// A subtree node's property holding the physical address of its blob.
pub const KHO_SUB_TREE_PROP_NAME: &[u8] = b"preserved-data";

/// A subtree node's property holding the size of its blob in bytes.
pub const KHO_SUB_TREE_SIZE_PROP_NAME: &[u8] = b"blob-size";

/// The most subtree nodes [`parse_root`] accepts under the root.
///
/// The C kernel keeps the root FDT within one page, which holds far fewer.
pub const MAX_SUBTREES: usize = 256;

/// The deepest radix tree of any valid [`Geometry`] (4 to 6 levels for 4 KiB to 64 KiB pages).
pub const MAX_DEPTH: usize = 8;

// ---------------------------------------------------------------------------------------------
// Geometry and keys
// ---------------------------------------------------------------------------------------------

/// The shape of the radix tree, which follows from the page size.
///
/// Only a geometry for which [`Geometry::is_valid`] holds is meaningful; the functions of this
/// module never panic on an invalid one, and [`walk`] and [`parse_root`] refuse it.
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
    const fn table_shift(&self, level: u32) -> Option<u32> {
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

// ---------------------------------------------------------------------------------------------
// The radix tree walk
// ---------------------------------------------------------------------------------------------

/// The physical memory the radix tree lives in, as the walker may see it.
pub trait PhysMem {
    /// Whether `[base, base + size)` is RAM (in the kernel: memblock memory).
    ///
    /// The walker never passes a range whose end overflows.
    fn is_ram(&self, base: u64, size: u64) -> bool;

    /// Whether `[base, base + size)` overlaps a scratch area.
    ///
    /// The walker never passes a range whose end overflows.
    fn in_scratch(&self, base: u64, size: u64) -> bool;

    /// The node page at `phys` as `u64` words, [`Geometry::words_per_node`] of them.
    ///
    /// Only called after the walker has checked that `phys` is page-aligned, RAM, not scratch
    /// and not visited before. `None` or a slice of another length fails the walk with
    /// [`WalkError::NodeUnreadable`].
    fn node(&self, phys: u64) -> Option<&[u64]>;
}

/// A [`NodeSet`] has no room for another address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetFull;

/// The set of radix tree nodes visited so far, which makes every node visited at most once.
pub trait NodeSet {
    /// Records a node address; `Ok(false)` if it was already recorded.
    fn insert(&mut self, phys: u64) -> Result<bool, SetFull>;
}

/// A [`NodeSet`] in a caller-provided buffer, kept sorted.
///
/// Insertion is a binary search and a move of the larger entries, fine for the few hundred or
/// thousand nodes of a real tree.
#[derive(Debug)]
pub struct SliceNodeSet<'a> {
    buf: &'a mut [u64],
    len: usize,
}

impl<'a> SliceNodeSet<'a> {
    /// An empty set that can hold `buf.len()` addresses.
    #[inline]
    pub fn new(buf: &'a mut [u64]) -> Self {
        Self { buf, len: 0 }
    }

    /// The number of addresses recorded.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no address is recorded.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The recorded addresses in ascending order.
    #[inline]
    pub fn as_slice(&self) -> &[u64] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl NodeSet for SliceNodeSet<'_> {
    fn insert(&mut self, phys: u64) -> Result<bool, SetFull> {
        let Err(pos) = self.as_slice().binary_search(&phys) else {
            return Ok(false);
        };
        // The slot at `len` is free if `len < buf.len()`; rotating `[pos, len]` right by one
        // moves it to `pos` and the larger entries up by one.
        let tail = self.buf.get_mut(pos..=self.len).ok_or(SetFull)?;
        tail.rotate_right(1);
        if let Some(slot) = tail.first_mut() {
            *slot = phys;
        }
        self.len = self.len.saturating_add(1);
        Ok(true)
    }
}

/// Why [`walk`] refused the radix tree. Levels are numbered as in C: the root is at level
/// `depth - 1`, the bitmap leaves at level 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError<E> {
    /// The geometry is not [valid](Geometry::is_valid).
    BadGeometry,
    /// A node's address is not page-aligned.
    NodeMisaligned {
        /// The node's level.
        level: u32,
        /// The node's physical address.
        phys: u64,
    },
    /// A node is not in RAM.
    NodeNotRam {
        /// The node's level.
        level: u32,
        /// The node's physical address.
        phys: u64,
    },
    /// A node overlaps a scratch area.
    NodeInScratch {
        /// The node's level.
        level: u32,
        /// The node's physical address.
        phys: u64,
    },
    /// A node is reached a second time: a loop, or a node shared by two parents.
    NodeRevisited {
        /// The level it was reached at the second time.
        level: u32,
        /// The node's physical address.
        phys: u64,
    },
    /// [`PhysMem::node`] could not give a node's contents.
    NodeUnreadable {
        /// The node's level.
        level: u32,
        /// The node's physical address.
        phys: u64,
    },
    /// A table entry is set whose index makes the key wider than the key width.
    IndexBeyondKeyWidth {
        /// The table's level.
        level: u32,
        /// The entry's index.
        index: usize,
    },
    /// A set bitmap bit is a key that does not decode, or whose order is above `max_order`.
    KeyOrder {
        /// The key.
        key: u64,
    },
    /// A preserved block is not entirely RAM (or its end overflows).
    KeyNotRam {
        /// The block's physical address.
        phys: u64,
        /// The block's order.
        order: u32,
    },
    /// A preserved block overlaps a scratch area, which the new kernel has already used.
    KeyInScratch {
        /// The block's physical address.
        phys: u64,
        /// The block's order.
        order: u32,
    },
    /// The tree has more nodes than the caller's bound.
    TooManyNodes,
    /// The caller's [`NodeSet`] is full.
    SetFull,
    /// A visitor returned an error.
    Callback(E),
}

impl<E> WalkError<E> {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::BadGeometry => "invalid radix tree geometry",
            Self::NodeMisaligned { .. } => "radix tree node not page-aligned",
            Self::NodeNotRam { .. } => "radix tree node outside RAM",
            Self::NodeInScratch { .. } => "radix tree node in a scratch area",
            Self::NodeRevisited { .. } => "radix tree node reached twice (loop or shared node)",
            Self::NodeUnreadable { .. } => "radix tree node unreadable",
            Self::IndexBeyondKeyWidth { .. } => "radix table entry beyond the key width",
            Self::KeyOrder { .. } => "preserved block with an invalid order",
            Self::KeyNotRam { .. } => "preserved block outside RAM",
            Self::KeyInScratch { .. } => "preserved block in a scratch area",
            Self::TooManyNodes => "too many radix tree nodes",
            Self::SetFull => "no room to record another radix tree node",
            Self::Callback(_) => "radix tree walk stopped by its visitor",
        }
    }
}

impl<E: fmt::Debug> fmt::Display for WalkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())?;
        match self {
            Self::NodeMisaligned { level, phys }
            | Self::NodeNotRam { level, phys }
            | Self::NodeInScratch { level, phys }
            | Self::NodeRevisited { level, phys }
            | Self::NodeUnreadable { level, phys } => {
                write!(f, " (level {level}, phys {phys:#x})")
            }
            Self::IndexBeyondKeyWidth { level, index } => {
                write!(f, " (level {level}, index {index})")
            }
            Self::KeyOrder { key } => write!(f, " (key {key:#x})"),
            Self::KeyNotRam { phys, order } | Self::KeyInScratch { phys, order } => {
                write!(f, " (phys {phys:#x}, order {order})")
            }
            Self::Callback(e) => write!(f, ": {e:?}"),
            Self::BadGeometry | Self::TooManyNodes | Self::SetFull => Ok(()),
        }
    }
}

/// What a successful [`walk`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Nodes visited, tables and leaves, the root included.
    pub nodes: u64,
    /// Keys (preserved blocks) visited.
    pub keys: u64,
    /// Bytes of the preserved blocks, saturating (blocks of different orders may overlap).
    pub bytes: u64,
}

/// A table node on the walk's stack and where its scan is.
#[derive(Clone, Copy)]
struct Frame<'m> {
    words: &'m [u64],
    next: usize,
    prefix: u64,
    level: u32,
}

impl Frame<'_> {
    const EMPTY: Frame<'static> = Frame {
        words: &[],
        next: 0,
        prefix: 0,
        level: 0,
    };
}

/// The walk's state that every node and key check needs.
struct Walker<'g, 'm, 's, M: ?Sized, S: ?Sized> {
    g: &'g Geometry,
    mem: &'m M,
    seen: &'s mut S,
    max_nodes: u64,
    stats: WalkStats,
}

impl<'m, M: PhysMem + ?Sized, S: NodeSet + ?Sized> Walker<'_, 'm, '_, M, S> {
    /// Checks the node at `phys` of `level`, visits it and returns its words.
    fn enter<E>(
        &mut self,
        level: u32,
        phys: u64,
        visit_node: &mut impl FnMut(u64) -> Result<(), E>,
    ) -> Result<&'m [u64], WalkError<E>> {
        let size = self.g.page_size();
        if phys & size.wrapping_sub(1) != 0 {
            return Err(WalkError::NodeMisaligned { level, phys });
        }
        if phys.checked_add(size).is_none() || !self.mem.is_ram(phys, size) {
            return Err(WalkError::NodeNotRam { level, phys });
        }
        if self.mem.in_scratch(phys, size) {
            return Err(WalkError::NodeInScratch { level, phys });
        }
        match self.seen.insert(phys) {
            Ok(true) => {}
            Ok(false) => return Err(WalkError::NodeRevisited { level, phys }),
            Err(SetFull) => return Err(WalkError::SetFull),
        }
        if self.stats.nodes >= self.max_nodes {
            return Err(WalkError::TooManyNodes);
        }
        self.stats.nodes = self.stats.nodes.saturating_add(1);
        visit_node(phys).map_err(WalkError::Callback)?;
        let mem: &'m M = self.mem;
        match mem.node(phys) {
            Some(words) if words.len() == self.g.words_per_node() => Ok(words),
            _ => Err(WalkError::NodeUnreadable { level, phys }),
        }
    }

    /// Checks the key of a set bitmap bit and visits its block.
    #[inline]
    fn key<E>(
        &mut self,
        key: u64,
        visit_key: &mut impl FnMut(u64, u32) -> Result<(), E>,
    ) -> Result<(), WalkError<E>> {
        let (phys, order) = decode_key(self.g, key).ok_or(WalkError::KeyOrder { key })?;
        // order <= max_order, so the size fits in 63 bits.
        let size = self
            .g
            .page_size()
            .checked_shl(order)
            .ok_or(WalkError::KeyOrder { key })?;
        if phys.checked_add(size).is_none() || !self.mem.is_ram(phys, size) {
            return Err(WalkError::KeyNotRam { phys, order });
        }
        if self.mem.in_scratch(phys, size) {
            return Err(WalkError::KeyInScratch { phys, order });
        }
        self.stats.keys = self.stats.keys.saturating_add(1);
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        visit_key(phys, order).map_err(WalkError::Callback)
    }

    /// Visits every set bit of a bitmap leaf, in ascending order.
    fn leaf<E>(
        &mut self,
        words: &[u64],
        prefix: u64,
        visit_key: &mut impl FnMut(u64, u32) -> Result<(), E>,
    ) -> Result<(), WalkError<E>> {
        for (w, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                // w < words_per_node <= 2^13, so (w << 6 | bit) < 2^19 and lies below the
                // level 1 table bits of `prefix`; usize to u64 loses nothing.
                let index = ((w as u64) << 6) | u64::from(bit);
                self.key(prefix | index, visit_key)?;
            }
        }
        Ok(())
    }
}

/// The key prefix of entry `index` of a table of `level`, or `None` if it is beyond the key
/// width.
#[inline]
fn child_prefix(g: &Geometry, prefix: u64, level: u32, index: usize) -> Option<u64> {
    let shift = g.table_shift(level)?;
    let room = g.key_width().checked_sub(shift)?;
    // usize to u64 loses nothing: usize is at most 64 bits wide.
    let index = index as u64;
    if index.checked_shr(room).unwrap_or(0) != 0 {
        return None;
    }
    Some(prefix | index.checked_shl(shift)?)
}

/// Walks the radix tree rooted at `root`, checking everything before it is used.
///
/// Visits every node with `visit_node(phys)` (before its contents are read) and every preserved
/// block with `visit_key(phys, order)`, in exactly the order of the C `kho_radix_walk_tree()`:
/// depth first, table entries by ascending index, then bitmap bits in ascending order (which is
/// ascending key order). Every node must be page-aligned, RAM, outside the scratch areas and new
/// to `seen` (so a loop or a shared node fails the walk rather than running forever or
/// exponentially long), and at most `max_nodes` of them are visited. Every key must decode with
/// an order of at most `g.max_order` to a block that is RAM and not scratch.
///
/// The walk is iterative with a stack of at most [`MAX_DEPTH`] frames and allocates nothing. It
/// stops at the first error; the visitors may already have seen some nodes and keys then.
pub fn walk<M, S, E>(
    g: &Geometry,
    root: u64,
    mem: &M,
    seen: &mut S,
    max_nodes: u64,
    mut visit_node: impl FnMut(u64) -> Result<(), E>,
    mut visit_key: impl FnMut(u64, u32) -> Result<(), E>,
) -> Result<WalkStats, WalkError<E>>
where
    M: PhysMem + ?Sized,
    S: NodeSet + ?Sized,
{
    if !g.is_valid() {
        return Err(WalkError::BadGeometry);
    }
    let top = g.depth().checked_sub(1).ok_or(WalkError::BadGeometry)?;
    let mut w = Walker {
        g,
        mem,
        seen,
        max_nodes,
        stats: WalkStats::default(),
    };
    let mut stack = [Frame::EMPTY; MAX_DEPTH];
    let words = w.enter(top, root, &mut visit_node)?;
    let first = stack.first_mut().ok_or(WalkError::BadGeometry)?;
    *first = Frame {
        words,
        next: 0,
        prefix: 0,
        level: top,
    };
    let mut frames = 1usize;
    while let Some(current) = frames.checked_sub(1) {
        let frame = stack.get_mut(current).ok_or(WalkError::BadGeometry)?;
        let found = frame
            .words
            .iter()
            .enumerate()
            .skip(frame.next)
            .find(|&(_, &entry)| entry != 0);
        let Some((index, &child)) = found else {
            frames = current;
            continue;
        };
        frame.next = index.saturating_add(1);
        let level = frame.level;
        let prefix = child_prefix(g, frame.prefix, level, index)
            .ok_or(WalkError::IndexBeyondKeyWidth { level, index })?;
        // Frames are only pushed for levels >= 1.
        let child_level = level.checked_sub(1).ok_or(WalkError::BadGeometry)?;
        let words = w.enter(child_level, child, &mut visit_node)?;
        if child_level == 0 {
            w.leaf(words, prefix, &mut visit_key)?;
        } else {
            // At most depth - 1 <= MAX_DEPTH - 1 frames: each push is one level lower.
            let slot = stack.get_mut(frames).ok_or(WalkError::BadGeometry)?;
            *slot = Frame {
                words,
                next: 0,
                prefix,
                level: child_level,
            };
            frames = frames.saturating_add(1);
        }
    }
    Ok(w.stats)
}

// ---------------------------------------------------------------------------------------------
// Flattened device tree reader
// ---------------------------------------------------------------------------------------------

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// The header size of version 16 (no `size_dt_struct`) and of version 17 and later.
const FDT_V16_HEADER: usize = 36;
const FDT_V17_HEADER: usize = 40;
/// The deepest node nesting accepted (libfdt's `FDT_MAX_DEPTH`).
const FDT_MAX_NESTING: u32 = 32;

/// Why [`Fdt::new`] refused a blob. Offsets are relative to the structure block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is shorter than its header or its `totalsize`.
    Truncated,
    /// The magic number is not `0xd00dfeed`.
    BadMagic,
    /// The version is below 16, or the last compatible version above 17 or the version.
    BadVersion,
    /// A block lies outside `totalsize`, inside the header, or overlaps another block.
    BadLayout,
    /// The structure block is not 4-byte aligned or the reserve map not 8-byte aligned.
    Misaligned,
    /// The memory reserve map has no terminating entry within the blob.
    BadReserveMap,
    /// An unknown token, or a token that does not fit in the structure block.
    BadToken {
        /// Offset of the token.
        offset: usize,
    },
    /// A node's name is not NUL-terminated within the structure block.
    BadName {
        /// Offset of the `FDT_BEGIN_NODE` token.
        offset: usize,
    },
    /// A property's value overruns the structure block, or its name is not a NUL-terminated
    /// string within the strings block.
    BadProperty {
        /// Offset of the `FDT_PROP` token.
        offset: usize,
    },
    /// Node nesting is broken: no root node, an unbalanced `FDT_END_NODE`, a second root, or
    /// `FDT_END` inside a node.
    BadNesting {
        /// Offset of the offending token.
        offset: usize,
    },
    /// The root node has a name.
    RootName,
    /// A property follows a subnode in the same node.
    PropertyAfterSubnode {
        /// Offset of the `FDT_PROP` token.
        offset: usize,
    },
    /// Nodes are nested deeper than 32 levels.
    TooDeep,
    /// The structure block ends without an `FDT_END` token.
    NoEnd,
}

impl FdtError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Truncated => "FDT truncated",
            Self::BadMagic => "FDT magic is not 0xd00dfeed",
            Self::BadVersion => "unsupported FDT version",
            Self::BadLayout => "FDT blocks outside the blob or overlapping",
            Self::Misaligned => "FDT block misaligned",
            Self::BadReserveMap => "FDT reserve map unterminated",
            Self::BadToken { .. } => "bad FDT token",
            Self::BadName { .. } => "unterminated FDT node name",
            Self::BadProperty { .. } => "bad FDT property",
            Self::BadNesting { .. } => "FDT nodes badly nested",
            Self::RootName => "FDT root node has a name",
            Self::PropertyAfterSubnode { .. } => "FDT property after a subnode",
            Self::TooDeep => "FDT nodes nested too deep",
            Self::NoEnd => "FDT structure block without FDT_END",
        }
    }
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())?;
        match self {
            Self::BadToken { offset }
            | Self::BadName { offset }
            | Self::BadProperty { offset }
            | Self::BadNesting { offset }
            | Self::PropertyAfterSubnode { offset } => {
                write!(f, " (structure offset {offset:#x})")
            }
            _ => Ok(()),
        }
    }
}

/// The big-endian `u32` at `off` of `b`.
#[inline]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The big-endian `u64` at `off` of `b`.
#[inline]
fn be64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// `off` rounded up to a multiple of 4.
#[inline]
fn align4(off: usize) -> Option<usize> {
    Some(off.checked_add(3)? & !3)
}

/// The bytes of the NUL-terminated string at `off` of `b`, without the NUL.
#[inline]
fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    rest.get(..len)
}

/// A `u32` header field as `usize`; lossless wherever usize has at least 32 bits.
#[inline]
fn field(v: u32) -> usize {
    v as usize
}

/// The range `[off, off + size)` if it lies within `[lo, hi)`.
#[inline]
fn block(off: usize, size: usize, lo: usize, hi: usize) -> Option<(usize, usize)> {
    let end = off.checked_add(size)?;
    (off >= lo && end <= hi).then_some((off, end))
}

/// Whether two ranges overlap (empty ranges overlap nothing).
#[inline]
fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < a.1 && b.0 < b.1 && a.0 < b.1 && b.0 < a.1
}

/// One token of the structure block.
#[derive(Clone, Copy)]
enum Token<'a> {
    Begin(&'a [u8]),
    EndNode,
    Prop(Property<'a>),
    Nop,
    End,
}

/// A property: its name (without NUL) and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property's name.
    pub name: &'a [u8],
    /// The property's value.
    pub value: &'a [u8],
}

/// A checked, read-only flattened device tree.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    total: usize,
    /// Offset of the root node's first token after its `FDT_BEGIN_NODE`.
    root_body: usize,
}

impl<'a> Fdt<'a> {
    /// Checks the header, the block layout and the whole structure block of `bytes`.
    ///
    /// `bytes` may be longer than the blob's `totalsize`. After this succeeded, looking up
    /// properties and nodes cannot fail, but the accessors still check every offset.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        let hdr = |off| be32(bytes, off).ok_or(FdtError::Truncated);
        if hdr(0)? != FDT_MAGIC {
            return Err(FdtError::BadMagic);
        }
        let version = hdr(20)?;
        let last_comp = hdr(24)?;
        if version < 16 || last_comp > 17 || last_comp > version {
            return Err(FdtError::BadVersion);
        }
        let header = if version >= 17 {
            FDT_V17_HEADER
        } else {
            FDT_V16_HEADER
        };
        let total = field(hdr(4)?);
        if total < header || total > bytes.len() {
            return Err(FdtError::Truncated);
        }
        let blob = bytes.get(..total).ok_or(FdtError::Truncated)?;
        let off_struct = field(hdr(8)?);
        let off_strings = field(hdr(12)?);
        let off_rsvmap = field(hdr(16)?);
        let size_strings = field(hdr(32)?);
        let size_struct = if version >= 17 {
            field(hdr(36)?)
        } else if off_strings > off_struct {
            off_strings - off_struct
        } else {
            total.saturating_sub(off_struct)
        };
        if off_struct & 3 != 0 || off_rsvmap & 7 != 0 {
            return Err(FdtError::Misaligned);
        }
        let structs = block(off_struct, size_struct, header, total).ok_or(FdtError::BadLayout)?;
        let strings = block(off_strings, size_strings, header, total).ok_or(FdtError::BadLayout)?;
        if overlaps(structs, strings) {
            return Err(FdtError::BadLayout);
        }
        // The reserve map: 16-byte entries up to one of two zeros.
        if off_rsvmap < header {
            return Err(FdtError::BadLayout);
        }
        let mut end = off_rsvmap;
        loop {
            let addr = be64(blob, end).ok_or(FdtError::BadReserveMap)?;
            let size = be64(blob, end.saturating_add(8)).ok_or(FdtError::BadReserveMap)?;
            end = end.saturating_add(16);
            if addr == 0 && size == 0 {
                break;
            }
        }
        if overlaps((off_rsvmap, end), structs) || overlaps((off_rsvmap, end), strings) {
            return Err(FdtError::BadLayout);
        }
        let mut fdt = Fdt {
            structs: blob.get(structs.0..structs.1).ok_or(FdtError::BadLayout)?,
            strings: blob.get(strings.0..strings.1).ok_or(FdtError::BadLayout)?,
            total,
            root_body: 0,
        };
        fdt.root_body = fdt.check_structure()?;
        Ok(fdt)
    }

    /// The blob's `totalsize`.
    #[inline]
    pub fn total_size(&self) -> usize {
        self.total
    }

    /// The root node.
    #[inline]
    pub fn root(&self) -> Node<'a> {
        Node {
            fdt: *self,
            name: &[],
            body: self.root_body,
        }
    }

    /// Decodes the token at `off`; returns it and the offset of the next token.
    fn token(&self, off: usize) -> Result<(Token<'a>, usize), FdtError> {
        let bad = FdtError::BadToken { offset: off };
        let tag = be32(self.structs, off).ok_or(bad)?;
        let after = off.checked_add(4).ok_or(bad)?;
        match tag {
            FDT_BEGIN_NODE => {
                let name = cstr(self.structs, after).ok_or(FdtError::BadName { offset: off })?;
                let next = after
                    .checked_add(name.len())
                    .and_then(|v| v.checked_add(1))
                    .and_then(align4)
                    .ok_or(FdtError::BadName { offset: off })?;
                Ok((Token::Begin(name), next))
            }
            FDT_END_NODE => Ok((Token::EndNode, after)),
            FDT_PROP => {
                let bad = FdtError::BadProperty { offset: off };
                let len = field(be32(self.structs, after).ok_or(bad)?);
                let nameoff = field(be32(self.structs, after.saturating_add(4)).ok_or(bad)?);
                let start = off.checked_add(12).ok_or(bad)?;
                let end = start.checked_add(len).ok_or(bad)?;
                let value = self.structs.get(start..end).ok_or(bad)?;
                let name = cstr(self.strings, nameoff).ok_or(bad)?;
                let next = align4(end).ok_or(bad)?;
                Ok((Token::Prop(Property { name, value }), next))
            }
            FDT_NOP => Ok((Token::Nop, after)),
            FDT_END => Ok((Token::End, after)),
            _ => Err(bad),
        }
    }

    /// Checks the structure block; returns the offset of the root node's body.
    fn check_structure(&self) -> Result<usize, FdtError> {
        let mut off = 0;
        // The root: NOPs, then FDT_BEGIN_NODE with an empty name.
        let root_body = loop {
            match self.token(off)? {
                (Token::Nop, next) => off = next,
                (Token::Begin(name), next) => {
                    if !name.is_empty() {
                        return Err(FdtError::RootName);
                    }
                    break next;
                }
                _ => return Err(FdtError::BadNesting { offset: off }),
            }
        };
        off = root_body;
        // depth: nodes open; bit d of has_child: the open node at depth d had a subnode.
        let mut depth = 1u32;
        let mut has_child = 0u64;
        // Every token advances `off` by at least 4, so this ends within the block.
        loop {
            if off >= self.structs.len() {
                return Err(FdtError::NoEnd);
            }
            let (token, next) = self.token(off)?;
            match token {
                Token::Begin(_) => {
                    if depth == 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    if depth >= FDT_MAX_NESTING {
                        return Err(FdtError::TooDeep);
                    }
                    has_child |= 1u64 << depth;
                    depth += 1;
                    has_child &= !(1u64 << depth);
                }
                Token::EndNode => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or(FdtError::BadNesting { offset: off })?;
                }
                Token::Prop(_) => {
                    if depth == 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    if has_child & (1u64 << depth) != 0 {
                        return Err(FdtError::PropertyAfterSubnode { offset: off });
                    }
                }
                Token::Nop => {}
                Token::End => {
                    if depth != 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    return Ok(root_body);
                }
            }
            off = next;
        }
    }
}

/// A node of an [`Fdt`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    name: &'a [u8],
    /// Offset of the node's first token after its `FDT_BEGIN_NODE`.
    body: usize,
}

impl<'a> Node<'a> {
    /// The node's name, unit address included (empty for the root).
    #[inline]
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The node's properties, in order.
    #[inline]
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            fdt: self.fdt,
            off: self.body,
            done: false,
        }
    }

    /// The value of the node's first property called `name`, as libfdt's `fdt_getprop()`.
    pub fn property(&self, name: &[u8]) -> Result<Option<&'a [u8]>, FdtError> {
        for prop in self.properties() {
            let prop = prop?;
            if prop.name == name {
                return Ok(Some(prop.value));
            }
        }
        Ok(None)
    }

    /// Whether the node's `compatible` stringlist has an entry equal to `compat`, as libfdt's
    /// `fdt_node_check_compatible()`; `None` if the node has no `compatible`.
    pub fn compatible_with(&self, compat: &[u8]) -> Result<Option<bool>, FdtError> {
        Ok(self
            .property(b"compatible")?
            .map(|list| stringlist_contains(list, compat)))
    }

    /// The node's direct subnodes, in order.
    #[inline]
    pub fn subnodes(&self) -> Subnodes<'a> {
        Subnodes {
            fdt: self.fdt,
            off: self.body,
            done: false,
        }
    }

    /// The first direct subnode matching `name`, as libfdt's `fdt_subnode_offset()`: its name
    /// equals `name`, or `name` has no unit address and the node's is `name@...`.
    pub fn subnode(&self, name: &[u8]) -> Result<Option<Node<'a>>, FdtError> {
        for node in self.subnodes() {
            let node = node?;
            if nodename_eq(node.name, name) {
                return Ok(Some(node));
            }
        }
        Ok(None)
    }
}

/// libfdt's `fdt_nodename_eq_()`: whether the node called `node` matches the lookup `name`.
#[inline]
pub fn nodename_eq(node: &[u8], name: &[u8]) -> bool {
    match node.strip_prefix(name) {
        Some([]) => true,
        Some([b'@', ..]) => !name.contains(&b'@'),
        _ => false,
    }
}

/// Whether the stringlist `list` (NUL-terminated strings back to back) has an entry equal to
/// `s`, as libfdt's `fdt_stringlist_contains()`: an unterminated last entry does not count.
pub fn stringlist_contains(list: &[u8], s: &[u8]) -> bool {
    let mut rest = list;
    while let Some(len) = rest.iter().position(|&c| c == 0) {
        if rest.get(..len) == Some(s) {
            return true;
        }
        rest = rest.get(len.saturating_add(1)..).unwrap_or(&[]);
    }
    false
}

/// The value of a string property without its NUL: `None` unless `value` is exactly one
/// NUL-terminated string.
#[inline]
pub fn prop_str(value: &[u8]) -> Option<&[u8]> {
    match value.split_last() {
        Some((0, s)) if !s.contains(&0) => Some(s),
        _ => None,
    }
}

/// Iterator over a node's properties; see [`Node::properties`].
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    fdt: Fdt<'a>,
    off: usize,
    done: bool,
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Every token advances `off`, so this ends within the block.
        while !self.done {
            match self.fdt.token(self.off) {
                Ok((Token::Nop, next)) => self.off = next,
                Ok((Token::Prop(prop), next)) => {
                    self.off = next;
                    return Some(Ok(prop));
                }
                Ok(_) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Iterator over a node's direct subnodes; see [`Node::subnodes`].
#[derive(Clone, Debug)]
pub struct Subnodes<'a> {
    fdt: Fdt<'a>,
    off: usize,
    done: bool,
}

impl<'a> Subnodes<'a> {
    /// Skips the rest of the node whose body starts at `off`; returns the offset after its
    /// `FDT_END_NODE`.
    fn skip_node(&self, mut off: usize) -> Result<usize, FdtError> {
        let mut depth = 1u32;
        // Every token advances `off`, so this ends within the block.
        loop {
            let (token, next) = self.fdt.token(off)?;
            match token {
                Token::Begin(_) => {
                    depth = depth.checked_add(1).ok_or(FdtError::TooDeep)?;
                }
                Token::EndNode => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(next);
                    }
                }
                Token::End => return Err(FdtError::BadNesting { offset: off }),
                Token::Prop(_) | Token::Nop => {}
            }
            off = next;
        }
    }

    fn step(&mut self) -> Result<Option<Node<'a>>, FdtError> {
        loop {
            let (token, next) = self.fdt.token(self.off)?;
            match token {
                Token::Prop(_) | Token::Nop => self.off = next,
                Token::Begin(name) => {
                    self.off = self.skip_node(next)?;
                    return Ok(Some(Node {
                        fdt: self.fdt,
                        name,
                        body: next,
                    }));
                }
                Token::EndNode | Token::End => return Ok(None),
            }
        }
    }
}

impl<'a> Iterator for Subnodes<'a> {
    type Item = Result<Node<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(node)) => Some(Ok(node)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The KHO root node
// ---------------------------------------------------------------------------------------------

/// Why [`parse_root`] refused the KHO FDT. Subtrees are numbered from 0 in FDT order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootError {
    /// The blob is no valid FDT.
    Fdt(FdtError),
    /// The geometry is not [valid](Geometry::is_valid).
    BadGeometry,
    /// The root node has no `compatible` property.
    NoCompatible,
    /// The root's `compatible` has no `kho-v4` entry.
    Incompatible,
    /// The root node has no `preserved-memory-map` property.
    NoMemoryMap,
    /// `preserved-memory-map` is not 8 bytes long.
    MemoryMapSize {
        /// Its length.
        len: usize,
    },
    /// `preserved-memory-map` is 0.
    MemoryMapZero,
    /// `preserved-memory-map` is not page-aligned.
    MemoryMapMisaligned {
        /// Its value.
        phys: u64,
    },
    /// A subtree's `preserved-data` is missing or not 8 bytes long.
    SubtreeData {
        /// The subtree's number.
        index: usize,
    },
    /// A subtree's `blob-size` is missing or not 8 bytes long.
    SubtreeSize {
        /// The subtree's number.
        index: usize,
    },
    /// Two subtrees have the same name.
    DuplicateSubtree {
        /// The number of the second one.
        index: usize,
    },
    /// The root has more than [`MAX_SUBTREES`] subnodes.
    TooManySubtrees,
}

impl RootError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Fdt(e) => e.describe(),
            Self::BadGeometry => "invalid radix tree geometry",
            Self::NoCompatible => "KHO root node without compatible",
            Self::Incompatible => "KHO root node not compatible with kho-v4",
            Self::NoMemoryMap => "KHO root node without preserved-memory-map",
            Self::MemoryMapSize { .. } => "KHO preserved-memory-map is not a u64",
            Self::MemoryMapZero => "KHO preserved-memory-map is 0",
            Self::MemoryMapMisaligned { .. } => "KHO preserved-memory-map not page-aligned",
            Self::SubtreeData { .. } => "KHO subtree without a u64 preserved-data",
            Self::SubtreeSize { .. } => "KHO subtree without a u64 blob-size",
            Self::DuplicateSubtree { .. } => "two KHO subtrees with the same name",
            Self::TooManySubtrees => "too many KHO subtrees",
        }
    }
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "{e}"),
            Self::MemoryMapSize { len } => write!(f, "{} ({len} bytes)", self.describe()),
            Self::MemoryMapMisaligned { phys } => write!(f, "{} ({phys:#x})", self.describe()),
            Self::SubtreeData { index }
            | Self::SubtreeSize { index }
            | Self::DuplicateSubtree { index } => {
                write!(f, "{} (subtree {index})", self.describe())
            }
            _ => f.write_str(self.describe()),
        }
    }
}

impl From<FdtError> for RootError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

/// A preserved blob named by a subnode of the KHO root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subtree<'a> {
    /// The subnode's name.
    pub name: &'a [u8],
    /// `preserved-data`: the blob's physical address.
    pub preserved_data: u64,
    /// `blob-size`: the blob's size in bytes.
    pub blob_size: u64,
}

/// A property that must be a native-endian `u64`.
#[inline]
fn u64_prop(value: Option<&[u8]>) -> Option<u64> {
    Some(u64::from_ne_bytes(value?.try_into().ok()?))
}

/// Reads subtree `index` from its node.
fn read_subtree<'a>(node: &Node<'a>, index: usize) -> Result<Subtree<'a>, RootError> {
    let preserved_data =
        u64_prop(node.property(KHO_SUB_TREE_PROP_NAME)?).ok_or(RootError::SubtreeData { index })?;
    let blob_size = u64_prop(node.property(KHO_SUB_TREE_SIZE_PROP_NAME)?)
        .ok_or(RootError::SubtreeSize { index })?;
    Ok(Subtree {
        name: node.name(),
        preserved_data,
        blob_size,
    })
}

/// The checked root node of a KHO FDT.
#[derive(Clone, Copy, Debug)]
pub struct KhoRoot<'a> {
    root: Node<'a>,
    mem_map: u64,
    count: usize,
}

/// Parses and checks the KHO FDT in `fdt_bytes`.
///
/// Checks the FDT ([`Fdt::new`]); that the root's `compatible` has a `kho-v4` entry; that
/// `preserved-memory-map` is a native-endian `u64`, non-zero and page-aligned; and that there
/// are at most [`MAX_SUBTREES`] subnodes, each with a `u64` `preserved-data` and `blob-size`
/// and a name no other subnode has. The radix tree and the blobs are not looked at: see
/// [`walk`] and [`Coverage`].
pub fn parse_root<'a>(g: &Geometry, fdt_bytes: &'a [u8]) -> Result<KhoRoot<'a>, RootError> {
    if !g.is_valid() {
        return Err(RootError::BadGeometry);
    }
    let fdt = Fdt::new(fdt_bytes)?;
    let root = fdt.root();
    match root.compatible_with(KHO_FDT_COMPATIBLE)? {
        None => return Err(RootError::NoCompatible),
        Some(false) => return Err(RootError::Incompatible),
        Some(true) => {}
    }
    let value = root
        .property(KHO_FDT_MEMORY_MAP_PROP_NAME)?
        .ok_or(RootError::NoMemoryMap)?;
    let mem_map = u64_prop(Some(value)).ok_or(RootError::MemoryMapSize { len: value.len() })?;
    if mem_map == 0 {
        return Err(RootError::MemoryMapZero);
    }
    if mem_map & g.page_size().wrapping_sub(1) != 0 {
        return Err(RootError::MemoryMapMisaligned { phys: mem_map });
    }
    let mut count = 0usize;
    for (index, node) in root.subnodes().enumerate() {
        let node = node?;
        if index >= MAX_SUBTREES {
            return Err(RootError::TooManySubtrees);
        }
        read_subtree(&node, index)?;
        for earlier in root.subnodes().take(index) {
            if earlier?.name() == node.name() {
                return Err(RootError::DuplicateSubtree { index });
            }
        }
        count = index.saturating_add(1);
    }
    Ok(KhoRoot {
        root,
        mem_map,
        count,
    })
}

impl<'a> KhoRoot<'a> {
    /// The physical address of the radix tree root (`preserved-memory-map`).
    #[inline]
    pub fn mem_map(&self) -> u64 {
        self.mem_map
    }

    /// The number of subtrees.
    #[inline]
    pub fn subtree_count(&self) -> usize {
        self.count
    }

    /// The root node, for other lookups.
    #[inline]
    pub fn node(&self) -> Node<'a> {
        self.root
    }

    /// The subtrees in FDT order.
    #[inline]
    pub fn subtrees(&self) -> Subtrees<'a> {
        Subtrees {
            nodes: self.root.subnodes(),
            index: 0,
        }
    }

    /// The subtree `name`, looked up as the C `kho_retrieve_subtree()` does (libfdt's
    /// `fdt_subnode_offset()`, see [`Node::subnode`]).
    pub fn find(&self, name: &[u8]) -> Option<Subtree<'a>> {
        self.subtrees().find(|s| nodename_eq(s.name, name))
    }
}

/// Iterator over the subtrees of a [`KhoRoot`].
///
/// [`parse_root`] has checked every subtree, so this yields them all; should a read fail
/// nonetheless, the iteration ends.
#[derive(Clone, Debug)]
pub struct Subtrees<'a> {
    nodes: Subnodes<'a>,
    index: usize,
}

impl<'a> Iterator for Subtrees<'a> {
    type Item = Subtree<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.nodes.next()?.ok()?;
        let subtree = read_subtree(&node, self.index).ok()?;
        self.index = self.index.saturating_add(1);
        Some(subtree)
    }
}

// ---------------------------------------------------------------------------------------------
// Subtree coverage
// ---------------------------------------------------------------------------------------------

/// Why [`Coverage`] refused a subtree or found one not covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverError {
    /// More subtrees than the [`Coverage`] has room for.
    TooManySubtrees,
    /// A subtree's `blob-size` is 0.
    EmptyBlob {
        /// The subtree's number.
        index: usize,
    },
    /// A subtree's blob ends beyond the 64-bit address space.
    BlobOverflow {
        /// The subtree's number.
        index: usize,
    },
    /// A recorded block ends beyond the 64-bit address space.
    BlockOverflow,
    /// The blobs are covered in more separate pieces than the [`Coverage`] has room for.
    TooManyPieces,
    /// A subtree's blob is not entirely covered by preserved blocks.
    NotCovered {
        /// The subtree's number.
        index: usize,
        /// The first byte of the blob not covered.
        at: u64,
    },
}

impl CoverError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::TooManySubtrees => "too many KHO subtrees to check",
            Self::EmptyBlob { .. } => "KHO subtree with an empty blob",
            Self::BlobOverflow { .. } => "KHO subtree blob beyond the address space",
            Self::BlockOverflow => "preserved block beyond the address space",
            Self::TooManyPieces => "KHO subtree blobs too fragmented to check",
            Self::NotCovered { .. } => "KHO subtree blob not preserved",
        }
    }
}

impl fmt::Display for CoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyBlob { index } | Self::BlobOverflow { index } => {
                write!(f, "{} (subtree {index})", self.describe())
            }
            Self::NotCovered { index, at } => {
                write!(f, "{} (subtree {index}, from {at:#x})", self.describe())
            }
            _ => f.write_str(self.describe()),
        }
    }
}

/// A subtree's blob `[start, end)`.
#[derive(Clone, Copy, Debug)]
struct Blob {
    start: u64,
    end: u64,
}

/// A covered part `[start, end)` of blob `blob`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    blob: usize,
    start: u64,
    end: u64,
}

/// Checks that every subtree's blob is covered by preserved blocks, in fixed space.
///
/// Add the subtrees ([`Coverage::add_root`] or [`Coverage::add_subtree`]), [`record`] every
/// preserved block (from the `visit_key` of [`walk`]), then [`finish`]. The covered parts of
/// each blob are kept as disjoint ranges, merged as blocks arrive, so blocks that overlap (of
/// different orders) are counted once and a hole is always found. `N` bounds the subtrees and
/// `P` the separate covered pieces at any time; with the defaults it takes about 2.5 KiB, so in
/// the kernel keep it off the stack.
///
/// [`record`]: Coverage::record
/// [`finish`]: Coverage::finish
#[derive(Clone, Debug)]
pub struct Coverage<const N: usize = 64, const P: usize = 64> {
    blobs: [Blob; N],
    nblobs: usize,
    pieces: [Piece; P],
    npieces: usize,
}

impl<const N: usize, const P: usize> Default for Coverage<N, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const P: usize> Coverage<N, P> {
    /// No subtree yet.
    pub const fn new() -> Self {
        Self {
            blobs: [Blob { start: 0, end: 0 }; N],
            nblobs: 0,
            pieces: [Piece {
                blob: 0,
                start: 0,
                end: 0,
            }; P],
            npieces: 0,
        }
    }

    /// Adds a subtree's blob `[preserved_data, preserved_data + blob_size)`.
    pub fn add_subtree(&mut self, preserved_data: u64, blob_size: u64) -> Result<(), CoverError> {
        let index = self.nblobs;
        if blob_size == 0 {
            return Err(CoverError::EmptyBlob { index });
        }
        let end = preserved_data
            .checked_add(blob_size)
            .ok_or(CoverError::BlobOverflow { index })?;
        let slot = self
            .blobs
            .get_mut(index)
            .ok_or(CoverError::TooManySubtrees)?;
        *slot = Blob {
            start: preserved_data,
            end,
        };
        self.nblobs = index.saturating_add(1);
        Ok(())
    }

    /// Adds every subtree of `root`, numbered as in the FDT.
    pub fn add_root(&mut self, root: &KhoRoot<'_>) -> Result<(), CoverError> {
        for s in root.subtrees() {
            self.add_subtree(s.preserved_data, s.blob_size)?;
        }
        Ok(())
    }

    /// The number of subtrees added.
    #[inline]
    pub fn subtrees(&self) -> usize {
        self.nblobs
    }

    /// Records the preserved block `[phys, phys + size)`.
    pub fn record(&mut self, phys: u64, size: u64) -> Result<(), CoverError> {
        let end = phys.checked_add(size).ok_or(CoverError::BlockOverflow)?;
        for index in 0..self.nblobs {
            let Some(&blob) = self.blobs.get(index) else {
                break;
            };
            let start = phys.max(blob.start);
            let stop = end.min(blob.end);
            if start < stop {
                self.merge(index, start, stop)?;
            }
        }
        Ok(())
    }

    /// Records the preserved block of `order` at `phys`, as [`walk`] reports it.
    #[inline]
    pub fn record_key(&mut self, g: &Geometry, phys: u64, order: u32) -> Result<(), CoverError> {
        let size = g
            .page_size()
            .checked_shl(order)
            .filter(|&s| s != 0)
            .ok_or(CoverError::BlockOverflow)?;
        self.record(phys, size)
    }

    /// Adds `[start, end)` to the covered pieces of blob `index`, merging it with those it
    /// overlaps or touches.
    fn merge(&mut self, index: usize, mut start: u64, mut end: u64) -> Result<(), CoverError> {
        let mut i = 0;
        while i < self.npieces {
            let Some(&p) = self.pieces.get(i) else {
                break;
            };
            if p.blob == index && p.start <= end && start <= p.end {
                start = start.min(p.start);
                end = end.max(p.end);
                // Remove piece i: move the last piece into its place.
                self.npieces -= 1;
                let last = self.pieces.get(self.npieces).copied();
                if let (Some(last), Some(slot)) = (last, self.pieces.get_mut(i)) {
                    *slot = last;
                }
            } else {
                i += 1;
            }
        }
        let slot = self
            .pieces
            .get_mut(self.npieces)
            .ok_or(CoverError::TooManyPieces)?;
        *slot = Piece {
            blob: index,
            start,
            end,
        };
        self.npieces = self.npieces.saturating_add(1);
        Ok(())
    }

    /// Checks that every blob is entirely covered; the first one that is not is the error.
    pub fn finish(&self) -> Result<(), CoverError> {
        let pieces = self.pieces.get(..self.npieces).unwrap_or(&[]);
        for (index, blob) in self.blobs.iter().take(self.nblobs).enumerate() {
            // Pieces of a blob are disjoint and not adjacent: it is covered iff one piece is
            // all of it; otherwise the hole starts where the piece holding its start ends.
            let first = pieces
                .iter()
                .find(|p| p.blob == index && p.start <= blob.start);
            match first {
                Some(p) if p.end >= blob.end => {}
                Some(p) => return Err(CoverError::NotCovered { index, at: p.end }),
                None => {
                    return Err(CoverError::NotCovered {
                        index,
                        at: blob.start,
                    })
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Everything at once
// ---------------------------------------------------------------------------------------------

/// Why [`validate`] refused a handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverError {
    /// The root FDT was refused.
    Root(RootError),
    /// The radix tree was refused (never with [`WalkError::Callback`]).
    Walk(WalkError<CoverError>),
    /// A subtree blob was refused or is not covered by preserved blocks.
    Cover(CoverError),
}

impl HandoverError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Root(e) => e.describe(),
            Self::Walk(e) => e.describe(),
            Self::Cover(e) => e.describe(),
        }
    }
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root(e) => write!(f, "{e}"),
            Self::Walk(e) => write!(f, "{e}"),
            Self::Cover(e) => write!(f, "{e}"),
        }
    }
}

/// Checks a whole handover before anything of it is used: [`parse_root`] of `fdt_bytes`, a
/// [`walk`] of its radix tree (`seen` and `max_nodes` as there) and the [`Coverage`] of every
/// subtree blob by the preserved blocks, in `cov`, which must be new.
///
/// Only reads: nothing is reserved or restored, so the caller can walk again with visitors that
/// act once this succeeded.
pub fn validate<'a, M, S, const N: usize, const P: usize>(
    g: &Geometry,
    fdt_bytes: &'a [u8],
    mem: &M,
    seen: &mut S,
    max_nodes: u64,
    cov: &mut Coverage<N, P>,
) -> Result<(KhoRoot<'a>, WalkStats), HandoverError>
where
    M: PhysMem + ?Sized,
    S: NodeSet + ?Sized,
{
    let root = parse_root(g, fdt_bytes).map_err(HandoverError::Root)?;
    cov.add_root(&root).map_err(HandoverError::Cover)?;
    let stats = walk(
        g,
        root.mem_map(),
        mem,
        seen,
        max_nodes,
        |_| Ok(()),
        |phys, order| cov.record_key(g, phys, order),
    )
    .map_err(|e| match e {
        WalkError::Callback(c) => HandoverError::Cover(c),
        e => HandoverError::Walk(e),
    })?;
    cov.finish().map_err(HandoverError::Cover)?;
    Ok((root, stats))
}
