// SPDX-License-Identifier: GPL-2.0

//! The fuzz target's input format and checks, shared by `fuzz/` and the seed generator.
//!
//! An input is a small simulated machine and a KHO FDT:
//!
//! ```text
//! u8                    flags: bits 0-1 geometry (4 KiB/order 40, 4 KiB/order 10, 16 KiB/order
//!                       36, 4 KiB/order 40), bit 2 SliceNodeSet instead of HashNodeSet,
//!                       bit 3 node() of RAM without a node fails instead of reading zeros
//! u8 n (mod 5)          RAM ranges, then n x (u64 base, u64 size)
//! u8 n (mod 5)          scratch ranges, then n x (u64 base, u64 size)
//! u8 n (mod 65)         node pages, then n x (u64 phys, u16 count,
//!                                             count x (u16 word index, u64 value))
//! ...                   the rest: the FDT blob
//! ```
//!
//! Integers are little-endian; word indices are taken modulo the words of a node. A truncated
//! input ends the lists early and leaves an empty FDT.
//!
//! [`run`] parses the FDT, walks the tree (from `preserved-memory-map`, or from the first node
//! page if the FDT is refused) and checks subtree coverage, and asserts what must hold: the
//! walk equals the [`reference`](mod@crate::reference) walk, visited keys round-trip and ascend,
//! lookups in an accepted FDT never fail, coverage agrees with the reference.

use crate::reference;
use crate::sim::{walk_collect, HashNodeSet, SimMem};
use crate::{
    decode_key, encode_key, nodename_eq, parse_root, validate, CoverError, Coverage, Fdt, Geometry,
    HandoverError, SliceNodeSet, GEOMETRY_4K,
};

/// The most nodes a fuzzed walk visits.
pub const MAX_NODES: u64 = 96;

/// The geometries selected by the low bits of the flags.
pub const GEOMETRIES: [Geometry; 4] = [
    GEOMETRY_4K,
    Geometry {
        page_shift: 12,
        max_order: 10,
    },
    Geometry {
        page_shift: 14,
        max_order: 36,
    },
    GEOMETRY_4K,
];

/// A decoded fuzz input.
#[derive(Clone, Debug)]
pub struct Case {
    /// The flags byte.
    pub flags: u8,
    /// The geometry.
    pub g: Geometry,
    /// The machine.
    pub mem: SimMem,
    /// The node pages in input order (the first is the fallback root).
    pub node_order: Vec<u64>,
    /// The FDT blob.
    pub fdt: Vec<u8>,
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.data.split_first_chunk::<N>()?;
        self.data = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
}

/// Decodes an input; never fails (missing parts are empty).
pub fn decode(data: &[u8]) -> Case {
    let mut r = Reader { data };
    let flags = r.u8().unwrap_or(0);
    let g = GEOMETRIES[usize::from(flags & 3)];
    let mut mem = SimMem::new(g.words_per_node());
    mem.strict_nodes = flags & 8 != 0;
    let mut node_order = Vec::new();
    let mut fdt = Vec::new();
    let _ = (|| -> Option<()> {
        for _ in 0..r.u8()? % 5 {
            mem.ram.push((r.u64()?, r.u64()?));
        }
        for _ in 0..r.u8()? % 5 {
            mem.scratch.push((r.u64()?, r.u64()?));
        }
        for _ in 0..r.u8()? % 65 {
            let phys = r.u64()?;
            node_order.push(phys);
            let count = r.u16()?;
            for _ in 0..count {
                let index = usize::from(r.u16()?) % mem.words;
                let value = r.u64()?;
                mem.node_mut(phys)[index] = value;
            }
            mem.node_mut(phys);
        }
        fdt = r.data.to_vec();
        Some(())
    })();
    Case {
        flags,
        g,
        mem,
        node_order,
        fdt,
    }
}

