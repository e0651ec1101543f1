"""lcm_ref.torch_impl.LCMScheduler as a drop-in for diffusers.LCMScheduler: same interface and config round trip,
the same noise draws, the reference's accuracy (bounds derived in lcm_ref.torch_impl.bounds), and the strict
profile's errors where diffusers silently misbehaves (docs/design.md §6 quirks).

diffusers' own figures in the same units (float32, max scaled error over an 8-step schedule, 1×4×32×32, measured
with this file's helper): default config 12.9 (denoised) / 12.9 (prev), v_prediction 11.1 / 11.1, sample 0.93 /
11.2, linear 1e-4…0.02 5.0 / 5.0, squaredcos_cap_v2 56 / 57, timestep_scaling 1 and 100: 13.1, zero-SNR v 5.5 / 7.8;
the drop-in on the same inputs: 0.65–1.3 (linear), 0.47–0.49 (clip, threshold).
"""

import inspect
import json
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers.utils.torch_utils import randn_tensor
from hypothesis import given, settings
from hypothesis import strategies as st

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, StrictError
from lcm_ref.oracle import strategies as lst
from lcm_ref.torch_impl import DTYPES, LCMScheduler, draw_noise
from lcm_ref.torch_impl.bounds import check_scaled, forward_bound, step_bounds, step_kind


def _pair(cfg):
    return diffusers.LCMScheduler(**cfg.to_dict()), LCMScheduler(**cfg.to_dict())


def _set(sched, req):
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()      # diffusers logs off-grid custom timesteps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched.set_timesteps(req["num_inference_steps"], original_inference_steps=req["original_inference_steps"],
                            timesteps=req["timesteps"], strength=req["strength"] or 1.0)
    diffusers.utils.logging.set_verbosity(level)
    if req["begin_index"]:
        sched.set_begin_index(req["start"])


