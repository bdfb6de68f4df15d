// SPDX-License-Identifier: GPL-2.0

//! The registered file handlers, the core's references to them, and the identities of the
//! preserved objects.
//!
//! Every file of a session holds a [`HandlerRef`]: a counted reference to its handler that also
//! holds a reference on the handler's module. Unregistering a handler stops new references from
//! being taken and waits until the last one is dropped, so the core never calls a handler that
//! its registrant may have freed; a handler in a module cannot reach that wait while it has
//! files, since they pin its module.

use crate::Core;
use core::ops::Deref;
use kernel::{
    bindings,
    fs::File,
    liveupdate::registered::{
        Handler,
        ModuleRef, //
    },
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
};

/// A registered handler and the number of [`HandlerRef`]s to it.
struct Registered {
    handler: Handler,
    users: usize,
    /// Cleared when the handler is being unregistered: no new reference is taken then.
    active: bool,
}

/// The registered handlers and the preserved objects.
pub(crate) struct Registry {
    /// In registration order, including handlers being unregistered.
    handlers: KVec<Registered>,
    /// Identities ([`Handler::id`]) of the objects preserved or retrieved in any session.
    preserved: RBTree<usize, ()>,
}

/// A reservation for recording one preserved object.
pub(crate) type IdReservation = RBTreeNodeReservation<usize, ()>;

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            handlers: KVec::new(),
            preserved: RBTree::new(),
        }
    }

    fn entry_mut(&mut self, handler: Handler) -> Option<&mut Registered> {
        self.handlers.iter_mut().find(|e| e.handler == handler)
    }

    /// Adds `handler`; [`EEXIST`] if a handler with its compatible string is registered or
    /// being unregistered.
    pub(crate) fn add(&mut self, handler: Handler) -> Result {
        if let Some(other) = self
            .handlers
            .iter()
            .find(|e| e.handler.compatible() == handler.compatible())
        {
            pr_err!(
                "File handler registration failed: Compatible string '{}' already registered.\n",
                other.handler.compatible_cstr()
            );
            return Err(EEXIST);
        }
        self.handlers.push(
            Registered {
                handler,
                users: 0,
                active: true,
            },
            GFP_KERNEL,
        )?;
        Ok(())
    }

    /// Returns the registered (and not unregistering) handler at `fh`.
    pub(crate) fn find_raw(&self, fh: *mut bindings::liveupdate_file_handler) -> Option<Handler> {
        self.handlers
            .iter()
            .find(|e| e.active && e.handler.as_raw() == fh)
            .map(|e| e.handler)
    }

    /// Takes a reference to the first registered handler for which `pred` holds; `None` if
    /// there is none or its module is going away.
    fn get_where(
        &mut self,
        core: &'static Core,
        mut pred: impl FnMut(&Handler) -> bool,
    ) -> Option<HandlerRef> {
        let e = self
            .handlers
            .iter_mut()
            .find(|e| e.active && pred(&e.handler))?;
        let module = e.handler.try_module_get()?;
        e.users += 1;
        // INVARIANT: Counted above.
        Some(HandlerRef {
            handler: e.handler,
            core,
            _module: module,
        })
    }

    /// Takes a reference to the first handler, in registration order, that can preserve `file`.
    pub(crate) fn preserver(&mut self, core: &'static Core, file: &File) -> Option<HandlerRef> {
        self.get_where(core, |h| h.can_preserve(file))
    }

    /// Takes a reference to the handler whose compatible string is `compatible`.
    pub(crate) fn by_compatible(
        &mut self,
        core: &'static Core,
        compatible: &[u8],
    ) -> Option<HandlerRef> {
        self.get_where(core, |h| h.compatible() == compatible)
    }

    /// Records that the object `id` is preserved, in the node `node`; [`EBUSY`] if it is
    /// already.
    pub(crate) fn add_id(&mut self, node: IdReservation, id: usize) -> Result {
        if self.preserved.get(&id).is_some() {
            return Err(EBUSY);
        }
        self.preserved.insert(node.into_node(id, ()));
        Ok(())
    }

    /// Forgets that the object `id` is preserved.
    pub(crate) fn remove_id(&mut self, id: usize) {
        self.preserved.remove(&id);
    }

    /// Returns the number of objects preserved or retrieved.
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn id_count(&self) -> usize {
        self.preserved.iter().count()
    }

    /// Returns whether the handler with `compatible` is being unregistered.
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn is_unregistering(&self, compatible: &[u8]) -> bool {
        self.handlers
            .iter()
            .any(|e| !e.active && e.handler.compatible() == compatible)
    }
}

/// Reserves the memory to record one preserved object.
pub(crate) fn reserve_id() -> Result<IdReservation> {
    RBTreeNodeReservation::new(GFP_KERNEL)
}

impl Core {
    /// Unregisters the handler at `fh`: no new file can use it, and this waits until the files
    /// that do are gone. Returns the handler, or `None` if it was not registered.
    pub(crate) fn unregister_handler(
        &self,
        fh: *mut bindings::liveupdate_file_handler,
    ) -> Option<Handler> {
        let mut reg = self.registry.lock();
        let e = reg
            .handlers
            .iter_mut()
            .find(|e| e.active && e.handler.as_raw() == fh)?;
        e.active = false;
        let handler = e.handler;
        if e.users > 0 {
            pr_warn!(
                "File handler '{}' unregistered with {} files: waiting for them\n",
                handler.compatible_cstr(),
                e.users
            );
        }
        while reg.entry_mut(handler).is_some_and(|e| e.users > 0) {
            self.wake.wait(&mut reg);
        }
        if let Some(i) = reg.handlers.iter().position(|e| e.handler == handler) {
            // `i` is in bounds: it was just found.
            let _ = reg.handlers.remove(i);
        }
        Some(handler)
    }
}

/// A counted reference to a registered handler, with a reference on its module.
///
/// # Invariants
///
/// `handler`'s entry in `core`'s registry counts this value in its `users`; the entry stays
/// until that count is 0.
pub(crate) struct HandlerRef {
    handler: Handler,
    core: &'static Core,
    /// Dropped after the count: the module outlives the core's last use of the handler.
    _module: ModuleRef,
}

impl Deref for HandlerRef {
    type Target = Handler;

    fn deref(&self) -> &Handler {
        &self.handler
    }
}

impl Drop for HandlerRef {
    fn drop(&mut self) {
        let mut reg = self.core.registry.lock();
        if let Some(e) = reg.entry_mut(self.handler) {
            e.users = e.users.saturating_sub(1);
            if e.users == 0 && !e.active {
                self.core.wake.notify_all();
            }
        }
    }
}
