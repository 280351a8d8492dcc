"""The layers of qref, checked on the installed layout: import-linter's contracts (.importlinter) on the
unpacked wheel, and a whitelist: the spec modules import numpy, scipy, the standard library and
other spec modules only, at any depth of a function."""

import ast
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def spec_modules() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    return cfg["importlinter:contract:spec"]["source_modules"].split()


def module_file(name: str) -> Path:
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def layer_modules() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    return set(cfg["importlinter:contract:layers"]["layers"].split())


def test_every_module_of_qref_is_in_a_layer():
    listed = set(spec_modules()) | layer_modules()
    for path in sorted((ROOT / "qref").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        owner = next((m for m in listed if name == m or (name.startswith(m + ".") and m != "qref")), None)
        assert owner is not None, f"{name} is in no layer of .importlinter"


@pytest.mark.parametrize("name", spec_modules())
def test_spec_imports_numpy_scipy_and_stdlib_only(name):
    allowed = {"numpy", "scipy", "qref"} | set(sys.stdlib_module_names)
    for f in [module_file(name)]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            assert set(tops) <= allowed, f"{f.relative_to(ROOT)}:{node.lineno} imports {tops}"


def test_import_linter_contracts_hold_on_the_installed_layout(wheel, tmp_path):
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[lint]')")
    wheel.extractall(tmp_path / "site")
    r = subprocess.run(
        [lint, str(ROOT / ".importlinter")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in r.stdout
