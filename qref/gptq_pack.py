"""GPTQ checkpoint tensors: qweight, qzeros, scales, g_idx (AutoGPTQ / GPTQ-for-LLaMa layout;
docs/gptq-packing.md).

Bit order: along the packed axis, value t occupies bits [k t, k t + k) of one little-endian bit
stream cut into 32-bit words (least significant bit first). For k = 2, 4, 8 a word holds 32/k
whole values; for k = 3 the stream layout is AutoGPTQ's (values 10 and 21 of every 32 straddle
two words). A count that does not fill the last word is padded with zero bits.
  qweight  int32 (ceil(D_in k / 32), D_out): codes packed along the input dimension
  qzeros   int32 (G, ceil(D_out k / 32)): zero points packed along the output dimension;
           format "v1" (AutoGPTQ, GPTQ-for-LLaMa) stores z - 1, "v2" (GPTQModel) stores z
  scales   float16 (G, D_out)
  g_idx    int32 (D_in,), the group of each input column, i // g
Merged QA-LoRA zeros are not integers: they are stored unpacked as "qzeros_float", float32
(G, D_out) (or float64), with W~ = scales * (q - qzeros_float).
"""

from __future__ import annotations

import numpy as np

from . import validation
from .groupwise import GROUPWISE_BITS, GroupQuant

