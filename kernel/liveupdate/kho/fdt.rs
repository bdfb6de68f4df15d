// SPDX-License-Identifier: GPL-2.0

//! The root FDT of the handover and its subtrees.
//!
//! The outgoing root FDT is one preserved page, rewritten in place with libfdt whenever a
//! subtree is added or removed; `kexec_file_load()` passes its address to the next kernel. The
//! incoming one was checked by [`crate::boot`] before anything could look a subtree up.

use crate::{boot, mem};
use kernel::{
    bindings,
    ffi::{c_char, c_int, c_void},
    folio::Folio,
    io::PhysAddr,
    libfdt::{Fdt, FdtError, FdtMut, FdtWriter, Node},
    page::PAGE_SIZE,
    physmem::{phys_to_virt, virt_to_phys},
    prelude::*,
    sync::aref::ARef,
};

/// Compatible string of the root node.
pub(crate) const COMPATIBLE: &CStr = c"kho-v4";
/// Root property: physical address of the radix tree's root.
pub(crate) const MEMORY_MAP_PROP: &CStr = c"preserved-memory-map";
/// Subtree property: physical address of the blob.
pub(crate) const SUB_TREE_PROP: &CStr = c"preserved-data";
/// Subtree property: size of the blob.
pub(crate) const SUB_TREE_SIZE_PROP: &CStr = c"blob-size";

/// The outgoing root FDT.
pub(crate) struct OutFdt {
    /// The preserved page that holds the FDT.
    folio: ARef<Folio>,
}

// SAFETY: The page is owned by the value; it is only accessed with the lock held.
unsafe impl Send for OutFdt {}

impl OutFdt {
    /// The page, for libfdt.
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: The folio is a page owned by the value, mapped in the direct map; `&mut self`
        // means the lock is held.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.folio.phys()), PAGE_SIZE) }
    }

    /// The physical address of the FDT.
    pub(crate) fn phys(&self) -> PhysAddr {
        self.folio.phys()
    }

    /// The FDT as it is now.
    pub(crate) fn bytes(&mut self) -> Result<&[u8], FdtError> {
        Ok(Fdt::new(self.buf_mut())?.as_bytes())
    }
}

kernel::sync::global_lock! {
    // SAFETY: `init_lock()` initializes the lock from `kho_memory_init()`, which
    // `mm_core_init()` calls before any allocator exists, so before anybody can add a subtree or
    // load a kexec image.
    pub(crate) unsafe(uninit) static OUT_FDT: Mutex<Option<OutFdt>> = None;
}

/// Initializes the lock of the outgoing FDT.
///
/// # Safety
///
/// Called once, from `kho_memory_init()`, before anything locks [`OUT_FDT`].
pub(crate) unsafe fn init_lock() {
    // SAFETY: As guaranteed by the caller.
    unsafe { OUT_FDT.init() };
}

/// Locks the outgoing FDT; it holds `None` until KHO set it up.
pub(crate) fn out_fdt() -> kernel::sync::lock::GlobalGuard<OUT_FDT> {
    OUT_FDT.lock()
}

/// Creates the outgoing root FDT: compatible string and the address of the radix tree.
pub(crate) fn init_out_fdt() -> Result {
    let root = crate::radix::out_tree().root().ok_or(EINVAL)?;
    let root_phys = virt_to_phys(root.as_ptr().cast());
    let folio = Folio::alloc(0, GFP_KERNEL | __GFP_ZERO)?;
    mem::preserve_folio(&folio)?;
    let mut out = OutFdt { folio };
    let build = |buf: &mut [u8]| -> Result<(), FdtError> {
        let mut w = FdtWriter::new(buf)?;
        w.finish_reservemap()?;
        w.begin_node(c"")?;
        w.property_string(c"compatible", COMPATIBLE)?;
        w.property(MEMORY_MAP_PROP, &root_phys.to_ne_bytes())?;
        w.end_node()?;
        w.finish()
    };
    if let Err(e) = build(out.buf_mut()) {
        unpreserve(&out.folio);
        return Err(e.into());
    }
    *out_fdt() = Some(out);
    Ok(())
}

fn unpreserve(folio: &Folio) {
    crate::radix::out_tree().del(crate::encode_key(folio.phys(), folio.order()));
}

