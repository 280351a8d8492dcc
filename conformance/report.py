"""Tallies of bitwise comparisons, one row per (op, configuration), and the printed table."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qref.dtypes import BFloat16Array


def as_bits(a) -> np.ndarray:
    """Flat unsigned-integer view of an array's bits (so -0.0 != +0.0 and NaN == NaN bitwise)."""
    if isinstance(a, BFloat16Array):
        return a.bits.ravel()
    a = np.ascontiguousarray(np.asarray(a))
    return a.reshape(-1).view(f"u{a.dtype.itemsize}")


def values(a) -> np.ndarray:
    return a.to_float32() if isinstance(a, BFloat16Array) else np.asarray(a)


@dataclass
class Row:
    op: str
    config: str
    cases: int = 0
    exact: int = 0
    explained: int = 0
    mismatches: int = 0  # cases with an unexplained difference
    first: str = ""
    note: str = ""

    def add(self, case: str, ours, theirs, classifiers=(), **context) -> None:
        """Compare two outputs bitwise; a difference is explained if a classifier names it."""
        self.cases += 1
        a, b = as_bits(ours), as_bits(theirs)
        if a.shape != b.shape:
            self.mismatches += 1
            self.first = self.first or f"{case}: shapes {np.shape(ours)} vs {np.shape(theirs)}"
            return
        idx = np.flatnonzero(a != b)
        if idx.size == 0:
            self.exact += 1
            return
        for classify in classifiers:
            why = classify(values(ours), values(theirs), idx, **context)
            if why:
                self.explained += 1
                self.note = self.note or why
                return
        self.mismatches += 1
        if not self.first:
            i = int(idx[0])
            self.first = (
                f"{case}: {idx.size} differ, first at {i}: qref {values(ours).ravel()[i]!r} "
                f"vs {values(theirs).ravel()[i]!r}"
            )


def render(rows: list[Row], title: str) -> str:
    """A fixed-width table: op, configuration, cases, exact, explained, mismatches, first mismatch."""
    head = ("op", "configuration", "cases", "exact", "explained", "mismatch", "first mismatch / known divergence")
    body = [
        (r.op, r.config, str(r.cases), str(r.exact), str(r.explained), str(r.mismatches), r.first or r.note)
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(6)]
    lines = [title, ""]
    for cells in [head] + body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells[:6], widths)) + "  " + cells[6])
    return "\n".join(lines)
