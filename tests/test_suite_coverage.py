"""The conformance suite on the numpy backend executes at least 95% of the branches of the spec modules
the backend interface runs (pyproject.toml [tool.coverage]); the report is printed on failure."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("coverage")


def test_suite_covers_the_spec(tmp_path):
    env_file = tmp_path / ".coverage"
    run = [sys.executable, "-m", "coverage", "run", f"--data-file={env_file}", "-m", "pytest", "-q"]
    run += ["-p", "no:cacheprovider", "--pyargs", "qref.conformance", "--qref-backend", "numpy"]
    r = subprocess.run(run, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = subprocess.run(
        [sys.executable, "-m", "coverage", "report", f"--data-file={env_file}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(rep.stdout)
    assert rep.returncode == 0, f"branch coverage below the floor:\n{rep.stdout}{rep.stderr}"
