# SPDX-License-Identifier: GPL-2.0
"""`lu bench`: both flavors measured side by side in one run, alternating.

Every figure comes from VMs booted with the same memory and CPUs; each
repetition runs every configuration on both flavors, in alternating order
(c first on even repetitions, rust first on odd ones), so slow phases of a
shared machine hit both. Reported: repetitions, median, min, max per flavor
and the rust/c ratio of the medians.

Clocks: times inside one kernel are the agent's CLOCK_MONOTONIC. Times that
span the kexec come from the host: the runner stamps every serial line with
the host's monotonic clock as QEMU writes it out (the guest's clock does not
survive kexec). The VMs boot with an early console so that the new kernel's
first line is printed when it is produced, not when the console driver
registers. The blackout is cut at consecutive markers of the same clock, so
its parts add up to the whole by construction; the error of each cut is the
latency from the guest's UART write to the host's read (a pipe, well under a
millisecond, plus at most one printk record of buffering).

`--bench kho` measures KHO itself, without LUO: lib/test_kho_bench.c
(CONFIG_TEST_KHO_BENCH, built into both flavors) preserves and unpreserves
folios in the first kernel of a two-stage chain and keeps them preserved
across the kexec; the second kernel prints the cycles its early KHO init
took (mm/mm_init.c). See kho_run().
"""

import json
import re
import shutil
import statistics
import subprocess
import time

from . import vm
from .common import CACHE, REPO, HarnessError, info, stage

GIB = 1 << 30
MIB = 1 << 20

EARLYCON = {"x86_64": "earlycon=uart8250,io,0x3f8,115200",
            "arm64": "earlycon=pl011,0x9000000"}


def memfd_configs(sizes, smoke):
    """(name, total bytes, memfd count, thp, populate %) of the memfd runs."""
    if smoke:
        return [("smoke-16M", 16 * MIB, 2, False, 100)]
    cfgs = []
    for g in sizes:
        cfgs.append((f"{g}G-4K", g * GIB, 4, False, 100))
    for g in sizes:
        cfgs.append((f"{g}G-2M-THP", g * GIB, 4, True, 100))
    cfgs.append((f"{sizes[-1]}G-sparse-1%", sizes[-1] * GIB, 4, False, 1))
    return cfgs


def _kv_lines(res, stage_no):
    out = []
    for line in res.text(stage_no).splitlines():
        if "LU-BENCH " not in line:
            continue
        kv = dict(p.split("=", 1) for p in line[line.index("LU-BENCH ") + 9:].split() if "=" in p)
        out.append(kv)
    return out


def _phase(res, stage_no, phase):
    """The stage's first `LU-BENCH phase=<phase>` line as a dict, or None."""
    return next((kv for kv in _kv_lines(res, stage_no) if kv.get("phase") == phase), None)


def _line_time(res, needle, lo, hi):
    for i in range(lo, hi):
        t, text = res.lines[i]
        if needle in text:
            return t
    return None


# `--icount`: every VM of the run has one vCPU and runs under TCG with
# `-icount shift=0,sleep=off`, so the guest's clocks advance one nanosecond per
# instruction executed: a time measured inside the guest is an instruction count
# (1 ms = 1,000,000 instructions), the same on any host and free of TCG's
# translation cost. What it does not capture: caches, TLBs, branch prediction
# (every instruction costs the same), and idle waits (sleep=off skips them).
# Times that span the kexec are taken from the host clock; they are not
# instruction counts and are left out (the blackout).
ICOUNT = ["-icount", "shift=0,sleep=off"]
ICOUNT_UNITS = {"ms": "M insns", "ns": "insns", "GiB/s": "GiB per 10^9 insns"}


def chain(name, stages, progs, arch, *, icount=False, smp=2, accel=None, extra_qemu=(),
          **kw):
    """vm.run_chain(), with one vCPU and -icount shift=0 when icount."""
    if icount:
        smp, accel, extra_qemu = 1, "tcg", list(extra_qemu) + ICOUNT
        name += "-icount"
    return vm.run_chain(name, stages, progs, arch, smp=smp, accel=accel,
                        extra_qemu=extra_qemu, **kw)


class Figures:
    """figures[(bench, metric, config)][flavor] = [values]; units per metric.

    With icount, times are instruction counts: the units say so, and the
    blackout (host clock) is not kept.
    """

    def __init__(self, icount=False):
        self.data = {}
        self.units = {}
        self.icount = icount

    def add(self, bench, metric, config, flavor, value, unit):
        if self.icount:
            if bench == "blackout":
                return
            unit = ICOUNT_UNITS.get(unit, unit)
        self.data.setdefault((bench, metric, config), {}).setdefault(flavor, []).append(value)
        self.units[(bench, metric)] = unit

    def rows(self):
        for key in self.data:
            yield key, self.data[key], self.units[key[:2]]


def two_stage(arch, builds, progs, flavor, label, argv1, argv2, mem, failures, icount=False):
    """lu-bench with argv1 before and argv2 after a kexec; the run, or None if it failed."""
    res = chain(f"bench-{arch}-{flavor}-{label}", [
        vm.Stage(builds[flavor], [("lu-bench", ["/bin/lu-bench"] + argv1)]),
        vm.Stage(builds[flavor], [("lu-bench", ["/bin/lu-bench"] + argv2)]),
    ], progs, arch, mem=mem, timeout=1200 * (2 if icount else 1), extra_cmdline=EARLYCON[arch],
        icount=icount)
    problems = res.problems(2)
    for k in (1, 2):
        if len(res.stages) >= k and res.stages[k - 1].results.get("lu-bench") != 0:
            problems.append(f"lu-bench stage {k} exited {res.stages[k - 1].results.get('lu-bench')}")
    if problems:
        failures.append(f"{flavor} {label}: {'; '.join(problems)} (log {res.log})")
        return None
    return res


