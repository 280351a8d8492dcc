"""The corpus: the Python standard library's own source, found on disk (no download), as bytes.

Files are split by a hash of their path, so every byte of a file lands in one split:
  base domain  (every module outside HELD_OUT and `test/`): train 80% / calibration 10% / validation 10%
  held-out domain (the packages in HELD_OUT: networking, e-mail, XML, async): fine-tune train 80% / validation 20%
The model is pretrained on the base domain and fine-tuned on the held-out one.
"""

from __future__ import annotations

import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELD_OUT = ("asyncio", "email", "xml", "http", "urllib", "multiprocessing", "concurrent", "json", "wsgiref", "xmlrpc")
SKIP = ("test", "site-packages", "dist-packages", "__pycache__", "ensurepip", "idlelib", "tkinter", "turtledemo")
SPLITS = ("train", "calib", "val", "ft_train", "ft_val")


@dataclass(frozen=True)
class Corpus:
    parts: dict  # split name -> np.uint8 array of bytes
    root: str
    files: dict  # split name -> number of files

    def describe(self) -> str:
        return ", ".join(f"{k} {self.files[k]} files / {self.parts[k].size / 1e6:.2f} MB" for k in SPLITS)


def split_of(rel: Path) -> str | None:
    top = rel.parts[0] if len(rel.parts) > 1 else ""
    if any(p in SKIP or p.startswith("config-") for p in rel.parts):
        return None
    h = zlib.crc32(str(rel).encode()) % 10
    if top in HELD_OUT:
        return "ft_train" if h < 8 else "ft_val"
    return "train" if h < 8 else ("calib" if h == 8 else "val")


def build(max_bytes: int | None = None, root: str | None = None) -> Corpus:
    """Read the standard library below `root` (default: this interpreter's), split by file; each split
    is capped at max_bytes (train) or max_bytes / 4 (the others) when given."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    chunks = {k: [] for k in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    counts = dict.fromkeys(SPLITS, 0)
    for path in sorted(base.rglob("*.py")):
        split = split_of(path.relative_to(base))
        if split is None:
            continue
        cap = None if max_bytes is None else (max_bytes if split in ("train", "ft_train") else max_bytes // 4)
        if cap is not None and sizes[split] >= cap:
            continue
        data = path.read_bytes() + b"\n\n"
        chunks[split].append(np.frombuffer(data, np.uint8))
        sizes[split] += len(data)
        counts[split] += 1
    parts = {k: np.concatenate(v) if v else np.zeros(0, np.uint8) for k, v in chunks.items()}
    for k, v in parts.items():
        if v.size < 4096:
            raise RuntimeError(f"the corpus split {k!r} has only {v.size} bytes under {base}")
    return Corpus(parts, str(base), counts)
