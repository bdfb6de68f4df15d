# SPDX-License-Identifier: GPL-2.0
"""`lu`: the front door of the Live Update harness."""

import argparse
import fcntl
import re
import fnmatch
import sys
import time

from . import bisect as kbisect
from . import build as kbuild
from . import bench, client, crate, ktap, races, reliability, suites, survive, toolchain, tree, vm
from . import fuzz as kfuzz
from .common import ARCHES, CACHE, FLAVORS, LOGS, REPO, HarnessError, info, stage

DEMO_SIZE_MIB = 1024
SOAK_STAGES, SOAK_SIZE_MIB, SOAK_SPARSE_MIB = 20, 1024, 4096

# The debug pass of a default `lu test` (CI): one architecture, the rust
# flavor, these suites (chosen to fit CI's budget; `lu test --debug` runs
# every VM suite on both debug flavors).
DEBUG_DEFAULT_ARCH = "x86_64"
DEBUG_DEFAULT = ("kselftest:*", "kexec:luo_kexec_simple", "kexec:luo_memfd", "kexec:luo_module",
                 "reliability:*")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="lu",
        description="Build, boot and test Linux 7.3 with the Rust Live Update "
                    "Orchestrator (flavor 'rust') beside upstream's C one (flavor 'c').")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def arch_opt(sp):
        sp.add_argument("--arch", choices=ARCHES, default="x86_64",
                        help="target architecture (default: %(default)s)")

    d = sub.add_parser("demo", help="live-update a VM holding a 1 GiB memfd and verify it")
    arch_opt(d)
    d.add_argument("--flavor", choices=FLAVORS, default="rust",
                   help="kernel to run (default: %(default)s)")
    d.add_argument("--size", type=int, default=DEMO_SIZE_MIB, metavar="MIB",
                   help="memfd size in MiB (default: %(default)s)")
    d.add_argument("--vm", action="store_true",
                   help="a running KVM guest survives the update instead (lu-vmm; with "
                        "--flavor, the kernel before the kexec, then the rust one)")

    t = sub.add_parser("test", help="everything CI runs; ends with 'N passed, N failed'")
    t.add_argument("--arch", choices=ARCHES + ("all",), default="all",
                   help="target architecture(s) (default: %(default)s)")
    t.add_argument("--flavor", choices=FLAVORS + ("all",), default="all")
    t.add_argument("-k", "--suite", action="append", default=[], metavar="GLOB",
                   help="only suites whose name matches GLOB (e.g. 'kexec:*'); repeatable")
    t.add_argument("--list", action="store_true", help="list the suites and exit")
    t.add_argument("--debug", action="store_true",
                   help="run the VM suites on the debug builds (c-debug, rust-debug: KASAN, "
                        "lockdep, kmemleak, UBSAN, fault injection) instead; without it and "
                        "without -k, a default run ends with DEBUG_DEFAULT on "
                        f"{DEBUG_DEFAULT_ARCH}/rust-debug")

    b = sub.add_parser("build", help="build a flavor and print the path of its kernel image")
    arch_opt(b)
    b.add_argument("flavor", choices=FLAVORS + ("all",), nargs="?", default="all")
    b.add_argument("--debug", action="store_true",
                   help="the debug build of the flavor(s) (harness/config/debug.config)")

    bn = sub.add_parser("bench", help="benchmark both flavors side by side: table and plots")
    arch_opt(bn)
    bn.add_argument("--reps", type=int, default=3, help="repetitions per figure (default 3)")
    bn.add_argument("--sizes", default="1,4", help="memfd totals in GiB (default: 1,4)")
    bn.add_argument("--bench", default="blackout,throughput,scale,memory",
                    help="comma-separated subset of blackout,throughput,scale,memory,kho,"
                         "iommufd,parallel (default: all but kho, iommufd and parallel)")
    bn.add_argument("--kho-mib", type=int, default=4096, metavar="MIB",
                    help="--bench kho: MiB of folios preserved (default: %(default)s)")
    bn.add_argument("--icount", action="store_true",
                    help="one vCPU under TCG with -icount shift=0: guest times are "
                         "instruction counts (deterministic); no blackout, no parallel")
    bn.add_argument("--smoke", action="store_true",
                    help="tiny configuration (16 MiB, 50 sessions, kho 64 MiB, 1 repetition) "
                         "to check the bench")
    bn.add_argument("-o", "--output", metavar="DIR",
                    help=f"report directory (default: {CACHE}/bench/<date>)")
    bn.add_argument("--publish", action="store_true",
                    help="also copy the report and plots to bench/ in the repository")

    so = sub.add_parser("soak", help="a long chain of live updates carrying a big, a sparse "
                                     "and many small memfds, every byte verified at each stage")
    arch_opt(so)
    so.add_argument("--stages", type=int, default=SOAK_STAGES,
                    help="kernels in the chain (default: %(default)s)")
    so.add_argument("--flavor", choices=FLAVORS + ("alternate",), default="rust",
                    help="kernel of every stage, or 'alternate' (rust, c, rust, ...) "
                         "(default: %(default)s)")
    so.add_argument("--debug", action="store_true",
                    help="the debug builds (KASAN, lockdep, kmemleak); any checker line fails")
    so.add_argument("--size-mib", type=int, default=SOAK_SIZE_MIB, metavar="M",
                    help="the big memfd, every page written (default: %(default)s)")
    so.add_argument("--sparse-mib", type=int, default=SOAK_SPARSE_MIB, metavar="M",
                    help="the sparse memfd, one page in 512 written (default: %(default)s)")

    s = sub.add_parser("series", help="export our change as a patch series and checkpatch it")
    s.add_argument("-o", "--output", metavar="DIR",
                   help=f"where to write the patches (default: {CACHE}/series)")
    s.add_argument("--bisect", action="store_true",
                   help="also build the rust flavor after every patch, in order, in one "
                        "incremental build directory; report each patch's result and time "
                        "(25 min for the whole series with a warm build directory)")
    s.add_argument("--bisect-range", metavar="A..B",
                   help="with --bisect (implied): only patches A to B (from 1; A.., ..B, N)")
    s.add_argument("--arch", choices=ARCHES, default="x86_64",
                   help="--bisect: target architecture (default: %(default)s)")

    fz = sub.add_parser("fuzz", help="the LUO ioctl fuzzer lu-fuzz, in chunks of VM runs "
                                      "(seed S, S+1, ...); totals of calls, errors, splats")
    arch_opt(fz)
    fz.add_argument("--flavor", choices=FLAVORS, default="rust",
                    help="kernel to fuzz (default: %(default)s)")
    fz.add_argument("--calls", type=int, default=1000000,
                    help="calls in all (default: %(default)s)")
    fz.add_argument("--chunk", type=int, default=kfuzz.CHUNK_CALLS, metavar="N",
                    help="calls per VM run (default: %(default)s)")
    fz.add_argument("--seed", type=int, default=1, help="seed of the first chunk (default 1)")
    fz.add_argument("--debug", action=argparse.BooleanOptionalAction, default=True,
                    help="the debug build of the flavor (default; --no-debug: the regular one)")

    sub.add_parser("setup", help="install the toolchain and fetch the kernel source only")
    c = sub.add_parser("clean", help="remove build directories (keeps downloads)")
    arch_opt(c)
    return p.parse_args(argv)


