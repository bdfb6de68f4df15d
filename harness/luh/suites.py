# SPDX-License-Identifier: GPL-2.0
"""The test suites of `lu test`, each turned into a ktap.Suite."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from . import build as kbuild
from . import kconfig, vm
from .common import CACHE, HARNESS, LOGS, REPO, run, stage
from .crate import libtest_cases
from .ktap import FAIL, PASS, SKIP, Case, Suite, tap_cases

# lib/tests/liveupdate.c (CONFIG_LIVEUPDATE_TEST) reports only through the
# kernel log.  These are the exact lines it must print, per stage, in a
# luo_kexec_simple chain: stage 1 preserves two memfds (the test's and its
# state file), stage 2 retrieves and finishes both.
_FLBS = [f"liveupdate-test-flb-v{i}" for i in range(3)]
LIVEUPDATE_TEST_EXPECTED = {
    1: ["Registered 3 FLBs with file handler: [memfd-v2]"]
       + [f"{f}: preserve was triggered" for f in _FLBS],
    # The handler registers (late_initcall) after the FLBs' incoming data was
    # read; finish runs in reverse registration order when the last file of
    # the handler is finished.
    2: [f"{f}: found flb data from the previous boot" for f in _FLBS]
       + ["Registered 3 FLBs with file handler: [memfd-v2]"]
       + [f"{f}: finish was triggered" for f in reversed(_FLBS)],
}
_LT_PREFIX = re.compile(r"liveupdate test: (.*)$")
# The test registers its FLBs with every file handler as it registers: on
# rust also with the iommufd handler (CONFIG_IOMMUFD_LIVEUPDATE), which
# registers right after the memfd one (mm/ links before drivers/).
_IOMMUFD_REGISTERED = "Registered 3 FLBs with file handler: [iommufd-ioas-v1]"


def liveupdate_test_expected(flavor, k):
    """The liveupdate test's lines in stage k of a chain of kernels of flavor."""
    want = list(LIVEUPDATE_TEST_EXPECTED[k])
    if flavor == "rust":
        i = want.index("Registered 3 FLBs with file handler: [memfd-v2]")
        want.insert(i + 1, _IOMMUFD_REGISTERED)
    return want


def _problem_cases(res, nstages):
    return [Case("run", FAIL, p) for p in res.problems(nstages)]


def _rc_case(res, stage_no, prog):
    st = res.stages[stage_no - 1] if len(res.stages) >= stage_no else None
    rc = None if st is None else st.results.get(prog)
    if rc == 0:
        return None
    return Case(f"{prog} stage {stage_no}", FAIL,
                f"exit status {rc}" if rc is not None else "did not run")


def _finish(suite, res, t0):
    suite.seconds = time.monotonic() - t0
    suite.log = str(res.log)
    if suite.status == PASS:
        vm.cleanup_run(res)
    return suite


# What our own kselftests expect where the rust flavor deliberately differs
# from upstream (see tools/testing/selftests/liveupdate/luo_errno.c): the c
# flavor is upstream's behaviour, recorded as such.
LUO_EXPECT = {"c": "upstream", "rust": "fixed"}


def kselftest_argv(prog, flavor):
    """The command line of a kselftest binary in the VM of a flavor."""
    argv = [f"/bin/{prog}"]
    if prog in kbuild.OUR_KSELFTESTS:
        argv.append(f"--expect={LUO_EXPECT[flavor]}")
    return argv


def kselftest(arch, builds, progs, flavor, prog):
    """A kselftest-harness binary in one VM, its TAP parsed case by case."""
    t0 = time.monotonic()
    b = builds[flavor]
    res = vm.run_chain(f"{arch}-{flavor}-kselftest-{prog}",
                       [vm.Stage(b, [(prog, kselftest_argv(prog, flavor))])],
                       progs, arch, timeout=300)
    s = Suite(arch, flavor, f"kselftest:{prog}")
    s.cases = _problem_cases(res, 1)
    if res.stages:
        text = res.text(1)
        s.cases += tap_cases(text)
        rc = res.stages[0].results.get(prog)
        if rc != 0 and not any(c.status == FAIL for c in s.cases):
            s.cases.append(Case("exit status", FAIL, f"{prog} exited {rc}"))
    return _finish(s, res, t0)


def liveupdate_test_lines(text):
    return [m.group(1).strip() for m in (_LT_PREFIX.search(line) for line in text.splitlines())
            if m]


def kexec_test(arch, builds, progs, test, chain, with_inkernel=False):
    """Upstream's two-stage kexec test on chain (flavor of stage 1, of stage 2)."""
    t0 = time.monotonic()
    f1, f2 = chain
    flavor = f1 if f1 == f2 else f"{f1}>{f2}"
    res = vm.run_chain(f"{arch}-{f1}-{f2}-{test}", [
        vm.Stage(builds[f1], [(test, [f"/bin/{test}", "-s", "1"])]),
        vm.Stage(builds[f2], [(test, [f"/bin/{test}", "-s", "2"])]),
    ], progs, arch, timeout=300)
    problems = _problem_cases(res, 2)
    s = Suite(arch, flavor, f"kexec:{test}")
    detail = [c.detail for c in problems]
    for k in (1, 2):
        c = _rc_case(res, k, test)
        if c:
            detail.append(f"{c.name}: {c.detail}")
    if len(res.stages) == 2 and "TEST PASSED" not in res.text(2):
        detail.append("stage 2 did not print TEST PASSED")
    s.cases = [Case(test, FAIL if detail else PASS, "\n".join(detail))]
    suites = [_finish(s, res, t0)]
    if with_inkernel:
        suites += inkernel_checks(arch, flavor, res, problems)
    return suites


