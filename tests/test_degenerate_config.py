"""Configs diffusers accepts although their noise schedule is degenerate (docs/design.md §3), under both profiles:
``LCMConfig`` (accepts with an LCMRefWarning; ``check("strict")`` refuses), the reference (its tables are what
diffusers builds, exactly; ``step(profile="strict")`` refuses), ``TorchLCM`` and the drop-in ``LCMScheduler``
(``profile="diffusers"``, the drop-in's default, accepts and computes what diffusers computes; ``profile="strict"``
refuses at construction).

The two degenerate configs diffusers' own scheduler tests build, and which a drop-in must therefore accept, are here
in our own terms: a scaled_linear schedule running to β = 2 (beta_start=0.1, beta_end=2), and a ``trained_betas``
of two values with num_train_timesteps left at 1000.
"""

import math
import warnings
from fractions import Fraction

import diffusers
import numpy as np
import pytest
import torch

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError, LCMRefWarning, StrictError
from lcm_ref.config import DIFFUSERS_LCM_SCHEDULES
from lcm_ref.torch_impl import LCMScheduler, TorchLCM
from lcm_ref.torch_impl.bounds import check_scaled, forward_bound, step_bounds

#: (constructor keywords, the parameter a strict refusal names)
DEGENERATE = [
    (dict(beta_start=0.1, beta_end=2.0), "beta_end"),                   # β crosses 1: ᾱ changes sign
    (dict(trained_betas=(0.1, 0.3)), "trained_betas"),                  # 2 betas for 1000 timesteps
    (dict(beta_start=0.0), "beta_start"),                               # β_0 = 0: ᾱ_0 = 1
    (dict(beta_start=1.0), "beta_start"),                               # β_0 = 1: ᾱ = 0 from t = 0
    (dict(beta_schedule="linear", beta_start=-0.01), "beta_start"),     # β_0 < 0: ᾱ_0 > 1
    (dict(beta_schedule="sigmoid", beta_end=1.003), "beta_end"),        # β_{T-1} = 1.0005…
    (dict(trained_betas=(0.0,) * 1000), "trained_betas"),
    (dict(trained_betas=(1.5,) * 1000), "trained_betas"),
]
IDS = [f"{p}:{','.join(f'{k}={v!r:.12}' for k, v in kw.items())}" for kw, p in DEGENERATE]

#: a small degenerate config whose ᾱ is exact in rationals: β = linspace(0.5, 1.5, 10) crosses 1 between t = 4
#: and t = 5, so ᾱ_t alternates in sign from t = 5 on
SMALL = dict(num_train_timesteps=10, beta_schedule="linear", beta_start=0.5, beta_end=1.5, original_inference_steps=10)


def degenerate(**kw):
    with pytest.warns(LCMRefWarning):
        return LCMConfig(**kw)


# ---------------------------------------------------------------------------------------------------------------------
# LCMConfig
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,parameter", DEGENERATE, ids=IDS)
def test_config_accepts_degenerate_with_a_warning_and_strict_refuses(kw, parameter):
    """A degenerate config that diffusers' own constructor accepts is accepted too, with an LCMRefWarning naming
    the parameter; check("diffusers") keeps it, check("strict") raises StrictError naming the parameter. (sigmoid
    is one of the reference's schedules beyond diffusers' LCMScheduler, treated alike.)"""
    if kw.get("beta_schedule") in DIFFUSERS_LCM_SCHEDULES + (None,):
        diffusers.LCMScheduler(**kw)                    # diffusers accepts it (no exception)
    with pytest.warns(LCMRefWarning, match=parameter):
        cfg = LCMConfig(**kw)
    assert [d.parameter for d in cfg.degeneracies()][:1] == [parameter]
    assert cfg.check("diffusers") is cfg
    with pytest.raises(StrictError, match=parameter) as info:
        cfg.check("strict")
    assert info.value.parameter == parameter


