# SPDX-License-Identifier: GPL-2.0
"""The pristine 7.3 tree, our overlay on top of it, and the patch series.

The pristine tree is unpacked from Debian's linux-source package and made a
git repository whose single commit is the base.  The `rust` flavor builds in
a git worktree of that repository, checked out at a commit that the harness
makes from the base plus this repository's kernel-path files and patches/:

  patches/series   one entry per commit of the series, in order:
                     patch FILE          a `git format-patch` mail in patches/
                                         (glue lines in upstream files)
                     files MSGFILE PATH... [GLUE.patch...]
                                         this repository's files under the
                                         PATHs, plus plain diffs (patches/GLUE.patch)
                                         of glue lines in upstream files, as one
                                         commit with the message in patches/MSGFILE
                   both ENTRY            an entry of either kind that the `c`
                                         flavor's tree carries too

The `c` flavor builds upstream's C live update: the pristine tree, or, if
entries are marked `both`, a worktree at the base plus those entries only.
They are tests that need to be built into the kernel on both flavors (an
in-kernel test that runs on each kernel of a cross-flavor chain); nothing of
the Rust rewrite goes into `c`.  Their glue is the tests' Kconfig and
Makefile lines, and for the KHO benchmark (lib/test_kho_bench.c) the cycle
counter reads around the KHO boot calls in mm/mm_init.c; a unit test
(SeriesTest.test_c_tree_glue_is_test_glue) keeps it to that.

Commits are made with fixed dates from the index only, so the same inputs give
the same commit id, and `git checkout` rewrites only files whose content
changed: make stays incremental.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

from . import toolchain
from .common import CACHE, HarnessError, LOGS, REPO, info, run, stage

SRC = CACHE / "src"
PRISTINE = SRC / "linux-source-7.3"
WORKTREES = CACHE / "trees"
PATCHES = REPO / "patches"
SERIES = PATCHES / "series"

# Top-level entries of a kernel tree: files of this repository under these are
# kernel files and form the overlay.
KERNEL_ROOTS = (
    "Documentation", "MAINTAINERS", "arch", "block", "drivers", "fs", "include",
    "init", "kernel", "lib", "mm", "rust", "samples", "scripts", "security",
    "tools", "usr", "virt",
)

GIT_ID = {
    "GIT_AUTHOR_NAME": "Live Update harness", "GIT_AUTHOR_EMAIL": "lu@localhost",
    "GIT_COMMITTER_NAME": "Live Update harness", "GIT_COMMITTER_EMAIL": "lu@localhost",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(repo, *args, env=None, check=True, input=None):
    e = dict(GIT_ID)
    if env:
        e.update(env)
    return run(["git", "-C", repo, "-c", "core.autocrlf=false",
                "-c", "gc.auto=0"] + list(args), env=e, check=check, input=input)


def ensure_pristine():
    """Unpack the pinned source once and make it a git repo; return base commit."""
    version, sha = toolchain.resolve_source_version()
    stamp = SRC / "linux-source-7.3.version"
    if not (stamp.exists() and stamp.read_text().strip() == version
            and (PRISTINE / "Makefile").exists()):
        stage(f"fetching {toolchain.SOURCE_PKG} {version}")
        deb = toolchain.fetch_deb(toolchain.SOURCE_PKG, version, sha)
        stage("unpacking the kernel source (dpkg -x, tar)")
        stamp.unlink(missing_ok=True)
        shutil.rmtree(PRISTINE, ignore_errors=True)
        shutil.rmtree(WORKTREES, ignore_errors=True)
        unpack = SRC / "deb"
        shutil.rmtree(unpack, ignore_errors=True)
        unpack.mkdir(parents=True)
        run(["dpkg", "-x", deb, unpack])
        tars = list((unpack / "usr" / "src").glob("linux-source-7.3.tar.*"))
        if len(tars) != 1:
            raise HarnessError(f"unexpected package content: {tars}")
        run(["tar", "-C", SRC, "-xf", tars[0]])
        shutil.rmtree(unpack)
        stamp.write_text(version + "\n")
    if git(PRISTINE, "rev-parse", "-q", "--verify", "base^{commit}",
           check=False).returncode != 0:
        stage("recording the pristine tree as the base commit (git)")
        shutil.rmtree(PRISTINE / ".git", ignore_errors=True)
        run(["git", "init", "-q", "-b", "pristine", PRISTINE])
        run(["git", "-C", PRISTINE, "add", "-A", "-f", "."], log=LOGS / "git-base.log",
            heartbeat="git add of the pristine tree")
        git(PRISTINE, "commit", "-q", "-m",
            f"Linux {version} (Debian {toolchain.SOURCE_PKG})")
        git(PRISTINE, "tag", "-f", "base")
    return git(PRISTINE, "rev-parse", "base^{commit}").stdout.strip()


def kernel_files():
    """This repository's tracked files that belong to the kernel tree."""
    out = run(["git", "-C", REPO, "ls-files", "-z", "--"] + list(KERNEL_ROOTS)).stdout
    files = [f for f in out.split("\0") if f]
    # Files deleted in the work tree but not yet in git are not overlaid.
    return sorted(f for f in files if (REPO / f).exists())


