"""`qref validate peft-qalora`: PEFT's own QA-LoRA layer vs qref.qalora.forward with PEFT's pooling
(c = G/g, the reference's "peft" pooling), certified by qref.linear.qalora_linear's bound.

The base is GPTQ (gptq-asym, v1 checkpoint tensors, AutoGPTQ's CPU forward), the adapter A (r, G),
B (D_out, r) and the activations are float32 normal draws; each case's row records
max |y_peft - y| / bound, which must be <= 1. The same outputs are also held to the paper's pooling
conventions ("average", "sum"), which they must *not* meet: a check that the bound separates them.
"""

from __future__ import annotations

import numpy as np

from qref.gptq_pack import from_gptq, to_gptq
from qref.groupwise import check_state, quantize_groupwise
from qref.linear import check_linear, qalora_linear

from . import battery
from .peers import peft_qalora
from .report import Row


def check_peft_qalora(quick: bool = False, device: str = "cpu") -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    rng = np.random.default_rng(19)
    for g in (32,) if quick else (32, 128):
        for bits in (4,) if quick else (2, 4, 8):
            cfg = f"{bits}-bit gptq-asym v1, group {g}, r 8, alpha 16"
            for name, W in battery.groupwise_cases(g):
                try:  # refused: a v1 zero point of 0 (no field), a group scale float16 cannot hold
                    tensors = to_gptq(quantize_groupwise(W, bits, g, "gptq-asym"), "v1")
                    base = from_gptq(tensors, bits, g, "v1")  # float16 scales, as the checkpoint holds them
                    check_state(base)
                except ValueError:
                    continue
                groups = W.shape[1] // g
                A = rng.standard_normal((8, groups)).astype(np.float32)
                B = rng.standard_normal((W.shape[0], 8)).astype(np.float32)
                x = rng.standard_normal((3, W.shape[1])).astype(np.float32)
                y, scaling = peft_qalora.forward(x, tensors, bits, g, A, B, 16.0)
                ref, bound = qalora_linear(x, base, A, B, scaling, "peft")
                _, _, excess = check_linear(y, ref, bound)
                rows.setdefault(("forward", cfg), Row("forward (pooling peft)", cfg)).certify(
                    f"{name} group {g}", excess, 1.0, "max |y - y_ref| / bound"
                )
                for pooling in ("average", "sum"):
                    other, other_bound = qalora_linear(x, base, A, B, scaling, pooling)
                    separated = not check_linear(y, other, other_bound)[0]
                    rows.setdefault((pooling, cfg), Row(f"not pooling {pooling}", cfg)).add(
                        f"{name} group {g}", np.array([separated]), np.array([True])
                    )
    return list(rows.values())
