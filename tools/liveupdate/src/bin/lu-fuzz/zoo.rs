// SPDX-License-Identifier: GPL-2.0
//! The fds a fuzzed `PRESERVE_FD` is given: memfds of every flavor and every other kind of
//! file the fuzzer can open, plus numbers that are no fd at all.

use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{
    fcntl_add_seals, ftruncate, inotify, memfd_create, open, MemfdFlags, Mode, OFlags, SealFlags,
};
use rustix::io::{self, write};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};

use crate::rng::Rng;

/// The kinds of fd; the memfd kinds can be created afresh for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MemfdSmall,
    MemfdLarge,
    MemfdSealed,
    MemfdSealWrite,
    MemfdTruncated,
    MemfdSparse,
    MemfdHugetlb,
    MemfdNoexec,
    MemfdMapped,
    MemfdReadOnly,
    PipeRead,
    PipeWrite,
    Socket,
    EventFd,
    TimerFd,
    Inotify,
    Epoll,
    PidFd,
    DevNull,
    Directory,
    OPath,
    TmpfsFile,
    ProcFile,
    /// Numbers that are no open fd (or, racing with other threads, some new one).
    Closed,
    MinusOne,
    IntMax,
    Huge,
    /// From the shared pool: /dev/liveupdate, a session, a retrieved memfd.
    Device,
    Session,
    Retrieved,
}

pub const KINDS: [Kind; 30] = [
    Kind::MemfdSmall,
    Kind::MemfdLarge,
    Kind::MemfdSealed,
    Kind::MemfdSealWrite,
    Kind::MemfdTruncated,
    Kind::MemfdSparse,
    Kind::MemfdHugetlb,
    Kind::MemfdNoexec,
    Kind::MemfdMapped,
    Kind::MemfdReadOnly,
    Kind::PipeRead,
    Kind::PipeWrite,
    Kind::Socket,
    Kind::EventFd,
    Kind::TimerFd,
    Kind::Inotify,
    Kind::Epoll,
    Kind::PidFd,
    Kind::DevNull,
    Kind::Directory,
    Kind::OPath,
    Kind::TmpfsFile,
    Kind::ProcFile,
    Kind::Closed,
    Kind::MinusOne,
    Kind::IntMax,
    Kind::Huge,
    Kind::Device,
    Kind::Session,
    Kind::Retrieved,
];

impl Kind {
    /// A file the memfd handler may accept (success of PRESERVE_FD is plausible).
    pub fn may_preserve(self) -> bool {
        matches!(
            self,
            Kind::MemfdSmall
                | Kind::MemfdLarge
                | Kind::MemfdSealed
                | Kind::MemfdSealWrite
                | Kind::MemfdTruncated
                | Kind::MemfdSparse
                | Kind::MemfdHugetlb
                | Kind::MemfdNoexec
                | Kind::MemfdMapped
                | Kind::MemfdReadOnly
                | Kind::Retrieved
        )
    }

    /// Whether the fd number stays the same file for the whole run (zoo fds): only then can
    /// "this kind never succeeds" be checked.
    pub fn stable(self) -> bool {
        !matches!(
            self,
            Kind::Closed
                | Kind::MinusOne
                | Kind::IntMax
                | Kind::Huge
                | Kind::Device
                | Kind::Session
                | Kind::Retrieved
        )
    }
}

fn memfd(name: &str, flags: MemfdFlags, size: u64, written: usize) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, flags | MemfdFlags::CLOEXEC)?;
    ftruncate(&fd, size)?;
    let chunk = [0x5au8; 4096];
    let mut left = written;
    while left > 0 {
        let n = write(&fd, &chunk[..left.min(chunk.len())])?;
        left -= n;
    }
    Ok(fd)
}

/// A new memfd of a memfd kind (the kernel holds a preserved one, so each call can succeed).
pub fn fresh_memfd(kind: Kind, rng: &mut Rng) -> io::Result<OwnedFd> {
    let small = 4096 * (1 + rng.below(16));
    let allow = MemfdFlags::ALLOW_SEALING;
    match kind {
        Kind::MemfdSmall | Kind::MemfdMapped | Kind::MemfdReadOnly => {
            memfd("fz-small", allow, small, small as usize)
        }
        Kind::MemfdLarge => memfd("fz-large", allow, 2 << 20, 1 << 20),
        Kind::MemfdSealed => {
            let fd = memfd("fz-sealed", allow, small, 4096)?;
            fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
            Ok(fd)
        }
        Kind::MemfdSealWrite => {
            let fd = memfd("fz-seal-write", allow, small, 4096)?;
            fcntl_add_seals(&fd, SealFlags::WRITE)?;
            Ok(fd)
        }
        Kind::MemfdTruncated => {
            let fd = memfd("fz-trunc", allow, small, small as usize)?;
            ftruncate(&fd, 0)?;
            Ok(fd)
        }
        Kind::MemfdSparse => memfd("fz-sparse", allow, 16 << 20, 0),
        Kind::MemfdHugetlb => memfd("fz-huge", MemfdFlags::HUGETLB, 0, 0),
        Kind::MemfdNoexec => memfd("fz-noexec", MemfdFlags::NOEXEC_SEAL, small, 4096),
        _ => Err(io::Errno::INVAL),
    }
}

