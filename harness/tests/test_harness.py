# SPDX-License-Identifier: GPL-2.0
"""Unit tests of the harness's own logic (run by `lu test` as harness-unit)."""

import unittest

from harness.luh import bisect as kbisect
from harness.luh import build as kbuild
from harness.luh import cli, kconfig, ktap, suites, toolchain, tree, vm
from harness.luh.common import FLAVORS, REPO, HarnessError
from harness.luh.suites import LIVEUPDATE_TEST_EXPECTED, liveupdate_test_lines


class QemuSourceTest(unittest.TestCase):
    """Where QEMU comes from, given what the machine has (issue: fresh image)."""

    BPO = toolchain.QEMU_VERSION
    STOCK = "1:7.2+dfsg-7+deb12u18+b3"

    def test_qemu_is_not_in_the_system_install(self):
        # bookworm's qemu-system-* 7.2 cannot go beside the image's newer
        # qemu-utils (Breaks qemu-system-common << 8.0): never ask apt for it
        # in the plain install.
        for p in toolchain.QEMU_PACKAGES:
            self.assertNotIn(p, toolchain.APT_PACKAGES)
        self.assertFalse([p for p in toolchain.APT_PACKAGES if p.startswith("qemu")])
        self.assertEqual(toolchain.QEMU_PACKAGES, ["qemu-system-x86", "qemu-system-arm"])

    def test_nothing_installed_takes_the_pinned_backport(self):
        plan = toolchain.qemu_plan({})
        self.assertEqual((plan.suite, plan.version, plan.packages, plan.pinned),
                         ("bookworm-backports", self.BPO, toolchain.QEMU_PACKAGES, True))
        plan = toolchain.qemu_plan({}, served=["1:9.2.0-1~bpo12+1", self.BPO])
        self.assertEqual((plan.version, plan.pinned), (self.BPO, True))

    def test_todays_image_newer_qemu_utils(self):
        plan = toolchain.qemu_plan({"qemu-utils": self.BPO})
        self.assertEqual((plan.suite, plan.version, plan.packages, plan.pinned),
                         ("bookworm-backports", self.BPO, toolchain.QEMU_PACKAGES, True))
        self.assertIn("qemu-utils", plan.reason)

    def test_another_backport_installed_is_matched_not_replaced(self):
        other = "1:10.0.3+ds-1~bpo12+1"
        plan = toolchain.qemu_plan({"qemu-utils": other, "qemu-block-extra": other},
                                   served=[other, self.BPO])
        self.assertEqual((plan.suite, plan.version, plan.pinned),
                         ("bookworm-backports", other, False))
        with self.assertRaisesRegex(HarnessError, "no longer served"):
            toolchain.qemu_plan({"qemu-utils": other}, served=[self.BPO])

    def test_stock_bookworm_qemu_stays_stock(self):
        # As bookworm ships it: the arch-specific packages are a binNMU ("+b3"),
        # qemu-system-data (arch all) is not; the missing one gets "+b3".
        stock = {"qemu-system-x86": self.STOCK, "qemu-system-common": self.STOCK,
                 "qemu-system-data": "1:7.2+dfsg-7+deb12u18", "qemu-utils": self.STOCK}
        plan = toolchain.qemu_plan(stock, served=[self.STOCK, "1:7.2+dfsg-7+deb12u15"])
        self.assertEqual((plan.suite, plan.version, plan.packages),
                         ("bookworm", self.STOCK, ["qemu-system-arm"]))
        self.assertEqual(toolchain.qemu_plan({"qemu-utils": "1:7.2+dfsg-7+deb12u15"}).suite,
                         "bookworm")
        with self.assertRaisesRegex(HarnessError, "no longer served by bookworm"):
            toolchain.qemu_plan(stock, served=["1:7.2+dfsg-7+deb12u19+b1"])

    def test_all_present_installs_nothing(self):
        for v in (self.BPO, self.STOCK, "1:11.1.3+ds-1"):
            plan = toolchain.qemu_plan({"qemu-system-x86": v, "qemu-system-arm": v})
            self.assertEqual((plan.suite, plan.packages), (None, []))

    def test_pinned_gone_takes_the_newest_loudly(self):
        plan = toolchain.qemu_plan({}, served=["1:10.0.2+ds-3~bpo12+1", "1:10.0.7+ds-1~bpo12+1"])
        self.assertEqual((plan.version, plan.pinned), ("1:10.0.7+ds-1~bpo12+1", False))
        with self.assertRaisesRegex(HarnessError, "not in bookworm-backports any more"):
            toolchain.qemu_plan({}, served=[])

    def test_refusals(self):
        with self.assertRaisesRegex(HarnessError, "different versions"):
            toolchain.qemu_plan({"qemu-utils": self.BPO, "qemu-system-x86": self.STOCK})
        # trixie's own QEMU (needs trixie's libc) or another distribution's
        with self.assertRaisesRegex(HarnessError, "suite lu does not know"):
            toolchain.qemu_plan({"qemu-utils": "1:10.0.2+ds-2+deb13u1"})
        with self.assertRaisesRegex(HarnessError, "suite lu does not know"):
            toolchain.qemu_plan({"qemu-utils": "1:8.2.2+ds-0ubuntu1"})

    def test_preferences_pin_qemu_and_its_firmware(self):
        text = toolchain.qemu_preferences(toolchain.qemu_plan({}))
        self.assertEqual(text,
                         f"Package: src:qemu\nPin: version {self.BPO}*\nPin-Priority: 990\n"
                         "\nPackage: src:seabios\nPin: release n=bookworm-backports\n"
                         "Pin-Priority: 990\n")
        stock = toolchain.qemu_plan({"qemu-system-x86": self.STOCK})
        self.assertEqual(toolchain.qemu_preferences(stock),
                         "Package: src:qemu\nPin: version 1:7.2+dfsg-7+deb12u18*\n"
                         "Pin-Priority: 990\n")

    def test_private_apt_leaves_the_system_alone(self):
        d = toolchain.QEMU_APT_DIR
        self.assertEqual(toolchain._qemu_apt_opts(), [
            "-o", f"Dir::Etc::sourceparts={d}/sources.list.d",
            "-o", f"Dir::Etc::preferencesparts={d}/preferences.d",
            "-o", f"Dir::State::Lists={d}/lists",
            "-o", f"Dir::Cache={d}/cache",
            "-o", "Acquire::Languages=none",
            "-o", "APT::Sandbox::User=root",
        ])

    def test_dpkg_states(self):
        out = ("qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1 qemu ii \n"
               "qemu-system-x86 1:10.0.2+ds-2+deb13u1~bpo12+1 qemu hi \n"
               "qemu-system-arm 1:7.2+dfsg-7 qemu rc \n"
               "seabios 1.16.2-1 seabios ii \n"
               "qemu-guest-agent 1:7.2+dfsg-7 qemu un \n")
        self.assertEqual(toolchain.installed_qemu(out), {
            "qemu-utils": self.BPO, "qemu-system-x86": self.BPO})
        with self.assertRaisesRegex(HarnessError, "half-installed: qemu-system-arm \\(iU\\)"):
            toolchain.installed_qemu("qemu-system-arm 1:7.2+dfsg-7 qemu iU \n")

    def test_install_command(self):
        from unittest import mock
        calls = []

        def fake_run(cmd, **kw):
            calls.append([str(c) for c in cmd])
            return mock.Mock(stdout="")

        with mock.patch.object(toolchain, "installed_qemu",
                               side_effect=[{"qemu-utils": self.BPO},
                                            {"qemu-utils": self.BPO,
                                             "qemu-system-x86": self.BPO,
                                             "qemu-system-arm": self.BPO}]), \
                mock.patch.object(toolchain.os, "geteuid", return_value=0), \
                mock.patch.object(toolchain, "_qemu_apt_setup"), \
                mock.patch.object(toolchain, "_versions", return_value=[self.BPO]), \
                mock.patch.object(toolchain, "run", side_effect=fake_run), \
                mock.patch.object(toolchain.Path, "write_text") as wrote, \
                mock.patch.object(toolchain, "stage"):
            plan = toolchain.ensure_qemu()
        self.assertEqual(plan.version, self.BPO)
        self.assertEqual(calls, [["apt-get"] + toolchain._qemu_apt_opts() + [
            "install", "-y", "-q", "--no-install-recommends", "--no-remove",
            f"qemu-system-x86={self.BPO}", f"qemu-system-arm={self.BPO}"]])
        wrote.assert_called_once_with(toolchain.qemu_preferences(plan))

    def test_every_package_check_ends_with_qemu(self):
        from unittest import mock
        with mock.patch.object(toolchain, "missing_packages", return_value=[]), \
                mock.patch.object(toolchain, "ensure_qemu") as q:
            toolchain.ensure_packages()
        q.assert_called_once_with()


class KconfigTest(unittest.TestCase):
    def test_parse(self):
        opts = kconfig.parse('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n'
                             "# comment\nCONFIG_D=0x10\n")
        self.assertEqual(opts, {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"',
                                "CONFIG_D": "0x10"})

    def test_verify_dropped_option(self):
        want = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_RUST": "y"}
        have = {"CONFIG_A": "y"}
        # B absent means "not set": fine.  RUST absent: silently dropped.
        self.assertEqual(kconfig.verify(want, have), [("CONFIG_RUST", "y", None)])

    def test_verify_wrong_value(self):
        bad = kconfig.verify({"CONFIG_X": "y"}, {"CONFIG_X": "m"})
        self.assertEqual(bad, [("CONFIG_X", "y", "m")])
        self.assertIn("asked y, got m", kconfig.describe(bad))

    def test_later_fragment_wins(self):
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as d:
            a, b = Path(d, "a"), Path(d, "b")
            a.write_text("CONFIG_X=y\nCONFIG_Y=y\n")
            b.write_text("# CONFIG_X is not set\n")
            self.assertEqual(kconfig.requested([a, b]), {"CONFIG_X": "n", "CONFIG_Y": "y"})

    def test_repo_fragments_exist(self):
        for flavor in ("c", "rust"):
            for f in kconfig.fragments("x86_64", flavor):
                self.assertTrue(f.exists(), f)
        want = kconfig.requested(kconfig.fragments("x86_64", "rust"))
        self.assertEqual(want["CONFIG_RUST"], "y")
        self.assertEqual(want["CONFIG_LIVEUPDATE"], "y")
        self.assertNotIn("CONFIG_RUST", kconfig.requested(kconfig.fragments("x86_64", "c")))


# make's output of a Kconfig run, as scripts/kconfig words its messages.
KCONFIG_OUT = """\
  HOSTLD  scripts/kconfig/conf
WARNING: unmet direct dependencies detected for CMA
  Depends on [n]: MMU [=n]
  Selected by [y]:
  - KEXEC_HANDOVER [=y] && RUST [=y]
drivers/foo/Kconfig:12:warning: defaults for choice values not supported
error: recursive dependency detected!
\tsymbol GCOV_KERNEL depends on DEBUG_FS
\tsymbol DEBUG_FS is selected by GPIO_VIRTUSER
For a resolution refer to Documentation/kbuild/kconfig-language.rst
#
# configuration written to .config
#
"""


