"""Golden vectors for ports in other languages: the budgets' rule against the oracle's, the float32 traps,
`lcm-ref vectors judge`, the C++ worked example (lcm_ref/oracle/vectors/cpp/) and `vectors check --impl` from the
current directory."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import pytest

from lcm_ref import cli
from lcm_ref import reference as ref
from lcm_ref.oracle import vectors
from lcm_ref.oracle.budget import betas_bound, forward_bound, step_bound
from lcm_ref.oracle.compare import compare_values
from lcm_ref.oracle.vectors import catalogue as cat
from lcm_ref.oracle.vectors import traps
from lcm_ref.oracle.vectors.format import STEP_TIERS, decode_config, from_hex_array, passes

CPP = Path(vectors.__file__).with_name("cpp")
_NP = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


def _doc(name):
    return json.loads((vectors.VECTOR_DIR / name).read_text())


def _cases(name):
    return [(g, t) for g in _doc(name)["testGroups"] for t in g["tests"]]


# ---------------------------------------------------------------------------------------------------------------
# The budgets
# ---------------------------------------------------------------------------------------------------------------

def _uneven(want, bound, dtype):
    """Per element: do the ends want ± bound lie where D's spacing differs (a binade boundary between them)?"""
    npd = _NP[dtype]
    hi, lo = np.abs((want + bound).astype(npd)), np.abs((want - bound).astype(npd))
    return np.spacing(hi) != np.spacing(lo)


def _agreement(want, terms, bound, budget, dtype):
    """(values the oracle accepts that the file rule rejects, the reverse, elements where the reverse happens) over
    the 7 D values around each end want ± bound."""
    npd = _NP[dtype]
    missed, extra, extra_at = 0, 0, set()
    for side in (+1, -1):
        c = (want + side * bound).astype(npd)
        for _ in range(3):
            c = np.nextafter(c, npd(-side * np.inf))
        for _ in range(7):
            g = c.astype(np.float64)
            oracle = ~compare_values(g, want, terms, bound, dtype).bad
            file_rule = passes(g, want, budget)
            missed += int((oracle & ~file_rule).sum())
            extra += int((file_rule & ~oracle).sum())
            extra_at |= set(np.nonzero(file_rule & ~oracle)[0].tolist())
            c = np.nextafter(c, npd(side * np.inf))
    return missed, extra, extra_at


def test_step_and_forward_budgets_give_the_oracles_verdict():
    """Protects 'the files alone say pass or fail': for every step and forward output and every tier, the file rule
    |got − want| ≤ budget accepts every D value compare_values accepts around both ends of the budget, and no other
    one, except where the two ends lie in binades of different spacing (budgets.py: then one more D value next to
    the narrow end); that happens for fewer than 2 % of the elements (32 of 2,624 when written)."""
    checked = uneven = 0
    for g, t in _cases("steps.json"):
        cfg, shape = decode_config(g["config"]), tuple(g["shape"])
        x, m = from_hex_array(t["sample"], shape), from_hex_array(t["model_output"], shape)
        z = None if t["noise"] is None else from_hex_array(t["noise"], shape)
        for tier, (dtype, tables) in STEP_TIERS.items():
            bounds = step_bound(cfg, m, t["timestep"], x, z, schedule=g["schedule"], step_index=t["step_index"],
                                num_inference_steps=g["num_inference_steps"], dtype=dtype, tables=tables)
            for k, bound in zip(("denoised", "prev_sample"), bounds):
                want = from_hex_array(t["expected"][k])
                budget = from_hex_array(t["budget"][tier][k])
                missed, extra, at = _agreement(want, from_hex_array(t["expected"]["terms_" + k]), bound.ravel(),
                                               budget, dtype)
                assert missed == 0, (t["tcId"], tier, k)
                odd = _uneven(want, bound.ravel(), dtype)
                assert all(odd[j] for j in at), (t["tcId"], tier, k)
                checked, uneven = checked + want.size, uneven + len(at)
    for g, t in _cases("forward.json"):
        cfg, shape = decode_config(g["config"]), tuple(g["shape"])
        ins = {k: from_hex_array(v, shape) for k, v in t["inputs"].items()}
        a, b = (ins["original_samples"], ins["noise"]) if t["function"] == "add_noise" else (ins["noise"], ins["sample"])
        for tier, (dtype, tables) in STEP_TIERS.items():
            terms, bound = forward_bound(cfg, a, b, t["timesteps"], dtype=dtype, tables=tables)
            want = from_hex_array(t["expected"])
            missed, extra, at = _agreement(want, terms.ravel(), bound.ravel(), from_hex_array(t["budget"][tier]), dtype)
            odd = _uneven(want, bound.ravel(), dtype)
            assert missed == 0 and all(odd[j] for j in at), (t["tcId"], tier)
            checked, uneven = checked + want.size, uneven + len(at)
    assert checked > 2000 and uneven < 0.02 * checked, (checked, uneven)


