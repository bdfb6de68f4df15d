// SPDX-License-Identifier: GPL-2.0

//! Damaged images: each corruption is refused with its own error, nothing loops or panics.

use kho_decode::image::{scenarios, Image, RAM, SCRATCH};
use kho_decode::sim::{walk_collect, HashNodeSet};
use kho_decode::{
    cref, parse_root, CoverError, Coverage, FdtError, Geometry, RootError, WalkError, GEOMETRY_4K,
};

/// parse_root, the walk from its memory map, and the coverage check, as the kernel runs them.
fn decode(img: &Image, fdt: &[u8]) -> Result<(), String> {
    let root = parse_root(&img.g, fdt).map_err(|e| format!("root: {e:?}"))?;
    let mut cov: Coverage = Coverage::new();
    cov.add_root(&root).map_err(|e| format!("cover: {e:?}"))?;
    let (_, keys, res) = walk_collect(
        &img.g,
        root.mem_map(),
        &img.mem,
        &mut HashNodeSet::default(),
        4096,
    );
    res.map_err(|e| format!("walk: {e:?}"))?;
    for (p, o) in keys {
        cov.record_key(&img.g, p, o)
            .map_err(|e| format!("cover: {e:?}"))?;
    }
    cov.finish().map_err(|e| format!("cover: {e:?}"))
}

fn walk_err(img: &Image) -> WalkError<()> {
    let (_, _, res) = walk_collect(
        &img.g,
        img.root,
        &img.mem,
        &mut HashNodeSet::default(),
        4096,
    );
    res.unwrap_err()
}

#[test]
fn well_formed_images_decode() {
    for img in [scenarios::mixed(), scenarios::single(), scenarios::empty()] {
        decode(&img, &img.fdt()).unwrap();
    }
}

// 1. Bad FDT magic.
#[test]
fn bad_fdt_magic() {
    let img = scenarios::mixed();
    let mut fdt = img.fdt();
    fdt[0] = 0xde;
    assert_eq!(
        parse_root(&img.g, &fdt).unwrap_err(),
        RootError::Fdt(FdtError::BadMagic)
    );
}

// 2. Wrong root compatible.
#[test]
fn wrong_root_compatible() {
    let mut img = scenarios::mixed();
    img.spec.compatible = Some(b"kho-v3\0".to_vec());
    assert_eq!(
        parse_root(&img.g, &img.fdt()).unwrap_err(),
        RootError::Incompatible
    );
    assert_eq!(
        RootError::Incompatible.to_string(),
        "KHO root node not compatible with kho-v4"
    );
}

// 3. Radix pointer outside RAM: the root, a table, a leaf.
#[test]
fn radix_pointer_outside_ram() {
    let outside = RAM.0 + RAM.1 + 0x10_0000;
    let mut img = scenarios::single();
    img.spec.mem_map = Some(outside.to_ne_bytes().to_vec());
    assert_eq!(
        decode(&img, &img.fdt()).unwrap_err(),
        format!("walk: NodeNotRam {{ level: 5, phys: {outside} }}")
    );
    for (parent, level) in [(1, 3), (4, 0)] {
        // node_list: root, level 4, 3, 2, 1, leaf; repoint the entry of node `parent`.
        let mut img = scenarios::single();
        let node = img.node_list[parent];
        let idx = img.mem.nodes[&node].iter().position(|&w| w != 0).unwrap();
        *img.entry(node, idx) = outside;
        assert_eq!(
            walk_err(&img),
            WalkError::NodeNotRam {
                level,
                phys: outside
            }
        );
    }
    // Below RAM, and straddling its end.
    let mut img = scenarios::single();
    *img.entry(img.root, 0) = 0x1000;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeNotRam {
            level: 4,
            phys: 0x1000
        }
    );
    let mut img = scenarios::single();
    img.mem.ram[0].1 -= 0x800;
    let last = RAM.0 + RAM.1 - 0x1000;
    *img.entry(img.root, 0) = last;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeNotRam {
            level: 4,
            phys: last
        }
    );
    // The last page of the address space: its end overflows.
    let mut img = scenarios::single();
    *img.entry(img.root, 0) = 0xffff_ffff_ffff_f000;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeNotRam {
            level: 4,
            phys: 0xffff_ffff_ffff_f000
        }
    );
}

