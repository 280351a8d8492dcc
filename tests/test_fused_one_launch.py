"""Both levels of a block-64 double quantization in one cooperative launch (knob DQ_FUSED: quant_lut_dq),
without a GPU (tests/fused_standins.py): the launch names the arrays the state holds, the workspace and the
end signal; the next call's launch is packed in the wait; where the driver refuses the cooperative launch
the call runs the two kernels, and no launch packed for one kind is ever used for the other."""

import ctypes
from types import SimpleNamespace

import pytest
from fused_standins import make_host, quantize

from qref.backends import cuda_kernels as K
from qref.backends import cuda_launch as L
from qref.backends import cuda_memory


@pytest.fixture
def host(monkeypatch):
    return make_host(monkeypatch)


def _fields(values) -> dict:
    """FUSED_ARGS' values by name (LutArgs' first, then the second level's)."""
    names = "x nfull lut size shift mask out absmax bad sums done offset n_absmax fin lut2 size2 shift2 low2 high2"
    return dict(zip((*names.split(), "qabsmax", "absmax2", "offset_copy", "bar"), values))


def names(mod):
    """The kernels `mod` launched, in order."""
    return [name for name, _ in mod.launches]


def test_one_launch_writes_the_state_and_signals_the_first_level(host):
    fused, mod = host(DQ_FUSED=1)
    n = 64 * 1000
    q, x = quantize(fused, "nf4", True, n)
    ((name, values),) = mod.launches
    assert name == "quant_lut_dq_f2_next"
    f = _fields(values)
    ws = cuda_memory.Workspace._local.cache[0]
    flag = cuda_memory.Flag._local.flag
    counter, fin = flag.end(0, None)
    assert (f["x"], f["out"], f["bad"]) == (x.data_ptr(), q.packed.data_ptr(), flag.ptr)
    assert (f["absmax"], f["sums"], f["bar"]) == (ws._scratch_at, ws.sums, ws.bar)
    assert (f["done"], f["fin"], f["offset"], f["n_absmax"]) == (counter, fin, 0, n // 64)
    assert (f["qabsmax"], f["absmax2"]) == (q.qabsmax.data_ptr(), q.absmax2.data_ptr())
    assert f["offset_copy"] == q.offset.ptr == q.absmax2.data_ptr() + 4 * q.absmax2.numel()


def test_the_next_one_launch_is_packed(host):
    fused, mod = host(DQ_FUSED=1)
    quantize(fused, "nf4", True)
    made = mod.launches[0][1]
    second, x = quantize(fused, "nf4", True)
    assert mod.prepared == [1] and len(mod.launches) == 2
    at = (second.packed.data_ptr(), second.qabsmax.data_ptr(), second.absmax2.data_ptr(), second.offset.ptr)
    want = {**_fields(made), "x": x.data_ptr(), "out": at[0], "qabsmax": at[1], "absmax2": at[2]}
    assert _fields(mod.launches[1][1]) == {**want, "offset_copy": at[3]}
    third, x = quantize(fused, "nf4", True)  # moved to the third state (Prepared.move)
    at = (third.packed.data_ptr(), third.qabsmax.data_ptr(), third.absmax2.data_ptr(), third.offset.ptr)
    want = {**_fields(made), "x": x.data_ptr(), "out": at[0], "qabsmax": at[1], "absmax2": at[2]}
    assert mod.prepared == [1, 2] and _fields(mod.launches[2][1]) == {**want, "offset_copy": at[3]}


@pytest.mark.parametrize("knobs", [{"SUMS_PASS_MIN": 1}, {"DQ2_WAIT": 1}, {"DQ2_OFFSET": 0}, {}])
def test_two_kernels_where_one_launch_does_not_apply(host, knobs):
    """From SUMS_PASS_MIN blocks (the sums' own pass), where the call waits for the second level, where the
    first level's last CTA computes the offset, and without DQ_FUSED: quant_lut, then quant_dq256."""
    fused, mod = host(**{"DQ_FUSED": int(bool(knobs)), **knobs})
    quantize(fused, "nf4", True)
    kernels = names(mod)
    assert kernels[0].startswith("quant_lut_f2_s") and kernels[-1] == "quant_dq256"


def test_a_refused_launch_runs_the_two_kernels(host, monkeypatch):
    """The driver refuses a cooperative launch whose CTAs do not all fit (others hold the device): that call
    runs quant_lut and quant_dq256 and packs the next call's two launches; the next call launches those
    (never a launch packed for one kernel with the other's values), and the one launch comes back after."""
    fused, mod = host(DQ_FUSED=1)
    accept = mod.launch_cooperative
    monkeypatch.setattr(mod, "launch_cooperative", lambda *a, **k: False)
    quantize(fused, "nf4", True)
    assert names(mod) == ["quant_lut_f2_s2_next", "quant_dq256"]
    monkeypatch.setattr(mod, "launch_cooperative", accept)
    quantize(fused, "nf4", True)  # the packed two launches
    assert mod.prepared == [2, 3] and names(mod)[2:] == names(mod)[:2]
    cuda_memory.Workspace._local.cache[0].finished = False  # a call in between that did not finish
    quantize(fused, "nf4", True)
    assert mod.launches[4][0] == "quant_lut_dq_f2_next" and mod.prepared == [2, 3]
    quantize(fused, "nf4", True)
    assert mod.launches[5][0] == "quant_lut_dq_f2_next" and mod.prepared == [2, 3, 5]


def test_a_cooperative_prepared_launch_passes_no_extra_argument():
    """Prepared(cooperative=True): cuLaunchCooperativeKernel's arguments (no `extra`), the struct packed with
    the address given at launch first."""
    calls = []
    mod = SimpleNamespace(_coop=lambda *args: calls.append((args, ctypes.string_at(args[9], 8))), _driver=None)
    values = (0, *range(1, 23))
    ready = K.Prepared(mod, (101, 396, 1, 1, 256, 1, 1, 128), L.FUSED_ARGS, values, True)
    ready.launch(7 << 40, 9)
    ((args, pointer),) = calls
    assert len(args) == 10 and args[:9] == (101, 396, 1, 1, 256, 1, 1, 128, 9)
    address = int.from_bytes(pointer, "little")
    assert ctypes.string_at(address, L.FUSED_ARGS.size) == L.FUSED_ARGS.pack(7 << 40, *values[1:])


class _DriverError(Exception):
    def __init__(self, status):
        self.status = status


@pytest.mark.parametrize(("status", "result"), [(None, True), (720, False), (1, _DriverError)])
def test_a_cooperative_launch_is_refused_or_raises(status, result):
    """Module.launch_cooperative: True once launched; False where the driver refuses it for its size
    (CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, nothing ran); any other driver error raises."""

    def coop(*args):
        if status is not None:
            raise _DriverError(status)

    mod = SimpleNamespace(_coop=coop, _driver=SimpleNamespace(CUDADriverError=_DriverError))
    mod._params = lambda layout, values: 0
    call = lambda: K.Module.launch_cooperative(mod, 101, 396, 256, L.FUSED_ARGS, (0,) * 23, 0, 9)  # noqa: E731
    if result is _DriverError:
        with pytest.raises(_DriverError):
            call()
    else:
        assert call() is result
