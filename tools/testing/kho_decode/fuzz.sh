#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the libFuzzer target of the kho-v4 decoders (fuzz/) with stable rustc and runs it on
# one core from the seed corpus (well-formed and damaged images, written by the seeds example).
#
#   fuzz.sh [LIBFUZZER-OPTION...]     e.g. fuzz.sh -runs=10000000
#
# Without options it runs 1000000 inputs. Builds, seeds, the grown corpus and crash artifacts
# live in $KHO_DECODE_CACHE (default ${LU_CACHE:-~/.cache/lu}/kho-decode), never in the tree;
# KHO_DECODE_CORPUS selects another corpus directory and KHO_DECODE_LOG another log file. Prints
# the executions, their rate and the crashes, and exits non-zero on a crash, a leak or a timeout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${KHO_DECODE_CACHE:-${LU_CACHE:-$HOME/.cache/lu}/kho-decode}
corpus=${KHO_DECODE_CORPUS:-$cache/corpus}
host=$(rustc -vV | sed -n 's/^host: //p')
mkdir -p "$cache/artifacts" "$corpus"

# cargo-fuzz's instrumentation, without its nightly-only sanitizer flag: coverage counters,
# PC table and comparison tracing for libFuzzer. --target keeps build scripts uninstrumented.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "kho_decode fuzz: building (target dir $cache/target-fuzz)"
CARGO_TARGET_DIR=$cache/target-fuzz RUSTFLAGS=$flags \
	cargo build --quiet --locked --release --target "$host" \
	--manifest-path "$here/fuzz/Cargo.toml" --bin decode
bin=$cache/target-fuzz/$host/release/decode

rm -rf "$cache/seeds"
CARGO_TARGET_DIR=$cache/target cargo run --quiet --locked --manifest-path "$here/Cargo.toml" \
	--example seeds -- "$cache/seeds"

opts=("$@")
if [ ${#opts[@]} -eq 0 ]; then
	opts=(-runs=1000000)
fi
log=${KHO_DECODE_LOG:-$cache/fuzz.log}
start=$(date +%s)
set +e
"$bin" -timeout=10 -artifact_prefix="$cache/artifacts/" -print_final_stats=1 "${opts[@]}" \
	"$corpus" "$cache/seeds" >"$log" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
crashes=$(grep -c 'Test unit written to' "$log" || true)
tail -n 5 "$log"
echo "kho_decode fuzz: ${execs:-?} executions in ${secs} s (${rate:-?} exec/s), exit ${rc}," \
	"${crashes} crashes; log $log"
if [ $rc -ne 0 ]; then
	grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || true
fi
exit $rc
