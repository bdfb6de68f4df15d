// SPDX-License-Identifier: GPL-2.0

//! A small FDT writer (version 17, as libfdt writes them) and the KHO root FDT as a spec.

/// Writes a flattened device tree token by token.
#[derive(Clone, Debug, Default)]
pub struct FdtWriter {
    structs: Vec<u8>,
    strings: Vec<u8>,
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

impl FdtWriter {
    /// An empty structure block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a raw big-endian token word.
    pub fn token(&mut self, t: u32) {
        self.structs.extend_from_slice(&t.to_be_bytes());
    }

    /// `FDT_BEGIN_NODE` with `name`.
    pub fn begin_node(&mut self, name: &[u8]) {
        self.token(1);
        self.structs.extend_from_slice(name);
        self.structs.push(0);
        pad4(&mut self.structs);
    }

    /// `FDT_END_NODE`.
    pub fn end_node(&mut self) {
        self.token(2);
    }

    /// `FDT_NOP`.
    pub fn nop(&mut self) {
        self.token(4);
    }

    /// The offset of `name` in the strings block, added if new.
    pub fn string(&mut self, name: &[u8]) -> u32 {
        let mut off = 0;
        while off < self.strings.len() {
            let end = off + self.strings[off..].iter().position(|&c| c == 0).unwrap();
            if &self.strings[off..end] == name {
                return off as u32;
            }
            off = end + 1;
        }
        let off = self.strings.len();
        self.strings.extend_from_slice(name);
        self.strings.push(0);
        off as u32
    }

    /// `FDT_PROP` `name` = `value`.
    pub fn prop(&mut self, name: &[u8], value: &[u8]) {
        let nameoff = self.string(name);
        self.token(3);
        self.structs
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.structs.extend_from_slice(&nameoff.to_be_bytes());
        self.structs.extend_from_slice(value);
        pad4(&mut self.structs);
    }

    /// `FDT_END` and the blob: header, empty reserve map, structure and strings blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.token(9);
        let off_rsvmap = 40u32;
        let off_struct = off_rsvmap + 16;
        let off_strings = off_struct + self.structs.len() as u32;
        let total = off_strings + self.strings.len() as u32;
        let mut out = Vec::with_capacity(total as usize);
        for v in [
            0xd00d_feed,
            total,
            off_struct,
            off_strings,
            off_rsvmap,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structs.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&self.structs);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A subtree node of a [`RootSpec`]; `None` leaves a property out. Values are raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtreeSpec {
    /// The node's name.
    pub name: Vec<u8>,
    /// `preserved-data`.
    pub data: Option<Vec<u8>>,
    /// `blob-size`.
    pub size: Option<Vec<u8>>,
}

impl SubtreeSpec {
    /// A well-formed subtree node.
    pub fn new(name: &str, data: u64, size: u64) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            data: Some(data.to_ne_bytes().to_vec()),
            size: Some(size.to_ne_bytes().to_vec()),
        }
    }
}

/// The KHO root FDT as the C `kho_init()`/`kho_add_subtree()` lay it out; `None` leaves a
/// property out. Values are raw bytes, so tests can damage them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSpec {
    /// `compatible`, a raw stringlist.
    pub compatible: Option<Vec<u8>>,
    /// `preserved-memory-map`.
    pub mem_map: Option<Vec<u8>>,
    /// The subtree nodes in order.
    pub subtrees: Vec<SubtreeSpec>,
}

impl RootSpec {
    /// A well-formed root for the radix tree at `mem_map`, without subtrees.
    pub fn new(mem_map: u64) -> Self {
        Self {
            compatible: Some(b"kho-v4\0".to_vec()),
            mem_map: Some(mem_map.to_ne_bytes().to_vec()),
            subtrees: Vec::new(),
        }
    }

    /// The FDT blob.
    pub fn to_fdt(&self) -> Vec<u8> {
        let mut w = FdtWriter::new();
        w.begin_node(b"");
        if let Some(c) = &self.compatible {
            w.prop(b"compatible", c);
        }
        if let Some(m) = &self.mem_map {
            w.prop(b"preserved-memory-map", m);
        }
        for s in &self.subtrees {
            w.begin_node(&s.name);
            if let Some(d) = &s.data {
                w.prop(b"preserved-data", d);
            }
            if let Some(z) = &s.size {
                w.prop(b"blob-size", z);
            }
            w.end_node();
        }
        w.end_node();
        w.finish()
    }
}
