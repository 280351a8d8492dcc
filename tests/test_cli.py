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
