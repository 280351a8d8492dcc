"""`python -m experiments.run --size small --seeds 0 1 2 --out DIR` (or `qref experiment ...`).

Pretrains a byte-level transformer on the standard library's source, quantizes its block linears
with qref, initialises rank-r adapters by each method, fine-tunes every one identically on a
held-out domain, and writes results.json, results.md and two SVG plots to DIR (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import corpus as corpus_mod
from . import finetune, inits, report, stats
from .model import SIZES, ByteGPT, perplexity, train
from .progress import Progress, ResumeError

SETTINGS = {  # pretraining and fine-tuning budgets per size; every method gets the same fine-tuning
    "tiny": dict(
        pretrain=150,
        batch=16,
        lr=3e-3,
        ft_steps=30,
        ft_batch=16,
        ft_lr=2e-3,
        rank=4,
        windows=24,
        corpus_bytes=300_000,
        calib_windows=16,
        ranks=(2, 4, 8),
        budget=3.3,
        budgets=(2.8,),
    ),
    "small": dict(
        pretrain=2500,
        batch=64,
        lr=1.5e-3,
        ft_steps=300,
        ft_batch=32,
        ft_lr=1e-3,
        rank=16,
        windows=256,
        corpus_bytes=None,
        calib_windows=128,
        ranks=(4, 16, 64),
        budget=3.3,
        budgets=(2.5, 3.0, 3.7, 4.5),
    ),
}
METHODS = ("qlora-nf8", "qlora-nf4", "loftq", "lqlora", "lqlora-ilp", "quailora-uncal", "quailora-cal", "qalora")
#: The NF-k bases beside NF4 (--bits): QLoRA, LoftQ and QuAILoRA again on each, named "<method>-nf<k>".
LOW_BIT_METHODS = ("qlora", "loftq", "quailora-uncal", "quailora-cal")
#: The layer groups of the per-layer link: calibrated QuAILoRA on one group's layers, QLoRA elsewhere.
GROUPS = ("qkv", "proj", "fc1", "fc2")


def methods_for(bits=(4,), budgets=()) -> tuple[str, ...]:
    """The methods of a run: METHODS, each LOW_BIT_METHODS on every NF-k base k != 4 asked for, LQ-LoRA's
    ILP at each extra budget, and the per-group QuAILoRA runs on the lowest base."""
    extra = tuple(stats.name(m, k) for k in bits if k != 4 for m in LOW_BIT_METHODS)
    extra += tuple(stats.ilp_name(b) for b in budgets)
    extra += tuple(stats.group_name(min(bits), g) for g in GROUPS)
    return METHODS + tuple(m for m in extra if m not in METHODS)


def group_of(layer: str) -> str:
    """blocks.{i}.{qkv,proj,fc1,fc2} -> its group."""
    return layer.rsplit(".", 1)[-1]


def calibration_moments(model: ByteGPT, data, windows: int, device) -> dict[str, np.ndarray]:
    """C = X^T X / n of every quantized layer's input, over calibration windows (float64)."""
    sums, counts, hooks = {}, {}, []
    for name, lin in model.linears().items():

        def hook(mod, args, name=name):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x.T @ x).cpu()
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(lin.register_forward_pre_hook(hook))
    perplexity(model, data, windows, device)
    for h in hooks:
        h.remove()
    return {n: (sums[n] / counts[n]).numpy() for n in sums}


def compute_inits(weights, s, seed, bits=(4,)) -> tuple[dict, dict]:
    """The seed-dependent initialisations: ({method: {layer: Init}}, {layer: QA-LoRA GroupQuant for the merge})."""
    rng = np.random.default_rng(seed)
    low = [k for k in bits if k != 4]
    out = {m: {} for m in ("qlora-nf8", "qlora-nf4", "qalora", *(f"qlora-nf{k}" for k in low))}
    gqs = {}
    for n, W in weights.items():
        out["qlora-nf8"][n] = inits.qlora(W, s["rank"], rng, inits.NF8)
        out["qlora-nf4"][n] = inits.qlora(W, s["rank"], rng)
        out["qalora"][n], gqs[n] = inits.qalora_init(W, s["rank"], rng)
        for k in low:  # after the NF4 draws, so the NF4 methods' A is the same with or without --bits
            out[f"qlora-nf{k}"][n] = inits.qlora(W, s["rank"], rng, inits.NF[k])
    return out, gqs