/// Adds subtree `name` for the blob of `size` bytes at `phys`.
fn add_subtree(name: &CStr, phys: PhysAddr, size: u64) -> Result {
    let mut guard = out_fdt();
    let out = guard.as_mut().ok_or(ENOMEM)?;
    let mut fdt = FdtMut::open(out.buf_mut()).map_err(|_| ENOMEM)?;
    let node = fdt.add_subnode(Node::ROOT, name).map_err(|e| match e {
        FdtError::Exists => EEXIST,
        _ => ENOMEM,
    })?;
    let props = fdt
        .setprop(node, SUB_TREE_PROP, &phys.to_ne_bytes())
        .and_then(|()| fdt.setprop(node, SUB_TREE_SIZE_PROP, &size.to_ne_bytes()));
    if props.is_err() {
        // The node was just added; deleting it cannot fail.
        let _ = fdt.del_node(node);
        return Err(ENOMEM);
    }
    Ok(())
}

/// `kho_add_subtree()`: records the blob of `size` bytes at `blob`, which the caller also
/// preserves, as subtree `name`.
///
/// # Safety
///
/// `name` is a NUL-terminated string; `blob` is a direct-map address.
#[export]
pub(crate) unsafe extern "C" fn kho_add_subtree(
    name: *const c_char,
    blob: *mut c_void,
    size: usize,
) -> c_int {
    // SAFETY: As guaranteed by the caller.
    let name = unsafe { CStr::from_char_ptr(name) };
    let phys = virt_to_phys(blob.cast());
    match add_subtree(name, phys, size as u64) {
        Ok(()) => {
            #[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
            crate::debugfs::out_blob_add(name, blob as usize, size);
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// `kho_remove_subtree()`: removes the subtree of `blob`.
///
/// # Safety
///
/// `blob` is a direct-map address.
#[export]
pub(crate) unsafe extern "C" fn kho_remove_subtree(blob: *mut c_void) {
    let target = virt_to_phys(blob.cast());
    let mut guard = out_fdt();
    let Some(out) = guard.as_mut() else {
        return;
    };
    let Ok(mut fdt) = FdtMut::open(out.buf_mut()) else {
        return;
    };
    let view = fdt.as_fdt();
    let found = view
        .subnodes(Node::ROOT)
        .map_while(|n| n.ok())
        .find(|&n| view.getprop_u64(n, SUB_TREE_PROP) == Ok(target));
    if let Some(node) = found {
        let _ = fdt.del_node(node);
        #[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
        crate::debugfs::out_blob_remove(blob as usize);
    }
}

/// The incoming root FDT.
pub(crate) fn incoming_fdt() -> Option<Fdt<'static>> {
    let inc = boot::incoming()?;
    // SAFETY: `boot` accepted the FDT of `fdt_len` bytes at `fdt_phys`: it is preserved memory
    // in the direct map that this kernel never frees.
    let bytes = unsafe {
        core::slice::from_raw_parts(phys_to_virt(inc.fdt_phys).cast_const(), inc.fdt_len)
    };
    Fdt::new(bytes).ok()
}

/// Looks subtree `name` up in the incoming FDT: `(phys, size)`.
pub(crate) fn retrieve_subtree(name: &CStr) -> Result<(PhysAddr, u64)> {
    let fdt = incoming_fdt().ok_or(ENOENT)?;
    let node = fdt.subnode(Node::ROOT, name).map_err(|_| ENOENT)?;
    let phys = fdt.getprop_u64(node, SUB_TREE_PROP).map_err(|_| EINVAL)?;
    let size = fdt.getprop_u64(node, SUB_TREE_SIZE_PROP).map_err(|_| {
        pr_warn!(
            "broken KHO subnode '{}': missing or invalid blob-size property\n",
            name.to_str().unwrap_or("?")
        );
        EINVAL
    })?;
    Ok((phys, size))
}

/// `kho_retrieve_subtree()`.
///
/// # Safety
///
/// `name` is a NUL-terminated string; `phys` is null or valid for writes, as is `size`.
#[export]
pub(crate) unsafe extern "C" fn kho_retrieve_subtree(
    name: *const c_char,
    phys: *mut PhysAddr,
    size: *mut usize,
) -> c_int {
    if boot::incoming().is_none() {
        return ENOENT.to_errno();
    }
    if phys.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: As guaranteed by the caller.
    let name = unsafe { CStr::from_char_ptr(name) };
    match retrieve_subtree(name) {
        Ok((p, s)) => {
            // SAFETY: As guaranteed by the caller.
            unsafe { phys.write(p) };
            if !size.is_null() {
                // SAFETY: As guaranteed by the caller. The size was checked at boot to fit the
                // preserved memory of the blob, so it fits in `usize`.
                unsafe { size.write(s as usize) };
            }
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Name of the kexec metadata subtree.
const METADATA_NAME: &CStr = c"kexec-metadata";

/// Size of `struct kho_kexec_metadata` (packed).
const METADATA_SIZE: usize = size_of::<bindings::kho_kexec_metadata>();
const _: () = assert!(METADATA_SIZE == 4 + bindings::__NEW_UTS_LEN as usize + 1 + 4);

/// Offset of `kexec_count` in the metadata.
const METADATA_COUNT_OFF: usize = 4 + bindings::__NEW_UTS_LEN as usize + 1;

/// Reads the previous kernel's kexec metadata, if any: `(release, count)`.
fn incoming_metadata() -> Option<([u8; bindings::__NEW_UTS_LEN as usize + 1], u32)> {
    let (phys, size) = retrieve_subtree(METADATA_NAME).ok()?;
    if size < 4 {
        pr_warn!("kexec-metadata blob too small ({} bytes)\n", size);
        return None;
    }
    let blob = phys_to_virt(phys).cast_const();
    // SAFETY: `boot` checked that the blob's `size` bytes are preserved memory, which is in the
    // direct map and not used by anybody else.
    let bytes = unsafe { core::slice::from_raw_parts(blob, size as usize) };
    let version = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if version != bindings::KHO_KEXEC_METADATA_VERSION {
        pr_warn!(
            "kexec-metadata version {} not supported (expected {})\n",
            version,
            bindings::KHO_KEXEC_METADATA_VERSION
        );
        return None;
    }
    if bytes.len() < METADATA_SIZE {
        pr_warn!(
            "kexec-metadata blob too small for v{} ({} < {})\n",
            version,
            size,
            METADATA_SIZE
        );
        return None;
    }
    let mut release = [0u8; bindings::__NEW_UTS_LEN as usize + 1];
    release.copy_from_slice(bytes.get(4..METADATA_COUNT_OFF)?);
    // Like strscpy(): always NUL-terminated.
    if let Some(last) = release.last_mut() {
        *last = 0;
    }
    let count = u32::from_ne_bytes(
        bytes
            .get(METADATA_COUNT_OFF..METADATA_SIZE)?
            .try_into()
            .ok()?,
    );
    Some((release, count))
}

/// Reads the incoming kexec metadata and writes the outgoing one.
pub(crate) fn kexec_metadata_init() -> Result {
    let mut count = 0;
    if let Some((release, c)) = incoming_metadata() {
        let len = release
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(release.len());
        let release = core::str::from_utf8(release.get(..len).unwrap_or(&[])).unwrap_or("?");
        pr_info!("exec from: {} (count {})\n", release, c);
        count = c;
    }
    let folio = Folio::alloc(0, GFP_KERNEL | __GFP_ZERO)?;
    mem::preserve_folio(&folio)?;
    let blob = phys_to_virt(folio.phys());
    // SAFETY: The folio is a page owned here, in the direct map.
    let meta = unsafe { core::slice::from_raw_parts_mut(blob, METADATA_SIZE) };
    meta[..4].copy_from_slice(&bindings::KHO_KEXEC_METADATA_VERSION.to_ne_bytes());
    // SAFETY: `init_uts_ns` is the static initial UTS namespace; its `release` is a
    // NUL-terminated string set at build time and never written.
    let ours =
        unsafe { CStr::from_char_ptr((&raw const bindings::init_uts_ns.name.release).cast()) };
    let ours = ours.to_bytes();
    let n = ours.len().min(bindings::__NEW_UTS_LEN as usize);
    meta[4..4 + n].copy_from_slice(&ours[..n]);
    meta[METADATA_COUNT_OFF..].copy_from_slice(&count.wrapping_add(1).to_ne_bytes());
    match add_subtree(METADATA_NAME, folio.phys(), METADATA_SIZE as u64) {
        Ok(()) => {
            #[cfg(CONFIG_KEXEC_HANDOVER_DEBUGFS)]
            crate::debugfs::out_blob_add(METADATA_NAME, blob as usize, METADATA_SIZE);
            // The metadata lives as long as the kernel.
            let _ = ARef::into_raw(folio);
            Ok(())
        }
        Err(e) => {
            pr_warn!("failed to initialize kexec-metadata subtree: {:?}\n", e);
            unpreserve(&folio);
            Err(e)
        }
    }
}
