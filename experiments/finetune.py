"""Fine-tuning every method from every seed, identically: one task per seed (its random inits, then
each method's adapters trained from that seed's batches), in this process, or on CUDA in a pool of
spawned processes sharing the GPU (a 10M-parameter fine-tune leaves most of an accelerator idle).

What every task shares (the pretrained state, the data, the seed-independent inits) is written once
to a file the workers read; a task returns {method: perplexities before and after fine-tuning}.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import torch

from .model import ByteGPT, Config, perplexity, train

#: Thread-count variables a worker process starts with: one BLAS/OpenMP thread per process, so that
#: N workers use N cores instead of N x N threads.
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@contextlib.contextmanager
def one_thread_children():
    """ONE_THREAD set in this process's environment while the block runs (read by spawned interpreters
    when they load their BLAS), then the previous values back."""
    saved = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Shared:
    """cfg, pretrained state (CPU tensors), data splits, settings, the float32 weights, the NF-k bases of
    the run, seed-independent inits {method: {layer: Init}} and mixes {method: (random method, {layer:
    Init})}: the random method's inits of the seed with these layers replaced."""

    cfg: Config
    state: dict
    data: dict
    settings: dict
    weights: dict
    bits: tuple
    fixed: dict
    mixes: dict
    last: dict = field(default_factory=dict)  # {seed: its random inits}, the last seed's (seed_inits)


def layer_inits(sh: Shared, method: str, random_inits: dict) -> dict:
    if method in sh.fixed:
        return sh.fixed[method]
    if method in sh.mixes:
        base, override = sh.mixes[method]
        return {**random_inits[base], **override}
    return random_inits[method]


def build_model(cfg, state, inits_, device) -> ByteGPT:
    model = ByteGPT(cfg).to(device)
    model.load_state_dict(state)
    model.freeze_all()
    for n, lin in model.linears().items():
        init = inits_[n]
        lin.weight.copy_(torch.from_numpy(init.W.astype(np.float32)))
        lin.set_adapter(torch.from_numpy(init.A).to(device), torch.from_numpy(init.B).to(device), 1.0, init.pool)
    return model


def merge_qalora(model: ByteGPT, gqs, rank) -> None:
    """Fold every QA-LoRA adapter into its zeros (qref.qalora.merge) and drop the adapter."""
    from qref import qalora
    from qref.groupwise import dequantize_groupwise

    for n, lin in model.linears().items():
        A, B = lin.A.detach().double().cpu().numpy(), lin.B.detach().double().cpu().numpy()
        merged = qalora.merge(gqs[n], A, B, alpha=rank, pooling="average", zeros_dtype="float64")
        lin.weight.copy_(torch.from_numpy(dequantize_groupwise(merged).astype(np.float32)))
        lin.A = lin.B = None


def seed_inits(sh: Shared, seed: int):
    """The seed's random inits (run.compute_inits), kept for the next task of the same seed."""
    from .run import compute_inits  # one definition, also used for the report

    if seed not in sh.last:
        sh.last.clear()
        sh.last[seed] = compute_inits(sh.weights, sh.settings, seed, sh.bits)
    return sh.last[seed]


def one_seed(sh: Shared, seed: int, methods, device) -> dict:
    """The methods fine-tuned from `seed`: {method: {"before": ..., "after": ..., ["merged": ...]}}."""
    device = torch.device(device)
    s, data = sh.settings, sh.data
    random_inits, gqs = seed_inits(sh, seed)
    out = {}
    for m in methods:
        mdl = build_model(sh.cfg, sh.state, layer_inits(sh, m, random_inits), device)
        r = {"before": {k: perplexity(mdl, data[k], s["windows"], device) for k in ("val", "ft_val")}}
        train(mdl, data["ft_train"], s["ft_steps"], s["ft_lr"], s["ft_batch"], seed=seed, device=device)
        r["after"] = {k: perplexity(mdl, data[k], s["windows"], device) for k in ("val", "ft_val")}
        if m == "qalora":  # merged vs unmerged, also in float32 (bfloat16 autocast rounds W and W' apart)
            r["after"]["ft_val_fp32"] = perplexity(mdl, data["ft_val"], s["windows"], device, bf16=False)
            merge_qalora(mdl, gqs, s["rank"])
            r["merged"] = {k: perplexity(mdl, data[k], s["windows"], device) for k in ("val", "ft_val")}
            r["merged"]["ft_val_fp32"] = perplexity(mdl, data["ft_val"], s["windows"], device, bf16=False)
        out[m] = r
    return out


_SHARED: Shared | None = None


def _load(path: str) -> None:
    global _SHARED
    torch.set_num_threads(1)
    with open(path, "rb") as f:
        _SHARED = pickle.load(f)


def _task(seed: int, methods, device: str) -> dict:
    assert _SHARED is not None, "worker started without its shared file"
    return one_seed(_SHARED, seed, methods, device)


def workers_for(device: torch.device, tasks: int) -> int:
    """Processes sharing the device: on CUDA one per task up to half the cores (at most 12); else 1
    (the CPU's cores already serve one fine-tune)."""
    if device.type != "cuda":
        return 1
    return max(1, min(tasks, (os.cpu_count() or 2) // 2, 12))


def tasks_for(seeds, methods, chunk: int = 4, skip=frozenset()) -> list[tuple[int, tuple[str, ...]]]:
    """(seed, methods) tasks of at most `chunk` methods (small enough to keep every worker busy to the
    end), without the (seed, method) pairs in `skip`."""
    out = []
    for seed in seeds:
        left = tuple(m for m in methods if (seed, m) not in skip)
        out += [(seed, left[i : i + chunk]) for i in range(0, len(left), chunk)]
    return out


def all_seeds(sh: Shared, tasks, device: torch.device, log=print, workers: int | None = None, on_result=None) -> None:
    """Runs every (seed, methods) task; on_result(seed, {method: result}) as each one ends (in this
    process); a pool of `workers` spawned processes when more than one."""
    workers = workers or workers_for(device, len(tasks))
    t0 = time.time()

    def done(i, seed, res):
        if on_result is not None:
            on_result(seed, res)
        log(f"task {i + 1}/{len(tasks)}: seed {seed}, {', '.join(res)} fine-tuned ({time.time() - t0:.0f} s)")

    if workers == 1:
        for i, (seed, methods) in enumerate(tasks):
            done(i, seed, one_seed(sh, seed, methods, device))
        return
    with tempfile.TemporaryDirectory() as tmp, one_thread_children():
        path = os.path.join(tmp, "shared.pkl")
        with open(path, "wb") as f:
            pickle.dump(sh, f, protocol=pickle.HIGHEST_PROTOCOL)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_load, initargs=(path,)) as pool:
            futures = {pool.submit(_task, seed, methods, str(device)): seed for seed, methods in tasks}
            for i, f in enumerate(as_completed(futures)):
                done(i, futures[f], f.result())