def _flavors(arg):
    return list(FLAVORS) if arg == "all" else [arg]


def _prepare(arch, flavors, debug=False):
    tc = toolchain.ensure_all()
    trees, base, tip = tree.prepare_trees()
    builds = {}
    for f in flavors:
        builds[f] = kbuild.build_kernel(trees[f], arch, f, tc, debug)
    progs = kbuild.user_programs(tree.PRISTINE, arch)
    if crate.supported(arch):
        progs.update(crate.build_static(trees["rust"], arch, tc))
    return tc, trees, builds, progs


def cmd_build(args):
    _, _, builds, _ = _prepare(args.arch, _flavors(args.flavor), args.debug)
    for f, b in builds.items():
        print(f"{f}: {b.image}")
    return 0


# kselftest-harness binaries run as single-stage suites: upstream's, then ours.
KSELFTESTS = ("liveupdate",) + tuple(kbuild.OUR_KSELFTESTS)

# Two-stage kexec tests also run across flavors (c>rust, rust>c): upstream's
# two, then ours, then the in-kernel reserve_mem= test.
CROSS_TESTS = (("luo_kexec_simple", "luo_multi_session") + tuple(kbuild.OUR_KEXEC_TESTS)
               + ("reserve_mem",))

# Suites that run on the host only: selecting only these builds no kernel.
# kconfig:<arch> runs Kconfig alone on the rust tree, for that architecture.
HOST_SUITES = ("harness-unit", "series", "crate:cargo-test", "crate:lint", "crate:kho-decode") \
    + tuple(f"kconfig:{a}" for a in ARCHES)

