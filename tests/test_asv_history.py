"""The performance history (asv_bench/history.py): results are filed under the Python version and the
given commit, a GPU runner's env.json names the machine, and `check` fails on a timing that got slower
between a machine's two newest recorded commits (and passes on the recorded history)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "asv_bench"))
import history  # noqa: E402

MACHINE = "x86-64-2core-avx512"


def test_a_gpu_runner_environment_names_the_machine(tmp_path):
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"device": "NVIDIA H200, 580.159.04, 143771 MiB", "cuda": "13.0", "cpu": "x86_64"}))
    info = history.host_machine(None, str(env))
    assert info["machine"] == "nvidia-h200"
    assert "NVIDIA H200, 580.159.04, 143771 MiB" in info["cpu"] and "CUDA 13.0" in info["cpu"]
    assert history.host_machine("mine", str(env))["machine"] == "mine"


def test_the_gpu_hosts_description_comes_from_its_env(tmp_path):
    """The GPU runner's env.json names the host's CPU model, cores and memory (whole calls from Python depend
    on them): the machine's description is the GPU host's, not the one that files the results."""
    env = tmp_path / "env.json"
    described = {"device": "NVIDIA H200, 580.159.04, 143771 MiB", "cuda": "13.0", "cpu": "AMD EPYC 9654"}
    env.write_text(json.dumps({**described, "num_cpu": 16, "ram": 131961788}))
    info = history.host_machine(None, str(env))
    assert info["cpu"].endswith("host AMD EPYC 9654") and info["num_cpu"] == "16" and info["ram"] == "131961788"
    assert history.cpu_model() and history.ram_kib() > 0  # this host's, where no env.json is given


def test_the_gpu_runner_describes_its_host(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_runner

    monkeypatch.setattr(gpu_runner.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    env = gpu_runner.environment()
    assert (env["cpu"], env["num_cpu"], env["ram"]) == (history.cpu_model(), os.cpu_count(), history.ram_kib())


def test_results_are_filed_under_the_python_version_and_the_commit(tmp_path):
    path = tmp_path / "0123abcd-existing-py_some_checkout_.venv_bin_python.json"
    data = {"commit_hash": "0123abcd" * 5, "env_name": "existing-py_some_checkout", "date": 5, "python": "/x/python"}
    path.write_text(json.dumps(dict(data, params={"python": "/x/python", "machine": "m"})))
    history.neutral_environment(path, "fedcba98" * 5, 1700000000)
    (filed,) = tmp_path.glob("*.json")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert filed.name == f"fedcba98-existing-py{version}.json"
    out = json.loads(filed.read_text())
    assert out["commit_hash"] == "fedcba98" * 5 and out["date"] == 1700000000000
    assert out["python"] == out["params"]["python"] == version and "checkout" not in filed.read_text()


@pytest.fixture
def recorded_history(tmp_path):
    """A copy of the committed history of one machine, where this clone has both commits."""
    pytest.importorskip("asv")
    source = ROOT / "asv_bench" / "results"
    results = tmp_path / "results"
    shutil.copytree(source, results)
    commits = history.recorded(results, MACHINE)
    if len(commits) < 2:
        pytest.skip("this clone lacks the recorded commits (a shallow clone)")
    return results, commits


def check(results) -> int:
    cmd = [sys.executable, str(ROOT / "asv_bench" / "history.py"), "check", "--machine", MACHINE, "--results"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*cmd, str(results)], capture_output=True, text=True, env=env, timeout=300).returncode


def test_check_passes_on_the_recorded_history(recorded_history):
    results, _ = recorded_history
    assert check(results) == 0


def test_check_fails_when_a_timing_gets_slower(recorded_history):
    results, commits = recorded_history
    newest = next((results / MACHINE).glob(f"{commits[-1][:8]}-*.json"))
    data = json.loads(newest.read_text())
    times = data["results"]["backends.Backends.time_op"][0]
    data["results"]["backends.Backends.time_op"][0] = [None if t is None else 3 * t for t in times]
    newest.write_text(json.dumps(data))
    assert check(results) == 1


def test_publish_builds_a_page_per_benchmark(recorded_history, tmp_path):
    """asv publish over the recorded history: the index and a graph of a timing over the commits."""
    results, commits = recorded_history
    html = tmp_path / "html"
    cmd = [sys.executable, str(ROOT / "asv_bench" / "history.py"), "publish", "--results", str(results)]
    done = subprocess.run([*cmd, "--html", str(html)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (html / "index.html").is_file() and (html / "regressions.json").is_file()
    graphs = [g for g in (html / "graphs").rglob("backends.Backends.time_op.json") if f"machine-{MACHINE}" in str(g)]
    assert len(graphs) == 1, graphs  # one graph for the machine: a changed description does not split it
    points = json.loads(graphs[0].read_text())
    assert len(points) == len(commits)  # one point per recorded commit


def test_a_gpu_record_times_the_selected_backends_only(monkeypatch):
    """QREF_ASV_BACKENDS (the GPU runner's --asv-backends): the other backends are skipped by asv (their
    setup raises NotImplementedError) with the same parameters; unset, every backend runs."""
    import workloads

    monkeypatch.setenv("QREF_ASV_BACKENDS", "torch:cuda,cupy")
    with pytest.raises(NotImplementedError, match="QREF_ASV_BACKENDS"):
        workloads.backend_workload("numpy", "quantize_4bit", 64)
    monkeypatch.delenv("QREF_ASV_BACKENDS")
    run, moved, _ = workloads.backend_workload("numpy", "quantize_4bit", 64)
    assert moved > 0


@pytest.mark.parametrize("on_device", [False, True])
def test_an_op_warms_up_before_it_is_timed(monkeypatch, on_device):
    """A backend's op, on a device (its sync is not the CPU's no-op) or the CPU, runs for WARMUP_S in setup,
    so that asv's few samples are not a new process's first, slow calls."""
    import time

    import workloads

    calls = []
    sync = (lambda: None) if on_device else workloads._no_sync
    monkeypatch.setattr(workloads, "_backend_workload", lambda name, op, n: (lambda: calls.append(1), 8, sync))
    monkeypatch.setattr(workloads, "WARMUP_S", 0.05)
    start = time.perf_counter()
    workloads.backend_workload("numpy", "quantize_4bit", 64)
    assert len(calls) > 1 and time.perf_counter() - start >= 0.05


def test_the_gpu_runner_logs_a_step_as_it_runs_and_stops_it_at_its_limit():
    """A step's lines reach the log as they come, also when its time limit stops it (exit 124), children
    included; a step that ends in time gives its own exit status."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_runner

    lines = []
    slow = [
        sys.executable,
        "-c",
        "import subprocess, sys; print('started', flush=True); "
        "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])",
    ]
    code = gpu_runner.stream(slow, 2, dict(os.environ), lines.append)
    assert code == 124 and lines == ["started"]
    lines.clear()
    assert (
        gpu_runner.stream([sys.executable, "-c", "print('a'); raise SystemExit(3)"], 30, dict(os.environ), lines.append)
        == 3
    )
    assert lines == ["a"]
