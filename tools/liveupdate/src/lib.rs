// SPDX-License-Identifier: GPL-2.0
//! Safe Rust API for Linux's Live Update Orchestrator (LUO).
//!
//! A VMM agent keeps guest memory in memfds. Before a kernel live update it opens
//! `/dev/liveupdate`, creates a named session, preserves each fd under a `u64` token and keeps
//! the session fd open while the host kexecs. In the new kernel it retrieves the session by name
//! and each fd by token, then finishes the session.
//!
//! ```no_run
//! use liveupdate::{Device, Token};
//! # fn main() -> liveupdate::Result<()> {
//! // Before the update.
//! let dev = Device::open()?;
//! let session = dev.create_session("vm-42")?;
//! let ram = rustix::fs::memfd_create("guest-ram", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
//! session.preserve(&ram, Token(1))?;
//! // ... keep `session` open, kexec ...
//!
//! // After the update, in the new kernel.
//! let dev = Device::open()?;
//! let session = dev.retrieve_session("vm-42")?;
//! let ram = session.retrieve(Token(1))?;
//! session.finish()?;
//! # Ok(()) }
//! ```
//!
//! The types follow the kernel's rules: an [`OutgoingSession`] can only preserve, an
//! [`IncomingSession`] can only retrieve and finish. Dropping an outgoing session closes its fd,
//! and the kernel then unpreserves everything in it. Errors carry the operation, what the errno
//! means for it ([`ErrorKind`]) and the raw errno. [`named`] adds fds preserved by name with a
//! manifest, since the kernel cannot list a session's tokens after the update.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod holder;
pub mod iommufd;
pub mod memfd;
pub mod named;
// The crate's only unsafe code: the ioctl calls, adopting returned fds, mmap.
#[allow(missing_docs, unsafe_code)]
pub mod sys;

pub use error::{Error, ErrorKind, Op, Result};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::fmt;
use std::path::Path;

/// The default path of the LUO device.
pub const DEVICE_PATH: &str = "/dev/liveupdate";

/// The token a file is preserved under, unique within its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A validated session name: 1 to 63 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionName(String);