# Our multi-stage kexec tests (build.OUR_KEXEC_TESTS): the VM's memory in MiB
# and the run's timeout in seconds per architecture (arm64 under TCG is 2-3
# times slower).  luo_memfd pins about 5.4 GiB on upstream's handler, which
# allocates every hole of its 4 GiB sparse memfd, and pinned folios cannot
# stay in the KHO scratch areas (MIGRATE_CMA, about a quarter of the RAM).
#
# luo_iommufd drives QEMU's edu PCI device through VFIO and iommufd behind a
# vIOMMU (its DMA mask widened to reach IOVAs above 4 GiB); it runs where
# stage 1 is rust only, as upstream 7.3 has no iommufd handler: rust>rust,
# and rust>c to record what upstream's C does with a handover that holds one.
_EDU = ["-device", "edu,dma_mask=0xffffffffffffffff"]
OUR_KEXEC_VM = {
    "luo_memfd": {"mem": 9216, "timeout": {"x86_64": 600, "arm64": 1200}},
    "luo_iommufd": {
        "mem": 2048, "timeout": {"x86_64": 300, "arm64": 600},
        "qemu": {"x86_64": ["-M", "q35", "-device", "intel-iommu,caching-mode=on"] + _EDU,
                 "arm64": ["-M", "iommu=smmuv3"] + _EDU},
        # iommufd refuses to bind a device whose MSIs the platform cannot
        # isolate (no interrupt remapping on q35 without intremap, no GICv3
        # ITS on virt): the test VMs allow it, as a host with them would not need.
        "cmdline": {"x86_64": "intel_iommu=on iommufd.allow_unsafe_interrupts=1",
                    "arm64": "iommufd.allow_unsafe_interrupts=1"},
        "chains": (("rust", "rust"), ("rust", "c")),
    },
}


def our_kexec_runs(prog, chain):
    """Whether our kexec test prog runs on chain (flavor of stage 1, of stage 2)."""
    chains = OUR_KEXEC_VM[prog].get("chains")
    return chains is None or tuple(chain) in chains
_NOTE = re.compile(r"^# (\w+): (.*)$")


def our_kexec_argv(prog, stage_no, chain):
    """Stage k of one of our kexec tests: the flavors of this and of stage 1's kernel."""
    return [f"/bin/{prog}", "-s", str(stage_no), f"--kernel={chain[stage_no - 1]}",
            f"--prev={chain[0]}"]


def ktap_stage_cases(text, prefix):
    """A stage's KTAP as cases named prefix + point, failures with their "# point: ..." line."""
    notes = {}
    for line in text.splitlines():
        m = _NOTE.match(line)
        if m:
            notes[m.group(1)] = m.group(2)
    cases = tap_cases(text)
    for c in cases:
        if c.status == FAIL and not c.detail:
            c.detail = notes.get(c.name, "")
        c.name = prefix + c.name
    return cases


def our_kexec_test(arch, builds, progs, prog, chain):
    """One of our two-stage kexec tests on chain (flavor of stage 1, of stage 2).

    Each stage prints KTAP, one point per check; the suite's cases are the
    points of both stages ("stage1.x", "stage2.y").
    """
    t0 = time.monotonic()
    f1, f2 = chain
    flavor = f1 if f1 == f2 else f"{f1}>{f2}"
    vmp = OUR_KEXEC_VM[prog]
    res = vm.run_chain(f"{arch}-{f1}-{f2}-{prog}", [
        vm.Stage(builds[f1], [(prog, our_kexec_argv(prog, 1, chain))]),
        vm.Stage(builds[f2], [(prog, our_kexec_argv(prog, 2, chain))]),
    ], progs, arch, mem=vmp["mem"], timeout=vmp["timeout"][arch],
        extra_qemu=vmp.get("qemu", {}).get(arch, ()),
        extra_cmdline=vmp.get("cmdline", {}).get(arch, ""))
    s = Suite(arch, flavor, f"kexec:{prog}" if f1 == f2 else f"cross:{prog}")
    s.cases = _problem_cases(res, 2)
    times = []
    for k in (1, 2):
        if len(res.stages) < k:
            continue
        st = res.stages[k - 1]
        cases = ktap_stage_cases(res.text(k), f"stage{k}.")
        # A failed check exits 1; anything else (a signal, no exit) is a case of its own.
        c = _rc_case(res, k, prog)
        if c and (st.results.get(prog) != 1 or not any(x.status == FAIL for x in cases)):
            cases.append(c)
        s.cases += cases
        end = st.t_reboot if st.t_reboot is not None else res.lines[st.last_line][0]
        times.append(f"stage {k} {end - st.t_start:.0f} s")
    s.note = ", ".join(times)
    return _finish(s, res, t0)


def inkernel_checks(arch, flavor, res, problems):
    """TEST_KEXEC_HANDOVER and LIVEUPDATE_TEST, read from a kexec chain's log."""
    kho = Suite(arch, flavor, "inkernel:test_kho", log=str(res.log))
    if problems or len(res.stages) != 2:
        kho.cases = [Case("kho_restore", FAIL, "the kexec chain did not complete")]
    else:
        t2 = res.text(2)
        ok = "KHO restore succeeded" in t2 and "KHO restore failed" not in t2
        kho.cases = [Case("kho_restore", PASS if ok else FAIL,
                          "" if ok else "no 'KHO restore succeeded' after kexec")]
    lt = Suite(arch, flavor, "inkernel:liveupdate_test", log=str(res.log))
    for k in (1, 2):
        if len(res.stages) < k:
            lt.cases.append(Case(f"stage{k}_flb_lines", FAIL, "stage not reached"))
            continue
        got = liveupdate_test_lines(res.text(k))
        want = liveupdate_test_expected(flavor, k)
        ok = got == want
        lt.cases.append(Case(f"stage{k}_flb_lines", PASS if ok else FAIL,
                             "" if ok else f"expected {want}\ngot {got}"))
    return [kho, lt]


# CONFIG_TEST_KHO_RESERVE_MEM (lib/test_kho_reserve_mem.c): memblock hands a
# reserve_mem= region over through KHO; every kernel of a chain is booted with
# the same parameter.  Stage 1 (a cold boot) fills the region; every later
# stage must find it at the same address with the same size, every word
# intact (the checksum printed before the kexec), and refill it for the next.
RESERVE_MEM = {"name": "lu_rsv", "size": 8 << 20, "align": 4096}
RESERVE_MEM_PARAM = (f"reserve_mem={RESERVE_MEM['size'] >> 20}M:{RESERVE_MEM['align']}:"
                     f"{RESERVE_MEM['name']}")
# Stages of a same-flavor chain: two kexecs, so that a region revived from KHO
# is handed over again.  Cross-flavor chains have two stages, like the others.
RESERVE_MEM_STAGES = 3
_RSV_LINE = re.compile(r"test_kho_reserve_mem: (fill|PASS|FAIL) (.*)$")
_RSV_REVIVED = f"Revived memory reservation '{RESERVE_MEM['name']}' from KHO"
_CMDLINE = re.compile(r"Kernel command line: (.*)$")


def reserve_mem_lines(text):
    """The test's lines of a stage: [(kind, {key: value})], kind fill, PASS or FAIL."""
    out = []
    for line in text.splitlines():
        m = _RSV_LINE.search(line)
        if m:
            kv = dict(w.split("=", 1) for w in m.group(2).split() if "=" in w)
            out.append((m.group(1), kv))
    return out


