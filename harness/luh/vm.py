# SPDX-License-Identifier: GPL-2.0
"""Chains of kernels in QEMU: initramfs, the VM runner, the serial log.

A chain is a list of stages; stage k boots build k, runs its programs and
kexecs (kexec_file_load + reboot(LINUX_REBOOT_CMD_KEXEC)) into build k+1.
Stage k's initramfs carries the kernel and the initramfs of stage k+1, so the
initramfs of stage 1 nests all of them.  Every stage prints the `uname -r`
and `uname -v` of the kernel it runs on, and the runner checks them against
the build it asked for: a stale image can never pass as the wanted kernel.
"""

import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import build as kbuild
from .common import CACHE, HOST_ARCH, HarnessError, info

RUNS = CACHE / "runs"

BASE_CMDLINE = {
    "x86_64": "console=ttyS0 liveupdate=on panic=-1 oops=panic printk.devkmsg=on",
    "arm64": "console=ttyAMA0 liveupdate=on panic=-1 oops=panic printk.devkmsg=on",
}
# Added for debug builds: every KASAN report is printed, not only the first.
DEBUG_CMDLINE = "kasan_multi_shot"


def debug_scratch(mem_mib):
    """kho_scratch= for a debug kernel in a VM of mem_mib MiB.

    KASAN's shadow leaves KHO's default sizing (twice the early reservations)
    no room in a 2-4 GiB VM (LUO would be disabled), so scratch is sized by
    hand: 512 MiB of global scratch up to 4 GiB (where the 64 MiB low and
    256 MiB node areas hold the rest of a KHO-booted kernel's early
    allocations besides the shadow, 1/8 of memory); above, the global area
    alone must hold the shadow, so it is 1/8 of memory plus 512 MiB (a fixed
    512 MiB hung luo_memfd's 9 GiB VM).  More in a 2 GiB VM fails: a kernel
    that refuses a corrupt handover reserves new scratch and finds no free
    768 MiB range (corrupt:kho-5 showed it).
    """
    glob = 512 if mem_mib <= 4096 else mem_mib // 8 + 512
    return f"kho_scratch=64M,{glob}M,256M"
# Debug kernels run several times slower under TCG.
DEBUG_TIMEOUT_FACTOR = 4

# A line a debug kernel prints when one of its checkers fires (KASAN, KFENCE,
# lockdep, RCU, UBSAN, kmemleak, WARN, BUG, a hung task or an RCU stall).
# Any of them fails the suite of the run, quoted.
SPLAT = re.compile(
    r"(BUG: |WARNING: |UBSAN: |kernel BUG at |general protection fault|Oops: |"
    r"unreferenced object 0x|INFO: task \S+ blocked for more than|"
    r"rcu: INFO: |detected stall|Kernel panic|DEBUG_LOCKS_WARN_ON|"
    r"possible recursive locking|suspicious RCU usage|list_(add|del) corruption|"
    r"INFO: trying to register non-static key|\bBUG [\w.-]+ \(|Bad page state|"
    r"Kernel memory leak detector disabled|LU-KMEMLEAK \d+ error)")


def splats(lines):
    """The checker lines of a serial log, in order (our own LU- lines excluded, but for
    lu-init's report that it could not scan kmemleak)."""
    return [t.strip() for _, t in lines
            if SPLAT.search(t) and ("LU-" not in t or "LU-KMEMLEAK" in t)]


# pauth-impdef: QEMU's cheap pointer-authentication algorithm, much faster
# under TCG than the architected one (and irrelevant to what we test).
QEMU = {"x86_64": ["qemu-system-x86_64"],
        "arm64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on"]}


@dataclass
class Stage:
    build: "kbuild.Build"
    # (result name, argv inside the VM)
    programs: list = field(default_factory=list)
    # Other files of the stage's initramfs: path inside the VM (under /lu/) -> host path
    files: dict = field(default_factory=dict)


@dataclass
class StageResult:
    number: int
    ident: str = ""
    expected: str = ""
    results: dict = field(default_factory=dict)
    kexec_loaded: int | None = None
    reboot: str | None = None
    t_start: float | None = None
    t_reboot: float | None = None
    first_line: int = 0
    last_line: int = 0

    @property
    def right_kernel(self):
        return self.ident == self.expected


