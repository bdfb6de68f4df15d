# SPDX-License-Identifier: GPL-2.0
"""Host packages, Debian's rust-src and bindgen: checked, installed, cached.

Everything here is idempotent: a second call finds what the first installed
and returns at once.
"""

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .common import CACHE, HarnessError, LOGS, info, run, stage

# From the machine's default (bookworm) sources.
APT_PACKAGES = [
    "clang-19", "lld-19", "llvm-19", "libclang-19-dev",
    "flex", "bison", "bc", "libelf-dev", "libssl-dev", "cpio", "dwarves",
    "make", "gcc", "libc6-dev", "xz-utils", "git", "rsync",
    # libfuzzer-sys builds libFuzzer (C++) for crate:kho-decode's fuzz smoke.
    "g++",
    # arm64: cross compiler and libc for the static test programs.
    "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross",
    # checkpatch.pl runs scripts/spdxcheck.py with Debian's python3.
    "python3-ply", "python3-git",
    # lu bench draws its plots with Debian's python3 and matplotlib.
    "python3-matplotlib",
]

# QEMU is installed apart from the rest (see qemu_plan()): these two and what
# they depend on, without recommends (no GUI, no firmware we do not boot).
QEMU_PACKAGES = ["qemu-system-x86", "qemu-system-arm"]
# The pinned QEMU: bookworm-backports builds for bookworm (no libc upgrade).
# Today's machine image ships qemu-utils of exactly this version.
QEMU_SUITE = "bookworm-backports"
QEMU_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
# Binary packages of these sources come from QEMU_SUITE when QEMU does:
# qemu-system-x86 10.0 needs seabios > 1.16.3-1~ (bookworm has 1.16.2).
QEMU_SUITE_SOURCES = ["seabios"]

BINDGEN_VERSION = "0.72.1"
LIBCLANG_PATH = "/usr/lib/llvm-19/lib"

# The pinned kernel source (Debian trixie-backports).
SOURCE_PKG = "linux-source-7.3"
SOURCE_VERSION = "7.3.4-1~bpo13+1"
SOURCE_SHA256 = "703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3"
# rust-src pins per rustc version we have checked; others are taken from the
# index by upstream version and reported.
RUST_SRC_PINS = {
    "1.95.0": ("1.95.0+dfsg1-2~bpo13+1",
               "7b76db5b880a77f9e52975d2baa6209d2f76d2c9c2789515c3088cb960e2c83b"),
}

APT_DIR = CACHE / "apt"
QEMU_APT_DIR = CACHE / "apt-qemu"
DEBS = CACHE / "debs"
SUITE = "trixie-backports"


def missing_packages(packages=APT_PACKAGES):
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n"] + packages,
        capture_output=True, text=True).stdout
    ok = {line.split()[0] for line in out.splitlines()
          if len(line.split()) > 1 and line.split()[1].startswith("ii")}
    return [p for p in packages if p not in ok]


def ensure_packages(packages=APT_PACKAGES):
    missing = missing_packages(packages)
    if not missing:
        ensure_qemu()
        return
    stage(f"installing host packages: {' '.join(missing)}")
    if os.geteuid() != 0:
        raise HarnessError(
            "missing packages: " + " ".join(missing) +
            "\n  install them with: sudo apt-get install " + " ".join(missing))
    log = LOGS / "apt-install.log"
    run(["apt-get", "update", "-q"], log=log)
    run(["apt-get", "install", "-y", "-q"] + missing,
        log=log, env={"DEBIAN_FRONTEND": "noninteractive"}, heartbeat="apt-get install")
    still = missing_packages(packages)
    if still:
        raise HarnessError(f"still missing after apt-get install: {still} (log {log})")
    ensure_qemu()


class QemuPlan:
    """Where the missing QEMU packages come from, and why.

    suite is None (nothing to install), "bookworm" (the system's own sources)
    or QEMU_SUITE (a private apt configuration); version is what every
    missing package is installed at.
    """

    def __init__(self, suite, version, packages, reason, pinned=True):
        self.suite = suite
        self.version = version
        self.packages = packages
        self.reason = reason
        self.pinned = pinned

    def __repr__(self):
        return (f"QemuPlan({self.suite!r}, {self.version!r}, {self.packages!r}, "
                f"pinned={self.pinned})")


def _suite_of(version):
    """The bookworm suite a Debian QEMU version was built for, or None."""
    if "~bpo12" in version:
        return QEMU_SUITE
    if "~bpo" in version:
        return None
    if re.search(r"\+deb12u\d+", version) or version.startswith("1:7.2+dfsg-7"):
        return "bookworm"
    return None


