// SPDX-License-Identifier: GPL-2.0

//! Test-only corruption of the outgoing data (`CONFIG_LIVEUPDATE_CORRUPT_TEST`).
//!
//! With `luo_test_corrupt=N` on the command line, `liveupdate_reboot()` damages the data it just
//! wrote in one of these ways, so that the next kernel's validation can be tested. The next
//! kernel must boot, print one warning and keep `/dev/liveupdate` usable.

use crate::Luo;
use kernel::{
    liveupdate::abi::{
        self,
        BlockHeader,
        LuoSer,
        SessionSer, //
    },
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
};

static CASE: Atomic<i32> = Atomic::new(0);

/// Selects the corruption case; called by `luo_init.c` for `luo_test_corrupt=`.
///
/// # Safety
///
/// Any context may call it.
#[export]
pub(crate) unsafe extern "C" fn luo_test_set_corrupt(case: c_int) {
    CASE.store(case, Relaxed);
}

fn edit<T: FromBytes + AsBytes>(bytes: &mut [u8], off: usize, f: impl FnOnce(&mut T)) -> Result {
    let field = bytes.get_mut(off..off + size_of::<T>()).ok_or(EINVAL)?;
    let mut v = T::from_bytes_copy(field).ok_or(EINVAL)?;
    f(&mut v);
    field.copy_from_slice(v.as_bytes());
    Ok(())
}

fn corrupt(luo: &mut Luo, case: i32) -> Result<&'static str> {
    let header_off = size_of::<BlockHeader>();
    match case {
        1 => {
            let out = luo.out.as_mut().ok_or(EINVAL)?;
            edit::<LuoSer>(out.header.mem_mut().as_mut_slice(), 0, |h| {
                h.compatible = b"luo-v9\0\0".map(|b| c_char::from_ne_bytes([b]));
            })?;
            Ok("wrong compatible string")
        }
        2 => {
            let block = luo.session_blocks.first_mut().ok_or(EINVAL)?;
            let pa = block.phys();
            edit::<BlockHeader>(block.as_mut_slice(), 0, |h| h.next = pa)?;
            Ok("cycle in the session chain")
        }
        3 => {
            let block = luo.session_blocks.first_mut().ok_or(EINVAL)?;
            edit::<BlockHeader>(block.as_mut_slice(), 0, |h| {
                h.count = abi::entries_per_block(size_of::<SessionSer>()) as u64 + 1
            })?;
            Ok("block count beyond capacity")
        }
        4 => {
            let out = luo.out.as_mut().ok_or(EINVAL)?;
            edit::<LuoSer>(out.header.mem_mut().as_mut_slice(), 0, |h| {
                h.sessions_pa = 1 << 50
            })?;
            Ok("session chain outside RAM")
        }
        5 => {
            let block = luo.session_blocks.first_mut().ok_or(EINVAL)?;
            edit::<SessionSer>(block.as_mut_slice(), header_off, |s| {
                s.name = [c_char::from_ne_bytes([b'A']); 64];
            })?;
            Ok("unterminated session name")
        }
        6 => {
            let block = luo.session_blocks.first_mut().ok_or(EINVAL)?;
            edit::<SessionSer>(block.as_mut_slice(), header_off, |s| {
                s.file_set_ser.count += 1;
            })?;
            Ok("file count mismatch")
        }
        _ => Err(EINVAL),
    }
}

/// Applies the selected corruption, if any, to the serialized data.
pub(crate) fn apply(luo: &mut Luo) {
    let case = CASE.load(Relaxed);
    if case == 0 {
        return;
    }
    match corrupt(luo, case) {
        Ok(what) => pr_warn!(
            "test: corrupted the outgoing data: case {}, {}\n",
            case,
            what
        ),
        Err(e) => pr_err!("test: cannot apply corruption case {}: {:?}\n", case, e),
    }
}
