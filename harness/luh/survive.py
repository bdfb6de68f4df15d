# SPDX-License-Identifier: GPL-2.0
"""vm:survives: a running KVM guest survives a live update (tools/liveupdate's lu-vmm).

The client kernels (<flavor>-client, with KVM) boot at EL2 under QEMU's
-M virt,virtualization=on on arm64 (KVM in VHE mode) and with -cpu max on
x86_64 (TCG's SVM: kvm_amd), and lu-vmm runs a guest inside the test VM.
Stage 1: `lu-vmm start` runs the guest (guest RAM is a memfd), `lu-vmm
update` pauses it, saves its vCPU and interrupt controller state into a
second memfd and preserves both in LUO session `lu-vmm`; the VMM holds the
session through the kexec. Stage 2: `lu-vmm restore` rebuilds the VM from
them and resumes the guest.

The guest-visible pause (the largest gap between two of the guest's own
reads of its clock, CNTVCT_EL0 or the TSC) is split, on the host's counter (which runs on
through the kexec), into:
  pause + save     the guest's last read before the pause -> the session is
                   preserved (the VMM's control request, KVM_RUN kicked out,
                   registers and vGIC read, both memfds preserved);
  host blackout    -> `lu-vmm restore` starts in the next kernel (lu-init's
                   kexec, the new kernel's boot, init);
  restore + resume -> the guest's first read after the resume (session
                   retrieved, state parsed, VM rebuilt, RAM checked, KVM_RUN).
"""

import re
import shlex
import time

from . import build as kbuild
from . import vm
from .common import LOGS
from .ktap import FAIL, PASS, SKIP, Case, Suite

NAME = "vm:survives"
VMM = "/bin/lu-vmm"
SEED = "0x4c55564d4d5f3031"
# The guest runs this long before the update and after the restore.
RUN_MS = 1500
# -M virt is on QEMU's arm64 command line already; QEMU merges these options in:
# EL2 for the kernel (KVM in VHE mode) and a GICv3, which KVM's vGICv3 needs.
# x86_64: TCG's -cpu max has SVM with nested paging, which kvm_amd uses.
QEMU_EXTRA = {"arm64": ["-M", "virt,virtualization=on,gic-version=3"],
              "x86_64": ["-cpu", "max"]}


def supported(arch):
    return arch in QEMU_EXTRA


def stages(builds, chain, run_ms=RUN_MS):
    f1, f2 = chain
    return [
        vm.Stage(builds[f1], [
            ("vmm-start", [VMM, "start", "--seed", SEED, "--run-ms", str(run_ms)]),
            ("vmm-update", [VMM, "update"]),
        ]),
        vm.Stage(builds[f2], [("vmm-restore", [VMM, "restore", "--run-ms", str(run_ms)])]),
    ]


def _kv(text):
    try:
        parts = shlex.split(text)
    except ValueError:
        parts = text.split()
    return dict(p.split("=", 1) for p in parts if "=" in p)


_LINE = re.compile(r"LU-VMM (.*)$")


def events(lines_by_stage):
    """{event: {key: value}} of the LU-VMM lines, per stage: [(stage, text)] in order."""
    out = {}
    for stage, text in lines_by_stage:
        m = _LINE.search(text)
        if not m:
            continue
        kv = _kv(m.group(1))
        ev = kv.pop("event", None) or ("check" if "check" in kv else None)
        if ev == "check":
            out.setdefault("check", []).append(kv.get("what", ""))
        elif ev:
            out[(stage, ev)] = kv
    return out


def _int(d, k):
    try:
        return int(d[k], 0)
    except (KeyError, ValueError):
        return None