def _layer_task(kind: str, W, Cn, rank: int, bits=(4,)):
    """One layer's initialisers (module level, so a process pool can run it)."""
    if kind == "fixed":
        out = {
            "loftq": inits.loftq_init(W, rank),
            "lqlora": inits.lqlora_init(W, rank)[0],
            "quailora-uncal": inits.quailora_init(W, rank, Cn, calibrated=False),
            "quailora-cal": inits.quailora_init(W, rank, Cn, calibrated=True),
        }
        for k in (k for k in bits if k != 4):
            cfg = inits.NF[k]
            out[f"loftq-nf{k}"] = inits.loftq_init(W, rank, config=cfg)
            out[f"quailora-uncal-nf{k}"] = inits.quailora_init(W, rank, Cn, calibrated=False, config=cfg)
            out[f"quailora-cal-nf{k}"] = inits.quailora_init(W, rank, Cn, calibrated=True, config=cfg)
        return out
    if kind == "ilp":
        return [inits.lqlora_init(W, rank, cfg, 5) for cfg in inits.ILP_CONFIGS]
    return {
        "QLoRA (B=0)": inits.Init(inits.NF4.quantize(W), np.zeros((rank, W.shape[1])), np.zeros((W.shape[0], rank))),
        "LoftQ T=5": inits.loftq_init(W, rank),
        "LQ-LoRA": inits.lqlora_init(W, rank)[0],
        "QuAILoRA uncal.": inits.quailora_init(W, rank, Cn, False),
        "QuAILoRA cal.": inits.quailora_init(W, rank, Cn, True),
    }


