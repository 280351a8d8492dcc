"""`qref validate peft`: PEFT's loftq_init vs the PEFT LoftQ profile (qref.profiles.peft_loftq), on CUDA.

Rows (certificate tolerances in docs/exactness.md):
  Q, 1 iteration            bit for bit: bitsandbytes' NF4 of the float32 weight
  layout                    shapes and formats of (Q, lora_A, lora_B)
  B A Eckart-Young          ||R - B A||_F vs the best rank-r error of R = W - Q (theirs), relative gap <= 1e-6
  Q_T fixed point           Q_T quantizes to itself (fraction of moved entries == 0)
  objective vs profile      | ||W-Q-BA||_F theirs - profile | / ||W||_F <= 1e-4
Q_T itself is not compared after the first SVD: where sigma_r and sigma_r+1 are close (a noise bulk) two
correct SVDs give different rank-r subspaces, so the iterates part (1.6% of ||W|| on the outlier case with
a CPU torch SVD) while the objective agrees to 1e-5.
"""

from __future__ import annotations

import numpy as np

from qref.dtypes import BFloat16Array, as_float32, cast_float32, format_of
from qref.profiles import peft_loftq as pl

from . import divergences
from .peers import peft
from .report import Row


def cases(quick: bool = False):
    rng = np.random.default_rng(11)
    yield "normal 256x512", rng.standard_normal((256, 512)).astype(np.float32) * 0.02
    heavy = (rng.standard_t(3, (512, 256)) * 0.02).astype(np.float32)
    yield "heavy-tails 512x256", heavy
    if quick:
        return
    llm = (rng.standard_normal((1024, 1024)) * 0.02).astype(np.float32)
    llm[:, rng.choice(1024, 8, replace=False)] *= 20  # outlier input features, as in LLM weights
    yield "outlier-columns 1024x1024", llm
    yield "bfloat16 512x512", BFloat16Array.from_float32((rng.standard_normal((512, 512)) * 0.02).astype(np.float32))


def check_peft(quick: bool = False, device: str = "cuda") -> list[Row]:
    rows: dict[str, Row] = {}

    def row(op: str) -> Row:
        return rows.setdefault(op, Row(op, "nf4, block 64, float32"))

    for name, W in cases(quick):
        w32 = as_float32(W)
        for rank, iters in ((8, 1), (32, 5)) if not quick else ((8, 1), (16, 3)):
            case = f"{name}, rank {rank}, {iters} iter"
            Q, A, B = peft.loftq_init(W, 4, rank, iters, device)
            mine = pl.run(w32, rank, iters)
            layout = (np.shape(Q), format_of(Q), np.asarray(A).dtype.name, A.shape, B.shape)
            want = (w32.shape, format_of(W), "float32", (rank, w32.shape[1]), (w32.shape[0], rank))
            row("layout").add(
                case, np.frombuffer(str(want).encode(), np.uint8), np.frombuffer(str(layout).encode(), np.uint8)
            )
            if iters == 1:
                row("Q, 1 iteration").add(
                    case,
                    cast_float32(mine.Q, format_of(W)),
                    Q,
                    inputs=W,
                    classifiers=[divergences.nf4_value_at_midpoint],
                    x32=w32,
                    blocksize=64,
                )
            if format_of(W) != "float32":
                continue  # Q comes back rounded to the input format: the certificates need float32
            q32 = as_float32(Q)
            row("B A Eckart-Young").certify(case, abs(pl.eckart_young_gap(w32, q32, A, B)), 1e-6, "relative gap")
            row("Q_T fixed point").certify(case, pl.fixed_point_fraction(q32), 0.0, "moved fraction")
            theirs_obj = np.linalg.norm(w32.astype(np.float64) - q32 - B.astype(np.float64) @ A)
            ours_obj = mine.errors[-1]
            row("objective vs profile").certify(
                case, abs(theirs_obj - ours_obj) / np.linalg.norm(w32), 1e-4, "relative difference"
            )
    return list(rows.values())
