// SPDX-License-Identifier: GPL-2.0

//! Simulated physical memory and node sets for the walker.

use crate::{NodeSet, PhysMem, SetFull};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// Zeros for RAM that holds no node of the simulation (the largest node has 8192 words).
static ZERO_PAGE: [u64; 8192] = [0; 8192];

/// Physical memory: RAM and scratch ranges, and the node pages in them.
///
/// Reading RAM that holds no node gives zeros. `node()` asserts that the walker checked the
/// address first (aligned, RAM, not scratch) and counts the reads.
#[derive(Clone, Debug)]
pub struct SimMem {
    /// `u64` words of a node (the page size / 8).
    pub words: usize,
    /// Node pages by physical address, `words` long each.
    pub nodes: HashMap<u64, Box<[u64]>>,
    /// RAM ranges (base, size); a range checked must lie within one of them.
    pub ram: Vec<(u64, u64)>,
    /// Scratch ranges (base, size).
    pub scratch: Vec<(u64, u64)>,
    /// Number of `node()` calls.
    pub reads: Cell<u64>,
    /// Whether `node()` returns `None` for RAM without a node (instead of zeros).
    pub strict_nodes: bool,
}

impl SimMem {
    /// Memory of nodes of `words` words, without RAM yet.
    pub fn new(words: usize) -> Self {
        Self {
            words,
            nodes: HashMap::new(),
            ram: Vec::new(),
            scratch: Vec::new(),
            reads: Cell::new(0),
            strict_nodes: false,
        }
    }

    /// The node at `phys`, created zeroed if there is none.
    pub fn node_mut(&mut self, phys: u64) -> &mut [u64] {
        let words = self.words;
        self.nodes
            .entry(phys)
            .or_insert_with(|| vec![0; words].into_boxed_slice())
    }

    /// Whether `[base, base + size)` lies in RAM and outside scratch, by the simulation.
    pub fn usable(&self, base: u64, size: u64) -> bool {
        self.is_ram(base, size) && !self.in_scratch(base, size)
    }
}

impl PhysMem for SimMem {
    fn is_ram(&self, base: u64, size: u64) -> bool {
        let end = base
            .checked_add(size)
            .expect("the walker passed an overflowing range");
        self.ram
            .iter()
            .any(|&(b, s)| base >= b && b.checked_add(s).is_some_and(|e| end <= e))
    }

    fn in_scratch(&self, base: u64, size: u64) -> bool {
        let end = base
            .checked_add(size)
            .expect("the walker passed an overflowing range");
        self.scratch
            .iter()
            .any(|&(b, s)| base < b.saturating_add(s) && end > b)
    }

    fn node(&self, phys: u64) -> Option<&[u64]> {
        let page = (self.words as u64) * 8;
        assert_eq!(
            phys % page,
            0,
            "node({phys:#x}) read before its alignment was checked"
        );
        assert!(
            self.usable(phys, page),
            "node({phys:#x}) read before RAM/scratch were checked"
        );
        self.reads.set(self.reads.get() + 1);
        match self.nodes.get(&phys) {
            Some(n) => Some(n),
            None if self.strict_nodes => None,
            None => ZERO_PAGE.get(..self.words),
        }
    }
}

/// A [`NodeSet`] in a `HashSet`, with an optional capacity.
#[derive(Clone, Debug, Default)]
pub struct HashNodeSet {
    /// The recorded addresses.
    pub set: HashSet<u64>,
    /// The most addresses it holds, if bounded.
    pub capacity: Option<usize>,
}

impl NodeSet for HashNodeSet {
    fn insert(&mut self, phys: u64) -> Result<bool, SetFull> {
        if self.set.contains(&phys) {
            return Ok(false);
        }
        if self.capacity.is_some_and(|c| self.set.len() >= c) {
            return Err(SetFull);
        }
        Ok(self.set.insert(phys))
    }
}

/// What [`walk_collect`] saw: nodes and blocks in visiting order, and the result.
pub type Collected = (
    Vec<u64>,
    Vec<(u64, u32)>,
    Result<crate::WalkStats, crate::WalkError<()>>,
);

/// Walks with visitors that record every node and block.
pub fn walk_collect<S: NodeSet + ?Sized>(
    g: &crate::Geometry,
    root: u64,
    mem: &SimMem,
    seen: &mut S,
    max_nodes: u64,
) -> Collected {
    let mut nodes = Vec::new();
    let mut keys = Vec::new();
    let res = crate::walk(
        g,
        root,
        mem,
        seen,
        max_nodes,
        |phys| {
            nodes.push(phys);
            Ok(())
        },
        |phys, order| {
            keys.push((phys, order));
            Ok(())
        },
    );
    (nodes, keys, res)
}
