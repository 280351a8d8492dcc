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


def test_budget_curve_groups_and_the_pool(tiny):
    """The tiny run carries LQ-LoRA's extra ILP budget and the per-group QuAILoRA runs; fine-tuning in a
    pool of two spawned processes gives what the in-process loop gives (the path a GPU run takes)."""
    m = tiny["methods"]
    assert m["lqlora-ilp-b2.8"]["bits"] <= 2.8 + 1e-9
    groups = [x for x in m if "-only-" in x]
    assert sorted(groups) == sorted(f"quailora-cal-only-{g}" for g in experiment.GROUPS)
    drops = sum(m["qlora-nf4"]["calibrated_error"] - m[g]["calibrated_error"] for g in groups)
    whole = m["qlora-nf4"]["calibrated_error"] - m["quailora-cal"]["calibrated_error"]
    assert drops == pytest.approx(whole, rel=1e-9)  # the layer errors add up
    assert tiny["summary"]["layer_link"]["rows"][-1]["group"] == "all"
    pooled = experiment.run("tiny", seeds=(0,), out=None, device="cpu", log=lambda *_: None, workers=2)
    for x in ("qlora-nf4", "quailora-cal-only-fc1"):
        assert pooled["methods"][x]["seeds"][0]["after"] == pytest.approx(m[x]["seeds"][0]["after"], rel=1e-6)


def test_resume_continues_a_stopped_run(tmp_path):
    """A run stopped after some fine-tunes resumes from its folder: the pretrained model is read back, only
    the missing (seed, method) pairs are fine-tuned, and the results are the uninterrupted run's."""
    from experiments.progress import LINES, ResumeError

    logs = []
    first = experiment.run("tiny", seeds=(0,), out=tmp_path, device="cpu", log=logs.append, overrides={"ft_steps": 5})
    lines = (tmp_path / LINES).read_text().splitlines()
    assert len(lines) == len(experiment.methods_for((4,), experiment.SETTINGS["tiny"]["budgets"]))
    (tmp_path / LINES).write_text("\n".join(lines[:3]) + '\n{"seed": 0, "meth')  # stopped mid-line
    logs.clear()
    again = experiment.run(
        "tiny", seeds=(0,), out=tmp_path, device="cpu", log=logs.append, overrides={"ft_steps": 5}, resume=True
    )
    assert any("from" in x and "base.pt" in x for x in logs) and not any(x.startswith("pretrained 0") for x in logs)
    assert any(f"{len(lines) - 3} of {len(lines)} fine-tunes left" in x for x in logs)
    for m, res in first["methods"].items():
        assert again["methods"][m]["seeds"][0]["after"] == pytest.approx(res["seeds"][0]["after"], rel=1e-6), m
    with pytest.raises(ResumeError, match="made under"):
        experiment.run(
            "tiny", seeds=(0,), out=tmp_path, device="cpu", log=print, overrides={"ft_steps": 6}, resume=True
        )
    with pytest.raises(ResumeError, match="no base.pt"):
        experiment.run("tiny", seeds=(0,), out=tmp_path / "new", device="cpu", log=print, resume=True)
