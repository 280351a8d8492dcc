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
