"""The decision catalogue (decisions.json): every decision point of the spec that a backend must
reproduce -> the reference function that makes it -> the suite's tests and the inputs (strategies,
strata, pinned examples) that exercise it -> the check that compares it. tests/test_decisions.py fails
when a decision has no exercising test, no check or no mutant, and the docs' decision tables link here.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def catalogue() -> dict[str, dict]:
    data = json.loads(resources.files(__package__).joinpath("decisions.json").read_text(encoding="utf-8"))
    return {d["id"]: d for d in data["decisions"]}


def tests_for(decision: str) -> list[str]:
    """The suite's tests that exercise a decision (first the one written for it)."""
    return list(catalogue().get(decision, {}).get("tests", []))
