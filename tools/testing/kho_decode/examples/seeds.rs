// SPDX-License-Identifier: GPL-2.0

//! Writes the fuzz seed corpus (well-formed and damaged images) into the directory given.

fn main() {
    let dir = std::env::args().nth(1).expect("usage: seeds DIR");
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let seeds = kho_decode::fuzz::seeds();
    for (name, data) in &seeds {
        std::fs::write(format!("{dir}/{name}"), data).expect("write a seed");
    }
    println!("{} seeds in {dir}", seeds.len());
}
