// SPDX-License-Identifier: GPL-2.0
//! What lu-vmm hands to the next kernel besides guest RAM: the VM's layout, the vCPU's
//! registers, the vGIC's state, the guest status at the pause and the clocks.
//!
//! It travels as JSON in the `state` memfd. The next kernel's lu-vmm trusts none of it:
//! [`Snapshot::parse`] checks the format, the sizes and the layout before anything is used.

use serde::{Deserialize, Serialize};

use crate::arch::{State, FORMAT};
use crate::guest::{self, Status};

/// Guest RAM sizes lu-vmm accepts, in bytes.
pub const MIN_RAM: u64 = 4 << 20;
pub const MAX_RAM: u64 = 4 << 30;

/// Everything but guest RAM.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `arch::FORMAT`: a snapshot of another architecture or version is refused.
    pub format: String,
    pub ram_gpa: u64,
    pub ram_size: u64,
    /// The guest's clock (arm64: its virtual count; x86_64: its TSC) and the host's counter
    /// read right after it: the next kernel keeps their difference, so the guest's clock runs
    /// on through the update and shows the pause.
    pub guest_cnt: u64,
    pub host_cnt: u64,
    /// The host counter's frequency and when (host counter) the vCPU stopped and the snapshot
    /// was taken.
    pub host_freq: u64,
    pub host_paused: u64,
    pub host_saved: u64,
    /// The guest's status block after the pause.
    pub guest: Status,
    /// The vCPU's registers and the VM's devices.
    pub arch: State,
}

/// A KVM structure that serializes as its bytes (kvm-bindings' `serde`) and deserializes only
/// from exactly `size_of::<T>()` of them: kvm-bindings alone would zero-fill a short array.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // x86_64's structures
#[derive(Debug, Default)]
pub struct Exact<T>(pub T);

impl<T: Serialize> Serialize for Exact<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Exact<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bytes = Vec::<u8>::deserialize(d)?;
        let want = core::mem::size_of::<T>();
        if bytes.len() != want {
            return Err(D::Error::custom(format!(
                "{} bytes of {}, expected {want}",
                bytes.len(),
                core::any::type_name::<T>()
            )));
        }
        T::deserialize(serde::de::value::BytesDeserializer::<D::Error>::new(&bytes)).map(Exact)
    }
}

/// Hex digits of `bytes`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // arm64's registers
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex digits `s`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // arm64's registers
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}

/// The size in bytes of KVM register `id` (KVM_REG_SIZE).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // arm64's registers
pub fn reg_size(id: u64) -> Option<usize> {
    let shift = (id >> 52) & 0xf;
    (shift <= 11).then(|| 1usize << shift)
}

impl Snapshot {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain integers, strings and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse and check a snapshot of a VM with `ram_size` bytes of RAM.
    pub fn parse(bytes: &[u8], ram_size: u64) -> Result<Self, String> {
        let s: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| format!("snapshot is not valid: {e}"))?;
        if s.format != FORMAT {
            return Err(format!(
                "snapshot format {:?}, expected {FORMAT:?}",
                s.format
            ));
        }
        if s.ram_size != ram_size {
            return Err(format!(
                "snapshot is of {} bytes of RAM, the ram memfd has {ram_size}",
                s.ram_size
            ));
        }
        if !(MIN_RAM..=MAX_RAM).contains(&s.ram_size) || s.ram_size % 4096 != 0 {
            return Err(format!("RAM size {} is out of range", s.ram_size));
        }
        if s.ram_gpa != guest::RAM_BASE {
            return Err(format!(
                "RAM at {:#x}, lu-vmm's guests start at {:#x}",
                s.ram_gpa,
                guest::RAM_BASE
            ));
        }
        let g = &s.guest;
        let region_end = g.region_off.checked_add(g.region_len);
        if g.region_off != guest::REGION_OFF
            || g.region_len % 8 != 0
            || region_end.is_none_or(|end| end > s.ram_size)
        {
            return Err(format!(
                "guest region {:#x}+{:#x} does not fit {} bytes of RAM",
                g.region_off, g.region_len, s.ram_size
            ));
        }
        s.arch.check()?;
        if s.host_freq == 0 {
            return Err("host counter frequency is 0".into());
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            ram_gpa: guest::RAM_BASE,
            ram_size: 64 << 20,
            guest_cnt: 1000,
            host_cnt: 5000,
            host_freq: 1_000_000_000,
            host_paused: 4990,
            host_saved: 5100,
            guest: Status {
                region_off: guest::REGION_OFF,
                region_len: 1 << 20,
                ..Status::default()
            },
            arch: State::sample(),
        }
    }

    #[test]
    fn round_trip() {
        let s = good();
        assert_eq!(Snapshot::parse(&s.to_bytes(), 64 << 20), Ok(s));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let s = good();
        assert!(Snapshot::parse(&s.to_bytes(), 32 << 20)
            .unwrap_err()
            .contains("ram memfd has"));
        assert!(Snapshot::parse(b"{", 64 << 20).is_err());
        assert!(Snapshot::parse(b"", 64 << 20).is_err());
        let mut t = good();
        t.format = "lu-vmm-arm64-v0".into();
        assert!(Snapshot::parse(&t.to_bytes(), 64 << 20).is_err());
        let mut t = good();
        t.guest.region_len = 64 << 20;
        assert!(Snapshot::parse(&t.to_bytes(), 64 << 20)
            .unwrap_err()
            .contains("does not fit"));
        let mut t = good();
        t.guest.region_len = u64::MAX - 7;
        assert!(Snapshot::parse(&t.to_bytes(), 64 << 20).is_err());
        let mut t = good();
        t.host_freq = 0;
        assert!(Snapshot::parse(&t.to_bytes(), 64 << 20).is_err());
        for bad in State::samples_that_fail() {
            let mut t = good();
            t.arch = bad;
            assert!(Snapshot::parse(&t.to_bytes(), 64 << 20).is_err());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exact_takes_only_whole_structures() {
        use kvm_bindings::kvm_regs;
        let r = kvm_regs {
            rax: 0x1122,
            rip: 7,
            ..Default::default()
        };
        let j = serde_json::to_string(&Exact(r)).unwrap();
        let back: Exact<kvm_regs> = serde_json::from_str(&j).unwrap();
        assert_eq!((back.0.rax, back.0.rip), (0x1122, 7));
        let n = core::mem::size_of::<kvm_regs>();
        let short = format!("[{}]", vec!["1"; n - 1].join(","));
        let e = serde_json::from_str::<Exact<kvm_regs>>(&short)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{} bytes of", n - 1)), "{e}");
        let long = format!("[{}]", vec!["1"; n + 1].join(","));
        assert!(serde_json::from_str::<Exact<kvm_regs>>(&long).is_err());
        assert!(serde_json::from_str::<Exact<kvm_regs>>("[]").is_err());
        assert!(serde_json::from_str::<Exact<kvm_regs>>("\"ab\"").is_err());
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00ab10"), Ok(vec![0, 0xab, 0x10]));
        assert!(from_hex("0").is_err());
        assert!(from_hex("é0").is_err());
        assert_eq!(reg_size(0x6030_0000_0010_0040), Some(8));
        assert_eq!(reg_size(0x6040_0000_0010_0040), Some(16));
    }
}
