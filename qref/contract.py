"""The backend contract, written once: every op a backend offers, its kind, its exactness class and
tolerance, and the conformance test that holds a backend to it.

The `Backend` Protocol (qref/backend.py), the table in docs/writing-a-backend.md (`python -m
qref.contract` prints it) and the suite's list of ops (qref.conformance.test_suite) derive from
`OPS`; tests/test_contract.py fails when any of them disagrees with it.

kind
  primitive  a backend implements it (BackendBase raises NotImplementedError, and the suite lists
             the op as not implemented instead of failing)
  composite  BackendBase composes it from the primitives; a backend may override it (fused kernel)
  host       runs on the host on NumPy inputs (small solvers)
exactness
  exact      bit for bit equal to the reference (codes, packed bytes, absmax, dequantized values)
  certified  floating-point reductions or solvers, held to a certificate within `tolerance`
             (docs/exactness.md)
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("primitive", "composite", "host")
EXACTNESS = ("exact", "certified")


@dataclass(frozen=True)
class Op:
    name: str
    kind: str
    exactness: str
    tolerance: str
    test: str  # the conformance suite's test (qref.conformance.test_suite) that exercises it
    summary: str


OPS: tuple[Op, ...] = (
    # conversion
    Op(
        "from_numpy",
        "primitive",
        "exact",
        "bitwise (bfloat16 as qref.BFloat16Array)",
        "every test",
        "NumPy array -> backend array",
    ),
    Op("to_numpy", "primitive", "exact", "bitwise", "every test", "backend array -> NumPy array"),
    # bit-exact primitives
    Op(
        "quantize_blockwise",
        "primitive",
        "exact",
        "bitwise",
        "test_quantize_blockwise",
        "codes and absmax per block, any codebook",
    ),
    Op(
        "dequantize_blockwise",
        "primitive",
        "exact",
        "bitwise",
        "test_quantize_blockwise",
        "code[q] * absmax, rounded to out_dtype",
    ),
    Op("pack_nibbles", "primitive", "exact", "bitwise", "test_nibbles", "two 4-bit codes a byte, first code high"),
    Op("unpack_nibbles", "primitive", "exact", "bitwise", "test_nibbles", "bytes -> n 4-bit codes"),
    Op(
        "exponent_sums",
        "primitive",
        "exact",
        "bitwise (integers)",
        "test_mean_offset",
        "integer sums per frexp exponent: the exact mean's input",
    ),
    Op(
        "quantize_groupwise",
        "primitive",
        "exact",
        "bitwise",
        "test_groupwise",
        "codes, scales, zeros per (row, group) for a GPTQ / min-max profile",
    ),
    # linear-algebra primitives (used by the certified composites)
    Op("astype", "primitive", "certified", "exact conversion", "test_svd_factors", "cast to a float dtype"),
    Op("svd", "primitive", "certified", "through svd_factors", "test_svd_factors", "thin SVD (U, S, Vt)"),
    Op("solve", "primitive", "certified", "through quailora", "test_initialisers", "solve M X = Y"),
    Op("norm", "primitive", "certified", "through loftq, lqlora", "test_initialisers", "Frobenius norm, a float"),
    Op("sqrt", "primitive", "certified", "through svd_factors", "test_svd_factors", "elementwise square root"),
    Op("qr", "primitive", "certified", "through svd_factors_randomized", "test_initialisers", "Q of a thin QR"),
    Op(
        "randn",
        "primitive",
        "certified",
        "through svd_factors_randomized",
        "test_initialisers",
        "seeded standard normal float64",
    ),
    # bit-exact composites
    Op(
        "quantize_4bit",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit",
        "NF4/FP4 blockwise + nibble packing (+ double quantization)",
    ),
    Op(
        "dequantize_4bit",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit",
        "unpack + dequantize (+ double dequantization), any output format",
    ),
    Op(
        "quantize_4bit_many",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit_many",
        "quantize_4bit of many arrays in one call (a whole model: one wait on a device)",
    ),
    Op(
        "dequantize_4bit_many",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit_many",
        "dequantize_4bit of many states in one call",
    ),
    Op(
        "mean_offset", "composite", "exact", "bitwise", "test_mean_offset", "exactly rounded float32 mean of the absmax"
    ),
    Op(
        "double_quantize",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit",
        "centred absmax -> 8-bit codes, absmax2, offset",
    ),
    Op(
        "double_dequantize",
        "composite",
        "exact",
        "bitwise",
        "test_quantize_4bit",
        "8-bit codes, absmax2, offset -> absmax",
    ),
    Op(
        "dequantize_groupwise",
        "composite",
        "exact",
        "bitwise (float64)",
        "test_groupwise",
        "s (q - z) or s q + z per group",
    ),
    Op("nf_quantize", "composite", "exact", "bitwise", "test_initialisers", "dequant(quant(x)) with NF-k"),
    # certified composites
    Op(
        "qalora_zero_shift",
        "composite",
        "certified",
        "|z - z_ref| <= 2 (r+3) u c |B||A| / |s|, u = 2^-53",
        "test_qalora",
        "QA-LoRA's exact merge into the zeros",
    ),
    Op(
        "qalora_forward",
        "composite",
        "certified",
        "|y - y_ref| <= 2 (D_in + r + 4) u (|x||W~|^T + s |pool x||A|^T|B|^T)",
        "test_qalora",
        "y = x W~^T + s pool(x) A^T B^T",
    ),
    Op(
        "svd_factors",
        "composite",
        "certified",
        "Eckart-Young: 64 max(m,n) 2^-52 ||R||_F^2; balance 1e-9 sigma_1",
        "test_svd_factors",
        "rank-r factors U sqrt(S), sqrt(S) V^T",
    ),
    Op(
        "svd_factors_randomized",
        "composite",
        "certified",
        "Eckart-Young gap <= 1e-6 ||R||_F",
        "test_initialisers",
        "warm-started randomized subspace iteration",
    ),
    Op(
        "loftq",
        "composite",
        "certified",
        "Q bit-exact from its own source; error 1e-6 relative",
        "test_initialisers",
        "LoftQ Algorithm 1",
    ),
    Op(
        "lqlora",
        "composite",
        "certified",
        "Q bit-exact from its own source; error 1e-6 relative",
        "test_initialisers",
        "LQ-LoRA Algorithm 1 (optionally Fisher-weighted)",
    ),
    Op(
        "quailora",
        "composite",
        "certified",
        "normal equations 1e-7 relative; objective 1e-6 relative",
        "test_initialisers",
        "QuAILoRA's calibrated alternating solves",
    ),
    # host
    Op(
        "allocate",
        "host",
        "certified",
        "objective equals brute force, 1e-9 relative",
        "test_allocation",
        "LQ-LoRA's bit-allocation ILP",
    ),
)

BY_NAME = {op.name: op for op in OPS}
PRIMITIVES = tuple(op.name for op in OPS if op.kind == "primitive")


def markdown() -> str:
    """The contract as a Markdown table (docs/writing-a-backend.md embeds it)."""
    lines = ["| op | kind | exactness | tolerance | conformance test |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{o.name}` | {o.kind} | {o.exactness} | {o.tolerance} | `{o.test}` |" for o in OPS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
