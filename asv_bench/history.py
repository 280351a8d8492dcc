"""asv as qref's performance history: record a commit's results per machine, publish the pages,
check the newest commit against the one before it.

    python asv_bench/history.py record [--quick] [--machine NAME] [--env env.json] [--results DIR]
    python asv_bench/history.py publish [--results DIR] [--html DIR]   # the pages (default .asv/html)
    python asv_bench/history.py check [--machine NAME] [--factor 1.5] [--results DIR]

`record` benchmarks the installed qref (asv's "existing" environment: the Python running this) and
files the results under the current commit in asv_bench/results/MACHINE/ (the committed history; a
working tree with changes is refused unless --dirty, since its results would not be the commit's).
The machine's description comes from --env (the JSON `scripts/gpu_runner.py` writes: device, CPU,
versions) or from this host. `publish` runs `asv publish`: a graph per benchmark and parameter
(backend, op, size) over the commits, with asv's step detection of regressions (regressions.json).
`check` runs `asv compare` between the machine's two newest recorded commits and exits 1 when a
timing got slower by more than --factor beyond asv's noise estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONF = json.loads((HERE / "asv.conf.json").read_text())
RESULTS = HERE / CONF["results_dir"]
ASV = [sys.executable, "-m", "asv"]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def host_machine(name: str | None, env_file: str | None) -> dict[str, str]:
    """asv's machine fields: from the GPU runner's env.json where given, else from this host."""
    info = {
        "machine": name or platform.node() or "host",
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "num_cpu": str(os.cpu_count() or 1),
        "ram": str(ram_kib()),
    }
    if env_file:
        env = json.loads(Path(env_file).read_text())
        gpu = (env.get("device") or "GPU").split(",")[0].strip()  # "NVIDIA H200, driver, memory"
        info["machine"] = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", str(gpu)).strip("-").lower()
        info["cpu"] = f"{env.get('device') or gpu}; CUDA {env.get('cuda')}; host {env.get('cpu', info['cpu'])}"
        for key in ("num_cpu", "ram", "os", "arch"):
            if env.get(key):
                info[key] = str(env[key])
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


HTML = (HERE / CONF["html_dir"]).resolve()


def asv(
    args: list[str], results: Path, check: bool = True, html: Path = HTML, capture: bool = True, env=None
) -> subprocess.CompletedProcess:
    """asv with this configuration, its results kept in `results` (pages in `html`). capture=False: asv's
    output reaches this process's as it comes (a long run shows which benchmark it is at). env: variables
    added to this process's for asv."""
    conf = dict(CONF, results_dir=str(results), repo=str(ROOT), benchmark_dir=str(HERE / CONF["benchmark_dir"]))
    conf["html_dir"] = str(html)
    path = results.parent / f".asv-conf-{os.getpid()}.json"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conf))
    try:
        sys.stdout.flush()
        done = subprocess.run(
            [*ASV, *args, "--config", str(path)],
            cwd=HERE,
            text=True,
            capture_output=capture,
            env={**os.environ, **env} if env else None,
        )
    finally:
        path.unlink()
    if capture:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
    if check and done.returncode != 0:
        raise SystemExit(f"asv {args[0]} failed (exit {done.returncode})")
    return done


def record(a) -> int:
    if not a.dirty and git("status", "--porcelain", "--untracked-files=no"):
        raise SystemExit("the working tree has changes: commit them first (or --dirty for a trial run)")
    info = host_machine(a.machine, a.env)
    fields = [f"--{k}={v}" for k, v in info.items()]
    asv(["machine", "--yes", *fields], a.results)
    commit = git("rev-parse", "HEAD")  # with --commit: the stand-in repository's, replaced below
    run = ["run", "--python=same", f"--set-commit-hash={commit}", f"--machine={info['machine']}", "--show-stderr"]
    env = None
    if a.quick:  # a smoke run: benchmarks forked from one process that imported the suite and its frameworks
        run += ["--quick", "--launch-method=forkserver"]  # (workloads.py); a timed record spawns each afresh
        env = {"QREF_ASV_PRELOAD": "1"}
    if a.bench:
        run += ["--bench", a.bench]
    asv(run, a.results, capture=False, env=env)
    for path in (a.results / info["machine"]).glob(f"{commit[:8]}-existing-*.json"):
        neutral_environment(path, a.commit, a.commit_time)
    print(f"recorded {(a.commit or commit)[:10]} on {info['machine']} in {a.results}")
    return 0


