# SPDX-License-Identifier: GPL-2.0
"""Config fragments: which ones a build uses, and checking the merged result.

Silently dropped options are the classic trap of fragment merging (an option
whose dependencies are not met vanishes in olddefconfig), so after every merge
each requested option is compared with the final .config.
"""

import re
from pathlib import Path

from .common import HARNESS

CONFIG_DIR = HARNESS / "config"

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def fragments(arch, flavor):
    """Fragment files for a build, in merge order (later ones win)."""
    return [CONFIG_DIR / "common.config", CONFIG_DIR / f"{arch}.config",
            CONFIG_DIR / f"{flavor}.config"]


def parse(text):
    """Parse .config text into {option: value}; value "n" for 'is not set'."""
    opts = {}
    for line in text.splitlines():
        line = line.strip()
        m = _SET.match(line)
        if m:
            opts[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            opts[m.group(1)] = "n"
    return opts


def requested(paths):
    """The options requested by fragment files, later files overriding."""
    want = {}
    for p in paths:
        want.update(parse(Path(p).read_text()))
    return want


def verify(want, have):
    """Return a list of (option, wanted, actual) that did not come out as asked.

    An option absent from .config counts as "n" (not set), which is what the
    kernel's Kconfig means by absence.
    """
    bad = []
    for opt, val in sorted(want.items()):
        got = have.get(opt, "n")
        if got != val:
            bad.append((opt, val, None if opt not in have else got))
    return bad


def describe(bad):
    lines = []
    for opt, val, got in bad:
        got_s = "absent (dependencies not met?)" if got is None else got
        lines.append(f"  {opt}: asked {val}, got {got_s}")
    return "\n".join(lines)
