// SPDX-License-Identifier: GPL-2.0

//! iommufd, as its live update handler sees it.
//!
//! C header: [`include/linux/iommufd_luo.h`](srctree/include/linux/iommufd_luo.h), the narrow
//! interface of `drivers/iommu/iommufd/liveupdate.c`.
//!
//! [`Contents::read`] reports the objects of an iommufd and the IO address spaces (IOASes) in
//! it: their allowed IOVA ranges and their mapped areas. [`NewIommufd`] builds a new iommufd
//! with IOASes at given object IDs. The handover format of the handler, `iommufd-ioas-v1`, is
//! in [`abi`].

use crate::{
    alloc::KVec,
    bindings,
    error::{from_err_ptr, to_result},
    fs::File,
    prelude::*,
    sync::aref::ARef,
};
use core::ptr::NonNull;

/// The handover format of the iommufd live update handler, `iommufd-ioas-v1`.
///
/// C header: [`include/linux/kho/abi/iommufd.h`](srctree/include/linux/kho/abi/iommufd.h)
///
/// All structs are packed and made of integers, so any bytes of the right length are a value:
/// the next kernel reads them with [`FromBytes`](crate::transmute::FromBytes) and checks every
/// field.
pub mod abi {
    use crate::bindings;

    pub use bindings::{
        iommufd_ioas_luo_area as Area,
        iommufd_ioas_luo_ioas as Ioas,
        iommufd_ioas_luo_range as Range,
        iommufd_ioas_luo_ser as Header, //
    };

    /// The compatible string of the format.
    pub const COMPATIBLE: &crate::str::CStr = c"iommufd-ioas-v1";

    /// [`Area::flags`]: the device may read.
    pub const AREA_READ: u32 = bindings::IOMMUFD_IOAS_LUO_AREA_READ;
    /// [`Area::flags`]: the device may write.
    pub const AREA_WRITE: u32 = bindings::IOMMUFD_IOAS_LUO_AREA_WRITE;

    crate::liveupdate::abi::abi_struct!(
        iommufd_ioas_luo_ser: 32,
        iommufd_ioas_luo_ioas: 16,
        iommufd_ioas_luo_range: 16,
        iommufd_ioas_luo_area: 40,
    );
}

/// What an object of an iommufd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// An IO address space.
    Ioas,
    /// A device bound to the iommufd.
    Device,
    /// The paging domain iommufd made for a device attached to an IOAS.
    AutoHwpt,
    /// Anything else: user-allocated or nested HWPTs, vIOMMUs, vdevices, fault and event
    /// queues, accesses of emulated devices, ...
    Other,
}

/// An inclusive IOVA range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IovaRange {
    /// The first IOVA.
    pub start: u64,
    /// The last IOVA.
    pub last: u64,
}

/// Whether a device may read and write an area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    /// The device may read.
    pub read: bool,
    /// The device may write.
    pub write: bool,
}

impl Prot {
    fn from_c(prot: u32) -> Self {
        Self {
            read: prot & bindings::IOMMUFD_LUO_READ != 0,
            write: prot & bindings::IOMMUFD_LUO_WRITE != 0,
        }
    }

    fn to_c(self) -> u32 {
        let mut prot = 0;
        if self.read {
            prot |= bindings::IOMMUFD_LUO_READ;
        }
        if self.write {
            prot |= bindings::IOMMUFD_LUO_WRITE;
        }
        prot
    }
}

/// A mapped range of an IOAS.
#[derive(Clone)]
pub struct Area {
    /// The first IOVA.
    pub iova: u64,
    /// The length in bytes.
    pub length: u64,
    /// The file mapped with `IOMMU_IOAS_MAP_FILE`, or `None` for anything else (user memory
    /// mapped with `IOMMU_IOAS_MAP`, a dma-buf).
    pub file: Option<ARef<File>>,
    /// The byte offset in `file` mapped at `iova`.
    pub offset: u64,
    /// What the device may do.
    pub prot: Prot,
}

