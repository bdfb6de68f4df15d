// SPDX-License-Identifier: GPL-2.0

//! Preserving memory for the next kernel, and restoring what the previous one preserved.
//!
//! A preserved block is `1 << order` naturally aligned pages, recorded as one key of the
//! outgoing radix tree. A folio is one block at its order; a range of pages is split into the
//! largest naturally aligned blocks that do not cross a NUMA node. At boot, the next kernel
//! marks the first page of each block with [`PAGE_MAGIC`] and its order ([`crate::boot`]);
//! restoring a block checks and clears that mark, so a block can be restored once, and only at
//! an address where a block starts.

use crate::{encode_key, radix};
use core::ptr::NonNull;
use kernel::{
    bindings,
    ffi::{c_int, c_uint, c_ulong, c_void},
    folio::Folio,
    io::PhysAddr,
    page::PAGE_SIZE,
    physmem::{
        pfn_to_nid, pfn_to_phys, phys_to_pfn, phys_to_virt, virt_to_phys, PageFrame, Pages,
        MAX_PAGE_ORDER,
    },
    prelude::*,
    sync::aref::ARef,
};

/// The mark of the first page of a preserved block, in the high half of `page->private`:
/// ASCII "KHOP". The low half holds the block's order.
pub(crate) const PAGE_MAGIC: u32 = 0x4b48_4f50;

/// The `private` word of the first page of a preserved block of `order`.
pub(crate) const fn page_info(order: u32) -> usize {
    // `usize` is 64 bits wide on every architecture KHO supports (it depends on 64BIT).
    ((PAGE_MAGIC as usize) << 32) | order as usize
}

/// The order of a preserved block whose first page has `private`, if it has the mark.
pub(crate) const fn info_order(private: usize) -> Option<u32> {
    if (private >> 32) as u32 == PAGE_MAGIC {
        Some(private as u32)
    } else {
        None
    }
}

/// The order of the block that starts at `pfn` when `[pfn, end)` is split into naturally
/// aligned blocks that do not cross a NUMA node.
pub(crate) fn split_order(pfn: usize, end: usize) -> u32 {
    let mut order = pfn.trailing_zeros().min((end - pfn).ilog2());
    while order > 0 && pfn_to_nid(pfn) != pfn_to_nid(pfn + (1usize << order) - 1) {
        order -= 1;
    }
    order
}

/// Preserves `[pfn, end)` block by block; on failure, unpreserves what it added.
fn preserve_range(pfn: usize, end: usize) -> Result {
    let mut t = crate::radix::out_tree();
    t.check_not_scratch(pfn_to_phys(pfn), pfn_to_phys(end - pfn))?;
    let mut p = pfn;
    while p < end {
        let order = split_order(p, end);
        if let Err(e) = t.add(encode_key(pfn_to_phys(p), order)) {
            unpreserve_range_locked(&mut t, pfn, p);
            return Err(e);
        }
        p += 1usize << order;
    }
    Ok(())
}

fn unpreserve_range_locked(t: &mut radix::OutTree, pfn: usize, end: usize) {
    let mut p = pfn;
    while p < end {
        let order = split_order(p, end);
        t.del(encode_key(pfn_to_phys(p), order));
        p += 1usize << order;
    }
}

fn unpreserve_range(pfn: usize, end: usize) {
    unpreserve_range_locked(&mut crate::radix::out_tree(), pfn, end);
}

/// Preserves `folio` at its order.
pub(crate) fn preserve_folio(folio: &Folio) -> Result {
    preserve_block(folio.pfn(), folio.order())
}

/// Preserves the block of `1 << order` pages at `pfn`.
#[inline(always)]
fn preserve_block(pfn: usize, order: u32) -> Result {
    if order > crate::MAX_BLOCK_ORDER {
        return Err(EINVAL);
    }
    let phys = pfn_to_phys(pfn);
    let mut t = crate::radix::out_tree();
    t.check_not_scratch(phys, crate::order_size(order))?;
    t.add(encode_key(phys, order))
}

