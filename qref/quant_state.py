"""QuantState: everything needed to dequantize a 4-bit tensor, in bitsandbytes' serialised layout.

`as_dict()` gives bitsandbytes' `QuantState.as_dict()` keys with NumPy arrays in place of tensors;
`as_dict(packed=True)` gives its safetensors form, the non-array items JSON-encoded into the
uint8 array under "quant_state.bitsandbytes__<quant_type>", byte for byte as bitsandbytes writes
them. `from_dict` reads either form (docs/quant-state.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from . import validation
from .codebooks import Codebook
from .double_quant import DoubleQuant, double_dequantize


def _finite32(a, name: str, positive: bool = False) -> np.ndarray:
    """A float32 copy of a state array: finite, and >= 0 for absmax (a negative absmax flips weights)."""
    arr = np.array(a, dtype=np.float32)
    validation.finite(arr, name)
    if positive and arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (a negative absmax flips the sign of its block), got {arr.min()}")
    return arr


@dataclass(frozen=True)
class QuantState:
    """State of a blockwise 4-bit quantization (single or double-quantized absmax)."""

    quant_type: str
    absmax: np.ndarray  # float32 per block, or uint8 codes when `nested` is set
    blocksize: int
    code: np.ndarray  # float32 codebook, index order
    dtype: str  # element format of the original tensor: float32, float16 or bfloat16
    shape: tuple[int, ...]
    nested: DoubleQuant | None = None

    def absmax_float32(self) -> np.ndarray:
        """The first-level absmax, restored through double quantization when present."""
        return double_dequantize(self.nested) if self.nested is not None else self.absmax

    def as_dict(self, packed: bool = False) -> dict:
        d = {
            "quant_type": self.quant_type,
            "absmax": self.absmax.copy(),  # arrays the caller owns (no alias of the frozen state)
            "blocksize": self.blocksize,
            "quant_map": np.array(self.code, dtype=np.float32),
            "dtype": self.dtype,
            "shape": tuple(self.shape),
        }
        if self.nested is not None:
            d.update(
                nested_absmax=self.nested.absmax2.copy(),
                nested_blocksize=self.nested.blocksize,
                nested_quant_map=self.nested.codebook.values.copy(),
                nested_dtype="float32",
                nested_offset=float(self.nested.offset),
            )
        if not packed:
            return d
        arrays = {k: v for k, v in d.items() if isinstance(v, np.ndarray)}
        rest = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
        arrays[f"quant_state.bitsandbytes__{self.quant_type}"] = np.frombuffer(
            json.dumps(rest).encode("utf-8"), dtype=np.uint8
        ).copy()
        return arrays

    @classmethod
    def from_dict(cls, d: dict) -> QuantState:
        """Read bitsandbytes' dict (packed or not; key prefixes such as 'weight.' are stripped)."""
        d = dict(d)
        packed_keys = [k for k in d if "quant_state.bitsandbytes__" in k]
        if len(packed_keys) > 1:
            raise ValueError(f"expected one packed quant_state item, found {packed_keys}")
        for k in packed_keys:
            d.update(json.loads(bytes(np.asarray(d.pop(k), dtype=np.uint8)).decode("utf-8")))
        d = {k.split(".")[-1]: v for k, v in d.items()}
        missing = {"quant_type", "absmax", "blocksize", "quant_map", "dtype", "shape"} - set(d)
        if missing:
            raise ValueError(f"quant state dict lacks {sorted(missing)}")
        nested = None
        if "nested_absmax" in d:
            offset = np.float32(d["nested_offset"])
            validation.finite(np.asarray(offset), "nested_offset")
            nested = DoubleQuant(
                qabsmax=validation.integer_array(d["absmax"], "absmax (8-bit codes)", np.uint8, 0, 255),
                absmax2=_finite32(d["nested_absmax"], "nested_absmax", positive=True),
                offset=offset,
                blocksize=validation.exact_int(d["nested_blocksize"], "nested_blocksize", 1),
                codebook=Codebook("nested", _finite32(d["nested_quant_map"], "nested_quant_map")),
            )
            absmax = nested.qabsmax
        else:
            absmax = _finite32(d["absmax"], "absmax", positive=True)
        shape = d["shape"]
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be a list of sizes, got {shape!r}")
        return cls(
            quant_type=str(d["quant_type"]),
            absmax=absmax,
            blocksize=validation.exact_int(d["blocksize"], "blocksize", 1),
            code=_finite32(d["quant_map"], "quant_map"),
            dtype=str(d["dtype"]),
            shape=tuple(validation.exact_int(s, "shape", 0) for s in shape),
            nested=nested,
        )

    def __eq__(self, other):  # noqa: D105
        """Bitwise equality of every field, the nested state included."""
        if not isinstance(other, QuantState):
            return False
        a, b = self.as_dict(), other.as_dict()
        if a.keys() != b.keys():
            return False
        for k in a:
            x, y = a[k], b[k]
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                x, y = np.asarray(x), np.asarray(y)
                if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                    return False
            elif k == "nested_offset":
                if np.float32(x).tobytes() != np.float32(y).tobytes():
                    return False
            elif x != y:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]