SUITE_NAMES = (
    list(HOST_SUITES)
    + [f"kselftest:{t}" for t in KSELFTESTS]
    + [f"kexec:{t}" for t in kbuild.KEXEC_TESTS + tuple(kbuild.OUR_KEXEC_TESTS)]
    + ["kexec:reserve_mem", "kexec:fd_query", "kexec:luo_module"]
    + ["inkernel:test_kho", "inkernel:liveupdate_test", "kunit", "rustfmtcheck", "clippy",
       "rustdoc", "c-core-gone"]
    + [f"cross:{t}" for t in CROSS_TESTS]
    + ["crate:device", "crate:luoctl-kexec", "crate:example-kexec", "bench:smoke",
       "bench:kho-smoke"]
    + ["client:systemd", "client:systemd-control", "vm:survives"]
    + list(reliability.SUITES)
    + [f"corrupt:{n}" for n in sorted(suites.CORRUPT_CASES)]
    + [f"corrupt:kho-{n}" for n in sorted(suites.KHO_CORRUPT_CASES)]
)


def _wanted(name, globs):
    return not globs or any(fnmatch.fnmatch(name, g) for g in globs)


# Suites of run_arch that check the source or the build, not a VM: the
# debug pass skips them (they ran on the regular builds).
NOT_VM = ("rustfmtcheck", "clippy", "rustdoc", "c-core-gone", "bench:*",
          # client:systemd and vm:survives boot their own builds (<flavor>-client),
          # not debug ones.
          "client:*", "vm:*")


def _debug_label(flavor):
    """'rust' -> 'rust-debug', 'c>rust' -> 'c-debug>rust-debug'."""
    return ">".join(f"{f}-debug" if f in FLAVORS else f for f in flavor.split(">"))