class KconfigCheckTest(unittest.TestCase):
    def test_ours(self):
        for sym in ("CONFIG_KEXEC_HANDOVER", "KEXEC_HANDOVER_DEBUGFS", "LIVEUPDATE_MEMFD",
                    "CONFIG_IOMMUFD_LIVEUPDATE", "MEMBLOCK_KHO_SCRATCH", "TEST_KHO_BENCH",
                    "TEST_KEXEC_HANDOVER", "LIVEUPDATE_TEST", "ARCH_SUPPORTS_KEXEC_HANDOVER"):
            self.assertTrue(kconfig.ours(sym), sym)
        for sym in ("CONFIG_RUST", "CMA", "DEBUG_FS", "KEXEC_FILE", "KHOPS", "MKHO"):
            self.assertFalse(kconfig.ours(sym), sym)

    def test_diagnostics(self):
        msgs = kconfig.diagnostics(KCONFIG_OUT)
        self.assertEqual(len(msgs), 3)
        self.assertTrue(msgs[0].startswith("WARNING: unmet direct dependencies detected for CMA"))
        self.assertIn("- KEXEC_HANDOVER [=y]", msgs[0])
        self.assertTrue(msgs[1].startswith("drivers/foo/Kconfig:12:warning:"))
        self.assertIn("GPIO_VIRTUSER", msgs[2])
        self.assertNotIn("For a resolution", msgs[2])
        # The unmet dependency names KEXEC_HANDOVER; the loop fails whatever it names.
        self.assertEqual(kconfig.diagnostic_problems(KCONFIG_OUT), [msgs[0], msgs[2]])
        self.assertEqual(kconfig.diagnostics("#\n# configuration written to .config\n#\n"), [])

    def test_without_rust(self):
        good = ("# CONFIG_RUST is not set\nCONFIG_ARCH_SUPPORTS_KEXEC_HANDOVER=y\n"
                "CONFIG_CMA=y\nCONFIG_DEBUG_FS=y\n")
        self.assertEqual(kconfig.check_without_rust(good, "#\n"), [])
        self.assertEqual(kconfig.check_without_rust(None, ""), ["no .config written"])
        p = kconfig.check_without_rust(good + "CONFIG_KEXEC_HANDOVER=y\nCONFIG_TEST_KHO_BENCH=m\n",
                                       "")
        self.assertEqual(p, ["on without Rust: CONFIG_KEXEC_HANDOVER, CONFIG_TEST_KHO_BENCH"])
        p = kconfig.check_without_rust("CONFIG_RUST_IS_AVAILABLE=y\n", "")
        self.assertEqual(p, [f"Rust is available: {kconfig.NO_RUST} did not take"])
        p = kconfig.check_without_rust(good, KCONFIG_OUT)
        self.assertEqual(len(p), 2)
        self.assertTrue(all(x.startswith("Kconfig: ") for x in p))

    def test_with_rust(self):
        on = "CONFIG_RUST_IS_AVAILABLE=y\n" + "".join(f"CONFIG_{s}=y\n"
                                                     for s in kconfig.RUST_ENABLE)
        self.assertEqual(kconfig.check_with_rust(on, ""), [])
        p = kconfig.check_with_rust(on.replace("CONFIG_CMA=y\n", ""), "")
        self.assertEqual(len(p), 1)
        self.assertIn("CONFIG_CMA: asked y", p[0])
        p = kconfig.check_with_rust(on.replace("CONFIG_RUST_IS_AVAILABLE=y\n", ""), "")
        self.assertEqual(p, ["Kconfig found no Rust toolchain (see make rustavailable)"])
        # KEXEC_HANDOVER's help names what it depends on: RUST and CMA are enabled too.
        self.assertEqual(kconfig.RUST_ENABLE[:2], ("RUST", "CMA"))
        self.assertIn("CONFIG_CMA", kconfig.requested(kconfig.fragments("arm64", "rust")))

    def test_host_suite_per_arch(self):
        import contextlib
        import io
        import tempfile
        from pathlib import Path
        from unittest import mock
        for a in ("x86_64", "arm64"):
            self.assertIn(f"kconfig:{a}", cli.SUITE_NAMES)
            self.assertIn(f"kconfig:{a}", cli.HOST_SUITES)
        ran, checked = [], []
        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(cli, "LOGS", Path(tmp)), \
                mock.patch.object(cli.toolchain, "ensure_all", return_value="tc"), \
                mock.patch.object(cli.tree, "prepare_trees",
                                  return_value=({"rust": "R", "c": "C"}, "b", "t")), \
                mock.patch.object(cli.suites, "kconfig_check",
                                  side_effect=lambda a, src, tc: checked.append((a, src, tc))
                                  or ktap.Suite("host", "rust", f"kconfig:{a}",
                                                [ktap.Case("x", ktap.PASS)])), \
                mock.patch.object(cli, "run_arch", side_effect=lambda *a: ran.append(a)), \
                contextlib.redirect_stdout(io.StringIO()):
            rc = cli.cmd_test(cli.parse_args(["test", "-k", "kconfig*"]))
            self.assertEqual(rc, 0)
            self.assertEqual(checked, [("x86_64", "R", "tc"), ("arm64", "R", "tc")])
            checked.clear()
            cli.cmd_test(cli.parse_args(["test", "--arch", "arm64", "-k", "kconfig*"]))
            self.assertEqual(checked, [("arm64", "R", "tc")])
            self.assertEqual(ran, [], "the Kconfig check builds no kernel")


KSELFTEST_OUT = """\
TAP version 13
1..3
# Starting 3 tests from 1 test cases.
#  RUN           dev.a ...
ok 1 dev.a
[    1.23] some kernel line
not ok 2 dev.b
ok 3 dev.c # SKIP no device
    ok 1 nested
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
"""


class KtapTest(unittest.TestCase):
    def test_parse_tap(self):
        plan, cases = ktap.parse_tap(KSELFTEST_OUT)
        self.assertEqual(plan, 3)
        self.assertEqual([(c.name, c.status) for c in cases],
                         [("dev.a", ktap.PASS), ("dev.b", ktap.FAIL), ("dev.c", ktap.SKIP)])
        self.assertEqual(cases[2].detail, "no device")

    def test_plan_not_met(self):
        cases = ktap.tap_cases("1..2\nok 1 a\n")
        self.assertEqual(cases[-1].name, "plan")
        self.assertEqual(cases[-1].status, ktap.FAIL)

    def test_no_plan(self):
        cases = ktap.tap_cases("program crashed\n")
        self.assertEqual([(c.name, c.status) for c in cases], [("plan", ktap.FAIL)])

    def test_suite_status_and_totals(self):
        ok = ktap.Suite("x86_64", "c", "s1", [ktap.Case("a", ktap.PASS)])
        bad = ktap.Suite("x86_64", "rust", "s2", [ktap.Case("a", ktap.PASS),
                                                  ktap.Case("b", ktap.FAIL, "why")])
        empty = ktap.Suite("x86_64", "rust", "s3", [])
        self.assertEqual(ok.status, ktap.PASS)
        self.assertEqual(bad.status, ktap.FAIL)
        self.assertEqual(empty.status, ktap.FAIL)  # a suite with no result never passes
        self.assertEqual(ktap.totals([ok, bad]), (2, 1, 0))
        self.assertEqual(ktap.final_line([ok, bad]), "2 passed, 1 failed, 0 skipped")

    def test_emit_ktap_roundtrip(self):
        suites = [ktap.Suite("x86_64", "c", "kexec:t", [ktap.Case("t", ktap.PASS)]),
                  ktap.Suite("x86_64", "rust", "kunit", [ktap.Case("a b", ktap.FAIL, "x\ny"),
                                                         ktap.Case("c", ktap.SKIP, "why")])]
        text = ktap.emit_ktap(suites)
        self.assertTrue(text.startswith("KTAP version 1\n1..2\n"))
        self.assertIn("ok 1 x86_64/c/kexec:t\n", text)
        self.assertIn("    not ok 1 a_b\n", text)
        self.assertIn("    ok 2 c # SKIP why\n", text)
        self.assertIn("not ok 2 x86_64/rust/kunit\n", text)
        plan, top = ktap.parse_tap(text)
        self.assertEqual(plan, 2)
        self.assertEqual([c.status for c in top], [ktap.PASS, ktap.FAIL])

    def test_summary_table(self):
        s = ktap.Suite("x86_64", "c", "kexec:t", [ktap.Case("t", ktap.PASS)], seconds=3.25)
        table = ktap.summary_table([s]).splitlines()
        self.assertEqual(len(table), 3)
        self.assertIn("PASS", table[2])
        self.assertIn("3.2s", table[2])


def _log(*texts):
    return [(float(i), t) for i, t in enumerate(texts)]


