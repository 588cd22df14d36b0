"""``make bench``: run every benchmark script in this folder and print its figures.

Each ``bench/*_bench.py`` is a standalone script that prints a few lines of
figures (medians of several runs). Speed is shown here, never asserted by a
test. ``stress_bench`` runs in its quick mode (one run of each case);
``BENCH_FULL=1 make bench`` runs its full set (medians of three).
``postgres_bench`` (the embedded store beside PostgreSQL with 1 and 3 front
ends, about 3 minutes) says "skipped: ..." where PostgreSQL's binaries or
psycopg are missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Options a script gets here, to keep ``make bench`` short; ``BENCH_FULL=1`` leaves them out.
QUICK = {"stress_bench": ["--quick"]}


def main() -> int:
    scripts = sorted(HERE.glob("*_bench.py"))
    if not scripts:
        print("no benchmarks yet")
        return 0
    failed = 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        options = [] if os.environ.get("BENCH_FULL") else QUICK.get(script.stem, [])
        result = subprocess.run([sys.executable, str(script), *options], cwd=HERE.parent, check=False)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
