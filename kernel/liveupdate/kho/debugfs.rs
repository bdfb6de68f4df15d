// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/debug/kho`: the outgoing and incoming root FDT, the subtree blobs and the
//! scratch areas, as upstream lays them out (Documentation/admin-guide/mm/kho.rst).

use crate::{boot, fdt};
use kernel::{
    debugfs::{BinaryWriter, Dir, File},
    fs::file,
    libfdt::Node,
    prelude::*,
    uaccess::UserSliceWriter,
};

/// A blob in memory that lives at least as long as its file.
struct Blob {
    addr: usize,
    len: usize,
}

impl BinaryWriter for Blob {
    fn write_to_slice(&self, w: &mut UserSliceWriter, off: &mut file::Offset) -> Result<usize> {
        // SAFETY: The blob is a subtree's memory: preserved by its owner until the subtree is
        // removed, which removes this file first, or incoming preserved memory, never freed.
        let bytes = unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len) };
        w.write_slice_file(bytes, off)
    }
}

/// The outgoing root FDT, read under its lock so that its current size is shown.
struct OutRoot;

impl BinaryWriter for OutRoot {
    fn write_to_slice(&self, w: &mut UserSliceWriter, off: &mut file::Offset) -> Result<usize> {
        let mut guard = fdt::out_fdt();
        let out = guard.as_mut().ok_or(ENOENT)?;
        let bytes = out.bytes()?;
        w.write_slice_file(bytes, off)
    }
}

struct Debugfs {
    _root: Dir,
    _out: Dir,
    out_sub: Dir,
    _in: Option<(Dir, Dir)>,
    /// Files of blobs, by blob address.
    blobs: KVec<(usize, Pin<KBox<File<Blob>>>)>,
    _files: KVec<Pin<KBox<File<()>>>>,
    _root_fdt: Option<Pin<KBox<File<OutRoot>>>>,
}

// SAFETY: `Dir` and `File` may be used and dropped from any thread; the blob addresses are
// plain numbers.
unsafe impl Send for Debugfs {}

kernel::sync::global_lock! {
    // SAFETY: `init_lock()` initializes the lock from `kho_memory_init()`, which
    // `mm_core_init()` calls before any allocator exists, so before anybody can add a subtree.
    unsafe(uninit) static DEBUGFS: Mutex<Option<Debugfs>> = None;
}

/// Initializes the lock of the debugfs files, which holds `None` until [`init`] ran.
///
/// # Safety
///
/// Called once, from `kho_memory_init()`, before anything locks the debugfs files.
pub(crate) unsafe fn init_lock() {
    // SAFETY: As guaranteed by the caller.
    unsafe { DEBUGFS.init() };
}

fn show_addrs(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    boot::scratch()
        .iter()
        .try_for_each(|a| writeln!(f, "0x{:x}", a.addr))
}

fn show_lens(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    boot::scratch()
        .iter()
        .try_for_each(|a| writeln!(f, "0x{:x}", a.size))
}

fn blob_file(dir: &Dir, name: &CStr, addr: usize, len: usize) -> Result<Pin<KBox<File<Blob>>>> {
    KBox::pin_init(dir.read_binary_file(name, Blob { addr, len }), GFP_KERNEL)
}

/// Creates the directories; failures only cost the debugfs view.
pub(crate) fn init() {
    let root = Dir::new(c"kho");
    let out = root.subdir(c"out");
    let out_sub = out.subdir(c"sub_fdts");
    let mut files = KVec::new();
    let f1 = KBox::pin_init(
        out.read_callback_file(c"scratch_phys", (), &show_addrs),
        GFP_KERNEL,
    );
    let f2 = KBox::pin_init(
        out.read_callback_file(c"scratch_len", (), &show_lens),
        GFP_KERNEL,
    );
    for f in [f1, f2].into_iter().flatten() {
        let _ = files.push(f, GFP_KERNEL);
    }
    let root_fdt = KBox::pin_init(out.read_binary_file(c"fdt", OutRoot), GFP_KERNEL).ok();
    let mut blobs = KVec::new();
    let in_dirs = fdt::incoming_fdt().map(|inc| {
        let dir = root.subdir(c"in");
        let sub = dir.subdir(c"sub_fdts");
        let bytes = inc.as_bytes();
        if let Ok(f) = blob_file(&dir, c"fdt", bytes.as_ptr() as usize, bytes.len()) {
            let _ = blobs.push((bytes.as_ptr() as usize, f), GFP_KERNEL);
        }
        for node in inc.subnodes(Node::ROOT).map_while(|n| n.ok()) {
            let (Ok(name), Ok((phys, size))) = (inc.name(node), subtree_of(&inc, node)) else {
                continue;
            };
            let mut buf = [0u8; 64];
            let Some(name) = cstr_in(&mut buf, name) else {
                continue;
            };
            let addr = kernel::physmem::phys_to_virt(phys) as usize;
            if let Ok(f) = blob_file(&sub, name, addr, size as usize) {
                let _ = blobs.push((addr, f), GFP_KERNEL);
            }
        }
        (dir, sub)
    });
    *DEBUGFS.lock() = Some(Debugfs {
        _root: root,
        _out: out,
        out_sub,
        _in: in_dirs,
        blobs,
        _files: files,
        _root_fdt: root_fdt,
    });
}

fn subtree_of(fdt: &kernel::libfdt::Fdt<'_>, node: Node) -> Result<(u64, u64)> {
    Ok((
        fdt.getprop_u64(node, fdt::SUB_TREE_PROP)?,
        fdt.getprop_u64(node, fdt::SUB_TREE_SIZE_PROP)?,
    ))
}

/// Copies `name` into `buf` as a C string, if it fits.
fn cstr_in<'a>(buf: &'a mut [u8], name: &[u8]) -> Option<&'a CStr> {
    let dst = buf.get_mut(..name.len() + 1)?;
    dst[..name.len()].copy_from_slice(name);
    dst[name.len()] = 0;
    CStr::from_bytes_with_nul(dst).ok()
}

/// Adds the file of an outgoing subtree blob.
pub(crate) fn out_blob_add(name: &CStr, addr: usize, len: usize) {
    let mut g = DEBUGFS.lock();
    let Some(d) = g.as_mut() else {
        return;
    };
    match blob_file(&d.out_sub, name, addr, len) {
        Ok(f) => {
            let _ = d.blobs.push((addr, f), GFP_KERNEL);
        }
        Err(e) => pr_warn!(
            "failed to add blob {} to debugfs: {:?}\n",
            name.to_str().unwrap_or("?"),
            e
        ),
    }
}

/// Removes the file of an outgoing subtree blob.
pub(crate) fn out_blob_remove(addr: usize) {
    let mut g = DEBUGFS.lock();
    let Some(d) = g.as_mut() else {
        return;
    };
    if let Some(i) = d.blobs.iter().position(|(a, _)| *a == addr) {
        drop(d.blobs.remove(i));
    }
}
