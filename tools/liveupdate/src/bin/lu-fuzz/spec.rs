// SPDX-License-Identifier: GPL-2.0
//! Descriptions of the LUO ioctls: command numbers, struct sizes, and which results each may
//! have (the uapi header's comments, checked one by one in luo_errno.c).

use rustix::io::Errno;
use rustix::ioctl::Opcode;

use liveupdate::sys::IOCTL_TYPE;

/// The commands, plus malformed command numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Create,
    RetrieveSession,
    Preserve,
    RetrieveFd,
    Finish,
    GetName,
    Unpreserve,
    /// Type 0xBA with a number no file knows.
    UnknownNr(u8),
    /// A known number with direction or size bits set.
    BadBits(u8, u32),
    /// A known number with another type byte.
    WrongType(u8, u8),
}

pub const KNOWN: [Cmd; 7] = [
    Cmd::Create,
    Cmd::RetrieveSession,
    Cmd::Preserve,
    Cmd::RetrieveFd,
    Cmd::Finish,
    Cmd::GetName,
    Cmd::Unpreserve,
];

/// What an ioctl is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Device,
    Outgoing,
    Incoming,
    /// Any other file of ours: every LUO command must fail.
    Foreign,
    /// A raw number another thread may close or reuse: anything may happen.
    Racy,
}

const fn ioc(dir: u32, ty: u8, nr: u8, size: u32) -> Opcode {
    (dir << 30) | (size << 16) | ((ty as u32) << 8) | nr as u32
}

impl Cmd {
    pub fn nr(self) -> u8 {
        match self {
            Cmd::Create => 0x00,
            Cmd::RetrieveSession => 0x01,
            Cmd::Preserve => 0x40,
            Cmd::RetrieveFd => 0x41,
            Cmd::Finish => 0x42,
            Cmd::GetName => 0x43,
            Cmd::Unpreserve => 0x44,
            Cmd::UnknownNr(nr) | Cmd::BadBits(nr, _) | Cmd::WrongType(_, nr) => nr,
        }
    }

    pub fn opcode(self) -> Opcode {
        match self {
            Cmd::BadBits(nr, bits) => ioc(bits >> 14, IOCTL_TYPE, nr, bits & 0x3fff),
            Cmd::WrongType(ty, nr) => ioc(0, ty, nr, 0),
            c => ioc(0, IOCTL_TYPE, c.nr(), 0),
        }
    }

    /// The size of the struct the kernel knows (the malformed ones: a plausible one).
    pub fn struct_size(self) -> usize {
        match self {
            Cmd::Create | Cmd::RetrieveSession | Cmd::GetName => 72,
            Cmd::Preserve | Cmd::RetrieveFd | Cmd::Unpreserve => 16,
            Cmd::Finish => 8,
            _ => 72,
        }
    }

    /// Index in the per-ioctl counters (`NAMES`).
    pub fn slot(self) -> usize {
        match self {
            Cmd::Create => 0,
            Cmd::RetrieveSession => 1,
            Cmd::Preserve => 2,
            Cmd::RetrieveFd => 3,
            Cmd::Finish => 4,
            Cmd::GetName => 5,
            Cmd::Unpreserve => 6,
            _ => 7,
        }
    }

    /// Whether the kernel writes the struct back on success (so a read-only one fails).
    fn writes_back(self) -> bool {
        matches!(
            self,
            Cmd::Create | Cmd::RetrieveSession | Cmd::Preserve | Cmd::RetrieveFd | Cmd::GetName
        )
    }

    /// Whether a success returns an fd in the `fd` field.
    pub fn returns_fd(self) -> bool {
        matches!(self, Cmd::Create | Cmd::RetrieveSession | Cmd::RetrieveFd)
    }

    /// The files this command applies to.
    fn applies_to(self, t: Target) -> bool {
        match self {
            Cmd::Create | Cmd::RetrieveSession => t == Target::Device,
            Cmd::Preserve | Cmd::RetrieveFd | Cmd::Finish | Cmd::GetName | Cmd::Unpreserve => {
                matches!(t, Target::Outgoing | Target::Incoming)
            }
            _ => false,
        }
    }

