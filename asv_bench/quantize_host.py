"""Where a torch:cuda quantize's host time goes, on the machine it runs on: the cost of each host piece
(timeit over CUDA tensors: the allocations, views, the state, the flag, the launch, the checks), then
the stages of whole calls by perf_counter stamps (from the call's start: the return of each launch, the
start and end of the workspace, the next state, the packed or moved launches and the wait, the return; median of
`--reps` calls, each after a synchronize), with and without double quantization: as
shipped, by the full path of a first call (no recipe kept for the shape), with the event wait in place of
the last kernel's end signal (knob END_SIGNAL 0) and with each call's state allocated in the call (knob
SPARE_MAX 0); last, whole calls (CUDA events around the call,
as the GPU table) and host time, with the wait and without it, the double-quantized one also with its
absmax2 sliced instead of cut in place (Fused4bit's `head`), side by side.

    python asv_bench/quantize_host.py [--size 4096x4096] [--reps 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gpu_common import bf16_weight, median_ms, on_launch, statement_us  # asv_bench/, the script's folder


def pieces(tb, x, number: int) -> dict:
    """Microseconds per call of each host piece of a block-64 quantize of x."""
    import cupy as cp
    import torch

    from qref.backend import FourBit
    from qref.backends import cuda_kernels as K
    from qref.backends.fused4bit import dtype_name

    bridge = tb._fused
    n = x.numel()
    nbytes = n // 2 + 4 * (n // 64)
    buf = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    at = n // 2
    a, b = buf[:at], buf[at:].view(torch.float32)
    stream = bridge._handle()
    env = {"torch": torch, "buf": buf, "at": at, "x": x, "a": a, "b": b, "FourBit": FourBit, "K": K, "cp": cp}
    env.update(bridge=bridge, dtype_name=dtype_name, stream=stream, nbytes=nbytes, dev=x.device)
    flag = K.Flag.get(cp)
    env["flag"] = flag
    recipe = {dq: bridge.fused.recipe64("bfloat16", n, 64, "nf4", dq) for dq in (False, True)}
    env.update(recipe=recipe, fused=bridge.fused, sliced=sliced(bridge.fused))
    stmts = {
        "torch.empty(state bytes)": "torch.empty(nbytes, dtype=torch.uint8, device=dev)",
        "buf.new_empty(state bytes)": "buf.new_empty(nbytes)",
        "buf[:at]": "buf[:at]",
        "buf[at:].view(float32)": "buf[at:].view(torch.float32)",
        "state64 (codes, absmax)": "fused.state64(recipe[False], 0)",
        "state64 (codes, qabsmax, absmax2, offset)": "fused.state64(recipe[True], 0)",
        "state64 (codes, qabsmax, absmax2, offset), absmax2 sliced": "sliced.state64(recipe[True], 0)",
        "FourBit(a, b)": "FourBit(a, b)",
        "Flag.get": "K.Flag.get(cp)",
        "Flag.wait (idle stream)": "flag.wait(stream)",
        "getDevice": "cp.cuda.runtime.getDevice()",
        "current stream handle": "bridge._handle()",
        "bridge._stream()": "bridge._stream()",
        "x.is_cuda; get_device; is_contiguous": "x.is_cuda; x.get_device(); x.is_contiguous()",
        "x.numel(); dtype_name(x)": "x.numel(); dtype_name(x)",
        "x.data_ptr()": "x.data_ptr()",
    }
    out = statement_us(stmts, env, number)
    # the launch alone: the quantize's kernel, 100 queued at a time (a full queue would block the host)
    mod = K.module(x.device.index or 0)
    captured: list = []
    with on_launch(mod, captured.append):
        tb.quantize_4bit(x, 64, "nf4", False)
    args = captured[0]
    out["driver launchKernel (queued)"] = queued_us(lambda: mod._driver.launchKernel(*args))
    out.update(one_launch(tb, x, mod))
    return out


def sliced(fused):
    """A Fused4bit like `fused` whose states' absmax2 is a slice of the allocation that keeps the offset
    after it (CuPy's way; torch's bridge cuts it in place, `head`): the two side by side in one run."""
    import copy

    from qref.backends.fused4bit import first

    other = copy.copy(fused)
    other.head = first
    return other


def queued_us(launch) -> float:
    """Microseconds per launch, 100 queued at a time (a full queue would block the host), best of 5."""
    import torch

    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        for _ in range(100):
            launch()
        times.append((time.perf_counter_ns() - t) / 100 / 1e3)
    torch.cuda.synchronize()
    return min(times)


def one_launch(tb, x, mod) -> dict:
    """The double-quantized quantize's one launch (quant_lut_dq, packed), queued 100 at a time: by
    cuLaunchCooperativeKernel as shipped, by cuLaunchKernelEx with the cooperative attribute, and by a plain
    cuLaunchKernel (one stream, nothing else on the device: every CTA is resident anyway)."""
    from qref.backends.cuda_driver import COOPERATIVE, LaunchConfig, libcuda

    captured: list = []
    tb.quantize_4bit(x, 64, "nf4", True)
    with on_launch(mod, captured.append):
        tb.quantize_4bit(x, 64, "nf4", True)
    coop = [a for a in captured if len(a) == 10]
    if not coop or mod._coop is None:
        return {}
    fn, grid, _, _, block, _, _, shared, stream, params = coop[0]
    cfg = LaunchConfig(grid, block, shared, COOPERATIVE)
    cfg.hStream = stream
    lib = libcuda()
    return {
        "one launch: cuLaunchCooperativeKernel (queued)": queued_us(lambda: mod._coop(*coop[0])),
        "one launch: cuLaunchKernelEx, cooperative (queued)": queued_us(
            lambda: lib.cuLaunchKernelEx(cfg.at, fn, params, None)
        ),
        "one launch: cuLaunchKernel (queued)": queued_us(lambda: mod._driver.launchKernel(*coop[0], 0)),
    }


#: The steps of a call whose start and end `stages` stamps: (module of qref.backends, class, method, label).
STEPS = (
    ("cuda_memory", "Workspace", "get", "workspace"),
    ("cuda_memory", "Workspace", "again", "workspace (packed launches)"),
    ("fused4bit", "Fused4bit", "state64", "next state"),
    ("cuda_launch", "LutPlan", "prepare", "next first launch packed"),
    ("cuda_launch", "Dq2Plan", "prepare", "next second level packed"),
    ("cuda_launch", "FusedPlan", "prepare", "next one launch packed"),
    ("cuda_driver", "Prepared", "move", "next launch moved"),
    ("cuda_memory", "Flag", "wait", "wait"),
    ("cuda_memory", "Flag", "wait_end", "wait"),
)


def stages(fn, mod, reps: int) -> dict:
    """Median microseconds from a call's start to each stage of it: the return of each launch, the start and
    end of each step in STEPS (a repeated one numbered), the call's return."""
    import importlib

    import torch

    stamps: list = []
    real = []
    for module, cls, method, label in STEPS:
        owner = getattr(importlib.import_module(f"qref.backends.{module}"), cls)
        if method not in vars(owner):
            continue
        fn0 = vars(owner)[method]
        real.append((owner, method, fn0))

        def stamped(*a, _fn=getattr(fn0, "__func__", fn0), _label=label, **k):  # a classmethod's cls in `a`
            stamps.append((f"{_label} starts", time.perf_counter_ns()))
            out = _fn(*a, **k)
            stamps.append((f"{_label} ends", time.perf_counter_ns()))
            return out

        setattr(owner, method, classmethod(stamped) if isinstance(fn0, classmethod) else stamped)
    rows: dict = {}
    launches = [0]

    def launched(args):
        launches[0] += 1
        stamps.append((f"launch {launches[0]} returns", time.perf_counter_ns()))

    try:
        with on_launch(mod, launched):
            fn()
            for _ in range(reps):
                torch.cuda.synchronize()
                stamps.clear()
                launches[0] = 0
                t0 = time.perf_counter_ns()
                fn()
                stamps.append(("return", time.perf_counter_ns()))
                seen: dict = {}
                for name, t in stamps:
                    seen[name] = seen.get(name, 0) + 1
                    key = name if seen[name] == 1 else f"{name} ({seen[name]})"
                    rows.setdefault(key, []).append((t - t0) / 1e3)
    finally:
        for owner, method, fn0 in real:
            setattr(owner, method, fn0)
    return dict(sorted(((k, statistics.median(v)) for k, v in rows.items()), key=lambda kv: kv[1]))


