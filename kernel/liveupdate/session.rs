// SPDX-License-Identifier: GPL-2.0

//! Sessions: named groups of preserved files, and their file descriptors.
//!
//! An outgoing session is created by `CREATE_SESSION`; files are preserved in it while its file
//! descriptor is open, and closing it (an agent that exits or crashes) unpreserves them all. At
//! reboot, every outgoing session is serialized. An incoming session is rebuilt from the
//! previous kernel's data when `/dev/liveupdate` is first opened, handed out once by
//! `RETRIEVE_SESSION`, and finished by `FINISH` or when its file descriptor is closed.

use crate::{
    device::Ucmd,
    file::FileSet,
    incoming::c_string,
    Core,
    Luo, //
};
use kernel::{
    fs::{
        anon_inode::AnonInodeFile,
        file::{
            flags::O_CLOEXEC,
            FileDescriptorReservation, //
        },
        File,
    },
    liveupdate::{
        abi::{
            FileSetSer,
            LuoSer,
            SessionSer, //
        },
        IoctlArg,
        SESSION_NAME_LENGTH, //
    },
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    sync::{
        lock::mutex::MutexGuard,
        Arc,
        ArcBorrow,
        Mutex, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uapi, //
};

/// The mutable state of a session.
pub(crate) struct SessionInner {
    /// The session's files.
    pub(crate) files: FileSet,
    /// Whether an incoming session was handed out by `RETRIEVE_SESSION`.
    pub(crate) retrieved: bool,
}

/// A session.
///
/// Its file descriptor holds an `Arc` to it; so does [`Luo`]'s list of outgoing or incoming
/// sessions. `inner` is locked after [`Core::luo`] when both are held, and held across a whole
/// session ioctl.
#[pin_data]
pub(crate) struct Session {
    core: &'static Core,
    name: [u8; SESSION_NAME_LENGTH],
    /// Length of `name` before its NUL.
    name_len: usize,
    incoming: bool,
    #[pin]
    inner: Mutex<SessionInner>,
}

impl Session {
    /// Creates a session named `name` (at most 63 bytes, checked by the caller).
    pub(crate) fn new(
        core: &'static Core,
        name: &[u8],
        incoming: bool,
        files: FileSet,
    ) -> Result<Arc<Self>> {
        let mut buf = [0u8; SESSION_NAME_LENGTH];
        buf.get_mut(..name.len())
            .ok_or(EINVAL)?
            .copy_from_slice(name);
        // Computed out of `pin_init!`, where `name` names the field being initialized.
        let name_len = name.len();
        Arc::pin_init(
            pin_init!(Self {
                core,
                name: buf,
                name_len,
                incoming,
                inner <- new_mutex!(
                    SessionInner {
                        files,
                        retrieved: false,
                    },
                    "Session::inner"
                ),
            }),
            GFP_KERNEL,
        )
    }

    /// Returns the session's name, without its NUL.
    pub(crate) fn name(&self) -> &[u8] {
        self.name.get(..self.name_len).unwrap_or(&[])
    }

    /// Locks the session's mutable state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionInner> {
        self.inner.lock()
    }

    fn preserve_fd(&self, ucmd: Ucmd) -> Result {
        let arg = ucmd.read::<uapi::liveupdate_session_preserve_fd>()?;
        let _op = self.core.begin_op();
        let mut inner = self.inner.lock();
        // The reply carries nothing new: writing it first means that a reply that cannot be
        // written fails the call before anything was preserved.
        ucmd.respond(&arg)?;
        inner.files.preserve(self.core, arg.token, arg.fd)
    }

    fn unpreserve_fd(&self, ucmd: Ucmd) -> Result {
        let arg = ucmd.read::<uapi::liveupdate_session_unpreserve_fd>()?;
        if arg.reserved != 0 {
            return Err(EINVAL);
        }
        let _op = self.core.begin_op();
        let mut inner = self.inner.lock();
        // As for PRESERVE_FD: the reply carries nothing new and is written before anything
        // changes.
        ucmd.respond(&arg)?;
        inner.files.unpreserve(self.core, arg.token)
    }

    fn retrieve_fd(&self, ucmd: Ucmd) -> Result {
        let mut arg = ucmd.read::<uapi::liveupdate_session_retrieve_fd>()?;
        let fd = FileDescriptorReservation::get_unused_fd_flags(O_CLOEXEC)?;
        let op = self.core.begin_op();
        let mut inner = self.inner.lock();
        inner.files.check_retrieve(arg.token)?;
        // CAST: A reserved descriptor number fits in an `int`.
        arg.fd = fd.reserved_fd() as i32;
        ucmd.respond(&arg)?;
        let file = inner.files.retrieve(self.core, arg.token)?;
        drop(inner);
        drop(op);
        fd.fd_install(file);
        Ok(())
    }

    fn finish(&self, ucmd: Ucmd) -> Result {
        let arg = ucmd.read::<uapi::liveupdate_session_finish>()?;
        if arg.reserved != 0 {
            return Err(EINVAL);
        }
        let _op = self.core.begin_op();
        let mut inner = self.inner.lock();
        inner.files.can_finish()?;
        ucmd.respond(&arg)?;
        inner.files.finish(self.core);
        Ok(())
    }

    fn get_name(&self, ucmd: Ucmd) -> Result {
        let mut arg = ucmd.read::<uapi::liveupdate_session_get_name>()?;
        if arg.reserved != 0 {
            return Err(EINVAL);
        }
        arg.name = self.name;
        ucmd.respond(&arg)
    }

    /// Checks that the command applies to this session's direction.
    fn direction(&self, incoming_only: bool, outgoing_only: bool) -> Result {
        if (incoming_only && !self.incoming) || (outgoing_only && self.incoming) {
            return Err(EINVAL);
        }
        Ok(())
    }
}