def _rsv_int(kv, key):
    try:
        return int(kv[key], 0)
    except (KeyError, ValueError):
        return None


def _rsv_region_problems(kv):
    """What is wrong with the name, size and address a line reports."""
    p = []
    if kv.get("name") != RESERVE_MEM["name"]:
        p.append(f"name {kv.get('name')!r}, expected {RESERVE_MEM['name']!r}")
    if _rsv_int(kv, "size") != RESERVE_MEM["size"]:
        p.append(f"size {kv.get('size')}, expected {RESERVE_MEM['size']:#x}")
    phys = _rsv_int(kv, "phys")
    if phys is None or phys % RESERVE_MEM["align"]:
        p.append(f"phys {kv.get('phys')} not aligned to {RESERVE_MEM['align']:#x}")
    if _rsv_int(kv, "seed") is None or _rsv_int(kv, "csum") is None:
        p.append("no seed or checksum")
    return p


def reserve_mem_cases(texts):
    """Cases of a reserve_mem chain from its stages' logs (None: stage not reached).

    stageK.cmdline: the kernel was booted with RESERVE_MEM_PARAM.
    stage1.fill: one fill line, no verification (a cold boot).
    stageK.verify (K > 1): one PASS line before the fill, 0 mismatches, the
      phys, size, seed and checksum of stage K-1's fill line, and memblock's
      "Revived ... from KHO" line.
    stageK.fill (K > 1): one fill line at the same phys and size, seed + 1.
    """
    cases = []
    prev = None  # the previous stage's fill line
    for k, text in enumerate(texts, 1):
        if text is None:
            cases.append(Case(f"stage{k}", FAIL, "stage not reached"))
            prev = None
            continue
        cmd = [m.group(1).split() for m in map(_CMDLINE.search, text.splitlines()) if m]
        ok = len(cmd) == 1 and RESERVE_MEM_PARAM in cmd[0]
        cases.append(Case(f"stage{k}.cmdline", PASS if ok else FAIL,
                          "" if ok else f"'Kernel command line:' lines without "
                          f"{RESERVE_MEM_PARAM}: {[' '.join(c) for c in cmd]}"))
        lines = reserve_mem_lines(text)
        fills = [i for i, (kind, _) in enumerate(lines) if kind == "fill"]
        checks = [i for i, (kind, _) in enumerate(lines) if kind != "fill"]
        if k > 1:
            detail = []
            if len(checks) != 1:
                detail.append(f"{len(checks)} PASS/FAIL lines, expected 1")
            else:
                kind, kv = lines[checks[0]]
                if kind != "PASS" or _rsv_int(kv, "mismatches") != 0:
                    detail.append(f"{kind}: {kv.get('mismatches')} mismatching words")
                detail += _rsv_region_problems(kv)
                if prev is None:
                    detail.append(f"no fill line in stage {k - 1} to compare with")
                else:
                    for key in ("phys", "size", "seed", "csum"):
                        if _rsv_int(kv, key) is None or _rsv_int(kv, key) != _rsv_int(prev, key):
                            detail.append(f"{key} {kv.get(key)}, stage {k - 1} filled "
                                          f"{prev.get(key)}")
                if fills and fills[0] < checks[0]:
                    detail.append("the region was filled before it was checked")
            revived = text.count(_RSV_REVIVED)
            if revived != 1:
                detail.append(f"memblock printed {revived} \"{_RSV_REVIVED}\" lines, expected 1")
            cases.append(Case(f"stage{k}.verify", FAIL if detail else PASS, "\n".join(detail)))
        elif checks:
            cases.append(Case("stage1.fill", FAIL, "a cold boot verified the region"))
            prev = None
            continue
        detail = []
        if len(fills) != 1:
            detail.append(f"{len(fills)} fill lines, expected 1")
            prev = None
        else:
            kv = lines[fills[0]][1]
            detail += _rsv_region_problems(kv)
            if k > 1 and len(checks) == 1:
                chk = lines[checks[0]][1]
                for key in ("phys", "size"):
                    if _rsv_int(kv, key) != _rsv_int(chk, key):
                        detail.append(f"{key} {kv.get(key)}, checked at {chk.get(key)}")
                seed = _rsv_int(chk, "seed")
                if seed is None or _rsv_int(kv, "seed") != seed + 1:
                    detail.append(f"seed {kv.get('seed')}, expected the checked seed + 1")
            prev = kv
        cases.append(Case(f"stage{k}.fill", FAIL if detail else PASS, "\n".join(detail)))
    return cases


def reserve_mem_test(arch, builds, progs, chain):
    """A reserve_mem= region across the kexecs of chain (one flavor per stage)."""
    t0 = time.monotonic()
    same = len(set(chain)) == 1
    flavor = chain[0] if same else ">".join(chain)
    res = vm.run_chain(f"{arch}-{'-'.join(chain)}-reserve_mem",
                       [vm.Stage(builds[f], []) for f in chain], progs, arch,
                       timeout=300, extra_cmdline=RESERVE_MEM_PARAM)
    s = Suite(arch, flavor, "kexec:reserve_mem" if same else "cross:reserve_mem")
    s.cases = _problem_cases(res, len(chain))
    texts = [res.text(k) if len(res.stages) >= k else None for k in range(1, len(chain) + 1)]
    s.cases += reserve_mem_cases(texts)
    figures = []
    for k, text in enumerate(texts, 1):
        for kind, kv in reserve_mem_lines(text or ""):
            if kind == "fill":
                figures.append(f"{k}: fill {kv.get('phys')} {kv.get('size')} {kv.get('csum')}")
            else:
                figures.append(f"{k}: {kind} {kv.get('mismatches')} bad {kv.get('csum')}")
    s.note = "; ".join(figures)
    return _finish(s, res, t0)


def _kunit_cases(obj, prefix=""):
    cases = []
    name = obj.get("name", "")
    here = prefix if name == "KUnit Test Group" else (f"{prefix}.{name}" if prefix else name)
    for tc in obj.get("test_cases", []):
        st = {"PASS": PASS, "SKIP": SKIP}.get(tc.get("status"), FAIL)
        cases.append(Case(f"{here}.{tc['name']}" if here else tc["name"], st))
    for g in obj.get("sub_groups", []):
        cases += _kunit_cases(g, here)
    return cases


