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
    BlockSource,
    ChainError,
    Kho, //
};
use kernel::{
    alloc::AllocError,
    io::PhysAddr,
    liveupdate::{
        abi::{
            self,
            FileSer,
            FlbHeader,
            FlbSer,
            LuoSer,
            SessionSer, //
        },
        kho,
        SESSION_NAME_LENGTH, //
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
#[derive(Debug)]
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
            Ok((pa, size)) => match Self::parse(&mut Kho, pa, size) {
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

    fn parse<S: BlockSource>(
        src: &mut S,
        pa: PhysAddr,
        size: usize,
    ) -> core::result::Result<Self, Corrupt> {
        if size < size_of::<LuoSer>() {
            return Err(Corrupt::Small(size));
        }
        let header = src.restore(pa).map_err(|_| Corrupt::Header(pa))?;
        let header = S::bytes(&header)
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
        let flbs = data.read_flbs(src, header.flbs_pa);
        let sessions = data.read_sessions(src, header.sessions_pa);
        flbs.and(sessions)?;
        Ok(data)
    }

    fn read_sessions<S: BlockSource>(
        &mut self,
        src: &mut S,
        head: PhysAddr,
    ) -> core::result::Result<(), Corrupt> {
        let mut file_sets = KVec::<(u64, u64)>::new();
        block::read_chain(src, head, |ser: SessionSer| {
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
            let r = read_files(src, session, head, count, index);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn read_flbs<S: BlockSource>(
        &mut self,
        src: &mut S,
        pa: PhysAddr,
    ) -> core::result::Result<(), Corrupt> {
        if pa == 0 {
            return Ok(());
        }
        let page = src.restore(pa).map_err(|_| Corrupt::Header(pa))?;
        let bytes_ = S::bytes(&page);
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

fn read_files<S: BlockSource>(
    src: &mut S,
    session: &mut SessionEntry,
    head: PhysAddr,
    count: u64,
    index: usize,
) -> core::result::Result<(), Corrupt> {
    block::read_chain(src, head, |ser: FileSer| {
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

#[kunit_tests(luo_incoming)]
mod tests {
    use super::*;
    use crate::block::testing::Pages;
    use kernel::liveupdate::abi::{
        BlockHeader,
        FileSetSer, //
    };

    const HDR: PhysAddr = 0x1000;
    const SESSIONS: PhysAddr = 0x2000;
    const FLBS: PhysAddr = 0x3000;
    const FILES: PhysAddr = 0x4000;
    const BH: usize = size_of::<BlockHeader>();

    fn name<const N: usize>(s: &[u8]) -> [c_char; N] {
        let mut a = [0; N];
        for (d, &b) in a.iter_mut().zip(s) {
            *d = c_char::from_ne_bytes([b]);
        }
        a
    }

    /// A valid image: session "vm-a" with two files, session "vm-b" with none, one FLB.
    fn image() -> Result<Pages> {
        let mut p = Pages::new();
        let header = LuoSer {
            compatible: name(b"luo-v5"),
            liveupdate_num: 7,
            sessions_pa: SESSIONS,
            flbs_pa: FLBS,
        };
        p.put(HDR, 0, &header)?;
        p.put(SESSIONS, 0, &BlockHeader { next: 0, count: 2 })?;
        let a = SessionSer {
            name: name(b"vm-a"),
            file_set_ser: FileSetSer {
                files: FILES,
                count: 2,
            },
        };
        p.put(SESSIONS, BH, &a)?;
        let b = SessionSer {
            name: name(b"vm-b"),
            file_set_ser: FileSetSer { files: 0, count: 0 },
        };
        p.put(SESSIONS, BH + size_of::<SessionSer>(), &b)?;
        p.put(FILES, 0, &BlockHeader { next: 0, count: 2 })?;
        for (i, token) in [(0, 1u64), (1, 2)] {
            let f = FileSer {
                compatible: name(b"memfd-v2"),
                data: 0x10 + token,
                token,
            };
            p.put(FILES, BH + i * size_of::<FileSer>(), &f)?;
        }
        p.put(FLBS, 0, &FlbHeader { pgcnt: 1, count: 1 })?;
        let flb = FlbSer {
            name: name(b"test-flb"),
            data: 5,
            count: 2,
        };
        p.put(FLBS, size_of::<FlbHeader>(), &flb)?;
        Ok(p)
    }

    fn parse(p: &mut Pages) -> core::result::Result<Data, Corrupt> {
        Data::parse(p, HDR, size_of::<LuoSer>())
    }

    fn edit<T: FromBytes + kernel::transmute::AsBytes>(
        p: &mut Pages,
        pa: PhysAddr,
        off: usize,
        f: impl FnOnce(&mut T),
    ) -> Result {
        let page = p.page(pa)?;
        let field = page.get_mut(off..off + size_of::<T>()).ok_or(EINVAL)?;
        let mut v = T::from_bytes_copy(field).ok_or(EINVAL)?;
        f(&mut v);
        p.put(pa, off, &v)
    }

    #[test]
    fn valid_image() -> Result {
        let mut p = image()?;
        let d = parse(&mut p).map_err(|_| EINVAL)?;
        assert_eq!(d.liveupdate_num, 7);
        assert_eq!(d.sessions.len(), 2);
        assert_eq!(c_string(&d.sessions[0].name), Some(&b"vm-a"[..]));
        assert_eq!(c_string(&d.sessions[1].name), Some(&b"vm-b"[..]));
        assert_eq!(d.sessions[0].files.len(), 2);
        assert_eq!(d.sessions[0].files[1].token, 2);
        assert_eq!(d.sessions[0].files[1].data, 0x12);
        assert_eq!(
            c_string(&d.sessions[0].files[0].compatible),
            Some(&b"memfd-v2"[..])
        );
        assert_eq!(d.sessions[1].files.len(), 0);
        assert_eq!(d.flbs.len(), 1);
        assert_eq!((d.flbs[0].data, d.flbs[0].count), (5, 2));
        // Every block was restored (and so freed) exactly once.
        assert_eq!(p.restored.len(), 4);
        Ok(())
    }

    #[test]
    fn wrong_compatible() -> Result {
        let mut p = image()?;
        edit::<LuoSer>(&mut p, HDR, 0, |h| h.compatible = name(b"luo-v4"))?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Compatible(_))));
        let mut p = image()?;
        edit::<LuoSer>(&mut p, HDR, 0, |h| h.compatible = name(b"luo-v5x"))?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Compatible(_))));
        Ok(())
    }

    #[test]
    fn small_or_missing_header() -> Result {
        let mut p = image()?;
        let r = Data::parse(&mut p, HDR, size_of::<LuoSer>() - 1);
        assert!(matches!(r, Err(Corrupt::Small(31))));
        let mut p = image()?;
        let r = Data::parse(&mut p, 0x7000, size_of::<LuoSer>());
        assert!(matches!(r, Err(Corrupt::Header(0x7000))));
        Ok(())
    }

    #[test]
    fn session_chain_cycle() -> Result {
        let mut p = image()?;
        edit::<BlockHeader>(&mut p, SESSIONS, 0, |h| h.next = SESSIONS)?;
        let r = parse(&mut p);
        assert!(matches!(
            r,
            Err(Corrupt::Chain(_, ChainError::Cycle(SESSIONS)))
        ));
        Ok(())
    }

    #[test]
    fn session_count_beyond_capacity() -> Result {
        let mut p = image()?;
        edit::<BlockHeader>(&mut p, SESSIONS, 0, |h| h.count = 52)?;
        let r = parse(&mut p);
        assert!(matches!(
            r,
            Err(Corrupt::Chain(_, ChainError::BadCount(SESSIONS, 52)))
        ));
        Ok(())
    }

    #[test]
    fn session_chain_outside_ram() -> Result {
        let mut p = image()?;
        edit::<LuoSer>(&mut p, HDR, 0, |h| h.sessions_pa = 1 << 50)?;
        let r = parse(&mut p);
        assert!(matches!(
            r,
            Err(Corrupt::Chain(_, ChainError::NotPreserved(_)))
        ));
        Ok(())
    }

    #[test]
    fn unterminated_name() -> Result {
        let mut p = image()?;
        edit::<SessionSer>(&mut p, SESSIONS, BH, |s| s.name = name(&[b'A'; 64]))?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Unterminated(0))));
        Ok(())
    }

    #[test]
    fn duplicate_name() -> Result {
        let mut p = image()?;
        let off = BH + size_of::<SessionSer>();
        edit::<SessionSer>(&mut p, SESSIONS, off, |s| s.name = name(b"vm-a"))?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Duplicate(1))));
        Ok(())
    }

    #[test]
    fn file_count_mismatch() -> Result {
        let mut p = image()?;
        edit::<SessionSer>(&mut p, SESSIONS, BH, |s| s.file_set_ser.count = 3)?;
        let r = parse(&mut p);
        assert!(matches!(
            r,
            Err(Corrupt::FileCount {
                session: 0,
                expected: 3,
                found: 2
            })
        ));
        // Files claimed without a chain.
        let mut p = image()?;
        let off = BH + size_of::<SessionSer>();
        edit::<SessionSer>(&mut p, SESSIONS, off, |s| s.file_set_ser.count = 1)?;
        assert!(matches!(
            parse(&mut p),
            Err(Corrupt::FileCount { session: 1, .. })
        ));
        Ok(())
    }

    #[test]
    fn unterminated_handler_compatible() -> Result {
        let mut p = image()?;
        edit::<FileSer>(&mut p, FILES, BH, |f| f.compatible = name(&[b'x'; 48]))?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Compat(_))));
        Ok(())
    }

    #[test]
    fn flb_count_beyond_page() -> Result {
        let mut p = image()?;
        edit::<FlbHeader>(&mut p, FLBS, 0, |h| h.count = abi::FLB_MAX as u64 + 1)?;
        assert!(matches!(parse(&mut p), Err(Corrupt::Flbs(64))));
        Ok(())
    }

    #[test]
    fn refused_data_is_still_freed() -> Result {
        // A bad FLB page does not stop the session and file chains from being freed.
        let mut p = image()?;
        edit::<FlbHeader>(&mut p, FLBS, 0, |h| h.count = 1000)?;
        assert!(parse(&mut p).is_err());
        assert_eq!(p.restored.len(), 4);
        Ok(())
    }
}
