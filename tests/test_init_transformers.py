"""`qref init` output loaded by the real transformers, PEFT and bitsandbytes (CPU), on a small Llama
built from a config: bf16 and sharded; and qref's 4-bit tensors against transformers' own.
"""

import json
import warnings

import numpy as np
import pytest

from qref import QuantState, dequantize_4bit
from qref.cli import main
from qref.safetensors_io import SafetensorsReader

pytestmark = pytest.mark.peer
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def bf16_sharded(tmp_path_factory, small_llama):
    folder = small_llama(tmp_path_factory.mktemp("m") / "llama", torch.bfloat16, shard="200KB")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def load(out):
    base = transformers.AutoModelForCausalLM.from_pretrained(out / "base", device_map="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(base, out / "adapter")
    assert not [w for w in caught if "missing" in str(w.message).lower()]
    return model


def adapted_layers(model):
    import copy

    import bitsandbytes.functional as F

    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            state = copy.copy(mod.base_layer.weight.quant_state)
            state.dtype = torch.float32  # the loaded codes and absmax, dequantized without rounding to bf16
            Q = F.dequantize_4bit(mod.base_layer.weight.data, state).double()
            A = mod.lora_A["default"].weight.detach().double()
            B = mod.lora_B["default"].weight.detach().double()
            yield name.removeprefix("base_model.model."), Q, A, B, mod.scaling["default"]


def qref_computed(out, module):
    """Q + (alpha/r) B A as qref wrote it, read back with qref alone."""
    base = SafetensorsReader(out / "base" / "model.safetensors")
    state = QuantState.from_dict({k: np.asarray(base.raw(k)) for k in base.keys() if k.startswith(f"{module}.weight.")})
    Q = dequantize_4bit(np.asarray(base.raw(f"{module}.weight")), state, "float32").astype(np.float64)
    ad = SafetensorsReader(out / "adapter" / "adapter_model.safetensors")
    A = np.asarray(ad.raw(f"base_model.model.{module}.lora_A.weight"), np.float64)
    B = np.asarray(ad.raw(f"base_model.model.{module}.lora_B.weight"), np.float64)
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    return Q + cfg["lora_alpha"] / cfg["r"] * B @ A


@pytest.mark.parametrize(
    ("method", "extra"),
    [("loftq", []), ("lqlora", ["--double-quant"]), ("quailora", ["--alpha", "32"]), ("qlora", ["--alpha", "16"])],
)
def test_init_output_loads_in_transformers_and_peft(bf16_sharded, tmp_path, method, extra):
    out = tmp_path / "out"
    assert (
        main(
            ["init", str(bf16_sharded), str(out), "--method", method, "--rank", "8", "--iters", "2", "--quiet", *extra]
        )
        == 0
    )
    model = load(out)
    source = transformers.AutoModelForCausalLM.from_pretrained(bf16_sharded, dtype=torch.float32)
    weights = {k: v.detach().double() for k, v in source.named_parameters()}
    layers = list(adapted_layers(model))
    assert len(layers) == 14  # 7 linears in each of 2 layers
    for module, Q, A, B, scale in layers:
        assert scale == (float(extra[1]) if "--alpha" in extra else 8) / 8
        loaded = (Q + scale * B @ A).numpy()
        np.testing.assert_allclose(loaded, qref_computed(out, module), rtol=0, atol=1e-6 * np.abs(loaded).max())
        W = weights[f"{module}.weight"].numpy()
        if method == "qlora":
            assert np.all(B.numpy() == 0) and np.abs(A.numpy()).max() > 0  # A random, as PEFT's init: it trains
        else:
            assert np.linalg.norm(W - loaded) < 0.97 * np.linalg.norm(W - Q.numpy())  # 1.0 if alpha were misapplied
    logits = model(torch.arange(12).reshape(1, 12)).logits
    assert torch.isfinite(logits).all()


def test_target_modules_reach_peft(bf16_sharded, tmp_path):
    out = tmp_path / "out"
    assert (
        main(["init", str(bf16_sharded), str(out), "--rank", "4", "--target-modules", "q_proj,v_proj", "--quiet"]) == 0
    )
    names = sorted(m for m, *_ in adapted_layers(load(out)))
    assert names == sorted(f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_base_matches_what_transformers_writes_for_the_same_model(tmp_path, dtype, small_llama):
    """Without double quantization qref's 4-bit tensors are transformers' own, byte for byte."""
    src = small_llama(tmp_path / "src", getattr(torch, dtype))
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    transformers.AutoModelForCausalLM.from_pretrained(src, quantization_config=bnb, device_map="cpu").save_pretrained(
        tmp_path / "theirs"
    )
    out = tmp_path / "ours"
    assert main(["init", str(src), str(out), "--method", "qlora", "--rank", "4", "--quiet"]) == 0
    theirs = SafetensorsReader(tmp_path / "theirs" / "model.safetensors")
    ours = SafetensorsReader(out / "base" / "model.safetensors")
    assert sorted(ours.keys()) == sorted(theirs.keys())
    for k in theirs.keys():
        assert ours.tensors[k].dtype == theirs.tensors[k].dtype and ours.tensors[k].shape == theirs.tensors[k].shape, k
        assert np.asarray(ours.raw(k)).tobytes() == np.asarray(theirs.raw(k)).tobytes(), k
    config = json.loads((out / "base" / "config.json").read_text())["quantization_config"]
    reference = json.loads((tmp_path / "theirs" / "config.json").read_text())["quantization_config"]
    assert {k: v for k, v in reference.items() if not k.startswith("_")} == config
