"""`qref validate [LIBRARY ...] [--json FILE]`: each installed library, on every device it runs on,
against its qref profile and the bitsandbytes default; per op: cases, exact matches, divergences,
and for each divergence class one minimal example (input, both outputs, the decision point).

Libraries and what is compared (docs/validate.md):
  bitsandbytes  quantize/dequantize 4-bit NF4/FP4 +-DQ, both directions (conformance/check.py); CPU, CUDA
  torchao       NF4Tensor vs the torchao profile and vs bitsandbytes (conformance/check_torchao.py); CPU, CUDA
  peft          loftq_init vs the PEFT LoftQ profile, certificates (conformance/check_peft.py); CUDA only
  auto-gptq     RTN quantizer and packer vs qref.groupwise / qref.gptq_pack (conformance/check_gptq.py); CPU
  peft-qalora   PEFT's QA-LoRA layer (use_qalora) vs qref.qalora.forward, certified (conformance/check_qalora.py); CPU
  compressed-tensors, hqq, optimum-quanto, torchao-int4
                group-wise INT-k quantize/dequantize/storage vs their profiles and, where one corresponds,
                qref's group-wise profiles (conformance/check_affine.py); CPU, CUDA
"""

from __future__ import annotations

import json
from dataclasses import asdict

import qref

from .report import Row, render


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except (ImportError, RuntimeError):
        return False


def _libraries():
    from . import check

    def peft_available():
        from .peers import peft

        return peft.available()

    def peft_check(quick=False, device="cuda"):
        from .check_peft import check_peft

        return check_peft(quick, device)

    both = ("cpu", "cuda")

    def peft_qalora_available():
        from .peers import peft_qalora

        return peft_qalora.available()

    def peft_qalora_check(quick=False, device="cpu"):
        from .check_qalora import check_peft_qalora

        return check_peft_qalora(quick, device)

    return {
        "bitsandbytes": (check.PEERS["bitsandbytes"][0], check.PEERS["bitsandbytes"][1], both),
        "torchao": (check.PEERS["torchao"][0], check.PEERS["torchao"][1], both),
        "peft": (peft_available, peft_check, ("cuda",)),
        "auto-gptq": (
            check.PEERS["auto-gptq"][0],
            lambda quick=False, device="cpu": check.PEERS["auto-gptq"][1](quick),
            ("cpu",),
        ),
        "peft-qalora": (peft_qalora_available, peft_qalora_check, ("cpu",)),
    } | {name: (*check.PEERS[name], both) for name in check.GROUPWISE_LIBRARIES}


def validate(libraries=None, quick: bool = False, devices=None) -> tuple[list[dict], list[str]]:
    """Run the named (default: every known) libraries on every available device; returns
    (one report per library and device, skipped lines with reasons)."""
    from .check import quiet

    libs = _libraries()
    reports, skipped = [], []
    for name in libraries or ():
        if name not in libs:
            raise ValueError(f"unknown library {name!r}; known: {', '.join(libs)}")
    for device in devices or ():
        if device not in ("cpu", "cuda"):
            raise ValueError(f"--device {device!r}: one of cpu, cuda")
    for name in libraries or libs:
        available, run, lib_devices = libs[name]
        ok, info = available()
        if not ok:
            skipped.append(f"{name}: {info}")
            continue
        for device in devices or lib_devices:
            if device not in lib_devices:
                skipped.append(f"{name} on {device}: runs on {', '.join(lib_devices)} only")
                continue
            if device == "cuda" and not _cuda():
                skipped.append(f"{name} on cuda: no CUDA device")
                continue
            with quiet():  # the libraries' own prints and warnings (AutoGPTQ, torchao) stay out of the report
                rows = run(quick=quick, device=device)
            reports.append({"library": name, "version": info, "device": device, "rows": rows})
    return reports, skipped


def _row_json(r: Row) -> dict:
    return {
        "op": r.op,
        "config": r.config,
        "cases": r.cases,
        "exact": r.exact,
        "explained": r.explained,
        "unexplained": r.mismatches,
        "certified": r.certified,
        "max_abs_diff": r.max_abs_diff,
        "first_unexplained": r.first,
        "divergence_ids": sorted(set(r.class_ids.values())),
        "classes": [
            {"id": r.class_ids.get(k), "class": k, "cases": r.class_counts.get(k, 0), "example": asdict(e)}
            for k, e in r.examples.items()
        ],
    }


def as_json(reports: list[dict], skipped: list[str]) -> dict:
    return {
        "qref": qref.__version__,
        "schema": "qref-validate/1",
        "libraries": [
            {k: v for k, v in rep.items() if k != "rows"} | {"rows": [_row_json(r) for r in rep["rows"]]}
            for rep in reports
        ],
        "skipped": skipped,
        "unexplained": sum(r.mismatches for rep in reports for r in rep["rows"]),
    }


def text(reports: list[dict], skipped: list[str]) -> str:
    out = []
    for rep in reports:
        head = f"{rep['library']} {rep['version']} on {rep['device']}"
        out.append(render(rep["rows"], head))
        lines = [
            f"  {r.op} | {r.config} | {k} ({r.class_counts.get(k, 0)} cases, max |diff| {r.max_abs_diff:.3g}):\n"
            f"      {e.line()}"
            for r in rep["rows"]
            for k, e in r.examples.items()
        ]
        if lines:
            out.append("divergence classes, one minimal example each:\n" + "\n".join(lines))
        out.append("")
    out += [f"skipped {line}" for line in skipped]
    return "\n".join(out)


def main(libraries=None, quick=False, json_path=None, devices=None, out=print, overwrite=False) -> int:
    """Exit status 1 on an unexplained mismatch, else 0; the JSON file is checked writable first and
    written atomically, and an existing one is replaced only with `overwrite`."""
    from qref.files import atomic_write_text, prepare_output

    target = prepare_output(json_path, overwrite, "--json") if json_path else None
    reports, skipped = validate(libraries, quick, devices)
    out(text(reports, skipped))
    if target is not None:
        atomic_write_text(target, json.dumps(as_json(reports, skipped), indent=1, sort_keys=True, default=float) + "\n")
    return int(any(r.mismatches for rep in reports for r in rep["rows"]))
