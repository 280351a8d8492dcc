"""The host side of the fused 4-bit calls, without a GPU: the sizes of a block-64 quantize's state, the launch
plans' grids, the state checks, and the workspace's scratch memory."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref.backend import FourBit
from qref.backends import cuda_kernels as K
from qref.backends import cuda_launch as L
from qref.backends.cuda_memory import Workspace
from qref.backends.fused4bit import _Quant64, check_state, state_layout
from qref.double_quant import DQ_BLOCKSIZE

SMS, PER_SM = 132, 3


class FakeModule:
    """Stands in for a compiled Module: function handles, occupancy, plans."""

    sms = SMS
    plan = K.Module.plan

    def __init__(self, **knobs):
        self.knobs = {**K.KNOBS, **knobs}
        self._plans = {}

    def __call__(self, name):
        return SimpleNamespace(ptr=1)

    cooperative = True

    def resident(self, name, block, shared=0):
        return PER_SM * self.sms

    def per_sm(self, name, block, shared=0):
        return PER_SM


NF4_TABLE = (SimpleNamespace(data=SimpleNamespace(ptr=4096)), 6)
LOG_TABLE = (SimpleNamespace(data=SimpleNamespace(ptr=8192)), 2800, 17, 6729, 8128)


@given(nb=st.integers(1, 3_000_000), dq=st.booleans(), shared=st.sampled_from([0, 1]), per_warp=st.integers(1, 4))
def test_recipe_sizes_and_grids(nb, dq, shared, per_warp):
    """A recipe's state sizes (codes, then absmax, or qabsmax, absmax2 and the offset) and its grids."""
    mod = FakeModule(DQ2_SHARED=shared, DQ2_BLOCKS=per_warp)
    r = _Quant64(mod, "bfloat16", 64 * nb, NF4_TABLE, LOG_TABLE, dq)
    assert r.npk == 32 * nb and r.nb == nb and r.nb2 == -(-nb // DQ_BLOCKSIZE)
    assert r.nbytes == r.npk + (nb + 4 * (r.nb2 + 1) if dq else 4 * nb)
    warps = mod.knobs["WARPS_PER_CTA"]
    assert 1 <= r.plan.grid <= PER_SM * SMS and r.plan.grid <= -(-nb // (8 * warps))
    assert r.plan.head[0] == nb
    if dq:
        assert r.dq2.grid >= 1 and (shared or 8 * per_warp * r.dq2.grid >= r.nb2)  # per_warp blocks a warp
        assert r.dq2.shared == (8 * 2800 if shared else 0)
        if nb < mod.knobs["SUMS_PASS_MIN"]:  # both levels in one launch (DQ_FUSED): a grid every CTA of which fits
            assert 1 <= r.fused.grid <= PER_SM * SMS and r.fused.grid <= -(-nb // (8 * warps))
        else:  # the sums in their own pass: three kernels
            assert r.fused is None and r.sums is not None
    else:
        assert r.dq2 is None


def test_plans_are_made_once_per_key():
    mod = FakeModule()
    a = _Quant64(mod, "float16", 64 * 1000, NF4_TABLE, LOG_TABLE, True)
    b = _Quant64(mod, "float16", 64 * 1000, NF4_TABLE, LOG_TABLE, True)
    c = _Quant64(mod, "float16", 64 * 1001, NF4_TABLE, LOG_TABLE, True)
    assert a.plan is b.plan and a.dq2 is b.dq2 and a.plan is not c.plan


@pytest.mark.parametrize("dq", [False, True])
def test_state_checks_name_the_wrong_array(dq):
    n, bs = 64 * 300 + 6, 64
    layout = state_layout(n, bs, dq)
    arrays = {name: np.zeros(size, dtype) for name, (size, dtype) in layout.items()}
    good = FourBit(arrays["packed"], arrays.get("absmax"), arrays.get("qabsmax"), arrays.get("absmax2"))
    check_state(good, layout, n, bs)
    for name, (size, dtype) in layout.items():
        for bad in (np.zeros(size + 1, dtype), np.zeros(size, "float64"), None):
            q = FourBit(**{**good.__dict__, name: bad})
            with pytest.raises(ValueError, match=name):
                check_state(q, layout, n, bs)


class FakeArray:
    allocated = []

    def __init__(self, size, dtype):
        self.shape = (size,)
        self.data = SimpleNamespace(ptr=1 << 20 + len(FakeArray.allocated))
        FakeArray.allocated.append(size * np.dtype(dtype).itemsize)


def test_scratch_grows_only_when_too_small():
    ws = Workspace(FakeArray)
    first = ws.scratch(100)
    assert ws.scratch(100) == first and ws.scratch(4096) == first  # at least 4096 bytes from the start
    grown = ws.scratch(4097)
    assert grown != first and FakeArray.allocated[-1] >= 4097
    assert ws.scratch(10) == grown and ws.scratch(8192) == grown


def test_plan_cache_stays_bounded():
    mod = FakeModule()
    for nb in range(1, 5000):
        _Quant64(mod, "float32", 64 * nb, NF4_TABLE, LOG_TABLE, False)
    assert 0 < len(mod._plans) <= 4097


def test_dequant8_plan_only_where_its_conditions_hold():
    mod = FakeModule()
    assert L.dequant8_plan(mod, "bfloat16", 64 * 10, 64) is not None
    for n, blocksize in ((64 * 10 + 4, 64), (48 * 10, 48), (64 * 10, 4)):  # n % 8, not a power of two, < 8
        assert L.dequant8_plan(mod, "bfloat16", n, blocksize) is None


class FakeCupy:
    """Just what Flag.wait needs: the current device and stream, events that end after `polls` queries."""

    def __init__(self, polls: int):
        self.log, self.polls = [], polls
        outer = self

        class Event:
            def __init__(self, block, disable_timing):
                self.ptr, self.queries = 7, 0

            @property
            def done(self):
                self.queries += 1
                outer.log.append("query")
                return self.queries > outer.polls

            def synchronize(self):
                outer.log.append("synchronize")

        def record(ptr, stream):
            outer.log.append(("record", stream))

        self.cuda = SimpleNamespace(
            Event=Event,
            runtime=SimpleNamespace(getDevice=lambda: 0, eventRecord=record),
            get_current_stream=lambda: SimpleNamespace(ptr=5),
        )


def _flag(cp):
    from qref.backends.cuda_memory import Flag

    flag = Flag.__new__(Flag)
    flag.cp, flag.value, flag.deferred, flag.events = cp, np.zeros(1, np.int32), False, {}
    return flag


def test_flag_wait_polls_an_event_behind_the_kernels():
    cp = FakeCupy(polls=3)
    _flag(cp).wait(11)
    assert cp.log == [("record", 11), "query", "query", "query", "query"]


def test_flag_wait_lets_the_driver_wait_after_the_spin(monkeypatch):
    from qref.backends import cuda_memory

    monkeypatch.setattr(cuda_memory, "SPIN_S", 0.0)
    cp = FakeCupy(polls=10**9)
    flag = _flag(cp)
    flag.wait()
    assert cp.log[0] == ("record", 5) and cp.log[-1] == "synchronize" and cp.log.count("query") < 1000
    flag.value[0] = 1
    with pytest.raises(ValueError, match="bad"):
        flag.raise_if_set("bad", 3)
