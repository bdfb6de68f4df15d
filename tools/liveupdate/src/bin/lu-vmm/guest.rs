// SPDX-License-Identifier: GPL-2.0
//! The guest's memory layout and its status block (see guest-arm64.s and guest-x86_64.s).

use serde::{Deserialize, Serialize};

/// Where guest RAM starts (arm64: as on QEMU's `-M virt`; x86_64: at 0).
#[cfg(target_arch = "aarch64")]
pub const RAM_BASE: u64 = 0x4000_0000;
#[cfg(not(target_arch = "aarch64"))]
pub const RAM_BASE: u64 = 0;
/// The guest's code must end below this, from the start of RAM: the x86_64 guest's IDT is
/// there (defines `IDT` in guest-*.s).
pub const CODE_MAX: u64 = 0x3000;
/// The status block, from the start of RAM (defines `STATUS` in guest-*.s).
pub const STATUS: u64 = 0x4000;
/// The guest's initial stack pointer, from the start of RAM (defines `STACK_TOP`).
pub const STACK_TOP: u64 = 0x8000;
/// The checksummed region, from the start of RAM (below it: code, status, stack).
pub const REGION_OFF: u64 = 0x10_0000;
/// `"LUGUEST1"`: the guest writes it once it has filled the region and started counting.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LUGUEST1");

/// Word indices of the status block; they define the `S_*` offsets of guest-*.s.
pub mod word {
    pub const MAGIC: u64 = 0;
    pub const SEED: u64 = 1;
    pub const REGION_OFF: u64 = 2;
    pub const REGION_LEN: u64 = 3;
    pub const PERIOD: u64 = 4;
    pub const COUNTER: u64 = 5;
    pub const EXPECTED: u64 = 6;
    pub const LAST_SUM: u64 = 7;
    pub const PASSES: u64 = 8;
    pub const BAD_PASSES: u64 = 9;
    pub const CNTFRQ: u64 = 10;
    pub const LAST_CNT: u64 = 11;
    pub const MAX_GAP: u64 = 12;
    pub const GAP_BEFORE: u64 = 13;
    pub const GAP_AFTER: u64 = 14;
    pub const GAP_COUNTER: u64 = 15;
    pub const TICKS: u64 = 16;
    pub const OTHER_IRQS: u64 = 17;
    pub const START_CNT: u64 = 18;
    pub const FAULT: u64 = 19;
    pub const FAULT_ESR: u64 = 20;
    pub const FAULT_ELR: u64 = 21;
    /// Number of words.
    pub const COUNT: u64 = 22;
}

/// The guest's status block, as read by the VMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub magic: u64,
    pub seed: u64,
    pub region_off: u64,
    pub region_len: u64,
    pub period: u64,
    pub counter: u64,
    pub expected: u64,
    pub last_sum: u64,
    pub passes: u64,
    pub bad_passes: u64,
    pub cntfrq: u64,
    pub last_cnt: u64,
    pub max_gap: u64,
    pub gap_before: u64,
    pub gap_after: u64,
    pub gap_counter: u64,
    pub ticks: u64,
    pub other_irqs: u64,
    pub start_cnt: u64,
    pub fault: u64,
    pub fault_esr: u64,
    pub fault_elr: u64,
}

impl Status {
    /// Build from the status words (`w[i]` for [`word`] index i).
    pub fn from_words(w: &[u64; word::COUNT as usize]) -> Self {
        let g = |i: u64| w[i as usize];
        Self {
            magic: g(word::MAGIC),
            seed: g(word::SEED),
            region_off: g(word::REGION_OFF),
            region_len: g(word::REGION_LEN),
            period: g(word::PERIOD),
            counter: g(word::COUNTER),
            expected: g(word::EXPECTED),
            last_sum: g(word::LAST_SUM),
            passes: g(word::PASSES),
            bad_passes: g(word::BAD_PASSES),
            cntfrq: g(word::CNTFRQ),
            last_cnt: g(word::LAST_CNT),
            max_gap: g(word::MAX_GAP),
            gap_before: g(word::GAP_BEFORE),
            gap_after: g(word::GAP_AFTER),
            gap_counter: g(word::GAP_COUNTER),
            ticks: g(word::TICKS),
            other_irqs: g(word::OTHER_IRQS),
            start_cnt: g(word::START_CNT),
            fault: g(word::FAULT),
            fault_esr: g(word::FAULT_ESR),
            fault_elr: g(word::FAULT_ELR),
        }
    }

    /// Whether the guest has started counting.
    pub fn running(&self) -> bool {
        self.magic == MAGIC
    }
}

/// The checksum the guest computes over its region: rotate left by one, xor the next word.
pub fn checksum(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0, |c, w| c.rotate_left(1) ^ w)
}

