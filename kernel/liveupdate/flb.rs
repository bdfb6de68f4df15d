// SPDX-License-Identifier: GPL-2.0

//! File-lifecycle-bound global state (FLB).
//!
//! An FLB is global state (say, an IOMMU's) that must be preserved while at least one file of
//! the handlers it is registered with is preserved. Its outgoing state is created by `preserve`
//! when the first such file is preserved and dropped by `unpreserve` with the last one; at
//! reboot, the FLBs with preserved files are written to the FLB page. In the next kernel, the
//! incoming state is created by `retrieve` on first use and ended by `finish` when the last
//! file that needed it is finished. At most [`abi::FLB_MAX`] FLBs can be registered.
//!
//! FLB state is behind [`crate::Core::flbs`], the last lock of the core; FLB operations run with
//! it held. An FLB with an outgoing or incoming object holds a reference on its module, and its
//! unregistration waits until the core no longer uses it.

use crate::incoming::{
    c_string,
    FlbEntry, //
};
use crate::Core;
use kernel::{
    liveupdate::{
        abi::{
            self,
            FlbHeader,
            FlbSer, //
        },
        registered::{
            Flb,
            FlbObject,
            Handler,
            ModuleRef, //
        },
    },
    prelude::*,
    transmute::AsBytes, //
};

/// The state of one FLB.
struct State {
    flb: Flb,
    /// Number of handlers the FLB is registered with.
    users: usize,
    out_count: u64,
    out_data: u64,
    out_obj: FlbObject,
    /// The module reference of the outgoing object, while there is one.
    out_module: Option<ModuleRef>,
    in_count: u64,
    in_data: u64,
    in_obj: FlbObject,
    /// 0 before retrieve, 1 once retrieved, or the sticky error of a failed retrieve.
    in_status: i32,
    in_finished: bool,
    /// The module reference of the incoming object, from retrieve to finish.
    in_module: Option<ModuleRef>,
}

impl State {
    /// Whether the core still has an object of the FLB, whose operations it will call.
    fn in_use(&self) -> bool {
        self.out_count > 0 || (self.in_status > 0 && !self.in_finished)
    }
}

/// Every FLB known to the core.
pub(crate) struct Registry {
    /// FLBs that were registered or looked up, in first-use order.
    states: KVec<State>,
    /// Registered FLBs, in registration order: the order of `preserve` and of the FLB page.
    order: KVec<Flb>,
    /// Handler-FLB links, in registration order.
    links: KVec<(Handler, Flb)>,
    /// The previous kernel's FLB page.
    incoming: KVec<FlbEntry>,
    /// Whether the previous kernel handed over an FLB page (empty or not).
    has_incoming: bool,
}

impl Registry {
    pub(crate) const fn new() -> Self {
        Self {
            states: KVec::new(),
            order: KVec::new(),
            links: KVec::new(),
            incoming: KVec::new(),
            has_incoming: false,
        }
    }

    fn find(&mut self, flb: Flb) -> Option<&mut State> {
        self.states.iter_mut().find(|s| s.flb == flb)
    }

    /// Returns the state of `flb`, created on first use.
    fn state(&mut self, flb: Flb) -> Result<&mut State> {
        if let Some(i) = self.states.iter().position(|s| s.flb == flb) {
            return self.states.get_mut(i).ok_or(EINVAL);
        }
        self.states.push(
            State {
                flb,
                users: 0,
                out_count: 0,
                out_data: 0,
                out_obj: FlbObject::NONE,
                out_module: None,
                in_count: 0,
                in_data: 0,
                in_obj: FlbObject::NONE,
                in_status: 0,
                in_finished: false,
                in_module: None,
            },
            GFP_KERNEL,
        )?;
        self.states.last_mut().ok_or(EINVAL)
    }
}

/// Records the previous kernel's FLB page.
pub(crate) fn set_incoming(core: &Core, entries: &[FlbEntry]) {
    let mut reg = core.flbs.lock();
    reg.has_incoming = true;
    reg.incoming.clear();
    if reg.incoming.extend_from_slice(entries, GFP_KERNEL).is_err() {
        pr_warn!("out of memory: the previous kernel's FLB data is dropped\n");
        reg.incoming.clear();
    }
}

