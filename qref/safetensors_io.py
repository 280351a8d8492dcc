"""The safetensors file format, read and written with NumPy alone (docs/init.md).

A file is an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to its
dtype, shape and [begin, end) byte range in the data that follows (plus an optional
"__metadata__" of strings), then the data. This module reads it memory-mapped and bounds-checked
(a pickle, a truncated file or a huge header is refused with the reason, never executed or
allocated), returns bfloat16 as its raw 16-bit patterns (NumPy has no bfloat16; widening to
float32 is exact), and writes it tensor by tensor without holding a model in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dtypes import bf16_bits_to_float32

#: The largest header read (the format's own readers allow 100 MB).
MAX_HEADER_BYTES = 100_000_000

#: safetensors dtype code -> NumPy storage dtype (bfloat16 and the 8-bit floats as raw bits).
DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F8_E4M3": np.uint8,
    "F8_E5M2": np.uint8,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
#: Floating formats a quantizer reads, widened exactly to float32.
FLOAT_CODES = ("F32", "F16", "BF16")
_CODE_OF = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
_CODE_OF.update({np.dtype(t): c for c, t in DTYPES.items() if c.startswith(("I", "U", "BOOL"))})


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file; the message names the file and the fault."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # byte range within the data section
    end: int


class SafetensorsReader:
    """Memory-mapped, bounds-checked reader of one safetensors file."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SafetensorsError(f"{self.path} is a folder, not a safetensors file")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{self.path}: truncated ({size} bytes; a safetensors file starts with 8)")
            if head.startswith(b"PK\x03\x04") or head[0] == 0x80:
                raise SafetensorsError(
                    f"{self.path}: not a safetensors file but a pickle or a zip of pickles (PyTorch's .bin/.pt); "
                    "qref never reads pickles: convert it with safetensors first"
                )
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(
                    f"{self.path}: not a safetensors file (header length {n} exceeds {MAX_HEADER_BYTES}; "
                    "a pickle or another format?)"
                )
            if 8 + n > size:
                raise SafetensorsError(
                    f"{self.path}: not a safetensors file, or truncated (header of {n} bytes, file of {size})"
                )
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{self.path}: not a safetensors file (header is not JSON: {e})") from e
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: not a safetensors file (header is not a JSON object)")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise SafetensorsError(f"{self.path}: __metadata__ must map names to strings")
        self.metadata: dict[str, str] = meta
        self.data_start, self.data_size = 8 + n, size - 8 - n
        self.tensors: dict[str, TensorInfo] = {k: self._entry(k, v) for k, v in header.items()}

    def _entry(self, name, v) -> TensorInfo:
        bad = f"{self.path}: tensor {name!r}"
        if not isinstance(v, dict) or v.get("dtype") not in DTYPES:
            raise SafetensorsError(f"{bad}: unknown dtype {v.get('dtype') if isinstance(v, dict) else v!r}")
        shape, offsets = v.get("shape"), v.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise SafetensorsError(f"{bad}: shape must be a list of sizes, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise SafetensorsError(f"{bad}: data_offsets must be [begin, end], got {offsets!r}")
        begin, end = offsets
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[v["dtype"]]).itemsize
        if not 0 <= begin <= end <= self.data_size or end - begin != nbytes:
            raise SafetensorsError(
                f"{bad}: bytes [{begin}, {end}) do not hold shape {shape} of {v['dtype']} in a data section of "
                f"{self.data_size} bytes (truncated or corrupt)"
            )
        return TensorInfo(name, v["dtype"], tuple(shape), begin, end)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def raw(self, name: str) -> np.ndarray:
        """The stored array, read-only and memory-mapped (bfloat16 as uint16 bits)."""
        t = self.tensors[name]
        dtype = np.dtype(DTYPES[t.dtype]).newbyteorder("<")
        if t.end == t.begin:
            return np.zeros(t.shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_start + t.begin, shape=t.shape)

    def float32(self, name: str) -> np.ndarray:
        """A float tensor widened exactly to float32 (F32, F16 or BF16)."""
        t = self.tensors[name]
        if t.dtype not in FLOAT_CODES:
            raise SafetensorsError(f"{self.path}: tensor {name!r} is {t.dtype}, not one of {FLOAT_CODES}")
        a = self.raw(name)
        return bf16_bits_to_float32(a) if t.dtype == "BF16" else np.asarray(a, dtype=np.float32)


class SafetensorsWriter:
    """Writes tensors one at a time (data to a side file), then the header and data on `close()`.

    `background=True` writes each tensor's bytes on one worker thread, in order, with at most
    `depth` arrays waiting (memory stays bounded): the caller computes the next tensor meanwhile.
    A failed write is raised by the next `add` or by `close`."""

    def __init__(self, path, background: bool = False, depth: int = 3):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        fd, self._body_path = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".body")
        self._body = os.fdopen(fd, "wb")
        self._offset = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qref-write") if background else None
        self._pending: deque = deque()
        self._depth = max(int(depth), 1)

    def add(self, name: str, array: np.ndarray, dtype: str | None = None) -> None:
        """Append `array`; `dtype` overrides the code (e.g. "BF16" for uint16 bit patterns)."""
        if name in self.entries:
            raise ValueError(f"tensor {name!r} written twice")
        a = np.ascontiguousarray(array)
        code = dtype or _CODE_OF.get(a.dtype)
        if code is None or np.dtype(DTYPES[code]).itemsize != a.dtype.itemsize:
            raise TypeError(f"tensor {name!r}: no safetensors dtype for {a.dtype} (code {dtype!r})")
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        self.entries[name] = {
            "dtype": code,
            "shape": list(a.shape),
            "data_offsets": [self._offset, self._offset + a.nbytes],
        }
        self._offset += a.nbytes
        if self._pool is None:
            self._write(a)
            return
        while len(self._pending) >= self._depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()  # re-raises a failed write
        self._pending.append(self._pool.submit(self._write, a))

    def _write(self, a: np.ndarray) -> None:
        if a.nbytes:
            self._body.write(a.reshape(-1).view(np.uint8).data)  # no intermediate bytes object

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._pool is not None:
            self._pool.shutdown()

    def close(self, metadata: dict[str, str] | None = None) -> Path:
        try:
            self._drain()
        finally:
            self._body.close()
        header = {"__metadata__": dict(metadata or {}), **self.entries}
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
        try:
            with open(self.path, "wb") as out, open(self._body_path, "rb") as body:
                out.write(len(text).to_bytes(8, "little"))
                out.write(text)
                out.flush()
                _copy_rest(body, out, self._offset)
        finally:
            Path(self._body_path).unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop what is queued, wait for the write in progress, remove the side file."""
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the body is closed only once no write uses it
        self._body.close()
        Path(self._body_path).unlink(missing_ok=True)


def _copy_rest(src, dst, count: int) -> None:
    """Copy `count` bytes of src after dst's current end, in the kernel where it can (sendfile)."""
    sent = 0
    if hasattr(os, "sendfile"):
        try:
            while sent < count:
                n = os.sendfile(dst.fileno(), src.fileno(), sent, min(count - sent, 1 << 30))
                if n == 0:
                    break
                sent += n
        except OSError:
            pass  # not supported between these files: copy the rest in user space
    if sent < count:
        src.seek(sent)
        dst.seek(0, os.SEEK_END)
        shutil.copyfileobj(src, dst, 1 << 24)
