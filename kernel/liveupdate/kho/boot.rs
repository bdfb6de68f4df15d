// SPDX-License-Identifier: GPL-2.0

//! The next kernel's early boot: the previous kernel's handover, scratch areas, and the
//! reservation of preserved memory.
//!
//! Nothing the previous kernel left is trusted. It is checked in two steps, each before any of
//! it is used:
//!
//! 1. [`kho_populate`], from `setup_arch()`: the root FDT (header, size, compatible string,
//!    memory map property, every subtree's properties) and the scratch list (size, alignment,
//!    overflow), through temporary early mappings.
//! 2. [`kho_memory_init_early`], when memblock knows all memory and the direct map exists: one
//!    walk of the radix tree ([`decode::walk`]) checks that every node is page-aligned RAM
//!    outside the scratch areas and reached only once, that every key decodes to a block of at
//!    most `MAX_BLOCK_ORDER` in RAM, and that every subtree's blob is entirely preserved memory.
//!
//! If either step fails, the kernel prints one warning and boots as after a cold boot: the
//! scratch marks are undone, nothing preserved is reserved (so all of it is free memory), and
//! new scratch areas are reserved for the next kexec. Only after both steps succeed does
//! [`kho_memory_init`] reserve the preserved blocks.
//!
//! What these steps decide is one [`BootState`]: the accepted handover and the scratch areas.
//! Each boot phase that changes it publishes the state it leaves once ([`BootPhases`]), so that
//! every reader, in any context, sees one whole state without a lock.

use crate::{decode, order_size, GEOMETRY};
use core::ptr::NonNull;
use kernel::{
    bindings,
    io::PhysAddr,
    memblock::{EarlyBoot, ALLOC_ACCESSIBLE, ALLOC_ANYWHERE, NUMA_NO_NODE},
    page::PAGE_SIZE,
    physmem::{phys_to_pfn, phys_to_virt, PageFrame, MAX_PAGE_ORDER},
    prelude::*,
    sync::SetOnce,
};

/// Alignment and size granule of scratch areas: the largest buddy block, so that deferred
/// `struct page` initialization and CMA pageblocks never straddle an area's edge.
const SCRATCH_ALIGN: u64 = (PAGE_SIZE as u64) << MAX_PAGE_ORDER;

/// Largest root FDT the previous kernel may hand over (it writes one page).
const MAX_FDT_LEN: u64 = 1 << 20;

/// Largest number of scratch areas accepted (two plus one per node with memory).
const MAX_SCRATCH: u64 = 2 + 1024;

/// Size of the blocks the scratch extension works in.
const EXT_BLOCK_SHIFT: u32 = 30;

/// The previous kernel's handover, as [`kho_populate`] accepted it.
#[derive(Clone, Copy)]
pub(crate) struct Incoming {
    /// Physical address of the root FDT.
    pub(crate) fdt_phys: PhysAddr,
    /// Length of the memory the root FDT was handed over in.
    pub(crate) fdt_len: usize,
    /// Physical address of the scratch list.
    scratch_phys: PhysAddr,
    /// Length of the scratch list in bytes: a whole number of `struct kho_scratch`.
    scratch_len: u64,
}

/// What the boot decided about handovers: the accepted incoming one and the scratch areas.
#[derive(Clone, Copy)]
struct BootState {
    /// The previous kernel's handover, while it is accepted.
    incoming: Option<Incoming>,
    /// The scratch areas: the incoming list after a KHO boot, or the ones a cold boot reserved
    /// for the next kernel. Both are memory reserved at boot, which lives as long as the kernel.
    scratch: &'static [bindings::kho_scratch],
    /// Whether `scratch` was reserved by this (cold) boot, which the initcall releases.
    cold_scratch: bool,
}

impl BootState {
    /// The state before any phase changed it: no handover and no scratch areas.
    const INITIAL: Self = Self {
        incoming: None,
        scratch: &[],
        cold_scratch: false,
    };
}