class StageParseTest(unittest.TestCase):
    A = "7.3.4-lu-c #1 PREEMPT_DYNAMIC Fri Nov 27 03:48:04 UTC 2026"
    B = "7.3.4-lu-rust #3 PREEMPT_DYNAMIC Fri Nov 27 04:00:00 UTC 2026"

    def test_two_stages(self):
        lines = _log("Linux version 7.3.4-lu-c (root@vm) ...", "boot 1",
                     f"LU-STAGE 1 2 {self.A}", "LU-KEXEC-LOADED 1 0",
                     "LU-RESULT 1 t 0", "LU-REBOOT 1 kexec",
                     "Linux version 7.3.4-lu-rust (root@vm) ...", "liveupdate test: x",
                     f"LU-STAGE 2 2 {self.B}", "LU-RESULT 2 t 1", "LU-REBOOT 2 restart")
        st = vm.parse_stages(lines, [self.A, self.B])
        self.assertEqual(len(st), 2)
        self.assertTrue(st[0].right_kernel and st[1].right_kernel)
        self.assertEqual(st[0].results, {"t": 0})
        self.assertEqual(st[1].results, {"t": 1})
        self.assertEqual(st[0].kexec_loaded, 0)
        self.assertEqual((st[0].t_reboot, st[1].t_start), (5.0, 8.0))
        # The next kernel's boot log belongs to the next stage.
        self.assertEqual((st[0].first_line, st[0].last_line), (0, 5))
        self.assertEqual((st[1].first_line, st[1].last_line), (6, 10))
        res = vm.RunResult("r", None, lines, st, "exited", "tcg", 1.0)
        self.assertEqual(res.problems(2), [])
        self.assertIn("liveupdate test: x", res.text(2))
        self.assertNotIn("liveupdate test: x", res.text(1))

    def test_wrong_kernel_is_a_problem(self):
        lines = _log("Linux version x (root@vm)", f"LU-STAGE 1 2 {self.A}", "LU-REBOOT 1 kexec",
                     "Linux version y (root@vm)", f"LU-STAGE 2 2 {self.A}")
        st = vm.parse_stages(lines, [self.A, self.B])
        self.assertFalse(st[1].right_kernel)
        res = vm.RunResult("r", None, lines, st, "exited", "tcg", 1.0)
        self.assertEqual(len(res.problems(2)), 1)
        self.assertIn("expected", res.problems(2)[0])

    def test_missing_stage_panic_timeout(self):
        lines = _log("Linux version x (root@vm)", f"LU-STAGE 1 2 {self.A}", "LU-REBOOT 1 kexec",
                     "Linux version y (root@vm)", "Kernel panic - not syncing: boom")
        st = vm.parse_stages(lines, [self.A, self.B])
        res = vm.RunResult("r", None, lines, st, "timeout", "tcg", 1.0)
        probs = res.problems(2)
        self.assertEqual(len(probs), 3)
        self.assertIn("reached 1 of 2 stages", probs[0])
        self.assertIn("Kernel panic", probs[2])

    def test_debug_scratch(self):
        self.assertEqual(vm.debug_scratch(2048), "kho_scratch=64M,512M,256M")
        self.assertEqual(vm.debug_scratch(4096), "kho_scratch=64M,512M,256M")
        self.assertEqual(vm.debug_scratch(9216), "kho_scratch=64M,1664M,256M")

    def test_splats_fail_debug_runs_only(self):
        lines = _log("Linux version x (root@vm)", f"LU-STAGE 1 1 {self.A}",
                     "[   12.1] BUG: KASAN: slab-use-after-free in luo_x+0x10/0x20",
                     "[   12.2] WARNING: possible circular locking dependency detected",
                     "[   12.3] WARNING: CPU: 1 PID: 77 at kernel/liveupdate/x.c:3 f+0x1/0x2",
                     "[   12.4] UBSAN: shift-out-of-bounds in lib/x.c:1:2",
                     "unreferenced object 0xffff888003a1c000 (size 64):",
                     "[   12.5] INFO: task lu-race:91 blocked for more than 120 seconds.",
                     "LU-RESULT 1 t 0", "LU-KMEMLEAK 1 1", "LU-REBOOT 1 restart",
                     "[   12.6] BUG kmalloc-64 (Not tainted): Object already free",
                     "LU-KMEMLEAK 1 error Device or resource busy",
                     "luo: refused the previous kernel's data (bad magic)")
        st = vm.parse_stages(lines, [self.A])
        self.assertEqual(len(vm.splats(lines)), 8)
        plain = vm.RunResult("r", None, lines, st, "exited", "tcg", 1.0)
        self.assertEqual(plain.problems(1), [])
        debug = vm.RunResult("r", "serial.log", lines, st, "exited", "tcg", 1.0, debug=True)
        probs = debug.problems(1)
        self.assertEqual(len(probs), 6)
        self.assertTrue(probs[0].startswith("splat: [   12.1] BUG: KASAN: slab-use-after-free"))
        self.assertEqual(probs[5], "... 3 more checker lines in serial.log")
        # A clean debug log has no problem.
        clean = [x for x in lines if not vm.SPLAT.search(x[1])]
        self.assertEqual(vm.RunResult("r", None, clean, st, "exited", "tcg", 1.0,
                                      debug=True).problems(1), [])


class LiveupdateTestLines(unittest.TestCase):
    def test_extract(self):
        text = ("[ 1.0] liveupdate test: Registered 3 FLBs with file handler: [memfd-v2]\n"
                "# liveupdate test: liveupdate-test-flb-v0: preserve was triggered\n"
                "other\n")
        self.assertEqual(liveupdate_test_lines(text), [
            "Registered 3 FLBs with file handler: [memfd-v2]",
            "liveupdate-test-flb-v0: preserve was triggered"])

    def test_expected_shape(self):
        self.assertEqual(len(LIVEUPDATE_TEST_EXPECTED[1]), 4)
        self.assertEqual(len(LIVEUPDATE_TEST_EXPECTED[2]), 7)
        self.assertEqual(LIVEUPDATE_TEST_EXPECTED[2][-1],
                         "liveupdate-test-flb-v0: finish was triggered")
        self.assertEqual(suites.liveupdate_test_expected("c", 2), LIVEUPDATE_TEST_EXPECTED[2])
        rust = suites.liveupdate_test_expected("rust", 2)
        self.assertEqual(rust[3:5], ["Registered 3 FLBs with file handler: [memfd-v2]",
                                     "Registered 3 FLBs with file handler: [iommufd-ioas-v1]"])
        self.assertEqual(len(rust), 8)


class LibtestTest(unittest.TestCase):
    OUT = """running 3 tests
test a::x ... ok
test b ... FAILED
test c ... ignored, needs device
test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out
"""

    def test_cases(self):
        from harness.luh.crate import libtest_cases
        cases = libtest_cases(self.OUT)
        self.assertEqual([(c.name, c.status) for c in cases],
                         [("a::x", ktap.PASS), ("b", ktap.FAIL), ("c", ktap.SKIP)])

    def test_no_summary_fails(self):
        from harness.luh.crate import libtest_cases
        cases = libtest_cases("test a ... ok\n")
        self.assertEqual(cases[-1].status, ktap.FAIL)

    def test_summary_mismatch_fails(self):
        from harness.luh.crate import libtest_cases
        cases = libtest_cases("test a ... ok\ntest result: ok. 2 passed; 0 failed; 0 ignored\n")
        self.assertEqual(cases[-1].name, "libtest")


class SeriesTest(unittest.TestCase):
    def test_parse(self):
        e = tree.parse_series("# c\npatch 0001-x.patch\nfiles msg/a.txt rust/kernel kernel/x.c\n\n"
                              "files m rust/a.rs g.patch # comment\n")
        self.assertEqual(e, [("patch", "0001-x.patch"),
                             ("files", "msg/a.txt", ["rust/kernel", "kernel/x.c"], []),
                             ("files", "m", ["rust/a.rs"], ["g.patch"])])
        with self.assertRaises(HarnessError):
            tree.parse_series("files m only.patch\n")
        with self.assertRaises(HarnessError):
            tree.parse_series("bogus line\n")

    def test_both_entries_are_in_the_c_tree(self):
        text = ("files m1 rust/a.rs\nboth files m2 lib/t.c g.patch\npatch p.patch\n"
                "both patch q.patch # c too\n")
        rust = tree.parse_series(text)
        self.assertEqual(rust, [("files", "m1", ["rust/a.rs"], []),
                                ("files", "m2", ["lib/t.c"], ["g.patch"]),
                                ("patch", "p.patch"), ("patch", "q.patch")])
        self.assertEqual(tree.parse_series(text, "c"),
                         [("files", "m2", ["lib/t.c"], ["g.patch"]), ("patch", "q.patch")])
        self.assertEqual([c for c, _ in tree.parse_series_flavors(text)],
                         [False, True, False, True])
        with self.assertRaises(HarnessError):
            tree.parse_series("both\n")
        with self.assertRaises(HarnessError):
            tree.parse_series("both both files m x\n")

    def test_c_tree_takes_tests_only(self):
        # The c flavor is upstream's C live update: the entries it shares with
        # ours add in-kernel tests, never a file of the Rust rewrite.
        for in_c, e in tree.parse_series_flavors(tree.SERIES.read_text()):
            if in_c:
                self.assertEqual(e[0], "files", e)
                for path in e[2]:
                    self.assertRegex(path, r"^lib/test_[a-z0-9_]+\.c$")

    # The upstream files the glue of `both` entries may change in the c tree:
    # the build glue of the lib/ tests and, for the KHO benchmark only, its
    # cycle counter reads around the KHO boot calls in mm/mm_init.c (added
    # lines only, the calls themselves untouched).
    C_GLUE_FILES = {"lib/Kconfig.debug", "lib/Makefile", "MAINTAINERS"}
    C_GLUE_EXTRA = {"0007-lib-test-kho-bench.glue.patch": {"mm/mm_init.c"}}

    def test_c_tree_glue_is_test_glue(self):
        for in_c, e in tree.parse_series_flavors(tree.SERIES.read_text()):
            if not in_c:
                continue
            for glue in e[3]:
                allowed = self.C_GLUE_FILES | self.C_GLUE_EXTRA.get(glue, set())
                cur, in_ifdef = None, False
                for line in (tree.PATCHES / glue).read_text().splitlines():
                    if line.startswith("+++ "):
                        cur = line[6:]
                        self.assertIn(cur, allowed, f"{glue} changes {cur} in the c tree")
                    elif cur != "mm/mm_init.c" or line.startswith("--- "):
                        continue
                    elif line.startswith("-"):
                        self.fail(f"{glue} removes a line of mm/mm_init.c: {line}")
                    elif line == "+#ifdef CONFIG_TEST_KHO_BENCH":
                        in_ifdef = True
                    elif line == "+#endif":
                        in_ifdef = False
                    elif line.startswith("+") and not in_ifdef:
                        # Outside the #ifdef: the hooks and the include they need.
                        self.assertRegex(line, r"^\+$|kho_bench_|kho_start|"
                                         r"^\+#include <linux/timex.h>$", glue)

    def test_assign(self):
        entries = [("files", "m1", ["rust/kernel"], []), ("files", "m2", ["kernel/liveupdate/"], [])]
        files = ["kernel/liveupdate/a.rs", "rust/kernel/b.rs", "rust/kernel/c/d.rs"]
        self.assertEqual(tree.assign_files(entries, files),
                         [["rust/kernel/b.rs", "rust/kernel/c/d.rs"], ["kernel/liveupdate/a.rs"]])

    def test_orphan_and_double(self):
        with self.assertRaises(HarnessError):
            tree.assign_files([("files", "m", ["rust"], [])], ["rust/a.rs", "mm/b.rs"])
        with self.assertRaises(HarnessError):
            tree.assign_files([("files", "m", ["rust"], []), ("files", "n", ["rust/a.rs"], [])],
                              ["rust/a.rs"])
        with self.assertRaises(HarnessError):
            tree.assign_files([("files", "m", ["mm"], [])], [])

    def test_prefix_is_path_aware(self):
        # "rust/kernel" must not claim "rust/kernelx.rs".
        with self.assertRaises(HarnessError):
            tree.assign_files([("files", "m", ["rust/kernel"], [])], ["rust/kernelx.rs"])


