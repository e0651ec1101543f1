"""The oracle (lcm_ref.oracle), its strategies and the conformance suite."""

import os
import subprocess
import sys

import diffusers
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError, cli, oracle
from lcm_ref.oracle import mutants
from lcm_ref.oracle import budget, strategies as lst
from lcm_ref.oracle.noise import NoiseTap
from lcm_ref.torch_impl import LCMScheduler as TorchLCMScheduler

EPS32 = 2.0 ** -23

TABLE_CONFIGS = [
    LCMConfig(), LCMConfig(beta_schedule="linear"), LCMConfig(beta_schedule="squaredcos_cap_v2"),
    LCMConfig(rescale_betas_zero_snr=True), LCMConfig(beta_schedule="linear", rescale_betas_zero_snr=True),
    LCMConfig(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True),
    LCMConfig(num_train_timesteps=2000, beta_schedule="linear", beta_start=1e-5, beta_end=0.02),
    LCMConfig(num_train_timesteps=7, rescale_betas_zero_snr=True),
    lst.build_config({"trained_betas": {"seed": 1}}),
    lst.build_config({"trained_betas": {"seed": 2}, "rescale_betas_zero_snr": True}),
]


@pytest.mark.parametrize("cfg", TABLE_CONFIGS, ids=repr)
def test_table_error_bound_covers_diffusers_float32_tables(cfg):
    """E(t), the budget's bound on a float32 ᾱ table, covers diffusers' own table at every t (no false alarm)."""
    got = diffusers.LCMScheduler(**cfg.to_dict()).alphas_cumprod.double().numpy()
    want = np.asarray(ref.alphas_cumprod(cfg))
    E = budget.table_error_bound(cfg)
    err = np.abs(got - want)
    assert np.all(err <= E * want), np.max(err / np.where(want > 0, E * want, 1))


def test_table_error_bound_is_the_cumprod_growth_not_more():
    """E(t) grows like (t+1)·eps32 (docs/design.md §8), so the budget stays tight enough to see float16 tables."""
    from lcm_ref.oracle.budget import betas_rel_err
    cfg = LCMConfig()
    E = budget.table_error_bound(cfg)
    t = np.arange(len(E))
    # Per factor α = 1 − β: the store of α and the product, u = eps32/2 each, plus β's own error e_β seen relative
    # to α, e_β·β/(1 − β) ≤ 6·eps32 · 0.012/0.988 = 0.073·eps32 (e_β ≤ 6 eps32: checked here). First order that is
    # (t+1)·1.073·eps32; the second-order term multiplies it by ≤ 1 + 1.073·1000·eps32 ≈ 1.0001 → 1.074.
    assert np.max(betas_rel_err(cfg)) <= 6 * EPS32
    assert np.all(E <= 1.074 * (t + 1) * EPS32)
    assert np.all(E >= (t + 1) * EPS32)                        # and not less: each factor has its two roundings
    assert E[999] < 2.0 ** -12                                  # below float16's unit roundoff: float16 is caught


def test_check_passes_diffusers_on_evidence():
    """check(), conform's fail-fast mode, passes diffusers' LCMScheduler at the default example counts: PASS, every
    concern judged on at least its minimum (no false alarm, no thin pass)."""
    report = oracle.check(diffusers.LCMScheduler)
    assert report.status == "PASS", str(report)
    assert all(c.verdict == "pass" and c.judged >= c.min_judged > 0 for c in report.concerns), str(report)


def test_strict_profile_flags_diffusers_quirks():
    """profile='strict' reports diffusers' quirk inputs in concern errors: the strict reference refuses them
    (StrictError, a ValueError naming the parameter) where diffusers does not."""
    with pytest.raises(oracle.OracleMismatch, match="the reference raises StrictError") as info:
        oracle.check(diffusers.LCMScheduler, profile="strict", shrink=False, concerns=["errors"])
    assert info.value.quantity == "errors"


def test_strict_torch_impl_passes_strict_profile():
    """The strict torch drop-in refuses every quirk input the strict reference refuses (or earlier)."""
    assert oracle.check(TorchLCMScheduler, profile="strict", concerns=["errors", "timesteps", "denoised"]).ok


