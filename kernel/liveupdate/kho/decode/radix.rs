// SPDX-License-Identifier: GPL-2.0

//! The walk of the radix tree of preserved blocks, checking every node and key before use.

use super::{
    decode_key,
    Geometry,
    MAX_DEPTH, //
};
use core::fmt;

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
