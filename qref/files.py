"""Safe output files for the commands that write: nothing existing is replaced unless asked, the
destination is checked writable before any work, and every file appears whole or not at all.

    target = prepare_output(path, overwrite=False, what="--json")   # before the work
    atomic_write_text(target, text)                                  # after it
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output that cannot or must not be written; the message names the argument."""


def prepare_output(
    path, overwrite: bool = False, what: str = "output", directory: bool = False, protect: tuple = ()
) -> Path:
    """Check, before any work, that `path` may be written: refuse an existing file or non-empty folder
    unless `overwrite`, refuse any of the `protect` paths (a command's own input), and check that the
    place is writable (creating a missing parent folder). Returns the path."""
    target = Path(path)
    for src in protect:
        if src is not None and _same(target, Path(src)):
            raise OutputError(f"{what} {target} is the input {src}; choose another output")
        if src is not None and Path(src).is_dir() and _inside(target, Path(src)):
            raise OutputError(f"{what} {target} lies inside the input folder {src}; choose another output")
        if src is not None and _inside(Path(src), target):
            raise OutputError(f"{what} {target} holds the input {src}; choose another output")
    if target.exists() or target.is_symlink():
        if directory and not target.is_dir():
            raise OutputError(f"{what} {target} exists and is not a folder")
        if not directory and target.is_dir():
            raise OutputError(f"{what} {target} is a folder; give a file name")
        if not overwrite and (not directory or any(target.iterdir())):
            raise OutputError(f"{what} {target} exists; pass --overwrite to replace it")
    parent = target if directory else target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".qref-probe-"):
            pass
    except OSError as e:
        raise OutputError(f"{what} {target}: cannot write there ({e.strerror or e})") from e
    return target


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename it into place (whole or not at all)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(a: Path, folder: Path) -> bool:
    try:
        a.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