def test_mismatch_names_everything_and_reproduces():
    """check() stops at the first failing concern: its OracleMismatch names the concern, config, request, step,
    timestep, worst element, got/want, scaled error and budget, and its repro re-raises."""
    with pytest.raises(oracle.OracleMismatch) as info:
        oracle.check(mutants.PrevOffByOne, shrink=False)
    e = info.value
    msg = str(e)
    for part in ("prev_sample", "config:", "request:", "step 0", "t=", "worst element", "got", "want",
                 "scaled error", "budget", "reproduce:", "replay("):
        assert part in msg, part
    assert e.quantity == "prev_sample" and e.result.worst["scaled_error"] > e.result.worst["budget"]
    with pytest.raises(oracle.OracleMismatch) as again:
        exec(e.repro, {})
    assert again.value.quantity == e.quantity


def test_replay_of_a_passing_case_returns_its_result():
    """replay() of a case that passes returns the ConcernResult (the repro path works for correct schedulers too)."""
    comment, case = oracle.canonical_cases()[0]
    result = oracle.replay("diffusers:LCMScheduler", "denoised", case.to_dict())
    assert result.verdict == "pass" and result.judged == 1


def test_check_is_deterministic():
    """Two check() runs draw the same examples and report the same verdicts and evidence."""
    def evidence(report):
        return [(c.concern, c.verdict, c.judged, c.examples, c.values) for c in report.concerns]
    a = oracle.check(diffusers.LCMScheduler, examples=3, concerns=["timesteps", "denoised"])
    b = oracle.check(diffusers.LCMScheduler, examples=3, concerns=["timesteps", "denoised"])
    assert evidence(a) == evidence(b)


