"""The experiment's paired statistics: t intervals, verdicts and claims on synthetic results."""

import numpy as np
import pytest
from scipy import stats as sps

from experiments import stats


def test_interval_is_the_student_t_interval():
    d = np.array([-0.01, -0.02, -0.015, -0.005, -0.012])
    ci = stats.interval(d)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert ci["mean"] == pytest.approx(d.mean()) and ci["lo"] == pytest.approx(d.mean() - half)
    assert ci["hi"] == pytest.approx(d.mean() + half) and ci["n"] == 5
    assert stats.interval([0.3])["lo"] == -np.inf
    with pytest.raises(ValueError, match="finite"):
        stats.interval([1.0, np.nan])


@pytest.mark.parametrize(
    "values, want",
    [
        ([-3, -2, -2.5, -2.8], "confirmed"),
        ([3, 2, 2.5, 2.8], "contradicted"),
        ([-1, 1, -0.5, 0.4], "not distinguishable"),
    ],
)
def test_verdicts(values, want):
    assert stats.verdict(stats.interval(values)) == want


def doc_with(effects: dict, seeds=range(10), noise=0.01, bits=(4,)):
    """Synthetic results: each method's held-out perplexity = 2.5 + its effect + a per-seed shared
    term (the pairing) + small independent noise."""
    rng = np.random.default_rng(0)
    shared = {s: rng.normal(0, 0.05) for s in seeds}
    methods = {}
    for m, e in effects.items():
        methods[m] = {"seeds": {s: {"after": {"ft_val": 2.5 + e + shared[s] + rng.normal(0, noise)}} for s in seeds}}
    return {"methods": methods, "bits": list(bits)}


def test_pairing_sees_an_effect_smaller_than_the_seed_spread():
    """A 0.02 effect under a 0.05 seed-to-seed spread: the paired interval resolves it."""
    doc = doc_with({"qlora-nf4": 0.0, "loftq": -0.02}, noise=0.005)
    ci = stats.paired(doc, "loftq", "qlora-nf4")
    assert ci["hi"] < 0 and stats.verdict(ci) == "confirmed"
    unpaired = [doc["methods"]["loftq"]["seeds"][s]["after"]["ft_val"] for s in range(10)]
    assert np.std(unpaired, ddof=1) > 0.02  # unpaired means alone would not separate them


def test_claims_per_bit_width_and_gap_closed():
    effects = {
        "qlora-nf8": -0.10,
        "qlora-nf4": 0.0,
        "loftq": -0.03,
        "lqlora": 0.0,
        "quailora-uncal": -0.01,
        "quailora-cal": -0.05,
        "qlora-nf3": 0.2,
        "loftq-nf3": 0.1,
        "quailora-uncal-nf3": 0.15,
        "quailora-cal-nf3": 0.05,
    }
    doc = doc_with(effects, bits=(3, 4), noise=0.002)
    out = {(c["bits"], c["claim"]): c for c in stats.claims(doc)}
    loftq4 = out[4, stats.CLAIMS[0][0]]
    assert loftq4["verdict"] == "confirmed" and loftq4["mean"] == pytest.approx(-0.03, abs=0.005)
    assert out[4, stats.CLAIMS[1][0]]["verdict"] == "not distinguishable"
    gap3 = out[3, "QuAILoRA closes part of the 3- to 8-bit gap"]
    assert gap3["verdict"] == "confirmed" and gap3["mean"] == pytest.approx(0.15 / 0.30, abs=0.05)
    gap4 = out[4, "QuAILoRA closes part of the 4- to 8-bit gap"]
    assert gap4["mean"] == pytest.approx(0.5, abs=0.1)


