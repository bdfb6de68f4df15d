// SPDX-License-Identifier: GPL-2.0

//! Live update of iommufds: the `iommufd-ioas-v1` file handler of the Live Update Orchestrator.
//!
//! A VMM with passthrough devices keeps guest RAM in memfds and maps it into the IO address
//! spaces (IOASes) of an iommufd with `IOMMU_IOAS_MAP_FILE`. With this handler the VMM
//! preserves the memfds, then the iommufd, in one session; after the kexec it retrieves an
//! iommufd whose IOASes have the same object IDs, allowed IOVA ranges and areas, backed by the
//! retrieved memfds, binds its VFIO device cdev to it and attaches the device to the IOAS ID it
//! used before. Nothing is copied and nothing is pinned until a device attaches, so a sparse
//! memfd stays sparse. The format is in `include/linux/kho/abi/iommufd.h`; the contract with
//! userspace in `Documentation/userspace-api/iommufd_liveupdate.rst`.
//!
//! PRESERVE_FD refuses, changing nothing:
//!
//! - `EOPNOTSUPP`: an object that is not carried and cannot be dropped: an HWPT the VMM
//!   allocated (a paging domain other than the automatic one of an attached device, a nested
//!   one), a vIOMMU, vdevice, fault or event queue, hardware queue, or an emulated device's
//!   access. Bound devices and their automatic domains are allowed and not carried: the device
//!   DMAs until the reboot stops it and is bound again after.
//! - `EXDEV`: an area that maps something other than a file (user memory mapped with
//!   `IOMMU_IOAS_MAP`, a dma-buf): it cannot outlive the process.
//! - `ENOENT`: an area whose file is not preserved in the same session, before the iommufd.
//! - `EOPNOTSUPP` too: an option the format does not carry (`IOMMU_OPTION_RLIMIT_MODE` set to
//!   per-process accounting, the VFIO container emulation, `IOMMU_OPTION_HUGE_PAGES` off).
//! - `EBUSY`: an area being mapped or unmapped by another thread.
//!
//! The IOASes may change after PRESERVE_FD: `freeze` reads them again at reboot and the next
//! kernel gets what they held then; a change that cannot be carried fails the reboot with the
//! errno above. The dependencies the core records (which memfds cannot be unpreserved first)
//! are those found at PRESERVE_FD.

use kernel::{
    alloc::{
        KVec,
        VVec, //
    },
    fs::File,
    iommufd::{
        abi,
        Contents,
        IovaRange,
        NewIommufd,
        ObjectKind,
        Prot, //
    },
    liveupdate::{
        handler::{
            FileHandler,
            FileHandlerRegistration,
            IncomingSession,
            OutgoingSession,
            RetrieveStatus, //
        },
        kho::{
            KhoVmalloc,
            PreservedMem,
            PreservedVVec,
            RestoredMem,
            RestoredVmalloc, //
        },
        memfd::Memfd,
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        Mutex, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
};

module! {
    type: IommufdLuo,
    name: "iommufd_luo",
    authors: ["The Live Update in Rust authors"],
    description: "Live update support for iommufd IO address spaces (iommufd-ioas-v1)",
    license: "GPL",
}

struct IommufdHandler;

struct IommufdLuo {
    _registration: Option<Pin<KBox<FileHandlerRegistration<IommufdHandler>>>>,
}

impl kernel::Module for IommufdLuo {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        match KBox::pin_init(FileHandlerRegistration::register(), GFP_KERNEL) {
            Ok(registration) => Ok(Self {
                _registration: Some(registration),
            }),
            // Live update is disabled.
            Err(e) if e == EOPNOTSUPP => Ok(Self {
                _registration: None,
            }),
            Err(e) => {
                pr_err!(
                    "Could not register the iommufd live update handler: {:?}\n",
                    e
                );
                Err(e)
            }
        }
    }
}

const HEADER: usize = size_of::<abi::Header>();
const IOAS: usize = size_of::<abi::Ioas>();
const RANGE: usize = size_of::<abi::Range>();
const AREA: usize = size_of::<abi::Area>();

/// Appends the bytes of `value` to `out`.
fn put<T: AsBytes>(out: &mut KVec<u8>, value: &T) -> Result {
    out.extend_from_slice(value.as_bytes(), GFP_KERNEL)?;
    Ok(())
}