def test_noise_tap_records_and_injects_and_restores():
    """NoiseTap sees diffusers' randn_tensor draws (one generator or one per batch element), can inject a given
    tensor, and leaves torch untouched afterwards."""
    from diffusers.utils.torch_utils import randn_tensor

    randn, normal_ = torch.randn, torch.Tensor.normal_
    x = torch.zeros(2, 3)
    with NoiseTap() as tap:
        z = randn_tensor((2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    assert torch.equal(tap.noise_like(x), z)
    with NoiseTap() as tap:
        z = randn_tensor((2, 3), generator=[torch.Generator().manual_seed(i) for i in range(2)], dtype=torch.float32)
    assert torch.equal(tap.noise_like(x), z)
    given_z = torch.arange(6.0).reshape(2, 3)
    with NoiseTap(inject=given_z) as tap:
        z = torch.randn(2, 3, dtype=torch.float64)
        w = torch.empty(2, 3).normal_()
    assert torch.equal(z, given_z.double()) and torch.equal(w, given_z)
    assert torch.randn is randn and torch.Tensor.normal_ is normal_ and "normal_" not in vars(torch.Tensor)


def test_bad_arguments_are_named():
    """check() names a bad dtype, profile, concern or example count."""
    for kw, name in ((dict(dtype="int32"), "dtype"), (dict(profile="loose"), "profile"),
                     (dict(concerns=["steps"]), "concerns"), (dict(examples=-1), "examples")):
        with pytest.raises(LCMRefError, match=name):
            oracle.check(diffusers.LCMScheduler, **kw)


def test_cli_check(capsys):
    """`lcm-ref check` prints the report and exits 0 on PASS; a mismatch exits 1 with a FAIL line; too few judged
    examples exit 3 (0 with --allow-incomplete); an unknown impl exits 2. The last line is the verdict."""
    args = ["check", "diffusers:LCMScheduler", "--examples", "3", "--dtype", "float64", "--concerns",
            "strength,denoised"]
    assert cli.main(args + ["--min-judged", "1"]) == 0
    out = capsys.readouterr().out
    assert "| denoised | pass |" in out and out.rstrip().splitlines()[-1].startswith("PASS")
    assert cli.main(args) == 3
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("INCOMPLETE")
    assert cli.main(args + ["--allow-incomplete"]) == 0
    capsys.readouterr()
    assert cli.main(["check", "lcm_ref.oracle.mutants:NoCOut", "--examples", "5", "--no-shrink"]) == 1
    out = capsys.readouterr().out
    assert "FAIL tables" in out          # the first failing concern, in CONCERNS order
    # issue 16: the output ends with the verdict line, whatever the verdict
    assert out.rstrip().splitlines()[-1].startswith("FAIL: tables (") and "examples fail)" in out
    assert cli.main(["check", "no_such_module:X"]) == 2
    assert "impl='no_such_module:X'" in capsys.readouterr().out


@settings(max_examples=40)
@given(st.data())
def test_default_draws_are_valid_diffusers_inputs(data):
    """Default strategy draws build diffusers schedulers and (non-error requests) set_timesteps without error."""
    cfg = data.draw(lst.configs(), label="config")
    req = data.draw(lst.schedule_requests(cfg, errors=False), label="request")
    s = diffusers.LCMScheduler(**cfg.to_dict())
    s.set_timesteps(**{k: req[k] for k in ("num_inference_steps", "original_inference_steps", "timesteps",
                                           "strength") if req[k] is not None})
    assert len(s.timesteps) >= 1 and req["start"] < len(s.timesteps)
    assert ref.alphas_cumprod(cfg)[-1] > 0 or cfg.rescale_betas_zero_snr
    assert not (cfg.rescale_betas_zero_snr and cfg.prediction_type == "epsilon")
    x = data.draw(lst.tensors(dtype=[torch.float32, torch.float64]), label="tensor")
    assert x.dtype in (torch.float32, torch.float64) and x.ndim >= 1


def _conformance(env, *args):
    env = {**os.environ, "LCM_REF_EXAMPLES": "5", **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--pyargs", "lcm_ref.conformance", *args], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(__file__) + "/..", timeout=300)


def test_conformance_suite_catches_a_mutant_and_honours_xfail():
    """`pytest --pyargs lcm_ref.conformance` with LCM_REF_IMPL: one test per concern (lcm_ref.oracle.conform), and
    the vectors; a wrong get_velocity fails its concern's test and the vectors, the 16 other concerns pass;
    LCM_REF_XFAIL marks the listed concern xfail; --lcm-* options work through the installed pytest11 plugin."""
    r = _conformance({"LCM_REF_IMPL": "lcm_ref.oracle.mutants:VelocitySign", "LCM_REF_XFAIL": "get_velocity",
                      "LCM_REF_EXAMPLES": "2", "LCM_REF_MIN_JUDGED": "1"}, "--lcm-dtype=float64",
                     "--lcm-tables=float32")
    # 17 concerns + test_step_judged pass; get_velocity xfails; the vectors fail
    assert "18 passed" in r.stdout and "1 failed" in r.stdout and "1 xfailed" in r.stdout, r.stdout + r.stderr
    assert "test_vectors[float64]" in r.stdout


def test_conformance_suite_is_never_green_on_nothing_judged():
    """The pytest front end on the wrong scheduler (nothing can be judged): inconclusive concerns fail their tests
    and test_step_judged fails, so the suite is red, not green with skips."""
    r = _conformance({"LCM_REF_IMPL": "diffusers:DDIMScheduler", "LCM_REF_EXAMPLES": "1"}, "-k",
                     "denoised or timesteps or step_judged")
    assert r.returncode == 1 and "INCONCLUSIVE" in r.stdout and "step was not judged" in r.stdout, r.stdout


def test_step_noise_captures_the_draw_and_replays_it_when_the_step_draws_none():
    """lcm_ref.oracle.noise.step_noise: on a step that draws, z is the draw itself; on the last step (no draw) it is what
    diffusers' randn_tensor would have drawn from the generator's state on entry, not None and not a later draw."""
    from diffusers.utils.torch_utils import randn_tensor

    from lcm_ref.oracle.noise import step_noise

    sched = diffusers.LCMScheduler()
    sched.set_timesteps(2)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    m = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    for t in sched.timesteps:        # step 0 draws z; step 1 is the last and draws nothing
        want = randn_tensor(m.shape, generator=torch.Generator().manual_seed(7), dtype=m.dtype)
        g = torch.Generator().manual_seed(7)
        with step_noise(m, g) as tap:
            out = sched.step(m, t, x, generator=g)
        assert torch.equal(tap.z, want)
        x = out.prev_sample
