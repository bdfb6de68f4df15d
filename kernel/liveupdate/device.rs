// SPDX-License-Identifier: GPL-2.0

//! `/dev/liveupdate`: exclusive open and the device's ioctls.
//!
//! Every ioctl argument is read with the dispatch order and errors of the C implementation:
//! unknown command number, then the `size` field (`EFAULT`), then the full command (`ENOTTY`),
//! then the session's direction (`EINVAL`), then the size rules of `copy_struct_from_user()`
//! (`EINVAL` below the minimum, `E2BIG` for a non-zero tail, `EFAULT`). Two things differ on
//! purpose: an unknown command number gives `ENOTTY` (not `EINVAL`), and a reply that cannot be
//! written gives `EFAULT` before anything changed (the C implementation has already created,
//! preserved, retrieved or finished by then).

use crate::{
    incoming::c_string,
    session::{
        self,
        Session, //
    },
    Core, //
};
use kernel::{
    fs::{
        anon_inode,
        file::{
            flags::{
                O_CLOEXEC,
                O_RDWR, //
            },
            FileDescriptorReservation,
        },
        File,
    },
    liveupdate::{
        IoctlArg,
        SESSION_NAME_LENGTH, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi, //
};

/// An ioctl argument: where it is and the size userspace says it has.
pub(crate) struct Ucmd {
    arg: UserPtr,
    size: usize,
}

impl Ucmd {
    /// Reads the `size` field at `arg` and checks that `cmd` is exactly `T`'s command.
    pub(crate) fn new<T: IoctlArg>(cmd: u32, arg: usize) -> Result<Self> {
        let arg = UserPtr::from_addr(arg);
        let size = UserSlice::new(arg, size_of::<u32>())
            .reader()
            .read::<u32>()?;
        if cmd != T::CMD {
            return Err(ENOTTY);
        }
        Ok(Self {
            arg,
            size: size as usize,
        })
    }

    /// Reads the argument with `copy_struct_from_user()` semantics.
    pub(crate) fn read<T: IoctlArg>(&self) -> Result<T> {
        UserSlice::new(self.arg, self.size)
            .reader()
            .read_versioned::<T>(T::MIN_SIZE)
    }

    /// Writes the reply: as much of `reply` as userspace's struct holds.
    pub(crate) fn respond<T: IoctlArg>(&self, reply: &T) -> Result {
        let bytes = reply.as_bytes();
        let len = self.size.min(bytes.len());
        UserSlice::new(self.arg, len)
            .writer()
            .write_slice(bytes.get(..len).ok_or(EINVAL)?)
    }
}

/// Returns whether `name` is a valid session name: 1 to 63 bytes and a NUL.
fn valid_name(name: &[u8; SESSION_NAME_LENGTH]) -> bool {
    c_string(name).is_some_and(|n| !n.is_empty())
}

/// `/dev/liveupdate`.
struct LuoDevice;

#[vtable]
impl MiscDevice for LuoDevice {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result {
        let core = Core::get().ok_or(ENODEV)?;
        let mut luo = core.luo.lock();
        if luo.device_open {
            return Err(EBUSY);
        }
        // A failure to rebuild the incoming sessions is sticky (every open fails with `EIO`),
        // but for an allocation failure, which changed nothing: a later open tries again.
        session::deserialize(core, &mut luo).map_err(|e| if e == ENOMEM { e } else { EIO })?;
        luo.device_open = true;
        Ok(())
    }

    fn release(_device: (), _file: &File) {
        if let Some(core) = Core::get() {
            core.luo.lock().device_open = false;
        }
    }

    fn ioctl(_device: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        use uapi::liveupdate_ioctl_create_session as CreateSession;
        use uapi::liveupdate_ioctl_retrieve_session as RetrieveSession;

        let core = Core::get().ok_or(ENODEV)?;
        let nr = kernel::ioctl::_IOC_NR(cmd);
        if nr == CreateSession::NR {
            create_session(core, Ucmd::new::<CreateSession>(cmd, arg)?)?;
        } else if nr == RetrieveSession::NR {
            retrieve_session(core, Ucmd::new::<RetrieveSession>(cmd, arg)?)?;
        } else {
            return Err(ENOTTY);
        }
        Ok(0)
    }
}

/// Creates the file of `session`, named "[luo_session] <name>".
pub(crate) fn session_file(session: &Arc<Session>) -> Result<ARef<File>> {
    const PREFIX: &[u8] = b"[luo_session] ";
    let mut buf = [0u8; PREFIX.len() + SESSION_NAME_LENGTH];
    let name = session.name();
    let len = PREFIX.len() + name.len();
    // The name has at most 63 bytes, so the buffer keeps a NUL after it.
    buf.get_mut(..PREFIX.len())
        .ok_or(EINVAL)?
        .copy_from_slice(PREFIX);
    buf.get_mut(PREFIX.len()..len)
        .ok_or(EINVAL)?
        .copy_from_slice(name);
    let name = CStr::from_bytes_with_nul(buf.get(..=len).ok_or(EINVAL)?).map_err(|_| EINVAL)?;
    anon_inode::new_file::<Session>(name, session.clone(), O_RDWR)
}

/// Creates an outgoing session: it is added to the list, under the device-level lock, before
/// the reply is written and its file made without it; if either fails, it is removed again.
fn create_session(core: &'static Core, ucmd: Ucmd) -> Result {
    let mut arg = ucmd.read::<uapi::liveupdate_ioctl_create_session>()?;
    let fd = FileDescriptorReservation::get_unused_fd_flags(O_CLOEXEC)?;
    if !valid_name(&arg.name) {
        return Err(EINVAL);
    }
    let name_buf = arg.name;
    let name = c_string(&name_buf).unwrap_or(&[]);
    let _op = core.begin_op();
    let session = Session::new(core, name, false, crate::file::FileSet::new())?;
    {
        let mut luo = core.luo.lock();
        if luo.outgoing.iter().any(|s| s.name() == name) {
            return Err(EEXIST);
        }
        luo.outgoing.reserve(1, GFP_KERNEL)?;
        let n = luo.outgoing.len();
        luo.session_blocks.grow(n + 1)?;
        // Within the capacity reserved above.
        let _ = luo.outgoing.push_within_capacity(session.clone());
    }
    let file = (|| {
        // CAST: A reserved descriptor number fits in an `int`.
        arg.fd = fd.reserved_fd() as i32;
        ucmd.respond(&arg)?;
        session_file(&session)
    })();
    match file {
        Ok(file) => {
            fd.fd_install(file);
            Ok(())
        }
        Err(e) => {
            core.remove_outgoing(&session);
            Err(e)
        }
    }
}

fn retrieve_session(core: &'static Core, ucmd: Ucmd) -> Result {
    let mut arg = ucmd.read::<uapi::liveupdate_ioctl_retrieve_session>()?;
    let fd = FileDescriptorReservation::get_unused_fd_flags(O_CLOEXEC)?;
    // `strncmp(name, wanted, 64)` semantics: what follows the first NUL does not count.
    let mut key = [0u8; SESSION_NAME_LENGTH];
    let wanted = session::compared_name(&arg.name);
    key.get_mut(..wanted.len())
        .ok_or(EINVAL)?
        .copy_from_slice(wanted);
    let op = core.begin_op();
    let session = core
        .luo
        .lock()
        .incoming
        .as_ref()
        .and_then(|t| t.get(&key))
        .ok_or(ENOENT)?
        .clone();
    let mut inner = session.lock();
    if inner.retrieved {
        return Err(EINVAL);
    }
    // CAST: A reserved descriptor number fits in an `int`.
    arg.fd = fd.reserved_fd() as i32;
    ucmd.respond(&arg)?;
    let file = session_file(&session)?;
    inner.retrieved = true;
    drop(inner);
    drop(op);
    fd.fd_install(file);
    Ok(())
}

/// Registers `/dev/liveupdate` for the rest of the kernel's life.
pub(crate) fn register() -> Result {
    let reg = KBox::pin_init(
        MiscDeviceRegistration::<LuoDevice>::register(MiscDeviceOptions {
            name: c"liveupdate",
        }),
        GFP_KERNEL,
    )?;
    // The device is never unregistered, as the C implementation's static one: forgetting the
    // registration keeps it registered and its pinned memory allocated.
    core::mem::forget(reg);
    Ok(())
}
