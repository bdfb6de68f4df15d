# SPDX-License-Identifier: GPL-2.0
"""reliability:fuzz and `lu fuzz` (issue 18): the LUO ioctl fuzzer lu-fuzz in the VMs.

lu-fuzz (tools/liveupdate/src/bin/lu-fuzz/) runs in two stages around a kexec:
stage 1 fuzzes every ioctl from several threads and leaves kept sessions (and
the fuzzed ones still open) to a holder that goes on issuing ioctls while
init kexecs; stage 2 checks a kept session, then fuzzes the retrieve side.
Each stage ends with a summary line

    LU-FUZZ calls=N errors=E seed=S stage=K threads=T ms=M create=C/OK ...

and every result outside the documented set is an "LU-FUZZ unexpected" line
(the holder writes its own to /dev/kmsg).  A chunk passes with both stages'
summaries, 0 errors, 0 unexpected lines and a clean run (vm.RunResult.problems:
on the debug builds every splat and kmemleak report).
"""

import re
import time
from dataclasses import dataclass, field

from . import vm
from .common import info
from .ktap import FAIL, PASS, Case, Suite

# The smoke run of `lu test`: calls of stage 1 and stage 2 (about a minute in
# all on a debug kernel under TCG).
SMOKE_CALLS = (12000, 4000)
SMOKE_SEED = 1
THREADS = 4
# `lu fuzz`: calls per chunk (one VM run of both stages, split 3:1).
CHUNK_CALLS = 100000

_SUMMARY = re.compile(r"LU-FUZZ calls=(\d+) errors=(\d+) seed=(\d+) stage=(\d+)((?: \S+=\S+)*)")


def parse_summary(line):
    """The fields of a summary line, or None: {"calls", "errors", "seed", "stage",
    "threads", "ms", "verified", "counts": {ioctl: (calls, successes)}}."""
    m = _SUMMARY.search(line)
    if not m:
        return None
    d = {"calls": int(m.group(1)), "errors": int(m.group(2)), "seed": int(m.group(3)),
         "stage": int(m.group(4)), "counts": {}}
    for kv in m.group(5).split():
        k, v = kv.split("=", 1)
        if "/" in v:
            a, b = v.split("/", 1)
            d["counts"][k] = (int(a), int(b))
        else:
            d[k] = int(v)
    return d


@dataclass
class Chunk:
    seed: int
    calls: int = 0
    errors: int = 0
    splats: int = 0
    seconds: float = 0.0
    summaries: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    log: str = ""

    @property
    def ok(self):
        return not self.problems


def argv(stage, seed, calls, flavor):
    a = ["/bin/lu-fuzz", f"stage{stage}", "--seed", str(seed), "--calls", str(calls),
         "--threads", str(THREADS)]
    # Linux 7.3's C core: other errnos for unknown numbers, no UNPRESERVE_FD.
    return a + (["--upstream"] if flavor == "c" else [])


def run_chunk(arch, builds, progs, flavor, seed, calls1, calls2, name="fuzz"):
    """One VM run of both stages; returns (Chunk, vm.RunResult)."""
    b = builds[flavor]
    timeout = 120 + (calls1 + calls2) // 100
    res = vm.run_chain(f"{arch}-{flavor}-{name}", [
        vm.Stage(b, [("fuzz1", argv(1, seed, calls1, flavor))]),
        vm.Stage(b, [("fuzz2", argv(2, seed, calls2, flavor))]),
    ], progs, arch, timeout=timeout)
    return check_chunk(res, seed, (calls1, calls2)), res