class OurKselftestTest(unittest.TestCase):
    def test_expectation_per_flavor(self):
        self.assertEqual(set(suites.LUO_EXPECT), set(FLAVORS))
        self.assertEqual(suites.kselftest_argv("luo_errno", "c"),
                         ["/bin/luo_errno", "--expect=upstream"])
        self.assertEqual(suites.kselftest_argv("luo_errno", "rust"),
                         ["/bin/luo_errno", "--expect=fixed"])
        # Upstream's test takes no argument of ours.
        self.assertEqual(suites.kselftest_argv("liveupdate", "rust"), ["/bin/liveupdate"])

    def test_listed_and_run_on_both_flavors(self):
        import contextlib
        import io
        from unittest import mock
        self.assertIn("kselftest:luo_errno", cli.SUITE_NAMES)
        calls = []

        def fake(arch, builds, progs, flavor, prog):
            calls.append((arch, flavor, prog))
            return ktap.Suite(arch, flavor, f"kselftest:{prog}")

        with mock.patch.object(cli, "_prepare", return_value=(None, {"rust": None}, {}, {})), \
                mock.patch.object(cli.tree, "our_rust_files", return_value=[]), \
                mock.patch.object(cli.crate, "supported", return_value=False), \
                mock.patch.object(cli.suites, "kselftest", side_effect=fake), \
                contextlib.redirect_stdout(io.StringIO()):
            for arch in ("x86_64", "arm64"):
                cli.run_arch(arch, list(FLAVORS), list(FLAVORS), False,
                             ["kselftest:luo_errno"], lambda s: None)
        self.assertEqual(calls, [(a, f, "luo_errno") for a in ("x86_64", "arm64")
                                 for f in FLAVORS])

    def test_source_claimed_by_series(self):
        entries = tree.parse_series(tree.SERIES.read_text())
        for path in list(kbuild.OUR_KSELFTESTS.values()) + list(kbuild.OUR_KEXEC_TESTS.values()):
            self.assertTrue((REPO / path).is_file())
            claims = [e for e in entries if e[0] == "files"
                      and any(path == p or path.startswith(p.rstrip("/") + "/") for p in e[2])]
            self.assertEqual(len(claims), 1, path)
            for f in [claims[0][1]] + claims[0][3]:
                self.assertTrue((tree.PATCHES / f).is_file(), f)


STAGE_KTAP = """\
TAP version 13
1..3
# stage 1 on 7.3.4-lu-c: expectations of kernel=c, prev=c
# a_point: got 1, expected 1
ok 1 a_point
# b_point: F_GET_SEALS 0, expected 0x6
not ok 2 b_point
ok 3 c_point
# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0
"""


class FdQueryTest(unittest.TestCase):
    LOG = """[    1.2] luo_query_test: 3 incoming files
[    1.2] luo_query_test: session=query-a token=7 data=0x5100
LU-QUERY ok retrieve
[    1.3] luo_query_test: session=query-b token=3 data=0x5101
"""

    def test_lines_parsed_in_order(self):
        self.assertEqual(suites.fd_query_lines(self.LOG),
                         ["3 incoming files", "session=query-a token=7 data=0x5100",
                          "session=query-b token=3 data=0x5101"])
        self.assertEqual(suites.fd_query_lines("nothing\n"), [])

    def test_expected_lines_match_what_the_programs_preserve(self):
        self.assertEqual(suites.FD_QUERY_STAGE1, ["0 incoming files"])
        self.assertEqual(suites.FD_QUERY_STAGE2[0], f"{len(suites.FD_QUERY_STAGE2) - 1} "
                                                    "incoming files")
        src = (REPO / "harness/init/lu-query-check.c").read_text()
        for line in suites.FD_QUERY_STAGE2[1:]:
            name, token = line.split()[0].split("=")[1], line.split()[1].split("=")[1]
            self.assertIn(f'as {name}/{token}"', src)
        self.assertIn("0x5100 + luo_query_test_count++",
                      (REPO / "kernel/liveupdate/luo_query_test.c").read_text())

    def test_registered_rust_only(self):
        from unittest import mock
        self.assertIn("kexec:fd_query", cli.SUITE_NAMES)
        self.assertIn("CONFIG_LIVEUPDATE_QUERY_TEST=y",
                      (REPO / "harness/config/rust.config").read_text().splitlines())
        self.assertNotIn("LIVEUPDATE_QUERY_TEST",
                         (REPO / "harness/config/c.config").read_text())
        calls = []
        with mock.patch.object(cli, "_prepare",
                               return_value=(None, {"rust": None}, {}, {})), \
                mock.patch.object(cli.suites, "fd_query_test",
                                  side_effect=lambda a, b, p: calls.append(a)):
            cli.run_arch("x86_64", list(FLAVORS), list(FLAVORS), False,
                         ["kexec:fd_query"], lambda s: None)
        self.assertEqual(calls, ["x86_64"])


class OurKexecTestTest(unittest.TestCase):
    def test_argv_names_both_kernels(self):
        self.assertEqual(suites.our_kexec_argv("luo_memfd", 1, ("c", "rust")),
                         ["/bin/luo_memfd", "-s", "1", "--kernel=c", "--prev=c"])
        self.assertEqual(suites.our_kexec_argv("luo_memfd", 2, ("c", "rust")),
                         ["/bin/luo_memfd", "-s", "2", "--kernel=rust", "--prev=c"])
        self.assertEqual(suites.our_kexec_argv("luo_memfd", 2, ("rust", "rust")),
                         ["/bin/luo_memfd", "-s", "2", "--kernel=rust", "--prev=rust"])

    def test_vm_settings(self):
        self.assertEqual(set(suites.OUR_KEXEC_VM), set(kbuild.OUR_KEXEC_TESTS))
        for v in suites.OUR_KEXEC_VM.values():
            self.assertEqual(set(v["timeout"]), {"x86_64", "arm64"})

    def test_stage_cases_named_with_details(self):
        cases = suites.ktap_stage_cases(STAGE_KTAP, "stage1.")
        self.assertEqual([(c.name, c.status) for c in cases],
                         [("stage1.a_point", ktap.PASS), ("stage1.b_point", ktap.FAIL),
                          ("stage1.c_point", ktap.PASS)])
        self.assertEqual(cases[1].detail, "F_GET_SEALS 0, expected 0x6")
        short = suites.ktap_stage_cases("1..2\nok 1 x\n", "stage2.")
        self.assertEqual([(c.name, c.status) for c in short],
                         [("stage2.x", ktap.PASS), ("stage2.plan", ktap.FAIL)])

    @staticmethod
    def _our_kexec_calls(*runs):
        """The (arch, prog, chain) of each our_kexec_test cli.run_arch makes for runs of
        (arch, flavors, cross, globs), with everything else stubbed."""
        import contextlib
        import io
        from unittest import mock
        calls = []

        def fake(arch, builds, progs, prog, chain):
            calls.append((arch, prog, chain))
            return ktap.Suite(arch, "-", prog)

        with mock.patch.object(cli, "_prepare", return_value=(None, {"rust": None}, {}, {})), \
                mock.patch.object(cli.tree, "our_rust_files", return_value=[]), \
                mock.patch.object(cli.crate, "supported", return_value=False), \
                mock.patch.object(cli.suites, "our_kexec_test", side_effect=fake), \
                contextlib.redirect_stdout(io.StringIO()):
            for arch, flavors, cross, globs in runs:
                cli.run_arch(arch, flavors, list(FLAVORS), cross, globs, lambda s: None)
        return calls

    def test_listed_and_run_on_every_chain(self):
        for t in kbuild.OUR_KEXEC_TESTS:
            self.assertIn(f"kexec:{t}", cli.SUITE_NAMES)
            self.assertIn(f"cross:{t}", cli.SUITE_NAMES)
        calls = self._our_kexec_calls(
            ("x86_64", list(FLAVORS), True, ["kexec:luo_memfd", "cross:luo_memfd"]),
            ("arm64", ["rust"], False, ["kexec:luo_memfd"]))
        self.assertEqual(calls, [
            ("x86_64", "luo_memfd", ("c", "c")), ("x86_64", "luo_memfd", ("rust", "rust")),
            ("x86_64", "luo_memfd", ("c", "rust")), ("x86_64", "luo_memfd", ("rust", "c")),
            ("arm64", "luo_memfd", ("rust", "rust"))])

    def test_iommufd_runs_where_stage1_is_rust_with_its_devices(self):
        calls = self._our_kexec_calls(
            ("arm64", list(FLAVORS), True, ["kexec:luo_iommufd", "cross:luo_iommufd"]))
        self.assertEqual(calls, [("arm64", "luo_iommufd", ("rust", "rust")),
                                 ("arm64", "luo_iommufd", ("rust", "c"))])
        self.assertFalse(suites.our_kexec_runs("luo_iommufd", ("c", "rust")))
        self.assertTrue(suites.our_kexec_runs("luo_memfd", ("c", "rust")))

        # The QEMU command line: the vIOMMU before the edu device, both after the machine.
        vmp = suites.OUR_KEXEC_VM["luo_iommufd"]
        cmd = vm.qemu_cmd("x86_64", "tcg", 2048, 2, "bzImage", "initrd", "console=ttyS0",
                          vmp["qemu"]["x86_64"])
        self.assertEqual(cmd[1:7], ["-M", "q35", "-device", "intel-iommu,caching-mode=on",
                                    "-device", "edu,dma_mask=0xffffffffffffffff"])
        cmd = vm.qemu_cmd("arm64", "tcg", 2048, 2, "Image", "initrd", "console=ttyAMA0",
                          vmp["qemu"]["arm64"])
        self.assertEqual(cmd[:9], ["qemu-system-aarch64", "-M", "virt", "-cpu",
                                   "max,pauth-impdef=on", "-M", "iommu=smmuv3", "-device",
                                   "edu,dma_mask=0xffffffffffffffff"])
        self.assertEqual(vmp["cmdline"]["x86_64"],
                         "intel_iommu=on iommufd.allow_unsafe_interrupts=1")


def _rsv_stage(k, lines, cmdline=suites.RESERVE_MEM_PARAM):
    return "\n".join([f"[ {k}.0] Linux version 7.3.4-lu-c (root@vm)",
                      f"[ {k}.1] Kernel command line: console=ttyS0 {cmdline}"]
                     + [f"[ {k}.2] {x}" for x in lines])


_RSV_REVIVED_LINE = "Revived memory reservation 'lu_rsv' from KHO"
_RSV_AT = "name=lu_rsv phys=0x000000007e000000 size=0x0000000000800000"


def _rsv_chain(n=3):
    texts = [_rsv_stage(1, [f"test_kho_reserve_mem: fill {_RSV_AT} seed=0x10 csum=0xaa"])]
    for k in range(2, n + 1):
        seed = 0x10 + k - 2
        texts.append(_rsv_stage(k, [
            _RSV_REVIVED_LINE,
            f"test_kho_reserve_mem: PASS {_RSV_AT} seed={seed:#x} mismatches=0 csum=0x{k - 1:x}a",
            f"test_kho_reserve_mem: fill {_RSV_AT} seed={seed + 1:#x} csum=0x{k:x}a"]))
    # Stage 1 filled csum 0xaa; make each verification match its predecessor's fill.
    texts[1] = texts[1].replace("csum=0x1a", "csum=0xaa")
    return texts


