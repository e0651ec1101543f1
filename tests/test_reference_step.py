"""ref.step against diffusers' LCMScheduler.step (same noise, derived float32 budget), against an exact mpmath step
(≤ 4 scaled eps64), and the properties that need no other implementation."""

import itertools

import diffusers
import numpy as np
import pytest
import torch

import lcm_ref.oracle.budget as f32
import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError
from lcm_ref.reference.exact import exact_step, make_cfg
from lcm_ref.reference.exact import scaled_error as exact_scaled_error

from diffusers_harness import SCHED, SHAPE, compare_with_diffusers, diffusers_step, inputs, step_ratio

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
MODES = {"none": {}, "clip": dict(clip_sample=True, clip_sample_range=0.9),
         "threshold": dict(thresholding=True, sample_max_value=3.0)}
SCALINGS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def cfg_for(schedule="scaled_linear", prediction="epsilon", mode="none", zero_snr=False, scaling=10.0, T=1000):
    return make_cfg(schedule, T, zero_snr, prediction_type=prediction, timestep_scaling=scaling, **MODES[mode])


GRID = list(itertools.product(SCHEDULES, PREDICTIONS, MODES, (False, True)))


@pytest.mark.parametrize("schedule,prediction,mode,zero_snr", GRID, ids=["-".join(map(str, g)) for g in GRID])
def test_step_matches_diffusers_within_float32_budget(schedule, prediction, mode, zero_snr):
    """Every schedule × prediction × clip/threshold × zero-SNR × timestep_scaling decade: diffusers' float32 step is
    within the derived float32 budget of the reference, prev_sample and denoised, every step of the schedule."""
    for scaling in SCALINGS:
        cfg = cfg_for(schedule, prediction, mode, zero_snr, scaling)
        worst = compare_with_diffusers(cfg, seed=SCALINGS.index(scaling))
        assert worst <= 1.0, f"{cfg}: scaled error is {worst:.3g} × the derived float32 budget"


MUTANTS = {
    "off-by-one previous timestep": (cfg_for(), dict(ref_schedule=[999, 499, 259, 139, 19, 0])),
    "noise on the last step": (cfg_for(), dict(ref_n=7)),
    "sigma_data 0.6 (= timestep_scaling x 5/6)": (cfg_for(scaling=0.1), dict(ref_cfg=cfg_for(scaling=0.1 * 5 / 6))),
    "v_prediction read as sample": (cfg_for(prediction="v_prediction"), dict(ref_cfg=cfg_for(prediction="sample"))),
}


@pytest.mark.parametrize("name", MUTANTS)
def test_budget_catches_mutants(name):
    """The float32 budget is tight enough to fail a reference with a typical porting bug (so passing means something)."""
    cfg, ref_kwargs = MUTANTS[name]
    assert compare_with_diffusers(cfg, **ref_kwargs) > 1.0, name


@pytest.mark.filterwarnings("ignore:custom timesteps:lcm_ref.errors.LCMRefWarning")    # 759 is past the cut grid
def test_custom_strength_quirk1_matches_diffusers():
    """Quirk 1 reproduced: custom timesteps + strength 0.5 re-noise the last step to its own level, as diffusers."""
    cfg = cfg_for()
    assert compare_with_diffusers(cfg, schedule=[999, 759, 499, 259], strength=0.5) <= 1.0
    # ... and the strict reading (the last step returns denoised) is far from diffusers there.
    assert compare_with_diffusers(cfg, schedule=[999, 759, 499, 259], strength=0.5, ref_n=2) > 1.0


@pytest.mark.skipif(not hasattr(diffusers.LCMScheduler, "set_begin_index"), reason="set_begin_index: diffusers >= 0.27")
def test_begin_index_matches_diffusers():
    """set_begin_index(i): diffusers takes step i without looking the timestep up; ref.step(step_index=i) agrees,
    also for a timestep that is not in the schedule (600)."""
    cfg = cfg_for()
    d = diffusers.LCMScheduler(**cfg.to_dict())
    d.set_timesteps(4)
    d.set_begin_index(1)
    m, x = inputs(7)
    out, z = diffusers_step(d, m, 600, x, 3)
    assert step_ratio(cfg, out, m, 600, x, z, schedule=ref.timesteps(cfg, 4), step_index=1) <= 1.0