def neutral_environment(path: Path, commit: str | None = None, commit_time: int | None = None) -> None:
    """asv names an "existing" environment after the interpreter's path; the history names it after
    the Python version only, so that runs from different checkouts of one machine line up. With
    `commit` (and its time, seconds since the epoch), the results are filed under that commit: the
    measured copy had a stand-in repository."""
    data = json.loads(path.read_text())
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    data["env_name"] = f"existing-py{version}"
    data["python"] = version
    # the graphs are per machine name and Python version; the machine's description (cpu, ram, ...)
    # lives in its machine.json, and a changed description must not split one machine's history
    data["params"] = {"machine": data["params"]["machine"], "python": version}
    if commit:
        data["commit_hash"] = commit
        data["date"] = 1000 * int(commit_time or 0) or data["date"]
    path.unlink()
    (path.parent / f"{data['commit_hash'][:8]}-{data['env_name']}.json").write_text(json.dumps(data))


def recorded(results: Path, machine: str) -> list[str]:
    """The commits recorded for a machine, oldest first (by commit date)."""
    folder = results / machine
    hashes = {p.name.split("-")[0] for p in folder.glob("*.json") if p.name != "machine.json"}
    known = []
    for h in hashes:
        try:
            known.append((int(git("show", "-s", "--format=%ct", h)), git("rev-parse", h)))
        except subprocess.CalledProcessError:
            continue  # a commit this clone does not have
    return [h for _, h in sorted(known)]


def publish(a) -> int:
    asv(["publish"], a.results, html=a.html)
    print(f"pages: {a.html / 'index.html'}")
    return 0


def check(a) -> int:
    machines = [a.machine] if a.machine else sorted(p.name for p in a.results.iterdir() if p.is_dir())
    worse = 0
    for machine in machines:
        commits = recorded(a.results, machine)
        if len(commits) < 2:
            print(f"{machine}: {len(commits)} commit(s) recorded, nothing to compare")
            continue
        old, new = commits[-2], commits[-1]
        out = asv(["compare", old, new, f"--machine={machine}", f"--factor={a.factor}", "--split"], a.results).stdout
        rows = [line.split("|") for line in out.splitlines() if line.startswith("|")]
        slower = [r for r in rows if len(r) > 2 and r[1].strip() == "+" and ".time_" in r[-2]]  # "+": got worse
        print(f"{machine}: {old[:10]} -> {new[:10]}: {len(slower)} timing(s) slower by more than {a.factor}x")
        worse += len(slower)
    return 1 if worse else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("record", "publish", "check"):
        p = sub.add_parser(name)
        p.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: the history)")
        if name != "publish":
            p.add_argument("--machine", help="the machine's name in the history")
        else:
            p.add_argument("--html", type=Path, default=HTML, help="where the pages go (default: .asv/html)")
    r = sub.choices["record"]
    r.add_argument(
        "--quick", action="store_true", help="each benchmark once, forked from one process (a smoke run: CI's)"
    )
    r.add_argument("--env", help="the GPU runner's env.json: the machine's description")
    r.add_argument("--bench", help="a regular expression: only the benchmarks it matches")
    r.add_argument("--dirty", action="store_true", help="record although the working tree has changes")
    r.add_argument("--commit", help="file the results under this full hash (the copy measured has a stand-in repo)")
    r.add_argument("--commit-time", type=int, help="with --commit: its commit time, seconds since the epoch")
    sub.choices["check"].add_argument("--factor", type=float, default=1.5)
    a = ap.parse_args(argv)
    a.results = a.results.resolve()
    if a.command == "publish":
        a.html = a.html.resolve()
    return {"record": record, "publish": publish, "check": check}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