@dataclass
class RunResult:
    name: str
    log: Path
    lines: list  # [(host seconds since QEMU start, text)]
    stages: list
    exit: str  # "exited" or "timeout"
    accel: str
    seconds: float
    # Whether a stage ran a debug kernel: then every checker line is a problem.
    debug: bool = False

    @property
    def splats(self):
        return splats(self.lines)

    def text(self, stage=None):
        if stage is None:
            return "\n".join(t for _, t in self.lines)
        s = self.stages[stage - 1]
        return "\n".join(t for _, t in self.lines[s.first_line:s.last_line + 1])

    def problems(self, nstages):
        """Why this run cannot be trusted, if it cannot (empty list = fine)."""
        p = []
        if len(self.stages) != nstages:
            p.append(f"reached {len(self.stages)} of {nstages} stages ({self.exit})")
        for s in self.stages:
            if not s.right_kernel:
                p.append(f"stage {s.number} ran on '{s.ident}', expected '{s.expected}'")
        if self.exit == "timeout":
            p.append("timed out")
        for _, t in self.lines:
            if "Kernel panic" in t:
                p.append(t.strip())
                break
        if self.debug:
            found = self.splats
            p += [f"splat: {t}" for t in found[:5]]
            if len(found) > 5:
                p.append(f"... {len(found) - 5} more checker lines in {self.log}")
        return p


def _plan(k, n, programs, kexec):
    lines = [f"stage {k} {n}"]
    if kexec:
        lines.append("kexec")
    for name, argv in programs:
        lines.append(f"run {name} " + " ".join(argv))
    return "\n".join(lines) + "\n"


def make_initramfs(workdir, stages, progs, arch):
    """Build the nested initramfs of a chain; return the path of stage 1's."""
    gen = kbuild.gen_init_cpio(arch)
    n = len(stages)
    nxt = None
    for k in range(n, 0, -1):
        st = stages[k - 1]
        plan = workdir / f"plan.{k}"
        plan.write_text(_plan(k, n, st.programs, k < n))
        used = {argv[0].rsplit("/", 1)[-1] for _, argv in st.programs}
        lst = [
            "dir /dev 0755 0 0", "nod /dev/console 0600 0 0 c 5 1",
            "dir /proc 0755 0 0", "dir /sys 0755 0 0", "dir /tmp 1777 0 0",
            "dir /debugfs 0755 0 0", "dir /bin 0755 0 0", "dir /lu 0755 0 0",
            f"file /init {progs['lu-init']} 0755 0 0",
            f"file /lu/plan {plan} 0644 0 0",
        ]
        for name in sorted(used):
            lst.append(f"file /bin/{name} {progs[name]} 0755 0 0")
        for dest, src in sorted(st.files.items()):
            lst.append(f"file {dest} {src} 0644 0 0")
        if nxt is not None:
            lst += ["dir /lu/next 0755 0 0",
                    f"file /lu/next/kernel {stages[k].build.image} 0644 0 0",
                    f"file /lu/next/initrd {nxt} 0644 0 0"]
        (workdir / f"cpio.{k}").write_text("\n".join(lst) + "\n")
        out = workdir / f"initrd.{k}.cpio"
        with open(out, "wb") as f:
            p = subprocess.run([gen, workdir / f"cpio.{k}"], stdout=f,
                               stderr=subprocess.PIPE)
        if p.returncode:
            raise HarnessError(f"gen_init_cpio failed: {p.stderr.decode()}")
        nxt = out
    return nxt


def _boot_id():
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def qemu_cmd(arch, accel, mem, smp, image, initrd, cmdline, extra=()):
    return QEMU[arch] + list(extra) + [
        "-accel", accel, "-m", str(mem), "-smp", str(smp),
        "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
        "-serial", "stdio", "-kernel", str(image),
    ] + (["-initrd", str(initrd)] if initrd else []) + ["-append", cmdline]


