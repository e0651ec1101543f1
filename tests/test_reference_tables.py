"""Tables of lcm_ref.reference against an independent 60-digit mpmath computation (0 ulp: correctly rounded, as the
README states), and against diffusers' float32 tables within the float32 error model of lcm_ref.oracle.budget.

The exact tables (lcm_ref/exact.py) take a different code path from reference.py on purpose.
"""

import diffusers
import numpy as np
import pytest
import torch

import lcm_ref.oracle.budget as f32
import lcm_ref.reference as ref
from lcm_ref import LCMConfig
from lcm_ref.reference.exact import SCHEDULES, exact_boundary, exact_tables, make_cfg


TS = (1000, 999, 37, 2)


def _key(values):
    """Order-preserving integer image of float64 values: consecutive floats map to consecutive integers."""
    i = np.asarray(values, dtype=np.float64).view(np.int64)
    return np.where(i < 0, np.int64(-2 ** 63) - i, i).tolist()


def ulp_distance(got, exact):
    """How many float64 steps ``got`` is from the float64 nearest to each exact (mpf) value (0 = correctly
    rounded, 1 = a neighbour): |key(got) − key(round(exact))| in Python integers (no overflow)."""
    want = [float(v) for v in exact]
    return np.array([abs(a - b) for a, b in zip(_key(got), _key(want))])


def assert_within_ulps(name, got, exact, limit=0):
    """Every entry of ``got`` within ``limit`` float64 steps of the correctly rounded exact value (0: equal to it)."""
    d = ulp_distance(got, exact)
    bad = np.flatnonzero(d > limit)
    assert not len(bad), (f"{name}: {len(bad)} entries over {limit} ulp, worst {d.max()} at t={d.argmax()}; "
                          + ", ".join(f"t={t}: got {got[t]!r} want {float(exact[t])!r}" for t in bad[:5]))


CONFIGS = [(s, T, z) for s in SCHEDULES for T in TS for z in (False, True)]


@pytest.mark.parametrize("schedule,T,zero_snr", CONFIGS, ids=[f"{s}-T{T}-zsnr{int(z)}" for s, T, z in CONFIGS])
def test_tables_correctly_rounded(schedule, T, zero_snr):
    """The README's claim: betas, alphas_cumprod and both square-root tables are the 60-digit values rounded once to
    float64 (0 ulp), every t. Exact comparison: the 50-digit computation and a single rounding leave no slack."""
    cfg = make_cfg(schedule, T, zero_snr)
    exact = exact_tables(cfg)
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
        got = getattr(ref, name)(cfg)
        assert got.dtype == np.float64 and got.shape == (T,)
        assert_within_ulps(name, got, exact[name])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_final_alpha_cumprod(schedule):
    """final_alpha_cumprod is exactly 1.0 with set_alpha_to_one, else the correctly rounded ᾱ_0 = 1 − β_0."""
    assert ref.final_alpha_cumprod(make_cfg(schedule, 1000)) == 1.0
    cfg = make_cfg(schedule, 1000, set_alpha_to_one=False)
    assert_within_ulps("final_alpha_cumprod", np.array([ref.final_alpha_cumprod(cfg)]),
                       [1 - exact_tables(make_cfg(schedule, 1000))["betas"][0]])


def test_naive_float64_cumprod_is_not_within_one_ulp():
    """Mutant: np.cumprod in float64 drifts past 1 ulp (why the reference uses mpmath)."""
    cfg = make_cfg("scaled_linear", 1000)
    naive = np.cumprod(1.0 - np.array(ref.betas(cfg)))
    d = ulp_distance(naive, exact_tables(cfg)["alphas_cumprod"])
    assert d.max() > 1
    with pytest.raises(AssertionError, match="alphas_cumprod"):
        assert_within_ulps("alphas_cumprod", naive, exact_tables(cfg)["alphas_cumprod"], limit=1)