# --- against an exact step in mpmath -------------------------------------------------------------------------------

def reference_bound(cfg, m, t, x):
    """The reference's first-order error in scaled eps64 (reference.py docstring), as (prev, denoised):
    fused affine path 3 / 1.5; clip 3.5 / 3; thresholding 4 + 2e_s / 3.5 + 2e_s, where e_s is the threshold divisor's
    relative error: the exact quantile of x0 values each within 1.5 eps of Σ|x0 terms|, rounded once (0.5 eps),
    e_s = (1.5·max Σ|x0 terms| + 0.5·s)/s per batch element; clamp and division each see it once."""
    if cfg.thresholding:
        p, q = ref.x0_coefficients(cfg, t)
        x0 = m if cfg.prediction_type == "sample" else p * x + q * m
        x0t = np.abs(m) if cfg.prediction_type == "sample" else np.abs(p * x) + np.abs(q * m)
        s = np.clip(np.quantile(np.abs(x0.reshape(len(x), -1)), cfg.dynamic_thresholding_ratio, axis=1),
                    1, cfg.sample_max_value)
        e_s = (1.5 * x0t.reshape(len(x), -1).max(axis=1) + 0.5 * s) / s
        e_s = e_s.reshape((-1,) + (1,) * (x.ndim - 1))
        return 4 + 2 * e_s, 3.5 + 2 * e_s
    return (3.5, 3.0) if cfg.clip_sample else (3.0, 1.5)


MP_GRID = list(itertools.product(("scaled_linear", "squaredcos_cap_v2"), PREDICTIONS, MODES, (False, True)))


@pytest.mark.parametrize("schedule,prediction,mode,zero_snr", MP_GRID, ids=["-".join(map(str, g)) for g in MP_GRID])
def test_step_within_four_scaled_eps64_of_mpmath(schedule, prediction, mode, zero_snr):
    """ref.step is within its derived bound (≤ 4 scaled eps64 unless thresholding adds its divisor's error) of the
    exact step, both outputs, every step, two timestep_scaling values."""
    shape = (2, 3, 2, 2)
    worst = 0.0
    for scaling in (0.1, 10.0):
        cfg = cfg_for(schedule, prediction, mode, zero_snr, scaling)
        for i, t in enumerate(SCHED):
            if zero_snr and prediction == "epsilon" and t == 999:
                continue                          # x0 = ±inf: no exact value (quirk 3, test_reference_strict.py)
            rng = np.random.default_rng(1000 + i)
            m, x, z = (rng.standard_normal(shape) * 2 for _ in range(3))
            last = i == len(SCHED) - 1
            kw = dict(schedule=SCHED, noise=z, step_index=i)
            got, terms = ref.step(cfg, m, t, x, **kw), ref.step_terms(cfg, m, t, x, **kw)
            e_prev, e_den = exact_step(cfg, m, t, x, z, SCHED[i + 1] if not last else -1, last)
            k_prev, k_den = reference_bound(cfg, m, t, x)
            for g, e, tm, k in ((got.prev_sample, e_prev, terms.prev_sample, k_prev),
                                (got.denoised, e_den, terms.denoised, k_den)):
                ratio = exact_scaled_error(g, e, tm).reshape(g.shape) / k
                worst = max(worst, float(ratio.max()))
    assert worst <= 1.0, f"{worst:.3g} × the derived bound"


def test_mpmath_comparison_catches_a_one_ulp_coefficient_error():
    """Mutant: c_out perturbed by a few ulp makes the exact comparison fail (the bound is that sharp)."""
    cfg = cfg_for(scaling=0.1)
    rng = np.random.default_rng(5)
    m, x = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))
    c_skip, c_out, p, q, a, b = ref.tables.step_coefficients(cfg, 259)
    bad = (a + 8 * np.spacing(a)) * x + b * m
    exact = exact_step(cfg, m, 259, x, None, -1, True)[1]
    terms = ref.step_terms(cfg, m, 259, x, schedule=[259]).denoised
    assert exact_scaled_error(bad, exact, terms).max() > 1.5
    assert exact_scaled_error(ref.step(cfg, m, 259, x, schedule=[259]).denoised, exact, terms).max() <= 1.5


