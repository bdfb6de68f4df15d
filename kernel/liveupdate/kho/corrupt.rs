// SPDX-License-Identifier: GPL-2.0

//! Test-only corruption of the outgoing handover (`CONFIG_KEXEC_HANDOVER_CORRUPT_TEST`).
//!
//! With `kho_test_corrupt=N` on the command line, KHO damages its outgoing data in one of six
//! ways at reboot (from a reboot notifier of `kho_glue.c`, after the LUO and every other user
//! wrote their data), so that the next kernel's validation can be tested: it must boot, print
//! one warning and start as after a cold boot.

use crate::{fdt, radix, GEOMETRY};
use kernel::{
    ffi::c_int,
    libfdt::{FdtMut, Node},
    page::PAGE_SIZE,
    physmem::{phys_to_virt, virt_to_phys},
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
};

static CASE: Atomic<i32> = Atomic::new(0);

/// Selects the corruption case; called by `kho_glue.c` for `kho_test_corrupt=`.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_test_set_corrupt(corrupt_case: c_int) {
    CASE.store(corrupt_case, Relaxed);
}

/// Returns the selected case.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn kho_test_corrupt_case() -> c_int {
    CASE.load(Relaxed)
}

/// Returns a set entry of `node` and its index.
///
/// # Safety
///
/// `node` is a node of this kernel's outgoing tree, whose lock the caller holds.
unsafe fn first_entry(node: *mut radix::Node) -> Option<(usize, u64)> {
    // SAFETY: As guaranteed by the caller.
    let words = unsafe { &*node };
    words.iter().copied().enumerate().find(|&(_, e)| e != 0)
}

fn corrupt(case: i32) -> Result<&'static str> {
    match case {
        1 | 2 | 5 => {
            let mut g = fdt::out_fdt();
            let out = g.as_mut().ok_or(EINVAL)?;
            let buf = out.buf_mut();
            match case {
                1 => {
                    buf[0] ^= 0xff;
                    Ok("bad FDT magic")
                }
                2 => {
                    let mut f = FdtMut::open(buf)?;
                    f.setprop(Node::ROOT, c"compatible", b"kho-v9\0")?;
                    Ok("wrong root compatible")
                }
                _ => {
                    let mut f = FdtMut::open(buf)?;
                    let node = f.as_fdt().subnode(Node::ROOT, c"kexec-metadata")?;
                    f.setprop(
                        node,
                        fdt::SUB_TREE_SIZE_PROP,
                        &(4 * PAGE_SIZE as u64).to_ne_bytes(),
                    )?;
                    Ok("subtree blob size past its page")
                }
            }
        }
        3 | 4 | 6 => {
            let mut t = radix::out_tree();
            let root = t.root().ok_or(EINVAL)?.as_ptr();
            match case {
                3 => {
                    // SAFETY: `root` is the root of the outgoing tree, locked by `t`.
                    let (i, _) = unsafe { first_entry(root) }.ok_or(EINVAL)?;
                    // Far beyond the RAM of any test machine, and page-aligned.
                    // SAFETY: `root` is the tree's root, locked.
                    unsafe { (*root)[i] = 1 << 45 };
                    Ok("radix pointer outside RAM")
                }
                4 => {
                    // SAFETY: As above.
                    let (_, child) = unsafe { first_entry(root) }.ok_or(EINVAL)?;
                    let child = phys_to_virt(child).cast::<radix::Node>();
                    // SAFETY: `child` is the root's first child, a node of the same tree.
                    let (j, _) = unsafe { first_entry(child) }.ok_or(EINVAL)?;
                    // SAFETY: `child` is a node of the tree, locked.
                    unsafe { (*child)[j] = virt_to_phys(root.cast()) };
                    Ok("radix loop")
                }
                _ => {
                    // Beyond `MAX_PAGE_ORDER`, and beyond the largest block a page range can
                    // make (`MAX_BLOCK_ORDER`).
                    let order = crate::MAX_BLOCK_ORDER + 1;
                    let align = (PAGE_SIZE as u64) << order;
                    let phys = virt_to_phys(root.cast()) & !(align - 1);
                    // `encode_key()` refuses such an order: build the key as C would.
                    let shift = GEOMETRY.page_shift + order;
                    t.add((1u64 << (64 - shift)) | (phys >> shift))?;
                    Ok("key of an order beyond MAX_PAGE_ORDER")
                }
            }
        }
        _ => Err(EINVAL),
    }
}

/// Applies the selected corruption; called by the reboot notifier of `kho_glue.c`.
///
/// # Safety
///
/// Called at reboot, after every user of KHO wrote its data.
#[export]
pub(crate) unsafe extern "C" fn kho_test_corrupt() {
    let case = CASE.load(Relaxed);
    if case == 0 {
        return;
    }
    match corrupt(case) {
        Ok(what) => pr_warn!(
            "test: corrupted the outgoing handover (case {}: {})\n",
            case,
            what
        ),
        Err(e) => pr_err!("test: corruption case {} failed: {:?}\n", case, e),
    }
}
