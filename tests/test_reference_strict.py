"""profile="strict": one test per input that diffusers accepts but mishandles (docs/design.md §3, §6). Each asserts the
StrictError (a ValueError) and that its message names the parameter, and that the default diffusers profile
reproduces what diffusers does with the same input instead."""

import math
import warnings

import diffusers
import numpy as np
import pytest
import torch

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError, LCMRefWarning, StrictError

from diffusers_harness import SHAPE, diffusers_step, inputs, step_ratio

SCHED4 = [999, 759, 499, 259]


def strict_timesteps(**kwargs):
    return ref.set_timesteps(LCMConfig(), **kwargs, profile="strict")


def strict_step(cfg, m, t, x, **kwargs):
    kwargs.setdefault("schedule", SCHED4)
    return ref.step(cfg, m, t, x, profile="strict", **kwargs)


def diffusers_lcm(cfg=LCMConfig(), **set_kwargs):
    d = diffusers.LCMScheduler(**cfg.to_dict())
    d.set_timesteps(**(set_kwargs or dict(num_inference_steps=4)))
    return d


def assert_refused(param, fn, *args, **kwargs):
    with pytest.raises(StrictError, match=param) as info:
        fn(*args, **kwargs)
    assert info.value.parameter.split(".")[0] == param.split(".")[0] and isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize("n,diffusers_exc", [(0, ZeroDivisionError), (-1, ValueError)])
def test_num_inference_steps_not_positive(n, diffusers_exc):
    """n ≤ 0: strict names num_inference_steps; diffusers divides by zero (n = 0) or raises its strength message."""
    assert_refused("num_inference_steps", strict_timesteps, num_inference_steps=n)
    with pytest.raises(diffusers_exc):
        diffusers_lcm(num_inference_steps=n)
    with pytest.raises(diffusers_exc):
        ref.set_timesteps(LCMConfig(), n)


@pytest.mark.parametrize("orig,diffusers_exc", [(0, ZeroDivisionError), (-5, ValueError)])
def test_original_steps_not_positive(orig, diffusers_exc):
    """original_inference_steps ≤ 0: strict names it; diffusers: k = T // 0, or an empty grid."""
    assert_refused("original_inference_steps", strict_timesteps, num_inference_steps=4, original_inference_steps=orig)
    with pytest.raises(diffusers_exc):
        diffusers_lcm(num_inference_steps=4, original_inference_steps=orig)
    with pytest.raises(diffusers_exc):
        ref.set_timesteps(LCMConfig(), 4, original_inference_steps=orig)


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5, math.nan, math.inf])
def test_strength_outside_unit_interval(strength):
    """strength ∉ (0, 1]: strict names strength, for n and for custom timesteps; diffusers never checks it."""
    assert_refused("strength", strict_timesteps, num_inference_steps=1, strength=strength)
    assert_refused("strength", strict_timesteps, timesteps=SCHED4, strength=strength)


def test_strength_above_one_diffusers_quirk4():
    """Quirk 4: diffusers takes strength 1.5, schedules t = 1499 ≥ T and fails later in step with IndexError;
    the diffusers profile does the same."""
    d = diffusers_lcm(num_inference_steps=4, strength=1.5)
    sched = ref.timesteps(LCMConfig(), 4, strength=1.5)
    assert d.timesteps.tolist() == sched.tolist() and sched[0] == 1499
    m, x = inputs(1)
    with pytest.raises(IndexError):
        diffusers_step(d, m, d.timesteps[0], x, 0)
    with pytest.raises(IndexError):
        ref.step(LCMConfig(), m, int(sched[0]), x, schedule=sched, noise=m)


def test_custom_timesteps_not_integer():
    """Float custom timesteps: strict names timesteps; diffusers truncates 999.5 → 999 silently (quirk 2)."""
    assert_refused("timesteps", strict_timesteps, timesteps=[999.5, 499])
    assert diffusers_lcm(timesteps=[999.5, 499]).timesteps.tolist() == [999, 499]
    with pytest.warns(LCMRefWarning):
        assert ref.timesteps(LCMConfig(), timesteps=[999.5, 499]).tolist() == [999, 499]