# --- properties --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scaling", SCALINGS + (0.0,))
def test_c_skip_plus_c_out_squared_is_one(scaling):
    """c_skip + c_out² = 1 for every t in [−999, 999], to 2 eps (each rounded once: 0.5·c_skip + (1 + 0.5)·c_out²
    from c_out's rounding doubled by squaring and the square's rounding, + 0.5 for the sum; c_skip + c_out² = 1)."""
    cfg = LCMConfig(timestep_scaling=scaling)
    c_skip, c_out = ref.boundary_scalings(cfg, np.arange(-999, 1000))
    assert np.max(np.abs(c_skip + c_out ** 2 - 1)) <= 2 * 2.0 ** -52
    # Mutant: c_out without the square root (u/(u² + σ²)) breaks the identity wherever u ≠ 0 and σ² + u² ≠ 1.
    u = np.arange(1, 1000) * scaling
    if scaling:
        assert np.max(np.abs(c_skip[1000:] + (u / (u ** 2 + 0.25)) ** 2 - 1)) > 1e-3


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_step_at_t0_returns_its_input(prediction, mode):
    """c_skip(0) = 1 and c_out(0) = 0 exactly, so the step at t = 0 returns the sample bit for bit (last step), and
    denoised is the sample on a non-last step too."""
    cfg = cfg_for(prediction=prediction, mode=mode)
    assert ref.boundary_scalings(cfg, 0) == (1.0, 0.0)
    m, x = inputs(11)
    out = ref.step(cfg, m, 0, x, schedule=[259, 0])
    assert np.array_equal(out.prev_sample, x) and np.array_equal(out.denoised, x)
    z = inputs(12)[0]
    assert np.array_equal(ref.step(cfg, m, 0, x, schedule=[0, -1], noise=z).denoised, x)


