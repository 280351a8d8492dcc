"""`qref init MODEL OUT`: a quantized base and a LoRA adapter that transformers and PEFT load
(docs/init.md).

For every linear of MODEL (a transformers folder, single-file or sharded, or one safetensors file;
float32, float16 or bfloat16) the driver quantizes the weight to 4 bits and, for the target modules,
computes the adapter of the chosen method so that W ~ Q + (alpha / r) B A:

    qlora     Q = quant(W); A as PEFT initialises it (Kaiming-uniform, bound 1/sqrt(in)), B = 0
    loftq     LoftQ Algorithm 1, `iters` alternations (the quantizer is the stored 4-bit format)
    lqlora    LQ-LoRA Algorithm 1, at most `iters` alternations, best iterate kept
    quailora  QuAILoRA's uncalibrated start, the SVD of W - Q (a checkpoint carries no activations)

OUT/base is the 4-bit model (transformers' bitsandbytes layout, every other tensor copied in its own
dtype), OUT/adapter the PEFT adapter, OUT/qref_init.json what was done to each tensor. Tensors are
read memory-mapped one at a time; OUT appears whole at the end or not at all.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__, hf_layout, validation
from .dtypes import BFloat16Array
from .fourbit import BLOCKSIZES_4BIT
from .init_methods import (
    DQ_BLOCKSIZE,
    GPTQ_BITS,
    GPTQ_CHECKPOINT_FORMAT,
    GPTQ_METHODS,
    METHODS,
    initialise_layer,
    store_4bit,
    store_gptq,
)
from .qalora import pool_factor
from .safetensors_io import SafetensorsWriter


@dataclass(frozen=True)
class InitConfig:
    method: str = "loftq"
    rank: int = 16
    alpha: float | None = None  # lora_alpha; default: the rank (scaling 1)
    quant_type: str = "nf4"
    blocksize: int = 64
    double_quant: bool = False
    iters: int = 5
    svd: str = "randomized"  # "exact": full SVDs (the reference's), "randomized": warm-started subspace iteration
    backend: str = "auto"  # a registered backend, or the fastest available one
    seed: int = 0
    on_bad_tensor: str = "stop"  # "skip": keep a non-finite weight unquantized and say so
    target_modules: tuple[str, ...] | None = None
    target_regex: str | None = None
    group_size: int = 32  # qalora: the GPTQ group and QA-LoRA's pooling group (the paper's 32)
    gptq_format: str = "v1"  # qalora: qzeros as z - 1 ("gptq") or z ("gptq_v2")

    def __post_init__(self):
        validation.one_of(self.method, METHODS, "--method")
        if self.method in GPTQ_METHODS:
            if self.double_quant or self.quant_type != "nf4":
                raise ValueError(
                    f"--method {self.method} writes the GPTQ layout: --double-quant and --quant-type do not apply"
                )
            if self.on_bad_tensor == "skip":
                raise ValueError(
                    f"--method {self.method}: GPTQ quantizes every linear; --on-bad-tensor skip is not offered"
                )
        validation.positive_int(self.rank, "--rank")
        validation.one_of(self.quant_type, ("nf4", "fp4"), "--quant-type")
        if self.quant_type == "fp4" and self.method != "qlora":
            raise ValueError(f"--quant-type fp4: {self.method} is defined on the NF4 quantizer; use nf4 or qlora")
        validation.one_of(self.blocksize, BLOCKSIZES_4BIT, "--blocksize")
        validation.positive_int(self.iters, "--iters")
        validation.one_of(self.svd, ("exact", "randomized"), "--svd")
        validation.one_of(self.on_bad_tensor, ("stop", "skip"), "--on-bad-tensor")
        validation.positive_int(self.group_size, "--group-size")
        validation.one_of(self.gptq_format, tuple(GPTQ_CHECKPOINT_FORMAT), "--gptq-format")
        if self.alpha is not None:
            a = validation.real(self.alpha, "--alpha")
            if not a > 0:
                raise ValueError(f"--alpha must be > 0, got {self.alpha}")

    @property
    def gptq(self) -> bool:
        return self.method in GPTQ_METHODS

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple
    status: str  # "adapted", "quantized", "copied" or "skipped: <reason>"
    error_before: float = float("nan")  # ||W - Q||_F / ||W||_F
    error_after: float = float("nan")  # ||W - Q - (alpha/r) B A||_F / ||W||_F


def pick_backend(spec: str):
    """(spec, backend) to compute with: `spec`, or for "auto" torch:cuda, else torch:cpu, else numpy."""
    from .registry import BackendUnavailable, get_backend

    if spec != "auto":
        return spec, get_backend(spec)
    for candidate in ("torch:cuda", "torch:cpu"):
        try:
            return candidate, get_backend(candidate)
        except (BackendUnavailable, ValueError):
            continue
    return "numpy", get_backend("numpy")


class Progress:
    """One stderr line per tensor: position, elements done, elapsed time and an ETA by elements."""

    def __init__(self, total_elements: int, stream=sys.stderr):
        self.total, self.done, self.start, self.stream = max(total_elements, 1), 0, time.monotonic(), stream
        self.open = False

    def step(self, i: int, n: int, name: str, elements: int) -> None:
        if self.stream is None:
            return
        self.done += elements
        spent = time.monotonic() - self.start
        eta = spent / self.done * (self.total - self.done) if self.done else float("nan")
        pct = 100 * self.done / self.total
        self.stream.write(f"\r[{i}/{n}] {pct:5.1f}% {spent:7.1f}s ETA {eta:7.1f}s  {name[:56]:<56}")
        self.stream.flush()
        self.open = True

    def close(self) -> None:
        """End the progress line (before an error message too)."""
        if self.stream is not None and self.open:
            self.stream.write("\n")
            self.open = False


def initialise_model(model, out, cfg: InitConfig, overwrite: bool = False, progress=sys.stderr):
    """Write OUT/base, OUT/adapter and OUT/qref_init.json; returns the per-tensor reports.

    Refuses before any work: an existing OUT (unless `overwrite`), OUT equal to or inside MODEL, or
    MODEL inside OUT, an unwritable place, a checkpoint that cannot be read, a selection of targets
    that matches nothing."""
    from .files import prepare_output

    ckpt = hf_layout.Checkpoint(model)
    linears = [hf_layout.module_of(n) for n in ckpt.names() if hf_layout.is_linear(ckpt.info(n))]
    if not linears:
        raise ValueError(f"MODEL {model}: no linear weights (2-D float *.weight other than embeddings/head)")
    targets = set(hf_layout.select_targets(linears, cfg.target_modules, cfg.target_regex))
    if cfg.gptq:
        for m in linears:
            d_in = ckpt.info(f"{m}.weight").shape[1]
            if d_in % cfg.group_size:
                raise ValueError(f"{m}: {d_in} input features are not a multiple of --group-size {cfg.group_size}")
    spec, backend = pick_backend(cfg.backend)
    existed = Path(out).exists()
    target = prepare_output(out, overwrite, "OUT", directory=True, protect=(model,))
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.qref-"))
    try:
        seconds: dict[str, float] = {}
        reports = _write(ckpt, work, cfg, linears, targets, backend, progress, seconds)
        if not any(r.status == "adapted" for r in reports):
            raise ValueError("no target module was adapted (see the status column); nothing written")
        _meta(work, ckpt, cfg, reports, spec, linears, seconds)
        _publish(work, target)
    except BaseException:
        if not existed and target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # the empty folder the writability check made
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return reports


def _prefetched(ckpt, names, linears, backend):
    """(name, host array) in order; a linear's bytes are read into the backend's host buffer on a
    worker thread while the caller computes the previous one (one tensor ahead: bounded memory)."""

    def fetch(name):
        raw = ckpt.where[name].raw(name)
        if hf_layout.module_of(name) not in linears:
            return raw  # memory-mapped, copied to the output as it is
        buffer = backend.host_buffer(raw.shape, raw.dtype)
        np.copyto(buffer, raw)  # reads the file now
        return buffer

    with ThreadPoolExecutor(1, thread_name_prefix="qref-read") as pool:
        ahead = pool.submit(fetch, names[0]) if names else None
        for k, name in enumerate(names):
            host = ahead.result()
            ahead = pool.submit(fetch, names[k + 1]) if k + 1 < len(names) else None
            yield name, host


def upload_float32(backend, host: np.ndarray, code: str):
    """A stored float tensor (F32, F16, or BF16 as uint16 bits) as a float32 backend array, widened
    on the backend (exact: every F16 and BF16 value is a float32 value): half the bytes cross."""
    if code == "BF16":
        return backend.astype(backend.from_numpy(BFloat16Array(np.ascontiguousarray(host))), "float32")
    return backend.astype(backend.from_numpy(np.ascontiguousarray(host)), "float32")


def _write(ckpt, work: Path, cfg: InitConfig, linears, targets, backend, stream, seconds) -> list[LayerReport]:
    (work / "base").mkdir()
    (work / "adapter").mkdir()
    base = SafetensorsWriter(work / "base" / "model.safetensors", background=True)
    adapter = SafetensorsWriter(work / "adapter" / "adapter_model.safetensors", background=True)
    scale = cfg.lora_alpha / cfg.rank
    reports, names = [], ckpt.names()
    bar = Progress(sum(int(np.prod(ckpt.info(n).shape)) for n in names if hf_layout.module_of(n) in linears), stream)
    clock = _Clock(seconds)
    try:
        for i, (name, host) in enumerate(_prefetched(ckpt, names, linears, backend), 1):
            clock.lap("read")
            info, module = ckpt.info(name), hf_layout.module_of(name)
            size = int(np.prod(info.shape))
            if module not in linears:
                base.add(name, host, info.dtype)
                reports.append(LayerReport(name, info.shape, "copied"))
                clock.lap("write")
                continue
            W = upload_float32(backend, host, info.dtype)  # once: check, method, stored state, errors
            clock.lap("upload")
            if not backend.all_finite(W):  # on the backend: a host pass over every weight would cost more
                if cfg.on_bad_tensor == "stop":
                    raise ValueError(
                        f"tensor {name} holds NaN or Inf; nothing written (--on-bad-tensor skip keeps it unquantized)"
                    )
                base.add(name, host, info.dtype)
                reports.append(LayerReport(name, info.shape, "skipped: holds NaN or Inf (kept unquantized)"))
                bar.step(i, len(names), name, size)
                continue
            adapt = module in targets and min(info.shape) >= cfg.rank
            if adapt:
                source, A, B = initialise_layer(W, cfg, backend, i)
            else:
                source, A, B = W, None, None
            clock.lap("method")
            if cfg.gptq:
                stored, Q = store_gptq(backend, source, cfg, name)
            else:
                stored, Q = store_4bit(backend, source, cfg, name, hf_layout.TORCH_DTYPE[info.dtype])
            clock.lap("store")
            for key, value in stored.items():
                base.add(key, value)
            clock.lap("write")
            norm = backend.norm(W) or 1.0
            before = backend.norm(W - Q) / norm
            if not adapt:
                why = "quantized" if module not in targets else f"quantized (not adapted: smaller than rank {cfg.rank})"
                reports.append(LayerReport(name, info.shape, why, before))
                bar.step(i, len(names), name, size)
                clock.lap("errors")
                continue
            A32, B32 = A.astype(np.float32), (B / scale).astype(np.float32)  # stored so that (alpha/r) B A = BA
            adapter.add(hf_layout.peft_key(module, "A"), A32)
            adapter.add(hf_layout.peft_key(module, "B"), B32)
            after = backend.norm(W - Q - backend.from_numpy(_dense_update(cfg, A32, B32 * np.float32(scale)))) / norm
            reports.append(LayerReport(name, info.shape, "adapted", before, after))
            bar.step(i, len(names), name, size)
            clock.lap("errors")
        bar.close()
        base.close({"format": "pt"})
        adapter.close({"format": "pt"})
        clock.lap("write")
    except BaseException:
        bar.close()
        base.abort()
        adapter.abort()
        raise
    return reports


def _dense_update(cfg: InitConfig, A, B) -> np.ndarray:
    """B A as the weight update PEFT applies; qalora's pooled adapter acts as the group-constant
    update c (B A)[j, i // g], c = G / g in PEFT's pooling (docs/qalora.md)."""
    if not cfg.gptq:
        return B @ A
    d_in = A.shape[1] * cfg.group_size
    c = np.float32(pool_factor("peft", d_in, cfg.group_size))
    return np.repeat(B @ A, cfg.group_size, axis=1) * c


class _Clock:
    """Adds the time since the last lap to seconds[phase] (what qref_init.json reports)."""

    def __init__(self, seconds: dict):
        self.seconds, self.last = seconds, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now


def _meta(work: Path, ckpt, cfg: InitConfig, reports, backend: str | None, linears, seconds) -> None:
    kept = [hf_layout.module_of(r.name) for r in reports if r.status.startswith("skipped")]
    adapted = [hf_layout.module_of(r.name) for r in reports if r.status == "adapted"]
    dtypes = {ckpt.info(r.name).dtype for r in reports if hf_layout.module_of(r.name) in linears}
    compute = hf_layout.TORCH_DTYPE[dtypes.pop()] if len(dtypes) == 1 else "float32"
    if ckpt.config is not None:
        config = dict(ckpt.config)
        if cfg.gptq:
            config["quantization_config"] = hf_layout.gptq_quantization_config(
                GPTQ_BITS, cfg.group_size, GPTQ_CHECKPOINT_FORMAT[cfg.gptq_format], __version__
            )
        else:
            config["quantization_config"] = hf_layout.quantization_config(
                cfg.quant_type, cfg.double_quant, compute, kept
            )
        (work / "base" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ckpt.companions():
        shutil.copyfile(f, work / "base" / f.name)
    modules = hf_layout.peft_target_modules(adapted, [m for m in linears if m not in kept])
    doc = hf_layout.adapter_config(cfg.rank, cfg.lora_alpha, modules, "../base")
    if cfg.gptq:
        doc |= {"use_qalora": True, "qalora_group_size": cfg.group_size}
    (work / "adapter" / "adapter_config.json").write_text(json.dumps(doc, indent=2) + "\n")
    meta = {
        "qref_version": __version__,
        "source": str(ckpt.path),
        "config": asdict(cfg),
        "quantization": _quantization(cfg),
        "backend": backend,
        "base_has_config": ckpt.config is not None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "tensors": [asdict(r) | {"shape": list(r.shape)} for r in reports],
    }
    (work / "qref_init.json").write_text(json.dumps(meta, indent=2, default=_json_number) + "\n")


def _quantization(cfg: InitConfig) -> dict:
    if cfg.gptq:
        fmt = GPTQ_CHECKPOINT_FORMAT[cfg.gptq_format]
        return {"layout": "gptq", "bits": GPTQ_BITS, "group_size": cfg.group_size, "checkpoint_format": fmt}
    doc = {"layout": "bitsandbytes", "bits": 4, "quant_type": cfg.quant_type, "blocksize": cfg.blocksize}
    return doc | ({"double_quant_blocksize": DQ_BLOCKSIZE} if cfg.double_quant else {})


def _json_number(x):
    return None if isinstance(x, float) and math.isnan(x) else str(x)


def _publish(work: Path, target: Path) -> None:
    """Move the finished folder into place; an existing OUT (allowed by --overwrite) is replaced."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.qref-old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    work.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary(reports: list[LayerReport]) -> str:
    shown = [r for r in reports if r.status != "copied"]
    lines = [f"{'tensor':<48} {'shape':>14} {'|W-Q|/|W|':>10} {'|W-Q-BA|/|W|':>13}  status"]
    for r in shown:
        lines.append(
            f"{r.name[:48]:<48} {tuple(r.shape)!s:>14} {r.error_before:>10.4g} {r.error_after:>13.4g}  {r.status}"
        )
    copied = len(reports) - len(shown)
    counts = {s: sum(r.status == s for r in reports) for s in ("adapted", "quantized")}
    skipped = sum(r.status.startswith(("skipped", "quantized (")) for r in reports)
    lines.append(
        f"{counts['adapted']} adapted, {counts['quantized']} quantized without adapter, {skipped} skipped or not "
        f"adapted, {copied} other tensors copied"
    )
    return "\n".join(lines)
