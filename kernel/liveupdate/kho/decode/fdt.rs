// SPDX-License-Identifier: GPL-2.0

//! A small read-only reader of flattened device trees (FDT), for untrusted blobs.

use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// The header size of version 16 (no `size_dt_struct`) and of version 17 and later.
const FDT_V16_HEADER: usize = 36;
const FDT_V17_HEADER: usize = 40;
/// The deepest node nesting accepted (libfdt's `FDT_MAX_DEPTH`).
const FDT_MAX_NESTING: u32 = 32;

/// Why [`Fdt::new`] refused a blob. Offsets are relative to the structure block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is shorter than its header or its `totalsize`.
    Truncated,
    /// The magic number is not `0xd00dfeed`.
    BadMagic,
    /// The version is below 16, or the last compatible version above 17 or the version.
    BadVersion,
    /// A block lies outside `totalsize`, inside the header, or overlaps another block.
    BadLayout,
    /// The structure block is not 4-byte aligned or the reserve map not 8-byte aligned.
    Misaligned,
    /// The memory reserve map has no terminating entry within the blob.
    BadReserveMap,
    /// An unknown token, or a token that does not fit in the structure block.
    BadToken {
        /// Offset of the token.
        offset: usize,
    },
    /// A node's name is not NUL-terminated within the structure block.
    BadName {
        /// Offset of the `FDT_BEGIN_NODE` token.
        offset: usize,
    },
    /// A property's value overruns the structure block, or its name is not a NUL-terminated
    /// string within the strings block.
    BadProperty {
        /// Offset of the `FDT_PROP` token.
        offset: usize,
    },
    /// Node nesting is broken: no root node, an unbalanced `FDT_END_NODE`, a second root, or
    /// `FDT_END` inside a node.
    BadNesting {
        /// Offset of the offending token.
        offset: usize,
    },
    /// The root node has a name.
    RootName,
    /// A property follows a subnode in the same node.
    PropertyAfterSubnode {
        /// Offset of the `FDT_PROP` token.
        offset: usize,
    },
    /// Nodes are nested deeper than 32 levels.
    TooDeep,
    /// The structure block ends without an `FDT_END` token.
    NoEnd,
}

impl FdtError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Truncated => "FDT truncated",
            Self::BadMagic => "FDT magic is not 0xd00dfeed",
            Self::BadVersion => "unsupported FDT version",
            Self::BadLayout => "FDT blocks outside the blob or overlapping",
            Self::Misaligned => "FDT block misaligned",
            Self::BadReserveMap => "FDT reserve map unterminated",
            Self::BadToken { .. } => "bad FDT token",
            Self::BadName { .. } => "unterminated FDT node name",
            Self::BadProperty { .. } => "bad FDT property",
            Self::BadNesting { .. } => "FDT nodes badly nested",
            Self::RootName => "FDT root node has a name",
            Self::PropertyAfterSubnode { .. } => "FDT property after a subnode",
            Self::TooDeep => "FDT nodes nested too deep",
            Self::NoEnd => "FDT structure block without FDT_END",
        }
    }
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())?;
        match self {
            Self::BadToken { offset }
            | Self::BadName { offset }
            | Self::BadProperty { offset }
            | Self::BadNesting { offset }
            | Self::PropertyAfterSubnode { offset } => {
                write!(f, " (structure offset {offset:#x})")
            }
            _ => Ok(()),
        }
    }
}

/// The big-endian `u32` at `off` of `b`.
#[inline]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The big-endian `u64` at `off` of `b`.
#[inline]
fn be64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// `off` rounded up to a multiple of 4.
#[inline]
fn align4(off: usize) -> Option<usize> {
    Some(off.checked_add(3)? & !3)
}

/// The bytes of the NUL-terminated string at `off` of `b`, without the NUL.
#[inline]
fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    rest.get(..len)
}

/// A `u32` header field as `usize`; lossless wherever usize has at least 32 bits.
#[inline]
fn field(v: u32) -> usize {
    v as usize
}

