"""`qref init` end to end on a LLaMA-7B-shaped checkpoint: per decoder layer the 7 linears of LLaMA-7B
(q, k, v, o 4096x4096; gate, up 11008x4096; down 4096x11008), bfloat16, N(0, 0.02) with 1% outlier
input columns; read, LoftQ T=5 rank 64 (randomized SVD on the fastest backend), quantized base and
adapter written. Times the whole command (startup included: importing torch, compiling the CUDA
kernels) and, for fewer than 32 layers, extrapolates to LLaMA-7B's 32 layers (224 linears) as
startup + 32 x the time per layer. qref_init.json's per-phase seconds are reported beside it.

    python asv_bench/init_model.py --layers 1 --work /tmp/qref-init-bench --out init_model.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

LINEARS = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (4096, 4096),
    "self_attn.v_proj": (4096, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (11008, 4096),
    "mlp.up_proj": (11008, 4096),
    "mlp.down_proj": (4096, 11008),
}


def write_model(folder: Path, layers: int) -> None:
    from qref.dtypes import float32_to_bf16_bits
    from qref.safetensors_io import SafetensorsWriter

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    w = SafetensorsWriter(folder / "model.safetensors", background=True)
    weights = {}  # one layer's weights, repeated in every layer: the work per layer is the same
    for name, shape in LINEARS.items():
        W = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        W[:, rng.choice(shape[1], shape[1] // 100, replace=False)] *= 10
        weights[name] = float32_to_bf16_bits(W)
    for layer in range(layers):
        for name, bits in weights.items():
            w.add(f"model.layers.{layer}.{name}.weight", bits, "BF16")
        w.add(f"model.layers.{layer}.input_layernorm.weight", np.full(4096, 0x3F80, np.uint16), "BF16")
    w.close({"format": "pt"})
    config = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": layers}
    (folder / "config.json").write_text(json.dumps(config))


def main(argv=None) -> int:
    from qref import __version__
    from qref.init_driver import InitConfig, initialise_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--work", default="qref-init-bench", help="scratch folder (removed afterwards)")
    ap.add_argument("--out", default="init_model.json")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if work.exists():
        raise SystemExit(f"--work {work} exists; give a new scratch folder")
    try:
        t0 = time.perf_counter()
        write_model(work / "model", args.layers)
        t_write = time.perf_counter() - t0
        cfg = InitConfig(method="loftq", rank=64, iters=5, backend=args.backend)
        t0 = time.perf_counter()
        reports = initialise_model(work / "model", work / "out", cfg, progress=sys.stderr)
        seconds = time.perf_counter() - t0
        meta = json.loads((work / "out" / "qref_init.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    adapted = [r for r in reports if r.status == "adapted"]
    result = {
        "command": f"python asv_bench/init_model.py --layers {args.layers} --backend {args.backend}",
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "qref": __version__,
        "backend": meta["backend"],
        "layers": args.layers,
        "linears": len(adapted),
        "seconds": round(seconds, 2),
        "seconds_per_layer": round(seconds / args.layers, 2),
        "phases_seconds": meta["seconds"],
        "startup_seconds": round(seconds - sum(meta["seconds"].values()), 2),
        "llama_7b_32_layers_seconds": round(
            seconds
            if args.layers == 32
            else (seconds - sum(meta["seconds"].values())) + sum(meta["seconds"].values()) / args.layers * 32,
            1,
        ),
        "extrapolated": args.layers != 32,
        "writing_the_test_checkpoint_seconds": round(t_write, 2),
        "relative_error_before_mean": float(np.mean([r.error_before for r in adapted])),
        "relative_error_after_mean": float(np.mean([r.error_after for r in adapted])),
    }
    try:
        import torch

        result["torch"] = torch.__version__
        result["threads"] = torch.get_num_threads()
        if meta["backend"] == "torch:cuda":
            result["device"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