def _recovery_bound(cfg, t, x0, eps, xt, mo):
    """|x0_pred − x0| bound (eps64 units × values): x_t = c·x0 + d·ε carries 1.5 eps·(c|x0| + d|ε|) (two rounded
    coefficients, two products, a sum); the v target carries 1.5 eps·(c|ε| + d|x0|) likewise; x0_pred = p·x_t + q·m
    adds 1.5 eps·(|p·x_t| + |q·m|) and passes the input errors through |p|, |q|."""
    c, d = ref.sqrt_alphas_cumprod(cfg)[t], ref.sqrt_one_minus_alphas_cumprod(cfg)[t]
    p, q = ref.x0_coefficients(cfg, t)
    e_x = 1.5 * (c * np.abs(x0) + d * np.abs(eps))
    e_m = 1.5 * (c * np.abs(eps) + d * np.abs(x0)) if cfg.prediction_type == "v_prediction" else 0.0
    return 2.0 ** -52 * (abs(p) * e_x + abs(q) * e_m + 1.5 * (np.abs(p * xt) + np.abs(q * mo))) * (1 + 1e-12)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_add_noise_then_step_recovers_x0(prediction):
    """x_t = add_noise(x0, ε, t) and the true target (ε, v = get_velocity(x0, ε, t), or x0) give back x0 through
    x0_pred, and denoised = c_out·x0 + c_skip·x_t, within the derived rounding budget, at every grid timestep."""
    cfg = cfg_for(prediction=prediction)
    rng = np.random.default_rng(3)
    x0, eps = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    for t in SCHED + [0]:
        xt = ref.add_noise(cfg, x0, eps, t)
        mo = {"epsilon": eps, "sample": x0, "v_prediction": ref.get_velocity(cfg, x0, eps, t)}[prediction]
        p, q = ref.x0_coefficients(cfg, t)
        bound = _recovery_bound(cfg, t, x0, eps, xt, mo)
        assert np.all(np.abs(p * xt + q * mo - x0) <= bound), t
        c_skip, c_out = ref.boundary_scalings(cfg, t)
        den = ref.step(cfg, mo, t, xt, schedule=[t]).denoised
        # denoised = c_out·x0_pred + c_skip·x_t fused: its own 1.5 eps·Σ|terms| plus c_out·(x0_pred's bound), and
        # the comparison value c_out·x0 + c_skip·x_t rounds twice more (1.5 eps of its terms).
        terms = ref.step_terms(cfg, mo, t, xt, schedule=[t]).denoised
        slack = 2.0 ** -52 * (3 * terms) + abs(c_out) * bound
        assert np.all(np.abs(den - (c_out * x0 + c_skip * xt)) <= slack), t
    # Mutant: the v target with its sign flipped (a common port bug) does not recover x0.
    if prediction == "v_prediction":
        xt = ref.add_noise(cfg, x0, eps, 499)
        p, q = ref.x0_coefficients(cfg, 499)
        assert np.max(np.abs(p * xt - q * ref.get_velocity(cfg, x0, eps, 499) - x0)) > 0.1


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_step_is_linear_without_clip(prediction):
    """Without clip/threshold a step is linear in (model_output, sample, noise): ×2 commutes with every rounding
    (bit-exact), and additivity holds within 9 scaled eps64 of the two parts' terms (≤ 4 each for the three steps
    taken, 0.5 for rounding the summed inputs, 0.5 for the comparison's sum)."""
    cfg = cfg_for(prediction=prediction)
    (m1, x1), (m2, x2), (z1, z2) = inputs(21), inputs(22), inputs(23)
    for i, t in enumerate(SCHED[:-1]):
        kw = dict(schedule=SCHED, step_index=i)
        one = ref.step(cfg, m1, t, x1, noise=z1, **kw)
        two = ref.step(cfg, 2 * m1, t, 2 * x1, noise=2 * z1, **kw)
        assert np.array_equal(two.prev_sample, 2 * one.prev_sample) and np.array_equal(two.denoised, 2 * one.denoised)
        a, b = one, ref.step(cfg, m2, t, x2, noise=z2, **kw)
        s = ref.step(cfg, m1.astype(np.float64) + m2, t, x1.astype(np.float64) + x2, noise=z1.astype(np.float64) + z2,
                     **kw)
        ta, tb = ref.step_terms(cfg, m1, t, x1, noise=z1, **kw), ref.step_terms(cfg, m2, t, x2, noise=z2, **kw)
        for k in range(2):
            assert np.max(ref.scaled_error(s[k], a[k] + b[k], ta[k] + tb[k], "float64")) <= 9


def test_linearity_check_catches_clip():
    """Mutant input: with clip_sample on and inputs past the range the same additivity check fails."""
    cfg = cfg_for(mode="clip")
    (m1, x1), (m2, x2) = inputs(21), inputs(22)
    a, b = (ref.step(cfg, m, 499, x, schedule=SCHED, step_index=2, noise=x) for m, x in ((m1, x1), (m2, x2)))
    s = ref.step(cfg, m1 + m2, 499, x1 + x2, schedule=SCHED, step_index=2, noise=x1 + x2)
    terms = ref.step_terms(cfg, m1, 499, x1, schedule=SCHED, step_index=2, noise=x1)[0]
    assert np.max(ref.scaled_error(s[0], a[0] + b[0], 2 * terms, "float64")) > 9


@pytest.mark.parametrize("schedule", ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace",
                                      "trained_betas"))
@pytest.mark.parametrize("T", (1000, 37, 2))
def test_alphas_cumprod_monotone_and_zero_snr(schedule, T):
    """ᾱ is strictly decreasing in (0, 1]; zero-SNR keeps ᾱ[0] bit for bit, makes ᾱ[T−1] exactly 0 and stays
    strictly decreasing."""
    plain = ref.alphas_cumprod(make_cfg(schedule, T))
    assert np.all(np.diff(plain) < 0) and plain[0] <= 1 and plain[-1] > 0
    zs = ref.alphas_cumprod(make_cfg(schedule, T, zero_snr=True))
    assert zs[0] == plain[0] and zs[-1] == 0.0 and np.all(np.diff(zs) < 0)


