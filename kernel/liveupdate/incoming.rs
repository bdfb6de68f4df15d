// SPDX-License-Identifier: GPL-2.0

//! The previous kernel's data: found, validated and copied at early boot.
//!
//! The "LUO" KHO subtree names a [`abi::LuoSer`] header that points to the chain of serialized
//! sessions, each pointing to a chain of serialized files, and to the FLB page. All of it is
//! read here, once, into kernel memory, and the preserved pages that held it are freed. What
//! was written by another kernel is not trusted: if anything is malformed, the whole incoming
//! state is refused with one warning, its pages are freed as far as they can be reached safely,
//! and the kernel goes on as after a cold boot (`RETRIEVE_SESSION` then fails with `ENOENT`).
//! The C implementation panics instead.

use crate::block::{
    self,
    ChainError, //
};
use kernel::{
    alloc::AllocError,
    liveupdate::{
        abi::{
            self,
            FileSer,
            FlbHeader,
            FlbSer,
            LuoSer,
            SessionSer, //
        },
        kho::{
            self,
            PhysAddr,
            RestoredMem, //
        },
        SESSION_NAME_LENGTH,
    },
    prelude::*,
    transmute::FromBytes, //
};

/// A file of an incoming session, as the previous kernel described it.
pub(crate) struct FileEntry {
    /// The compatible string of its handler, NUL-padded.
    pub(crate) compatible: [u8; abi::HANDLER_COMPAT_LENGTH],
    /// The handler's handle to the file's serialized state.
    pub(crate) data: u64,
    /// The token userspace preserved the file under.
    pub(crate) token: u64,
}

/// An incoming session, as the previous kernel described it.
pub(crate) struct SessionEntry {
    /// The session's NUL-terminated name.
    pub(crate) name: [u8; SESSION_NAME_LENGTH],
    /// Its files, in preservation order.
    pub(crate) files: KVec<FileEntry>,
}

/// An FLB's incoming global state.
#[derive(Clone, Copy)]
pub(crate) struct FlbEntry {
    /// The FLB's compatible string, NUL-padded.
    pub(crate) compatible: [u8; abi::FLB_COMPAT_LENGTH],
    /// The FLB's handle to its serialized state.
    pub(crate) data: u64,
    /// How many preserved files depended on it.
    pub(crate) count: u64,
}

/// Everything the previous kernel handed over.
pub(crate) struct Data {
    /// The live update count of the previous kernel.
    pub(crate) liveupdate_num: u64,
    /// The sessions, in the previous kernel's creation order.
    pub(crate) sessions: KVec<SessionEntry>,
    /// The FLBs that had preserved files.
    pub(crate) flbs: KVec<FlbEntry>,
}

/// Why the incoming data was refused; printed in the one warning.
enum Corrupt {
    /// The subtree could not be looked up.
    Retrieve(Error),
    /// The subtree is smaller than its header.
    Small(usize),
    /// The header is not in memory the previous kernel preserved.
    Header(PhysAddr),
    /// The header has another compatible string.
    Compatible([u8; 8]),
    /// A chain of blocks is malformed.
    Chain(&'static str, ChainError),
    /// A session name fills its whole field without a terminating NUL.
    Unterminated(usize),
    /// Two sessions have the same name.
    Duplicate(usize),
    /// A compatible string fills its whole field without a terminating NUL.
    Compat(&'static str),
    /// A session's file chain holds another number of files than the session says.
    FileCount {
        session: usize,
        expected: u64,
        found: usize,
    },
    /// The FLB page is malformed.
    Flbs(u64),
    /// Out of memory while copying the data.
    NoMemory,
}

impl From<ChainError> for Corrupt {
    fn from(e: ChainError) -> Self {
        Self::Chain("", e)
    }
}

impl From<AllocError> for Corrupt {
    fn from(_: AllocError) -> Self {
        Self::NoMemory
    }
}

/// Writes `bytes` as text, escaping what is not printable ASCII.
fn write_bytes(f: &mut kernel::fmt::Formatter<'_>, bytes: &[u8]) -> kernel::fmt::Result {
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl kernel::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        match self {
            Self::Retrieve(e) => write!(f, "its KHO subtree cannot be read ({e:?})"),
            Self::Small(n) => write!(
                f,
                "its header is {n} bytes, less than {}",
                size_of::<LuoSer>()
            ),
            Self::Header(pa) => write!(f, "its header at {pa:#x} is not preserved memory"),
            Self::Compatible(c) => {
                write!(f, "its compatible string is \"")?;
                write_bytes(f, c_string(c).unwrap_or(c))?;
                write!(f, "\", not \"luo-v5\"")
            }
            Self::Chain(what, e) => {
                write!(f, "{what}: ")?;
                kernel::fmt::Display::fmt(e, f)
            }
            Self::Unterminated(i) => write!(f, "the name of session {i} is not NUL-terminated"),
            Self::Duplicate(i) => write!(f, "session {i} has the name of an earlier one"),
            Self::Compat(what) => write!(f, "a {what} compatible string is not NUL-terminated"),
            Self::FileCount {
                session,
                expected,
                found,
            } => write!(
                f,
                "session {session} has {found} files, its count says {expected}"
            ),
            Self::Flbs(n) => write!(
                f,
                "the FLB page claims {n} entries, more than {}",
                abi::FLB_MAX
            ),
            Self::NoMemory => write!(f, "out of memory"),
        }
    }
}

/// Returns the part of a NUL-padded field before its first NUL, or `None` if it has none.
pub(crate) fn c_string(field: &[u8]) -> Option<&[u8]> {
    field.iter().position(|&b| b == 0).map(|n| &field[..n])
}

/// Copies a field of `c_char`s as bytes.
fn bytes<const N: usize>(field: &[c_char; N]) -> [u8; N] {
    field.map(|c| u8::from_ne_bytes(c.to_ne_bytes()))
}

impl Data {
    /// Finds, validates and copies the previous kernel's data; `None` if there is none or it
    /// was refused (with a warning).
    pub(crate) fn retrieve() -> Option<Self> {
        match kho::retrieve_subtree(abi::KHO_ENTRY_NAME) {
            Err(e) if e == ENOENT => None,
            Err(e) => Self::refuse(Corrupt::Retrieve(e)),
            Ok((pa, size)) => match Self::parse(pa, size) {
                Ok(data) => Some(data),
                Err(e) => Self::refuse(e),
            },
        }
    }

