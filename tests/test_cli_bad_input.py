"""Bad input to every command: exit status 2, one line on stderr that names the argument or the file,
no traceback, and every file on disk as it was (docs/check.md, "exit status").

Each row is (command, argv with {placeholders}, a word the message must hold). The placeholders are
files made by the `area` fixture: a model folder, a pickle, a truncated or huge-header safetensors
file, an existing output, a path below a regular file (no folder can be made there), ...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qref.cli import main
from qref.safetensors_io import SafetensorsWriter

ROWS = [
    # check
    ("check", ["check", "nosuchlib"], "nosuchlib"),
    ("check", ["check", "--backend", "nosuch", "--no-libraries"], "nosuch"),
    ("check", ["check", "--backend", "", "--no-libraries"], "backend"),
    ("check", ["check", "--width", "10"], "--width"),
    ("check", ["check", "--width", "-5"], "--width"),
    ("check", ["check", "--width", "abc"], "--width"),
    ("check", ["check", "--width", "1e3"], "--width"),
    ("check", ["check", "--format", "xml"], "--format"),
    ("check", ["check", "--no-backends", "--no-libraries"], "nothing"),
    ("check", ["check", "--frobnicate"], "frobnicate"),
    ("check", ["check", "bitsandbytes", "bitsandbytes2"], "bitsandbytes2"),
    # conform
    ("conform", ["conform", "nosuch"], "nosuch"),
    ("conform", ["conform", ""], "backend"),
    ("conform", ["conform", ":cuda"], "backend"),
    ("conform", ["conform", "numpy:"], "device"),
    ("conform", ["conform", "numpy:cuda"], "numpy"),
    ("conform", ["conform", "torch:tpu"], "tpu"),
    ("conform", ["conform", "numpy", "--profile", "fast"], "--profile"),
    ("conform", ["conform", "numpy", "--profile"], "--profile"),
    ("conform", ["conform"], "backend"),
    ("conform", ["conform", "no such"], "no such"),
    # validate
    ("validate", ["validate", "nosuchlib"], "nosuchlib"),
    ("validate", ["validate", "--device", "tpu"], "--device"),
    ("validate", ["validate", "--device", ""], "--device"),
    ("validate", ["validate", "auto-gptq", "--quick", "--json", "{existing}"], "--overwrite"),
    ("validate", ["validate", "auto-gptq", "--quick", "--json", "{folder}"], "folder"),
    ("validate", ["validate", "auto-gptq", "--quick", "--json", "{under_file}/r.json"], "cannot write"),
    ("validate", ["validate", "auto-gptq", "--quick", "--json", ""], "--json"),
    ("validate", ["validate", "auto-gptq", "--device", "cpu", "--device", "tpu"], "--device"),
    ("validate", ["validate", "--json"], "--json"),
    ("validate", ["validate", "--quick=yes"], "--quick"),
    # vectors export
    ("vectors export", ["vectors", "export", "{nonempty}"], "--overwrite"),
    ("vectors export", ["vectors", "export", "{existing}"], "folder"),
    ("vectors export", ["vectors", "export", "{under_file}/v"], "cannot write"),
    ("vectors export", ["vectors", "export", ""], "DIR"),
    ("vectors export", ["vectors", "export"], "directory"),
    ("vectors export", ["vectors", "export", "{model}"], "--overwrite"),
    ("vectors export", ["vectors", "export", "{nonempty}", "--overwrite=no"], "--overwrite"),
    ("vectors export", ["vectors", "export", "a", "b"], "b"),
    ("vectors export", ["vectors", "exprot", "{empty}"], "exprot"),
    ("vectors export", ["vectors", "export", "{pickle}"], "folder"),
    # vectors check
    ("vectors check", ["vectors", "check", "{missing}"], "missing"),
    ("vectors check", ["vectors", "check", "{existing}"], "folder"),
    ("vectors check", ["vectors", "check", "{empty}"], "no vector files"),
    ("vectors check", ["vectors", "check", "{nonempty}"], "no vector files"),
    ("vectors check", ["vectors", "check", "{vectors}", "--backend", "nosuch"], "nosuch"),
    ("vectors check", ["vectors", "check", "{vectors}", "--backend", "torch:tpu"], "tpu"),
    ("vectors check", ["vectors", "check", "{vectors}", "--backend", ""], "backend"),
    ("vectors check", ["vectors", "check", ""], "DIR"),
    ("vectors check", ["vectors", "check"], "directory"),
    ("vectors check", ["vectors", "check", "{deep}"], "deep"),
    ("vectors check", ["vectors", "check", "{notjson}"], "JSON"),
    # experiment
    ("experiment", ["experiment", "--out", "{nonempty}"], "--overwrite"),
    ("experiment", ["experiment", "--out", "{existing}"], "folder"),
    ("experiment", ["experiment", "--out", "{under_file}/r"], "cannot write"),
    ("experiment", ["experiment", "--size", "huge"], "--size"),
    ("experiment", ["experiment", "--seeds", "abc"], "--seeds"),
    ("experiment", ["experiment", "--seeds"], "--seeds"),
    ("experiment", ["experiment", "--pretrain-steps", "-1"], "--pretrain-steps"),
    ("experiment", ["experiment", "--ft-steps", "0"], "--ft-steps"),
    ("experiment", ["experiment", "--ft-steps", "x"], "--ft-steps"),
    ("experiment", ["experiment", "--frobnicate"], "frobnicate"),
    ("experiment", ["experiment", "--seeds", "1", "1"], "--seeds"),
    ("experiment", ["experiment", "--device", "tpu9"], "--device"),
    # init: files
    ("init", ["init", "{missing}", "{new}"], "missing"),
    ("init", ["init", "{empty}", "{new}"], "no model.safetensors"),
    ("init", ["init", "{truncated}", "{new}"], "truncated"),
    ("init", ["init", "{zip}", "{new}"], "pickle"),
    ("init", ["init", "{pickle}", "{new}"], "pickle"),
    ("init", ["init", "{huge_header}", "{new}"], "header"),
    ("init", ["init", "{bad_json}", "{new}"], "JSON"),
    ("init", ["init", "{bad_offsets}", "{new}"], "bytes"),
    ("init", ["init", "{escaping_index}", "{new}"], "shard"),
    ("init", ["init", "{pickled_folder}", "{new}"], "pickle"),
    ("init", ["init", "{no_linears}", "{new}"], "no linear"),
    # init: outputs
    ("init", ["init", "{model}", "{model}"], "input"),
    ("init", ["init", "{model}", "{model}/sub"], "inside"),
    ("init", ["init", "{model}", "{parent_of_model}", "--overwrite"], "holds the input"),
    ("init", ["init", "{model}", "{nonempty}"], "--overwrite"),
    ("init", ["init", "{model}", "{existing}"], "not a folder"),
    ("init", ["init", "{model}", "{under_file}/out"], "cannot write"),
    # init: arguments
    ("init", ["init", "{model}", "{new}", "--rank", "0"], "--rank"),
    ("init", ["init", "{model}", "{new}", "--rank", "-3"], "--rank"),
    ("init", ["init", "{model}", "{new}", "--rank", "2.5"], "--rank"),
    ("init", ["init", "{model}", "{new}", "--blocksize", "100"], "--blocksize"),
    ("init", ["init", "{model}", "{new}", "--iters", "0"], "--iters"),
    ("init", ["init", "{model}", "{new}", "--alpha", "nan"], "--alpha"),
    ("init", ["init", "{model}", "{new}", "--alpha", "-1"], "--alpha"),
    ("init", ["init", "{model}", "{new}", "--target-modules", "nosuch_proj"], "nosuch_proj"),
    ("init", ["init", "{model}", "{new}", "--target-modules", ","], "--target-modules"),
    ("init", ["init", "{model}", "{new}", "--target-regex", "("], "--target-regex"),
    ("init", ["init", "{model}", "{new}", "--target-regex", "nothing"], "--target-regex"),
    ("init", ["init", "{model}", "{new}", "--target-modules", "q_proj", "--target-regex", ".*"], "not both"),
    ("init", ["init", "{model}", "{new}", "--backend", "nosuch"], "nosuch"),
    ("init", ["init", "{model}", "{new}", "--quant-type", "fp4"], "fp4"),
    ("init", ["init", "{model}", "{new}", "--method", "gptq"], "--method"),
    ("init", ["init", "{poisoned}", "{new}"], "model.layers.0.mlp.up_proj.weight"),
]


def linear_model(folder: Path, poison: bool = False, linears: bool = True) -> Path:
    folder.mkdir(parents=True)
    w = SafetensorsWriter(folder / "model.safetensors")
    rng = np.random.default_rng(0)
    w.add("model.embed_tokens.weight", rng.standard_normal((20, 32)).astype(np.float32))
    if linears:
        for m in ("self_attn.q_proj", "mlp.up_proj"):
            W = rng.standard_normal((32, 32)).astype(np.float32)
            if poison and m == "mlp.up_proj":
                W[1, 2] = np.inf
            w.add(f"model.layers.0.{m}.weight", W)
    w.close({"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


@pytest.fixture
def area(tmp_path):
    p = {"new": tmp_path / "new-out", "missing": tmp_path / "missing-model"}
    p["model"] = linear_model(tmp_path / "parent" / "model")
    p["parent_of_model"] = tmp_path / "parent"
    p["poisoned"] = linear_model(tmp_path / "poisoned", poison=True)
    p["no_linears"] = linear_model(tmp_path / "no-linears", linears=False)
    p["existing"] = tmp_path / "existing.json"
    p["existing"].write_text("keep me")
    p["folder"] = tmp_path / "a-folder"
    p["folder"].mkdir()
    p["empty"] = tmp_path / "empty"
    p["empty"].mkdir()
    p["nonempty"] = tmp_path / "nonempty"
    p["nonempty"].mkdir()
    (p["nonempty"] / "mine.txt").write_text("keep")
    p["under_file"] = tmp_path / "regular-file"
    p["under_file"].write_text("a file, not a folder")
    files = {
        "truncated": (200).to_bytes(8, "little") + b'{"a": 1}',
        "pickle": b"\x80\x04\x95" + b"\x00" * 40,
        "zip": b"PK\x03\x04" + b"\x00" * 40,
        "huge_header": (10**12).to_bytes(8, "little") + b"{}",
        "bad_json": (4).to_bytes(8, "little") + b"{{{{",
    }
    for name, data in files.items():
        p[name] = tmp_path / f"{name}.safetensors"
        p[name].write_bytes(data)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    p["bad_offsets"] = tmp_path / "bad_offsets.safetensors"
    p["bad_offsets"].write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 16)
    p["escaping_index"] = tmp_path / "escaping"
    p["escaping_index"].mkdir()
    (p["escaping_index"] / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "../model/model.safetensors"}})
    )
    p["pickled_folder"] = tmp_path / "pickled"
    p["pickled_folder"].mkdir()
    (p["pickled_folder"] / "pytorch_model.bin").write_bytes(b"\x80\x04")
    p["vectors"] = tmp_path / "vectors"
    p["vectors"].mkdir()
    (p["vectors"] / "quantize_4bit_v1.json").write_text(json.dumps({"testGroups": []}))
    p["deep"] = tmp_path / "deep"
    p["deep"].mkdir()
    (p["deep"] / "deep_v1.json").write_text("[" * 100_000 + "]" * 100_000)
    p["notjson"] = tmp_path / "notjson"
    p["notjson"].mkdir()
    (p["notjson"] / "x_v1.json").write_text("{not json")
    return tmp_path, {k: str(v) for k, v in p.items()}


def snapshot(root: Path) -> dict:
    return {str(f): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_every_command_has_ten_cases():
    counts: dict[str, int] = {}
    for command, _, _ in ROWS:
        counts[command] = counts.get(command, 0) + 1
    assert set(counts) == {"check", "conform", "validate", "vectors export", "vectors check", "experiment", "init"}
    assert min(counts.values()) >= 10, counts


@pytest.mark.parametrize(("command", "argv", "word"), ROWS, ids=[f"{c}:{' '.join(a[1:])}" for c, a, _ in ROWS])
def test_bad_input_exits_2_with_one_line_naming_it(area, capsys, monkeypatch, command, argv, word):
    root, paths = area
    monkeypatch.chdir(root)  # default output folders land in the scratch area
    argv = [a.format(**paths) for a in argv]
    word = word.format(**paths)
    before = snapshot(root)
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        status = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, (status, captured.err[-500:])
    assert "Traceback" not in captured.err
    last = lines[-1] if lines else ""
    assert last.startswith(("qref", "usage:", "python")), last
    if not last.startswith("qref"):  # argparse: usage lines, then "qref ...: error: ..."
        last = next((line for line in lines if "error:" in line), last)
    assert word.lower() in last.lower(), (word, lines)
    assert snapshot(root) == before  # nothing written, nothing replaced
    assert not Path(paths["new"]).exists()