/// The range `[off, off + size)` if it lies within `[lo, hi)`.
#[inline]
fn block(off: usize, size: usize, lo: usize, hi: usize) -> Option<(usize, usize)> {
    let end = off.checked_add(size)?;
    (off >= lo && end <= hi).then_some((off, end))
}

/// Whether two ranges overlap (empty ranges overlap nothing).
#[inline]
fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < a.1 && b.0 < b.1 && a.0 < b.1 && b.0 < a.1
}

/// One token of the structure block.
#[derive(Clone, Copy)]
enum Token<'a> {
    Begin(&'a [u8]),
    EndNode,
    Prop(Property<'a>),
    Nop,
    End,
}

/// A property: its name (without NUL) and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property's name.
    pub name: &'a [u8],
    /// The property's value.
    pub value: &'a [u8],
}

/// A checked, read-only flattened device tree.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    total: usize,
    /// Offset of the root node's first token after its `FDT_BEGIN_NODE`.
    root_body: usize,
}

impl<'a> Fdt<'a> {
    /// Checks the header, the block layout and the whole structure block of `bytes`.
    ///
    /// `bytes` may be longer than the blob's `totalsize`. After this succeeded, looking up
    /// properties and nodes cannot fail, but the accessors still check every offset.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        let hdr = |off| be32(bytes, off).ok_or(FdtError::Truncated);
        if hdr(0)? != FDT_MAGIC {
            return Err(FdtError::BadMagic);
        }
        let version = hdr(20)?;
        let last_comp = hdr(24)?;
        if version < 16 || last_comp > 17 || last_comp > version {
            return Err(FdtError::BadVersion);
        }
        let header = if version >= 17 {
            FDT_V17_HEADER
        } else {
            FDT_V16_HEADER
        };
        let total = field(hdr(4)?);
        if total < header || total > bytes.len() {
            return Err(FdtError::Truncated);
        }
        let blob = bytes.get(..total).ok_or(FdtError::Truncated)?;
        let off_struct = field(hdr(8)?);
        let off_strings = field(hdr(12)?);
        let off_rsvmap = field(hdr(16)?);
        let size_strings = field(hdr(32)?);
        let size_struct = if version >= 17 {
            field(hdr(36)?)
        } else if off_strings > off_struct {
            off_strings - off_struct
        } else {
            total.saturating_sub(off_struct)
        };
        if off_struct & 3 != 0 || off_rsvmap & 7 != 0 {
            return Err(FdtError::Misaligned);
        }
        let structs = block(off_struct, size_struct, header, total).ok_or(FdtError::BadLayout)?;
        let strings = block(off_strings, size_strings, header, total).ok_or(FdtError::BadLayout)?;
        if overlaps(structs, strings) {
            return Err(FdtError::BadLayout);
        }
        // The reserve map: 16-byte entries up to one of two zeros.
        if off_rsvmap < header {
            return Err(FdtError::BadLayout);
        }
        let mut end = off_rsvmap;
        loop {
            let addr = be64(blob, end).ok_or(FdtError::BadReserveMap)?;
            let size = be64(blob, end.saturating_add(8)).ok_or(FdtError::BadReserveMap)?;
            end = end.saturating_add(16);
            if addr == 0 && size == 0 {
                break;
            }
        }
        if overlaps((off_rsvmap, end), structs) || overlaps((off_rsvmap, end), strings) {
            return Err(FdtError::BadLayout);
        }
        let mut fdt = Fdt {
            structs: blob.get(structs.0..structs.1).ok_or(FdtError::BadLayout)?,
            strings: blob.get(strings.0..strings.1).ok_or(FdtError::BadLayout)?,
            total,
            root_body: 0,
        };
        fdt.root_body = fdt.check_structure()?;
        Ok(fdt)
    }

    /// The blob's `totalsize`.
    #[inline]
    pub fn total_size(&self) -> usize {
        self.total
    }

    /// The root node.
    #[inline]
    pub fn root(&self) -> Node<'a> {
        Node {
            fdt: *self,
            name: &[],
            body: self.root_body,
        }
    }

    /// Decodes the token at `off`; returns it and the offset of the next token.
    fn token(&self, off: usize) -> Result<(Token<'a>, usize), FdtError> {
        let bad = FdtError::BadToken { offset: off };
        let tag = be32(self.structs, off).ok_or(bad)?;
        let after = off.checked_add(4).ok_or(bad)?;
        match tag {
            FDT_BEGIN_NODE => {
                let name = cstr(self.structs, after).ok_or(FdtError::BadName { offset: off })?;
                let next = after
                    .checked_add(name.len())
                    .and_then(|v| v.checked_add(1))
                    .and_then(align4)
                    .ok_or(FdtError::BadName { offset: off })?;
                Ok((Token::Begin(name), next))
            }
            FDT_END_NODE => Ok((Token::EndNode, after)),
            FDT_PROP => {
                let bad = FdtError::BadProperty { offset: off };
                let len = field(be32(self.structs, after).ok_or(bad)?);
                let nameoff = field(be32(self.structs, after.saturating_add(4)).ok_or(bad)?);
                let start = off.checked_add(12).ok_or(bad)?;
                let end = start.checked_add(len).ok_or(bad)?;
                let value = self.structs.get(start..end).ok_or(bad)?;
                let name = cstr(self.strings, nameoff).ok_or(bad)?;
                let next = align4(end).ok_or(bad)?;
                Ok((Token::Prop(Property { name, value }), next))
            }
            FDT_NOP => Ok((Token::Nop, after)),
            FDT_END => Ok((Token::End, after)),
            _ => Err(bad),
        }
    }

    /// Checks the structure block; returns the offset of the root node's body.
    fn check_structure(&self) -> Result<usize, FdtError> {
        let mut off = 0;
        // The root: NOPs, then FDT_BEGIN_NODE with an empty name.
        let root_body = loop {
            match self.token(off)? {
                (Token::Nop, next) => off = next,
                (Token::Begin(name), next) => {
                    if !name.is_empty() {
                        return Err(FdtError::RootName);
                    }
                    break next;
                }
                _ => return Err(FdtError::BadNesting { offset: off }),
            }
        };
        off = root_body;
        // depth: nodes open; bit d of has_child: the open node at depth d had a subnode.
        let mut depth = 1u32;
        let mut has_child = 0u64;
        // Every token advances `off` by at least 4, so this ends within the block.
        loop {
            if off >= self.structs.len() {
                return Err(FdtError::NoEnd);
            }
            let (token, next) = self.token(off)?;
            match token {
                Token::Begin(_) => {
                    if depth == 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    if depth >= FDT_MAX_NESTING {
                        return Err(FdtError::TooDeep);
                    }
                    has_child |= 1u64 << depth;
                    depth += 1;
                    has_child &= !(1u64 << depth);
                }
                Token::EndNode => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or(FdtError::BadNesting { offset: off })?;
                }
                Token::Prop(_) => {
                    if depth == 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    if has_child & (1u64 << depth) != 0 {
                        return Err(FdtError::PropertyAfterSubnode { offset: off });
                    }
                }
                Token::Nop => {}
                Token::End => {
                    if depth != 0 {
                        return Err(FdtError::BadNesting { offset: off });
                    }
                    return Ok(root_body);
                }
            }
            off = next;
        }
    }
}

