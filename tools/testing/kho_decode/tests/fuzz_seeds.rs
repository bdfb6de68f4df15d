// SPDX-License-Identifier: GPL-2.0

//! The fuzz target's checks on its seeds and on mutations of them, under `cargo test`.

use kho_decode::fuzz::{decode, encode, run, seeds};

#[test]
fn seeds_decode_as_built() {
    let seeds = seeds();
    assert!(seeds.len() >= 12);
    for (name, data) in &seeds {
        let c = decode(data);
        assert_eq!(
            encode(c.flags, &c.mem, &c.node_order, &c.fdt),
            *data,
            "{name}"
        );
        run(data);
    }
}

#[test]
fn seeds_are_refused_for_the_right_reason() {
    use kho_decode::{parse_root, sim::walk_collect, sim::HashNodeSet, RootError, WalkError};
    for (name, data) in seeds() {
        let c = decode(&data);
        let root = parse_root(&c.g, &c.fdt);
        let walk = root
            .as_ref()
            .ok()
            .map(|r| walk_collect(&c.g, r.mem_map(), &c.mem, &mut HashNodeSet::default(), 96).2);
        match name.as_str() {
            "bad-magic" | "truncated" => assert!(matches!(root, Err(RootError::Fdt(_)))),
            "compatible" => assert_eq!(root.unwrap_err(), RootError::Incompatible),
            "root-outside-ram" => {
                assert!(matches!(
                    walk,
                    Some(Err(WalkError::NodeNotRam { level: 5, .. }))
                ))
            }
            "loop" => assert!(matches!(walk, Some(Err(WalkError::NodeRevisited { .. })))),
            "order-beyond-max" => assert!(matches!(walk, Some(Err(WalkError::KeyOrder { .. })))),
            "index-beyond-key-width" => assert!(matches!(
                walk,
                Some(Err(WalkError::IndexBeyondKeyWidth { level: 5, index: 4 }))
            )),
            _ => assert!(matches!(walk, Some(Ok(_))), "{name}: {walk:?}"),
        }
    }
}

/// Deterministic mutations of the seeds: byte flips, truncations, splices.
#[test]
fn mutated_seeds_never_break_the_checks() {
    let seeds = seeds();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let (_, base) = &seeds[round % seeds.len()];
        let mut d = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % d.len();
            match next() % 4 {
                0 => d[i] ^= 1 << (next() % 8),
                1 => d[i] = next() as u8,
                2 => d.truncate(i),
                _ => {
                    let (_, other) = &seeds[(next() as usize) % seeds.len()];
                    let j = (next() as usize) % other.len();
                    d.truncate(i);
                    d.extend_from_slice(&other[j..]);
                }
            }
            if d.is_empty() {
                break;
            }
        }
        run(&d);
    }
}
