"""`qref vectors check DIR --backend NAME[:DEVICE]`: replay exported vectors through a backend.

Valid cases: the backend's outputs must equal the expected arrays bit for bit (compared flat, so a
backend may shape them its own way); dequantization is run on the *expected* quantized state, so
each direction is checked on its own. Invalid cases: the backend must raise ValueError or TypeError.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qref.backend import FourBit
from qref.dtypes import format_of
from qref.registry import get_backend

from . import vectors_groupwise as vg
from .report import as_bits
from .vectors import decode, decode_input


def _same(got, want) -> bool:
    a, b = as_bits(got), as_bits(want)
    return a.shape == b.shape and bool(np.all(a == b))


def _fourbit(be, g, x, exp):
    bs, qt, dq = g["blocksize"], g["quantType"], g["doubleQuant"]
    q = be.quantize_4bit(be.from_numpy(x), bs, qt, double_quant=dq)
    got = {"packed": be.to_numpy(q.packed)}
    if not exp:  # an invalid case: quantizing must already have refused
        return got
    if dq:
        got |= {
            "qabsmax": be.to_numpy(q.qabsmax),
            "absmax2": be.to_numpy(q.absmax2),
            "offset": np.asarray([q.offset], np.float32),
        }
        state = FourBit(
            be.from_numpy(decode(exp["packed"])),
            None,
            be.from_numpy(decode(exp["qabsmax"])),
            be.from_numpy(decode(exp["absmax2"])),
            np.float32(decode(exp["offset"])[0]),
        )
    else:
        got["absmax"] = be.to_numpy(q.absmax)
        state = FourBit(be.from_numpy(decode(exp["packed"])), be.from_numpy(decode(exp["absmax"])))
    if "dequantized" in exp:
        got["dequantized"] = be.to_numpy(be.dequantize_4bit(state, np.shape(x), bs, qt, out_dtype=format_of(x)))
    return got


def _blockwise(be, g, x, exp):
    codes, absmax = be.quantize_blockwise(be.from_numpy(x), g["codebook"], g["blocksize"])
    if not exp:
        return {}
    deq = be.dequantize_blockwise(
        be.from_numpy(decode(exp["codes"])), be.from_numpy(decode(exp["absmax"])), g["codebook"], g["blocksize"]
    )
    return {"codes": be.to_numpy(codes), "absmax": be.to_numpy(absmax), "dequantized": be.to_numpy(deq)}


def _groupwise(be, g, W, exp):
    codes, scales, zeros = be.quantize_groupwise(be.from_numpy(W), g["bits"], g["groupSize"], g["profile"])
    if not exp:
        return {}
    deq = be.dequantize_groupwise(
        *(be.from_numpy(decode(exp[k])) for k in ("codes", "scales", "zeros")), g["groupSize"], g["profile"]
    )
    return {
        "codes": be.to_numpy(codes),
        "scales": be.to_numpy(scales),
        "zeros": be.to_numpy(zeros),
        "dequantized": be.to_numpy(deq),
    }


RUNNERS = {
    "Quantize4bitTest": _fourbit,
    "BlockwiseTest": _blockwise,
    "GroupwiseTest": _groupwise,
    "GptqPackTest": vg.run_gptq,
    "CompressedTensorsTest": vg.run_compressed_tensors,
    "QaloraForwardTest": vg.run_qalora,
}


#: outputs every valid case must list (an emptied or partial `expected` fails, it does not pass)
def required(g: dict) -> set[str]:
    if g["type"] == "Quantize4bitTest":
        return {"packed", "qabsmax", "absmax2", "offset"} if g["doubleQuant"] else {"packed", "absmax"}
    if g["type"] == "BlockwiseTest":
        return {"codes", "absmax", "dequantized"}
    if g["type"] in vg.REQUIRED:
        return vg.REQUIRED[g["type"]]
    return {"codes", "scales", "zeros", "dequantized"}


OPTIONAL = {"dequantized"} | vg.OPTIONAL
MAX_FILE_BYTES = 256 * 2**20


def load(path) -> dict:
    """A vector file, refused with the reason when it is too large, too deep or not JSON."""
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{Path(path).name}: {size} bytes, more than the {MAX_FILE_BYTES} a vector file may hold")
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError as e:
        raise ValueError(f"{Path(path).name}: nested too deeply to be a vector file") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{Path(path).name}: not a JSON vector file ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("testGroups"), list):
        raise ValueError(f"{Path(path).name}: no testGroups list")
    return doc


def check_file(path, backend) -> tuple[int, list[str]]:
    """(tests run, failure lines) for one vector file; every malformed test fails with its tcId."""
    doc = load(path)
    failures, n = [], 0
    for gi, g in enumerate(doc["testGroups"]):
        if not isinstance(g, dict) or g.get("type") not in RUNNERS or not isinstance(g.get("tests"), list):
            failures.append(
                f"{Path(path).name} group {gi}: malformed (type {g.get('type') if isinstance(g, dict) else g!r})"
            )
            continue
        for t in g["tests"]:
            n += 1
            failures += _check_test(path, backend, g, t)
    return n, failures


def _check_test(path, backend, g, t) -> list[str]:
    run = RUNNERS[g["type"]]
    tc = t.get("tcId", "?") if isinstance(t, dict) else "?"
    label = f"{Path(path).name} tcId {tc}"
    try:
        label += f" ({t['comment']}; {', '.join(t['flags'])})"
        x = decode_input(t["input"])
        result = t["result"]
        if result not in ("valid", "invalid"):
            return [f"{label}: result {result!r} is neither valid nor invalid"]
        expected = t.get("expected", {}) if result == "valid" else {}
        if result == "valid":
            missing = required(g) - set(expected)
            unknown = set(expected) - required(g) - OPTIONAL
            if missing or unknown:
                return [f"{label}: malformed expected (missing {sorted(missing)}, unknown {sorted(unknown)})"]
            want = {k: decode(v) for k, v in expected.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return [f"{label}: malformed vector ({type(e).__name__}: {e})"]
    if result == "invalid":
        try:
            run(backend, g, x, {})
        except (ValueError, TypeError):
            return []
        except Exception as exc:  # noqa: BLE001
            return [f"{label}: refused with {type(exc).__name__} instead of ValueError/TypeError"]
        return [f"{label}: accepted an input it must refuse"]
    try:
        got = run(backend, g, x, expected)
    except Exception as exc:  # noqa: BLE001 - any crash is a failed vector, reported with its id
        return [f"{label}: raised {type(exc).__name__}: {exc}"]
    bad = [k for k, w in want.items() if k not in got or not _same(got[k], w)]
    return [f"{label}: differs in {', '.join(bad)}"] if bad else []


def check(directory, backend_name: str = "numpy", out=print) -> int:
    """Replay every *_v1.json in `directory` through the backend; 0 when all pass, else 1."""

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"DIR {directory}: no such folder")
    files = sorted(p for p in Path(directory).glob("*_v*.json") if not p.name.endswith(".schema.json"))
    if not files:
        raise ValueError(f"DIR {directory}: no vector files (*_v*.json)")
    backend = get_backend(backend_name)
    total, failed = 0, []
    for path in files:
        n, failures = check_file(path, backend)
        total += n
        failed += failures
        out(f"{path.name}: {n - len(failures)} of {n} pass")
    for line in failed[:50]:
        out("FAIL " + line)
    out(f"{backend!r}: {total - len(failed)} of {total} vectors pass")
    return int(bool(failed))