def test_last_step_rule():
    """The last step returns denoised with no noise (none needed, any given is ignored); any other step needs noise
    and adds it at the next timestep's level; past the schedule's end the level is the timestep's own (quirk 5)."""
    cfg = cfg_for()
    m, x = inputs(31)
    z = inputs(32)[0]
    last = ref.step(cfg, m, 259, x, schedule=[999, 259])
    assert last.prev_sample is last.denoised
    assert np.array_equal(ref.step(cfg, m, 259, x, schedule=[999, 259], noise=z).prev_sample, last.denoised)
    with pytest.raises(LCMRefError, match="noise"):
        ref.step(cfg, m, 999, x, schedule=[999, 259])
    z64 = z.astype(np.float64)        # (a Python float times a float32 array stays float32 under NumPy 2)
    first = ref.step(cfg, m, 999, x, schedule=[999, 259], noise=z)
    c, d = ref.noise_coefficients(cfg, 259)
    assert np.array_equal(first.prev_sample, c * first.denoised + d * z64)
    past = ref.step(cfg, m, 259, x, schedule=[999, 259], noise=z, step_index=1, num_inference_steps=3)
    assert np.array_equal(past.prev_sample, c * past.denoised + d * z64)


def test_sample_is_chained_step():
    """ref.sample (Algorithm 3) equals chaining ref.step with the same noises, bit for bit."""
    cfg = cfg_for(prediction="v_prediction")
    sched = ref.timesteps(cfg, 4)
    x_T = inputs(41)[1].astype(np.float64)
    noises = [inputs(42 + i)[0] for i in range(3)]

    def model_fn(x, t):
        return np.tanh(x) * 0.5 + t / 1000.0

    x = x_T
    for i, t in enumerate(sched):
        x = ref.step(cfg, model_fn(x, int(t)), int(t), x, schedule=sched, noise=noises[i] if i < 3 else None,
                     step_index=i).prev_sample
    assert np.array_equal(ref.sample(cfg, model_fn, x_T, sched, noises), x)
    with pytest.raises(LCMRefError, match="noises"):
        ref.sample(cfg, model_fn, x_T, sched, noises[:2])


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("zero_snr", (False, True))
def test_add_noise_and_velocity_match_diffusers(schedule, zero_snr):
    """add_noise and get_velocity against diffusers (float32, one timestep per batch element), within the float32
    budget: √ᾱ and √(1−ᾱ) as in the step (lcm_ref.oracle.budget.coefficient_errors), two products and a sum."""
    cfg = make_cfg(schedule, 1000, zero_snr)
    d = diffusers.LCMScheduler(**cfg.to_dict())
    rng = np.random.default_rng(51)
    ts = np.array([0, 19, 259, 499, 513, 999, 998, 1])
    x0 = rng.standard_normal((len(ts), 3, 4)).astype(np.float32)
    eps = rng.standard_normal((len(ts), 3, 4)).astype(np.float32)
    k = np.array([max(f32.compound(e, f32.U, f32.U) for e in f32.coefficient_errors(cfg, int(t))) for t in ts])
    k = (k / f32.EPS32 + 4 * f32.EPS64 / f32.EPS32)[:, None, None]
    c, dd = ref.sqrt_alphas_cumprod(cfg)[ts][:, None, None], ref.sqrt_one_minus_alphas_cumprod(cfg)[ts][:, None, None]
    got = d.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(ts))
    want = ref.add_noise(cfg, x0, eps, ts)
    assert np.all(ref.scaled_error(got, want, c * np.abs(x0) + dd * np.abs(eps), "float32") <= k)
    got = d.get_velocity(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(ts))
    want = ref.get_velocity(cfg, x0, eps, ts)
    assert np.all(ref.scaled_error(got, want, c * np.abs(eps) + dd * np.abs(x0), "float32") <= k)