def qemu_plan(installed, served=None):
    """Decide where QEMU comes from, given what is installed.

    installed maps every installed binary package of source `qemu` (qemu-utils,
    qemu-system-*, qemu-block-extra, ...) to its version; served is the list
    of QEMU_SUITE's versions of qemu-system-x86 (None: not looked up yet).

    - Both QEMU_PACKAGES installed: nothing to do, whatever their version.
    - Nothing of QEMU installed: QEMU_SUITE at the pinned QEMU_VERSION, or, if
      that is no longer served, loudly its newest version.
    - Some QEMU piece installed: the missing packages at that piece's version,
      from the suite it was built for. A piece is never upgraded, downgraded
      or removed (bookworm's 7.2 cannot be installed beside a newer
      qemu-utils: it Breaks qemu-system-common << 8.0), and pieces of two
      source versions, or of a suite lu does not know, stop with what to do.
      Pieces of one source version may differ by a binNMU suffix (bookworm's
      arch-specific packages are "+b3", qemu-system-data is not): the missing
      (arch-specific) packages get the highest of them.
    """
    missing = [p for p in QEMU_PACKAGES if p not in installed]
    if not missing:
        return QemuPlan(None, None, [], "installed: " + _pieces(installed))
    sources = sorted({_source_version(v) for v in installed.values()})
    if not sources:
        if served is not None and QEMU_VERSION not in served:
            if not served:
                raise HarnessError(f"QEMU is not in {QEMU_SUITE} any more: install "
                                   f"{' '.join(missing)} by hand")
            newest = sorted(served, key=_debver_key)[-1]
            return QemuPlan(QEMU_SUITE, newest, missing,
                            f"no QEMU installed; the pinned {QEMU_VERSION} is no longer "
                            f"served by {QEMU_SUITE}", pinned=False)
        return QemuPlan(QEMU_SUITE, QEMU_VERSION, missing,
                        f"no QEMU installed: the pinned version from {QEMU_SUITE}")
    if len(sources) > 1:
        raise HarnessError(
            "installed QEMU packages have different versions (" + _pieces(installed) +
            "): install " + " ".join(missing) + " by hand at one of them")
    version = sorted(installed.values(), key=_debver_key)[-1]
    suite = _suite_of(version)
    if suite is None:
        raise HarnessError(
            f"installed QEMU ({_pieces(installed)}) comes from a suite lu does not know: "
            "install " + " ".join(missing) + f" by hand at {version}")
    if served is not None and version not in served:
        raise HarnessError(
            f"installed QEMU ({_pieces(installed)}) is no longer served by {suite}: "
            "install " + " ".join(missing) + f" by hand at {version}")
    return QemuPlan(suite, version, missing,
                    f"the installed {_pieces(installed)} come from {suite}",
                    pinned=version == QEMU_VERSION)


def _source_version(version):
    """A binary package's version without its binNMU suffix ("+b3")."""
    return re.sub(r"\+b\d+$", "", version)


def _pieces(installed):
    return ", ".join(f"{p} {v}" for p, v in sorted(installed.items()))


def installed_qemu(dpkg_output=None):
    """Every installed binary package built from source qemu, with its version.

    A package counts when dpkg says it is installed (`ii`, or held: `hi`); one
    half-installed or half-configured stops lu, which would otherwise pick a
    version for it.
    """
    if dpkg_output is None:
        dpkg_output = subprocess.run(
            ["dpkg-query", "-W",
             "-f=${Package} ${Version} ${source:Package} ${db:Status-Abbrev}\n"],
            capture_output=True, text=True).stdout
    found, broken = {}, []
    for line in dpkg_output.splitlines():
        f = line.split()
        if len(f) < 4 or f[2] != "qemu":
            continue
        if f[3][1:2] == "i":
            found[f[0]] = f[1]
        elif f[3][1:2] in ("U", "F", "H", "W", "t"):
            broken.append(f"{f[0]} ({f[3]})")
    if broken:
        raise HarnessError("QEMU packages are half-installed: " + ", ".join(broken) +
                           "; run dpkg --configure -a (as root) first")
    return found


def _qemu_apt_opts():
    """A private apt configuration: the system's sources plus QEMU_SUITE.

    The system's source files are linked, not copied or edited; lists, cache
    and preferences are our own, so the system's apt never sees QEMU_SUITE.
    """
    return [
        "-o", f"Dir::Etc::sourceparts={QEMU_APT_DIR}/sources.list.d",
        "-o", f"Dir::Etc::preferencesparts={QEMU_APT_DIR}/preferences.d",
        "-o", f"Dir::State::Lists={QEMU_APT_DIR}/lists",
        "-o", f"Dir::Cache={QEMU_APT_DIR}/cache",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root",
    ]