/// The serialized IOASes: the header's counts and the arrays.
#[derive(PartialEq, Eq)]
struct Encoded {
    nr_ioas: u32,
    nr_ranges: u32,
    nr_areas: u32,
    arrays: KVec<u8>,
}

/// Serializes the IOASes of `contents`; `token_of` gives the token of an area's file.
fn encode(contents: &Contents, token_of: impl Fn(&File) -> Result<u64>) -> Result<Encoded> {
    if contents
        .objects
        .iter()
        .any(|&(_, kind)| kind == ObjectKind::Other)
    {
        return Err(EOPNOTSUPP);
    }
    let mut ranges = KVec::new();
    let mut areas = KVec::new();
    let mut ioases = KVec::new();
    for ioas in contents.ioas.iter() {
        for r in ioas.allowed.iter() {
            put(
                &mut ranges,
                &abi::Range {
                    start: r.start,
                    last: r.last,
                },
            )?;
        }
        for a in ioas.areas.iter() {
            let file = a.file.as_ref().ok_or(EXDEV)?;
            let mut flags = 0;
            if a.prot.read {
                flags |= abi::AREA_READ;
            }
            if a.prot.write {
                flags |= abi::AREA_WRITE;
            }
            put(
                &mut areas,
                &abi::Area {
                    iova: a.iova,
                    length: a.length,
                    token: token_of(file)?,
                    offset: a.offset,
                    flags,
                    reserved: 0,
                },
            )?;
        }
        put(
            &mut ioases,
            &abi::Ioas {
                id: ioas.id,
                nr_ranges: u32::try_from(ioas.allowed.len())?,
                nr_areas: u32::try_from(ioas.areas.len())?,
                reserved: 0,
            },
        )?;
    }
    let mut arrays = KVec::with_capacity(ioases.len() + ranges.len() + areas.len(), GFP_KERNEL)?;
    arrays.extend_from_slice(&ioases, GFP_KERNEL)?;
    arrays.extend_from_slice(&ranges, GFP_KERNEL)?;
    arrays.extend_from_slice(&areas, GFP_KERNEL)?;
    Ok(Encoded {
        nr_ioas: u32::try_from(contents.ioas.len())?,
        nr_ranges: u32::try_from(ranges.len() / RANGE)?,
        nr_areas: u32::try_from(areas.len() / AREA)?,
        arrays,
    })
}

/// Reads the IOASes of the iommufd `file` and serializes them, with the tokens of their files
/// in `session`.
fn capture(session: &OutgoingSession<'_>, file: &File) -> Result<Encoded> {
    let contents = Contents::read(file)?;
    encode(&contents, |f| session.token_of(f))
}

/// An area of a preserved IOAS, as the next kernel reads it.
#[derive(Debug, PartialEq, Eq)]
struct PlanArea {
    iova: u64,
    length: u64,
    token: u64,
    offset: u64,
    prot: Prot,
}

/// A preserved IOAS, as the next kernel reads it.
struct PlanIoas {
    id: u32,
    allowed: KVec<IovaRange>,
    areas: KVec<PlanArea>,
}

/// Returns entry `i` of the array of `T` at byte `start` of `bytes`.
fn entry<T: FromBytes>(bytes: &[u8], start: usize, i: usize) -> Result<T> {
    let size = size_of::<T>();
    let at = i
        .checked_mul(size)
        .and_then(|o| o.checked_add(start))
        .ok_or(EINVAL)?;
    let end = at.checked_add(size).ok_or(EINVAL)?;
    T::from_bytes_copy(bytes.get(at..end).ok_or(EINVAL)?).ok_or(EINVAL)
}