#[vtable]
impl AnonInodeFile for Session {
    type Ptr = Arc<Session>;

    fn ioctl(this: ArcBorrow<'_, Session>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        use uapi::liveupdate_session_finish as Finish;
        use uapi::liveupdate_session_get_name as GetName;
        use uapi::liveupdate_session_preserve_fd as PreserveFd;
        use uapi::liveupdate_session_retrieve_fd as RetrieveFd;
        use uapi::liveupdate_session_unpreserve_fd as UnpreserveFd;

        let nr = kernel::ioctl::_IOC_NR(cmd);
        if nr == PreserveFd::NR {
            let ucmd = Ucmd::new::<PreserveFd>(cmd, arg)?;
            this.direction(false, true)?;
            this.preserve_fd(ucmd)?;
        } else if nr == RetrieveFd::NR {
            let ucmd = Ucmd::new::<RetrieveFd>(cmd, arg)?;
            this.direction(true, false)?;
            this.retrieve_fd(ucmd)?;
        } else if nr == Finish::NR {
            let ucmd = Ucmd::new::<Finish>(cmd, arg)?;
            this.direction(true, false)?;
            this.finish(ucmd)?;
        } else if nr == GetName::NR {
            let ucmd = Ucmd::new::<GetName>(cmd, arg)?;
            this.get_name(ucmd)?;
        } else if nr == UnpreserveFd::NR {
            let ucmd = Ucmd::new::<UnpreserveFd>(cmd, arg)?;
            this.direction(false, true)?;
            this.unpreserve_fd(ucmd)?;
        } else {
            return Err(ENOTTY);
        }
        Ok(0)
    }

    fn release(this: Arc<Session>, _file: &File) {
        let core = this.core;
        let _op = core.begin_op();
        let mut inner = this.inner.lock();
        if this.incoming {
            if inner.files.can_finish().is_err() {
                // As in the C implementation, the session stays, retrieved, until reboot.
                pr_warn!(
                    "Unable to finish session [{}] on release\n",
                    kernel::str::BStr::from_bytes(this.name())
                );
                return;
            }
            inner.files.finish(core);
            drop(inner);
            let removed = core
                .luo
                .lock()
                .incoming
                .as_mut()
                .and_then(|incoming| incoming.remove(&this.name));
            // Dropped unlocked (`this` still holds a reference).
            drop(removed);
        } else {
            inner.files.unpreserve_all(core);
            drop(inner);
            core.remove_outgoing(&this);
        }
    }
}

impl Core {
    /// Removes `session` from the outgoing sessions, keeping the creation order of the others
    /// (the order they are serialized in), and frees the block room it used.
    pub(crate) fn remove_outgoing(&self, session: &Arc<Session>) {
        let removed = {
            let mut luo = self.luo.lock();
            let removed = luo
                .outgoing
                .iter()
                .position(|s| Arc::ptr_eq(s, session))
                // `i` is in bounds: it was just found.
                .and_then(|i| luo.outgoing.remove(i).ok());
            let n = luo.outgoing.len();
            luo.session_blocks.shrink(n);
            removed
        };
        // Dropped unlocked (the caller still holds a reference).
        drop(removed);
    }
}

/// Returns the part of a userspace name that `strncmp(name, other, 64)` compares: up to its
/// first NUL, or all 64 bytes.
pub(crate) fn compared_name(name: &[u8; SESSION_NAME_LENGTH]) -> &[u8] {
    c_string(name).unwrap_or(name)
}