/// Adds an FLB to the incoming state, as if the previous kernel had handed it over.
#[cfg(CONFIG_KUNIT)]
pub(crate) fn add_incoming_for_test(core: &Core, entry: FlbEntry) -> Result {
    Ok(core.flbs.lock().incoming.push(entry, GFP_KERNEL)?)
}

/// Writes an empty FLB page.
pub(crate) fn init_page(page: &mut [u8]) -> Result {
    let header = FlbHeader { pgcnt: 1, count: 0 };
    page.get_mut(..size_of::<FlbHeader>())
        .ok_or(EINVAL)?
        .copy_from_slice(header.as_bytes());
    Ok(())
}

/// Writes the FLBs that have preserved files into the FLB page, at reboot.
pub(crate) fn serialize(core: &Core, page: &mut [u8]) -> Result {
    let mut reg = core.flbs.lock();
    let reg = &mut *reg;
    let mut count = 0usize;
    for &flb in reg.order.iter() {
        let Some(state) = reg.states.iter().find(|s| s.flb == flb) else {
            continue;
        };
        if state.out_count == 0 {
            continue;
        }
        let ser = FlbSer {
            name: flb.compatible_field(),
            data: state.out_data,
            count: state.out_count,
        };
        let off = size_of::<FlbHeader>() + count * size_of::<FlbSer>();
        page.get_mut(off..off + size_of::<FlbSer>())
            .ok_or(ENOSPC)?
            .copy_from_slice(ser.as_bytes());
        count += 1;
    }
    let header = FlbHeader {
        pgcnt: 1,
        count: count as u64,
    };
    page.get_mut(..size_of::<FlbHeader>())
        .ok_or(EINVAL)?
        .copy_from_slice(header.as_bytes());
    Ok(())
}

fn preserve_one(state: &mut State) -> Result {
    if state.out_count > 0 {
        state.out_count += 1;
        return Ok(());
    }
    let module = state.flb.try_module_get().ok_or(ENODEV)?;
    let (data, obj) = state.flb.preserve()?;
    state.out_data = data;
    state.out_obj = obj;
    state.out_module = Some(module);
    state.out_count = 1;
    Ok(())
}

fn put_outgoing_locked(core: &Core, state: &mut State) {
    if state.out_count == 0 {
        pr_warn!("unbalanced put of an outgoing FLB\n");
        return;
    }
    state.out_count -= 1;
    if state.out_count == 0 {
        state.flb.unpreserve(state.out_data, state.out_obj);
        state.out_data = 0;
        state.out_obj = FlbObject::NONE;
        state.out_module = None;
        core.wake.notify_all();
    }
}

/// Returns the FLBs linked to `handler`, in link order.
fn linked(reg: &Registry, handler: Handler) -> Result<KVec<Flb>> {
    let mut flbs = KVec::new();
    for &(h, f) in reg.links.iter() {
        if h == handler {
            flbs.push(f, GFP_KERNEL)?;
        }
    }
    Ok(flbs)
}

/// The references of an outgoing file on the FLBs of its handler, dropped with the value.
///
/// It records the FLBs it took a reference on, and drops exactly those: an FLB linked to the
/// handler later is not the file's, and one unlinked meanwhile (its unregistration waits for
/// this) still is.
///
/// # Invariants
///
/// Holds one outgoing reference on each FLB of `flbs`.
pub(crate) struct OutgoingRefs {
    core: &'static Core,
    flbs: KVec<Flb>,
}

impl OutgoingRefs {
    /// Takes a reference on every FLB of `handler`, in link order; the first one on an FLB
    /// preserves it. On failure the references taken are dropped again, last first.
    pub(crate) fn take(core: &'static Core, handler: Handler) -> Result<Self> {
        let mut reg = core.flbs.lock();
        let flbs = linked(&reg, handler)?;
        for (i, &flb) in flbs.iter().enumerate() {
            let r = reg.find(flb).map_or(Err(EINVAL), preserve_one);
            if let Err(e) = r {
                for &taken in flbs.iter().take(i).rev() {
                    if let Some(state) = reg.find(taken) {
                        put_outgoing_locked(core, state);
                    }
                }
                return Err(e);
            }
        }
        // INVARIANT: Taken above.
        Ok(Self { core, flbs })
    }
}

