// SPDX-License-Identifier: GPL-2.0

//! The FDT reader: well-formed blobs, and every kind of damage.

use kho_decode::fdt_writer::FdtWriter;
use kho_decode::{nodename_eq, prop_str, stringlist_contains, Fdt, FdtError};

/// A root with two properties and subnodes, one nested, NOPs sprinkled in.
fn sample() -> Vec<u8> {
    let mut w = FdtWriter::new();
    w.nop();
    w.begin_node(b"");
    w.prop(b"compatible", b"foo\0kho-v4\0");
    w.nop();
    w.prop(b"empty", b"");
    w.begin_node(b"a@1");
    w.prop(b"x", &[1, 2, 3]);
    w.begin_node(b"deep");
    w.end_node();
    w.end_node();
    w.nop();
    w.begin_node(b"a");
    w.prop(b"x", &[4]);
    w.end_node();
    w.begin_node(b"b");
    w.end_node();
    w.end_node();
    w.finish()
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

fn set_be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the structure block in a blob of [`FdtWriter`].
const STRUCT: usize = 56;

#[test]
fn reads_a_well_formed_blob() {
    let blob = sample();
    let fdt = Fdt::new(&blob).unwrap();
    assert_eq!(fdt.total_size(), blob.len());
    let root = fdt.root();
    assert_eq!(root.name(), b"");
    assert_eq!(
        root.property(b"compatible").unwrap(),
        Some(&b"foo\0kho-v4\0"[..])
    );
    assert_eq!(root.property(b"empty").unwrap(), Some(&b""[..]));
    assert_eq!(
        root.property(b"x").unwrap(),
        None,
        "a subnode's property is not the root's"
    );
    assert_eq!(root.compatible_with(b"kho-v4").unwrap(), Some(true));
    assert_eq!(root.compatible_with(b"foo").unwrap(), Some(true));
    assert_eq!(root.compatible_with(b"kho").unwrap(), Some(false));
    let props: Vec<_> = root.properties().map(|p| p.unwrap().name).collect();
    assert_eq!(props, [&b"compatible"[..], b"empty"]);
    let names: Vec<_> = root.subnodes().map(|n| n.unwrap().name()).collect();
    assert_eq!(names, [&b"a@1"[..], b"a", b"b"]);
    // libfdt's name matching: "a" finds "a@1" first, "a@1" only itself.
    let a = root.subnode(b"a").unwrap().unwrap();
    assert_eq!(a.name(), b"a@1");
    assert_eq!(a.property(b"x").unwrap(), Some(&[1u8, 2, 3][..]));
    assert_eq!(root.subnode(b"a@1").unwrap().unwrap().name(), b"a@1");
    assert!(root.subnode(b"a@2").unwrap().is_none());
    assert!(
        root.subnode(b"deep").unwrap().is_none(),
        "not a direct subnode"
    );
    let deep: Vec<_> = a.subnodes().map(|n| n.unwrap().name()).collect();
    assert_eq!(deep, [&b"deep"[..]]);
    assert_eq!(
        root.subnode(b"b")
            .unwrap()
            .unwrap()
            .compatible_with(b"x")
            .unwrap(),
        None
    );
}

#[test]
fn name_and_string_helpers_follow_libfdt() {
    assert!(nodename_eq(b"luo", b"luo"));
    assert!(nodename_eq(b"luo@0", b"luo"));
    assert!(!nodename_eq(b"luo@0", b"luo@1"));
    assert!(
        !nodename_eq(b"luo@0@1", b"luo@0"),
        "a name with '@' must match exactly"
    );
    assert!(!nodename_eq(b"luox", b"luo"));
    assert!(!nodename_eq(b"lu", b"luo"));
    assert!(stringlist_contains(b"kho-v4\0", b"kho-v4"));
    assert!(stringlist_contains(b"a\0\0kho-v4\0", b"kho-v4"));
    assert!(
        !stringlist_contains(b"kho-v4", b"kho-v4"),
        "unterminated entries do not count"
    );
    assert!(!stringlist_contains(b"kho-v40\0", b"kho-v4"));
    assert!(!stringlist_contains(b"xkho-v4\0", b"kho-v4"));
    assert!(stringlist_contains(b"\0", b""));
    assert!(!stringlist_contains(b"", b""));
    assert_eq!(prop_str(b"abc\0"), Some(&b"abc"[..]));
    assert_eq!(prop_str(b"\0"), Some(&b""[..]));
    assert_eq!(prop_str(b"abc"), None);
    assert_eq!(prop_str(b"a\0b\0"), None);
    assert_eq!(prop_str(b""), None);
}

#[test]
fn version_16_without_struct_size() {
    let mut blob = sample();
    set_be32(&mut blob, 20, 16);
    set_be32(&mut blob, 36, 0xdead_beef);
    let fdt = Fdt::new(&blob).unwrap();
    assert_eq!(fdt.root().subnodes().count(), 3);
}

#[test]
fn header_errors() {
    let good = sample();
    let e = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        Fdt::new(&b).unwrap_err()
    };
    assert_eq!(e(&|b| b[0] ^= 1), FdtError::BadMagic);
    assert_eq!(e(&|b| set_be32(b, 20, 15)), FdtError::BadVersion);
    assert_eq!(e(&|b| set_be32(b, 24, 18)), FdtError::BadVersion);
    assert_eq!(
        e(&|b| set_be32(b, 4, good.len() as u32 + 1)),
        FdtError::Truncated
    );
    assert_eq!(
        e(&|b| set_be32(b, 4, 20)),
        FdtError::Truncated,
        "totalsize below the header"
    );
    // totalsize cutting the strings block off.
    assert_eq!(
        e(&|b| set_be32(b, 4, good.len() as u32 - 1)),
        FdtError::BadLayout
    );
    assert_eq!(
        e(&|b| set_be32(b, 8, STRUCT as u32 + 2)),
        FdtError::Misaligned
    );
    assert_eq!(e(&|b| set_be32(b, 16, 44)), FdtError::Misaligned);
    assert_eq!(
        e(&|b| set_be32(b, 16, 32)),
        FdtError::BadLayout,
        "reserve map in the header"
    );
    assert_eq!(
        e(&|b| set_be32(b, 8, 0)),
        FdtError::BadLayout,
        "structure in the header"
    );
    assert_eq!(e(&|b| set_be32(b, 36, u32::MAX)), FdtError::BadLayout);
    // Strings overlapping the structure block.
    assert_eq!(
        e(&|b| set_be32(b, 12, STRUCT as u32 + 8)),
        FdtError::BadLayout
    );
    // A reserve map whose terminator is gone runs on into the structure block.
    assert_eq!(e(&|b| b[40] = 1), FdtError::BadReserveMap);
    // A reserve map that never ends.
    let mut b = good.clone();
    let off = (good.len() as u32 - 8) & !7;
    set_be32(&mut b, 16, off);
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadReserveMap);
}

