# SPDX-License-Identifier: GPL-2.0
"""Kernel builds of both flavors (out of tree, incremental) and user programs."""

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import kconfig
from .common import CACHE, HARNESS, HarnessError, LOGS, REPO, info, run, stage

ARCH_INFO = {
    "x86_64": {"karch": "x86", "image": "arch/x86/boot/bzImage", "target": "bzImage",
               "cross": ""},
    "arm64": {"karch": "arm64", "image": "arch/arm64/boot/Image", "target": "Image",
              "cross": "aarch64-linux-gnu-"},
}


@dataclass
class Build:
    arch: str
    flavor: str
    outdir: Path
    image: Path
    release: str
    version: str
    log: Path
    # A debug build (debug.config: sanitizers, lockdep, kmemleak, fault injection).
    debug: bool = False
    # The build of one suite's extra fragment (client: client:systemd's kernels).
    variant: str = ""

    @property
    def label(self):
        """The build as logs name it: "rust", "rust-debug" or "rust-client"."""
        return _label(self.flavor, self.debug, self.variant)

    @property
    def ident(self):
        """What `uname -r` and `uname -v` print on this build."""
        return f"{self.release} {self.version}"


def jobs():
    return str(os.cpu_count() or 2)


def _label(flavor, debug=False, variant=""):
    return flavor + ("-debug" if debug else "") + (f"-{variant}" if variant else "")


def build_dir(arch, flavor, debug=False, variant=""):
    return CACHE / "build" / arch / _label(flavor, debug, variant)


# The debug builds are made with LLVM: Kconfig allows RUST with KASAN only
# under clang, and the c baseline uses the same compiler as the rust one.
DEBUG_LLVM = "LLVM=-19"


def make_cmd(srctree, outdir, arch, tc=None, extra=()):
    ai = ARCH_INFO[arch]
    cmd = ["make", "-C", srctree, f"O={outdir}", f"ARCH={ai['karch']}", f"-j{jobs()}",
           # An empty LOCALVERSION keeps setlocalversion from adding "+".
           "LOCALVERSION="]
    if ai["cross"]:
        cmd.append(f"CROSS_COMPILE={ai['cross']}")
    if tc:
        cmd += tc.make_vars()
    return cmd + list(extra)


def configure(srctree, outdir, arch, flavor, tc, log, debug=False, variant=""):
    """Merge the fragments if they changed; always verify the result."""
    frags = kconfig.fragments(arch, flavor, debug, variant)
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in frags)).hexdigest()
    stamp = outdir / ".lu-config-digest"
    env = tc.env() if tc else None
    if not (outdir / ".config").exists() or not stamp.exists() or stamp.read_text() != digest:
        outdir.mkdir(parents=True, exist_ok=True)
        run([srctree / "scripts" / "kconfig" / "merge_config.sh", "-m", "-O", outdir]
            + frags, cwd=srctree, log=log)
        llvm = [DEBUG_LLVM] if debug else []
        run(make_cmd(srctree, outdir, arch, tc, llvm + ["olddefconfig"]), log=log, env=env)
        stamp.write_text(digest)
    bad = kconfig.verify(kconfig.requested(frags), kconfig.parse((outdir / ".config").read_text()))
    if bad:
        stamp.unlink(missing_ok=True)
        raise HarnessError(f"{flavor}/{arch}: requested options not in .config:\n"
                           + kconfig.describe(bad) + f"\n  log: {log}")


def _uts(outdir):
    rel = (outdir / "include" / "config" / "kernel.release").read_text().strip()
    text = (outdir / "include" / "generated" / "utsversion.h").read_text()
    m = re.search(r'#define UTS_VERSION "(.*)"', text)
    if not m:
        raise HarnessError(f"no UTS_VERSION in {outdir}/include/generated/utsversion.h")
    return rel, m.group(1)


def build_kernel(srctree, arch, flavor, tc, debug=False, variant=""):
    """Configure and build one flavor (its debug or variant build); return its Build."""
    label = _label(flavor, debug, variant)
    outdir = build_dir(arch, flavor, debug, variant)
    log = LOGS / f"build-{arch}-{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    stage(f"building {label} kernel ({arch}) in {outdir}")
    rust = flavor == "rust"
    # Only builds of Rust code, and LLVM builds, need the toolchain's variables.
    tc = tc if rust or debug else None
    env = tc.env() if tc else None
    configure(srctree, outdir, arch, flavor, tc, log, debug, variant)
    extra = [ARCH_INFO[arch]["target"]] + ([DEBUG_LLVM] if debug else [])
    if rust:
        run(make_cmd(srctree, outdir, arch, tc, extra[1:] + ["rustavailable"]), log=log,
            env=env)
        # The rust flavor is built through clippy-driver: the same code comes
        # out, and its lints are checked from this log (not again for debug
        # or variant builds). Its config has modules: the test module of
        # kexec:luo_module (TEST_MODULE).
        extra += ["modules"] + ([] if debug or variant else ["CLIPPY=1"])
    run(make_cmd(srctree, outdir, arch, tc, extra), log=log, env=env,
        heartbeat=f"building {label}")
    image = outdir / ARCH_INFO[arch]["image"]
    rel, ver = _uts(outdir)
    info(f"{label}: {image}")
    info(f"{label}: uname -r {rel}; uname -v {ver}")
    return Build(arch, flavor, outdir, image, rel, ver, log, debug, variant)


# The module of kexec:luo_module (CONFIG_LIVEUPDATE_TEST_MODULE=m, rust only).
TEST_MODULE = "kernel/liveupdate/luo_test_module.ko"


