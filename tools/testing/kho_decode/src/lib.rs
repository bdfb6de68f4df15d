// SPDX-License-Identifier: GPL-2.0

//! Host tests and fuzzing of the kernel's `kho-v4` decoders.
//!
//! The decoders are `kernel/liveupdate/kho/decode/`, included here unchanged as the module
//! [`kho_decode`] (and re-exported at the crate root), exactly the source the kernel builds. The
//! other modules are test support: a reimplementation of the C key formulas ([`cref`]),
//! simulated physical memory ([`sim`]), an FDT writer ([`fdt_writer`]), a builder of KHO images
//! that mirrors the C radix tree code ([`image`]), a naive reference walker
//! ([`reference`](mod@reference)) and the fuzz target's input format and checks ([`fuzz`]).

#![forbid(unsafe_code)]

#[path = "../../../../kernel/liveupdate/kho/decode/mod.rs"]
pub mod kho_decode;

pub use kho_decode::*;

pub mod cref;
pub mod fdt_writer;
pub mod fuzz;
pub mod image;
pub mod reference;
pub mod sim;
