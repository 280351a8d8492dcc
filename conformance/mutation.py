"""`python -m qref.conformance.mutation [ID ...]`: run the conformance suite against every single-fault
backend of conformance/mutants.py and report the mutation score by decision (conformance/decisions.json).

Each mutant runs the suite's tests directly (no pytest session), its decision's own tests first, and
stops at the first test that rejects it. The examples are the default (ci) profile's, derandomized:
the same every run. Exit status 0 when every mutant is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import hsettings


def _suite():
    hsettings.select("ci-mutation")
    from . import test_suite

    return test_suite


def run_one(m, suite, order) -> tuple[str | None, str]:
    """(the test that caught the mutant or None, what it raised)."""
    from _pytest.outcomes import Skipped

    from qref.numpy_backend import NumpyBackend

    backend, reference = m.backend(), NumpyBackend()
    for name in order:
        test = getattr(suite, name)
        for params in strata(test):
            try:
                test(backend=backend, reference=reference, **params)
            except Skipped:
                continue
            except Exception as e:  # a mismatch, a failed assertion or a crash: the suite rejects the backend
                label = name + (f"[{'-'.join(map(str, params.values()))}]" if params else "")
                return label, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return None, ""


def strata(test) -> list[dict]:
    """The keyword arguments of every parametrized case of a suite test (pytest's parametrize marks)."""
    import itertools

    axes = []
    for mark in getattr(test, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else list(mark.args[0])
        values = [v if len(names) > 1 else (v,) for v in mark.args[1]]
        axes.append([dict(zip(names, v)) for v in values])
    return [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*axes)] or [{}]


def main(argv=None) -> int:
    from . import decisions
    from .mutants import MUTANTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    ap.add_argument("--json", dest="json_path", help="also write the results here")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not a.ids or m.id in a.ids]
    suite = _suite()
    tests = [n for n in dir(suite) if n.startswith("test_")]
    rows, start = [], time.monotonic()
    for m in chosen:
        first = decisions.tests_for(m.decision)
        order = [t for t in first if t in tests] + [t for t in tests if t not in first]
        t0 = time.monotonic()
        caught, why = run_one(m, suite, order)
        rows.append(
            {
                "mutant": m.id,
                "decision": m.decision,
                "fault": m.fault,
                "caught_by": caught,
                "error": why,
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
        mark = f"caught by {caught}" if caught else "SURVIVED"
        print(f"{m.id:28s} {m.decision:32s} {mark}", flush=True)
    by_decision: dict[str, list[int]] = {}
    for r in rows:
        by_decision.setdefault(r["decision"], [0, 0])
        by_decision[r["decision"]][0] += r["caught_by"] is not None
        by_decision[r["decision"]][1] += 1
    print("\nmutation score by decision:")
    for d, (c, n) in sorted(by_decision.items()):
        print(f"  {d:34s} {c} of {n}")
    caught = sum(r["caught_by"] is not None for r in rows)
    print(
        f"\n{caught} of {len(rows)} mutants caught ({100 * caught / max(len(rows), 1):.1f}%) "
        f"in {time.monotonic() - start:.0f} s, profile ci"
    )
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump({"caught": caught, "total": len(rows), "mutants": rows}, f, indent=1)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
