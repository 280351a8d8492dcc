"""Known divergences: a mismatch is *explained* when a classifier names its known divergence.

The divergences are data, one file (divergences.json): id, library, versions, devices, op, decision
point, classifier, minimal example, the test that pins it, and the text. Each classifier below gets
the two outputs and the indices where their bits differ and returns a `Divergence` (the id of its
entry, with a detail line) when every difference belongs to its class, else None.
docs/known-divergences.md is generated from the file: `python -m qref.conformance.divergences`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from importlib import resources

import numpy as np

from qref.blockwise import ABSMAX_FLOOR, block_absmax


@cache
def data() -> dict:
    """The whole divergences file: {"divergences": [...], "notes": [...]}."""
    return json.loads(resources.files(__package__).joinpath("divergences.json").read_text(encoding="utf-8"))


def catalogue() -> dict[str, dict]:
    """id -> entry of divergences.json."""
    return {r["id"]: r for r in data()["divergences"]}


class Divergence(str):
    """A classifier's verdict: the id of a known divergence (a str equal to it) with a detail line."""

    detail: str

    def __new__(cls, id: str, detail: str = ""):
        entry = catalogue().get(id)
        if entry is None:
            raise KeyError(f"{id!r} is not in divergences.json")
        self = super().__new__(cls, id)
        self.detail = detail or entry["title"]
        return self

    def text(self) -> str:
        return f"[{self}] {self.detail}"


