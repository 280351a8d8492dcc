"""Golden test vectors in the manner of Wycheproof: `qref vectors export DIR`, `qref vectors check DIR`.

One JSON file per op family, each with test groups per configuration; every test case has an id,
a comment, flags naming the edge cases it covers, its input, and either the expected outputs
("result": "valid") or an expected refusal ("result": "invalid"). Arrays are encoded as
{"dtype", "shape", "hex"}: the little-endian bytes of the values (bfloat16 as its 16-bit pattern),
so a consumer in any language reproduces them bit for bit with no float parsing. The layout is
described in docs/vectors.md and by the JSON Schema written beside the files. Export is
deterministic: the same qref version writes byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import qref
from qref import groupwise
from qref.codebooks import get_codebook
from qref.dtypes import BFloat16Array, format_of
from qref.fourbit import QUANT_TYPES_4BIT

from . import battery

SCHEMA_NAME = "qref_vectors_v1.schema.json"
FLAGS = {
    "Random": "standard-normal values",
    "HeavyTails": "Student-t (2 degrees of freedom) values: large absmax relative to the rest",
    "TailBlock": "the element count is not a multiple of the block size: a short last block",
    "OddLength": "an odd element count: the last byte holds one code and the pad code",
    "ZeroBlock": "a block (or the whole input) of zeros: absmax floored at float32(1e-38)",
    "SignedZero": "-0.0 and +0.0 inputs",
    "SingleElement": "a single element",
    "SingleNonzero": "one nonzero value in a zero block",
    "Midpoint": "values exactly on a midpoint between two codes: ties round to the lower code",
    "MidpointPlusUlp": "one ulp above a midpoint",
    "MidpointMinusUlp": "one ulp below a midpoint",
    "ReciprocalVsDivision": "values whose code differs between x * (1/absmax) and x / absmax: division is the rule",
    "Subnormal": "subnormal absmax: no flush to zero",
    "LargestFinite": "values near the float32 maximum",
    "HalfInteger": "group-wise w/scale on .5: round half to even",
    "EdgeGroup": "all-zero, all-positive, all-negative and constant groups",
    "NonFinite": "NaN or Inf input: must be refused",
    "BadBlocksize": "a block size the op does not support: must be refused",
    "DoubleQuant": "absmax double-quantized (8-bit dynamic map, block 256, exact mean offset)",
    "DequantizeOverflow": "the double-quantized absmax overflows float32 when restored: no dequantized output is "
    "expected (the reference refuses to dequantize such a state)",
    "NarrowGroup": "group ranges from 1e-7 to 1e-1: the libraries' small-range guards (scale floors, near-constant "
    "groups)",
    "ZeroPointZeroV1": "a group whose zero point is 0: format v1 stores z - 1 and cannot hold it (refused)",
}
_NAME_FLAGS = [
    ("normal", "Random"),
    ("heavy", "HeavyTails"),
    ("tail", "TailBlock"),
    ("zero", "ZeroBlock"),
    ("signed-zeros", "SignedZero"),
    ("single-element", "SingleElement"),
    ("single-nonzero", "SingleNonzero"),
    ("midpoints-on", "Midpoint"),
    ("midpoints-above", "MidpointPlusUlp"),
    ("midpoints-below", "MidpointMinusUlp"),
    ("reciprocal", "ReciprocalVsDivision"),
    ("subnormal", "Subnormal"),
    ("largest", "LargestFinite"),
    ("half-integers", "HalfInteger"),
    ("edge-groups", "EdgeGroup"),
    ("narrow", "NarrowGroup"),
]


def encode(a) -> dict:
    """An array as {"dtype", "shape", "hex"} (little-endian; bfloat16 as its uint16 bits)."""
    if isinstance(a, BFloat16Array):
        raw, dtype = a.bits.astype("<u2"), "bfloat16"
    else:
        a = np.asarray(a)
        raw, dtype = a.astype(a.dtype.newbyteorder("<")), a.dtype.name
    return {"dtype": dtype, "shape": list(np.shape(raw)), "hex": np.ascontiguousarray(raw).tobytes().hex()}


DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8", "int8", "int32", "int64", "uint16", "uint32")


def decode(d: dict):
    """Inverse of `encode`; a dtype outside DTYPES or a shape that does not fit the bytes is a ValueError."""
    if d["dtype"] not in DTYPES:
        raise ValueError(f"dtype {d['dtype']!r} is not one of {DTYPES}")
    if not isinstance(d["shape"], list) or not all(isinstance(k, int) and k >= 0 for k in d["shape"]):
        raise ValueError(f"shape {d['shape']!r} is not a list of sizes")
    raw = bytes.fromhex(d["hex"])
    if d["dtype"] == "bfloat16":
        return BFloat16Array(np.frombuffer(raw, "<u2").astype(np.uint16).reshape(d["shape"]))
    return np.frombuffer(raw, np.dtype(d["dtype"]).newbyteorder("<")).astype(d["dtype"]).reshape(d["shape"])


def decode_input(d: dict):
    """A test's input: one array, or an object of named arrays (the forward vectors)."""
    if isinstance(d, dict) and "hex" not in d:
        return {k: decode(v) for k, v in d.items()}
    return decode(d)


