// SPDX-License-Identifier: GPL-2.0
//! The kernel ABI of `include/uapi/linux/liveupdate.h`, and the crate's only `unsafe` code.
//!
//! Every struct begins with `size`, which userspace sets to the size of the struct it was built
//! with. The kernel accepts any `size` at least as large as the first version of the struct,
//! requires bytes it does not know to be zero (else `E2BIG`), and writes back at most
//! `min(size, its own size)` bytes. Our structs are the first version, so `size` is always
//! `size_of::<T>()`: a newer kernel sees a valid old struct, an older one cannot exist (these are
//! the first). Layouts are checked against the C header by `tests/abi.rs`.

use rustix::fd::{AsFd, BorrowedFd};
use rustix::io;
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};

/// `LIVEUPDATE_IOCTL_TYPE`.
pub const IOCTL_TYPE: u8 = 0xBA;
/// `LIVEUPDATE_SESSION_NAME_LENGTH`: bytes of a session name including its NUL.
pub const SESSION_NAME_LENGTH: usize = 64;

/// `LIVEUPDATE_IOCTL_CREATE_SESSION`.
pub const CREATE_SESSION: Opcode = opcode::none(IOCTL_TYPE, 0x00);
/// `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`.
pub const RETRIEVE_SESSION: Opcode = opcode::none(IOCTL_TYPE, 0x01);
/// `LIVEUPDATE_SESSION_PRESERVE_FD`.
pub const PRESERVE_FD: Opcode = opcode::none(IOCTL_TYPE, 0x40);
/// `LIVEUPDATE_SESSION_RETRIEVE_FD`.
pub const RETRIEVE_FD: Opcode = opcode::none(IOCTL_TYPE, 0x41);
/// `LIVEUPDATE_SESSION_FINISH`.
pub const FINISH: Opcode = opcode::none(IOCTL_TYPE, 0x42);
/// `LIVEUPDATE_SESSION_GET_NAME`.
pub const GET_NAME: Opcode = opcode::none(IOCTL_TYPE, 0x43);
/// `LIVEUPDATE_SESSION_UNPRESERVE_FD` (not in Linux 7.3, whose kernels fail it with `EINVAL`).
pub const UNPRESERVE_FD: Opcode = opcode::none(IOCTL_TYPE, 0x44);

/// `struct liveupdate_ioctl_create_session` and `struct liveupdate_ioctl_retrieve_session`
/// (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SessionArg {
    pub size: u32,
    pub fd: i32,
    pub name: [u8; SESSION_NAME_LENGTH],
}

/// `struct liveupdate_session_preserve_fd` and `struct liveupdate_session_retrieve_fd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FdArg {
    pub size: u32,
    pub fd: i32,
    /// `__aligned_u64`: 8-byte aligned on every architecture.
    pub token: u64,
}

/// `struct liveupdate_session_finish`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FinishArg {
    pub size: u32,
    pub reserved: u32,
}

/// `struct liveupdate_session_get_name`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GetNameArg {
    pub size: u32,
    pub reserved: u32,
    pub name: [u8; SESSION_NAME_LENGTH],
}

/// `struct liveupdate_session_unpreserve_fd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnpreserveArg {
    pub size: u32,
    pub reserved: u32,
    /// `__aligned_u64`: 8-byte aligned on every architecture.
    pub token: u64,
}

const _: () = assert!(std::mem::size_of::<SessionArg>() == 72);
const _: () = assert!(std::mem::size_of::<FdArg>() == 16);
const _: () = assert!(std::mem::align_of::<FdArg>() == 8);
const _: () = assert!(std::mem::size_of::<FinishArg>() == 8);
const _: () = assert!(std::mem::size_of::<GetNameArg>() == 72);
const _: () = assert!(std::mem::size_of::<UnpreserveArg>() == 16);
const _: () = assert!(std::mem::align_of::<UnpreserveArg>() == 8);

/// A LUO argument struct: plain old data whose first field is `size`.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, contain only integers and integer arrays (every bit pattern is
/// valid, so the kernel may write any bytes into them), and have a `u32 size` first field.
pub unsafe trait Arg: Copy {
    /// A value with `size` set and every other field zero.
    fn new() -> Self;
}