@pytest.mark.filterwarnings("ignore::lcm_ref.errors.LCMRefWarning")
def test_custom_timesteps_negative():
    """Negative custom timesteps: strict names timesteps; diffusers accepts −1, where ᾱ[−1] wraps to ᾱ[T−1] and
    c_out(−1) < 0 flips the model's contribution (quirk 2). The diffusers profile matches diffusers' step there."""
    assert_refused("timesteps", strict_timesteps, timesteps=[999, 499, -1])
    cfg = LCMConfig()
    assert ref.boundary_scalings(cfg, -1)[1] < 0
    d = diffusers_lcm(cfg, timesteps=[999, 499, -1])
    sched = ref.timesteps(cfg, timesteps=[999, 499, -1])
    for i, t in enumerate(d.timesteps):
        m, x = inputs(10 + i)
        out, z = diffusers_step(d, m, t, x, 10 + i)
        assert step_ratio(cfg, out, m, int(t), x, z, schedule=sched, step_index=i) <= 1.0


def test_custom_timesteps_duplicate():
    """Duplicated custom timesteps: strict names timesteps ("no duplicates"); diffusers rejects them only as "not
    descending" (a plain ValueError), which the diffusers profile reproduces."""
    err = assert_refused("timesteps", strict_timesteps, timesteps=[999, 999, 499])
    assert "duplicates" in str(err)
    with pytest.raises(ValueError, match="descending"):
        diffusers_lcm(timesteps=[999, 999, 499])
    with pytest.raises(ValueError, match="descending"):
        ref.set_timesteps(LCMConfig(), timesteps=[999, 999, 499])


def test_custom_timesteps_empty():
    """timesteps=[]: strict names timesteps; diffusers fails with IndexError on timesteps[0]."""
    assert_refused("timesteps", strict_timesteps, timesteps=[])
    with pytest.raises(IndexError):
        diffusers_lcm(timesteps=[])
    with pytest.raises(IndexError):
        ref.set_timesteps(LCMConfig(), timesteps=[])


def test_timestep_not_in_schedule():
    """A timestep not in the schedule: strict names timestep; diffusers raises IndexError on the first step's
    lookup, and with set_begin_index (≥ 0.27) uses it unchecked; the diffusers profile does both."""
    cfg = LCMConfig()
    m, x = inputs(20)
    assert_refused("timestep", strict_step, cfg, m, 600, x, noise=m)
    assert_refused("timestep", strict_step, cfg, m, 600, x, noise=m, step_index=1)
    d = diffusers_lcm(cfg)
    with pytest.raises(IndexError):
        diffusers_step(d, m, 600, x, 0)
    with pytest.raises(IndexError):
        ref.step(cfg, m, 600, x, schedule=SCHED4, noise=m)
    if hasattr(d, "set_begin_index"):
        d = diffusers_lcm(cfg)
        d.set_begin_index(1)
        out, z = diffusers_step(d, m, 600, x, 1)
        assert step_ratio(cfg, out, m, 600, x, z, schedule=SCHED4, step_index=1) <= 1.0


def test_step_past_the_end():
    """A fifth step on a four-step schedule: strict names step_index; diffusers keeps re-noising at the timestep's
    own level (quirk 5), and the diffusers profile reproduces that step."""
    cfg = LCMConfig()
    m, x = inputs(30)
    assert_refused("step_index", strict_step, cfg, m, 259, x, noise=m, step_index=4)
    d = diffusers_lcm(cfg)
    for i, t in enumerate(d.timesteps):
        mi, xi = inputs(31 + i)
        diffusers_step(d, mi, t, xi, 31 + i)
    out, z = diffusers_step(d, m, 259, x, 40)
    assert not np.array_equal(out.prev_sample, out.denoised)
    assert step_ratio(cfg, out, m, 259, x, z, schedule=SCHED4, step_index=4) <= 1.0