class ReserveMemTest(unittest.TestCase):
    def _failed(self, texts):
        return {c.name: c.detail for c in suites.reserve_mem_cases(texts)
                if c.status == ktap.FAIL}

    def test_param(self):
        self.assertEqual(suites.RESERVE_MEM_PARAM, "reserve_mem=8M:4096:lu_rsv")

    def test_lines(self):
        got = suites.reserve_mem_lines(
            "x\n[ 1.0] test_kho_reserve_mem: PASS name=lu_rsv phys=0x1000 size=0x2000 "
            "seed=0x5 mismatches=0 csum=0xff\ntest_kho_reserve_mem: no reserve_mem region\n")
        self.assertEqual(got, [("PASS", {"name": "lu_rsv", "phys": "0x1000", "size": "0x2000",
                                         "seed": "0x5", "mismatches": "0", "csum": "0xff"})])

    def test_good_chain(self):
        cases = suites.reserve_mem_cases(_rsv_chain(3))
        self.assertEqual([c.name for c in cases], [
            "stage1.cmdline", "stage1.fill", "stage2.cmdline", "stage2.verify", "stage2.fill",
            "stage3.cmdline", "stage3.verify", "stage3.fill"])
        self.assertEqual(self._failed(_rsv_chain(3)), {})

    def test_moved_region(self):
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace("phys=0x000000007e000000", "phys=0x000000007c000000")
        bad = self._failed(texts)
        self.assertIn("phys 0x000000007c000000, stage 1 filled 0x000000007e000000",
                      bad["stage2.verify"])

    def test_other_size(self):
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace("size=0x0000000000800000", "size=0x0000000000400000", 1)
        self.assertIn("size", self._failed(texts)["stage2.verify"])

    def test_mismatching_words(self):
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace("PASS", "FAIL").replace("mismatches=0", "mismatches=3")
        self.assertIn("FAIL: 3 mismatching words", self._failed(texts)["stage2.verify"])

    def test_checksum_or_seed_differs(self):
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace("csum=0xaa", "csum=0xab")
        self.assertIn("csum 0xab, stage 1 filled 0xaa", self._failed(texts)["stage2.verify"])
        texts = _rsv_chain(3)
        texts[2] = texts[2].replace("seed=0x12 csum", "seed=0x13 csum")
        self.assertIn("seed + 1", self._failed(texts)["stage3.fill"])

    def test_missing_lines(self):
        texts = _rsv_chain(3)
        texts[0] = _rsv_stage(1, [])
        bad = self._failed(texts)
        self.assertIn("0 fill lines", bad["stage1.fill"])
        self.assertIn("no fill line in stage 1", bad["stage2.verify"])
        texts = _rsv_chain(2)
        texts[1] = "\n".join(ln for ln in texts[1].splitlines() if "PASS" not in ln)
        self.assertIn("0 PASS/FAIL lines", self._failed(texts)["stage2.verify"])
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace(_RSV_REVIVED_LINE, "")
        self.assertIn("Revived", self._failed(texts)["stage2.verify"])

    def test_cmdline_and_stages(self):
        texts = _rsv_chain(2)
        texts[1] = texts[1].replace(suites.RESERVE_MEM_PARAM, "")
        self.assertIn("stage2.cmdline", self._failed(texts))
        self.assertEqual(self._failed(_rsv_chain(2)[:1] + [None]),
                         {"stage2": "stage not reached"})

    def test_cold_boot_must_not_verify(self):
        texts = _rsv_chain(2)
        texts[0] = texts[0] + "\ntest_kho_reserve_mem: PASS " + _RSV_AT
        self.assertIn("stage1.fill", self._failed(texts))

    def test_fill_before_check(self):
        texts = _rsv_chain(2)
        lines = texts[1].splitlines()
        lines[-2], lines[-1] = lines[-1], lines[-2]
        texts[1] = "\n".join(lines)
        self.assertIn("filled before it was checked", self._failed(texts)["stage2.verify"])

    def test_config_and_series(self):
        for flavor in FLAVORS:
            for arch in ("x86_64", "arm64"):
                want = kconfig.requested(kconfig.fragments(arch, flavor))
                self.assertEqual(want.get("CONFIG_TEST_KHO_RESERVE_MEM"), "y")
        c_entries = tree.parse_series(tree.SERIES.read_text(), "c")
        self.assertTrue(any(e[0] == "files" and "lib/test_kho_reserve_mem.c" in e[2]
                            for e in c_entries))
        self.assertTrue((REPO / "lib" / "test_kho_reserve_mem.c").is_file())

    def test_listed_and_run_on_every_chain(self):
        import contextlib
        import io
        from unittest import mock
        self.assertIn("kexec:reserve_mem", cli.SUITE_NAMES)
        self.assertIn("cross:reserve_mem", cli.SUITE_NAMES)
        calls = []

        def fake(arch, builds, progs, chain):
            calls.append((arch, chain))
            return ktap.Suite(arch, "-", "reserve_mem")

        with mock.patch.object(cli, "_prepare", return_value=(None, {"rust": None}, {}, {})), \
                mock.patch.object(cli.tree, "our_rust_files", return_value=[]), \
                mock.patch.object(cli.crate, "supported", return_value=False), \
                mock.patch.object(cli.suites, "reserve_mem_test", side_effect=fake), \
                contextlib.redirect_stdout(io.StringIO()):
            for arch in ("x86_64", "arm64"):
                cli.run_arch(arch, list(FLAVORS), list(FLAVORS), True,
                             ["kexec:reserve_mem", "cross:reserve_mem"], lambda s: None)
        self.assertEqual(calls, [(a, ch) for a in ("x86_64", "arm64") for ch in (
            ("c", "c", "c"), ("rust", "rust", "rust"), ("c", "rust"), ("rust", "c"))])
class KhoDecodeSuiteTest(unittest.TestCase):
    def test_host_only(self):
        import contextlib
        import io
        import tempfile
        from pathlib import Path
        from unittest import mock
        self.assertIn("crate:kho-decode", cli.SUITE_NAMES)
        self.assertIn("crate:kho-decode", cli.HOST_SUITES)
        ran = []
        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(cli, "LOGS", Path(tmp)), \
                mock.patch.object(cli.toolchain, "ensure_packages"), \
                mock.patch.object(cli.toolchain, "ensure_rust_tools"), \
                mock.patch.object(cli.crate, "kho_decode",
                                  side_effect=lambda src: ktap.Suite("host", "-",
                                                                     "crate:kho-decode")), \
                mock.patch.object(cli, "run_arch", side_effect=lambda *a: ran.append(a)), \
                mock.patch.object(cli.suites, "harness_unit",
                                  return_value=ktap.Suite("host", "-", "harness-unit")), \
                contextlib.redirect_stdout(io.StringIO()):
            cli.cmd_test(cli.parse_args(["test", "-k", "crate:kho-decode", "-k", "harness-unit"]))
            self.assertEqual(ran, [], "host suites build no kernel")
            cli.cmd_test(cli.parse_args(["test", "-k", "crate:kho-decode", "-k", "kunit"]))
            self.assertEqual(len(ran), 2, "a VM suite does, per architecture")

    def test_series_claims_the_crate_and_the_decoder(self):
        entries = tree.parse_series(tree.SERIES.read_text())
        files = ["tools/testing/kho_decode/Cargo.toml", "tools/testing/kho_decode/fuzz.sh",
                 "kernel/liveupdate/kho/decode/mod.rs"]
        for f in files:
            self.assertTrue((REPO / f).is_file(), f)
            claims = [e for e in entries if e[0] == "files"
                      and any(f == p or f.startswith(p.rstrip("/") + "/") for p in e[2])]
            self.assertEqual(len(claims), 1, f)

    def test_fuzz_summary_line(self):
        from harness.luh.crate import _FUZZ_LINE
        m = _FUZZ_LINE.search("x\nkho_decode fuzz: 200000 executions in 21 s (9523 exec/s), "
                              "exit 0, 0 crashes; log /l\n")
        self.assertEqual(m.groups(), ("200000", "21", "9523"))

    def test_kernel_lints_cover_the_makefile(self):
        import re
        from harness.luh.crate import KERNEL_LINTS
        mk = tree.PRISTINE / "Makefile"
        if not mk.exists():
            self.skipTest("no pristine tree")
        block = re.search(r"^export rust_common_flags := (.*?)\n\n", mk.read_text(), re.M | re.S)
        lints = {f[2:] for f in block.group(1).split() if f[:2] in ("-W", "-D", "-A")}
        lints = {x for x in lints if not x.startswith("rustdoc::")
                 and x not in ("stable_features", "unused_features")}
        ours = {f[2:] for f in KERNEL_LINTS}
        self.assertEqual(lints - ours, set())
        self.assertIn("clippy::float_arithmetic", ours)


class CliTest(unittest.TestCase):
    def test_defaults(self):
        a = cli.parse_args(["test"])
        self.assertEqual((a.arch, a.flavor, a.suite), ("all", "all", []))
        d = cli.parse_args(["demo"])
        self.assertEqual((d.flavor, d.size), ("rust", 1024))

    def test_suite_filter(self):
        self.assertTrue(cli._wanted("kexec:luo_kexec_simple", ["kexec:*"]))
        self.assertFalse(cli._wanted("kunit", ["kexec:*"]))
        self.assertTrue(cli._wanted("kunit", []))

    def test_bad_flavor(self):
        import contextlib
        import io
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            cli.parse_args(["build", "go"])


class BisectTest(unittest.TestCase):
    """lu series --bisect: its range, log digests and report."""

    def test_range(self):
        self.assertEqual(kbisect.parse_range(None, 20), (1, 20))
        self.assertEqual(kbisect.parse_range("1..4", 20), (1, 4))
        self.assertEqual(kbisect.parse_range("13..", 20), (13, 20))
        self.assertEqual(kbisect.parse_range("..3", 20), (1, 3))
        self.assertEqual(kbisect.parse_range("7", 20), (7, 7))
        for bad in ("", "..", "0..3", "4..2", "1..21", "21", "a..b", "1-4", "..0"):
            with self.assertRaises(HarnessError, msg=bad):
                kbisect.parse_range(bad, 20)

    def test_cli(self):
        a = cli.parse_args(["series"])
        self.assertEqual((a.bisect, a.bisect_range, a.arch), (False, None, "x86_64"))
        a = cli.parse_args(["series", "--bisect-range", "1..4"])
        self.assertEqual((a.bisect, a.bisect_range), (False, "1..4"))
        self.assertTrue(cli.parse_args(["series", "--bisect", "--arch", "arm64"]).bisect)

    def test_log_digests(self):
        log = ("  CC      mm/gup.o\n"
               "mm/gup.c:10:5: warning: unused variable 'x' [-Wunused-variable]\n"
               "warning: unused import: `kernel::prelude`\n"
               "warning: 1 warning emitted\n"
               "  RUSTC L rust/kernel.o\n"
               "error[E0425]: cannot find value `y` in this scope\n"
               " --> rust/kernel/folio.rs:3:5\n"
               "make[3]: *** [rust/Makefile:1: rust/kernel.o] Error 1\n")
        self.assertEqual(kbisect.count_warnings(log), 2)
        self.assertTrue(kbisect.tail(log).startswith("error[E0425]"))
        self.assertEqual(len(kbisect.tail(log, 2).splitlines()), 2)
        plain = "\n".join(f"line {i}" for i in range(100))
        self.assertEqual(kbisect.tail(plain, 3), "line 97\nline 98\nline 99")
        self.assertEqual(kbisect.duration(9.6), "10s")
        self.assertEqual(kbisect.duration(401), "6m41s")

    def test_report(self):
        drop = [("CONFIG_LIVEUPDATE_QUERY_TEST", "y", None),
                ("CONFIG_IOMMUFD_LIVEUPDATE", "y", "n")]
        steps = [kbisect.Step(1, "rust: a", True, 400, 2, drop, "/l/01.log"),
                 kbisect.Step(2, "tools: b", True, 3, 0, drop, "/l/02.log"),
                 kbisect.Step(3, "core: c", False, 65, 0, drop[1:], "/l/03.log",
                              "error: boom\nmake: *** Error 1"),
                 kbisect.Step(4, "mm: d", False, 30, 1, [], "/l/04.log", "error: again")]
        r = kbisect.format_report(steps, 20)
        lines = r.splitlines()
        self.assertIn("subject", lines[0])
        self.assertRegex(lines[2], r"^\s+1\s+ok\s+6m40s\s+2\s+2\s+rust: a$")
        self.assertRegex(lines[4], r"^\s+3\s+FAIL\s+1m05s\s+0\s+1\s+core: c$")
        self.assertIn("  patches 1-2: LIVEUPDATE_QUERY_TEST, IOMMUFD_LIVEUPDATE=n", lines)
        self.assertIn("  patch 3: IOMMUFD_LIVEUPDATE=n", lines)
        self.assertIn("  patch 4: none", lines)
        self.assertIn("4 of 20 patches built in 8m18s; 2 failed; first failure: patch 3: core: c",
                      lines)
        self.assertIn("  log: /l/03.log", lines)
        self.assertEqual(lines[-2:], ["  | error: boom", "  | make: *** Error 1"])
        self.assertNotIn("again", r)
        ok = kbisect.format_report(steps[:2], 2)
        self.assertTrue(ok.endswith("2 of 2 patches built in 6m43s; all built"))
        self.assertNotIn("opts:", kbisect.format_report(
            [kbisect.Step(1, "x", True, 1)], 1))