def qemu_preferences(plan):
    """The private preferences: QEMU at the plan's version (binNMU suffixes
    included), and for QEMU_SUITE its firmware from QEMU_SUITE.

    Priority 990 (< 1000) never downgrades an installed package.
    """
    text = (f"Package: src:qemu\nPin: version {_source_version(plan.version)}*\n"
            "Pin-Priority: 990\n")
    if plan.suite == QEMU_SUITE:
        for src in QEMU_SUITE_SOURCES:
            text += (f"\nPackage: src:{src}\nPin: release n={QEMU_SUITE}\n"
                     "Pin-Priority: 990\n")
    return text


def _qemu_apt_setup():
    for d in ("sources.list.d", "preferences.d", "lists/partial",
              "cache/archives/partial"):
        (QEMU_APT_DIR / d).mkdir(parents=True, exist_ok=True)
    parts = QEMU_APT_DIR / "sources.list.d"
    for old in parts.iterdir():
        old.unlink()
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if f.suffix in (".list", ".sources"):
            (parts / f.name).symlink_to(f)
    (parts / "lu-qemu.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\n"
        f"Suites: {QEMU_SUITE}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    run(["apt-get"] + _qemu_apt_opts() + ["update", "-q"], log=LOGS / "apt-qemu.log")


def ensure_qemu():
    """Install QEMU_PACKAGES from where qemu_plan() says; nothing if present."""
    installed = installed_qemu()
    plan = qemu_plan(installed)
    if plan.suite is None:
        return plan
    if os.geteuid() != 0:
        raise HarnessError(
            f"missing packages: {' '.join(plan.packages)} ({plan.reason}); install "
            f"them at {plan.version} from {plan.suite}")
    log = LOGS / "apt-qemu.log"
    # The private configuration for either suite: fresh lists, and the
    # version pin that keeps every QEMU piece at one version.
    _qemu_apt_setup()
    opts = _qemu_apt_opts()
    plan = qemu_plan(installed, _versions(opts, "qemu-system-x86", plan.suite))
    (QEMU_APT_DIR / "preferences.d" / "lu-qemu.pref").write_text(qemu_preferences(plan))
    if not plan.pinned and plan.suite == QEMU_SUITE:
        banner = "!" * 72
        print(f"{banner}\n!! QEMU {plan.version} from {plan.suite} ({plan.reason}),\n"
              f"!! not the pinned {QEMU_VERSION}: timings are not comparable.\n{banner}",
              flush=True)
    stage(f"installing QEMU {plan.version} from {plan.suite}: {' '.join(plan.packages)} "
          f"({plan.reason})")
    run(["apt-get"] + opts + ["install", "-y", "-q", "--no-install-recommends", "--no-remove"]
        + [f"{p}={plan.version}" for p in plan.packages],
        log=log, env={"DEBIAN_FRONTEND": "noninteractive"}, heartbeat="apt-get install qemu")
    after = installed_qemu()
    changed = [p for p, v in installed.items() if after.get(p) != v]
    still = [p for p in plan.packages if after.get(p) != plan.version]
    if changed or still:
        raise HarnessError(f"QEMU install went wrong (changed {changed}, missing {still}); "
                           f"log {log}")
    return plan


def _versions(opts, pkg, suite):
    """The versions of pkg that suite (or, for "bookworm", its updates and
    security suites) serves, as the given apt configuration sees it."""
    p = run(["apt-cache"] + opts + ["madison", pkg])
    return [f[1].strip() for f in (line.split("|") for line in p.stdout.splitlines())
            if len(f) > 2 and re.search(rf" {re.escape(suite)}(-updates|-security)?/", f[2])]


def _apt_opts():
    return [
        "-o", "Dir::Etc::sourcelist=/dev/null",
        "-o", f"Dir::Etc::sourceparts={APT_DIR}/sources.list.d",
        "-o", f"Dir::Etc::preferencesparts={APT_DIR}/preferences.d",
        "-o", f"Dir::State::Lists={APT_DIR}/lists",
        "-o", f"Dir::Cache={APT_DIR}/cache",
        "-o", "APT::Architectures::=amd64",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root",
    ]


def _private_apt_update():
    """A private apt configuration for trixie-backports.

    It has its own sources, lists and cache directories; the system's sources
    are never touched and nothing from it is installed: we only
    `apt-get download` arch-all packages and unpack them with `dpkg -x`.
    The suite's binary-amd64 index lists its arch-all packages too
    (No-Support-for-Architecture-all), so binary-all is not fetched.
    """
    for d in ("sources.list.d", "preferences.d", "lists/partial",
              "cache/archives/partial"):
        (APT_DIR / d).mkdir(parents=True, exist_ok=True)
    (APT_DIR / "sources.list.d" / "lu.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\n"
        f"Suites: {SUITE}\nComponents: main\nArchitectures: amd64\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    stamp = APT_DIR / "updated"
    if stamp.exists():
        return
    run(["apt-get"] + _apt_opts() + ["update", "-q"], log=LOGS / "apt-private.log")
    stamp.touch()


def _madison(pkg):
    p = run(["apt-cache"] + _apt_opts() + ["madison", pkg], check=False)
    return [line.split("|")[1].strip() for line in p.stdout.splitlines() if "|" in line]


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_deb(pkg, version, sha256=None):
    """apt-get download pkg=version into the cache; check its sha256."""
    DEBS.mkdir(parents=True, exist_ok=True)
    name = f"{pkg}_{version.replace(':', '%3a')}_all.deb"
    deb = DEBS / name
    if not deb.exists():
        _private_apt_update()
        if version not in _madison(pkg):
            # The lists may be stale: refresh once.
            (APT_DIR / "updated").unlink(missing_ok=True)
            _private_apt_update()
        run(["apt-get"] + _apt_opts() + ["download", f"{pkg}={version}"],
            cwd=DEBS, log=LOGS / "apt-private.log")
    if sha256 and _sha256(deb) != sha256:
        deb.unlink()
        raise HarnessError(f"{name}: sha256 mismatch (expected {sha256}); deleted, try again")
    return deb


def resolve_source_version():
    """The pinned version, or loudly the newest 7.3.x if it is gone."""
    if (DEBS / f"{SOURCE_PKG}_{SOURCE_VERSION}_all.deb").exists():
        return SOURCE_VERSION, SOURCE_SHA256
    _private_apt_update()
    versions = _madison(SOURCE_PKG)
    if SOURCE_VERSION in versions:
        return SOURCE_VERSION, SOURCE_SHA256
    if not versions:
        raise HarnessError(f"{SOURCE_PKG} is not in {SUITE} any more")
    newest = sorted(versions, key=_debver_key)[-1]
    banner = "!" * 72
    print(f"{banner}\n!! {SOURCE_PKG} {SOURCE_VERSION} is no longer served; using {newest}.\n"
          f"!! Every patch must still apply; results are NOT for the pinned tree.\n{banner}",
          flush=True)
    return newest, None


def _debver_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def rustc_version():
    out = run(["rustc", "--version"]).stdout
    m = re.match(r"rustc (\d+\.\d+\.\d+)", out)
    if not m:
        raise HarnessError(f"cannot parse rustc --version: {out!r}")
    return m.group(1)


def ensure_rust_src():
    """Debian's rust-src of exactly rustc's version; returns RUST_LIB_SRC."""
    ver = rustc_version()
    dest = CACHE / "rust-src" / ver
    lib = dest / "usr" / "src" / f"rustc-{ver}" / "library"
    if (dest / ".done").exists() and lib.is_dir():
        return lib
    if ver in RUST_SRC_PINS:
        debver, sha = RUST_SRC_PINS[ver]
    else:
        _private_apt_update()
        cands = [v for v in _madison("rust-src") if v.startswith(ver + "+")]
        if not cands:
            raise HarnessError(f"no Debian rust-src for rustc {ver} in {SUITE}")
        debver, sha = sorted(cands, key=_debver_key)[-1], None
        info(f"rust-src {debver} (not pinned; rustc {ver})")
    stage(f"fetching Debian rust-src {debver}")
    deb = fetch_deb("rust-src", debver, sha)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    run(["dpkg", "-x", deb, dest])
    if not lib.is_dir():
        raise HarnessError(f"rust-src unpacked but {lib} is missing")
    (dest / ".done").touch()
    return lib


def ensure_bindgen():
    root = CACHE / "cargo"
    exe = root / "bin" / "bindgen"
    if exe.exists():
        out = run([exe, "--version"], check=False).stdout
        if BINDGEN_VERSION in out:
            return exe
    stage(f"installing bindgen-cli {BINDGEN_VERSION} (cargo install)")
    run(["cargo", "install", "--locked", "--root", root,
         f"bindgen-cli@{BINDGEN_VERSION}"], log=LOGS / "bindgen-install.log",
        env={"LIBCLANG_PATH": LIBCLANG_PATH}, heartbeat="cargo install bindgen-cli")
    return exe


class Toolchain:
    """What a Rust-enabled kernel build needs, ready to pass to make."""

    def __init__(self, rust_lib_src, bindgen):
        self.rust_lib_src = rust_lib_src
        self.bindgen = bindgen

    def make_vars(self):
        return [f"RUST_LIB_SRC={self.rust_lib_src}", f"BINDGEN={self.bindgen}"]

    def env(self):
        return {"LIBCLANG_PATH": LIBCLANG_PATH}


def ensure_rust_tools():
    for tool in ("rustc", "cargo", "rustfmt", "clippy-driver"):
        if not shutil.which(tool):
            raise HarnessError(
                f"{tool} not found: install Rust with rustup and add the "
                "rustfmt and clippy components")


def ensure_all():
    stage("checking the toolchain")
    ensure_packages()
    ensure_rust_tools()
    tc = Toolchain(ensure_rust_src(), ensure_bindgen())
    return tc
