# SPDX-License-Identifier: GPL-2.0
"""The userspace crate tools/liveupdate: host tests, static binaries for the VMs."""

import json
import os
import re
import shutil
import time

from .common import CACHE, LOGS, HarnessError, run, stage
from .ktap import FAIL, PASS, SKIP, Case, Suite

RUST_TARGETS = {"x86_64": "x86_64-unknown-linux-gnu", "arm64": "aarch64-unknown-linux-gnu"}
TARGET_DIR = CACHE / "cargo-target"
CROSS_LINKERS = {"arm64": "aarch64-linux-gnu-gcc"}


def manifest(srctree):
    return srctree / "tools" / "liveupdate" / "Cargo.toml"


def supported(arch):
    """Architectures whose static userspace binaries we can build."""
    return arch in RUST_TARGETS


def _env(headers=None):
    env = {"CARGO_TARGET_DIR": str(TARGET_DIR)}
    if headers:
        env["LIVEUPDATE_UAPI_INCLUDE"] = str(headers)
    return env


def build_static(srctree, arch, tc):
    """Release binaries (luoctl, lu-agent, lu-fuzz, ...) and the device test, statically linked.

    Returns {name: path} for the VM's initramfs. For a target other than the host, rustup
    has no std: it is built from Debian's rust-src of the same version (the one the kernel
    uses) with cargo's -Z build-std, enabled by RUSTC_BOOTSTRAP=1 as the kernel's own build
    enables unstable features.
    """
    target = RUST_TARGETS[arch]
    log = LOGS / f"crate-build-{arch}.log"
    log.write_text("")
    stage(f"building the userspace crate (static, {target})")
    env = _env()
    env["CARGO_TARGET_DIR"] = str(TARGET_DIR / arch)
    # Only the target's code is linked statically; build scripts and proc macros of the host
    # are not affected because --target is explicit.
    env["RUSTFLAGS"] = "-C target-feature=+crt-static"
    bins_std, test_std = [], []
    if arch in CROSS_LINKERS:
        env["RUSTC_BOOTSTRAP"] = "1"
        env["__CARGO_TESTS_ONLY_SRC_ROOT"] = str(tc.rust_lib_src)
        env[f"CARGO_TARGET_{target.upper().replace('-', '_')}_LINKER"] = CROSS_LINKERS[arch]
        bins_std = test_std = ["-Z", "build-std=std,panic_unwind"]
    base = ["cargo", "build", "--release", "--locked", "--target", target,
            "--manifest-path", manifest(srctree)]
    # --features vmm: lu-vmm, the VMM of vm:survives (the rust-vmm crates).
    run(base + bins_std + ["--bins", "--examples", "--features", "vmm"], log=log, env=env,
        heartbeat="cargo build")
    out = TARGET_DIR / arch / target / "release"
    progs = {"luoctl": out / "luoctl", "lu-agent": out / "lu-agent", "lu-bench": out / "lu-bench",
             "lu-fuzz": out / "lu-fuzz", "lu-vmm": out / "lu-vmm",
             "guest_ram": out / "examples" / "guest_ram"}
    p = run(["cargo", "test", "--release", "--locked", "--target", target, "--manifest-path",
             manifest(srctree), "--test", "device", "--no-run", "--message-format=json"]
            + test_std, env=env)
    for line in p.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg.get("target", {}).get("name") == "device":
            progs["crate-device-test"] = msg["executable"]
    if "crate-device-test" not in progs:
        raise HarnessError(f"cargo did not report the device test binary (log {log})")
    for name, path in progs.items():
        if not os.path.exists(path):
            raise HarnessError(f"{name}: {path} missing after cargo build (log {log})")
    return progs