/// Encodes a machine and an FDT as an input (for seeds); nodes are written sparsely.
pub fn encode(flags: u8, mem: &SimMem, node_order: &[u64], fdt: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    for ranges in [&mem.ram, &mem.scratch] {
        assert!(ranges.len() < 5);
        out.push(ranges.len() as u8);
        for &(b, s) in ranges.iter() {
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    assert!(node_order.len() < 65);
    out.push(node_order.len() as u8);
    for &phys in node_order {
        let words = &mem.nodes[&phys];
        let set: Vec<(usize, u64)> = words
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, w)| w != 0)
            .collect();
        out.extend_from_slice(&phys.to_le_bytes());
        out.extend_from_slice(&(set.len() as u16).to_le_bytes());
        for (i, w) in set {
            out.extend_from_slice(&(i as u16).to_le_bytes());
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out.extend_from_slice(fdt);
    out
}

/// Every property and node of an accepted FDT, down to `depth`; nothing may fail.
fn explore(node: crate::Node<'_>, depth: u32) {
    for p in node.properties() {
        let p = p.expect("property of an accepted FDT");
        let _ = crate::prop_str(p.value);
    }
    let _ = node
        .compatible_with(b"kho-v4")
        .expect("compatible of an accepted FDT");
    for child in node.subnodes() {
        let child = child.expect("subnode of an accepted FDT");
        let found = node
            .subnode(child.name())
            .expect("lookup in an accepted FDT")
            .expect("a subnode is found by its own name");
        assert!(nodename_eq(found.name(), child.name()));
        if depth > 0 {
            explore(child, depth - 1);
        }
    }
}

/// Runs one input; panics if anything that must hold does not.
pub fn run(data: &[u8]) {
    let c = decode(data);
    let g = c.g;
    let root = parse_root(&g, &c.fdt);
    if let Ok(fdt) = Fdt::new(&c.fdt) {
        explore(fdt.root(), 3);
    }
    let start = match &root {
        Ok(r) => {
            assert_ne!(r.mem_map(), 0);
            assert_eq!(r.mem_map() % (1 << g.page_shift), 0);
            let subtrees: Vec<_> = r.subtrees().collect();
            assert_eq!(subtrees.len(), r.subtree_count());
            for s in &subtrees {
                let first = subtrees.iter().find(|t| nodename_eq(t.name, s.name));
                assert_eq!(r.find(s.name).as_ref(), first);
            }
            r.mem_map()
        }
        Err(e) => {
            let _ = (e.describe(), e.to_string());
            c.node_order.first().copied().unwrap_or(0)
        }
    };

    // One more than the node bound, so the bound is hit before the set fills.
    let mut buf = [0u64; MAX_NODES as usize + 1];
    let (nodes, keys, res) = if c.flags & 4 != 0 {
        let mut set = SliceNodeSet::new(&mut buf);
        let out = walk_collect(&g, start, &c.mem, &mut set, MAX_NODES);
        // The set holds exactly the nodes visited (also those refused after the set check).
        assert!(out
            .0
            .iter()
            .all(|p| set.as_slice().binary_search(p).is_ok()));
        out
    } else {
        walk_collect(&g, start, &c.mem, &mut HashNodeSet::default(), MAX_NODES)
    };
    if let Err(e) = &res {
        let _ = (e.describe(), e.to_string());
    }

    // Differential: the reference walk sees the same nodes and keys and fails the same way.
    let (want, want_res) = reference::walk(&g, start, &c.mem, MAX_NODES);
    assert_eq!(nodes, want.nodes, "nodes visited");
    assert_eq!(keys, want.keys, "keys visited");
    match (&res, &want_res) {
        (Ok(stats), Ok(())) => {
            assert_eq!(stats.nodes, nodes.len() as u64);
            assert_eq!(stats.keys, keys.len() as u64);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("walk {res:?}, reference {want_res:?}"),
    }
    assert!(nodes.len() as u64 <= MAX_NODES);
    let mut prev = 0;
    for &(phys, order) in &keys {
        let key = encode_key(&g, phys, order);
        assert_eq!(decode_key(&g, key), Some((phys, order)));
        assert!(key > prev, "keys in ascending order");
        prev = key;
        assert!(c.mem.usable(phys, (1 << g.page_shift) << order));
    }

    // Coverage of the subtrees by the keys, against the reference.
    let covered = match (&root, &res) {
        (Ok(r), Ok(_)) => coverage(&g, r, &keys),
        _ => false,
    };

    // validate() is all of the above at once, with the same outcome.
    let mut cov: Coverage = Coverage::new();
    let all = validate(
        &g,
        &c.fdt,
        &c.mem,
        &mut HashNodeSet::default(),
        MAX_NODES,
        &mut cov,
    );
    match (&root, &all) {
        (Err(a), Err(HandoverError::Root(b))) => assert_eq!(a, b),
        (Err(_), _) => panic!("parse_root failed, validate gave {all:?}"),
        (Ok(_), Ok((_, stats))) => {
            assert!(covered && res.is_ok());
            assert_eq!(stats.keys, keys.len() as u64);
        }
        (Ok(_), Err(e)) => {
            assert!(!covered, "validate refused a covered handover: {e:?}");
            let _ = (e.describe(), e.to_string());
            if let (Err(a), HandoverError::Walk(b)) = (&res, e) {
                assert_eq!(a.describe(), b.describe());
            }
        }
    }
}

/// Whether the blocks cover every subtree of `r`, checked against the reference.
fn coverage(g: &Geometry, r: &crate::KhoRoot<'_>, keys: &[(u64, u32)]) -> bool {
    let mut cov: Coverage = Coverage::new();
    if let Err(e) = cov.add_root(r) {
        assert!(matches!(
            e,
            CoverError::EmptyBlob { .. }
                | CoverError::BlobOverflow { .. }
                | CoverError::TooManySubtrees
        ));
        return false;
    }
    for &(phys, order) in keys {
        if let Err(e) = cov.record_key(g, phys, order) {
            assert_eq!(e, CoverError::TooManyPieces);
            return false;
        }
    }
    let blobs: Vec<(u64, u64)> = r
        .subtrees()
        .map(|s| (s.preserved_data, s.blob_size))
        .collect();
    let want = reference::uncovered(g, &blobs, keys);
    match cov.finish() {
        Ok(()) => {
            assert_eq!(want, None);
            true
        }
        Err(CoverError::NotCovered { index, .. }) => {
            assert_eq!(want, Some(index));
            false
        }
        Err(e) => panic!("finish: {e:?}"),
    }
}

/// The seed corpus: well-formed images and each kind of damage, as (name, input).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use crate::fdt_writer::SubtreeSpec;
    use crate::image::{scenarios, Image, RAM};
    let mut out = Vec::new();
    let mut add = |name: &str, flags: u8, img: &Image, fdt: Vec<u8>| {
        out.push((
            name.to_string(),
            encode(flags, &img.mem, &img.node_list, &fdt),
        ));
    };
    let small = scenarios::small();
    add("small", 0, &small, small.fdt());
    add("small-slice-set", 4, &small, small.fdt());
    let single = scenarios::single();
    add("single", 0, &single, single.fdt());
    let empty = scenarios::empty();
    add("empty", 8, &empty, empty.fdt());
    let mut fdt = small.fdt();
    fdt[0] ^= 0xff;
    add("bad-magic", 0, &small, fdt);
    let fdt = small.fdt();
    add("truncated", 0, &small, fdt[..fdt.len() - 9].to_vec());
    let mut img = small.clone();
    img.spec.compatible = Some(b"kho-v3\0".to_vec());
    add("compatible", 0, &img, img.fdt());
    let mut img = small.clone();
    img.spec.mem_map = Some((RAM.0 + RAM.1).to_ne_bytes().to_vec());
    add("root-outside-ram", 0, &img, img.fdt());
    let mut img = small.clone();
    let (root, l1) = (img.root, img.node_list[4]);
    *img.entry(l1, 5) = root;
    add("loop", 0, &img, img.fdt());
    let mut img = small.clone();
    let sub = img.spec.subtrees[0].clone();
    let data = u64::from_ne_bytes(sub.data.clone().unwrap().try_into().unwrap());
    img.spec.subtrees[0] = SubtreeSpec {
        size: Some(4097u64.to_ne_bytes().to_vec()),
        ..SubtreeSpec::new("LUO", data, 0)
    };
    add("blob-past-page", 0, &img, img.fdt());
    let mut img = Image::new(GEOMETRIES[1]);
    img.add_key(RAM.0 + 0x80_0000, 11);
    add("order-beyond-max", 1, &img, img.fdt());
    let mut img = small.clone();
    let n = img.alloc_node();
    *img.entry(img.root, 4) = n;
    add("index-beyond-key-width", 0, &img, img.fdt());
    let mut img = Image::new(GEOMETRIES[2]);
    img.add_key(RAM.0 + 0x100_0000, 0);
    img.add_key(RAM.0 + 0x200_0000, 3);
    img.add_subtree("x", RAM.0 + 0x100_0000, 100);
    add("16k", 2, &img, img.fdt());
    out
}