def test_no_case_is_vacuous():
    """Protects 'no vacuous case': every step input is finite, and every float budget of the float64, float32 and
    float32_tables64 tiers and of tables.json is finite (an infinite one would admit anything)."""
    for g, t in _cases("steps.json"):
        for k in ("sample", "model_output") + (("noise",) if t["noise"] else ()):
            assert np.isfinite(from_hex_array(t[k])).all(), (t["tcId"], k)
        for tier in ("float64", "float32", "float32_tables64"):
            for k in ("denoised", "prev_sample"):
                assert np.isfinite(from_hex_array(t["budget"][tier][k])).all(), (t["tcId"], tier, k)
    for g, t in _cases("tables.json"):
        for tier in ("float32", "float64"):
            assert all(np.isfinite(float.fromhex(v)) for v in t["budget"][tier].values()), t["tcId"]


def test_diffusers_float32_betas_within_the_beta_budget():
    """Protects the new β bound (budget.betas_bound), zero-SNR β included: diffusers' float32 β table lies within
    it at every t of every table config."""
    for cfg in cat.TABLE_CONFIGS:
        got = diffusers.LCMScheduler(**cfg.to_dict()).betas.double().numpy()
        want = np.asarray(ref.betas(cfg))
        assert (np.abs(got - want) <= betas_bound(cfg)).all(), cfg


# ---------------------------------------------------------------------------------------------------------------
# The float32 traps
# ---------------------------------------------------------------------------------------------------------------

def test_grid_trap_cases_are_the_sweeps_representatives():
    """Protects 'cases chosen by a sweep': the float32 selection model reproduces the measured facts (25,657 of
    500,500 pairs differ; none at orig 4, 8, 10, 20, 25, 40, 50, 100; at orig 30 exactly n = 22 and 26), and the
    catalogue's grid traps are the smallest pair of each of the sweep's six classes plus those named cases."""
    sweep = traps.grid_sweep(1000)
    assert len(sweep) == 25_657
    assert not {r[0] for r in sweep} & {4, 8, 10, 20, 25, 40, 50, 100}
    assert sorted(r[1] for r in sweep if r[0] == 30) == [22, 26]
    reps = {(L, n) for L, n, _ in traps.grid_representatives(sweep)}
    assert len(reps) == len(traps.grid_classes(sweep)) == 6
    assert reps <= {(o, n) for o, n, _ in cat.GRID_TRAPS}
    assert {(1000, 106), (1000, 38), (30, 26)} <= {(o, n) for o, n, _ in cat.GRID_TRAPS}


def test_grid_model_matches_numpy_linspace_on_the_differing_pairs():
    """Protects the sweep's float64 side: floor(i·fl64(L/n)) is NumPy's floor(linspace(0, L, n, endpoint=False))."""
    for L, n, *_ in traps.grid_sweep(80):
        i = np.arange(n)
        assert np.array_equal(np.floor(i * (L / n)).astype(np.int64), traps.grid_float64(L, n))