@pytest.mark.parametrize("name", ("alphas_cumprod", "betas"))
def test_one_ulp_up_is_caught(name):
    """Mutant: a copy of the table with every entry moved one float64 step up fails the 0-ulp check (a ≤ 1 ulp check
    would pass it: the reason the claim is asserted at 0)."""
    cfg = make_cfg("scaled_linear", 1000)
    exact = exact_tables(cfg)[name]
    up = np.nextafter(np.array(getattr(ref, name)(cfg)), np.inf)
    assert (ulp_distance(up, exact) == 1).all()
    with pytest.raises(AssertionError, match=f"{name}: 1000 entries over 0 ulp"):
        assert_within_ulps(name, up, exact)
    assert_within_ulps(name, up, exact, limit=1)


def test_naive_sqrt_one_minus_is_not_within_one_ulp():
    """Mutant: √(1 − ᾱ) from the rounded ᾱ loses digits to cancellation near t = 0 (hundreds of ulp)."""
    cfg = make_cfg("scaled_linear", 1000)
    naive = np.sqrt(1.0 - np.array(ref.alphas_cumprod(cfg)))
    assert ulp_distance(naive, exact_tables(cfg)["sqrt_one_minus_alphas_cumprod"])[0] > 10


def test_off_by_one_beta_semantics_is_caught():
    """Mutant: cosine betas with ā at (i, i+1)/T shifted by one (a plausible port bug) is far outside 1 ulp."""
    cfg = make_cfg("squaredcos_cap_v2", 37)
    shifted = np.array(ref.betas(cfg))[1:]
    assert ulp_distance(shifted, exact_tables(cfg)["betas"][:-1]).min() > 1


def test_tables_read_only_and_cached():
    """Tables are returned read-only and the same object each time (cached per config)."""
    cfg = LCMConfig()
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
        a = getattr(ref, name)(cfg)
        assert a is getattr(ref, name)(LCMConfig())
        with pytest.raises(ValueError):
            a[0] = 0.5


# --- boundary scalings ---------------------------------------------------------------------------------------

SCALINGS_T = (0, 1, 2, 19, 259, 499, 999, -1, -999)


@pytest.mark.parametrize("scaling", [0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 3.7])
def test_boundary_scalings_correctly_rounded(scaling):
    """c_skip = 1/(1 + 4u²) and c_out = 2u/√(1 + 4u²), u = t·timestep_scaling, correctly rounded (0 ulp), int and
    array timesteps."""
    cfg = LCMConfig(timestep_scaling=scaling)
    c_skip, c_out = zip(*(exact_boundary(t, scaling) for t in SCALINGS_T))
    got_skip, got_out = ref.boundary_scalings(cfg, np.array(SCALINGS_T))
    assert_within_ulps("c_skip", got_skip, c_skip)
    assert_within_ulps("c_out", got_out, c_out)
    assert ref.boundary_scalings(cfg, 19) == (got_skip[3], got_out[3])


def test_boundary_scalings_design_example():
    """docs/design.md §4: at s = 10, t = 19: c_skip ≈ 6.9e-6 and 1 − c_out ≈ 3.5e-6; at t = 0 exactly (1, 0)."""
    c_skip, c_out = ref.boundary_scalings(LCMConfig(), 19)
    assert round(c_skip, 7) == 6.9e-6 and round(1 - c_out, 7) == 3.5e-6
    assert ref.boundary_scalings(LCMConfig(), 0) == (1.0, 0.0)


# --- diffusers' float32 tables ---------------------------------------------------------------------------------

LCM_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas")


def _diffusers_lcm(cfg):
    return diffusers.LCMScheduler(**cfg.to_dict())


def _check_f32(name, got32, exact, rel_bound):
    """|diffusers − exact| ≤ rel_bound·|exact| elementwise (got32 is diffusers' float32 table, read exactly)."""
    got = np.asarray(got32, dtype=np.float64)
    err = np.abs(got - exact)
    ok = err <= rel_bound * np.abs(exact)
    bad = np.flatnonzero(~ok)
    assert ok.all(), (f"{name}: {len(bad)} entries outside the float32 budget; worst ratio "
                      f"{np.max(err[bad] / (rel_bound[bad] * np.abs(exact[bad]))):.3g} at t={bad[:5].tolist()}")
    return err