impl Drop for OutgoingRefs {
    fn drop(&mut self) {
        let mut reg = self.core.flbs.lock();
        for &flb in self.flbs.iter().rev() {
            if let Some(state) = reg.find(flb) {
                put_outgoing_locked(self.core, state);
            }
        }
    }
}

/// The FLBs whose incoming references an incoming file drops when it is finished: those linked
/// to its handler when the file was bound to it, recorded then for the same reason as in
/// [`OutgoingRefs`].
pub(crate) struct IncomingFlbs(KVec<Flb>);

impl IncomingFlbs {
    /// Records the FLBs linked to `handler`.
    pub(crate) fn of(core: &Core, handler: Handler) -> Result<Self> {
        Ok(Self(linked(&core.flbs.lock(), handler)?))
    }

    /// Drops the incoming references of a finished file, in reverse link order.
    pub(crate) fn finish(self, core: &Core) {
        let mut reg = core.flbs.lock();
        for &flb in self.0.iter().rev() {
            put_incoming_locked(core, &mut reg, flb);
        }
    }
}

fn retrieve_locked(reg: &mut Registry, flb: Flb) -> Result {
    let entry = reg
        .incoming
        .iter()
        .find(|e| c_string(&e.compatible) == Some(flb.compatible()))
        .copied();
    let has_incoming = reg.has_incoming;
    let state = reg.state(flb)?;
    if state.in_finished {
        return Err(ENODATA);
    }
    if state.in_status < 0 {
        return Err(Error::from_errno(state.in_status));
    }
    if state.in_status > 0 {
        return Ok(());
    }
    let Some(entry) = entry else {
        return Err(if has_incoming { ENOENT } else { ENODATA });
    };
    let module = flb.try_module_get().ok_or(ENODEV)?;
    state.in_data = entry.data;
    state.in_count = entry.count;
    // The previous kernel's data is handed to one retrieve only, even if the FLB is unregistered
    // and registered again.
    if let Some(i) = reg
        .incoming
        .iter()
        .position(|e| c_string(&e.compatible) == Some(flb.compatible()))
    {
        // `i` is in bounds: it was just found.
        let _ = reg.incoming.remove(i);
    }
    let Some(state) = reg.find(flb) else {
        return Err(EINVAL);
    };
    match flb.retrieve(entry.data) {
        Ok(obj) => {
            state.in_obj = obj;
            state.in_status = 1;
            state.in_module = Some(module);
            Ok(())
        }
        Err(e) => {
            state.in_status = e.to_errno();
            Err(e)
        }
    }
}

fn put_incoming_locked(core: &Core, reg: &mut Registry, flb: Flb) {
    // The incoming count comes from the previous kernel: retrieve first if nobody did, so that
    // a put before any get counts down from it instead of finishing at once.
    if reg.find(flb).is_none_or(|s| s.in_status <= 0) {
        match retrieve_locked(reg, flb) {
            Ok(()) => {}
            // The previous kernel had no state for this FLB: there is nothing to finish.
            Err(e) if e == ENOENT || e == ENODATA => return,
            Err(e) => {
                pr_warn!(
                    "cannot retrieve FLB '{}' to finish it: {:?}\n",
                    kernel::str::BStr::from_bytes(flb.compatible()),
                    e
                );
                return;
            }
        }
    }
    let Some(state) = reg.find(flb) else {
        return;
    };
    if state.in_count == 0 {
        pr_warn!(
            "unbalanced put of incoming FLB '{}'\n",
            kernel::str::BStr::from_bytes(flb.compatible())
        );
        return;
    }
    state.in_count -= 1;
    if state.in_count > 0 {
        return;
    }
    flb.finish(state.in_obj);
    state.in_data = 0;
    state.in_obj = FlbObject::NONE;
    state.in_finished = true;
    state.in_module = None;
    core.wake.notify_all();
}

/// `liveupdate_flb_get_incoming()`: the incoming object of `flb`, retrieved on first use.
pub(crate) fn get_incoming(core: &Core, flb: Flb) -> Result<FlbObject> {
    let mut reg = core.flbs.lock();
    let needs = reg.find(flb).is_none_or(|s| s.in_obj.is_none());
    if needs {
        retrieve_locked(&mut reg, flb)?;
    }
    let state = reg.state(flb)?;
    state.in_count += 1;
    Ok(state.in_obj)
}

