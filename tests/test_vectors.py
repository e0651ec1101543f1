"""Golden vectors (lcm_ref.oracle.vectors, lcm_ref/vectors/*.json)."""

import json
import shutil

import diffusers
import pytest
import torch

from lcm_ref import cli

from lcm_ref.oracle import vectors
from lcm_ref.oracle.vectors.format import hex_short
from lcm_ref.torch_impl import LCMScheduler as TorchLCMScheduler

ALL = vectors.FILES + (vectors.SCHEMA, vectors.OUTPUTS_SCHEMA)


def test_generate_reproduces_committed_files_bit_for_bit(tmp_path):
    """`lcm-ref vectors generate` writes exactly the committed files (and schema), byte for byte."""
    vectors.write(tmp_path)
    for name in ALL:
        assert (tmp_path / name).read_bytes() == (vectors.VECTOR_DIR / name).read_bytes(), name


def test_reference_passes_every_vector():
    """The reference reproduces every case of every file bit for bit (none skipped)."""
    res = vectors.check_vectors()
    total = sum(json.loads((vectors.VECTOR_DIR / n).read_text())["numberOfTests"] for n in vectors.FILES)
    assert res["failures"] == [] and res["checked"] == total and res["skipped"] == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_impl_passes_vectors(dtype):
    """The torch drop-in passes the vectors within the oracle's budget (quirk cases skipped: it refuses them), and
    only those and the strict-profile timesteps cases are skipped."""
    res = vectors.check_vectors(TorchLCMScheduler, dtype=dtype)
    tests = [t for n in vectors.FILES for g in json.loads((vectors.VECTOR_DIR / n).read_text())["testGroups"]
             for t in g["tests"]]
    skip = sum(any(f.startswith("Quirk") for f in t["flags"]) or t.get("profile") == "strict" for t in tests)
    assert res["failures"] == [] and (res["checked"], res["skipped"]) == (len(tests) - skip, skip)


def test_torch_impl_passes_strict_vectors():
    """With profile strict, the torch drop-in raises a ValueError naming the parameter where the vectors say."""
    res = vectors.check_vectors(TorchLCMScheduler, profile="strict")
    assert res["failures"] == []


def test_diffusers_passes_vectors_including_quirks():
    """diffusers itself passes every diffusers-profile vector, quirks included: the quirk cases are its behaviour."""
    res = vectors.check_vectors(diffusers.LCMScheduler, dtype=torch.float32, quirks=True)
    assert res["failures"] == [] and res["skipped"] == sum(
        1 for g in json.loads((vectors.VECTOR_DIR / "timesteps.json").read_text())["testGroups"]
        for t in g["tests"] if t["profile"] == "strict")


def test_vectors_are_small_and_cover_every_flag():
    """The files stay well under 1 MB (budgets included) and every flag in the notes is used by some case or group."""
    size = sum((vectors.VECTOR_DIR / n).stat().st_size for n in ALL)
    assert size < 500_000
    used = set()
    for n in vectors.FILES:
        for g in json.loads((vectors.VECTOR_DIR / n).read_text())["testGroups"]:
            used |= set(g["flags"])
            for t in g["tests"]:
                used |= set(t["flags"])
    assert used == set(vectors.NOTES), set(vectors.NOTES) ^ used


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_hex_floats_round_trip():
    """Every float in the vectors is a float.hex string that parses back to itself (exact round trip; budgets in
    the short form without trailing zero digits)."""
    n = 0
    for name in vectors.FILES:
        for s in _strings(json.loads((vectors.VECTOR_DIR / name).read_text())["testGroups"]):
            if vectors.HEX.match(s):
                n += 1
                v = float.fromhex(s)
                assert s in (v.hex(), hex_short(v)), s
    assert n > 1000


def _copy(tmp_path):
    for name in ALL:
        shutil.copy(vectors.VECTOR_DIR / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("damage, message", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: t.replace('"0x', '"0xzz', 1), "schema violation"),
    (lambda t: t.replace('"numberOfTests": ', '"numberOfTests": 1', 1), "numberOfTests"),
    (lambda t: t.replace('"tcId": 2,', '"tcId": 1,', 1), "duplicate tcId"),
    (lambda t: t.replace('"expected"', '"expectd"', 1), "schema violation"),
])
def test_corrupt_vector_file_is_reported_not_crashed_on(tmp_path, capsys, damage, message):
    """A damaged file raises VectorFileError naming the file and the problem; the CLI prints it and exits 2."""
    d = _copy(tmp_path)
    path = d / "steps.json"
    path.write_text(damage(path.read_text()))
    with pytest.raises(vectors.VectorFileError, match=message) as info:
        vectors.check_vectors(directory=d)
    assert "steps.json" in str(info.value)
    assert cli.main(["vectors", "check", "--dir", str(d)]) == 2
    assert "steps.json" in capsys.readouterr().out


def test_wrong_array_length_is_a_corrupt_file(tmp_path):
    """A value array whose length does not match 'shape' is reported with its tcId and name."""
    d = _copy(tmp_path)
    doc = json.loads((d / "steps.json").read_text())
    doc["testGroups"][0]["tests"][0]["model_output"].pop()
    (d / "steps.json").write_text(json.dumps(doc))
    with pytest.raises(vectors.VectorFileError, match="tcId 1/model_output"):
        vectors.check_vectors(directory=d)


def test_a_one_ulp_change_is_a_failure_not_a_crash(tmp_path, capsys):
    """A valid file whose expected value moved by 1 ulp fails the reference check (bit for bit), exit 1."""
    d = _copy(tmp_path)
    doc = json.loads((d / "steps.json").read_text())
    t = doc["testGroups"][0]["tests"][0]
    v = float.fromhex(t["expected"]["denoised"][0])
    t["expected"]["denoised"][0] = __import__("math").nextafter(v, 2 * v + 1).hex()
    (d / "steps.json").write_text(json.dumps(doc))
    res = vectors.check_vectors(directory=d)
    assert len(res["failures"]) == 1 and "tcId 1" in res["failures"][0]
    assert cli.main(["vectors", "check", "--dir", str(d)]) == 1
    assert "FAIL steps.json tcId 1" in capsys.readouterr().out


def test_generate_writes_into_the_current_directory_by_default(tmp_path, monkeypatch, capsys):
    """`lcm-ref vectors generate` without --out writes ./lcm_vectors/, never into the installed package."""
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in vectors.VECTOR_DIR.iterdir()}
    assert cli.main(["vectors", "generate"]) == 0
    for name in ALL:
        assert (tmp_path / "lcm_vectors" / name).read_bytes() == (vectors.VECTOR_DIR / name).read_bytes(), name
    assert {p: p.stat().st_mtime_ns for p in vectors.VECTOR_DIR.iterdir()} == before


def test_each_header_is_self_contained():
    """Each file's header says what the file holds and cites the format's section; its notes explain exactly the
    flags the file uses."""
    for name in vectors.FILES:
        doc = json.loads((vectors.VECTOR_DIR / name).read_text())
        text = " ".join(doc["header"])
        assert "docs/design.md §10" in text and "float.hex" in text
        assert doc["testGroups"][0]["type"] in text
        used = {f for g in doc["testGroups"] for f in g["flags"]}
        used |= {f for g in doc["testGroups"] for t in g["tests"] for f in t["flags"]}
        assert set(doc["notes"]) == used, name
