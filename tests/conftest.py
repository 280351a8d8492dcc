"""Shared setup of qref's own tests (this folder only; not installed): hypothesis profiles and the
peer-library skip fixtures.

HYPOTHESIS_PROFILE=ci (default: 40 derandomized examples, no database) or dev (thorough). The
conformance suite (qref.conformance) carries its own settings, chosen by --qref-profile.
"""

import os

import pytest
from hypothesis import settings

from qref.conformance.hsettings import PROFILES

for _name, _settings in PROFILES.items():
    settings.register_profile(f"qref-{_name}", _settings)
settings.load_profile(f"qref-{os.environ.get('HYPOTHESIS_PROFILE', 'ci')}")


def peer_or_skip(name: str):
    """The adapter module conformance.peers.<name>, or a skip naming why the library is unavailable."""
    import importlib

    peer = importlib.import_module(f"qref.conformance.peers.{name}")
    ok, info = peer.available()
    if not ok:
        pytest.skip(info)
    return peer


@pytest.fixture(scope="session")
def bnb():
    return peer_or_skip("bitsandbytes")


@pytest.fixture(scope="session")
def ag():
    return peer_or_skip("autogptq")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """qref's wheel, built from this checkout (no dependencies, no build isolation), as a ZipFile."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parents[1]
    src = out / "src"  # a copy without build/ leftovers, which setuptools would pack
    skip = (
        ".git",
        ".venv",
        "build",
        "*.egg-info",
        "__pycache__",
        ".hypothesis",
        ".asv",
        ".whl",
        ".gpusite",
        "docs",
        "asv_bench",
    )
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(*skip))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    return zipfile.ZipFile(next(out.glob("qref-*.whl")))


@pytest.fixture(scope="session")
def small_llama():
    """save(folder, dtype, shard=None): a 2-layer Llama (hidden 128) from a config, random weights
    (seed 0), saved by transformers itself; skipped without torch and transformers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    def save(folder, dtype, shard=None):
        cfg = transformers.LlamaConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=300,
        )
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg).to(dtype)
        model.save_pretrained(folder, max_shard_size=shard) if shard else model.save_pretrained(folder)
        return folder

    return save
