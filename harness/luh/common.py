# SPDX-License-Identifier: GPL-2.0
"""Paths, progress output and command running shared by the harness."""

import os
import shlex
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "harness"
CACHE = Path(os.environ.get("LU_CACHE", Path.home() / ".cache" / "lu"))
# Where logs of failed steps are kept (inside the cache, outside the repo).
LOGS = CACHE / "logs"

ARCHES = ("x86_64", "arm64")
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
FLAVORS = ("c", "rust")

_T0 = time.monotonic()


class HarnessError(Exception):
    """A step failed; the message says what and where its log is."""


def elapsed():
    return time.monotonic() - _T0


def stage(msg):
    """Print a progress line with the elapsed time since the command started."""
    m, s = divmod(int(elapsed()), 60)
    print(f"[{m:3d}:{s:02d}] {msg}", flush=True)


def info(msg):
    print(f"         {msg}", flush=True)


def _last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""
    except OSError:
        return ""


def run(cmd, log=None, cwd=None, env=None, check=True, input=None, heartbeat=None):
    """Run a command.

    With a log path its output goes there (appended) and a failure raises a
    HarnessError naming the log; without, output is captured and returned.
    With a heartbeat label, a long command prints a progress line every 30 s
    with the last line of its log.
    """
    cmd = [str(c) for c in cmd]
    full_env = dict(os.environ)
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    if log is not None:
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"\n$ {shlex.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            t0 = time.monotonic()
            while True:
                try:
                    proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    if heartbeat:
                        info(f"{heartbeat}: {int(time.monotonic() - t0)} s, "
                             f"at: {_last_line(log)[:80]}")
            p = subprocess.CompletedProcess(cmd, proc.returncode)
        if check and p.returncode != 0:
            raise HarnessError(
                f"command failed (exit {p.returncode}): {shlex.join(cmd)}\n"
                f"  full log: {log}")
        return p
    p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True,
                       text=True, input=input)
    if check and p.returncode != 0:
        raise HarnessError(
            f"command failed (exit {p.returncode}): {shlex.join(cmd)}\n"
            f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p