@pytest.mark.parametrize("kw", [
    dict(), dict(num_train_timesteps=3, trained_betas=(0.1, 0.2, 1.0)), dict(beta_schedule="linear", beta_end=1.0),
    dict(beta_schedule="sigmoid", beta_end=1.0), dict(rescale_betas_zero_snr=True), dict(beta_start=0.02),
    dict(beta_schedule="squaredcos_cap_v2", beta_end=5.0), dict(num_train_timesteps=1, beta_end=3.0),
], ids=repr)
def test_sound_configs_are_silent(kw):
    """Every β in (0, 1), a last β of exactly 1 (zero terminal SNR), decreasing betas, schedules that do not read
    beta_start / beta_end, and a one-step schedule that never reaches beta_end: no warning, nothing to refuse."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = LCMConfig(**kw)
    assert cfg.degeneracies() == () and cfg.check("strict") is cfg


def test_check_names_a_bad_profile():
    with pytest.raises(LCMRefError, match="profile"):
        LCMConfig().check("lenient")


# ---------------------------------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------------------------------

def test_reference_tables_of_a_degenerate_config_are_exact():
    """β crossing 1: the reference's tables are diffusers' formulas in exact arithmetic, rounded once, checked here
    against rational arithmetic (Fraction linspace, Fraction products): ᾱ turns negative, and √ᾱ is NaN exactly
    where ᾱ < 0 (torch's sqrt of a negative number), √(1 − ᾱ) is real throughout."""
    cfg = degenerate(**SMALL)
    b0, b1 = Fraction(0.5), Fraction(1.5)
    beta = [b0 + (b1 - b0) * Fraction(i, 9) for i in range(10)]
    abar, acc = [], Fraction(1)
    for b in beta:
        acc *= 1 - b
        abar.append(acc)
    assert ref.betas(cfg).tolist() == [float(b) for b in beta]
    assert ref.alphas_cumprod(cfg).tolist() == [float(a) for a in abar]
    negative = np.array([a < 0 for a in abar])
    assert negative[5:].any() and not negative[:5].any()
    root = ref.sqrt_alphas_cumprod(cfg)
    assert np.array_equal(np.isnan(root), negative)
    for t in np.flatnonzero(~negative):     # within 1 ulp of √ of the correctly rounded ᾱ (the exact root is ½ ulp)
        assert abs(root[t] - math.sqrt(float(abar[t]))) <= math.ulp(root[t])
    assert np.isfinite(ref.sqrt_one_minus_alphas_cumprod(cfg)).all()


def test_reference_tables_follow_a_short_trained_betas():
    """trained_betas of length 2 with T = 1000: the tables have 2 entries (diffusers sizes them by trained_betas),
    a coefficient at a timestep past them raises IndexError, as diffusers' alphas_cumprod[t] does, and t = −1
    wraps to the table's last entry (ᾱ[1], not ᾱ[999])."""
    cfg = degenerate(trained_betas=(0.1, 0.3))
    one_minus = [1 - Fraction(0.1), 1 - Fraction(0.3)]
    assert ref.betas(cfg).tolist() == [0.1, 0.3]
    assert ref.alphas_cumprod(cfg).tolist() == [float(one_minus[0]), float(one_minus[0] * one_minus[1])]
    for t in (2, 999):
        with pytest.raises(IndexError):
            ref.denoised_coefficients(cfg, t)
        with pytest.raises(IndexError):
            ref.noise_coefficients(cfg, t)
    assert ref.x0_coefficients(cfg, -1) == ref.x0_coefficients(cfg, 1)


def _steps(run_step, ts):
    """Outputs (denoised, prev) of a stepper over schedule ``ts`` on fixed inputs (x, m, z per step)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i, t in enumerate(ts):
        x, m, z = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
        out.append((x, m, z if i < len(ts) - 1 else None, run_step(i, int(t), x, m, z)))
    return out


def test_reference_steps_a_degenerate_config_as_diffusers_does_and_strict_refuses():
    """profile="diffusers": every step runs and gives NaN exactly where diffusers' own scheduler does (epsilon
    prediction divides by √ᾱ_t, re-noising multiplies by √ᾱ_next: NaN where either ᾱ is negative), and finite
    values elsewhere. profile="strict" refuses the step, naming beta_end; its schedule is accepted (it does not
    depend on the betas)."""
    cfg = degenerate(**SMALL)
    ts = ref.timesteps(cfg, 10, profile="strict")
    assert ts.tolist() == list(range(9, -1, -1))
    theirs = diffusers.LCMScheduler(**cfg.to_dict())
    theirs.set_timesteps(10)

    def diffusers_step(i, t, x, m, z):
        out = theirs.step(m.float(), theirs.timesteps[i], x.float(), generator=None)
        return out.denoised, out.prev_sample

    def reference_step(i, t, x, m, z):
        out = ref.step(cfg, m, t, x, schedule=ts, noise=z if i < 9 else None, step_index=i)
        return out.denoised, out.prev_sample

    ours = _steps(reference_step, ts)
    torch.manual_seed(0)
    for i, (x, m, z, (den, prev)) in enumerate(ours):
        d_den, d_prev = diffusers_step(i, int(ts[i]), x, m, z)
        assert np.array_equal(np.isnan(den), d_den.isnan().numpy()), ts[i]
        assert np.array_equal(np.isnan(prev), d_prev.isnan().numpy()), ts[i]
    nan_den = [bool(np.isnan(den).all()) for *_, (den, _) in ours]
    nan_prev = [bool(np.isnan(prev).all()) for *_, (_, prev) in ours]
    negative = ref.alphas_cumprod(cfg)[ts] < 0
    assert nan_den == negative.tolist()
    assert nan_prev == [bool(negative[i] or (i < 9 and negative[i + 1])) for i in range(10)]
    assert all(np.isfinite(den).all() for *_, (den, _) in ours if not np.isnan(den).any())
    x, m, z, _ = ours[0]
    with pytest.raises(StrictError, match="beta_end"):
        ref.step(cfg, m, 9, x, schedule=ts, noise=z, step_index=0, profile="strict")


def test_reference_strict_step_refuses_a_short_trained_betas():
    cfg = degenerate(trained_betas=(0.1, 0.3), original_inference_steps=2)
    x = np.ones((1, 2, 2, 2))
    with pytest.raises(StrictError, match="trained_betas"):
        ref.step(cfg, x, 1, x, schedule=[1, 0], noise=x, profile="strict")
    assert np.isfinite(ref.step(cfg, x, 1, x, schedule=[1, 0], noise=x).prev_sample).all()


# ---------------------------------------------------------------------------------------------------------------------
# TorchLCM and the drop-in
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,parameter", DEGENERATE[:2], ids=IDS[:2])
def test_strict_profile_refuses_at_construction(kw, parameter):
    """TorchLCM (strict by default) and the drop-in with profile="strict" refuse a degenerate config when built,
    naming the parameter; the strict drop-in gives no warning before its error."""
    cfg = degenerate(**kw)
    with pytest.raises(StrictError, match=parameter):
        TorchLCM(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(StrictError, match=parameter) as info:
            LCMScheduler(**kw, profile="strict")
    assert info.value.parameter == parameter
    assert TorchLCM(cfg, profile="diffusers").profile == "diffusers"


def test_dropin_profile_is_checked_and_stays_out_of_the_config():
    with pytest.raises(LCMRefError, match="profile"):
        LCMScheduler(profile="lenient")
    with pytest.raises(LCMRefError, match="profile"):
        TorchLCM(LCMConfig(), profile="lenient")
    assert LCMScheduler(profile="strict").profile == "strict" and "profile" not in LCMScheduler().config


def test_dropin_steps_beta_end_2_as_diffusers_does():
    """beta_start=0.1, beta_end=2 (β crosses 1 near t = 600): the drop-in (default profile) accepts it with a
    warning, schedules as diffusers, steps at t = 99 (ᾱ ≈ 3.3e-7, sound there) within the derived float32 bounds
    of the reference, is non-finite at t = 999 where diffusers is (ᾱ_999 < 0 exactly, −0 in float32), and its
    config round trip through save / load gives the same step."""
    kw = dict(beta_start=0.1, beta_end=2.0)
    with pytest.warns(LCMRefWarning, match="beta_end"):
        ours = LCMScheduler(**kw)
    theirs = diffusers.LCMScheduler(**kw)
    cfg = ours.lcm_config
    for s in (ours, theirs):
        s.set_timesteps(10)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist() == list(range(999, 0, -100))
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    m = 0.1 * x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LCMRefWarning)
        first = {name: s.step(m, s.timesteps[0], x, generator=torch.manual_seed(0)) for name, s in
                 (("ours", ours), ("theirs", theirs))}
        again = LCMScheduler.from_config(ours.config)
    assert not first["ours"].denoised.isfinite().any() and not first["theirs"].denoised.isfinite().any()
    sched = ours.timesteps.numpy()
    bound_den, bound_prev = step_bounds(torch.float32)
    for s in (ours, again):
        s.set_timesteps(10)
        s.set_begin_index(9)
        out = s.step(m, 99, x, generator=torch.manual_seed(0))
        want = ref.step(cfg, m, 99, x, schedule=sched, step_index=9)
        terms = ref.step_terms(cfg, m, 99, x, schedule=sched, step_index=9)
        check_scaled(out.denoised, want.denoised, terms.denoised, torch.float32, bound_den, "denoised at 99")
        check_scaled(out.prev_sample, want.prev_sample, terms.prev_sample, torch.float32, bound_prev, "prev at 99")


def test_dropin_steps_a_sign_flipping_schedule_nan_for_nan_with_the_reference():
    """The small β-crossing-1 config through the drop-in's whole schedule: within the derived bounds of the
    reference (diffusers profile) at every step, NaN exactly where the reference is NaN."""
    with pytest.warns(LCMRefWarning):
        ours = LCMScheduler(**SMALL)
    cfg = ours.lcm_config
    ours.set_timesteps(10)
    ts = ours.timesteps.numpy()
    bound_den, bound_prev = step_bounds(torch.float64)

    def dropin_step(i, t, x, m, z):
        return ours.step(m, ours.timesteps[i], x, generator=torch.Generator().manual_seed(i), return_dict=False)

    for i, (x, m, _, (prev, den)) in enumerate(_steps(dropin_step, ts)):
        z = None if i == 9 else torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype)
        want = ref.step(cfg, m, int(ts[i]), x, schedule=ts, noise=z, step_index=i)
        terms = ref.step_terms(cfg, m, int(ts[i]), x, schedule=ts, noise=z, step_index=i)
        check_scaled(den, want.denoised, terms.denoised, torch.float64, bound_den, f"denoised at {ts[i]}")
        check_scaled(prev, want.prev_sample, terms.prev_sample, torch.float64, bound_prev, f"prev at {ts[i]}")


def test_dropin_takes_a_short_trained_betas_as_diffusers_does(tmp_path):
    """trained_betas=[0.1, 0.3] with T = 1000 (default profile): the same 2-entry float32 betas as diffusers, a
    save / load round trip keeps them, set_timesteps succeeds as in diffusers, stepping at a timestep past the
    table raises IndexError as in diffusers, add_noise at t ∈ {0, 1} is within the derived bound of the
    reference."""
    betas = np.array([0.1, 0.3])
    with pytest.warns(LCMRefWarning, match="trained_betas"):
        ours = LCMScheduler(trained_betas=betas)
    theirs = diffusers.LCMScheduler(trained_betas=betas)
    assert ours.betas.tolist() == theirs.betas.tolist()
    ours.save_pretrained(tmp_path)
    with pytest.warns(LCMRefWarning):
        loaded = LCMScheduler.from_pretrained(tmp_path)
    assert loaded.betas.tolist() == ours.betas.tolist() and len(loaded) == 1000
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for s in (ours, theirs):
        s.set_timesteps(4)
        assert s.timesteps.tolist() == [999, 759, 499, 259]
        with pytest.raises(IndexError):
            s.step(x, s.timesteps[0], x, generator=torch.manual_seed(0))
    cfg, tn = ours.lcm_config, np.array([0, 1])
    xd, zd = x.double().numpy(), (0.5 * x).double().numpy()
    c = ref.sqrt_alphas_cumprod(cfg)[tn].reshape(-1, 1, 1, 1)
    d = ref.sqrt_one_minus_alphas_cumprod(cfg)[tn].reshape(-1, 1, 1, 1)
    check_scaled(ours.add_noise(x, 0.5 * x, torch.tensor(tn)), ref.add_noise(cfg, xd, zd, tn),
                 c * np.abs(xd) + d * np.abs(zd), torch.float32, forward_bound(torch.float32), "add_noise")