def test_float32_arithmetic_fails_the_trap_cases_and_float64_passes():
    """Protects 'OpenVINO-style float32 grid and strength arithmetic fails in the vectors': for every Float32Grid
    case the float32 selection gives other timesteps than expected and the float64 one the expected; for every
    Float32Strength case the float32 product gives another grid length."""
    grid = strength = 0
    for g, t in _cases("timesteps.json"):
        cfg = decode_config(g["config"])
        req = t["request"]
        orig = req["original_inference_steps"] or cfg.original_inference_steps
        k = cfg.num_train_timesteps // orig
        if "Float32Grid" in t["flags"]:
            n, want = req["num_inference_steps"], t["expected"]["timesteps"]
            pick = lambda idx: [int((orig - i) * k - 1) for i in idx]  # noqa: E731
            assert pick(traps.grid_float64(orig, n)) == want and pick(traps.grid_float32(orig, n)) != want
            grid += 1
        if "Float32Strength" in t["flags"]:
            s = float.fromhex(req["strength"])
            assert traps.strength_float32(orig, s) != int(orig * s)
            strength += 1
    assert grid == 10 and strength == 4


# ---------------------------------------------------------------------------------------------------------------
# lcm-ref vectors judge
# ---------------------------------------------------------------------------------------------------------------

def _perfect(tier="float32"):
    """The outputs of a port that got every expected value (what the judge must pass)."""
    res = {}
    for name in vectors.FILES:
        r = res.setdefault(name, {})
        for g, t in _cases(name):
            key = str(t["tcId"])
            if g["type"] == "TimestepsTest":
                if t["profile"] == "diffusers":
                    r[key] = ({"timesteps": t["expected"]["timesteps"]} if t["result"] == "valid" else
                              {"error": {"category": t["error"]["category"]}})
            elif g["type"] == "TablesTest":
                r[key] = dict(t["expected"], final_alpha_cumprod=g["final_alpha_cumprod"])
            elif g["type"] == "StepTest":
                r[key] = {k: t["expected"][k] for k in ("denoised", "prev_sample")}
            else:
                r[key] = {"output": t["expected"]}
    return {"outputs": "lcm_ref vector outputs", "formatVersion": 1, "implementation": "test", "tier": tier,
            "results": res}


def _judge(tmp_path, doc, capsys):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(doc))
    rc = cli.main(["vectors", "judge", str(path)])
    return rc, capsys.readouterr().out


def test_judge_passes_the_expected_values(tmp_path, capsys):
    """Protects the judge against false alarms: the expected values themselves pass in every tier, exit 0."""
    for tier in STEP_TIERS:
        rc, out = _judge(tmp_path, _perfect(tier), capsys)
        assert rc == 0 and out.strip().endswith("6 of the other profile not run") and "PASS" in out, out


def test_judge_fails_a_value_just_outside_its_budget(tmp_path, capsys):
    """Protects the float rule: want + 2·budget fails (exit 1) in its case and its concern, want + budget passes."""
    doc = _perfect("float32")
    g, t = _cases("steps.json")[0]
    want, bud = float.fromhex(t["expected"]["denoised"][0]), float.fromhex(t["budget"]["float32"]["denoised"][0])
    doc["results"]["steps.json"]["1"]["denoised"][0] = (want + bud).hex()
    assert _judge(tmp_path, doc, capsys)[0] == 0
    doc["results"]["steps.json"]["1"]["denoised"][0] = want + 2 * bud          # a JSON number is fine too
    rc, out = _judge(tmp_path, doc, capsys)
    assert rc == 1 and "fail         steps.json tcId 1: denoised[0]" in out
    assert any(line.split()[:2] == ["denoised", "fail"] for line in out.splitlines()), out


@pytest.mark.parametrize("got", ["nan", "inf", "-inf"])
def test_judge_fails_a_non_finite_value_against_a_finite_want(tmp_path, capsys, got):
    """Protects the non-finite rule: NaN or an infinity where a finite value is due fails."""
    doc = _perfect()
    doc["results"]["forward.json"]["1"]["output"][0] = got
    rc, out = _judge(tmp_path, doc, capsys)
    assert rc == 1 and "forward.json tcId 1" in out


def test_judge_errors_by_category(tmp_path, capsys):
    """Protects errors: timesteps where an error is due fail, a wrong category fails, an error where timesteps are
    due fails."""
    doc = _perfect()
    (err_id, err_case), (ok_id, ok_case) = [
        next((str(t["tcId"]), t) for _, t in _cases("timesteps.json") if t["result"] == r and
             "QuirkError" not in t["flags"] and t["profile"] == "diffusers") for r in ("error", "valid")]
    for results in ({err_id: {"timesteps": [999]}}, {err_id: {"error": {"category": "internal"}}},
                    {ok_id: {"error": {"category": "invalid_argument", "message": "no"}}}):
        d = copy.deepcopy(doc)
        d["results"]["timesteps.json"].update(results)
        rc, out = _judge(tmp_path, d, capsys)
        assert rc == 1 and f"timesteps.json tcId {next(iter(results))}" in out, out


