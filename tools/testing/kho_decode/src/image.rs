// SPDX-License-Identifier: GPL-2.0

//! KHO images built the way the C code builds them: a radix tree of preserved blocks in
//! simulated memory, and the root FDT that points at it.

use crate::cref;
use crate::fdt_writer::{RootSpec, SubtreeSpec};
use crate::sim::SimMem;
use crate::Geometry;

/// Default RAM: 4 GiB at 4 GiB.
pub const RAM: (u64, u64) = (0x1_0000_0000, 0x1_0000_0000);
/// Default scratch area: 256 MiB at 7 GiB.
pub const SCRATCH: (u64, u64) = (0x1_c000_0000, 0x1000_0000);
/// Where the builder allocates radix tree nodes: from the start of RAM up.
pub const NODE_BASE: u64 = RAM.0;

/// A KHO image under construction: simulated memory with the radix tree, the blocks preserved
/// in it, and the root FDT as a spec.
#[derive(Clone, Debug)]
pub struct Image {
    /// The geometry the tree is laid out for.
    pub g: Geometry,
    /// The memory: RAM, scratch and the tree's nodes.
    pub mem: SimMem,
    /// The radix tree root.
    pub root: u64,
    /// Nodes in allocation order (the root first).
    pub node_list: Vec<u64>,
    /// The preserved blocks (phys, order) in the order they were added.
    pub keys: Vec<(u64, u32)>,
    /// The root FDT.
    pub spec: RootSpec,
    next_node: u64,
}

impl Image {
    /// An empty tree (just its root node) in the default memory layout.
    pub fn new(g: Geometry) -> Self {
        let mut mem = SimMem::new(g.words_per_node());
        mem.ram.push(RAM);
        mem.scratch.push(SCRATCH);
        let mut img = Self {
            g,
            mem,
            root: 0,
            node_list: Vec::new(),
            keys: Vec::new(),
            spec: RootSpec::new(0),
            next_node: NODE_BASE,
        };
        img.root = img.alloc_node();
        img.spec = RootSpec::new(img.root);
        img
    }

    /// The page size.
    pub fn page(&self) -> u64 {
        1 << self.g.page_shift
    }

    /// A new zeroed node page (`kho_radix_alloc_node()`).
    pub fn alloc_node(&mut self) -> u64 {
        let phys = self.next_node;
        self.next_node += self.page();
        self.mem.node_mut(phys);
        self.node_list.push(phys);
        phys
    }

    /// The word at `index` of the node at `node`.
    pub fn entry(&mut self, node: u64, index: usize) -> &mut u64 {
        &mut self.mem.node_mut(node)[index]
    }

    /// `kho_radix_add_key()` of the block of `order` at `phys`.
    pub fn add_key(&mut self, phys: u64, order: u32) {
        let ps = self.g.page_shift;
        let key = cref::encode(ps, phys, order);
        assert!(
            64 - key.leading_zeros() <= cref::key_width(ps),
            "C refuses this key"
        );
        let mut node = self.root;
        for level in (1..cref::depth(ps)).rev() {
            let idx = cref::table_index(ps, key, level);
            let next = *self.entry(node, idx);
            node = if next != 0 {
                next
            } else {
                let new = self.alloc_node();
                *self.entry(node, idx) = new;
                new
            };
        }
        let bit = cref::bitmap_index(ps, key);
        *self.entry(node, bit / 64) |= 1 << (bit % 64);
        self.keys.push((phys, order));
    }

    /// `kho_preserve_pages()`: `nr_pages` pages at `phys` as naturally aligned blocks.
    pub fn preserve_pages(&mut self, phys: u64, nr_pages: u64) {
        let ps = self.g.page_shift;
        let mut pfn = phys >> ps;
        let end = pfn + nr_pages;
        while pfn < end {
            let order = cref::preserve_pages_order(pfn, end);
            self.add_key(pfn << ps, order);
            pfn += 1 << order;
        }
    }

    /// `kho_add_subtree()`: a subtree node for the blob of `size` bytes at `data`.
    pub fn add_subtree(&mut self, name: &str, data: u64, size: u64) {
        self.spec.subtrees.push(SubtreeSpec::new(name, data, size));
    }

    /// The root FDT blob.
    pub fn fdt(&self) -> Vec<u8> {
        self.spec.to_fdt()
    }

    /// The blocks as the C walk visits them: ascending key, each key once.
    pub fn expected(&self) -> Vec<(u64, u32)> {
        let ps = self.g.page_shift;
        let mut keys: Vec<(u64, (u64, u32))> = self
            .keys
            .iter()
            .map(|&(p, o)| {
                let k = cref::encode(ps, p, o);
                (k, cref::decode(ps, k))
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|(_, b)| b).collect()
    }
}

/// Well-formed images of the tests and the fuzz seeds.
pub mod scenarios {
    use super::*;
    use crate::GEOMETRY_4K;

    /// Blocks of several orders spread over the address space, three subtrees, each preserved:
    /// a one-page blob, a blob inside a folio, and a blob of 37 pages preserved as pages.
    pub fn mixed() -> Image {
        let mut img = Image::new(GEOMETRY_4K);
        let base = RAM.0 + 0x1000_0000;
        // Subtree blobs.
        img.add_key(base, 0);
        img.add_subtree("LUO", base, 0x40);
        img.add_key(base + 0x20_0000, 9);
        img.add_subtree("memblock", base + 0x20_0000 + 0x3000, 0x1_0000);
        img.preserve_pages(base + 0x100_0000 + 0x5000, 37);
        img.add_subtree("test-kho", base + 0x100_0000 + 0x5000, 37 * 4096);
        // Other blocks: every order up to 10, low and high in RAM.
        for order in 0..=10u32 {
            let size = 4096u64 << order;
            img.add_key(RAM.0 + 0x4000_0000 + size * 3, order);
            img.add_key(RAM.0 + RAM.1 - size * 2, order);
        }
        // A 1 GiB block and a large run of pages.
        img.add_key(RAM.0 + 0x8000_0000, 18);
        img.preserve_pages(RAM.0 + 0x2000_0000 + 0x1000, 5000);
        img
    }

    /// A few blocks of orders 0, 1 and 9 near each other, two subtrees; about 15 nodes, small
    /// enough for a fuzz seed.
    pub fn small() -> Image {
        let mut img = Image::new(GEOMETRY_4K);
        let base = RAM.0 + 0x1000_0000;
        img.add_key(base, 0);
        img.add_key(base + 0x3000, 0);
        img.add_key(base + 0x4000, 1);
        img.add_key(base + 0x20_0000, 9);
        img.preserve_pages(base + 0x7000, 3);
        img.add_subtree("LUO", base, 0x40);
        img.add_subtree("memblock", base + 0x20_0000 + 0x1000, 0x2000);
        img
    }

    /// Just the root node: no block, no subtree.
    pub fn empty() -> Image {
        Image::new(GEOMETRY_4K)
    }

    /// One page preserved at the first page of RAM after the nodes.
    pub fn single() -> Image {
        let mut img = Image::new(GEOMETRY_4K);
        img.add_key(RAM.0 + 0x100_0000, 0);
        img.add_subtree("one", RAM.0 + 0x100_0000, 4096);
        img
    }
}
