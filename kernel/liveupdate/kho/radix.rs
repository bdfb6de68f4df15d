// SPDX-License-Identifier: GPL-2.0

//! The radix tree of preserved blocks, and the C API of `include/linux/kho_radix_tree.h`.
//!
//! The tree is a set of keys ([`crate::decode`] explains the encoding). Each node is one page:
//! the table levels hold the physical addresses of the nodes below, and the leaves are bitmaps.
//! The next kernel reads the tree in place, so its layout is part of the `kho-v4` ABI.
//!
//! This module only walks trees built by this kernel (its own or those of C users of the API),
//! which are trusted; the previous kernel's tree is validated by [`crate::decode::walk`] first.

use crate::{decode, GEOMETRY};
use core::ptr::NonNull;
use kernel::{
    bindings,
    ffi::{c_int, c_ulong, c_void},
    page::PAGE_SIZE,
    physmem::{phys_to_virt, virt_to_phys, PageFrame, Pages},
    prelude::*,
    sync::Mutex,
};

/// Number of `u64` words in a node.
pub(crate) const WORDS: usize = PAGE_SIZE / size_of::<u64>();

/// One node of the tree: a table of physical addresses, or a leaf bitmap.
pub(crate) type Node = [u64; WORDS];

/// Level of the root table.
const TOP: u32 = GEOMETRY.depth() - 1;

/// The shift of the table index of each level within a key: `SHIFTS[level - 1]` for the
/// levels `1..=TOP`. Computed at compile time, so that the hot paths below (one walk per
/// preserved folio) shift by a constant instead of checking the geometry at every level.
const SHIFTS: [u32; TOP as usize] = {
    let mut shifts = [0u32; TOP as usize];
    let mut i = 0;
    while i < TOP as usize {
        shifts[i] = match GEOMETRY.table_shift(i as u32 + 1) {
            Some(shift) => shift,
            // Evaluated at compile time: a bad geometry fails the build, not a kernel.
            None => panic!("bad KHO radix geometry"),
        };
        i += 1;
    }
    shifts
};

/// The mask of a table index (a node has [`WORDS`] entries).
const INDEX_MASK: u64 = WORDS as u64 - 1;

// The decoders and the hot paths agree on the shape of the tree.
static_assert!(GEOMETRY.words_per_node() == WORDS);
static_assert!(SHIFTS[TOP as usize - 1] < u64::BITS);

/// The table index of `key` at `level` (1 ..= the root's), by [`SHIFTS`].
#[cfg(CONFIG_KUNIT = "y")]
pub(crate) fn table_index(key: u64, level: u32) -> usize {
    SHIFTS
        .get((level as usize).wrapping_sub(1))
        .map_or(0, |&shift| index_at(key, shift))
}

/// The table index of `key` at the level whose shift is `shift` (one of [`SHIFTS`]); the same
/// as `decode::table_index()`, which the tests check.
#[inline(always)]
fn index_at(key: u64, shift: u32) -> usize {
    // `shift` is below 64 (a `static_assert!` above); at most 13 bits remain after the mask.
    (key.wrapping_shr(shift) & INDEX_MASK) as usize
}

/// Allocates a zeroed node.
fn alloc_node() -> Result<NonNull<Node>> {
    let pages = Pages::alloc(0, GFP_KERNEL)?;
    let ptr = pages.as_ptr().cast::<Node>();
    let _ = pages.into_raw();
    // SAFETY: `as_ptr()` of an allocation is a non-null direct-map address.
    Ok(unsafe { NonNull::new_unchecked(ptr) })
}

/// Frees a node from [`alloc_node`].
///
/// # Safety
///
/// `node` came from [`alloc_node`] and nothing refers to it any more.
unsafe fn free_node(node: NonNull<Node>) {
    let phys = virt_to_phys(node.as_ptr().cast());
    // SAFETY: The node is an order-0 allocation in the direct map.
    let first = unsafe { PageFrame::from_pfn(kernel::physmem::phys_to_pfn(phys)) };
    // SAFETY: The caller hands over the allocation.
    drop(unsafe { Pages::from_raw(first, 0) });
}

/// The translation from the physical addresses in tables to nodes.
///
/// Nodes are pages of the direct map, which is linear on the 64-bit architectures KHO supports
/// (`__va(x)` is `x` plus a constant). The constant is computed once per operation from the root
/// node, instead of an out-of-line `phys_to_virt()` call per level: on the hot path of
/// `kho_preserve_folio()` those calls cost more than the rest of the walk.
#[derive(Clone, Copy)]
pub(crate) struct DirectMap(usize);

