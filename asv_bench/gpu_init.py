"""GPU initialisers (speed issue, item 2): LoftQ, LQ-LoRA and QuAILoRA on the torch:cuda backend for a
4096 x 4096 weight at rank 64 and 5 iterations, with warm-started randomized subspace iterations in
place of full SVDs, checked by the reference's certificates; then the model-wide driver over the 224
linear weights of LLaMA-7B's shapes (random LLM-like weights).

    python asv_bench/gpu_init.py --out gpu_init.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

DEV = "cuda"
LLAMA_7B = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]  # q k v o, gate up, down; x 32 layers


def llm_like(torch, shape, seed):
    """N(0, 0.02) with 1% of input columns scaled x10 (outlier features), float32 on the GPU."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    W = torch.randn(shape, generator=g, device=DEV) * 0.02
    cols = torch.randperm(shape[1], generator=g, device=DEV)[: max(1, shape[1] // 100)]
    W[:, cols] *= 10
    return W


def timed(torch, fn, reps=3):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), r


def eckart_young_gap(torch, R, B, A):
    """(||R - B A||_F - sqrt(sum_{i>r} s_i^2)) / ||R||_F, float64 on the GPU: 0 for the best rank-r fit."""
    s = torch.linalg.svdvals(R)
    r = A.shape[0]
    return float((torch.linalg.norm(R - B @ A) - torch.sqrt((s[r:] ** 2).sum())) / torch.linalg.norm(R))


def main(argv=None) -> int:
    import torch

    from qref.registry import get_backend

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_init.json")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--n", type=int, default=4096, help="side of the single-weight benchmark")
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke run)")
    args = ap.parse_args(argv)
    global DEV
    DEV = args.device
    if DEV == "cpu":
        torch.cuda.synchronize = lambda: None
    be = get_backend(f"torch:{DEV}")
    r, res = (
        args.rank,
        {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__, "rows": []},
    )
    n = args.n
    W = llm_like(torch, (n, n), 0)
    X = torch.randn(2 * n, n, device=DEV, dtype=torch.float64) @ (
        torch.eye(n, device=DEV, dtype=torch.float64) + 0.1 * torch.randn(n, n, device=DEV, dtype=torch.float64) / 64
    )
    C = X.T @ X / X.shape[0]
    W64 = W.double()
    Q0 = be.nf_quantize(W)
    runs = {
        "LoftQ T=5": lambda svd: be.loftq(W, r, 5, svd=svd),
        "LQ-LoRA 5 iterations": lambda svd: be.lqlora(W, r, max_iter=5, svd=svd),
        "QuAILoRA calibrated, 5 sweeps": lambda svd: be.quailora(W, Q0, r, C, max_iter=5, tol=0.0, svd=svd),
    }
    for name, run in runs.items():
        t_fast, fast = timed(torch, lambda: run("randomized"))
        t_exact, exact = timed(torch, lambda: run("exact"), reps=1)
        if "lora_B" in fast and "Q" in fast:
            Q, B, A = fast["Q"], fast["lora_B"], fast["lora_A"]
            obj, obj_exact = float(fast["error"]), float(exact["error"])
        elif "L1" in fast:
            Q, B, A = fast["Q"], fast["L1"], fast["L2"]
            obj, obj_exact = float(fast["error"]), float(exact["error"])
        else:
            Q, B, A = Q0, fast["lora_B"], fast["lora_A"]
            obj, obj_exact = fast["objective"], exact["objective"]
        # LoftQ returns SVD_r(W - Q_T): certify it; LQ-LoRA's factors fit W - Q_{T-1} (not returned)
        gap = eckart_young_gap(torch, W64 - Q, B, A) if name.startswith("LoftQ") else None
        row = {
            "method": name,
            "shape": [n, n],
            "rank": r,
            "ms": 1e3 * t_fast,
            "ms_full_svd": 1e3 * t_exact,
            "objective": obj,
            "objective_full_svd": obj_exact,
            "relative_to_full_svd": obj / obj_exact - 1,
            "eckart_young_gap": gap,
        }
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    shapes = LLAMA_7B * args.layers
    torch.cuda.synchronize()
    t0, errs = time.perf_counter(), []
    for i, shape in enumerate(shapes):
        Wi = llm_like(torch, shape, 1000 + i)
        out = be.loftq(Wi, r, 5, svd="randomized")
        errs.append(float(out["error"]) / float(torch.linalg.norm(Wi)))
    torch.cuda.synchronize()
    res["driver"] = {
        "weights": len(shapes),
        "shapes": "LLaMA-7B: 32 x (4 x 4096x4096, 2 x 11008x4096, 4096x11008)",
        "method": "LoftQ T=5, rank 64, randomized",
        "seconds": time.perf_counter() - t0,
        "relative_error_mean": statistics.mean(errs) if errs else None,
        "note": "includes generating each weight on the GPU",
    }
    print(json.dumps(res["driver"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
