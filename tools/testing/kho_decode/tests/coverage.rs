// SPDX-License-Identifier: GPL-2.0

//! Coverage of the subtree blobs by preserved blocks.

use kho_decode::image::scenarios;
use kho_decode::{parse_root, reference, CoverError, Coverage, GEOMETRY_4K};

const P: u64 = 4096;
const B: u64 = 0x1_0000_0000;

fn check(blobs: &[(u64, u64)], blocks: &[(u64, u32)]) -> Result<(), CoverError> {
    let mut c: Coverage = Coverage::new();
    for &(d, s) in blobs {
        c.add_subtree(d, s)?;
    }
    for &(p, o) in blocks {
        c.record_key(&GEOMETRY_4K, p, o)?;
    }
    let got = c.finish();
    // The reference agrees on whether and which blob is not covered.
    let want = reference::uncovered(&GEOMETRY_4K, blobs, blocks);
    match got {
        Ok(()) => assert_eq!(want, None),
        Err(CoverError::NotCovered { index, .. }) => assert_eq!(want, Some(index)),
        Err(_) => {}
    }
    got
}

#[test]
fn covered_blobs() {
    check(&[(B, 1)], &[(B, 0)]).unwrap();
    check(&[(B + 100, P - 100)], &[(B, 0)]).unwrap();
    check(&[(B, 3 * P)], &[(B, 1), (B + 2 * P, 0)]).unwrap();
    // In any order, pieces merged as they come.
    check(
        &[(B, 4 * P)],
        &[(B + 3 * P, 0), (B, 0), (B + 2 * P, 0), (B + P, 0)],
    )
    .unwrap();
    // Overlapping blocks of different orders.
    check(&[(B, 4 * P)], &[(B, 2), (B, 0), (B + P, 1)]).unwrap();
    // One block holding several blobs; a block much larger than its blob.
    check(&[(B + 10, 20), (B + 100, 8), (B + 3000, 1096)], &[(B, 0)]).unwrap();
    check(&[(B + 0x12_3456, 1)], &[(B, 18)]).unwrap();
    // No subtrees at all.
    check(&[], &[(B, 0)]).unwrap();
}

#[test]
fn holes_are_found() {
    assert_eq!(
        check(&[(B, 1)], &[]),
        Err(CoverError::NotCovered { index: 0, at: B })
    );
    assert_eq!(
        check(&[(B, P + 1)], &[(B, 0)]),
        Err(CoverError::NotCovered {
            index: 0,
            at: B + P
        })
    );
    // Overlapping blocks whose sizes add up to the blob's: a page is still missing. Summing
    // overlap lengths would take this as covered.
    assert_eq!(
        check(&[(B, 3 * P)], &[(B, 1), (B, 0)]),
        Err(CoverError::NotCovered {
            index: 0,
            at: B + 2 * P
        })
    );
    // A hole in the middle; the second blob is the one not covered.
    assert_eq!(
        check(
            &[(B, P), (B + 8 * P, 3 * P)],
            &[(B, 0), (B + 8 * P, 0), (B + 10 * P, 0)]
        ),
        Err(CoverError::NotCovered {
            index: 1,
            at: B + 9 * P
        })
    );
    // Starting before the first block.
    assert_eq!(
        check(&[(B - 1, 2)], &[(B, 0)]),
        Err(CoverError::NotCovered {
            index: 0,
            at: B - 1
        })
    );
}

#[test]
fn refused_subtrees() {
    assert_eq!(
        check(&[(B, 0)], &[]),
        Err(CoverError::EmptyBlob { index: 0 })
    );
    assert_eq!(
        check(&[(B, 1), (u64::MAX, 2)], &[]),
        Err(CoverError::BlobOverflow { index: 1 })
    );
    let mut c: Coverage<2, 4> = Coverage::new();
    c.add_subtree(B, 1).unwrap();
    c.add_subtree(B, 1).unwrap();
    assert_eq!(c.add_subtree(B, 1), Err(CoverError::TooManySubtrees));
    assert_eq!(c.subtrees(), 2);
    assert_eq!(c.record(u64::MAX, 2), Err(CoverError::BlockOverflow));
    // Ending exactly at 2^64 - 1 is fine.
    c.record(u64::MAX - 1, 1).unwrap();
}

#[test]
fn pieces_bound() {
    let mut c: Coverage<1, 4> = Coverage::new();
    c.add_subtree(B, 64 * P).unwrap();
    for i in 0..4 {
        c.record(B + 2 * i * P, P).unwrap();
    }
    assert_eq!(c.record(B + 20 * P, P), Err(CoverError::TooManyPieces));
    // Filling the gaps merges the pieces again.
    let mut c: Coverage<1, 4> = Coverage::new();
    c.add_subtree(B, 64 * P).unwrap();
    for i in 0..32 {
        c.record(B + 2 * i * P, P).unwrap();
        c.record(B + (2 * i + 1) * P, P).unwrap();
    }
    c.finish().unwrap();
}

#[test]
fn from_a_root_and_a_walk() {
    let img = scenarios::mixed();
    let fdt = img.fdt();
    let root = parse_root(&img.g, &fdt).unwrap();
    let mut c: Coverage = Coverage::default();
    c.add_root(&root).unwrap();
    assert_eq!(c.subtrees(), 3);
    for (p, o) in img.expected() {
        c.record_key(&img.g, p, o).unwrap();
    }
    c.finish().unwrap();
    assert_eq!(
        CoverError::NotCovered {
            index: 2,
            at: 0x1000
        }
        .to_string(),
        "KHO subtree blob not preserved (subtree 2, from 0x1000)"
    );
}