def test_the_process_pool_gives_the_sequential_initialisers():
    """per_layer's pool (spawned workers, one BLAS thread each) returns what the in-process loop does."""
    from experiments import run

    rng = np.random.default_rng(0)
    weights = {f"l{i}": (rng.standard_normal((64, 32)) * 0.02).astype(np.float32) for i in range(4)}
    C = {n: np.eye(32) for n in weights}
    alone = run.per_layer("fixed", weights, C, 4, bits=(4, 3), workers=1)
    pooled = run.per_layer("fixed", weights, C, 4, bits=(4, 3), workers=4)
    assert alone.keys() == pooled.keys()
    for n in weights:
        assert alone[n].keys() == pooled[n].keys() and "loftq-nf3" in pooled[n]
        for m in alone[n]:
            assert np.allclose(alone[n][m].W, pooled[n][m].W, rtol=0, atol=1e-6), (n, m)


def test_detectable_effect_and_seeds_needed():
    """The detectable effect shrinks as 1/sqrt(n); seeds_needed inverts it; the test's power is real:
    simulated paired differences of exactly the detectable size are resolved about 80% of the time."""
    d10 = stats.detectable(0.01, 10)
    assert stats.detectable(0.01, 40) < d10 / 1.9
    n = stats.seeds_needed(0.01, d10)
    assert n == 10 and stats.detectable(0.01, n - 1) > d10
    assert stats.seeds_needed(0.01, 0.0) > 10_000
    rng = np.random.default_rng(1)
    hits = [stats.interval(rng.normal(-d10, 0.01, 10))["hi"] < 0 for _ in range(2000)]
    assert 0.74 < np.mean(hits) < 0.86


def test_ilp_curve_and_layer_link():
    effects = {
        "qlora-nf8": -0.10,
        "qlora-nf4": 0.0,
        "qlora-nf2": 0.5,
        "lqlora": -0.02,
        "lqlora-ilp": 0.1,
        "lqlora-ilp-b2.5": 0.3,
        "quailora-cal-nf2": 0.2,
        "quailora-cal-nf2-only-fc1": 0.38,
        "quailora-cal-nf2-only-qkv": 0.5,
    }
    doc = doc_with(effects, bits=(2, 4), noise=0.002)
    bits = {
        "qlora-nf8": 8.1,
        "qlora-nf4": 4.1,
        "qlora-nf2": 2.1,
        "lqlora": 4.1,
        "lqlora-ilp": 3.3,
        "lqlora-ilp-b2.5": 2.5,
    }
    errors = {
        "qlora-nf2": 0.3,
        "quailora-cal-nf2": 0.1,
        "quailora-cal-nf2-only-fc1": 0.2,
        "quailora-cal-nf2-only-qkv": 0.29,
    }
    for m, r in doc["methods"].items():
        r["bits"] = bits.get(m, 2.1)
        r["calibrated_error"] = errors.get(m, {"qlora-nf8": 0.001, "qlora-nf4": 0.01}.get(m, 0.05))
    curve = stats.ilp_curve(doc)
    assert [r["method"] for r in curve][:2] == ["qlora-nf2", "lqlora-ilp-b2.5"]
    assert [r["kind"] for r in curve].count("ILP") == 2
    ilp25 = next(r for r in curve if r["method"] == "lqlora-ilp-b2.5")
    assert ilp25["vs_qlora_nf4"]["mean"] == pytest.approx(0.3, abs=0.01)
    link = stats.layer_link(doc)
    rows = {r["group"]: r for r in link["rows"]}
    assert link["bits"] == 2 and set(rows) == {"fc1", "qkv", "all"}
    assert rows["fc1"]["error_drop"] == pytest.approx(0.1) and rows["fc1"]["mean"] == pytest.approx(-0.12, abs=0.01)
    assert stats.verdict(rows["fc1"]) == "confirmed" and stats.verdict(rows["qkv"]) == "not distinguishable"
    assert link["sum_of_groups"] == pytest.approx(-0.12, abs=0.01)
    assert link["spearman"] > 0.5  # more error at init, higher perplexity after, in these synthetic runs
