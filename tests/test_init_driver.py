"""`qref init` on generated checkpoints, with NumPy alone: what it writes, what it refuses."""

import io
import json

import numpy as np
import pytest

from qref import QuantState, dequantize_4bit
from qref.cli import main
from qref.conformance.synthetic import llm_like_weight
from qref.dtypes import bf16_bits_to_float32, float32_to_bf16_bits
from qref.init_driver import InitConfig, initialise_model
from qref.safetensors_io import SafetensorsReader, SafetensorsWriter

LINEARS = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.down_proj")


def write_model(folder, dtype="BF16", shards=1, poison=None):
    """A small decoder-shaped checkpoint folder: embeddings, three linears, a norm, the head."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"model.embed_tokens.weight": llm_like_weight(50, 64, 9), "lm_head.weight": llm_like_weight(50, 64, 8)}
    for i, m in enumerate(LINEARS):
        tensors[f"{m}.weight"] = llm_like_weight(64, 128 if "down" in m else 64, i)
    tensors["model.norm.weight"] = np.ones(64)
    if poison:
        tensors[poison][3, 5] = np.nan
    names = list(tensors)
    files = (
        [f"model-{k + 1:05d}-of-{shards:05d}.safetensors" for k in range(shards)]
        if shards > 1
        else ["model.safetensors"]
    )
    weight_map = {}
    for k, f in enumerate(files):
        w = SafetensorsWriter(folder / f)
        for name in names[k::shards]:
            x = tensors[name].astype(np.float32)
            if dtype == "BF16":
                w.add(name, float32_to_bf16_bits(x), "BF16")
            else:
                w.add(name, x.astype({"F32": np.float32, "F16": np.float16}[dtype]))
            weight_map[name] = f
        w.close({"format": "pt"})
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    return folder


def source_weight(folder, name):
    from qref.hf_layout import Checkpoint

    ckpt = Checkpoint(folder)
    return ckpt.where[name].float32(name).astype(np.float64)


def loaded_layer(out, module):
    """(Q, A, B, scaling) as a loader reads them from OUT."""
    base = SafetensorsReader(out / "base" / "model.safetensors")
    state = QuantState.from_dict({k: np.asarray(base.raw(k)) for k in base.keys() if k.startswith(f"{module}.weight.")})
    Q = dequantize_4bit(np.asarray(base.raw(f"{module}.weight")), state, "float32").astype(np.float64)
    adapter = SafetensorsReader(out / "adapter" / "adapter_model.safetensors")
    A = np.asarray(adapter.raw(f"base_model.model.{module}.lora_A.weight"), dtype=np.float64)
    B = np.asarray(adapter.raw(f"base_model.model.{module}.lora_B.weight"), dtype=np.float64)
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    return Q, A, B, cfg["lora_alpha"] / cfg["r"]


@pytest.mark.parametrize("method", ["qlora", "loftq", "lqlora", "quailora"])
@pytest.mark.parametrize(("dtype", "shards"), [("BF16", 2), ("F16", 1)])
def test_every_method_writes_a_base_and_an_adapter_that_rebuild_w(tmp_path, method, dtype, shards):
    model = write_model(tmp_path / "model", dtype, shards)
    out = tmp_path / "out"
    cfg = InitConfig(method=method, rank=8, alpha=16, iters=2, backend="numpy")
    reports = initialise_model(model, out, cfg, progress=io.StringIO())
    status = {r.name: r.status for r in reports}
    assert {status[f"{m}.weight"] for m in LINEARS} == {"adapted"}
    assert status["model.embed_tokens.weight"] == status["lm_head.weight"] == "copied"
    base = SafetensorsReader(out / "base" / "model.safetensors")
    src = SafetensorsReader(model / ("model.safetensors" if shards == 1 else "model-00001-of-00002.safetensors"))
    copied = [k for k in src.keys() if "proj" not in k]
    for k in copied:  # other tensors unchanged, in their own dtype
        assert base.tensors[k].dtype == dtype and np.array_equal(base.raw(k), src.raw(k))
    config = json.loads((out / "base" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"
    for m in LINEARS:
        W = source_weight(model, f"{m}.weight")
        Q, A, B, scale = loaded_layer(out, m)
        assert scale == 2.0
        assert np.abs(B).max() > 0 if method != "qlora" else (np.all(B == 0) and np.abs(A).max() > 0)
        err_q, err = np.linalg.norm(W - Q), np.linalg.norm(W - Q - scale * B @ A)
        report = next(r for r in reports if r.name == f"{m}.weight")
        assert np.isclose(err / np.linalg.norm(W), report.error_after, rtol=1e-4)
        if method != "qlora":
            assert err < 0.9 * err_q  # the adapter brings the base closer to W
    meta = json.loads((out / "qref_init.json").read_text())
    assert meta["config"]["method"] == method and meta["config"]["rank"] == 8


def test_bfloat16_is_read_exactly(tmp_path):
    x = llm_like_weight(8, 16, 0).astype(np.float32)
    bits = float32_to_bf16_bits(x)
    w = SafetensorsWriter(tmp_path / "a.safetensors")
    w.add("w", bits, "BF16")
    w.close()
    r = SafetensorsReader(tmp_path / "a.safetensors")
    assert r.tensors["w"].dtype == "BF16" and np.array_equal(r.float32("w"), bf16_bits_to_float32(bits))


def test_our_files_read_by_safetensors_and_back(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {
        "a": np.arange(6, dtype=np.float16).reshape(2, 3),
        "b": np.arange(5, dtype=np.int64),
        "c": np.zeros((0, 4)),
    }
    w = SafetensorsWriter(tmp_path / "ours.safetensors")
    for k, v in arrays.items():
        w.add(k, v)
    w.close({"format": "pt"})
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    assert all(np.array_equal(theirs[k], v) and theirs[k].dtype == v.dtype for k, v in arrays.items())
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    r = SafetensorsReader(tmp_path / "theirs.safetensors")
    assert all(np.array_equal(r.raw(k), v) for k, v in arrays.items())


def test_target_modules_and_regex_select_the_adapted_linears(tmp_path):
    model = write_model(tmp_path / "model")
    out = tmp_path / "o1"
    initialise_model(model, out, InitConfig(method="quailora", rank=4, target_modules=("q_proj",)), progress=None)
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["q_proj"]
    keys = SafetensorsReader(out / "adapter" / "adapter_model.safetensors").keys()
    assert keys == [f"base_model.model.{LINEARS[0]}.lora_A.weight", f"base_model.model.{LINEARS[0]}.lora_B.weight"]
    base = SafetensorsReader(out / "base" / "model.safetensors").keys()
    assert all(f"{m}.weight.absmax" in base for m in LINEARS)  # every linear quantized, adapted or not
    out2 = tmp_path / "o2"
    initialise_model(
        model, out2, InitConfig(method="quailora", rank=4, target_regex=r".*\.(v|down)_proj"), progress=None
    )
    cfg = json.loads((out2 / "adapter" / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["down_proj", "v_proj"]
    with pytest.raises(ValueError, match="--target-modules"):
        initialise_model(model, tmp_path / "o3", InitConfig(rank=4, target_modules=("embed_tokens",)), progress=None)
    assert not (tmp_path / "o3").exists()


def test_a_bad_tensor_is_named_or_kept_unquantized(tmp_path, capsys):
    name = f"{LINEARS[1]}.weight"
    model = write_model(tmp_path / "model", "F32", poison=name)
    assert main(["init", str(model), str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "NaN" in err[0] and not (tmp_path / "o").exists()
    assert (
        main(["init", str(model), str(tmp_path / "o"), "--quiet", "--on-bad-tensor", "skip", "--method", "qlora"]) == 0
    )
    config = json.loads((tmp_path / "o" / "base" / "config.json").read_text())
    assert config["quantization_config"]["llm_int8_skip_modules"][1] == LINEARS[1].replace(".", r"\.")
    assert "skipped: holds NaN" in capsys.readouterr().out


def test_refusals_leave_every_file_as_it_was(tmp_path, capsys):
    model = write_model(tmp_path / "model")
    before = {p: p.read_bytes() for p in model.iterdir()}
    for argv in (
        ["init", str(model), str(model)],  # OUT is MODEL
        ["init", str(model), str(model / "sub")],  # OUT inside MODEL
        ["init", str(model), str(tmp_path), "--overwrite"],  # OUT holds MODEL
        ["init", str(model / "model.safetensors"), str(model / "model.safetensors")],
    ):
        assert main(argv) == 2, argv
    assert {p: p.read_bytes() for p in model.iterdir()} == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["init", str(model), str(out), "--quiet"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"
    assert main(["init", str(model), str(out), "--quiet", "--overwrite", "--rank", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base", "qref_init.json"]


def test_a_single_safetensors_file_gives_weights_without_config(tmp_path):
    model = write_model(tmp_path / "model")
    out = tmp_path / "o"
    initialise_model(model / "model.safetensors", out, InitConfig(method="qlora", rank=4), progress=None)
    assert not (out / "base" / "config.json").exists()
    assert json.loads((out / "qref_init.json").read_text())["base_has_config"] is False


def test_a_background_writer_aborted_mid_queue_leaves_no_file(tmp_path):
    w = SafetensorsWriter(tmp_path / "a.safetensors", background=True, depth=2)
    for k in range(6):
        w.add(f"t{k}", np.full((512, 512), k, np.float32))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_background_writer_writes_what_a_plain_one_does(tmp_path):
    arrays = {f"t{k}": np.arange(k * 1000, dtype=np.float32).reshape(-1, 10) for k in range(1, 6)}
    for background in (False, True):
        w = SafetensorsWriter(tmp_path / f"{background}.safetensors", background=background, depth=1)
        for name, a in arrays.items():
            w.add(name, a)
        w.close()
    assert (tmp_path / "False.safetensors").read_bytes() == (tmp_path / "True.safetensors").read_bytes()