// 4. Radix loop: a node pointing to itself, to an ancestor, and a node shared by two parents.
#[test]
fn radix_loop() {
    let mut img = scenarios::single();
    let root = img.root;
    *img.entry(root, 0) = root;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeRevisited {
            level: 4,
            phys: root
        }
    );

    let mut img = scenarios::single();
    let (root, l1) = (img.root, img.node_list[4]);
    *img.entry(l1, 7) = root;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeRevisited {
            level: 0,
            phys: root
        }
    );

    let mut img = scenarios::single();
    let l2 = img.node_list[3];
    *img.entry(l2, 3) = img.node_list[2];
    assert_eq!(
        walk_err(&img),
        WalkError::NodeRevisited {
            level: 1,
            phys: img.node_list[2]
        }
    );

    // Shared: the level 2 table's next entry points to the same level 1 table.
    let mut img = scenarios::single();
    let (l2, l1) = (img.node_list[3], img.node_list[4]);
    let idx = img.mem.nodes[&l2].iter().position(|&w| w != 0).unwrap();
    *img.entry(l2, idx + 1) = l1;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeRevisited { level: 1, phys: l1 }
    );
    assert_eq!(
        WalkError::<()>::NodeRevisited {
            level: 1,
            phys: 0x1000
        }
        .to_string(),
        "radix tree node reached twice (loop or shared node) (level 1, phys 0x1000)"
    );
}

/// Every entry of every table points to one chain of nodes ending in an empty leaf: 4 * 512^4
/// paths for a walk that does not notice, one revisit for ours.
#[test]
fn exponential_sharing_is_cut_short() {
    let mut img = Image::new(GEOMETRY_4K);
    let chain: Vec<u64> = (0..5).map(|_| img.alloc_node()).collect();
    let mut parent = img.root;
    for &n in &chain {
        for i in 0..4 {
            *img.entry(parent, i) = n;
        }
        if parent != img.root {
            for i in 4..512 {
                *img.entry(parent, i) = n;
            }
        }
        parent = n;
    }
    let reads = img.mem.reads.get();
    let err = walk_err(&img);
    assert!(matches!(err, WalkError::NodeRevisited { .. }), "{err:?}");
    assert!(img.mem.reads.get() - reads <= 6);
    // Without a node set that remembers, the node bound still ends it.
    struct Forgetful;
    impl kho_decode::NodeSet for Forgetful {
        fn insert(&mut self, _: u64) -> Result<bool, kho_decode::SetFull> {
            Ok(true)
        }
    }
    let (nodes, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut Forgetful, 1000);
    assert_eq!(res.unwrap_err(), WalkError::TooManyNodes);
    assert_eq!(nodes.len(), 1000);
}

// 5. A subtree's blob-size past its preserved page.
#[test]
fn subtree_blob_size_past_its_page() {
    let mut img = scenarios::single();
    let data = RAM.0 + 0x100_0000;
    img.spec.subtrees[0] = kho_decode::fdt_writer::SubtreeSpec::new("one", data, 4097);
    assert_eq!(
        decode(&img, &img.fdt()).unwrap_err(),
        format!("cover: NotCovered {{ index: 0, at: {} }}", data + 4096)
    );
    // Starting before the page.
    img.spec.subtrees[0] = kho_decode::fdt_writer::SubtreeSpec::new("one", data - 8, 16);
    assert_eq!(
        decode(&img, &img.fdt()).unwrap_err(),
        format!("cover: NotCovered {{ index: 0, at: {} }}", data - 8)
    );
    // Empty blob.
    img.spec.subtrees[0] = kho_decode::fdt_writer::SubtreeSpec::new("one", data, 0);
    assert_eq!(
        decode(&img, &img.fdt()).unwrap_err(),
        format!("cover: {:?}", CoverError::EmptyBlob { index: 0 })
    );
}