def memfd_run(arch, builds, progs, flavor, cfg, mem, fig, failures):
    name, total, count, thp, pct = cfg
    common = ["--total", str(total), "--count", str(count), "--populate-pct", str(pct),
              "--seed", "7"]
    pre = ["memfd-preserve"] + common + (["--thp"] if thp else [])
    res = two_stage(arch, builds, progs, flavor, name, pre, ["memfd-retrieve"] + common, mem,
                    failures, fig.icount)
    if res is None:
        return
    p1 = _phase(res, 1, "preserve")
    r2, v2 = _phase(res, 2, "retrieved"), _phase(res, 2, "verified")
    if None in (p1, r2, v2):
        failures.append(f"{flavor} {name}: lu-bench figures missing (log {res.log})")
        return
    # Blackout markers (host clock).
    s1, s2 = res.stages
    t_reboot = s1.t_reboot
    t_kexec = _line_time(res, "Starting new kernel", s1.first_line, s1.last_line + 1)
    t_banner = res.lines[s2.first_line][0]
    t_init = s2.t_start
    t_done = _line_time(res, "phase=retrieved", s2.first_line, s2.last_line + 1)
    if None in (t_reboot, t_kexec, t_done):
        failures.append(f"{flavor} {name}: blackout markers missing (log {res.log})")
        return
    parts = {"old kernel: serialize + shutdown": t_kexec - t_reboot,
             "kexec jump to new kernel's first line": t_banner - t_kexec,
             "new kernel boot to init": t_init - t_banner,
             "init to sessions retrieved + finished": t_done - t_init}
    for k, v in parts.items():
        fig.add("blackout", k, name, flavor, v * 1000, "ms")
    fig.add("blackout", "total (reboot syscall to finished)", name, flavor,
            (t_done - t_reboot) * 1000, "ms")
    gib = total / GIB
    pres = float(p1["preserve_s"])
    retr = float(r2["retrieve_s"])
    fig.add("throughput", "PRESERVE_FD", name, flavor, gib / pres if pres else 0, "GiB/s")
    fig.add("throughput", "RETRIEVE_FD", name, flavor, gib / retr if retr else 0, "GiB/s")
    fig.add("throughput", "PRESERVE_FD time", name, flavor, pres * 1000, "ms")
    fig.add("throughput", "RETRIEVE_FD time", name, flavor, retr * 1000, "ms")
    fig.add("throughput", "FINISH time", name, flavor, float(r2["finish_s"]) * 1000, "ms")
    # Memory: what preserving allocated, per GiB preserved (old kernel), and what the new
    # kernel holds once everything was retrieved, finished and closed.
    meta = int(p1["memfree_filled"]) - int(p1["memfree_preserved"])
    fig.add("memory", "allocated by PRESERVE_FD per GiB preserved", name, flavor,
            meta / gib / 1024, "KiB")
    # What the memfds hold once preserved (st_blocks): the populated bytes, unless
    # preserving filled the holes.
    fig.add("memory", "memfd memory after PRESERVE_FD (st_blocks)", name, flavor,
            int(p1["held_preserved"]) / MIB, "MiB")
    fig.add("memory", "pages migrated by PRESERVE_FD (out of CMA)", name, flavor,
            int(p1.get("migrated_pages", 0)), "pages")
    fig.add("memory", "MemFree after update and finish", name, flavor,
            int(v2["memfree_end"]) / MIB, "MiB")
    if int(v2["bad"]):
        failures.append(f"{flavor} {name}: {v2['bad']} bad words after the update")


def scale_run(arch, builds, progs, flavor, smoke, fig, failures):
    n_s, n_f = (50, 20) if smoke else (2000, 500)
    args = ["--sessions", str(n_s), "--files", str(n_f)]
    res = two_stage(arch, builds, progs, flavor, "scale", ["scale-preserve"] + args,
                    ["scale-retrieve"] + args, 2048, failures, fig.icount)
    if res is None:
        return
    p1, p2 = _phase(res, 1, "scale-preserve"), _phase(res, 2, "scale-retrieve")
    if None in (p1, p2):
        failures.append(f"{flavor} scale: no figures (log {res.log})")
        return
    cfg = f"{n_s} sessions / {n_f} files"
    fig.add("scale", f"create {n_s} sessions", cfg, flavor,
            float(p1["create_sessions_s"]) * 1000, "ms")
    fig.add("scale", f"preserve {n_f} memfds in one session", cfg, flavor,
            float(p1["preserve_files_s"]) * 1000, "ms")
    fig.add("scale", f"retrieve + finish {n_s} sessions", cfg, flavor,
            float(p2["retrieve_finish_sessions_s"]) * 1000, "ms")
    fig.add("scale", f"retrieve {n_f} memfds + finish", cfg, flavor,
            float(p2["retrieve_finish_files_s"]) * 1000, "ms")


