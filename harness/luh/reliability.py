# SPDX-License-Identifier: GPL-2.0
"""Reliability suites (issue 18): reliability:<name>, run on every flavor.

Each suite runs guest programs that print one "<PREFIX> ok|FAIL what (errno
N: ...)" line per check (harness/init/lu-check.h); every line is a case.  On
the debug builds any checker line (vm.SPLAT) or kmemleak report fails the
suite too (vm.RunResult.problems).
"""

import re
import time

from . import faultinj, fuzz, suites, vm
from .ktap import FAIL, PASS, Case, Suite


def check_cases(suite, res, prefix, stage_no, prog):
    """One case per check line of prog in stage stage_no, plus its exit status and the
    run's problems (a case "<prog>.run"); the check lines must not be missing."""
    pat = re.compile(re.escape(prefix) + r" (ok|FAIL) (.*) \(errno (-?\d+)")
    text = res.text(stage_no) if len(res.stages) >= stage_no else ""
    found = 0
    for line in text.splitlines():
        m = pat.search(line)
        if m:
            found += 1
            suite.cases.append(Case(f"stage{stage_no}.{m.group(2)}",
                                    PASS if m.group(1) == "ok" else FAIL,
                                    "" if m.group(1) == "ok" else line.strip()))
    detail = list(res.problems(len(res.stages) or 1))
    st = res.stages[stage_no - 1] if len(res.stages) >= stage_no else None
    rc = None if st is None else st.results.get(prog)
    if rc != 0:
        detail.append(f"{prog}: exit status {rc}" if rc is not None else f"{prog} did not run")
    if not found:
        detail.append(f"no {prefix} line in stage {stage_no}")
    suite.cases.append(Case(f"stage{stage_no}.{prog}.run", FAIL if detail else PASS,
                            "\n".join(detail)))
    return found


# Times the suite, names its log and drops a passed run's bulky files.
_finish = suites._finish


def perms(arch, builds, progs, flavor):
    """Who may open /dev/liveupdate: root (with or without capabilities) yes,
    uid 65534 EACCES; node 0600 root:root. Upstream's behaviour, kept."""
    t0 = time.monotonic()
    res = vm.run_chain(f"{arch}-{flavor}-perms", [
        vm.Stage(builds[flavor], [("perm", ["/bin/lu-perm-check"])])], progs, arch,
        timeout=120)
    s = Suite(arch, flavor, "reliability:perms")
    check_cases(s, res, "LU-PERM", 1, "perm")
    return _finish(s, res, t0)


from . import races  # noqa: E402 (races uses check_cases and _finish above)

# name -> function(arch, builds, progs, flavor) returning a Suite (or a list).
SUITES = {
    "reliability:perms": perms,
    # lu-fail-nth: the Nth allocation of every LUO operation fails (debug builds only).
    "reliability:fail-nth": faultinj.fail_nth,
    # lu-fuzz, the ioctl fuzzer of the userspace crate: a smoke run (fuzz.SMOKE_CALLS).
    "reliability:fuzz": fuzz.suite,
    "reliability:races": races.races,
    "reliability:soak-smoke": races.soak_smoke,
}

# Guest programs of these suites: name -> (sources, extra flags); built by
# build.user_programs with lu-check.h as a dependency.
PROGRAMS = {
    "lu-perm-check": (["lu-perm-check.c"], []),
    "lu-fail-nth": (["lu-fail-nth.c"], []),
    "lu-race": (["lu-race.c"], ["-pthread"]),
    "lu-soak": (["lu-soak.c"], []),
}
