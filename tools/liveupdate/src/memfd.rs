// SPDX-License-Identifier: GPL-2.0
//! memfd helpers for agents and tests: create, fill with a checkable pattern, verify.
//!
//! The pattern gives each 8-byte word a value derived from its byte offset and a seed, so a
//! word that moved, was lost or was zeroed is detected, and verifying every word checks every
//! byte.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{fstat, ftruncate, memfd_create, MemfdFlags};
use rustix::io;

use crate::sys::Mapping;

/// The value of the 8-byte word at byte offset `off` for `seed`.
pub fn pattern(seed: u64, off: u64) -> u64 {
    let x = off.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed);
    x ^ (x >> 29)
}

/// Create a memfd of `size` bytes (close-on-exec, sealing allowed).
pub fn create(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    ftruncate(&fd, size)?;
    Ok(fd)
}

/// The size of a file in bytes.
pub fn size(fd: impl AsFd) -> io::Result<u64> {
    Ok(fstat(fd)?.st_size as u64)
}

fn len_of(fd: impl AsFd) -> io::Result<usize> {
    usize::try_from(size(fd)?).map_err(|_| io::Errno::FBIG)
}

/// Fill the whole file with the pattern for `seed`. The size must be a multiple of 8.
pub fn fill(fd: impl AsFd, seed: u64) -> io::Result<()> {
    let len = len_of(fd.as_fd())?;
    if len == 0 {
        return Ok(());
    }
    let mut m = Mapping::new(fd, len, true)?;
    for (i, w) in m.words_mut().iter_mut().enumerate() {
        *w = pattern(seed, i as u64 * 8);
    }
    Ok(())
}

/// The result of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Bytes checked.
    pub bytes: u64,
    /// 8-byte words that did not match.
    pub bad_words: u64,
    /// Byte offset of the first bad word.
    pub first_bad: Option<u64>,
}

/// Check every word of the file against the pattern for `seed`.
pub fn verify(fd: impl AsFd, seed: u64) -> io::Result<Verified> {
    let len = len_of(fd.as_fd())?;
    let mut v = Verified {
        bytes: len as u64,
        bad_words: 0,
        first_bad: None,
    };
    if len == 0 {
        return Ok(v);
    }
    let m = Mapping::new(fd, len, false)?;
    for (i, &w) in m.words().iter().enumerate() {
        let off = i as u64 * 8;
        if w != pattern(seed, off) {
            v.bad_words += 1;
            v.first_bad.get_or_insert(off);
        }
    }
    Ok(v)
}

/// Read the whole (small) file.
pub fn read_all(fd: impl AsFd) -> io::Result<Vec<u8>> {
    let len = len_of(fd.as_fd())?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(fd.as_fd(), &mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_verify() {
        let fd = create("t", 1 << 16).unwrap();
        fill(&fd, 7).unwrap();
        let v = verify(&fd, 7).unwrap();
        assert_eq!(
            v,
            Verified {
                bytes: 1 << 16,
                bad_words: 0,
                first_bad: None
            }
        );
        let v = verify(&fd, 8).unwrap();
        assert_eq!(v.bad_words, (1 << 16) / 8);
        rustix::io::pwrite(&fd, &[0xff], 4097).unwrap();
        let v = verify(&fd, 7).unwrap();
        assert_eq!((v.bad_words, v.first_bad), (1, Some(4096)));
    }

    #[test]
    fn pattern_depends_on_position_and_seed() {
        assert_ne!(pattern(1, 0), pattern(1, 8));
        assert_ne!(pattern(1, 0), pattern(2, 0));
        assert_eq!(pattern(0, 0), 0);
    }
}
