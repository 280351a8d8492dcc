"""Comparison of the initialisers on generated LLM-like weights (docs/initialisers.md):
prints the markdown table and writes docs/initialisers-error.svg (error versus rank, one panel per
bit width). Run: python docs/scripts/compare_initialisers.py"""

import os

import numpy as np

from qref import loftq, lqlora, quailora
from qref.conformance.synthetic import calibration_inputs, llm_like_weight

RANKS = (4, 8, 16, 32, 64)
BITS = (4, 3, 2)
METHODS = ("QLoRA (B=0)", "LoftQ T=1", "LoftQ T=5", "LQ-LoRA", "QuAILoRA cal.")
COLOURS = ("#777777", "#1f77b4", "#2ca02c", "#d62728", "#9467bd")


def errors(W, C, bits, rank):
    cfg = lqlora.LQConfig(bits, 64, 256)
    Q = cfg.quantize(W)
    l1 = loftq.loftq(W, rank, 1, quantizer=cfg.quantize)
    l5 = loftq.loftq(W, rank, 5, quantizer=cfg.quantize)
    lq = lqlora.decompose(W, rank, cfg, max_iter=20)
    cal = quailora.calibrated(W, Q, rank, C, max_iter=300)
    n = np.linalg.norm(W)
    return [
        np.linalg.norm(W - Q) / n,
        l1.errors[0] / n,
        l5.errors[-1] / n,
        lq.errors[lq.best] / n,
        np.linalg.norm(W - Q - cal.lora_B @ cal.lora_A) / n,
    ]


def svg(results, path):
    width, height, pad = 300, 220, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{len(BITS) * width}" height="{height + 40}" font-family="sans-serif" font-size="11">'  # noqa: E501
    ]
    for p, bits in enumerate(BITS):
        values = np.array([results[bits, r] for r in RANKS])
        lo, hi = 0.0, values.max() * 1.05
        x0 = p * width
        sx = lambda i: x0 + pad + i * (width - 2 * pad) / (len(RANKS) - 1)
        sy = lambda v: height - pad + 10 - (v - lo) / (hi - lo) * (height - 2 * pad)
        parts.append(
            f'<text x="{x0 + width / 2}" y="14" text-anchor="middle">NF{bits}: ||W-Q-BA|| / ||W|| vs rank</text>'
        )
        parts.append(f'<line x1="{x0 + pad}" y1="{sy(lo)}" x2="{x0 + width - pad}" y2="{sy(lo)}" stroke="black"/>')
        parts.append(f'<line x1="{x0 + pad}" y1="{sy(lo)}" x2="{x0 + pad}" y2="{sy(hi)}" stroke="black"/>')
        for i, r in enumerate(RANKS):
            parts.append(f'<text x="{sx(i)}" y="{sy(lo) + 14}" text-anchor="middle">{r}</text>')
        for t in np.linspace(lo, hi, 5):
            parts.append(f'<text x="{x0 + pad - 4}" y="{sy(t) + 4}" text-anchor="end">{t:.2f}</text>')
        for m, colour in enumerate(COLOURS):
            points = " ".join(f"{sx(i):.1f},{sy(values[i, m]):.1f}" for i in range(len(RANKS)))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for m, (name, colour) in enumerate(zip(METHODS, COLOURS)):
        parts.append(
            f'<rect x="{20 + m * 170}" y="{height + 22}" width="12" height="3" fill="{colour}"/>'
            f'<text x="{36 + m * 170}" y="{height + 27}">{name}</text>'
        )
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    W = llm_like_weight(256, 512, 0)
    C = quailora.second_moment(calibration_inputs(2048, 512, 0))
    results = {(b, r): errors(W, C, b, r) for b in BITS for r in RANKS}
    print("| bits | rank | " + " | ".join(METHODS) + " |")
    print("| --- | --- |" + " --- |" * len(METHODS))
    for (b, r), v in results.items():
        print(f"| {b} | {r} | " + " | ".join(f"{e:.4f}" for e in v) + " |")
    svg(results, os.path.join(os.path.dirname(__file__), "..", "initialisers-error.svg"))
