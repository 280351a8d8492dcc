"""The scripts that turn GPU results into docs (docs/scripts/), on synthetic inputs: the GPU table's
markdown computes its ratios from the rows it is given, and the clock summary reads nvidia-smi's CSV."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    import sys

    if str(ROOT / "docs" / "scripts") not in sys.path:  # the scripts import each other, as when run
        sys.path.insert(0, str(ROOT / "docs" / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(impl, op, ms, kms, size="4096x4096"):
    return {
        "impl": impl,
        "size": size,
        "op": op,
        "ms": ms,
        "GB/s": 100 / ms,
        "of_copy": 0.5,
        "kernel_ms": kms,
        "kernel_GB/s": 100 / kms,
        "kernel_of_copy": 0.9,
    }


def test_gpu_table_markdown_ratios(tmp_path, capsys):
    rows = [row("device copy", "copy", 1.0, 0.5), row("device write (zero_)", "write", 1.0, 0.5)]
    for impl, q, kq, d, kd in (
        ("qref cupy", 0.05, 0.016, 0.06, 0.02),
        ("qref torch:cuda", 0.04, 0.016, 0.05, 0.02),
        ("qref cupy +dq", 0.06, 0.024, 0.06, 0.02),
        ("qref torch:cuda +dq", 0.05, 0.02, 0.05, 0.02),
        ("bitsandbytes 0.50.2", 0.25, 0.16, 0.042, 0.021),
    ):
        rows += [row(impl, "quantize", q, kq), row(impl, "dequantize", d, kd)]
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"device": "test", "rows": rows}))
    load("gpu_table_md").main(src)
    out = capsys.readouterr().out
    assert "| qref cupy quantize (whole call): bitsandbytes time / qref time | 5.00x |" in out
    assert "| qref cupy quantize (kernels): bitsandbytes time / qref time | 10.00x |" in out
    assert "| qref torch:cuda dequantize (kernels): bitsandbytes time / qref time | 1.05x |" in out
    assert "| qref cupy quantize (kernels): cost of fused double quantization | +50% |" in out
    assert "| qref cupy | 2000 (50%); 6250 (90%) |" in out


def test_clock_summary_windows(tmp_path, capsys):
    lines = [
        "timestamp, clocks.current.sm [MHz], clocks.current.memory [MHz], power.draw [W], temperature.gpu, "
        "clocks_event_reasons.active"
    ]
    for i in range(30):  # 3 s at 100 ms: 0-1 s idle, then loaded with a power cap reason from 2 s
        sm = 345 if i < 10 else 1980
        reason = "0x0000000000000004" if i >= 20 else "0x0000000000000000"
        lines.append(f"2026/11/23 04:00:0{i // 10}.{i % 10}00, {sm} MHz, 2619 MHz, {100 + 10 * i:.2f} W, 50, {reason}")
    src = tmp_path / "clocks.csv"
    src.write_text("\n".join(lines) + "\n")
    assert load("clocks_summary").main([str(src), "--window", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "(30)" in out[0] and len(out) == 4
    assert "SM   345/  345" in out[1] and "SM  1980/ 1980" in out[2]
    assert "0x0000000000000004" in out[3] and "0x0000000000000004" not in out[2]


def test_sizes_are_data_not_code(tmp_path):
    """A crafted results file cannot run code: sizes are parsed, never evaluated."""
    import pytest

    marker = tmp_path / "ran"
    crafted = f"__import__('pathlib').Path({str(marker)!r}).touch() or 1"
    for name in ("gpu_table_md", "plot_gpu_table"):
        with pytest.raises(ValueError, match="not of the form"):
            load(name).numel(crafted)
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"rows": [row("device copy", "copy", 1.0, 0.5, size=crafted)]}))
    with pytest.raises(ValueError):
        load("gpu_table_md").main(str(src))
    assert not marker.exists()