def run_arch(arch, flavors, build_flavors, cross, globs, add, debug=False):
    if debug:
        # The same suites on the debug builds, reported as <flavor>-debug.
        plain_add = add

        def add(s):
            for x in s if isinstance(s, list) else [s]:
                if x.arch != "host":
                    x.flavor = _debug_label(x.flavor)
                plain_add(x)

        inner = globs

        def wanted_vm(name):
            return _wanted(name, inner) and not any(fnmatch.fnmatch(name, g) for g in NOT_VM)
    else:
        def wanted_vm(name):
            return _wanted(name, globs)
    # client:* and vm:* boot kernels of their own: selecting only them builds no regular
    # kernel.
    regular = any(wanted_vm(n) for n in SUITE_NAMES
                  if n not in HOST_SUITES and not n.startswith(("client:", "vm:")))
    tc, trees, builds, progs = _prepare(arch, build_flavors if regular else [], debug)
    ours = [f for f in tree.our_rust_files() if not f.startswith("tools/")]
    for f in flavors:
        stage(f"suites on {arch}/{f}")
        for t in KSELFTESTS:
            if wanted_vm(f"kselftest:{t}"):
                add(suites.kselftest(arch, builds, progs, f, t))
        for t in kbuild.KEXEC_TESTS:
            inkernel = t == "luo_kexec_simple" and (
                wanted_vm("inkernel:test_kho") or wanted_vm("inkernel:liveupdate_test"))
            if wanted_vm(f"kexec:{t}") or inkernel:
                add(suites.kexec_test(arch, builds, progs, t, (f, f), with_inkernel=inkernel))
        for t in kbuild.OUR_KEXEC_TESTS:
            if wanted_vm(f"kexec:{t}") and suites.our_kexec_runs(t, (f, f)):
                add(suites.our_kexec_test(arch, builds, progs, t, (f, f)))
        if wanted_vm("kexec:reserve_mem"):
            add(suites.reserve_mem_test(arch, builds, progs,
                                        (f,) * suites.RESERVE_MEM_STAGES))
        if crate.supported(arch):
            if wanted_vm("crate:device"):
                add(suites.crate_device(arch, builds, progs, f))
            if wanted_vm("crate:luoctl-kexec"):
                add(suites.luoctl_kexec(arch, builds, progs, (f, f)))
            if wanted_vm("crate:example-kexec"):
                add(suites.crate_example(arch, builds, progs, f))
        for name, fn in reliability.SUITES.items():
            if wanted_vm(name):
                add(fn(arch, builds, progs, f))
        if f == "rust":
            if wanted_vm("kunit"):
                add(suites.kunit(arch, builds, progs, f, trees["rust"]))
            if wanted_vm("rustfmtcheck"):
                add(suites.rustfmtcheck(arch, trees["rust"], ours))
            if wanted_vm("clippy"):
                add(suites.clippy(arch, builds["rust"], ours))
            if wanted_vm("rustdoc"):
                add(suites.rustdoc(arch, trees["rust"], builds["rust"], tc, ours))
            if wanted_vm("c-core-gone"):
                add(suites.c_core_gone(arch, builds["rust"]))
            if wanted_vm("kexec:fd_query"):
                add(suites.fd_query_test(arch, builds, progs))
            if wanted_vm("kexec:luo_module"):
                add(suites.module_test(arch, builds, progs))
            if crate.supported(arch):
                for n in sorted(suites.CORRUPT_CASES):
                    if wanted_vm(f"corrupt:{n}"):
                        add(suites.corrupt_case(arch, builds, progs, n))
                for n in sorted(suites.KHO_CORRUPT_CASES):
                    if wanted_vm(f"corrupt:kho-{n}"):
                        add(suites.kho_corrupt_case(arch, builds, progs, n))
    if wanted_vm("bench:smoke") and set(builds) == set(FLAVORS) and "lu-bench" in progs:
        stage(f"benchmark smoke run on {arch}")
        add(suites.bench_smoke(arch, builds, progs))
    if wanted_vm("bench:kho-smoke") and set(builds) == set(FLAVORS):
        stage(f"KHO benchmark smoke run on {arch}")
        add(suites.bench_kho_smoke(arch, builds, progs))
    if cross and crate.supported(arch) and wanted_vm("crate:luoctl-kexec"):
        for chain in (("c", "rust"), ("rust", "c")):
            add(suites.luoctl_kexec(arch, builds, progs, chain))
    if cross:
        stage(f"cross-flavor chains on {arch}")
        for t in CROSS_TESTS:
            if not wanted_vm(f"cross:{t}"):
                continue
            for chain in (("c", "rust"), ("rust", "c")):
                if t == "reserve_mem":
                    add(suites.reserve_mem_test(arch, builds, progs, chain))
                    continue
                if t in kbuild.OUR_KEXEC_TESTS:
                    if suites.our_kexec_runs(t, chain):
                        add(suites.our_kexec_test(arch, builds, progs, t, chain))
                    continue
                for s in suites.kexec_test(arch, builds, progs, t, chain):
                    s.name = f"cross:{t}"
                    add(s)
    if not debug:
        run_client(arch, flavors, trees, tc, progs, wanted_vm, add)


