// SPDX-License-Identifier: GPL-2.0
//! The arm64 VM: guest RAM from a memfd, one vCPU, an in-kernel vGICv3 and the arch timer.
//!
//! Saving reads every register KVM lists (KVM_GET_REG_LIST: the core registers, the system
//! registers with the timer's, the firmware pseudo-registers) and the vGIC's distributor,
//! redistributor and CPU-interface registers; restoring writes them back into a new VM of the
//! same layout, with the guest's virtual counter moved on by the time the host spent.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    kvm_userspace_memory_region, kvm_vcpu_init, RegList, KVM_ARM_VCPU_PSCI_0_2,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
    KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG, KVM_REG_ARM_CORE,
    KVM_REG_SIZE_U64, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::guest::{self, word, Status};
use crate::snapshot::{from_hex, reg_size, to_hex, GicReg, Reg, Snapshot, FORMAT};

/// Where the vGIC's frames are (as on QEMU's `-M virt`): guest-arm64.s programs them.
const GICD_BASE: u64 = 0x0800_0000;
const GICR_BASE: u64 = 0x080a_0000;
/// Interrupts of the vGIC: the 32 private ones and 32 SPIs.
const NR_IRQS: u32 = 64;

/// `ARM64_SYS_REG(op0, op1, crn, crm, op2)` of the KVM API.
const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG as u64
        | (op0 << 14)
        | (op1 << 11)
        | (crn << 7)
        | (crm << 3)
        | op2
}

/// The guest's virtual count; writing it sets the VM's counter offset.
const TIMER_CNT: u64 = sys_reg(3, 3, 14, 3, 2);
/// The guest's physical count (when KVM lists it, it follows the host's counter).
const PTIMER_CNT: u64 = sys_reg(3, 3, 14, 0, 1);
const MPIDR_EL1: u64 = sys_reg(3, 0, 0, 0, 5);
/// The PC: `offsetof(struct kvm_regs, regs.pc) / 4` in the core register space.
const CORE_PC: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (256 / 4);