# `--bench kho`: folio orders, and the folios' total of the smoke configuration.
KHO_ORDERS = (0, 9)
KHO_SMOKE_MIB = 64
KHO_TIMEOUT = {"x86_64": 1200, "arm64": 2400}
# The next kernel's totalram_pages must be lower than the first's by the preserved pages,
# give or take this much: the kernels' own reservations differ a little (on arm64 the next
# kernel manages about 1 MiB more, as it does not keep QEMU's device tree).
KHO_TOTALRAM_SLACK = 8 * MIB
_KHO_PASS = re.compile(r"test_kho_bench: (preserve|unpreserve) round=(\S+) order=(\d+) "
                       r"folios=(\d+) ns=(\d+) free_delta=(-?\d+)")
_KHO_BOOT = re.compile(r"test_kho_bench: boot kho=(\d) counter_khz=(\d+) "
                       r"totalram_pages=(\d+) page_size=(\d+)")
_KHO_RESTORE = re.compile(r"KHO bench: boot restore: (kho_memory_init(?:_early)?)\(\) "
                          r"(\d+) cycles")


def kho_vm_mem(mib):
    """The VM's memory for mib MiB of preserved folios: twice that, plus room to boot."""
    return max(2048, 1024 + 2 * mib)


def kho_cmdline(mib, order):
    return f"test_kho_bench.mib={mib} test_kho_bench.order={order} test_kho_bench.reps=1"


def kho_parse(text1, text2):
    """The figures of a kho chain from its stages' logs, or a list of problems.

    Returns (figures, problems); figures: {"passes": [(pass, round, folios, ns,
    free_delta)], "boot1"/"boot2": (kho, khz, totalram, page_size),
    "restore": {fn: cycles}}.
    """
    problems = []
    passes = [(m.group(1), m.group(2), int(m.group(4)), int(m.group(5)), int(m.group(6)))
              for m in map(_KHO_PASS.search, text1.splitlines()) if m]
    boots = [[tuple(int(x) for x in m.groups()) for m in map(_KHO_BOOT.search, t.splitlines())
              if m] for t in (text1, text2)]
    restore = {m.group(1): int(m.group(2))
               for m in map(_KHO_RESTORE.search, text2.splitlines()) if m}
    fails = [ln.strip() for ln in text1.splitlines() if "test_kho_bench: FAIL" in ln]
    problems += fails
    if [p[:2] for p in passes] != [("preserve", "1"), ("unpreserve", "1"),
                                   ("preserve", "final")]:
        problems.append(f"stage 1 passes {[p[:2] for p in passes]}, expected preserve 1, "
                        "unpreserve 1, preserve final")
    if len(boots[0]) != 1 or boots[0][0][0] != 0:
        problems.append(f"stage 1: boot lines {boots[0]}, expected one of a cold boot")
    if len(boots[1]) != 1 or boots[1][0][0] != 1:
        problems.append(f"stage 2: boot lines {boots[1]}, expected one of a KHO boot")
    if set(restore) != {"kho_memory_init_early", "kho_memory_init"}:
        problems.append(f"stage 2: boot restore figures {sorted(restore)}, expected "
                        "kho_memory_init_early and kho_memory_init")
    if problems:
        return None, problems
    return {"passes": passes, "boot1": boots[0][0], "boot2": boots[1][0],
            "restore": restore}, []


def kho_run(arch, builds, progs, flavor, order, mib, fig, failures):
    """One chain of lib/test_kho_bench.c: preserve mib MiB of folios of order, kexec.

    Stage 1 (late_initcall) allocates the folios, times preserve, unpreserve
    and preserve again, and keeps them preserved; stage 2 reports the cycles
    of kho_memory_init_early() and kho_memory_init(), and must manage the
    preserved memory less than stage 1 (it was handed over), within
    KHO_TOTALRAM_SLACK.
    """
    label = f"kho-{mib}M-o{order}"
    res = chain(f"bench-{arch}-{flavor}-{label}", [
        vm.Stage(builds[flavor], []), vm.Stage(builds[flavor], []),
    ], progs, arch, mem=kho_vm_mem(mib), timeout=KHO_TIMEOUT[arch] * (2 if fig.icount else 1),
        extra_cmdline=kho_cmdline(mib, order), icount=fig.icount)
    problems = res.problems(2)
    if not problems:
        figs, problems = kho_parse(res.text(1), res.text(2))
    if problems:
        failures.append(f"{flavor} {label}: {'; '.join(problems)} (log {res.log})")
        return
    passes, restore = figs["passes"], figs["restore"]
    _, _, total1, page = figs["boot1"]
    _, khz, total2, _ = figs["boot2"]
    n = passes[0][2]
    want = (mib << 20) // (page << order)
    if any(p[2] != want for p in passes):
        failures.append(f"{flavor} {label}: {n} folios, expected {want} (log {res.log})")
        return
    if total1 - total2 < (n << order) - KHO_TOTALRAM_SLACK // page:
        failures.append(f"{flavor} {label}: stage 2 manages {total1 - total2} pages less than "
                        f"stage 1, not the {n << order} preserved (log {res.log})")
        return
    if not khz:
        failures.append(f"{flavor} {label}: cycle counter frequency unknown (log {res.log})")
        return
    cfg = f"{mib} MiB, order {order} ({n} folios)"
    kib = page / 1024
    names = {("preserve", "1"): "preserve, first pass",
             ("unpreserve", "1"): "unpreserve",
             ("preserve", "final"): "preserve again (kept for the kexec)"}
    for kind, rnd, _, ns, delta in passes:
        name = names[(kind, rnd)]
        fig.add("kho", f"{name}: time", cfg, flavor, ns / 1e6, "ms")
        fig.add("kho", f"{name}: time per folio", cfg, flavor, ns / n, "ns")
        if kind == "preserve":
            fig.add("kho", f"{name}: memory allocated (radix tree)", cfg, flavor,
                    delta * kib, "KiB")
        else:
            fig.add("kho", f"{name}: memory freed", cfg, flavor, -delta * kib, "KiB")
    early = restore["kho_memory_init_early"] / khz
    init = restore["kho_memory_init"] / khz
    fig.add("kho", "boot restore: kho_memory_init_early()", cfg, flavor, early, "ms")
    fig.add("kho", "boot restore: kho_memory_init()", cfg, flavor, init, "ms")
    fig.add("kho", "boot restore: total", cfg, flavor, early + init, "ms")


