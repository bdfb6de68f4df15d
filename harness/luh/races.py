# SPDX-License-Identifier: GPL-2.0
"""Races and soak (issue 18): reliability:races, reliability:soak-smoke, `lu soak`.

reliability:races is a three-stage chain of harness/init/lu-race.c: a storm
of threads on /dev/liveupdate and its sessions (and, on rust, the test
module's handler coming and going), racing retrieves and FINISH after the
kexec, and a reboot(KEXEC) called while other threads are mid-ioctl.

The soak is a chain of harness/init/lu-soak.c stages carrying a big memfd, a
sparse one and small files, each stage verifying every byte of what the
previous one preserved and mutating it; `lu soak` runs a long one and prints
a table and the MemFree drift, reliability:soak-smoke a short one.
"""

import re
import time

from . import build as kbuild
from . import vm
from .ktap import FAIL, PASS, Case, Suite


# reliability imports this module for its SUITES: its helpers are looked up
# when called.
def check_cases(*args):
    from . import reliability
    return reliability.check_cases(*args)


def _finish(*args):
    from . import reliability
    return reliability._finish(*args)

# Seconds of the stage-1 storm (the same on the debug builds: fewer
# iterations there, the same interleavings to try).
RACE_SECONDS = 8

_RACE = re.compile(r"LU-RACE (ok|FAIL) (.*) \(errno (-?\d+)")
_REBOOT_CALLED = "LU-RACE reboot: calling reboot(LINUX_REBOOT_CMD_KEXEC)"
_REBOOT_RETURNED = re.compile(r"LU-RACE reboot: reboot\(LINUX_REBOOT_CMD_KEXEC\) returned, "
                              r"errno (\d+)")
_STATS = re.compile(r'LU-RACE-STATS op="([^"]*)"((?: e\d+=\d+)*) calls=(\d+)')


def race_stats(text):
    """{op: (calls, {errno: count})} from the LU-RACE-STATS lines of a log."""
    out = {}
    for m in _STATS.finditer(text):
        counts = {int(e): int(n) for e, n in re.findall(r"e(\d+)=(\d+)", m.group(2))}
        out[m.group(1)] = (int(m.group(3)), counts)
    return out


def reboot_outcome(res, nstages=3):
    """How stage 2's reboot(KEXEC) mid-ioctl ended: (ok, detail).

    It must either kexec (the program never returns; stage 3 runs) or fail
    cleanly (the program reports the errno, checks sessions still work and
    exits 0; init kexecs then)."""
    if len(res.stages) < 2:
        return False, "stage 2 not reached"
    text = res.text(2)
    rc = res.stages[1].results.get("reboot")
    returned = _REBOOT_RETURNED.search(text)
    if _REBOOT_CALLED not in text:
        return False, f"the reboot thread did not run (exit status {rc})"
    if returned:
        return (rc == 0 and len(res.stages) == nstages,
                f"reboot(KEXEC) failed, errno {returned.group(1)}; exit status {rc}")
    if rc is not None:
        return False, f"exit status {rc} without a reboot"
    return len(res.stages) == nstages, "kexec'd from the program's thread"


def races(arch, builds, progs, flavor):
    """Three stages of lu-race: storm, racing retrieves + reboot mid-ioctl, verify."""
    t0 = time.monotonic()
    b = builds[flavor]
    race = "/bin/lu-race"
    storm = [race, "storm", flavor, str(RACE_SECONDS)]
    files = {}
    if flavor == "rust":
        storm.append("module")
        files = {"/lu/luo_test_module.ko": b.outdir / kbuild.TEST_MODULE}
    res = vm.run_chain(f"{arch}-{flavor}-races", [
        vm.Stage(b, [("storm", storm)], files),
        vm.Stage(b, [("retrieve", [race, "retrieve", flavor]),
                     ("reboot", [race, "reboot", flavor])]),
        vm.Stage(b, [("verify", [race, "verify", flavor])]),
    ], progs, arch, timeout=300)
    s = Suite(arch, flavor, "reliability:races")
    check_cases(s, res, "LU-RACE", 1, "storm")
    # Stage 2 has two programs: one case per check line, the retrieve's exit
    # status, and how the reboot ended.
    text = res.text(2) if len(res.stages) >= 2 else ""
    for m in _RACE.finditer(text):
        s.cases.append(Case(f"stage2.{m.group(2)}", PASS if m.group(1) == "ok" else FAIL,
                            "" if m.group(1) == "ok" else m.group(0)))
    rc = res.stages[1].results.get("retrieve") if len(res.stages) >= 2 else None
    s.cases.append(Case("stage2.retrieve.run", PASS if rc == 0 else FAIL,
                        "" if rc == 0 else f"retrieve: exit status {rc}"))
    ok, detail = reboot_outcome(res)
    s.cases.append(Case("stage2.reboot(KEXEC) mid-ioctl kexecs or fails cleanly",
                        PASS if ok else FAIL, "" if ok else detail))
    check_cases(s, res, "LU-RACE", 3, "verify")
    return _finish(s, res, t0)