def kunit(arch, builds, progs, flavor, srctree):
    """Every built-in KUnit suite, parsed by the tree's kunit.py parse."""
    t0 = time.monotonic()
    res = vm.run_chain(f"{arch}-{flavor}-kunit", [vm.Stage(builds[flavor], [])],
                       progs, arch, timeout=600, extra_cmdline="kunit.enable=1")
    s = Suite(arch, flavor, "kunit")
    s.cases = _problem_cases(res, 1)
    raw = res.log.parent / "kunit.txt"
    raw.write_text("\n".join(t for _, t in res.lines) + "\n")
    out = res.log.parent / "kunit.json"
    p = subprocess.run([sys.executable, srctree / "tools" / "testing" / "kunit" / "kunit.py",
                        "parse", f"--json={out}", raw], capture_output=True, text=True)
    (res.log.parent / "kunit-parse.txt").write_text(p.stdout + p.stderr)
    if out.exists():
        cases = _kunit_cases(json.loads(out.read_text()))
    else:
        cases = []
    if not cases:
        s.cases.append(Case("kunit.py parse", FAIL, f"no KUnit results (exit {p.returncode})"))
    s.cases += cases
    done = re.findall(r"Testing complete\. (Ran \d+ tests?.*)$", p.stdout, re.M)
    s.note = f"kunit.py parse: {done[-1]}" if done else "kunit.py parse printed no summary"
    return _finish(s, res, t0)


_WARN_AT = re.compile(r"^\s*--> (\S+?):(\d+):(\d+)")


def clippy(arch, build, ours):
    """Warnings of the CLIPPY=1 rust build: ours must be none."""
    s = Suite(arch, "rust", "clippy", log=str(build.log))
    text = open(build.log, errors="replace").read()
    locs = [m.group(1) for m in (_WARN_AT.match(line) for line in text.splitlines()) if m]
    warnings = text.count("\nwarning:") + text.count("\nerror:")
    mine = sorted({loc for loc in locs if any(loc.endswith("/" + f) for f in ours)})
    if mine:
        s.cases = [Case("our code", FAIL, "warnings in: " + ", ".join(mine))]
    else:
        s.cases = [Case("our code", PASS)]
    s.note = (f"{len(ours)} Rust files ours or patched by us; {warnings} warning/error lines "
              f"in the whole build")
    return s


def rustdoc(arch, srctree, build, tc, ours):
    """make rustdoc (the kernel crate's API docs): no warning may point into our files."""
    t0 = time.monotonic()
    log = LOGS / f"rustdoc-{arch}.log"
    p = run(kbuild.make_cmd(srctree, build.outdir, arch, tc, ["rustdoc"]), log=log, check=False)
    text = open(log, errors="replace").read()
    s = Suite(arch, "rust", "rustdoc", log=str(log))
    locs = [m.group(1) for m in (_WARN_AT.match(line) for line in text.splitlines()) if m]
    mine = sorted({loc for loc in locs if any(loc.endswith("/" + f) for f in ours)})
    if p.returncode != 0:
        s.cases = [Case("our code", FAIL, f"make rustdoc failed (exit {p.returncode})")]
    elif mine:
        s.cases = [Case("our code", FAIL, "rustdoc warnings in: " + ", ".join(mine))]
    else:
        s.cases = [Case("our code", PASS)]
    s.note = f"{text.count(chr(10) + 'warning:')} warning lines in the whole run"
    s.seconds = time.monotonic() - t0
    return s


# The C core the rust flavor replaces: none of its objects may be built or linked.
C_CORE = ("luo_core", "luo_session", "luo_file", "luo_flb", "kho_block", "kexec_handover",
          "kexec_handover_debugfs")


def _built_from_rust(build, obj, src):
    """Whether build's obj (relative path) was compiled from src by rustc/clippy-driver."""
    cmd = build.outdir / obj.parent / f".{obj.name}.cmd"
    first = cmd.read_text().split("\n", 1)[0] if cmd.exists() else ""
    c_src = src.rsplit(".", 1)[0] + ".c"
    return (src in first and c_src not in first
            and ("rustc" in first or "clippy-driver" in first))


def c_core_gone(arch, build):
    """The rust build links no object of upstream's C LUO core, C KHO or C memfd handler."""
    s = Suite(arch, "rust", "c-core-gone")
    members = run(["ar", "t", build.outdir / "kernel" / "liveupdate" / "built-in.a"]).stdout.split()
    linked = [m for m in members if any(m.endswith(f"/{o}.o") for o in C_CORE)]
    # Functions only the C code defines (static ones included: nm lists them too). The C API
    # functions have the same names in Rust (#[export]), so only C-internal names are listed.
    nm = kbuild.ARCH_INFO[arch]["cross"] + "nm"
    syms = run([nm, build.outdir / "vmlinux"]).stdout.split("\n")
    c_syms = [ln.split()[-1] for ln in syms
              if re.search(r" [tT] (luo_session_create|luo_preserve_file|kho_block_set_grow|"
                           r"luo_flb_file_preserve|luo_early_startup|memfd_luo_preserve|"
                           r"memfd_luo_retrieve|memfd_luo_init|kho_radix_get_table_index|"
                           r"__kho_radix_walk_tree|kho_reserve_scratch|kho_extend_scratch|"
                           r"kho_debugfs_blob_add|kho_in_debugfs_init|kho_out_fdt_setup)$", ln)]
    memfd_rust = _built_from_rust(build, Path("mm/memfd_luo.o"), "memfd_luo.rs")
    kho_rust = _built_from_rust(build, Path("kernel/liveupdate/kho/kho.o"), "kho.rs")
    s.cases = [
        Case("no C core or KHO object in kernel/liveupdate/built-in.a",
             FAIL if linked else PASS, "linked: " + ", ".join(linked) if linked else ""),
        Case("no C core or KHO function in vmlinux", FAIL if c_syms else PASS, ", ".join(c_syms)),
        Case("mm/memfd_luo.o is built from mm/memfd_luo.rs", PASS if memfd_rust else FAIL,
             "" if memfd_rust else "mm/.memfd_luo.o.cmd does not show rustc on memfd_luo.rs"),
        Case("kernel/liveupdate/kho/kho.o is built from kho.rs", PASS if kho_rust else FAIL,
             "" if kho_rust else "kho/.kho.o.cmd does not show rustc on kho.rs"),
        Case("the Rust core is linked", PASS if any(m.endswith("/luo.o") for m in members)
             else FAIL, "" if any(m.endswith("/luo.o") for m in members)
             else "luo.o missing from kernel/liveupdate/built-in.a"),
        Case("the Rust KHO is linked", PASS if any(m.endswith("/kho/kho.o") for m in members)
             else FAIL, "" if any(m.endswith("/kho/kho.o") for m in members)
             else "kho/kho.o missing from kernel/liveupdate/built-in.a"),
    ]
    s.note = "members: " + " ".join(m.rsplit("/", 1)[-1] for m in members)
    return s