def iommufd_configs(sizes, smoke):
    """(name, bytes, thp, populate %) of the iommufd runs: a memfd of guest RAM mapped whole."""
    if smoke:
        return [("smoke-16M", 16 * MIB, False, 100)]
    cfgs = [(f"{g}G-4K", g * GIB, False, 100) for g in sizes]
    cfgs += [(f"{g}G-2M-THP", g * GIB, True, 100) for g in sizes]
    cfgs.append((f"{sizes[-1]}G-sparse-1%", sizes[-1] * GIB, False, 1))
    return cfgs


# The iommufd handler is rust only: its VM is the rust kernel with the vIOMMU
# and edu device of luo_iommufd, always counting instructions (chain(icount=True)).
IOMMUFD_FLAVOR = "rust"


def iommufd_run(arch, builds, progs, cfg, mem, fig, failures):
    """PRESERVE_FD / RETRIEVE_FD of an iommufd against re-creating its IOAS with the device
    attached (see harness/init/lu-iommufd-bench.c); figures in ms and as ratios."""
    from .suites import OUR_KEXEC_VM
    name, size, thp, pct = cfg
    vmp = OUR_KEXEC_VM["luo_iommufd"]
    a1 = ["/bin/lu-iommufd-bench", "--size", str(size), "--populate-pct", str(pct)]
    a1 += ["--thp"] if thp else []
    res = chain(f"bench-{arch}-iommufd-{name}", [
        vm.Stage(builds[IOMMUFD_FLAVOR], [("lu-iommufd-bench", a1 + ["preserve"])]),
        vm.Stage(builds[IOMMUFD_FLAVOR],
                 [("lu-iommufd-bench", a1 + ["retrieve"])]),
    ], progs, arch, mem=mem, timeout=1800, icount=True, extra_qemu=vmp["qemu"][arch],
        extra_cmdline=vmp["cmdline"][arch])
    problems = res.problems(2)
    for k in (1, 2):
        if len(res.stages) >= k and res.stages[k - 1].results.get("lu-iommufd-bench") != 0:
            problems.append(f"stage {k} exited "
                            f"{res.stages[k - 1].results.get('lu-iommufd-bench')}")
    p1, r2 = _phase(res, 1, "iommufd-preserve"), _phase(res, 2, "iommufd-retrieve")
    if problems or None in (p1, r2):
        failures.append(f"iommufd {name}: {'; '.join(problems) or 'figures missing'} "
                        f"(log {res.log})")
        return
    ms = 1e3
    f = IOMMUFD_FLAVOR
    pre, rec = float(p1["preserve_s"]), float(r2["recreate_s"])
    ret_att = float(r2["retrieve_attach_s"])
    for metric, key, kv in (
            ("PRESERVE_FD of the iommufd (median of 21)", "preserve_s", p1),
            ("RETRIEVE_FD of the memfd", "memfd_retrieve_s", r2),
            ("re-create: open, IOAS_ALLOC, attach, MAP_FILE (first pin)", "recreate_first_s",
             r2),
            ("re-create (median of 5 more)", "recreate_s", r2),
            ("RETRIEVE_FD of the iommufd", "retrieve_s", r2),
            ("RETRIEVE_FD of the iommufd + attach", "retrieve_attach_s", r2)):
        fig.add("iommufd", metric, name, f, float(kv[key]) * ms, "ms")
    fig.add("iommufd", "PRESERVE_FD / re-create", name, f, pre / rec if rec else 0, "ratio")
    fig.add("iommufd", "retrieve + attach / re-create", name, f, ret_att / rec if rec else 0,
            "ratio")


# Two sessions preserving a memfd each, from one thread and from two threads at
# once (harness/init/lu-parallel-bench.c): whether sessions are independent. The
# VM has two vCPUs (MTTCG: two host threads), so the figures are host time.
PARALLEL_MIB = 1024
_PAR_RESULT = re.compile(r"LU-PAR-RESULT serial_s=([0-9.]+) parallel_s=([0-9.]+)")


