"""The suite and the main job against the torch:cpu backend, as a user runs them (subprocesses of the
installed commands): `pytest --pyargs qref.conformance --qref-backend torch:cpu` and `qref check`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
BIN = Path(sys.executable).parent


def test_suite_passes_on_torch_cpu(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "qref.conformance",
            "--qref-backend",
            "torch:cpu",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert "qref conformance: torch:cpu vs the reference" in r.stdout and " passed" in r.stdout
    assert " skipped" not in r.stdout.splitlines()[-1]


def test_qref_check_on_torch_cpu(tmp_path):
    r = subprocess.run(
        [str(BIN / "qref"), "check", "--quick", "--backend", "torch:cpu", "--no-libraries"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert r.stdout.splitlines()[-1].startswith("verdict: OK: 1 of 1 backends conform (torch:cpu)")