// 6. A key with an order beyond max_order.
#[test]
fn key_order_beyond_max_order() {
    // Order 41 on GEOMETRY_4K (max 40): phys 0, key 1 << 11.
    let mut img = Image::new(GEOMETRY_4K);
    img.add_key(0, 41);
    assert_eq!(walk_err(&img), WalkError::KeyOrder { key: 1 << 11 });
    // Order 11 where the geometry allows 10.
    let g = Geometry {
        page_shift: 12,
        max_order: 10,
    };
    let mut img = Image::new(g);
    img.add_key(RAM.0 + 0x10_0000, 10);
    let phys = RAM.0 + 0x80_0000;
    img.add_key(phys, 11);
    let key = cref::encode(12, phys, 11);
    assert_eq!(walk_err(&img), WalkError::KeyOrder { key });
    // The key 0: every index 0 and bit 0.
    let mut img = Image::new(GEOMETRY_4K);
    let mut node = img.root;
    for _ in 0..5 {
        let n = img.alloc_node();
        *img.entry(node, 0) = n;
        node = n;
    }
    *img.entry(node, 0) = 1;
    assert_eq!(walk_err(&img), WalkError::KeyOrder { key: 0 });
    // The key 1: order 52, a shift by 64 in the C decode (found by the fuzzer in the
    // reference walk).
    *img.entry(node, 0) = 2;
    assert_eq!(walk_err(&img), WalkError::KeyOrder { key: 1 });
    let (_, res) = kho_decode::reference::walk(&img.g, img.root, &img.mem, 99);
    assert_eq!(res, Err(WalkError::KeyOrder { key: 1 }));
}

#[test]
fn truncated_fdt() {
    let img = scenarios::mixed();
    let fdt = img.fdt();
    for len in [0, 3, 39, 40, 100, fdt.len() / 2, fdt.len() - 1] {
        assert_eq!(
            parse_root(&img.g, &fdt[..len]).unwrap_err(),
            RootError::Fdt(FdtError::Truncated),
            "len {len}"
        );
    }
}

#[test]
fn table_index_beyond_key_width() {
    // At level 5 (bits 51..59 of the key) only indices 0..=3 fit in 53 bits.
    let mut img = scenarios::single();
    let n = img.alloc_node();
    *img.entry(img.root, 4) = n;
    assert_eq!(
        walk_err(&img),
        WalkError::IndexBeyondKeyWidth { level: 5, index: 4 }
    );
    let mut img = scenarios::single();
    let n = img.alloc_node();
    *img.entry(img.root, 511) = n;
    assert_eq!(
        walk_err(&img),
        WalkError::IndexBeyondKeyWidth {
            level: 5,
            index: 511
        }
    );
    // Index 3 is within the key width.
    let mut img = Image::new(GEOMETRY_4K);
    let phys = 0xffff_ffff_ffff_e000u64;
    img.mem.ram.push((phys, 0x1000));
    img.add_key(phys, 0);
    assert_eq!(cref::table_index(12, cref::encode(12, phys, 0), 5), 3);
    let (_, keys, res) = walk_collect(&img.g, img.root, &img.mem, &mut HashNodeSet::default(), 99);
    res.unwrap();
    assert_eq!(keys, [(phys, 0)]);
}