/// The [`BootState`] each boot phase left, published once by that phase.
///
/// The phases run one after the other, so the state of the latest phase that published one is
/// the current state ([`state`]). Each phase entry point runs once; all but `late_init` run on
/// the boot CPU before the other CPUs are started.
struct BootPhases {
    /// [`kho_populate`]: the previous kernel's handover, if it looks valid.
    populate: SetOnce<BootState>,
    /// [`kho_memory_init_early`]: the handover validated, with its scratch list, or refused.
    memory_init_early: SetOnce<BootState>,
    /// [`kho_memory_init`]: the handover lost if its memory could not be reserved, or the
    /// scratch areas a cold boot reserved.
    memory_init: SetOnce<BootState>,
    /// `kho_late_init()`: a cold boot's scratch areas given back after KHO failed to set up.
    late_init: SetOnce<BootState>,
}

static PHASES: BootPhases = BootPhases {
    populate: SetOnce::new(),
    memory_init_early: SetOnce::new(),
    memory_init: SetOnce::new(),
    late_init: SetOnce::new(),
};

/// Publishes `state` as the one a phase left, in that phase's `cell`.
fn publish(cell: &SetOnce<BootState>, state: BootState) {
    if !cell.populate(state) {
        pr_warn!("boot phase ran twice; keeping the state of its first run\n");
    }
}

/// Returns the current boot state.
fn state() -> BootState {
    let p = &PHASES;
    p.late_init
        .copy()
        .or_else(|| p.memory_init.copy())
        .or_else(|| p.memory_init_early.copy())
        .or_else(|| p.populate.copy())
        .unwrap_or(BootState::INITIAL)
}

/// Returns the accepted handover of the previous kernel.
pub(crate) fn incoming() -> Option<Incoming> {
    state().incoming
}

/// The scratch areas.
pub(crate) fn scratch() -> &'static [bindings::kho_scratch] {
    state().scratch
}

/// The sizes of the scratch areas a cold boot reserves, set by `kho_scratch=`.
#[derive(Clone, Copy)]
struct ScratchSizes {
    /// Percent of the memory memblock allocated for the kernel; 0 for the sizes below.
    scale: u32,
    /// Size of the area in low memory.
    lowmem: PhysAddr,
    /// Size of the area for allocations without a node.
    global: PhysAddr,
    /// Size of the area of each node with memory.
    pernode: PhysAddr,
}

impl ScratchSizes {
    /// Without `kho_scratch=`: twice the memory allocated for the kernel.
    const DEFAULT: Self = Self {
        scale: 200,
        lowmem: 0,
        global: 0,
        pernode: 0,
    };
}

/// `kho_scratch=`, if given.
static SCRATCH_SIZES: SetOnce<ScratchSizes> = SetOnce::new();

/// Whether `[phys, phys + size)` overlaps one of `areas`.
pub(crate) fn overlaps(areas: &[bindings::kho_scratch], phys: PhysAddr, size: u64) -> bool {
    let end = phys.saturating_add(size);
    areas
        .iter()
        .any(|a| phys < a.addr.saturating_add(a.size) && end > a.addr)
}

/// Whether `[phys, phys + size)` overlaps a scratch area.
pub(crate) fn scratch_overlap(phys: PhysAddr, size: u64) -> bool {
    overlaps(scratch(), phys, size)
}

/// `kho_scratch_overlap()`.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_scratch_overlap(phys: PhysAddr, size: usize) -> bool {
    scratch_overlap(phys, size as u64)
}

/// `kho_scratch=`; called by `kho_glue.c`.
///
/// # Safety
///
/// Called during early parameter parsing.
#[export]
pub(crate) unsafe extern "C" fn kho_set_scratch_sizes(
    scale: u32,
    lowmem: PhysAddr,
    global: PhysAddr,
    pernode: PhysAddr,
) {
    let sizes = ScratchSizes {
        scale,
        lowmem,
        global,
        pernode,
    };
    if !SCRATCH_SIZES.populate(sizes) {
        pr_warn!("kho_scratch= given more than once; the first one applies\n");
    }
}