def host_us(fn, reps: int) -> float:
    """Median host time (perf_counter) of a call, each after a synchronize."""
    import torch

    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3


def whole_calls(tb, x, size: str, reps: int):
    """Whole calls (CUDA events around the call, as the GPU table) and host time, as shipped (the call waits
    for its kernels' non-finite flag) and with the wait skipped (the flag deferred, as inside a batch: the
    figure a call without a wait would have)."""
    import cupy as cp

    from qref.backends import cuda_kernels as K

    bridge = tb._fused
    for dq, name, fused in (
        (False, "quantize", bridge.fused),
        (True, "quantize +dq", bridge.fused),
        (True, "quantize +dq, absmax2 sliced", sliced(bridge.fused)),
    ):
        fn = lambda dq=dq: tb.quantize_4bit(x, 64, "nf4", dq)  # noqa: E731
        shipped, bridge.fused = bridge.fused, fused
        flag = K.Flag.get(cp)
        try:
            whole, host = median_ms(fn, reps, 5) * 1e3, host_us(fn, reps)
            flag.deferred = True  # no wait (diagnostics only: a non-finite input would go unnoticed)
            whole_nw, host_nw = median_ms(fn, reps, 5) * 1e3, host_us(fn, reps)
        finally:
            flag.deferred, bridge.fused = False, shipped
        print(
            f"{size} {name:28s} whole call {whole:6.1f} us (host {host:6.1f}); "
            f"without the wait {whole_nw:6.1f} us (host {host_nw:6.1f})",
            flush=True,
        )


