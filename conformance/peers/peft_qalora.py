"""Adapter to PEFT's own QA-LoRA (`LoraConfig(use_qalora=True, qalora_group_size=g)`): a
`GPTQLoraLinear` around a GPTQ layer, its forward on float32 activations.

The GPTQ base is AutoGPTQ 0.7.1's `qlinear_cuda_old.QuantLinear` (loaded by path, CPU forward), fed
qref's checkpoint tensors; PEFT's layer wraps it directly (its dispatcher only recognises GPTQModel's
layers, but the wrapper takes any module with `infeatures`/`outfeatures`).
"""

from __future__ import annotations

import numpy as np

from . import installed, tensor

NAME = "peft-qalora"


def available() -> tuple[bool, str]:
    from . import autogptq

    ok, info = autogptq.available(need_pack=True)
    if not ok:
        return ok, info
    ok, info = installed("peft", "peft")
    if ok:
        from peft import LoraConfig

        if "use_qalora" not in LoraConfig.__dataclass_fields__:
            return False, f"peft {info} has no QA-LoRA (use_qalora needs peft >= 0.17)"
    return ok, info


def forward(x, tensors: dict, bits: int, group_size: int, A, B, alpha: float):
    """PEFT's QA-LoRA layer output for x (rows, D_in) float32; A (r, G), B (D_out, r) float32."""
    import torch
    from peft import LoraConfig
    from peft.tuners.lora.gptq import GPTQLoraLinear

    from .autogptq import _load

    qlinear = _load("nn_modules/qlinear/qlinear_cuda_old.py", "qref_peer_autogptq_qlinear_cuda_old")
    d_out, d_in = tensors["scales"].shape[1], tensors["g_idx"].shape[0]
    base = qlinear.QuantLinear(bits, group_size, d_in, d_out, bias=False, weight_dtype=torch.float32)
    for key in ("qweight", "qzeros", "g_idx"):
        getattr(base, key).copy_(tensor(tensors[key]))
    base.scales = tensor(np.asarray(tensors["scales"], np.float32))  # float16 values, float32 forward
    r = A.shape[0]
    config = LoraConfig(r=r, lora_alpha=alpha, use_qalora=True, qalora_group_size=group_size, lora_dropout=0.0)
    layer = GPTQLoraLinear(base, "default", config=config, r=r, lora_alpha=alpha)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(tensor(A))
        layer.lora_B["default"].weight.copy_(tensor(B))
        layer.eval()
        return layer(tensor(x)).numpy(), float(layer.scaling["default"])
