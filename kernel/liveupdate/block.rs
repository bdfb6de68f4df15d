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
    io::PhysAddr,
    liveupdate::{
        abi::{
            self,
            BlockHeader, //
        },
        kho::{
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
    /// Allocates nothing, so that it cannot fail at reboot for lack of memory: [`BlockSet::grow`]
    /// made room beforehand. Fails with [`ENOSPC`] if there is not enough room all the same, and
    /// with [`EINVAL`] if `T` is not this set's entry size.
    pub(crate) fn write<T: AsBytes>(
        &mut self,
        entries: impl ExactSizeIterator<Item = T>,
    ) -> Result<PhysAddr> {
        if size_of::<T>() != self.entry_size {
            return Err(EINVAL);
        }
        let (per_block, n) = (self.per_block(), entries.len());
        let used = self.blocks_for(n);
        if used > self.blocks.len() {
            return Err(ENOSPC);
        }
        for (i, entry) in entries.enumerate() {
            let off = size_of::<BlockHeader>() + (i % per_block) * self.entry_size;
            self.blocks
                .get_mut(i / per_block)
                .and_then(|b| b.as_mut_slice().get_mut(off..off + size_of::<T>()))
                .ok_or(ENOSPC)?
                .copy_from_slice(entry.as_bytes());
        }
        // Link the used blocks back to front; `shrink` leaves no unused one.
        let mut next: PhysAddr = 0;
        for (b, block) in self.blocks.iter_mut().enumerate().take(used).rev() {
            let header = BlockHeader {
                next,
                count: (n - b * per_block).min(per_block) as u64,
            };
            block
                .as_mut_slice()
                .get_mut(..size_of::<BlockHeader>())
                .ok_or(EINVAL)?
                .copy_from_slice(header.as_bytes());
            next = block.phys();
        }
        Ok(next)
    }

    /// Returns the physical address of the first block, or 0 if there is none: after
    /// [`BlockSet::write`], the head of the chain.
    pub(crate) fn head(&self) -> PhysAddr {
        self.blocks.first().map_or(0, |b| b.phys())
    }

    /// Returns the blocks, for the KUnit tests.
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn blocks(&self) -> &[PreservedMem] {
        &self.blocks
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

/// Where the blocks of incoming chains come from: KHO in production, pages built by hand in
/// the KUnit tests.
pub(crate) trait BlockSource {
    /// A restored block, owned until dropped.
    type Block;

    /// Restores the block at `pa`; fails unless it is a preserved block not restored yet.
    fn restore(&mut self, pa: PhysAddr) -> Result<Self::Block>;

    /// Returns the contents of a restored block.
    fn bytes(block: &Self::Block) -> &[u8];
}

/// The blocks the previous kernel preserved, restored through KHO.
pub(crate) struct Kho;

impl BlockSource for Kho {
    type Block = RestoredMem;

    fn restore(&mut self, pa: PhysAddr) -> Result<RestoredMem> {
        RestoredMem::restore(pa)
    }

    fn bytes(block: &RestoredMem) -> &[u8] {
        block.as_slice()
    }
}

/// Why an incoming chain was refused.
#[derive(Debug, PartialEq)]
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

/// Reads the chain of `T` entries that starts at `head`, calling `each` on every entry in
/// order, and frees its blocks.
///
/// Every block is restored (validated by KHO) before it is read. When the chain or an entry is
/// refused, the blocks after the bad one are still restored and freed as far as they can be
/// reached safely, and the first error is returned.
pub(crate) fn read_chain<S: BlockSource, T: FromBytes, E: From<ChainError>>(
    src: &mut S,
    head: PhysAddr,
    mut each: impl FnMut(T) -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    let entry_size = size_of::<T>();
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
        let block = match src.restore(next) {
            Ok(block) => block,
            Err(_) => return Err(failed.unwrap_or(ChainError::NotPreserved(next).into())),
        };
        let bytes = S::bytes(&block);
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
            let entry = bytes
                .get(off..off + entry_size)
                .and_then(T::from_bytes_copy);
            let Some(entry) = entry else {
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

/// Hand-built handover images for the KUnit tests.
#[cfg(CONFIG_KUNIT)]
pub(crate) mod testing {
    use super::BlockSource;
    use kernel::{
        io::PhysAddr,
        liveupdate::abi,
        prelude::*,
        transmute::AsBytes, //
    };

    /// Pages by physical address, restored at most once each like KHO's.
    pub(crate) struct Pages {
        pages: KVec<(PhysAddr, KVec<u8>)>,
        /// The addresses restored so far, in order.
        pub(crate) restored: KVec<PhysAddr>,
    }

    impl Pages {
        pub(crate) fn new() -> Self {
            Self {
                pages: KVec::new(),
                restored: KVec::new(),
            }
        }

        /// Returns the page at `pa`, created zeroed on first use.
        pub(crate) fn page(&mut self, pa: PhysAddr) -> Result<&mut [u8]> {
            let i = match self.pages.iter().position(|(p, _)| *p == pa) {
                Some(i) => i,
                None => {
                    let mut page = KVec::new();
                    page.extend_with(abi::BLOCK_SIZE, 0u8, GFP_KERNEL)?;
                    self.pages.push((pa, page), GFP_KERNEL)?;
                    self.pages.len() - 1
                }
            };
            Ok(&mut self.pages.get_mut(i).ok_or(EINVAL)?.1)
        }

        /// Writes `v` at offset `off` of the page at `pa`.
        pub(crate) fn put<T: AsBytes>(&mut self, pa: PhysAddr, off: usize, v: &T) -> Result {
            let bytes = v.as_bytes();
            self.page(pa)?
                .get_mut(off..off + bytes.len())
                .ok_or(EINVAL)?
                .copy_from_slice(bytes);
            Ok(())
        }
    }

    impl BlockSource for Pages {
        type Block = KVec<u8>;

        fn restore(&mut self, pa: PhysAddr) -> Result<KVec<u8>> {
            if self.restored.contains(&pa) {
                return Err(EINVAL);
            }
            let (_, page) = self.pages.iter().find(|(p, _)| *p == pa).ok_or(EINVAL)?;
            let mut copy = KVec::new();
            copy.extend_from_slice(page, GFP_KERNEL)?;
            self.restored.push(pa, GFP_KERNEL)?;
            Ok(copy)
        }

        fn bytes(block: &KVec<u8>) -> &[u8] {
            block
        }
    }
}

#[kunit_tests(luo_block)]
mod tests {
    use super::{
        testing::Pages,
        *, //
    };
    use kernel::liveupdate::{
        abi::SessionSer,
        kho, //
    };

    const ENTRY: usize = size_of::<SessionSer>();

    fn entry(i: usize) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        e[..8].copy_from_slice(&(i as u64).to_ne_bytes());
        e[ENTRY - 1] = 0x5a;
        e
    }

    /// Entries written by `BlockSet::write` read back in order through `read_chain`.
    #[test]
    fn write_then_read() -> Result {
        if !kho::is_enabled() {
            return Ok(());
        }
        let per_block = abi::entries_per_block(ENTRY);
        let n = per_block + 9;
        let mut set = BlockSet::new(ENTRY);
        set.grow(n)?;
        assert_eq!(set.blocks().len(), 2);
        let mut entries = KVec::new();
        for i in 0..n {
            entries.push(entry(i), GFP_KERNEL)?;
        }
        let head = set.write(entries.iter().copied())?;
        assert_eq!(head, set.blocks()[0].phys());
        assert_eq!(head, set.head());

        let mut pages = Pages::new();
        for b in set.blocks() {
            pages.page(b.phys())?.copy_from_slice(b.as_slice());
        }
        let mut got = KVec::new();
        read_chain::<_, [u8; ENTRY], ChainError>(&mut pages, head, |e| {
            got.push(
                u64::from_ne_bytes(e[..8].try_into().unwrap_or([0; 8])),
                GFP_KERNEL,
            )?;
            assert_eq!(e[ENTRY - 1], 0x5a);
            Ok(())
        })
        .map_err(|_| EINVAL)?;
        assert_eq!(got.len(), n);
        assert!(got.iter().enumerate().all(|(i, &v)| v == i as u64));

        set.shrink(per_block);
        assert_eq!(set.blocks().len(), 1);
        set.shrink(0);
        assert_eq!(set.blocks().len(), 0);
        Ok(())
    }

    /// Growing beyond `MAX_BLOCKS` blocks fails and leaves the set as it was.
    #[test]
    fn grow_limit() -> Result {
        let mut set = BlockSet::new(ENTRY);
        let too_many = abi::MAX_BLOCKS * abi::entries_per_block(ENTRY) + 1;
        assert_eq!(set.grow(too_many), Err(ENOSPC));
        assert_eq!(set.blocks().len(), 0);
        Ok(())
    }

    fn chain(pages: &mut Pages, head: PhysAddr) -> core::result::Result<usize, ChainError> {
        let mut n = 0;
        read_chain::<_, [u8; ENTRY], ChainError>(pages, head, |_| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    #[test]
    fn chain_errors() -> Result {
        let per_block = abi::entries_per_block(ENTRY) as u64;
        let mut p = Pages::new();
        // A block that points to itself.
        p.put(
            0x1000,
            0,
            &BlockHeader {
                next: 0x1000,
                count: 1,
            },
        )?;
        assert_eq!(chain(&mut p, 0x1000), Err(ChainError::Cycle(0x1000)));
        // Counts of zero and beyond capacity; the next block is still freed.
        let mut p = Pages::new();
        p.put(
            0x1000,
            0,
            &BlockHeader {
                next: 0x2000,
                count: per_block + 1,
            },
        )?;
        p.put(0x2000, 0, &BlockHeader { next: 0, count: 1 })?;
        assert_eq!(
            chain(&mut p, 0x1000),
            Err(ChainError::BadCount(0x1000, per_block + 1))
        );
        assert_eq!(&p.restored[..], &[0x1000, 0x2000]);
        let mut p = Pages::new();
        p.put(0x1000, 0, &BlockHeader { next: 0, count: 0 })?;
        assert_eq!(chain(&mut p, 0x1000), Err(ChainError::BadCount(0x1000, 0)));
        // A block that is not preserved memory.
        let mut p = Pages::new();
        p.put(
            0x1000,
            0,
            &BlockHeader {
                next: 0x9000,
                count: 1,
            },
        )?;
        assert_eq!(chain(&mut p, 0x1000), Err(ChainError::NotPreserved(0x9000)));
        // Two valid blocks, and an empty chain.
        let mut p = Pages::new();
        p.put(
            0x1000,
            0,
            &BlockHeader {
                next: 0x2000,
                count: per_block,
            },
        )?;
        p.put(0x2000, 0, &BlockHeader { next: 0, count: 3 })?;
        assert_eq!(chain(&mut p, 0x1000), Ok(per_block as usize + 3));
        assert_eq!(chain(&mut p, 0), Ok(0));
        Ok(())
    }
}
