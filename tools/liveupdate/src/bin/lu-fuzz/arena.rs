// SPDX-License-Identifier: GPL-2.0
//! Argument memory of one fuzzing thread, and the raw ioctl: the fuzzer's only unsafe code.
//!
//! Each thread owns three pages: a read-write one (page 0), a `PROT_NONE` guard right after it
//! (page 1) and a read-only one (page 2). An argument is placed in the read-write page, in the
//! read-only page, straddling the end of the read-write page into the guard, or the pointer is
//! not ours at all (NULL, a low address, a kernel or non-canonical address, the guard).

use rustix::fd::BorrowedFd;
use rustix::io::{self, Errno};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};
use rustix::mm::{mmap_anonymous, mprotect, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;

pub const PAGE: usize = 4096;

/// Where an argument goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the read-write page at this offset (the bytes are cut at the page end).
    Rw(usize),
    /// In the read-only page at this offset.
    ReadOnly(usize),
    /// The first `k` bytes at the end of the read-write page, the rest in the guard.
    Straddle(usize),
    /// A pointer the kernel must refuse (nothing is written).
    Bad(u64),
}

impl Place {
    /// Whether the whole argument of `len` bytes is readable by the kernel.
    pub fn readable(self, len: usize) -> bool {
        match self {
            Place::Rw(off) | Place::ReadOnly(off) => off + len <= PAGE,
            Place::Straddle(k) => len <= k,
            Place::Bad(_) => false,
        }
    }

    /// Whether the kernel can read the 4-byte `size` field.
    pub fn size_readable(self) -> bool {
        self.readable(4)
    }

    pub fn label(self) -> String {
        match self {
            Place::Rw(off) => format!("rw+{off}"),
            Place::ReadOnly(off) => format!("ro+{off}"),
            Place::Straddle(k) => format!("straddle{k}"),
            Place::Bad(a) => format!("bad:{a:#x}"),
        }
    }
}

/// Addresses no ioctl may accept: NULL, the zero page, kernel and non-canonical addresses.
pub const BAD_ADDRESSES: [u64; 6] = [
    0,
    0x10,
    0xffff_8000_0000_0000,
    0xffff_ffff_ffff_f000,
    0x8000_0000_0000_0000,
    u64::MAX - 3,
];

pub struct Arena {
    base: *mut u8,
}

// SAFETY: the arena is plain memory owned by one thread at a time; the raw pointer is only
// dereferenced through `&mut self`.
unsafe impl Send for Arena {}

impl Arena {
    pub fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping placed by the kernel overlaps no Rust object.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                3 * PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )?
        };
        let a = Self { base: base.cast() };
        a.protect(1, MprotectFlags::empty())?;
        a.protect(2, MprotectFlags::READ)?;
        Ok(a)
    }

    fn page(&self, n: usize) -> *mut u8 {
        self.base.wrapping_add(n * PAGE)
    }

    fn protect(&self, n: usize, flags: MprotectFlags) -> io::Result<()> {
        // SAFETY: page `n` is part of our own mapping; no Rust reference points into it.
        unsafe { mprotect(self.page(n).cast::<c_void>(), PAGE, flags) }
    }

    /// The address of the guard page (never readable).
    pub fn guard(&self) -> u64 {
        self.page(1) as u64
    }

    /// Put `bytes` at `place` and return the address to pass to the kernel.
    pub fn place(&mut self, place: Place, bytes: &[u8]) -> u64 {
        let copy = |dst: *mut u8, room: usize| {
            let n = bytes.len().min(room);
            // SAFETY: `dst..dst + n` lies in a writable page of our mapping.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n) };
        };
        match place {
            Place::Rw(off) => {
                copy(self.page(0).wrapping_add(off), PAGE - off);
                self.page(0) as u64 + off as u64
            }
            Place::ReadOnly(off) => {
                // The page is made writable only while we fill it (this thread's page).
                if self
                    .protect(2, MprotectFlags::READ | MprotectFlags::WRITE)
                    .is_ok()
                {
                    copy(self.page(2).wrapping_add(off), PAGE - off);
                    let _ = self.protect(2, MprotectFlags::READ);
                }
                self.page(2) as u64 + off as u64
            }
            Place::Straddle(k) => {
                let at = self.page(1).wrapping_sub(k);
                copy(at, k);
                at as u64
            }
            Place::Bad(a) => a,
        }
    }

    /// `len` bytes at offset `off` of the read-write page, as the kernel left them.
    pub fn read_rw(&self, off: usize, len: usize) -> Vec<u8> {
        let len = len.min(PAGE - off);
        let mut v = vec![0; len];
        // SAFETY: the range lies in our read-write page; no other thread uses this arena.
        unsafe { std::ptr::copy_nonoverlapping(self.page(0).add(off), v.as_mut_ptr(), len) };
        v
    }
}

/// `ioctl(fd, cmd, arg)` with an arbitrary command number and argument address.
pub fn ioctl_raw(fd: BorrowedFd<'_>, cmd: Opcode, arg: u64) -> Result<(), Errno> {
    struct Raw(Opcode, u64);
    // SAFETY: the address is either in an `Arena` (memory we own, any bytes valid) or one the
    // kernel refuses; nothing is read back through it here.
    unsafe impl Ioctl for Raw {
        type Output = ();
        const IS_MUTATING: bool = true;
        fn opcode(&self) -> Opcode {
            self.0
        }
        fn as_ptr(&mut self) -> *mut c_void {
            self.1 as usize as *mut c_void
        }
        unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> io::Result<()> {
            Ok(())
        }
    }
    // SAFETY: see the impl above.
    unsafe { rustix::ioctl::ioctl(fd, Raw(cmd, arg)) }
}

/// `ioctl` on a raw fd number that another thread may close (or reuse) at any moment.
pub fn ioctl_raw_number(fd: i32, cmd: Opcode, arg: u64) -> Result<(), Errno> {
    // SAFETY: the borrow lasts only for the syscall; if the number was closed meanwhile, the
    // kernel fails with EBADF or acts on whatever fd of ours now has the number, which is
    // what the fuzzer wants. Rust never reads through it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    ioctl_raw(fd, cmd, arg)
}

/// Close a raw fd number that this thread took sole ownership of (see `Racy`).
pub fn close_raw(fd: i32) {
    use rustix::fd::{FromRawFd, OwnedFd};
    // SAFETY: the caller swapped the number out of its slot, so nothing else closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
