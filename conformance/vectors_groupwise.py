"""Golden vectors for the group-wise storage formats and QA-LoRA's forward (docs/vectors.md):

  gptq_pack_v1.json            GptqPackTest: W -> qweight, qzeros, scales (float16), g_idx, for the
                               gptq-asym quantization, checkpoint format v1 (AutoGPTQ) or v2 (GPTQModel)
  compressed_tensors_pack_v1.json
                               CompressedTensorsTest: W -> codes (int8), weight_packed, weight_scale,
                               weight_zero_point (asymmetric), compressed-tensors' pack-quantized layout
  qalora_forward_v1.json       QaloraForwardTest: {x, qweight, qzeros, scales, g_idx, A, B, scaling} ->
                               y (float64) and bound: a kernel passes where |y_kernel - y| <= bound
                               (qref.linear.qalora_linear; docs/linear.md)

The storage vectors are exact bytes. The forward vectors are certified: y is the reference's float64
value, bound the largest deviation a float32-accumulating kernel may show (any summation order).
`qref vectors check` replays them through the reference's own functions (no backend has these ops),
bit for bit: the forward y and bound are formed in rational arithmetic, the same on every machine.
"""

from __future__ import annotations

import numpy as np

from qref.gptq_pack import from_gptq, to_gptq
from qref.groupwise import quantize_groupwise
from qref.linear import qalora_linear
from qref.profiles import compressed_tensors as ct

from . import battery

FORMATS = ("v1", "v2")


def _weights(g: int):
    for name, W in battery.groupwise_cases(g):
        yield name, np.ascontiguousarray(W[:4, : 2 * g])


def gptq_groups(encode, flags_of, group_sizes=(32, 128)) -> list[dict]:
    groups = []
    for fmt in FORMATS:
        for bits in (2, 3, 4, 8):
            for g in group_sizes:
                config = {"bits": bits, "groupSize": g, "format": fmt}
                tests = []
                for name, W in _weights(g):
                    flags = flags_of(name, W.shape[1], g)
                    try:  # to_gptq refuses a v1 zero point of 0 (it has no field)
                        tests.append(_valid(encode, name, W, run_gptq(None, config, W, None), flags))
                    except ValueError:
                        tests.append(_invalid(encode, name, W, ["ZeroPointZeroV1"], flags))
                groups.append({"type": "GptqPackTest", **config, "tests": tests})
    return groups


def compressed_tensors_groups(encode, flags_of, group_sizes=(32, 128)) -> list[dict]:
    groups = []
    for symmetric in (True, False):
        for bits in ct.BITS:
            for g in group_sizes:
                tests = []
                for name, W in _weights(g):
                    s = ct.quantize(W, bits, g, symmetric)
                    out = {"codes": s.codes} | {
                        k: v for k, v in ct.to_checkpoint(s).items() if k not in ("weight_shape",)
                    }
                    tests.append(_valid(encode, name, W, out, flags_of(name, W.shape[1], g)))
                groups.append(
                    {
                        "type": "CompressedTensorsTest",
                        "bits": bits,
                        "groupSize": g,
                        "symmetric": symmetric,
                        "tests": tests,
                    }
                )
    return groups


def qalora_inputs(W, bits: int, g: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    tensors = to_gptq(quantize_groupwise(W, bits, g, "gptq-asym"), "v2")
    r = min(2, W.shape[0], W.shape[1] // g)
    return {
        "x": rng.standard_normal((2, W.shape[1])).astype(np.float32),
        **tensors,
        "A": rng.standard_normal((r, W.shape[1] // g)).astype(np.float32),
        "B": rng.standard_normal((W.shape[0], r)).astype(np.float32),
        "scaling": np.array(2.0),
    }


def qalora_reference(inputs: dict, bits: int, g: int, pooling: str):
    base = from_gptq({k: inputs[k] for k in ("qweight", "qzeros", "scales", "g_idx")}, bits, g, "v2")
    x, A, B, s = inputs["x"], inputs["A"], inputs["B"], float(inputs["scaling"])
    return qalora_linear(x, base, A, B, s, pooling, exact=True)  # the same bits on every machine


def qalora_groups(encode, flags_of, group_sizes=(32,)) -> list[dict]:
    groups = []
    for pooling in ("peft", "average", "sum"):
        for bits in (4, 8):
            for g in group_sizes:
                tests = []
                for k, (name, W) in enumerate(_weights(g)):
                    try:
                        inputs = qalora_inputs(W, bits, g, seed=k)
                        y, bound = qalora_reference(inputs, bits, g, pooling)
                    except ValueError:  # a group scale float16 checkpoints cannot hold (to_gptq, from_gptq)
                        continue
                    tests.append(
                        {
                            "comment": name,
                            "flags": flags_of(name, W.shape[1], g),
                            "input": {key: encode(v) for key, v in inputs.items()},
                            "result": "valid",
                            "expected": {"y": encode(y), "bound": encode(bound)},
                        }
                    )
                groups.append(
                    {"type": "QaloraForwardTest", "bits": bits, "groupSize": g, "pooling": pooling, "tests": tests}
                )
    return groups


def _valid(encode, name, W, out: dict, flags) -> dict:
    expected = {k: encode(v) for k, v in out.items()}
    return {"comment": name, "flags": flags, "input": encode(W), "result": "valid", "expected": expected}


def _invalid(encode, name, W, extra, flags) -> dict:
    return {"comment": name, "flags": flags + extra, "input": encode(W), "result": "invalid"}


# Replays (qref vectors check): each returns the outputs to compare bit for bit, or raises to refuse.
def run_gptq(be, g, W, expected):
    """to_gptq of the gptq-asym quantization; it refuses a v1 zero point of 0 (ValueError)."""
    return to_gptq(quantize_groupwise(W, g["bits"], g["groupSize"], "gptq-asym"), g["format"])


def run_compressed_tensors(be, g, W, expected):
    s = ct.quantize(W, g["bits"], g["groupSize"], g["symmetric"])
    return {"codes": s.codes, **ct.to_checkpoint(s)}


def run_qalora(be, g, inputs, expected):
    """The reference's y and bound, formed in rational arithmetic and rounded once: the same bits on
    every machine, so they are compared bit for bit like the other vectors."""
    y, bound = qalora_reference(inputs, g["bits"], g["groupSize"], g["pooling"])
    return {"y": y, "bound": bound}


REQUIRED = {
    "GptqPackTest": {"qweight", "qzeros", "scales", "g_idx"},
    "CompressedTensorsTest": {"codes", "weight_packed", "weight_scale"},
    "QaloraForwardTest": {"y", "bound"},
}
OPTIONAL = {"weight_zero_point"}