/// Calls `f` with the session name, token and data handle of every incoming file of `handler`
/// that is not finished: from the previous kernel's data before `/dev/liveupdate` is first
/// opened (in its order), from the incoming sessions afterwards (by name). `luo` (the
/// device-level state, or a guard of it) is dropped before any session is locked.
pub(crate) fn for_each_incoming_file<L: core::ops::Deref<Target = Luo>>(
    luo: L,
    handler: kernel::liveupdate::registered::Handler,
    mut f: impl FnMut(&[u8; SESSION_NAME_LENGTH], u64, u64),
) -> Result {
    if let Some(data) = &luo.pending {
        for s in data.sessions.iter() {
            let mine = s
                .files
                .iter()
                .filter(|e| c_string(&e.compatible).unwrap_or(&[]) == handler.compatible());
            for e in mine {
                f(&s.name, e.token, e.data);
            }
        }
    }
    let mut sessions = KVec::new();
    if let Some(incoming) = &luo.incoming {
        for (_, session) in incoming.iter() {
            sessions.push(session.clone(), GFP_KERNEL)?;
        }
    }
    // Each session's mutex is taken without the device-level lock, which is never held while
    // waiting for a session (a session's ioctl holds its mutex across handler callbacks).
    drop(luo);
    for session in sessions.iter() {
        session
            .lock()
            .files
            .for_each_of(handler, |token, data| f(&session.name, token, data));
    }
    Ok(())
}

/// Rebuilds the incoming sessions from the previous kernel's data, on the first open of
/// `/dev/liveupdate`.
///
/// The result is sticky, except `ENOMEM`: building the sessions only allocates and takes
/// handler references, so after an allocation failure everything built is dropped, the previous
/// kernel's data is kept, and the next open tries again (upstream's C makes that failure sticky
/// too, losing the handover).
pub(crate) fn deserialize(core: &'static Core, luo: &mut Luo) -> Result {
    if let Some(r) = luo.deserialized {
        return r;
    }
    let r = deserialize_pending(core, luo);
    if r != Err(ENOMEM) {
        luo.deserialized = Some(r);
    }
    r
}

fn deserialize_pending(core: &'static Core, luo: &mut Luo) -> Result {
    let Some(data) = luo.pending.take() else {
        return Ok(());
    };
    let mut incoming = RBTree::new();
    let r = data
        .sessions
        .iter()
        .try_for_each(|s| add_incoming(core, &mut incoming, s));
    if r == Err(ENOMEM) {
        // `incoming` and the references its files took are dropped here.
        luo.pending = Some(data);
        return r;
    }
    // As in the C implementation, the sessions rebuilt before another failure are kept (and
    // stay unreachable: opening the device fails from then on).
    luo.incoming = Some(incoming);
    r
}

fn add_incoming(
    core: &'static Core,
    incoming: &mut RBTree<[u8; SESSION_NAME_LENGTH], Arc<Session>>,
    s: &crate::incoming::SessionEntry,
) -> Result {
    // On failure the files, and with them their handler references, are dropped.
    let files = FileSet::from_incoming(core, &s.files)?;
    let name = c_string(&s.name).unwrap_or(&[]);
    let session = Session::new(core, name, true, files)?;
    // Names are unique: the previous kernel's data was refused otherwise.
    incoming.try_create_and_insert(session.name, session, GFP_KERNEL)?;
    Ok(())
}

/// Freezes and writes every outgoing session for the next kernel, at reboot.
///
/// Sessions are frozen in creation order; if one fails, the ones before it are unfrozen in
/// reverse order and nothing is handed over.
pub(crate) fn serialize(core: &Core, luo: &mut Luo) -> Result {
    let mut frozen = 0;
    let mut result = Ok(());
    for session in luo.outgoing.iter() {
        if let Err(e) = session.lock().files.freeze() {
            result = Err(e);
            break;
        }
        frozen += 1;
    }
    if result.is_ok() {
        result = write_sessions(core, luo);
    }
    if result.is_err() {
        for session in luo.outgoing.iter().take(frozen).rev() {
            session.lock().files.unfreeze();
        }
        luo.session_blocks.clear();
    }
    result
}

/// Writes the session entries, the header's `sessions_pa` and the FLB page; allocates nothing.
fn write_sessions(core: &Core, luo: &mut Luo) -> Result {
    let entries = luo.outgoing.iter().map(|session| {
        let (files, count) = session.lock().files.serialized();
        SessionSer {
            name: session.name.map(|b| c_char::from_ne_bytes([b])),
            file_set_ser: FileSetSer { files, count },
        }
    });
    let head = luo.session_blocks.write(entries)?;
    let out = luo.out.as_mut().ok_or(EINVAL)?;
    let header = out.header.mem_mut().as_mut_slice();
    let bytes = header.get_mut(..size_of::<LuoSer>()).ok_or(EINVAL)?;
    let mut ser = LuoSer::from_bytes_copy(bytes).ok_or(EINVAL)?;
    ser.sessions_pa = head;
    bytes.copy_from_slice(ser.as_bytes());
    crate::flb::serialize(core, out.flbs.as_mut_slice())
}
