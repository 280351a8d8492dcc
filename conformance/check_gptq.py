"""`qref check auto-gptq`: group-wise RTN and GPTQ packing, qref vs AutoGPTQ's own code (CPU)."""

from __future__ import annotations

import numpy as np

from qref.gptq_pack import to_gptq
from qref.groupwise import dequantize_groupwise, quantize_groupwise

from . import battery, divergences
from .peers import autogptq as ag
from .report import Row


def check_autogptq(group_sizes=(32, 128), bits_list=(2, 3, 4, 8)) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}

    def row(op: str, config: str) -> Row:
        return rows.setdefault((op, config), Row(op, config))

    can_pack = ag.available(need_pack=True)[0]
    for sym in (False, True):
        profile = "gptq-sym" if sym else "gptq-asym"
        cfg = f"{profile}, bits {'/'.join(map(str, bits_list))}, group {'/'.join(map(str, group_sizes))}"
        for g in group_sizes:
            for name, W in battery.groupwise_cases(g):
                for bits in bits_list:
                    case = f"{name} @{bits}-bit group {g}"
                    ours = quantize_groupwise(W, bits, g, profile)
                    with np.errstate(all="ignore"):
                        codes, scales, zeros = ag.quantize_rtn(W, bits, g, sym)
                    ctx = dict(classifiers=[divergences.nan_from_zero_scale])
                    row("rtn codes", cfg).add(case, ours.codes.astype(np.int64), codes, **ctx, scales=scales)
                    row("rtn scales", cfg).add(case, ours.scales, scales, **ctx, scales=scales)
                    row("rtn zeros", cfg).add(case, ours.zeros, zeros, **ctx, scales=scales)
                    if can_pack and not sym and (ours.zeros > 0).all():
                        theirs = ag.pack(
                            dequantize_groupwise(ours).astype(np.float32), ours.scales, ours.zeros, bits, g
                        )
                        mine = to_gptq(ours, "v1", scales_dtype="float32")
                        for key in ("qweight", "qzeros", "scales", "g_idx"):
                            row(f"pack {key} (v1)", f"gptq-asym, bits {'/'.join(map(str, bits_list))}").add(
                                case, mine[key], theirs[key]
                            )
    return list(rows.values())
