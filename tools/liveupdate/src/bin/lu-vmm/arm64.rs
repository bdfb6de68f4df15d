// SPDX-License-Identifier: GPL-2.0
//! The arm64 VM: guest RAM from a memfd, one vCPU, an in-kernel vGICv3 and the arch timer.
//!
//! Saving reads every register KVM lists (KVM_GET_REG_LIST: the core registers, the system
//! registers with the timer's, the firmware pseudo-registers) and the vGIC's distributor,
//! redistributor and CPU-interface registers; restoring writes them back into a new VM of the
//! same layout, with the guest's virtual counter moved on by the time the host spent.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_vcpu_init,
    RegList, KVM_ARM_VCPU_PSCI_0_2, KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR,
    KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_REG_ARM64,
    KVM_REG_ARM64_SYSREG, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;

use crate::guest;
use crate::snapshot::{from_hex, reg_size, to_hex, Snapshot};
use crate::vcpu::{init_kick, kvm_err, GuestRam, Machine, Vcpu};

/// The snapshot format this architecture writes and reads.
pub const FORMAT: &str = "lu-vmm-arm64-v1";
/// What the guest's clock is called in reports.
pub const CLOCK: &str = "CNTVCT_EL0";

/// One vCPU register: its KVM id and its value, little-endian, as KVM_GET_ONE_REG gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reg {
    pub id: u64,
    /// Hex digits, two per byte.
    pub value: String,
}

/// One vGIC register, through KVM_{GET,SET}_DEVICE_ATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GicReg {
    pub group: u32,
    pub attr: u64,
    pub value: u64,
}

/// The vCPU's and the vGIC's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub vcpu_features: [u32; 7],
    pub regs: Vec<Reg>,
    pub gic: Vec<GicReg>,
}

impl State {
    /// Check what the next kernel's lu-vmm read before it uses any of it.
    pub fn check(&self) -> Result<(), String> {
        if self.regs.is_empty() {
            return Err("snapshot has no vCPU registers".into());
        }
        for r in &self.regs {
            let want = reg_size(r.id).ok_or_else(|| format!("register {:#x}: bad size", r.id))?;
            if r.value.len() != want * 2 {
                return Err(format!(
                    "register {:#x}: {} hex digits, its size is {want} bytes",
                    r.id,
                    r.value.len()
                ));
            }
            from_hex(&r.value).map_err(|e| format!("register {:#x}: {e}", r.id))?;
        }
        Ok(())
    }

    /// What the state holds, in words.
    pub fn describe(&self) -> String {
        format!(
            "{} registers and {} vGIC registers",
            self.regs.len(),
            self.gic.len()
        )
    }

    #[cfg(test)]
    pub fn sample() -> Self {
        Self {
            vcpu_features: [4, 0, 0, 0, 0, 0, 0],
            regs: vec![Reg {
                id: CORE_PC,
                value: "0000004000000000".into(),
            }],
            gic: vec![GicReg {
                group: KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
                attr: 0,
                value: 0x12,
            }],
        }
    }

    #[cfg(test)]
    pub fn samples_that_fail() -> Vec<Self> {
        let with = |id: u64, value: &str| Self {
            regs: vec![Reg {
                id,
                value: value.into(),
            }],
            ..Self::sample()
        };
        vec![
            with(CORE_PC, "000000400000000000"),
            with(CORE_PC, "zz00004000000000"),
            with(CORE_PC | (0xf << 52), "00"),
            Self {
                regs: vec![],
                ..Self::sample()
            },
        ]
    }
}

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

/// ICC_CTLR_EL1, which says how many active-priority registers there are.
const ICC_CTLR: u64 = icc(3, 0, 12, 12, 4);

/// The CPU-interface registers, in the order they are restored (SRE and CTLR first, they
/// decide how the others read), for a CPU interface whose ICC_CTLR_EL1 is `ctlr`: the
/// active-priority registers ICC_AP{0,1}R<n>_EL1 are 1, 2 or 4 each, for 5, 6 or 7 bits of
/// priority (ICC_CTLR_EL1.PRIbits).
fn icc_regs(ctlr: u64) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = [
        ("ICC_SRE_EL1", icc(3, 0, 12, 12, 5)),
        ("ICC_CTLR_EL1", ICC_CTLR),
        ("ICC_PMR_EL1", icc(3, 0, 4, 6, 0)),
        ("ICC_BPR0_EL1", icc(3, 0, 12, 8, 3)),
        ("ICC_BPR1_EL1", icc(3, 0, 12, 12, 3)),
        ("ICC_IGRPEN0_EL1", icc(3, 0, 12, 12, 6)),
        ("ICC_IGRPEN1_EL1", icc(3, 0, 12, 12, 7)),
    ]
    .iter()
    .map(|&(n, e)| (n.to_string(), e))
    .collect();
    let pri_bits = ((ctlr >> 8) & 7) + 1;
    let n = 1u64 << pri_bits.clamp(5, 7).saturating_sub(5);
    for i in 0..n {
        v.push((format!("ICC_AP0R{i}_EL1"), icc(3, 0, 12, 8, 4 + i)));
        v.push((format!("ICC_AP1R{i}_EL1"), icc(3, 0, 12, 9, i)));
    }
    v
}

/// A 32-bit register with set/clear halves (ISENABLER/ICENABLER, ISPENDR/ICPENDR,
/// ISACTIVER/ICACTIVER): restored by clearing what is not set, then setting what is. (Through
/// KVM's device attributes ICPENDR is ignored and ISPENDR writes the whole pending state; the
/// same two writes restore it.)
struct SetClear {
    set: u64,
    clear: u64,
}

