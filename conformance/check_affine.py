"""`qref validate compressed-tensors hqq optimum-quanto torchao-int4`: group-wise affine INT-k libraries
against their profiles (qref.profiles.<library>), on the battery's group-wise weights.

Each library is one table entry: its configurations, the profile's outputs and the adapter's, under
the same names (codes, scales, zero points, the dequantized weight, the stored/packed tensors). Every
output is compared bit for bit; a difference is explained only by a classifier naming a known
divergence (divergences.json). Where the profile refuses an input (a range beyond float32, a shape
the storage cannot hold), the library must fail too: one refused by one side only is a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qref.groupwise import quantize_groupwise
from qref.profiles import compressed_tensors as ct
from qref.profiles import hqq
from qref.profiles import quanto as qo
from qref.profiles import torchao_int4 as ti4

from . import battery, divergences
from .report import Row


@dataclass(frozen=True)
class Library:
    adapter: str  # module under qref.conformance.peers
    configs: tuple[tuple[str, dict], ...]  # (label, keyword arguments of both sides besides the group size)
    ours: Callable[..., dict]
    classifiers: dict = field(default_factory=dict)  # output name -> classifiers
    # The same outputs from the reference's own group-wise profile (qref.groupwise), in the library's
    # terms, where one corresponds: (profile name, fn(W, g, **config) -> dict or None, classifiers)
    versus: tuple | None = None


def _ct(W, group_size, bits, symmetric, device="cpu"):
    s = ct.quantize(W, bits, group_size, symmetric)
    out = {"codes": s.codes, "scales": s.scales, "zero points": s.zero_points, "dequantized": ct.dequantize(s)}
    return out | {k: v for k, v in ct.to_checkpoint(s).items() if k in ("weight_packed", "weight_zero_point")}


def _ct_vs_gptq(W, group_size, bits, symmetric, device="cpu"):
    """qref's gptq-sym / gptq-asym in compressed-tensors' terms: codes and zero points minus 2^(k-1)."""
    r = quantize_groupwise(W, bits, group_size, "gptq-sym" if symmetric else "gptq-asym")
    off = 2 ** (bits - 1)
    out = {"codes": (r.codes.astype(np.int16) - off).astype(np.int8), "scales": r.scales}
    return out | {"zero points": np.zeros_like(r.scales, np.int8) if symmetric else (r.zeros - off).astype(np.int8)}


def _minmax(W, group_size, bits, **_):
    """qref's minmax profile (QA-LoRA Eq. 1): codes, scale, and the group minimum (the offset)."""
    r = quantize_groupwise(W, bits, group_size, "minmax")
    return {"codes": r.codes, "scales": r.scales, "minimum": r.zeros}


def _quanto_vs_minmax(W, group_size, bits, device="cpu"):
    r = _minmax(W, group_size, bits)
    return {
        "codes": r["codes"].reshape(-1, group_size),
        "scale": r["scales"].reshape(-1, 1),
        "shift": -r["minimum"].reshape(-1, 1),
    }


def _torchao_int4_vs_minmax(W, group_size, bits, dtype, device="cpu"):
    if dtype != "float32":
        return None  # the bfloat16 parameters round the scale: no reference profile corresponds
    r = _minmax(W, group_size, bits)
    return {"codes": r["codes"].astype(np.int32), "scales": r["scales"]}


def _hqq(W, group_size, bits, device="cpu"):
    s = hqq.quantize(W, bits, group_size)
    return {
        "codes": s.codes,
        "scale": s.scale,
        "zero": s.zero,
        "packed": hqq.pack(s.codes, bits),
        "dequantized": hqq.dequantize(s),
        "dequantized float16": hqq.dequantize(s, "float16"),
    }


def _quanto(W, group_size, bits, device="cpu"):
    s = qo.quantize(W, bits, group_size, device)
    return {
        "codes": s.codes,
        "scale": s.scale,
        "shift": s.shift,
        "packed": qo.pack(s.codes, bits),
        "dequantized": qo.dequantize(s),
    }


