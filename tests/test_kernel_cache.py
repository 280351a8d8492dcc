"""The compiled kernels kept on disk (backends/kernel_cache.py): a second process's compile is a read, any
change of source, options or compiler compiles again, and a folder that cannot be written costs only the
compile. Runs without a GPU: the compile is a stand-in."""

import pytest

from qref.backends import kernel_cache


class Compiler:
    def __init__(self, out=b"ptx"):
        self.calls, self.out = 0, out

    def __call__(self):
        self.calls += 1
        return self.out


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("QREF_CACHE_DIR", str(tmp_path))
    return tmp_path / "kernels"


def test_second_compile_is_a_read(folder):
    c = Compiler(b"code 1")
    assert kernel_cache.ptx("src", ("-a",), "13.0", c) == b"code 1"
    assert kernel_cache.ptx("src", ("-a",), "13.0", c) == b"code 1"
    assert c.calls == 1
    assert [p.suffix for p in folder.iterdir()] == [".ptx"]  # no temporary file left behind


@pytest.mark.parametrize("change", [("src2", ("-a",), "13.0"), ("src", ("-b",), "13.0"), ("src", ("-a",), "13.1")])
def test_any_change_compiles_again(folder, change):
    c = Compiler()
    kernel_cache.ptx("src", ("-a",), "13.0", c)
    kernel_cache.ptx(*change, c)
    assert c.calls == 2


def test_forget_compiles_again(folder):
    c = Compiler()
    kernel_cache.ptx("src", ("-a",), "13.0", c)
    kernel_cache.forget("src", ("-a",), "13.0")
    kernel_cache.ptx("src", ("-a",), "13.0", c)
    assert c.calls == 2


def test_off_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("QREF_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    c = Compiler()
    kernel_cache.ptx("src", (), "1", c)
    kernel_cache.ptx("src", (), "1", c)
    assert c.calls == 2 and not any(tmp_path.iterdir())


def test_unwritable_folder_as_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QREF_CACHE_DIR", str(blocker))
    c = Compiler(b"y")
    assert kernel_cache.ptx("src", (), "1", c) == b"y"
    assert blocker.read_text() == "not a folder"


def test_knobs_only_the_host_reads_leave_the_source_alone():
    """A knob the kernels do not read (launch choices: the spare, the end signal, who computes the offset,
    programmatic serialization, the sums' pass, the grid) leaves the source, hence the kept module, as it
    is; one they read (QUANT_ITER, DQ2_SHARED) changes it."""
    from qref.backends import cuda_kernels as K

    base = K.source(K.KNOBS)
    for name in ("SPARE_MAX", "END_SIGNAL", "DQ2_OFFSET", "PDL", "SUMS_PASS_MIN", "CTAS_PER_SM"):
        assert K.source({**K.KNOBS, name: K.KNOBS[name] + 3}) == base, name
    for name in ("QUANT_ITER", "DQ2_SHARED"):
        assert K.source({**K.KNOBS, name: K.KNOBS[name] + 3}) != base, name