/// The process-wide fds of every stable kind, opened once (a kind the kernel refuses, e.g.
/// MFD_HUGETLB without huge pages, is left out).
pub struct Zoo {
    fds: Vec<(Kind, OwnedFd)>,
    /// Kept open so that the pipe and socket ends have a peer.
    _peers: Vec<OwnedFd>,
    pub closed: i32,
    /// Kinds this kernel could not make.
    pub missing: Vec<Kind>,
}

impl Zoo {
    pub fn new(dir: &str) -> io::Result<Self> {
        let mut rng = Rng::new(0x2005);
        let mut fds = Vec::new();
        let mut peers = Vec::new();
        let mut skipped = Vec::new();
        for k in KINDS
            .iter()
            .copied()
            .filter(|&k| k.may_preserve() && k != Kind::Retrieved)
        {
            match fresh_memfd(k, &mut rng) {
                Ok(fd) => fds.push((k, fd)),
                Err(_) => skipped.push(k),
            }
        }
        if let Some((_, fd)) = fds.iter().find(|(k, _)| *k == Kind::MemfdMapped) {
            // Mapped and written through the mapping; the mapping is never unmapped.
            liveupdate::memfd::fill(fd, 0x3a9)?;
        }
        if let Some(i) = fds.iter().position(|(k, _)| *k == Kind::MemfdReadOnly) {
            let path = format!("/proc/self/fd/{}", fds[i].1.as_raw_fd());
            fds[i].1 = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        }
        // Kinds the kernel's config lacks (ENOSYS) are left out and named in `missing`.
        let mut missing = skipped;
        let mut add = |kind: Kind, r: io::Result<OwnedFd>| match r {
            Ok(fd) => fds.push((kind, fd)),
            Err(_) => missing.push(kind),
        };
        match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok((r, w)) => {
                add(Kind::PipeRead, Ok(r));
                add(Kind::PipeWrite, Ok(w));
            }
            Err(e) => add(Kind::PipeRead, Err(e)),
        }
        let pair = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        );
        add(
            Kind::Socket,
            pair.map(|(a, b)| {
                peers.push(b);
                a
            }),
        );
        add(Kind::EventFd, eventfd(0, EventfdFlags::CLOEXEC));
        add(
            Kind::TimerFd,
            timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC),
        );
        add(Kind::Inotify, inotify::init(inotify::CreateFlags::CLOEXEC));
        add(Kind::Epoll, epoll::create(epoll::CreateFlags::CLOEXEC));
        let me = rustix::process::getpid();
        add(
            Kind::PidFd,
            rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()),
        );
        let ro = OFlags::RDONLY | OFlags::CLOEXEC;
        add(Kind::DevNull, open("/dev/null", ro, Mode::empty()));
        add(
            Kind::Directory,
            open(dir, ro | OFlags::DIRECTORY, Mode::empty()),
        );
        add(
            Kind::OPath,
            open(dir, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()),
        );
        let file = format!("{dir}/lu-fuzz.{}", me.as_raw_nonzero());
        let f = open(
            &file,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        // Left linked: an unlinked tmpfs file is a memfd in all but name, and preservable.
        write(&f, b"regular tmpfs file")?;
        fds.push((Kind::TmpfsFile, f));
        fds.push((
            Kind::ProcFile,
            open("/proc/self/status", ro, Mode::empty())?,
        ));
        // A number just closed: the lowest free one, which the next open will take.
        let closed = open("/dev/null", ro, Mode::empty())?.as_raw_fd();
        Ok(Self {
            fds,
            _peers: peers,
            closed,
            missing,
        })
    }

    /// How many kinds of fd this zoo has.
    pub fn kinds(&self) -> usize {
        self.fds.len()
    }

    /// The zoo's fd of `kind`, if it has one.
    pub fn raw(&self, kind: Kind) -> Option<i32> {
        self.fds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, fd)| fd.as_raw_fd())
    }

    /// The fd numbers of the kinds that are no fd.
    pub fn number(&self, kind: Kind) -> Option<i32> {
        match kind {
            Kind::Closed => Some(self.closed),
            Kind::MinusOne => Some(-1),
            Kind::IntMax => Some(i32::MAX),
            Kind::Huge => Some(1 << 20),
            _ => None,
        }
    }

    /// A non-LUO fd to aim an ioctl at (it must refuse every LUO command).
    pub fn foreign(&self, rng: &mut Rng) -> (Kind, i32) {
        let (k, fd) = rng.pick(&self.fds);
        (*k, fd.as_raw_fd())
    }
}
