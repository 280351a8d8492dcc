"""A small decoder-only transformer over bytes (vocabulary 256), and the adapted linear layer.

Every linear layer of the blocks (qkv, proj, fc1, fc2) is an `AdaptedLinear`: a frozen base weight
(the full-precision one during pretraining, a dequantized one afterwards) plus an optional LoRA
adapter y = x W^T + s (P(x) A^T) B^T, where P is the identity (LoRA) or QA-LoRA's average pooling
over groups of `pool` input features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Config:
    d: int = 384
    layers: int = 6
    heads: int = 6
    ctx: int = 256
    vocab: int = 256

    def params(self) -> int:
        return self.layers * 12 * self.d * self.d + (self.vocab + self.ctx) * self.d


SIZES = {"tiny": Config(d=64, layers=2, heads=2, ctx=64), "small": Config()}


class AdaptedLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        nn.init.normal_(self.weight, std=d_in**-0.5)
        self.A = self.B = None
        self.scaling, self.pool = 1.0, 1

    def set_adapter(self, A: torch.Tensor, B: torch.Tensor, scaling: float = 1.0, pool: int = 1) -> None:
        """Attach trainable factors A (r, d_in / pool) and B (d_out, r); the base weight is frozen."""
        self.weight.requires_grad_(False)
        self.A, self.B = nn.Parameter(A.clone()), nn.Parameter(B.clone())
        self.scaling, self.pool = scaling, pool

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.A is None:
            return y
        p = x if self.pool == 1 else x.unflatten(-1, (-1, self.pool)).mean(-1)
        return y + self.scaling * F.linear(F.linear(p, self.A), self.B)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.heads
        self.ln1, self.ln2 = nn.LayerNorm(c.d), nn.LayerNorm(c.d)
        self.qkv, self.proj = AdaptedLinear(c.d, 3 * c.d), AdaptedLinear(c.d, c.d)
        self.fc1, self.fc2 = AdaptedLinear(c.d, 4 * c.d), AdaptedLinear(4 * c.d, c.d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ByteGPT(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.tok, self.pos = nn.Embedding(c.vocab, c.d), nn.Embedding(c.ctx, c.d)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.ln = nn.LayerNorm(c.d)
        nn.init.normal_(self.tok.weight, std=0.02)  # GPT-2's init: with the tied head, logits start near 0
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln(x), self.tok.weight)  # tied output embedding

    def linears(self) -> dict[str, AdaptedLinear]:
        """The quantized layers, by name: blocks.{i}.{qkv,proj,fc1,fc2}."""
        return {n: m for n, m in self.named_modules() if isinstance(m, AdaptedLinear)}

    def freeze_all(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)


def batches(data, batch: int, ctx: int, generator: torch.Generator, device):
    """Random windows of ctx + 1 bytes: (inputs, targets)."""
    starts = torch.randint(0, data.numel() - ctx - 1, (batch,), generator=generator)
    win = torch.stack([data[s : s + ctx + 1] for s in starts.tolist()]).to(device, torch.long)
    return win[:, :-1], win[:, 1:]


@torch.no_grad()
def perplexity(model: ByteGPT, data, windows: int, device, batch: int = 32, bf16: bool = True) -> float:
    """exp(mean next-byte NLL) over `windows` evenly spaced, non-overlapping windows of the split
    (matmuls in bfloat16 autocast on CUDA unless bf16=False)."""
    ctx = model.c.ctx
    n = min(windows, (data.numel() - 1) // ctx)
    starts = torch.linspace(0, data.numel() - ctx - 1, n).long().tolist()
    total, count = 0.0, 0
    for i in range(0, n, batch):
        win = torch.stack([data[s : s + ctx + 1] for s in starts[i : i + batch]]).to(device, torch.long)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            logits = model(win[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), win[:, 1:].flatten(), reduction="sum").item()
        count += win[:, 1:].numel()
    return math.exp(total / count)


def train(model: ByteGPT, data, steps: int, lr: float, batch: int, seed: int, device, warmup: int = 0) -> list[float]:
    """AdamW on the trainable parameters, cosine decay after a linear warm-up; returns the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + torch.cos(torch.tensor(s / steps * 3.14159)).item()),
    )
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = batches(data, batch, model.c.ctx, g, device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach())
    model.eval()
    return torch.stack(losses).tolist() if losses else []
