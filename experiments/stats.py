"""Paired comparisons over seeds and the verdict on each paper's claim (docs/experiments.md).

Every method is fine-tuned from the same seeds with the same data order, so the comparison that
carries the evidence is the per-seed difference d_s = ppl(method, s) - ppl(baseline, s): its mean
with a two-sided Student-t interval (n - 1 degrees of freedom) at `level`. A claim that the method
lowers perplexity is "confirmed" when the whole interval is below 0, "contradicted" when it is above
0, and "not distinguishable" otherwise (at this scale and this number of seeds).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.95


POWER = 0.8


def interval(values, level: float = LEVEL) -> dict:
    """Mean and the two-sided t interval of the mean, with the sample standard deviation and the
    smallest effect this many seeds detect (`detectable`); n < 2 gives an unbounded interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"need finite values, got {v.tolist()}")
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "lo": -np.inf, "hi": np.inf, "n": int(v.size), "level": level, "sd": np.nan}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * sd / np.sqrt(v.size))
    return {
        "mean": mean,
        "lo": mean - half,
        "hi": mean + half,
        "n": int(v.size),
        "level": level,
        "sd": sd,
        "detectable": detectable(sd, int(v.size), level),
        "seeds_needed": seeds_needed(sd, mean, level),
    }


def detectable(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided t test at `level` over n paired seeds detects with
    probability `power` (normal-shift approximation: (t_{1-a/2} + t_power) sd / sqrt n, n - 1 d.o.f.)."""
    dof = n - 1
    return float((stats.t.ppf(0.5 + level / 2, dof) + stats.t.ppf(power, dof)) * sd / np.sqrt(n))


def seeds_needed(sd: float, effect: float, level: float = LEVEL, power: float = POWER, most: int = 10_000) -> int:
    """The fewest paired seeds (>= 2) whose `detectable` effect is at most |effect|; `most` + 1 when none."""
    if effect == 0 or not np.isfinite(effect):
        return most + 1
    for n in range(2, most + 1):
        if detectable(sd, n, level, power) <= abs(effect):
            return n
    return most + 1


def verdict(ci: dict, lower_is_claimed: bool = True) -> str:
    """confirmed / contradicted / not distinguishable, for a claim that the quantity is below 0
    (or above 0 with lower_is_claimed=False)."""
    lo, hi = (ci["lo"], ci["hi"]) if lower_is_claimed else (-ci["hi"], -ci["lo"])
    if hi < 0:
        return "confirmed"
    if lo > 0:
        return "contradicted"
    return "not distinguishable"


def paired(doc: dict, method: str, baseline: str, when: str = "after", key: str = "ft_val") -> dict:
    """The per-seed differences method - baseline of doc's perplexities, and their interval."""
    a, b = doc["methods"][method]["seeds"], doc["methods"][baseline]["seeds"]
    seeds = [s for s in a if s in b]
    return interval([a[s][when][key] - b[s][when][key] for s in seeds]) | {"method": method, "baseline": baseline}


def gap_closed(doc: dict, bits: int = 4) -> dict | None:
    """QuAILoRA's fraction of the k -> 8-bit gap closed, per seed: (QLoRA-k - QuAILoRA-cal-k) /
    (QLoRA-k - QLoRA-8), with its interval (None without the methods)."""
    low, cal = name("qlora", bits), name("quailora-cal", bits)
    m = doc["methods"]
    if low not in m or cal not in m:
        return None
    fractions = []
    for s in m[low]["seeds"]:
        q_k, q_8, c = (m[x]["seeds"][s]["after"]["ft_val"] for x in (low, "qlora-nf8", cal))
        if q_k != q_8:
            fractions.append((q_k - c) / (q_k - q_8))
    return interval(fractions) if fractions else None


#: (claim, source, method, baseline) at NF4; the same claims at every other NF-k base of the run.
CLAIMS = (
    ("LoftQ's initialisation lowers perplexity after fine-tuning vs zero-init LoRA", "LoftQ", "loftq", "qlora"),
    ("LQ-LoRA's decomposition lowers perplexity vs zero-init LoRA", "LQ-LoRA", "lqlora", "qlora"),
    ("QuAILoRA (calibrated) lowers perplexity vs zero-init LoRA", "QuAILoRA", "quailora-cal", "qlora"),
    ("QuAILoRA: calibration lowers perplexity vs its uncalibrated form", "QuAILoRA", "quailora-cal", "quailora-uncal"),
)


def name(method: str, bits: int) -> str:
    """A method's name on the NF-k base: QLoRA is "qlora-nf<k>" at every k (its NF8 is the 8-bit
    reference); the others carry "-nf<k>" off NF4 (experiments.run.methods_for)."""
    if method == "qlora":
        return f"qlora-nf{bits}"
    return method if bits == 4 else f"{method}-nf{bits}"


def ilp_name(budget: float) -> str:
    """LQ-LoRA's ILP allocation at a bits-per-parameter budget (the run's main budget is "lqlora-ilp")."""
    return f"lqlora-ilp-b{budget:g}"


def group_name(bits: int, group: str) -> str:
    """Calibrated QuAILoRA on one layer group's layers only, zero-init QLoRA on the rest, NF-k base."""
    return f"{name('quailora-cal', bits)}-only-{group}"


def _after(doc: dict, method: str) -> list[float]:
    return [r["after"]["ft_val"] for r in doc["methods"][method]["seeds"].values()]


def ilp_curve(doc: dict) -> list[dict]:
    """Bits per parameter against held-out perplexity after fine-tuning: LQ-LoRA's ILP at every budget
    of the run and the uniform QLoRA bases, each with the t interval of its mean over seeds and its
    paired difference against QLoRA-NF4; sorted by bits."""
    m = doc["methods"]
    ilp = [x for x in m if x == "lqlora-ilp" or x.startswith("lqlora-ilp-b")]
    uniform = [x for x in m if x.startswith("qlora-nf")] + (["lqlora"] if "lqlora" in m else [])
    rows = []
    for x in ilp + uniform:
        rows.append(
            {
                "method": x,
                "kind": "ILP" if x in ilp else "uniform",
                "bits": m[x]["bits"],
                "ppl": interval(_after(doc, x)),
                "vs_qlora_nf4": paired(doc, x, "qlora-nf4") if "qlora-nf4" in m else None,
            }
        )
    return sorted(rows, key=lambda r: (r["bits"], r["kind"]))


def layer_link(doc: dict) -> dict | None:
    """The per-layer link on the lowest base k of the run: for each layer group g, calibrated QuAILoRA on
    g alone (QLoRA elsewhere): the drop of the calibrated error at initialisation it makes, and its paired
    perplexity difference after fine-tuning against QLoRA-NFk; the same for every layer at once; and
    over every method (without pooled adapters), the rank correlation of calibrated error at
    initialisation with perplexity after fine-tuning (the mean over seeds)."""
    m = doc["methods"]
    k = min(doc.get("bits", [4]))
    base, whole = name("qlora", k), name("quailora-cal", k)
    prefix = group_name(k, "")
    groups = [x[len(prefix) :] for x in m if x.startswith(prefix)]
    if base not in m or whole not in m or not groups:
        return None
    e0 = m[base]["calibrated_error"]
    rows = []
    for g, x in [(g, group_name(k, g)) for g in groups] + [("all", whole)]:
        rows.append({"group": g, "method": x, "error_drop": e0 - m[x]["calibrated_error"], **paired(doc, x, base)})
    finite = [x for x in m if np.isfinite(m[x]["calibrated_error"])]
    err = [m[x]["calibrated_error"] for x in finite]
    ppl = [float(np.mean(_after(doc, x))) for x in finite]
    rho = stats.spearmanr(err, ppl).statistic if len(finite) > 2 else float("nan")
    sum_groups = sum(r["mean"] for r in rows[:-1])
    return {
        "bits": k,
        "baseline": base,
        "rows": rows,
        "sum_of_groups": sum_groups,
        "spearman": float(rho),
        "n": len(finite),
    }


def claims(doc: dict) -> list[dict]:
    """Each claim at each NF-k base present: paired differences (method - baseline) and the verdict."""
    out = []
    for bits in doc.get("bits", [4]):
        for text, source, method, baseline in CLAIMS:
            m, b = name(method, bits), name(baseline, bits)
            if m not in doc["methods"] or b not in doc["methods"]:
                continue
            ci = paired(doc, m, b)
            out.append({"claim": text, "source": source, "bits": bits, **ci, "verdict": verdict(ci)})
        gap = gap_closed(doc, bits)
        if gap is not None:
            text = f"QuAILoRA closes part of the {bits}- to 8-bit gap"
            out.append(
                {
                    "claim": text,
                    "source": "QuAILoRA",
                    "bits": bits,
                    **gap,
                    "verdict": verdict(gap, lower_is_claimed=False),
                }
            )
    return out
