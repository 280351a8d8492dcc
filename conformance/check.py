"""`qref check`: the reference against every installed peer library, on the fixed battery.
(AutoGPTQ's rows are described in check_gptq.py.)

For bitsandbytes (CPU) each battery case runs through, per (quant_type, blocksize):
  quantize_4bit       packed bytes and absmax, qref vs bitsandbytes
  dequantize_4bit     bitsandbytes' bytes and state, dequantized by qref and by bitsandbytes
  dequantize_4bit<-   qref's bytes and state, dequantized by bitsandbytes (through its from_dict)
  dq offset           the double-quantization offset (qref: exact mean; bitsandbytes: torch mean)
  dq codes [C]        quantized absmax, given bitsandbytes' offset, vs its C kernel
  dq codes [default]  the same vs bitsandbytes' pure-PyTorch kernel (its semantic reference)
  dq absmax2          second-level absmax
  dequantize_4bit+dq  bitsandbytes' double-quantized state dequantized by qref and by bitsandbytes
"""

from __future__ import annotations

import numpy as np

import qref
from qref.blockwise import block_absmax, scale_blocks
from qref.double_quant import DQ_BLOCKSIZE
from qref.dtypes import as_float32

from . import battery, divergences, shrink
from .peers import bitsandbytes as bnb
from .report import Row, render


def check_bitsandbytes(blocksizes=qref.BLOCKSIZES_4BIT, quant_types=("nf4", "fp4"), device: str = "cpu") -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}

    def row(op: str, config: str) -> Row:
        return rows.setdefault((op, config), Row(op, config))

    dynamic = qref.get_codebook("dynamic")
    for qt in quant_types:
        for bs in blocksizes:
            cfg = f"{qt}, block {'/'.join(map(str, blocksizes))}"
            for name, x in battery.cases(qt, bs):
                case = f"{name} @block {bs}"
                packed, state = qref.quantize_4bit(x, bs, qt)
                t_packed, t_state = bnb.quantize_4bit(x, bs, qt, device=device)
                shrinks = _shrinkers(x, bs, qt, device)
                t_absmax = bnb.from_torch(t_state.absmax)
                row("quantize_4bit packed", cfg).add(
                    case,
                    packed.reshape(-1),
                    t_packed,
                    inputs=x,
                    shrink=shrinks["packed"],
                    classifiers=[divergences.kernel_4bit_codes],
                    x32=as_float32(x),
                    blocksize=bs,
                    quant_type=qt,
                    their_absmax=t_absmax,
                )
                row("quantize_4bit absmax", cfg).add(
                    case,
                    state.absmax,
                    t_absmax,
                    inputs=x,
                    shrink=shrinks["absmax"],
                    classifiers=[divergences.unfloored_zero_absmax, divergences.flush_to_zero],
                )
                t_view = qref.QuantState.from_dict(bnb.state_dict(t_state))
                row("dequantize_4bit", cfg).add(
                    case,
                    qref.dequantize_4bit(t_packed, t_view),
                    bnb.dequantize_4bit(t_packed, t_state, device),
                    classifiers=[divergences.signed_zero],
                    inputs=x,
                    shrink=shrinks["dequantize"],
                )
                row("dequantize_4bit<-qref", cfg).add(
                    case,
                    qref.dequantize_4bit(packed, state),
                    bnb.dequantize_4bit(packed.reshape(-1), bnb.state_from_qref(state, device), device),
                    classifiers=[divergences.signed_zero, divergences.flush_to_zero],
                    inputs=x,
                )
                _double_quant(row, f"{cfg}, dq block {DQ_BLOCKSIZE}", case, x, bs, qt, state.absmax, dynamic, device)
    return list(rows.values())


def _shrinkers(x, bs, qt, device):
    """Minimal-example shrinkers (conformance.shrink) for the 4-bit rows: output index -> element."""

    def packed(b):
        return qref.quantize_4bit(b, bs, qt)[0].reshape(-1), bnb.quantize_4bit(b, bs, qt, device=device)[0]

    def absmax(b):
        return qref.quantize_4bit(b, bs, qt)[1].absmax, bnb.from_torch(
            bnb.quantize_4bit(b, bs, qt, device=device)[1].absmax
        )

    def dequantize(b):
        t_packed, t_state = bnb.quantize_4bit(b, bs, qt, device=device)
        view = qref.QuantState.from_dict(bnb.state_dict(t_state))
        return qref.dequantize_4bit(t_packed, view), bnb.dequantize_4bit(t_packed, t_state, device)

    return {
        "packed": lambda i: shrink.blockwise(x, 2 * i, bs, packed),
        "absmax": lambda i: shrink.blockwise(x, i * bs, bs, absmax),
        "dequantize": lambda i: shrink.blockwise(x, i, bs, dequantize),
    }