if __name__ == "__main__":
    unittest.main()


KHO_STAGE1 = """\
test_kho_bench: boot kho=0 counter_khz=2600000 totalram_pages=2300000 page_size=4096
test_kho_bench: preserve round=1 order=9 folios=8 ns=5000 free_delta=6
test_kho_bench: unpreserve round=1 order=9 folios=8 ns=3000 free_delta=0
test_kho_bench: preserve round=final order=9 folios=8 ns=4000 free_delta=0
"""
KHO_STAGE2 = """\
KHO bench: boot restore: kho_memory_init_early() 2600000 cycles
KHO bench: boot restore: kho_memory_init() 5200000 cycles
test_kho_bench: boot kho=1 counter_khz=2600000 totalram_pages=2290000 page_size=4096
"""


class KhoBenchTest(unittest.TestCase):
    def test_parse(self):
        from harness.luh import bench
        figs, problems = bench.kho_parse(KHO_STAGE1, KHO_STAGE2)
        self.assertEqual(problems, [])
        self.assertEqual(figs["passes"][0], ("preserve", "1", 8, 5000, 6))
        self.assertEqual(figs["restore"], {"kho_memory_init_early": 2600000,
                                           "kho_memory_init": 5200000})
        self.assertEqual(figs["boot2"], (1, 2600000, 2290000, 4096))

    def test_figures(self):
        from unittest import mock
        from harness.luh import bench
        res = mock.Mock(stages=[1, 2], problems=lambda n: [],
                        text=lambda k: KHO_STAGE1 if k == 1 else KHO_STAGE2)
        fig, failures = bench.Figures(), []
        with mock.patch.object(bench.vm, "run_chain", return_value=res):
            bench.kho_run("x86_64", {"c": None}, {}, "c", 9, 16, fig, failures)
        self.assertEqual(failures, [])
        rows = {(m, c): v["c"][0] for (b, m, c), v, _ in fig.rows()}
        cfg = "16 MiB, order 9 (8 folios)"
        self.assertEqual(len(rows), 12)
        self.assertEqual(rows[("boot restore: kho_memory_init_early()", cfg)], 1.0)
        self.assertEqual(rows[("boot restore: total", cfg)], 3.0)
        self.assertEqual(rows[("preserve, first pass: memory allocated (radix tree)", cfg)], 24)
        self.assertEqual(rows[("unpreserve: time per folio", cfg)], 375)

    def test_problems(self):
        from harness.luh import bench
        _, problems = bench.kho_parse(KHO_STAGE1.replace("round=final", "round=2"),
                                      KHO_STAGE2.splitlines()[0])
        self.assertEqual(len(problems), 3)
        self.assertEqual(bench.kho_vm_mem(4096), 9216)
        self.assertIn("test_kho_bench.order=9", bench.kho_cmdline(64, 9))


class BenchIcountPublishTest(unittest.TestCase):
    """lu bench --icount and --publish names (issue 19)."""

    def test_icount_chain(self):
        from unittest import mock
        from harness.luh import bench
        with mock.patch.object(bench.vm, "run_chain", return_value="r") as rc:
            bench.chain("n", [], {}, "x86_64", icount=True, mem=1024, extra_qemu=["-x"])
        args, kw = rc.call_args
        self.assertEqual(args[0], "n-icount")
        self.assertEqual((kw["smp"], kw["accel"]), (1, "tcg"))
        self.assertEqual(kw["extra_qemu"], ["-x", "-icount", "shift=0,sleep=off"])
        with mock.patch.object(bench.vm, "run_chain", return_value="r") as rc:
            bench.chain("n", [], {}, "x86_64", mem=1024)
        self.assertEqual((rc.call_args[0][0], rc.call_args[1]["smp"]), ("n", 2))

    def test_icount_figures(self):
        from harness.luh import bench
        fig = bench.Figures(icount=True)
        fig.add("blackout", "total", "1G", "c", 5.0, "ms")
        fig.add("throughput", "PRESERVE_FD time", "1G", "c", 122.0, "ms")
        fig.add("kho", "time per folio", "1G", "c", 154.0, "ns")
        self.assertEqual(sorted(k[0] for k in fig.data), ["kho", "throughput"])
        self.assertEqual(fig.units[("throughput", "PRESERVE_FD time")], "M insns")
        self.assertEqual(fig.units[("kho", "time per folio")], "insns")

    def test_publish(self):
        import tempfile
        from pathlib import Path
        from harness.luh import bench
        self.assertEqual(bench.publish_name("x86_64", ["kho"], False), ("kho", ""))
        self.assertEqual(bench.publish_name("arm64", ["blackout", "scale"], True),
                         ("", "-arm64-icount"))
        self.assertEqual(bench.publish_name("x86_64", ["iommufd"], False),
                         ("iommufd", "-x86_64"))
        notes = bench._notes(1024, [], ["kho"], 1024, icount=True)
        self.assertTrue(notes[2].startswith("- **--icount**"))
        with tempfile.TemporaryDirectory() as d:
            out, dest = Path(d) / "out", Path(d) / "bench"
            out.mkdir()
            (out / "BENCHMARKS.md").write_text("# r\n![kho](kho.png)\n")
            (out / "kho.png").write_bytes(b"png")
            (out / "figures.json").write_text("{}")
            path = bench.publish(out, dest / "kho", "-arm64")
            self.assertEqual(path, dest / "kho" / "BENCHMARKS-arm64.md")
            self.assertEqual(path.read_text(), "# r\n![kho](kho-arm64.png)\n")
            self.assertTrue((dest / "kho" / "kho-arm64.png").exists())
            self.assertTrue((dest / "kho" / "figures-arm64.json").exists())


class FuzzTest(unittest.TestCase):
    """lu-fuzz's summary line, its registration and `lu fuzz` (issue 18)."""

    LINE = ("[   41.5] LU-FUZZ calls=6000 errors=0 seed=7 stage=1 threads=4 ms=31234 "
            "create=900/120 retrieve_session=400/0 preserve=1500/300 retrieve_fd=20/0 "
            "finish=10/0 get_name=300/250 unpreserve=200/40 bad_cmd=600/0 open=40/3 "
            "close=200/190 verified=0")

    def test_summary_line(self):
        from harness.luh import fuzz
        d = fuzz.parse_summary(self.LINE)
        self.assertEqual((d["calls"], d["errors"], d["seed"], d["stage"]), (6000, 0, 7, 1))
        self.assertEqual((d["threads"], d["ms"], d["verified"]), (4, 31234, 0))
        self.assertEqual(d["counts"]["preserve"], (1500, 300))
        self.assertEqual(len(d["counts"]), 10)
        self.assertIsNone(fuzz.parse_summary("LU-FUZZ unexpected stage=1 seed=7 x"))
        self.assertEqual(fuzz.parse_summary(self.LINE.replace("errors=0", "errors=3"))
                         ["errors"], 3)
        two = fuzz.counts_note([d, d])
        self.assertIn("preserve=3000/600", two)

    def test_registered(self):
        from harness.luh import reliability
        self.assertIn("reliability:fuzz", reliability.SUITES)
        self.assertIn("reliability:fuzz", cli.SUITE_NAMES)
        a = cli.parse_args(["fuzz", "--calls", "200000", "--seed", "5"])
        self.assertEqual((a.calls, a.seed, a.debug, a.flavor), (200000, 5, True, "rust"))
        self.assertFalse(cli.parse_args(["fuzz", "--no-debug"]).debug)

    def test_upstream_flag(self):
        from harness.luh import fuzz
        self.assertIn("--upstream", fuzz.argv(1, 3, 10, "c"))
        self.assertNotIn("--upstream", fuzz.argv(2, 3, 10, "rust"))


class FailNthCountTest(unittest.TestCase):
    LOG = ("[   12.5] LU-FAILNTH-COUNT create points=4 injected=3 clean=4 absorbed=1 "
           "memfree_drift_kb=-8\n"
           "LU-FAILNTH ok create: every injected failure has a documented errno (errno 0: x)\n"
           "LU-FAILNTH-COUNT unpreserve points=0 injected=0 clean=0 absorbed=0 "
           "memfree_drift_kb=0 supported=0\n"
           "LU-FAILNTH-COUNT reboot points=0 injected=0 clean=0 absorbed=0 memfree_drift_kb=0\n"
           "LU-FAILNTH-REBOOT attempt 1\n"
           "LU-FAILNTH-COUNT reboot points=1 injected=1 clean=0 absorbed=0 "
           "memfree_drift_kb=12\n"
           "LU-FAILNTH-COUNT broken points=x\n")

    def test_parse(self):
        from harness.luh.faultinj import parse_counts
        counts = parse_counts(self.LOG)
        self.assertEqual(list(counts), ["create", "unpreserve", "reboot"])
        self.assertEqual(counts["create"], {"points": 4, "injected": 3, "clean": 4,
                                            "absorbed": 1, "memfree_drift_kb": -8})
        self.assertEqual(counts["unpreserve"]["supported"], 0)
        # The last line of an operation wins: the reboot's before the kexec.
        self.assertEqual(counts["reboot"], {"points": 1, "injected": 1, "clean": 0,
                                            "absorbed": 0, "memfree_drift_kb": 12})

    def test_problems(self):
        from harness.luh.faultinj import STAGE1_OPS, count_problems, parse_counts, summary
        counts = parse_counts(self.LOG)
        self.assertEqual(count_problems(counts, ("create",), "rust", False), [])
        self.assertEqual(count_problems(counts, ("unpreserve",), "c", False), [])
        self.assertEqual(count_problems(counts, ("unpreserve",), "rust", False),
                         ["unpreserve: supported=0, expected 1 on rust"])
        self.assertEqual(count_problems(counts, ("reboot",), "rust", False),
                         ["reboot: clean=0 of points=1"])
        p = count_problems(counts, STAGE1_OPS, "c", False)
        self.assertEqual(p, ["preserve-small: no count line", "preserve-multi: no count line",
                             "preserve-big: no count line",
                             "get-name: no count line", "close: no count line",
                             "reboot: clean=0 of points=1"])
        self.assertEqual(count_problems(counts, STAGE1_OPS, "c", True)[3],
                         "preserve-thp: no count line")
        self.assertEqual(summary({"create": counts["create"]}), "create 4/3/4 -8kB")


