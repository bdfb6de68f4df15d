# SPDX-License-Identifier: GPL-2.0
"""`lu series --bisect`: build the rust flavor after every patch of the series.

The series' commits (base..tip of the pristine repository, exactly what `lu
series` exports) are checked out one after the other in a worktree of their
own (trees/bisect) and built incrementally in one build directory
(build/<arch>/bisect): `git checkout` rewrites only the files a patch changes,
so each build after the first recompiles what that patch touched.

Each step merges the rust flavor's config fragments afresh and runs
`make olddefconfig` on that commit's Kconfig: options whose symbols a patch
has not added yet are dropped (and reported), and come back at the patch that
adds them.
"""

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import kconfig, tree
from .build import ARCH_INFO, make_cmd
from .common import CACHE, HarnessError, LOGS, info, run, stage

TAIL_LINES = 40


@dataclass
class Step:
    number: int
    subject: str
    ok: bool
    seconds: float
    warnings: int = 0
    dropped: list = field(default_factory=list)   # kconfig.verify() tuples
    log: str = ""
    tail: str = ""   # the end of the log, for a failed build


def parse_range(text, count):
    """'A..B', 'A..', '..B' or 'N' (patch numbers from 1) -> (first, last), inclusive."""
    if text is None:
        return 1, count
    m = re.fullmatch(r"\s*(\d*)\s*(\.\.)?\s*(\d*)\s*", text)
    if not m or not (m.group(1) or m.group(3)) or (not m.group(2) and not m.group(1)):
        raise HarnessError(f"--bisect-range {text!r}: expected A..B, A.., ..B or N")
    first = int(m.group(1)) if m.group(1) else 1
    if m.group(2):
        last = int(m.group(3)) if m.group(3) else count
    else:
        last = first
    if not 1 <= first <= last <= count:
        raise HarnessError(f"--bisect-range {text!r}: the series has patches 1..{count}")
    return first, last


def duration(seconds):
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


_WARNING = re.compile(r"\bwarning(\[[^\]]*\])?: ")


_SUMMARY = re.compile(r"warning: .*\d+ warnings? emitted")


def count_warnings(text):
    """Compiler, clippy and Kconfig warnings in a build log, not rustc's totals."""
    return sum(1 for line in text.splitlines()
               if _WARNING.search(line) and not _SUMMARY.search(line))


_ERROR = re.compile(r"(^|[\s:])(error(\[\w+\])?:|\*\*\* )")


def tail(text, n=TAIL_LINES):
    """At most n lines of a failed build's log: from its first error on, else its end."""
    lines = text.rstrip("\n").splitlines()
    for i, line in enumerate(lines):
        if _ERROR.search(line):
            return "\n".join(lines[i:i + n])
    return "\n".join(lines[-n:])


def _dropped_names(dropped):
    return [opt.removeprefix("CONFIG_") + ("" if got is None else f"={got}")
            for opt, _, got in dropped]


def format_report(steps, total):
    """The per-patch table, the options each range of patches lacked, the verdict."""
    out = [f"{'#':>3}  {'result':6}  {'time':>7}  {'warn':>4}  {'opts':>4}  subject",
           f"{'-' * 3}  {'-' * 6}  {'-' * 7}  {'-' * 4}  {'-' * 4}  {'-' * 7}"]
    for s in steps:
        out.append(f"{s.number:3d}  {'ok' if s.ok else 'FAIL':6}  {duration(s.seconds):>7}  "
                   f"{s.warnings:4d}  {len(s.dropped):4d}  {s.subject}")
    groups = []
    for s in steps:
        names = _dropped_names(s.dropped)
        if groups and groups[-1][2] == names and groups[-1][1] == s.number - 1:
            groups[-1][1] = s.number
        else:
            groups.append([s.number, s.number, names])
    if any(g[2] for g in groups):
        out.append("")
        out.append("opts: requested config options not in .config (their Kconfig symbols are "
                   "added by later patches):")
        for a, b, names in groups:
            which = f"patch {a}" if a == b else f"patches {a}-{b}"
            out.append(f"  {which}: {', '.join(names) if names else 'none'}")
    out.append("")
    failed = [s for s in steps if not s.ok]
    took = duration(sum(s.seconds for s in steps))
    built = f"{len(steps)} of {total} patches built in {took}"
    if failed:
        f = failed[0]
        out.append(f"{built}; {len(failed)} failed; first failure: patch {f.number}: "
                   f"{f.subject}")
        out.append(f"  log: {f.log}")
        out.extend("  | " + line for line in f.tail.splitlines())
    else:
        out.append(f"{built}; all built")
    return "\n".join(out)


def series_commits(base, tip):
    """[(commit, subject)] of base..tip, oldest first."""
    out = tree.git(tree.PRISTINE, "log", "--reverse", "--format=%H %s", f"{base}..{tip}").stdout
    return [tuple(line.split(" ", 1)) for line in out.splitlines() if line]


def configure(srctree, outdir, arch, tc, log):
    """Merge the rust fragments on this commit's Kconfig; return what was dropped."""
    frags = kconfig.fragments(arch, "rust")
    outdir.mkdir(parents=True, exist_ok=True)
    run([srctree / "scripts" / "kconfig" / "merge_config.sh", "-m", "-O", outdir] + frags,
        cwd=srctree, log=log)
    run(make_cmd(srctree, outdir, arch, tc, ["olddefconfig"]), log=log, env=tc.env())
    return kconfig.verify(kconfig.requested(frags),
                          kconfig.parse((outdir / ".config").read_text()))


def build(srctree, outdir, arch, tc, log):
    """Build the image as `lu build rust` does (through clippy-driver)."""
    run(make_cmd(srctree, outdir, arch, tc, [ARCH_INFO[arch]["target"], "CLIPPY=1"]),
        log=log, env=tc.env(), heartbeat="building")


def bisect(base, tip, tc, arch="x86_64", rng=None):
    """Build after each patch of rng ('A..B'); print the report; return the Steps."""
    commits = series_commits(base, tip)
    if not commits:
        raise HarnessError("the series is empty: nothing to bisect")
    first, last = parse_range(rng, len(commits))
    outdir = CACHE / "build" / arch / "bisect"
    logdir = LOGS / "bisect"
    logdir.mkdir(parents=True, exist_ok=True)
    stage(f"bisect: building {arch} rust after each of patches {first}..{last} of "
          f"{len(commits)} in {outdir}")
    steps = []
    checked_rust = False
    for n in range(first, last + 1):
        commit, subject = commits[n - 1]
        log = logdir / f"{arch}-{n:02d}.log"
        log.write_text("")
        stage(f"bisect {n}/{len(commits)}: {subject}")
        t0 = time.monotonic()
        src = tree.ensure_worktree("bisect", commit)
        if not checked_rust:
            run(make_cmd(src, outdir, arch, tc, ["rustavailable"]), log=log, env=tc.env())
            checked_rust = True
        ok, dropped = True, []
        try:
            dropped = configure(src, outdir, arch, tc, log)
            build(src, outdir, arch, tc, log)
        except HarnessError:
            ok = False
        text = Path(log).read_text(errors="replace")
        s = Step(n, subject, ok, time.monotonic() - t0, count_warnings(text), dropped,
                 str(log), "" if ok else tail(text))
        steps.append(s)
        info(f"{'ok' if ok else 'FAILED'} in {duration(s.seconds)}"
             + (f", {s.warnings} warning{'s' if s.warnings > 1 else ''}" if s.warnings else "")
             + (f", {len(dropped)} requested options not in .config" if dropped else "")
             + f" (log {log})")
    print()
    print(format_report(steps, len(commits)))
    return steps
