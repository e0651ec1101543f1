"""The compact subset that must pass against every supported diffusers: the current release (main venv) and 0.26.3,
the version the design was checked against (``make test-026``). Features newer than 0.26.3 are guarded by version."""

import itertools
import logging

import diffusers
import numpy as np
import pytest
import torch
from packaging.version import Version

import lcm_ref.oracle.budget as f32
import lcm_ref.reference as ref
from lcm_ref import LCMConfig
from lcm_ref.reference.exact import make_cfg

from diffusers_harness import SHAPE, compare_with_diffusers, diffusers_step, inputs, step_ratio

VERSION = Version(diffusers.__version__)


def test_config_defaults_equal_this_diffusers():
    """LCMConfig's defaults equal this diffusers' LCMScheduler config."""
    want = {k: v for k, v in diffusers.LCMScheduler().config.items() if not k.startswith("_")}
    assert LCMConfig().to_dict() == want


def _lcm_timesteps(T, **kwargs):
    d = diffusers.LCMScheduler(num_train_timesteps=T)
    logging.getLogger("diffusers.schedulers.scheduling_lcm").disabled = True
    try:
        d.set_timesteps(**kwargs)
    finally:
        logging.getLogger("diffusers.schedulers.scheduling_lcm").disabled = False
    return d.timesteps.tolist(), d.num_inference_steps


@pytest.mark.parametrize("T", (1000, 999, 37))
def test_timestep_grid(T):
    """Every n for the original steps and strengths pipelines use, and NumPy's near-ties: the same integers."""
    for orig in (50, 30, 4, 1):
        if orig > T:
            continue
        for strength in (1.0, 0.75, 0.6, 0.58, 0.5, 0.29):
            for n in range(1, int(orig * strength) + 1):
                kw = dict(num_inference_steps=n, original_inference_steps=orig, strength=strength)
                cfg = LCMConfig(num_train_timesteps=T)
                assert ref.timesteps(cfg, **kw).tolist() == _lcm_timesteps(T, **kw)[0], kw


@pytest.mark.filterwarnings("ignore::lcm_ref.errors.LCMRefWarning")
@pytest.mark.parametrize("timesteps,strength", [([999, 759, 499, 259], 1.0), ([999, 759, 499, 259], 0.5),
                                                ([998, 500.5, 3], 1.0), ([999, 499, -1], 1.0)])
def test_custom_timesteps(timesteps, strength):
    """Custom timesteps: same truncated schedule and num_inference_steps (quirks 1, 2)."""
    s = ref.set_timesteps(LCMConfig(), timesteps=timesteps, strength=strength)
    assert (s.timesteps.tolist(), s.num_inference_steps) == _lcm_timesteps(1000, timesteps=timesteps,
                                                                          strength=strength)


@pytest.mark.parametrize("T,n,mode", [(1000, 4, "leading"), (1000, 7, "linspace"), (1000, 6, "trailing"),
                                      (7, 6, "trailing"), (15, 13, "trailing"), (999, 13, "leading")])
def test_ddim_spacing(T, n, mode):
    """ref.spaced_timesteps equals DDIMScheduler in all three modes (steps_offset 1)."""
    d = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=mode, steps_offset=1)
    d.set_timesteps(n)
    assert ref.spaced_timesteps(T, n, mode, steps_offset=1).tolist() == d.timesteps.tolist()


ERRORS = [
    (dict(), ValueError), (dict(num_inference_steps=4, timesteps=[999]), ValueError),
    (dict(num_inference_steps=4, original_inference_steps=1001), ValueError),
    (dict(num_inference_steps=51), ValueError), (dict(num_inference_steps=10, strength=0.1), ValueError),
    (dict(num_inference_steps=0), ZeroDivisionError),
    (dict(num_inference_steps=4, original_inference_steps=0), ZeroDivisionError),
    (dict(timesteps=[]), IndexError), (dict(timesteps=[499, 999]), ValueError),
    (dict(timesteps=[1000, 499]), ValueError),
]


@pytest.mark.parametrize("kwargs,exc", ERRORS, ids=[str(k) for k, _ in ERRORS])
def test_errors(kwargs, exc):
    """The same exception class as this diffusers, for each documented error."""
    with pytest.raises(exc):
        _lcm_timesteps(1000, **kwargs)
    with pytest.raises(exc):
        ref.set_timesteps(LCMConfig(), **kwargs)