impl DirectMap {
    /// The translation of the tree whose root is `root`.
    pub(crate) fn of(root: NonNull<Node>) -> Self {
        let phys = virt_to_phys(root.as_ptr().cast());
        debug_assert_eq!(phys_to_virt(phys), root.as_ptr().cast());
        // A physical address fits in `usize` on the 64-bit architectures of KHO.
        Self((root.as_ptr() as usize).wrapping_sub(phys as usize))
    }

    /// Returns the node at physical address `phys`, as stored in a table.
    ///
    /// # Safety
    ///
    /// `phys` is a node of the tree this translation was made for.
    unsafe fn node(self, phys: u64) -> NonNull<Node> {
        let virt =
            core::ptr::with_exposed_provenance_mut::<Node>((phys as usize).wrapping_add(self.0));
        // SAFETY: Nodes are direct-map allocations, so their address is not null.
        unsafe { NonNull::new_unchecked(virt) }
    }
}

/// Adds `key` under `root`.
///
/// Allocates the missing nodes of the path; if an allocation fails, the nodes this call added
/// are freed again and the tree is unchanged.
///
/// # Safety
///
/// `root` is the root of a tree built by this kernel; the caller holds the tree's lock.
#[inline(always)]
pub(crate) unsafe fn add_key(root: NonNull<Node>, dm: DirectMap, key: u64) -> Result {
    if u64::from(u64::BITS - key.leading_zeros()) > u64::from(GEOMETRY.key_width()) {
        return Err(ERANGE);
    }
    // The common case, a path that exists: one load per level, no allocation.
    let mut node = root;
    for &shift in SHIFTS.iter().rev() {
        // SAFETY: `node` is a node of the tree; the caller holds the lock.
        let entry = unsafe { (*node.as_ptr())[index_at(key, shift)] };
        if entry == 0 {
            // SAFETY: As guaranteed by the caller.
            return unsafe { add_key_path(root, dm, key) };
        }
        // SAFETY: Entries of a tree built by this kernel are its nodes.
        node = unsafe { dm.node(entry) };
    }
    // SAFETY: `node` is the leaf of the key's path; the caller holds the lock.
    unsafe { set_leaf_bit(node, key) };
    Ok(())
}

/// Sets the bit of `key` in `leaf`.
///
/// # Safety
///
/// `leaf` is the leaf of `key`'s path in a tree built by this kernel, whose lock the caller
/// holds.
#[inline(always)]
unsafe fn set_leaf_bit(leaf: NonNull<Node>, key: u64) {
    let bit = decode::bitmap_index(&GEOMETRY, key);
    // SAFETY: As guaranteed by the caller, `leaf` is a node nobody else accesses meanwhile.
    let leaf = unsafe { &mut *leaf.as_ptr() };
    if let Some(w) = leaf.get_mut(bit / 64) {
        *w |= 1u64 << (bit % 64);
    }
}

/// [`add_key`] for a key whose path misses nodes: allocates them.
///
/// # Safety
///
/// As for [`add_key`]; the key is at most [`Geometry::key_width`](decode::Geometry) bits wide.
#[inline(never)]
unsafe fn add_key_path(root: NonNull<Node>, dm: DirectMap, key: u64) -> Result {
    let mut new_nodes: [Option<NonNull<Node>>; 8] = [None; 8];
    let mut anchor: Option<(NonNull<Node>, usize)> = None;
    let mut node = root;
    for (i, &shift) in SHIFTS.iter().enumerate().rev() {
        let level = i + 1;
        let idx = index_at(key, shift);
        // SAFETY: `node` is a node of the tree; the caller holds the lock.
        let entry = unsafe { (*node.as_ptr())[idx] };
        if entry != 0 {
            // SAFETY: Entries of a tree built by this kernel are its nodes.
            node = unsafe { dm.node(entry) };
            continue;
        }
        let new = match alloc_node() {
            Ok(new) => new,
            Err(e) => {
                for n in new_nodes.iter().flatten() {
                    // SAFETY: The nodes were allocated by this call; the anchor entry that
                    // links them is cleared below, before the lock is dropped.
                    unsafe { free_node(*n) };
                }
                if let Some((a, i)) = anchor {
                    // SAFETY: `a` is a node of the tree; the caller holds the lock.
                    unsafe { (*a.as_ptr())[i] = 0 };
                }
                return Err(e);
            }
        };
        // SAFETY: As above.
        unsafe { (*node.as_ptr())[idx] = virt_to_phys(new.as_ptr().cast()) };
        anchor.get_or_insert((node, idx));
        if let Some(slot) = new_nodes.get_mut(level) {
            *slot = Some(new);
        }
        node = new;
    }
    // SAFETY: `node` is the leaf of the key's path; the caller holds the lock.
    unsafe { set_leaf_bit(node, key) };
    Ok(())
}