/// Parses and checks a preserved iommufd, its `header` and its `arrays`: everything but the
/// tokens, which only the session can check.
fn parse(header: &abi::Header, arrays: &[u8]) -> Result<KVec<PlanIoas>> {
    if header.flags != 0 {
        return Err(EINVAL);
    }
    let nr_ioas = usize::try_from(header.nr_ioas)?;
    let nr_ranges = usize::try_from(header.nr_ranges)?;
    let nr_areas = usize::try_from(header.nr_areas)?;
    let ranges_at = nr_ioas.checked_mul(IOAS).ok_or(EINVAL)?;
    let areas_at = nr_ranges
        .checked_mul(RANGE)
        .and_then(|n| n.checked_add(ranges_at))
        .ok_or(EINVAL)?;
    let end = nr_areas
        .checked_mul(AREA)
        .and_then(|n| n.checked_add(areas_at))
        .ok_or(EINVAL)?;
    if end > arrays.len() {
        return Err(EINVAL);
    }
    let bytes = arrays;

    let mut plan = KVec::with_capacity(nr_ioas, GFP_KERNEL)?;
    let (mut range, mut area, mut last_id) = (0usize, 0usize, 0u32);
    for i in 0..nr_ioas {
        let ioas: abi::Ioas = entry(bytes, 0, i)?;
        // IDs are in increasing order, so each is used once.
        if ioas.reserved != 0 || ioas.id <= last_id {
            return Err(EINVAL);
        }
        last_id = ioas.id;
        let n = usize::try_from(ioas.nr_ranges)?;
        let mut allowed = KVec::with_capacity(n.min(nr_ranges), GFP_KERNEL)?;
        for _ in 0..n {
            if range == nr_ranges {
                return Err(EINVAL);
            }
            let r: abi::Range = entry(bytes, ranges_at, range)?;
            range += 1;
            allowed.push(
                IovaRange {
                    start: r.start,
                    last: r.last,
                },
                GFP_KERNEL,
            )?;
        }
        let n = usize::try_from(ioas.nr_areas)?;
        let mut areas = KVec::with_capacity(n.min(nr_areas), GFP_KERNEL)?;
        for _ in 0..n {
            if area == nr_areas {
                return Err(EINVAL);
            }
            let a: abi::Area = entry(bytes, areas_at, area)?;
            area += 1;
            if a.reserved != 0 || a.flags == 0 || a.flags & !(abi::AREA_READ | abi::AREA_WRITE) != 0
            {
                return Err(EINVAL);
            }
            areas.push(
                PlanArea {
                    iova: a.iova,
                    length: a.length,
                    token: a.token,
                    offset: a.offset,
                    prot: Prot {
                        read: a.flags & abi::AREA_READ != 0,
                        write: a.flags & abi::AREA_WRITE != 0,
                    },
                },
                GFP_KERNEL,
            )?;
        }
        plan.push(
            PlanIoas {
                id: ioas.id,
                allowed,
                areas,
            },
            GFP_KERNEL,
        )?;
    }
    if range != nr_ranges || area != nr_areas {
        return Err(EINVAL);
    }
    Ok(plan)
}

/// Builds the iommufd of `plan`, with the files of `session`.
fn rebuild(session: &IncomingSession<'_>, plan: &[PlanIoas]) -> Result<ARef<File>> {
    let mut new = NewIommufd::new()?;
    for ioas in plan {
        new.add_ioas(ioas.id, &ioas.allowed)?;
        for a in ioas.areas.iter() {
            let file = session.file(a.token)?;
            // Only memfds can be mapped with IOMMU_IOAS_MAP_FILE and pinned.
            Memfd::from_preserved(&file).ok_or(EINVAL)?;
            new.map_file(ioas.id, a.iova, a.length, &file, a.offset, a.prot)?;
        }
    }
    Ok(new.into_file())
}

/// What the handler keeps for a preserved iommufd.
struct State {
    /// The `struct iommufd_ioas_luo_ser`, at the start of the block.
    ser: PreservedMem,
    /// The arrays, if there is an IOAS: preserved while this lives; the header points to them.
    _arrays: Option<PreservedVVec<u8>>,
    /// What was serialized.
    encoded: Encoded,
}

impl State {
    fn new(encoded: Encoded) -> Result<Self> {
        let mut ser = PreservedMem::new(HEADER)?;
        let mut header = abi::Header {
            nr_ioas: encoded.nr_ioas,
            nr_ranges: encoded.nr_ranges,
            nr_areas: encoded.nr_areas,
            flags: 0,
            arrays: pin_init::zeroed(),
        };
        let arrays = if encoded.arrays.is_empty() {
            None
        } else {
            let mut v = VVec::with_capacity(encoded.arrays.len(), GFP_KERNEL)?;
            v.extend_from_slice(&encoded.arrays, GFP_KERNEL)?;
            let arrays = PreservedVVec::new(v)?;
            header.arrays = arrays.descriptor().into();
            Some(arrays)
        };
        ser.as_mut_slice()
            .get_mut(..HEADER)
            .ok_or(EINVAL)?
            .copy_from_slice(header.as_bytes());
        Ok(Self {
            ser,
            _arrays: arrays,
            encoded,
        })
    }
}

