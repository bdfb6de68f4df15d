// SPDX-License-Identifier: GPL-2.0

//! The segments `kexec_file_load()` adds for KHO, and where it may place the others.
//!
//! The next kernel gets the root FDT's address and a segment with the scratch list; every
//! segment of the image must be inside a scratch area, because the next kernel allocates from
//! scratch before it knows which memory is preserved.

use crate::{boot, fdt};
use kernel::{bindings, ffi::c_int, ffi::c_void, prelude::*};

/// `kho_fill_kimage()`: records the root FDT in `image` and adds the scratch list segment.
///
/// # Safety
///
/// `image` is a valid image being loaded, with the kexec lock held.
#[export]
pub(crate) unsafe extern "C" fn kho_fill_kimage(image: *mut bindings::kimage) -> c_int {
    // SAFETY: As guaranteed by the caller.
    let img = unsafe { &mut *image };
    if !crate::enabled() || img.type_() == bindings::KEXEC_TYPE_CRASH {
        return 0;
    }
    let Some(fdt_phys) = fdt::out_fdt().as_ref().map(|o| o.phys()) else {
        return 0;
    };
    img.kho.fdt = fdt_phys;

    let (list, size) = boot::scratch_list();
    let mut buf = bindings::kexec_buf {
        image,
        buffer: list.cast::<c_void>(),
        bufsz: size,
        mem: bindings::KEXEC_BUF_MEM_UNKNOWN as usize,
        memsz: size,
        // A 64 KiB alignment makes it easier to map.
        buf_align: 0x10000,
        buf_max: usize::MAX,
        top_down: true,
        ..Default::default()
    };
    // SAFETY: `buf` describes the scratch list, which lives as long as the kernel.
    let err = unsafe { bindings::kexec_add_buffer(&mut buf) };
    if err != 0 {
        return err;
    }
    // `kexec_add_buffer()` appended the segment.
    let Some(last) = img.nr_segments.checked_sub(1) else {
        return EINVAL.to_errno();
    };
    let Some(segment) = img.segment.get_mut(last) else {
        return EINVAL.to_errno();
    };
    img.kho.scratch = segment;
    0
}

/// `kho_locate_mem_hole()`: offers only the scratch areas to `func` for the segment `kbuf`.
///
/// Returns 1 if KHO does not restrict the placement, 0 if `func` placed the segment in a
/// scratch area, and `-EADDRNOTAVAIL` if none fits.
///
/// # Safety
///
/// `kbuf` is a valid buffer of an image being loaded; `func` accepts it.
#[export]
pub(crate) unsafe extern "C" fn kho_locate_mem_hole(
    kbuf: *mut bindings::kexec_buf,
    func: Option<unsafe extern "C" fn(*mut bindings::resource, *mut c_void) -> c_int>,
) -> c_int {
    // SAFETY: As guaranteed by the caller.
    let image = unsafe { (*kbuf).image };
    // SAFETY: As guaranteed by the caller, the image is valid.
    let crash = unsafe { (*image).type_() } == bindings::KEXEC_TYPE_CRASH;
    if !crate::enabled() || crash {
        return 1;
    }
    let Some(func) = func else {
        return EINVAL.to_errno();
    };
    for a in boot::scratch() {
        let mut res = bindings::resource {
            start: a.addr,
            end: a.addr + a.size - 1,
            ..Default::default()
        };
        // SAFETY: `res` is a valid resource for the call; `func` accepts `kbuf`.
        let ret = unsafe { func(&mut res, kbuf.cast()) };
        if ret != 0 {
            return if ret == 1 {
                0
            } else {
                EADDRNOTAVAIL.to_errno()
            };
        }
    }
    EADDRNOTAVAIL.to_errno()
}
