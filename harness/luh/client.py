# SPDX-License-Identifier: GPL-2.0
"""client:systemd: systemd keeps a service's fd store across `systemctl kexec`.

A Debian sid root filesystem (mmdebstrap, cached like the kernel source) boots
with systemd as PID 1 from a virtio disk on the client kernels (the
<flavor>-client builds: harness/config/client.config).  The service
lu-fdstore (harness/init/lu-fdstore.c, unit FileDescriptorStorePreserve=yes)
puts two memfds of a random seed in its fd store; lu-client.service loads the
next kernel (kexec-tools, kexec_file_load) and runs `systemctl kexec`.
systemd-shutdown preserves the store in its LUO session "systemd"; PID 1 of
the next boot retrieves it and hands the fds back to the service, which
checks every byte against the seed it finds in them.

The control run starts the next boot with lu-peek as init, which retrieves
the session before systemd (luoctl manifest: the manifest systemd wrote) and
so takes it away: the service must then get nothing.  Only LUO can have
carried the fds in the other runs.
"""

import base64
import hashlib
import json
import re
import shutil
import time
import uuid
from pathlib import Path

from . import build as kbuild
from . import toolchain, vm
from .common import CACHE, HARNESS, HOST_ARCH, LOGS, HarnessError, info, run, stage
from .ktap import FAIL, PASS, Case, Suite

ROOTFS = CACHE / "rootfs"
DIST = "sid"
MIRROR = "http://deb.debian.org/debian"
# systemd as PID 1 (systemd-sysv: systemctl kexec/reboot), kexec-tools to load
# the next kernel.  No udev, no D-Bus: nothing in the test needs them.
PACKAGES = ("systemd", "systemd-sysv", "kexec-tools")
DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
# FileDescriptorStorePreserve= and LUO came in systemd 261.
MIN_SYSTEMD = 261
# Units of the root filesystem masked in the guest: they wait for devices
# that udev would announce, or need D-Bus, and the test uses none of them.
MASK = ("getty@tty1.service", "serial-getty@ttyS0.service", "serial-getty@ttyAMA0.service",
        "systemd-logind.service", "apt-daily.timer", "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer",
        "systemd-tmpfiles-clean.timer", "kexec-load.service", "kexec.service")
CLIENT_DIR = HARNESS / "client"
IMAGE_SIZE = "1536M"
FIXTURES = CACHE / "client"

# The lines of the guest: the steps (lu-client, lu-peek), the service.
_CLIENT = re.compile(r"LU-CLIENT (\S+) ?(.*)$")
_FDSTORE = re.compile(r"LU-FDSTORE (\S+) ?(.*)$")
_PRESERVED = "systemd-shutdown[1]: Preserved fd stores in LUO session 'systemd' for kexec."
_KEXEC = "systemd-shutdown[1]: Rebooting with kexec."
_NO_SESSION = "No LUO session 'systemd' found, skipping fd store restoration."


def _recipe(arch):
    return json.dumps({"dist": DIST, "mirror": MIRROR, "packages": PACKAGES,
                       "arch": DEB_ARCH[arch], "variant": "minbase"}, sort_keys=True)