GPTQ_FORMATS = ("v1", "v2")
#: How readers decode a v1 zero-point field s (AutoGPTQ 0.7.1's QuantLinear modules): the plain rule
#: z = s + 1, or, in qlinear_cuda_old's PyTorch path at 2, 4 and 8 bits, z = (s + 1) & maxq, which
#: reads the wrapped field (z - 1) & maxq = maxq of a zero point 0 back as 0.
V1_READERS = {
    "auto-gptq": "z = s + 1 (qlinear_cuda, qlinear_triton, qlinear_exllama(v2), qlinear_marlin; cuda_old at 3 bits)",
    "auto-gptq-cuda-old": "z = (s + 1) & maxq (qlinear_cuda_old at 2, 4, 8 bits)",
}
WRAPPING_BITS = (2, 4, 8)


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers < 2^bits along axis 0 into int32 words (LSB-first bit stream)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() >= 2**bits):
        raise ValueError(f"values must be in [0, {2**bits - 1}] to pack into {bits} bits")
    n, rest = values.shape[0], values.shape[1:]
    stream = (
        values.astype(np.uint32)[:, None] >> np.arange(bits, dtype=np.uint32).reshape(1, bits, *[1] * len(rest))
    ) & 1
    stream = stream.reshape(n * bits, *rest)
    words = -(-n * bits // 32)
    stream = np.concatenate([stream, np.zeros((words * 32 - n * bits, *rest), np.uint32)])
    weights = (np.uint32(1) << np.arange(32, dtype=np.uint32)).reshape(1, 32, *[1] * len(rest))
    return (stream.reshape(words, 32, *rest) * weights).sum(axis=1, dtype=np.uint32).view(np.int32)


def unpack_bits(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of `pack_bits`: the first n values along axis 0, as int64."""
    words = np.asarray(words)
    if words.dtype != np.int32:
        raise TypeError(f"packed words must be int32, got {words.dtype}")
    if words.shape[0] * 32 < n * bits:
        raise ValueError(f"{words.shape[0]} words hold fewer than n = {n} values of {bits} bits")
    rest = words.shape[1:]
    stream = (words.view(np.uint32)[:, None] >> np.arange(32, dtype=np.uint32).reshape(1, 32, *[1] * len(rest))) & 1
    stream = stream.reshape(words.shape[0] * 32, *rest)[: n * bits].reshape(n, bits, *rest)
    return (stream.astype(np.int64) << np.arange(bits).reshape(1, bits, *[1] * len(rest))).sum(axis=1)


def _check_reader(reader: str, fmt: str, bits: int) -> str:
    validation.one_of(reader, tuple(V1_READERS), "reader")
    if reader == "auto-gptq-cuda-old" and (fmt != "v1" or bits not in WRAPPING_BITS):
        raise ValueError(f"reader {reader!r} wraps v1 zero points at {WRAPPING_BITS} bits only, got {fmt} {bits} bits")
    return reader


def to_gptq(
    gq: GroupQuant, fmt: str = "v1", scales_dtype: str = "float16", reader: str = "auto-gptq"
) -> dict[str, np.ndarray]:
    """The checkpoint tensors of a GPTQ-form GroupQuant (codes unchanged; integer or float zeros).
    Scales are stored in the layer's weight dtype, float16 for the usual fp16 checkpoints. A v1 zero
    point of 0 is written only for a reader that wraps it (`V1_READERS`); v2 stores it as is."""
    validation.one_of(fmt, GPTQ_FORMATS, "fmt")
    validation.one_of(scales_dtype, ("float16", "float32"), "scales_dtype")
    _check_reader(reader, fmt, gq.bits)
    if gq.offset_zeros:
        raise ValueError("the minmax profile (W~ = s q + b) has no GPTQ zero-point form")
    d_out, d_in = gq.shape
    with np.errstate(over="ignore"):
        stored_scales = gq.scales.T.astype(scales_dtype)
    if not np.all(np.isfinite(stored_scales)):
        raise ValueError(
            f"scales up to {float(np.max(gq.scales)):.3g} overflow {scales_dtype} "
            "(float16 holds at most 65504): use scales_dtype='float32'"
        )
    out = {
        "qweight": pack_bits(gq.codes.T, gq.bits),
        "scales": stored_scales,
        "g_idx": (np.arange(d_in) // gq.group_size).astype(np.int32),
    }
    zeros = np.asarray(gq.zeros, dtype=np.float64)
    if np.all(zeros == np.rint(zeros)):
        stored = zeros.T.astype(np.int64) - (1 if fmt == "v1" else 0)
        if reader == "auto-gptq-cuda-old":
            stored = stored & (2**gq.bits - 1)  # a zero point 0 as maxq, read back as (maxq + 1) & maxq = 0
        elif stored.size and stored.min() < 0:
            raise ValueError(
                "format v1 stores zero - 1, and a zero point of 0 reads as 2^bits in AutoGPTQ's "
                "qlinear_cuda/triton/exllama/marlin: write for reader='auto-gptq-cuda-old' (it wraps, 2/4/8 "
                "bits) or use fmt='v2' (GPTQModel)"
            )
        out["qzeros"] = pack_bits(stored.T, gq.bits).T
    else:
        out["qzeros_float"] = zeros.T.astype(np.float32 if gq.zeros.dtype != np.float64 else np.float64)
    return out


def from_gptq(tensors: dict, bits: int, group_size: int, fmt: str = "v1", reader: str = "auto-gptq") -> GroupQuant:
    """A GroupQuant (profile gptq-asym) from checkpoint tensors, zero points decoded as `reader`
    does (`V1_READERS`); scales widen exactly from float16."""
    validation.one_of(bits, GROUPWISE_BITS, "bits")
    validation.one_of(fmt, GPTQ_FORMATS, "fmt")
    _check_reader(reader, fmt, bits)
    group_size = validation.positive_int(group_size, "group_size")
    for key in ("qweight", "scales"):
        if key not in tensors:
            raise ValueError(f"tensors lack {key!r}")
    scales = np.asarray(tensors["scales"])
    if scales.ndim != 2 or scales.dtype.kind != "f":
        raise ValueError(f"scales must be a 2-D float array (groups, D_out), got {scales.dtype} {scales.shape}")
    validation.finite(scales.astype(np.float64), "scales")
    groups, d_out = scales.shape
    d_in = groups * group_size
    qweight = np.asarray(tensors["qweight"])
    # the sizes say whether bits and group_size are the checkpoint's: a wrong one decodes garbage
    if qweight.shape != (-(-d_in * bits // 32), d_out):
        raise ValueError(
            f"qweight has shape {qweight.shape}; {groups} groups of {group_size} at {bits} bits need "
            f"{(-(-d_in * bits // 32), d_out)}: check bits and group_size"
        )
    g_idx = tensors.get("g_idx")
    if g_idx is not None and np.shape(g_idx) != (d_in,):
        raise ValueError(f"g_idx has shape {np.shape(g_idx)}, expected ({d_in},): check group_size")
    if g_idx is not None and not np.array_equal(np.asarray(g_idx), np.arange(d_in) // group_size):
        raise ValueError("g_idx is not i // group_size (act-order checkpoint): contiguous groups are required")
    codes = unpack_bits(qweight, bits, d_in).T.astype(np.uint8)
    if "qzeros_float" in tensors:
        zeros = np.asarray(tensors["qzeros_float"]).T
        if zeros.shape != (d_out, groups):
            raise ValueError(f"qzeros_float has shape {zeros.T.shape}, expected {(groups, d_out)}")
        validation.finite(zeros.astype(np.float64), "qzeros_float")
    else:
        qzeros = np.asarray(tensors["qzeros"])
        if qzeros.shape != (groups, -(-d_out * bits // 32)):
            raise ValueError(f"qzeros has shape {qzeros.shape}, expected {(groups, -(-d_out * bits // 32))}")
        stored = unpack_bits(qzeros.T, bits, d_out).T
        zeros = stored + (1 if fmt == "v1" else 0)
        if reader == "auto-gptq-cuda-old":
            zeros = zeros & (2**bits - 1)
        zeros = zeros.T.astype(np.float32)
    return GroupQuant(codes, scales.T.astype(np.float32), zeros, bits, group_size, "gptq-asym")