def _client_chains(flavors):
    """Each flavor, and both directions across flavors whenever both run."""
    both = set(FLAVORS) <= set(flavors)
    return [(f, f) for f in flavors] + ([("c", "rust"), ("rust", "c")] if both else [])


def run_client(arch, flavors, trees, tc, progs, wanted_vm, add):
    """client:systemd and its control run (harness/luh/client.py), then vm:survives
    (harness/luh/survive.py), on arch."""
    if wanted_vm("vm:survives"):
        if survive.supported(arch):
            stage(f"a KVM guest survives the live update on {arch}")
        add(survive.suite(arch, trees, tc, progs, _client_chains(flavors)))
    if not client.supported(arch):
        return
    chains = []
    if wanted_vm("client:systemd"):
        chains = _client_chains(flavors)
    control = wanted_vm("client:systemd-control")
    if control and "rust" not in flavors:
        add(ktap.Suite(arch, flavors[0], "client:systemd-control",
                       [ktap.Case("control run", ktap.SKIP, "it runs on the rust flavor")]))
        control = False
    if not chains and not control:
        return
    stage(f"systemd as a client on {arch}: its fd store across systemctl kexec")
    add(client.suite(arch, trees, tc, progs, chains, control))


def cmd_test(args):
    if args.list:
        print("\n".join(SUITE_NAMES))
        return 0
    globs = args.suite
    flavors = _flavors(args.flavor)
    results = []

    def add(s):
        for x in s if isinstance(s, list) else [s]:
            results.append(x)
            suites.announce(x)

    def host_wanted(name):
        # The debug pass is about kernels: host suites only when asked by name.
        return _wanted(name, globs) and (not args.debug or bool(globs))

    t0 = time.monotonic()
    if host_wanted("harness-unit"):
        stage("harness unit tests")
        add(suites.harness_unit())
    if host_wanted("series"):
        try:
            toolchain.ensure_packages()
            stage("patch series: export, apply, checkpatch")
            add(suites.series_check())
        except HarnessError as e:
            add(ktap.Suite("host", "-", "series",
                           [ktap.Case("setup", ktap.FAIL, str(e).splitlines()[0])]))
    if host_wanted("crate:cargo-test") or host_wanted("crate:lint"):
        try:
            tc = toolchain.ensure_all()
            trees, _, _ = tree.prepare_trees()
            hdr = kbuild.headers(tree.PRISTINE, "x86_64")
            if host_wanted("crate:cargo-test"):
                stage("userspace crate: cargo test on the host")
                add(crate.host_tests(trees["rust"], hdr))
            if host_wanted("crate:lint"):
                add(crate.clippy_and_fmt(trees["rust"], tc))
        except HarnessError as e:
            add(ktap.Suite("host", "-", "crate:cargo-test",
                           [ktap.Case("setup", ktap.FAIL, str(e).splitlines()[0])]))
    if host_wanted("crate:kho-decode"):
        try:
            toolchain.ensure_packages()
            toolchain.ensure_rust_tools()
            stage("kho-v4 decoders: host tests, lints, fuzz smoke")
            add(crate.kho_decode(REPO))
        except HarnessError as e:
            add(ktap.Suite("host", "-", "crate:kho-decode",
                           [ktap.Case("setup", ktap.FAIL, str(e).splitlines()[0])]))
    arches = list(ARCHES) if args.arch == "all" else [args.arch]
    kconfig_arches = [a for a in arches if host_wanted(f"kconfig:{a}")]
    if kconfig_arches:
        try:
            tc = toolchain.ensure_all()
            trees, _, _ = tree.prepare_trees()
            for a in kconfig_arches:
                stage(f"Kconfig of the rust tree ({a}): without Rust, and with it")
                add(suites.kconfig_check(a, trees["rust"], tc))
        except HarnessError as e:
            add(ktap.Suite("host", "rust", f"kconfig:{kconfig_arches[0]}",
                           [ktap.Case("setup", ktap.FAIL, str(e).splitlines()[0])]))
    cross = any(_wanted(f"cross:{t}", globs) for t in CROSS_TESTS)
    if cross and args.flavor == "all":
        build_flavors = list(FLAVORS)
    else:
        build_flavors = flavors
    need_vm = any(_wanted(n, globs) for n in SUITE_NAMES if n not in HOST_SUITES)
    # (arch, flavors, flavors to build, globs, debug builds)
    passes = [(a, flavors, build_flavors, globs, args.debug) for a in arches]
    if not args.debug and not globs and DEBUG_DEFAULT_ARCH in arches and "rust" in flavors:
        # CI's debug pass: see DEBUG_DEFAULT.
        passes.append((DEBUG_DEFAULT_ARCH, ["rust"], ["rust"], list(DEBUG_DEFAULT), True))
    for arch, fl, bfl, gl, debug in passes if need_vm else []:
        if debug:
            stage(f"debug pass on {arch}: {', '.join(_debug_label(f) for f in fl)}")
        try:
            run_arch(arch, fl, bfl, cross and args.flavor == "all" and fl == flavors, gl, add,
                     debug)
        except HarnessError as e:
            # A build or setup failure of one architecture fails its suites,
            # named, and the other architecture still runs.
            print(f"ERROR ({arch}): {e}", file=sys.stderr)
            logs = re.findall(r"(?:full )?log: (\S+)", str(e))
            label = args.flavor if len(fl) > 1 else fl[0]
            label = _debug_label(label) if debug else label
            add(ktap.Suite(arch, label, "setup",
                           [ktap.Case("build", ktap.FAIL, str(e))],
                           log=logs[-1] if logs else str(LOGS)))
    if not results:
        print(f"no suite matches {globs}; see lu test --list", file=sys.stderr)
        return 2
    ktap_path = LOGS / "test-results.ktap"
    ktap_path.write_text(ktap.emit_ktap(results))
    print()
    print(ktap.summary_table(results))
    print()
    failed = [s for s in results if s.status == ktap.FAIL]
    for s in failed:
        print(f"FAILED: {s.ident} (log: {s.log})")
    m, sec = divmod(int(time.monotonic() - t0), 60)
    print(f"KTAP: {ktap_path}; took {m}m{sec:02d}s")
    print(ktap.final_line(results))
    return 1 if failed else 0