def per_layer(kind: str, weights, C, rank, bits=(4,), workers: int | None = None) -> dict:
    """_layer_task for every layer: a pool of spawned processes, each with one BLAS thread
    (ONE_THREAD), when there are at least 4 cores; else in order in this process."""
    workers = workers or os.cpu_count() or 1
    if workers < 4:
        return {n: _layer_task(kind, W, C[n], rank, bits) for n, W in weights.items()}
    with finetune.one_thread_children():
        with ProcessPoolExecutor(min(workers, len(weights)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {n: pool.submit(_layer_task, kind, W, C[n], rank, bits) for n, W in weights.items()}
            return {n: f.result() for n, f in futures.items()}


def deterministic_inits(weights, C, s, bits=(4,)) -> tuple[dict[str, dict], dict]:
    """({method: {layer: Init}} of the seed-independent methods, {method: (random method, {layer: Init})}
    of the per-group runs)."""
    done = per_layer("fixed", weights, C, s["rank"], bits)
    first = next(iter(weights))
    out = {m: {n: done[n][m] for n in weights} for m in done[first]}
    table = per_layer("ilp", weights, C, s["rank"])
    out["lqlora-ilp"], _ = inits.lqlora_ilp(weights, s["rank"], s["budget"], table=table)
    for b in s.get("budgets", ()):
        out[stats.ilp_name(b)], _ = inits.lqlora_ilp(weights, s["rank"], b, table=table)
    k = min(bits)
    cal = out[stats.name("quailora-cal", k)]
    mixes = {
        stats.group_name(k, g): (stats.name("qlora", k), {n: cal[n] for n in weights if group_of(n) == g})
        for g in GROUPS
    }
    return out, mixes


def error_vs_rank(weights, C, ranks) -> dict:
    """Relative errors summed over layers: Frobenius ||W - Q - BA|| / ||W|| and calibrated J / J(W)."""
    total_fro = sum(float(np.linalg.norm(W) ** 2) for W in weights.values())
    total_cal = inits.calibrated_norm(weights, C)
    rows = {}
    for r in ranks:
        fro, cal = {}, {}
        done = per_layer("rank", weights, C, r)
        for n, W in weights.items():
            for m, init in done[n].items():
                fro[m] = fro.get(m, 0) + float(np.linalg.norm(W - init.W - init.B @ init.A) ** 2)
                cal[m] = cal.get(m, 0) + inits.calibrated_error(W, init, C[n])
        rows[r] = {m: {"frobenius": (fro[m] / total_fro) ** 0.5, "calibrated": cal[m] / total_cal} for m in fro}
    return rows


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def run(
    size="small",
    seeds=(0, 1, 2),
    out=None,
    device=None,
    log=print,
    overrides=None,
    bits=(4,),
    workers=None,
    resume=False,
) -> dict:
    """The whole experiment; `workers` processes fine-tune (default: finetune.workers_for); `resume`
    continues a run stopped in `out` (experiments/progress.py)."""
    s = {**SETTINGS[size], **(overrides or {})}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = SIZES[size]
    t0 = time.time()
    corp = corpus_mod.build(s["corpus_bytes"])
    data = {k: torch.from_numpy(v.copy()) for k, v in corp.parts.items()}
    log(f"corpus {corp.root}: {corp.describe()}")
    progress = Progress(out, resume, size, s)
    saved = progress.base()
    torch.manual_seed(0)
    model = ByteGPT(cfg).to(device)
    if saved is not None:
        model.load_state_dict(saved["state"])
        losses, fp = saved["losses"], saved["fp"]
        log(f"pretrained model from {out}/base.pt: held-out ppl {fp['ft_val']:.3f}")
    else:
        losses = train(
            model,
            data["train"],
            s["pretrain"],
            s["lr"],
            s["batch"],
            seed=0,
            device=device,
            warmup=max(1, s["pretrain"] // 20),
        )
        fp = {
            "val": perplexity(model, data["val"], s["windows"], device),
            "ft_val": perplexity(model, data["ft_val"], s["windows"], device),
        }
        log(
            f"pretrained {cfg.params() / 1e6:.1f}M params, {s['pretrain']} steps in {time.time() - t0:.0f} s: "
            f"loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.3f}, val ppl {fp['val']:.3f}, "
            f"held-out ppl {fp['ft_val']:.3f}"
        )
        progress.save_base(model.state_dict(), losses, fp)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights = {n: lin.weight.detach().float().cpu().numpy() for n, lin in model.linears().items()}
    C = calibration_moments(model, data["calib"], s["calib_windows"], device)
    t1 = time.time()
    fixed, mixes = deterministic_inits(weights, C, s, bits)
    log(f"initialisers (qref, NumPy on the CPU) in {time.time() - t1:.0f} s")
    methods = methods_for(bits, s.get("budgets", ()))
    w_cal = inits.calibrated_norm(weights, C)
    shared = finetune.Shared(cfg, _cpu(state), data, s, weights, tuple(bits), fixed, mixes)
    first, _ = compute_inits(weights, s, seeds[0], bits)  # B = 0: the random methods' error is the seed's
    results = {}
    for m in methods:
        layer_inits = finetune.layer_inits(shared, m, first)
        per = {n: inits.calibrated_error(weights[n], i, C[n]) / w_cal for n, i in layer_inits.items()}
        results[m] = {
            "bits": float(
                np.average([i.bits for i in layer_inits.values()], weights=[weights[n].size for n in layer_inits])
            ),
            "calibrated_error": sum(per.values()),
            "calibrated_error_layers": per,
            "seeds": {},
        }
    t1 = time.time()
    earlier = progress.done()

    def record(seed, by_method):
        progress.record(seed, by_method)
        for m, r in by_method.items():
            results[m]["seeds"][seed] = r

    for (seed, m), r in earlier.items():
        if seed in seeds and m in results:
            results[m]["seeds"][seed] = r
    tasks = finetune.tasks_for(seeds, methods, skip=set(earlier))
    if earlier:
        log(f"resuming: {sum(len(c) for _, c in tasks)} of {len(seeds) * len(methods)} fine-tunes left")
    finetune.all_seeds(shared, tasks, device, log, workers, on_result=record)
    for m in methods:  # in seed order, whatever order the tasks ended in
        results[m]["seeds"] = {seed: results[m]["seeds"][seed] for seed in seeds}
    log(f"{len(methods)} methods x {len(seeds)} seeds fine-tuned in {time.time() - t1:.0f} s")
    out_doc = {
        "size": size,
        "config": cfg.__dict__,
        "params": cfg.params(),
        "settings": s,
        "seeds": list(seeds),
        "bits": sorted(set(bits) | {4}),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "corpus": {"root": corp.root, "files": corp.files, "bytes": {k: int(v.size) for k, v in corp.parts.items()}},
        "pretrain_loss": [losses[0], float(np.mean(losses[-20:]))],
        "fp": fp,
        "methods": results,
        "error_vs_rank": {},
        "seconds": time.time() - t0,
    }
    out_doc["summary"] = report.summarise(out_doc)
    if out:  # the fine-tuning results first: the error-vs-rank curves take minutes more
        report.write(out_doc, Path(out))
    t2 = time.time()
    out_doc["error_vs_rank"] = error_vs_rank(weights, C, s["ranks"])
    log(f"error vs rank in {time.time() - t2:.0f} s")
    out_doc["seconds"] = time.time() - t0
    if out:
        report.write(out_doc, Path(out))
    return out_doc


def _stamped(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="qref experiment", description=__doc__)
    p.add_argument("--size", choices=tuple(SETTINGS), default="small")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="results folder (default experiment-SIZE-seedsA-B-...)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--resume", action="store_true", help="continue a run stopped in --out (its base.pt, progress)")
    p.add_argument("--device", default=None)
    p.add_argument("--pretrain-steps", type=_positive, default=None, help="override the size's pretraining steps")
    p.add_argument("--ft-steps", type=_positive, default=None, help="override the size's fine-tuning steps")
    p.add_argument(
        "--bits", type=int, nargs="+", default=[4], choices=(2, 3, 4), help="NF-k bases (QLoRA, LoftQ, QuAILoRA)"
    )
    a = p.parse_args(argv)
    if len(set(a.seeds)) != len(a.seeds):
        p.error(f"--seeds: each seed once, got {a.seeds}")
    if a.device is not None:
        import torch

        try:
            device = torch.device(a.device)
        except (RuntimeError, ValueError) as e:
            p.error(f"--device {a.device!r}: {e}")
        if device.type == "cuda" and not torch.cuda.is_available():
            p.error(f"--device {a.device}: no CUDA device here")
    overrides = {k: v for k, v in (("pretrain", a.pretrain_steps), ("ft_steps", a.ft_steps)) if v is not None}
    from qref.files import OutputError, prepare_output

    out = a.out or f"experiment-{a.size}-seeds{'-'.join(map(str, a.seeds))}"
    try:  # checked before the run: a refused or unwritable folder costs nothing
        prepare_output(out, a.overwrite or a.resume, "--out", directory=True)
        doc = run(a.size, tuple(a.seeds), out, a.device, _stamped, overrides, tuple(a.bits), resume=a.resume)
    except (OutputError, ResumeError) as e:
        print(f"qref experiment: error: {e}", file=sys.stderr)
        return 2
    print(report.table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