@pytest.mark.parametrize("schedule", LCM_SCHEDULES)
@pytest.mark.parametrize("T", (1000, 37))
@pytest.mark.parametrize("zero_snr", (False, True))
def test_diffusers_lcm_tables_within_float32_budget(schedule, T, zero_snr):
    """LCMScheduler's float32 betas and alphas_cumprod are within the derived t-dependent float32 budget."""
    cfg = make_cfg(schedule, T, zero_snr)
    sched = _diffusers_lcm(cfg)
    abar = np.array(ref.alphas_cumprod(cfg))
    _check_f32("alphas_cumprod", sched.alphas_cumprod, abar, f32.table_error_bound(cfg))
    if not zero_snr:
        _check_f32("betas", sched.betas, np.array(ref.betas(cfg)), f32.betas_rel_err(cfg))
    else:
        assert float(sched.alphas_cumprod[-1]) == 0.0 == abar[-1]


def test_float32_budget_is_tight_enough_to_catch_mutants():
    """The budget fails an ᾱ table shifted by one timestep and a float16 ᾱ table (so passing it means something)."""
    cfg = make_cfg("scaled_linear", 1000)
    abar, bound = np.array(ref.alphas_cumprod(cfg)), f32.table_error_bound(cfg)
    table = _diffusers_lcm(cfg).alphas_cumprod
    for mutant in (torch.cat([table[1:], table[-1:]]), table.half().float()):
        with pytest.raises(AssertionError, match="outside the float32 budget"):
            _check_f32("alphas_cumprod", mutant, abar, bound)


def test_float32_budget_is_the_design_rule_to_first_order():
    """docs/design.md §8: for the default config the budget is (t + 1)·eps32 relative, to within the betas' 4 % share."""
    cfg = LCMConfig()
    t = np.arange(1000)
    ratio = f32.table_error_bound(cfg) / ((t + 1) * f32.EPS32)
    assert ratio.min() >= 1.0 and ratio.max() <= 1.04


def test_diffusers_cumprod_error_documented_fact():
    """docs/design.md §4: diffusers' default ᾱ has its largest relative error, ≈ 9.3e-7, at t = 513."""
    cfg = LCMConfig()
    abar = np.array(ref.alphas_cumprod(cfg))
    rel = np.abs(_diffusers_lcm(cfg).alphas_cumprod.double().numpy() - abar) / abar
    assert rel.argmax() == 513 and round(rel.max(), 8) == 9.3e-7


def _other_scheduler(schedule, T):
    if schedule == "exp":
        return diffusers.HeunDiscreteScheduler(num_train_timesteps=T, beta_schedule="exp")
    try:
        return diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule)
    except NotImplementedError:
        pytest.skip(f"this diffusers' DDPMScheduler has no {schedule!r} (laplace arrived in 0.37)")


@pytest.mark.parametrize("schedule", ("exp", "laplace", "squaredcos_cap_v2"))
@pytest.mark.parametrize("T", (1000, 37, 2))
def test_alpha_bar_betas_match_diffusers_within_one_float32_ulp(schedule, T):
    """betas_for_alpha_bar schedules: diffusers' float32 betas are within one float32 ulp of the exact β.

    Budget: diffusers evaluates β in float64 (error ≤ F64_ALPHA_BAR·β, see lcm_ref.oracle.budget) and rounds once to
    float32; rounding a value that close to β lands on one of β's two float32 neighbours, ≤ 1 float32 ulp away."""
    cfg = make_cfg(schedule, T)
    got = _other_scheduler(schedule, T).betas.double().numpy()
    exact = np.array(ref.betas(cfg))
    assert np.all(np.abs(got - exact) <= np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64))


@pytest.mark.parametrize("T", (1000, 37, 2))
def test_sigmoid_betas_match_ddpm_within_float32_budget(T):
    """DDPM's sigmoid betas (float32 linspace, sigmoid, scale, shift) are within the derived float32 budget."""
    cfg = make_cfg("sigmoid", T)
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="sigmoid", beta_start=cfg.beta_start,
                                    beta_end=cfg.beta_end)
    _check_f32("betas", sched.betas, np.array(ref.betas(cfg)), f32.betas_rel_err(cfg))
