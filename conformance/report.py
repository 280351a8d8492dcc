"""Tallies of bitwise comparisons, one row per (op, configuration), and the printed table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


def _short(a, limit: int = 8) -> list:
    """A few values of an array, as plain Python numbers (for printing and JSON)."""
    flat = values(a).ravel()
    return [v.item() for v in flat[:limit]]


@dataclass
class Example:
    """One divergence: the case, the input (shrunk where an op allows), both outputs, and why."""

    case: str
    why: str
    index: int
    input: list
    ours: list
    theirs: list
    input_size: int

    def line(self) -> str:
        nonzero = [(k, v) for k, v in enumerate(self.input) if v != 0]
        shown = (
            self.input
            if self.input_size <= 8
            else (
                f"{self.input_size} values, nonzero {dict(nonzero)}"
                if len(nonzero) <= 4
                else [*self.input[:4], f"... ({self.input_size} values)"]
            )
        )
        return (
            f"{self.case}: input {shown if self.input else '-'} -> output [{self.index}]: qref {self.ours} vs "
            f"theirs {self.theirs}  [{self.why}]"
        )


@dataclass
class Row:
    op: str
    config: str
    cases: int = 0
    exact: int = 0
    explained: int = 0
    mismatches: int = 0  # cases with an unexplained difference
    certified: int = 0  # cases checked by a certificate within its tolerance
    first: str = ""
    note: str = ""
    examples: dict = field(default_factory=dict)  # divergence class -> smallest Example seen
    class_counts: dict = field(default_factory=dict)  # divergence class -> cases
    class_ids: dict = field(default_factory=dict)  # divergence class -> its id in divergences.json
    max_abs_diff: float = 0.0  # largest |qref - theirs| over differing finite values

    def add(self, case: str, ours, theirs, classifiers=(), inputs=None, shrink=None, **context) -> None:
        """Compare two outputs bitwise; a difference is explained if a classifier names it. `inputs`
        (the op's input) and `shrink` (index -> (label, smaller input, ours, theirs) or None) make
        the recorded example minimal."""
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
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(values(ours).ravel()[idx].astype(np.float64) - values(theirs).ravel()[idx].astype(np.float64))
        if np.isfinite(d).any():
            self.max_abs_diff = max(self.max_abs_diff, float(d[np.isfinite(d)].max()))
        for classify in classifiers:
            found = classify(values(ours), values(theirs), idx, **context)
            if found:  # a divergences.Divergence: the id of a known divergence, with its detail
                why = found.text()
                self.explained += 1
                self.note = self.note or why
                key = re.sub(r"\d+ ulp", "N ulp", why)
                self.class_ids[key] = str(found)
                self._example(key, why, case, ours, theirs, idx, inputs, shrink)
                return
        self._example("unexplained", "no known divergence class", case, ours, theirs, idx, inputs, shrink)
        self.mismatches += 1
        if not self.first:
            i = int(idx[0])
            self.first = (
                f"{case}: {idx.size} differ, first at {i}: qref {values(ours).ravel()[i]!r} "
                f"vs {values(theirs).ravel()[i]!r}"
            )

    def certify(self, case: str, value: float, tol: float, what: str) -> None:
        """A certificate (a residual, a gap, a fraction) that must be <= tol; beyond it, a mismatch."""
        self.cases += 1
        if value <= tol:
            self.certified += 1
            self.note = self.note or f"certificate: {what} <= {tol:g}"
            self.max_abs_diff = max(self.max_abs_diff, float(value))
            return
        self.mismatches += 1
        self.first = self.first or f"{case}: {what} = {value:.3g} > {tol:g}"

    def _example(self, key, why, case, ours, theirs, idx, inputs, shrink) -> None:
        self.class_counts[key] = self.class_counts.get(key, 0) + 1
        size = int(np.size(values(inputs))) if inputs is not None else 0  # no input: keep the first example
        if key in self.examples and self.examples[key].input_size <= size:
            return
        i = int(idx[0])
        small = shrink(i) if shrink is not None else None
        if small is not None:
            case, inputs, ours, theirs = small
            diff = np.flatnonzero(as_bits(ours) != as_bits(theirs))
            i = int(diff[0]) if diff.size else 0
            size = int(np.size(values(inputs)))
        inp = [] if inputs is None else _short(inputs, 64)
        self.examples[key] = Example(
            case, why, i, inp, _short(values(ours).ravel()[i : i + 1]), _short(values(theirs).ravel()[i : i + 1]), size
        )


def _cells(r: Row) -> tuple[str, ...]:
    exact = str(r.exact) + (f" +{r.certified} cert" if r.certified else "")
    return (r.op, r.config, str(r.cases), exact, str(r.explained), str(r.mismatches), r.first or r.note)


HEAD = ("op", "configuration", "cases", "exact", "explained", "unexplained", "first unexplained / divergence id")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def render(rows: list[Row], title: str, width: int | None = None) -> str:
    """A fixed-width table: op, configuration, cases, exact, explained, unexplained, and the first
    unexplained mismatch or the known divergence. With `width`, the configuration and the last column
    are shortened so that every line fits (the first unexplained mismatch is never cut: it follows on
    its own line)."""
    body = [_cells(r) for r in rows]
    widths = [max(len(x[i]) for x in [HEAD] + body) for i in range(6)]
    if width is not None:
        fixed = sum(widths[i] for i in (0, 2, 3, 4, 5)) + 2 * 6
        widths[1] = max(13, min(widths[1], width - fixed - 24))
    lines = [title, ""]
    for row, cells in zip([None] + rows, [HEAD] + body):
        left = "  ".join(_clip(c, w).ljust(w) for c, w in zip(cells[:6], widths)) + "  "
        last = cells[6]
        if width is None or len(left) + len(last) <= width:
            lines.append((left + last).rstrip())
        elif row is not None and row.mismatches:
            lines += [left.rstrip(), "    " + last]
        elif last.startswith("[") and len(left) + last.index("]") < width:
            lines.append(left + last[: last.index("]") + 1])  # the divergence id; its text is in the docs
        else:
            lines.append(left + _clip(last, width - len(left)))
    return "\n".join(lines)


def render_markdown(rows: list[Row], title: str) -> str:
    """The same table in Markdown, nothing shortened."""
    lines = [f"### {title}", "", "| " + " | ".join(HEAD) + " |", "|" + " --- |" * len(HEAD)]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(lines)
