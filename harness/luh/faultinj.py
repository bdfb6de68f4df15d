# SPDX-License-Identifier: GPL-2.0
"""reliability:fail-nth (issue 18, fault injection): the Nth fault in every
allocation of the LUO paths, with the kernel's per-task fail-nth.

harness/init/lu-fail-nth.c loops every operation with N = 1, 2, ... (stage 1:
create, preserve, unpreserve, get-name, close, then reboot itself until the
kexec goes through; stage 2: retrieve-session, retrieve-fd, get-name,
finish) and prints one check line per check and one count line per
operation:

  LU-FAILNTH-COUNT <op> points=P injected=I clean=C absorbed=A memfree_drift_kb=D

Only the debug builds have fault injection (FAULT_INJECTION, FAILSLAB,
FAIL_PAGE_ALLOC, FAULT_INJECTION_DEBUG_FS); on a regular build the suite is
one skipped case.  Every check line is a case; so is each stage's run
(problems: splats, kmemleak, missing stages) and each operation's count line
(present, and clean == points: every reached fault left a state that checks
out).
"""

import re
import time

from . import vm
from .common import info
from .ktap import FAIL, PASS, SKIP, Case, Suite
from .suites import LUO_EXPECT

PREFIX = "LU-FAILNTH"
PROG = "lu-fail-nth"

# The operations each stage loops, in order; "preserve-thp" and
# "retrieve-fd-thp" only where shmem gave the memfd a THP (an INFO line says).
STAGE1_OPS = ("create", "preserve-small", "preserve-multi", "preserve-big", "preserve-thp",
              "unpreserve", "get-name", "close", "reboot")
STAGE2_OPS = ("first-open", "retrieve-session", "retrieve-fd-small", "retrieve-fd-multi", "retrieve-fd-thp",
              "get-name-incoming", "finish")
THP_OPS = ("preserve-thp", "retrieve-fd-thp")

# Where the c flavor (upstream 7.3) is expected to differ, by operation:
# upstream has no UNPRESERVE_FD, so its loop is not run (supported=0).
# Nor is the first open of the new kernel's /dev/liveupdate: upstream makes
# any failure there sticky EIO, which would lose the handover of the stage.
UNSUPPORTED = {"c": {"unpreserve", "first-open"}, "rust": set()}

# What the kernel prints when preserved folios are lost for good (never
# restored, so never freed): ours warns, upstream's C handler is silent.  A
# refused folio array is one: the retrieve failed for good and finish
# frees nothing of a file whose retrieve failed.
LOST = re.compile(r"memfd_luo: (cannot free the folios of a memfd|cannot restore the state"
                  r"|\d+ preserved folios could not be restored"
                  r"|refusing the preserved folio array)")

_COUNT = re.compile(r"LU-FAILNTH-COUNT (\S+)((?: \w+=-?\d+)+)\s*$")


def parse_counts(text):
    """The count lines of a log: {op: {field: int}}; a later line of an
    operation replaces an earlier one (the reboot loop prints its counts
    before every attempt, so the last line is the one of the kexec)."""
    out = {}
    for line in text.splitlines():
        m = _COUNT.search(line)
        if m:
            out[m.group(1)] = {k: int(v) for k, v in
                               (f.split("=") for f in m.group(2).split())}
    return out


def count_problems(counts, ops, flavor, thp):
    """Why the count lines of a stage are wrong: missing operations, a
    supported one not looped, or reached faults that did not check out."""
    p = []
    for op in ops:
        if op in THP_OPS and not thp:
            continue
        c = counts.get(op)
        if c is None:
            p.append(f"{op}: no count line")
            continue
        unsupported = op in UNSUPPORTED[flavor]
        if c.get("supported", 1) != (0 if unsupported else 1):
            p.append(f"{op}: supported={c.get('supported', 1)}, expected "
                     f"{0 if unsupported else 1} on {flavor}")
        if c["clean"] != c["points"]:
            p.append(f"{op}: clean={c['clean']} of points={c['points']}")
        if c["injected"] + c["absorbed"] != c["points"]:
            p.append(f"{op}: injected={c['injected']} + absorbed={c['absorbed']} "
                     f"!= points={c['points']}")
    return p


def summary(counts):
    """The note: 'op P/I/C' per operation (points/injected/clean), drift in kB."""
    return "; ".join(f"{op} {c['points']}/{c['injected']}/{c['clean']} "
                     f"{c['memfree_drift_kb']:+d}kB" for op, c in counts.items())


def fail_nth(arch, builds, progs, flavor):
    """Both flavors, debug builds only: every fault point of every LUO operation."""
    t0 = time.monotonic()
    s = Suite(arch, flavor, "reliability:fail-nth")
    b = builds[flavor]
    if not b.debug:
        s.cases.append(Case("fail-nth", SKIP, "needs a debug build (fault injection): "
                            "lu test --debug"))
        return s
    expect = f"--expect={LUO_EXPECT[flavor]}"
    res = vm.run_chain(f"{arch}-{flavor}-fail-nth", [
        vm.Stage(b, [("stage1", [f"/bin/{PROG}", "stage1", expect])]),
        vm.Stage(b, [("stage2", [f"/bin/{PROG}", "stage2", expect])]),
    ], progs, arch, timeout=600)
    add_cases(s, res, flavor)
    info(f"{arch}/{flavor} fail-nth (points/injected/clean, MemFree drift): {s.note}")
    s.seconds = time.monotonic() - t0
    s.log = str(res.log)
    if s.status == PASS:
        vm.cleanup_run(res)
    return s


def add_cases(s, res, flavor):
    """The cases of a run of both stages, and the note of its counts."""
    from .reliability import check_cases  # it imports this module

    text1 = res.text(1) if res.stages else ""
    text2 = res.text(2) if len(res.stages) >= 2 else ""
    thp = "THP memfds yes" in text1

    # Stage 1 ends in its own successful reboot: no exit status, by design.
    pat = re.compile(re.escape(PREFIX) + r" (ok|FAIL) (.*) \(errno (-?\d+)")
    for line in text1.splitlines():
        m = pat.search(line)
        if m:
            s.cases.append(Case(f"stage1.{m.group(2)}", PASS if m.group(1) == "ok" else FAIL,
                                "" if m.group(1) == "ok" else line.strip()))
    detail = []
    rc = res.stages[0].results.get("stage1") if res.stages else None
    if rc is not None:
        detail.append(f"stage 1 exited ({rc}) instead of kexecing from its reboot loop")
    if "LU-FAILNTH-REBOOT attempt" not in text1:
        detail.append("stage 1 never reached its reboot loop")
    if len(res.stages) < 2:
        detail.append("stage 2 not reached")
    s.cases.append(Case("stage1.kexec from the reboot loop", FAIL if detail else PASS,
                        "\n".join(detail)))

    check_cases(s, res, PREFIX, 2, "stage2")
    counts = parse_counts(text1)
    counts.update(parse_counts(text2))
    for k, ops in ((1, STAGE1_OPS), (2, STAGE2_OPS)):
        p = count_problems(parse_counts(text1 if k == 1 else text2), ops, flavor, thp)
        s.cases.append(Case(f"stage{k}.counts", FAIL if p else PASS, "\n".join(p)))
    lost = [t.strip() for t in text2.splitlines() if LOST.search(t)]
    s.cases.append(Case("stage2.no preserved folio lost", FAIL if lost else PASS,
                        "\n".join(lost[:5])))
    s.note = summary(counts)
