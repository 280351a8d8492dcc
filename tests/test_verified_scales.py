"""The memo that lets torch:cuda's dequantize skip waiting for the non-finite flag (backends/cuda_memory.py
VerifiedScales), on CPU tensors: it holds only for the same live tensors at the same version."""

import pytest

torch = pytest.importorskip("torch")

from qref.backends.cuda_memory import VerifiedScales  # noqa: E402


def test_holds_only_while_unchanged():
    memo = VerifiedScales()
    buf = torch.zeros(32)
    absmax, second = buf[:16], buf[16:]
    assert not memo.holds([absmax])
    memo.add([absmax, second])
    assert memo.holds([absmax, second]) and memo.holds([second])
    second[0] = 1.0  # a write through another view of the same memory
    assert not memo.holds([absmax]) and not memo.holds([second])
    memo.add([absmax, second])
    assert memo.holds([absmax])
    assert not memo.holds([absmax.clone()])  # equal values, another tensor: checked again
    assert not memo.holds([absmax, torch.ones(3)])


def test_a_freed_tensor_never_matches_a_new_one():
    memo = VerifiedScales()
    a = torch.ones(8)
    memo.add([a])
    key = id(a)
    del a
    b = torch.ones(8)  # may reuse the id; the weak reference to the freed tensor is dead
    assert memo.seen[key][0]() is None or memo.seen[key][0]() is b
    assert not memo.holds([b])


def test_inference_tensors_are_never_remembered():
    memo = VerifiedScales()
    with torch.inference_mode():
        a = torch.ones(8)
    memo.add([a])
    assert not memo.holds([a])


def test_bounded():
    memo = VerifiedScales(most=4)
    kept = [torch.ones(1) for _ in range(10)]
    for t in kept:
        memo.add([t])
    assert len(memo.seen) <= 5


def test_swapped_memory_is_checked_again():
    """`t.data = other` replaces a tensor's memory without an in-place write: the address tells."""
    memo = VerifiedScales()
    a = torch.ones(8)
    memo.add([a])
    a.data = torch.full((8,), float("inf"))
    assert not memo.holds([a])
