"""Model-wide driver: initialise every 2-D weight of a safetensors checkpoint (docs/initialisers.md).

Reads the checkpoint memory-mapped with the `safetensors` package (never pickle), runs one
initialiser per 2-D float tensor, and writes to a safetensors file, per weight NAME:
  NAME.codes     uint8: NF-k codes (4-bit: two per byte, first element high; else one per byte)
  NAME.absmax    float32 per block  (or NAME.qabsmax uint8, NAME.absmax2 float32, NAME.offset float32
                 when the absmax is double-quantized)
  NAME.lora_A    float32 (r, in),  NAME.lora_B  float32 (out, r)
Other tensors are skipped and reported. Returns one report row per tensor.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from . import loftq, lqlora, quailora
from .blockwise import quantize_blockwise
from .codebooks import get_codebook
from .double_quant import double_quantize
from .packing import pack_nibbles

METHODS = ("qlora", "loftq", "lqlora", "quailora")


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple
    status: str  # "initialised" or the reason it was skipped
    error_before: float = float("nan")  # ||W - Q||_F / ||W||_F
    error_after: float = float("nan")  # ||W - Q - B A||_F / ||W||_F


def _stored_state(name, quantized_from, bits, blocksize, dq_blocksize) -> dict[str, np.ndarray]:
    codes, absmax = quantize_blockwise(quantized_from.astype(np.float32), get_codebook(f"nf{bits}"), blocksize)
    flat = codes.reshape(-1)
    out = {f"{name}.codes": pack_nibbles(flat, pad_code=7) if bits == 4 else flat}
    if dq_blocksize is None:
        out[f"{name}.absmax"] = absmax
    else:
        dq = double_quantize(absmax, dq_blocksize)
        out.update(
            {
                f"{name}.qabsmax": dq.qabsmax,
                f"{name}.absmax2": dq.absmax2,
                f"{name}.offset": np.array([dq.offset], np.float32),
            }
        )
    return out


def initialise_layer(
    W: np.ndarray,
    method: str,
    rank: int,
    bits: int = 4,
    blocksize: int = 64,
    dq_blocksize: int | None = None,
    num_iter: int = 5,
    X: np.ndarray | None = None,
):
    """(quantized_from, Q, A, B) for one weight."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    quant = lqlora.LQConfig(bits, blocksize, dq_blocksize).quantize
    if method == "loftq":
        r = loftq.loftq(W, rank, num_iter, quantizer=quant)
        return r.quantized_from, r.Q, r.lora_A, r.lora_B
    if method == "lqlora":
        r = lqlora.decompose(W, rank, lqlora.LQConfig(bits, blocksize, dq_blocksize), max_iter=num_iter)
        return r.quantized_from, r.Q, r.L2, r.L1
    Q = quant(W)
    if method == "qlora":
        return W, Q, np.zeros((rank, W.shape[1])), np.zeros((W.shape[0], rank))
    if X is None:
        A, B = quailora.uncalibrated(W, Q, rank)
    else:
        res = quailora.calibrated(W, Q, rank, quailora.second_moment(X), damping=0.01, max_iter=num_iter)
        A, B = res.lora_A, res.lora_B
    return W, Q, A, B


def initialise_checkpoint(
    src: str,
    dst: str,
    method: str = "loftq",
    rank: int = 16,
    bits: int = 4,
    blocksize: int = 64,
    dq_blocksize: int | None = None,
    num_iter: int = 5,
    progress=sys.stderr,
) -> list[LayerReport]:
    from safetensors import safe_open
    from safetensors.numpy import save

    from .files import atomic_write_bytes

    out, reports = {}, []
    try:
        handle = safe_open(src, framework="numpy")
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors' own error types: a pickle, a truncated or foreign file
        raise ValueError(f"SRC {src} is not a readable safetensors file ({e})") from e
    with handle as f:
        names = list(f.keys())
        for i, name in enumerate(names, 1):
            if progress:
                progress.write(f"\r[{i}/{len(names)}] {name[:60]:<60}")
            try:
                t = f.get_tensor(name)
            except (TypeError, ValueError) as exc:  # e.g. bfloat16, which NumPy cannot hold
                reports.append(LayerReport(name, (), f"skipped: unreadable as numpy ({exc})"))
                continue
            if t.ndim != 2 or t.dtype.kind != "f" or min(t.shape) < rank:
                why = (
                    "not 2-D"
                    if t.ndim != 2
                    else ("not floating point" if t.dtype.kind != "f" else f"smaller than rank {rank}")
                )
                reports.append(LayerReport(name, t.shape, f"skipped: {why}"))
                continue
            W = t.astype(np.float64)
            source, Q, A, B = initialise_layer(W, method, rank, bits, blocksize, dq_blocksize, num_iter)
            out.update(_stored_state(name, source, bits, blocksize, dq_blocksize))
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = A.astype(np.float32), B.astype(np.float32)
            norm = np.linalg.norm(W)
            reports.append(
                LayerReport(
                    name, W.shape, "initialised", np.linalg.norm(W - Q) / norm, np.linalg.norm(W - Q - B @ A) / norm
                )
            )
    if progress:
        progress.write("\n")
    if out:  # written whole or not at all
        meta = {"qref_method": method, "rank": str(rank), "bits": str(bits)}
        atomic_write_bytes(dst, save(out, metadata=meta))
    return reports


def summary(reports: list[LayerReport]) -> str:
    lines = [f"{'tensor':<48} {'shape':>14} {'|W-Q|/|W|':>10} {'|W-Q-BA|/|W|':>13}  status"]
    for r in reports:
        lines.append(
            f"{r.name[:48]:<48} {tuple(r.shape)!s:>14} {r.error_before:>10.4g} {r.error_after:>13.4g}  {r.status}"
        )
    return "\n".join(lines)
