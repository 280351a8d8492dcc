"""The `qref` command line."""

import subprocess
import sys

import pytest

from qref.cli import main


def test_check_prints_a_table_or_names_the_missing_peer(capsys):
    status = main(["check", "--quick"])
    out = capsys.readouterr().out
    assert status == 0
    assert ("quantize_4bit packed" in out and "first mismatch" in out) or "bitsandbytes: skipped" in out


def test_unknown_peer_is_an_error():
    with pytest.raises(SystemExit, match="unknown peer"):
        main(["check", "nosuchlib"])


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "qref.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check" in out.stdout


def test_report_rows_count_unexplained_differences():
    import numpy as np

    from qref.conformance import divergences
    from qref.conformance.report import Row

    row = Row("op", "cfg")
    row.add("same", np.array([1.0, 0.0], np.float32), np.array([1.0, 0.0], np.float32))
    row.add(
        "sign",
        np.array([1.0, 0.0], np.float32),
        np.array([1.0, -0.0], np.float32),
        classifiers=[divergences.signed_zero],
    )
    row.add(
        "real",
        np.array([1.0, 0.5], np.float32),
        np.array([1.0, -0.5], np.float32),
        classifiers=[divergences.signed_zero],
    )
    row.add("shape", np.zeros(2, np.float32), np.zeros(3, np.float32))
    assert (row.cases, row.exact, row.explained, row.mismatches) == (4, 1, 1, 2)
    assert row.first.startswith("real: 1 differ, first at 1")