def our_rust_files():
    """Rust files of the series: ours, and upstream ones our patches touch."""
    files = {f for f in kernel_files() if f.endswith(".rs")}
    for p in PATCHES.glob("*.patch"):
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("+++ b/") and line.endswith(".rs"):
                files.add(line[6:])
    return sorted(files)


def parse_series_flavors(text):
    """Parse patches/series: [(in_c, entry)], in_c for entries marked `both`.

    entry: ("patch", file) / ("files", msg, [paths], [glue]).
    """
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        in_c = words[0] == "both"
        if in_c:
            words = words[1:]
        if words and words[0] == "patch" and len(words) == 2:
            entries.append((in_c, ("patch", words[1])))
        elif words and words[0] == "files" and len(words) >= 3:
            glue = [w for w in words[2:] if w.endswith(".patch")]
            paths = [w for w in words[2:] if not w.endswith(".patch")]
            if not paths:
                raise HarnessError(f"patches/series:{n}: files entry without a path")
            entries.append((in_c, ("files", words[1], paths, glue)))
        else:
            raise HarnessError(f"patches/series:{n}: cannot parse {line!r}")
    return entries


def parse_series(text, flavor="rust"):
    """The entries of patches/series in a flavor's tree (rust: all, c: `both` ones)."""
    return [e for in_c, e in parse_series_flavors(text) if flavor == "rust" or in_c]


def assign_files(entries, files):
    """Map each series 'files' entry to its files; every file exactly once."""
    groups = []
    claimed = {}
    for e in entries:
        if e[0] != "files":
            continue
        mine = []
        for f in files:
            if any(f == p or f.startswith(p.rstrip("/") + "/") for p in e[2]):
                if f in claimed:
                    raise HarnessError(f"{f} is claimed by two series entries "
                                       f"({claimed[f]} and {e[1]})")
                claimed[f] = e[1]
                mine.append(f)
        if not mine:
            raise HarnessError(f"series entry {e[1]} matches no file")
        groups.append(mine)
    orphans = [f for f in files if f not in claimed]
    if orphans:
        raise HarnessError("kernel files not in any patches/series entry: " + ", ".join(orphans))
    return groups


def _mailinfo(patch):
    """Split a format-patch mail into (message, author env, diff)."""
    tmp = CACHE / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    msg, diff = tmp / "msg", tmp / "diff"
    with open(patch, "rb") as f:
        p = subprocess.run(["git", "mailinfo", str(msg), str(diff)],
                           stdin=f, capture_output=True, check=True)
    head = dict(line.split(": ", 1) for line in p.stdout.decode().splitlines() if ": " in line)
    body = msg.read_text()
    message = head.get("Subject", "").strip() + "\n\n" + body
    author = {}
    if head.get("Author"):
        author["GIT_AUTHOR_NAME"] = head["Author"]
    if head.get("Email"):
        author["GIT_AUTHOR_EMAIL"] = head["Email"]
    return message, author, diff


def make_series_commit(base, flavor="rust"):
    """Build a flavor's series on top of base in a private index; return the tip.

    rust: every entry; c: the entries marked `both` (the tip is base if none).
    """
    tagged = parse_series_flavors(SERIES.read_text()) if SERIES.exists() else []
    files = kernel_files()
    # Files are claimed over the whole series, whichever entries a flavor takes.
    groups = iter(assign_files([e for _, e in tagged], files))
    index = CACHE / "tmp" / f"series-{flavor}.index"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(index)}
    git(PRISTINE, "read-tree", base, env=env)
    tip = base
    for in_c, e in tagged:
        mine = next(groups) if e[0] == "files" else []
        if flavor == "c" and not in_c:
            continue
        if e[0] == "patch":
            message, author, diff = _mailinfo(PATCHES / e[1])
            p = git(PRISTINE, "apply", "--cached", "--whitespace=nowarn", diff,
                    env=env, check=False)
            if p.returncode != 0:
                raise HarnessError(f"patches/{e[1]} does not apply:\n{p.stderr}")
        else:
            message, author = (PATCHES / e[1]).read_text(), {}
            for g in e[3]:
                p = git(PRISTINE, "apply", "--cached", PATCHES / g, env=env, check=False)
                if p.returncode != 0:
                    raise HarnessError(f"patches/{g} does not apply"
                                       f"{' to the c tree' if flavor == 'c' else ''}:\n"
                                       f"{p.stderr}")
            for f in mine:
                blob = git(PRISTINE, "hash-object", "-w", "--no-filters",
                           REPO / f).stdout.strip()
                mode = "100755" if os.access(REPO / f, os.X_OK) else "100644"
                git(PRISTINE, "update-index", "--add", "--cacheinfo",
                    f"{mode},{blob},{f}", env=env)
        tree = git(PRISTINE, "write-tree", env=env).stdout.strip()
        e2 = dict(env)
        e2.update(author)
        tip = git(PRISTINE, "commit-tree", tree, "-p", tip, "-F", "-", env=e2,
                  input=message).stdout.strip()
    return tip