/// `kho_preserve_folio()`, which `kho_glue.c` implements with this: C inlines
/// `folio_pfn()` and `folio_order()`, which are calls from Rust, and a preserve per folio is
/// KHO's hottest path.
#[export]
pub(crate) extern "C" fn kho_preserve_block(pfn: c_ulong, order: c_uint) -> c_int {
    match preserve_block(pfn, order) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `kho_unpreserve_folio()`, as [`kho_preserve_block`].
#[export]
pub(crate) extern "C" fn kho_unpreserve_block(pfn: c_ulong, order: c_uint) {
    let key = encode_key(pfn_to_phys(pfn), order);
    crate::radix::out_tree().del(key);
}

/// `kho_preserve_pages()`: preserves `nr_pages` contiguous order-0 pages.
///
/// # Safety
///
/// `page` is the first of `nr_pages` contiguous pages of the memory map.
#[export]
pub(crate) unsafe extern "C" fn kho_preserve_pages(
    page: *mut bindings::page,
    nr_pages: c_ulong,
) -> c_int {
    let Some(page) = NonNull::new(page) else {
        return EINVAL.to_errno();
    };
    // SAFETY: As guaranteed by the caller.
    let pfn = unsafe { PageFrame::from_raw(page) }.pfn();
    let Some(end) = pfn.checked_add(nr_pages) else {
        return EINVAL.to_errno();
    };
    let res = preserve_range(pfn, end);
    match res {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `kho_unpreserve_pages()`: undoes `kho_preserve_pages()` with the same arguments.
///
/// # Safety
///
/// As for [`kho_preserve_pages`].
#[export]
pub(crate) unsafe extern "C" fn kho_unpreserve_pages(page: *mut bindings::page, nr_pages: c_ulong) {
    let Some(page) = NonNull::new(page) else {
        return;
    };
    // SAFETY: As guaranteed by the caller.
    let pfn = unsafe { PageFrame::from_raw(page) }.pfn();
    unpreserve_range(pfn, pfn.saturating_add(nr_pages));
}

/// Restores the block that starts at `phys`, checking that it is one of `order` if given.
///
/// With `folio`, the block becomes a folio of its order; otherwise order-0 pages.
fn restore_block(phys: PhysAddr, expect: Option<u32>, folio: bool) -> Option<PageFrame> {
    let mut private = 0;
    // SAFETY: Any page frame number may be asked for; `private` is valid for writes.
    let page =
        NonNull::new(unsafe { bindings::kho_mm_online_page(phys_to_pfn(phys), &mut private) })?;
    // SAFETY: `kho_mm_online_page()` returned a page of the memory map.
    let page = unsafe { PageFrame::from_raw(page) };
    let order = match info_order(private) {
        // A folio is at most `MAX_PAGE_ORDER`; a block of a page range may be larger.
        Some(o) if (!folio || o <= MAX_PAGE_ORDER) && expect.is_none_or(|e| e == o) => o,
        _ => {
            pr_warn!("refusing to restore 0x{:x}: not a preserved block\n", phys);
            return None;
        }
    };
    // SAFETY: The mark shows that the block was preserved and not restored yet: this kernel
    // reserved the block of `1 << order` pages at `page` for KHO at boot, so nobody else uses
    // it; it is owned by the caller now. `kho_mm_init_page()` clears the mark, which makes a
    // second restore fail.
    unsafe { bindings::kho_mm_init_page(page.as_ptr(), order, folio) };
    Some(page)
}

/// Restores the folio preserved at `phys`.
#[inline]
pub(crate) fn restore_folio(phys: PhysAddr) -> Option<ARef<Folio>> {
    let page = restore_block(phys, None, true)?;
    // The block's first page is the head of the folio `restore_block()` made, and a folio is
    // its head page's `struct page` (what `page_folio()` returns for a head, without a call).
    let folio = page.as_non_null().cast::<Folio>();
    // SAFETY: `restore_block()` made the block a folio with one reference, owned here.
    Some(unsafe { ARef::from_raw(folio) })
}

/// `kho_restore_folio()`.
///
/// # Safety
///
/// Any context that may sleep may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_restore_folio(phys: PhysAddr) -> *mut bindings::folio {
    match restore_folio(phys) {
        Some(f) => ARef::into_raw(f).as_ptr().cast(),
        None => core::ptr::null_mut(),
    }
}

/// Restores `nr_pages` contiguous order-0 pages preserved with `kho_preserve_pages()`.
///
/// Every block of the range is checked before any is restored, so a bad range leaves all of it
/// preserved (and freed at the end of boot if nobody restores it).
fn restore_pages(phys: PhysAddr, nr_pages: usize) -> Option<PageFrame> {
    let start = phys_to_pfn(phys);
    let end = start.checked_add(nr_pages)?;
    if nr_pages == 0 || pfn_to_phys(start) != phys {
        return None;
    }
    let mut pfn = start;
    while pfn < end {
        let order = split_order(pfn, end);
        let page = PageFrame::online(pfn)?;
        if info_order(page.private()) != Some(order) {
            pr_warn!(
                "refusing to restore pages at 0x{:x}: not a preserved range\n",
                phys
            );
            return None;
        }
        pfn += 1usize << order;
    }
    let mut pfn = start;
    while pfn < end {
        let order = split_order(pfn, end);
        restore_block(pfn_to_phys(pfn), Some(order), false)?;
        pfn += 1usize << order;
    }
    PageFrame::online(start)
}

/// `kho_restore_pages()`.
///
/// # Safety
///
/// Any context that may sleep may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_restore_pages(
    phys: PhysAddr,
    nr_pages: c_ulong,
) -> *mut bindings::page {
    match restore_pages(phys, nr_pages) {
        Some(p) => p.as_ptr(),
        None => core::ptr::null_mut(),
    }
}

/// `kho_alloc_preserve()`: zeroed, preserved memory of at least `size` bytes.
fn alloc_preserve(size: usize) -> Result<ARef<Folio>> {
    if size == 0 {
        return Err(EINVAL);
    }
    let pages = size.div_ceil(PAGE_SIZE).next_power_of_two();
    let order = pages.ilog2();
    if order > MAX_PAGE_ORDER {
        return Err(E2BIG);
    }
    let folio = Folio::alloc(order, GFP_KERNEL | __GFP_ZERO)?;
    preserve_folio(&folio)?;
    Ok(folio)
}

/// # Safety
///
/// Any context that may sleep may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_alloc_preserve(size: usize) -> *mut c_void {
    match alloc_preserve(size) {
        Ok(folio) => {
            let phys = folio.phys();
            let _ = ARef::into_raw(folio);
            phys_to_virt(phys).cast()
        }
        // ERR_PTR(): the negative errno as a pointer.
        Err(e) => e.to_errno() as isize as *mut c_void,
    }
}

