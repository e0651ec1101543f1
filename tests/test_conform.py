"""lcm_ref.oracle.conform: every concern judged on its own (docs/design.md §9), the budget's acceptance rule for
values outside a dtype's range (§8.4), float64 tables (§8.5), the mutant -> concern table, the JSON report and its
schema, ``lcm-ref conform`` and bad implementations."""

import hashlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import diffusers
import jsonschema
import numpy as np
import pytest
import torch

from lcm_ref import LCMConfig, LCMRefError, cli, oracle
from lcm_ref.oracle import OracleMismatch, budget, mutants
from lcm_ref.oracle.compare import accepted_interval, compare_values, hypothesis_seed, round_to
from lcm_ref.oracle.conform import (CONCERNS, DEFAULT_EXAMPLES, DESCRIPTIONS, MIN_JUDGED, NO_KNOWN_PATTERN, conform,
                                    replay, schema)
from lcm_ref.torch_impl import LCMScheduler as DropIn

#: a few examples per concern where the point is not coverage (canonical cases run in addition); such runs pass
#: min_judged=0, since the evidence minimum is what test_default_conform_* and the closing note's runs check
FEW = 4


def _verdicts(report):
    return {c.concern: c.verdict for c in report.concerns}


def _fails(report):
    return {c.concern: c.detail for c in report.concerns if c.verdict == "fail"}


# ---------------------------------------------------------------------------------------------------------------
# No false alarm
# ---------------------------------------------------------------------------------------------------------------

CORRECT = [
    ("diffusers", diffusers.LCMScheduler, "float32", "float32"),
    ("diffusers", diffusers.LCMScheduler, "float16", "float32"),
    ("diffusers", diffusers.LCMScheduler, "bfloat16", "float32"),
    ("diffusers", diffusers.LCMScheduler, "float64", "float32"),
    ("drop-in", DropIn, "float32", "float32"),
    ("drop-in", DropIn, "float16", "float32"),
    ("drop-in", DropIn, "bfloat16", "float32"),
    ("drop-in", DropIn, "float64", "float32"),
    ("drop-in", DropIn, "float64", "float64"),
]


@pytest.mark.parametrize("name, factory, dtype, tables", CORRECT,
                         ids=[f"{n}-{d}-tables_{t}" for n, _, d, t in CORRECT])
def test_correct_implementations_pass_every_concern(name, factory, dtype, tables):
    """diffusers' LCMScheduler and the drop-in pass every concern in float32, float16, bfloat16 and float64 (float64
    with float32 tables; the drop-in, which keeps float64 tables for float64 samples, also with float64 tables):
    no false alarm, no concern unsupported or unobservable. (The default example counts run in
    test_default_conform_of_diffusers_float16 and in the measured matrix of the closing note.)"""
    report = conform(factory, dtype=dtype, tables=tables, examples=FEW, min_judged=1)
    assert report.ok, str(report)
    assert set(_verdicts(report).values()) == {"pass"}, str(report)
    assert [c.concern for c in report.concerns] == list(CONCERNS)


@pytest.mark.slow
def test_default_conform_of_diffusers_float16():
    """The issue's false alarm (`got -inf, want -281341.8` in float16) is gone at the default example counts: a
    correct float16 implementation never fails (docs/design.md §8.4)."""
    report = conform(diffusers.LCMScheduler, dtype="float16")
    assert report.status == "PASS" and set(_verdicts(report).values()) == {"pass"}, str(report)
    assert report.examples == DEFAULT_EXAMPLES
    # every concern passes on evidence: at least its minimum of judged examples
    assert all(c.judged >= MIN_JUDGED[c.concern] for c in report.concerns), str(report)


def test_diffusers_in_float64_fails_float64_tables():
    """tables="float64" holds a float64 port to correctly rounded float64 tables: diffusers keeps float32 tables
    (c_skip / c_out float32 from a tensor timestep, ᾱ float32), so it fails tables and denoised there, with the
    float32-tables cause named; it passes both under the default float32 tables (test above)."""
    report = conform(diffusers.LCMScheduler, dtype="float64", tables="float64", examples=FEW,
                     concerns=["tables", "denoised"])
    assert set(_fails(report)) == {"tables", "denoised"}, str(report)
    assert "float32" in report["tables"].likely_cause and "--tables float32" in report["tables"].likely_cause
    assert "float32" in report["denoised"].likely_cause