    /// Errnos of this command besides the common ones, once the struct is understood.
    fn own_errnos(self) -> &'static [Errno] {
        match self {
            Cmd::Create => &[Errno::EXIST, Errno::MFILE, Errno::NOSPC, Errno::NOMEM],
            Cmd::RetrieveSession => &[Errno::NOENT, Errno::MFILE, Errno::NOMEM],
            // The memfd handler's own: EOPNOTSUPP (seals, hugetlb), EFBIG, EAGAIN.
            Cmd::Preserve => &[
                Errno::EXIST,
                Errno::BADF,
                Errno::NOENT,
                Errno::BUSY,
                Errno::NODEV,
                Errno::NOSPC,
                Errno::NOMEM,
                Errno::OPNOTSUPP,
                Errno::FBIG,
                Errno::AGAIN,
            ],
            Cmd::RetrieveFd => &[Errno::NOENT, Errno::MFILE, Errno::NOMEM, Errno::OPNOTSUPP],
            Cmd::Finish => &[Errno::BUSY],
            Cmd::GetName => &[],
            Cmd::Unpreserve => &[Errno::NOENT, Errno::BUSY],
            _ => &[],
        }
    }
}

pub const NAMES: [&str; 8] = [
    "create",
    "retrieve_session",
    "preserve",
    "retrieve_fd",
    "finish",
    "get_name",
    "unpreserve",
    "bad_cmd",
];

/// The results a call may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub ok: bool,
    /// Allowed errnos; `None` = any.
    pub errnos: Option<Vec<Errno>>,
}

impl Expect {
    fn exactly(e: Errno) -> Self {
        Self {
            ok: false,
            errnos: Some(vec![e]),
        }
    }

    pub fn allows(&self, r: Result<(), Errno>) -> bool {
        match r {
            Ok(()) => self.ok,
            Err(e) => self.errnos.as_ref().is_none_or(|v| v.contains(&e)),
        }
    }
}

/// The argument as generated, for the checks that depend on it.
#[derive(Debug, Clone, Copy)]
pub struct ArgInfo {
    /// The `size` field.
    pub size: u32,
    /// Whether bytes beyond the kernel's struct (within `size`) are nonzero.
    pub tail_nonzero: bool,
    /// Whether a reserved field is nonzero.
    pub reserved_nonzero: bool,
    /// Whether the name field is valid for CREATE_SESSION (non-empty, NUL-terminated).
    pub name_valid: bool,
    /// PRESERVE_FD: whether the fd may be preserved at all.
    pub fd_may_preserve: bool,
}