/// Returns the folio that `mem`, a direct-map address, belongs to.
fn virt_to_folio(mem: *const c_void) -> NonNull<Folio> {
    // SAFETY: `mem` is memory from the page allocator, described by the memory map.
    unsafe { PageFrame::from_pfn(phys_to_pfn(virt_to_phys(mem.cast()))) }.folio()
}

/// `kho_unpreserve_free()`: unpreserves and frees memory from `kho_alloc_preserve()`.
///
/// # Safety
///
/// `mem` is null or came from `kho_alloc_preserve()` and is no longer used.
#[export]
pub(crate) unsafe extern "C" fn kho_unpreserve_free(mem: *mut c_void) {
    if mem.is_null() {
        return;
    }
    // SAFETY: The caller hands over the folio and its reference.
    let folio = unsafe { ARef::from_raw(virt_to_folio(mem)) };
    crate::radix::out_tree().del(encode_key(folio.phys(), folio.order()));
}

/// `kho_restore_free()`: restores memory preserved by `kho_alloc_preserve()` in the previous
/// kernel and frees it.
///
/// # Safety
///
/// `mem` is null or the direct-map address of such memory.
#[export]
pub(crate) unsafe extern "C" fn kho_restore_free(mem: *mut c_void) {
    if mem.is_null() {
        return;
    }
    let folio = restore_folio(virt_to_phys(mem.cast()));
    kernel::warn_on!(folio.is_none());
}

/// vmalloc flags KHO supports, and their encoding in `struct kho_vmalloc`.
const VMALLOC_FLAGS: [(c_uint, u16); 2] = [
    (bindings::VM_ALLOC, 0x0001),
    (bindings::VM_ALLOW_HUGE_VMAP, 0x0002),
];

/// Entries of physical addresses in one chunk.
const CHUNK_ENTRIES: usize = (PAGE_SIZE - size_of::<u64>()) / size_of::<u64>();

/// The words of a chunk: the next chunk's physical address, then zero-terminated entries.
type Chunk = [u64; PAGE_SIZE / 8];

