"""Every GPU measurement and check of qref, as steps of one command.

    python scripts/gpu_runner.py                         # the default steps, results in ./gpu-results
    python scripts/gpu_runner.py --steps conform,vectors --out /tmp/r
    python scripts/gpu_runner.py --list                  # the steps and what each runs

Each step is a subprocess with its own time limit; its output goes to OUT/log.txt (and the step's
files to OUT), and a summary line per step ends the log. OUT/env.json records the device, date,
versions and commit, so that every table in docs/ names what produced it. Peer libraries
(bitsandbytes, torchao, ...) are found wherever Python finds them; PYTHONPATH may point at a folder of
unpacked wheels. The working tree is installed editable first (for the entry points of its backends).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "asv_bench"))
import history  # noqa: E402  (asv_bench/history.py: the host's description, as asv records it)

PY = sys.executable
QREF = [PY, "-m", "qref.cli"]
PYTEST = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
CUDA_BACKENDS = ("torch:cuda", "cupy")


def steps(a) -> dict[str, tuple[str, int, list[list[str]]]]:
    """name -> (what it does, time limit in seconds, commands)."""
    sizes = a.sizes.split()
    return {
        "kernels": ("the CUDA kernel tests", 200, [[*PYTEST, "tests/test_cuda_kernels.py"]]),
        "conform": (
            "the conformance suite on each CUDA backend",
            300,
            [
                [*PYTEST, "--pyargs", "qref.conformance", "--qref-backend", b, "--qref-profile", a.profile]
                for b in CUDA_BACKENDS
            ],
        ),
        "vectors": (
            "the golden vectors through each CUDA backend",
            150,
            [[*QREF, "vectors", "export", str(a.out / "vectors"), "--overwrite"]]
            + [[*QREF, "vectors", "check", str(a.out / "vectors"), "--backend", b] for b in CUDA_BACKENDS],
        ),
        "check": ("qref check, every backend and library", 300, [[*QREF, "check", "--quick"]]),
        "validate": (
            "qref validate on CUDA",
            300,
            [
                [
                    *QREF,
                    "validate",
                    *a.libs.split(),
                    "--device",
                    "cuda",
                    "--json",
                    str(a.out / "validate_gpu.json"),
                    "--overwrite",
                ]
            ],
        ),
        "table": (
            "the side-by-side GPU table (qref, bitsandbytes, copy and fill ceilings)",
            450,
            [
                [
                    PY,
                    "asv_bench/gpu_table.py",
                    "--out",
                    str(a.out / "gpu_table.json"),
                    "--rounds",
                    str(a.rounds),
                    "--sizes",
                    *sizes,
                ]
            ],
        ),
        "model": (
            "a whole LLaMA-7B-shaped model as one batch (asv_bench/model_batch.py)",
            300,
            [[PY, "asv_bench/model_batch.py", "--out", str(a.out / "model_batch.json"), "--layers", str(a.layers)]],
        ),
        "anatomy": ("where a whole call's time goes", 150, [[PY, "asv_bench/call_anatomy.py"]]),
        "asv": (
            "the asv suite (3 to 5 samples after a warm-up), filed under this machine (asv_bench/history.py; "
            "results in OUT/asv-results)",
            500,
            [
                [
                    PY,
                    "asv_bench/history.py",
                    "record",
                    "--dirty",
                    "--env",
                    str(a.out / "env.json"),
                    "--results",
                    str(a.out / "asv-results"),
                    "--bench",
                    a.asv_bench,
                    *(["--commit", a.commit, "--commit-time", str(a.commit_time)] if a.commit else []),
                ]
            ],
        ),
        "tune": ("the kernel knobs side by side", 200, [[PY, "asv_bench/tune_kernels.py", "--size", sizes[-1]]]),
        "profile": ("host time per call", 150, [[PY, "asv_bench/profile_quant.py"]]),
        "ktimes": ("kernel times (CUPTI)", 200, [[PY, "asv_bench/kernel_times.py"]]),
        "init": ("whole-model initialisation timing", 300, [[PY, "asv_bench/gpu_init.py"]]),
        "init-model": (
            "qref init end to end on LLaMA-7B-shaped layers",
            400,
            [
                [
                    PY,
                    "asv_bench/init_model.py",
                    "--layers",
                    str(a.layers),
                    "--work",
                    str(a.out / "init-model-scratch"),
                    "--out",
                    str(a.out / "init_model.json"),
                ]
            ],
        ),
        "experiment": (
            "the trained-model experiment",
            900,
            [
                [
                    PY,
                    "-m",
                    "experiments.run",
                    "--size",
                    "small",
                    "--seeds",
                    *a.seeds.split(),
                    "--bits",
                    "3",
                    "2",
                    "--out",
                    str(a.out / "experiment"),
                ]
            ],
        ),
    }


DEFAULT = "kernels,conform,vectors,check,table"
COMMIT = None  # --commit


def environment() -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    versions = {}
    for name in ("numpy", "scipy", "torch", "cupy", "bitsandbytes", "torchao", "peft", "transformers", "qref"):
        code = f"import importlib.metadata as m; print(m.version({name!r}))"
        if name == "cupy":
            code = "import cupy; print(cupy.__version__)"
        versions[name] = run([PY, "-c", code]) or None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
        "cuda": run([PY, "-c", "import torch; print(torch.version.cuda)"]),
        "python": platform.python_version(),
        "cpu": history.cpu_model(),  # the host's model: whole calls from Python depend on it
        "num_cpu": os.cpu_count() or 1,
        "ram": history.ram_kib(),
        "commit": COMMIT or run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]) or None,
        "versions": versions,
    }


def stream(cmd, limit: float, env: dict, say) -> int:
    """Runs cmd, passing each line of its output (stdout and stderr) to `say` as it comes, so that a step
    stopped by its limit, or a runner stopped from outside, leaves what it printed in the log; the exit
    status, or 124 when the limit stopped it."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    # the whole process group: a step's own children (asv's benchmark processes) hold the pipe open too
    timer = threading.Timer(limit, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stdout:
            say(line.rstrip("\n"))
        code = proc.wait()
    finally:
        timer.cancel()
    return 124 if code < 0 else code


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default=None, help="the commit measured, where the copy has no usable .git")
    p.add_argument("--layers", type=int, default=32, help="decoder layers for init-model (default 32, all of LLaMA-7B)")
    p.add_argument("--steps", default=DEFAULT, help=f"comma-separated (default {DEFAULT}; --list shows all)")
    p.add_argument("--out", type=Path, default=Path("gpu-results"))
    p.add_argument("--profile", default="ci", choices=("ci", "gpu", "dev"), help="the suite's hypothesis settings")
    p.add_argument("--sizes", default="1024x1024 4096x4096 11008x4096 28672x8192")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--libs", default="", help="libraries for validate (default: all)")
    p.add_argument("--seeds", default="0 1 2 3 4 5 6 7 8 9")
    p.add_argument("--commit-time", type=int, default=0, help="with --commit: its time, seconds since the epoch")
    p.add_argument("--asv-bench", default=".", help="asv step: a regular expression of the benchmarks to run")
    p.add_argument(
        "--asv-backends", default="torch:cuda,cupy", help="asv step: the backends timed ('' for all of them)"
    )
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    global COMMIT
    COMMIT = a.commit
    table = steps(a)
    if a.list:
        for name, (what, limit, cmds) in table.items():
            print(f"{name:11s} {what} (limit {limit} s)")
            for cmd in cmds:
                print("            " + " ".join(str(c) for c in cmd).replace(PY, "python"))
        return 0
    chosen = [s.strip() for s in a.steps.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in table]
    if unknown:
        p.error(f"unknown steps {unknown}; known: {', '.join(table)}")
    a.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    (a.out / "env.json").write_text(json.dumps(env, indent=1) + "\n")
    subprocess.run(
        [PY, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(ROOT)],
        capture_output=True,
    )
    child_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    if a.asv_backends:  # the asv step times these backends only (the others are recorded as skipped)
        child_env["QREF_ASV_BACKENDS"] = a.asv_backends
    summary = []
    with open(a.out / "log.txt", "w") as log:

        def say(line):
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

        say(f"== environment: {json.dumps(env)}")
        for name in chosen:
            what, limit, cmds = table[name]
            start, codes = time.monotonic(), []
            say(f"== {name}: {what}")
            for cmd in cmds:
                say("$ " + " ".join(str(c) for c in cmd).replace(PY, "python"))
                codes.append(stream(cmd, limit, child_env, lambda line: say("  " + line)))
            summary.append(f"{name}: exit {max(codes)} in {time.monotonic() - start:.0f} s")
        say("== summary")
        for line in summary:
            say(line)
    return int(any(not line.split("exit ")[1].startswith("0 ") for line in summary))


if __name__ == "__main__":
    sys.exit(main())