    fn refuse(why: Corrupt) -> Option<Self> {
        pr_warn!(
            "refusing the previous kernel's live update data: {}; no session can be retrieved\n",
            why
        );
        None
    }

    fn parse(pa: PhysAddr, size: usize) -> core::result::Result<Self, Corrupt> {
        if size < size_of::<LuoSer>() {
            return Err(Corrupt::Small(size));
        }
        let header = RestoredMem::restore(pa).map_err(|_| Corrupt::Header(pa))?;
        let header = header
            .as_slice()
            .get(..size_of::<LuoSer>())
            .and_then(LuoSer::from_bytes_copy)
            .ok_or(Corrupt::Header(pa))?;
        let compatible = bytes(&header.compatible);
        if c_string(&compatible) != Some(&abi::COMPATIBLE[..6]) {
            return Err(Corrupt::Compatible(compatible));
        }

        let mut data = Self {
            liveupdate_num: header.liveupdate_num,
            sessions: KVec::new(),
            flbs: KVec::new(),
        };
        // Read the FLB page first: it is a single page, freed whatever happens to the sessions.
        let flbs = data.read_flbs(header.flbs_pa);
        let sessions = data.read_sessions(header.sessions_pa);
        flbs.and(sessions)?;
        Ok(data)
    }

    fn read_sessions(&mut self, head: PhysAddr) -> core::result::Result<(), Corrupt> {
        let mut file_sets = KVec::<(u64, u64)>::new();
        block::read_chain(head, size_of::<SessionSer>(), |entry| {
            let ser = SessionSer::from_bytes_copy(entry).ok_or(Corrupt::NoMemory)?;
            let index = self.sessions.len();
            let name: [u8; SESSION_NAME_LENGTH] = bytes(&ser.name);
            let Some(short) = c_string(&name) else {
                return Err(Corrupt::Unterminated(index));
            };
            if self
                .sessions
                .iter()
                .any(|s| c_string(&s.name) == Some(short))
            {
                return Err(Corrupt::Duplicate(index));
            }
            file_sets.push((ser.file_set_ser.files, ser.file_set_ser.count), GFP_KERNEL)?;
            self.sessions.push(
                SessionEntry {
                    name,
                    files: KVec::new(),
                },
                GFP_KERNEL,
            )?;
            Ok(())
        })
        .map_err(|e| match e {
            Corrupt::Chain(_, c) => Corrupt::Chain("the session chain", c),
            e => e,
        })?;

        // Each session's files are read even after one session failed, so that every chain is
        // freed; the first error is reported.
        let mut result = Ok(());
        for (index, (session, &(head, count))) in
            self.sessions.iter_mut().zip(file_sets.iter()).enumerate()
        {
            let r = read_files(session, head, count, index);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn read_flbs(&mut self, pa: PhysAddr) -> core::result::Result<(), Corrupt> {
        if pa == 0 {
            return Ok(());
        }
        let page = RestoredMem::restore(pa).map_err(|_| Corrupt::Header(pa))?;
        let bytes_ = page.as_slice();
        let header = bytes_
            .get(..size_of::<FlbHeader>())
            .and_then(FlbHeader::from_bytes_copy)
            .ok_or(Corrupt::Flbs(0))?;
        if header.count > abi::FLB_MAX as u64 {
            return Err(Corrupt::Flbs(header.count));
        }
        for i in 0..header.count as usize {
            let off = size_of::<FlbHeader>() + i * size_of::<FlbSer>();
            let ser = bytes_
                .get(off..off + size_of::<FlbSer>())
                .and_then(FlbSer::from_bytes_copy)
                .ok_or(Corrupt::Flbs(header.count))?;
            let compatible = bytes(&ser.name);
            if c_string(&compatible).is_none() {
                return Err(Corrupt::Compat("FLB"));
            }
            self.flbs.push(
                FlbEntry {
                    compatible,
                    data: ser.data,
                    count: ser.count,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(())
    }
}

fn read_files(
    session: &mut SessionEntry,
    head: PhysAddr,
    count: u64,
    index: usize,
) -> core::result::Result<(), Corrupt> {
    block::read_chain(head, size_of::<FileSer>(), |entry| {
        let ser = FileSer::from_bytes_copy(entry).ok_or(Corrupt::NoMemory)?;
        let compatible = bytes(&ser.compatible);
        if c_string(&compatible).is_none() {
            return Err(Corrupt::Compat("file handler"));
        }
        session.files.push(
            FileEntry {
                compatible,
                data: ser.data,
                token: ser.token,
            },
            GFP_KERNEL,
        )?;
        Ok(())
    })
    .map_err(|e| match e {
        Corrupt::Chain(_, c) => Corrupt::Chain("a file chain", c),
        e => e,
    })?;
    if session.files.len() as u64 != count {
        return Err(Corrupt::FileCount {
            session: index,
            expected: count,
            found: session.files.len(),
        });
    }
    Ok(())
}