/// Reads the header of a preserved iommufd and maps its arrays again; both are freed when
/// dropped.
///
/// The arrays' descriptor must describe exactly the pages the header's counts need, as this
/// handler writes it, and be empty without an IOAS; anything else is refused before KHO reads
/// it.
fn restore(data: u64) -> Result<(abi::Header, Option<RestoredVmalloc>)> {
    let ser = RestoredMem::restore(data)?;
    let header: abi::Header = entry(ser.as_slice(), 0, 0)?;
    let desc = KhoVmalloc::from(header.arrays);
    let bytes = arrays_len(&header).ok_or(EINVAL)?;
    let pages = bytes.div_ceil(PAGE_SIZE);
    if usize::try_from(desc.total_pages()) != Ok(pages) {
        return Err(EINVAL);
    }
    let arrays = if pages == 0 {
        None
    } else {
        Some(RestoredVmalloc::restore(&desc)?)
    };
    Ok((header, arrays))
}

/// The bytes of the arrays the header's counts describe.
fn arrays_len(header: &abi::Header) -> Option<usize> {
    let ioas = usize::try_from(header.nr_ioas).ok()?.checked_mul(IOAS)?;
    let ranges = usize::try_from(header.nr_ranges).ok()?.checked_mul(RANGE)?;
    let areas = usize::try_from(header.nr_areas).ok()?.checked_mul(AREA)?;
    ioas.checked_add(ranges)?.checked_add(areas)
}

#[vtable]
impl FileHandler for IommufdHandler {
    const COMPATIBLE: &'static CStr = abi::COMPATIBLE;
    type Private = Pin<KBox<Mutex<State>>>;

    fn can_preserve(file: &File) -> bool {
        kernel::iommufd::is_iommufd(file)
    }

    fn preserve(session: &OutgoingSession<'_>, file: &File) -> Result<(u64, Self::Private)> {
        let state = State::new(capture(session, file)?)?;
        let data = state.ser.phys();
        let private = KBox::pin_init(new_mutex!(state), GFP_KERNEL)?;
        Ok((data, private))
    }

    fn unpreserve(
        _session: &OutgoingSession<'_>,
        _file: &File,
        _data: u64,
        private: Self::Private,
    ) {
        drop(private);
    }

    fn freeze(
        session: &OutgoingSession<'_>,
        file: &File,
        data: u64,
        private: Pin<&Mutex<State>>,
    ) -> Result<u64> {
        let encoded = capture(session, file)?;
        let mut state = private.lock();
        if state.encoded == encoded {
            return Ok(data);
        }
        // Changed since PRESERVE_FD: the next kernel gets the new contents. The old blocks are
        // freed only once the new ones are preserved.
        let new = State::new(encoded)?;
        let data = new.ser.phys();
        *state = new;
        Ok(data)
    }

    fn retrieve(session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
        let (header, arrays) = restore(data)?;
        let bytes = arrays.as_ref().map_or(&[][..], |a| a.as_slice());
        let plan = parse(&header, bytes).inspect_err(|e| {
            pr_err!("refusing a preserved iommufd: {:?}\n", e);
        })?;
        drop(arrays);
        rebuild(session, &plan).inspect_err(|e| {
            pr_err!("failed to retrieve an iommufd: {:?}\n", e);
        })
    }

    fn finish(
        _session: &IncomingSession<'_>,
        _file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    ) {
        // A retrieve, successful or not, freed the blocks.
        if status == RetrieveStatus::NotRetrieved && restore(data).is_err() {
            pr_warn!("cannot free the state of an iommufd at {:#x}\n", data);
        }
    }
}

#[kunit_tests(iommufd_luo)]
mod tests {
    use super::*;
    use kernel::iommufd::{
        Area,
        Ioas, //
    };

    fn kvec<T: Clone>(items: &[T]) -> Result<KVec<T>> {
        let mut v = KVec::new();
        v.extend_from_slice(items, GFP_KERNEL)?;
        Ok(v)
    }

