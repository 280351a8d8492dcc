"""A run's progress in its results folder, so that a run stopped after pretraining resumes (--resume):
base.pt holds the pretrained model (with the size and settings it was made under), progress.jsonl one
line per fine-tuned (seed, method). Without --resume both are started afresh."""

from __future__ import annotations

import json
from pathlib import Path

import torch

BASE, LINES = "base.pt", "progress.jsonl"


class ResumeError(ValueError):
    """The folder holds no pretrained model to resume from, or one made under other settings."""


class Progress:
    def __init__(self, out, resume: bool, size: str, settings: dict):
        self.dir = Path(out) if out is not None else None
        self.key = {"size": size, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
        self.resume = resume
        if resume and (self.dir is None or not (self.dir / BASE).is_file()):
            raise ResumeError(f"--resume: no {BASE} in {self.dir} (a run writes it after pretraining)")
        if self.dir is not None and not resume:
            (self.dir / LINES).unlink(missing_ok=True)

    def base(self) -> dict | None:
        """{"state", "losses", "fp"} of the pretraining to resume from; None when not resuming."""
        if not self.resume:
            return None
        saved = torch.load(self.dir / BASE, map_location="cpu", weights_only=True)
        if saved["key"] != self.key:
            raise ResumeError(f"--resume: {self.dir / BASE} was made under {saved['key']}, this run is {self.key}")
        return saved

    def save_base(self, state: dict, losses: list, fp: dict) -> None:
        if self.dir is None:
            return
        tmp = self.dir / (BASE + ".partial")
        torch.save({"key": self.key, "state": {k: v.cpu() for k, v in state.items()}, "losses": losses, "fp": fp}, tmp)
        tmp.replace(self.dir / BASE)

    def done(self) -> dict:
        """{(seed, method): result} recorded by an earlier run of this folder (when resuming)."""
        path = None if self.dir is None else self.dir / LINES
        if not self.resume or not path.is_file():
            return {}
        out = {}
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the run was stopped
                continue
            out[row["seed"], row["method"]] = row["result"]
        return out

    def record(self, seed: int, results: dict) -> None:
        if self.dir is None:
            return
        with open(self.dir / LINES, "a") as f:
            for m, r in results.items():
                f.write(json.dumps({"seed": seed, "method": m, "result": r}) + "\n")
            f.flush()
