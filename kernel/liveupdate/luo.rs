// SPDX-License-Identifier: GPL-2.0

//! The Live Update Orchestrator (LUO).
//!
//! LUO lets a userspace agent (a VMM, systemd) keep file descriptors alive across a kexec into a
//! new kernel: it creates named sessions on `/dev/liveupdate`, preserves files in them under
//! tokens, reboots with `kexec`, and retrieves the files by session name and token in the next
//! kernel. File handlers (memfd, ...) preserve the objects behind the files; FLBs carry global
//! state that lives as long as one of their files does. Everything crosses the kexec as the
//! `luo-v5` handover ABI in memory preserved by Kexec HandOver (KHO).
//!
//! The crate's modules follow the objects:
//!
//! - [`device`]: `/dev/liveupdate` and its ioctls;
//! - [`session`]: outgoing and incoming sessions and their file descriptors;
//! - [`file`]: the preserved files of a session and the order of handler calls;
//! - [`flb`]: file-lifecycle-bound global state;
//! - [`registry`]: the registered file handlers and the identities of preserved objects;
//! - [`block`]: chains of preserved pages that hold the serialized sessions and files;
//! - [`incoming`]: validation of the previous kernel's data;
//! - [`ffi`]: the C API of `include/linux/liveupdate.h`.
//!
//! # Locking
//!
//! The core's state is in one [`Core`], made at early boot, with a lock per kind of state. In
//! the order in which they nest:
//!
//! 1. [`Core::luo`]: the device-level state ([`Luo`]): the lists of outgoing and incoming
//!    sessions, the previous kernel's data, the outgoing header. Held briefly: never across a
//!    handler callback or a user copy, except at reboot, when it is held while the sessions are
//!    frozen (as upstream holds its serialize rwsem).
//! 2. [`session::Session`]'s mutex: one session's files. Held for a whole session ioctl,
//!    including the handler callbacks and the reply's user copy, as upstream holds its session
//!    mutex: operations on different sessions run in parallel.
//! 3. [`Core::registry`]: the registered handlers, the references the core holds on them and the
//!    identities of the preserved objects. Held briefly, while `can_preserve` runs at most.
//! 4. [`Core::flbs`]: FLB state; FLB callbacks run with it held.
//!
//! `CREATE_SESSION`, `RETRIEVE_SESSION`, every session ioctl but `GET_NAME`, and the release of a
//! session are operations ([`Core::begin_op`]):
//! `liveupdate_reboot()` stops new operations, waits for the running ones, and on success never
//! lets another start, so no session changes after it was written for the next kernel (as
//! upstream's serialize rwsem does). [`Core::wake`] is the condition of every wait: operations
//! waiting to start, reboot waiting for operations, and unregistration waiting for a handler's or
//! an FLB's last user.

use kernel::{
    liveupdate::{
        abi,
        kho,
        SESSION_NAME_LENGTH, //
    },
    new_condvar, new_mutex,
    prelude::*,
    rbtree::RBTree,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex,
        SetOnce, //
    },
    transmute::AsBytes,
};

mod block;
#[cfg(CONFIG_LIVEUPDATE_CORRUPT_TEST)]
mod corrupt;
mod device;
mod ffi;
mod file;
mod flb;
mod incoming;
mod registry;
mod session;

use session::Session;

const __LOG_PREFIX: &[u8] = b"luo\0";

/// The owner of the crate's file operations: built-in code has no module.
pub(crate) struct LocalModule;

impl kernel::ModuleMetadata for LocalModule {
    const NAME: &'static CStr = c"luo";

    const THIS_MODULE: kernel::ThisModule = {
        // SAFETY: `try_module_get`/`module_put` handle null module pointers gracefully.
        unsafe { kernel::ThisModule::from_ptr(core::ptr::null_mut()) }
    };
}

/// Whether live update is enabled: `liveupdate=on` and KHO enabled. Set once at early boot.
static ENABLED: Atomic<bool> = Atomic::new(false);

/// Returns whether live update is enabled.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// The core's state, made once by [`luo_early_init`].
static CORE: SetOnce<Pin<KBox<Core>>> = SetOnce::new();

