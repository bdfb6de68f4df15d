// SPDX-License-Identifier: GPL-2.0
//! A VMM's guest RAM and the iommufd mapping it for a passthrough device, across a live update.
//!
//! ```text
//! vmm_iommufd preserve   # old kernel: map a memfd into an IOAS, preserve both, hold them
//! vmm_iommufd restore    # new kernel: get both back; the IOAS maps the same guest RAM
//! ```
//! Needs a kernel with `CONFIG_IOMMUFD_LIVEUPDATE` and `/dev/iommu`. The iommufd ioctls are
//! outside this crate; the example makes them with rustix's typed ioctl interface.

use liveupdate::iommufd::{preserve_iommufd, retrieve_iommufd};
use liveupdate::{Device, OutgoingSession, Token};
use std::os::fd::{AsFd, OwnedFd};

/// Old kernel: guest RAM under token 1, the iommufd mapping it (IOMMU_IOAS_MAP_FILE) under 2.
fn preserve_vm(
    dev: &Device,
    ram: &OwnedFd,
    iommu: &OwnedFd,
) -> liveupdate::Result<OutgoingSession> {
    let session = dev.create_session("vm-42")?;
    preserve_iommufd(&session, &[(Token(1), ram.as_fd())], iommu, Token(2))?;
    Ok(session)
}

/// New kernel: the same IOAS IDs mapping the same guest RAM; bind the VFIO device cdev to the
/// iommufd and attach it to the IOAS ID used before.
fn restore_vm(dev: &Device) -> liveupdate::Result<(OwnedFd, OwnedFd)> {
    let session = dev.retrieve_session("vm-42")?;
    let iommu = retrieve_iommufd(&session, Token(2))?;
    let ram = session.retrieve(Token(1))?;
    session.finish()?;
    Ok((ram, iommu))
}

mod ioas {
    //! IOMMU_IOAS_ALLOC and IOMMU_IOAS_MAP_FILE (include/uapi/linux/iommufd.h).
    use rustix::ioctl::{ioctl, Updater};
    use std::os::fd::AsFd;

    #[repr(C)]
    struct Alloc {
        size: u32,
        flags: u32,
        out_ioas_id: u32,
    }

    #[repr(C)]
    struct MapFile {
        size: u32,
        flags: u32,
        ioas_id: u32,
        fd: i32,
        start: u64,
        length: u64,
        iova: u64,
    }

    const IOMMUFD_TYPE: u8 = b';';
    const FIXED_IOVA: u32 = 1 << 0;
    const WRITEABLE: u32 = 1 << 1;
    const READABLE: u32 = 1 << 2;

    /// A new IOAS mapping `len` bytes of `memfd` at `iova`; returns its ID.
    pub fn map(iommu: impl AsFd, memfd: impl AsFd, len: u64, iova: u64) -> std::io::Result<u32> {
        let mut a = Alloc {
            size: size_of::<Alloc>() as u32,
            flags: 0,
            out_ioas_id: 0,
        };
        // SAFETY: IOMMU_IOAS_ALLOC = _IO(';', 0x81) takes a `struct iommu_ioas_alloc`, which
        // `Alloc` lays out.
        unsafe {
            ioctl(
                &iommu,
                Updater::<{ rustix::ioctl::opcode::none(IOMMUFD_TYPE, 0x81) }, _>::new(&mut a),
            )
        }?;
        let mut m = MapFile {
            size: size_of::<MapFile>() as u32,
            flags: FIXED_IOVA | READABLE | WRITEABLE,
            ioas_id: a.out_ioas_id,
            fd: rustix::fd::AsRawFd::as_raw_fd(&memfd.as_fd()),
            start: 0,
            length: len,
            iova,
        };
        // SAFETY: IOMMU_IOAS_MAP_FILE = _IO(';', 0x8f) takes a `struct iommu_ioas_map_file`,
        // which `MapFile` lays out.
        unsafe {
            ioctl(
                &iommu,
                Updater::<{ rustix::ioctl::opcode::none(IOMMUFD_TYPE, 0x8f) }, _>::new(&mut m),
            )
        }?;
        Ok(a.out_ioas_id)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    liveupdate::holder::run_if_holder();
    const SIZE: u64 = 64 << 20;
    let dev = Device::open()?;
    match std::env::args().nth(1).as_deref() {
        Some("preserve") => {
            let ram = liveupdate::memfd::create("guest-ram", SIZE)?;
            let iommu: OwnedFd = std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/iommu")?
                .into();
            let id = ioas::map(&iommu, &ram, SIZE, 1 << 32)?;
            let session = preserve_vm(&dev, &ram, &iommu)?;
            println!("preserved guest RAM and IOAS {id}; holding the session until the kexec");
            liveupdate::holder::spawn(vec![session.into_fd()])?;
        }
        Some("restore") => {
            let (_ram, _iommu) = restore_vm(&dev)?;
            println!("retrieved guest RAM and the iommufd: attach the device to IOAS 1");
        }
        _ => return Err("usage: vmm_iommufd preserve|restore".into()),
    }
    Ok(())
}