/// An IO address space and what it holds.
pub struct Ioas {
    /// Its object ID.
    pub id: u32,
    /// Its allowed IOVA ranges, in IOVA order; empty if it has none.
    pub allowed: KVec<IovaRange>,
    /// Its areas, in IOVA order.
    pub areas: KVec<Area>,
}

/// The objects of an iommufd and the contents of its IOASes.
pub struct Contents {
    /// The objects, in ID order.
    pub objects: KVec<(u32, ObjectKind)>,
    /// The IOASes, in ID order.
    pub ioas: KVec<Ioas>,
}

/// Returns whether `file` is an iommufd.
pub fn is_iommufd(file: &File) -> bool {
    // SAFETY: `file` is a valid file.
    unsafe { bindings::iommufd_luo_is_iommufd(file.as_ptr()) }
}

impl Contents {
    /// Reads the objects of the iommufd `file` and the contents of its IOASes.
    ///
    /// Each IOAS is a consistent snapshot; objects made or destroyed meanwhile may be missed.
    /// Fails with [`EBADFD`] if `file` is not an iommufd, [`EOPNOTSUPP`] if it uses an option
    /// the handover does not carry (`IOMMU_OPTION_RLIMIT_MODE` per process, the VFIO container
    /// emulation, `IOMMU_OPTION_HUGE_PAGES` off), [`EBUSY`] if an area is being mapped or
    /// unmapped, and [`EINTR`] if the task is killed while it waits for an IOAS.
    pub fn read(file: &File) -> Result<Self> {
        let mut contents = Contents {
            objects: KVec::new(),
            ioas: KVec::new(),
        };
        let visitor = bindings::iommufd_luo_visitor {
            object: Some(Self::object),
            allowed: Some(Self::allowed),
            area: Some(Self::area),
        };
        // SAFETY: `file` is valid; the callbacks get `contents` back as `priv` during this call
        // only, while nothing else uses it.
        to_result(unsafe {
            bindings::iommufd_luo_walk(
                file.as_ptr(),
                &visitor,
                core::ptr::from_mut(&mut contents).cast(),
            )
        })?;
        Ok(contents)
    }

