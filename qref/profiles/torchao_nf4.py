"""torchao's NF4Tensor as a profile: the bytes `torchao.quantization.to_nf4` produces (docs/profiles.md).

Source: torchao 0.18.0, `torchao/quantization/quantize_/workflows/nf4/nf4_tensor.py`
(`NF4Tensor.from_tensor`, `double_quantize_scalers`, `convert_to_norm_float_weight`,
`get_original_weight`). Where it differs from the bitsandbytes default (qref.quantize_4bit):

1. the NF4 table is the 4-decimal rounding (-0.6962, ...) held in the *input* format;
2. every arithmetic step runs in the input format (PyTorch computes a bfloat16/float16 op in
   float32 and rounds the result to nearest even, which `_r` reproduces);
3. the code is argmin_k |x/a - t_k| with that difference rounded to the input format, the lowest
   index winning ties (not a comparison against midpoints);
4. the absmax ("scalers") are always double-quantized, to int8, by a linear rule:
   c = a - mean(a);  f = 256 * rn(1 / (2 max|c|)) per scaler block;  q = clamp(rne(c f), -128, 127);
   restored a' = rn(q / f) + mean, all in the input format (codes use the unquantized a);
5. no tail blocks: numel must be a multiple of block_size and of block_size * scaler_block_size.

An all-zero block scales as 0/0 = NaN; the argmin of a row of NaNs is index 0 (-1.0), restored
as -1.0 * a'. A scaler block whose centred values are all 0 has f = inf and 0 * inf = NaN, which
torch's float -> int8 conversion turns into 0 (x86 and CUDA alike); the profile states q = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation
from ..double_quant import mean_offset
from ..dtypes import as_float32, cast_float32, round_to
from ..packing import pack_nibbles, unpack_nibbles

NAME = "torchao"
VERSION = "0.18.0"

#: torchao's NF4 table exactly as its source writes it (4 decimals), before rounding to the input format.
NF4_TABLE_4DP = (
    -1.0,
    -0.6962,
    -0.5251,
    -0.3949,
    -0.2844,
    -0.1848,
    -0.0911,
    0.0,
    0.0796,
    0.1609,
    0.2461,
    0.3379,
    0.4407,
    0.5626,
    0.7230,
    1.0,
)


_r = round_to  # one op in `fmt`


def table(fmt: str) -> np.ndarray:
    """The NF4 table in `fmt` (float32 values): torch.tensor(NF4_TABLE_4DP, dtype=fmt)."""
    return _r(np.array(NF4_TABLE_4DP, dtype=np.float32), fmt)


@dataclass(frozen=True)
class TorchaoNF4:
    """The fields of an NF4Tensor: packed codes, int8 scalers, per-scaler-block factor, the mean."""

    quantized_data: np.ndarray  # uint8 (numel / 2,), first element in the high nibble
    quantized_scalers: np.ndarray  # int8 (n_blocks,)
    quantization_factor: object  # (n_blocks / scaler_block_size,) in the input format
    scaler_mean: object  # () in the input format
    shape: tuple[int, ...]
    fmt: str
    block_size: int = 64
    scaler_block_size: int = 256


def check_shape(numel: int, ndim: int, block_size: int, scaler_block_size: int) -> None:
    """torchao's own asserts, as errors: dim <= 2, no tail block, whole scaler blocks, even numel."""
    if ndim > 2:
        raise ValueError(f"torchao NF4 takes tensors of at most 2 dimensions, got {ndim}")
    if numel % block_size:
        raise ValueError(f"numel {numel} is not a multiple of block_size {block_size} (torchao has no tail block)")
    if (numel // block_size) % scaler_block_size:
        raise ValueError(f"{numel // block_size} blocks are not a multiple of scaler_block_size {scaler_block_size}")


def nearest_code(scaled: np.ndarray, fmt: str) -> np.ndarray:
    """argmin_k rn_fmt(|s - t_k|), lowest index on ties; NaN rows give index 0 (torch.min's rule)."""
    diff = np.abs(_r(scaled[..., None] - table(fmt), fmt))
    return np.argmin(diff, axis=-1).astype(np.uint8)


def quantize_scalers(absmax: np.ndarray, fmt: str, scaler_block_size: int, mean=None):
    """Step 4: (int8 q, factor f, mean) from the block absmax, every op rounded to fmt. The mean is
    the exact mean rounded to float32, then to fmt; `mean` substitutes another (e.g. torch's)."""
    if mean is None:
        mean = _r(np.array(mean_offset(absmax), dtype=np.float32), fmt)
    mean = as_float32(mean).reshape(())
    centred = _r(absmax - mean, fmt).reshape(-1, scaler_block_size)
    peak = np.abs(centred).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        factor = _r(_r(np.float32(1) / _r(2 * peak, fmt), fmt) * np.float32(256), fmt)
        scaled = _r(centred * factor, fmt)
    q = np.clip(np.rint(scaled), -128, 127)
    q = np.where(np.isnan(q), 0, q).astype(np.int8)
    return q.reshape(-1), factor.reshape(-1), mean


def dequantize_scalers(q: np.ndarray, factor: np.ndarray, mean: np.ndarray, fmt: str, scaler_block_size: int):
    """a' = rn(rn(q / f) + mean) in fmt."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _r(q.astype(np.float32).reshape(-1, scaler_block_size) / factor[:, None], fmt)
    return _r(ratio + mean, fmt).reshape(-1)


def to_nf4(x, block_size: int = 64, scaler_block_size: int = 256, scaler_mean=None) -> TorchaoNF4:
    """torchao.quantization.to_nf4(x, block_size, scaler_block_size), field for field. torch's float32
    mean has its own summation order (a float32 input's mean can differ by an ulp): `scaler_mean`
    takes theirs, so every other field can still be compared bit for bit."""
    x32, fmt = validation.float_input(x, "x")
    block_size = validation.positive_int(block_size, "block_size")
    scaler_block_size = validation.positive_int(scaler_block_size, "scaler_block_size")
    check_shape(x32.size, x32.ndim, block_size, scaler_block_size)
    blocks = x32.reshape(-1, block_size)
    absmax = np.abs(blocks).max(axis=1)
    q, factor, mean = quantize_scalers(absmax, fmt, scaler_block_size, scaler_mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = _r(blocks / absmax[:, None], fmt)
    codes = nearest_code(scaled, fmt).reshape(-1)
    return TorchaoNF4(
        pack_nibbles(codes),
        q,
        cast_float32(factor, fmt),
        cast_float32(mean, fmt),
        tuple(x32.shape),
        fmt,
        block_size,
        scaler_block_size,
    )


def dequantize(t: TorchaoNF4):
    """NF4Tensor.get_original_weight(): rn(t_code * a') in the input format, in the tensor's shape."""
    n = int(np.prod(t.shape))
    codes = unpack_nibbles(t.quantized_data, n).reshape(-1, t.block_size)
    scalers = dequantize_scalers(
        t.quantized_scalers, as_float32(t.quantization_factor), as_float32(t.scaler_mean), t.fmt, t.scaler_block_size
    )
    values = _r(table(t.fmt)[codes] * scalers[:, None], t.fmt)
    return cast_float32(values.reshape(t.shape), t.fmt)
