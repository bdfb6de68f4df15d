// SPDX-License-Identifier: GPL-2.0
//! A VMM's guest memory across a kernel live update, in about ten lines per side.
//!
//! ```text
//! guest_ram preserve   # old kernel: put "guest RAM" in a memfd, preserve it, hold the session
//! guest_ram restore    # new kernel: get the memfd back and check it
//! ```
//! `lu test` runs both sides across a real kexec on every kernel flavor and architecture.

use liveupdate::{Device, Token};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use std::os::fd::OwnedFd;

const GUEST_RAM: &[u8] = b"guest memory that must survive the kernel update";

/// Old kernel: preserve the guest's memfd; keep the returned session open until the kexec.
fn preserve(ram: &OwnedFd) -> liveupdate::Result<liveupdate::OutgoingSession> {
    let dev = Device::open()?;
    let session = dev.create_session("vm-42")?;
    session.preserve(ram, Token(1))?;
    Ok(session)
}

/// New kernel: retrieve the memfd and finish the session.
fn restore() -> liveupdate::Result<OwnedFd> {
    let dev = Device::open()?;
    let session = dev.retrieve_session("vm-42")?;
    let ram = session.retrieve(Token(1))?;
    session.finish()?;
    Ok(ram)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    liveupdate::holder::run_if_holder();
    match std::env::args().nth(1).as_deref() {
        Some("preserve") => {
            let ram = memfd_create("guest-ram", MemfdFlags::CLOEXEC)?;
            ftruncate(&ram, 4096)?;
            rustix::io::pwrite(&ram, GUEST_RAM, 0)?;
            let session = preserve(&ram)?;
            println!("guest_ram: preserved; holding the session until the kexec");
            // A VMM keeps running; here a detached child keeps the session open.
            liveupdate::holder::spawn(vec![session.into_fd()])?;
        }
        Some("restore") => {
            let ram = restore()?;
            let mut buf = vec![0u8; GUEST_RAM.len()];
            rustix::io::pread(&ram, &mut buf, 0)?;
            if buf != GUEST_RAM {
                return Err("guest memory changed across the update".into());
            }
            println!("guest_ram: restored, contents intact");
        }
        _ => return Err("usage: guest_ram preserve|restore".into()),
    }
    Ok(())
}
