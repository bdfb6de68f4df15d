// SPDX-License-Identifier: GPL-2.0

//! The check that every subtree's blob is covered by preserved blocks.

use super::{
    Geometry,
    KhoRoot, //
};
use core::fmt;

/// Why [`Coverage`] refused a subtree or found one not covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverError {
    /// More subtrees than the [`Coverage`] has room for.
    TooManySubtrees,
    /// A subtree's `blob-size` is 0.
    EmptyBlob {
        /// The subtree's number.
        index: usize,
    },
    /// A subtree's blob ends beyond the 64-bit address space.
    BlobOverflow {
        /// The subtree's number.
        index: usize,
    },
    /// A recorded block ends beyond the 64-bit address space.
    BlockOverflow,
    /// The blobs are covered in more separate pieces than the [`Coverage`] has room for.
    TooManyPieces,
    /// A subtree's blob is not entirely covered by preserved blocks.
    NotCovered {
        /// The subtree's number.
        index: usize,
        /// The first byte of the blob not covered.
        at: u64,
    },
}

impl CoverError {
    /// A one-line description of the kind of error, without its details.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::TooManySubtrees => "too many KHO subtrees to check",
            Self::EmptyBlob { .. } => "KHO subtree with an empty blob",
            Self::BlobOverflow { .. } => "KHO subtree blob beyond the address space",
            Self::BlockOverflow => "preserved block beyond the address space",
            Self::TooManyPieces => "KHO subtree blobs too fragmented to check",
            Self::NotCovered { .. } => "KHO subtree blob not preserved",
        }
    }
}

impl fmt::Display for CoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyBlob { index } | Self::BlobOverflow { index } => {
                write!(f, "{} (subtree {index})", self.describe())
            }
            Self::NotCovered { index, at } => {
                write!(f, "{} (subtree {index}, from {at:#x})", self.describe())
            }
            _ => f.write_str(self.describe()),
        }
    }
}

/// A subtree's blob `[start, end)`.
#[derive(Clone, Copy, Debug)]
struct Blob {
    start: u64,
    end: u64,
}

/// A covered part `[start, end)` of blob `blob`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    blob: usize,
    start: u64,
    end: u64,
}

/// Checks that every subtree's blob is covered by preserved blocks, in fixed space.
///
/// Add the subtrees ([`Coverage::add_root`] or [`Coverage::add_subtree`]), [`record`] every
/// preserved block (from the `visit_key` of [`walk`](super::walk)), then [`finish`]. The
/// covered parts of each blob are kept as disjoint ranges, merged as blocks arrive, so blocks
/// that overlap (of different orders) are counted once and a hole is always found. `N` bounds
/// the subtrees and `P` the separate covered pieces at any time; with the defaults it takes
/// about 2.5 KiB, so in the kernel keep it off the stack.
///
/// [`record`]: Coverage::record
/// [`finish`]: Coverage::finish
#[derive(Clone, Debug)]
pub struct Coverage<const N: usize = 64, const P: usize = 64> {
    blobs: [Blob; N],
    nblobs: usize,
    pieces: [Piece; P],
    npieces: usize,
}

impl<const N: usize, const P: usize> Default for Coverage<N, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const P: usize> Coverage<N, P> {
    /// No subtree yet.
    pub const fn new() -> Self {
        Self {
            blobs: [Blob { start: 0, end: 0 }; N],
            nblobs: 0,
            pieces: [Piece {
                blob: 0,
                start: 0,
                end: 0,
            }; P],
            npieces: 0,
        }
    }

    /// Adds a subtree's blob `[preserved_data, preserved_data + blob_size)`.
    pub fn add_subtree(&mut self, preserved_data: u64, blob_size: u64) -> Result<(), CoverError> {
        let index = self.nblobs;
        if blob_size == 0 {
            return Err(CoverError::EmptyBlob { index });
        }
        let end = preserved_data
            .checked_add(blob_size)
            .ok_or(CoverError::BlobOverflow { index })?;
        let slot = self
            .blobs
            .get_mut(index)
            .ok_or(CoverError::TooManySubtrees)?;
        *slot = Blob {
            start: preserved_data,
            end,
        };
        self.nblobs = index.saturating_add(1);
        Ok(())
    }

    /// Adds every subtree of `root`, numbered as in the FDT.
    pub fn add_root(&mut self, root: &KhoRoot<'_>) -> Result<(), CoverError> {
        for s in root.subtrees() {
            self.add_subtree(s.preserved_data, s.blob_size)?;
        }
        Ok(())
    }

    /// The number of subtrees added.
    #[inline]
    pub fn subtrees(&self) -> usize {
        self.nblobs
    }

    /// Records the preserved block `[phys, phys + size)`.
    pub fn record(&mut self, phys: u64, size: u64) -> Result<(), CoverError> {
        let end = phys.checked_add(size).ok_or(CoverError::BlockOverflow)?;
        for index in 0..self.nblobs {
            let Some(&blob) = self.blobs.get(index) else {
                break;
            };
            let start = phys.max(blob.start);
            let stop = end.min(blob.end);
            if start < stop {
                self.merge(index, start, stop)?;
            }
        }
        Ok(())
    }

    /// Records the preserved block of `order` at `phys`, as [`walk`](super::walk) reports it.
    #[inline]
    pub fn record_key(&mut self, g: &Geometry, phys: u64, order: u32) -> Result<(), CoverError> {
        let size = g
            .page_size()
            .checked_shl(order)
            .filter(|&s| s != 0)
            .ok_or(CoverError::BlockOverflow)?;
        self.record(phys, size)
    }

    /// Adds `[start, end)` to the covered pieces of blob `index`, merging it with those it
    /// overlaps or touches.
    fn merge(&mut self, index: usize, mut start: u64, mut end: u64) -> Result<(), CoverError> {
        let mut i = 0;
        while i < self.npieces {
            let Some(&p) = self.pieces.get(i) else {
                break;
            };
            if p.blob == index && p.start <= end && start <= p.end {
                start = start.min(p.start);
                end = end.max(p.end);
                // Remove piece i: move the last piece into its place.
                self.npieces -= 1;
                let last = self.pieces.get(self.npieces).copied();
                if let (Some(last), Some(slot)) = (last, self.pieces.get_mut(i)) {
                    *slot = last;
                }
            } else {
                i += 1;
            }
        }
        let slot = self
            .pieces
            .get_mut(self.npieces)
            .ok_or(CoverError::TooManyPieces)?;
        *slot = Piece {
            blob: index,
            start,
            end,
        };
        self.npieces = self.npieces.saturating_add(1);
        Ok(())
    }

    /// Checks that every blob is entirely covered; the first one that is not is the error.
    pub fn finish(&self) -> Result<(), CoverError> {
        let pieces = self.pieces.get(..self.npieces).unwrap_or(&[]);
        for (index, blob) in self.blobs.iter().take(self.nblobs).enumerate() {
            // Pieces of a blob are disjoint and not adjacent: it is covered iff one piece is
            // all of it; otherwise the hole starts where the piece holding its start ends.
            let first = pieces
                .iter()
                .find(|p| p.blob == index && p.start <= blob.start);
            match first {
                Some(p) if p.end >= blob.end => {}
                Some(p) => return Err(CoverError::NotCovered { index, at: p.end }),
                None => {
                    return Err(CoverError::NotCovered {
                        index,
                        at: blob.start,
                    })
                }
            }
        }
        Ok(())
    }
}