def main(argv=None) -> int:
    from qref.backends import cuda_kernels as K
    from qref.backends.torch_backend import TorchBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args(argv)
    tb = TorchBackend("cuda")
    x, _ = bf16_weight(args.size)
    print(f"== host pieces, us per call ({args.size} bf16, torch:cuda)", flush=True)
    for name, us in pieces(tb, x, 2000).items():
        print(f"{us:7.2f}  {name}", flush=True)
    recipes = tb._fused._recipes

    def full(dq):  # the call without its shape's recipe: the checks and lookups of a first call
        recipes.clear()
        return tb.quantize_4bit(x, 64, "nf4", dq)

    for label, knobs, call in (
        ("", {}, lambda dq: tb.quantize_4bit(x, 64, "nf4", dq)),
        (", full path", {}, full),
        (", event wait (END_SIGNAL 0)", {"END_SIGNAL": 0}, lambda dq: tb.quantize_4bit(x, 64, "nf4", dq)),
        (", no spare state (SPARE_MAX 0)", {"SPARE_MAX": 0}, lambda dq: tb.quantize_4bit(x, 64, "nf4", dq)),
    ):
        mod = K.Module(0, **knobs) if knobs else K.module(0)
        with K.using(mod):
            for dq in (False, True):
                print(f"== stages of a quantize{' +dq' if dq else ''}{label}: us from the call's start (median)")
                for name, us in stages(lambda dq=dq: call(dq), mod, args.reps).items():
                    print(f"{us:7.2f}  {name}", flush=True)
    whole_calls(tb, x, args.size, args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