/// Removes `key` from under `root`; empty nodes stay.
///
/// # Safety
///
/// As for [`add_key`].
pub(crate) unsafe fn del_key(root: NonNull<Node>, dm: DirectMap, key: u64) {
    if u64::from(u64::BITS - key.leading_zeros()) > u64::from(GEOMETRY.key_width()) {
        return;
    }
    let mut node = root;
    for &shift in SHIFTS.iter().rev() {
        let idx = index_at(key, shift);
        // SAFETY: `node` is a node of the tree; the caller holds the lock.
        let entry = unsafe { (*node.as_ptr())[idx] };
        if entry == 0 {
            kernel::warn_on!(true);
            return;
        }
        // SAFETY: Entries of a tree built by this kernel are its nodes.
        node = unsafe { dm.node(entry) };
    }
    let bit = decode::bitmap_index(&GEOMETRY, key);
    // SAFETY: `node` is the leaf of the path; the caller holds the lock.
    let leaf = unsafe { &mut *node.as_ptr() };
    if let Some(w) = leaf.get_mut(bit / 64) {
        *w &= !(1u64 << (bit % 64));
    }
}

/// What a walk reports.
pub(crate) enum Visit {
    /// A node, by physical address.
    Node(u64),
    /// A key.
    Key(u64),
}

/// Walks the tree under `root` in key order, calling `f` for every node (before its children)
/// and every key; a non-zero return value of `f` ends the walk and is returned.
///
/// # Safety
///
/// As for [`add_key`].
pub(crate) unsafe fn walk(root: NonNull<Node>, f: &mut dyn FnMut(Visit) -> c_int) -> c_int {
    // SAFETY: As guaranteed by the caller.
    unsafe { walk_level(root, DirectMap::of(root), TOP, 0, f) }
}

/// # Safety
///
/// `node` is a node at `level` of a tree built by this kernel; the caller holds its lock.
unsafe fn walk_level(
    node: NonNull<Node>,
    dm: DirectMap,
    level: u32,
    start: u64,
    f: &mut dyn FnMut(Visit) -> c_int,
) -> c_int {
    let ret = f(Visit::Node(virt_to_phys(node.as_ptr().cast())));
    if ret != 0 {
        return ret;
    }
    // SAFETY: As guaranteed by the caller.
    let words = unsafe { &*node.as_ptr() };
    if level == 0 {
        for (wi, &w) in words.iter().enumerate() {
            let mut bits = w;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let ret = f(Visit::Key(start | (wi as u64 * 64 + u64::from(b))));
                if ret != 0 {
                    return ret;
                }
            }
        }
        return 0;
    }
    let shift = (level - 1) * GEOMETRY.table_log2() + GEOMETRY.bitmap_log2();
    for (i, &entry) in words.iter().enumerate() {
        if entry == 0 {
            continue;
        }
        let key = start | ((i as u64) << shift);
        // SAFETY: Entries of a tree built by this kernel are its nodes, one level down.
        let ret = unsafe { walk_level(dm.node(entry), dm, level - 1, key, f) };
        if ret != 0 {
            return ret;
        }
    }
    0
}

/// Frees every node of the tree under `root`, `root` included.
///
/// # Safety
///
/// `root` is the root of a tree built by this kernel with [`alloc_node`], which nothing uses
/// any more.
pub(crate) unsafe fn destroy(root: NonNull<Node>) {
    // SAFETY: As guaranteed by the caller.
    unsafe { destroy_level(root, DirectMap::of(root), TOP) }
}

/// # Safety
///
/// As for [`destroy`], for a node at `level`.
unsafe fn destroy_level(node: NonNull<Node>, dm: DirectMap, level: u32) {
    if level > 0 {
        // SAFETY: As guaranteed by the caller.
        let words = unsafe { &*node.as_ptr() };
        for &entry in words.iter().filter(|&&e| e != 0) {
            // SAFETY: Entries are nodes of the tree one level down.
            unsafe { destroy_level(dm.node(entry), dm, level - 1) };
        }
    }
    // SAFETY: The node came from `alloc_node()` and is no longer referenced.
    unsafe { free_node(node) };
}