/// What `cmd` on `target` with the argument `arg` at `place` may return.
///
/// `upstream`: Linux 7.3's C core, which fails a number the file does not know with EINVAL
/// (ours: ENOTTY) and has no UNPRESERVE_FD; its checks are only held to the union of the
/// errnos (its order of checks differs in places).
pub fn expect(
    cmd: Cmd,
    target: Target,
    arg: &ArgInfo,
    place: crate::arena::Place,
    upstream: bool,
) -> Expect {
    let any = Expect {
        ok: true,
        errnos: None,
    };
    let fail_any = Expect {
        ok: false,
        errnos: None,
    };
    match target {
        Target::Racy => return any,
        Target::Foreign => return fail_any,
        _ => {}
    }
    // A known number with other type, direction or size bits: the file reads `size` (EFAULT)
    // before it checks the full command (ENOTTY).
    let plain = match cmd {
        Cmd::BadBits(nr, _) | Cmd::WrongType(_, nr) => KNOWN.iter().copied().find(|c| c.nr() == nr),
        _ => None,
    };
    if plain.is_some_and(|p| p.applies_to(target)) {
        let mut errnos = vec![Errno::NOTTY];
        if !place.size_readable() {
            errnos.push(Errno::FAULT);
        }
        if upstream {
            errnos.extend([Errno::INVAL, Errno::FAULT]);
        }
        return Expect {
            ok: false,
            errnos: Some(errnos),
        };
    }
    let unknown = !cmd.applies_to(target) || (upstream && cmd == Cmd::Unpreserve);
    if unknown {
        return if upstream {
            Expect {
                ok: false,
                errnos: Some(vec![Errno::NOTTY, Errno::INVAL]),
            }
        } else {
            Expect::exactly(Errno::NOTTY)
        };
    }
    let s = cmd.struct_size();
    // Order of the checks (uapi header): number, reading `size`, kind of session, size and
    // struct, then the command's own.
    if !place.size_readable() {
        return Expect::exactly(Errno::FAULT);
    }
    let wrong_kind = match cmd {
        Cmd::Preserve | Cmd::Unpreserve => target == Target::Incoming,
        Cmd::RetrieveFd | Cmd::Finish => target == Target::Outgoing,
        _ => false,
    };
    if wrong_kind && !upstream {
        return Expect::exactly(Errno::INVAL);
    }
    let in_bounds = place.readable((arg.size as usize).max(s));
    if !upstream && in_bounds {
        if (arg.size as usize) < s {
            return Expect::exactly(Errno::INVAL);
        }
        if arg.tail_nonzero {
            return Expect::exactly(Errno::TOOBIG);
        }
    }
    let mut errnos = vec![Errno::FAULT, Errno::TOOBIG, Errno::INVAL];
    errnos.extend_from_slice(cmd.own_errnos());
    let mut ok = in_bounds
        && !wrong_kind
        && (arg.size as usize) >= s
        && !arg.tail_nonzero
        && !arg.reserved_nonzero;
    if cmd.writes_back() && !matches!(place, crate::arena::Place::Rw(_)) {
        ok = false;
    }
    // Upstream's checks of the name are not held to the header's (EINVAL) here.
    if cmd == Cmd::Create && !arg.name_valid && !upstream {
        ok = false;
    }
    if cmd == Cmd::Preserve && !arg.fd_may_preserve {
        ok = false;
    }
    Expect {
        ok,
        errnos: Some(errnos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Place;

    fn good(size: u32) -> ArgInfo {
        ArgInfo {
            size,
            tail_nonzero: false,
            reserved_nonzero: false,
            name_valid: true,
            fd_may_preserve: true,
        }
    }

    #[test]
    fn opcodes_match_sys() {
        use liveupdate::sys;
        assert_eq!(Cmd::Create.opcode(), sys::CREATE_SESSION);
        assert_eq!(Cmd::Unpreserve.opcode(), sys::UNPRESERVE_FD);
        assert_eq!(Cmd::GetName.opcode(), sys::GET_NAME);
    }

    #[test]
    fn ordering() {
        let e = expect(
            Cmd::Create,
            Target::Outgoing,
            &good(72),
            Place::Bad(0),
            false,
        );
        assert_eq!(e, Expect::exactly(Errno::NOTTY));
        let e = expect(Cmd::Create, Target::Device, &good(72), Place::Bad(0), false);
        assert_eq!(e, Expect::exactly(Errno::FAULT));
        let e = expect(Cmd::Finish, Target::Outgoing, &good(1), Place::Rw(0), false);
        assert_eq!(e, Expect::exactly(Errno::INVAL));
        let e = expect(Cmd::Create, Target::Device, &good(8), Place::Rw(0), false);
        assert_eq!(e, Expect::exactly(Errno::INVAL));
        let e = expect(
            Cmd::Create,
            Target::Device,
            &good(72),
            Place::ReadOnly(0),
            false,
        );
        assert!(!e.ok && e.allows(Err(Errno::FAULT)));
        assert!(expect(Cmd::Create, Target::Device, &good(80), Place::Rw(0), false).ok);
    }
}