#[test]
fn reserve_map_overlapping_the_structure_block() {
    // The map's second entry is the start of the structure block, its third (16 zero bytes of
    // a property) terminates it: it overlaps the structure block.
    let mut b = raw(&words(&[1, 0, 3, 16, 0, 0, 0, 0, 0, 2, 9]), b"p\0");
    assert!(Fdt::new(&b).is_ok());
    b[40] = 1;
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadLayout);
}

#[test]
fn every_truncation_is_refused() {
    let good = sample();
    for len in 0..good.len() {
        assert_eq!(
            Fdt::new(&good[..len]).unwrap_err(),
            FdtError::Truncated,
            "len {len}"
        );
    }
    // Trailing bytes beyond totalsize are not part of the blob.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0xff; 64]);
    assert_eq!(Fdt::new(&longer).unwrap().total_size(), good.len());
}

/// A blob from raw structure tokens (big-endian words and bytes) and a strings block.
fn raw(structs: &[u8], strings: &[u8]) -> Vec<u8> {
    let off_struct = STRUCT as u32;
    let off_strings = off_struct + structs.len() as u32;
    let total = off_strings + strings.len() as u32;
    let mut out = Vec::new();
    for v in [
        0xd00d_feed,
        total,
        off_struct,
        off_strings,
        40,
        17,
        16,
        0,
        strings.len() as u32,
        structs.len() as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(structs);
    out.extend_from_slice(strings);
    out
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

#[test]
fn structure_errors() {
    let err = |s: &[u8], strings: &[u8]| Fdt::new(&raw(s, strings)).unwrap_err();
    // Minimal valid: root, end node, end.
    assert!(Fdt::new(&raw(&words(&[1, 0, 2, 9]), b"")).is_ok());
    assert_eq!(
        err(&words(&[7, 0, 2, 9]), b""),
        FdtError::BadToken { offset: 0 }
    );
    assert_eq!(
        err(&words(&[1, 0, 2, 5]), b""),
        FdtError::BadToken { offset: 12 }
    );
    assert_eq!(
        err(&words(&[2, 9]), b""),
        FdtError::BadNesting { offset: 0 }
    );
    assert_eq!(err(&words(&[9]), b""), FdtError::BadNesting { offset: 0 });
    assert_eq!(
        err(&words(&[1, 0x6100_0000, 2, 9]), b""),
        FdtError::RootName
    );
    assert_eq!(
        err(&words(&[1, 0, 2, 2, 9]), b""),
        FdtError::BadNesting { offset: 12 }
    );
    assert_eq!(
        err(&words(&[1, 0, 9]), b""),
        FdtError::BadNesting { offset: 8 }
    );
    assert_eq!(
        err(&words(&[1, 0, 2, 1, 0, 2, 9]), b""),
        FdtError::BadNesting { offset: 12 }
    );
    assert_eq!(err(&words(&[1, 0, 2]), b""), FdtError::NoEnd);
    assert_eq!(err(&words(&[1, 0, 4, 4]), b""), FdtError::NoEnd);
    // Unterminated node name.
    let mut s = words(&[1, 0, 1]);
    s.extend_from_slice(b"abcd");
    assert_eq!(err(&s, b""), FdtError::BadName { offset: 8 });
    // Property value overrunning the block; name offset outside the strings block; unterminated
    // name.
    assert_eq!(
        err(&words(&[1, 0, 3, 100, 0, 2, 9]), b"p\0"),
        FdtError::BadProperty { offset: 8 }
    );
    assert_eq!(
        err(&words(&[1, 0, 3, 0, 2, 2, 9]), b"p\0"),
        FdtError::BadProperty { offset: 8 }
    );
    assert_eq!(
        err(&words(&[1, 0, 3, 0, 0, 2, 9]), b"p"),
        FdtError::BadProperty { offset: 8 }
    );
    assert_eq!(
        err(&words(&[1, 0, 3, u32::MAX, 0, 2, 9]), b"p\0"),
        FdtError::BadProperty { offset: 8 }
    );
    // Property after a subnode; a property at depth 0.
    assert_eq!(
        err(&words(&[1, 0, 1, 0, 2, 3, 0, 0, 2, 9]), b"p\0"),
        FdtError::PropertyAfterSubnode { offset: 20 }
    );
    assert_eq!(
        err(&words(&[1, 0, 2, 3, 0, 0, 9]), b"p\0"),
        FdtError::BadNesting { offset: 12 }
    );
    // Properties of a subnode after its own subnode are refused too, ones after a sibling not.
    assert!(Fdt::new(&raw(
        &words(&[1, 0, 3, 0, 0, 1, 0, 3, 0, 0, 2, 2, 9]),
        b"p\0"
    ))
    .is_ok());
    // 32 levels are too deep, 31 are fine.
    let nest = |n: usize| {
        let mut v = vec![1, 0];
        for _ in 0..n {
            v.extend([1, 0x6100_0000]);
        }
        v.extend(std::iter::repeat_n(2, n + 1));
        v.push(9);
        words(&v)
    };
    assert!(Fdt::new(&raw(&nest(31), b"")).is_ok());
    assert_eq!(err(&nest(32), b""), FdtError::TooDeep);
}

#[test]
fn single_bit_flips_never_panic() {
    let good = sample();
    let mut accepted = 0;
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            if let Ok(fdt) = Fdt::new(&b) {
                accepted += 1;
                let root = fdt.root();
                for p in root.properties() {
                    p.unwrap();
                }
                for n in root.subnodes() {
                    let n = n.unwrap();
                    for p in n.properties() {
                        p.unwrap();
                    }
                    assert!(root.subnode(n.name()).unwrap().is_some());
                }
            }
        }
    }
    // Flips in names and values keep the blob valid.
    assert!(accepted > 0);
    assert_eq!(be32(&good, 0), 0xd00d_feed);
}
