// SPDX-License-Identifier: GPL-2.0

//! The walker on well-formed trees: exactly the C walk's visits, in its order.

use kho_decode::image::{scenarios, Image, RAM};
use kho_decode::sim::{walk_collect, HashNodeSet};
use kho_decode::{
    cref, encode_key, reference, walk, Geometry, NodeSet, SetFull, SliceNodeSet, WalkError,
    WalkStats, GEOMETRY_4K,
};

fn check_image(img: &Image) -> WalkStats {
    let mut seen = HashNodeSet::default();
    let reads = img.mem.reads.get();
    let (nodes, keys, res) = walk_collect(&img.g, img.root, &img.mem, &mut seen, 1 << 20);
    let stats = res.unwrap();
    assert_eq!(
        img.mem.reads.get() - reads,
        nodes.len() as u64,
        "each node read once"
    );
    // Exactly the blocks added, in the C walk's order (ascending keys).
    assert_eq!(keys, img.expected());
    // Every node once, root first, depth first as the C walk (the reference) does.
    let (want, want_res) = reference::walk(&img.g, img.root, &img.mem, 1 << 20);
    want_res.unwrap();
    assert_eq!(nodes, want.nodes);
    assert_eq!(keys, want.keys);
    assert_eq!(nodes[0], img.root);
    let mut sorted_nodes = nodes.clone();
    sorted_nodes.sort();
    let mut allocated = img.node_list.clone();
    allocated.sort();
    assert_eq!(
        sorted_nodes, allocated,
        "every node allocated is visited once"
    );
    assert_eq!(stats.nodes, nodes.len() as u64);
    assert_eq!(stats.keys, keys.len() as u64);
    let bytes: u64 = keys.iter().map(|&(_, o)| img.page() << o).sum();
    assert_eq!(stats.bytes, bytes);
    stats
}

#[test]
fn empty_tree() {
    let img = scenarios::empty();
    let s = check_image(&img);
    assert_eq!((s.nodes, s.keys, s.bytes), (1, 0, 0));
}

#[test]
fn single_page() {
    let img = scenarios::single();
    let s = check_image(&img);
    // Root, four tables, one leaf.
    assert_eq!((s.nodes, s.keys, s.bytes), (6, 1, 4096));
}

