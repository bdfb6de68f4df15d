// SPDX-License-Identifier: GPL-2.0

//! Decoders for the Kexec HandOver (KHO) handover ABI `kho-v4`, for untrusted input.
//!
//! The previous kernel hands the next one a flattened device tree (FDT) whose root node has
//! `compatible = "kho-v4"` and `preserved-memory-map`, the physical address of the root of a
//! radix tree of preserved memory, plus one subnode per preserved blob with `preserved-data`
//! (its physical address) and `blob-size`. All three are raw native-endian `u64`s (see
//! `include/linux/kho/abi/kexec_handover.h`).
//!
//! The radix tree is made of page-sized nodes: tables of physical addresses of the nodes one
//! level down and, at level 0, bitmaps. A preserved block of `PAGE_SIZE << order` bytes at
//! `phys` is the key `1 << (64 - (PAGE_SHIFT + order)) | phys >> (PAGE_SHIFT + order)`; the
//! key's bits select the table entries from the top level down and its lowest bits the bit of
//! the bitmap leaf.
//!
//! Everything here treats that data as untrusted: the previous kernel may have been a different
//! one, buggy, or its memory may have been damaged. So
//!
//! - [`Fdt`] is a small read-only FDT reader that checks the header and the whole structure
//!   block before anything is looked up, every offset bounds-checked;
//! - [`parse_root`] checks the KHO root node and every subtree node of it;
//! - [`walk`] visits the radix tree in the same order as the C `kho_radix_walk_tree()` and
//!   checks every node before reading it (alignment, RAM, not scratch, never seen before, a
//!   bound on their number) and every key (decodable, order within bounds, in RAM, not scratch);
//! - [`Coverage`] checks that every subtree's blob is covered by preserved keys;
//! - [`validate`] does all of the above, so that a refused handover is one [`HandoverError`]
//!   and one warning.
//!
//! The module depends on `core` only: it allocates nothing, has no `unsafe`, and never panics on
//! any input (no indexing, no unchecked arithmetic on input values), so the same source is built
//! into the kernel (as `pub mod decode;` of the KHO crate) and into the host test crate
//! `tools/testing/kho_decode`, which unit-tests and fuzzes it. Each part is a file of its own
//! (`key.rs`, `radix.rs` for the walk, `fdt.rs`, `root.rs`, `coverage.rs`), used from here.

use core::fmt;

mod coverage;
mod fdt;
mod key;
mod radix;
mod root;

pub use coverage::{
    CoverError,
    Coverage, //
};
pub use fdt::{
    nodename_eq,
    prop_str,
    stringlist_contains,
    Fdt,
    FdtError,
    Node,
    Properties,
    Property,
    Subnodes, //
};
pub use key::{
    bitmap_index,
    decode_key,
    encode_key,
    table_index,
    Geometry,
    GEOMETRY_4K,
    MAX_DEPTH, //
};
pub use radix::{
    walk,
    NodeSet,
    PhysMem,
    SetFull,
    SliceNodeSet,
    WalkError,
    WalkStats, //
};
pub use root::{
    parse_root,
    KhoRoot,
    RootError,
    Subtree,
    Subtrees,
    KHO_FDT_COMPATIBLE,
    KHO_FDT_MEMORY_MAP_PROP_NAME,
    KHO_SUB_TREE_PROP_NAME,
    KHO_SUB_TREE_SIZE_PROP_NAME,
    MAX_SUBTREES, //
};

/// Why [`validate`] refused a handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverError {
    /// The root FDT was refused.
    Root(RootError),
    /// The radix tree was refused (never with [`WalkError::Callback`]).
    Walk(WalkError<CoverError>),
    /// A subtree blob was refused or is not covered by preserved blocks.
    Cover(CoverError),
}

impl HandoverError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Root(e) => e.describe(),
            Self::Walk(e) => e.describe(),
            Self::Cover(e) => e.describe(),
        }
    }
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root(e) => write!(f, "{e}"),
            Self::Walk(e) => write!(f, "{e}"),
            Self::Cover(e) => write!(f, "{e}"),
        }
    }
}

/// Checks a whole handover before anything of it is used: [`parse_root`] of `fdt_bytes`, a
/// [`walk`] of its radix tree (`seen` and `max_nodes` as there) and the [`Coverage`] of every
/// subtree blob by the preserved blocks, in `cov`, which must be new.
///
/// Only reads: nothing is reserved or restored, so the caller can walk again with visitors that
/// act once this succeeded.
pub fn validate<'a, M, S, const N: usize, const P: usize>(
    g: &Geometry,
    fdt_bytes: &'a [u8],
    mem: &M,
    seen: &mut S,
    max_nodes: u64,
    cov: &mut Coverage<N, P>,
) -> Result<(KhoRoot<'a>, WalkStats), HandoverError>
where
    M: PhysMem + ?Sized,
    S: NodeSet + ?Sized,
{
    let root = parse_root(g, fdt_bytes).map_err(HandoverError::Root)?;
    cov.add_root(&root).map_err(HandoverError::Cover)?;
    let stats = walk(
        g,
        root.mem_map(),
        mem,
        seen,
        max_nodes,
        |_| Ok(()),
        |phys, order| cov.record_key(g, phys, order),
    )
    .map_err(|e| match e {
        WalkError::Callback(c) => HandoverError::Cover(c),
        e => HandoverError::Walk(e),
    })?;
    cov.finish().map_err(HandoverError::Cover)?;
    Ok((root, stats))
}