_LIBTEST = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)\b")
_RESULT = re.compile(r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored")


def libtest_cases(text, prefix=""):
    """Cases from libtest's output (`test x ... ok`), checked against its summaries."""
    cases = []
    for line in text.splitlines():
        m = _LIBTEST.match(line.strip())
        if m:
            st = {"ok": PASS, "FAILED": FAIL, "ignored": SKIP}[m.group(2)]
            cases.append(Case(prefix + m.group(1), st))
    sums = [tuple(int(x) for x in m.groups()[1:]) for m in
            (_RESULT.match(line.strip()) for line in text.splitlines()) if m]
    passed = sum(s[0] for s in sums)
    failed = sum(s[1] for s in sums)
    if not sums:
        cases.append(Case(prefix + "libtest", FAIL, "no 'test result' line: the tests did not run"))
    elif passed != sum(c.status == PASS for c in cases) or failed != sum(
            c.status == FAIL for c in cases):
        cases.append(Case(prefix + "libtest", FAIL,
                          f"summaries say {passed} passed, {failed} failed; parsed otherwise"))
    return cases


def host_tests(srctree, headers):
    """cargo test on the host: unit tests, doctests, the ABI check against the uapi header."""
    t0 = time.monotonic()
    log = LOGS / "crate-host-test.log"
    # --features vmm: lu-vmm's unit tests (its x86_64 side, on this host) too.
    p = run(["cargo", "test", "--locked", "--features", "vmm", "--manifest-path",
             manifest(srctree)], env=_env(headers), check=False)
    log.write_text(p.stdout + p.stderr)
    s = Suite("host", "-", "crate:cargo-test", log=str(log))
    s.cases = libtest_cases(p.stdout + p.stderr)
    # The device tests are ignored on the host and run in the VMs; don't count them here.
    s.cases = [c for c in s.cases if c.status != SKIP]
    if p.returncode != 0 and not any(c.status == FAIL for c in s.cases):
        s.cases.append(Case("cargo test", FAIL, f"exit {p.returncode}"))
    s.seconds = time.monotonic() - t0
    return s


def clippy_and_fmt(srctree, tc=None):
    """cargo clippy -D warnings, cargo fmt --check and cargo doc -D warnings on the crate.

    With the toolchain `tc`, clippy also checks lu-vmm for aarch64 (its arm64 side does not
    build for the host), with std built as for the VMs' binaries.
    """
    t0 = time.monotonic()
    log = LOGS / "crate-lint.log"
    s = Suite("host", "-", "crate:lint", log=str(log))
    p1 = run(["cargo", "clippy", "--locked", "--all-targets", "--features", "vmm",
              "--manifest-path", manifest(srctree), "--", "-D", "warnings"], env=_env(),
             check=False)
    if tc is not None and p1.returncode == 0:
        target = RUST_TARGETS["arm64"]
        env = _env()
        env["CARGO_TARGET_DIR"] = str(TARGET_DIR / "clippy-arm64")
        env["RUSTC_BOOTSTRAP"] = "1"
        env["__CARGO_TESTS_ONLY_SRC_ROOT"] = str(tc.rust_lib_src)
        p1 = run(["cargo", "clippy", "--locked", "--target", target,
                  "-Z", "build-std=std,panic_unwind", "--features", "vmm", "--bin", "lu-vmm",
                  "--manifest-path", manifest(srctree), "--", "-D", "warnings"], env=env,
                 check=False)
    p2 = run(["cargo", "fmt", "--check", "--manifest-path", manifest(srctree)], check=False)
    env = _env()
    env["RUSTDOCFLAGS"] = "-D warnings"
    p3 = run(["cargo", "doc", "--locked", "--no-deps", "--manifest-path", manifest(srctree)],
             env=env, check=False)
    log.write_text(p1.stdout + p1.stderr + "\n--- cargo fmt --check\n" + p2.stdout + p2.stderr
                   + "\n--- cargo doc\n" + p3.stdout + p3.stderr)
    s.cases = [Case("clippy -D warnings", PASS if p1.returncode == 0 else FAIL,
                    "" if p1.returncode == 0 else "clippy warnings, see log"),
               Case("fmt --check", PASS if p2.returncode == 0 else FAIL,
                    "" if p2.returncode == 0 else "not rustfmt-clean, see log"),
               Case("doc -D warnings", PASS if p3.returncode == 0 else FAIL,
                    "" if p3.returncode == 0 else "rustdoc warnings, see log")]
    s.seconds = time.monotonic() - t0
    return s


# crate:kho-decode: the kho-v4 decoders of kernel/liveupdate/kho/decode/ (core only) tested on
# the host by tools/testing/kho_decode, which includes the same source files.
KHO_DECODE_CACHE = CACHE / "kho-decode"
KHO_DECODE_FUZZ_RUNS = 200000
# The lints of rust_common_flags and KBUILD_RUSTFLAGS in Linux 7.3's Makefile, as errors, and no
# unsafe at all: the files must build as a no_std module of a kernel crate, clippy-clean.
KERNEL_LINTS = [
    "-Dwarnings", "-Funsafe_code", "-Dnon_ascii_idents", "-Dunsafe_op_in_unsafe_fn",
    "-Wmissing_docs",
    "-Wrust_2018_idioms", "-Wunreachable_pub", "-Wclippy::all", "-Wclippy::as_ptr_cast_mut",
    "-Wclippy::as_underscore", "-Wclippy::cast_lossless", "-Aclippy::collapsible_if",
    "-Aclippy::collapsible_match", "-Wclippy::ignored_unit_patterns",
    "-Aclippy::incompatible_msrv", "-Wclippy::mut_mut", "-Wclippy::needless_bitwise_bool",
    "-Aclippy::needless_lifetimes", "-Wclippy::no_mangle_with_rust_abi", "-Wclippy::ptr_as_ptr",
    "-Wclippy::ptr_cast_constness", "-Wclippy::ref_as_ptr",
    "-Wclippy::undocumented_unsafe_blocks", "-Aclippy::uninlined_format_args",
    "-Wclippy::unnecessary_safety_comment", "-Wclippy::unnecessary_safety_doc",
    "-Aclippy::unwrap_or_default", "-Wclippy::float_arithmetic", "-Coverflow-checks=on",
]
_FUZZ_LINE = re.compile(r"^kho_decode fuzz: (\S+) executions in (\d+) s \((\S+) exec/s\)", re.M)


def kho_decode_dir(srctree):
    return srctree / "tools" / "testing" / "kho_decode"


def _kernel_lint(srctree):
    """clippy-driver with the kernel's lints on the decoders as `pub mod` of a no_std crate."""
    src = srctree / "kernel" / "liveupdate" / "kho" / "decode" / "mod.rs"
    out = KHO_DECODE_CACHE / "kernel-lint"
    out.mkdir(parents=True, exist_ok=True)
    wrapper = out / "wrapper.rs"
    wrapper.write_text("//! The kho-v4 decoders as a module of a no_std crate, as in the kernel.\n"
                       f"#![no_std]\n#[path = \"{src}\"]\npub mod kho_decode;\n")
    return run(["clippy-driver", "--edition=2021", "--crate-type=rlib", "--crate-name=kd",
                "--emit=metadata", "-o", out / "libkd.rmeta"] + KERNEL_LINTS + [wrapper],
               check=False)


def kho_decode(srctree):
    """Host tests, lints and a fuzz smoke run of the kho-v4 decoders."""
    t0 = time.monotonic()
    log = LOGS / "crate-kho-decode.log"
    s = Suite("host", "-", "crate:kho-decode", log=str(log))
    manifest = kho_decode_dir(srctree) / "Cargo.toml"
    env = {"CARGO_TARGET_DIR": str(KHO_DECODE_CACHE / "target")}
    text = []

    def step(title, p):
        text.append(f"--- {title} (exit {p.returncode})\n{p.stdout}{p.stderr}")
        return p

    p = step("cargo test", run(["cargo", "test", "--locked", "--manifest-path", manifest],
                               env=env, check=False))
    s.cases = libtest_cases(p.stdout + p.stderr)
    if p.returncode != 0 and not any(c.status == FAIL for c in s.cases):
        s.cases.append(Case("cargo test", FAIL, f"exit {p.returncode}"))
    checks = [
        ("clippy -D warnings", "clippy warnings",
         ["cargo", "clippy", "--locked", "--all-targets", "--manifest-path", manifest, "--",
          "-D", "warnings"]),
        ("fmt --check", "not rustfmt-clean",
         ["cargo", "fmt", "--check", "--manifest-path", manifest]),
    ]
    for name, why, cmd in checks:
        p = step(name, run(cmd, env=env, check=False))
        s.cases.append(Case(name, PASS if p.returncode == 0 else FAIL,
                            "" if p.returncode == 0 else f"{why}, see log"))
    p = step("kernel lints", _kernel_lint(srctree))
    s.cases.append(Case("kernel lints (no_std, clippy-driver)",
                        PASS if p.returncode == 0 else FAIL,
                        "" if p.returncode == 0 else "warnings under the kernel's lints, see log"))
    corpus = KHO_DECODE_CACHE / "smoke-corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    p = step("fuzz smoke", run([kho_decode_dir(srctree) / "fuzz.sh",
                                f"-runs={KHO_DECODE_FUZZ_RUNS}"],
                               env={"KHO_DECODE_CACHE": str(KHO_DECODE_CACHE),
                                    "KHO_DECODE_CORPUS": str(corpus),
                                    "KHO_DECODE_LOG": str(LOGS / "crate-kho-decode-fuzz.log")},
                               check=False))
    m = _FUZZ_LINE.search(p.stdout)
    ok = p.returncode == 0 and m is not None and m.group(1) == str(KHO_DECODE_FUZZ_RUNS)
    detail = ""
    if not ok:
        lines = (p.stdout + p.stderr).strip().splitlines()
        detail = "\n".join(lines[-6:]) or f"exit {p.returncode}"
    s.cases.append(Case(f"fuzz smoke ({KHO_DECODE_FUZZ_RUNS} runs)", PASS if ok else FAIL,
                        detail))
    if m:
        s.note = f"fuzz: {m.group(1)} runs at {m.group(3)} exec/s"
    log.write_text("\n".join(text))
    s.seconds = time.monotonic() - t0
    return s