def rustfmtcheck(arch, srctree, ours):
    """make LLVM=1 rustfmtcheck over the rust tree; our files must be clean."""
    t0 = time.monotonic()
    log = LOGS / f"rustfmtcheck-{arch}.log"
    log.write_text("")
    p = run(["make", "-C", srctree, f"O={CACHE / 'build' / arch / 'rustfmt'}", "LLVM=1",
             "rustfmtcheck"], log=log, check=False)
    text = log.read_text()
    diffs = re.findall(r"^Diff in (\S+?)(?::\d+)?(?: at line \d+)?:", text, re.M)
    mine = sorted({d for d in diffs if any(d.endswith(f) for f in ours)})
    s = Suite(arch, "rust", "rustfmtcheck", log=str(log))
    if mine:
        s.cases = [Case("our code", FAIL, "not rustfmt-clean: " + ", ".join(mine))]
    elif p.returncode != 0 and not diffs:
        s.cases = [Case("our code", FAIL, f"make rustfmtcheck failed (exit {p.returncode})")]
    else:
        s.cases = [Case("our code", PASS)]
    upstream = sorted(set(diffs) - set(mine))
    s.note = (f"{len(ours)} Rust files ours or patched by us; other files not clean under "
              f"this rustfmt: {len(upstream)}")
    s.seconds = time.monotonic() - t0
    return s


def harness_unit():
    """The harness's own unit tests (python unittest)."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "unittest", "discover", "-v", "-s",
                        HARNESS / "tests", "-t", REPO], capture_output=True, text=True,
                       cwd=REPO)
    log = LOGS / "harness-unit.log"
    log.write_text(p.stdout + p.stderr)
    s = Suite("host", "-", "harness-unit", log=str(log))
    for line in (p.stdout + p.stderr).splitlines():
        m = re.search(r"(\w+) \(([\w.]+)\)\s*(?:\S.*?)?\.\.\. (ok|FAIL|ERROR|skipped.*)$", line)
        if m:
            st = PASS if m.group(3) == "ok" else SKIP if m.group(3).startswith("skip") else FAIL
            s.cases.append(Case(f"{m.group(2)}.{m.group(1)}", st))
    ran = re.search(r"^Ran (\d+) tests?", p.stdout + p.stderr, re.M)
    if ran is None or int(ran.group(1)) != len(s.cases):
        s.cases.append(Case("unittest", FAIL, "could not read every result: "
                            f"ran {ran.group(1) if ran else '?'}, parsed {len(s.cases)}"))
    if p.returncode != 0 and not any(c.status == FAIL for c in s.cases):
        s.cases.append(Case("unittest", FAIL, f"exit {p.returncode}"))
    s.seconds = time.monotonic() - t0
    return s


def announce(s):
    mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[s.status]
    extra = f" ({s.note})" if s.note else ""
    stage(f"{mark} {s.ident}: {s.count(PASS)} passed, {s.count(FAIL)} failed, "
          f"{s.count(SKIP)} skipped{extra}")
    if s.status == FAIL:
        for c in s.cases:
            if c.status == FAIL:
                for d in (c.detail or "failed").splitlines()[:6]:
                    print(f"           {c.name}: {d}")
        print(f"           log: {s.log}")


def crate_device(arch, builds, progs, flavor):
    """The crate's device tests (tools/liveupdate/tests/device.rs) in a VM."""
    t0 = time.monotonic()
    res = vm.run_chain(f"{arch}-{flavor}-crate-device", [vm.Stage(builds[flavor], [
        ("crate-device-test", ["/bin/crate-device-test", "--include-ignored",
                               "--test-threads=1"])])],
        progs, arch, timeout=300)
    s = Suite(arch, flavor, "crate:device")
    s.cases = _problem_cases(res, 1)
    if res.stages:
        s.cases += libtest_cases(res.text(1))
        c = _rc_case(res, 1, "crate-device-test")
        if c and not any(x.status == FAIL for x in s.cases):
            s.cases.append(c)
    return _finish(s, res, t0)


def luoctl_kexec(arch, builds, progs, chain):
    """luoctl holds two named memfds across a kexec; the next kernel verifies every byte."""
    t0 = time.monotonic()
    f1, f2 = chain
    flavor = f1 if f1 == f2 else f"{f1}>{f2}"
    hold = ["/bin/luoctl", "hold", "vm1", "--memfd", "ram:64M", "--memfd", "state:12K",
            "--seed", "0x5eed", "--daemon"]
    verify = ["/bin/luoctl", "verify", "vm1", "--seed", "0x5eed", "--finish", "--json"]
    res = vm.run_chain(f"{arch}-{f1}-{f2}-luoctl", [
        vm.Stage(builds[f1], [("luoctl-hold", hold)]),
        vm.Stage(builds[f2], [("luoctl-verify", verify)]),
    ], progs, arch, timeout=300)
    s = Suite(arch, flavor, "crate:luoctl-kexec")
    detail = [p for p in res.problems(2)]
    for k, prog in ((1, "luoctl-hold"), (2, "luoctl-verify")):
        c = _rc_case(res, k, prog)
        if c:
            detail.append(f"{c.name}: {c.detail}")
    report = None
    if len(res.stages) == 2:
        for line in res.text(2).splitlines():
            if line.startswith('{"command":"verify"'):
                report = json.loads(line)
    if report is None:
        detail.append("no JSON report from luoctl verify")
    else:
        got = {m["name"]: (m["bytes"], m["bad_words"]) for m in report["memfds"]}
        want = {"ram": (64 << 20, 0), "state": (12 << 10, 0)}
        if got != want or report.get("result") != "OK":
            detail.append(f"verify report {got}, expected {want}")
    s.cases = [Case("hold-kexec-verify", FAIL if detail else PASS, "\n".join(detail))]
    return _finish(s, res, t0)