def run_scheduler(sched, req, inputs, seed, dtype):
    """Step ``sched`` from ``req['start']`` to the end on fixed inputs (x, m per step); returns per step
    (timestep, i, prev, denoised, z), z re-drawn from the generator state the step saw (None on the last step)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    sched_ts = sched.timesteps
    for i in range(req["start"], len(sched_ts)):
        x, m = inputs[i]
        t = sched_ts[i] if req["timestep_as"] == "tensor" else int(sched_ts[i])
        state = g.get_state()
        prev, den = sched.step(m, t, x, generator=g, return_dict=False)
        last = i == len(sched_ts) - 1
        z = None if last else randn_tensor(m.shape, generator=torch.Generator().set_state(state), dtype=dtype)
        assert torch.equal(g.get_state(), state) == last       # a draw on every step but the last
        out.append((int(sched_ts[i]), i, prev, den, z))
    return out, g.get_state()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=12)
@given(data=st.data())
def test_dropin_draws_diffusers_noise_and_matches_reference(dtype, data):
    """With the same seed the drop-in consumes the generator exactly as diffusers (same draws, same steps, same
    schedule), and every step is within the derived bound of the reference (docs/design.md §8)."""
    cfg = data.draw(lst.configs(), label="cfg")
    req = data.draw(lst.schedule_requests(cfg, errors=False, max_steps=4), label="request")
    theirs, ours = _pair(cfg)
    _set(theirs, req)
    _set(ours, req)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    assert ours.num_inference_steps == theirs.num_inference_steps
    # ≥ 3 dims: diffusers' thresholding fails on 2-D samples (np.prod of no dims is a float in its reshape).
    shape = data.draw(lst.shapes(min_dims=3, max_dims=4, max_side=4), label="shape")
    recipes = [data.draw(lst.tensor_recipes(shape, torch.float64), label="x, m") for _ in range(2)]
    inputs = {i: tuple(r.make(seed_offset=i).to(dtype) for r in recipes) for i in range(len(ours.timesteps))}
    got, state_ours = run_scheduler(ours, req, inputs, 7, dtype)
    _, state_theirs = run_scheduler(theirs, req, inputs, 7, dtype)
    assert torch.equal(state_ours, state_theirs)
    sched = ours.timesteps.numpy()
    bound_den, bound_prev = step_bounds(dtype, step_kind(cfg))
    for t, i, prev, den, z in got:
        x, m = inputs[i]
        want = ref.step(cfg, m, t, x, schedule=sched, noise=z, step_index=i, profile="strict")
        terms = ref.step_terms(cfg, m, t, x, schedule=sched, noise=z, step_index=i)
        check_scaled(den, want.denoised, terms.denoised, dtype, bound_den, f"denoised at {t}")
        check_scaled(prev, want.prev_sample, terms.prev_sample, dtype, bound_prev, f"prev at {t}")
        assert prev.dtype == den.dtype == dtype


def diffusers_worst(cfg, n=8, shape=(1, 4, 32, 32)):
    """diffusers' max scaled error (denoised, prev) over an n-step schedule on fixed inputs, float32."""
    theirs = diffusers.LCMScheduler(**cfg.to_dict())
    theirs.set_timesteps(n)
    req = dict(start=0, timestep_as="tensor")
    g = torch.Generator().manual_seed(0)
    inputs = {i: (torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for i in range(n)}
    steps, _ = run_scheduler(theirs, req, inputs, 1, torch.float32)
    sched, worst = theirs.timesteps.numpy(), [0.0, 0.0]
    for t, i, prev, den, z in steps:
        x, m = inputs[i]
        want = ref.step(cfg, m, t, x, schedule=sched, noise=z, step_index=i)
        terms = ref.step_terms(cfg, m, t, x, schedule=sched, noise=z, step_index=i)
        worst[0] = max(worst[0], float(ref.scaled_error(den, want.denoised, terms.denoised, "float32").max()))
        worst[1] = max(worst[1], float(ref.scaled_error(prev, want.prev_sample, terms.prev_sample, "float32").max()))
    return worst


def test_the_bound_separates_diffusers_float32_tables():
    """Negative control: diffusers' float32 tables exceed the drop-in's bounds (1.5 / 2) on the configs seen in the
    wild, so the accuracy tests can tell a float32-table implementation from a correctly rounded one."""
    for cfg in (LCMConfig(), LCMConfig(prediction_type="v_prediction"),
                LCMConfig(beta_schedule="squaredcos_cap_v2")):
        den, prev = diffusers_worst(cfg)
        assert den > 1.5 and prev > 2.0, (cfg, den, prev)


# ---------------------------------------------------------------------------------------------------------------------
# Interface and config
# ---------------------------------------------------------------------------------------------------------------------

def test_signatures_and_attributes_match_diffusers():
    """Constructor, set_timesteps, step, add_noise, get_velocity, scale_model_input take diffusers' parameters, and
    the public attributes start and move as diffusers' do. The constructor adds one keyword-only parameter at the
    end, ``profile`` (default "diffusers"), which is not part of the config."""
    for name in ("__init__", "set_timesteps", "step", "add_noise", "get_velocity", "scale_model_input",
                 "set_begin_index", "previous_timestep"):
        want = inspect.signature(getattr(diffusers.LCMScheduler, name)).parameters
        got = dict(inspect.signature(getattr(LCMScheduler, name)).parameters)
        if name == "__init__":
            extra = got.pop("profile")
            assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default == "diffusers"
        assert list(got) == list(want), name
        assert [p.default for p in got.values()] == [p.default for p in want.values()], name
    assert "profile" not in LCMScheduler().config
    theirs, ours = _pair(LCMConfig())
    for s in (theirs, ours):
        assert s.order == 1 and s.init_noise_sigma == 1.0 and len(s) == 1000
        assert s.step_index is None and s.begin_index is None and s.num_inference_steps is None
    assert torch.equal(ours.timesteps, theirs.timesteps)
    x = torch.randn(1, 4, 8, 8)
    for s in (theirs, ours):
        assert s.scale_model_input(x, 999) is x
        s.set_timesteps(4)
        assert [int(s.previous_timestep(t)) for t in s.timesteps] == [759, 499, 259, -1]
        s.set_begin_index(2)
        assert s.begin_index == 2 and s.step_index is None
        s.step(x, s.timesteps[2], x, generator=torch.Generator().manual_seed(0))
        assert s.step_index == 3
        s.set_timesteps(2)
        assert s.step_index is None and s.begin_index is None
    c_skip, c_out = ours.get_scalings_for_boundary_condition_discrete(259)
    assert (c_skip, c_out) == ref.boundary_scalings(LCMConfig(), 259)
    np.testing.assert_allclose(ours.alphas_cumprod.double(), ref.alphas_cumprod(LCMConfig()), rtol=2.0 ** -24)


def test_config_round_trip_with_diffusers(tmp_path):
    """save_config / from_pretrained on a local folder and from_config work both ways with diffusers' class, and
    a published LCM scheduler_config.json (with other schedulers' keys) loads."""
    cfg = LCMConfig(prediction_type="v_prediction", timestep_scaling=3.0, original_inference_steps=30)
    ours = LCMScheduler(**cfg.to_dict())
    ours.save_config(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "LCMScheduler"
    for loaded in (LCMScheduler.from_pretrained(tmp_path), diffusers.LCMScheduler.from_pretrained(tmp_path),
                   LCMScheduler.from_config(diffusers.LCMScheduler(**cfg.to_dict()).config)):
        assert LCMConfig.from_diffusers(loaded) == cfg
    published = {"_class_name": "LCMScheduler", "_diffusers_version": "0.22.0.dev0", "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "steps_offset": 1,
                 "set_alpha_to_one": False, "skip_prk_steps": True, "timestep_spacing": "leading",
                 "original_inference_steps": 50, "prediction_type": "epsilon", "timestep_scaling": 10.0}
    (tmp_path / "scheduler_config.json").write_text(json.dumps(published))
    loaded = LCMScheduler.from_pretrained(tmp_path)
    assert loaded.config.steps_offset == 1 and loaded.lcm_config.set_alpha_to_one is False


def test_draw_noise_is_randn_tensor():
    """draw_noise (TorchLCM's noise) is diffusers' randn_tensor draw: no generator, one, a list, other dtypes."""
    shape = (3, 2, 4, 4)
    for dtype in (torch.float32, torch.float16, torch.float64):
        for make in (lambda: torch.Generator().manual_seed(5),
                     lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)],
                     lambda: [torch.Generator().manual_seed(9)]):
            assert torch.equal(draw_noise(shape, make(), "cpu", dtype), randn_tensor(shape, generator=make(),
                                                                                    device=torch.device("cpu"),
                                                                                    dtype=dtype))
        torch.manual_seed(4)
        a = draw_noise(shape, None, "cpu", dtype)
        torch.manual_seed(4)
        assert torch.equal(a, randn_tensor(shape, device=torch.device("cpu"), dtype=dtype))