class PrevOnly:
    """A port whose step returns prev_sample only (a plain tuple), otherwise diffusers bit for bit: a wrapper, not a
    subclass."""

    def __init__(self, **config):
        self._inner = diffusers.LCMScheduler(**config)
        self.config = self._inner.config

    def __getattr__(self, name):                     # everything else is diffusers'
        return getattr(self._inner, name)

    def set_timesteps(self, *args, **kwargs):
        return self._inner.set_timesteps(*args, **kwargs)

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        prev, _ = self._inner.step(model_output, timestep, sample, generator=generator, return_dict=False)
        return (prev,)


def test_a_port_without_denoised_gets_no_fail():
    """No `denoised is a NoneType` false alarm: a port that returns only prev_sample gets no fail in the numeric
    concerns; denoised is judged through the last step (prev_sample is denoised there), which its detail says, and
    check() passes it too. (Not interface: this wrapper is no pipeline drop-in — it has no len().)"""
    numeric = [c for c in CONCERNS if c != "interface"]
    report = conform(PrevOnly, examples=FEW, min_judged=1, concerns=numeric)
    assert report.ok, str(report)
    assert report["denoised"].verdict == "pass" and report["denoised"].values > 0
    assert "not observable" in report["denoised"].detail and "last step" in report["denoised"].detail
    assert oracle.check(PrevOnly, examples=5, min_judged=1, concerns=numeric).ok


# ---------------------------------------------------------------------------------------------------------------
# Mutants: each fails in the concern it breaks
# ---------------------------------------------------------------------------------------------------------------

FAILING = {**mutants.MUTANTS, **mutants.CONFORM_MUTANTS}


def test_every_mutant_names_its_concerns():
    """Every mutant declares CONCERN (known concern names; None only for negative controls)."""
    assert len(mutants.MUTANTS) == 19
    for name, cls in mutants.ALL_MUTANTS.items():
        expected = mutants.expected_concerns(cls)
        assert set(expected) <= set(CONCERNS), name
        assert bool(expected) == (name not in mutants.NEGATIVE_CONTROLS), name
    kinds = {c for cls in FAILING.values() for c in mutants.expected_concerns(cls)}
    assert kinds == set(CONCERNS), set(CONCERNS) - kinds        # every concern has a mutant it must kill


