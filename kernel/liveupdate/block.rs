// SPDX-License-Identifier: GPL-2.0

//! Chains of preserved pages holding fixed-size entries (`include/linux/kho/abi/block.h`).
//!
//! The outgoing side keeps exactly as many blocks as its entries need, grown before an entry is
//! added so that serialization at reboot cannot run out of memory, and writes the chain only at
//! reboot. The incoming side walks a chain written by the previous kernel and trusts nothing in
//! it: every block must be a page the previous kernel preserved, seen once, holding between one
//! and a block's capacity of entries, and the chain may not be longer than [`abi::MAX_BLOCKS`].

use kernel::{
    alloc::AllocError,
    liveupdate::{
        abi::{
            self,
            BlockHeader, //
        },
        kho::{
            PhysAddr,
            PreservedMem,
            RestoredMem, //
        },
    },
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
};

/// Outgoing blocks for entries of one size.
pub(crate) struct BlockSet {
    blocks: KVec<PreservedMem>,
    entry_size: usize,
}

impl BlockSet {
    /// Creates an empty set for entries of `entry_size` bytes.
    pub(crate) const fn new(entry_size: usize) -> Self {
        Self {
            blocks: KVec::new(),
            entry_size,
        }
    }

    fn per_block(&self) -> usize {
        abi::entries_per_block(self.entry_size)
    }

    fn blocks_for(&self, count: usize) -> usize {
        count.div_ceil(self.per_block())
    }