def cmd_demo(args):
    if args.vm:
        return demo_vm(args)
    arch, f = args.arch, args.flavor
    _, _, builds, progs = _prepare(arch, [f])
    b = builds[f]
    size = args.size
    mem = max(2048, size * 2 + 1024)
    stage(f"demo: booting {f} kernel ({b.release}) with {mem} MiB RAM; "
          f"the agent fills a {size} MiB memfd, preserves it, and the kernel kexecs into itself")
    # The agent is tools/liveupdate's lu-agent, on the Rust crate.
    agent = "/bin/lu-agent"
    res = vm.run_chain(f"{arch}-{f}-demo", [
        vm.Stage(b, [("agent", [agent, "preserve", str(size)])]),
        vm.Stage(b, [("agent", [agent, "retrieve", str(size)])]),
    ], progs, arch, mem=mem, timeout=900)
    return report_demo(res, size)


def demo_vm(args):
    arch, f = args.arch, args.flavor
    chain = (f, "rust")
    tc = toolchain.ensure_all()
    trees, _, _ = tree.prepare_trees()
    builds = {x: kbuild.build_kernel(trees[x], arch, x, tc, variant="client")
              for x in dict.fromkeys(chain)}
    progs = kbuild.user_programs(tree.PRISTINE, arch)
    progs.update(crate.build_static(trees["rust"], arch, tc))
    stage(f"demo: a KVM guest in the {arch} test VM ({f}-client kernel) keeps running across a live "
          f"update into the rust-client kernel; its RAM and vCPU state go through LUO")
    res, bad, fig = survive.run_one(arch, builds, progs, chain, name=f"{arch}-{f}-demo-vm")
    return survive.report(res, bad, fig)