#: examples per concern for the concerns a mutant must NOT fail (a third of the defaults, to keep the suite fast;
#: the design table, docs/design.md §9.5, is the full run at the default counts, and test_design_mutant_table
#: holds it to CONCERN too)
OTHERS = {c: max(4, n // 3) for c, n in DEFAULT_EXAMPLES.items()}


@pytest.mark.parametrize("name", list(FAILING))
def test_mutant_fails_exactly_its_concerns(name):
    """conform fails the mutant in each concern it names, at the default example counts (with its CONFORM settings:
    e.g. Float32Tables only under dtype float64, tables float64), names a confirmed likely cause, and fails no other
    concern: one deviation, the concerns the mutant table lists, no more."""
    cls = FAILING[name]
    expected = mutants.expected_concerns(cls)
    settings = getattr(cls, "CONFORM", {})
    report = conform(cls, concerns=list(expected), shrink=False, **settings)
    fails = _fails(report)
    assert set(expected) == set(fails), str(report)
    assert report[expected[0]].likely_cause and report[expected[0]].likely_cause != NO_KNOWN_PATTERN, str(report)
    assert report[expected[0]].failing_examples >= 1 and report[expected[0]].reproduce
    others = [c for c in CONCERNS if c not in expected]
    rest = conform(cls, concerns=others, shrink=False, examples=OTHERS, min_judged=0, **settings)
    assert not _fails(rest), str(rest)


def test_design_mutant_table_is_the_measured_one():
    """docs/design.md §9.5's table is generated (python -m lcm_ref.oracle.mutants --concerns --design
    docs/design.md): it lists every mutant with exactly the concerns its CONCERN names, and says how it was made."""
    text = (Path(__file__).parents[1] / "docs" / "design.md").read_text()
    rows = mutants.read_design_table(text)
    assert set(rows) == set(mutants.ALL_MUTANTS)
    for name, failing in rows.items():
        assert failing == set(mutants.expected_concerns(mutants.ALL_MUTANTS[name])), name


def test_float32_tables_pass_under_float32_tables():
    """The float32-tables port is right where float32 tables are allowed (killed only under tables="float64")."""
    report = conform(mutants.Float32Tables, dtype="float64", examples=FEW, concerns=["tables", "denoised"])
    assert report.ok, str(report)


@pytest.mark.parametrize("name", list(mutants.NEGATIVE_CONTROLS))
def test_negative_controls_fail_nothing(name):
    """The negative controls (no denoised in the output; a correct float64-tables port) fail no concern."""
    cls = mutants.NEGATIVE_CONTROLS[name]
    report = conform(cls, examples=FEW, min_judged=1, **getattr(cls, "CONFORM", {}))
    assert report.ok, str(report)


def test_concern_table_rows():
    """concern_table (the docs' mutant -> concern table) runs conform per mutant with its settings."""
    rows = mutants.concern_table(["NoCOut", "NoDenoised"], examples=2, all_concerns=False)
    assert [r["mutant"] for r in rows] == ["NoCOut", "NoDenoised"]
    assert rows[0]["expected"] == "denoised, clip_threshold, tables" and "denoised" in rows[0]["failing"]
    assert rows[1]["failing"] == "none" and rows[1]["caught"]
    text = mutants.format_concern_table(rows)
    assert f"caught in exactly the expected concerns: {sum(r['caught'] for r in rows)}/2" in text
    assert "| NoCOut |" in text and rows[1]["caught"]


# ---------------------------------------------------------------------------------------------------------------
# What a fail carries; the report; replay
# ---------------------------------------------------------------------------------------------------------------

def test_a_fail_carries_count_case_values_cause_and_a_runnable_replay(tmp_path):
    """A fail: the count of failing examples, the smallest case (shrunk), got / want with the scaled error against
    the budget, a one-line likely cause, and a replay(...) snippet that runs as pasted (no leading indentation,
    imports included) and raises OracleMismatch."""
    report = conform(mutants.PrevOffByOne, concerns=["prev_sample", "denoised"], examples=20)
    r = report["prev_sample"]
    assert r.verdict == "fail" and report["denoised"].verdict == "pass"      # one deviation, one concern
    assert r.failing_examples >= 1
    assert "got" in r.detail and "want" in r.detail and "scaled error" in r.detail and "budget" in r.detail
    assert r.worst["scaled_error"] > r.worst["budget"]
    assert r.likely_cause.startswith("re-noises to the wrong timestep"), r.likely_cause
    lines = r.reproduce.splitlines()
    assert lines[0] == "from lcm_ref.oracle.conform import replay" and lines[2].startswith("replay(")
    assert all(not line.startswith((" ", "\t")) for line in lines if line and line[0] not in " )}]")
    path = tmp_path / "repro.py"
    path.write_text(r.reproduce + "\n")
    with pytest.raises(OracleMismatch, match="prev_sample"):
        exec(compile(path.read_text(), str(path), "exec"), {"__name__": "__main__"})
    # replay of the same case on diffusers itself passes
    assert replay(diffusers.LCMScheduler, "prev_sample", r.case).verdict == "pass"


def test_failures_are_shrunk():
    """The reproduced case is hypothesis' shrunk one: no larger than the first failing example drawn."""
    shrunk = conform(mutants.NoCOut, concerns=["denoised"], examples=30)["denoised"]
    first = conform(mutants.NoCOut, concerns=["denoised"], examples=30, shrink=False)["denoised"]
    size = lambda case: np.prod(case["sample"]["shape"]) * len(case["request"].get("timesteps") or [1])  # noqa
    assert shrunk.failing_examples == first.failing_examples
    assert size(shrunk.case) <= size(first.case)


def test_json_report_validates_against_the_shipped_schema():
    """to_json follows lcm_ref/oracle/conformance.schema.json, for passing and failing reports alike; the required
    keys are the issue's."""
    sch = schema()
    jsonschema.Draft202012Validator.check_schema(sch)
    for factory in (diffusers.LCMScheduler, mutants.Float16Tables, PrevOnly):
        report = conform(factory, examples=2, concerns=["tables", "denoised", "noise", "timesteps"])
        data = json.loads(report.to_json())
        jsonschema.validate(data, sch)
        assert {"implementation", "status", "dtype", "device", "lcm_ref_version", "region", "concerns"} <= set(data)
        for c in data["concerns"]:
            assert {"concern", "verdict", "detail", "failing_examples", "reproduce", "judged", "examples",
                    "min_judged", "reason", "skipped"} <= set(c)
            assert isinstance(c["judged"], int) and c["judged"] <= c["examples"]
            assert (c["reproduce"] is None) == (c["verdict"] != "fail")


def test_str_is_a_verdict_table_with_a_final_line():
    report = conform(mutants.VelocitySign, examples=2, concerns=["add_noise", "get_velocity"])
    text = str(report)
    assert text.splitlines()[-1].startswith("FAIL (2 concerns: 1 pass, 1 fail") or \
        text.splitlines()[-1].startswith("FAIL (2 concerns: 1 fail, 1 inconclusive"), text
    assert "| get_velocity | FAIL |" in text and "likely cause: the sign of get_velocity is flipped" in text
    assert "from lcm_ref.oracle.conform import replay" in text
    assert str(conform(diffusers.LCMScheduler, examples=1, concerns=["add_noise", "denoised"],
                       min_judged=1)).splitlines()[-1].startswith("PASS")
    md = report.to_markdown()
    assert "## get_velocity: fail" in md and "```python" in md


def test_draws_depend_on_the_concern_name_only():
    """Each concern's hypothesis run is seeded by its name (not by the source or install location): a rerun draws
    the same examples, and the seed is a fixed function of the name."""
    assert hypothesis_seed("denoised") == int.from_bytes(
        hashlib.sha256(b"lcm_ref:denoised").digest()[:8], "big")
    a = conform(mutants.NoCSkip, concerns=["denoised"], examples=6, shrink=False)["denoised"]
    b = conform(mutants.NoCSkip, concerns=["denoised"], examples=6, shrink=False)["denoised"]
    assert (a.failing_examples, a.case, a.values) == (b.failing_examples, b.case, b.values)


def test_arguments_are_checked():
    for kw, name in ((dict(dtype="int32"), "dtype"), (dict(tables="float16"), "tables"),
                     (dict(profile="loose"), "profile"), (dict(concerns=["steps"]), "concerns"),
                     (dict(examples=-1), "examples"), (dict(timeout_s=0), "timeout_s"),
                     (dict(device="nosuchdevice"), "device")):
        with pytest.raises(LCMRefError, match=name):
            conform(diffusers.LCMScheduler, **kw)
    with pytest.raises(LCMRefError, match="min_judged"):
        conform(diffusers.LCMScheduler, min_judged=-1)
    assert set(DESCRIPTIONS) == set(CONCERNS) == set(MIN_JUDGED) and len(CONCERNS) == 18


# ---------------------------------------------------------------------------------------------------------------
# Bad implementations: a clear message, and the report keeps everything already found
# ---------------------------------------------------------------------------------------------------------------

class ReturnsNone(diffusers.LCMScheduler):
    def step(self, *args, **kwargs):
        super().step(*args, **kwargs)
        return None


class WrongShape(diffusers.LCMScheduler):
    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        prev, den = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
        return torch.cat([prev, prev]), den


class Raises(diffusers.LCMScheduler):
    def step(self, *args, **kwargs):
        raise RuntimeError("kaboom in step")


class Hangs(diffusers.LCMScheduler):
    def step(self, *args, **kwargs):
        time.sleep(60)


@pytest.mark.parametrize("cls, message", [
    (ReturnsNone, "returns None"), (WrongShape, "shape"), (Raises, "RuntimeError: kaboom in step"),
    (Hangs, "timed out after 0.5 s")], ids=["none", "wrong-shape", "raises", "hangs"])
def test_bad_step_fails_its_concerns_and_the_run_goes_on(cls, message):
    """A step that returns None, a wrong shape, raises or hangs: each step concern fails with that message; the
    concerns that do not step (tables, timesteps) still get their verdicts."""
    report = conform(cls, examples=2, timeout_s=0.5, concerns=["timesteps", "tables", "denoised", "final_step"])
    v = _verdicts(report)
    assert v["timesteps"] == "pass" and v["tables"] == "pass", str(report)
    for c in ("denoised", "final_step"):
        assert v[c] == "fail" and message in report[c].detail, str(report)


def test_a_hang_costs_one_timeout_per_concern():
    t0 = time.perf_counter()
    conform(Hangs, examples=20, timeout_s=0.3, concerns=["denoised", "noise"])
    assert time.perf_counter() - t0 < 6


def test_a_factory_that_does_not_build_a_scheduler_is_a_usage_error():
    with pytest.raises(LCMRefError, match="returns int, which has no set_timesteps or step"):
        conform(lambda **kw: 3)
    with pytest.raises(LCMRefError, match="raises ZeroDivisionError"):
        conform(lambda **kw: 1 / 0)
    with pytest.raises(LCMRefError, match="callable"):
        conform(42)


class NoScaling(diffusers.LCMScheduler):
    """A constructor without a keyword (diffusers 0.22 had no timestep_scaling): it refuses any other value."""

    def __init__(self, timestep_scaling=None, **kw):
        if timestep_scaling is not None and timestep_scaling != 10.0:
            raise TypeError("__init__() got an unexpected keyword argument 'timestep_scaling'")
        super().__init__(**kw)


def test_a_refused_config_key_narrows_the_region_and_is_named():
    """What the constructor refuses on purpose is probed first and left out of the draws: the report names it in
    the region, and the concerns are judged inside it, with no fail."""
    report = conform(NoScaling, examples=6, concerns=["config", "denoised"], min_judged=1)
    assert "timestep_scaling: refused" in report.region.describe(), str(report)
    assert report.status == "PASS" and report["config"].judged >= 1, str(report)


class SDOnly(diffusers.LCMScheduler):
    """A UI-style port that refuses, on purpose, every setting its UI does not have: timestep_scaling other than 10,
    original_inference_steps other than 50, non-epsilon prediction, clip, thresholding, zero-SNR, other schedules,
    and a per-call original_inference_steps."""

    def __init__(self, **kw):
        fixed = dict(timestep_scaling=10.0, original_inference_steps=50, prediction_type="epsilon",
                     clip_sample=False, thresholding=False, rescale_betas_zero_snr=False,
                     beta_schedule="scaled_linear", trained_betas=None)
        for key, value in fixed.items():
            if key in kw and kw[key] != value:
                raise ValueError(f"{key}={kw[key]!r} is not supported (only {value!r})")
        super().__init__(**kw)

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, **kw):
        if original_inference_steps is not None:
            raise NotImplementedError("original_inference_steps per call")
        return super().set_timesteps(num_inference_steps, device, **kw)


def test_a_port_that_accepts_only_sd_settings_is_judged_on_enough_examples():
    """The issue's thin coverage: a port that refuses ~97 % of the drawn configs used to "pass" on 1–3 judged
    examples. Draws now stay in what it accepts, so every step and schedule concern reaches its minimum; what
    cannot be judged at all (clip_threshold) is unsupported with the reason, and the region is reported."""
    report = conform(SDOnly)
    assert report.status == "PASS", str(report)
    for c in report.concerns:
        if c.concern == "clip_threshold":
            assert c.verdict == "unsupported" and "clip_sample" in c.reason, str(report)
        else:
            assert c.verdict == "pass" and c.judged >= MIN_JUDGED[c.concern], str(report)
    region = report.region.describe()
    for key in ("timestep_scaling", "prediction_type", "set_timesteps(original_inference_steps=...)"):
        assert key in region, region


# --- crashes are failures; nothing judged is never a pass --------------------------------------------------------

class TypoInStep(diffusers.LCMScheduler):
    """A step that reads a mistyped attribute: an AttributeError inside step is a crash, not a refusal."""

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        return self.alphas_cumprd[0]


class CompareInStep(diffusers.LCMScheduler):
    """A TypeError whose message says "not supported", raised by an expression inside step."""

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        return None < 1


class NothingImplemented(diffusers.LCMScheduler):
    """step, add_noise and get_velocity all raise NotImplementedError: a refusal on purpose, but then no step was
    judged."""

    def step(self, *args, **kwargs):
        raise NotImplementedError("step")

    def add_noise(self, *args, **kwargs):
        raise NotImplementedError("add_noise")

    def get_velocity(self, *args, **kwargs):
        raise NotImplementedError("get_velocity")


@pytest.mark.parametrize("cls, text", [(TypoInStep, "AttributeError"), (CompareInStep, "not supported between")],
                         ids=["attribute-typo", "type-error"])
def test_a_crash_in_step_is_a_fail_with_its_traceback(cls, text):
    """An exception from step on a config and request the implementation accepted fails the step concerns, with the
    exception type, its message and the last frames of the traceback (file:line in function)."""
    report = conform(cls, examples=2, concerns=["timesteps", "denoised", "prev_sample"])
    assert report.status == "FAIL" and report.exit_code == 1, str(report)
    for c in ("denoised", "prev_sample"):
        assert report[c].verdict == "fail" and text in report[c].detail, str(report)
        assert "test_conform.py:" in report[c].detail and " in step: " in report[c].detail, report[c].detail


def test_nothing_judged_is_incomplete_not_pass():
    """A scheduler whose step refuses everything gets no PASS: its step concerns are unsupported, and a run in which
    no step concern passed is INCOMPLETE (exit 3)."""
    report = conform(NothingImplemented, examples=2, concerns=["timesteps", "denoised", "prev_sample", "add_noise"],
                     min_judged=1)
    assert report["denoised"].verdict == "unsupported" and report["add_noise"].verdict == "unsupported", str(report)
    assert report.status == "INCOMPLETE" and report.exit_code == 3, str(report)
    assert any("step was not judged" in r for r in report.incomplete_reasons())


def test_the_wrong_scheduler_is_incomplete_and_says_why(capsys):
    """The realistic mistake, lcm-ref conform diffusers:DDIMScheduler: not PASS, not exit 0, and the reason (its
    constructor refuses LCM's keys) in every row."""
    assert cli.main(["conform", "diffusers:DDIMScheduler"]) == 3
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out.splitlines()[-1] and "PASS" not in out.splitlines()[-1]
    assert "the default config is refused" in out and "original_inference_steps" in out


def test_selected_concerns_that_do_not_pass_are_not_a_pass():
    """--concerns config,prev_sample on a port whose step is not judged is not PASS."""
    report = conform(NothingImplemented, examples=2, concerns=["config", "prev_sample"], min_judged=1)
    assert report.status == "INCOMPLETE", str(report)


def test_too_few_judged_examples_are_inconclusive_with_the_reason():
    """A concern with fewer judged examples than its minimum and no failure is inconclusive, its reason counting
    what was judged and needed."""
    report = conform(diffusers.LCMScheduler, examples=2, concerns=["strength", "denoised"])
    r = report["strength"]
    assert r.verdict == "inconclusive" and r.judged < MIN_JUDGED["strength"], str(report)
    assert f"{r.judged} of {r.examples} judged, {MIN_JUDGED['strength']} needed" in r.reason
    assert report.status == "INCOMPLETE" and f"strength: {r.reason}" in str(report)


def test_a_float16_alpha_in_step_gets_no_invented_cause():
    """Causes are confirmed: a port that casts ᾱ to float16 inside step matches none of the catalogue's formulas
    (off-by-one, prev = 0 as no previous), so its prev_sample cause is "no known pattern" or the fitted noise level,
    never an off-by-one it does not have."""
    class HalfAlpha(diffusers.LCMScheduler):
        def step(self, *args, **kwargs):
            saved = self.alphas_cumprod
            self.alphas_cumprod = saved.half().float()
            try:
                return super().step(*args, **kwargs)
            finally:
                self.alphas_cumprod = saved

    r = conform(HalfAlpha, examples=10, concerns=["prev_sample"], shrink=False)["prev_sample"]
    assert r.verdict == "fail"
    assert "off-by-one" not in r.likely_cause and "no previous timestep" not in r.likely_cause, r.likely_cause


# ---------------------------------------------------------------------------------------------------------------
# The budget's acceptance rule (docs/design.md §8.4) and float64 tables (§8.5)
# ---------------------------------------------------------------------------------------------------------------

def test_round_to_is_ieee_rounding():
    """round_to agrees with NumPy's correctly rounded float64 -> float16 / float32 casts (overflow, subnormals,
    ties to even) on random and edge values."""
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(5000) * 10.0 ** rng.integers(-12, 7, 5000),
                        [65504.0, 65519.99, 65520.0, 65536.0, -70000.0, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26,
                         2.0 ** -26, 0.0, -0.0, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, np.inf, -np.inf]])
    with np.errstate(over="ignore"):
        assert np.array_equal(round_to(v, "float16"), v.astype(np.float16).astype(np.float64))
        assert np.array_equal(round_to(v * 1e30, "float32"), (v * 1e30).astype(np.float32).astype(np.float64))
    # bfloat16: float32's range, 8 significand bits (torch's own cast from a float32-exact value)
    w = v[np.isfinite(v)].astype(np.float32).astype(np.float64)
    assert np.array_equal(round_to(w, "bfloat16"), torch.tensor(w, dtype=torch.float32).bfloat16().double().numpy())


