# SPDX-License-Identifier: GPL-2.0
"""Test results: parsing (K)TAP from the VMs, emitting KTAP, the summary."""

import re
from dataclasses import dataclass, field

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Case:
    name: str
    status: str
    detail: str = ""


@dataclass
class Suite:
    arch: str
    flavor: str
    name: str
    cases: list = field(default_factory=list)
    log: str = ""
    seconds: float = 0.0
    note: str = ""

    def count(self, status):
        return sum(1 for c in self.cases if c.status == status)

    @property
    def status(self):
        if not self.cases or self.count(FAIL):
            return FAIL
        if self.count(PASS) == 0:
            return SKIP
        return PASS

    @property
    def ident(self):
        return f"{self.arch}/{self.flavor}/{self.name}"


_TAP_RESULT = re.compile(r"^(not ok|ok) (\d+) (.*?)(?:\s+#\s*(SKIP|TODO)\b(.*))?$")
_TAP_PLAN = re.compile(r"^1\.\.(\d+)$")


def parse_tap(text):
    """Parse the top level of a TAP/KTAP stream (e.g. a kselftest binary).

    Returns (plan, [Case]); plan is None when no plan line was seen.  Lines
    may carry a kernel console prefix (a printk timestamp); indented
    (subtest) lines are ignored.
    """
    plan = None
    cases = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line[0] in " \t":
            continue
        m = _TAP_PLAN.match(line)
        if m and plan is None:
            plan = int(m.group(1))
            continue
        m = _TAP_RESULT.match(line)
        if not m:
            continue
        ok, _num, name, directive, rest = m.groups()
        if directive == "SKIP":
            status = SKIP
        else:
            status = PASS if ok == "ok" else FAIL
        cases.append(Case(name.strip(), status, (rest or "").strip()))
    return plan, cases


def tap_cases(text):
    """Cases of a TAP stream, with a failed case added if the plan is not met."""
    plan, cases = parse_tap(text)
    if plan is None:
        cases.append(Case("plan", FAIL, "no TAP plan line: the program did not start"))
    elif plan is not None and plan != len(cases):
        cases.append(Case("plan", FAIL, f"plan 1..{plan} but {len(cases)} results"))
    return cases


def emit_ktap(suites):
    """The whole run as KTAP v1: one test per suite, its cases as subtests."""
    out = ["KTAP version 1", f"1..{len(suites)}"]
    for i, s in enumerate(suites, 1):
        out.append("    KTAP version 1")
        out.append(f"    # Subtest: {s.ident}")
        out.append(f"    1..{len(s.cases)}")
        for j, c in enumerate(s.cases, 1):
            name = _ktap_name(c.name)
            if c.status == SKIP:
                out.append(f"    ok {j} {name} # SKIP {c.detail}".rstrip())
            elif c.status == PASS:
                out.append(f"    ok {j} {name}")
            else:
                if c.detail:
                    for d in c.detail.splitlines():
                        out.append(f"    # {d}")
                out.append(f"    not ok {j} {name}")
        name = _ktap_name(s.ident)
        if s.status == SKIP:
            out.append(f"ok {i} {name} # SKIP")
        else:
            out.append(f"{'ok' if s.status == PASS else 'not ok'} {i} {name}")
    return "\n".join(out) + "\n"


def _ktap_name(name):
    return re.sub(r"\s+", "_", name.strip()) or "unnamed"


def totals(suites):
    p = sum(s.count(PASS) for s in suites)
    f = sum(s.count(FAIL) for s in suites)
    k = sum(s.count(SKIP) for s in suites)
    return p, f, k


def summary_table(suites):
    """A plain-text table: one row per suite, grouped by arch and flavor."""
    rows = [("arch", "flavor", "suite", "pass", "fail", "skip", "result", "time")]
    for s in suites:
        rows.append((s.arch, s.flavor, s.name, str(s.count(PASS)), str(s.count(FAIL)),
                     str(s.count(SKIP)), s.status.upper(), f"{s.seconds:.1f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i < 3 or i == 6 else c.rjust(widths[i])
                               for i, c in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def final_line(suites):
    p, f, k = totals(suites)
    return f"{p} passed, {f} failed, {k} skipped"