    fn ioas(id: u32, allowed: &[IovaRange], areas: KVec<Area>) -> Result<Ioas> {
        Ok(Ioas {
            id,
            allowed: kvec(allowed)?,
            areas,
        })
    }

    const RW: Prot = Prot {
        read: true,
        write: true,
    };
    const RO: Prot = Prot {
        read: true,
        write: false,
    };

    /// IOAS 2 with two ranges and two areas of `file`, IOAS 5 empty, a device and its domain.
    fn two_ioas(file: &ARef<File>) -> Result<Encoded> {
        let area = |iova, length, offset, prot| Area {
            iova,
            length,
            file: Some(file.clone()),
            offset,
            prot,
        };
        let areas = kvec(&[
            area(1 << 32, 64 << 20, 0, RW),
            area((1 << 32) + (256 << 20), 1 << 20, 16 << 20, RO),
        ])?;
        let ranges = [
            IovaRange {
                start: 0x1000,
                last: 0x1fff,
            },
            IovaRange {
                start: 1 << 32,
                last: (2 << 32) - 1,
            },
        ];
        let mut list = KVec::new();
        list.push(ioas(2, &ranges, areas)?, GFP_KERNEL)?;
        list.push(ioas(5, &[], KVec::new())?, GFP_KERNEL)?;
        let c = Contents {
            objects: kvec(&[
                (2, ObjectKind::Ioas),
                (3, ObjectKind::Device),
                (4, ObjectKind::AutoHwpt),
                (5, ObjectKind::Ioas),
            ])?,
            ioas: list,
        };
        encode(&c, |_| Ok(0x1234_5678_9abc))
    }

    fn header(e: &Encoded) -> abi::Header {
        abi::Header {
            nr_ioas: e.nr_ioas,
            nr_ranges: e.nr_ranges,
            nr_areas: e.nr_areas,
            flags: 0,
            arrays: pin_init::zeroed(),
        }
    }

    fn a_file() -> Result<ARef<File>> {
        Ok(NewIommufd::new()?.into_file())
    }