/// The SPIs' distributor registers (the private interrupts' are the redistributor's).
fn dist_plain() -> Vec<u64> {
    // GICD_IIDR first: KVM wants it before any other register (it picks the vGIC's
    // behaviour); then GICD_CTLR.
    let mut v = vec![0x0008, 0x0000];
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

/// The host's counter: CNTVCT_EL0 read at EL0 of a VHE host (HCR_EL2.E2H and TGE set), where
/// CNTVOFF_EL2 does not apply, so it is the system counter, which goes on counting through a
/// kexec. (KVM loads a guest's offset into CNTVOFF_EL2; that only affects the guest.)
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

/// The VM. Field order is drop order: the vCPU and the vGIC go before the VM, the VM
/// before the memory it maps.
pub struct Vm {
    vcpu: Vcpu,
    gic: DeviceFd,
    _vm: VmFd,
    _kvm: Kvm,
    ram: GuestRam,
    features: [u32; 7],
}

impl Vm {
    /// A VM whose RAM is `ram` (a memfd of `ram_size` bytes) at [`guest::RAM_BASE`], with
    /// its vCPU initialized (PSCI 0.2) and its vGICv3 created and initialized.
    fn new(ram: &OwnedFd, ram_size: u64) -> Result<Self, String> {
        let mem = GuestRam::map(ram, ram_size)?;
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        mem.register(&vm)?;

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
        init_kick()?;
        Ok(Self {
            vcpu: Vcpu::new(vcpu),
            gic,
            _vm: vm,
            _kvm: kvm,
            ram: mem,
            features: kvi.features,
        })
    }

    /// A new VM running lu-vmm's guest from its first instruction, with a region of
    /// `region_len` bytes filled from `seed`.
    pub fn boot(ram: &OwnedFd, ram_size: u64, seed: u64, region_len: u64) -> Result<Self, String> {
        let vm = Self::new(ram, ram_size)?;
        vm.ram.load_guest(seed, region_len)?;
        vm.vcpu
            .fd()?
            .set_one_reg(CORE_PC, &guest::RAM_BASE.to_le_bytes())
            .map_err(kvm_err("setting the PC"))?;
        Ok(vm)
    }

    /// The vCPU's and the vGIC's state, with the clocks; the vCPU must be paused.
    pub fn save(&self, host_paused: u64) -> Result<Snapshot, String> {
        let vcpu = self.vcpu.fd()?;
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
        let guest = self.ram.status()?;
        Ok(Snapshot {
            format: FORMAT.into(),
            ram_gpa: guest::RAM_BASE,
            ram_size: self.ram.size(),
            guest_cnt: u64::from_le_bytes(cnt),
            host_cnt,
            host_freq: host_freq(),
            host_paused,
            host_saved: host_ticks(),
            guest,
            arch: State {
                vcpu_features: self.features,
                regs,
                gic,
            },
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
        let get64 = |enc: u64, name: &str| -> Result<u64, String> {
            let mut v = 0u64;
            get_attr(
                &self.gic,
                KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
                mpidr | enc,
                &mut v,
            )
            .map_err(|e| format!("vGIC {name}: {e}"))?;
            Ok(v)
        };
        let ctlr = get64(ICC_CTLR, "ICC_CTLR_EL1")?;
        for (name, enc) in icc_regs(ctlr) {
            out.push(GicReg {
                group: KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
                attr: mpidr | enc,
                value: get64(enc, &name)?,
            });
        }
        Ok(out)
    }

    /// A VM rebuilt from `snap` over `ram` (the retrieved memfd), paused; its guest's
    /// counter is set to `host_ticks() - (snap.host_cnt - snap.guest_cnt)`, which is
    /// returned: every clock read of the guest after it resumes is at least that.
    pub fn restore(ram: &OwnedFd, snap: &Snapshot) -> Result<(Self, u64), String> {
        let vm = Self::new(ram, snap.ram_size)?;
        let st = &snap.arch;
        if vm.features != st.vcpu_features {
            return Err(format!(
                "vCPU features {:?} differ from the saved {:?}",
                vm.features, st.vcpu_features
            ));
        }
        let vcpu = vm.vcpu.fd()?;
        for r in &st.regs {
            if r.id == TIMER_CNT || r.id == PTIMER_CNT {
                continue;
            }
            let bytes = from_hex(&r.value)?;
            vcpu.set_one_reg(r.id, &bytes)
                .map_err(|e| format!("KVM_SET_ONE_REG {:#x}: {e}", r.id))?;
        }
        vm.restore_gic(vcpu, &st.gic)?;
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
        for off in dist_plain() {
            put32(dist, off, find(dist, off)?)?;
        }
        for sc in &DIST_SET_CLEAR {
            let v = find(dist, sc.set)?;
            put32(dist, sc.clear, !v & 0xffff_ffff)?;
            put32(dist, sc.set, v)?;
        }
        for off in redist_plain() {
            put32(redist, mpidr | off, find(redist, mpidr | off)?)?;
        }
        for sc in &REDIST_SET_CLEAR {
            let v = find(redist, mpidr | sc.set)?;
            put32(redist, mpidr | sc.clear, !v & 0xffff_ffff)?;
            put32(redist, mpidr | sc.set, v)?;
        }
        let g = KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS;
        for (name, enc) in icc_regs(find(g, mpidr | ICC_CTLR)?) {
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

impl Machine for Vm {
    fn vcpu(&self) -> &Vcpu {
        &self.vcpu
    }

    fn vcpu_mut(&mut self) -> &mut Vcpu {
        &mut self.vcpu
    }

    fn ram(&self) -> &GuestRam {
        &self.ram
    }
}