def test_add_noise_broadcasts_one_timestep_like_diffusers():
    """add_noise with timesteps of shape (1,) over a batch (the img2img call) and get_velocity agree with diffusers
    to its float32 table accuracy (ᾱ within (t+1)·eps32 relative: docs/design.md §8) and with the reference within 1.5."""
    theirs, ours = _pair(LCMConfig())
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    cfg = LCMConfig()
    for ts in (torch.tensor([499]), torch.tensor([999, 0, 500])):
        got, want = ours.add_noise(x0, z, ts), theirs.add_noise(x0, z, ts)
        assert got.shape == want.shape == x0.shape
        # diffusers' budget, first order, in units of eps32: its float32 ᾱ_t has relative error ≤ (t+1) (docs/design.md §8),
        # so √ᾱ is off by ≤ ((t+1)/2 + 0.5)·√ᾱ and √(1−ᾱ) by ≤ (t+1)·ᾱ/(2√(1−ᾱ)) + 0.5 (absolute); for the
        # timesteps used here (0, 499, 500, 999) both are ≤ t_max + 1 (the largest, 250 at t = 499 / 17 at t = 0,
        # is far below). Each side's own arithmetic (a product and an addcmul: 3u) adds ≤ 1.5·(|x0| + |z|), so 3 for
        # both: (t_max + 4)·eps32·(max|x0| + max|z|).
        tmax = int(ts.max())
        atol = (tmax + 4) * 2.0 ** -23 * float(x0.abs().max() + z.abs().max())
        assert torch.allclose(got, want, rtol=0, atol=atol)
        vel = ours.get_velocity(x0, z, ts)
        assert torch.allclose(vel, theirs.get_velocity(x0, z, ts), rtol=0, atol=atol)
        # the reference, bound 1.5 derived in lcm_ref.torch_impl.bounds (two terms, rounded √ coefficient, a
        # product and a sum: 3u)
        bound = forward_bound(torch.float32)
        xd, zd, tn = x0.double().numpy(), z.double().numpy(), ts.numpy()
        c = ref.sqrt_alphas_cumprod(cfg)[tn].reshape(-1, 1, 1, 1)
        d = ref.sqrt_one_minus_alphas_cumprod(cfg)[tn].reshape(-1, 1, 1, 1)
        check_scaled(got, ref.add_noise(cfg, xd, zd, tn), c * np.abs(xd) + d * np.abs(zd), torch.float32, bound,
                     f"add_noise at {ts.tolist()}")
        check_scaled(vel, ref.get_velocity(cfg, xd, zd, tn), c * np.abs(zd) + d * np.abs(xd), torch.float32, bound,
                     f"get_velocity at {ts.tolist()}")