def headers(srctree, arch):
    """Pristine uapi headers (make headers_install) for the user programs."""
    outdir = CACHE / "build" / arch / "headers"
    dest = outdir / "usr"
    if (dest / "include" / "linux" / "liveupdate.h").exists():
        return dest / "include"
    stage("installing uapi headers")
    run(make_cmd(srctree, outdir, arch, None, ["headers_install",
                                               f"INSTALL_HDR_PATH={dest}"]),
        log=LOGS / f"headers-{arch}.log")
    return dest / "include"


# Upstream's liveupdate selftests: the kexec tests are built as upstream's
# vmtest.sh builds them (static, nolibc); the kselftest-harness test needs libc.
KEXEC_TESTS = ("luo_kexec_simple", "luo_multi_session", "luo_stress_files",
               "luo_stress_sessions")

# Our own kselftest-harness tests: this repository's files at their kernel
# paths (claimed by patches/series), built like upstream's `liveupdate` test
# against the pristine tree's headers and kselftest harness.
OUR_KSELFTESTS = {"luo_errno": "tools/testing/selftests/liveupdate/luo_errno.c"}

# Our own multi-stage kexec tests, built the same way (static glibc, the
# kselftest helpers and upstream's lib/): "-s 1" before the kexec, "-s 2"
# after it, each told the flavors of the kernels (see suites.our_kexec_test).
OUR_KEXEC_TESTS = {"luo_memfd": "tools/testing/selftests/liveupdate/luo_memfd.c",
                   "luo_iommufd": "tools/testing/selftests/liveupdate/luo_iommufd.c"}


def user_programs(srctree, arch):
    """Build the static programs the VMs run; return {name: path}."""
    hdr = headers(srctree, arch)
    out = CACHE / "build" / arch / "progs"
    out.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"progs-{arch}.log"
    st = srctree / "tools" / "testing" / "selftests"
    lu = st / "liveupdate"
    cc = ARCH_INFO[arch]["cross"] + "gcc"
    progs = {}

    def cc_if_needed(name, srcs, flags, deps=()):
        dst = out / name
        # deps: headers the sources include, which count for the rebuild but are not compiled.
        inputs = [Path(s) for s in srcs] + [Path(d) for d in deps]
        key = hashlib.sha256(("\0".join(map(str, flags)) + "\0".join(map(str, srcs))).encode()
                             + b"".join(p.read_bytes() for p in inputs)).hexdigest()
        stamp = out / f".{name}.key"
        if not (dst.exists() and stamp.exists() and stamp.read_text() == key):
            run([cc] + flags + ["-o", dst] + srcs, log=log)
            stamp.write_text(key)
        progs[name] = dst

    glibc = ["-static", "-O2", "-Wall", "-I", hdr]
    nolibc = ["-static", "-O2", "-nostdinc", "-nostdlib", "-I", hdr,
              "-I", srctree / "tools" / "include" / "nolibc", "-I", lu / "lib" / "include"]
    cc_if_needed("lu-init", [HARNESS / "init" / "lu-init.c"], glibc)
    cc_if_needed("lu-corrupt-check", [HARNESS / "init" / "lu-corrupt-check.c"], glibc)
    check_h = [HARNESS / "init" / "lu-check.h"]
    cc_if_needed("lu-query-check", [HARNESS / "init" / "lu-query-check.c"], glibc, check_h)
    cc_if_needed("lu-module-check", [HARNESS / "init" / "lu-module-check.c"], glibc, check_h)
    cc_if_needed("lu-parallel-bench", [HARNESS / "init" / "lu-parallel-bench.c"],
                 glibc + ["-pthread"])
    cc_if_needed("lu-iommufd-bench", [HARNESS / "init" / "lu-iommufd-bench.c"], glibc,
                 [HARNESS / "init" / "lu-check.h"])
    # client:systemd's service (it runs under systemd, not lu-init).
    cc_if_needed("lu-fdstore", [HARNESS / "init" / "lu-fdstore.c"], glibc)
    from .reliability import PROGRAMS
    for name, (srcs, flags) in PROGRAMS.items():
        cc_if_needed(name, [HARNESS / "init" / f for f in srcs], glibc + flags, check_h)
    for t in KEXEC_TESTS:
        cc_if_needed(t, [lu / f"{t}.c", lu / "lib" / "lu_utils.c"], nolibc)
    kselftest = glibc + ["-Wno-unused-function", "-I", st, "-I", lu / "lib" / "include"]
    cc_if_needed("liveupdate", [lu / "liveupdate.c", lu / "lib" / "lu_utils.c"], kselftest)
    for name, path in {**OUR_KSELFTESTS, **OUR_KEXEC_TESTS}.items():
        # Outside the tree, "../kselftest_harness.h" is found through -I lu;
        # the harness's messages name the file by its kernel path.
        cc_if_needed(name, [REPO / path, lu / "lib" / "lu_utils.c"],
                     kselftest + ["-I", lu, f"-fmacro-prefix-map={REPO}/="])
    return progs


def gen_init_cpio(arch):
    """The tree's usr/gen_init_cpio, from whichever build has it."""
    # A host tool of the same tree: every build of arch has the same one.
    for p in sorted((CACHE / "build" / arch).glob("*/usr/gen_init_cpio")):
        return p
    # Build it from the pristine tree if no kernel build produced it yet.
    raise HarnessError("usr/gen_init_cpio not built yet: build a kernel first")


def clean(arch=None):
    d = CACHE / "build" if arch is None else CACHE / "build" / arch
    shutil.rmtree(d, ignore_errors=True)