/// `KVM_DEV_ARM_VGIC_SYSREG(op0, op1, crn, crm, op2)`: a CPU-interface register.
const fn icc(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

/// The CPU-interface registers, in the order they are restored (SRE and CTLR first, they
/// decide how the others read).
const ICC_REGS: [(&str, u64); 9] = [
    ("ICC_SRE_EL1", icc(3, 0, 12, 12, 5)),
    ("ICC_CTLR_EL1", icc(3, 0, 12, 12, 4)),
    ("ICC_PMR_EL1", icc(3, 0, 4, 6, 0)),
    ("ICC_BPR0_EL1", icc(3, 0, 12, 8, 3)),
    ("ICC_BPR1_EL1", icc(3, 0, 12, 12, 3)),
    ("ICC_IGRPEN0_EL1", icc(3, 0, 12, 12, 6)),
    ("ICC_IGRPEN1_EL1", icc(3, 0, 12, 12, 7)),
    ("ICC_AP0R0_EL1", icc(3, 0, 12, 8, 4)),
    ("ICC_AP1R0_EL1", icc(3, 0, 12, 9, 0)),
];

/// A 32-bit register with set/clear halves (ISENABLER/ICENABLER, ISPENDR/ICPENDR,
/// ISACTIVER/ICACTIVER): restored by clearing what is not set, then setting what is.
struct SetClear {
    set: u64,
    clear: u64,
}

/// The SPIs' distributor registers (the private interrupts' are the redistributor's).
fn dist_plain() -> Vec<u64> {
    let mut v = vec![0x0000]; // GICD_CTLR
    v.push(0x0084); // GICD_IGROUPR1
    v.extend((0x0420..0x0440).step_by(4)); // GICD_IPRIORITYR8..15
    v.extend([0x0c08, 0x0c0c]); // GICD_ICFGR2..3
                                // GICD_IROUTER32..63, two 32-bit halves each
    v.extend((0x6000 + 8 * 32..0x6000 + 8 * 64).step_by(4));
    v
}

const DIST_SET_CLEAR: [SetClear; 3] = [
    SetClear {
        set: 0x0104,
        clear: 0x0184,
    }, // GICD_IS/ICENABLER1
    SetClear {
        set: 0x0204,
        clear: 0x0284,
    }, // GICD_IS/ICPENDR1
    SetClear {
        set: 0x0304,
        clear: 0x0384,
    }, // GICD_IS/ICACTIVER1
];

/// The redistributor's registers: RD frame, then the SGI frame (at 64 KiB).
fn redist_plain() -> Vec<u64> {
    let mut v = vec![0x0000]; // GICR_CTLR
    v.push(0x1_0080); // GICR_IGROUPR0
    v.extend((0x1_0400..0x1_0420).step_by(4)); // GICR_IPRIORITYR0..7
    v.extend([0x1_0c00, 0x1_0c04]); // GICR_ICFGR0..1
    v
}

const REDIST_SET_CLEAR: [SetClear; 3] = [
    SetClear {
        set: 0x1_0100,
        clear: 0x1_0180,
    }, // GICR_IS/ICENABLER0
    SetClear {
        set: 0x1_0200,
        clear: 0x1_0280,
    }, // GICR_IS/ICPENDR0
    SetClear {
        set: 0x1_0300,
        clear: 0x1_0380,
    }, // GICR_IS/ICACTIVER0
];

/// The host's counter (CNTVCT_EL0; the kernel runs at EL2 with CNTVOFF_EL2 = 0, so this is
/// the system counter, which goes on counting through a kexec).
pub fn host_ticks() -> u64 {
    let v: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effect; Linux lets EL0 read it (it is what the
    // vDSO reads). The ISB keeps the read from being hoisted above earlier instructions.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The host counter's frequency in Hz.
pub fn host_freq() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effect and EL0 may read it.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

fn kvm_err(what: &str) -> impl Fn(kvm_ioctls::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A vCPU in KVM_RUN on its own thread, until [`Vm::pause`].
struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(VcpuFd, Option<String>)>,
}

/// The VM. Field order is drop order: the vCPU and the vGIC go before the VM, the VM
/// before the memory it maps.
pub struct Vm {
    vcpu: Option<VcpuFd>,
    running: Option<Running>,
    gic: DeviceFd,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMemoryMmap,
    ram_size: u64,
    features: [u32; 7],
}

/// The vCPU's interrupt: KVM_RUN returns EINTR; nothing else to do.
extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Vm {
    /// A VM whose RAM is `ram` (a memfd of `ram_size` bytes) at [`guest::RAM_BASE`], with
    /// its vCPU initialized (PSCI 0.2) and its vGICv3 created and initialized.
    fn new(ram: &OwnedFd, ram_size: u64) -> Result<Self, String> {
        let size = usize::try_from(ram_size).map_err(|_| "RAM size does not fit".to_string())?;
        let file = File::from(
            ram.try_clone()
                .map_err(|e| format!("dup of the RAM memfd: {e}"))?,
        );
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(guest::RAM_BASE),
            size,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| format!("mapping guest RAM: {e}"))?;
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let host = mem
            .get_host_address(GuestAddress(guest::RAM_BASE))
            .map_err(|e| format!("guest RAM: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: guest::RAM_BASE,
            memory_size: ram_size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a mapping of `ram_size` bytes owned by `mem`, which
        // the returned Vm keeps until after the VM fd is closed (field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;

        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut kvi = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut kvi)
            .map_err(kvm_err("KVM_ARM_PREFERRED_TARGET"))?;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        vcpu.vcpu_init(&kvi).map_err(kvm_err("KVM_ARM_VCPU_INIT"))?;

        let mut dev = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
            fd: 0,
            flags: 0,
        };
        let gic = vm
            .create_device(&mut dev)
            .map_err(kvm_err("creating the vGICv3"))?;
        let dist = GICD_BASE;
        let redist = GICR_BASE;
        set_attr(
            &gic,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_DIST.into(),
            &dist,
        )
        .map_err(|e| format!("vGIC distributor address: {e}"))?;
        set_attr(
            &gic,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_REDIST.into(),
            &redist,
        )
        .map_err(|e| format!("vGIC redistributor address: {e}"))?;
        set_attr(&gic, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &NR_IRQS)
            .map_err(|e| format!("vGIC interrupts: {e}"))?;
        let init = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
            addr: 0,
        };
        gic.set_device_attr(&init).map_err(kvm_err("vGIC init"))?;
        register_signal_handler(SIGRTMIN(), kick).map_err(|e| format!("signal handler: {e}"))?;
        Ok(Self {
            vcpu: Some(vcpu),
            running: None,
            gic,
            _vm: vm,
            _kvm: kvm,
            mem,
            ram_size,
            features: kvi.features,
        })
    }

    /// A new VM running lu-vmm's guest from its first instruction, with a region of
    /// `region_len` bytes filled from `seed`.
    pub fn boot(ram: &OwnedFd, ram_size: u64, seed: u64, region_len: u64) -> Result<Self, String> {
        let vm = Self::new(ram, ram_size)?;
        let code = guest::code();
        if code.len() as u64 > guest::STATUS {
            return Err(format!(
                "the guest's code ({} bytes) overlaps its status",
                code.len()
            ));
        }
        let end = guest::REGION_OFF
            .checked_add(region_len)
            .filter(|&e| e <= ram_size);
        if end.is_none() || region_len % 8 != 0 {
            return Err(format!(
                "a region of {region_len} bytes does not fit {ram_size} bytes of RAM"
            ));
        }
        let w = |i: u64, v: u64| {
            vm.mem
                .write_obj(v, GuestAddress(guest::RAM_BASE + guest::STATUS + 8 * i))
                .map_err(|e| format!("guest status: {e}"))
        };
        vm.mem
            .write_slice(code, GuestAddress(guest::RAM_BASE))
            .map_err(|e| format!("loading the guest: {e}"))?;
        w(word::SEED, seed)?;
        w(word::REGION_OFF, guest::REGION_OFF)?;
        w(word::REGION_LEN, region_len)?;
        let vcpu = vm.vcpu.as_ref().ok_or("no vCPU")?;
        vcpu.set_one_reg(CORE_PC, &guest::RAM_BASE.to_le_bytes())
            .map_err(kvm_err("setting the PC"))?;
        Ok(vm)
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

    /// The words of the guest's region, as the VMM reads them from guest RAM.
    pub fn region_words(&self, off: u64, len: u64) -> Result<Vec<u64>, String> {
        let n = usize::try_from(len / 8).map_err(|_| "region too large".to_string())?;
        let mut bytes = vec![0u8; n * 8];
        self.mem
            .read_slice(&mut bytes, GuestAddress(guest::RAM_BASE + off))
            .map_err(|e| format!("reading the region: {e}"))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// Start the vCPU on its own thread.
    pub fn resume(&mut self) -> Result<(), String> {
        let mut vcpu = self.vcpu.take().ok_or("the vCPU is running already")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || loop {
                if flag.load(Ordering::Acquire) {
                    return (vcpu, None);
                }
                let exit = match vcpu.run() {
                    Ok(VcpuExit::SystemEvent(t, d)) => format!("system event {t} {d:?}"),
                    Ok(exit) => format!("{exit:?}"),
                    Err(e) if e.errno() == libc::EINTR => continue,
                    Err(e) => format!("KVM_RUN: {e}"),
                };
                return (vcpu, Some(format!("the vCPU stopped: {exit}")));
            })
            .map_err(|e| format!("vCPU thread: {e}"))?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    /// Stop the vCPU: returns once it is out of KVM_RUN, with the error that stopped it
    /// earlier if one did.
    pub fn pause(&mut self) -> Result<(), String> {
        let r = self.running.take().ok_or("the vCPU is not running")?;
        r.stop.store(true, Ordering::Release);
        // A kick that lands before KVM_RUN is entered is lost: kick until it is out.
        while !r.thread.is_finished() {
            r.thread
                .kill(SIGRTMIN())
                .map_err(|e| format!("kicking the vCPU: {e}"))?;
            std::thread::sleep(Duration::from_micros(200));
        }
        let (vcpu, err) = r
            .thread
            .join()
            .map_err(|_| "the vCPU thread panicked".to_string())?;
        self.vcpu = Some(vcpu);
        err.map_or(Ok(()), Err)
    }

    /// The vCPU's and the vGIC's state, with the clocks; the vCPU must be paused.
    pub fn save(&self, host_paused: u64) -> Result<Snapshot, String> {
        let vcpu = self.vcpu.as_ref().ok_or("save: the vCPU is running")?;
        let mut list = RegList::new(500).map_err(|e| format!("register list: {e:?}"))?;
        if let Err(e) = vcpu.get_reg_list(&mut list) {
            if e.errno() != libc::E2BIG {
                return Err(format!("KVM_GET_REG_LIST: {e}"));
            }
            list = RegList::new(4000).map_err(|e| format!("register list: {e:?}"))?;
            vcpu.get_reg_list(&mut list)
                .map_err(kvm_err("KVM_GET_REG_LIST"))?;
        }
        let mut regs = Vec::with_capacity(list.as_slice().len());
        for &id in list.as_slice() {
            let size = reg_size(id).ok_or_else(|| format!("register {id:#x}: bad size"))?;
            let mut buf = vec![0u8; size];
            vcpu.get_one_reg(id, &mut buf)
                .map_err(|e| format!("KVM_GET_ONE_REG {id:#x}: {e}"))?;
            regs.push(Reg {
                id,
                value: to_hex(&buf),
            });
        }
        let mut cnt = [0u8; 8];
        vcpu.get_one_reg(TIMER_CNT, &mut cnt)
            .map_err(kvm_err("reading the guest's counter"))?;
        let host_cnt = host_ticks();
        let gic = self.save_gic(vcpu)?;
        let guest = self.status()?;
        Ok(Snapshot {
            format: FORMAT.into(),
            ram_gpa: guest::RAM_BASE,
            ram_size: self.ram_size,
            vcpu_features: self.features,
            regs,
            gic,
            guest_cnt: u64::from_le_bytes(cnt),
            host_cnt,
            host_freq: host_freq(),
            host_paused,
            host_saved: host_ticks(),
            guest,
        })
    }

    fn save_gic(&self, vcpu: &VcpuFd) -> Result<Vec<GicReg>, String> {
        let mpidr = redist_mpidr(vcpu)?;
        let mut out = Vec::new();
        let mut get32 = |group, attr| -> Result<(), String> {
            let mut v = 0u32;
            get_attr(&self.gic, group, attr, &mut v)
                .map_err(|e| format!("vGIC group {group} register {attr:#x}: {e}"))?;
            out.push(GicReg {
                group,
                attr,
                value: v.into(),
            });
            Ok(())
        };
        for off in dist_plain() {
            get32(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, off)?;
        }
        for sc in &DIST_SET_CLEAR {
            get32(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, sc.set)?;
        }
        for off in redist_plain() {
            get32(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, mpidr | off)?;
        }
        for sc in &REDIST_SET_CLEAR {
            get32(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, mpidr | sc.set)?;
        }
        for (name, enc) in ICC_REGS {
            let mut v = 0u64;
            get_attr(
                &self.gic,
                KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
                mpidr | enc,
                &mut v,
            )
            .map_err(|e| format!("vGIC {name}: {e}"))?;
            out.push(GicReg {
                group: KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
                attr: mpidr | enc,
                value: v,
            });
        }
        Ok(out)
    }

    /// A VM rebuilt from `snap` over `ram` (the retrieved memfd), paused; its guest's
    /// counter is set to `host_ticks() - (snap.host_cnt - snap.guest_cnt)`, which is
    /// returned: every clock read of the guest after it resumes is at least that.
    pub fn restore(ram: &OwnedFd, snap: &Snapshot) -> Result<(Self, u64), String> {
        let vm = Self::new(ram, snap.ram_size)?;
        if vm.features != snap.vcpu_features {
            return Err(format!(
                "vCPU features {:?} differ from the saved {:?}",
                vm.features, snap.vcpu_features
            ));
        }
        let vcpu = vm.vcpu.as_ref().ok_or("no vCPU")?;
        for r in &snap.regs {
            if r.id == TIMER_CNT || r.id == PTIMER_CNT {
                continue;
            }
            let bytes = from_hex(&r.value)?;
            vcpu.set_one_reg(r.id, &bytes)
                .map_err(|e| format!("KVM_SET_ONE_REG {:#x}: {e}", r.id))?;
        }
        vm.restore_gic(vcpu, &snap.gic)?;
        // Last, closest to KVM_RUN: the guest's counter, as far on as the host's went.
        let offset = snap.host_cnt.wrapping_sub(snap.guest_cnt);
        let cnt = host_ticks().wrapping_sub(offset);
        vcpu.set_one_reg(TIMER_CNT, &cnt.to_le_bytes())
            .map_err(kvm_err("setting the guest's counter"))?;
        Ok((vm, cnt))
    }

    fn restore_gic(&self, vcpu: &VcpuFd, regs: &[GicReg]) -> Result<(), String> {
        let mpidr = redist_mpidr(vcpu)?;
        let find = |group: u32, attr: u64| {
            regs.iter()
                .find(|r| r.group == group && r.attr == attr)
                .map(|r| r.value)
                .ok_or_else(|| format!("the snapshot lacks vGIC group {group} register {attr:#x}"))
        };
        let put32 = |group: u32, attr: u64, v: u64| -> Result<(), String> {
            let v = u32::try_from(v).map_err(|_| format!("vGIC register {attr:#x}: {v:#x}"))?;
            set_attr(&self.gic, group, attr, &v)
                .map_err(|e| format!("vGIC group {group} register {attr:#x}: {e}"))
        };
        let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
        let redist = KVM_DEV_ARM_VGIC_GRP_REDIST_REGS;
        for off in redist_plain() {
            put32(redist, mpidr | off, find(redist, mpidr | off)?)?;
        }
        for sc in &REDIST_SET_CLEAR {
            let v = find(redist, mpidr | sc.set)?;
            put32(redist, mpidr | sc.clear, !v & 0xffff_ffff)?;
            put32(redist, mpidr | sc.set, v)?;
        }
        for off in dist_plain() {
            put32(dist, off, find(dist, off)?)?;
        }
        for sc in &DIST_SET_CLEAR {
            let v = find(dist, sc.set)?;
            put32(dist, sc.clear, !v & 0xffff_ffff)?;
            put32(dist, sc.set, v)?;
        }
        for (name, enc) in ICC_REGS {
            let g = KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS;
            let v = find(g, mpidr | enc)?;
            set_attr(&self.gic, g, mpidr | enc, &v).map_err(|e| format!("vGIC {name}: {e}"))?;
        }
        Ok(())
    }
}

/// The vCPU's affinity in the vGIC's attribute format (`KVM_DEV_ARM_VGIC_V3_MPIDR`).
fn redist_mpidr(vcpu: &VcpuFd) -> Result<u64, String> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(MPIDR_EL1, &mut b)
        .map_err(kvm_err("reading MPIDR_EL1"))?;
    let m = u64::from_le_bytes(b);
    let aff = ((m >> 8) & 0xff00_0000) | (m & 0x00ff_ffff);
    Ok(aff << 32)
}

fn set_attr<T>(dev: &DeviceFd, group: u32, attr: u64, value: &T) -> Result<(), kvm_ioctls::Error> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: value as *const T as u64,
    };
    dev.set_device_attr(&a)
}

/// KVM_GET_DEVICE_ATTR into `value`, whose type must be the register's width (u32 for the
/// distributor's and redistributor's registers, u64 for the CPU interface's).
fn get_attr<T: Copy>(
    dev: &DeviceFd,
    group: u32,
    attr: u64,
    value: &mut T,
) -> Result<(), kvm_ioctls::Error> {
    let mut a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: value as *mut T as u64,
    };
    // SAFETY: `addr` points to `value`, a live, writable `T`; the callers pass the width KVM
    // writes for that group (32 bits for DIST_REGS and REDIST_REGS, 64 for CPU_SYSREGS).
    unsafe { dev.get_device_attr(&mut a) }
}
