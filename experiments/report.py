"""Summaries, the markdown table, the plots (plain SVG, no plotting dependency) and the orderings check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import plots, stats

LABELS = {
    "qlora-nf8": "QLoRA, NF8 base (8-bit reference)",
    "qlora-nf4": "QLoRA, NF4 (B = 0)",
    "loftq": "LoftQ, NF4, T = 5",
    "lqlora": "LQ-LoRA, NF4 uniform",
    "lqlora-ilp": "LQ-LoRA, ILP-allocated",
    "quailora-uncal": "QuAILoRA uncalibrated (SVD)",
    "quailora-cal": "QuAILoRA calibrated",
    "qalora": "QA-LoRA, INT4 g16 (unmerged)",
}


def _stats(values) -> dict:
    v = np.asarray(values, float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def summarise(doc: dict) -> dict:
    out = {}
    for m, res in doc["methods"].items():
        seeds = list(res["seeds"].values())
        out[m] = {"bits": res["bits"], "calibrated_error": res["calibrated_error"]}
        for when in ("before", "after", "merged"):
            if when in seeds[0]:
                out[m][when] = {k: _stats([r[when][k] for r in seeds]) for k in ("val", "ft_val")}
    gap = []
    for seed in doc["methods"]["qlora-nf4"]["seeds"]:
        q4, q8, qa = (
            doc["methods"][m]["seeds"][seed]["after"]["ft_val"] for m in ("qlora-nf4", "qlora-nf8", "quailora-cal")
        )
        gap.append((q4 - qa) / (q4 - q8) if q4 != q8 else float("nan"))
    out["quailora_gap_closed"] = _stats(gap)
    qa = doc["methods"]["qalora"]["seeds"]
    out["qalora_merge_rel_diff"] = max(abs(r["merged"]["ft_val"] / r["after"]["ft_val"] - 1) for r in qa.values())
    out["qalora_merge_rel_diff_fp32"] = max(
        abs(r["merged"]["ft_val_fp32"] / r["after"]["ft_val_fp32"] - 1) for r in qa.values()
    )
    out["orderings"] = orderings(doc)
    out["claims"] = stats.claims(doc)
    out["ilp_curve"] = stats.ilp_curve(doc)
    out["layer_link"] = stats.layer_link(doc)
    return out


def orderings(doc: dict) -> list[str]:
    """What must hold by construction, as violations (empty when all hold): calibrated error at
    initialisation QuAILoRA calibrated < uncalibrated < zero-init, LoftQ and LQ-LoRA below zero-init,
    and the QA-LoRA merge leaving float32 perplexity unchanged (relative 1e-5)."""
    e = {m: doc["methods"][m]["calibrated_error"] for m in doc["methods"]}
    bad = []
    every_base = [("quailora-cal", "quailora-uncal"), ("quailora-uncal", "qlora"), ("loftq", "qlora")]
    pairs = [(stats.name(lo, k), stats.name(hi, k)) for k in doc.get("bits", [4]) for lo, hi in every_base]
    pairs.append(("lqlora", "qlora-nf4"))  # LQ-LoRA runs on NF4 only
    for lo, hi in pairs:
        if not e[lo] < e[hi]:
            bad.append(f"calibrated error at init: {lo} {e[lo]:.4g} is not below {hi} {e[hi]:.4g}")
    for seed, r in doc["methods"]["qalora"]["seeds"].items():
        if abs(r["merged"]["ft_val_fp32"] / r["after"]["ft_val_fp32"] - 1) > 1e-5:
            bad.append(
                f"QA-LoRA seed {seed}: merged float32 ppl {r['merged']['ft_val_fp32']} != unmerged "
                f"{r['after']['ft_val_fp32']}"
            )
    return bad


def _pm(st: dict) -> str:
    return f"{st['mean']:.4f} ± {st['std']:.4f}" if st["n"] > 1 else f"{st['mean']:.4f}"


def table(doc: dict) -> str:
    s = doc["summary"]
    lines = [
        f"Byte-level transformer, {doc['params'] / 1e6:.1f}M parameters ({doc['size']}), {doc['device']}, "
        f"seeds {doc['seeds']}; perplexity per byte (mean ± sample std over seeds).",
        "",
        "| method | bits/param (base) | calibrated error at init | val ppl, before FT | held-out ppl, before FT "
        "| held-out ppl, after FT | val ppl, after FT |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| full precision (no adapter) | 32 | 0 | {doc['fp']['val']:.4f} | {doc['fp']['ft_val']:.4f} | | |",
    ]
    for m, label in LABELS.items():
        r = s[m]
        lines.append(
            f"| {label} | {r['bits']:.3f} | {r['calibrated_error']:.4g} | {_pm(r['before']['val'])} | "
            f"{_pm(r['before']['ft_val'])} | {_pm(r['after']['ft_val'])} | {_pm(r['after']['val'])} |"
        )
    m = s["qalora"]["merged"]
    lines.append(
        f"| QA-LoRA merged into the zeros | {s['qalora']['bits']:.3f} | | | | {_pm(m['ft_val'])} | {_pm(m['val'])} |"
    )
    g = s["quailora_gap_closed"]
    lines += [
        "",
        f"QuAILoRA's headline, after fine-tuning: fraction of the 4-bit -> 8-bit QLoRA perplexity gap that "
        f"calibrated 4-bit QuAILoRA closes: {g['mean']:.3f} ± {g['std']:.3f} (min {g['min']:.3f}, max {g['max']:.3f}).",
        f"QA-LoRA merged vs unmerged held-out perplexity, largest relative difference over seeds: "
        f"{s['qalora_merge_rel_diff_fp32']:.2e} in float32, {s['qalora_merge_rel_diff']:.2e} with bfloat16 autocast.",
        "Orderings that must hold by construction: "
        + ("all hold." if not s["orderings"] else "; ".join(s["orderings"])),
    ]
    extra = [m for m in doc["methods"] if m not in LABELS]
    if extra:
        lines += ["", "| method (other NF-k bases) | bits/param | calibrated error at init | held-out ppl, after FT |"]
        lines += ["| --- | --- | --- | --- |"]
        lines += [
            f"| {m} | {s[m]['bits']:.3f} | {s[m]['calibrated_error']:.4g} | {_pm(s[m]['after']['ft_val'])} |"
            for m in extra
        ]
    lines += [
        "",
        f"Claims, as paired differences over seeds (method - baseline, held-out perplexity after fine-tuning; "
        f"{int(stats.LEVEL * 100)}% t interval):",
        "",
        "| claim (source) | base | mean difference | interval | n | detectable (80% power) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in s["claims"]:
        lines.append(
            f"| {c['claim']} ({c['source']}) | NF{c['bits']} | {c['mean']:+.4f} | [{c['lo']:+.4f}, {c['hi']:+.4f}] "
            f"| {c['n']} | {_detectable(c)} | {c['verdict']} |"
        )
    return "\n".join(lines + ilp_table(s.get("ilp_curve") or []) + link_table(s.get("layer_link")))


def _detectable(c: dict) -> str:
    """The smallest effect n seeds detect, and the seeds an effect of the observed size would need."""
    if "detectable" not in c:
        return ""
    need = c["seeds_needed"]
    return f"{c['detectable']:.4f} (this effect: {need if need <= 10_000 else '> 10000'} seeds)"


def ilp_table(curve: list[dict]) -> list[str]:
    if not curve:
        return []
    lines = [
        "",
        "Bits per parameter against held-out perplexity after fine-tuning (LQ-LoRA's ILP at each budget, "
        "and the uniform bases; interval of the mean over seeds, and the paired difference against QLoRA-NF4):",
        "",
        "| method | kind | bits/param | held-out ppl after FT | interval | vs QLoRA-NF4 (paired) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in curve:
        p, d = r["ppl"], r["vs_qlora_nf4"]
        vs = "" if d is None or r["method"] == "qlora-nf4" else f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
        lines.append(
            f"| {r['method']} | {r['kind']} | {r['bits']:.3f} | {p['mean']:.4f} "
            f"| [{p['lo']:.4f}, {p['hi']:.4f}] | {vs} |"
        )
    return lines


def link_table(link: dict | None) -> list[str]:
    if not link:
        return []
    lines = [
        "",
        f"Per-layer link (NF{link['bits']}): calibrated QuAILoRA on one layer group, zero-init QLoRA on the rest; "
        f"the drop in calibrated error at initialisation it makes, and the paired difference in held-out "
        f"perplexity after fine-tuning against {link['baseline']}:",
        "",
        "| layer group | calibrated error drop at init | ppl difference after FT | interval | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in link["rows"]:
        lines.append(
            f"| {r['group']} | {r['error_drop']:.4g} | {r['mean']:+.4f} | [{r['lo']:+.4f}, {r['hi']:+.4f}] "
            f"| {stats.verdict(r)} |"
        )
    lines += [
        "",
        f"Sum of the groups' differences {link['sum_of_groups']:+.4f} (all layers at once "
        f"{link['rows'][-1]['mean']:+.4f}). Over all {link['n']} methods with a calibrated error, Spearman "
        f"correlation of calibrated error at initialisation with perplexity after fine-tuning: "
        f"{link['spearman']:+.3f}.",
    ]
    return lines


def line_plot(series: dict, xs, title, ylabel, path: Path, log_x=True, xlabels=None) -> None:
    """A plain-SVG line plot: one polyline per series over xs (log2 axis by default)."""
    w, h, pad = 520, 320, 50
    ys = [v for vals in series.values() for v in vals]
    lo, hi = min(ys), max(ys)
    lo, hi = (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)) if hi > lo else (lo - 1, hi + 1)
    xv = np.log2(xs) if log_x else np.asarray(xs, float)

    def px(x):
        return pad + (x - xv.min()) / max(xv.max() - xv.min(), 1e-9) * (w - 2 * pad)

    def py(y):
        return h - pad - (y - lo) / (hi - lo) * (h - 2 * pad)

    colours = ["#777777", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">{ylabel}</text>',
    ]
    for x, xl in zip(xv, xlabels or xs):
        out.append(f'<text x="{px(x):.1f}" y="{h - pad + 14}" text-anchor="middle">{xl}</text>')
    for t in np.linspace(lo, hi, 5):
        out.append(f'<text x="{pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    for i, (name, vals) in enumerate(series.items()):
        c = colours[i % len(colours)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xv, vals))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{w - pad - 150}" y="{pad + 14 * i}" fill="{c}">{name}</text>')
    path.write_text("\n".join(out + ["</svg>"]) + "\n")


def _svg_bars(doc: dict, path: Path) -> None:
    s, w, row, pad = doc["summary"], 640, 26, 230
    methods = list(LABELS)
    vals = [(s[m]["before"]["ft_val"], s[m]["after"]["ft_val"]) for m in methods]
    hi = max(max(b["max"], a["max"]) for b, a in vals)
    lo = min(min(b["min"], a["min"]) for b, a in vals + [({"min": doc["fp"]["ft_val"]}, {"min": doc["fp"]["ft_val"]})])
    lo = lo - 0.1 * (hi - lo)

    def px(v):
        return pad + (v - lo) / (hi - lo) * (w - pad - 30)

    h = row * len(methods) + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">held-out perplexity: before (grey) and after (blue) '  # noqa: E501
        f"fine-tuning; bars span min-max over seeds</text>",
    ]
    for i, (m, (b, a)) in enumerate(zip(methods, vals)):
        y = 34 + row * i
        out.append(f'<text x="{pad - 6}" y="{y + 12}" text-anchor="end">{LABELS[m]}</text>')
        for st, c, dy in ((b, "#aaaaaa", 0), (a, "#1f77b4", 9)):
            out.append(f'<rect x="{pad}" y="{y + dy}" width="{px(st["mean"]) - pad:.1f}" height="8" fill="{c}"/>')
            out.append(
                f'<line x1="{px(st["min"]):.1f}" y1="{y + dy + 4}" x2="{px(st["max"]):.1f}" y2="{y + dy + 4}" '
                f'stroke="black"/>'
            )
    fp = px(doc["fp"]["ft_val"])
    out.append(f'<line x1="{fp:.1f}" y1="30" x2="{fp:.1f}" y2="{h - 30}" stroke="#d62728" stroke-dasharray="4"/>')
    out.append(
        f'<text x="{fp:.1f}" y="{h - 16}" text-anchor="middle" fill="#d62728">full precision '
        f"{doc['fp']['ft_val']:.3f}</text>"
    )
    for t in np.linspace(lo, hi, 5):
        out.append(f'<text x="{px(t):.1f}" y="{h - 34}" text-anchor="middle">{t:.3f}</text>')
    path.write_text("\n".join(out + ["</svg>"]) + "\n")


def write(doc: dict, out: Path) -> None:
    from qref.files import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, sort_keys=True, default=float) + "\n")
    atomic_write_text(out / "results.md", table(doc) + "\n")
    _svg_bars(doc, out / "perplexity.svg")
    plots.claims_plot(doc["summary"]["claims"], out / "claims.svg")
    if doc["summary"].get("ilp_curve"):
        plots.ilp_plot(doc["summary"]["ilp_curve"], out / "bits_vs_perplexity.svg")
    if not doc["error_vs_rank"]:  # written again once the curves are computed
        return
    ranks = sorted(doc["error_vs_rank"])
    methods = list(doc["error_vs_rank"][ranks[0]])
    line_plot(
        {m: [doc["error_vs_rank"][r][m]["calibrated"] for r in ranks] for m in methods},
        ranks,
        "calibrated error at initialisation vs rank (all layers)",
        "J / J(W)",
        out / "error_vs_rank.svg",
    )
