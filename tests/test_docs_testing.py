"""The Python examples of docs/testing.md run as written."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.peer
DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_two_worked_examples():
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index):
    for lib in ("torch", "bitsandbytes", "hypothesis"):
        pytest.importorskip(lib)
    exec(compile(BLOCKS[index], f"docs/testing.md example {index + 1}", "exec"), {})
