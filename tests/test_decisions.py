"""The decision catalogue (conformance/decisions.json) is complete: every decision names the reference
function that makes it, suite tests that exist, a check that exists and at least one mutant that
breaks it; every mutant breaks a catalogued decision; every docs page named links to the catalogue."""

import importlib
from pathlib import Path

from qref.conformance import checks, decisions, test_suite
from qref.conformance.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_decision_is_exercised_checked_and_mutated():
    cat = decisions.catalogue()
    mutated = {m.decision for m in MUTANTS}
    suite_tests = {n for n in vars(test_suite) if n.startswith("test_")}
    for d in cat.values():
        assert d["tests"] and set(d["tests"]) <= suite_tests, (d["id"], d["tests"])
        assert d["examples"], d["id"]
        assert hasattr(checks, d["check"].split(".", 1)[1]), (d["id"], d["check"])
        assert callable(_resolve(d["reference"])), (d["id"], d["reference"])
        assert (ROOT / "docs" / d["page"]).is_file(), (d["id"], d["page"])
        assert d["id"] in mutated or d.get("equivalent"), f"no mutant breaks {d['id']} and none is said equivalent"


def test_every_mutant_breaks_a_catalogued_decision():
    cat = decisions.catalogue()
    assert len(MUTANTS) >= 60 and len({m.id for m in MUTANTS}) == len(MUTANTS)
    for m in MUTANTS:
        assert m.decision in cat, (m.id, m.decision)


def test_docs_pages_link_to_the_catalogue():
    for page in sorted({d["page"] for d in decisions.catalogue().values()}):
        text = (ROOT / "docs" / page).read_text()
        assert "decisions.json" in text or "decision-catalogue" in text, f"docs/{page} does not link the catalogue"
