// SPDX-License-Identifier: GPL-2.0
//! Keeping session fds open across the kexec in a detached child process.
//!
//! The kernel unpreserves an outgoing session when its last fd is closed, so something must
//! hold it until `reboot(KEXEC)`. A long-running VMM holds it itself; a short-lived agent hands
//! it to a holder. [`spawn`] re-executes the current program as that holder, with the fds
//! inherited; the program must call [`run_if_holder`] first thing in `main`.
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     liveupdate::holder::run_if_holder();
//!     // ... create a session, preserve fds ...
//!     # let session_fd: std::os::fd::OwnedFd = todo!();
//!     let pid = liveupdate::holder::spawn(vec![session_fd])?;
//!     println!("holder {pid} keeps the session open");
//!     Ok(())
//! }
//! ```

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::io::{fcntl_setfd, FdFlags};
use std::process::{Command, Stdio};

const ENV: &str = "LIVEUPDATE_HOLDER";

/// If this process was started by [`spawn`], become the holder: start a new session (so the
/// caller's terminal going away does not kill it) and wait forever. Otherwise return at once.
pub fn run_if_holder() {
    if std::env::var_os(ENV).is_none() {
        return;
    }
    rustix::process::setsid().ok();
    loop {
        std::thread::park();
    }
}

/// Start a detached holder that keeps `fds` open until it is killed; returns its pid.
///
/// Our copies of the fds are closed when this returns; the holder's stay open.
pub fn spawn(fds: Vec<OwnedFd>) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    for fd in &fds {
        // Inherited across exec: clear close-on-exec on our copy.
        fcntl_setfd(fd, FdFlags::empty())?;
    }
    let fd_list: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let child = Command::new(exe)
        .env(ENV, fd_list.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child.id())
}