/// Unpreserves and frees a chunk list and the blocks it lists.
fn unpreserve_chunks(first: u64, order: u32) {
    let mut next = first;
    while next != 0 {
        let chunk_phys = next;
        // SAFETY: Chunks are this kernel's own pages, made by `preserve_vmalloc()`.
        let chunk = unsafe { &*phys_to_virt(chunk_phys).cast::<Chunk>() };
        next = chunk[0];
        let pfn = phys_to_pfn(chunk_phys);
        unpreserve_range(pfn, pfn + 1);
        for &p in chunk[1..].iter().take_while(|&&p| p != 0) {
            let pfn = phys_to_pfn(p);
            unpreserve_range(pfn, pfn + (1usize << order));
        }
        // SAFETY: The chunk is an order-0 allocation owned by the preservation, now unused.
        drop(unsafe { Pages::from_raw(PageFrame::from_pfn(pfn), 0) });
    }
}

/// A new chunk, preserved.
fn new_chunk() -> Result<Pages> {
    let chunk = Pages::alloc(0, GFP_KERNEL)?;
    let pfn = chunk.first().pfn();
    preserve_range(pfn, pfn + 1)?;
    Ok(chunk)
}

/// Preserves the vmalloc area at `ptr` and returns its descriptor.
fn preserve_vmalloc(ptr: *const c_void) -> Result<bindings::kho_vmalloc> {
    // SAFETY: `find_vm_area()` looks `ptr` up and accepts any address.
    let vm = unsafe { bindings::find_vm_area(ptr) };
    if vm.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: `vm` is the live area of `ptr`, which the caller keeps allocated.
    let vm = unsafe { &mut *vm };
    let supported = VMALLOC_FLAGS.iter().fold(0, |a, &(f, _)| a | f);
    if vm.flags as c_uint & !supported != 0 {
        return Err(EOPNOTSUPP);
    }
    let flags = VMALLOC_FLAGS
        .iter()
        .filter(|&&(f, _)| vm.flags as c_uint & f != 0)
        .fold(0u16, |a, &(_, k)| a | k);
    // SAFETY: `vm` is a valid area.
    let order = unsafe { bindings::kho_mm_vm_area_order(vm) };
    let nr_pages = vm.nr_pages as usize;
    let step = 1usize << order;

    let first = new_chunk()?;
    let mut desc = bindings::kho_vmalloc::default();
    desc.first.phys = first.phys();
    // The chunk being filled; chunks already linked are owned by the list from `first` on.
    let mut chunk = first.into_raw();
    let mut idx = 1;
    let mut i = 0;
    let res = (|| -> Result {
        while i < nr_pages {
            // SAFETY: `vm.pages` has `nr_pages` entries.
            let page = unsafe { *vm.pages.add(i) };
            let page = NonNull::new(page).ok_or(EINVAL)?;
            // SAFETY: Pages of a vmalloc area are pages of the memory map.
            let pfn = unsafe { PageFrame::from_raw(page) }.pfn();
            preserve_range(pfn, pfn + step)?;
            // SAFETY: `chunk` is a page owned by the list, mapped in the direct map.
            let words = unsafe { &mut *phys_to_virt(chunk.phys()).cast::<Chunk>() };
            words[idx] = pfn_to_phys(pfn);
            idx += 1;
            i += step;
            if idx == CHUNK_ENTRIES + 1 && i < nr_pages {
                let next = new_chunk()?;
                words[0] = next.phys();
                chunk = next.into_raw();
                idx = 1;
            }
        }
        Ok(())
    })();
    // SAFETY: `phys` is the member this function wrote.
    let first_phys = unsafe { desc.first.phys };
    if let Err(e) = res {
        unpreserve_chunks(first_phys, order);
        return Err(e);
    }
    desc.total_pages = u32::try_from(nr_pages).map_err(|_| {
        unpreserve_chunks(first_phys, order);
        E2BIG
    })?;
    desc.flags = flags;
    desc.order = order as u16;
    Ok(desc)
}

