"""The CPU-sized experiment (tiny model, one seed): the orderings that hold by construction, and a
check that the smoke test fails when an initialiser is replaced by zeros."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments import inits, report  # noqa: E402
from experiments import run as experiment  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return experiment.run("tiny", seeds=(0,), out=None, device="cpu", log=lambda *_: None)


def test_orderings_hold(tiny):
    assert tiny["summary"]["orderings"] == []
    e = {m: tiny["methods"][m]["calibrated_error"] for m in tiny["methods"]}
    assert e["quailora-cal"] < e["quailora-uncal"] < e["qlora-nf4"]
    assert e["qlora-nf8"] < e["qlora-nf4"]  # 8 bits: smaller error than 4 with no adapter at all
    assert tiny["methods"]["lqlora-ilp"]["bits"] <= experiment.SETTINGS["tiny"]["budget"] + 1e-9


def test_report_table_and_plots(tiny, tmp_path):
    report.write(tiny, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "QuAILoRA calibrated" in text and "QA-LoRA merged" in text
    assert (tmp_path / "perplexity.svg").read_text().startswith("<svg")
    assert (tmp_path / "error_vs_rank.svg").stat().st_size > 500
    for m in experiment.METHODS:
        r = tiny["methods"][m]["seeds"][0]
        assert np.isfinite([r["before"]["ft_val"], r["after"]["ft_val"]]).all()


def test_fails_when_an_initialiser_is_replaced_by_zeros(monkeypatch):
    def zero_adapter(W, rank, C, calibrated, **kw):
        return inits.Init(
            inits.NF4.quantize(W), np.zeros((rank, W.shape[1]), np.float32), np.zeros((W.shape[0], rank), np.float32)
        )

    monkeypatch.setattr(inits, "quailora_init", zero_adapter)
    doc = experiment.run("tiny", seeds=(0,), out=None, device="cpu", log=lambda *_: None)
    assert any("quailora" in v for v in doc["summary"]["orderings"])


def test_lower_bit_bases_add_their_methods_orderings_and_claims():
    doc = experiment.run("tiny", seeds=(0,), out=None, device="cpu", log=lambda *_: None, bits=(3,))
    assert doc["bits"] == [3, 4]
    assert {"qlora-nf3", "loftq-nf3", "quailora-uncal-nf3", "quailora-cal-nf3"} <= set(doc["methods"])
    assert doc["methods"]["qlora-nf3"]["bits"] < doc["methods"]["qlora-nf4"]["bits"]
    assert doc["summary"]["orderings"] == []
    e = {m: doc["methods"][m]["calibrated_error"] for m in doc["methods"]}
    assert e["qlora-nf3"] > e["qlora-nf4"]  # fewer bits, more error at initialisation
    claims = {(c["bits"], c["source"]) for c in doc["summary"]["claims"]}
    assert {(3, "LoftQ"), (3, "QuAILoRA"), (4, "LoftQ")} <= claims
    assert "| claim (source) |" in report.table(doc)
