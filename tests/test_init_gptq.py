"""`qref init --method qalora`: a GPTQ base (qweight, qzeros, scales, g_idx; checkpoint_format gptq or
gptq_v2) and a PEFT QA-LoRA adapter, checked against qref's group-wise reference, AutoGPTQ 0.7.1's own
readers, transformers' GPTQConfig and PEFT's LoraConfig; loaded end to end where GPTQModel is installed.
"""

import json

import numpy as np
import pytest

from qref import gptq_pack
from qref.cli import main
from qref.dtypes import bf16_bits_to_float32
from qref.groupwise import dequantize_groupwise, quantize_groupwise
from qref.safetensors_io import SafetensorsReader, SafetensorsWriter

pytestmark = pytest.mark.peer
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, small_llama):
    return small_llama(tmp_path_factory.mktemp("m") / "llama", torch.bfloat16)


def run_init(model, out, *extra):
    return main(["init", str(model), str(out), "--method", "qalora", "--rank", "8", "--quiet", *extra])


@pytest.fixture(scope="module", params=["v1", "v2"])
def written(request, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("o") / "out"
    assert run_init(model, out, "--gptq-format", request.param, "--alpha", "16") == 0
    return request.param, out


def gptq_tensors(base, module):
    return {k: np.asarray(base.raw(f"{module}.{k}")) for k in ("qweight", "qzeros", "scales", "g_idx")}


def modules(out):
    base = SafetensorsReader(out / "base" / "model.safetensors")
    return sorted(k.removesuffix(".qweight") for k in base.keys() if k.endswith(".qweight")), base


def test_every_linear_is_stored_as_qrefs_groupwise_quantization(model, written):
    fmt, out = written
    source = SafetensorsReader(model / "model.safetensors")
    names, base = modules(out)
    assert len(names) == 2 * len(LINEARS)
    for m in names:
        tensors = gptq_tensors(base, m)
        assert tensors["scales"].dtype == np.float16 and tensors["qweight"].dtype == np.int32
        W = bf16_bits_to_float32(np.asarray(source.raw(f"{m}.weight")))
        ref = quantize_groupwise(W, 4, 32, "gptq-asym")
        got = gptq_pack.from_gptq(tensors, 4, 32, fmt)
        np.testing.assert_array_equal(got.codes, ref.codes)
        np.testing.assert_array_equal(got.zeros, ref.zeros)
        np.testing.assert_array_equal(got.scales, ref.scales.astype(np.float16).astype(np.float32))
        assert f"{m}.weight" not in base.keys()


def test_autogptq_reads_the_v1_tensors_as_qref_does(written):
    fmt, out = written
    if fmt != "v1":
        pytest.skip("AutoGPTQ 0.7.1 reads format v1 only")
    from qref.conformance.peers import autogptq

    ok, why = autogptq.available()
    if not ok:
        pytest.skip(why)
    names, base = modules(out)
    for m in names[:3]:
        tensors = gptq_tensors(base, m)
        ours = dequantize_groupwise(gptq_pack.from_gptq(tensors, 4, 32, "v1"))
        for module in ("qlinear_cuda_old", "qlinear_cuda"):
            np.testing.assert_array_equal(autogptq.dequantize(tensors, 4, 32, module), ours)


def test_configs_are_what_transformers_and_peft_read(written):
    fmt, out = written
    qc = json.loads((out / "base" / "config.json").read_text())["quantization_config"]
    gptq = transformers.GPTQConfig.from_dict(dict(qc))
    assert (gptq.bits, gptq.group_size, gptq.sym, gptq.desc_act) == (4, 32, False, False)
    assert gptq.format == {"v1": "gptq", "v2": "gptq_v2"}[fmt]
    lc = peft.LoraConfig.from_pretrained(out / "adapter")
    assert lc.use_qalora and lc.qalora_group_size == 32 and lc.r == 8 and lc.lora_alpha == 16
    meta = json.loads((out / "qref_init.json").read_text())
    assert meta["quantization"] == {"layout": "gptq", "bits": 4, "group_size": 32, "checkpoint_format": gptq.format}


def test_the_adapter_has_peft_qalora_shapes_and_trains(written):
    """A (r, in / group_size) Kaiming-uniform as PEFT's fresh nn.Linear, B = 0: the first step moves B."""
    _, out = written
    ad = SafetensorsReader(out / "adapter" / "adapter_model.safetensors")
    for key in ad.keys():
        a = np.asarray(ad.raw(key))
        d_in = 256 if ".down_proj." in key else 128
        if ".lora_A." in key:
            assert a.shape == (8, d_in // 32)
            assert 0 < np.abs(a).max() <= 1 / np.sqrt(d_in // 32)
        else:
            assert a.shape[1] == 8 and not a.any()


def test_a_zero_point_of_0_in_format_v1_names_the_tensor_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    w = SafetensorsWriter(folder / "model.safetensors")
    W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    W[3, :32] = np.abs(W[3, :32]) + 0.1  # one group without a negative weight: its zero point is 0
    w.add("model.layers.0.mlp.up_proj.weight", W)
    w.close()
    out = tmp_path / "out"
    assert run_init(folder, out) == 2
    err = capsys.readouterr().err
    assert "model.layers.0.mlp.up_proj.weight" in err and "--gptq-format v2" in err
    assert not out.exists()
    assert run_init(folder, out, "--gptq-format", "v2") == 0
    base = SafetensorsReader(out / "base" / "model.safetensors")
    tensors = gptq_tensors(base, "model.layers.0.mlp.up_proj")
    assert gptq_pack.from_gptq(tensors, 4, 32, "v2").zeros[3, 0] == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--double-quant"], "do not apply"),
        (["--quant-type", "fp4"], "do not apply"),
        (["--on-bad-tensor", "skip"], "not offered"),
        (["--group-size", "48"], "not a multiple of --group-size 48"),
        (["--group-size", "0"], "--group-size"),
    ],
)
def test_qalora_refuses_what_the_gptq_layout_cannot_hold(model, tmp_path, capsys, extra, message):
    assert run_init(model, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gptqmodel_loads_the_base_and_peft_the_qalora_adapter(model, written):
    """The whole path where GPTQModel (transformers' GPTQ loader) is installed: every loaded layer
    holds qref's codes, zero points and float16 scales (GPTQModel converts v1 to v2 on loading), PEFT
    attaches its QA-LoRA variant with no missing key, and its pooled forward equals qref's reference
    (qref.qalora.pool, pooling "peft") once B is made non-zero."""
    import warnings

    pytest.importorskip("optimum")
    pytest.importorskip("gptqmodel")
    from qref import qalora

    fmt, out = written
    source = SafetensorsReader(model / "model.safetensors")
    base = transformers.AutoModelForCausalLM.from_pretrained(out / "base", device_map="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = peft.PeftModel.from_pretrained(base, out / "adapter")
    assert not [w for w in caught if "missing" in str(w.message).lower()]
    seen = 0
    for name, mod in peft_model.named_modules():
        if not (hasattr(mod, "lora_A") and "default" in mod.lora_A):
            continue
        assert type(mod.lora_variant["default"]).__name__ == "QALoraLinearVariant"
        module = name.removeprefix("base_model.model.")
        W = bf16_bits_to_float32(np.asarray(source.raw(f"{module}.weight")))
        ref = quantize_groupwise(W, 4, 32, "gptq-asym")
        loaded = {k: v.numpy() for k, v in mod.base_layer.state_dict().items()}
        got = gptq_pack.from_gptq(loaded, 4, 32, "v2")  # GPTQModel's internal format
        np.testing.assert_array_equal(got.codes, ref.codes)
        np.testing.assert_array_equal(got.zeros, ref.zeros)
        np.testing.assert_array_equal(got.scales, ref.scales.astype(np.float16).astype(np.float32))
        A = mod.lora_A["default"].weight.detach().double().numpy()
        B = np.random.default_rng(seen).standard_normal((W.shape[0], 8)) * 0.1
        with torch.no_grad():
            mod.lora_B["default"].weight.copy_(torch.from_numpy(B))
            x = torch.randn(3, W.shape[1])
            delta = (mod(x) - mod.base_layer(x)).double().numpy()
        want = qalora.pool(x.double().numpy(), 32, "peft") @ A.T @ B.T * (16 / 8)  # s c pool(x) A^T B^T
        np.testing.assert_allclose(delta, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        seen += 1
    assert seen == 2 * len(LINEARS)
