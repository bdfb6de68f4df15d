// SPDX-License-Identifier: GPL-2.0
//! What both architectures' VMs share: guest RAM on the memfd, and a vCPU thread that
//! can be paused.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::guest::{self, word, Status};

/// Guest RAM: a mapping of the RAM memfd at guest physical [`guest::RAM_BASE`].
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
}

impl GuestRam {
    /// Map `ram` (a memfd of `size` bytes; the mapping holds a dup of it).
    pub fn map(ram: &OwnedFd, size: u64) -> Result<Self, String> {
        let len = usize::try_from(size).map_err(|_| "RAM size does not fit".to_string())?;
        let file = File::from(
            ram.try_clone()
                .map_err(|e| format!("dup of the RAM memfd: {e}"))?,
        );
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(guest::RAM_BASE),
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| format!("mapping guest RAM: {e}"))?;
        Ok(Self { mem, size })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Give the mapping to `vm` as memory slot 0.
    ///
    /// The caller must keep `self` until after `vm` is closed.
    pub fn register(&self, vm: &VmFd) -> Result<(), String> {
        let host = self
            .mem
            .get_host_address(GuestAddress(guest::RAM_BASE))
            .map_err(|e| format!("guest RAM: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: guest::RAM_BASE,
            memory_size: self.size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a mapping of `self.size` bytes owned by `self.mem`;
        // the callers (the architectures' `Vm`) drop the VM fd before `self` (field order).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))
    }

    /// Write `bytes` at `off` bytes into RAM.
    pub fn write(&self, off: u64, bytes: &[u8]) -> Result<(), String> {
        self.mem
            .write_slice(bytes, GuestAddress(guest::RAM_BASE + off))
            .map_err(|e| format!("writing guest RAM at {off:#x}: {e}"))
    }

    /// Load the guest: its code at the start of RAM, its seed and a region of `region_len`
    /// bytes at [`guest::REGION_OFF`] in its status block.
    pub fn load_guest(&self, seed: u64, region_len: u64) -> Result<(), String> {
        let code = guest::code();
        if code.len() as u64 > guest::CODE_MAX {
            return Err(format!(
                "the guest's code ({} bytes) overlaps its tables",
                code.len()
            ));
        }
        let end = guest::REGION_OFF.checked_add(region_len);
        if end.is_none_or(|e| e > self.size) || region_len % 8 != 0 {
            return Err(format!(
                "a region of {region_len} bytes does not fit {} bytes of RAM",
                self.size
            ));
        }
        self.write(0, code)?;
        self.set_status(word::SEED, seed)?;
        self.set_status(word::REGION_OFF, guest::REGION_OFF)?;
        self.set_status(word::REGION_LEN, region_len)
    }

    /// Set word `i` of the status block.
    pub fn set_status(&self, i: u64, v: u64) -> Result<(), String> {
        self.write(guest::STATUS + 8 * i, &v.to_le_bytes())
    }

    /// The guest's status block, as it is now (word by word, with atomic loads: the guest
    /// may be running).
    pub fn status(&self) -> Result<Status, String> {
        let mut w = [0u64; word::COUNT as usize];
        for (i, v) in w.iter_mut().enumerate() {
            let addr = GuestAddress(guest::RAM_BASE + guest::STATUS + 8 * i as u64);
            *v = self
                .mem
                .load(addr, Ordering::Acquire)
                .map_err(|e| format!("guest status: {e}"))?;
        }
        Ok(Status::from_words(&w))
    }

    /// The words of `len` bytes at `off` bytes into RAM.
    pub fn words(&self, off: u64, len: u64) -> Result<Vec<u64>, String> {
        let n = usize::try_from(len / 8).map_err(|_| "region too large".to_string())?;
        let mut bytes = vec![0u8; n * 8];
        self.mem
            .read_slice(&mut bytes, GuestAddress(guest::RAM_BASE + off))
            .map_err(|e| format!("reading guest RAM at {off:#x}: {e}"))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| c.iter().rev().fold(0u64, |w, &b| (w << 8) | u64::from(b)))
            .collect())
    }
}

