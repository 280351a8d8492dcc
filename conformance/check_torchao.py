"""`qref validate torchao`: torchao's NF4Tensor vs its profile (qref.profiles.torchao_nf4) and vs the
bitsandbytes default (qref.quantize_4bit), in both directions, on the CPU or a CUDA device.

Rows, per float format:
  to_nf4 <field>            torchao's quantized_data / scalers / factor vs the profile's, given its mean
  to_nf4 scaler_mean        the mean itself (torch's float32 summation order vs the exact mean)
  dequantize                torchao's tensor dequantized by the profile and by torchao
  dequantize<-qref          the profile's tensor dequantized by torchao (built from its fields)
  codes vs bitsandbytes     torchao's NF4 codes vs bitsandbytes' (qref default), decision points named
  values vs bitsandbytes    torchao's dequantized weight vs bitsandbytes' (explained by the profile)
"""

from __future__ import annotations

import numpy as np

import qref
from qref.dtypes import as_float32
from qref.packing import unpack_nibbles
from qref.profiles import torchao_nf4 as tao

from . import battery, divergences
from .peers import torchao as ta
from .report import Row
from .shrink import blockwise, flat, take

BLOCK = 64


def cases(quick: bool = False):
    """The battery's inputs cut to whole 64-blocks, with the largest scaler block (256, 8, 4, 2, 1)
    that divides their block count, plus torchao's default configuration on a 128 x 128 weight."""
    rng = np.random.default_rng(7)
    for fmt in battery.FORMATS:
        yield f"default 128x128/{fmt}", battery.as_format(rng.standard_normal((128, 128)).astype(np.float32), fmt), 256
    for name, x in battery.cases("nf4", BLOCK):
        flat_x = flat(x)
        n = (as_float32(flat_x).size // BLOCK) * BLOCK
        if n == 0:
            continue
        n_blocks = n // BLOCK
        sbs = next(s for s in (256, 8, 4, 2, 1) if n_blocks % s == 0)
        yield name, take(flat_x, n), sbs
        if quick and name.startswith("heavy"):
            break


def check_torchao(quick: bool = False, device: str = "cpu") -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}

    def row(op: str, fmt: str) -> Row:
        return rows.setdefault((op, fmt), Row(op, f"{fmt}, block {BLOCK}"))

    for name, x, sbs in cases(quick):
        fmt = qref.dtypes.format_of(x)
        case = f"{name} (scaler block {sbs})"
        theirs = ta.to_nf4(x, BLOCK, sbs, device)
        row("to_nf4 scaler_mean", fmt).add(
            case,
            tao.to_nf4(x, BLOCK, sbs).scaler_mean,
            theirs.scaler_mean,
            classifiers=[divergences.reduction_order, divergences.overflowed_mean],
            inputs=x,
        )
        ours = tao.to_nf4(x, BLOCK, sbs, scaler_mean=theirs.scaler_mean)
        for field in ("quantized_data", "quantized_scalers", "quantization_factor"):
            row(f"to_nf4 {field}", fmt).add(
                case,
                getattr(ours, field),
                getattr(theirs, field),
                inputs=x,
                shrink=_shrinker(x, device) if field == "quantized_data" else None,
            )
        nan = [divergences.nan_payload]
        row("dequantize", fmt).add(case, tao.dequantize(theirs), ta.dequantize(theirs, device), nan, inputs=x)
        row("dequantize<-qref", fmt).add(case, tao.dequantize(ours), ta.dequantize(ours, device), nan, inputs=x)
        _versus_bitsandbytes(row, case, x, fmt, theirs, device)
    return list(rows.values())


def _shrinker(x, device):
    """Shrink a quantized_data difference (byte i) to its 64-block (codes do not depend on the
    scaler quantization, so the block is quantized alone with scaler block 1)."""

    def run(block):
        return tao.to_nf4(block, BLOCK, 1).quantized_data, ta.to_nf4(block, BLOCK, 1, device).quantized_data

    return lambda i: blockwise(x, 2 * i, BLOCK, run)


def _versus_bitsandbytes(row, case, x, fmt, theirs, device) -> None:
    n = int(np.prod(theirs.shape))
    packed, state = qref.quantize_4bit(x, BLOCK, "nf4")
    bnb_codes = unpack_nibbles(packed.reshape(-1), n)
    tao_codes = unpack_nibbles(theirs.quantized_data, n)
    x32 = as_float32(x).reshape(-1, BLOCK)
    absmax = np.abs(x32).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled32 = (x32 / np.maximum(absmax, np.float32(1e-38))).astype(np.float32)
        raw32 = (x32 / absmax).astype(np.float32)

    def codes(block):
        b = unpack_nibbles(qref.quantize_4bit(block, BLOCK, "nf4")[0].reshape(-1), BLOCK)
        return b, unpack_nibbles(ta.to_nf4(block, BLOCK, 1, device).quantized_data, BLOCK)

    def shrink(i):
        return blockwise(x, i, BLOCK, codes)

    row("codes vs bitsandbytes", fmt).add(
        case,
        bnb_codes,
        tao_codes,
        classifiers=[divergences.torchao_decisions],
        scaled32=scaled32,
        raw32=raw32,
        fmt=fmt,
        inputs=x,
        shrink=shrink,
    )
    bnb_values = qref.dequantize_4bit(packed, state, out_dtype=fmt)
    row("values vs bitsandbytes", fmt).add(
        case,
        bnb_values,
        ta.dequantize(theirs, device),
        classifiers=[divergences.torchao_scalers],
        inputs=x,
        profile_out=as_float32(tao.dequantize(theirs)),
    )
