"""Model-size calculator for whole architectures from their linear-layer shapes (docs/model-size.md).

Sizes of: fp16 (QLoRA merged), QLoRA unmerged (NF4 + double quantization + fp16 adapters), and
QA-LoRA at k bits and group size g (GPTQ tensors; integer zeros, or float zeros after a merge).
One `Assumptions` object is applied to every cell alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from .storage import QLORA_NF4_DQ, storage_bytes


@dataclass(frozen=True)
class Decoder:
    """A LLaMA-style decoder: per layer q, k, v, o (d x d), gate, up (ff x d), down (d x ff)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    vocab: int = 32000

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(D_out, D_in) of every quantized linear layer (lm_head excluded)."""
        d, f = self.hidden, self.intermediate
        return [(d, d)] * 4 * self.layers + [(f, d)] * 2 * self.layers + [(d, f)] * self.layers

    def other_params(self) -> int:
        """Parameters kept in 16 bits: embeddings, lm_head, two norms per layer and the final norm."""
        return 2 * self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden

    def params(self) -> int:
        return sum(o * i for o, i in self.linear_shapes()) + self.other_params()


#: LLaMA-1 shapes (Touvron et al. 2023, Table 2; the released configs).
LLAMA = {
    "7B": Decoder("LLaMA-7B", 4096, 11008, 32),
    "13B": Decoder("LLaMA-13B", 5120, 13824, 40),
    "33B": Decoder("LLaMA-33B", 6656, 17920, 60),
    "65B": Decoder("LLaMA-65B", 8192, 22016, 80),
}


@dataclass(frozen=True)
class Assumptions:
    unit: float = 1e9  # GB; 2**30 for GiB
    other_bytes: int = 2  # embeddings, lm_head, norms in fp16
    adapter_bytes: int = 2  # LoRA A and B in fp16 (QLoRA unmerged)
    rank: int = 64  # LoRA rank on all seven linear layers
    scale_bytes: int = 2  # GPTQ scales in fp16
    merged_zero_bytes: int = 2  # float zeros after a QA-LoRA merge (fp16 as in the QA-LoRA fork; 4 recommended)
    g_idx: bool = True  # store the int32 g_idx per layer


def fp16_bytes(model: Decoder, a: Assumptions = Assumptions()) -> int:
    return 2 * model.params()


def qlora_bytes(model: Decoder, a: Assumptions = Assumptions()) -> int:
    """NF4 with double quantization (block 64 / 256) plus fp16 LoRA adapters, unmerged."""
    linears = sum(storage_bytes(o * i, QLORA_NF4_DQ) for o, i in model.linear_shapes())
    adapters = sum(a.rank * (o + i) for o, i in model.linear_shapes()) * a.adapter_bytes
    return linears + adapters + model.other_params() * a.other_bytes


def qalora_bytes(
    model: Decoder, bits: int, group_size: int, merged: bool = False, a: Assumptions = Assumptions()
) -> int:
    """GPTQ tensors at k bits, group g: qweight, scales, zeros (packed ints, or floats once merged), g_idx."""
    total = model.other_params() * a.other_bytes
    for d_out, d_in in model.linear_shapes():
        groups = d_in // group_size
        total += 4 * ceil(d_in * bits / 32) * d_out  # qweight
        total += a.scale_bytes * groups * d_out
        total += a.merged_zero_bytes * groups * d_out if merged else 4 * groups * ceil(d_out * bits / 32)
        total += 4 * d_in if a.g_idx else 0
    return total


def size_table(bits=(4, 3, 2), group_size: int = 32, a: Assumptions = Assumptions()) -> list[dict]:
    """One row per LLaMA size: fp16, QLoRA, QA-LoRA unmerged/merged for each k, in a.unit."""
    rows = []
    for model in LLAMA.values():
        row = {
            "model": model.name,
            "params": model.params(),
            "fp16": fp16_bytes(model, a) / a.unit,
            "qlora": qlora_bytes(model, a) / a.unit,
        }
        for k in bits:
            row[f"qalora{k}"] = qalora_bytes(model, k, group_size, False, a) / a.unit
            row[f"qalora{k}-merged"] = qalora_bytes(model, k, group_size, True, a) / a.unit
        rows.append(row)
    return rows