/// Checks the scratch list: a whole number of areas, each aligned and without overflow.
fn check_scratch(areas: &[u8]) -> Result<(), &'static str> {
    if areas.is_empty() || areas.len() % size_of::<bindings::kho_scratch>() != 0 {
        return Err("scratch list size is not a multiple of an entry");
    }
    for (addr, size) in scratch_entries(areas) {
        // An area may be empty: the global one is when all kernel memory is low memory.
        if addr % PAGE_SIZE as u64 != 0 || size % PAGE_SIZE as u64 != 0 {
            return Err("scratch area not page-aligned");
        }
        if addr.checked_add(size).is_none() {
            return Err("scratch area wraps around");
        }
    }
    Ok(())
}

/// The `(addr, size)` of each whole `struct kho_scratch` in a scratch list from the previous
/// kernel.
fn scratch_entries(areas: &[u8]) -> impl Iterator<Item = (u64, u64)> + Clone + '_ {
    areas
        .chunks_exact(size_of::<bindings::kho_scratch>())
        .map(|e| {
            let word = |r: core::ops::Range<usize>| {
                e.get(r)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_ne_bytes)
            };
            (word(0..8), word(8..16))
        })
}

/// `kho_populate()`: accepts the previous kernel's root FDT and scratch list, if valid, and
/// restricts early allocations to the scratch areas.
///
/// # Safety
///
/// Called from `setup_arch()`, once, before the memblock allocator is used.
#[export]
pub(crate) unsafe extern "C" fn kho_populate(
    fdt_phys: PhysAddr,
    fdt_len: u64,
    scratch_phys: PhysAddr,
    scratch_len: u64,
) {
    // SAFETY: `setup_arch()` runs before `memblock_free_all()`.
    let early = unsafe { EarlyBoot::new() };
    match populate(&early, fdt_phys, fdt_len, scratch_phys, scratch_len) {
        Ok(()) => pr_info!("found kexec handover data.\n"),
        Err(why) => pr_warn!(
            "refusing the previous kernel's handover: FDT at 0x{:x}: {}; booting as after a cold boot\n",
            fdt_phys,
            why
        ),
    }
}

/// Why [`populate`] refused the handover.
enum PopulateError {
    Root(decode::RootError),
    Other(&'static str),
}

impl From<&'static str> for PopulateError {
    fn from(s: &'static str) -> Self {
        Self::Other(s)
    }
}

impl kernel::fmt::Display for PopulateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Root(e) => core::fmt::Display::fmt(e, f),
            Self::Other(s) => f.write_str(s),
        }
    }
}