impl SessionName {
    /// Check `name` against the kernel's rules (`LIVEUPDATE_SESSION_NAME_LENGTH`).
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() >= sys::SESSION_NAME_LENGTH || name.contains('\0') {
            return Err(Error::new(
                Op::CreateSession,
                ErrorKind::InvalidName,
                format!("{name:?} ({} bytes)", name.len()),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn to_c(&self) -> [u8; sys::SESSION_NAME_LENGTH] {
        let mut buf = [0u8; sys::SESSION_NAME_LENGTH];
        buf[..self.0.len()].copy_from_slice(self.0.as_bytes());
        buf
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn name_from_c(buf: &[u8; sys::SESSION_NAME_LENGTH]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Issue a LUO ioctl; a failure is classified for `op`.
fn ioctl<const OPCODE: rustix::ioctl::Opcode, T: sys::Arg>(
    fd: BorrowedFd<'_>,
    op: Op,
    arg: &mut T,
) -> Result<()> {
    sys::call::<OPCODE, T>(fd, arg).map_err(|e| Error::from_errno(op, e))
}

fn adopt_fd(fd: i32, op: Op) -> Result<OwnedFd> {
    sys::adopt_fd(fd)
        .ok_or_else(|| Error::new(op, ErrorKind::Other, format!("kernel returned fd {fd}")))
}

/// An open `/dev/liveupdate`. Only one process may hold it open at a time.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Open [`DEVICE_PATH`].
    pub fn open() -> Result<Self> {
        Self::open_path(DEVICE_PATH)
    }

    /// Open the LUO device at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let fd = rustix::fs::open(path.as_ref(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::from_errno(Op::Open, e))?;
        Ok(Self { fd })
    }

    /// Create an outgoing session named `name`.
    pub fn create_session(&self, name: &str) -> Result<OutgoingSession> {
        let name = SessionName::new(name)?;
        let mut arg = <sys::SessionArg as sys::Arg>::new();
        arg.name = name.to_c();
        ioctl::<{ sys::CREATE_SESSION }, _>(self.fd.as_fd(), Op::CreateSession, &mut arg)?;
        Ok(OutgoingSession {
            fd: adopt_fd(arg.fd, Op::CreateSession)?,
            name,
        })
    }

    /// Retrieve the incoming session `name`, preserved by the previous kernel.
    pub fn retrieve_session(&self, name: &str) -> Result<IncomingSession> {
        let name = SessionName::new(name).map_err(|e| e.with_op(Op::RetrieveSession))?;
        let mut arg = <sys::SessionArg as sys::Arg>::new();
        arg.name = name.to_c();
        ioctl::<{ sys::RETRIEVE_SESSION }, _>(self.fd.as_fd(), Op::RetrieveSession, &mut arg)?;
        Ok(IncomingSession {
            fd: adopt_fd(arg.fd, Op::RetrieveSession)?,
            name,
        })
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A session being prepared for the next kernel.
///
/// Keep it (or a duplicate of its fd, e.g. passed to a holder process) open until the kexec:
/// when the last fd of an outgoing session is closed, the kernel unpreserves all its files.
#[derive(Debug)]
pub struct OutgoingSession {
    fd: OwnedFd,
    name: SessionName,
}

impl OutgoingSession {
    /// Preserve `file` under `token`.
    ///
    /// The kernel keeps a reference to the file; the caller may close its own fd. A memfd's size
    /// is frozen while it is preserved (writes inside it keep working).
    pub fn preserve(&self, file: impl AsFd, token: Token) -> Result<()> {
        let mut arg = <sys::FdArg as sys::Arg>::new();
        arg.fd = rustix::fd::AsRawFd::as_raw_fd(&file.as_fd());
        arg.token = token.0;
        ioctl::<{ sys::PRESERVE_FD }, _>(self.fd.as_fd(), Op::Preserve, &mut arg)
    }

    /// Unpreserve the file preserved under `token`, before the kexec: the kernel releases it
    /// as if the session had been closed, and the token can be used again.
    ///
    /// Fails with [`ErrorKind::DependedUpon`] while another preserved file depends on it, and
    /// with [`ErrorKind::NotSupportedByKernel`] on a kernel without the operation.
    pub fn unpreserve(&self, token: Token) -> Result<()> {
        let mut arg = <sys::UnpreserveArg as sys::Arg>::new();
        arg.token = token.0;
        ioctl::<{ sys::UNPRESERVE_FD }, _>(self.fd.as_fd(), Op::Unpreserve, &mut arg)
    }

    /// Give up the typed wrapper and keep the fd (e.g. to send it to a holder process).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// A session preserved by the previous kernel.
///
/// Closing it finishes it: files never retrieved are released.
#[derive(Debug)]
pub struct IncomingSession {
    fd: OwnedFd,
    name: SessionName,
}

impl IncomingSession {
    /// Retrieve the file preserved under `token`; the new fd is close-on-exec.
    ///
    /// A file can be retrieved more than once (each call returns a new fd to the same file); a
    /// failed retrieval fails the same way every time.
    pub fn retrieve(&self, token: Token) -> Result<OwnedFd> {
        let mut arg = <sys::FdArg as sys::Arg>::new();
        arg.token = token.0;
        ioctl::<{ sys::RETRIEVE_FD }, _>(self.fd.as_fd(), Op::Retrieve, &mut arg)?;
        adopt_fd(arg.fd, Op::Retrieve)
    }

    /// Finish the session: the kernel releases what was not retrieved. Idempotent.
    pub fn finish(&self) -> Result<()> {
        let mut arg = <sys::FinishArg as sys::Arg>::new();
        ioctl::<{ sys::FINISH }, _>(self.fd.as_fd(), Op::Finish, &mut arg)
    }
}

/// What outgoing and incoming sessions have in common.
macro_rules! session_common {
    ($t:ident) => {
        impl $t {
            /// The session's name as the kernel reports it (`LIVEUPDATE_SESSION_GET_NAME`).
            pub fn kernel_name(&self) -> Result<String> {
                let mut arg = <sys::GetNameArg as sys::Arg>::new();
                ioctl::<{ sys::GET_NAME }, _>(self.fd.as_fd(), Op::GetName, &mut arg)?;
                Ok(name_from_c(&arg.name))
            }

            /// The name the session was created or retrieved with.
            pub fn name(&self) -> &SessionName {
                &self.name
            }
        }

        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }
    };
}
session_common!(OutgoingSession);
session_common!(IncomingSession);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(SessionName::new("vm-42").is_ok());
        assert!(SessionName::new(&"x".repeat(63)).is_ok());
        for bad in ["", "a\0b"] {
            assert_eq!(
                SessionName::new(bad).unwrap_err().kind(),
                ErrorKind::InvalidName
            );
        }
        assert_eq!(
            SessionName::new(&"x".repeat(64)).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        let n = SessionName::new("abc").unwrap();
        assert_eq!(&n.to_c()[..4], b"abc\0");
        assert_eq!(name_from_c(&n.to_c()), "abc");
    }

    #[test]
    fn error_kinds_depend_on_the_call() {
        use rustix::io::Errno;
        let k = |op, e| Error::from_errno(op, e).kind();
        assert_eq!(k(Op::Preserve, Errno::EXIST), ErrorKind::TokenInUse);
        assert_eq!(k(Op::CreateSession, Errno::EXIST), ErrorKind::SessionExists);
        assert_eq!(k(Op::Preserve, Errno::BUSY), ErrorKind::AlreadyPreserved);
        assert_eq!(k(Op::Open, Errno::BUSY), ErrorKind::Busy);
        assert_eq!(k(Op::Finish, Errno::BUSY), ErrorKind::NotFinished);
        assert_eq!(k(Op::Preserve, Errno::NOENT), ErrorKind::Unsupported);
        assert_eq!(k(Op::Unpreserve, Errno::BUSY), ErrorKind::DependedUpon);
        assert_eq!(k(Op::Unpreserve, Errno::NOENT), ErrorKind::TokenNotFound);
        assert_eq!(
            k(Op::Unpreserve, Errno::INVAL),
            ErrorKind::NotSupportedByKernel
        );
        assert_eq!(
            k(Op::Unpreserve, Errno::NOTTY),
            ErrorKind::NotSupportedByKernel
        );
        assert_eq!(k(Op::Unpreserve, Errno::NOMEM), ErrorKind::Other);
        assert_eq!(k(Op::Retrieve, Errno::NOENT), ErrorKind::TokenNotFound);
        assert_eq!(
            k(Op::RetrieveSession, Errno::NOENT),
            ErrorKind::SessionNotFound
        );
        assert_eq!(
            k(Op::RetrieveSession, Errno::INVAL),
            ErrorKind::AlreadyRetrieved
        );
        let e = Error::from_errno(Op::Preserve, Errno::NOMEM);
        assert_eq!(e.kind(), ErrorKind::Other);
        assert_eq!(e.raw_os_error(), Some(12));
        assert!(e.to_string().starts_with("Preserve: "));
    }

    #[test]
    fn opcodes_match_the_header() {
        assert_eq!(sys::CREATE_SESSION, 0xba00);
        assert_eq!(sys::RETRIEVE_SESSION, 0xba01);
        assert_eq!(sys::PRESERVE_FD, 0xba40);
        assert_eq!(sys::RETRIEVE_FD, 0xba41);
        assert_eq!(sys::FINISH, 0xba42);
        assert_eq!(sys::GET_NAME, 0xba43);
    }
}