def bench_smoke(arch, builds, progs):
    """`lu bench --smoke` in miniature: the bench runs, measures both flavors, plots."""
    from . import bench
    t0 = time.monotonic()
    outdir = CACHE / "bench" / f"smoke-{arch}"
    report, failures, outdir = bench.run_bench(
        arch, builds, progs, reps=1, sizes=[1], smoke=True, outdir=outdir,
        benches=["blackout", "throughput", "scale", "memory", "iommufd"],
        command=f"./lu bench --smoke --arch {arch}", accel_note="(smoke)")
    s = Suite(arch, "c+rust", "bench:smoke", log=str(outdir / "BENCHMARKS.md"))
    s.cases = [Case(f"run: {f}", FAIL) for f in failures]
    for section in ("## blackout", "## throughput", "## scale", "## memory"):
        body = report.split(section, 1)[1].split("\n## ", 1)[0] if section in report else ""
        rows = [r for r in body.splitlines() if r.startswith("| ") and not r.startswith("| configuration")]
        # Every row must have a figure for both flavors (a ratio needs a non-zero c figure,
        # so it is not required: a measured 0 is a figure).
        cols = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
        complete = bool(rows) and all(len(c) == 7 and c[4] != "–" and c[5] != "–"
                                      for c in cols)
        s.cases.append(Case(section[3:], PASS if complete else FAIL,
                            "" if complete else "missing figures"))
    # iommufd: rust only, every figure there.
    body = report.split("## iommufd", 1)[1].split("\n## ", 1)[0] if "## iommufd" in report else ""
    cols = [[c.strip() for c in r.strip().strip("|").split("|")] for r in body.splitlines()
            if r.startswith("| ") and not r.startswith("| configuration")]
    complete = len(cols) == 8 and all(len(c) == 7 and c[5] != "–" for c in cols)
    s.cases.append(Case("iommufd", PASS if complete else FAIL,
                        "" if complete else f"{len(cols)} rows, some without figures"))
    pngs = sorted(p.name for p in outdir.glob("*.png"))
    ok = pngs == ["blackout.png", "throughput.png"]
    s.cases.append(Case("plots", PASS if ok else FAIL, "" if ok else f"plots: {pngs}"))
    s.seconds = time.monotonic() - t0
    return s


def bench_kho_smoke(arch, builds, progs):
    """`lu bench --smoke --bench kho`: lib/test_kho_bench.c gives every figure on both."""
    from . import bench
    t0 = time.monotonic()
    outdir = CACHE / "bench" / f"kho-smoke-{arch}"
    report, failures, outdir = bench.run_bench(
        arch, builds, progs, reps=1, sizes=[1], smoke=True, outdir=outdir, benches=["kho"],
        command=f"./lu bench --smoke --bench kho --arch {arch}", accel_note="(smoke)",
        kho_mib=bench.KHO_SMOKE_MIB)
    s = Suite(arch, "c+rust", "bench:kho-smoke", log=str(outdir / "BENCHMARKS.md"))
    s.cases = [Case(f"run: {f}", FAIL) for f in failures]
    body = report.split("## kho", 1)[1].split("\n## ", 1)[0] if "## kho" in report else ""
    cols = [[c.strip() for c in r.strip().strip("|").split("|")] for r in body.splitlines()
            if r.startswith("| ") and not r.startswith("| configuration")]
    for order in bench.KHO_ORDERS:
        mine = [c for c in cols if f", order {order} (" in c[0]]
        # Every figure (preserve, unpreserve, memory, boot restore) for both flavors.
        complete = len(mine) == 12 and all(len(c) == 7 and c[4] != "–" and c[5] != "–"
                                           for c in mine)
        s.cases.append(Case(f"order {order}", PASS if complete else FAIL,
                            "" if complete else f"{len(mine)} rows, some without figures"))
    ok = (outdir / "kho.png").exists()
    s.cases.append(Case("plot", PASS if ok else FAIL, "" if ok else "no kho.png"))
    s.seconds = time.monotonic() - t0
    return s


def series_check():
    """The patch series: exported, applies to the pristine tree, checkpatch --strict clean."""
    from . import tree
    t0 = time.monotonic()
    trees, base, tip = tree.prepare_trees()
    outdir = CACHE / "series"
    patches = tree.export_series(base, tip, outdir)
    s = Suite("host", "-", "series", log=str(LOGS / "checkpatch.log"))
    applies = bool(patches) and tree.check_series_applies(base, tip, patches)
    s.cases.append(Case("git format-patch + apply on pristine", PASS if applies else FAIL,
                        "" if applies else "the series does not reproduce the rust tree"))
    log = LOGS / "checkpatch.log"
    log.unlink(missing_ok=True)
    errors, warnings, checks = tree.checkpatch(trees["rust"], patches, log)
    s.cases.append(Case("checkpatch --strict: no errors", PASS if errors == 0 else FAIL,
                        f"{errors} errors"))
    s.note = (f"{len(patches)} patches; checkpatch: {errors} errors, {warnings} warnings, "
              f"{checks} checks")
    s.seconds = time.monotonic() - t0
    return s


def kconfig_check(arch, srctree, tc):
    """Kconfig of the rust tree for arch, without and with a Rust toolchain (no compilation).

    Without Rust (make RUSTC=/nonexistent): allnoconfig, defconfig and
    allmodconfig each give a config, with all of ours off and no Kconfig
    message naming one of them.  With Rust: defconfig, then
    kconfig.RUST_ENABLE turned on with scripts/config and olddefconfig, gives
    them all =y.  One output directory serves every run (conf is built once).
    """
    t0 = time.monotonic()
    out = CACHE / "tmp" / "kconfig" / arch
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / ".config"
    log = LOGS / f"kconfig-{arch}.log"
    log.write_text("")
    s = Suite("host", "rust", f"kconfig:{arch}", log=str(log))

    def step(cmd, env=None):
        """Run cmd into the log; return (whether it succeeded, its output)."""
        p = run(cmd, env=env, check=False)
        with open(log, "a") as f:
            f.write(f"\n$ {' '.join(map(str, cmd))}\n{p.stdout}{p.stderr}")
        return p.returncode == 0, p.stdout + p.stderr

    def config_text():
        return cfg.read_text() if cfg.exists() else None

    others = 0
    for target in kconfig.NO_RUST_TARGETS:
        cfg.unlink(missing_ok=True)
        ok, text = step(kbuild.make_cmd(srctree, out, arch, None, [kconfig.NO_RUST, target]))
        problems = ([] if ok else ["make failed (see the log)"]) \
            + kconfig.check_without_rust(config_text(), text)
        others += len(kconfig.diagnostics(text)) - len(kconfig.diagnostic_problems(text))
        s.cases.append(Case(f"without Rust: {target}", FAIL if problems else PASS,
                            "\n".join(problems)))
    name = "with Rust: defconfig + " + " ".join(kconfig.RUST_ENABLE)
    cfg.unlink(missing_ok=True)
    texts, problems = [], []
    ok, text = step(kbuild.make_cmd(srctree, out, arch, tc, ["defconfig"]), env=tc.env())
    texts.append(text)
    if ok:
        enable = [a for sym in kconfig.RUST_ENABLE for a in ("--enable", sym)]
        ok, text = step([srctree / "scripts" / "config", "--file", cfg] + enable)
        texts.append(text)
    if ok:
        ok, text = step(kbuild.make_cmd(srctree, out, arch, tc, ["olddefconfig"]), env=tc.env())
        texts.append(text)
    if not ok:
        problems.append("a step failed (see the log)")
    problems += kconfig.check_with_rust(config_text(), "\n".join(texts))
    others += sum(len(kconfig.diagnostics(t)) - len(kconfig.diagnostic_problems(t))
                  for t in texts)
    s.cases.append(Case(name, FAIL if problems else PASS, "\n".join(problems)))
    s.seconds = time.monotonic() - t0
    s.note = f"{others} other Kconfig messages; {s.seconds:.0f} s"
    return s