def _double_quant(row, cfg, case, x, bs, qt, absmax, dynamic, device="cpu") -> None:
    t_packed, t_state = bnb.quantize_4bit(x, bs, qt, compress_statistics=True, device=device)
    kernel = "C kernel" if device == "cpu" else "CUDA kernel"
    t_offset = np.float32(t_state.offset.item())
    ours = qref.double_quantize(absmax)
    row("dq offset", cfg).add(
        case,
        np.array([ours.offset]),
        np.array([t_offset]),
        classifiers=[divergences.reduction_order, divergences.overflowed_mean, divergences.flush_to_zero],
        inputs=x,
    )
    if not np.isfinite(t_offset):
        return  # bitsandbytes' state is NaN from here on; the offset row records why
    same_offset = qref.double_quantize(absmax, offset=t_offset)
    centred = absmax - t_offset
    scaled = scale_blocks(centred, block_absmax(centred, DQ_BLOCKSIZE), DQ_BLOCKSIZE)
    row(f"dq codes [{kernel}]", cfg).add(
        case,
        same_offset.qabsmax,
        bnb.from_torch(t_state.absmax),
        classifiers=[divergences.farther_code],
        scaled=scaled,
        table=dynamic.values.astype(np.float64),
        inputs=x,
    )
    row(f"dq absmax2 [{kernel}]", cfg).add(
        case,
        same_offset.absmax2,
        bnb.from_torch(t_state.state2.absmax),
        classifiers=[divergences.floored_tail],
        inputs=x,
    )
    d_codes, d_absmax2 = bnb.default_quantize_blockwise(centred, dynamic.values, DQ_BLOCKSIZE)
    row("dq codes [default kernel]", cfg).add(case, same_offset.qabsmax, d_codes)
    row("dq absmax2 [default kernel]", cfg).add(case, same_offset.absmax2, d_absmax2)
    t_view = qref.QuantState.from_dict(bnb.state_dict(t_state))
    row("dequantize_4bit+dq", cfg).add(
        case,
        qref.dequantize_4bit(t_packed, t_view),
        bnb.dequantize_4bit(t_packed, t_state, device),
        classifiers=[divergences.signed_zero],
        inputs=x,
    )


def _check_autogptq(quick: bool = False) -> list[Row]:
    from .check_gptq import check_autogptq

    return check_autogptq(group_sizes=(32,) if quick else (32, 128))


def _check_bnb(quick: bool = False, device: str = "cpu") -> list[Row]:
    return check_bitsandbytes(blocksizes=(64, 4096) if quick else qref.BLOCKSIZES_4BIT, device=device)


def _check_torchao(quick: bool = False, device: str = "cpu") -> list[Row]:
    from .check_torchao import check_torchao

    return check_torchao(quick, device)


def _torchao_available():
    from .peers import torchao

    return torchao.available()


def _autogptq_available():
    from .peers import autogptq

    return autogptq.available()


PEERS = {
    "bitsandbytes": (bnb.available, _check_bnb),
    "torchao": (_torchao_available, _check_torchao),
    "auto-gptq": (_autogptq_available, _check_autogptq),
}


def run(peers=None, quick: bool = False, out=print, backends=None) -> int:
    """One table: every available backend and device vs the reference (conformance.backend_check),
    then every installed peer library (or those named). Exit status 1 on an unexplained mismatch,
    else 0; a missing backend or peer is listed with the reason, not an error."""
    from dataclasses import replace

    from .backend_check import check_backends

    rows, skipped = [], []
    if backends != []:
        b_rows, skipped = check_backends(backends, quick)
        rows += b_rows
    for name in peers or PEERS:
        if name not in PEERS:
            raise SystemExit(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        ok, info = PEERS[name][0]()
        if not ok:
            skipped.append(f"{name}: {info}")
            continue
        rows += [replace(r, config=f"{name} {info} (CPU) | {r.config}") for r in PEERS[name][1](quick=quick)]
    out(render(rows, f"qref {qref.__version__}: backends and libraries vs the reference") + "\n")
    for line in skipped:
        out(f"skipped {line}")
    return int(any(r.mismatches for r in rows))