def check_chunk(res, seed, calls):
    """Read the run's lu-fuzz lines into a Chunk."""
    c = Chunk(seed, seconds=res.seconds, log=str(res.log))
    unexpected = []
    for k in (1, 2):
        text = res.text(k) if len(res.stages) >= k else ""
        s = next((d for d in map(parse_summary, text.splitlines()) if d), None)
        unexpected += [t.strip() for t in text.splitlines() if "LU-FUZZ unexpected" in t]
        prog = f"fuzz{k}"
        rc = res.stages[k - 1].results.get(prog) if len(res.stages) >= k else None
        if s is None:
            c.problems.append(f"stage {k}: no LU-FUZZ summary line")
        else:
            c.summaries.append(s)
            c.calls += s["calls"]
            c.errors += s["errors"]
            if s["calls"] != calls[k - 1]:
                c.problems.append(f"stage {k}: {s['calls']} calls, expected {calls[k - 1]}")
        if rc != 0:
            c.problems.append(f"{prog}: exit status {rc}" if rc is not None
                              else f"{prog} did not run")
        if k == 2 and "LU-FUZZ kept lu-fuzz-keep-0 verified=true" not in text:
            c.problems.append("stage 2: kept session 0 not verified")
    # The holder's lines (via /dev/kmsg) are counted here only.
    c.errors = max(c.errors, len(unexpected))
    if c.errors:
        c.problems.append(f"{c.errors} unexpected results (seed {seed}): "
                          + "; ".join(unexpected[:3]))
    c.splats = len(res.splats) if res.debug else 0
    c.problems += res.problems(2)
    return c


def counts_note(summaries):
    """'create=N/ok ...' summed over the summaries."""
    tot = {}
    for s in summaries:
        for k, (a, b) in s["counts"].items():
            x = tot.setdefault(k, [0, 0])
            x[0] += a
            x[1] += b
    return " ".join(f"{k}={a}/{b}" for k, (a, b) in tot.items())


def suite(arch, builds, progs, flavor):
    """The smoke run: SMOKE_CALLS of seed SMOKE_SEED on this flavor."""
    t0 = time.monotonic()
    c, res = run_chunk(arch, builds, progs, flavor, SMOKE_SEED, *SMOKE_CALLS)
    s = Suite(arch, flavor, "reliability:fuzz")
    for k, prog in ((1, "stage1"), (2, "stage2")):
        d = next((x for x in c.summaries if x["stage"] == k), None)
        s.cases.append(Case(f"{prog}.lu-fuzz", PASS if d and d["errors"] == 0 else FAIL,
                            "" if d and d["errors"] == 0 else
                            f"summary {d}" if d else "no summary"))
    s.cases.append(Case("run", PASS if c.ok else FAIL, "\n".join(c.problems)))
    s.note = (f"{c.calls} calls ({SMOKE_CALLS[0]}+{SMOKE_CALLS[1]}, seed {SMOKE_SEED}, "
              f"{THREADS} threads), {c.errors} errors, {c.splats} splats; "
              + counts_note(c.summaries))
    s.seconds = time.monotonic() - t0
    s.log = str(res.log)
    if s.status == PASS:
        vm.cleanup_run(res)
    return s


def long_run(arch, builds, progs, flavor, calls, seed, chunk=CHUNK_CALLS):
    """`lu fuzz`: chunks of `chunk` calls with seeds seed, seed+1, ...; returns the chunks."""
    chunks = []
    done = 0
    k = 0
    while done < calls:
        n = min(chunk, calls - done)
        n1 = max(1, n * 3 // 4)
        n2 = max(1, n - n1)
        c, res = run_chunk(arch, builds, progs, flavor, seed + k, n1, n2, name=f"fuzz-{k}")
        chunks.append(c)
        done += n1 + n2
        per = c.seconds / max(c.calls, 1) * 1000
        info(f"chunk {k} seed {seed + k}: {c.calls} calls, {c.errors} errors, {c.splats} "
             f"splats, {c.seconds:.0f} s ({per:.2f} s per 1000 calls)"
             + ("" if c.ok else f"\n  FAILED (seed {seed + k}, log {c.log}):\n    "
                + "\n    ".join(c.problems[:6])))
        if c.ok:
            vm.cleanup_run(res)
        k += 1
    return chunks
