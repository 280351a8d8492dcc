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

import contextlib
import io
import json
import logging
import time
import warnings

import numpy as np

import qref
from qref.blockwise import block_absmax, scale_blocks
from qref.double_quant import DQ_BLOCKSIZE
from qref.dtypes import as_float32

from . import battery, check_affine, divergences, shrink
from .peers import bitsandbytes as bnb
from .report import Row, _clip, render, render_markdown


def _sizes(sizes) -> str:
    """'32-4096' for a run of powers of two, else '64/4096'."""
    s = sorted(sizes)
    run = len(s) > 2 and all(b == 2 * a for a, b in zip(s, s[1:]))
    return f"{s[0]}-{s[-1]}" if run else "/".join(map(str, s))


def check_bitsandbytes(blocksizes=qref.BLOCKSIZES_4BIT, quant_types=("nf4", "fp4"), device: str = "cpu") -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}

    def row(op: str, config: str) -> Row:
        return rows.setdefault((op, config), Row(op, config))

    dynamic = qref.get_codebook("dynamic")
    for qt in quant_types:
        for bs in blocksizes:
            cfg = f"{qt}, blocks {_sizes(blocksizes)}"
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
                ours = qref.dequantize_4bit(t_packed, t_view)
                theirs = {"dequantize_4bit": bnb.dequantize_4bit(t_packed, t_state, device)}
                if device == "cuda":  # the same call captured in a CUDA graph and replayed
                    theirs["dequantize_4bit (CUDA graph)"] = bnb.dequantize_4bit_graph(t_packed, t_state, device)
                for op, values in theirs.items():
                    row(op, cfg).add(
                        case,
                        ours,
                        values,
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
                _double_quant(row, f"{cfg}, dq {DQ_BLOCKSIZE}", case, x, bs, qt, state.absmax, dynamic, device)
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


GROUPWISE_LIBRARIES = tuple(check_affine.LIBRARIES)  # compressed-tensors, hqq, optimum-quanto, torchao-int4


def _affine(name: str):
    """(available, run) of a group-wise library of conformance/check_affine.py."""
    return (
        lambda: check_affine.available(name),
        lambda quick=False, device="cpu": check_affine.check_library(name, quick, device),
    )


PEERS = {
    "bitsandbytes": (bnb.available, _check_bnb),
    "torchao": (_torchao_available, _check_torchao),
    "auto-gptq": (_autogptq_available, _check_autogptq),
} | {name: _affine(name) for name in GROUPWISE_LIBRARIES}


EXIT_OK, EXIT_UNEXPLAINED, EXIT_USAGE = 0, 1, 2


@contextlib.contextmanager
def quiet():
    """Silence third-party noise while a library runs: its prints, warnings and log records (e.g.
    AutoGPTQ's "CUDA extension not installed.", torch._dynamo's recompile warnings)."""
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def run(
    peers=None, quick: bool = False, out=print, backends=None, fmt: str = "text", width: int = 120, progress=None
) -> int:
    """Every available backend and device vs the reference (conformance.backend_check), then every
    installed peer library (or those named): one table per backend and library, a final verdict line.
    Progress goes to `progress` (a callable taking a line; the CLI passes stderr). Exit status:
    0 every case exact, certified or explained; 1 any unexplained mismatch; unknown peers raise
    ValueError. A missing backend or peer is listed with the reason, not an error."""
    from .backend_check import check_backends

    for name in peers or ():
        if name not in PEERS:
            raise ValueError(f"unknown library {name!r}; known: {', '.join(PEERS)}")
    say = progress or (lambda line: None)
    started = time.monotonic()
    sections, skipped = [], []
    if backends != []:
        with quiet():
            b_sections, skipped = check_backends(backends, quick, progress=lambda s: say(f"qref check: backend {s}"))
        sections += [(f"backend {spec} vs the reference", rows, "backend") for spec, rows in b_sections]
    for name in PEERS if peers is None else peers:
        with quiet():
            ok, info = PEERS[name][0]()
        if not ok:
            skipped.append(f"{name}: {info}")
            continue
        say(f"qref check: {name} {info} ({time.monotonic() - started:.0f} s so far)")
        with quiet():
            rows = PEERS[name][1](quick=quick)
        sections.append((f"{name} {info} (CPU) vs the reference", rows, "library"))
    say(f"qref check: done in {time.monotonic() - started:.0f} s")
    out(format_report(sections, skipped, fmt, width))
    return EXIT_UNEXPLAINED if any(r.mismatches for _, rows, _ in sections for r in rows) else EXIT_OK


def verdict(sections) -> str:
    """One line: backends conforming, and the libraries' cases exact / explained / unexplained."""
    backends = [(t, rows) for t, rows, kind in sections if kind == "backend"]
    good = [t.split()[1] for t, rows in backends if not any(r.mismatches for r in rows)]
    libs = [r for _, rows, kind in sections if kind == "library" for r in rows]
    cases = sum(r.cases for r in libs)
    exact = sum(r.exact + r.certified for r in libs)
    explained = sum(r.explained for r in libs)
    unexplained = sum(r.mismatches for r in libs)
    bad = [t.split()[1] for t, rows in backends if any(r.mismatches for r in rows)]
    status = "FAIL" if bad or unexplained else "OK"
    line = f"verdict: {status}: {len(good)} of {len(backends)} backends conform"
    line += f" ({', '.join(good)})" if good else ""
    line += f", not conforming: {', '.join(bad)}" if bad else ""
    n_libs = sum(1 for _, _, kind in sections if kind == "library")
    return line + (
        f"; {n_libs} libraries: {cases} cases, {exact} exact, {explained} explained, {unexplained} unexplained"
    )


def format_report(sections, skipped, fmt: str = "text", width: int = 120) -> str:
    title = f"qref {qref.__version__}: backends and libraries vs the reference"
    if fmt == "json":
        from .validate import _row_json

        return json.dumps(
            {
                "qref": qref.__version__,
                "verdict": verdict(sections),
                "sections": [{"title": t, "kind": k, "rows": [_row_json(r) for r in rows]} for t, rows, k in sections],
                "skipped": skipped,
            },
            indent=1,
        )
    if fmt == "markdown":
        parts = [f"## {title}"] + [render_markdown(rows, t) for t, rows, _ in sections]
        parts += ["", *(f"- skipped {line}" for line in skipped), "", f"**{verdict(sections)}**"]
        return "\n\n".join(parts[:-3]) + "\n" + "\n".join(parts[-3:])
    parts = [title] + [render(rows, t, width) for t, rows, _ in sections]
    tail = [f"skipped {_clip(line, width - 8)}" for line in skipped] + [verdict(sections)]
    return "\n\n".join(parts) + "\n\n" + "\n".join(tail)