def check(ev):
    """(problems, figures) from the events of a run (see events())."""
    bad = []
    started = ev.get((1, "started"))
    saved = ev.get((1, "saved"))
    restored = ev.get((2, "restored"))
    for what, d in (("started", started), ("saved", saved), ("restored", restored)):
        if d is None:
            bad.append(f"no 'LU-VMM event={what}' line")
    for k, e in ev.items():
        if isinstance(k, tuple) and k[1] == "error":
            bad.append(f"stage {k[0]}: lu-vmm error: {e.get('error')}")
    bad += [f"lu-vmm check: {w}" for w in ev.get("check", [])]
    if restored is not None and restored.get("checks") != "ok":
        bad.append(f"lu-vmm's own checks: {restored.get('checks')}")
    if bad:
        return bad, {}
    g = {f"started_{k}": _int(started, k) for k in ("counter", "ticks")}
    g |= {k: _int(saved, k) for k in ("counter", "ticks", "passes", "host_freq",
                                      "host_preserved", "host_paused")}
    g |= {k: _int(restored, k) for k in (
        "counter_saved", "counter_restored", "counter_after", "gap_counter", "ticks_saved",
        "ticks_after", "passes_saved", "passes_after", "bad_passes", "bad_words", "guest_gap",
        "cntfrq", "host_start", "host_restored", "guest_last_host", "guest_first_host")}
    missing = sorted(k for k, v in g.items() if v is None)
    if missing:
        return [f"LU-VMM lines lack {', '.join(missing)}"], {}
    c = g["counter"]

    def want(ok, what):
        if not ok:
            bad.append(what)

    want(g["started_counter"] > 0 and g["started_ticks"] > 0,
         f"the guest had not run before the update (counter {g['started_counter']}, "
         f"ticks {g['started_ticks']})")
    want(c >= g["started_counter"],
         f"counter {c} at the pause, {g['started_counter']} before it")
    want(g["counter_saved"] == c and g["counter_restored"] == c,
         f"counter {c} at the pause; the next kernel's snapshot says {g['counter_saved']} "
         f"and guest RAM {g['counter_restored']}")
    want(g["counter_after"] > c, f"counter {g['counter_after']} after the resume, {c} at the pause")
    want(g["gap_counter"] in (c, c + 1),
         f"the guest's pause ended at counter {g['gap_counter']}, it stopped at {c}")
    want(g["ticks_saved"] == g["ticks"] and g["ticks_after"] > g["ticks"],
         f"timer ticks {g['ticks']} at the pause, {g['ticks_saved']} saved, "
         f"{g['ticks_after']} after")
    want(g["passes_saved"] == g["passes"] and g["passes_after"] > g["passes"]
         and g["bad_passes"] == 0,
         f"region checks {g['passes']} at the pause, {g['passes_after']} after, "
         f"{g['bad_passes']} bad")
    want(g["bad_words"] == 0, f"{g['bad_words']} words of the guest's region changed")
    f = g["host_freq"]
    parts = {
        "pause_save": g["host_preserved"] - g["guest_last_host"],
        "blackout": g["host_start"] - g["host_preserved"],
        "restore_resume": g["guest_first_host"] - g["host_start"],
    }
    for k, v in parts.items():
        want(v > 0, f"{k} is {v} ticks")
    want(g["guest_gap"] >= parts["blackout"],
         f"the guest's clock shows {g['guest_gap']} ticks of pause, less than the host's "
         f"blackout of {parts['blackout']}")
    fig = dict(g)
    fig["pause_ms"] = g["guest_gap"] * 1000 / g["cntfrq"] if g["cntfrq"] else 0
    for k, v in parts.items():
        fig[f"{k}_ms"] = v * 1000 / f if f else 0
    fig["restore_ms"] = (g["host_restored"] - g["host_start"]) * 1000 / f if f else 0
    return bad, fig


def run_one(arch, builds, progs, chain, run_ms=RUN_MS, name=None, timeout=300):
    """One chain; returns (RunResult, problems, figures)."""
    f1, f2 = chain
    res = vm.run_chain(name or f"{arch}-{f1}-{f2}-vm-survives", stages(builds, chain, run_ms),
                       progs, arch, timeout=timeout, extra_qemu=QEMU_EXTRA[arch])
    bad = list(res.problems(2))
    for k, prog in ((1, "vmm-start"), (1, "vmm-update"), (2, "vmm-restore")):
        st = res.stages[k - 1] if len(res.stages) >= k else None
        rc = None if st is None else st.results.get(prog)
        if rc != 0:
            bad.append(f"{prog}: " + (f"exit status {rc}" if rc is not None else "did not run"))
    lines = [(s.number, t) for s in res.stages
             for _, t in res.lines[s.first_line:s.last_line + 1]]
    problems, fig = check(events(lines))
    return res, bad + problems, fig