#[test]
fn other_node_and_key_errors() {
    // Misaligned node.
    let mut img = scenarios::single();
    let l4 = img.node_list[1];
    *img.entry(img.root, 0) = l4 + 8;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeMisaligned {
            level: 4,
            phys: l4 + 8
        }
    );
    // Node in scratch.
    let mut img = scenarios::single();
    *img.entry(img.root, 0) = SCRATCH.0 + 0x1000;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeInScratch {
            level: 4,
            phys: SCRATCH.0 + 0x1000
        }
    );
    // Root misaligned / unreadable.
    let mut img = scenarios::single();
    img.root += 0x800;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeMisaligned {
            level: 5,
            phys: img.root
        }
    );
    let mut img = scenarios::single();
    img.mem.strict_nodes = true;
    img.root = RAM.0 + 0x8000_0000;
    assert_eq!(
        walk_err(&img),
        WalkError::NodeUnreadable {
            level: 5,
            phys: img.root
        }
    );
    // Blocks outside RAM, half in RAM, in scratch, across scratch, and ending past 2^64.
    for (phys, order, want) in [
        (RAM.0 + RAM.1, 0, "NotRam"),
        (0, 21, "NotRam"),
        (SCRATCH.0 + SCRATCH.1 - 0x1000, 0, "InScratch"),
        (0x1_8000_0000, 19, "InScratch"),
        (0xfff0_0000_0000_0000, 40, "NotRam"),
    ] {
        let mut img = Image::new(GEOMETRY_4K);
        img.add_key(phys, order);
        let err = walk_err(&img);
        let expect = if want == "NotRam" {
            WalkError::KeyNotRam { phys, order }
        } else {
            WalkError::KeyInScratch { phys, order }
        };
        assert_eq!(err, expect);
    }
    // An invalid geometry.
    let img = scenarios::single();
    let bad = Geometry {
        page_shift: 12,
        max_order: 52,
    };
    let (_, _, res) = walk_collect(&bad, img.root, &img.mem, &mut HashNodeSet::default(), 9);
    assert_eq!(res.unwrap_err(), WalkError::BadGeometry);
}

/// validate(): every check at once, the first failure as one HandoverError.
#[test]
fn validate_reports_each_corruption() {
    use kho_decode::{validate, HandoverError};
    let check = |img: &Image, fdt: &[u8]| {
        let mut cov: Coverage = Coverage::new();
        validate(
            &img.g,
            fdt,
            &img.mem,
            &mut HashNodeSet::default(),
            4096,
            &mut cov,
        )
        .map(|(root, stats)| (root.subtree_count(), stats.keys))
    };
    let img = scenarios::mixed();
    assert_eq!(
        check(&img, &img.fdt()),
        Ok((3, img.expected().len() as u64))
    );

    let mut fdt = img.fdt();
    fdt[0] = 0;
    assert_eq!(
        check(&img, &fdt),
        Err(HandoverError::Root(RootError::Fdt(FdtError::BadMagic)))
    );
    let mut bad = scenarios::single();
    bad.spec.compatible = Some(b"kho-v3\0".to_vec());
    assert_eq!(
        check(&bad, &bad.fdt()),
        Err(HandoverError::Root(RootError::Incompatible))
    );
    let mut bad = scenarios::single();
    let root = bad.root;
    *bad.entry(root, 0) = root;
    let e = check(&bad, &bad.fdt()).unwrap_err();
    assert_eq!(
        e,
        HandoverError::Walk(WalkError::NodeRevisited {
            level: 4,
            phys: root
        })
    );
    assert_eq!(
        e.to_string(),
        format!("radix tree node reached twice (loop or shared node) (level 4, phys {root:#x})")
    );
    let mut bad = scenarios::single();
    let data = RAM.0 + 0x100_0000;
    bad.spec.subtrees[0] = kho_decode::fdt_writer::SubtreeSpec::new("one", data, 4097);
    let e = check(&bad, &bad.fdt()).unwrap_err();
    assert_eq!(
        e,
        HandoverError::Cover(CoverError::NotCovered {
            index: 0,
            at: data + 4096
        })
    );
    assert_eq!(e.describe(), "KHO subtree blob not preserved");
    let mut bad = scenarios::single();
    bad.add_key(0, 41);
    assert_eq!(
        check(&bad, &bad.fdt()),
        Err(HandoverError::Walk(WalkError::KeyOrder { key: 1 << 11 }))
    );
    // A blob that is too fragmented to check stops the walk through its visitor.
    let mut bad = Image::new(GEOMETRY_4K);
    for i in 0..65 {
        bad.add_key(RAM.0 + 0x100_0000 + i * 0x2000, 0);
    }
    bad.add_subtree("holes", RAM.0 + 0x100_0000, 130 * 0x1000);
    assert_eq!(
        check(&bad, &bad.fdt()),
        Err(HandoverError::Cover(CoverError::TooManyPieces))
    );
}