def test_judge_names_unsupported_cases_and_never_passes_an_unjudged_concern(tmp_path, capsys):
    """Protects 'unsupported cases named, not counted as pass': a case the port declares unsupported is listed
    with its reason and makes its concerns 'unsupported' (exit 0, the rest passing); when every case of a concern is
    unsupported or missing the concern is inconclusive and the run INCOMPLETE (exit 3)."""
    doc = _perfect()
    doc["results"]["forward.json"]["1"] = {"unsupported": "no add_noise in this port"}
    rc, out = _judge(tmp_path, doc, capsys)
    assert rc == 0 and "unsupported  forward.json tcId 1: no add_noise in this port" in out
    assert any(line.split()[:2] == ["add_noise", "unsupported"] for line in out.splitlines()), out
    for _, t in _cases("forward.json"):
        if t["function"] == "add_noise":
            doc["results"]["forward.json"].pop(str(t["tcId"]), None)
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(doc))
    rc = cli.main(["vectors", "judge", str(path), "--json", str(tmp_path / "verdicts.json")])
    out = capsys.readouterr().out
    assert rc == 3 and "INCOMPLETE" in out
    assert any(line.split()[:2] == ["add_noise", "inconclusive"] for line in out.splitlines()), out
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert verdicts["exit_code"] == 3 and verdicts["concerns"]["add_noise"]["verdict"] == "inconclusive"


@pytest.mark.parametrize("damage", [
    lambda d: d.update(tier="float8"),
    lambda d: d["results"]["steps.json"].update({"9999": {"prev_sample": []}}),
    lambda d: d["results"]["steps.json"].update({"1": {"denoised": ["0x1p0"]}}),
    lambda d: d.pop("implementation"),
])
def test_judge_malformed_outputs_is_a_usage_error(tmp_path, capsys, damage):
    """Protects exit 2: a schema violation or a tcId that is no case is a usage error, named, not a verdict."""
    doc = _perfect()
    damage(doc)
    rc, out = _judge(tmp_path, doc, capsys)
    assert rc == 2 and "outputs" in out


# ---------------------------------------------------------------------------------------------------------------
# The C++ worked example
# ---------------------------------------------------------------------------------------------------------------

MUTANTS = {"GRID_F32": "Float32Grid", "STRENGTH_F32": "Float32Strength", "APPEND": "TwoCalls"}


