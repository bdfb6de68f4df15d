// SPDX-License-Identifier: GPL-2.0
//! The x86_64 VM: guest RAM from a memfd at 0, one vCPU in long mode, the in-kernel irqchip
//! (local APIC, PICs, IOAPIC) and the TSC.
//!
//! Saving reads what KVM's x86 API exposes of a vCPU (general, segment and control
//! registers, XSAVE, XCRs, the local APIC, pending events, the MP state, debug registers and
//! every MSR of KVM_GET_MSR_INDEX_LIST that reads back) and the irqchip's PICs and IOAPIC;
//! restoring writes them into a new VM with the same CPUID, the guest's TSC moved on by the
//! time the host spent (KVM_VCPU_TSC_OFFSET).

use kvm_bindings::{
    kvm_debugregs, kvm_device_attr, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVMIO,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::guest::{self, word};
use crate::snapshot::{Exact, Snapshot};
use crate::vcpu::{init_kick, kvm_err, GuestRam, Machine, Vcpu};

/// The snapshot format this architecture writes and reads.
pub const FORMAT: &str = "lu-vmm-x86_64-v1";
/// What the guest's clock is called in reports.
pub const CLOCK: &str = "TSC";

const MSR_IA32_TSC: u32 = 0x10;
/// The 4-level page tables the VMM builds: PML4, PDPT, four page directories of 2 MiB pages
/// mapping the first 4 GiB 1:1 (RAM, and the local APIC at 0xfee00000).
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
/// KVM's local APIC timer counts at 1 GHz with divide-by-1: this is 10 ms.
const APIC_PERIOD: u64 = 10_000_000;

// kvm-ioctls has KVM_SET_DEVICE_ATTR for arm64 vCPUs only.
ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);

/// The vCPU's and the irqchip's state. Each KVM structure travels as its bytes and must come
/// back whole ([`Exact`]).
#[derive(Serialize, Deserialize)]
pub struct State {
    pub regs: Exact<kvm_regs>,
    pub sregs: Exact<kvm_sregs>,
    pub xsave: Exact<kvm_xsave>,
    pub xcrs: Exact<kvm_xcrs>,
    pub lapic: Exact<kvm_lapic_state>,
    pub events: Exact<kvm_vcpu_events>,
    pub mp_state: Exact<kvm_mp_state>,
    pub debugregs: Exact<kvm_debugregs>,
    /// (index, value) of every MSR KVM lists that reads back, but the TSC.
    pub msrs: Vec<(u32, u64)>,
    /// PIC master, PIC slave, IOAPIC.
    pub irqchips: Vec<Exact<kvm_irqchip>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("rip", &self.regs.0.rip)
            .field("msrs", &self.msrs.len())
            .field("irqchips", &self.irqchips.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_vec(self).ok() == serde_json::to_vec(other).ok()
    }
}

const CHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

impl State {
    /// Check what the next kernel's lu-vmm read before it uses any of it (the KVM structures
    /// were checked by their sizes when they were parsed).
    pub fn check(&self) -> Result<(), String> {
        let ids: Vec<u32> = self.irqchips.iter().map(|c| c.0.chip_id).collect();
        if ids != CHIPS {
            return Err(format!("irqchips {ids:?}, expected {CHIPS:?}"));
        }
        if self.msrs.is_empty() {
            return Err("snapshot has no MSRs".into());
        }
        if self.msrs.iter().any(|&(i, _)| i == MSR_IA32_TSC) {
            return Err("the TSC travels as the guest's clock, not as an MSR".into());
        }
        Ok(())
    }

    /// What the state holds, in words.
    pub fn describe(&self) -> String {
        format!(
            "registers, XSAVE, the local APIC, {} MSRs and {} irqchips",
            self.msrs.len(),
            self.irqchips.len()
        )
    }

