"""The `qref` command line."""

import subprocess
import sys

import pytest

from qref.cli import main


def test_check_reads_as_a_user_reads_it(capsys):
    """Progress on stderr, no third-party noise, tables within 120 columns, a final verdict line."""
    status = main(["check", "--quick"])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert status == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[-1].startswith("verdict: OK: ") and "0 unexplained" in lines[-1]
    assert "backend torch:cpu vs the reference" in out or "skipped torch" in out
    assert ("quantize_4bit packed" in out and "first unexplained" in out) or "skipped bitsandbytes" in out
    assert all(line.startswith("qref check: ") for line in err.splitlines()), err
    assert "CUDA extension not installed" not in out + err and "Warning" not in out + err


def test_check_json_and_markdown(capsys):
    import json

    assert main(["check", "--quick", "--no-libraries", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"].startswith("verdict: OK") and all(s["kind"] == "backend" for s in doc["sections"])
    assert main(["check", "--quick", "--no-libraries", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| op | configuration |" in out and "**verdict: OK" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "nosuchlib"],
        ["check", "--backend", "nosuch", "--no-libraries"],
        ["check", "--width", "10"],
        ["validate", "--device", "tpu"],
        ["validate", "nosuchlib"],
        ["conform", "nosuch"],
        ["vectors", "check", "/nonexistent-qref-dir"],
    ],
)
def test_usage_and_input_errors_exit_2_with_one_line(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err and err[-1].startswith(("qref ", "usage:")) and "Traceback" not in "\n".join(err)


def test_writing_commands_refuse_existing_outputs(tmp_path, capsys):
    existing = tmp_path / "report.json"
    existing.write_text("keep me")
    assert main(["validate", "auto-gptq", "--quick", "--json", str(existing)]) == 2
    assert existing.read_text() == "keep me" and "--overwrite" in capsys.readouterr().err
    folder = tmp_path / "vectors"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    assert main(["vectors", "export", str(folder)]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]
    assert main(["vectors", "export", str(folder), "--overwrite"]) == 0
    assert main(["vectors", "export", str(tmp_path / "new" / "deeper")]) == 0  # a new folder is made
    assert (tmp_path / "new" / "deeper" / "quantize_4bit_v1.json").is_file()
    src = tmp_path / "m.safetensors"
    src.write_bytes(b"not touched")
    assert main(["init", str(src), str(src)]) == 2
    assert src.read_bytes() == b"not touched"


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


def test_experiment_and_init_refuse_before_any_work(tmp_path, capsys):
    import os

    taken = tmp_path / "results"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    assert main(["experiment", "--size", "small", "--out", str(taken)]) == 2
    assert (taken / "mine.txt").read_text() == "keep" and "--overwrite" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["experiment", "--out", str(locked / "r")]) == 2
    src = tmp_path / "m.safetensors"
    src.write_bytes(b"x")
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old")
    assert main(["init", str(src), str(dst)]) == 2 and dst.read_bytes() == b"old"
    assert main(["init", str(src), str(tmp_path / "blocker" / "x.safetensors")]) in (1, 2)