@pytest.fixture(scope="module")
def cpp_builds(tmp_path_factory):
    """The checker compiled with the correct scheduler and with each mutant (skipped without g++)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    out = tmp_path_factory.mktemp("cpp")
    builds = {}
    for name in ("good", *MUTANTS):
        exe = out / f"check_{name}"
        flags = [] if name == "good" else [f"-DLCM_MUTANT_{name}"]
        subprocess.run([gxx, "-std=c++17", "-O0", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(exe),
                        str(CPP / "check_vectors.cpp")], check=True)
        builds[name] = exe
    return builds


def _run_cpp(exe, tmp_path):
    outputs = tmp_path / f"{exe.name}.json"
    r = subprocess.run([str(exe), str(vectors.VECTOR_DIR), "--outputs", str(outputs)], capture_output=True,
                       text=True, timeout=60)
    return r, outputs


def test_cpp_scheduler_passes_the_vectors(cpp_builds, tmp_path, capsys):
    """Protects the worked example end to end: the C++ checker passes the C++ scheduler (exit 0), skipping only
    the cosine-schedule cases it does not offer, and lcm-ref vectors judge agrees on what it wrote (PASS, the
    same cases unsupported)."""
    r, outputs = _run_cpp(cpp_builds["good"], tmp_path)
    assert r.returncode == 0, r.stdout
    skipped = [line for line in r.stdout.splitlines() if line.startswith("SKIP")]
    assert skipped and all("squaredcos_cap_v2" in line for line in skipped)
    assert "0 fail" in r.stdout.splitlines()[-1]
    rc = cli.main(["vectors", "judge", str(outputs)])
    out = capsys.readouterr().out
    assert rc == 0 and f"0 fail, {len(skipped)} unsupported, 0 inconclusive" in out, out


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_cpp_mutants_fail_exactly_their_trap_cases(cpp_builds, tmp_path, capsys, mutant):
    """Protects the traps: each mutated scheduler fails the C++ checker (exit 1) on cases flagged with its trap
    and on no other kind, and lcm-ref vectors judge fails it too (exit 1)."""
    r, outputs = _run_cpp(cpp_builds[mutant], tmp_path)
    assert r.returncode == 1, r.stdout
    failed = {(line.split()[1], int(line.split()[3])) for line in r.stdout.splitlines() if line.startswith("FAIL")}
    flagged = {(name, t["tcId"]) for name in vectors.FILES for g, t in _cases(name)
               if MUTANTS[mutant] in t["flags"] + g["flags"]}
    assert failed and failed <= flagged, failed - flagged
    if mutant != "APPEND":                      # each grid / strength trap case fails; a two-call step may not
        assert failed == {c for c in flagged if c[0] == "timesteps.json"}
    assert cli.main(["vectors", "judge", str(outputs)]) == 1
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------------------------
# vectors check --impl from the current directory
# ---------------------------------------------------------------------------------------------------------------

def test_vectors_check_imports_impl_from_the_current_directory(tmp_path):
    """Protects issue 14's 'vectors check --impl imports from the current directory': the installed lcm-ref
    command, started in a folder holding my_port.py, imports my_port:Scheduler (one small vector file)."""
    (tmp_path / "my_port.py").write_text("from lcm_ref.torch_impl import LCMScheduler as Scheduler\n")
    vec = tmp_path / "vec"
    vec.mkdir()
    for name in vectors.FILES + (vectors.SCHEMA,):
        doc = json.loads((vectors.VECTOR_DIR / name).read_text())
        if name in vectors.FILES:
            doc["testGroups"] = doc["testGroups"][:1] if name == "timesteps.json" else []
            if doc["testGroups"]:
                doc["testGroups"][0]["tests"] = doc["testGroups"][0]["tests"][:2]
            doc["numberOfTests"] = sum(len(g["tests"]) for g in doc["testGroups"])
        (vec / name).write_text(json.dumps(doc))
    exe = Path(sys.executable).with_name("lcm-ref")
    r = subprocess.run([str(exe), "vectors", "check", "--impl", "my_port:Scheduler", "--dir", str(vec)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                                         "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "2 cases checked" in r.stdout, r.stdout + r.stderr


def test_the_six_measured_failure_classes_keep_their_cases():
    """Protects 'keep every case that finds the six failure classes' of OpenVINO GenAI (measured 2026-12-06): a
    float32 strength product, accepted invalid requests (orig > T configured, n > orig), orig = 0, an ignored
    zero-SNR rescale (ᾱ[T−1] = 0 in tables.json, a zero-SNR epsilon run with finite budgets), thresholding with
    epsilon prediction, a step past the end."""
    ts = _cases("timesteps.json")
    assert any("Float32Strength" in t["flags"] and "0x1.28f5c28f5c28fp-1" == t["request"]["strength"] for _, t in ts)
    errors = [(decode_config(g["config"]), t["request"]) for g, t in ts if t["result"] == "error"]
    assert any(c.original_inference_steps > c.num_train_timesteps and r["original_inference_steps"] is None
               for c, r in errors)
    assert any(r["num_inference_steps"] == 51 and r["original_inference_steps"] is None for c, r in errors)
    assert any(r["original_inference_steps"] == 0 for c, r in errors)
    assert any("ZeroSNR" in g["flags"] and t["t"] == 999 and float.fromhex(t["expected"]["alphas_cumprod"]) == 0
               for g, t in _cases("tables.json"))
    steps = _cases("steps.json")
    assert any({"ZeroSNR", "Epsilon"} <= set(g["flags"]) for g, _ in steps)
    assert any({"Threshold", "Epsilon"} <= set(g["flags"]) for g, _ in steps)
    assert any("Quirk5" in t["flags"] for _, t in steps)