def signed_zero(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Both sides are zero and differ only in sign (e.g. FP4 code 8 in bitsandbytes' CPU kernel)."""
    a, b = ours.ravel()[idx], theirs.ravel()[idx]
    if np.all(a == 0) and np.all(b == 0):
        return Divergence("signed-zero", "sign of zero: +0.0 vs -0.0 (numerically equal)")
    return None


def reduction_order(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, max_ulps: int = 8, **_) -> Divergence | None:
    """float32 scalars a few ulp apart: a different summation order of the same mean."""
    a = np.asarray(ours, np.float32).ravel()[idx].view(np.int32).astype(np.int64)
    b = np.asarray(theirs, np.float32).ravel()[idx].view(np.int32).astype(np.int64)
    ulps = int(np.abs(a - b).max())
    if ulps <= max_ulps:
        return Divergence("float32-mean-order", f"float32 mean, other reduction order: {ulps} ulp")
    return None


def farther_code(
    ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, scaled=None, table=None, **_
) -> Divergence | None:
    """Their code is strictly farther from the scaled value than ours (or the value is 0/0):
    their search is not round-to-nearest; ours is."""
    if scaled is None or table is None:
        return None
    s = scaled.ravel()[idx].astype(np.float64)
    d_ours = np.abs(s - table[ours.ravel()[idx]])
    d_theirs = np.abs(s - table[theirs.ravel()[idx]])
    zero_block = s == 0  # bitsandbytes' C kernel divides 0/0 and takes code 0
    if np.all((d_theirs > d_ours) | zero_block):
        return Divergence(
            "bnb-cpu-8bit-search", "their 8-bit search chose a farther code, or divided 0/0 in a zero block"
        )
    return None


def overflowed_mean(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Their float32 mean overflowed to inf (a float32 running sum past 3.4e38); ours is finite."""
    if np.all(np.isfinite(ours.ravel()[idx])) and not np.all(np.isfinite(theirs.ravel()[idx])):
        return Divergence(
            "float32-mean-overflow",
            "float32 sum of absmax overflows to inf in the library; qref's exact mean is finite",
        )
    return None


def floored_tail(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Tail-block absmax below 1e-38: the reference stores the floor float32(1e-38) (as bitsandbytes'
    PyTorch kernel does); theirs stores the raw value (0 for a zero tail)."""
    if np.all(ours.ravel()[idx] == np.float32(1e-38)) and np.all(theirs.ravel()[idx] < np.float32(1e-38)):
        return Divergence(
            "bnb-cpu-tail-absmax-unfloored",
            "tail absmax below 1e-38 stored raw here, floored to float32(1e-38) in the reference",
        )
    return None


def nan_from_zero_scale(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, scales=None, **_) -> Divergence | None:
    """Every difference lies in a row where AutoGPTQ's scale underflowed to 0 in float32 (a group
    range below maxq * 1.4e-45) and it divided by zero; qref treats such a group as all-zero."""
    if scales is None or ours.ndim != 2:
        return None
    rows_with_zero_scale = (np.asarray(scales) == 0).any(axis=1)
    if np.all(rows_with_zero_scale[idx // ours.shape[1]]):
        return Divergence(
            "autogptq-zero-scale", "group range underflows: their scale is 0 and codes/zeros NaN; qref uses [-1, 1]"
        )
    return None


def _groups(idx, shape, weight, group_size):
    """The (row, group) of each differing index of an output of `shape`: a per-element output has
    the weight's shape (or its (numel/g, g) view), a per-group one (D_out, G) (or (numel/g, 1))."""
    d_out, d_in = np.shape(weight)
    n_groups = d_in // group_size
    flat_groups = np.asarray(idx) // group_size if int(np.prod(shape)) == d_out * d_in else np.asarray(idx)
    return flat_groups // n_groups, flat_groups % n_groups


def _group_view(weight, group_size):
    w = np.asarray(weight, np.float32)
    return w.reshape(w.shape[0], -1, group_size)


def _all_in(groups_mask, idx, shape, weight, group_size) -> bool:
    """Every differing index falls in a (row, group) where groups_mask (D_out, G) is true."""
    rows, groups = _groups(idx, shape, weight, group_size)
    return bool(np.all(groups_mask[rows, groups]))


def gptq_degenerate_group(ours, theirs, idx, weight=None, group_size=None, bits=None, **_) -> Divergence | None:
    """Every difference lies in a group GPTQ's rule treats as degenerate (all zero, or a float32
    scale that underflows to 0), which qref's gptq profiles quantize over [-1, 1] while
    compressed-tensors divides by float32 eps (zero point 0)."""
    if weight is None or group_size is None:
        return None
    w = _group_view(weight, group_size)
    lo, hi = np.minimum(w.min(axis=2), 0), np.maximum(w.max(axis=2), 0)
    degenerate = (hi - lo) / np.float32(2**bits - 1) == 0
    if _all_in(degenerate, idx, ours.shape, weight, group_size):
        return Divergence(
            "ct-gptq-degenerate-group", "all-zero or underflowing group: [-1, 1] (qref gptq) vs eps scale"
        )
    return None


def gptq_sym_nonnegative_group(ours, theirs, idx, weight=None, group_size=None, **_) -> Divergence | None:
    """Every difference lies in a group with no negative value, where GPTQ's symmetric rule keeps
    the range [0, max] (scale max / (2^k - 1)) and compressed-tensors' takes [-max, max]."""
    if weight is None or group_size is None:
        return None
    nonnegative = _group_view(weight, group_size).min(axis=2) >= 0
    if _all_in(nonnegative, idx, ours.shape, weight, group_size):
        return Divergence("ct-gptq-sym-nonnegative-group", "group without negative values: [0, max] vs [-max, max]")
    return None


def zero_point_tie(ours, theirs, idx, weight=None, group_size=None, bits=None, **_) -> Divergence | None:
    """Every difference is a code one step apart where w / scale is an exact tie (x.5): GPTQ rounds
    the quotient half to even and then adds the integer zero point; compressed-tensors adds the zero
    point first and rounds the sum half to even, which goes the other way when the zero point is odd."""
    if weight is None or group_size is None or np.shape(ours) != np.shape(weight):
        return None
    from qref.groupwise import quantize_groupwise

    r = quantize_groupwise(weight, bits, group_size, "gptq-asym")
    ratio = (np.asarray(weight, np.float32) / np.repeat(r.scales, group_size, axis=1)).astype(np.float32).ravel()[idx]
    step = np.abs(np.asarray(ours, np.int64).ravel()[idx] - np.asarray(theirs, np.int64).ravel()[idx])
    if np.all(step == 1) and np.all(np.abs(ratio - np.trunc(ratio)) == 0.5):
        return Divergence(
            "ct-zero-point-tie", "tie w / scale = x.5: rounded before (qref gptq) vs after adding the zero point"
        )
    return None


def minmax_constant_group_scale(ours, theirs, idx, weight=None, group_size=None, **_) -> Divergence | None:
    """Every difference is the scale of a constant group: qref's minmax stores 1, optimum-quanto the
    0 it computed (both dequantize to the constant)."""
    if weight is None or group_size is None or ours.size == np.size(weight):
        return None
    w = _group_view(weight, group_size)
    constant = (w.min(axis=2) == w.max(axis=2)).ravel()
    if np.all(constant[np.asarray(idx)]) and np.all(np.asarray(theirs).ravel()[idx] == 0):
        return Divergence("quanto-constant-group-scale", "constant group: scale 0 (quanto) vs 1 (qref minmax)")
    return None


def scale_floor_group(ours, theirs, idx, weight=None, group_size=None, bits=None, **_) -> Divergence | None:
    """Every difference lies in a group whose scale (max - min) / (2^k - 1) is below torchao's floor
    1e-6 (constant groups included): torchao quantizes it with scale 1e-6 around its float zero."""
    if weight is None or group_size is None:
        return None
    w = _group_view(weight, group_size)
    floored = (w.max(axis=2) - w.min(axis=2)) / np.float32(2**bits - 1) < np.float32(1e-6)
    if _all_in(floored, idx, ours.shape, weight, group_size):
        return Divergence(
            "torchao-int4-scale-floor", "group scale below 1e-6: floored (torchao) vs exact (qref minmax)"
        )
    return None


def torchao_int4_pack_overflow(ours, theirs, idx, ours_state=None, **_) -> Divergence | None:
    """torchao's int4 path off the CPU stores two codes per byte whatever the bit width: at more than
    4 bits the byte overflows, and the codes (and the weight) read back are those of the truncated
    byte. Explains a difference when theirs equals the profile's state read back through it."""
    state = (ours_state or {}).get("_state")
    if state is None or state.bits <= 4:
        return None
    from qref.profiles import torchao_int4 as ti4

    lossy = replace(state, codes=ti4.unpack_uint8(ti4.pack_uint8(state.codes)))
    expect = (
        lossy.codes if ours.shape == state.codes.shape and ours.dtype == state.codes.dtype else ti4.dequantize(lossy)
    )
    if np.array_equal(np.asarray(theirs).ravel()[idx], np.asarray(expect).ravel()[idx]):
        return Divergence(
            "torchao-int4-byte-overflow", f"{state.bits}-bit codes stored two per byte: the byte overflows"
        )
    return None


def torchao_decisions(
    ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, scaled32=None, raw32=None, fmt=None, **_
) -> Divergence | None:
    """NF4 codes, bitsandbytes default (ours) vs torchao (theirs): name the torchao decision points
    that move each differing code, replaying its rule one step at a time from bitsandbytes' rule:
    the 4-decimal table in the input format, no absmax floor (0/0 = NaN in a zero block, whose argmin
    is index 0), the scaled value rounded to the input format, and the argmin over differences rounded
    to the input format (lowest index on ties). `scaled32` is bitsandbytes' x / max(absmax, 1e-38),
    `raw32` torchao's x / absmax, both in float32."""
    if scaled32 is None or raw32 is None or fmt is None:
        return None
    from qref.profiles import torchao_nf4 as tao

    s, raw = scaled32.ravel()[idx], raw32.ravel()[idx]
    steps = [
        ("4-decimal table in " + fmt, ours.ravel()[idx], _nearest_exact(s, tao.table(fmt))),
        (
            "no absmax floor: 0/0 = NaN in a zero block, argmin index 0 (-1.0)",
            None,
            _nearest_exact(raw, tao.table(fmt)),
        ),
        ("x/absmax rounded to " + fmt, None, _nearest_exact(tao._r(raw, fmt), tao.table(fmt))),
        (
            f"argmin of |s - t| rounded to {fmt} (ties to the lower index)",
            None,
            tao.nearest_code(tao._r(raw, fmt), fmt),
        ),
    ]
    named, prev = [], steps[0][1]
    for label, _, codes in steps:
        if np.any(codes != prev):
            named.append(label)
        prev = codes
    if np.array_equal(prev, theirs.ravel()[idx]) and named:
        return Divergence("torchao-nf4-rules", "torchao rule: " + "; ".join(named))
    return None


def _nearest_exact(s: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Nearest table entry in exact (float64) arithmetic, lower index on ties; NaN -> 0."""
    d = np.abs(s.astype(np.float64)[:, None] - table.astype(np.float64)[None, :])
    return np.argmin(np.where(np.isnan(d), -1.0, d), axis=1).astype(np.uint8)


def torchao_scalers(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, profile_out=None, **_) -> Divergence | None:
    """Dequantized values, bitsandbytes default vs torchao: every difference is what the torchao profile
    computes (its table, rounding and int8 double quantization of the absmax)."""
    if profile_out is not None and np.array_equal(
        np.asarray(profile_out).ravel()[idx], theirs.ravel()[idx], equal_nan=True
    ):
        return Divergence(
            "torchao-scalers",
            "torchao profile: 4-decimal table, ops in the input format, int8 linear double quantization",
        )
    return None


def nan_payload(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Both sides are NaN and differ only in payload/sign bits (not specified by IEEE 754 arithmetic)."""
    if np.all(np.isnan(ours.ravel()[idx])) and np.all(np.isnan(theirs.ravel()[idx])):
        return Divergence(
            "nan-payload", "NaN on both sides, other payload bits (e.g. a scaler mean that overflowed to inf)"
        )
    return None


FLT_MIN = np.float32(1.17549435e-38)


def flush_to_zero(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Ours is a subnormal float32 (|v| < 2^-126), theirs +-0: the library's kernel flushes subnormals."""
    a, b = ours.ravel()[idx], theirs.ravel()[idx]
    if np.all((np.abs(a) < FLT_MIN) & (b == 0)):
        return Divergence("flush-to-zero", "subnormal result flushed to zero (FTZ) in their kernel")
    return None


def unfloored_zero_absmax(ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, **_) -> Divergence | None:
    """Absmax of an all-zero block: ours the floor float32(1e-38), theirs 0 (their kernel then divides 0/0)."""
    if np.all((ours.ravel()[idx] == np.float32(1e-38)) & (theirs.ravel()[idx] == 0)):
        return Divergence("bnb-cuda-zero-block", "all-zero block: absmax stored as 0, no 1e-38 floor")
    return None


def _adjacent_at_midpoint(s, co, ct, values, max_ulps):
    """Codes co, ct are neighbours in value order and s lies within max_ulps float32 ulps of their midpoint."""
    distinct = np.unique(values)  # FP4's +0 and -0 codes share a value: adjacency is between distinct values
    rank = np.searchsorted(distinct, values)
    adjacent = np.abs(rank[co].astype(int) - rank[ct].astype(int)) == 1
    mid = ((values[co].astype(np.float64) + values[ct].astype(np.float64)) / 2).astype(np.float32)
    ulps = np.abs(s.astype(np.float64) - mid) / np.spacing(np.abs(mid)).astype(np.float64)
    return adjacent & (ulps <= max_ulps)


def kernel_4bit_codes(
    ours: np.ndarray,
    theirs: np.ndarray,
    idx: np.ndarray,
    x32=None,
    blocksize=None,
    quant_type=None,
    their_absmax=None,
    max_ulps: int = 2,
    **_,
) -> Divergence | None:
    """Packed 4-bit bytes: name the cause of every differing code. Causes: an all-zero block whose
    absmax they store as 0 (0/0 -> code 0); FP4's two zeros (code 8 is -0, code 0 is +0: equal
    values); a scaled value within max_ulps ulp of the midpoint between the two codes (their
    decision thresholds are not the float32 midpoints)."""
    if x32 is None or their_absmax is None:
        return None
    from qref.codebooks import get_codebook
    from qref.packing import unpack_nibbles

    n = x32.size
    co, ct = unpack_nibbles(ours.ravel(), n), unpack_nibbles(theirs.ravel(), n)
    e = np.flatnonzero(co != ct)
    if e.size == 0:
        return None
    block = e // blocksize
    zero = np.asarray(their_absmax).ravel()[block] == 0
    values = get_codebook(quant_type).values.astype(np.float32)
    signed = (
        np.array([{a, b} == {0, 8} for a, b in zip(co[e], ct[e])]) if quant_type == "fp4" else np.zeros(e.size, bool)
    )
    absmax = np.maximum(block_absmax(x32.ravel(), blocksize), ABSMAX_FLOOR)  # the divisor of every block
    s = (x32.ravel()[e] / absmax[block]).astype(np.float32)
    near = _adjacent_at_midpoint(s, co[e], ct[e], values, max_ulps)
    from qref.backend import zero_code

    recip = (np.float32(1) / absmax[block] < FLT_MIN) & (ct[e] == zero_code(quant_type))
    if not np.all(zero | signed | near | recip):
        return None
    why = [
        w
        for w, m in (
            ("absmax stored as 0 (all-zero block, or a subnormal absmax flushed): 0/0 gives code 0", zero),
            ("1/absmax is subnormal and flushed to zero: every value takes the zero code", recip & ~zero),
            ("FP4 code 8 (-0) instead of 0 (+0) for tiny negative values", signed & ~zero),
            (
                f"scaled value within {max_ulps} ulp of a midpoint: their threshold is not the float32 midpoint",
                near & ~zero & ~signed & ~recip,
            ),
        )
        if m.any()
    ]
    return Divergence("bnb-cuda-4bit-codes", "; ".join(why))


def nf4_value_at_midpoint(
    ours: np.ndarray, theirs: np.ndarray, idx: np.ndarray, x32=None, blocksize=64, max_ulps: int = 2, **_
) -> Divergence | None:
    """Dequantized NF4 values one code apart where x / absmax lies within max_ulps ulp of the midpoint
    between the two codes (a library whose decision thresholds are not the float32 midpoints)."""
    if x32 is None or x32.size % blocksize:
        return None
    from qref.codebooks import get_codebook

    values = get_codebook("nf4").values.astype(np.float32)
    absmax = np.maximum(block_absmax(x32.ravel(), blocksize), ABSMAX_FLOOR)[idx // blocksize]

    def code(v):
        return np.argmin(np.abs(v.ravel()[idx, None] / absmax[:, None] - values[None, :]), axis=1)

    s = (x32.ravel()[idx] / absmax).astype(np.float32)
    if np.all(_adjacent_at_midpoint(s, code(ours), code(theirs), values, max_ulps)):
        return Divergence(
            "bnb-cuda-nf4-midpoint-values",
            f"x / absmax within {max_ulps} ulp of an NF4 midpoint: their threshold is not the float32 midpoint",
        )
    return None


CLASSIFIERS = {
    name: globals()[name]
    for name in (
        "signed_zero",
        "reduction_order",
        "farther_code",
        "overflowed_mean",
        "floored_tail",
        "nan_from_zero_scale",
        "torchao_decisions",
        "torchao_scalers",
        "nan_payload",
        "flush_to_zero",
        "unfloored_zero_absmax",
        "kernel_4bit_codes",
        "nf4_value_at_midpoint",
        "gptq_degenerate_group",
        "gptq_sym_nonnegative_group",
        "zero_point_tie",
        "minmax_constant_group_scale",
        "scale_floor_group",
        "torchao_int4_pack_overflow",
    )
}


def markdown() -> str:
    """docs/known-divergences.md, generated from divergences.json."""
    d = data()
    lines = [
        "# Known divergences",
        "",
        "<!-- generated by `python -m qref.conformance.divergences` from conformance/divergences.json -->",
        "",
        "Differences found between libraries and the reference, each with its id (what `qref check` and",
        "`qref validate` print and write in `--json`), a minimal example, the classifier that recognises it",
        "and the test that pins it. The data is `conformance/divergences.json`.",
        "",
        "| id | library | versions | devices | op | decision point | classifier |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in d["divergences"]:
        lines.append(
            f"| [`{r['id']}`](#{r['id']}) | {r['library']} | {r['versions']} | {', '.join(r['devices'])} | "
            f"{r['op']} | {r['decision']} | {('`' + r['classifier'] + '`') if r['classifier'] else '-'} |"
        )
    for r in d["divergences"]:
        lines += ["", f'<a id="{r["id"]}"></a>', f"## `{r['id']}`: {r['title']}", ""]
        lines += [f"- library: {r['library']} {r['versions']} ({', '.join(r['devices'])}); op: {r['op']}"]
        lines += [f"- decision point: {r['decision']}"]
        if r["example"]:
            lines += [f"- minimal example: {r['example']}"]
        lines += [f"- classifier: {('`divergences.' + r['classifier'] + '`') if r['classifier'] else 'none'}"]
        lines += [f"- pinned by: `{r['test']}`", "", r["text"]]
    for n in d["notes"]:
        lines += ["", f"## {n['title']}", "", n["text"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