fn populate(
    early: &EarlyBoot,
    fdt_phys: PhysAddr,
    fdt_len: u64,
    scratch_phys: PhysAddr,
    scratch_len: u64,
) -> Result<(), PopulateError> {
    if fdt_len == 0 || fdt_len > MAX_FDT_LEN {
        return Err("FDT size out of range".into());
    }
    let entry = size_of::<bindings::kho_scratch>() as u64;
    if scratch_len == 0 || scratch_len > MAX_SCRATCH * entry {
        return Err("scratch list size out of range".into());
    }
    if scratch_phys % align_of::<bindings::kho_scratch>() as u64 != 0 {
        return Err("scratch list misaligned".into());
    }
    let fdt_len = fdt_len as usize;
    let map = early
        .memremap(fdt_phys, fdt_len)
        .ok_or("cannot map the FDT")?;
    decode::parse_root(&GEOMETRY, map.as_bytes()).map_err(PopulateError::Root)?;
    drop(map);

    let map = early
        .memremap(scratch_phys, scratch_len as usize)
        .ok_or("cannot map the scratch list")?;
    check_scratch(map.as_bytes())?;
    let areas = scratch_entries(map.as_bytes());
    // We are handed safe blocks of memory for early boot allocations, so that the memblock
    // arrays can grow without scribbling over preserved memory.
    for (marked, (addr, size)) in areas.clone().enumerate() {
        let res = early
            .add(addr, size)
            .and_then(|()| early.mark_kho_scratch(addr, size));
        if res.is_err() {
            for (a, s) in areas.take(marked) {
                let _ = early.clear_kho_scratch(a, s);
            }
            return Err("cannot mark a scratch area".into());
        }
    }
    drop(areas);
    drop(map);
    early
        .reserve(scratch_phys, scratch_len)
        .map_err(|_| "cannot reserve the scratch list")?;
    early.set_kho_scratch_only();

    let incoming = Incoming {
        fdt_phys,
        fdt_len,
        scratch_phys,
        scratch_len,
    };
    publish(
        &PHASES.populate,
        BootState {
            incoming: Some(incoming),
            ..BootState::INITIAL
        },
    );
    Ok(())
}

/// The previous kernel's data turned out to be corrupt after `kho_populate()` accepted it: undo
/// what it did, with the scratch list `list` it marked, and boot like after a cold boot.
fn refuse(early: &EarlyBoot, inc: Incoming, list: &[bindings::kho_scratch], why: &Invalid) {
    pr_warn!(
        "refusing the previous kernel's handover: {}; booting as after a cold boot\n",
        why
    );
    for a in list {
        let _ = early.clear_kho_scratch(a.addr, a.size);
    }
    early.phys_free(inc.scratch_phys, inc.scratch_len);
    early.clear_kho_scratch_only();
    publish(&PHASES.memory_init_early, BootState::INITIAL);
}

/// The memory of the walk, as memblock and the direct map see it.
struct BootMem<'a> {
    early: &'a EarlyBoot,
    /// The scratch areas of the incoming handover.
    scratch: &'a [bindings::kho_scratch],
}

/// Whether `[base, base + size)` is memory memblock knows about, even where it spans several
/// adjacent regions (memblock splits regions at node and flag boundaries, the scratch marks
/// included). Halving keeps it at two calls per level: only a half that straddles a boundary
/// or a hole recurses further.
fn is_ram(early: &EarlyBoot, base: u64, size: u64) -> bool {
    if early.is_region_memory(base, size) {
        return true;
    }
    let page = PAGE_SIZE as u64;
    if size <= page {
        return false;
    }
    let half = (size / 2).next_multiple_of(page);
    is_ram(early, base, half) && is_ram(early, base + half, size - half)
}

impl decode::PhysMem for BootMem<'_> {
    fn is_ram(&self, base: u64, size: u64) -> bool {
        is_ram(self.early, base, size)
    }

    fn in_scratch(&self, base: u64, size: u64) -> bool {
        overlaps(self.scratch, base, size)
    }

    fn node(&self, phys: u64) -> Option<&[u64]> {
        // SAFETY: The walker checked that `phys` is a page of RAM, which the direct map covers
        // at this point of boot; only the boot CPU runs, and nothing writes the page (it is
        // outside scratch, where all allocations are made).
        Some(unsafe {
            core::slice::from_raw_parts(phys_to_virt(phys).cast::<u64>(), GEOMETRY.words_per_node())
        })
    }
}

/// An array of `len` zeroed words from memblock, freed on drop.
struct EarlyWords<'a> {
    early: &'a EarlyBoot,
    ptr: NonNull<u64>,
    len: usize,
}