/// A node of an [`Fdt`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    name: &'a [u8],
    /// Offset of the node's first token after its `FDT_BEGIN_NODE`.
    body: usize,
}

impl<'a> Node<'a> {
    /// The node's name, unit address included (empty for the root).
    #[inline]
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The node's properties, in order.
    #[inline]
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            fdt: self.fdt,
            off: self.body,
            done: false,
        }
    }

    /// The value of the node's first property called `name`, as libfdt's `fdt_getprop()`.
    pub fn property(&self, name: &[u8]) -> Result<Option<&'a [u8]>, FdtError> {
        for prop in self.properties() {
            let prop = prop?;
            if prop.name == name {
                return Ok(Some(prop.value));
            }
        }
        Ok(None)
    }

    /// Whether the node's `compatible` stringlist has an entry equal to `compat`, as libfdt's
    /// `fdt_node_check_compatible()`; `None` if the node has no `compatible`.
    pub fn compatible_with(&self, compat: &[u8]) -> Result<Option<bool>, FdtError> {
        Ok(self
            .property(b"compatible")?
            .map(|list| stringlist_contains(list, compat)))
    }

    /// The node's direct subnodes, in order.
    #[inline]
    pub fn subnodes(&self) -> Subnodes<'a> {
        Subnodes {
            fdt: self.fdt,
            off: self.body,
            done: false,
        }
    }

    /// The first direct subnode matching `name`, as libfdt's `fdt_subnode_offset()`: its name
    /// equals `name`, or `name` has no unit address and the node's is `name@...`.
    pub fn subnode(&self, name: &[u8]) -> Result<Option<Node<'a>>, FdtError> {
        for node in self.subnodes() {
            let node = node?;
            if nodename_eq(node.name, name) {
                return Ok(Some(node));
            }
        }
        Ok(None)
    }
}

