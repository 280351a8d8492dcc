"""The one launch's stage stamps (asv_bench/fused_times.py) read what the kernels write (FUSED_TIMES in
backends/kernels/): the same words per CTA, a stage name for every stamp index a kernel uses, the
multiprocessor in the last word; and its report of a made-up grid."""

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "backends" / "kernels"
sys.path.insert(0, str(ROOT / "asv_bench"))
import fused_times  # noqa: E402


def kernel_source() -> str:
    return "\n".join(p.read_text() for p in sorted(KERNELS.glob("*.cu*")))


def test_the_script_reads_as_many_words_a_cta_as_the_kernels_write():
    words = re.search(r"#define FUSED_STAMPS (\d+)", kernel_source())
    assert words is not None
    assert fused_times.STAMPS == int(words.group(1))


def test_every_stamp_a_kernel_takes_has_a_stage_and_leaves_the_last_word_free():
    used = {int(k) for k in re.findall(r"fused_stamp(?:_cta)?\((\d+)\)", kernel_source())}
    assert used == set(range(len(fused_times.STAGES)))
    assert len(fused_times.STAGES) < fused_times.STAMPS  # the last word holds the multiprocessor


def test_the_report_names_the_latest_ctas_and_their_multiprocessors(capsys):
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(1, 20_000, size=(6, len(fused_times.STAGES))), axis=1)
    t[:, 0] = 0
    t[2, 1] = 30_000  # CTA 2's loop ends last
    t[4, 6:8] = -1  # CTA 4 left after the barrier
    sm = np.array([5, 5, 7, 9, 9, 7])
    fused_times.report("made up", t, sm)
    out = capsys.readouterr().out
    assert "6 CTAs" in out
    assert "latest loop ends (CTA: us, its multiprocessor): 2: 30.00 sm 7" in out
    assert re.search(r"second level: offset\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\(5 CTAs\)", out)
    assert "multiprocessors: 3" in out and "latest 30.00" in out and "CTAs on one: [2]" in out
    last = max((c for c in range(6) if t[c, 7] >= 0), key=lambda c: t[c, 7])  # CTA 4 stored no codes
    gap = (t[last, 7] - t[last, 6]) / 1e3
    assert (
        f"latest stores (CTA: us, after its offset, its multiprocessor): {last}: {t[last, 7] / 1e3:.2f} +{gap:.2f}"
        in out
    )
    assert not re.search(r"latest stores[^\n]* 4: ", out)