impl<'a> EarlyWords<'a> {
    fn new(early: &'a EarlyBoot, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(8)?;
        let ptr = early.alloc_zeroed(bytes, PAGE_SIZE)?.cast::<u64>();
        Some(Self { early, ptr, len })
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        // SAFETY: `ptr` is a zeroed allocation of `len` words owned by the value.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for EarlyWords<'_> {
    fn drop(&mut self) {
        // SAFETY: The allocation came from `alloc_zeroed()` with this size and is unused now.
        unsafe { self.early.free(self.ptr.cast(), self.len * 8) };
    }
}

/// Why the walk of the incoming tree failed.
enum Invalid {
    Root(decode::RootError),
    Walk(decode::WalkError<decode::CoverError>),
    Cover(decode::CoverError),
    NoMemory,
}

impl kernel::fmt::Display for Invalid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Root(e) => core::fmt::Display::fmt(e, f),
            Self::Walk(e) => core::fmt::Display::fmt(e, f),
            Self::Cover(e) => core::fmt::Display::fmt(e, f),
            Self::NoMemory => f.write_str("no memory to check the radix tree"),
        }
    }
}

/// Checks the incoming radix tree and subtrees against the incoming scratch areas `scratch`;
/// marks the 1 GiB blocks holding preserved memory or tree nodes in `busy`.
fn validate(
    early: &EarlyBoot,
    inc: Incoming,
    scratch: &[bindings::kho_scratch],
    busy: &mut [u64],
) -> Result<(), Invalid> {
    // SAFETY: `kho_populate()` checked the FDT at this address and size; it is RAM outside the
    // scratch areas, in the direct map, and nothing writes it during boot.
    let fdt = unsafe {
        core::slice::from_raw_parts(phys_to_virt(inc.fdt_phys).cast_const(), inc.fdt_len)
    };
    let root = decode::parse_root(&GEOMETRY, fdt).map_err(Invalid::Root)?;
    let mut cover: decode::Coverage = decode::Coverage::new();
    cover.add_root(&root).map_err(Invalid::Cover)?;

    // A valid tree has fewer nodes than this: each order needs at most one leaf per 128 MiB
    // (4 KiB pages) of RAM, and each table level at most one node per leaf.
    let ram = early.end_of_dram();
    let max_nodes =
        u64::from(GEOMETRY.depth()) * ((ram >> 26) + 2 * (u64::from(crate::MAX_BLOCK_ORDER) + 1));
    let mut seen_buf = EarlyWords::new(early, max_nodes as usize).ok_or(Invalid::NoMemory)?;
    let mut seen = decode::SliceNodeSet::new(seen_buf.as_mut_slice());
    let mem = BootMem { early, scratch };
    let busy = core::cell::Cell::from_mut(busy).as_slice_of_cells();
    let mark = |start: u64, end: u64| {
        let mut b = start >> EXT_BLOCK_SHIFT;
        while b << EXT_BLOCK_SHIFT < end {
            if let Some(w) = busy.get((b / 64) as usize) {
                w.set(w.get() | 1 << (b % 64));
            }
            b += 1;
        }
    };
    decode::walk(
        &GEOMETRY,
        root.mem_map(),
        &mem,
        &mut seen,
        max_nodes,
        |phys| {
            mark(phys, phys + PAGE_SIZE as u64);
            Ok(())
        },
        |phys, order| {
            mark(phys, phys + order_size(order));
            cover.record_key(&GEOMETRY, phys, order)
        },
    )
    .map_err(Invalid::Walk)?;
    cover.finish().map_err(Invalid::Cover)
}