macro_rules! arg {
    ($t:ty, { $($f:ident: $v:expr),* }) => {
        // SAFETY: `$t` is `#[repr(C)]`, made of integers only, and begins with `size: u32`.
        unsafe impl Arg for $t {
            fn new() -> Self {
                Self { size: std::mem::size_of::<Self>() as u32, $($f: $v),* }
            }
        }
    };
}
arg!(SessionArg, { fd: 0, name: [0; SESSION_NAME_LENGTH] });
arg!(FdArg, { fd: 0, token: 0 });
arg!(FinishArg, { reserved: 0 });
arg!(GetNameArg, { reserved: 0, name: [0; SESSION_NAME_LENGTH] });
arg!(UnpreserveArg, { reserved: 0, token: 0 });

/// Issue LUO ioctl `OPCODE` on `fd` with `arg`, which the kernel reads and may update.
///
/// Crate-private: the kernel writes back the struct of `OPCODE`, so `T` must be that struct.
/// The callers in `lib.rs` pair each command with its struct as the uapi header does (and
/// `tests/abi.rs` checks those structs against the header).
pub(crate) fn call<const OPCODE: Opcode, T: Arg>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
) -> io::Result<()> {
    // SAFETY: `OPCODE` is one of the LUO commands above and `T` is the struct the header
    // gives it (see the function's documentation), so the kernel reads and writes at most
    // `size_of::<T>()` bytes; `T: Arg` guarantees that any bytes it writes form a valid `T`;
    // `arg` lives for the whole call.
    unsafe { ioctl(fd, Updater::<OPCODE, T>::new(arg)) }
}

/// Issue an ioctl with an arbitrary command number and raw argument bytes.
///
/// For tests of the kernel's error paths (wrong command numbers, sizes, reserved bytes). The
/// bytes are copied into a zero-filled buffer of at least one page, which is what the kernel
/// sees and what is returned: the kernel writes back at most the size of its own struct.
pub fn call_raw(fd: impl AsFd, cmd: Opcode, bytes: &[u8]) -> io::Result<Vec<u8>> {
    struct Raw<'a>(&'a mut [u8], Opcode);
    // SAFETY: `as_ptr` returns a pointer to a live, writable byte buffer of at least 4096
    // bytes, more than any LUO struct the kernel writes back; no output is reinterpreted.
    unsafe impl rustix::ioctl::Ioctl for Raw<'_> {
        type Output = ();
        const IS_MUTATING: bool = true;
        fn opcode(&self) -> Opcode {
            self.1
        }
        fn as_ptr(&mut self) -> *mut std::ffi::c_void {
            self.0.as_mut_ptr().cast()
        }
        unsafe fn output_from_ptr(
            _: rustix::ioctl::IoctlOutput,
            _: *mut std::ffi::c_void,
        ) -> io::Result<()> {
            Ok(())
        }
    }
    let mut buf = vec![0u8; bytes.len().max(4096)];
    buf[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: see the impl above; `buf` outlives the call.
    unsafe { ioctl(fd, Raw(&mut buf, cmd)) }?;
    Ok(buf)
}

/// Take ownership of an fd the kernel returned in an ioctl reply.
pub(crate) fn adopt_fd(fd: i32) -> Option<rustix::fd::OwnedFd> {
    use rustix::fd::FromRawFd;
    if fd < 0 {
        return None;
    }
    // SAFETY: called only on the `fd` field of a successful CREATE_SESSION, RETRIEVE_SESSION
    // or RETRIEVE_FD reply: the kernel installed that fd in our table for us, nothing else
    // owns it.
    Some(unsafe { rustix::fd::OwnedFd::from_raw_fd(fd) })
}

/// A shared mapping of a whole file, unmapped on drop.
pub(crate) struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    /// Map `len` bytes of `fd`, writable if `write`. `len` must not be 0.
    pub(crate) fn new(fd: impl AsFd, len: usize, write: bool) -> io::Result<Self> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        let prot = if write {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh shared mapping placed by the kernel (null hint) overlaps no Rust
        // object; it is only accessed through `words`/`words_mut` while `self` lives.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
        Ok(Self { ptr, len })
    }

    /// The mapping as 8-byte words (a trailing partial word is left out).
    pub(crate) fn words(&self) -> &[u64] {
        // SAFETY: the mapping is `len` bytes, page aligned (so aligned for u64) and readable,
        // and lives as long as `self`. Other processes may change the bytes, but every bit
        // pattern is a valid u64.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u64>(), self.len / 8) }
    }

    /// The mapping as mutable 8-byte words.
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `words`; callers map with `write` before writing (a write to a
        // read-only mapping faults, it is not undefined behaviour), and `&mut self` makes this
        // the only slice over the mapping in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), self.len / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is a mapping made by `new`; no slice over it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}
