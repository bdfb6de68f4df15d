// SPDX-License-Identifier: GPL-2.0

//! A naive reference of [`walk`](crate::walk) and [`Coverage`](crate::Coverage) for differential
//! testing: recursive like the C walk, with std collections, the key formulas of [`cref`] and the
//! same checks in the same order. Only for valid geometries.

use crate::cref;
use crate::sim::SimMem;
use crate::{Geometry, PhysMem, WalkError};
use std::collections::HashSet;

/// What the reference walk saw: the nodes and the blocks (phys, order) in visiting order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visited {
    /// Node addresses.
    pub nodes: Vec<u64>,
    /// Preserved blocks.
    pub keys: Vec<(u64, u32)>,
}

struct Ref<'a> {
    g: Geometry,
    mem: &'a SimMem,
    seen: HashSet<u64>,
    max_nodes: u64,
    out: Visited,
}

type R = Result<(), WalkError<()>>;

impl Ref<'_> {
    fn node(&mut self, level: u32, phys: u64) -> Result<Vec<u64>, WalkError<()>> {
        let page = 1u64 << self.g.page_shift;
        if phys % page != 0 {
            return Err(WalkError::NodeMisaligned { level, phys });
        }
        if phys.checked_add(page).is_none() || !self.mem.is_ram(phys, page) {
            return Err(WalkError::NodeNotRam { level, phys });
        }
        if self.mem.in_scratch(phys, page) {
            return Err(WalkError::NodeInScratch { level, phys });
        }
        if !self.seen.insert(phys) {
            return Err(WalkError::NodeRevisited { level, phys });
        }
        if self.out.nodes.len() as u64 >= self.max_nodes {
            return Err(WalkError::TooManyNodes);
        }
        self.out.nodes.push(phys);
        match self.mem.node(phys) {
            Some(w) if w.len() == self.g.words_per_node() => Ok(w.to_vec()),
            _ => Err(WalkError::NodeUnreadable { level, phys }),
        }
    }

    fn key(&mut self, key: u64) -> R {
        let ps = self.g.page_shift;
        let fls = 64 - key.leading_zeros();
        if key == 0 || fls > cref::key_width(ps) {
            return Err(WalkError::KeyOrder { key });
        }
        // The C decode shifts by 64 or more (undefined) for orders above 51: check first.
        if 64 - (ps + fls - 1) > self.g.max_order {
            return Err(WalkError::KeyOrder { key });
        }
        let (phys, order) = cref::decode(ps, key);
        let size = 1u64 << (ps + order);
        if phys.checked_add(size).is_none() || !self.mem.is_ram(phys, size) {
            return Err(WalkError::KeyNotRam { phys, order });
        }
        if self.mem.in_scratch(phys, size) {
            return Err(WalkError::KeyInScratch { phys, order });
        }
        self.out.keys.push((phys, order));
        Ok(())
    }

    /// `__kho_radix_walk_tree()` of the (already entered) table `table` of `level`.
    fn table(&mut self, table: &[u64], level: u32, start: u64) -> R {
        let ps = self.g.page_shift;
        for (i, &entry) in table.iter().enumerate() {
            if entry == 0 {
                continue;
            }
            let shift = (level - 1) * cref::table_log2(ps) + cref::bitmap_log2(ps);
            // The C code would build a key wider than the key width here.
            if shift + 64 - (i as u64).leading_zeros() > cref::key_width(ps) {
                return Err(WalkError::IndexBeyondKeyWidth { level, index: i });
            }
            let key = start | ((i as u64) << shift);
            let words = self.node(level - 1, entry)?;
            if level == 1 {
                // kho_radix_walk_leaf(): for_each_set_bit.
                for bit in 0..words.len() * 64 {
                    if words[bit / 64] >> (bit % 64) & 1 == 1 {
                        self.key(key | bit as u64)?;
                    }
                }
            } else {
                self.table(&words, level - 1, key)?;
            }
        }
        Ok(())
    }
}

/// Walks like [`walk`](crate::walk) with a node set without bound; returns what it visited
/// (also on error, up to the error) and the result.
pub fn walk(g: &Geometry, root: u64, mem: &SimMem, max_nodes: u64) -> (Visited, R) {
    let mut r = Ref {
        g: *g,
        mem,
        seen: HashSet::new(),
        max_nodes,
        out: Visited::default(),
    };
    let top = cref::depth(g.page_shift) - 1;
    let res = r.node(top, root).and_then(|words| r.table(&words, top, 0));
    (r.out, res)
}

/// Whether every blob `[data, data + size)` is covered by the blocks: the union of blocks,
/// sorted and merged. Returns the number of the first blob not covered.
pub fn uncovered(g: &Geometry, blobs: &[(u64, u64)], keys: &[(u64, u32)]) -> Option<usize> {
    let mut iv: Vec<(u128, u128)> = keys
        .iter()
        .map(|&(p, o)| (p as u128, p as u128 + ((1u128) << (g.page_shift + o))))
        .collect();
    iv.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in iv {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    blobs.iter().position(|&(d, z)| {
        let (s, e) = (d as u128, d as u128 + z as u128);
        !merged.iter().any(|&(a, b)| a <= s && e <= b)
    })
}
