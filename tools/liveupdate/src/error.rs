// SPDX-License-Identifier: GPL-2.0
//! Errors that say what went wrong for the call that failed.

use rustix::io::Errno;
use std::fmt;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Opening `/dev/liveupdate`.
    Open,
    /// `LIVEUPDATE_IOCTL_CREATE_SESSION`.
    CreateSession,
    /// `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`.
    RetrieveSession,
    /// `LIVEUPDATE_SESSION_PRESERVE_FD`.
    Preserve,
    /// `LIVEUPDATE_SESSION_RETRIEVE_FD`.
    Retrieve,
    /// `LIVEUPDATE_SESSION_FINISH`.
    Finish,
    /// `LIVEUPDATE_SESSION_GET_NAME`.
    GetName,
    /// `LIVEUPDATE_SESSION_UNPRESERVE_FD`.
    Unpreserve,
    /// Reading or writing a manifest of named fds.
    Manifest,
}

/// What an error means, for the operation that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `/dev/liveupdate` does not exist: LUO is not built in or is disabled (`liveupdate=on`
    /// missing from the command line, or KHO off).
    NotAvailable,
    /// Another process has `/dev/liveupdate` open (it allows one opener at a time).
    Busy,
    /// The session name is empty, longer than 63 bytes or contains a NUL.
    InvalidName,
    /// A session with this name exists already.
    SessionExists,
    /// No incoming session has this name (or this boot was not a live update).
    SessionNotFound,
    /// The incoming session was retrieved already.
    AlreadyRetrieved,
    /// The token is used by another file in this session.
    TokenInUse,
    /// This file (the same object, e.g. the same memfd inode) is preserved already, in this
    /// or another session.
    AlreadyPreserved,
    /// No file handler can preserve this file (e.g. not a memfd, a hugetlb memfd), or the file
    /// has a property the handler cannot carry over (e.g. an unknown seal).
    Unsupported,
    /// No preserved file has this token in the session (or the session was finished).
    TokenNotFound,
    /// An IO address space of the iommufd maps memory that is not a file (user memory mapped
    /// with `IOMMU_IOAS_MAP`, a dma-buf), which cannot outlive the process.
    NotFileBacked,
    /// A file of the session is still in use, so the session cannot be finished yet.
    NotFinished,
    /// Another preserved file of the session depends on this one (an iommufd on a memfd it
    /// maps): unpreserve that file first.
    DependedUpon,
    /// The running kernel does not have this operation (Linux 7.3 has no
    /// `LIVEUPDATE_SESSION_UNPRESERVE_FD`).
    NotSupportedByKernel,
    /// The manifest of named fds is missing, malformed or of an unknown version.
    BadManifest,
    /// Any other error; see [`Error::errno`].
    Other,
}

/// An error of this crate: the operation, what it means, and the raw errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    op: Op,
    kind: ErrorKind,
    errno: Option<Errno>,
    detail: Option<String>,
}

impl Error {
    /// Classify the errno `e` returned by `op`.
    pub fn from_errno(op: Op, e: Errno) -> Self {
        use ErrorKind::*;
        let kind = match (op, e) {
            (Op::Open, Errno::NOENT | Errno::NODEV | Errno::NXIO) => NotAvailable,
            (Op::Open, Errno::BUSY) => Busy,
            (Op::CreateSession, Errno::INVAL) => InvalidName,
            (Op::CreateSession, Errno::EXIST) => SessionExists,
            (Op::RetrieveSession, Errno::NOENT) => SessionNotFound,
            (Op::RetrieveSession, Errno::INVAL) => AlreadyRetrieved,
            (Op::Preserve, Errno::EXIST) => TokenInUse,
            (Op::Preserve, Errno::BUSY) => AlreadyPreserved,
            (Op::Preserve, Errno::NOENT | Errno::OPNOTSUPP) => Unsupported,
            (Op::Preserve, Errno::XDEV) => NotFileBacked,
            (Op::Retrieve, Errno::NOENT) => TokenNotFound,
            (Op::Finish, Errno::BUSY) => NotFinished,
            (Op::Unpreserve, Errno::NOENT) => TokenNotFound,
            (Op::Unpreserve, Errno::BUSY) => DependedUpon,
            // The crate sends no reserved bytes and only outgoing sessions unpreserve, so
            // EINVAL is a 7.3 kernel's unknown command; ENOTTY an unknown command of a kernel
            // with the Rust core built before the ioctl existed.
            (Op::Unpreserve, Errno::INVAL | Errno::NOTTY) => NotSupportedByKernel,
            _ => Other,
        };
        Self {
            op,
            kind,
            errno: Some(e),
            detail: None,
        }
    }

    pub(crate) fn new(op: Op, kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            op,
            kind,
            errno: None,
            detail: Some(detail.into()),
        }
    }

    pub(crate) fn with_op(mut self, op: Op) -> Self {
        self.op = op;
        self
    }

    /// What the error means.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The raw errno from the kernel, if the error came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        self.errno
    }

    /// The raw errno as a positive number (e.g. 17 for `EEXIST`), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno.map(|e| e.raw_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        let what = match self.kind {
            NotAvailable => {
                "/dev/liveupdate is not available (is the kernel booted with liveupdate=on?)"
            }
            Busy => "/dev/liveupdate is open in another process",
            InvalidName => "invalid session name (1 to 63 bytes, no NUL)",
            SessionExists => "a session with this name exists already",
            SessionNotFound => "no incoming session with this name",
            AlreadyRetrieved => "the session was retrieved already",
            TokenInUse => "the token is already used in this session",
            AlreadyPreserved => "this file is already preserved (in this or another session)",
            Unsupported => "no handler can preserve this file, or it holds what cannot be carried",
            TokenNotFound => "no preserved file with this token in the session",
            NotFileBacked => "the iommufd maps memory that is not a file; map memfds only",
            NotFinished => "a file of the session is still in use; the session cannot finish yet",
            DependedUpon => "another preserved file depends on this one; unpreserve it first",
            NotSupportedByKernel => "the running kernel does not support this operation",
            BadManifest => "the manifest of named fds is missing or malformed",
            Other => "the kernel refused the request",
        };
        write!(f, "{:?}: {what}", self.op)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(e) = self.errno {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e.errno {
            Some(errno) => std::io::Error::new(std::io::Error::from(errno).kind(), e),
            None => std::io::Error::other(e),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