/// `kho_memory_init_early()`: validates the incoming handover and extends the scratch areas to
/// the 1 GiB blocks without preserved memory.
///
/// # Safety
///
/// Called from `mm_core_init_early()`, once.
#[export]
pub(crate) unsafe extern "C" fn kho_memory_init_early() {
    let state = state();
    let Some(inc) = state.incoming else {
        return;
    };
    // SAFETY: `mm_core_init_early()` runs before `memblock_free_all()`.
    let early = unsafe { EarlyBoot::new() };
    let cnt = (inc.scratch_len / size_of::<bindings::kho_scratch>() as u64) as usize;
    // SAFETY: `kho_populate()` checked that the list is a whole number of aligned areas and
    // reserved it; it is RAM in the direct map by now, and nothing writes it. It stays reserved
    // for the life of the kernel, unless `refuse()` frees it after its last use here.
    let list: &'static [bindings::kho_scratch] = unsafe {
        core::slice::from_raw_parts(phys_to_virt(inc.scratch_phys).cast_const().cast(), cnt)
    };

    let end = early.end_of_dram();
    let blocks = (end >> EXT_BLOCK_SHIFT) + 1;
    let Some(mut busy) = EarlyWords::new(&early, blocks.div_ceil(64) as usize) else {
        refuse(&early, inc, list, &Invalid::NoMemory);
        return;
    };
    if let Err(e) = validate(&early, inc, list, busy.as_mut_slice()) {
        refuse(&early, inc, list, &e);
        return;
    }
    publish(
        &PHASES.memory_init_early,
        BootState {
            scratch: list,
            ..state
        },
    );
    // Mark everything between busy blocks as scratch.
    let words = busy.as_mut_slice();
    let mut prev_end: u64 = 0;
    for b in 0..blocks {
        let set = words
            .get((b / 64) as usize)
            .is_some_and(|w| w & (1 << (b % 64)) != 0);
        if set {
            let start = b << EXT_BLOCK_SHIFT;
            if start > prev_end && early.mark_kho_scratch(prev_end, start - prev_end).is_err() {
                pr_err!("failed to extend scratch\n");
                return;
            }
            prev_end = start + (1 << EXT_BLOCK_SHIFT);
        }
    }
    if prev_end < end && early.mark_kho_scratch(prev_end, end - prev_end).is_err() {
        pr_err!("failed to extend scratch\n");
    }
}

/// Reserves the preserved blocks of the (validated) incoming tree in memblock and marks the
/// first page of each with its order.
fn reserve_preserved(early: &EarlyBoot, root: u64) -> Result {
    // The tree was validated by `kho_memory_init_early()`; walk it again without the checks
    // but with the same bound on the depth.
    let depth = GEOMETRY.depth() as usize;
    let words = GEOMETRY.words_per_node();
    let mut stack: [(u64, usize, u64); decode::MAX_DEPTH] = [(0, 0, 0); decode::MAX_DEPTH];
    let mut sp = 0;
    stack[0] = (root, 0, 0);
    let mut run: (u64, u64) = (0, 0);
    let flush = |run: (u64, u64)| -> Result {
        if run.1 > run.0 {
            early.reserve(run.0, run.1 - run.0)?;
            early.reserved_mark_noinit(run.0, run.1 - run.0)?;
        }
        Ok(())
    };
    loop {
        let (node, idx, prefix) = stack[sp];
        let level = (depth - 1 - sp) as u32;
        // SAFETY: The node was checked by the validating walk: RAM in the direct map, untouched
        // since.
        let table = unsafe { core::slice::from_raw_parts(phys_to_virt(node).cast::<u64>(), words) };
        if idx >= words {
            if sp == 0 {
                break;
            }
            sp -= 1;
            continue;
        }
        stack[sp].1 = idx + 1;
        let entry = table[idx];
        if level == 0 {
            let mut bits = entry;
            while bits != 0 {
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let key = prefix | (idx as u64 * 64 + b);
                let Some((phys, order)) = crate::decode_key(key) else {
                    continue;
                };
                let pfn = phys_to_pfn(phys);
                // SAFETY: The block is RAM the memory map describes (checked by the walk), and
                // the struct pages of reserved memory are not reinitialized later.
                unsafe {
                    bindings::kho_mm_init_deferred(pfn, order);
                    PageFrame::from_pfn(pfn).set_private(crate::mem::page_info(order));
                }
                let end = phys + order_size(order);
                if phys == run.1 {
                    run.1 = end;
                } else {
                    flush(run)?;
                    run = (phys, end);
                }
            }
            continue;
        }
        if entry == 0 {
            continue;
        }
        let shift = (level - 1) * GEOMETRY.table_log2() + GEOMETRY.bitmap_log2();
        sp += 1;
        stack[sp] = (entry, 0, prefix | ((idx as u64) << shift));
    }
    flush(run)
}