GRID = list(itertools.product(("linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas"),
                              ("epsilon", "sample", "v_prediction"), ("none", "clip", "threshold"), (False, True)))
MODES = {"none": {}, "clip": dict(clip_sample=True, clip_sample_range=0.9),
         "threshold": dict(thresholding=True, sample_max_value=3.0)}


@pytest.mark.parametrize("schedule,prediction,mode,zero_snr", GRID, ids=["-".join(map(str, g)) for g in GRID])
def test_step(schedule, prediction, mode, zero_snr):
    """Every prediction type × schedule (× clip/threshold × zero-SNR): this diffusers' float32 step is within the
    derived float32 budget of the reference on every step of a six-step schedule (timestep_scaling 10 and 0.1)."""
    for seed, scaling in enumerate((10.0, 0.1)):
        cfg = make_cfg(schedule, 1000, zero_snr, prediction_type=prediction, timestep_scaling=scaling, **MODES[mode])
        assert compare_with_diffusers(cfg, seed=seed) <= 1.0


def test_add_noise_and_velocity():
    """add_noise and get_velocity within the float32 budget of the reference."""
    cfg = LCMConfig()
    d = diffusers.LCMScheduler()
    ts = np.array([0, 19, 513, 999])
    x0, eps = inputs(3, (4, 2, 3))
    k = np.array([max(f32.compound(e, f32.U, f32.U) for e in f32.coefficient_errors(cfg, int(t))) for t in ts])
    k = (k / f32.EPS32 + 4 * f32.EPS64 / f32.EPS32)[:, None, None]
    c = ref.sqrt_alphas_cumprod(cfg)[ts][:, None, None]
    s = ref.sqrt_one_minus_alphas_cumprod(cfg)[ts][:, None, None]
    got = d.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(ts))
    assert np.all(ref.scaled_error(got, ref.add_noise(cfg, x0, eps, ts), c * abs(x0) + s * abs(eps), "float32") <= k)
    # negative controls, each timestep on its own: the neighbouring timestep's ᾱ, and the result rounded to float16
    # (2⁻¹¹ relative ≈ 4096 eps32 ≫ k ≤ 591), exceed the budget
    for bad in (d.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(ts + [1, 1, 1, -1])),
                got.half()):
        err = ref.scaled_error(bad, ref.add_noise(cfg, x0, eps, ts), c * abs(x0) + s * abs(eps), "float32")
        assert np.all((err > k).any(axis=(1, 2)))
    got = d.get_velocity(torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(ts))
    assert np.all(ref.scaled_error(got, ref.get_velocity(cfg, x0, eps, ts), c * abs(eps) + s * abs(x0),
                                   "float32") <= k)


@pytest.mark.skipif(VERSION < Version("0.27"), reason="set_begin_index arrived in diffusers 0.27")
def test_begin_index():
    """set_begin_index(i) = ref.step(step_index=i), the timestep passed not looked up."""
    cfg = LCMConfig()
    d = diffusers.LCMScheduler()
    d.set_timesteps(4)
    d.set_begin_index(2)
    m, x = inputs(4)
    out, z = diffusers_step(d, m, 600, x, 4)
    assert step_ratio(cfg, out, m, 600, x, z, schedule=ref.timesteps(cfg, 4), step_index=2) <= 1.0


def test_previous_timestep_by_version():
    """previous_timestep: the next scheduled timestep since 0.32; before, t − T // n (quirk 6)."""
    d = diffusers.LCMScheduler()
    d.set_timesteps(4)
    got = [int(d.previous_timestep(t)) for t in d.timesteps]
    if VERSION >= Version("0.32"):
        assert got == [ref.previous_timestep(d.timesteps.numpy(), t) for t in (999, 759, 499, 259)]
    else:
        assert got == [t - 1000 // 4 for t in (999, 759, 499, 259)]


def test_step_shape():
    """The harness's own premise on this version: denoised and prev_sample come back shaped like the sample."""
    d = diffusers.LCMScheduler()
    d.set_timesteps(4)
    m, x = inputs(5)
    out, z = diffusers_step(d, m, 999, x, 5)
    assert out.prev_sample.shape == out.denoised.shape == SHAPE == z.shape