def parallel_run(arch, builds, progs, flavor, size_mib, reps, fig, failures):
    argv = ["/bin/lu-parallel-bench", "--size", str(size_mib), "--reps", str(reps)]
    res = vm.run_chain(f"bench-{arch}-{flavor}-parallel", [
        vm.Stage(builds[flavor], [("lu-parallel-bench", argv)]),
    ], progs, arch, mem=1024 + 3 * size_mib, smp=2, timeout=1800)
    m = _PAR_RESULT.search(res.text(1)) if res.stages else None
    rc = res.stages[0].results.get("lu-parallel-bench") if res.stages else None
    if res.problems(1) or m is None or rc != 0:
        failures.append(f"{flavor} parallel: {'; '.join(res.problems(1)) or 'no result'} "
                        f"(exit {rc}, log {res.log})")
        return
    serial, par = float(m.group(1)), float(m.group(2))
    cfg = f"2 x {size_mib} MiB"
    fig.add("parallel", "PRESERVE_FD into 2 sessions, one thread (median)", cfg, flavor,
            serial * 1e3, "ms")
    fig.add("parallel", "PRESERVE_FD into 2 sessions, two threads (median)", cfg, flavor,
            par * 1e3, "ms")
    fig.add("parallel", "two threads / one thread", cfg, flavor, par / serial if serial else 0,
            "ratio")


def coldboot_run(arch, builds, progs, flavor, mem, fig, failures, config):
    res = chain(f"bench-{arch}-{flavor}-coldboot", [
        vm.Stage(builds[flavor], [("lu-bench", ["/bin/lu-bench", "meminfo"])]),
    ], progs, arch, mem=mem, timeout=300 * (3 if fig.icount else 1), extra_cmdline=EARLYCON[arch],
        icount=fig.icount)
    kv = _phase(res, 1, "meminfo") if res.stages else None
    if res.problems(1) or kv is None:
        failures.append(f"{flavor} cold boot: no meminfo (log {res.log})")
        return
    fig.add("memory", "MemFree after cold boot (same VM)", config, flavor,
            int(kv["memfree"]) / MIB, "MiB")


def _stats(vals):
    return statistics.median(vals), min(vals), max(vals), len(vals)


def _fmt(v):
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def markdown(fig, meta):
    lines = [f"# Benchmarks: upstream C LUO vs. Rust LUO ({meta['arch']})", "",
             f"Measured {meta['date']} on {meta['machine']}; QEMU {meta['accel']}, "
             f"{meta['smp']} vCPU{'s' if meta['smp'] > 1 else ''}; {meta['reps']} repetitions "
             "per figure, flavors alternating."
             + (" **Instruction counts** (`--icount`): every time measured in the guest is in "
                "instructions executed; see the notes." if meta.get("icount") else ""),
             "", f"Command: `{meta['command']}`", "",
             "Kernels: " + "; ".join(f"{f}: `{v}`" for f, v in meta["kernels"].items()), "",
             "Each cell: median [min–max] over the repetitions. Ratio = rust median / c median "
             "(for times < 1 is faster; for throughput > 1 is faster).", ""]
    by_bench = {}
    for (bench, metric, config), per, unit in fig.rows():
        by_bench.setdefault(bench, []).append((metric, config, per, unit))
    for bench in ("blackout", "throughput", "scale", "memory", "parallel", "kho", "iommufd"):
        if bench not in by_bench:
            continue
        lines += [f"## {bench}", "", "| configuration | figure | unit | n | c | rust | rust/c |",
                  "|---|---|---|---|---|---|---|"]
        for metric, config, per, unit in by_bench[bench]:
            cells, meds = [], {}
            n = 0
            for f in ("c", "rust"):
                if per.get(f):
                    med, lo, hi, n = _stats(per[f])
                    meds[f] = med
                    cells.append(f"{_fmt(med)} [{_fmt(lo)}–{_fmt(hi)}]")
                else:
                    cells.append("–")
            ratio = (f"{meds['rust'] / meds['c']:.2f}" if meds.get("c") and "rust" in meds
                     else "–")
            lines.append(f"| {config} | {metric} | {unit} | {n} | {cells[0]} | {cells[1]} | "
                         f"{ratio} |")
        lines.append("")
    lines += meta.get("notes", [])
    return "\n".join(lines) + "\n"


PLOT = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import statistics as st
d = json.load(open(sys.argv[1]))
out = sys.argv[2]


def save(fig, ax, ticks, labels, ylabel, title, name):
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/{name}", dpi=110)


rows = d["rows"]
parts = ["old kernel: serialize + shutdown", "kexec jump to new kernel's first line",
         "new kernel boot to init", "init to sessions retrieved + finished"]
configs = sorted({r["config"] for r in rows if r["bench"] == "blackout"})
if configs:
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(configs)), 4.5))
    x, labels = 0, []
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for cfg in configs:
        for fl in ("c", "rust"):
            bottom = 0
            for i, p in enumerate(parts):
                vals = [r["values"].get(fl, []) for r in rows
                        if r["bench"] == "blackout" and r["metric"] == p and r["config"] == cfg]
                v = st.median(vals[0]) if vals and vals[0] else 0
                ax.bar(x, v, bottom=bottom, color=colors[i], label=p if x == 0 else None)
                bottom += v
            labels.append(f"{cfg}\n{fl}")
            x += 1
        x += 0.5
    ticks = []
    x = 0
    for cfg in configs:
        ticks += [x, x + 1]
        x += 2.5
    save(fig, ax, ticks, labels, "ms (median)",
         "Blackout: reboot(KEXEC) to sessions retrieved and finished", "blackout.png")