# ---- soak ----

SOAK_NSMALL = 128
SOAK_SMALL_START = 96
SOAK_SMALL_MAX = 20000
_M64 = (1 << 64) - 1
_D_SMALL, _D_SIZE = 3, 4


def _mix(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & _M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & _M64
    return z ^ (z >> 31)


def _h(d, j, x):
    return _mix((((d << 56) ^ (j << 40) ^ x) * 0x9e3779b97f4a7c15 + 1) & _M64)


def soak_small_gen(i, k):
    """lu-soak.c's small_gen(): the stage whose content small file i holds at
    stage k, 0 if it does not exist then."""
    g = 1 if i < SOAK_SMALL_START else 0
    for j in range(2, k):
        e = _h(_D_SMALL, j, i) % 8
        if e == 0:
            g = 0 if g else j
        elif e == 1 and g:
            g = j
    return g


def soak_small_size(i, g):
    return 1 + _h(_D_SIZE, g, i) % SOAK_SMALL_MAX


def soak_expected(k, size_mib, sparse_mib):
    """(bytes stage k verifies, files stage k preserves) as lu-soak computes them."""
    verified = 0
    if k > 1:
        verified = (size_mib + sparse_mib) << 20
        verified += sum(soak_small_size(i, g) for i in range(SOAK_NSMALL)
                        if (g := soak_small_gen(i, k)))
    files = 2 + sum(1 for i in range(SOAK_NSMALL) if soak_small_gen(i, k + 1))
    return verified, files


_SOAK_LINE = re.compile(r"LU-SOAK stage=(\d+)((?: \w+=-?[\d.]+)+)\s*$")


def soak_lines(text):
    """{stage: {field: int}} from the "LU-SOAK stage=K k=v ..." lines."""
    out = {}
    for line in text.splitlines():
        m = _SOAK_LINE.search(line)
        if m:
            out[int(m.group(1))] = {k: int(float(v)) for k, v in
                                    re.findall(r"(\w+)=(-?[\d.]+)", m.group(2))}
    return out


def soak_flavors(flavor, n):
    """The flavor of each of n stages: 'rust', 'c' or 'alternate' (rust first)."""
    if flavor == "alternate":
        return ["rust" if k % 2 == 0 else "c" for k in range(n)]
    return [flavor] * n


def soak_drift(rows):
    """MemFree drift from [(stage, flavor, memfree_kb)] of the stages after a FINISH.

    Per flavor: drift = last - first stage's figure, per_cycle = least-squares slope
    (kB per stage of that flavor), noise = the largest change between two consecutive
    stages of that flavor. Returns {flavor: (drift, per_cycle, noise, n)}."""
    out = {}
    for f in sorted({f for _, f, _ in rows}):
        ys = [m for _, fl, m in rows if fl == f]
        n = len(ys)
        if n < 2:
            out[f] = (0, 0.0, 0, n)
            continue
        xm = (n - 1) / 2
        ym = sum(ys) / n
        slope = sum((x - xm) * (y - ym) for x, y in enumerate(ys)) / \
            sum((x - xm) ** 2 for x in range(n))
        noise = max(abs(b - a) for a, b in zip(ys, ys[1:]))
        out[f] = (ys[-1] - ys[0], slope, noise, n)
    return out


def soak_adjusted(d, prev):
    """MemFree after FINISH plus what the chain itself holds: the memfds' pages (Shmem;
    lines without it: the populated bytes the previous stage left) and the copy of the
    later stages' kernels and initramfs in the loaded kexec image, so that neither the
    data's changes nor the shrinking nested initramfs shows as drift."""
    held = d["shmem_kb"] if "shmem_kb" in d else (prev or {}).get("data_kb", 0)
    return d["memfree_kb"] + held + d["next_kb"]


def soak_chain(arch, builds, progs, flavors, size_mib, sparse_mib, name):
    """Run a soak chain; return the RunResult."""
    n = len(flavors)
    stages = [vm.Stage(builds[f], [("soak", ["/bin/lu-soak", str(k), str(n), str(size_mib),
                                             str(sparse_mib)])])
              for k, f in enumerate(flavors, start=1)]
    # Upstream's memfd handler fills the sparse memfd's holes at PRESERVE_FD.
    mem = 3072 + size_mib + (sparse_mib if "c" in flavors else 0)
    per_stage = 60 + (size_mib + (sparse_mib if "c" in flavors else sparse_mib // 16)) // 32
    return vm.run_chain(name, stages, progs, arch, mem=mem, timeout=60 + n * per_stage)


def soak_cases(s, res, flavors, size_mib, sparse_mib):
    """Check lines and exit status per stage, and each stage's LU-SOAK line with the
    exact bytes verified and files preserved."""
    n = len(flavors)
    for k in range(1, n + 1):
        check_cases(s, res, "LU-SOAK", k, "soak")
        got = soak_lines(res.text(k)).get(k) if len(res.stages) >= k else None
        want_bytes, want_files = soak_expected(k, size_mib, sparse_mib)
        if k == n:
            want_files = None
        detail = ""
        if got is None:
            detail = f"no LU-SOAK stage={k} line"
        elif got["bytes_verified"] != want_bytes:
            detail = f"bytes_verified={got['bytes_verified']}, expected {want_bytes}"
        elif want_files is not None and got["files"] != want_files:
            detail = f"files={got['files']}, expected {want_files}"
        s.cases.append(Case(f"stage{k}.bytes verified and files preserved",
                            FAIL if detail else PASS, detail))


SMOKE_STAGES, SMOKE_MIB, SMOKE_SPARSE_MIB = 4, 64, 256


def soak_smoke(arch, builds, progs, flavor):
    """A short soak: SMOKE_STAGES stages, every byte verified at each."""
    t0 = time.monotonic()
    flavors = [flavor] * SMOKE_STAGES
    res = soak_chain(arch, builds, progs, flavors, SMOKE_MIB, SMOKE_SPARSE_MIB,
                     f"{arch}-{flavor}-soak-smoke")
    s = Suite(arch, flavor, "reliability:soak-smoke")
    soak_cases(s, res, flavors, SMOKE_MIB, SMOKE_SPARSE_MIB)
    return _finish(s, res, t0)


def soak_report(res, flavors, size_mib, sparse_mib):
    """The table of `lu soak` and its verdict: (text, ok)."""
    s = Suite("-", "-", "soak")
    soak_cases(s, res, flavors, size_mib, sparse_mib)
    lines = soak_lines(res.text()) if res.stages else {}
    out = [f"{'stage':>5}  {'kernel':<10}  {'verified MiB':>12}  {'files':>5}  "
           f"{'MemFree MiB':>11}  {'adj. MiB':>9}  {'drift MiB':>9}  {'verify s':>8}  "
           f"{'stage s':>7}"]
    rows = []
    first = {}
    for st in res.stages:
        k = st.number
        f = flavors[k - 1] + ("-debug" if res.debug else "")
        d = lines.get(k)
        nxt = next((x for x in res.stages if x.number == k + 1), None)
        wall = (nxt.t_start - st.t_start) if nxt else None
        if d is None:
            out.append(f"{k:>5}  {f:<10}  (no LU-SOAK line)")
            continue
        adj = soak_adjusted(d, lines.get(k - 1))
        drift = ""
        # The last stage loads no kexec image: not comparable.
        if 2 <= k < len(flavors):
            rows.append((k, f, adj))
            first.setdefault(f, adj)
            drift = f"{(adj - first[f]) / 1024:+9.1f}"
        out.append(f"{k:>5}  {f:<10}  {d['bytes_verified'] / 2**20:>12.1f}  {d['files']:>5}  "
                   f"{d['memfree_kb'] / 1024:>11.1f}  {adj / 1024:>9.1f}  {drift:>9}  "
                   f"{d['verify_ms'] / 1000:>8.1f}  "
                   + (f"{wall:>7.1f}" if wall is not None else f"{'-':>7}"))
    out.append("")
    out.append("MemFree after FINISH plus Shmem (the memfds) and the size of the later "
               "stages' kernels and initramfs, which the loaded kexec image holds (adj.); "
               "drift from the first "
               "stage after a FINISH of each kernel to the last but one (the last loads no "
               "kexec image); noise = the largest change between consecutive stages of that "
               "kernel:")
    ok = s.status == PASS
    for f, (drift, slope, noise, n) in soak_drift(rows).items():
        within = abs(slope) <= noise
        ok = ok and within
        out.append(f"  {f}: {n} stages, drift {drift / 1024:+.1f} MiB, "
                   f"{slope / 1024:+.2f} MiB per cycle, noise {noise / 1024:.1f} MiB: "
                   + ("within noise" if within else "BEYOND NOISE"))
    total = sum(d["bytes_verified"] for d in lines.values())
    out.append(f"bytes verified: {total} ({total / 2**30:.2f} GiB) over {len(lines)} stages")
    if len(res.stages) >= 2:
        span = res.stages[-1].t_start - res.stages[0].t_start
        out.append(f"time: {res.seconds:.0f} s in QEMU, {span / (len(res.stages) - 1):.1f} s "
                   "per stage (boot to boot)")
    splat = res.splats if res.debug else []
    out.append(f"checker lines (splats): {len(splat)}"
               + ("" if res.debug else " (not a debug build: not scanned)"))
    for c in s.cases:
        if c.status == FAIL:
            out.append(f"FAIL {c.name}: {c.detail}")
    return "\n".join(out), ok