/// Reserves the scratch areas of a cold boot, for the next kernel, and returns them.
fn reserve_scratch(early: &EarlyBoot) -> Result<&'static [bindings::kho_scratch], &'static str> {
    let sizes = SCRATCH_SIZES.copy().unwrap_or(ScratchSizes::DEFAULT);
    let scale = u64::from(sizes.scale);
    let low_limit = early.low_address_limit();
    let (lowmem, global) = if scale != 0 {
        let kern = |limit| {
            early
                .reserved_kern_size(limit, NUMA_NO_NODE)
                .saturating_sub(early.reserved_hugetlb_size(limit, NUMA_NO_NODE))
        };
        let low = kern(low_limit).saturating_mul(scale) / 100;
        let all = kern(ALLOC_ANYWHERE).saturating_mul(scale) / 100;
        (low, all.saturating_sub(low))
    } else {
        (sizes.lowmem, sizes.global)
    };
    let pernode = |nid: i32| {
        let size = if scale != 0 {
            early
                .reserved_kern_size(ALLOC_ANYWHERE, nid)
                .saturating_sub(early.reserved_hugetlb_size(ALLOC_ANYWHERE, nid))
                .saturating_mul(scale)
                / 100
        } else {
            sizes.pernode
        };
        size.next_multiple_of(SCRATCH_ALIGN)
    };
    let lowmem = lowmem.next_multiple_of(SCRATCH_ALIGN);
    let global = global.next_multiple_of(SCRATCH_ALIGN);

    let mut nodes = 0usize;
    let mut nid = -1;
    loop {
        // SAFETY: The helper reads the node mask.
        nid = unsafe { bindings::kho_mm_next_memory_node(nid) };
        if nid < 0 {
            break;
        }
        nodes += 1;
    }
    let cnt = nodes + 2;
    let entry = size_of::<bindings::kho_scratch>();
    let array = early
        .alloc_zeroed(cnt * entry, PAGE_SIZE)
        .ok_or("failed to reserve the scratch array")?
        .cast::<bindings::kho_scratch>();
    // SAFETY: `array` is a zeroed allocation of `cnt` areas, owned here; if the areas are
    // reserved, it is never freed.
    let areas: &'static mut [bindings::kho_scratch] =
        unsafe { core::slice::from_raw_parts_mut(array.as_ptr(), cnt) };
    let mut n = 0;
    let res = (|| {
        // Low memory, for the next kernel's allocations that need it, then a large contiguous
        // area for allocations without a node.
        for (size, limit, what) in [
            (lowmem, low_limit, "failed to reserve lowmem scratch buffer"),
            (
                global,
                ALLOC_ACCESSIBLE,
                "failed to reserve global scratch buffer",
            ),
        ] {
            let addr = early
                .phys_alloc_range(size, SCRATCH_ALIGN, 0, limit)
                .ok_or(what)?;
            areas[n] = bindings::kho_scratch { addr, size };
            n += 1;
        }
        let mut nid = -1;
        while n < cnt {
            // SAFETY: As above.
            nid = unsafe { bindings::kho_mm_next_memory_node(nid) };
            if nid < 0 {
                break;
            }
            let size = pernode(nid);
            let a = early
                .alloc_range_nid(size, SCRATCH_ALIGN, 0, ALLOC_ACCESSIBLE, nid, true)
                .ok_or("failed to reserve a node's scratch buffer")?;
            areas[n] = bindings::kho_scratch { addr: a, size };
            n += 1;
        }
        Ok(())
    })();
    if let Err(e) = res {
        for a in &areas[..n] {
            early.phys_free(a.addr, a.size);
        }
        // SAFETY: `array` came from `alloc_zeroed()` with this size and is unused.
        unsafe { early.free(array.cast(), cnt * entry) };
        return Err(e);
    }
    let areas: &'static [bindings::kho_scratch] = areas;
    Ok(areas.get(..n).unwrap_or(areas))
}

