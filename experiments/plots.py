"""Plain-SVG plots of the paired evidence (no plotting dependency): every claim's interval, and LQ-LoRA's
bits-per-parameter curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"confirmed": "#2ca02c", "contradicted": "#d62728", "not distinguishable": "#777777"}


def _svg(w: int, h: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>',
    ]


def claims_plot(claims: list[dict], path: Path) -> None:
    """One row per claim and base: the mean paired difference and its interval, coloured by verdict,
    against the zero line (the QuAILoRA gap fractions, on another scale, are left to the table)."""
    rows = [c for c in claims if "gap" not in c["claim"] and np.isfinite(c["lo"])]
    w, row, pad = 760, 22, 420
    h = row * len(rows) + 70
    lo = min([c["lo"] for c in rows] + [0.0])
    hi = max([c["hi"] for c in rows] + [0.0])
    lo, hi = lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1)

    def px(v):
        return pad + (v - lo) / (hi - lo) * (w - pad - 20)

    out = _svg(w, h, "paired difference in held-out perplexity after fine-tuning (method - baseline), 95% t interval")
    for i, c in enumerate(rows):
        y = 36 + row * i
        col = COLOURS[c["verdict"]]
        label = f"NF{c['bits']}: {c['method']} - {c['baseline']}"
        out.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{label}</text>')
        out.append(
            f'<line x1="{px(c["lo"]):.1f}" y1="{y}" x2="{px(c["hi"]):.1f}" y2="{y}" stroke="{col}" stroke-width="2"/>'
        )
        out.append(f'<circle cx="{px(c["mean"]):.1f}" cy="{y}" r="3" fill="{col}"/>')
    z = px(0.0)
    out.append(f'<line x1="{z:.1f}" y1="26" x2="{z:.1f}" y2="{h - 30}" stroke="black" stroke-dasharray="3"/>')
    for t in np.linspace(lo, hi, 5):
        out.append(f'<text x="{px(t):.1f}" y="{h - 14}" text-anchor="middle">{t:+.3f}</text>')
    path.write_text("\n".join(out + ["</svg>"]) + "\n")


def ilp_plot(curve: list[dict], path: Path) -> None:
    """Bits per parameter (x) against held-out perplexity after fine-tuning (y): LQ-LoRA's ILP points
    joined, the uniform bases as squares, each with its 95% interval."""
    w, h, pad = 560, 340, 56
    xs = [r["bits"] for r in curve]
    ys = [v for r in curve for v in (r["ppl"]["lo"], r["ppl"]["hi"]) if np.isfinite(v)] or [
        r["ppl"]["mean"] for r in curve
    ]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = min(ys), max(ys)
    y0, y1 = y0 - 0.05 * (y1 - y0 or 1), y1 + 0.05 * (y1 - y0 or 1)

    def px(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def py(y):
        return h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    out = _svg(w, h, "held-out perplexity after fine-tuning vs bits per parameter (95% intervals)")
    out += [
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 18}" text-anchor="middle">bits per parameter of the base weights</text>',
    ]
    ilp = [r for r in curve if r["kind"] == "ILP"]
    pts = " ".join(f"{px(r['bits']):.1f},{py(r['ppl']['mean']):.1f}" for r in ilp)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for r in curve:
        x, c = px(r["bits"]), "#1f77b4" if r["kind"] == "ILP" else "#d62728"
        if np.isfinite(r["ppl"]["lo"]):
            out.append(
                f'<line x1="{x:.1f}" y1="{py(r["ppl"]["lo"]):.1f}" x2="{x:.1f}" '
                f'y2="{py(r["ppl"]["hi"]):.1f}" stroke="{c}"/>'
            )
        y = py(r["ppl"]["mean"])
        if r["kind"] == "ILP":
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}"/>')
        else:
            out.append(f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{c}"/>')
            out.append(f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" fill="{c}">{r["method"]}</text>')
    for t in np.linspace(y0, y1, 5):
        out.append(f'<text x="{pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.3f}</text>')
    for t in sorted({round(x) for x in xs}):
        out.append(f'<text x="{px(t):.1f}" y="{h - pad + 14}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{w - pad - 160}" y="{pad}" fill="#1f77b4">LQ-LoRA ILP (budgets)</text>')
    out.append(f'<text x="{w - pad - 160}" y="{pad + 14}" fill="#d62728">uniform bases</text>')
    path.write_text("\n".join(out + ["</svg>"]) + "\n")