    #[cfg(test)]
    pub fn sample() -> Self {
        Self {
            regs: Exact::default(),
            sregs: Exact::default(),
            xsave: Exact::default(),
            xcrs: Exact::default(),
            lapic: Exact::default(),
            events: Exact::default(),
            mp_state: Exact::default(),
            debugregs: Exact::default(),
            msrs: vec![(0x1b, 0xfee0_0900)],
            irqchips: CHIPS
                .iter()
                .map(|&chip_id| {
                    Exact(kvm_irqchip {
                        chip_id,
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    #[cfg(test)]
    pub fn samples_that_fail() -> Vec<Self> {
        let mut a = Self::sample();
        a.irqchips.pop();
        let mut b = Self::sample();
        b.msrs.clear();
        let mut c = Self::sample();
        c.msrs.push((MSR_IA32_TSC, 1));
        vec![a, b, c]
    }
}

/// The host's counter: the TSC (QEMU's TSC runs on through a kexec; nothing resets it).
pub fn host_ticks() -> u64 {
    // SAFETY: RDTSC has no side effect and every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The VM. Field order is drop order: the vCPU before the VM, the VM before its memory.
pub struct Vm {
    vcpu: Vcpu,
    vm: VmFd,
    _kvm: Kvm,
    ram: GuestRam,
    tsc_hz: u64,
}

impl Vm {
    /// A VM whose RAM is `ram` (a memfd of `ram_size` bytes) at 0, with the in-kernel
    /// irqchip and one vCPU with the CPUID KVM supports.
    fn new(ram: &OwnedFd, ram_size: u64) -> Result<Self, String> {
        let mem = GuestRam::map(ram, ram_size)?;
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        mem.register(&vm)?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let xsave2 = vm.check_extension_int(Cap::Xsave2);
        if xsave2 > std::mem::size_of::<kvm_xsave>() as i32 {
            return Err(format!(
                "the vCPU's XSAVE state has {xsave2} bytes; lu-vmm saves 4096"
            ));
        }
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let tsc_hz = u64::from(vcpu.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?) * 1000;
        init_kick()?;
        Ok(Self {
            vcpu: Vcpu::new(vcpu),
            vm,
            _kvm: kvm,
            ram: mem,
            tsc_hz,
        })
    }

    /// A new VM running lu-vmm's guest from its first instruction, in long mode, with a
    /// region of `region_len` bytes filled from `seed`.
    pub fn boot(ram: &OwnedFd, ram_size: u64, seed: u64, region_len: u64) -> Result<Self, String> {
        let vm = Self::new(ram, ram_size)?;
        vm.ram.load_guest(seed, region_len)?;
        vm.ram.write(PML4, &(PDPT | 3).to_le_bytes())?;
        for i in 0..4u64 {
            vm.ram
                .write(PDPT + 8 * i, &((PD + 0x1000 * i) | 3).to_le_bytes())?;
            let pd: Vec<u8> = (0..512u64)
                .flat_map(|j| (((i << 30) | (j << 21)) | 0x83).to_le_bytes())
                .collect();
            vm.ram.write(PD + 0x1000 * i, &pd)?;
        }
        vm.ram.set_status(word::PERIOD, APIC_PERIOD)?;
        vm.ram.set_status(word::CNTFRQ, vm.tsc_hz)?;

        let vcpu = vm.vcpu.fd()?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let code_seg = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x08,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data_seg = kvm_segment {
            selector: 0x10,
            type_: 3,
            db: 1,
            l: 0,
            ..code_seg
        };
        sregs.cs = code_seg;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) =
            (data_seg, data_seg, data_seg, data_seg, data_seg);
        sregs.cr3 = PML4;
        sregs.cr4 = 0x20 | 0x200 | 0x400; // PAE, OSFXSR, OSXMMEXCPT
        sregs.cr0 = 0x8001_0033; // PG, WP, NE, ET, MP, PE
        sregs.efer = 0x500; // LMA, LME
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: guest::RAM_BASE,
            rsp: guest::RAM_BASE + guest::STACK_TOP,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        Ok(vm)
    }

    /// The vCPU's and the irqchip's state, with the clocks; the vCPU must be paused.
    pub fn save(&self, host_paused: u64) -> Result<Snapshot, String> {
        let vcpu = self.vcpu.fd()?;
        let list = self
            ._kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
        let read_msr = |index| -> Result<Option<u64>, String> {
            let mut m = Msrs::from_entries(&[kvm_msr_entry {
                index,
                ..Default::default()
            }])
            .map_err(|e| format!("MSR list: {e:?}"))?;
            // KVM lists MSRs a vCPU may not have (it reads 0 of them): those are skipped.
            if vcpu.get_msrs(&mut m).map_err(kvm_err("KVM_GET_MSRS"))? != 1 {
                return Ok(None);
            }
            Ok(m.as_slice().first().map(|e| e.data))
        };
        let mut msrs = Vec::new();
        for &index in list.as_slice().iter().filter(|&&i| i != MSR_IA32_TSC) {
            if let Some(data) = read_msr(index)? {
                msrs.push((index, data));
            }
        }
        // The guest's TSC, then the host's, back to back.
        let guest_cnt = read_msr(MSR_IA32_TSC)?.ok_or("the vCPU's TSC did not read back")?;
        let host_cnt = host_ticks();
        let mut irqchips = Vec::new();
        for chip_id in CHIPS {
            let mut c = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut c)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            irqchips.push(Exact(c));
        }
        let arch = State {
            regs: Exact(vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?),
            sregs: Exact(vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?),
            xsave: Exact(vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?),
            xcrs: Exact(vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?),
            lapic: Exact(vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?),
            events: Exact(
                vcpu.get_vcpu_events()
                    .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?,
            ),
            mp_state: Exact(vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?),
            debugregs: Exact(
                vcpu.get_debug_regs()
                    .map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
            ),
            msrs,
            irqchips,
        };
        Ok(Snapshot {
            format: FORMAT.into(),
            ram_gpa: guest::RAM_BASE,
            ram_size: self.ram.size(),
            guest_cnt,
            host_cnt,
            host_freq: self.tsc_hz,
            host_paused,
            host_saved: host_ticks(),
            guest: self.ram.status()?,
            arch,
        })
    }

    /// A VM rebuilt from `snap` over `ram` (the retrieved memfd), paused; its guest's TSC is
    /// offset so that it reads `host_ticks() - (snap.host_cnt - snap.guest_cnt)` now, which
    /// is returned: every clock read of the guest after it resumes is at least that.
    pub fn restore(ram: &OwnedFd, snap: &Snapshot) -> Result<(Self, u64), String> {
        let vm = Self::new(ram, snap.ram_size)?;
        let st = &snap.arch;
        for c in &st.irqchips {
            vm.vm
                .set_irqchip(&c.0)
                .map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        let vcpu = vm.vcpu.fd()?;
        vcpu.set_sregs(&st.sregs.0)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&st.regs.0).map_err(kvm_err("KVM_SET_REGS"))?;
        // SAFETY: `st.xsave` is a whole kvm_xsave, and Vm::new checked that KVM's XSAVE
        // state (KVM_CAP_XSAVE2) is no larger, so KVM reads only within it.
        unsafe { vcpu.set_xsave(&st.xsave.0) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        vcpu.set_xcrs(&st.xcrs.0).map_err(kvm_err("KVM_SET_XCRS"))?;
        let entries: Vec<kvm_msr_entry> = st
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| format!("MSR list: {e:?}"))?;
        let n = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if n != entries.len() {
            let at = entries.get(n).map_or(0, |e| e.index);
            return Err(format!(
                "KVM_SET_MSRS set {n} of {} MSRs, not {at:#x}",
                entries.len()
            ));
        }
        vcpu.set_lapic(&st.lapic.0)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        vcpu.set_vcpu_events(&st.events.0)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
        vcpu.set_mp_state(st.mp_state.0)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        vcpu.set_debug_regs(&st.debugregs.0)
            .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        // Last, closest to KVM_RUN: guest TSC = host TSC + offset, as before the update.
        let offset = snap.guest_cnt.wrapping_sub(snap.host_cnt);
        let now = host_ticks();
        let attr = kvm_device_attr {
            flags: 0,
            group: KVM_VCPU_TSC_CTRL,
            attr: KVM_VCPU_TSC_OFFSET.into(),
            addr: &offset as *const u64 as u64,
        };
        // SAFETY: KVM_SET_DEVICE_ATTR on a vCPU fd reads the `kvm_device_attr` it is given
        // and, for KVM_VCPU_TSC_OFFSET, the u64 at `addr`, which is `offset`, live here.
        let r = unsafe { ioctl_with_ref(vcpu, KVM_SET_DEVICE_ATTR(), &attr) };
        if r != 0 {
            return Err(format!(
                "KVM_VCPU_TSC_OFFSET: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok((vm, now.wrapping_add(offset)))
    }
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