/// `kho_memory_init()`: reserves the preserved memory after a KHO boot, or scratch areas
/// after a cold boot.
///
/// # Safety
///
/// Called from `mm_core_init()`, once, before `memblock_free_all()`.
#[export]
pub(crate) unsafe extern "C" fn kho_memory_init() {
    // SAFETY: `mm_core_init()` calls this once, before any allocator exists, so before anybody
    // can use KHO.
    unsafe { crate::init_locks() };
    // SAFETY: `mm_core_init()` calls this before `memblock_free_all()`.
    let early = unsafe { EarlyBoot::new() };
    // SAFETY: The helper calls an inline function that reads a boot flag.
    if unsafe { bindings::kho_mm_is_kdump() } {
        crate::disable();
        pr_info!("disabled in the kdump kernel\n");
        return;
    }
    let state = state();
    if let Some(inc) = state.incoming {
        // SAFETY: As in `validate()`.
        let fdt = unsafe {
            core::slice::from_raw_parts(phys_to_virt(inc.fdt_phys).cast_const(), inc.fdt_len)
        };
        let root = decode::parse_root(&GEOMETRY, fdt).map(|r| r.mem_map());
        match root
            .map_err(|_| EINVAL)
            .and_then(|r| reserve_preserved(&early, r))
        {
            Ok(()) => return,
            Err(_) => {
                // Only memblock running out of memory for its arrays can get here.
                pr_err!("failed to reserve preserved memory; KHO data is lost\n");
                publish(
                    &PHASES.memory_init,
                    BootState {
                        incoming: None,
                        ..state
                    },
                );
                return;
            }
        }
    }
    if !crate::enabled() {
        return;
    }
    match reserve_scratch(&early) {
        Ok(areas) => publish(
            &PHASES.memory_init,
            BootState {
                scratch: areas,
                cold_scratch: true,
                ..state
            },
        ),
        Err(why) => {
            pr_err!("{}\n", why);
            pr_warn!("Failed to reserve scratch area, disabling kexec handover\n");
            crate::disable();
        }
    }
}

/// Releases the scratch areas a cold boot reserved to the page allocator as CMA: only movable
/// allocations may use them, so they are free again whenever the next kernel needs them.
pub(crate) fn release_scratch() {
    let state = state();
    if !state.cold_scratch {
        return;
    }
    for a in state.scratch {
        // SAFETY: The area is reserved memory of this boot that nothing uses; this runs from
        // KHO's initcall, before init memory is freed.
        unsafe { bindings::kho_mm_release_scratch(a.addr, a.size) };
    }
}

/// KHO failed to set up: gives a cold boot's scratch areas back as normal memory.
pub(crate) fn release_scratch_after_failure() {
    let state = state();
    if !state.cold_scratch {
        return;
    }
    for a in state.scratch {
        let start = phys_to_virt(a.addr);
        let end = phys_to_virt(a.addr + a.size);
        // SAFETY: The area is reserved memory of this boot that nothing uses.
        unsafe { bindings::free_reserved_area(start.cast(), end.cast(), -1, c"".as_char_ptr()) };
    }
    publish(
        &PHASES.late_init,
        BootState {
            scratch: &[],
            ..state
        },
    );
}

/// The physical address and length of the scratch list for `kexec_file_load()`.
pub(crate) fn scratch_list() -> (*mut bindings::kho_scratch, usize) {
    let s = scratch();
    (s.as_ptr().cast_mut(), core::mem::size_of_val(s))
}