/// The state of the orchestrator; see the crate documentation for its locks.
#[pin_data]
pub(crate) struct Core {
    /// The device-level state.
    #[pin]
    pub(crate) luo: Mutex<Luo>,
    /// The registered handlers and the preserved objects.
    #[pin]
    pub(crate) registry: Mutex<registry::Registry>,
    /// The FLBs.
    #[pin]
    pub(crate) flbs: Mutex<flb::Registry>,
    /// Signalled when an operation ends, a reboot is aborted, or a handler or FLB loses a user.
    #[pin]
    pub(crate) wake: CondVar,
}

impl Core {
    /// Returns the core's state; `None` only before [`luo_early_init`] made it (or if it could
    /// not).
    pub(crate) fn get() -> Option<&'static Core> {
        CORE.as_ref().map(|core| core.as_ref().get_ref())
    }

    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            luo <- new_mutex!(Luo::new(), "Core::luo"),
            registry <- new_mutex!(registry::Registry::new(), "Core::registry"),
            flbs <- new_mutex!(flb::Registry::new(), "Core::flbs"),
            wake <- new_condvar!("Core::wake"),
        })
    }

    /// Starts a session operation: waits while a reboot is serializing the sessions, forever
    /// once one has.
    pub(crate) fn begin_op(&'static self) -> Op {
        let mut luo = self.luo.lock();
        while luo.frozen {
            self.wake.wait(&mut luo);
        }
        luo.ops += 1;
        // INVARIANT: Counted above.
        Op { core: self }
    }
}

/// A running session operation, which a reboot waits for.
///
/// # Invariants
///
/// Counted in `core`'s [`Luo::ops`].
pub(crate) struct Op {
    core: &'static Core,
}

impl Drop for Op {
    fn drop(&mut self) {
        let mut luo = self.core.luo.lock();
        luo.ops = luo.ops.saturating_sub(1);
        if luo.ops == 0 {
            self.core.wake.notify_all();
        }
    }
}

/// The device-level state of the orchestrator.
pub(crate) struct Luo {
    /// Sessions created in this kernel, in creation order.
    pub(crate) outgoing: KVec<Arc<Session>>,
    /// Sessions restored from the previous kernel, by NUL-padded name; `None` until
    /// `/dev/liveupdate` was first opened.
    pub(crate) incoming: Option<RBTree<[u8; SESSION_NAME_LENGTH], Arc<Session>>>,
    /// Preserved pages for the outgoing sessions' serialized form, one entry per session.
    pub(crate) session_blocks: block::BlockSet,
    /// The outgoing `luo-v5` header (the "LUO" KHO subtree) and FLB page, once set up.
    out: Option<Outgoing>,
    /// The previous kernel's data, validated at early boot, until `/dev/liveupdate` is opened.
    pub(crate) pending: Option<incoming::Data>,
    /// The result of turning `pending` into incoming sessions, once tried: it is sticky.
    deserialized: Option<Result>,
    /// The previous kernel's live update count.
    liveupdate_num: u64,
    /// Whether `/dev/liveupdate` is open; it can be opened once at a time.
    pub(crate) device_open: bool,
    /// Whether a reboot is serializing, or has serialized, the sessions: no operation starts.
    frozen: bool,
    /// The number of running session operations ([`Op`]).
    ops: usize,
}

/// The outgoing handover data that exists for the whole life of the kernel.
struct Outgoing {
    header: kho::Subtree,
    flbs: kho::PreservedMem,
}

impl Luo {
    pub(crate) const fn new() -> Self {
        Self {
            outgoing: KVec::new(),
            incoming: None,
            session_blocks: block::BlockSet::new(size_of::<abi::SessionSer>()),
            out: None,
            pending: None,
            deserialized: None,
            liveupdate_num: 0,
            device_open: false,
            frozen: false,
            ops: 0,
        }
    }
}