def _torchao_int4(W, group_size, bits, dtype, device="cpu"):
    s = ti4.quantize(W, bits, group_size, dtype, device)
    out = {"codes": s.codes, "scales": s.scales, "zeros": s.zeros, "dequantized": ti4.dequantize(s), "_state": s}
    if device != "cpu":  # the library packs two codes per byte off the CPU
        out["packed"] = ti4.pack_uint8(s.codes)
    return out


LIBRARIES = {
    "compressed-tensors": Library(
        "compressed_tensors",
        tuple(
            (f"int{b} {'sym' if sym else 'asym'}", {"bits": b, "symmetric": sym})
            for b in ct.BITS
            for sym in (True, False)
        ),
        _ct,
        versus=(
            "gptq-sym/gptq-asym",
            _ct_vs_gptq,
            [divergences.gptq_degenerate_group, divergences.gptq_sym_nonnegative_group, divergences.zero_point_tie],
        ),
    ),
    "hqq": Library("hqq", tuple((f"{b}-bit, optimize=False", {"bits": b}) for b in (1, 2, 3, 4, 8)), _hqq),
    "optimum-quanto": Library(
        "quanto",
        tuple((f"qint{b}", {"bits": b}) for b in qo.BITS),
        _quanto,
        versus=("minmax", _quanto_vs_minmax, [divergences.minmax_constant_group_scale]),
    ),
    "torchao-int4": Library(
        "torchao_int4",
        tuple(
            (f"{b}-bit, {dt} qparams", {"bits": b, "dtype": dt}) for b in (4, 2, 8) for dt in ("bfloat16", "float32")
        ),
        _torchao_int4,
        classifiers={k: [divergences.torchao_int4_pack_overflow] for k in ("codes", "dequantized")},
        versus=("minmax", _torchao_int4_vs_minmax, [divergences.scale_floor_group]),
    ),
}


def _peer(lib: Library):
    import importlib

    return importlib.import_module(f"{__package__}.peers.{lib.adapter}")


def available(name: str) -> tuple[bool, str]:
    return _peer(LIBRARIES[name]).available()


def _attempt(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except (ValueError, RuntimeError, AssertionError, TypeError, ZeroDivisionError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def check_library(name: str, quick: bool = False, device: str = "cpu") -> list[Row]:
    lib = LIBRARIES[name]
    peer = _peer(lib)
    rows: dict[tuple[str, str], Row] = {}
    group_sizes = (32,) if quick else (32, 128)
    for g in group_sizes:
        for case_name, W in battery.groupwise_cases(g):
            for label, kw in lib.configs:
                case = f"{case_name} group {g}"
                cfg = f"{label}, group {'/'.join(map(str, group_sizes))}"
                ours, our_err = _attempt(lib.ours, W, g, device=device, **kw)
                theirs, their_err = _attempt(peer.run, W, group_size=g, device=device, **kw)
                if our_err or their_err:
                    row = rows.setdefault(("refusal", label), Row("refusal", label))
                    both = our_err is not None and their_err is not None
                    row.add(case, np.array([both]), np.array([True]))
                    if not both and not row.first.endswith(case_name):
                        row.first = f"{case}: qref {our_err or 'accepts'} vs {name} {their_err or 'accepts'}"
                    continue
                for key, value in theirs.items():
                    row = rows.setdefault((key, label), Row(key, cfg))
                    mine = ours.get(key)
                    if mine is None:
                        mine = np.zeros(0, np.uint8)  # no profile output: a shape mismatch unless classified
                    row.add(case, mine, value, classifiers=lib.classifiers.get(key, ()), inputs=W, ours_state=ours)
                if lib.versus is None or device != "cpu":
                    continue  # the semantics are compared once; device arithmetic is the profile's
                profile, reference, classifiers = lib.versus
                spec = reference(W, g, **kw)
                for key, value in (spec or {}).items():
                    row = rows.setdefault((f"{key} vs qref {profile}", label), Row(f"{key} vs qref {profile}", cfg))
                    row.add(
                        case,
                        value,
                        theirs[key],
                        classifiers=classifiers,
                        inputs=W,
                        weight=W,
                        group_size=g,
                        bits=kw["bits"],
                    )
    return list(rows.values())