def crate_example(arch, builds, progs, flavor):
    """The crate README's example (examples/guest_ram.rs), both halves around a kexec."""
    t0 = time.monotonic()
    res = vm.run_chain(f"{arch}-{flavor}-guest-ram", [
        vm.Stage(builds[flavor], [("guest_ram", ["/bin/guest_ram", "preserve"])]),
        vm.Stage(builds[flavor], [("guest_ram", ["/bin/guest_ram", "restore"])]),
    ], progs, arch, timeout=300)
    s = Suite(arch, flavor, "crate:example-kexec")
    detail = list(res.problems(2))
    for k in (1, 2):
        c = _rc_case(res, k, "guest_ram")
        if c:
            detail.append(f"{c.name}: {c.detail}")
    if len(res.stages) == 2 and "guest_ram: restored, contents intact" not in res.text(2):
        detail.append("stage 2 did not report the contents intact")
    s.cases = [Case("guest_ram", FAIL if detail else PASS, "\n".join(detail))]
    return _finish(s, res, t0)


# CONFIG_LIVEUPDATE_QUERY_TEST (kernel/liveupdate/luo_query_test.c): the boot-time
# liveupdate_fd_data_query() of a test handler, and what `lu-query-check hold`
# preserves with it (data handles 0x5100.. in preservation order).
FD_QUERY_PREFIX = "luo_query_test: "
FD_QUERY_STAGE1 = ["0 incoming files"]
FD_QUERY_STAGE2 = [
    "3 incoming files",
    "session=query-a token=7 data=0x5100",
    "session=query-b token=3 data=0x5101",
    "session=query-b token=4 data=0x5102",
]


def fd_query_lines(text):
    """The test handler's query lines of one stage, without the log prefix."""
    return [t[t.index(FD_QUERY_PREFIX) + len(FD_QUERY_PREFIX):].strip()
            for t in text.splitlines() if FD_QUERY_PREFIX in t]


def fd_query_test(arch, builds, progs):
    """rust>rust: a handler's boot-time query reports exactly the files stage 1 preserved
    with it (rust only: Linux 7.3 has no liveupdate_fd_data_query())."""
    t0 = time.monotonic()
    b = builds["rust"]
    res = vm.run_chain(f"{arch}-rust-fd-query", [
        vm.Stage(b, [("hold", ["/bin/lu-query-check", "hold"])]),
        vm.Stage(b, [("check", ["/bin/lu-query-check", "check"])]),
    ], progs, arch, timeout=300, extra_cmdline="luo_query_test.enable=1")
    s = Suite(arch, "rust", "kexec:fd_query")
    for k, (prog, want) in enumerate((("hold", FD_QUERY_STAGE1), ("check", FD_QUERY_STAGE2)),
                                     start=1):
        detail = list(res.problems(2)) if k == 2 else []
        c = _rc_case(res, k, prog)
        if c:
            detail.append(f"{c.name}: {c.detail}")
        got = fd_query_lines(res.text(k)) if len(res.stages) >= k else []
        if got != want:
            detail.append(f"query lines {got}, expected {want}")
        s.cases.append(Case(f"stage{k}.query", FAIL if detail else PASS, "\n".join(detail)))
    return _finish(s, res, t0)


# CONFIG_LIVEUPDATE_TEST_MODULE (kernel/liveupdate/luo_test_module.rs): a Rust
# file handler and FLB in a module, which their preserved or incoming files pin
# (harness/init/lu-module-check.c drives it). The module's callbacks print these
# lines, in this order, in each stage.
MODULE_PREFIX = "luo_test_module: "
MODULE_STAGE1 = ["loaded", "flb preserve 0xf1b", "preserve 0x7e57", "unpreserve 0x7e57",
                 "flb unpreserve 0xf1b", "unloading", "loaded", "flb preserve 0xf1b",
                 "preserve 0x7e57"]
MODULE_STAGE2 = ["loaded", "retrieve 0x7e57", "finish 0x7e57 Retrieved", "flb retrieve 0xf1b",
                 "flb finish 0xf1b", "unloading"]
_MODULE_CHECK = re.compile(r"LU-MODULE (ok|FAIL) (.*) \(errno")


_MODULE_CALLBACK = re.compile(r"^(loaded|unloading|(flb )?(preserve|unpreserve|retrieve|finish) .*)$")


def module_lines(text):
    """The test module's callback lines of one stage, without the log prefix."""
    lines = (t[t.index(MODULE_PREFIX) + len(MODULE_PREFIX):].strip()
             for t in text.splitlines() if MODULE_PREFIX in t)
    return [t for t in lines if _MODULE_CALLBACK.match(t)]


def module_test(arch, builds, progs):
    """rust>rust: rmmod of a module whose Rust handler and FLB have a preserved, incoming or
    unfinished file is refused, and allowed once the file is unpreserved or finished."""
    t0 = time.monotonic()
    b = builds["rust"]
    files = {"/lu/luo_test_module.ko": b.outdir / kbuild.TEST_MODULE}
    res = vm.run_chain(f"{arch}-rust-luo-module", [
        vm.Stage(b, [("stage1", ["/bin/lu-module-check", "stage1"])], files),
        vm.Stage(b, [("stage2", ["/bin/lu-module-check", "stage2"])], files),
    ], progs, arch, timeout=300)
    s = Suite(arch, "rust", "kexec:luo_module")
    for k, (prog, want) in enumerate((("stage1", MODULE_STAGE1), ("stage2", MODULE_STAGE2)),
                                     start=1):
        text = res.text(k) if len(res.stages) >= k else ""
        for m in _MODULE_CHECK.finditer(text):
            s.cases.append(Case(f"stage{k}.{m.group(2)}", PASS if m.group(1) == "ok" else FAIL,
                                "" if m.group(1) == "ok" else m.group(0)))
        detail = list(res.problems(2)) if k == 2 else []
        c = _rc_case(res, k, prog)
        if c:
            detail.append(f"{c.name}: {c.detail}")
        got = module_lines(text)
        if got != want:
            detail.append(f"module lines {got}, expected {want}")
        s.cases.append(Case(f"stage{k}.callbacks", FAIL if detail else PASS, "\n".join(detail)))
    return _finish(s, res, t0)


