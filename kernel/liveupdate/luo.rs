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
//! - [`block`]: chains of preserved pages that hold the serialized sessions and files;
//! - [`incoming`]: validation of the previous kernel's data;
//! - [`ffi`]: the C API of `include/linux/liveupdate.h`.
//!
//! # Locking
//!
//! All state of the core is in [`Luo`] behind the global mutex [`LUO`]: the registered handlers,
//! the sessions and their files. Every ioctl holds it for its whole duration, including the
//! handler calls it makes; FLB state has its own lock ([`flb::FLBS`]), always taken after
//! [`LUO`] when both are needed. Once `liveupdate_reboot()` has serialized the sessions, [`LUO`]
//! stays locked, so no session can change after its state was written for the next kernel.

use kernel::{
    liveupdate::{
        abi,
        handler::Handler,
        kho,
        SESSION_NAME_LENGTH, //
    },
    prelude::*,
    rbtree::RBTree,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
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

kernel::sync::global_lock! {
    // SAFETY: `luo_early_init()` initializes the lock before anything can use it: it runs at
    // early_initcall, before any handler can register or `/dev/liveupdate` exists.
    unsafe(uninit) static LUO: Mutex<Luo> = Luo::new();
}

/// The guard of [`LUO`]; functions that take it run with the core's state locked.
pub(crate) type LuoGuard = kernel::sync::lock::GlobalGuard<LUO>;

/// The state of the orchestrator.
pub(crate) struct Luo {
    /// Registered file handlers, in registration order.
    handlers: KVec<Handler>,
    /// Sessions created in this kernel, in creation order.
    outgoing: KVec<Arc<Session>>,
    /// Sessions restored from the previous kernel, by NUL-padded name; `None` until
    /// `/dev/liveupdate` was first opened.
    incoming: Option<RBTree<[u8; SESSION_NAME_LENGTH], Arc<Session>>>,
    /// Preserved pages for the outgoing sessions' serialized form, one entry per session.
    session_blocks: block::BlockSet,
    /// Identities ([`Handler::id`]) of the objects preserved or retrieved in any session.
    preserved: KVec<usize>,
    /// The outgoing `luo-v5` header (the "LUO" KHO subtree) and FLB page, once set up.
    out: Option<Outgoing>,
    /// The previous kernel's data, validated at early boot, until `/dev/liveupdate` is opened.
    pending: Option<incoming::Data>,
    /// The result of turning `pending` into incoming sessions, once tried: it is sticky.
    deserialized: Option<Result>,
    /// The previous kernel's live update count.
    liveupdate_num: u64,
    /// Whether `/dev/liveupdate` is open; it can be opened once at a time.
    device_open: bool,
}

/// The outgoing handover data that exists for the whole life of the kernel.
struct Outgoing {
    header: kho::Subtree,
    flbs: kho::PreservedMem,
}

impl Luo {
    const fn new() -> Self {
        Self {
            handlers: KVec::new(),
            outgoing: KVec::new(),
            incoming: None,
            session_blocks: block::BlockSet::new(size_of::<abi::SessionSer>()),
            preserved: KVec::new(),
            out: None,
            pending: None,
            deserialized: None,
            liveupdate_num: 0,
            device_open: false,
        }
    }

    /// Returns the first registered handler whose compatible string is `compatible`.
    fn handler_by_compatible(&self, compatible: &[u8]) -> Option<Handler> {
        self.handlers
            .iter()
            .copied()
            .find(|h| h.compatible() == compatible)
    }
}

/// Locks the orchestrator's state.
pub(crate) fn lock() -> LuoGuard {
    LUO.lock()
}

/// Reads the previous kernel's data; called once from `luo_init.c` at early_initcall.
///
/// # Safety
///
/// Must be called exactly once, before any other function of this crate.
#[export]
pub unsafe extern "C" fn luo_early_init(enabled: bool) -> c_int {
    // SAFETY: This is the only call, and it comes before any use of `LUO` (see the function's
    // safety requirements).
    unsafe { LUO.init() };
    // SAFETY: As above, for the FLB lock.
    unsafe { flb::init() };

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
    let mut luo = lock();
    if let Some(data) = data {
        luo.liveupdate_num = data.liveupdate_num;
        pr_info!(
            "Retrieved live update data, liveupdate number: {}\n",
            data.liveupdate_num
        );
        flb::set_incoming(&data.flbs);
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
    if !enabled() {
        return 0;
    }
    let res = setup_outgoing().and_then(|()| device::register());
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
fn setup_outgoing() -> Result {
    let mut luo = lock();
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
/// Each session's files are frozen in preservation order, sessions in creation order. If a
/// handler refuses, everything frozen so far is unfrozen in reverse order and the reboot fails
/// with its error. On success the state stays locked: nothing may change after it was written.
///
/// # Safety
///
/// Called by the kexec path only.
#[export]
pub unsafe extern "C" fn liveupdate_reboot() -> c_int {
    if !enabled() {
        return 0;
    }
    let mut luo = lock();
    match session::serialize(&mut luo) {
        Ok(()) => {
            #[cfg(CONFIG_LIVEUPDATE_CORRUPT_TEST)]
            corrupt::apply(&mut luo);
            // Keep the state locked until the kexec: every later session operation blocks,
            // as it does in the C implementation.
            core::mem::forget(luo);
            0
        }
        Err(e) => e.to_errno(),
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
