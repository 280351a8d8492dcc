"""The compiled kernels kept on disk: NVRTC's PTX of one source, its options, architecture and NVRTC version,
so that a new process loads them instead of compiling again (every asv benchmark runs in its own process).

Where: $QREF_CACHE_DIR, else $XDG_CACHE_HOME/qref, else ~/.cache/qref; QREF_CACHE_DIR=off keeps nothing.
A file is written whole or not at all (a temporary file renamed into place), so processes sharing the folder
never read half of one; a folder that cannot be written only costs the compile.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def folder() -> Path | None:
    """The folder of kept kernels, or None when QREF_CACHE_DIR is 'off'."""
    chosen = os.environ.get("QREF_CACHE_DIR")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qref" / "kernels"


def key(source: str, options: tuple[str, ...], compiler_version: str) -> str:
    """The name a compile is kept under: everything the PTX depends on, hashed."""
    h = hashlib.sha256()
    for part in (source, "\0".join(options), compiler_version):
        h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()


def _path(source: str, options: tuple[str, ...], compiler_version: str) -> Path | None:
    where = folder()
    return None if where is None else where / f"{key(source, options, compiler_version)}.ptx"


def ptx(source: str, options: tuple[str, ...], compiler_version: str, compile: Callable[[], bytes]) -> bytes:
    """The kept PTX of this compile, else compile() (kept for the next process where the folder allows)."""
    path = _path(source, options, compiler_version)
    if path is not None:
        try:
            return path.read_bytes()
        except OSError:
            pass
    out = compile()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(out)
            os.replace(tmp, path)
        except OSError:
            pass
    return out


def forget(source: str, options: tuple[str, ...], compiler_version: str) -> None:
    """Removes a kept compile (one the driver refused to load)."""
    path = _path(source, options, compiler_version)
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass
