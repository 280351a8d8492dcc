"""qref's own mutation testing: every single-fault backend of conformance/mutants.py is rejected by the
conformance suite in the default profile (`python -m qref.conformance.mutation`)."""

import json
import subprocess
import sys


def test_every_mutant_is_caught(tmp_path):
    out = tmp_path / "mutation.json"
    r = subprocess.run(
        [sys.executable, "-m", "qref.conformance.mutation", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())
    survivors = [m["mutant"] for m in result["mutants"] if m["caught_by"] is None]
    assert r.returncode == 0 and not survivors, f"survived: {survivors}\n{r.stdout[-2000:]}"
    assert result["total"] >= 60


def test_a_survivor_fails_the_run(tmp_path, monkeypatch):
    """The runner can fail: a 'mutant' identical to the reference survives and the exit status is 1."""
    from qref.conformance import mutants, mutation
    from qref.numpy_backend import NumpyBackend

    monkeypatch.setattr(mutants, "MUTANTS", [mutants.Mutant("identity", "blockwise.ties", "no fault", NumpyBackend)])
    assert mutation.main(["identity"]) == 1
