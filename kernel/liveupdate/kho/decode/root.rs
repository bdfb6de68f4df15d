// SPDX-License-Identifier: GPL-2.0

//! The root node of the KHO FDT: its properties and its subtrees.

use super::{
    nodename_eq,
    Fdt,
    FdtError,
    Geometry,
    Node,
    Subnodes, //
};
use core::fmt;

/// The `compatible` string of the KHO root node.
pub const KHO_FDT_COMPATIBLE: &[u8] = b"kho-v4";

/// The root node's property holding the physical address of the radix tree root.
pub const KHO_FDT_MEMORY_MAP_PROP_NAME: &[u8] = b"preserved-memory-map";

/// A subtree node's property holding the physical address of its blob.
pub const KHO_SUB_TREE_PROP_NAME: &[u8] = b"preserved-data";

/// A subtree node's property holding the size of its blob in bytes.
pub const KHO_SUB_TREE_SIZE_PROP_NAME: &[u8] = b"blob-size";

/// The most subtree nodes [`parse_root`] accepts under the root.
///
/// The C kernel keeps the root FDT within one page, which holds far fewer.
pub const MAX_SUBTREES: usize = 256;

/// Why [`parse_root`] refused the KHO FDT. Subtrees are numbered from 0 in FDT order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootError {
    /// The blob is no valid FDT.
    Fdt(FdtError),
    /// The geometry is not [valid](Geometry::is_valid).
    BadGeometry,
    /// The root node has no `compatible` property.
    NoCompatible,
    /// The root's `compatible` has no `kho-v4` entry.
    Incompatible,
    /// The root node has no `preserved-memory-map` property.
    NoMemoryMap,
    /// `preserved-memory-map` is not 8 bytes long.
    MemoryMapSize {
        /// Its length.
        len: usize,
    },
    /// `preserved-memory-map` is 0.
    MemoryMapZero,
    /// `preserved-memory-map` is not page-aligned.
    MemoryMapMisaligned {
        /// Its value.
        phys: u64,
    },
    /// A subtree's `preserved-data` is missing or not 8 bytes long.
    SubtreeData {
        /// The subtree's number.
        index: usize,
    },
    /// A subtree's `blob-size` is missing or not 8 bytes long.
    SubtreeSize {
        /// The subtree's number.
        index: usize,
    },
    /// Two subtrees have the same name.
    DuplicateSubtree {
        /// The number of the second one.
        index: usize,
    },
    /// The root has more than [`MAX_SUBTREES`] subnodes.
    TooManySubtrees,
}

impl RootError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Fdt(e) => e.describe(),
            Self::BadGeometry => "invalid radix tree geometry",
            Self::NoCompatible => "KHO root node without compatible",
            Self::Incompatible => "KHO root node not compatible with kho-v4",
            Self::NoMemoryMap => "KHO root node without preserved-memory-map",
            Self::MemoryMapSize { .. } => "KHO preserved-memory-map is not a u64",
            Self::MemoryMapZero => "KHO preserved-memory-map is 0",
            Self::MemoryMapMisaligned { .. } => "KHO preserved-memory-map not page-aligned",
            Self::SubtreeData { .. } => "KHO subtree without a u64 preserved-data",
            Self::SubtreeSize { .. } => "KHO subtree without a u64 blob-size",
            Self::DuplicateSubtree { .. } => "two KHO subtrees with the same name",
            Self::TooManySubtrees => "too many KHO subtrees",
        }
    }
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "{e}"),
            Self::MemoryMapSize { len } => write!(f, "{} ({len} bytes)", self.describe()),
            Self::MemoryMapMisaligned { phys } => write!(f, "{} ({phys:#x})", self.describe()),
            Self::SubtreeData { index }
            | Self::SubtreeSize { index }
            | Self::DuplicateSubtree { index } => {
                write!(f, "{} (subtree {index})", self.describe())
            }
            _ => f.write_str(self.describe()),
        }
    }
}

impl From<FdtError> for RootError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

/// A preserved blob named by a subnode of the KHO root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subtree<'a> {
    /// The subnode's name.
    pub name: &'a [u8],
    /// `preserved-data`: the blob's physical address.
    pub preserved_data: u64,
    /// `blob-size`: the blob's size in bytes.
    pub blob_size: u64,
}

/// A property that must be a native-endian `u64`.
#[inline]
fn u64_prop(value: Option<&[u8]>) -> Option<u64> {
    Some(u64::from_ne_bytes(value?.try_into().ok()?))
}