@pytest.mark.parametrize("name", ["model_output", "sample", "noise"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input(name, bad):
    """NaN or inf in model_output, sample or noise: strict names the array; diffusers propagates it silently."""
    cfg = LCMConfig()
    m, x = inputs(50)
    z = inputs(51)[0]
    arrays = dict(model_output=m.copy(), sample=x.copy(), noise=z.copy())
    arrays[name][0, 0, 0, 0] = bad
    assert_refused(name, strict_step, cfg, arrays["model_output"], 999, arrays["sample"], noise=arrays["noise"])
    out = ref.step(cfg, arrays["model_output"], 999, arrays["sample"], schedule=SCHED4, noise=arrays["noise"])
    assert not np.isfinite(out.prev_sample[0, 0, 0, 0])


def test_shape_mismatch():
    """model_output (1, …) for a sample (2, …): strict names model_output.shape; diffusers broadcasts it and draws
    noise of model_output's shape; the diffusers profile broadcasts the same way and matches diffusers' step."""
    cfg = LCMConfig()
    m, x = inputs(60)
    m1 = m[:1].copy()
    assert_refused("model_output.shape", strict_step, cfg, m1, 999, x, noise=x)
    assert_refused("noise.shape", strict_step, cfg, m, 999, x, noise=m1)
    d = diffusers_lcm(cfg)
    out, z = diffusers_step(d, m1, 999, x, 61)
    assert z.shape == m1.shape and out.prev_sample.shape == x.shape
    assert step_ratio(cfg, out, m1, 999, x, z, schedule=SCHED4, step_index=0) <= 1.0


def test_epsilon_prediction_at_zero_alpha_bar():
    """Zero-SNR makes ᾱ[T−1] = 0: epsilon prediction at t = T−1 is refused (naming timestep); diffusers divides by
    zero (quirk 3) and returns inf/NaN, as does the diffusers profile, element for element."""
    cfg = LCMConfig(rescale_betas_zero_snr=True)
    m, x = inputs(70)
    x[0, 0, 0, 0] = m[0, 0, 0, 0]                 # x − m = 0 there: 0/0 = NaN; elsewhere ±inf
    err = assert_refused("timestep", strict_step, cfg, m, 999, x, noise=x)
    assert "quirk 3" in str(err)
    d = diffusers_lcm(cfg)
    out, z = diffusers_step(d, m, 999, x, 71)
    with np.errstate(invalid="ignore"):
        want = ref.step(cfg, m, 999, x, schedule=SCHED4, noise=z)
    for got, w in zip((out.prev_sample.numpy(), out.denoised.numpy()), want):
        assert np.isnan(got[0, 0, 0, 0]) and np.isinf(got).sum() == got.size - 1
        assert np.array_equal(np.isnan(got), np.isnan(w)) and np.array_equal(got[np.isinf(got)], w[np.isinf(w)])
    # v and sample prediction are fine there: strict accepts them.
    for kind in ("v_prediction", "sample"):
        assert np.all(np.isfinite(strict_step(cfg.replace(prediction_type=kind), m, 999, x, noise=x).prev_sample))


def test_custom_timesteps_with_strength_intended_result():
    """Quirk 1 fixed: in strict, custom timesteps + strength < 1 record the truncated length, so the last step
    returns denoised; strict step refuses a num_inference_steps that disagrees with the schedule. diffusers (and
    the diffusers profile) re-noise that last step to its own level."""
    cfg = LCMConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LCMRefWarning)
        strict = ref.set_timesteps(cfg, timesteps=SCHED4, strength=0.5, profile="strict")
        quirky = ref.set_timesteps(cfg, timesteps=SCHED4, strength=0.5)
    assert strict.timesteps.tolist() == quirky.timesteps.tolist() == [499, 259]
    assert (strict.num_inference_steps, quirky.num_inference_steps) == (2, 4)
    m, x = inputs(80)
    z = inputs(81)[0]
    last = ref.step(cfg, m, 259, x, schedule=strict.timesteps, noise=z, step_index=1,
                    num_inference_steps=strict.num_inference_steps, profile="strict")
    assert last.prev_sample is last.denoised
    assert_refused("num_inference_steps", strict_step, cfg, m, 259, x, schedule=quirky.timesteps, noise=z,
                   step_index=1, num_inference_steps=quirky.num_inference_steps)
    d = diffusers_lcm(cfg, timesteps=SCHED4, strength=0.5)
    m0, x0 = inputs(82)
    diffusers_step(d, m0, 499, x0, 82)
    out, z = diffusers_step(d, m, 259, x, 83)
    assert not np.array_equal(out.prev_sample, out.denoised)
    assert step_ratio(cfg, out, m, 259, x, z, schedule=quirky.timesteps, step_index=1,
                      num_inference_steps=quirky.num_inference_steps) <= 1.0


def test_strict_equals_diffusers_profile_on_valid_input():
    """Valid input: strict gives the same timesteps and bit-identical steps as the diffusers profile."""
    for kind in ("epsilon", "v_prediction", "sample"):
        cfg = LCMConfig(prediction_type=kind, rescale_betas_zero_snr=kind != "epsilon")
        for n in (1, 2, 4, 8):
            sched = ref.timesteps(cfg, n)
            assert sched.tolist() == ref.timesteps(cfg, n, profile="strict").tolist()
            for i, t in enumerate(sched):
                m, x = inputs(90 + i)
                z = inputs(95 + i)[0]
                a = ref.step(cfg, m, int(t), x, schedule=sched, noise=z)
                b = ref.step(cfg, m, int(t), x, schedule=sched, noise=z, profile="strict")
                assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_unknown_profile_named():
    """An unknown profile name is refused (LCMRefError naming profile), not silently treated as diffusers."""
    with pytest.raises(LCMRefError, match="profile"):
        ref.timesteps(LCMConfig(), 4, profile="lenient")
    with pytest.raises(LCMRefError, match="profile"):
        ref.step(LCMConfig(), np.zeros(SHAPE), 999, np.zeros(SHAPE), schedule=SCHED4, noise=np.zeros(SHAPE),
                 profile="Strict")


def test_noise_stream_reproduced_by_seed():
    """The harness's premise: diffusers draws exactly torch.randn(shape, generator, dtype) per non-last step."""
    d = diffusers_lcm()
    m, x = inputs(99)
    out, z = diffusers_step(d, m, 999, x, 5)
    sched = ref.timesteps(LCMConfig(), 4)
    c, dd = ref.noise_coefficients(LCMConfig(), 759)
    den = out.denoised.numpy().astype(np.float64)
    z_implied = (out.prev_sample.numpy() - np.float32(c) * out.denoised.numpy()) / np.float32(dd)
    # diffusers' prev = √ᾱ'·den + √(1−ᾱ')·z in float32 with its float32 ᾱ'_759 (relative error ≤ 760·eps32: ≤ 380
    # on √ᾱ', and 760·ᾱ'/(2(1−ᾱ')) ≤ 760 on √(1−ᾱ') as ᾱ'_759 < 2/3, in eps32); the product, the sum and the
    # inversion here (subtract, divide, the float32 c and dd) add ≤ 6·eps32·(c·|den| + dd·|z|). Divided by dd:
    e32 = 2.0 ** -23
    budget = (760 * e32 * (c * np.abs(den) + dd * np.abs(z)) + 6 * e32 * (c * np.abs(den) + dd * np.abs(z))) / dd
    assert np.all(np.abs(z_implied - z) <= budget) and sched[1] == 759 and den.shape == SHAPE
    assert not np.allclose(z, torch.randn(SHAPE, generator=torch.Generator().manual_seed(6)).numpy(), atol=0.1)


@pytest.mark.filterwarnings("ignore::lcm_ref.errors.LCMRefWarning")    # the grid cut to 10 points ends at 199
def test_custom_timesteps_cut_to_nothing_by_strength():
    """Custom timesteps with a strength that leaves int(n·strength) = 0 of them: strict names timesteps; diffusers
    (and the diffusers profile) return an empty schedule, so the first step fails later."""
    assert_refused("timesteps", strict_timesteps, timesteps=[999, 499], strength=0.2)
    assert diffusers_lcm(timesteps=[999, 499], strength=0.2).timesteps.tolist() == []
    assert ref.timesteps(LCMConfig(), timesteps=[999, 499], strength=0.2).tolist() == []
