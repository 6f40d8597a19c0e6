"""``python -m tests.mutation [--all] [--only TEXT] [--jobs N]``: apply each mutant of ``tests/mutation/mutants.py``
to a copy of the package and run its tests against the copy; every mutant must make them fail.

The copy (``mirage_jax/``, ``configs/``, ``tests/``, ``pytest.ini``) goes to a temporary folder where pytest
runs, first on ``PYTHONPATH``, so the tests import the mutated package. The unmutated copy is run first: its
tests must pass (else every mutant would look killed). Default: the ``ci`` subset; ``--all``: every mutant.
Prints a table; exits 1 if a mutant survives, an edit no longer applies (its ``find`` text is not exactly once
in its file) or the baseline fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.mutation.mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]


def _copy(dest: Path, mutant: Mutant | None) -> None:
    """The package, configs and tests (pytest imports from the folder it runs in) into ``dest``, mutated."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("mirage_jax", "configs", "tests"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copy(ROOT / "pytest.ini", dest / "pytest.ini")
    if mutant is None:
        return
    target = dest / mutant.file
    text = target.read_text()
    if text.count(mutant.find) != 1:
        raise ValueError(f"{mutant.file}: the edit of {mutant.name!r} found {text.count(mutant.find)} times")
    target.write_text(text.replace(mutant.find, mutant.replace))


def _run(tests, mutant: Mutant | None, cache: str) -> tuple[int, float, str]:
    """``(pytest exit code, seconds, last output line)`` of ``tests`` against a (mutated) copy."""
    with tempfile.TemporaryDirectory(prefix="mirage_mutant_") as tmp:
        try:
            _copy(Path(tmp), mutant)
        except ValueError as err:
            return -1, 0.0, str(err)
        env = dict(os.environ, PYTHONPATH=tmp, JAX_COMPILATION_CACHE_DIR=cache,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                   MIRAGE_REQUIRE_PARITY="1")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *tests], cwd=tmp, env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        return proc.returncode, time.perf_counter() - start, lines[-1] if lines else proc.stderr[-200:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every mutant, not only the CI subset")
    parser.add_argument("--only", default=None, help="only mutants whose name contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if (args.all or m.ci) and (args.only is None or args.only in m.name)]
    with tempfile.TemporaryDirectory(prefix="mirage_mutant_cache_") as cache:
        tests = sorted({t for m in mutants for t in m.tests})
        code, seconds, last = _run(tests, None, cache)
        print(f"baseline ({len(tests)} test files, unmutated copy): exit {code} in {seconds:.0f} s: {last}")
        if code != 0:
            return 1
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda m: (m, *_run(m.tests, m, cache)), mutants))
    failures = 0
    width = max(len(m.name) for m in mutants)
    for mutant, code, seconds, last in results:
        verdict = {1: "killed", 0: "SURVIVED", -1: "STALE"}.get(code, f"ERROR (exit {code})")
        failures += verdict != "killed"
        print(f"{mutant.name:<{width}}  {verdict:<9} {seconds:6.0f} s  {last}")
    print(f"{len(results) - failures} of {len(results)} mutants killed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