def _kv(line):
    """Parse 'LU-DEMO k=v k="v w"' into a dict."""
    import shlex
    try:
        parts = shlex.split(line)[1:]
    except ValueError:
        parts = line.split()[1:]
    return dict(p.split("=", 1) for p in parts if "=" in p)


def report_demo(res, size):
    demo = [_kv(t[t.index("LU-DEMO"):]) for _, t in res.lines if "LU-DEMO" in t]
    pre = next((d for d in demo if d.get("stage") == "preserve"), None)
    ret = next((d for d in demo if d.get("stage") == "retrieve"), None)
    verdict = next((d["verify"] for d in demo if "verify" in d), None)
    errors = [d["error"] for d in demo if "error" in d]
    problems = res.problems(2)
    print()
    print(f"  QEMU accelerator: {res.accel}")

    def kexec_time(s):
        if s.number == 1 and len(res.stages) == 2 and s.t_reboot is not None:
            ms = (res.stages[1].t_start - s.t_reboot) * 1000
            print(f"  kexec:   reboot(KEXEC) to the new kernel's init in {ms:.0f} ms")
    vm.print_stages(res, "agent:", kexec_time)
    print()
    if pre:
        print(f"  fill             : {int(pre['bytes']) >> 20} MiB in {float(pre['fill_s']):.2f} s"
              f" (session '{pre['session']}', token {pre['token']})")
        print(f"  preserve         : {float(pre['preserve_s']) * 1000:.0f} ms"
              " (PRESERVE_FD and the manifest)")
    if len(res.stages) == 2 and res.stages[0].t_reboot is not None:
        print(f"  reboot→new init  : {(res.stages[1].t_start - res.stages[0].t_reboot) * 1000:.0f}"
              " ms (host clock stamps on the serial lines; the guest clock does not survive kexec)")
    if ret:
        print(f"  retrieve         : {float(ret['retrieve_s']) * 1000:.0f} ms "
              "(open, RETRIEVE_SESSION, manifest, RETRIEVE_FD)")
        print(f"  verify           : {float(ret['verify_s']) * 1000:.0f} ms for "
              f"{int(ret['bytes']) >> 20} MiB; mismatching 8-byte words: {ret['bad_words']}")
        print(f"  finish           : {float(ret['finish_s']) * 1000:.0f} ms")
    for e in errors:
        print(f"  agent error      : {e}")
    for p in problems:
        print(f"  problem          : {p}")
    ok = (verdict == "OK" and not problems and not errors
          and ret is not None and int(ret["bytes"]) == size << 20)
    print()
    print(f"  RESULT: {'PASS: every byte of the memfd survived the live update' if ok else 'FAIL'}")
    print(f"  serial log: {res.log}")
    return 0 if ok else 1


def cmd_bench(args):
    from pathlib import Path
    benches = [b.strip() for b in args.bench.split(",") if b.strip()]
    unknown = set(benches) - {"blackout", "throughput", "scale", "memory", "kho", "iommufd",
                              "parallel"}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.sizes.split(",")]
    reps = 1 if args.smoke else args.reps
    _, _, builds, progs = _prepare(args.arch, list(FLAVORS))
    accel = vm.pick_accel(args.arch, builds["c"], progs)
    outdir = Path(args.output) if args.output else bench.default_outdir()
    command = "./lu " + " ".join(sys.argv[1:])
    report, failures, outdir = bench.run_bench(
        args.arch, builds, progs, reps=reps, sizes=sizes, benches=benches, smoke=args.smoke,
        outdir=outdir, command=command, accel_note=accel,
        kho_mib=bench.KHO_SMOKE_MIB if args.smoke else args.kho_mib, icount=args.icount)
    print()
    print(report)
    print(f"report: {outdir / 'BENCHMARKS.md'}")
    if args.publish:
        sub, suffix = bench.publish_name(args.arch, benches, args.icount)
        dest = bench.publish(outdir, bench.repo_bench_dir() / sub, suffix)
        print(f"published to {dest}")
    for f in failures:
        print(f"FAILED RUN: {f}", file=sys.stderr)
    return 1 if failures else 0


