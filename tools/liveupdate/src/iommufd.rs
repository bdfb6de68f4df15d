// SPDX-License-Identifier: GPL-2.0
//! Preserving a VMM's iommufd with the memfds its IO address spaces map.
//!
//! A kernel with `CONFIG_IOMMUFD_LIVEUPDATE` (the `iommufd-ioas-v1` handler) carries the IO
//! address spaces (IOASes) of an iommufd across a live update: their object IDs, allowed IOVA
//! ranges and the areas mapped with `IOMMU_IOAS_MAP_FILE`, which must map memfds preserved
//! before the iommufd in the same session. Devices are not carried: after the kexec the VMM
//! binds its VFIO device cdev to the retrieved iommufd and attaches it to the IOAS ID it used
//! before. See the kernel's `Documentation/userspace-api/iommufd_liveupdate.rst`.
//!
//! ```no_run
//! use liveupdate::{iommufd, Device, Token};
//! use std::os::fd::AsFd;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let ram = liveupdate::memfd::create("guest-ram", 1 << 30)?;
//! # let iommu = std::fs::File::open("/dev/iommu")?;
//! // Before the kexec: guest RAM under token 1, the iommufd mapping it under token 2.
//! let dev = Device::open()?;
//! let session = dev.create_session("vmm")?;
//! iommufd::preserve_iommufd(&session, &[(Token(1), ram.as_fd())], &iommu, Token(2))?;
//!
//! // After it: the same IOAS IDs, mapping the same guest RAM.
//! let session = dev.retrieve_session("vmm")?;
//! let iommu = iommufd::retrieve_iommufd(&session, Token(2))?;
//! let ram = session.retrieve(Token(1))?;
//! # Ok(())
//! # }
//! ```

use crate::{Error, ErrorKind, IncomingSession, Op, OutgoingSession, Result, Token};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// What `/proc/self/fd/N` links to for an iommufd, opened or retrieved.
const IOMMUFD_LINKS: [&str; 2] = ["/dev/iommu", "anon_inode:[iommufd]"];

/// Preserves `iommufd` under `token` after each memfd of `memfds` under its token, in order:
/// the kernel wants every memfd the iommufd maps preserved before it, in the same session.
///
/// If a step fails, the files this call preserved are unpreserved again, newest first, so the
/// session is as it was; on a kernel without `LIVEUPDATE_SESSION_UNPRESERVE_FD` (Linux 7.3,
/// which has no iommufd handler either) they stay preserved until the session is closed. The
/// error is the failed step's: [`ErrorKind::NotFileBacked`] if an IOAS maps user memory or a
/// dma-buf, [`ErrorKind::Unsupported`] if the iommufd holds an object the kernel cannot carry,
/// maps a file not preserved in the session, or the kernel has no iommufd handler.
pub fn preserve_iommufd(
    session: &OutgoingSession,
    memfds: &[(Token, BorrowedFd<'_>)],
    iommufd: impl AsFd,
    token: Token,
) -> Result<()> {
    let mut done = Vec::with_capacity(memfds.len());
    let mut step = || -> Result<()> {
        for (t, fd) in memfds {
            session.preserve(fd, *t)?;
            done.push(*t);
        }
        session.preserve(iommufd.as_fd(), token)
    };
    let res = step();
    if res.is_err() {
        for t in done.iter().rev() {
            if session.unpreserve(*t).is_err() {
                break;
            }
        }
    }
    res
}

/// Retrieves the iommufd preserved under `token`; the memfds it maps are retrieved with it
/// (retrieve them by their tokens to get fds to them).
///
/// Fails with [`ErrorKind::Other`] if the file under `token` is not an iommufd.
pub fn retrieve_iommufd(session: &IncomingSession, token: Token) -> Result<OwnedFd> {
    let fd = session.retrieve(token)?;
    if !is_iommufd(&fd) {
        return Err(Error::new(
            Op::Retrieve,
            ErrorKind::Other,
            format!("the file preserved under token {token} is not an iommufd"),
        ));
    }
    Ok(fd)
}

/// Returns whether `fd` is an iommufd.
pub fn is_iommufd(fd: impl AsFd) -> bool {
    let path = format!(
        "/proc/self/fd/{}",
        rustix::fd::AsRawFd::as_raw_fd(&fd.as_fd())
    );
    std::fs::read_link(path)
        .map(|p| IOMMUFD_LINKS.iter().any(|l| p.as_os_str() == *l))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memfd_is_not_an_iommufd() {
        let fd = crate::memfd::create("not-iommu", 4096).unwrap();
        assert!(!is_iommufd(&fd));
    }

    #[test]
    fn exdev_is_not_file_backed() {
        let e = Error::from_errno(Op::Preserve, rustix::io::Errno::XDEV);
        assert_eq!(e.kind(), ErrorKind::NotFileBacked);
        assert_eq!(e.raw_os_error(), Some(18));
    }
}