def ensure_worktree(name, commit):
    """A worktree of the pristine repo at commit; only changed files rewritten."""
    wt = WORKTREES / name
    if not (wt / ".git").exists():
        stage(f"creating the {name} source tree (git worktree)")
        shutil.rmtree(wt, ignore_errors=True)
        git(PRISTINE, "worktree", "prune")
        WORKTREES.mkdir(parents=True, exist_ok=True)
        git(PRISTINE, "worktree", "add", "-q", "-f", "--detach", wt, commit)
        return wt
    head = git(wt, "rev-parse", "HEAD").stdout.strip()
    if head != commit:
        git(wt, "checkout", "-q", "-f", "--detach", commit)
    dirty = git(wt, "status", "--porcelain", "--untracked-files=no").stdout
    if dirty.strip():
        info(f"{wt} had local changes; restoring")
        git(wt, "checkout", "-q", "-f", "--detach", commit)
    return wt


def prepare_trees():
    """Return {flavor: source tree} with the rust tree at our series.

    The c tree is the pristine one, or a worktree at the base plus the
    series entries marked `both` if there are any.
    """
    base = ensure_pristine()
    tip = make_series_commit(base)
    c_tip = make_series_commit(base, "c")
    c_tree = PRISTINE if c_tip == base else ensure_worktree("c", c_tip)
    return {"c": c_tree, "rust": ensure_worktree("rust", tip)}, base, tip


def export_series(base, tip, outdir):
    """git format-patch base..tip into outdir; return the patch files."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    if base == tip:
        return []
    git(PRISTINE, "format-patch", "-q", "--no-signature", "-o", outdir,
        f"{base}..{tip}")
    return sorted(outdir.glob("*.patch"))


def check_series_applies(base, tip, patches):
    """Apply the exported mails to base in a private index; compare with tip."""
    index = CACHE / "tmp" / "amcheck.index"
    index.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(index)}
    git(PRISTINE, "read-tree", base, env=env)
    for p in patches:
        _, _, diff = _mailinfo(p)
        r = git(PRISTINE, "apply", "--cached", diff, env=env, check=False)
        if r.returncode != 0:
            raise HarnessError(f"{p.name} does not apply on the pristine tree:\n{r.stderr}")
    got = git(PRISTINE, "write-tree", env=env).stdout.strip()
    want = git(PRISTINE, "rev-parse", f"{tip}^{{tree}}").stdout.strip()
    return got == want


_CP_TOTAL = re.compile(r"total: (\d+) errors, (\d+) warnings, (\d+) checks")


def checkpatch(tree, patches, log):
    """scripts/checkpatch.pl --strict on each patch; return (errors, warnings, checks)."""
    totals = [0, 0, 0]
    for p in patches:
        # spdxcheck.py (called by checkpatch) is run with Debian's python3,
        # which has python3-ply and python3-git, whatever python3 is first in PATH.
        run([tree / "scripts" / "checkpatch.pl", "--strict", p], cwd=tree,
            log=log, check=False,
            env={"PATH": "/usr/bin:" + os.environ.get("PATH", "")})
    text = Path(log).read_text() if Path(log).exists() else ""
    for m in _CP_TOTAL.finditer(text):
        for i in range(3):
            totals[i] += int(m.group(i + 1))
    # A helper of checkpatch (spdxcheck.py) that crashes checks nothing.
    totals[0] += text.count("Traceback (most recent call last)")
    if len(_CP_TOTAL.findall(text)) != len(patches):
        totals[0] += 1
    return tuple(totals)


def series_command(outdir=None):
    toolchain.ensure_packages()
    trees, base, tip = prepare_trees()
    outdir = Path(outdir) if outdir else CACHE / "series"
    patches = export_series(base, tip, outdir)
    stage(f"series: {len(patches)} patch(es) in {outdir}")
    for p in patches:
        info(p.name)
    if patches and not check_series_applies(base, tip, patches):
        raise HarnessError("the exported series does not reproduce the rust tree")
    log = LOGS / "checkpatch.log"
    log.unlink(missing_ok=True)
    errors, warnings, checks = checkpatch(trees["rust"], patches, log)
    stage(f"checkpatch --strict: {errors} errors, {warnings} warnings, {checks} checks"
          f" (log {log})")
    return patches, errors, base, tip