/// `kho_preserve_vmalloc()`.
///
/// # Safety
///
/// `ptr` is in a vmalloc area that stays allocated while preserved; `preservation` is valid
/// for writes.
#[export]
pub(crate) unsafe extern "C" fn kho_preserve_vmalloc(
    ptr: *mut c_void,
    preservation: *mut bindings::kho_vmalloc,
) -> c_int {
    match preserve_vmalloc(ptr) {
        Ok(desc) => {
            // SAFETY: As guaranteed by the caller.
            unsafe { preservation.write(desc) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// `kho_unpreserve_vmalloc()`.
///
/// # Safety
///
/// `preservation` was filled by `kho_preserve_vmalloc()`.
#[export]
pub(crate) unsafe extern "C" fn kho_unpreserve_vmalloc(preservation: *mut bindings::kho_vmalloc) {
    // SAFETY: As guaranteed by the caller.
    let desc = unsafe { &*preservation };
    // SAFETY: Reading the `phys` member of the union is always valid.
    unpreserve_chunks(unsafe { desc.first.phys }, u32::from(desc.order));
}

/// Frees restored blocks of order-0 pages listed in `pages`.
fn free_restored(pages: &[*mut bindings::page]) {
    for &p in pages {
        // SAFETY: Each entry is a restored order-0 page with one reference, owned here.
        unsafe { bindings::__free_pages(p, 0) };
    }
}

/// Restores a vmalloc area from the previous kernel's descriptor `desc`.
///
/// Every chunk and block is checked when it is restored, before it is read; on any error what
/// was restored is freed, and the rest stays preserved until the end of boot.
fn restore_vmalloc(desc: &bindings::kho_vmalloc) -> Option<NonNull<c_void>> {
    let mut vm_flags: c_uint = 0;
    let mut known: u16 = 0;
    for &(f, k) in &VMALLOC_FLAGS {
        known |= k;
        if desc.flags & k != 0 {
            vm_flags |= f;
        }
    }
    let order = u32::from(desc.order);
    if desc.flags & !known != 0 || order > MAX_PAGE_ORDER || desc.total_pages == 0 {
        return None;
    }
    let total = desc.total_pages as usize;
    let step = 1usize << order;
    if total % step != 0 {
        return None;
    }
    let mut pages = KVVec::<*mut bindings::page>::with_capacity(total, GFP_KERNEL).ok()?;
    // SAFETY: Reading the `phys` member of the union is always valid.
    let mut next = unsafe { desc.first.phys };
    let mut ok = true;
    while next != 0 && ok {
        // The chunk is restored first: that checks that it is a preserved page.
        let Some(chunk) = restore_pages(next, 1) else {
            ok = false;
            break;
        };
        // SAFETY: The chunk is a restored page, owned here and mapped in the direct map.
        let words = unsafe { &*phys_to_virt(chunk.phys()).cast::<Chunk>() };
        next = words[0];
        for &phys in words[1..].iter().take_while(|&&p| p != 0) {
            if pages.len() + step > total {
                ok = false;
                break;
            }
            let Some(first) = restore_pages(phys, step) else {
                ok = false;
                break;
            };
            for j in 0..step {
                // SAFETY: The restored block has `step` pages in the memory map.
                let page = unsafe { first.add(j) }.as_ptr();
                if pages.push(page, GFP_KERNEL).is_err() {
                    ok = false;
                }
            }
        }
        // SAFETY: The chunk page is restored, owned here and no longer read.
        unsafe { bindings::__free_pages(chunk.as_ptr(), 0) };
    }
    if !ok || pages.len() != total {
        free_restored(&pages);
        return None;
    }
    let nr = pages.len() as c_uint;
    let (ptr, _len, _cap) = pages.into_raw_parts();
    // SAFETY: `ptr` holds `nr` restored pages in order; on success the area owns the array
    // (freed by `vfree()` with `kvfree()`) and the pages.
    let addr = unsafe { bindings::kho_mm_vmap(ptr, nr, order, vm_flags) };
    if let Some(a) = NonNull::new(addr) {
        return Some(a);
    }
    // SAFETY: `kho_mm_vmap()` took nothing on failure; rebuild the vector to free it.
    let pages = unsafe { KVVec::from_raw_parts(ptr, nr as usize, total) };
    free_restored(&pages);
    None
}

/// `kho_restore_vmalloc()`.
///
/// # Safety
///
/// `preservation` is valid for reads.
#[export]
pub(crate) unsafe extern "C" fn kho_restore_vmalloc(
    preservation: *const bindings::kho_vmalloc,
) -> *mut c_void {
    // SAFETY: As guaranteed by the caller.
    let desc = unsafe { &*preservation };
    restore_vmalloc(desc).map_or(core::ptr::null_mut(), |p| p.as_ptr())
}