/// libfdt's `fdt_nodename_eq_()`: whether the node called `node` matches the lookup `name`.
#[inline]
pub fn nodename_eq(node: &[u8], name: &[u8]) -> bool {
    match node.strip_prefix(name) {
        Some([]) => true,
        Some([b'@', ..]) => !name.contains(&b'@'),
        _ => false,
    }
}

/// Whether the stringlist `list` (NUL-terminated strings back to back) has an entry equal to
/// `s`, as libfdt's `fdt_stringlist_contains()`: an unterminated last entry does not count.
pub fn stringlist_contains(list: &[u8], s: &[u8]) -> bool {
    let mut rest = list;
    while let Some(len) = rest.iter().position(|&c| c == 0) {
        if rest.get(..len) == Some(s) {
            return true;
        }
        rest = rest.get(len.saturating_add(1)..).unwrap_or(&[]);
    }
    false
}

/// The value of a string property without its NUL: `None` unless `value` is exactly one
/// NUL-terminated string.
#[inline]
pub fn prop_str(value: &[u8]) -> Option<&[u8]> {
    match value.split_last() {
        Some((0, s)) if !s.contains(&0) => Some(s),
        _ => None,
    }
}

/// Iterator over a node's properties; see [`Node::properties`].
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    fdt: Fdt<'a>,
    off: usize,
    done: bool,
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Every token advances `off`, so this ends within the block.
        while !self.done {
            match self.fdt.token(self.off) {
                Ok((Token::Nop, next)) => self.off = next,
                Ok((Token::Prop(prop), next)) => {
                    self.off = next;
                    return Some(Ok(prop));
                }
                Ok(_) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Iterator over a node's direct subnodes; see [`Node::subnodes`].
#[derive(Clone, Debug)]
pub struct Subnodes<'a> {
    fdt: Fdt<'a>,
    off: usize,
    done: bool,
}

impl<'a> Subnodes<'a> {
    /// Skips the rest of the node whose body starts at `off`; returns the offset after its
    /// `FDT_END_NODE`.
    fn skip_node(&self, mut off: usize) -> Result<usize, FdtError> {
        let mut depth = 1u32;
        // Every token advances `off`, so this ends within the block.
        loop {
            let (token, next) = self.fdt.token(off)?;
            match token {
                Token::Begin(_) => {
                    depth = depth.checked_add(1).ok_or(FdtError::TooDeep)?;
                }
                Token::EndNode => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(next);
                    }
                }
                Token::End => return Err(FdtError::BadNesting { offset: off }),
                Token::Prop(_) | Token::Nop => {}
            }
            off = next;
        }
    }

    fn step(&mut self) -> Result<Option<Node<'a>>, FdtError> {
        loop {
            let (token, next) = self.fdt.token(self.off)?;
            match token {
                Token::Prop(_) | Token::Nop => self.off = next,
                Token::Begin(name) => {
                    self.off = self.skip_node(next)?;
                    return Ok(Some(Node {
                        fdt: self.fdt,
                        name,
                        body: next,
                    }));
                }
                Token::EndNode | Token::End => return Ok(None),
            }
        }
    }
}

impl<'a> Iterator for Subnodes<'a> {
    type Item = Result<Node<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(node)) => Some(Ok(node)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
