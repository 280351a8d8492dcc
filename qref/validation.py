"""Input validation shared by every op: each failure names the argument it is about."""

from __future__ import annotations

import numpy as np

from .dtypes import FLOAT_FORMATS, BFloat16Array, format_of


def float_input(x, name: str) -> tuple[np.ndarray, str]:
    """Return (x widened exactly to float32, its format) after checking dtype, size and finiteness."""
    if isinstance(x, BFloat16Array):
        x32 = x.to_float32()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind != "f" or x.dtype.name not in FLOAT_FORMATS:
            kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}.get(
                x.dtype.kind, x.dtype.name
            )
            hint = " (cast explicitly; the reference never narrows float64 silently)" if x.dtype == np.float64 else ""
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {kind} ({x.dtype}){hint}")
        x32 = x.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{name} must be a numpy array or qref.BFloat16Array, got {type(x).__name__}")
    fmt = format_of(x)
    if x32.size == 0:
        raise ValueError(f"{name} is empty; quantization needs at least one element")
    finite(x32, name)
    return x32, fmt


def finite(x: np.ndarray, name: str) -> None:
    """NaN/Inf policy: reject, naming the argument and the first offending flat index."""
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (first at flat index {i}: "
            f"{x.ravel()[i]!r}); the reference rejects NaN and Inf (docs/nan-inf.md)"
        )


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def count(value, name: str) -> int:
    """A number of elements: an int >= 0 (0 is the empty array's count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def real(value, name: str) -> float:
    """A finite real scalar (alpha, an offset, a budget): a Python or NumPy int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def one_of(value, allowed, name: str):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def uint8_array(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    dtype_is(a.dtype.name, "uint8", name)
    return a


def float32_vector(a, name: str, length: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    dtype_is(a.dtype.name, "float32", name)
    if a.ndim != 1 or a.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {a.shape}")
    finite(a, name)
    return a


# ---- checks every backend shares, on facts any array type gives (dtype name, size, a value) ----
def pad_code(value) -> int:
    """The pad nibble of pack_nibbles: an int in [0, 15]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"pad_code must be an int, got {type(value).__name__}")
    if not 0 <= value <= 15:
        raise ValueError(f"pad_code must be in [0, 15], got {value}")
    return int(value)


def dtype_is(dtype_name: str, want: str, name: str) -> None:
    """TypeError unless an array's dtype (by name: 'float32', 'torch.float32', ...) is `want`."""
    if str(dtype_name).rsplit(".", 1)[-1] != want:
        raise TypeError(f"{name} must have dtype {want}, got {dtype_name}")


def nibble_codes_max(max_code: int) -> None:
    if max_code > 15:
        raise ValueError(f"codes must be < 16 to pack into nibbles, got {max_code}")


def exact_int(value, name: str, minimum: int | None = None) -> int:
    """An integer given as int, numpy integer or an integral float (JSON); 8.9 or True is refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        out = int(value)
    else:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def integer_array(a, name: str, dtype, low: int, high: int) -> np.ndarray:
    """An array of integers in [low, high] converted to dtype, never wrapped: 300 is refused, not 44."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.rint(arr)):
            raise ValueError(f"{name} must hold integers, got non-integral values")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer array, got {arr.dtype}")
    if arr.size and (arr.min() < low or arr.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(dtype)