tp = [r for r in rows if r["bench"] == "throughput" and r["metric"] in ("PRESERVE_FD", "RETRIEVE_FD")]
if tp:
    cfgs = sorted({r["config"] for r in tp})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cfgs)), 4.5))
    w = 0.2
    for j, (metric, fl) in enumerate([(m, f) for m in ("PRESERVE_FD", "RETRIEVE_FD") for f in ("c", "rust")]):
        ys = []
        for cfg in cfgs:
            vals = [r["values"].get(fl, []) for r in tp if r["metric"] == metric and r["config"] == cfg]
            ys.append(st.median(vals[0]) if vals and vals[0] else 0)
        ax.bar([i + (j - 1.5) * w for i in range(len(cfgs))], ys, w, label=f"{metric} {fl}")
    ax.set_yscale("log")
    save(fig, ax, list(range(len(cfgs))), cfgs, f"{tp[0]['unit']} (median, log scale)",
         "Preserve and retrieve throughput by memfd configuration", "throughput.png")
kho = [r for r in rows if r["bench"] == "kho" and r["unit"] in ("ms", "M insns")]
if kho:
    keys = []
    for r in kho:
        if (r["config"], r["metric"]) not in keys:
            keys.append((r["config"], r["metric"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 5))
    w = 0.4
    for j, fl in enumerate(("c", "rust")):
        ys = []
        for cfg, metric in keys:
            vals = [r["values"].get(fl, []) for r in kho
                    if r["config"] == cfg and r["metric"] == metric]
            ys.append(st.median(vals[0]) if vals and vals[0] else 0)
        ax.bar([i + (j - 0.5) * w for i in range(len(keys))], ys, w, label=fl)
    ax.set_yscale("log")
    labels = [f"{m.replace(': time', '').replace('boot restore: ', 'boot: ')}, "
              f"{c.split(', ')[1].split(' (')[0]}" for c, m in keys]
    ax.set_xticks(list(range(len(keys))))
    ax.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel(f"{kho[0]['unit']} (median, log scale)")
    ax.set_title("KHO: preserve, unpreserve, boot restore")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/kho.png", dpi=110)
'''


def plots(fig, outdir):
    """PNG plots with Debian's matplotlib (system python3)."""
    rows = [{"bench": b, "metric": m, "config": c, "values": per, "unit": u}
            for (b, m, c), per, u in fig.rows()]
    data = outdir / "figures.json"
    data.write_text(json.dumps({"rows": rows}, indent=1))
    return draw(outdir)


def draw(outdir):
    """(Re)draw the plots of a report directory from its figures.json."""
    data = outdir / "figures.json"
    script = outdir / "plot.py"
    script.write_text(PLOT)
    p = subprocess.run(["/usr/bin/python3", script, data, outdir], capture_output=True, text=True)
    script.unlink()
    if p.returncode != 0:
        raise HarnessError(f"plotting failed: {p.stderr[-1500:]}")
    return sorted(outdir.glob("*.png"))


def run_bench(arch, builds, progs, *, reps, sizes, benches, smoke, outdir, command, accel_note,
              kho_mib=4096, icount=False):
    fig = Figures(icount)
    failures = []
    cfgs = memfd_configs(sizes, smoke)
    max_total = max(c[1] for c in cfgs)
    # Same memory for every memfd run: the largest memfd set, twice (old kernel: memfds and
    # kernel; new kernel: preserved pages plus its own), plus room to boot.
    mem = 1024 + 2 * max_total // MIB if not smoke else 1024
    t0 = time.monotonic()
    for rep in range(reps):
        order = ("c", "rust") if rep % 2 == 0 else ("rust", "c")
        stage(f"bench repetition {rep + 1}/{reps} (order {' then '.join(order)})")
        for flavor in order:
            if "blackout" in benches or "throughput" in benches or "memory" in benches:
                for cfg in cfgs:
                    memfd_run(arch, builds, progs, flavor, cfg, mem, fig, failures)
                    info(f"{flavor} {cfg[0]} done ({time.monotonic() - t0:.0f} s)")
            if "memory" in benches:
                coldboot_run(arch, builds, progs, flavor, mem, fig, failures, f"{mem} MiB VM")
            if "scale" in benches:
                scale_run(arch, builds, progs, flavor, smoke, fig, failures)
                info(f"{flavor} scale done ({time.monotonic() - t0:.0f} s)")
            if "parallel" in benches and not icount:
                # Two threads on two vCPUs: nothing to count on one.
                parallel_run(arch, builds, progs, flavor, 64 if smoke else PARALLEL_MIB, 5,
                             fig, failures)
                info(f"{flavor} parallel done ({time.monotonic() - t0:.0f} s)")
            if "kho" in benches:
                for order in KHO_ORDERS:
                    kho_run(arch, builds, progs, flavor, order, kho_mib, fig, failures)
                    info(f"{flavor} kho {kho_mib} MiB order {order} done "
                         f"({time.monotonic() - t0:.0f} s)")
    if "iommufd" in benches and IOMMUFD_FLAVOR in builds:
        # Not a flavor comparison: after the repetitions, on rust only.
        icfgs = iommufd_configs(sizes, smoke)
        # As for the memfd runs: the memfd, twice, and room to boot.
        imem = 1024 + 2 * max(c[1] for c in icfgs) // MIB if not smoke else 1024
        for rep in range(reps):
            stage(f"iommufd bench repetition {rep + 1}/{reps}")
            for cfg in icfgs:
                iommufd_run(arch, builds, progs, cfg, imem, fig, failures)
                info(f"iommufd {cfg[0]} done ({time.monotonic() - t0:.0f} s)")
    # Keep only what was asked for.
    fig.data = {k: v for k, v in fig.data.items() if k[0] in benches}
    outdir.mkdir(parents=True, exist_ok=True)
    meta = {"arch": arch, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": _machine(), "accel": "tcg, -icount shift=0,sleep=off" if icount
            else accel_note, "smp": 1 if icount else 2, "reps": reps, "icount": icount,
            "command": command,
            "kernels": {f: b.ident for f, b in builds.items()},
            "notes": _notes(mem, failures, benches, kho_mib, icount)}
    report = markdown(fig, meta)
    pngs = plots(fig, outdir) if fig.data else []
    if pngs:
        report += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    (outdir / "BENCHMARKS.md").write_text(report)
    return report, failures, outdir


def _machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len([1 for line in open("/proc/cpuinfo") if line.startswith("processor")])
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // (1024 * 1024)
    return f"{cpu}, {n} host CPUs, {mem} GiB"


def _notes(mem, failures, benches=(), kho_mib=0, icount=False):
    notes = ["## How each figure is taken", ""]
    ic = []
    if icount:
        ic = ["- **--icount**: every VM ran under TCG with one vCPU and "
                  "`-icount shift=0,sleep=off`: the guest's clocks advance 1 ns per instruction "
                  "executed, so each time measured inside the guest is an instruction count "
                  "(unit `M insns` = 10^6 instructions, `insns` per folio), deterministic and "
                  "the same on any host. Not captured: cache, TLB and branch-prediction effects "
                  "(every instruction costs one unit) and idle waits (skipped). The blackout "
                  "(host clock across the kexec) and the parallel bench (two vCPUs) are not run "
                  "in this mode.", ""]
    notes += ic + [
             "- **blackout**: host-clock stamps on serial lines: `LU-REBOOT` (init calls "
             "reboot(KEXEC)) → `Starting new kernel` (old kernel, after LUO serialization and "
             "device shutdown) → the new kernel's `Linux version` banner (early console) → "
             "`LU-STAGE 2` (init started) → the agent's `phase=retrieved` line (every memfd "
             "retrieved, session finished). The four parts add up to the total exactly; each "
             "cut is uncertain by the UART→host pipe latency.",
             "- **throughput**: the agent's CLOCK_MONOTONIC around the PRESERVE_FD calls of the "
             "4 memfds (old kernel) and the RETRIEVE_FD calls (new kernel), as GiB/s of memfd "
             "size. `sparse-1%` memfds have one written word on 1% of their pages; upstream's "
             "memfd handler allocates the holes at preserve. `THP` runs set shmem_enabled=always.",
             "- **scale**: CLOCK_MONOTONIC around creating the sessions / preserving the "
             "memfds (4 KiB each) and, after the kexec, around retrieving and finishing them.",
             f"- **memory**: `MemFree` from /proc/meminfo. \"Allocated by PRESERVE_FD\" = MemFree "
             f"drop across the PRESERVE_FD calls (the memfds were already populated), per GiB "
             f"preserved: the handover metadata (memfd folio arrays of 16 bytes per folio, KHO "
             f"radix nodes, LUO blocks) and, for sparse memfds, the holes that upstream's memfd "
             f"handler fills at preserve. "
             f"MemFree after the update is read once every memfd was retrieved, verified, "
             f"finished and closed; compare it with the cold boot of the same {mem} MiB VM.",
             ""]
    if "iommufd" in benches:
        notes += ["- **iommufd** (rust only; upstream 7.3 has no iommufd handler): "
                  "`harness/init/lu-iommufd-bench.c` in the VM of `luo_iommufd`, its edu "
                  "device bound to vfio-pci. After the kexec the memfd is retrieved first. "
                  "*Re-create* is what a VMM does without the iommufd handler: open "
                  "`/dev/iommu`, IOMMU_IOAS_ALLOC, bind and attach the device, MAP_FILE of "
                  "the retrieved memfd (which pins it); its first run is the memfd's first "
                  "pin (a sparse memfd's holes are filled, pages in KHO's scratch area "
                  "migrated), the median of 5 more the comparable figure. *Retrieve + attach* "
                  "is what the VMM does with the handler: RETRIEVE_FD of the iommufd, bind and "
                  "attach the device to the IOAS ID it had, which pins the same memfd in the "
                  "same state (once: a file is retrieved once). PRESERVE_FD: an iommufd whose "
                  "IOAS maps the memfd, median of 21 preserve/unpreserve rounds. The device's "
                  "cdev is opened outside the timed parts. The VM runs under TCG with one vCPU "
                  "and `-icount shift=0,sleep=off`"
                  + ("" if icount else ", not with the 2 vCPUs the header names") + ": "
                  "guest time (CLOCK_MONOTONIC) counts executed instructions (1 ms = 1 million "
                  "instructions), so these figures are instruction counts, deterministic and "
                  "free of TCG's translation cost; cache and TLB effects are not in them, and "
                  "an idle wait inside a timed part (none is expected) would be skipped.", ""]
    notes += ["## Reading the figures", "",
              "- The rust flavor runs the Rust LUO core (`kernel/liveupdate/luo.rs`: device, "
              "sessions, files, FLBs, luo-v5 serialization), the Rust memfd handler (`mm/memfd_luo.rs`) "
              "and the Rust KHO (`kernel/liveupdate/kho/`). The **scale** figures measure the core "
              "itself; the memfd-heavy ones (blackout, throughput, memory) are dominated by KHO and "
              "the memfd handler, so ratios away from 1.00 there are partly the noise of a shared, "
              "TCG-emulated machine.",
              "- Parts of a few milliseconds (old-kernel serialize + shutdown, FINISH) are within "
              "the cut uncertainty; compare totals.",
              "- Where memfd pages come from is not the same policy: the rust kernel carries "
              "`patches/0016` (mm/page_alloc: `cma_last_resort_enable()`, which its KHO turns "
              "on), so movable allocations stay out of KHO's scratch (CMA) while there is other "
              "free memory; c is upstream, where a quarter of a big memfd lands in scratch and "
              "is migrated by PRESERVE_FD. `pages migrated` shows it; the PRESERVE_FD times of "
              "memfds larger than the memory outside scratch can hold compare the policies, not "
              "only the code."]
    if icount:
        notes += ["- `--icount` runs are deterministic up to KASLR and boot-time randomness: two "
                  "runs of the same kernel agree to 3 digits on most figures; the KHO boot "
                  "restore and the THP retrieve vary by up to 8% and 2%."]
    notes += [""]
    if "kho" in benches:
        kho = _kho_notes(kho_mib)
        if set(benches) == {"kho"}:
            # The notes above are about the LUO benches.
            notes = ["## How each figure is taken", ""] + ic + [kho[0], "",
                     "## Reading the figures", "", kho[1], ""]
        else:
            i = notes.index("## Reading the figures")
            notes[i - 1:i - 1] = [kho[0]]
            notes[-1:-1] = [kho[1]]
    if failures:
        notes += ["## Runs that failed (not in the figures)", ""] + [f"- {f}" for f in failures]
    return notes


def _kho_notes(kho_mib):
    """How the kho figures are taken, and how to read them."""
    return [
        f"- **kho**: KHO alone, without LUO: `lib/test_kho_bench.c` "
        f"(`CONFIG_TEST_KHO_BENCH`, the same C test on both flavors) in a "
        f"{kho_vm_mem(kho_mib)} MiB VM allocates {kho_mib} MiB of folios at late_initcall, "
        f"then times (ktime_get_ns) kho_preserve_folio() of every folio (first "
        f"pass), kho_unpreserve_folio() of every folio, and kho_preserve_folio() again; the "
        f"last pass stays preserved and the kernel kexecs. Memory: the drop of free pages "
        f"(buddy + per-CPU lists) across a pass, the folios being allocated before. Boot "
        f"restore: the next kernel's get_cycles() around kho_memory_init_early() and "
        f"kho_memory_init() (mm/mm_init.c, `CONFIG_TEST_KHO_BENCH`), converted with the "
        f"counter frequency the kernel reports (x86 tsc_khz, arm64 arch timer rate); that "
        f"kernel must manage the preserved pages less than the first (within "
        f"{KHO_TOTALRAM_SLACK // MIB} MiB).",
        "- **kho**: the same test (`lib/test_kho_bench.c`, public KHO API only) on both "
        "flavors: c's KHO is upstream's `kernel/liveupdate/kexec_handover.c`, rust's the "
        "Rust KHO (`kernel/liveupdate/kho/`). Memory figures are whole pages taken from (or "
        "returned to) the page allocator; 0 means the pass needed no new radix node because "
        "the nodes on its keys' paths existed already (other boot-time users, e.g. "
        "lib/test_kho.c, preserve folios of several orders before, and the previous pass "
        "left its nodes). The two boot restore calls run before the page allocator starts; "
        "compare their total, the work is split differently between them.",
    ]


def publish_name(arch, benches, icount):
    """(subdirectory of bench/, suffix) of a report: kho-only runs go to kho/, iommufd-only
    ones to iommufd/ (suffixed with the architecture), other architectures than x86_64 and
    instruction counts get a suffix (BENCHMARKS-arm64.md)."""
    icount = "-icount" if icount else ""
    if set(benches) == {"iommufd"}:
        # bench/iommufd/ names every architecture, x86_64 too.
        return "iommufd", f"-{arch}{icount}"
    sub = "kho" if set(benches) == {"kho"} else ""
    return sub, ("" if arch == "x86_64" else f"-{arch}") + icount


def publish(outdir, dest, suffix=""):
    """Copy a bench report, its figures and plots into the repository (docs of the latest
    run), each name with suffix; the report's links follow."""
    dest.mkdir(parents=True, exist_ok=True)
    report = (outdir / "BENCHMARKS.md").read_text()
    for p in sorted(outdir.glob("*.png")):
        name = f"{p.stem}{suffix}.png"
        shutil.copy2(p, dest / name)
        report = report.replace(f"({p.name})", f"({name})")
    (dest / f"BENCHMARKS{suffix}.md").write_text(report)
    shutil.copy2(outdir / "figures.json", dest / f"figures{suffix}.json")
    return dest / f"BENCHMARKS{suffix}.md"


def default_outdir():
    return CACHE / "bench" / time.strftime("%Y%m%d-%H%M%S")


def repo_bench_dir():
    return REPO / "bench"
