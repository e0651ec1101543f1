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
from lcm_ref.torch_impl.bounds import SLACK, forward_bound, step_bounds

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", [diffusers.LCMScheduler, TorchLCMScheduler], ids=["diffusers", "torch_impl"])
def test_check_passes_correct_schedulers(factory, dtype):
    """diffusers' LCMScheduler and lcm_ref's torch drop-in pass check() in fp32 and fp64: no false alarm."""
    report = oracle.check(factory, dtype=dtype)
    print(report)
    assert report.ok()
    for q in ("timesteps", "exceptions", "denoised", "prev_sample", "add_noise", "get_velocity"):
        assert report.rows[q].compared > 0, q
    assert report.canonical == len(oracle.CANONICAL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_check_passes_diffusers_in_half_precision(dtype):
    """The budget derives from the dtype: diffusers passes in float16 (underflow included) and bfloat16 too."""
    assert oracle.check(diffusers.LCMScheduler, dtype=dtype, max_examples=60).ok()


def test_torch_impl_is_more_accurate_than_the_float32_budget():
    """The torch implementation's float64 tables keep it within its own derived float32 bounds of the reference
    (far inside the oracle's float32-table budget, which diffusers needs)."""
    report = oracle.check(TorchLCMScheduler, dtype=torch.float32, max_examples=40)
    # lcm_ref.torch_impl.bounds: float32 denoised 1.5 (3u on each term), prev 2.0 (4u), add_noise and get_velocity
    # 1.5; clip / threshold ≈ 0.5, below these; (1 + SLACK) for the neglected second-order terms
    den, prev = step_bounds(torch.float32)
    fwd = forward_bound(torch.float32)
    for q, bound in (("denoised", den), ("prev_sample", prev), ("add_noise", fwd), ("get_velocity", fwd)):
        row = report.rows[q]
        assert row.compared > 0 and row.max_scaled <= bound * (1 + SLACK), (q, row)


def test_strict_profile_flags_diffusers_quirks():
    """profile='strict' reports diffusers' quirk inputs: a ValueError naming the parameter was expected."""
    with pytest.raises(oracle.OracleMismatch, match="expected: a ValueError whose message names") as info:
        oracle.check(diffusers.LCMScheduler, profile="strict", shrink=False)
    assert info.value.quantity == "exceptions"


def test_strict_torch_impl_passes_strict_profile():
    """The strict torch drop-in refuses every quirk input the strict reference refuses (or earlier)."""
    assert oracle.check(TorchLCMScheduler, profile="strict").ok()


def test_diffusers_quirks_match_the_reference():
    """With quirk inputs drawn, diffusers still matches the diffusers-profile reference (quirks modelled)."""
    report = oracle.check(diffusers.LCMScheduler, quirks=True)
    assert report.ok() and report.rows["exceptions"].compared > 0


def test_mismatch_names_everything_and_reproduces():
    """An OracleMismatch names config, step, timestep, worst element, got/want, scaled error; its repro re-raises."""
    with pytest.raises(oracle.OracleMismatch) as info:
        oracle.check(mutants.PrevOffByOne, shrink=False, explicit=False)
    e = info.value
    msg = str(e)
    for part in ("prev_sample", "config:", "schedule:", "step:", "timestep", "worst element", "got", "want",
                 "scaled error", "budget", "reproduce:", "lcm_ref.oracle.replay("):
        assert part in msg, part
    assert e.step_index is not None and e.index is not None and e.scaled > e.budget
    with pytest.raises(oracle.OracleMismatch) as again:
        exec(e.repro, {})
    assert (again.value.quantity, again.value.step_index, again.value.index) == (e.quantity, e.step_index, e.index)


def test_replay_of_a_passing_case_returns_a_report():
    """replay() of a case that passes returns a Report (the repro path works for correct schedulers too)."""
    comment, case = oracle.canonical_cases()[0]
    report = oracle.replay("diffusers:LCMScheduler", case.to_dict())
    assert report.ok() and report.steps == 4


def test_check_is_deterministic():
    """Two check() runs draw the same examples and print the same report."""
    a = oracle.check(diffusers.LCMScheduler, max_examples=15)
    b = oracle.check(diffusers.LCMScheduler, max_examples=15)
    assert str(a) == str(b)


def test_report_prints_a_table():
    """str(Report) is a markdown table with one row per quantity."""
    text = str(oracle.check(diffusers.LCMScheduler, max_examples=5))
    assert "| quantity | compared | max scaled error |" in text
    for q in oracle.Report.QUANTITIES:
        assert f"| {q} |" in text


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
    """check() names a bad dtype, profile, part or example count."""
    for kw, name in ((dict(dtype="int32"), "dtype"), (dict(profile="loose"), "profile"),
                     (dict(parts=("steps",)), "parts"), (dict(max_examples=0), "max_examples")):
        with pytest.raises(LCMRefError, match=name):
            oracle.check(diffusers.LCMScheduler, **kw)


def test_cli_check(capsys):
    """`lcm-ref check` prints the report and exits 0; a mismatch exits 1; an unknown impl exits 2."""
    assert cli.main(["check", "diffusers:LCMScheduler", "--examples", "5", "--dtype", "float64"]) == 0
    assert "| denoised |" in capsys.readouterr().out
    assert cli.main(["check", "lcm_ref.oracle.mutants:NoCOut", "--examples", "5", "--no-shrink"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
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
                      "LCM_REF_EXAMPLES": "2"}, "--lcm-dtype=float64", "--lcm-tables=float32")
    assert "16 passed" in r.stdout and "1 failed" in r.stdout and "1 xfailed" in r.stdout, r.stdout + r.stderr
    assert "test_vectors[float64]" in r.stdout


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