    #[test]
    fn round_trip() -> Result {
        let e = two_ioas(&a_file()?)?;
        assert_eq!((e.nr_ioas, e.nr_ranges, e.nr_areas), (2, 2, 2));
        assert_eq!(e.arrays.len(), 2 * IOAS + 2 * RANGE + 2 * AREA);
        assert_eq!(arrays_len(&header(&e)), Some(e.arrays.len()));
        let huge = abi::Header {
            nr_areas: u32::MAX,
            ..header(&e)
        };
        assert_eq!(
            arrays_len(&huge),
            Some(2 * IOAS + 2 * RANGE + u32::MAX as usize * AREA)
        );
        let plan = parse(&header(&e), &e.arrays)?;
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].id, 2);
        assert_eq!(plan[0].allowed[1].start, 1 << 32);
        assert_eq!(plan[0].allowed[1].last, (2 << 32) - 1);
        assert_eq!(
            plan[0].areas[1],
            PlanArea {
                iova: (1 << 32) + (256 << 20),
                length: 1 << 20,
                token: 0x1234_5678_9abc,
                offset: 16 << 20,
                prot: RO,
            }
        );
        assert_eq!(plan[0].areas[0].prot, RW);
        assert_eq!(plan[1].id, 5);
        assert!(plan[1].allowed.is_empty() && plan[1].areas.is_empty());
        // Restored memory is page-sized: trailing bytes are ignored.
        let mut padded = kvec(&e.arrays)?;
        padded.extend_from_slice(&[0xff; 64], GFP_KERNEL)?;
        assert_eq!(parse(&header(&e), &padded)?.len(), 2);
        Ok(())
    }

    #[test]
    fn refusals() -> Result {
        let c = Contents {
            objects: kvec(&[(1, ObjectKind::Ioas), (2, ObjectKind::Other)])?,
            ioas: KVec::new(),
        };
        assert_eq!(encode(&c, |_| Ok(1)).err(), Some(EOPNOTSUPP));
        let user = Area {
            iova: 0,
            length: 4096,
            file: None,
            offset: 0,
            prot: RO,
        };
        let mut list = KVec::new();
        list.push(ioas(1, &[], kvec(&[user])?)?, GFP_KERNEL)?;
        let c = Contents {
            objects: kvec(&[(1, ObjectKind::Ioas)])?,
            ioas: list,
        };
        assert_eq!(encode(&c, |_| Ok(1)).err(), Some(EXDEV));
        // The session's answer for a file it does not hold is passed on.
        let file = a_file()?;
        let mut list = KVec::new();
        let area = Area {
            iova: 0,
            length: 4096,
            file: Some(file),
            offset: 0,
            prot: RO,
        };
        list.push(ioas(1, &[], kvec(&[area])?)?, GFP_KERNEL)?;
        let c = Contents {
            objects: kvec(&[(1, ObjectKind::Ioas)])?,
            ioas: list,
        };
        assert_eq!(encode(&c, |_| Err(ENOENT)).err(), Some(ENOENT));
        Ok(())
    }

    #[test]
    fn corrupt() -> Result {
        let e = two_ioas(&a_file()?)?;
        let h = header(&e);
        let good = &e.arrays[..];
        let bad = |h: &abi::Header, b: &[u8]| parse(h, b).err() == Some(EINVAL);
        // Truncated.
        assert!(bad(&h, &good[..good.len() - 1]));
        // Unknown header flag.
        assert!(bad(&abi::Header { flags: 1, ..h }, good));
        // IDs out of order (5 then 2) and repeated (2 then 2).
        let mut b = kvec(good)?;
        b[0] = 5;
        b[IOAS] = 2;
        assert!(bad(&h, &b));
        let mut b = kvec(good)?;
        b[IOAS] = 2;
        assert!(bad(&h, &b));
        // Per-IOAS range counts that do not add up to the header's.
        let mut b = kvec(good)?;
        b[4] = 1;
        assert!(bad(&h, &b));
        // Counts far beyond the arrays.
        assert!(bad(
            &abi::Header {
                nr_areas: u32::MAX,
                ..h
            },
            good
        ));
        // An area with no permission, an unknown flag, a reserved field set.
        let area0 = 2 * IOAS + 2 * RANGE;
        for (at, v) in [(32, 0u8), (32, 4), (36, 1)] {
            let mut b = kvec(good)?;
            b[area0 + at] = v;
            assert!(bad(&h, &b));
        }
        // A reserved field of an IOAS set.
        let mut b = kvec(good)?;
        b[12] = 1;
        assert!(bad(&h, &b));
        Ok(())
    }

    #[test]
    fn new_iommufd_ids() -> Result {
        let mut new = NewIommufd::new()?;
        let none: [IovaRange; 0] = [];
        assert_eq!(new.add_ioas(0, &none).err(), Some(EINVAL));
        assert_eq!(new.add_ioas(1 << 31, &none).err(), Some(EINVAL));
        new.add_ioas(3, &none)?;
        new.add_ioas(1, &none)?;
        assert_eq!(new.add_ioas(3, &none).err(), Some(EBUSY));
        let r = |start, last| IovaRange { start, last };
        assert_eq!(new.add_ioas(7, &[r(0x2000, 0x1000)]).err(), Some(EINVAL));
        assert_eq!(
            new.add_ioas(7, &[r(0x1000, 0x2fff), r(0x2000, 0x3fff)])
                .err(),
            Some(EINVAL)
        );
        // The refused ID is still free.
        new.add_ioas(7, &[r(0x1000, 0x1fff), r(1 << 32, (2 << 32) - 1)])?;
        new.add_ioas(i32::MAX as u32, &none)?;
        // Mapping into an ID that is no IOAS.
        let file = a_file()?;
        assert_eq!(
            new.map_file(2, 0x10000, 4096, &file, 0, RW).err(),
            Some(ENOENT)
        );
        let c = Contents::read(&new.into_file())?;
        let ids: KVec<u32> = {
            let mut v = KVec::new();
            for i in c.ioas.iter() {
                v.push(i.id, GFP_KERNEL)?;
            }
            v
        };
        assert_eq!(&ids[..], &[1, 3, 7, i32::MAX as u32]);
        assert_eq!(c.ioas[2].allowed.len(), 2);
        assert_eq!(c.ioas[2].allowed[1].start, 1 << 32);
        Ok(())
    }
}
