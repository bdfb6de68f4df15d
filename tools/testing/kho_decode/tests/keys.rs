// SPDX-License-Identifier: GPL-2.0

//! Geometry and key functions against the C formulas.

use kho_decode::{bitmap_index, cref, decode_key, encode_key, table_index, Geometry, GEOMETRY_4K};

/// A xorshift64 sequence: many addresses without a dependency.
fn addresses(n: usize) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = vec![
        0,
        0x1000,
        0x20_0000,
        0x4000_0000,
        0x1_0000_0000,
        0x000f_ffff_ffff_f000,
        0x0010_0000_0000_0000,
        0x7fff_ffff_ffff_f000,
        0xffff_ffff_ffff_f000,
        u64::MAX,
    ];
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly addresses of a 52-bit physical address space, some of any width.
        out.push(if x & 1 == 0 { x >> 12 } else { x });
    }
    out
}

fn geometries() -> Vec<Geometry> {
    (12..=16)
        .map(|ps| Geometry {
            page_shift: ps,
            max_order: 63 - ps,
        })
        .chain([GEOMETRY_4K])
        .collect()
}

#[test]
fn geometry_4k_is_the_c_one() {
    let g = GEOMETRY_4K;
    assert!(g.is_valid());
    assert_eq!(g.page_size(), 4096);
    assert_eq!(g.key_width(), 53);
    assert_eq!(g.table_log2(), 9);
    assert_eq!(g.bitmap_log2(), 15);
    assert_eq!(g.depth(), 6);
    assert_eq!(g.words_per_node(), 512);
}

#[test]
fn geometry_matches_c_for_every_page_size() {
    for g in geometries() {
        let ps = g.page_shift;
        assert!(g.is_valid(), "{g:?}");
        assert_eq!(g.key_width(), cref::key_width(ps));
        assert_eq!(g.table_log2(), cref::table_log2(ps));
        assert_eq!(g.bitmap_log2(), cref::bitmap_log2(ps));
        assert_eq!(g.depth(), cref::depth(ps));
        assert!(g.depth() as usize <= kho_decode::MAX_DEPTH);
        assert_eq!(g.words_per_node() as u64 * 8, 1 << ps);
    }
}

#[test]
fn invalid_geometries_are_refused_without_panics() {
    for ps in [0, 1, 3, 11, 17, 63, 64, 65, u32::MAX] {
        for max_order in [0, 10, 51, 64, u32::MAX] {
            let g = Geometry {
                page_shift: ps,
                max_order,
            };
            assert!(!g.is_valid(), "{g:?}");
            // None of these may panic.
            let _ = (
                g.page_size(),
                g.key_width(),
                g.table_log2(),
                g.bitmap_log2(),
            );
            let _ = (g.depth(), g.words_per_node());
            assert_eq!(encode_key(&g, 0x1000, 0), 0);
            assert_eq!(decode_key(&g, 1 << 52), None);
            let _ = (table_index(&g, u64::MAX, 3), bitmap_index(&g, u64::MAX));
        }
    }
    let too_big_order = Geometry {
        page_shift: 12,
        max_order: 52,
    };
    assert!(!too_big_order.is_valid());
}

#[test]
fn encode_matches_c_and_round_trips() {
    let addrs = addresses(2000);
    for g in geometries() {
        let ps = g.page_shift;
        for order in 0..=g.max_order {
            for &a in &addrs {
                let key = encode_key(&g, a, order);
                assert_eq!(
                    key,
                    cref::encode(ps, a, order),
                    "encode {a:#x} order {order}"
                );
                let aligned = a & !((1u64 << (ps + order)) - 1);
                assert_eq!(decode_key(&g, key), Some((aligned, order)), "key {key:#x}");
                assert_eq!(cref::decode(ps, key), (aligned, order));
                // Every key the C code can add has at most key_width bits.
                assert!(64 - key.leading_zeros() <= g.key_width());
            }
        }
    }
}

#[test]
fn orders_0_to_10_round_trip_on_4k() {
    let g = GEOMETRY_4K;
    for order in 0..=10 {
        for a in addresses(5000) {
            let key = encode_key(&g, a, order);
            let (phys, o) = decode_key(&g, key).unwrap();
            assert_eq!(o, order);
            assert_eq!(phys, a & !((4096u64 << order) - 1));
            assert_eq!(encode_key(&g, phys, o), key);
        }
    }
}

#[test]
fn indices_match_c() {
    for g in geometries() {
        let ps = g.page_shift;
        for order in [0, 1, 9, 10, 18, g.max_order] {
            for a in addresses(500) {
                let key = encode_key(&g, a, order);
                for level in 1..g.depth() {
                    assert_eq!(
                        table_index(&g, key, level),
                        cref::table_index(ps, key, level)
                    );
                }
                assert_eq!(bitmap_index(&g, key), cref::bitmap_index(ps, key));
            }
        }
        // Arbitrary keys too, within the key width.
        for k in addresses(500) {
            let key = k >> (64 - g.key_width());
            for level in 1..g.depth() {
                assert_eq!(
                    table_index(&g, key, level),
                    cref::table_index(ps, key, level)
                );
            }
            assert_eq!(bitmap_index(&g, key), cref::bitmap_index(ps, key));
        }
    }
    assert_eq!(
        table_index(&GEOMETRY_4K, u64::MAX, 0),
        0,
        "level 0 has no table"
    );
}

#[test]
fn undecodable_keys() {
    let g = GEOMETRY_4K;
    assert_eq!(decode_key(&g, 0), None, "key 0");
    // Wider than 53 bits: the order would be negative.
    assert_eq!(decode_key(&g, 1 << 53), None);
    assert_eq!(decode_key(&g, u64::MAX), None);
    // Order bit at 52 - 40 = 12 is order 40, below that the order is too high.
    assert_eq!(decode_key(&g, 1 << 12), Some((0, 40)));
    assert_eq!(decode_key(&g, (1 << 12) | 0xfff), Some((0xfff << 52, 40)));
    assert_eq!(decode_key(&g, 1 << 11), None);
    assert_eq!(decode_key(&g, 1), None);
    let small = Geometry {
        page_shift: 12,
        max_order: 10,
    };
    assert_eq!(decode_key(&small, 1 << 42), Some((0, 10)));
    assert_eq!(decode_key(&small, 1 << 41), None);
    assert_eq!(encode_key(&small, 0, 11), 0, "order above max_order");
}
