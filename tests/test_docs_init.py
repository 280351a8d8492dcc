"""The Python examples of docs/init.md run as written (in a scratch folder)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.peer
DOC = Path(__file__).resolve().parents[1] / "docs" / "init.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, tmp_path, monkeypatch):
    for lib in ("torch", "transformers", "peft", "bitsandbytes"):
        pytest.importorskip(lib)
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"docs/init.md example {index + 1}", "exec"), {})
