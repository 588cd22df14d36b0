"""``bench/postgres_bench.py --quick`` runs end to end, so that ``make bench``'s side-by-side table cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys

from twisted.trial import unittest

from tests import postgres_support
from tests.test_twistd import ROOT


class PostgresBenchTests(unittest.TestCase):
    skip = postgres_support.skip_reason()

    def test_quick_run_prints_every_step_for_every_setup(self):
        result = subprocess.run([sys.executable, str(ROOT / "bench" / "postgres_bench.py"), "--quick"],
                                cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # a hang check
        self.assertEqual(result.returncode, 0, result.stdout[-2000:] + result.stderr[-2000:])
        table = result.stdout[result.stdout.index("\nstep "):]
        self.assertRegex(table, r"step +unit +embedded +pg 1 front +pg 3 fronts\n")
        for step in ("LMTP deliver", "IMAP APPEND", "FETCH", "STORE", "login cycle"):
            rates = re.search(rf"^{step} +\S+((?: +\d+){{3}})$", table, re.MULTILINE)
            self.assertIsNotNone(rates, f"no figures for {step}:\n{table}")
            cpu = table[rates.end():].splitlines()[1]
            self.assertRegex(cpu, r"^ +CPU ms/op +\d+\.\d\d +\d+\.\d\d\+\d+\.\d\d +\d+\.\d\d\+\d+\.\d\d$")