# CONFIG_LIVEUPDATE_CORRUPT_TEST: luo_test_corrupt=N damages the handover data
# at reboot; the next kernel must refuse it with one warning and keep working.
CORRUPT_CASES = {
    1: "wrong compatible string",
    2: "cycle in the session chain",
    3: "block count beyond capacity",
    4: "session chain outside RAM",
    5: "unterminated session name",
    6: "file count mismatch",
}
_REFUSAL = "luo: refusing the previous kernel's live update data"
_ALARMS = ("WARNING:", "BUG:", "Kernel panic", "Call Trace", "Oops")


KHO_CORRUPT_CASES = {
    1: "bad FDT magic",
    2: "wrong root compatible",
    3: "radix pointer outside RAM",
    4: "radix loop",
    5: "subtree blob size past its page",
    6: "key of an order beyond MAX_PAGE_ORDER",
}
_KHO_REFUSAL = "KHO: refusing the previous kernel's handover"
# The memfd stage 1 holds: a leak of it in stage 2 would show in MemTotal.
KHO_CORRUPT_HOLD_MIB = 64
# MemTotal of a stage 2 may differ from the cold boot's by this much (kB): the
# kexec'd kernel keeps a few pages (e.g. the old kernel's FDT and scratch list).
KHO_MEMTOTAL_SLACK_KB = 8 * 1024


def meminfo(text):
    """The (MemTotal, MemFree) in kB that lu-corrupt-check --meminfo printed."""
    m = re.findall(r"LU-MEMINFO MemTotal=(\d+) MemFree=(\d+)", text)
    return (int(m[-1][0]), int(m[-1][1])) if m else None


def _corrupt_detail(res, stage1_marker, refusal, refusal_name):
    """What is wrong with a corruption chain: it must reach stage 2, its programs must succeed,
    stage 1 must print stage1_marker, and stage 2 exactly one `refusal` and no alarm."""
    detail = list(res.problems(2))
    for k, prog in ((1, "luoctl-hold"), (2, "corrupt-check")):
        c = _rc_case(res, k, prog)
        if c:
            detail.append(f"{c.name}: {c.detail}")
    if res.stages and stage1_marker not in res.text(1):
        detail.append(f"stage 1 did not print '{stage1_marker}'")
    if len(res.stages) == 2:
        lines = res.text(2).splitlines()
        refusals = [ln for ln in lines if refusal in ln]
        if len(refusals) != 1:
            detail.append(f"stage 2 printed {len(refusals)} {refusal_name}, expected 1")
        alarms = [ln for ln in lines if any(a in ln for a in _ALARMS)]
        if alarms:
            detail.append("stage 2 kernel log: " + " | ".join(alarms[:3]))
    return detail


def kho_corrupt_case(arch, builds, progs, case):
    """A rust>rust chain whose KHO handover is corrupted in one way (rust only).

    Stage 2 must boot to init, print exactly one KHO refusal, keep a working
    /dev/liveupdate without the held session, and have the memory of a cold
    boot: its MemTotal is stage 1's (a cold boot) within KHO_MEMTOTAL_SLACK_KB,
    although stage 1 preserved a KHO_CORRUPT_HOLD_MIB memfd.
    """
    t0 = time.monotonic()
    b = builds["rust"]
    hold = ["/bin/luoctl", "hold", "corrupt", "--memfd", f"ram:{KHO_CORRUPT_HOLD_MIB}M",
            "--seed", "0x5eed", "--daemon"]
    mem = ("meminfo", ["/bin/lu-corrupt-check", "--meminfo"])
    res = vm.run_chain(f"{arch}-rust-kho-corrupt-{case}", [
        vm.Stage(b, [mem, ("luoctl-hold", hold)]),
        vm.Stage(b, [("corrupt-check", ["/bin/lu-corrupt-check", "corrupt"]), mem]),
    ], progs, arch, timeout=300, extra_cmdline=f"kho_test_corrupt={case}")
    s = Suite(arch, "rust", f"corrupt:kho-{case}")
    detail = _corrupt_detail(res, f"KHO: test: corrupted the outgoing handover (case {case}:",
                             _KHO_REFUSAL, "KHO refusal warnings")
    figs = ""
    if len(res.stages) == 2:
        cold, after = meminfo(res.text(1)), meminfo(res.text(2))
        if not cold or not after:
            detail.append("missing LU-MEMINFO lines")
        else:
            figs = (f"MemTotal {cold[0]} -> {after[0]} kB, "
                    f"MemFree {cold[1]} -> {after[1]} kB (cold boot -> refused handover)")
            if abs(after[0] - cold[0]) > KHO_MEMTOTAL_SLACK_KB:
                detail.append(f"MemTotal {after[0]} kB after the refused handover, "
                              f"{cold[0]} kB on the cold boot")
    s.cases = [Case(KHO_CORRUPT_CASES[case], FAIL if detail else PASS,
                    "\n".join(detail) or figs)]
    return _finish(s, res, t0)


def corrupt_case(arch, builds, progs, case):
    """A rust>rust chain whose handover data is corrupted in one way (rust only)."""
    t0 = time.monotonic()
    b = builds["rust"]
    hold = ["/bin/luoctl", "hold", "corrupt", "--memfd", "ram:4M", "--seed", "0x5eed",
            "--daemon"]
    res = vm.run_chain(f"{arch}-rust-corrupt-{case}", [
        vm.Stage(b, [("luoctl-hold", hold)]),
        vm.Stage(b, [("corrupt-check", ["/bin/lu-corrupt-check", "corrupt"])]),
    ], progs, arch, timeout=300, extra_cmdline=f"luo_test_corrupt={case}")
    s = Suite(arch, "rust", f"corrupt:{case}")
    detail = _corrupt_detail(res, f"test: corrupted the outgoing data: case {case},",
                             _REFUSAL, "refusal warnings")
    s.cases = [Case(CORRUPT_CASES[case], FAIL if detail else PASS, "\n".join(detail))]
    return _finish(s, res, t0)