def describe(fig):
    """The figures of a passed run, in one line."""
    return (f"guest counter {fig['counter']} at the pause, {fig['counter_after']} after; "
            f"pause {fig['pause_ms']:.0f} ms = pause+save {fig['pause_save_ms']:.0f} + "
            f"host blackout {fig['blackout_ms']:.0f} + restore+resume "
            f"{fig['restore_resume_ms']:.0f}")


def _label(chain):
    f1, f2 = chain
    return f1 if f1 == f2 else f"{f1}>{f2}"


def suite(arch, trees, tc, progs, chains, timeout=300):
    """vm:survives on the client builds: one Suite per chain."""
    out = []
    if not supported(arch):
        return [Suite(arch, _label(c), NAME, [Case("the guest resumes where it stopped", SKIP,
                                                   f"no lu-vmm guest for {arch}")])
                for c in chains]
    builds, broken = {}, {}
    for f in sorted({f for c in chains for f in c}):
        try:
            builds[f] = kbuild.build_kernel(trees[f], arch, f, tc, variant="client")
        except Exception as e:  # noqa: BLE001 - reported as the suites' failure
            broken[f] = f"{f}-client kernel: {e}"
    for chain in chains:
        t0 = time.monotonic()
        why = [broken[f] for f in dict.fromkeys(chain) if f in broken]
        if why:
            out.append(Suite(arch, _label(chain), NAME, [Case("setup", FAIL, "\n".join(why))],
                             log=str(LOGS)))
            continue
        try:
            res, bad, fig = run_one(arch, builds, progs, chain, timeout=timeout)
        except Exception as e:  # noqa: BLE001
            out.append(Suite(arch, _label(chain), NAME,
                             [Case("setup", FAIL, f"{type(e).__name__}: {e}")], log=str(vm.RUNS)))
            continue
        s = Suite(arch, _label(chain), NAME, log=str(res.log))
        s.cases = [Case("the guest resumes where it stopped", FAIL if bad else PASS,
                        "\n".join(bad))]
        if not bad:
            s.note = describe(fig)
            vm.cleanup_run(res)
        s.seconds = time.monotonic() - t0
        out.append(s)
    return out


def report(res, bad, fig):
    """`lu demo --vm`'s report; returns the exit status."""
    print()
    arm = res.name.startswith("arm64")
    how = "nested KVM"
    if res.accel == "tcg":
        how = ("the kernel at the emulated EL2, KVM in VHE mode" if arm else
               "kvm_amd on the emulated SVM")
    print(f"  QEMU accelerator: {res.accel}; the guest runs under KVM inside the VM ({how})")
    vm.print_stages(res, "lu-vmm:")
    print()
    if fig:
        print(f"  guest counter    : {fig['started_counter']} when started, {fig['counter']} at "
              f"the pause, {fig['counter_restored']} in RAM after the kexec, "
              f"{fig['counter_after']} after {RUN_MS} ms more")
        print(f"  timer ticks      : {fig['ticks']} at the pause, {fig['ticks_after']} after")
        print(f"  guest RAM        : region checked {fig['passes_after']} times by the guest, "
              f"{fig['bad_passes']} bad; {fig['bad_words']} bad words seen by the VMM")
        clock = "CNTVCT_EL0" if arm else "TSC"
        print(f"  guest's pause    : {fig['pause_ms']:.1f} ms on its own clock ({clock})")
        print(f"    pause + save   : {fig['pause_save_ms']:.1f} ms")
        print(f"    host blackout  : {fig['blackout_ms']:.1f} ms (kexec, boot, init)")
        print(f"    restore+resume : {fig['restore_resume_ms']:.1f} ms "
              f"(of it, VM rebuilt and checked in {fig['restore_ms']:.1f} ms)")
    for p in bad:
        print(f"  problem          : {p}")
    ok = not bad
    print()
    print(f"  RESULT: {'PASS: the guest ran on where it stopped' if ok else 'FAIL'}")
    print(f"  serial log: {res.log}")
    return 0 if ok else 1
