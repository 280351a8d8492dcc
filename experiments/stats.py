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


def interval(values, level: float = LEVEL) -> dict:
    """Mean and the two-sided t interval of the mean; n < 2 gives an unbounded interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"need finite values, got {v.tolist()}")
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "lo": -np.inf, "hi": np.inf, "n": int(v.size), "level": level}
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(v.size), "level": level}


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
