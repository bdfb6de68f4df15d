// SPDX-License-Identifier: GPL-2.0

//! parse_root: the KHO root node and its subtrees.

use kho_decode::fdt_writer::{RootSpec, SubtreeSpec};
use kho_decode::{parse_root, FdtError, Geometry, RootError, Subtree, GEOMETRY_4K, MAX_SUBTREES};

const MAP: u64 = 0x1_0000_0000;

fn spec() -> RootSpec {
    let mut s = RootSpec::new(MAP);
    s.subtrees
        .push(SubtreeSpec::new("LUO", 0x1_1000_0000, 0x40));
    s.subtrees
        .push(SubtreeSpec::new("memblock", 0x1_1020_3000, 0x1_0000));
    s.subtrees
        .push(SubtreeSpec::new("test@1", 0x1_2000_0000, 4096));
    s
}

fn err(f: impl FnOnce(&mut RootSpec)) -> RootError {
    let mut s = spec();
    f(&mut s);
    let blob = s.to_fdt();
    parse_root(&GEOMETRY_4K, &blob).unwrap_err()
}

#[test]
fn well_formed_root() {
    let blob = spec().to_fdt();
    let root = parse_root(&GEOMETRY_4K, &blob).unwrap();
    assert_eq!(root.mem_map(), MAP);
    assert_eq!(root.subtree_count(), 3);
    let all: Vec<Subtree<'_>> = root.subtrees().collect();
    assert_eq!(
        all[0],
        Subtree {
            name: b"LUO",
            preserved_data: 0x1_1000_0000,
            blob_size: 0x40
        }
    );
    assert_eq!(all[1].name, b"memblock");
    assert_eq!(all[1].blob_size, 0x1_0000);
    assert_eq!(all[2].name, b"test@1");
    // Looked up as kho_retrieve_subtree() does.
    assert_eq!(root.find(b"LUO"), Some(all[0]));
    assert_eq!(
        root.find(b"memblock").unwrap().preserved_data,
        0x1_1020_3000
    );
    assert_eq!(root.find(b"test"), Some(all[2]), "without unit address");
    assert_eq!(root.find(b"test@1"), Some(all[2]));
    assert_eq!(root.find(b"test@2"), None);
    assert_eq!(root.find(b"LU"), None);
    assert_eq!(root.find(b""), None);
    assert_eq!(root.node().name(), b"");
}

#[test]
fn no_subtrees_and_a_compatible_list() {
    let mut s = RootSpec::new(MAP);
    s.compatible = Some(b"vendor,kho\0kho-v4\0".to_vec());
    let blob = s.to_fdt();
    let root = parse_root(&GEOMETRY_4K, &blob).unwrap();
    assert_eq!(root.subtree_count(), 0);
    assert_eq!(root.subtrees().count(), 0);
}

#[test]
fn compatible_errors() {
    assert_eq!(
        err(|s| s.compatible = Some(b"kho-v3\0".to_vec())),
        RootError::Incompatible
    );
    assert_eq!(
        err(|s| s.compatible = Some(b"kho-v4".to_vec())),
        RootError::Incompatible
    );
    assert_eq!(
        err(|s| s.compatible = Some(b"kho-v4x\0".to_vec())),
        RootError::Incompatible
    );
    assert_eq!(
        err(|s| s.compatible = Some(b"KHO-V4\0".to_vec())),
        RootError::Incompatible
    );
    assert_eq!(err(|s| s.compatible = None), RootError::NoCompatible);
}

#[test]
fn memory_map_errors() {
    assert_eq!(err(|s| s.mem_map = None), RootError::NoMemoryMap);
    assert_eq!(
        err(|s| s.mem_map = Some(0x1000u32.to_ne_bytes().to_vec())),
        RootError::MemoryMapSize { len: 4 }
    );
    assert_eq!(
        err(|s| s.mem_map = Some([0; 9].to_vec())),
        RootError::MemoryMapSize { len: 9 }
    );
    assert_eq!(
        err(|s| s.mem_map = Some(0u64.to_ne_bytes().to_vec())),
        RootError::MemoryMapZero
    );
    assert_eq!(
        err(|s| s.mem_map = Some((MAP + 8).to_ne_bytes().to_vec())),
        RootError::MemoryMapMisaligned { phys: MAP + 8 }
    );
    // Native-endian, as the C code stores it: the other byte order is another address.
    let mut s = spec();
    s.mem_map = Some(MAP.swap_bytes().to_ne_bytes().to_vec());
    let blob = s.to_fdt();
    assert_eq!(
        parse_root(&GEOMETRY_4K, &blob).unwrap().mem_map(),
        MAP.swap_bytes()
    );
    // Aligned to 4 KiB but not to 16 KiB pages.
    let g16 = Geometry {
        page_shift: 14,
        max_order: 20,
    };
    let mut s = spec();
    s.mem_map = Some((MAP + 0x1000).to_ne_bytes().to_vec());
    let blob = s.to_fdt();
    assert!(parse_root(&GEOMETRY_4K, &blob).is_ok());
    assert_eq!(
        parse_root(&g16, &blob).unwrap_err(),
        RootError::MemoryMapMisaligned { phys: MAP + 0x1000 }
    );
}

#[test]
fn subtree_errors() {
    assert_eq!(
        err(|s| s.subtrees[1].data = None),
        RootError::SubtreeData { index: 1 }
    );
    assert_eq!(
        err(|s| s.subtrees[2].data = Some(vec![0; 4])),
        RootError::SubtreeData { index: 2 }
    );
    assert_eq!(
        err(|s| s.subtrees[0].size = None),
        RootError::SubtreeSize { index: 0 }
    );
    assert_eq!(
        err(|s| s.subtrees[0].size = Some(vec![0; 16])),
        RootError::SubtreeSize { index: 0 }
    );
    assert_eq!(
        err(|s| s.subtrees.push(SubtreeSpec::new("memblock", 0x2000, 1))),
        RootError::DuplicateSubtree { index: 3 }
    );
    assert_eq!(
        err(|s| {
            for i in 0..=MAX_SUBTREES {
                s.subtrees
                    .push(SubtreeSpec::new(&format!("s{i}"), 0x1000, 1));
            }
        }),
        RootError::TooManySubtrees
    );
    // Exactly the bound is fine.
    let mut s = RootSpec::new(MAP);
    for i in 0..MAX_SUBTREES {
        s.subtrees
            .push(SubtreeSpec::new(&format!("s{i}"), 0x1000, 1));
    }
    let blob = s.to_fdt();
    assert_eq!(
        parse_root(&GEOMETRY_4K, &blob).unwrap().subtrees().count(),
        MAX_SUBTREES
    );
}

#[test]
fn fdt_errors_and_geometry() {
    let mut blob = spec().to_fdt();
    blob[3] = 0;
    assert_eq!(
        parse_root(&GEOMETRY_4K, &blob).unwrap_err(),
        RootError::Fdt(FdtError::BadMagic)
    );
    let blob = spec().to_fdt();
    let bad = Geometry {
        page_shift: 11,
        max_order: 0,
    };
    assert_eq!(parse_root(&bad, &blob).unwrap_err(), RootError::BadGeometry);
}

#[test]
fn errors_describe_themselves() {
    let e = err(|s| s.subtrees[1].size = None);
    assert_eq!(e.describe(), "KHO subtree without a u64 blob-size");
    assert_eq!(
        e.to_string(),
        "KHO subtree without a u64 blob-size (subtree 1)"
    );
    assert_eq!(
        RootError::Fdt(FdtError::BadToken { offset: 0x10 }).to_string(),
        "bad FDT token (structure offset 0x10)"
    );
}
