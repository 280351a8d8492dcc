"""Many calls of one op as one batch: a whole model's linears quantized (or dequantized) by one call.

The result is by definition the list of the single calls' results, so a batch adds no decision point of
its own. What it changes is when the work is checked: a backend whose single call waits for its device
(to find non-finite input, say) may queue every call of the batch and wait once (`BackendBase.batch`).
The errors stay the single calls' errors: the first item whose single call raises names the error,
prefixed with its place, `xs[17]: ...`, and nothing of a failed batch is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any


def sequence(items, name: str) -> list:
    """items as a list: a list or tuple (one array, which is itself a sequence of rows, is refused)."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple, got {type(items).__name__}")
    return list(items)


def same_length(a: Sequence, b: Sequence, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} items but {name_b} has {len(b)}")


def _named(name: str, i: int, e: Exception) -> Exception:
    return type(e)(f"{name}[{i}]: {e}") if type(e) in (ValueError, TypeError) else e


def run_many(
    name: str, items: list, call: Callable[..., Any], batch: Callable[[], AbstractContextManager[Callable[[], bool]]]
) -> list:
    """[call(*item) for item in items] inside `batch()`, whose value says after its exit whether any deferred
    check failed. On a failure, or a call that raised (ValueError or TypeError) after deferred checks that
    may have failed, the items are run again one by one outside the batch, in order, and the first error is
    raised, naming its item; a call that raised with no deferred failure is that item's own error."""
    out: list = []
    raised: Exception | None = None
    with batch() as failed:
        for item in items:
            try:
                out.append(call(*item))
            except (ValueError, TypeError) as e:
                raised = e
                break
    if raised is None and not failed():
        return out
    if raised is not None and not failed():
        raise _named(name, len(out), raised) from raised
    for i, item in enumerate(items[: len(out) + 1]):  # a deferred check failed: find its item
        try:
            call(*item)
        except (ValueError, TypeError) as e:
            raise _named(name, i, e) from e
    raise RuntimeError(f"{name}: a deferred check of the batch failed, yet every item alone passes")
