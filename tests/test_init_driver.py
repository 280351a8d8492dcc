"""The model-wide driver on a generated safetensors checkpoint."""

import io

import numpy as np
import pytest

from qref import get_codebook, unpack_nibbles
from qref.cli import main
from qref.conformance.synthetic import llm_like_weight
from qref.init_driver import initialise_checkpoint

st = pytest.importorskip("safetensors.numpy")


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    st.save_file(
        {
            "layers.0.q_proj.weight": llm_like_weight(64, 128, 1).astype(np.float32),
            "layers.0.mlp.weight": llm_like_weight(96, 64, 2).astype(np.float16),
            "layers.0.norm.weight": np.ones(64, np.float32),
            "embed.ids": np.arange(12, dtype=np.int64).reshape(3, 4),
        },
        str(path),
    )
    return path


@pytest.mark.parametrize("method", ["qlora", "loftq", "lqlora", "quailora"])
def test_driver_writes_adapters_and_codes(checkpoint, tmp_path, method):
    out = tmp_path / "init.safetensors"
    reports = initialise_checkpoint(str(checkpoint), str(out), method, rank=8, num_iter=3, progress=io.StringIO())
    status = {r.name: r.status for r in reports}
    assert status["layers.0.q_proj.weight"] == "initialised" and status["layers.0.mlp.weight"] == "initialised"
    assert status["layers.0.norm.weight"].startswith("skipped: not 2-D")
    assert status["embed.ids"].startswith("skipped: not floating point")
    saved = st.load_file(str(out))
    assert saved["layers.0.q_proj.weight.lora_A"].shape == (8, 128)
    assert saved["layers.0.q_proj.weight.lora_B"].shape == (64, 8)
    # the stored codes and absmax reproduce the Q the errors were computed with
    W = st.load_file(str(checkpoint))["layers.0.q_proj.weight"].astype(np.float64)
    codes = unpack_nibbles(saved["layers.0.q_proj.weight.codes"], W.size)
    Q = get_codebook("nf4").values[codes] * np.repeat(saved["layers.0.q_proj.weight.absmax"], 64)
    A, B = saved["layers.0.q_proj.weight.lora_A"], saved["layers.0.q_proj.weight.lora_B"]
    err = np.linalg.norm(W - Q.reshape(W.shape) - B.astype(np.float64) @ A) / np.linalg.norm(W)
    report = next(r for r in reports if r.name == "layers.0.q_proj.weight")
    assert np.isclose(err, report.error_after, rtol=1e-4)
    if method != "qlora":
        assert report.error_after < report.error_before


def test_cli_init_prints_summary(checkpoint, tmp_path, capsys):
    assert main(["init", str(checkpoint), str(tmp_path / "o.safetensors"), "--method", "loftq", "--rank", "4"]) == 0
    out = capsys.readouterr().out
    assert "layers.0.q_proj.weight" in out and "skipped" in out
