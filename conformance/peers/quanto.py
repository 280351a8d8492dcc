"""Adapter to optimum-quanto: MaxOptimizer scale and shift, quantize_weight to a WeightQBitsTensor
(qint2/qint4, axis 0), its packed data and its dequantize (qref.profiles.quanto)."""

from __future__ import annotations

from . import array, installed, tensor

NAME = "optimum-quanto"


def available() -> tuple[bool, str]:
    return installed("optimum.quanto", NAME)


def run(W, bits: int, group_size: int, device: str = "cpu") -> dict:
    from optimum.quanto import MaxOptimizer, qint2, qint4
    from optimum.quanto.tensor.weights.quantization import quantize_weight

    qtype = {2: qint2, 4: qint4}[bits]
    w = tensor(W, device)
    scale, shift = MaxOptimizer()(w, qtype=qtype, axis=0, group_size=group_size)
    t = quantize_weight(w, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=group_size, optimized=False)
    return {
        "codes": array(t._data.unpack()),
        "scale": array(scale),
        "shift": array(shift),
        "packed": array(t._data._data),
        "dequantized": array(t.dequantize()),
    }