/// A KVM error as "`what`: error".
pub fn kvm_err(what: &str) -> impl Fn(kvm_ioctls::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The vCPU's kick: KVM_RUN returns EINTR; nothing else to do.
extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the kick's handler (idempotent).
pub fn init_kick() -> Result<(), String> {
    register_signal_handler(SIGRTMIN(), kick).map_err(|e| format!("signal handler: {e}"))
}

/// The vCPU thread gives back the fd, and why it stopped if nobody asked it to (`None`: it
/// never got the fd).
type Stopped = Option<(VcpuFd, Option<String>)>;

/// A vCPU, either here or in KVM_RUN on its own thread.
pub struct Vcpu {
    fd: Option<VcpuFd>,
    running: Option<(Arc<AtomicBool>, JoinHandle<Stopped>)>,
}

impl Vcpu {
    pub fn new(fd: VcpuFd) -> Self {
        Self {
            fd: Some(fd),
            running: None,
        }
    }

    /// The vCPU's fd, while it is paused.
    pub fn fd(&self) -> Result<&VcpuFd, String> {
        self.fd
            .as_ref()
            .ok_or_else(|| "the vCPU is running".to_string())
    }

    /// Start KVM_RUN on a thread of its own. On failure the vCPU stays paused, here.
    pub fn resume(&mut self) -> Result<(), String> {
        if self.fd.is_none() {
            return Err("the vCPU is running already".into());
        }
        init_kick()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The fd goes to the thread once it exists, so a failed spawn keeps it here.
        let (tx, rx) = std::sync::mpsc::channel::<VcpuFd>();
        let thread = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                let mut vcpu = rx.recv().ok()?;
                loop {
                    if flag.load(Ordering::Acquire) {
                        return Some((vcpu, None));
                    }
                    let exit = match vcpu.run() {
                        Ok(VcpuExit::SystemEvent(t, d)) => format!("system event {t} {d:?}"),
                        Ok(exit) => format!("{exit:?}"),
                        Err(e) if e.errno() == libc::EINTR => continue,
                        Err(e) => format!("KVM_RUN: {e}"),
                    };
                    return Some((vcpu, Some(format!("the vCPU stopped: {exit}"))));
                }
            })
            .map_err(|e| format!("vCPU thread: {e}"))?;
        let fd = self.fd.take().ok_or("the vCPU is running already")?;
        if let Err(back) = tx.send(fd) {
            // The thread is gone already: the fd comes back in the error.
            self.fd = Some(back.0);
            let _ = thread.join();
            return Err("the vCPU thread ended before it started".into());
        }
        self.running = Some((stop, thread));
        Ok(())
    }

    /// Whether the vCPU thread is in its KVM_RUN loop (not paused, not stopped by an exit
    /// or an error).
    pub fn running(&self) -> bool {
        self.running.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    /// Stop the vCPU: returns once it is out of KVM_RUN, with the error that stopped it
    /// earlier if one did.
    pub fn pause(&mut self) -> Result<(), String> {
        let (stop, thread) = self.running.take().ok_or("the vCPU is not running")?;
        stop.store(true, Ordering::Release);
        // A kick that lands before KVM_RUN is entered is lost: kick until it is out.
        while !thread.is_finished() {
            // SAFETY: the thread is not joined yet, so its pthread_t is valid; SIGRTMIN's
            // handler (`kick`) is installed by `init_kick`, before any vCPU runs.
            let r = unsafe { libc::pthread_kill(thread.as_pthread_t(), SIGRTMIN()) };
            // ESRCH: it has just exited; the loop sees it finished.
            if r != 0 && r != libc::ESRCH {
                // The thread keeps the fd; leave it running, as before the call.
                stop.store(false, Ordering::Release);
                self.running = Some((stop, thread));
                return Err(format!(
                    "kicking the vCPU: {}",
                    std::io::Error::from_raw_os_error(r)
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let (fd, err) = thread
            .join()
            .map_err(|_| "the vCPU thread panicked".to_string())?
            .ok_or("the vCPU thread got no vCPU")?;
        self.fd = Some(fd);
        err.map_or(Ok(()), Err)
    }
}

impl Drop for Vcpu {
    /// A running vCPU is stopped and joined, so its fd (which keeps the VM and its memory
    /// slot alive in the kernel) is closed before the guest RAM mapping goes away.
    fn drop(&mut self) {
        if self.running.is_some() {
            // On a kick error there is nothing left to try: the process ends the thread.
            let _ = self.pause();
            if self.running.is_some() {
                std::process::abort();
            }
        }
    }
}

/// What the VMM does with either architecture's VM.
pub trait Machine {
    fn vcpu(&self) -> &Vcpu;
    fn vcpu_mut(&mut self) -> &mut Vcpu;
    fn ram(&self) -> &GuestRam;

    /// Start the vCPU (see [`Vcpu::resume`]).
    fn resume(&mut self) -> Result<(), String> {
        self.vcpu_mut().resume()
    }

    /// Stop the vCPU (see [`Vcpu::pause`]).
    fn pause(&mut self) -> Result<(), String> {
        self.vcpu_mut().pause()
    }

    /// Whether the vCPU is in KVM_RUN (resumed, and not stopped by an exit or error).
    fn running(&self) -> bool {
        self.vcpu().running()
    }
}