def test_correctly_rounded_overflow_and_underflow_are_accepted():
    """got = −inf where the exact value −281341.8 is beyond float16's range is the right answer; −65504 is not;
    an ordinary wrong value is still rejected; subnormal flushes within the budget interval are accepted."""
    want, terms = np.array([-281341.8]), np.array([281341.8])
    bound = 4 * 2.0 ** -11 * terms
    assert compare_values(np.array([-np.inf]), want, terms, bound, "float16").ok
    assert not compare_values(np.array([-65504.0]), want, terms, bound, "float16").ok
    assert not compare_values(np.array([np.inf]), want, terms, bound, "float16").ok
    lo, hi = accepted_interval(want, bound, "float16")
    assert lo[0] == hi[0] == -np.inf
    ok = compare_values(np.array([1.0]), np.array([1.0004]), np.array([1.0]), np.array([1e-4]), "float16")
    assert ok.ok                                   # [1.0003, 1.0005] rounds to {1, 1 + 2⁻¹⁰} in float16
    assert not compare_values(np.array([1.0]), np.array([1.0004]), np.array([1.0]), np.array([1e-4]), "float32").ok
    tiny = compare_values(np.array([0.0]), np.array([2.0 ** -26]), np.array([1.0]), np.array([2.0 ** -30]),
                          "float16")
    assert tiny.ok                                         # 2⁻²⁶ is below half the smallest subnormal: rounds to 0
    c = compare_values(np.array([-np.inf]), want, terms, bound, "float16")
    assert c.max_ratio <= 1