/// The outgoing tree: every block this kernel preserves for the next one.
pub(crate) struct OutTree {
    root: Option<(NonNull<Node>, DirectMap)>,
    /// The scratch areas, final once the tree exists; kept here so that the hot path reads them
    /// under the lock it holds anyway instead of through atomics (calls into C).
    scratch: &'static [bindings::kho_scratch],
}

// SAFETY: The nodes are owned by the tree and only touched with the lock held.
unsafe impl Send for OutTree {}

impl OutTree {
    const fn new() -> Self {
        Self {
            root: None,
            scratch: &[],
        }
    }

    /// With `CONFIG_KEXEC_HANDOVER_DEBUG`, refuses memory in a scratch area: the next kernel
    /// allocates from scratch before it has reserved preserved memory.
    pub(crate) fn check_not_scratch(&self, phys: u64, size: u64) -> Result {
        if !cfg!(CONFIG_KEXEC_HANDOVER_DEBUG) {
            return Ok(());
        }
        if crate::boot::overlaps(self.scratch, phys, size) {
            kernel::warn_on!(true);
            return Err(EINVAL);
        }
        Ok(())
    }

    /// The root node, once the tree exists.
    pub(crate) fn root(&self) -> Option<NonNull<Node>> {
        self.root.map(|(r, _)| r)
    }

    /// Adds `key`; fails with [`EINVAL`] before the tree exists (KHO disabled).
    pub(crate) fn add(&mut self, key: u64) -> Result {
        let (root, dm) = self.root.ok_or(EINVAL)?;
        // SAFETY: `root` is this kernel's tree and `&mut self` is the lock.
        unsafe { add_key(root, dm, key) }
    }

    /// Removes `key`.
    pub(crate) fn del(&mut self, key: u64) {
        if let Some((root, dm)) = self.root {
            // SAFETY: As above.
            unsafe { del_key(root, dm, key) };
        }
    }
}

kernel::sync::global_lock! {
    // SAFETY: `init_lock()` initializes the lock from `kho_memory_init()`, which
    // `mm_core_init()` calls before any allocator exists, so before anybody can preserve memory.
    pub(crate) unsafe(uninit) static OUT_TREE: Mutex<OutTree> = OutTree::new();
}

/// Initializes the lock of the outgoing tree.
///
/// # Safety
///
/// Called once, from `kho_memory_init()`, before anything locks [`OUT_TREE`].
pub(crate) unsafe fn init_lock() {
    // SAFETY: As guaranteed by the caller.
    unsafe { OUT_TREE.init() };
}

/// Locks the outgoing tree; it has no root before KHO set it up.
pub(crate) fn out_tree() -> kernel::sync::lock::GlobalGuard<OUT_TREE> {
    OUT_TREE.lock()
}

/// Creates the outgoing tree's root node.
pub(crate) fn init_out_tree() -> Result {
    let mut t = OUT_TREE.lock();
    t.scratch = crate::boot::scratch();
    if t.root.is_none() {
        let root = alloc_node()?;
        t.root = Some((root, DirectMap::of(root)));
    }
    Ok(())
}

// The C API of `include/linux/kho_radix_tree.h`, for trees owned by C code: `struct
// kho_radix_tree` is a root node pointer and the mutex that protects it.

/// Locks the mutex of a C tree.
///
/// # Safety
///
/// `tree` is a valid `struct kho_radix_tree` whose mutex was initialized.
unsafe fn c_tree_lock<'a>(tree: *mut bindings::kho_radix_tree) -> &'a Mutex<()> {
    // SAFETY: As guaranteed by the caller, the mutex is initialized and lives as long as the
    // tree, which the caller keeps alive during the call.
    unsafe { Mutex::from_raw(&raw mut (*tree).lock) }
}

/// Returns the root of a C tree.
///
/// # Safety
///
/// `tree` is valid.
unsafe fn c_tree_root(tree: *mut bindings::kho_radix_tree) -> Option<NonNull<Node>> {
    // SAFETY: As guaranteed by the caller.
    NonNull::new(unsafe { (*tree).root }.cast::<Node>())
}