def cmd_soak(args):
    if args.stages < 3:
        print("--stages must be at least 3 (the drift compares stages after a FINISH)",
              file=sys.stderr)
        return 2
    flavors = races.soak_flavors(args.flavor, args.stages)
    _, _, builds, progs = _prepare(args.arch, sorted(set(flavors)), args.debug)
    label = args.flavor + ("-debug" if args.debug else "")
    stage(f"soak: {args.stages} stages on {label}, a {args.size_mib} MiB memfd, a sparse "
          f"{args.sparse_mib} MiB one and up to {races.SOAK_NSMALL} small ones")
    res = races.soak_chain(args.arch, builds, progs, flavors, args.size_mib, args.sparse_mib,
                           f"{args.arch}-{args.flavor}-soak")
    text, ok = races.soak_report(res, flavors, args.size_mib, args.sparse_mib)
    print()
    print(text)
    for p in res.problems(args.stages):
        print(f"problem: {p}")
    ok = ok and not res.problems(args.stages)
    print(f"RESULT: {'PASS' if ok else 'FAIL'}; serial log: {res.log}")
    return 0 if ok else 1


def cmd_series(args):
    bisect_too = args.bisect or args.bisect_range is not None
    if bisect_too:
        # Refuse a bad range before the export and checkpatch, not after.
        kbisect.parse_range(args.bisect_range, 10 ** 6)
    patches, errors, base, tip = tree.series_command(args.output)
    if not bisect_too:
        return 1 if errors else 0
    tc = toolchain.ensure_all()
    steps = kbisect.bisect(base, tip, tc, args.arch, args.bisect_range)
    return 1 if errors or not all(s.ok for s in steps) else 0


def cmd_fuzz(args):
    if not crate.supported(args.arch):
        print(f"lu fuzz: no userspace crate for {args.arch}", file=sys.stderr)
        return 2
    _, _, builds, progs = _prepare(args.arch, [args.flavor], args.debug)
    label = _debug_label(args.flavor) if args.debug else args.flavor
    stage(f"fuzzing {args.arch}/{label}: {args.calls} calls in chunks of {args.chunk}, "
          f"seeds from {args.seed}")
    t0 = time.monotonic()
    chunks = kfuzz.long_run(args.arch, builds, progs, args.flavor, args.calls, args.seed,
                            args.chunk)
    secs = time.monotonic() - t0
    calls = sum(c.calls for c in chunks)
    failed = [c for c in chunks if not c.ok]
    print()
    print(f"  {args.arch}/{label}: {calls} calls in {len(chunks)} chunks, "
          f"{sum(c.errors for c in chunks)} errors, {sum(c.splats for c in chunks)} splats, "
          f"{len(failed)} failed chunks; {secs:.0f} s "
          f"({secs / max(calls, 1) * 1000:.2f} s per 1000 calls)")
    print(f"  per ioctl (calls/successes): "
          f"{kfuzz.counts_note([s for c in chunks for s in c.summaries])}")
    for c in failed:
        print(f"  FAILED chunk: seed {c.seed} (log {c.log})")
        for p in c.problems[:6]:
            print(f"    {p}")
    return 1 if failed else 0


def cmd_setup(args):
    toolchain.ensure_all()
    tree.prepare_trees()
    stage("setup complete")
    return 0


def cmd_clean(args):
    kbuild.clean(args.arch)
    info("removed build directories")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    # One lu at a time per cache: they share source trees and build directories.
    lock = open(CACHE / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"waiting for another lu using {CACHE} to finish...", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        return {"demo": cmd_demo, "test": cmd_test, "build": cmd_build, "bench": cmd_bench,
                "series": cmd_series, "fuzz": cmd_fuzz, "soak": cmd_soak, "setup": cmd_setup,
                "clean": cmd_clean}[args.cmd](args)
    except HarnessError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