def test_float64_table_budget_is_one_rounding():
    """tables="float64": E(t) is one float64 rounding (u = 2⁻⁵³), 0 where ᾱ is exactly 0; a float64 cumprod, tens of
    ulp off (docs/design.md §2, point 3), is outside the table budget; the float32 derivation is unchanged."""
    cfg = LCMConfig(beta_schedule="squaredcos_cap_v2")
    E64 = budget.table_error_bound(cfg, "float64")
    assert np.all(E64 == 2.0 ** -53)
    assert budget.table_error_bound(LCMConfig(rescale_betas_zero_snr=True), "float64")[-1] == 0
    assert np.array_equal(budget.table_error_bound(cfg), budget.table_error_bound(cfg, "float32"))
    import lcm_ref.reference as ref
    want = np.asarray(ref.alphas_cumprod(cfg))
    cum = np.cumprod(1 - np.asarray(ref.betas(cfg)))
    assert np.any(np.abs(cum - want) > budget.alphas_cumprod_bound(cfg, "float64"))
    assert np.all(np.abs(cum - want) <= budget.alphas_cumprod_bound(cfg, "float32"))
    with pytest.raises(LCMRefError, match="tables"):
        budget.table_unit_roundoff("float16")


# ---------------------------------------------------------------------------------------------------------------
# lcm-ref conform
# ---------------------------------------------------------------------------------------------------------------

