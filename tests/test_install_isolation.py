"""Installing qref changes nothing else: a foreign project's hypothesis tests keep hypothesis' defaults,
its own `--backend` option coexists with qref's plugin, the wheel installs only `qref`-named import
packages, and `import qref` loads no test tooling, framework or checkpoint library."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FOREIGN_CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--backend", action="store", default="theirs")
"""

FOREIGN_TEST = """
import json, os
from hypothesis import given, settings, strategies as st

SEEN = []


@given(st.integers())
def test_property(x):
    SEEN.append(x)


def test_record_hypothesis_settings():
    d = settings.default
    record = {
        "max_examples": d.max_examples,
        "derandomize": d.derandomize,
        "database": d.database is None,
        "deadline": str(d.deadline),
        "suppress_health_check": sorted(str(h) for h in d.suppress_health_check),
        "examples_run": len(SEEN),
    }
    with open(os.environ["FOREIGN_RECORD"], "w") as f:
        json.dump(record, f)


def test_own_backend_option(request):
    assert request.config.getoption("--backend") == "mine"
"""


def _run_foreign(tmp_path, *extra):
    record = tmp_path / f"record{len(extra)}.json"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "--backend", "mine"]
        + ["-o", "addopts=", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "FOREIGN_RECORD": str(record)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout
    return json.loads(record.read_text())


def test_foreign_project_keeps_hypothesis_defaults_and_its_backend_option(tmp_path):
    """The foreign project's hypothesis settings are whatever hypothesis itself chooses in this environment
    (its defaults, or its own `ci` profile where a CI variable is set): the same with qref's plugin
    loaded as without it."""
    (tmp_path / "conftest.py").write_text(FOREIGN_CONFTEST)
    (tmp_path / "test_foreign.py").write_text(FOREIGN_TEST)
    with_qref = _run_foreign(tmp_path)
    without_qref = _run_foreign(tmp_path, "-p", "no:qref")
    assert with_qref == without_qref
    assert with_qref["max_examples"] == 100 and with_qref["examples_run"] > 40  # not a 40-example profile
    plugins = subprocess.run(
        [sys.executable, "-m", "pytest", "--trace-config", "--co", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout
    assert "qref.conformance.plugin" in plugins  # the first run above had qref's plugin loaded


def test_import_qref_loads_no_tooling():
    code = textwrap.dedent("""
        import sys, qref, qref.codebooks, qref.lqlora, qref.quailora, qref.loftq, qref.gptq_pack, qref.registry
        bad = sorted(m for m in sys.modules if m.split(".")[0] in
                     {"pytest", "hypothesis", "torch", "cupy", "safetensors", "transformers", "peft",
                      "bitsandbytes", "torchao", "experiments", "conformance", "backends"}
                     or m.startswith(("qref.conformance", "qref.backends", "qref.cli")))
        print(",".join(bad))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"import qref loaded {r.stdout.strip()}"


def test_wheel_installs_only_qref_named_packages(wheel):
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names}
    assert all(t == "qref" or t.startswith("qref-") for t in top), top
    for path in (
        "qref/backends/torch_backend.py",
        "qref/backends/kernels/quant.cu",
        "qref/conformance/test_suite.py",
        "qref/conformance/plugin.py",
        "qref/conformance/qref_vectors_v1.schema.json",
    ):
        assert path in names, path
    assert not any(n.startswith("qref/experiments") for n in names)
    entry = wheel.read([n for n in names if n.endswith("entry_points.txt")][0]).decode()
    assert "qref.backends.torch_backend:TorchBackend" in entry and "qref.conformance.plugin" in entry