#[test]
fn mixed_orders_in_c_order() {
    let img = scenarios::mixed();
    let s = check_image(&img);
    assert!(s.keys > 30);
    // The order is ascending keys: higher orders (lower order bits) come first.
    let keys: Vec<u64> = img
        .expected()
        .iter()
        .map(|&(p, o)| cref::encode(12, p, o))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn insertion_order_does_not_matter() {
    let mut a = Image::new(GEOMETRY_4K);
    let mut b = Image::new(GEOMETRY_4K);
    let blocks: Vec<(u64, u32)> = (0..64u64)
        .map(|i| (RAM.0 + 0x1000_0000 + i * 0x40_0000, (i % 3) as u32))
        .chain((0..11).map(|o| (RAM.0 + 0x8000_0000 + (4096 << o) * 7, o)))
        .collect();
    for &(p, o) in &blocks {
        a.add_key(p, o);
    }
    for &(p, o) in blocks.iter().rev() {
        b.add_key(p, o);
    }
    let (_, ka, ra) = walk_collect(&a.g, a.root, &a.mem, &mut HashNodeSet::default(), 1000);
    let (_, kb, rb) = walk_collect(&b.g, b.root, &b.mem, &mut HashNodeSet::default(), 1000);
    ra.unwrap();
    rb.unwrap();
    assert_eq!(ka, kb);
    assert_eq!(ka, a.expected());
    check_image(&a);
    check_image(&b);
}

#[test]
fn preserve_pages_splits_like_c() {
    let mut img = Image::new(GEOMETRY_4K);
    // 37 pages at pfn 0x110005: 1 + 2 + 8 + 16 + 8 + 2 pages.
    img.preserve_pages(0x1_1000_5000, 37);
    let orders: Vec<u32> = img.keys.iter().map(|&(_, o)| o).collect();
    assert_eq!(orders, [0, 1, 3, 4, 3, 1]);
    check_image(&img);
    // A gigabyte, aligned: one block of order 18.
    let mut img = Image::new(GEOMETRY_4K);
    img.preserve_pages(0x1_4000_0000, 1 << 18);
    assert_eq!(img.keys, [(0x1_4000_0000, 18)]);
    check_image(&img);
}

#[test]
fn other_page_sizes() {
    for ps in [13, 14, 16] {
        let g = Geometry {
            page_shift: ps,
            max_order: 20,
        };
        let mut img = Image::new(g);
        let page = 1u64 << ps;
        for order in 0..=12 {
            img.add_key(RAM.0 + 0x2000_0000 + (page << order) * 5, order);
        }
        img.preserve_pages(RAM.0 + 0x6000_0000 + page * 3, 1000);
        let s = check_image(&img);
        assert_eq!(s.nodes, img.node_list.len() as u64);
    }
}

#[test]
fn visitors_see_nodes_before_their_keys_and_can_stop_the_walk() {
    let img = scenarios::mixed();
    // Stop at the third key.
    let mut n = 0;
    let res = walk(
        &img.g,
        img.root,
        &img.mem,
        &mut HashNodeSet::default(),
        1000,
        |_| Ok(()),
        |_, _| {
            n += 1;
            if n == 3 {
                Err("enough")
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(res, Err(WalkError::Callback("enough")));
    assert_eq!(n, 3);
    // A node visitor error stops before the node is read.
    let before = img.mem.reads.get();
    let res = walk(
        &img.g,
        img.root,
        &img.mem,
        &mut HashNodeSet::default(),
        1000,
        |phys| if phys == img.root { Err(7) } else { Ok(()) },
        |_, _| Ok(()),
    );
    assert_eq!(res, Err(WalkError::Callback(7)));
    assert_eq!(img.mem.reads.get(), before);
    assert_eq!(
        WalkError::Callback(7).to_string(),
        "radix tree walk stopped by its visitor: 7"
    );
}

#[test]
fn node_bound_and_node_set_capacity() {
    let img = scenarios::mixed();
    let n = img.node_list.len() as u64;
    let (_, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut HashNodeSet::default(), n);
    assert_eq!(res.unwrap().nodes, n);
    let (nodes, _, res) = walk_collect(
        &img.g,
        img.root,
        &img.mem,
        &mut HashNodeSet::default(),
        n - 1,
    );
    assert_eq!(res.unwrap_err(), WalkError::TooManyNodes);
    assert_eq!(nodes.len() as u64, n - 1);
    let (_, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut HashNodeSet::default(), 0);
    assert_eq!(res.unwrap_err(), WalkError::TooManyNodes);
    let mut small = HashNodeSet {
        capacity: Some(5),
        ..Default::default()
    };
    let (_, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut small, 1000);
    assert_eq!(res.unwrap_err(), WalkError::SetFull);
    // The slice set: a tree of exactly its capacity fits.
    let mut buf = vec![0u64; n as usize];
    let mut set = SliceNodeSet::new(&mut buf);
    let (nodes, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut set, 1000);
    res.unwrap();
    let mut sorted = nodes.clone();
    sorted.sort();
    assert_eq!(set.as_slice(), &sorted[..]);
    let mut buf = vec![0u64; n as usize - 1];
    let mut set = SliceNodeSet::new(&mut buf);
    let (_, _, res) = walk_collect(&img.g, img.root, &img.mem, &mut set, 1000);
    assert_eq!(res.unwrap_err(), WalkError::SetFull);
}

#[test]
fn slice_node_set() {
    let mut buf = [0u64; 4];
    let mut s = SliceNodeSet::new(&mut buf);
    assert!(s.is_empty());
    assert_eq!(s.insert(30), Ok(true));
    assert_eq!(s.insert(10), Ok(true));
    assert_eq!(s.insert(20), Ok(true));
    assert_eq!(s.insert(10), Ok(false));
    assert_eq!(s.insert(40), Ok(true));
    assert_eq!(s.insert(20), Ok(false));
    assert_eq!(s.insert(25), Err(SetFull));
    assert_eq!(s.insert(0), Err(SetFull));
    assert_eq!(s.as_slice(), [10, 20, 30, 40]);
    assert_eq!(s.len(), 4);
    let mut none: [u64; 0] = [];
    let mut s = SliceNodeSet::new(&mut none);
    assert_eq!(s.insert(1), Err(SetFull));
}

#[test]
fn key_sample_matches_encode() {
    let img = scenarios::mixed();
    for (p, o) in img.expected() {
        assert_eq!(encode_key(&img.g, p, o), cref::encode(12, p, o));
    }
}