/// `kho_radix_add_key()`.
///
/// # Safety
///
/// `tree` was set up with `kho_radix_init_tree()` and is valid.
#[export]
pub(crate) unsafe extern "C" fn kho_radix_add_key(
    tree: *mut bindings::kho_radix_tree,
    key: c_ulong,
) -> c_int {
    // SAFETY: As guaranteed by the caller.
    let Some(root) = (unsafe { c_tree_root(tree) }) else {
        kernel::warn_on!(true);
        return EINVAL.to_errno();
    };
    // SAFETY: As guaranteed by the caller.
    let _guard = unsafe { c_tree_lock(tree) }.lock();
    // SAFETY: The tree was built by this kernel and its lock is held.
    match unsafe { add_key(root, DirectMap::of(root), key as u64) } {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `kho_radix_del_key()`.
///
/// # Safety
///
/// As for [`kho_radix_add_key`].
#[export]
pub(crate) unsafe extern "C" fn kho_radix_del_key(
    tree: *mut bindings::kho_radix_tree,
    key: c_ulong,
) {
    // SAFETY: As guaranteed by the caller.
    let Some(root) = (unsafe { c_tree_root(tree) }) else {
        kernel::warn_on!(true);
        return;
    };
    // SAFETY: As guaranteed by the caller.
    let _guard = unsafe { c_tree_lock(tree) }.lock();
    // SAFETY: The tree was built by this kernel and its lock is held.
    unsafe { del_key(root, DirectMap::of(root), key as u64) };
}

/// `kho_radix_walk_tree()`.
///
/// # Safety
///
/// As for [`kho_radix_add_key`]; `cb` is valid and its callbacks accept `data`.
#[export]
pub(crate) unsafe extern "C" fn kho_radix_walk_tree(
    tree: *mut bindings::kho_radix_tree,
    cb: *const bindings::kho_radix_walk_cb,
    data: *mut c_void,
) -> c_int {
    // SAFETY: As guaranteed by the caller.
    let Some(root) = (unsafe { c_tree_root(tree) }) else {
        kernel::warn_on!(true);
        return EINVAL.to_errno();
    };
    // SAFETY: As guaranteed by the caller, `cb` is valid.
    let cb = unsafe { &*cb };
    // SAFETY: As guaranteed by the caller.
    let _guard = unsafe { c_tree_lock(tree) }.lock();
    let mut f = |v: Visit| match v {
        Visit::Node(phys) => match cb.node {
            // SAFETY: The caller's callback accepts `data`.
            Some(node) => unsafe { node(phys, data) },
            None => 0,
        },
        Visit::Key(key) => match cb.leaf {
            // SAFETY: As above.
            Some(leaf) => unsafe { leaf(key as c_ulong, data) },
            None => 0,
        },
    };
    // SAFETY: The tree was built by this kernel and its lock is held.
    unsafe { walk(root, &mut f) }
}

/// `kho_radix_init_tree()`: a tree with `root`, or with a new empty root if `root` is null.
///
/// # Safety
///
/// `tree` is valid; a non-null `root` is a node of a valid tree.
#[export]
pub(crate) unsafe extern "C" fn kho_radix_init_tree(
    tree: *mut bindings::kho_radix_tree,
    root: *mut bindings::kho_radix_node,
) -> c_int {
    let root = match NonNull::new(root) {
        Some(r) => r.cast::<Node>(),
        None => match alloc_node() {
            Ok(r) => r,
            Err(e) => return e.to_errno(),
        },
    };
    // SAFETY: As guaranteed by the caller, `tree` is valid.
    unsafe { (*tree).root = root.as_ptr().cast() };
    // SAFETY: `tree` is valid; the lock class is static.
    unsafe {
        bindings::__mutex_init(
            &raw mut (*tree).lock,
            c"kho_radix_tree.lock".as_char_ptr(),
            kernel::static_lock_class!().as_ptr(),
        )
    };
    0
}

/// `kho_radix_destroy_tree()`.
///
/// # Safety
///
/// `tree` is valid and no longer used concurrently.
#[export]
pub(crate) unsafe extern "C" fn kho_radix_destroy_tree(tree: *mut bindings::kho_radix_tree) {
    // SAFETY: As guaranteed by the caller.
    if let Some(root) = unsafe { c_tree_root(tree) } {
        // SAFETY: The tree was built with `alloc_node()` and is no longer used.
        unsafe { destroy(root) };
        // SAFETY: `tree` is valid.
        unsafe { (*tree).root = core::ptr::null_mut() };
    }
}