def _run_qemu(cmd, log, timeout):
    """Run QEMU, stamping each serial line with host time; return (lines, exit)."""
    t0 = time.monotonic()
    lines = []
    buf = b""
    reason = "exited"
    with open(log, "w") as f:
        f.write("# " + " ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        fd = p.stdout.fileno()
        os.set_blocking(fd, False)
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                reason = "timeout"
                p.kill()
                break
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not r:
                if p.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            now = time.monotonic() - t0
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                text = raw.decode(errors="replace").rstrip("\r")
                lines.append((now, text))
                f.write(f"[{now:9.3f}] {text}\n")
            f.flush()
        p.wait()
        if buf:
            lines.append((time.monotonic() - t0, buf.decode(errors="replace")))
            f.write(f"[{lines[-1][0]:9.3f}] {lines[-1][1]}\n")
        f.write(f"# {reason} after {time.monotonic() - t0:.2f} s\n")
    return lines, reason, time.monotonic() - t0


_STAGE = re.compile(r"LU-STAGE (\d+) (\d+) (\S+) (.*)$")
_RESULT = re.compile(r"LU-RESULT (\d+) (\S+) (-?\d+)\s*$")
_KEXEC = re.compile(r"LU-KEXEC-LOADED (\d+) (-?\d+)\s*$")
_REBOOT = re.compile(r"LU-REBOOT (\d+) (kexec|restart)\s*$")


_BANNER = re.compile(r"Linux version \S+ ")


def parse_stages(lines, expected):
    """Split a serial log into boots and read each stage's LU- markers.

    A boot starts at the kernel's "Linux version" banner; its lines (kernel
    log and programs alike) belong to the stage whose LU-STAGE marker it
    prints.  expected = [ident of stage k] for k = 1..N.
    """
    starts = [i for i, (_, t) in enumerate(lines) if _BANNER.search(t)] or [0]
    bounds = list(zip(starts, starts[1:] + [len(lines)]))
    stages = []
    for first, end in bounds:
        cur = None
        for i in range(first, end):
            t, text = lines[i]
            m = _STAGE.search(text)
            if m and cur is None:
                k = int(m.group(1))
                cur = StageResult(k, f"{m.group(3)} {m.group(4).strip()}",
                                  expected[k - 1] if 0 < k <= len(expected) else "?",
                                  t_start=t, first_line=first, last_line=end - 1)
                continue
            if cur is None:
                continue
            m = _RESULT.search(text)
            if m:
                cur.results[m.group(2)] = int(m.group(3))
                continue
            m = _KEXEC.search(text)
            if m:
                cur.kexec_loaded = int(m.group(2))
                continue
            m = _REBOOT.search(text)
            if m:
                cur.reboot = m.group(2)
                cur.t_reboot = t
        if cur is not None:
            stages.append(cur)
    return stages


_KVM_WORKS = None


def pick_accel(arch, probe_build, progs):
    """KVM only if a guest kernel really boots under it; TCG otherwise."""
    global _KVM_WORKS
    if arch != HOST_ARCH:
        return "tcg"
    if _KVM_WORKS is not None:
        return "kvm" if _KVM_WORKS else "tcg"
    forced = os.environ.get("LU_ACCEL")
    if forced in ("kvm", "tcg"):
        _KVM_WORKS = forced == "kvm"
        info(f"accelerator forced by LU_ACCEL: {forced}")
        return forced
    stamp = CACHE / f"kvm-probe-{arch}"
    if stamp.exists():
        boot, verdict = stamp.read_text().split()
        if boot == _boot_id():
            _KVM_WORKS = verdict == "yes"
            info(f"accelerator: {'kvm' if _KVM_WORKS else 'tcg'} (probed earlier this boot)")
            return "kvm" if _KVM_WORKS else "tcg"
    works = False
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        wd = RUNS / "kvm-probe"
        shutil.rmtree(wd, ignore_errors=True)
        wd.mkdir(parents=True)
        initrd = make_initramfs(wd, [Stage(probe_build, [])], progs, arch)
        cmd = qemu_cmd(arch, "kvm", 512, 1, probe_build.image, initrd,
                       BASE_CMDLINE[arch])
        lines, reason, _ = _run_qemu(cmd, wd / "serial.log", 25)
        works = any("LU-STAGE 1 1" in t for _, t in lines)
    _KVM_WORKS = works
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{_boot_id()} {'yes' if works else 'no'}\n")
    info("accelerator: " + ("kvm (a guest kernel booted under it)" if works else
                            "tcg (KVM missing or a guest kernel does not boot under it)"))
    return "kvm" if works else "tcg"


def run_chain(name, stages, progs, arch, *, mem=2048, smp=2, timeout=120,
              extra_cmdline="", accel=None, extra_qemu=()):
    """Boot stage 1 and follow the chain; return a RunResult."""
    debug = any(s.build.debug for s in stages)
    if debug:
        name += "-debug"
    wd = RUNS / name
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    initrd = make_initramfs(wd, stages, progs, arch)
    accel = accel or pick_accel(arch, stages[0].build, progs)
    cmdline = BASE_CMDLINE[arch] + (" " + extra_cmdline if extra_cmdline else "")
    if debug:
        cmdline += f" {DEBUG_CMDLINE} {debug_scratch(mem)}"
        timeout *= DEBUG_TIMEOUT_FACTOR
    cmd = qemu_cmd(arch, accel, mem, smp, stages[0].build.image, initrd, cmdline, extra_qemu)
    log = wd / "serial.log"
    lines, reason, secs = _run_qemu(cmd, log, timeout)
    parsed = parse_stages(lines, [s.build.ident for s in stages])
    return RunResult(name, log, lines, parsed, reason, accel, secs, debug)


def print_stages(res, marker, extra=None):
    """Print each stage's kernel and its lines from `marker` on (a report's body); `extra(s)`
    prints more after a stage."""
    for s in res.stages:
        print(f"  stage {s.number}: kernel {s.ident}"
              + ("" if s.right_kernel else f"   (EXPECTED {s.expected})"))
        for line in res.text(s.number).splitlines():
            if marker in line:
                print("           " + line[line.index(marker):])
        if s.reboot == "kexec":
            print("           init: reboot(LINUX_REBOOT_CMD_KEXEC)")
        if extra:
            extra(s)


def cleanup_run(result):
    """Drop a passed run's bulky files (initramfs); keep its serial log."""
    for p in result.log.parent.glob("initrd.*.cpio"):
        p.unlink(missing_ok=True)