def test_cli_exit_codes_and_files(tmp_path, capsys, monkeypatch):
    """0 when no concern fails (JSON and markdown written), 1 when one does, 2 for an IMPL that cannot be imported,
    a factory that does not build a scheduler, or a bad option; IMPL is imported from the current directory."""
    out = tmp_path / "r.json"
    assert cli.main(["conform", "diffusers:LCMScheduler", "--examples", "2", "--concerns", "timesteps,denoised",
                     "--min-judged", "1", "--json", str(out), "--markdown", str(tmp_path / "r.md")]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-3].startswith("PASS")
    # the same with each concern's own minimum: too few examples, nothing fails -> INCOMPLETE, 3 (0 if allowed)
    args = ["conform", "diffusers:LCMScheduler", "--examples", "2", "--concerns", "strength,denoised"]
    assert cli.main(args) == 3 and cli.main(args + ["--allow-incomplete"]) == 0
    capsys.readouterr()
    jsonschema.validate(json.loads(out.read_text()), schema())
    assert (tmp_path / "r.md").read_text().startswith("# Conformance: diffusers:LCMScheduler")
    assert cli.main(["conform", "lcm_ref.oracle.mutants:NoCOut", "--examples", "2", "--concerns", "denoised",
                     "--no-shrink"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert cli.main(["conform", "no_such_module_xyz:Sched"]) == 2
    assert "cannot import IMPL" in capsys.readouterr().err
    assert cli.main(["conform", "math:pi"]) == 2
    assert "not allowed" in capsys.readouterr().err
    assert cli.main(["conform", "diffusers:LCMScheduler", "--concerns", "nope"]) == 2
    # module:attr from the current directory, as pytest does
    (tmp_path / "my_port_for_conform.py").write_text(textwrap.dedent("""
        from diffusers import LCMScheduler as MyLCM
        def broken(**config):
            return "not a scheduler"
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    assert cli.main(["conform", "my_port_for_conform:MyLCM", "--examples", "1", "--concerns", "timesteps,denoised",
                     "--min-judged", "1"]) == 0
    assert cli.main(["conform", "my_port_for_conform:broken"]) == 2
    assert "has no set_timesteps or step" in capsys.readouterr().err


def test_cli_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        cli.main(["conform", "--help"])
    text = capsys.readouterr().out
    for phrase in ("module:attr", "--tables", "float64 port", "unsupported", "not_observable", "examples:",
                   "inconclusive", "INCOMPLETE (exit 3", "--min-judged", "--allow-incomplete"):
        assert phrase in text



# ---------------------------------------------------------------------------------------------------------------
# What the report says (issue 16: messages a reader understands)
# ---------------------------------------------------------------------------------------------------------------

def test_each_error_is_shown_beside_its_budget():
    """Protects "max scaled error beside a pass without saying it is within the budget": a passing float concern
    reports its value nearest the budget as scaled error, budget and unit, shown in the table and the detail as
    "(budget B, within)"; scaled error / budget is max_ratio (both are |got − want| over the same eps·Σ|terms|, so
    the quotient is the ratio up to the rounding of three float64 divisions: ≤ 4 ulp relative, 8 ulp allowed)."""
    report = conform(diffusers.LCMScheduler, examples=2, concerns=["denoised", "timesteps"], min_judged=1)
    c = report["denoised"]
    e = c.max_error
    assert c.verdict == "pass" and e["unit"] == "eps(float32)" and 0 < e["scaled_error"] <= e["budget"]
    assert abs(e["scaled_error"] / e["budget"] - c.max_ratio) <= 8 * 2.0 ** -53 * c.max_ratio
    shown = f"{e['scaled_error']:.3g} eps(float32) (budget {e['budget']:.3g}, within)"
    text = str(report)
    assert f"| {shown} |" in text and f"largest error {shown}" in c.detail
    assert report["timesteps"].max_error is None and "| timesteps | pass |" in text     # integers: no budget
    json.loads(report.to_json())["concerns"][0]["max_error"]                              # in the JSON too


def test_a_fails_error_is_shown_over_its_budget():
    """Protects the fail side of the same column: a failing concern shows its worst value's scaled error and budget
    marked OVER (not the largest ratio of the values that passed)."""
    c = conform(mutants.NoCSkip, concerns=["denoised"], examples=FEW, min_judged=0, shrink=False)
    text, w = str(c), c["denoised"].worst
    assert c["denoised"].verdict == "fail" and w["scaled_error"] > w["budget"]
    assert f"{w['scaled_error']:.3g} eps(float32) (budget {w['budget']:.3g}, OVER)" in text


def test_counts_add_up_and_the_legend_says_why_they_differ_from_the_request():
    """Protects "the top-level examples differs from the per-concern examples without explanation": each concern's
    examples = canonical + drawn, drawn ≤ the examples asked of hypothesis (a case drawn twice runs once), and the
    text and markdown reports say so beside the table."""
    report = conform(diffusers.LCMScheduler, examples=3, concerns=["timesteps", "denoised", "config"], min_judged=1)
    for c in report.concerns:
        assert c.examples == c.canonical + c.drawn and 0 <= c.drawn <= report.examples[c.concern], c
        assert f"| {c.judged}/{c.examples} | {c.canonical} + {c.drawn} |" in str(report)
    assert report["timesteps"].canonical > 3            # why 40 ≠ 46: canonical cases run besides the draws
    for text in (str(report), report.to_markdown()):
        assert "canonical cases + distinct drawn cases (hypothesis was asked for 3 per concern" in text


def test_smallest_failing_case_is_described_by_its_config_not_an_index():
    """Protects "smallest failing case: example 14 means nothing": the failing case is named by its config, schedule
    request, sample shape and dtype (and the canonical case's name where it is one), never "example N"."""
    import re
    from lcm_ref.oracle.cases import canonical_for
    from lcm_ref.oracle.example import Example, Run
    res = conform(mutants.NoCSkip, concerns=["denoised"], examples=FEW, min_judged=0, shrink=False)["denoised"]
    line = res.detail.splitlines()[-1]
    assert not re.search(r"example \d", line), line
    case = res.case
    assert "smallest failing case: " in line and "LCMConfig(" in line and "set_timesteps(" in line
    assert f"samples {tuple(case['sample']['shape'])} {case['sample']['dtype']}" in line
    # a drawn case (labelled "example 14" while it runs) and a canonical one, described directly
    label, case = canonical_for("denoised", torch.float32)[1]
    run = Run(diffusers.LCMScheduler, "denoised", dtype=torch.float32, device="cpu", tables="float32",
              profile="diffusers", timeout_s=None, impl="diffusers:LCMScheduler")
    drawn = Example(run, case, "example 14").description
    assert drawn == ("LCMConfig(prediction_type='v_prediction', timestep_scaling=0.1), "
                     "set_timesteps(num_inference_steps=4), samples (1, 4, 4, 4) float32"), drawn
    assert Example(run, case, label).description == f'the canonical case "{label.split(": ", 1)[1]}", {drawn}'
