"""The suite's derandomized examples do not depend on which modules hypothesis counts as local (a source
checkout or an installed wheel, or a user's own modules in memory): conformance.hsettings.layout_independent."""

import importlib
import sys

from hypothesis import given

from qref.conformance import hsettings
from qref.conformance import strategies as qs

# A module of the kind hypothesis mines for constants: loaded from a local path, full of literals.
FAKE_LOCAL_MODULE = "VALUES = [" + ", ".join(f"{1.0 + k / 7:.17g}" for k in range(300)) + "]\n"
FAKE_LOCAL_MODULE += "SIZES = [" + ", ".join(str(37 * k + 11) for k in range(300)) + "]\n"


def _drawn(guarded: bool) -> list[bytes]:
    seen: list[bytes] = []

    @hsettings.PROFILES["ci"]
    @given(qs.hard_inputs("nf4", 64))
    def record(x):
        seen.append(getattr(x, "bits", x).tobytes())

    if guarded:
        with hsettings.layout_independent():
            record()
    else:
        record()
    return seen


def test_examples_do_not_depend_on_the_local_constant_pool(tmp_path, monkeypatch):
    before_guarded, before_plain = _drawn(True), _drawn(False)
    (tmp_path / "qref_layout_probe_constants.py").write_text(FAKE_LOCAL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("qref_layout_probe_constants")
    try:
        after_guarded, after_plain = _drawn(True), _drawn(False)
    finally:
        sys.modules.pop("qref_layout_probe_constants", None)
    # The probe does change what unguarded hypothesis draws, so the comparison below can fail ...
    assert before_plain != after_plain, "the probe module did not reach hypothesis' local constants"
    # ... and the suite's guard makes the draws independent of it.
    assert before_guarded == after_guarded
