// SPDX-License-Identifier: GPL-2.0

//! Runs the fuzz target's checks on input files (a crash artifact, say) without libFuzzer:
//! `cargo run --example repro -- FILE...`.

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("read the input");
        let c = kho_decode::fuzz::decode(&data);
        eprintln!(
            "{path}: flags {:#x}, {:?}, RAM {:x?}, scratch {:x?}, nodes {:x?}, FDT {} bytes",
            c.flags,
            c.g,
            c.mem.ram,
            c.mem.scratch,
            c.node_order,
            c.fdt.len()
        );
        kho_decode::fuzz::run(&data);
    }
}
