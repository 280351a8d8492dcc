"""What `qref init` computes for one linear: the method's factors and the stored base (docs/init.md).

Two base layouts:
  bitsandbytes  4-bit NF4/FP4 blockwise absmax (qref.fourbit), packed codes under the weight's own
                name and the quant state beside it (qref.quant_state), for qlora, loftq, lqlora and
                quailora;
  GPTQ          group-wise INT4 round to nearest, asymmetric (qref.groupwise "gptq-asym", what GPTQ
                computes with an identity Hessian), packed as qweight/qzeros/scales/g_idx under the
                module's name (qref.gptq_pack, format v1 or v2), for qalora.
"""

from __future__ import annotations

import math

import numpy as np

from .codebooks import get_codebook
from .double_quant import DoubleQuant
from .gptq_pack import to_gptq
from .groupwise import GroupQuant
from .quant_state import QuantState

METHODS = ("qlora", "loftq", "lqlora", "quailora", "qalora")
GPTQ_METHODS = ("qalora",)
#: The block of the second-level (8-bit) absmax in bitsandbytes' layout.
DQ_BLOCKSIZE = 256
GPTQ_BITS = 4
#: checkpoint_format in transformers' / GPTQModel's quantization_config.
GPTQ_CHECKPOINT_FORMAT = {"v1": "gptq", "v2": "gptq_v2"}


def peft_kaiming_A(seed: int, index: int, rank: int, fan_in: int) -> np.ndarray:
    """lora_A as PEFT initialises it: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (reproducible from (seed, index), not PEFT's own random stream)."""
    bound = 1.0 / math.sqrt(fan_in)
    return np.random.default_rng([seed, index]).uniform(-bound, bound, (rank, fan_in))


def initialise_layer(W, cfg, backend, index: int = 0):
    """(quantized_from, A, B) for a float32 weight W (out, in) on the backend: quantized_from stays
    there, A (r, in) or (r, in / group_size) for qalora and B (out, r) come back as NumPy arrays, with
    W ~ dequant(quant(quantized_from)) + B A (qalora: + B A applied to the pooled input)."""
    dq = DQ_BLOCKSIZE if cfg.double_quant else None
    r = cfg.rank
    d_out, d_in = (int(n) for n in W.shape)
    if cfg.method in ("qlora", "qalora"):
        # qalora: PEFT replaces lora_A by a fresh nn.Linear(in / group_size, r), the same Kaiming bound
        fan_in = d_in if cfg.method == "qlora" else d_in // cfg.group_size
        return W, peft_kaiming_A(cfg.seed, index, r, fan_in), np.zeros((d_out, r))
    if cfg.method == "loftq":
        precision = "float32" if cfg.svd == "randomized" else "float64"  # the fast path, or the reference's
        res = backend.loftq(W, r, cfg.iters, 4, cfg.blocksize, svd=cfg.svd, dq_blocksize=dq, precision=precision)
        source, A, B = res["quantized_from"], res["lora_A"], res["lora_B"]
    elif cfg.method == "lqlora":
        res = backend.lqlora(W, r, 4, cfg.blocksize, max_iter=cfg.iters, svd=cfg.svd, dq_blocksize=dq)
        source, A, B = res["quantized_from"], res["L2"], res["L1"]
    else:  # quailora, uncalibrated
        Q = backend.nf_quantize(W, 4, cfg.blocksize, dq)
        R = backend.astype(W, "float64") - Q
        if cfg.svd == "exact":
            B, A = backend.svd_factors(R, r)
        else:
            B, A, _ = backend.svd_factors_randomized(R, r)
        source = W
    return source, np.asarray(backend.to_numpy(A)), np.asarray(backend.to_numpy(B))


def store_4bit(backend, source, cfg, name: str, dtype: str):
    """({tensor name: array}, dequantized float32 on the backend): `source` (a backend array, read as
    float32) in bitsandbytes' 4-bit layout, computed by the backend (bit-exact with
    qref.quantize_4bit); the packed codes (ceil(n/2), 1) uint8 under `name`, the quant state beside."""
    to = backend.to_numpy
    shape = tuple(int(n) for n in source.shape)
    q = backend.quantize_4bit(backend.astype(source, "float32"), cfg.blocksize, cfg.quant_type, cfg.double_quant)
    Q = backend.dequantize_4bit(q, shape, cfg.blocksize, cfg.quant_type)
    code = get_codebook(cfg.quant_type).values
    nested = None
    if q.qabsmax is not None:
        offset = np.float32(np.asarray(to(q.offset) if not isinstance(q.offset, np.floating) else q.offset).item())
        nested = DoubleQuant(
            np.asarray(to(q.qabsmax)), np.asarray(to(q.absmax2)), offset, DQ_BLOCKSIZE, get_codebook("dynamic")
        )
    absmax = nested.qabsmax if nested is not None else np.asarray(to(q.absmax))
    state = QuantState(cfg.quant_type, absmax, cfg.blocksize, code, dtype, shape, nested)
    tensors = {name: np.asarray(to(q.packed)).reshape(-1, 1)}
    tensors.update({f"{name}.{key}": value for key, value in state.as_dict(packed=True).items()})
    return tensors, Q


def store_gptq(backend, source, cfg, name: str):
    """({tensor name: array}, dequantized on the backend): `source` quantized group-wise by the backend
    (bit-exact with qref.quantize_groupwise, profile gptq-asym), stored as GPTQ's qweight, qzeros,
    scales (float16) and g_idx under the module of `name` in format cfg.gptq_format; the dequantized
    weight is the one the stored tensors give (float16 scales), as a GPTQ kernel reads them."""
    module = name.removesuffix(".weight")
    codes, scales, zeros = backend.quantize_groupwise(
        backend.astype(source, "float32"), GPTQ_BITS, cfg.group_size, "gptq-asym"
    )
    to = backend.to_numpy
    gq = GroupQuant(
        np.asarray(to(codes)), np.asarray(to(scales)), np.asarray(to(zeros)), GPTQ_BITS, cfg.group_size, "gptq-asym"
    )
    try:
        stored = to_gptq(gq, cfg.gptq_format, "float16")
    except ValueError as e:
        hint = " (or --gptq-format v2)" if cfg.gptq_format == "v1" and "zero point" in str(e) else ""
        raise ValueError(f"tensor {name}: {e}{hint}") from None
    scales16 = stored["scales"].T.astype(np.float32)  # exactly the float16 values a reader widens
    Q = backend.dequantize_groupwise(codes, backend.from_numpy(scales16), zeros, cfg.group_size, "gptq-asym")
    return {f"{module}.{key}": value for key, value in stored.items()}, Q
