"""The initialisations compared, each computed by qref from a layer's full-precision weight.

For every quantized layer a method returns (W_base, A, B, pool): the dequantized base weight the
model will hold (frozen), and the adapter's factors at initialisation, with B A added to W_base
(LoRA scaling 1). All weights are float32 (out, in); C is the layer's calibration second moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qref import groupwise, loftq, lqlora, quailora

#: The NF-k bases: QLoRA's storage (block 64, 8-bit absmax in blocks of 256) at k bits.
NF = {k: lqlora.LQConfig(k, 64, 256) for k in (2, 3, 4, 8)}
NF4, NF8 = NF[4], NF[8]
ILP_CONFIGS = (NF[2], NF[3], NF4, NF8)
QALORA_GROUP = 16  # QA-LoRA's pooled rank is at most d_in / group: 24 pooled inputs for d = 384


@dataclass
class Init:
    W: np.ndarray
    A: np.ndarray
    B: np.ndarray
    pool: int = 1
    bits: float = 4.0  # bits per parameter of the base weight's storage (incl. absmax overhead)


def kaiming_A(rank: int, d_in: int, rng: np.random.Generator) -> np.ndarray:
    """PEFT's default LoRA A: kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(d_in), 1/sqrt(d_in))."""
    bound = 1.0 / np.sqrt(d_in)
    return rng.uniform(-bound, bound, (rank, d_in)).astype(np.float32)


def qlora(W, rank, rng, config=NF4) -> Init:
    """Zero-init LoRA on the quantized weight: B = 0, A random (QLoRA)."""
    return Init(
        config.quantize(W),
        kaiming_A(rank, W.shape[1], rng),
        np.zeros((W.shape[0], rank), np.float32),
        bits=float(config.bits_per_parameter()),
    )


def loftq_init(W, rank, iters=5, config=NF4) -> Init:
    r = loftq.loftq(W, rank, iters, quantizer=config.quantize)
    return Init(r.Q, r.lora_A, r.lora_B, bits=float(config.bits_per_parameter()))


def lqlora_init(W, rank, config=NF4, max_iter=10) -> tuple[Init, float]:
    """LQ-LoRA's decomposition; also returns its squared error (the ILP's cost)."""
    r = lqlora.decompose(W.astype(np.float64), rank, config, max_iter=max_iter)
    err = float(np.linalg.norm(W - r.Q - r.L1 @ r.L2) ** 2)
    return Init(
        r.Q.astype(np.float32),
        r.L2.astype(np.float32),
        r.L1.astype(np.float32),
        bits=float(config.bits_per_parameter()),
    ), err


def lqlora_ilp(weights: dict, rank: int, budget: float, max_iter=5, table=None) -> tuple[dict, dict]:
    """One configuration per layer from ILP_CONFIGS minimising the total error under an average
    bits-per-parameter budget (LQ-LoRA Sec. 3.2); returns ({name: Init}, {name: bits}). `table`
    ({name: [lqlora_init(W, rank, cfg) for cfg in ILP_CONFIGS]}) may be computed elsewhere."""
    names = list(weights)
    done = table or {n: [lqlora_init(W, rank, cfg, max_iter) for cfg in ILP_CONFIGS] for n, W in weights.items()}
    table = {(n, c): done[n][c] for n in names for c in range(len(ILP_CONFIGS))}
    costs = np.array([[table[n, c][1] for c in range(len(ILP_CONFIGS))] for n in names])
    bits = np.array([[float(cfg.bits_per_parameter()) for cfg in ILP_CONFIGS] for _ in names])
    sizes = np.array([weights[n].size for n in names], dtype=float)
    alloc = lqlora.allocate(costs, bits, sizes, budget)
    chosen = {n: table[n, int(c)][0] for n, c in zip(names, alloc.choice)}
    return chosen, {n: chosen[n].bits for n in names}


def quailora_init(W, rank, C, calibrated: bool, damping=0.01, max_iter=30, config=NF4) -> Init:
    Q = config.quantize(W).astype(np.float64)
    W64 = W.astype(np.float64)
    if calibrated:
        r = quailora.calibrated(W64, Q, rank, C, damping=damping, max_iter=max_iter, tol=1e-9)
        A, B = r.lora_A, r.lora_B
    else:
        A, B = quailora.uncalibrated(W64, Q, rank)
    bits = float(config.bits_per_parameter())
    return Init(Q.astype(np.float32), A.astype(np.float32), B.astype(np.float32), bits=bits)


def qalora_init(W, rank, rng) -> tuple[Init, groupwise.GroupQuant]:
    """QA-LoRA: INT4 min-max group-wise base (group 32), pooled adapter A (r, d_in / 32) random, B = 0."""
    gq = groupwise.quantize_groupwise(W, 4, QALORA_GROUP, "minmax")
    base = groupwise.dequantize_groupwise(gq).astype(np.float32)
    G = W.shape[1] // QALORA_GROUP
    A = kaiming_A(rank, G, rng)
    return Init(base, A, np.zeros((W.shape[0], rank), np.float32), pool=QALORA_GROUP, bits=4 + 32 / QALORA_GROUP), gq


def calibrated_norm(weights: dict, C: dict) -> float:
    """sum over layers of tr(W C W^T): the calibrated error of an all-zero approximation (J's scale)."""
    return sum(float(np.sum((W.astype(np.float64) @ C[n]) * W)) for n, W in weights.items())


def calibrated_error(W, init: Init, C) -> float:
    """tr((W - W_base - B A) C (...)^T): the output error on calibration inputs (QuAILoRA's J)."""
    if init.pool != 1:
        return float("nan")
    E = W.astype(np.float64) - init.W - init.B.astype(np.float64) @ init.A
    return float(np.sum((E @ C) * E))