    /// # Safety
    ///
    /// `priv_` is the `Contents` of a running [`Contents::read`].
    unsafe extern "C" fn object(
        priv_: *mut c_void,
        id: u32,
        kind: bindings::iommufd_luo_object,
    ) -> c_int {
        // SAFETY: The caller guarantees that `priv_` is the `Contents` of `read`, not otherwise
        // in use during the callback.
        let contents = unsafe { &mut *priv_.cast::<Contents>() };
        let kind = match kind {
            bindings::iommufd_luo_object_IOMMUFD_LUO_OBJ_IOAS => ObjectKind::Ioas,
            bindings::iommufd_luo_object_IOMMUFD_LUO_OBJ_DEVICE => ObjectKind::Device,
            bindings::iommufd_luo_object_IOMMUFD_LUO_OBJ_AUTO_HWPT => ObjectKind::AutoHwpt,
            _ => ObjectKind::Other,
        };
        let res = (|| -> Result {
            contents.objects.push((id, kind), GFP_KERNEL)?;
            if kind == ObjectKind::Ioas {
                contents.ioas.push(
                    Ioas {
                        id,
                        allowed: KVec::new(),
                        areas: KVec::new(),
                    },
                    GFP_KERNEL,
                )?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::object`]; `range` is valid during the call.
    unsafe extern "C" fn allowed(
        priv_: *mut c_void,
        range: *const bindings::iommufd_luo_range,
    ) -> c_int {
        // SAFETY: As in `object`.
        let contents = unsafe { &mut *priv_.cast::<Contents>() };
        // SAFETY: The caller guarantees that `range` is valid for reads.
        let range = unsafe { &*range };
        let Some(ioas) = contents.ioas.last_mut() else {
            return EINVAL.to_errno();
        };
        let range = IovaRange {
            start: range.start,
            last: range.last,
        };
        match ioas.allowed.push(range, GFP_KERNEL) {
            Ok(()) => 0,
            Err(e) => Error::from(e).to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`Self::object`]; `area` and the file it names are valid during the call.
    unsafe extern "C" fn area(
        priv_: *mut c_void,
        area: *const bindings::iommufd_luo_area,
    ) -> c_int {
        // SAFETY: As in `object`.
        let contents = unsafe { &mut *priv_.cast::<Contents>() };
        // SAFETY: The caller guarantees that `area` is valid for reads.
        let area = unsafe { &*area };
        let Some(ioas) = contents.ioas.last_mut() else {
            return EINVAL.to_errno();
        };
        let file = NonNull::new(area.file).map(|file| {
            // SAFETY: The caller guarantees that the file is valid during the call; no fdget_pos
            // region is involved.
            let file = unsafe { File::from_raw_file(file.as_ptr()) };
            // Keep it beyond the call.
            ARef::from(file)
        });
        let area = Area {
            iova: area.iova,
            length: area.length,
            file,
            offset: area.offset,
            prot: Prot::from_c(area.prot),
        };
        match ioas.areas.push(area, GFP_KERNEL) {
            Ok(()) => 0,
            Err(e) => Error::from(e).to_errno(),
        }
    }
}

/// A new iommufd, being filled before anyone else sees it.
///
/// Its methods take `&mut self`: the C functions behind them expect the iommufd to have no other
/// user.
///
/// # Invariants
///
/// `file` came from `iommufd_luo_create()` and is not shared: no file descriptor or other
/// reference to it exists outside this value.
pub struct NewIommufd {
    file: ARef<File>,
}

impl NewIommufd {
    /// Creates an empty iommufd, as if `/dev/iommu` was opened.
    pub fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let raw = unsafe { bindings::iommufd_luo_create() };
        let raw = from_err_ptr(raw).map(NonNull::new)?.ok_or(ENOMEM)?;
        // SAFETY: `iommufd_luo_create()` returned a new file holding one reference, which we now
        // own. `File` is a transparent wrapper of `struct file`.
        let file = unsafe { ARef::from_raw(raw.cast::<File>()) };
        // INVARIANT: Created just now, not shared.
        Ok(Self { file })
    }

    /// Adds an IOAS with object ID `id` and the allowed IOVA ranges `allowed`.
    ///
    /// Fails with [`EINVAL`] for ID 0 or one above `i32::MAX` and for empty, reversed or
    /// overlapping ranges, and with [`EBUSY`] if `id` is taken.
    pub fn add_ioas(&mut self, id: u32, allowed: &[IovaRange]) -> Result {
        let mut ranges = KVec::with_capacity(allowed.len(), GFP_KERNEL)?;
        for r in allowed {
            ranges.push(
                bindings::iommufd_luo_range {
                    start: r.start,
                    last: r.last,
                },
                GFP_KERNEL,
            )?;
        }
        let nr = u32::try_from(ranges.len()).map_err(|_| EINVAL)?;
        // SAFETY: By the type invariants, `self.file` is an unshared iommufd; `ranges` holds
        // `nr` entries.
        to_result(unsafe {
            bindings::iommufd_luo_add_ioas(self.file.as_ptr(), id, ranges.as_ptr(), nr)
        })
    }

    /// Maps `length` bytes of `file` from byte `offset` at `iova` in the IOAS `id`, as
    /// `IOMMU_IOAS_MAP_FILE` with a fixed IOVA does; nothing is pinned until a device
    /// attaches.
    pub fn map_file(
        &mut self,
        id: u32,
        iova: u64,
        length: u64,
        file: &File,
        offset: u64,
        prot: Prot,
    ) -> Result {
        // SAFETY: By the type invariants, `self.file` is an unshared iommufd; `file` is valid
        // and the mapping takes its own reference.
        to_result(unsafe {
            bindings::iommufd_luo_map_file(
                self.file.as_ptr(),
                id,
                iova,
                length,
                file.as_ptr(),
                offset,
                prot.to_c(),
            )
        })
    }

    /// Returns the iommufd, to be handed out.
    pub fn into_file(self) -> ARef<File> {
        self.file
    }
}