class RacesSoakTest(unittest.TestCase):
    """reliability:races and the soak (harness/luh/races.py)."""
    K = "7.3.4-lu-rust #3 PREEMPT_DYNAMIC Fri Nov 27 04:00:00 UTC 2026"

    def test_registered(self):
        from harness.luh import races, reliability
        self.assertIs(reliability.SUITES["reliability:races"], races.races)
        self.assertIs(reliability.SUITES["reliability:soak-smoke"], races.soak_smoke)
        self.assertEqual(reliability.PROGRAMS["lu-race"], (["lu-race.c"], ["-pthread"]))
        self.assertEqual(reliability.PROGRAMS["lu-soak"], (["lu-soak.c"], []))
        self.assertIn("reliability:races", cli.SUITE_NAMES)
        self.assertIn("reliability:soak-smoke", cli.SUITE_NAMES)

    def test_race_stats(self):
        from harness.luh import races
        text = ('x LU-RACE-STATS op="PRESERVE_FD" e0=12 e9=3 e16=40 calls=55\n'
                'LU-RACE-STATS op="FINISH" calls=0\n')
        self.assertEqual(races.race_stats(text), {"PRESERVE_FD": (55, {0: 12, 9: 3, 16: 40}),
                                                  "FINISH": (0, {})})

    def _res(self, stage2, results2, nstages):
        lines = [(0.0, "Linux version x (root@vm)"), (1.0, f"LU-STAGE 1 3 {self.K}"),
                 (2.0, "Linux version x (root@vm)"), (3.0, f"LU-STAGE 2 3 {self.K}")]
        lines += [(4.0, t) for t in stage2]
        lines += [(4.5, f"LU-RESULT 2 {n} {rc}") for n, rc in results2]
        if nstages == 3:
            lines += [(5.0, "Linux version x (root@vm)"), (6.0, f"LU-STAGE 3 3 {self.K}")]
        st = vm.parse_stages(lines, [self.K] * 3)
        return vm.RunResult("r", None, lines, st, "exited", "tcg", 1.0)

    def test_reboot_outcome(self):
        from harness.luh import races
        called = races._REBOOT_CALLED + " mid-ioctl"
        # kexec'd from the thread: no exit status, stage 3 reached.
        self.assertEqual(races.reboot_outcome(self._res([called], [("retrieve", 0)], 3)),
                         (True, "kexec'd from the program's thread"))
        # ... but stage 3 must be reached.
        self.assertFalse(races.reboot_outcome(self._res([called], [], 2))[0])
        # failed cleanly: errno reported, exit 0, init kexecs.
        ret = "LU-RACE reboot: reboot(LINUX_REBOOT_CMD_KEXEC) returned, errno 16"
        self.assertEqual(races.reboot_outcome(self._res([called, ret], [("reboot", 0)], 3)),
                         (True, "reboot(KEXEC) failed, errno 16; exit status 0"))
        self.assertFalse(races.reboot_outcome(self._res([called, ret], [("reboot", 1)], 3))[0])
        # exited without the reboot, or never called it.
        self.assertEqual(races.reboot_outcome(self._res([called], [("reboot", 1)], 3)),
                         (False, "exit status 1 without a reboot"))
        self.assertEqual(races.reboot_outcome(self._res([], [("reboot", 1)], 3)),
                         (False, "the reboot thread did not run (exit status 1)"))

    def test_soak_expected(self):
        from harness.luh import races
        # lu-soak.c's own figures (its small_gen()/small_size() run on the host).
        self.assertEqual(races.soak_expected(1, 64, 256), (0, 2 + 96))
        self.assertEqual(races.soak_expected(2, 64, 256), (336447106, 88))
        self.assertEqual(races.soak_expected(3, 64, 256), (336354413, 83))
        self.assertEqual(races.soak_expected(4, 64, 256), (336277284, 77))

    def test_soak_lines_and_flavors(self):
        from harness.luh import races
        text = ("[x] LU-SOAK stage=3 bytes_verified=336354413 memfree_kb=1234 t_ms=987 "
                "files=83 next_kb=40\nLU-SOAK ok every byte (errno 0: Success)\n")
        self.assertEqual(races.soak_lines(text),
                         {3: {"bytes_verified": 336354413, "memfree_kb": 1234, "t_ms": 987,
                              "files": 83, "next_kb": 40}})
        self.assertEqual(races.soak_flavors("alternate", 5), ["rust", "c", "rust", "c", "rust"])
        self.assertEqual(races.soak_flavors("c", 2), ["c", "c"])

    def test_soak_drift(self):
        from harness.luh import races
        rows = [(2, "rust", 1000), (3, "c", 500), (4, "rust", 1010), (5, "c", 400),
                (6, "rust", 990), (7, "c", 300)]
        d = races.soak_drift(rows)
        self.assertEqual(d["rust"], (-10, -5.0, 20, 3))
        self.assertEqual(d["c"], (-200, -100.0, 100, 3))
        self.assertEqual(races.soak_drift([(2, "rust", 7)]), {"rust": (0, 0.0, 0, 1)})

    def test_soak_cli(self):
        a = cli.parse_args(["soak"])
        self.assertEqual((a.stages, a.flavor, a.size_mib, a.sparse_mib, a.debug),
                         (20, "rust", 1024, 4096, False))
        a = cli.parse_args(["soak", "--flavor", "alternate", "--debug", "--stages", "6",
                            "--size-mib", "64", "--arch", "arm64"])
        self.assertEqual((a.stages, a.flavor, a.size_mib, a.debug, a.arch),
                         (6, "alternate", 64, True, "arm64"))

    def test_soak_adjusted(self):
        from harness.luh import races
        self.assertEqual(races.soak_adjusted({"memfree_kb": 1000, "shmem_kb": 300,
                                              "next_kb": 20}, {"data_kb": 7}), 1320)
        # Lines without Shmem: the data the previous stage preserved.
        self.assertEqual(races.soak_adjusted({"memfree_kb": 1000, "next_kb": 20},
                                             {"data_kb": 7}), 1027)