def flags_of(name: str, size: int, blocksize: int) -> list[str]:
    flags = [flag for key, flag in _NAME_FLAGS if key in name]
    if size % blocksize and "TailBlock" not in flags:
        flags.append("TailBlock")
    if size % 2:
        flags.append("OddLength")
    return sorted(set(flags))


def small(x, limit: int):
    """At most `limit` elements of a battery input: whole leading rows of a 2-D one, a prefix of a 1-D one."""
    n = int(np.prod(np.shape(x)))
    if n <= limit:
        return x
    bits = x.bits if isinstance(x, BFloat16Array) else x
    cut = bits[: max(1, limit // bits.shape[1])] if bits.ndim == 2 else bits[:limit]
    return BFloat16Array(cut.copy()) if isinstance(x, BFloat16Array) else cut.copy()


def _doc(algorithm: str, groups: list[dict]) -> dict:
    used = sorted({f for g in groups for t in g["tests"] for f in t["flags"]})
    tc = 0
    for g in groups:
        for t in g["tests"]:
            tc += 1
            t["tcId"] = tc
    return {
        "algorithm": algorithm,
        "schema": SCHEMA_NAME,
        "generatorVersion": f"qref {qref.__version__}",
        "numberOfTests": tc,
        "header": ["Generated by `qref vectors export`; layout in docs/vectors.md."],
        "notes": {f: FLAGS[f] for f in used},
        "testGroups": groups,
    }


def fourbit_doc(blocksizes=(64, 256)) -> dict:
    """quantize_4bit / dequantize_4bit, NF4 and FP4, +-double quantization, every input format."""
    groups = []
    for qt in QUANT_TYPES_4BIT:
        for bs in blocksizes:
            for dq in (False, True):
                tests = []
                for name, x in battery.cases(qt, bs):
                    tests.append(_fourbit_case(name, small(x, 4 * bs), bs, qt, dq))
                bad = np.zeros(bs + 3, np.float32)
                bad[5] = np.nan
                tests.append(
                    {"comment": "NaN input", "flags": ["NonFinite"], "input": encode(bad), "result": "invalid"}
                )
                groups.append(
                    {"type": "Quantize4bitTest", "quantType": qt, "blocksize": bs, "doubleQuant": dq, "tests": tests}
                )
    bad_bs = {
        "type": "Quantize4bitTest",
        "quantType": "nf4",
        "blocksize": 100,
        "doubleQuant": False,
        "tests": [
            {
                "comment": "block size 100 is not one of 32..4096 (powers of two)",
                "flags": ["BadBlocksize"],
                "input": encode(np.ones(200, np.float32)),
                "result": "invalid",
            }
        ],
    }
    return _doc("quantize_4bit", groups + [bad_bs])


def _fourbit_case(name, x, bs, qt, dq) -> dict:
    packed, state = qref.quantize_4bit(x, bs, qt, compress_statistics=dq)
    fmt = format_of(x)
    expected = {"packed": encode(packed.reshape(-1))}
    extra = []
    try:
        expected["dequantized"] = encode(qref.dequantize_4bit(packed, state, out_dtype=fmt))
    except ValueError:  # the restored absmax overflows (docs/known-divergences.md 14): no dequantized output
        extra = ["DequantizeOverflow"]
    if dq:
        expected |= {
            "qabsmax": encode(state.nested.qabsmax),
            "absmax2": encode(state.nested.absmax2),
            "offset": encode(np.asarray([state.nested.offset], np.float32)),
        }
    else:
        expected["absmax"] = encode(state.absmax)
    flags = flags_of(name, int(np.prod(np.shape(x))), bs) + (["DoubleQuant"] if dq else []) + extra
    return {"comment": f"{name} ({fmt})", "flags": flags, "input": encode(x), "result": "valid", "expected": expected}


def blockwise_doc(blocksizes=(64, 256)) -> dict:
    """quantize_blockwise / dequantize_blockwise with the 8-bit dynamic map and with NF2/NF3/INT4."""
    groups = []
    for cb in ("dynamic", "nf3", "nf2", "int4"):
        for bs in blocksizes:
            tests = []
            for name, x in battery.cases("nf4", bs):
                if format_of(x) != "float32":
                    continue
                x = small(x, 4 * bs)
                codes, absmax = qref.quantize_blockwise(x, get_codebook(cb), bs)
                deq = qref.dequantize_blockwise(codes, absmax, get_codebook(cb), bs)
                tests.append(
                    {
                        "comment": name,
                        "flags": flags_of(name, x.size, bs),
                        "input": encode(x),
                        "result": "valid",
                        "expected": {"codes": encode(codes), "absmax": encode(absmax), "dequantized": encode(deq)},
                    }
                )
            groups.append({"type": "BlockwiseTest", "codebook": cb, "blocksize": bs, "tests": tests})
    return _doc("quantize_blockwise", groups)


def groupwise_doc(group_sizes=(32, 128)) -> dict:
    """quantize_groupwise (GPTQ RTN asym/sym, QA-LoRA min-max) and its float64 dequantization."""
    groups = []
    for profile in groupwise.GROUPWISE_PROFILES:
        for bits in groupwise.GROUPWISE_BITS:
            for g in group_sizes:
                tests = []
                for name, W in battery.groupwise_cases(g):
                    W = np.ascontiguousarray(W[:2, : 2 * g])
                    gq = groupwise.quantize_groupwise(W, bits, g, profile)
                    tests.append(
                        {
                            "comment": name,
                            "flags": flags_of(name, W.shape[1], g),
                            "input": encode(W),
                            "result": "valid",
                            "expected": {
                                "codes": encode(gq.codes),
                                "scales": encode(gq.scales),
                                "zeros": encode(gq.zeros),
                                "dequantized": encode(groupwise.dequantize_groupwise(gq)),
                            },
                        }
                    )
                bad = np.zeros((2, 2 * g), np.float32)
                bad[1, 3] = np.inf
                tests.append(
                    {"comment": "Inf input", "flags": ["NonFinite"], "input": encode(bad), "result": "invalid"}
                )
                groups.append(
                    {"type": "GroupwiseTest", "profile": profile, "bits": bits, "groupSize": g, "tests": tests}
                )
    return _doc("quantize_groupwise", groups)


def _storage_docs() -> dict:
    from . import vectors_groupwise as vg

    return {
        "gptq_pack": lambda: _doc("gptq_pack", vg.gptq_groups(encode, flags_of)),
        "compressed_tensors_pack": lambda: _doc(
            "compressed_tensors_pack", vg.compressed_tensors_groups(encode, flags_of)
        ),
        "qalora_forward": lambda: _doc("qalora_forward", vg.qalora_groups(encode, flags_of)),
    }


DOCS = {
    "quantize_4bit": fourbit_doc,
    "quantize_blockwise": blockwise_doc,
    "quantize_groupwise": groupwise_doc,
} | _storage_docs()


def export(directory, overwrite: bool = False) -> list[Path]:
    """Write one file per op family and the schema; returns the paths written. A non-empty folder is
    refused unless `overwrite`; each file is written atomically."""
    from qref.files import atomic_write_text, prepare_output

    out = prepare_output(directory, overwrite, "DIR", directory=True)
    paths = []
    for name, make in DOCS.items():
        path = out / f"{name}_v1.json"
        atomic_write_text(path, json.dumps(make(), indent=1, sort_keys=True) + "\n")
        paths.append(path)
    schema = out / SCHEMA_NAME
    atomic_write_text(schema, (Path(__file__).with_name(SCHEMA_NAME)).read_text())
    return paths + [schema]