/// Makes the core's state and reads the previous kernel's data; called once from `luo_init.c`
/// at early_initcall.
///
/// # Safety
///
/// Must be called exactly once, before any other function of this crate.
#[export]
pub unsafe extern "C" fn luo_early_init(enabled: bool) -> c_int {
    let core = match KBox::pin_init(Core::new(), GFP_KERNEL) {
        Ok(core) => core,
        Err(e) => {
            pr_err!("cannot allocate the live update state: {:?}\n", e);
            return e.to_errno();
        }
    };
    if !CORE.populate(core) {
        return EBUSY.to_errno();
    }
    let Some(core) = Core::get() else {
        return EINVAL.to_errno();
    };

    if !kho::is_enabled() {
        if enabled {
            pr_warn!("Disabling liveupdate because KHO is disabled\n");
        }
        return 0;
    }
    if !enabled {
        return 0;
    }
    ENABLED.store(true, Relaxed);

    let data = incoming::Data::retrieve();
    let mut luo = core.luo.lock();
    if let Some(data) = data {
        luo.liveupdate_num = data.liveupdate_num;
        pr_info!(
            "Retrieved live update data, liveupdate number: {}\n",
            data.liveupdate_num
        );
        flb::set_incoming(core, &data.flbs);
        luo.pending = Some(data);
    }
    0
}

/// Prepares the outgoing data and registers `/dev/liveupdate`; called from `luo_init.c` at
/// late_initcall.
///
/// # Safety
///
/// Must be called once, after [`luo_early_init`].
#[export]
pub unsafe extern "C" fn luo_late_init() -> c_int {
    let Some(core) = Core::get().filter(|_| enabled()) else {
        return 0;
    };
    let res = setup_outgoing(core).and_then(|()| device::register());
    match res {
        Ok(()) => 0,
        Err(e) => {
            pr_err!("failed to prepare the outgoing live update data: {:?}\n", e);
            ENABLED.store(false, Relaxed);
            e.to_errno()
        }
    }
}

/// Allocates the outgoing `luo-v5` header and FLB page, and names the header in KHO.
fn setup_outgoing(core: &Core) -> Result {
    let mut luo = core.luo.lock();
    let mut flbs = kho::PreservedMem::new(abi::BLOCK_SIZE)?;
    flb::init_page(flbs.as_mut_slice())?;

    let mut header_mem = kho::PreservedMem::new(size_of::<abi::LuoSer>())?;
    let header = abi::LuoSer {
        compatible: abi::COMPATIBLE.map(|b| c_char::from_ne_bytes([b])),
        liveupdate_num: luo.liveupdate_num + 1,
        sessions_pa: 0,
        flbs_pa: flbs.phys(),
    };
    header_mem
        .as_mut_slice()
        .get_mut(..size_of::<abi::LuoSer>())
        .ok_or(EINVAL)?
        .copy_from_slice(header.as_bytes());
    let header = kho::Subtree::add(abi::KHO_ENTRY_NAME, header_mem, size_of::<abi::LuoSer>())?;
    luo.out = Some(Outgoing { header, flbs });
    Ok(())
}

/// Serializes every outgoing session for the next kernel; called by `kernel_kexec()`.
///
/// New session operations wait, and the running ones are waited for. Each session's files are
/// then frozen in preservation order, sessions in creation order. If a handler refuses,
/// everything frozen so far is unfrozen in reverse order, the waiting operations go on, and the
/// reboot fails with its error. On success no session operation starts again: nothing may
/// change after it was written, as in the C implementation.
///
/// # Safety
///
/// Called by the kexec path only.
#[export]
pub unsafe extern "C" fn liveupdate_reboot() -> c_int {
    let Some(core) = Core::get().filter(|_| enabled()) else {
        return 0;
    };
    let mut luo = core.luo.lock();
    luo.frozen = true;
    while luo.ops > 0 {
        core.wake.wait(&mut luo);
    }
    match session::serialize(core, &mut luo) {
        Ok(()) => {
            #[cfg(CONFIG_LIVEUPDATE_CORRUPT_TEST)]
            corrupt::apply(&mut luo);
            0
        }
        Err(e) => {
            luo.frozen = false;
            core.wake.notify_all();
            e.to_errno()
        }
    }
}

/// Returns whether live update is enabled (`liveupdate=on` on a kernel with KHO).
///
/// # Safety
///
/// Any context may call it.
#[export]
pub unsafe extern "C" fn liveupdate_enabled() -> bool {
    enabled()
}