/// Assemble a guest, with `STATUS`, `STACK_TOP`, `IDT` and the status block's offsets `S_*`
/// defined from this module's constants and [`word`]: the guest and the VMM share one layout.
/// The .s files are part of the template, so they must not contain braces.
macro_rules! guest_asm {
    ($file:literal $(, $opt:ident)?) => {
        core::arch::global_asm!(
            concat!(
                ".equ STATUS, {status}\n",
                ".equ STACK_TOP, {stack_top}\n",
                ".equ IDT, {idt}\n",
                ".equ S_MAGIC, {magic}\n",
                ".equ S_SEED, {seed}\n",
                ".equ S_REGION_OFF, {region_off}\n",
                ".equ S_REGION_LEN, {region_len}\n",
                ".equ S_PERIOD, {period}\n",
                ".equ S_COUNTER, {counter}\n",
                ".equ S_EXPECTED, {expected}\n",
                ".equ S_LAST_SUM, {last_sum}\n",
                ".equ S_PASSES, {passes}\n",
                ".equ S_BAD_PASSES, {bad_passes}\n",
                ".equ S_CNTFRQ, {cntfrq}\n",
                ".equ S_LAST_CNT, {last_cnt}\n",
                ".equ S_MAX_GAP, {max_gap}\n",
                ".equ S_GAP_BEFORE, {gap_before}\n",
                ".equ S_GAP_AFTER, {gap_after}\n",
                ".equ S_GAP_COUNTER, {gap_counter}\n",
                ".equ S_TICKS, {ticks}\n",
                ".equ S_OTHER_IRQS, {other_irqs}\n",
                ".equ S_START_CNT, {start_cnt}\n",
                ".equ S_FAULT, {fault}\n",
                ".equ S_FAULT_ESR, {fault_esr}\n",
                ".equ S_FAULT_ELR, {fault_elr}\n",
                include_str!($file)
            ),
            status = const STATUS,
            stack_top = const STACK_TOP,
            idt = const CODE_MAX,
            magic = const word::MAGIC * 8,
            seed = const word::SEED * 8,
            region_off = const word::REGION_OFF * 8,
            region_len = const word::REGION_LEN * 8,
            period = const word::PERIOD * 8,
            counter = const word::COUNTER * 8,
            expected = const word::EXPECTED * 8,
            last_sum = const word::LAST_SUM * 8,
            passes = const word::PASSES * 8,
            bad_passes = const word::BAD_PASSES * 8,
            cntfrq = const word::CNTFRQ * 8,
            last_cnt = const word::LAST_CNT * 8,
            max_gap = const word::MAX_GAP * 8,
            gap_before = const word::GAP_BEFORE * 8,
            gap_after = const word::GAP_AFTER * 8,
            gap_counter = const word::GAP_COUNTER * 8,
            ticks = const word::TICKS * 8,
            other_irqs = const word::OTHER_IRQS * 8,
            start_cnt = const word::START_CNT * 8,
            fault = const word::FAULT * 8,
            fault_esr = const word::FAULT_ESR * 8,
            fault_elr = const word::FAULT_ELR * 8,
            $(options($opt))?
        );
    };
}

#[cfg(target_arch = "aarch64")]
guest_asm!("guest-arm64.s");
#[cfg(target_arch = "x86_64")]
guest_asm!("guest-x86_64.s", att_syntax);

#[cfg(target_arch = "aarch64")]
extern "C" {
    #[link_name = "lu_vmm_guest_arm64_start"]
    static GUEST_START: u8;
    #[link_name = "lu_vmm_guest_arm64_end"]
    static GUEST_END: u8;
}
#[cfg(target_arch = "x86_64")]
extern "C" {
    #[link_name = "lu_vmm_guest_x86_64_start"]
    static GUEST_START: u8;
    #[link_name = "lu_vmm_guest_x86_64_end"]
    static GUEST_END: u8;
}

/// The guest's code, to be copied to the start of guest RAM.
pub fn code() -> &'static [u8] {
    let start = &raw const GUEST_START;
    let end = &raw const GUEST_END;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: guest-<arch>.s defines the start symbol as an object (`.type`, `.size`) of
    // the `len` bytes up to the end symbol, in a section of read-only data, so they are
    // initialized, immutable and live for the whole program.
    unsafe { core::slice::from_raw_parts(start, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_rotates_and_xors() {
        assert_eq!(checksum([]), 0);
        assert_eq!(checksum([1]), 1);
        assert_eq!(checksum([1, 1]), 3);
        assert_eq!(checksum([1 << 63, 0]), 1);
    }

    #[test]
    fn guest_code_fits_below_its_tables() {
        let c = code();
        assert!(
            c.len() > 256 && (c.len() as u64) <= CODE_MAX,
            "{} bytes",
            c.len()
        );
    }

    #[test]
    fn status_words_map_to_fields() {
        let mut w = [0u64; word::COUNT as usize];
        for (i, v) in w.iter_mut().enumerate() {
            *v = 100 + i as u64;
        }
        let s = Status::from_words(&w);
        assert_eq!(s.magic, 100);
        assert_eq!(s.period, 104);
        assert_eq!(s.counter, 105);
        assert_eq!(s.gap_counter, 115);
        assert_eq!(s.fault_elr, 121);
        assert!(!s.running());
    }
}