/// `liveupdate_flb_put_incoming()`: drops a reference; the last one finishes the FLB.
pub(crate) fn put_incoming(core: &Core, flb: Flb) {
    put_incoming_locked(core, &mut core.flbs.lock(), flb);
}

/// `liveupdate_flb_get_outgoing()`: the outgoing object of `flb`, [`ENOENT`] if not preserved.
pub(crate) fn get_outgoing(core: &Core, flb: Flb) -> Result<FlbObject> {
    let mut reg = core.flbs.lock();
    let state = reg
        .find(flb)
        .filter(|s| !s.out_obj.is_none())
        .ok_or(ENOENT)?;
    state.out_count += 1;
    Ok(state.out_obj)
}

/// `liveupdate_flb_put_outgoing()`: drops a reference; the last one unpreserves the FLB.
pub(crate) fn put_outgoing(core: &Core, flb: Flb) {
    if let Some(state) = core.flbs.lock().find(flb) {
        put_outgoing_locked(core, state);
    }
}

/// Links `flb` to the registered `handler`.
pub(crate) fn register(core: &Core, handler: Handler, flb: Flb) -> Result {
    let mut reg = core.flbs.lock();
    if reg.links.iter().any(|&(h, f)| h == handler && f == flb) {
        return Err(EEXIST);
    }
    let users = reg.find(flb).map_or(0, |s| s.users);
    if users == 0 {
        if reg.order.len() >= abi::FLB_MAX {
            return Err(ENOSPC);
        }
        if reg.order.iter().any(|f| f.compatible() == flb.compatible()) {
            return Err(EEXIST);
        }
    }
    reg.links.reserve(1, GFP_KERNEL)?;
    reg.order.reserve(1, GFP_KERNEL)?;
    let state = reg.state(flb)?;
    state.users += 1;
    let first = state.users == 1;
    // Both pushes are within the capacity reserved above.
    if first {
        let _ = reg.order.push_within_capacity(flb);
    }
    let _ = reg.links.push_within_capacity((handler, flb));
    Ok(())
}

/// Unlinks `flb` from `handler`; returns whether it was the FLB's last link.
fn unregister_locked(reg: &mut Registry, handler: Handler, flb: Flb) -> bool {
    let Some(i) = reg
        .links
        .iter()
        .position(|&(h, f)| h == handler && f == flb)
    else {
        pr_warn!(
            "Failed to unregister FLB '{}': not found in file handler '{}'\n",
            kernel::str::BStr::from_bytes(flb.compatible()),
            handler.compatible_cstr()
        );
        return false;
    };
    // `i` is in bounds: it was just found.
    let _ = reg.links.remove(i);
    let Some(state) = reg.find(flb) else {
        return false;
    };
    state.users = state.users.saturating_sub(1);
    if state.users > 0 {
        return false;
    }
    if let Some(i) = reg.order.iter().position(|&f| f == flb) {
        // `i` is in bounds: it was just found.
        let _ = reg.order.remove(i);
    }
    true
}

/// Unlinks `flb` from `handler`. After its last link, waits until the core no longer uses its
/// objects, then forgets it: its registrant may free it.
pub(crate) fn unregister(core: &Core, handler: Handler, flb: Flb) {
    let mut reg = core.flbs.lock();
    if !unregister_locked(&mut reg, handler, flb) {
        return;
    }
    while reg.find(flb).is_some_and(|s| s.in_use()) {
        core.wake.wait(&mut reg);
    }
    // Unless it was registered again while this waited.
    if let Some(i) = reg.states.iter().position(|s| s.flb == flb && s.users == 0) {
        // `i` is in bounds: it was just found.
        let _ = reg.states.remove(i);
    }
}

/// Unlinks every FLB of `handler`, which is being unregistered and has no file left.
pub(crate) fn unregister_all(core: &Core, handler: Handler) {
    loop {
        let flb = {
            let reg = core.flbs.lock();
            reg.links
                .iter()
                .rev()
                .find(|(h, _)| *h == handler)
                .map(|&(_, f)| f)
        };
        match flb {
            Some(flb) => unregister(core, handler, flb),
            None => break,
        }
    }
}
