// SPDX-License-Identifier: GPL-2.0

//! Fuzzes the kho-v4 decoders: parse_root, the radix tree walk and the subtree coverage check
//! on a simulated machine; see `kho_decode::fuzz` for the input format and what is checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kho_decode::fuzz::run(data);
});