def _foreign_ready(arch):
    """Let mmdebstrap run arch's maintainer scripts: qemu-user through binfmt_misc.

    bookworm's qemu-user-static (7.2) goes beside the backported qemu-system
    (nothing of it conflicts); its handler is registered from the file the
    package ships, as systemd-binfmt would, unless one is registered already.
    """
    toolchain.ensure_packages(["qemu-user-static"])
    name = {"arm64": "qemu-aarch64", "x86_64": "qemu-x86_64"}[arch]
    bm = Path("/proc/sys/fs/binfmt_misc")
    if not (bm / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", bm])
    if not (bm / name).exists():
        conf = (Path("/usr/lib/binfmt.d") / f"{name}.conf").read_text()
        for line in conf.splitlines():
            if line.startswith(":"):
                (bm / "register").write_text(line)
        info(f"registered {name} with binfmt_misc (for mmdebstrap's {DEB_ARCH[arch]} chroot)")


def rootfs(arch):
    """The cached root filesystem directory of arch; build it on first use."""
    digest = hashlib.sha256(_recipe(arch).encode()).hexdigest()[:12]
    d = ROOTFS / arch / f"{DIST}-{digest}"
    stamp = d / ".lu-rootfs"
    if stamp.exists():
        try:
            return d, json.loads(stamp.read_text())
        except ValueError:
            info(f"{stamp} is corrupt: making the root filesystem again")
    toolchain.ensure_packages(["mmdebstrap"])
    if arch != HOST_ARCH:
        _foreign_ready(arch)
    stage(f"building the {DIST} root filesystem ({arch}) with mmdebstrap")
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"rootfs-{arch}.log"
    log.write_text("")
    # In a mount namespace of its own: if it is killed, no mount of its
    # chroot outlives it under tmp.
    run(["unshare", "--mount", "--propagation", "private",
         "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={DEB_ARCH[arch]}",
         # sid's Release is often past its Valid-Until on the mirrors.
         '--aptopt=Acquire::Check-Valid-Until "false"',
         "--include=" + ",".join(PACKAGES), "--format=directory", DIST, tmp, MIRROR],
        log=log, heartbeat="mmdebstrap")
    out = run(["dpkg-query", f"--admindir={tmp}/var/lib/dpkg", "-W",
               "-f=${Package} ${Version}\n"] + list(PACKAGES))
    versions = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    meta = {"recipe": json.loads(_recipe(arch)), "versions": versions,
            "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    (tmp / ".lu-rootfs").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    info(f"root filesystem: {d} (systemd {versions.get('systemd', '?')})")
    return d, meta


def systemd_major(version):
    """'262.1-1' -> 262; None if it does not start with a number."""
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def _fresh(root, dest):
    """root/dest, its directory made and whatever was there removed."""
    p = root / dest.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        p.unlink()
    return p


def _install(root, dest, src, mode=0o644):
    p = _fresh(root, dest)
    shutil.copyfile(src, p)
    p.chmod(mode)


def _write(root, dest, text, mode=0o644):
    p = _fresh(root, dest)
    p.write_text(text)
    p.chmod(mode)


def _link(root, dest, target):
    _fresh(root, dest).symlink_to(target)


def make_image(wd, base, next_build, progs, peek):
    """The disk of one run: the root filesystem, the test, the next kernel."""
    tree, img = wd / "root", wd / "disk.img"
    shutil.rmtree(tree, ignore_errors=True)
    img.unlink(missing_ok=True)
    try:
        run(["cp", "-a", base, tree])
        _add_test(tree, next_build, progs, peek)
        run(["mkfs.ext4", "-q", "-F", "-L", "lu-root", "-d", tree, img, IMAGE_SIZE],
            log=wd / "mkfs.log")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return img


def _add_test(tree, next_build, progs, peek):
    """The test's files, the next kernel and the per-run settings, into tree."""
    (tree / ".lu-rootfs").unlink()
    _install(tree, "/boot/lu-next", next_build.image)
    _install(tree, "/usr/local/bin/lu-fdstore", progs["lu-fdstore"], 0o755)
    _install(tree, "/usr/local/bin/luoctl", progs["luoctl"], 0o755)
    _install(tree, "/usr/local/bin/lu-client", CLIENT_DIR / "lu-client", 0o755)
    _install(tree, "/usr/local/sbin/lu-peek", CLIENT_DIR / "lu-peek", 0o755)
    for unit in ("lu-fdstore.service", "lu-client.service"):
        _install(tree, f"/etc/systemd/system/{unit}", CLIENT_DIR / unit)
        _link(tree, f"/etc/systemd/system/multi-user.target.wants/{unit}",
              f"/etc/systemd/system/{unit}")
    for unit in MASK:
        _link(tree, f"/etc/systemd/system/{unit}", "/dev/null")
    if peek:
        _write(tree, "/etc/lu-client/next-init", "/usr/local/sbin/lu-peek\n")
    # One machine ID for both boots: journalctl -b -1 reads the first one's
    # journal (persistent: /var/log/journal exists).
    _write(tree, "/etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    (tree / "var" / "log" / "journal").mkdir(parents=True, exist_ok=True)
    _write(tree, "/etc/hostname", "lu-client\n")
    _write(tree, "/etc/fstab", "")
    _write(tree, "/etc/default/kexec", "LOAD_KEXEC=false\n")
    # The units log to the kernel log; systemd's sysctl.d/50-default.conf
    # would keep info messages off the console (kernel.printk = 4 4 1 7).
    _write(tree, "/etc/sysctl.d/90-lu-console.conf", "kernel.printk = 7 4 1 7\n")


class Boot:
    """What one boot of a run printed."""

    def __init__(self):
        self.client = []  # (key, rest)
        self.fdstore = []
        self.lines = []

    def get(self, key):
        return [rest for k, rest in self.client if k == key]

    def first(self, key):
        v = self.get(key)
        return v[0] if v else ""


def split_boots(lines):
    """Split a serial log into boots at the kernel banner; read the markers."""
    boots = []
    for _, text in lines:
        if vm._BANNER.search(text):
            boots.append(Boot())
        if not boots:
            continue
        b = boots[-1]
        b.lines.append(text)
        m = _CLIENT.search(text)
        if m:
            # The journal lines lu-client relays quote the service's lines:
            # they are lu-client's, not the service's.
            b.client.append((m.group(1), m.group(2).strip()))
            continue
        m = _FDSTORE.search(text)
        if m:
            b.fdstore.append((m.group(1), m.group(2).strip()))
    return boots


def _kv(text):
    return dict(p.split("=", 1) for p in text.split() if "=" in p)


def check_run(boots, idents, peek):
    """What is wrong with a run (empty: it passed) and what it showed."""
    bad, seen = [], {}
    if len(boots) != 2:
        bad.append(f"{len(boots)} boots, expected 2")
        if not boots:
            return bad, seen
    for k, (b, ident) in enumerate(zip(boots, idents), 1):
        st = b.first("stage")
        if st != f"{k} {ident}":
            bad.append(f"boot {k}: stage line {st!r}, expected '{k} {ident}'")
    b1 = boots[0]
    guest = b1.first("systemd")
    major = systemd_major(guest)
    if major is None or major < MIN_SYSTEMD:
        bad.append(f"systemd {guest!r} in the guest; {MIN_SYSTEMD} or later needed")
    created = [_kv(r) for k, r in b1.fdstore if k == "created"]
    seed = created[0].get("seed") if created else None
    seen["seed"] = seed
    if not seed:
        bad.append("boot 1: lu-fdstore created no memfds")
    if ("result", "ok stored") not in b1.fdstore:
        bad.append("boot 1: lu-fdstore did not store its fds")
    for key, want in (("fdstore-state", "active success"), ("fdstore-count", "2"),
                      ("kexec-count", "0"), ("kexec-load", "0"), ("kexec-loaded", "1")):
        if b1.first(key) != want:
            bad.append(f"boot 1: {key} {b1.first(key)!r}, expected {want!r}")
    for line in (_PRESERVED, _KEXEC):
        if not any(line in t for t in b1.lines):
            bad.append(f"boot 1: systemd-shutdown did not print {line!r}")
    if len(boots) != 2:
        # What the first boot said is why there was no second one.
        return bad, seen
    b2 = boots[1]
    received = {kv.get("name"): kv for kv in (_kv(r) for k, r in b2.fdstore if k == "received")}
    seen["received"] = received
    if peek:
        parts = b2.get("peek-b64")
        try:
            p = base64.b64decode("".join(parts), validate=True).decode()
            rep = json.loads(p)
        except ValueError as e:  # binascii.Error and UnicodeDecodeError are ValueErrors
            p, rep = f"{len(parts)} base64 lines: {e}", None
        seen["peek"] = rep
        if b2.first("peek-status") != "0":
            bad.append(f"boot 2: lu-peek's luoctl exited {b2.first('peek-status')!r}: "
                       f"{' '.join(b2.get('peek-err'))}")
        if not isinstance(rep, dict) or rep.get("command") != "manifest" or "text" not in rep:
            bad.append(f"boot 2: no manifest from lu-peek ({p[:200]!r})")
        else:
            bad += check_manifest(rep)
        # systemd found no session: the service gets nothing and fails.
        want_fail = "FAIL fds from the fd store (LISTEN_FDS is not set)"
        if ("result", want_fail) not in b2.fdstore:
            bad.append(f"boot 2: lu-fdstore did not report {want_fail!r}")
        if received:
            bad.append(f"boot 2: lu-fdstore received {sorted(received)} without a session")
        for key, want in (("fdstore-state", "failed exit-code"), ("fdstore-count", "0"),
                          ("kexec-count", "0")):
            if b2.first(key) != want:
                bad.append(f"boot 2: {key} {b2.first(key)!r}, expected {want!r}")
        if _NO_SESSION not in b2.get("pid1"):
            bad.append(f"boot 2: PID 1 did not log {_NO_SESSION!r}")
    else:
        for name, size in (("ram", 16 << 20), ("state", 4096)):
            kv = received.get(name)
            if not kv:
                bad.append(f"boot 2: lu-fdstore did not receive {name!r}")
                continue
            if kv.get("seed") != seed or kv.get("bad") != "0" or kv.get("bytes") != str(size):
                bad.append(f"boot 2: {name}: {kv}, expected seed {seed}, {size} bytes, 0 bad")
            if kv.get("fs") != "tmpfs":
                bad.append(f"boot 2: {name} is on {kv.get('fs')!r}, not a memfd (tmpfs)")
        if any(k == "result" and r.startswith("FAIL") for k, r in b2.fdstore):
            bad.append("boot 2: lu-fdstore reported a failure")
        for key, want in (("fdstore-state", "active success"), ("fdstore-count", "2"),
                          ("kexec-count", "1")):
            if b2.first(key) != want:
                bad.append(f"boot 2: {key} {b2.first(key)!r}, expected {want!r}")
        before = b2.get("journal-before")
        after = b2.get("journal-after")
        if not any(f"LU-FDSTORE created seed={seed}" in t for t in before):
            bad.append("boot 2: the journal of boot 1 lacks the service's 'created' line")
        if not any(t.startswith("LU-FDSTORE received name=ram") and f"seed={seed}" in t
                   for t in after):
            bad.append("boot 2: the journal of boot 2 lacks the service's 'received' line")
        pid1 = b2.get("pid1")
        for want in ("Found LUO session 'systemd', restoring fd stores.",
                     "Restored 2 fd(s) total from LUO session.",
                     "lu-fdstore.service: Passing 2 fds to service"):
            if want not in pid1:
                bad.append(f"boot 2: PID 1 did not log {want!r}")
    if ("done", "") not in b2.client:
        bad.append("boot 2: lu-client did not finish")
    return bad, seen


def manifest_names(text):
    """{unit/fdname: token} of the fd entries of a systemd LUO mapping."""
    m = json.loads(text)
    return {f"{unit}/{e['name']}": e.get("token")
            for unit, u in m.get("units", {}).items()
            for e in u.get("fdstore", []) if e.get("type") == "fd"}


def check_manifest(rep):
    """luoctl's reading of systemd's manifest against the JSON itself."""
    bad = []
    try:
        raw = json.loads(rep["text"])
        names = manifest_names(rep["text"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"manifest is not systemd's mapping: {e}"]
    if raw.get("version") != 1:
        bad.append(f"manifest version {raw.get('version')!r}, expected 1")
    want = {"lu-fdstore.service/ram", "lu-fdstore.service/state"}
    if set(names) != want or sorted(names.values()) != [1, 2]:
        bad.append(f"manifest entries {names}, expected {sorted(want)} at tokens 1 and 2")
    try:
        parsed = {e["name"]: e["token"] for e in rep.get("entries", [])}
    except (KeyError, TypeError) as e:
        return bad + [f"luoctl's entries are malformed: {e}"]
    if rep.get("format") != "Systemd" or parsed != names or rep.get("session") != "systemd":
        bad.append(f"luoctl read {rep.get('format')} {rep.get('session')} {parsed}, "
                   f"the manifest says {names}")
    return bad


def _run_one(arch, builds, progs, base, chain, peek, timeout):
    f1, f2 = chain
    name = f"{arch}-{f1}-{f2}-systemd" + ("-peek" if peek else "")
    wd = vm.RUNS / name
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    img = make_image(wd, base, builds[f2], progs, peek)
    accel = vm.pick_accel(arch, builds[f1], progs)
    cmdline = (vm.BASE_CMDLINE[arch]
               + " root=/dev/vda rw init=/usr/lib/systemd/systemd lu.client=1")
    cmd = vm.qemu_cmd(arch, accel, 2048, 2, builds[f1].image, None, cmdline,
                      ["-drive", f"file={img},format=raw,if=virtio"])
    log = wd / "serial.log"
    lines, reason, secs = vm._run_qemu(cmd, log, timeout)
    boots = split_boots(lines)
    bad, seen = check_run(boots, [builds[f1].ident, builds[f2].ident], peek)
    if reason == "timeout":
        bad.append(f"timed out after {secs:.0f} s")
    seen["seconds"] = secs
    if not bad:
        img.unlink(missing_ok=True)
    return bad, seen, log


def supported(arch):
    """Where the suite runs: both architectures (arm64's root filesystem is made
    under qemu-user on an x86_64 host)."""
    return arch in DEB_ARCH


def _label(chain):
    f1, f2 = chain
    return f1 if f1 == f2 else f"{f1}>{f2}"


def suite(arch, trees, tc, progs, chains, control=True, timeout=600):
    """client:systemd on the client builds: one Suite per chain, then the control run.

    A failure to build a kernel, the root filesystem or a disk fails the
    suites it concerns, named, and the rest of `lu test` goes on.
    """
    runs = [(c, False) for c in chains] + ([(("rust", "rust"), True)] if control else [])
    names = {False: "client:systemd", True: "client:systemd-control"}
    out = []

    def failed(chain, peek, why, log):
        return Suite(arch, _label(chain), names[peek], [Case("setup", FAIL, why)], log=str(log))

    # A flavor's failed build fails the runs that boot it, the root
    # filesystem all of them; any error is reported, none ends `lu test`.
    builds, broken = {}, {}
    for f in sorted({f for c, _ in runs for f in c}):
        try:
            builds[f] = kbuild.build_kernel(trees[f], arch, f, tc, variant="client")
        except Exception as e:  # noqa: BLE001 - reported as the suites' failure
            broken[f] = f"{f}-client kernel: {e}"
    try:
        base, meta = rootfs(arch)
        version = meta["versions"].get("systemd", "?")
    except Exception as e:  # noqa: BLE001
        return [failed(c, peek, f"root filesystem: {e}", LOGS) for c, peek in runs]
    for chain, peek in runs:
        t0 = time.monotonic()
        name = names[peek]
        why = [broken[f] for f in dict.fromkeys(chain) if f in broken]
        if why:
            out.append(failed(chain, peek, "\n".join(why), LOGS))
            continue
        try:
            bad, seen, log = _run_one(arch, builds, progs, base, chain, peek, timeout)
        except Exception as e:  # noqa: BLE001
            out.append(failed(chain, peek, f"{type(e).__name__}: {e}", vm.RUNS))
            continue
        s = Suite(arch, _label(chain), name, log=str(log))
        what = ("a session taken before systemd: the service gets nothing" if peek
                else "the fd store across systemctl kexec")
        s.cases = [Case(what, FAIL if bad else PASS, "\n".join(bad))]
        s.note = f"systemd {version}, seed {seen.get('seed')}, {seen.get('seconds', 0):.0f} s"
        if peek and seen.get("peek") and not bad:
            fx = FIXTURES / f"systemd-{systemd_major(version)}-manifest-{arch}.json"
            try:
                FIXTURES.mkdir(parents=True, exist_ok=True)
                fx.write_text(seen["peek"]["text"])
                s.note += f"; manifest: {fx}"
            except OSError as e:
                s.note += f"; manifest not saved: {e}"
        s.seconds = time.monotonic() - t0
        out.append(s)
    return out