    /// Makes room for `count` entries. On failure the set is unchanged.
    ///
    /// Fails with [`ENOSPC`] beyond [`abi::MAX_BLOCKS`] blocks and with [`ENOMEM`].
    pub(crate) fn grow(&mut self, count: usize) -> Result {
        let needed = self.blocks_for(count);
        if needed > abi::MAX_BLOCKS {
            return Err(ENOSPC);
        }
        let old = self.blocks.len();
        while self.blocks.len() < needed {
            let block = PreservedMem::new(abi::BLOCK_SIZE).and_then(|b| {
                self.blocks.push(b, GFP_KERNEL)?;
                Ok(())
            });
            if let Err(e) = block {
                self.blocks.truncate(old);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Frees the blocks that `count` entries do not need.
    pub(crate) fn shrink(&mut self, count: usize) {
        let needed = self.blocks_for(count);
        self.blocks.truncate(needed.min(self.blocks.len()));
    }

    /// Writes `entries` into the blocks and links them: returns the physical address of the
    /// first block, or 0 if there are no entries.
    ///
    /// Fails with [`ENOSPC`] if the blocks cannot hold the entries, which [`BlockSet::grow`]
    /// prevents.
    pub(crate) fn write<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a [u8]>,
    ) -> Result<PhysAddr> {
        let per_block = self.per_block();
        let entry_size = self.entry_size;
        let mut counts = KVec::with_capacity(self.blocks.len(), GFP_KERNEL)?;
        for _ in 0..self.blocks.len() {
            counts.push(0usize, GFP_KERNEL)?;
        }
        for (i, entry) in entries.enumerate() {
            let (b, slot) = (i / per_block, i % per_block);
            let block = self.blocks.get_mut(b).ok_or(ENOSPC)?;
            let count = counts.get_mut(b).ok_or(ENOSPC)?;
            let off = size_of::<BlockHeader>() + slot * entry_size;
            block
                .as_mut_slice()
                .get_mut(off..off + entry_size)
                .ok_or(EINVAL)?
                .copy_from_slice(entry.get(..entry_size).ok_or(EINVAL)?);
            *count = slot + 1;
        }
        // Link the blocks back to front; unused trailing blocks (none after `shrink`) are left out.
        let mut next: PhysAddr = 0;
        for (block, &count) in self.blocks.iter_mut().zip(counts.iter()).rev() {
            if count == 0 {
                continue;
            }
            let header = BlockHeader {
                next,
                count: count as u64,
            };
            block.as_mut_slice()[..size_of::<BlockHeader>()].copy_from_slice(header.as_bytes());
            next = block.phys();
        }
        Ok(next)
    }

    /// Returns the first block, for the corruption test.
    #[cfg(CONFIG_LIVEUPDATE_CORRUPT_TEST)]
    pub(crate) fn first_mut(&mut self) -> Option<&mut PreservedMem> {
        self.blocks.first_mut()
    }

    /// Clears the entry counts written by [`BlockSet::write`], when a reboot is aborted.
    pub(crate) fn clear(&mut self) {
        for block in self.blocks.iter_mut() {
            block.as_mut_slice().fill(0);
        }
    }
}

/// Why an incoming chain was refused.
#[derive(Debug)]
pub(crate) enum ChainError {
    /// A block address is not a page the previous kernel preserved (or was restored already).
    NotPreserved(PhysAddr),
    /// The chain comes back to a block it passed already.
    Cycle(PhysAddr),
    /// The chain is longer than [`abi::MAX_BLOCKS`].
    TooLong,
    /// A block holds no entries or more than fit.
    BadCount(PhysAddr, u64),
    /// Out of memory while reading the chain.
    NoMemory,
}

impl kernel::fmt::Display for ChainError {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        match self {
            Self::NotPreserved(pa) => write!(f, "block {pa:#x} is not preserved memory"),
            Self::Cycle(pa) => write!(f, "the chain loops back to block {pa:#x}"),
            Self::TooLong => write!(f, "the chain has more than {} blocks", abi::MAX_BLOCKS),
            Self::BadCount(pa, n) => write!(f, "block {pa:#x} claims {n} entries"),
            Self::NoMemory => write!(f, "out of memory"),
        }
    }
}

impl From<AllocError> for ChainError {
    fn from(_: AllocError) -> Self {
        Self::NoMemory
    }
}

/// Reads the chain of `entry_size`-byte entries that starts at `head`, calling `each` on every
/// entry in order, and frees its blocks.
///
/// Every block is restored (validated by KHO) before it is read. When the chain or an entry is
/// refused, the blocks after the bad one are still restored and freed as far as they can be
/// reached safely, and the first error is returned.
pub(crate) fn read_chain<E: From<ChainError>>(
    head: PhysAddr,
    entry_size: usize,
    mut each: impl FnMut(&[u8]) -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    let per_block = abi::entries_per_block(entry_size) as u64;
    let mut visited = KVec::<PhysAddr>::new();
    let mut next = head;
    let mut failed: Option<E> = None;
    while next != 0 {
        let stop = if visited.len() >= abi::MAX_BLOCKS {
            Some(ChainError::TooLong)
        } else if visited.contains(&next) {
            Some(ChainError::Cycle(next))
        } else if visited.push(next, GFP_KERNEL).is_err() {
            Some(ChainError::NoMemory)
        } else {
            None
        };
        if let Some(e) = stop {
            return Err(failed.unwrap_or(e.into()));
        }
        let block = match RestoredMem::restore(next) {
            Ok(block) => block,
            Err(_) => return Err(failed.unwrap_or(ChainError::NotPreserved(next).into())),
        };
        let bytes = block.as_slice();
        let header = bytes
            .get(..size_of::<BlockHeader>())
            .and_then(BlockHeader::from_bytes_copy);
        let Some(header) = header else {
            return Err(failed.unwrap_or(ChainError::NotPreserved(next).into()));
        };
        let (pa, count) = (next, header.count);
        next = header.next;
        if failed.is_some() {
            continue;
        }
        if count == 0 || count > per_block {
            failed = Some(ChainError::BadCount(pa, count).into());
            continue;
        }
        for i in 0..count as usize {
            let off = size_of::<BlockHeader>() + i * entry_size;
            let Some(entry) = bytes.get(off..off + entry_size) else {
                failed = Some(ChainError::BadCount(pa, count).into());
                break;
            };
            if let Err(e) = each(entry) {
                failed = Some(e);
                break;
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