/// Reads subtree `index` from its node.
fn read_subtree<'a>(node: &Node<'a>, index: usize) -> Result<Subtree<'a>, RootError> {
    let preserved_data =
        u64_prop(node.property(KHO_SUB_TREE_PROP_NAME)?).ok_or(RootError::SubtreeData { index })?;
    let blob_size = u64_prop(node.property(KHO_SUB_TREE_SIZE_PROP_NAME)?)
        .ok_or(RootError::SubtreeSize { index })?;
    Ok(Subtree {
        name: node.name(),
        preserved_data,
        blob_size,
    })
}

/// The checked root node of a KHO FDT.
#[derive(Clone, Copy, Debug)]
pub struct KhoRoot<'a> {
    root: Node<'a>,
    mem_map: u64,
    count: usize,
}

/// Parses and checks the KHO FDT in `fdt_bytes`.
///
/// Checks the FDT ([`Fdt::new`]); that the root's `compatible` has a `kho-v4` entry; that
/// `preserved-memory-map` is a native-endian `u64`, non-zero and page-aligned; and that there
/// are at most [`MAX_SUBTREES`] subnodes, each with a `u64` `preserved-data` and `blob-size`
/// and a name no other subnode has. The radix tree and the blobs are not looked at: see
/// [`walk`](super::walk) and [`Coverage`](super::Coverage).
pub fn parse_root<'a>(g: &Geometry, fdt_bytes: &'a [u8]) -> Result<KhoRoot<'a>, RootError> {
    if !g.is_valid() {
        return Err(RootError::BadGeometry);
    }
    let fdt = Fdt::new(fdt_bytes)?;
    let root = fdt.root();
    match root.compatible_with(KHO_FDT_COMPATIBLE)? {
        None => return Err(RootError::NoCompatible),
        Some(false) => return Err(RootError::Incompatible),
        Some(true) => {}
    }
    let value = root
        .property(KHO_FDT_MEMORY_MAP_PROP_NAME)?
        .ok_or(RootError::NoMemoryMap)?;
    let mem_map = u64_prop(Some(value)).ok_or(RootError::MemoryMapSize { len: value.len() })?;
    if mem_map == 0 {
        return Err(RootError::MemoryMapZero);
    }
    if mem_map & g.page_size().wrapping_sub(1) != 0 {
        return Err(RootError::MemoryMapMisaligned { phys: mem_map });
    }
    let mut count = 0usize;
    for (index, node) in root.subnodes().enumerate() {
        let node = node?;
        if index >= MAX_SUBTREES {
            return Err(RootError::TooManySubtrees);
        }
        read_subtree(&node, index)?;
        for earlier in root.subnodes().take(index) {
            if earlier?.name() == node.name() {
                return Err(RootError::DuplicateSubtree { index });
            }
        }
        count = index.saturating_add(1);
    }
    Ok(KhoRoot {
        root,
        mem_map,
        count,
    })
}

impl<'a> KhoRoot<'a> {
    /// The physical address of the radix tree root (`preserved-memory-map`).
    #[inline]
    pub fn mem_map(&self) -> u64 {
        self.mem_map
    }

    /// The number of subtrees.
    #[inline]
    pub fn subtree_count(&self) -> usize {
        self.count
    }

    /// The root node, for other lookups.
    #[inline]
    pub fn node(&self) -> Node<'a> {
        self.root
    }

    /// The subtrees in FDT order.
    #[inline]
    pub fn subtrees(&self) -> Subtrees<'a> {
        Subtrees {
            nodes: self.root.subnodes(),
            index: 0,
        }
    }

    /// The subtree `name`, looked up as the C `kho_retrieve_subtree()` does (libfdt's
    /// `fdt_subnode_offset()`, see [`Node::subnode`]).
    pub fn find(&self, name: &[u8]) -> Option<Subtree<'a>> {
        self.subtrees().find(|s| nodename_eq(s.name, name))
    }
}

/// Iterator over the subtrees of a [`KhoRoot`].
///
/// [`parse_root`] has checked every subtree, so this yields them all; should a read fail
/// nonetheless, the iteration ends.
#[derive(Clone, Debug)]
pub struct Subtrees<'a> {
    nodes: Subnodes<'a>,
    index: usize,
}

impl<'a> Iterator for Subtrees<'a> {
    type Item = Subtree<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.nodes.next()?.ok()?;
        let subtree = read_subtree(&node, self.index).ok()?;
        self.index = self.index.saturating_add(1);
        Some(subtree)
    }
}