class ClientSystemdTest(unittest.TestCase):
    """client:systemd's reading of the two boots (harness/luh/client.py)."""

    ID1 = "7.3.4-lu-c #1 PREEMPT_DYNAMIC Sat Dec  5 18:36:45 UTC 2026"
    ID2 = "7.3.4-lu-rust #1 PREEMPT_DYNAMIC Sat Dec  5 18:32:02 UTC 2026"
    SEED = "a466eddbe58caa55"
    MAPPING = ('{"version":1,"state":{"KExecCount":0},"units":{"lu-fdstore.service":'
               '{"fdstore":[{"type":"fd","name":"state","token":1},'
               '{"type":"fd","name":"ram","token":2}]}}}')

    def boot1(self):
        s = self.SEED
        return [
            "Linux version 7.3.4-lu-c (root@vm) (gcc 12.2.0) #1",
            f"lu-fdstore[89]: LU-FDSTORE created seed={s} ram=16777216 state=4096",
            "lu-fdstore[89]: LU-FDSTORE stored names=ram:state",
            "lu-fdstore[89]: LU-FDSTORE result ok stored",
            f"lu-client[99]: LU-CLIENT stage 1 {self.ID1}",
            "lu-client[99]: LU-CLIENT systemd 262",
            "lu-client[99]: LU-CLIENT fdstore-state active success",
            "lu-client[99]: LU-CLIENT fdstore-count 2",
            "lu-client[99]: LU-CLIENT kexec-count 0",
            "lu-client[99]: LU-CLIENT kexec-load 0",
            "lu-client[99]: LU-CLIENT kexec-loaded 1",
            "systemd-shutdown[1]: Preserved fd stores in LUO session 'systemd' for kexec.",
            "systemd-shutdown[1]: Rebooting with kexec.",
        ]

    def boot2(self, seed=None, bad="0"):
        s = seed or self.SEED
        return [
            "Linux version 7.3.4-lu-rust (root@vm) (gcc 12.2.0) #1",
            "lu-fdstore[79]: LU-FDSTORE listen fds=2 names=ram:state",
            f"lu-fdstore[79]: LU-FDSTORE received name=state fd=4 fs=tmpfs seals=0 bytes=4096 "
            f"bad=0 seed={s}",
            "lu-fdstore[79]: LU-FDSTORE result ok state",
            f"lu-fdstore[79]: LU-FDSTORE received name=ram fd=3 fs=tmpfs seals=0 bytes=16777216 "
            f"bad={bad} seed={s}",
            "lu-fdstore[79]: LU-FDSTORE result ok ram",
            f"lu-client[90]: LU-CLIENT stage 2 {self.ID2}",
            "lu-client[90]: LU-CLIENT systemd 262",
            "lu-client[90]: LU-CLIENT fdstore-state active success",
            "lu-client[90]: LU-CLIENT fdstore-count 2",
            "lu-client[90]: LU-CLIENT kexec-count 1",
            f"lu-client[102]: LU-CLIENT journal-before LU-FDSTORE created seed={self.SEED} "
            "ram=16777216 state=4096",
            f"lu-client[103]: LU-CLIENT journal-after LU-FDSTORE received name=ram fd=3 "
            f"fs=tmpfs seals=0 bytes=16777216 bad=0 seed={s}",
            "lu-client[107]: LU-CLIENT pid1 Found LUO session 'systemd', restoring fd stores.",
            "lu-client[107]: LU-CLIENT pid1 Restored 2 fd(s) total from LUO session.",
            "lu-client[107]: LU-CLIENT pid1 lu-fdstore.service: Passing 2 fds to service",
            "lu-client[90]: LU-CLIENT done",
        ]

    def check(self, b1, b2, peek=False):
        from harness.luh import client
        boots = client.split_boots([(float(i), t) for i, t in enumerate(b1 + b2)])
        return client.check_run(boots, [self.ID1, self.ID2], peek)

    def test_a_good_run_passes(self):
        bad, seen = self.check(self.boot1(), self.boot2())
        self.assertEqual(bad, [])
        self.assertEqual(seen["seed"], self.SEED)
        self.assertEqual(sorted(seen["received"]), ["ram", "state"])

    def test_what_fails(self):
        # Another seed: the fds did not come from the first boot.
        bad, _ = self.check(self.boot1(), self.boot2(seed="0123456789abcdef"))
        self.assertTrue(any(b.startswith("boot 2: ram: ") for b in bad), bad)
        bad, _ = self.check(self.boot1(), self.boot2(bad="3"))
        self.assertEqual(bad, ["boot 2: ram: {'name': 'ram', 'fd': '3', 'fs': 'tmpfs', "
                               "'seals': '0', 'bytes': '16777216', 'bad': '3', "
                               f"'seed': '{self.SEED}'}}, expected seed {self.SEED}, "
                               "16777216 bytes, 0 bad"])
        # No "Preserved" line from systemd-shutdown.
        b1 = [t for t in self.boot1() if "Preserved fd stores" not in t]
        bad, _ = self.check(b1, self.boot2())
        self.assertEqual(bad, ["boot 1: systemd-shutdown did not print \"systemd-shutdown[1]: "
                               "Preserved fd stores in LUO session 'systemd' for kexec.\""])
        # The second boot on the wrong kernel.
        b2 = [t.replace(self.ID2, self.ID1) for t in self.boot2()]
        bad, _ = self.check(self.boot1(), b2)
        self.assertEqual(len(bad), 1)
        self.assertIn("boot 2: stage line", bad[0])
        # An old systemd.
        b1 = [t.replace("LU-CLIENT systemd 262", "LU-CLIENT systemd 260") for t in self.boot1()]
        bad, _ = self.check(b1, self.boot2())
        self.assertEqual(bad, ["systemd '260' in the guest; 261 or later needed"])
        # One boot only.
        bad, _ = self.check(self.boot1(), [])
        self.assertEqual(bad, ["1 boots, expected 2"])

    def test_control_run(self):
        import base64
        import json
        rep = {"command": "manifest", "session": "systemd", "format": "Systemd",
               "entries": [{"name": "lu-fdstore.service/state", "token": 1},
                           {"name": "lu-fdstore.service/ram", "token": 2}],
               "text": self.MAPPING}
        def peek(rep):
            text = base64.b64encode(json.dumps(rep).encode()).decode()
            return ["LU-CLIENT peek-status 0"] + [
                f"lu-client[90]: LU-CLIENT peek-b64 {text[i:i + 40]}"
                for i in range(0, len(text), 40)]

        b2 = [
            "Linux version 7.3.4-lu-rust (root@vm) (gcc 12.2.0) #1",
        ] + peek(rep) + [
            "lu-fdstore[79]: LU-FDSTORE result FAIL fds from the fd store (LISTEN_FDS is not set)",
            f"lu-client[90]: LU-CLIENT stage 2 {self.ID2}",
            "lu-client[90]: LU-CLIENT fdstore-state failed exit-code",
            "lu-client[90]: LU-CLIENT fdstore-count 0",
            "lu-client[90]: LU-CLIENT kexec-count 0",
            "lu-client[114]: LU-CLIENT pid1 No LUO session 'systemd' found, skipping fd store "
            "restoration.",
            "lu-client[90]: LU-CLIENT done",
        ]
        bad, seen = self.check(self.boot1(), b2, peek=True)
        self.assertEqual(bad, [])
        self.assertEqual(seen["peek"], rep)
        rest = b2[len(peek(rep)) + 1:]
        # What the crate read must be what the manifest says.
        rep["entries"][0]["token"] = 2
        bad, _ = self.check(self.boot1(), b2[:1] + peek(rep) + rest, peek=True)
        self.assertEqual(len(bad), 1)
        self.assertIn("luoctl read Systemd systemd", bad[0])
        # The service got fds although the session was taken: not a control.
        bad, _ = self.check(self.boot1(), b2[:1] + self.boot2()[2:3] + rest, peek=True)
        self.assertIn("boot 2: lu-fdstore received ['state'] without a session", bad)
        self.assertIn("boot 2: lu-peek's luoctl exited '': ", bad)

    def test_relayed_lines_are_not_the_services(self):
        # Only lu-client's relay of the journal says "received": not enough.
        b2 = [t for t in self.boot2() if "LU-FDSTORE received" not in t
              or "journal-after" in t]
        bad, _ = self.check(self.boot1(), b2)
        self.assertIn("boot 2: lu-fdstore did not receive 'ram'", bad)
        self.assertIn("boot 2: lu-fdstore did not receive 'state'", bad)

    def test_manifest_names_and_fragments(self):
        from harness.luh import client
        self.assertEqual(client.manifest_names(self.MAPPING),
                         {"lu-fdstore.service/state": 1, "lu-fdstore.service/ram": 2})
        self.assertEqual(client.systemd_major("262.1-1"), 262)
        self.assertIsNone(client.systemd_major("x"))
        frags = kconfig.fragments("x86_64", "rust", variant="client")
        self.assertEqual([f.name for f in frags[-2:]], ["client.config", "client-x86_64.config"])
        self.assertNotIn("client.config", [f.name for f in kconfig.fragments("x86_64", "rust")])
        self.assertEqual(kbuild.build_dir("arm64", "c", variant="client").name, "c-client")
        self.assertIn("CONFIG_CGROUPS", kconfig.requested(frags))


class VmSurvivesTest(unittest.TestCase):
    """vm:survives's reading of lu-vmm's lines (harness/luh/survive.py): real lines of an
    arm64 rust>rust run."""

    STARTED = ("LU-VMM event=started counter=8259458 ticks=146 passes=2016 bad_passes=0 "
               "other_irqs=0 cntfrq=1000000000 max_gap=2990484 fault=0")
    SAVED = ("LU-VMM event=saved counter=8949760 ticks=158 passes=2184 guest_last_cnt=1732795256 "
             "host_minus_guest=1707323139 host_freq=1000000000 host_request=3439532333 "
             "host_paused=3447857596 host_saved=3459667792 host_preserved=3476124715 "
             "guest_last_host=3440118395 state_bytes=18594 pause_save_ms=36.006")
    RESTORED = ("LU-VMM event=restored counter_saved=8949760 counter_restored=8949760 "
                "counter_after=16986112 gap_counter=8949761 ticks_saved=158 ticks_after=303 "
                "passes_saved=2184 passes_after=4146 bad_passes=0 region_sum=0xd7be701ccab1e0b3 "
                "bad_words=0 guest_gap=2855957743 cntfrq=1000000000 host_freq=1000000000 "
                "host_start=6139828015 host_restored=6256146408 guest_last_host=3440118395 "
                "guest_first_host=6296076138 host_saved=3459667792 guest_pause_ms=2855.958 "
                "restore_ms=116.318 restore_resume_ms=156.248 checks=ok")

    def run_check(self, restored=None, extra2=(), saved=None):
        from harness.luh import survive
        lines = [(1, "lu-vmm: noise"), (1, self.STARTED), (1, saved or self.SAVED),
                 (2, restored or self.RESTORED)] + [(2, t) for t in extra2]
        return survive.check(survive.events(lines))

    def test_good_run_and_pause_split(self):
        bad, fig = self.run_check()
        self.assertEqual(bad, [])
        self.assertEqual(fig["counter"], 8949760)
        self.assertEqual(fig["counter_after"], 16986112)
        self.assertAlmostEqual(fig["pause_ms"], 2855.957743)
        self.assertAlmostEqual(fig["pause_save_ms"], 36.00632)
        self.assertAlmostEqual(fig["blackout_ms"], 2663.7033)
        self.assertAlmostEqual(fig["restore_resume_ms"], 156.248123)
        self.assertAlmostEqual(fig["restore_ms"], 116.318393)
        self.assertAlmostEqual(fig["pause_save_ms"] + fig["blackout_ms"]
                               + fig["restore_resume_ms"], fig["pause_ms"])

    def test_failures_are_caught(self):
        r = self.RESTORED
        cases = {
            r.replace("counter_restored=8949760", "counter_restored=0"):
                "counter 8949760 at the pause; the next kernel's snapshot says 8949760 and "
                "guest RAM 0",
            r.replace("counter_after=16986112", "counter_after=8949760"):
                "counter 8949760 after the resume, 8949760 at the pause",
            r.replace("gap_counter=8949761", "gap_counter=8949762"):
                "the guest's pause ended at counter 8949762, it stopped at 8949760",
            r.replace("ticks_after=303", "ticks_after=158"):
                "timer ticks 158 at the pause, 158 saved, 158 after",
            r.replace("bad_words=0", "bad_words=3"):
                "3 words of the guest's region changed",
            r.replace("bad_passes=0", "bad_passes=1"):
                "region checks 2184 at the pause, 4146 after, 1 bad",
            r.replace("guest_gap=2855957743", "guest_gap=2000000000"):
                "the guest's clock shows 2000000000 ticks of pause, less than the host's "
                "blackout of 2663703300",
            r.replace("host_start=6139828015 ", ""): "LU-VMM lines lack host_start",
            r.replace("checks=ok", "checks=FAIL"): "lu-vmm's own checks: FAIL",
        }
        for line, want in cases.items():
            bad, _ = self.run_check(restored=line)
            self.assertEqual(bad, [want])
        bad, _ = self.run_check(extra2=['LU-VMM check=FAIL what="region checksum 0x1"'])
        self.assertEqual(bad, ["lu-vmm check: region checksum 0x1"])
        bad, _ = self.run_check(extra2=['LU-VMM event=error error="KVM_RUN: EFAULT"'])
        self.assertEqual(bad, ["stage 2: lu-vmm error: KVM_RUN: EFAULT"])
        from harness.luh import survive
        bad, _ = survive.check(survive.events([(1, self.STARTED), (1, self.SAVED)]))
        self.assertEqual(bad, ["no 'LU-VMM event=restored' line"])
        # A restore line that ran in stage 1 does not count.
        bad, _ = survive.check(survive.events([(1, self.STARTED), (1, self.SAVED),
                                               (1, self.RESTORED)]))
        self.assertEqual(bad, ["no 'LU-VMM event=restored' line"])

    def test_stages_and_client_fragments(self):
        from harness.luh import survive
        b = {"c": "C", "rust": "R"}
        st = survive.stages(b, ("c", "rust"), run_ms=7)
        self.assertEqual([s.build for s in st], ["C", "R"])
        self.assertEqual([n for n, _ in st[0].programs], ["vmm-start", "vmm-update"])
        self.assertIn("7", st[1].programs[0][1])
        names = [f.name for f in kconfig.fragments("arm64", "rust", variant="client")]
        self.assertEqual(names[-2:], ["client.config", "client-arm64.config"])
        self.assertIn("CONFIG_KVM", kconfig.requested(
            kconfig.fragments("x86_64", "c", variant="client")))
        self.assertTrue(survive.supported("x86_64"))
        self.assertTrue(survive.supported("arm64"))
