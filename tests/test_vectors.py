"""Golden vectors: export is deterministic, loads with the standard library's json alone, matches the
schema's layout, passes on the reference and on the PyTorch-CPU backend, and a corrupted vector fails."""

import json
import subprocess
import sys

import pytest

from qref.conformance import vectors, vectors_check


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("vectors")
    vectors.export(d)
    return d


def test_export_twice_gives_identical_files(exported, tmp_path):
    vectors.export(tmp_path)
    names = sorted(p.name for p in exported.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir()) and len(names) == 7
    for name in names:
        assert (exported / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_files_load_with_stdlib_json_and_follow_the_schema(exported):
    """A consumer's view: plain `json`, the schema's required keys, hex that decodes to the stated size."""
    code = (
        "import json, sys, pathlib\n"
        "d = pathlib.Path(sys.argv[1]); schema = json.loads((d / 'qref_vectors_v1.schema.json').read_text())\n"
        "sizes = {'float32': 4, 'float16': 2, 'bfloat16': 2, 'float64': 8, 'uint8': 1, 'int8': 1, 'int32': 4, 'int64': 8}\n"  # noqa: E501
        "n = 0\n"
        "for f in sorted(d.glob('*_v1.json')):\n"
        "    doc = json.loads(f.read_text())\n"
        "    assert set(schema['required']) <= set(doc), f\n"
        "    for g in doc['testGroups']:\n"
        "        for t in g['tests']:\n"
        "            n += 1\n"
        "            assert set(schema['$defs']['test']['required']) <= set(t)\n"
        "            inputs = [t['input']] if 'hex' in t['input'] else list(t['input'].values())\n"
        "            arrays = inputs + list(t.get('expected', {}).values())\n"
        "            for a in arrays:\n"
        "                count = 1\n"
        "                for s in a['shape']: count *= s\n"
        "                assert len(bytes.fromhex(a['hex'])) == count * sizes[a['dtype']]\n"
        "print(n)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code, str(exported)], capture_output=True, text=True, check=True)
    total = sum(json.loads(p.read_text())["numberOfTests"] for p in exported.glob("*_v1.json"))
    assert int(out.stdout) == total > 300


def test_ids_flags_and_notes(exported):
    for path in exported.glob("*_v1.json"):
        doc = json.loads(path.read_text())
        ids = [t["tcId"] for g in doc["testGroups"] for t in g["tests"]]
        assert ids == list(range(1, len(ids) + 1))
        flags = {f for g in doc["testGroups"] for t in g["tests"] for f in t["flags"]}
        assert flags == set(doc["notes"]) and flags <= set(vectors.FLAGS)
    fourbit = json.loads((exported / "quantize_4bit_v1.json").read_text())
    used = {f for g in fourbit["testGroups"] for t in g["tests"] for f in t["flags"]}
    assert {"Midpoint", "ZeroBlock", "TailBlock", "OddLength", "Subnormal", "NonFinite", "DoubleQuant"} <= used


@pytest.mark.parametrize("backend", ["numpy", "torch:cpu"])
def test_every_vector_passes(exported, backend):
    if backend.startswith("torch"):
        pytest.importorskip("torch")
    lines = []
    assert vectors_check.check(exported, backend, out=lines.append) == 0, lines[-5:]
    assert lines[-1].endswith("vectors pass") and " 0 of " not in lines[-1]


@pytest.mark.parametrize("target", ["packed", "dequantized", "absmax", "result"])
def test_a_corrupted_vector_fails(exported, tmp_path, target):
    doc = json.loads((exported / "quantize_4bit_v1.json").read_text())
    test = doc["testGroups"][0]["tests"][0]
    if target == "result":
        test = doc["testGroups"][0]["tests"][-1]  # the NaN case: claim it is valid with some expected output
        test["result"], test["expected"] = "valid", {"packed": {"dtype": "uint8", "shape": [1], "hex": "00"}}
    else:
        h = test["expected"][target]["hex"]
        test["expected"][target]["hex"] = ("0" if h[0] != "0" else "1") + h[1:]
    (tmp_path / "quantize_4bit_v1.json").write_text(json.dumps(doc))
    n, failures = vectors_check.check_file(tmp_path / "quantize_4bit_v1.json", NUMPY)
    assert len(failures) == 1 and "tcId" in failures[0], failures


NUMPY = vectors_check.get_backend("numpy")


@pytest.mark.parametrize(
    "name, key",
    [
        ("gptq_pack", "qweight"),
        ("gptq_pack", "qzeros"),
        ("compressed_tensors_pack", "weight_packed"),
        ("qalora_forward", "y"),
    ],
)
def test_a_corrupted_storage_or_forward_vector_fails(exported, tmp_path, name, key):
    """One flipped byte in a GPTQ or compressed-tensors tensor, or an expected y moved past its bound."""
    doc = json.loads((exported / f"{name}_v1.json").read_text())
    test = next(t for g in doc["testGroups"] for t in g["tests"] if t["result"] == "valid")
    if key == "y":
        y, bound = vectors.decode(test["expected"]["y"]), vectors.decode(test["expected"]["bound"])
        test["expected"]["y"] = vectors.encode(y + 2 * bound)
    else:
        h = test["expected"][key]["hex"]
        test["expected"][key]["hex"] = ("0" if h[0] != "0" else "1") + h[1:]
    (tmp_path / f"{name}_v1.json").write_text(json.dumps(doc))
    n, failures = vectors_check.check_file(tmp_path / f"{name}_v1.json", NUMPY)
    assert n > 10 and len(failures) == 1 and key in failures[0], failures


def test_storage_vectors_cover_v1_refusals_and_both_symmetries(exported):
    gptq = json.loads((exported / "gptq_pack_v1.json").read_text())
    assert {g["format"] for g in gptq["testGroups"]} == {"v1", "v2"}
    refused = [t for g in gptq["testGroups"] if g["format"] == "v1" for t in g["tests"] if t["result"] == "invalid"]
    assert refused and all("ZeroPointZeroV1" in t["flags"] for t in refused)
    ct = json.loads((exported / "compressed_tensors_pack_v1.json").read_text())
    asym = [t for g in ct["testGroups"] if not g["symmetric"] for t in g["tests"]]
    assert asym and all("weight_zero_point" in t["expected"] for t in asym)
    fwd = json.loads((exported / "qalora_forward_v1.json").read_text())
    assert {g["pooling"] for g in fwd["testGroups"]} == {"peft", "average", "sum"}


def _damage(test, how):
    if how == "emptied expected":
        test["expected"] = {}
    elif how == "missing key":
        test["expected"].pop("absmax", None) or test["expected"].pop("qabsmax")
    elif how == "unknown output":
        test["expected"]["extra"] = test["expected"]["packed"]
    elif how == "object dtype":
        test["expected"]["packed"]["dtype"] = "object"
    elif how == "shape does not fit":
        test["expected"]["packed"]["shape"] = [10**6]
    elif how == "no input":
        del test["input"]
    elif how == "bad result":
        test["result"] = "maybe"
    elif how == "hex not hex":
        test["expected"]["packed"]["hex"] = "zz"


DAMAGE = [
    "emptied expected",
    "missing key",
    "unknown output",
    "object dtype",
    "shape does not fit",
    "no input",
    "bad result",
    "hex not hex",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_malformed_vector_fails_with_its_id_and_the_rest_still_run(exported, tmp_path, how):
    doc = json.loads((exported / "quantize_4bit_v1.json").read_text())
    test = doc["testGroups"][0]["tests"][0]
    _damage(test, how)
    (tmp_path / "quantize_4bit_v1.json").write_text(json.dumps(doc))
    n, failures = vectors_check.check_file(tmp_path / "quantize_4bit_v1.json", NUMPY)
    assert len(failures) == 1 and f"tcId {test.get('tcId')}" in failures[0], failures
    assert n == sum(len(g["tests"]) for g in doc["testGroups"])


def test_deep_or_non_json_files_are_refused_with_a_reason(tmp_path, capsys):
    from qref.cli import main

    (tmp_path / "deep_v1.json").write_text("[" * 100000 + "]" * 100000)
    assert main(["vectors", "check", str(tmp_path)]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    (tmp_path / "deep_v1.json").write_text("not json")
    assert main(["vectors", "check", str(tmp_path)]) == 2
    assert "not a JSON vector file" in capsys.readouterr().err