# ---------------------------------------------------------------------------------------------------------------------
# Strict profile: refuse or fix diffusers' quirks
# ---------------------------------------------------------------------------------------------------------------------

def test_custom_timesteps_with_strength_end_on_denoised():
    """Quirk 1 fixed: custom timesteps with strength < 1 end on the denoised sample (diffusers re-noises it to the
    last timestep's level and draws once more)."""
    theirs, ours = _pair(LCMConfig())
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = {}
    for name, s in (("diffusers", theirs), ("ours", ours)):
        s.set_timesteps(timesteps=[499, 379, 259, 139], strength=0.5)
        assert s.timesteps.tolist() == [259, 139]
        g = torch.Generator().manual_seed(1)
        for t in s.timesteps:
            prev, den = s.step(x, t, x, generator=g, return_dict=False)
        results[name] = (prev, den)
    assert torch.equal(results["ours"][0], results["ours"][1])
    assert not torch.allclose(results["diffusers"][0], results["diffusers"][1])


def test_strict_errors_name_the_parameter():
    """Inputs diffusers accepts but mishandles raise StrictError naming the parameter (quirks 2–5)."""
    x = torch.zeros(1, 4, 2, 2)

    def step_past_end():
        s = LCMScheduler()
        s.set_timesteps(2)
        for t in s.timesteps:
            s.step(x, t, x)
        s.step(x, s.timesteps[-1], x)

    def wrong_first_timestep():
        s = LCMScheduler()
        s.set_timesteps(2)
        s.step(x, 500, x)

    def wrong_timestep_after_begin_index():
        s = LCMScheduler()
        s.set_timesteps(4)
        s.set_begin_index(1)
        s.step(x, 999, x)

    cases = [
        (lambda: LCMScheduler().set_timesteps(timesteps=[999, 499, -1]), "timesteps"),
        (lambda: LCMScheduler().set_timesteps(timesteps=[999.5, 499.0]), "timesteps"),
        (lambda: LCMScheduler().set_timesteps(4, strength=1.5), "strength"),
        (lambda: LCMScheduler().set_timesteps(0), "num_inference_steps"),
        (lambda: LCMScheduler().set_timesteps(timesteps=[]), "timesteps"),
        (lambda: LCMScheduler(rescale_betas_zero_snr=True).set_timesteps(4), "timesteps"),
        (step_past_end, "step_index"),
        (wrong_first_timestep, "timestep"),
        (wrong_timestep_after_begin_index, "timestep"),
    ]
    for fn, name in cases:
        with pytest.raises(StrictError, match=name):
            fn()
    with pytest.raises(ValueError, match="set_timesteps"):
        LCMScheduler().step(x, 999, x)
