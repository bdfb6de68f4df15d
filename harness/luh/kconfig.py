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


def fragments(arch, flavor, debug=False, variant=""):
    """Fragment files for a build, in merge order (later ones win).

    variant names more fragments, <variant>.config and, if it exists,
    <variant>-<arch>.config, for the kernels of some suites (client: those of
    client:systemd and vm:survives).
    """
    frags = [CONFIG_DIR / "common.config", CONFIG_DIR / f"{arch}.config",
             CONFIG_DIR / f"{flavor}.config"]
    if debug:
        frags += [CONFIG_DIR / "debug.config", CONFIG_DIR / f"{flavor}-debug.config"]
    if variant:
        frags.append(CONFIG_DIR / f"{variant}.config")
        per_arch = CONFIG_DIR / f"{variant}-{arch}.config"
        if per_arch.exists():
            frags.append(per_arch)
    return frags


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


# The Kconfig check of the rust tree (suites.kconfig_check): without a Rust
# toolchain, allnoconfig, defconfig and allmodconfig must give a config with
# all of ours off and no Kconfig message about them; with one, defconfig plus
# the options KEXEC_HANDOVER's help names must give KHO and LUO built in.
NO_RUST_TARGETS = ("allnoconfig", "defconfig", "allmodconfig")
# Kconfig's RUST_IS_AVAILABLE is $(success,scripts/rust_is_available.sh),
# which fails when the RUSTC that make passes it is not a command.
NO_RUST = "RUSTC=/nonexistent"
# RUST and CMA are dependencies of KEXEC_HANDOVER, not selected by it.
RUST_ENABLE = ("RUST", "CMA", "KEXEC_HANDOVER", "LIVEUPDATE", "LIVEUPDATE_MEMFD")

_OURS = re.compile(r"KEXEC_HANDOVER|LIVEUPDATE|(?:^|_)KHO(?:_|$)")
# A Kconfig message: "WARNING: unmet direct dependencies detected for X",
# "warning: ...", "error: recursive dependency detected!" or
# "file:line:warning: ..."; its indented lines that follow belong to it.
_DIAG = re.compile(r"^(?:\S+:\d+:\s*)?(?:warning|error)\b", re.I)


def ours(symbol):
    """Whether a Kconfig symbol (with or without CONFIG_) is one of KHO's or LUO's.

    KHO (KEXEC_HANDOVER*, MEMBLOCK_KHO_SCRATCH), the orchestrator and its
    handlers (LIVEUPDATE*, IOMMUFD_LIVEUPDATE) and their tests (TEST_KHO_*,
    TEST_KEXEC_HANDOVER, LIVEUPDATE_TEST).
    """
    name = symbol[len("CONFIG_"):] if symbol.startswith("CONFIG_") else symbol
    return bool(_OURS.search(name))


def diagnostics(output):
    """Kconfig's warnings and errors in make's output, one string per message."""
    msgs = []
    cont = False
    for line in output.splitlines():
        if _DIAG.match(line):
            msgs.append(line)
            cont = True
        elif cont and line[:1] in (" ", "\t") and line.strip():
            msgs[-1] += "\n" + line
        else:
            cont = False
    return msgs


def diagnostic_problems(output):
    """The messages that fail the check: a dependency loop, or any naming a symbol of ours."""
    return [m for m in diagnostics(output)
            if "recursive dependency" in m or any(ours(w) for w in re.findall(r"\w+", m))]


def check_without_rust(config_text, output):
    """What is wrong with a .config made without a Rust toolchain ([] if nothing).

    Rust must be off (or the check proves nothing), every option of ours off
    (the architecture's ARCH_SUPPORTS_KEXEC_HANDOVER aside), and Kconfig must
    have said nothing about them.
    """
    if config_text is None:
        return ["no .config written"]
    have = parse(config_text)
    problems = []
    if have.get("CONFIG_RUST_IS_AVAILABLE", "n") != "n" or have.get("CONFIG_RUST", "n") != "n":
        problems.append(f"Rust is available: {NO_RUST} did not take")
    on = [k for k, v in sorted(have.items())
          if v in ("y", "m") and ours(k) and not k.startswith("CONFIG_ARCH_SUPPORTS_")]
    if on:
        problems.append("on without Rust: " + ", ".join(on))
    return problems + [f"Kconfig: {m}" for m in diagnostic_problems(output)]


def check_with_rust(config_text, output, enabled=RUST_ENABLE):
    """What is wrong with a .config where `enabled` were turned on with a Rust toolchain."""
    if config_text is None:
        return ["no .config written"]
    have = parse(config_text)
    problems = []
    if have.get("CONFIG_RUST_IS_AVAILABLE") != "y":
        problems.append("Kconfig found no Rust toolchain (see make rustavailable)")
    bad = verify({f"CONFIG_{s}": "y" for s in enabled}, have)
    if bad:
        problems.append(describe(bad).strip())
    return problems + [f"Kconfig: {m}" for m in diagnostic_problems(output)]
