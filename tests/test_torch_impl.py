"""TorchLCM against lcm_ref.reference: the mirrored names, every step's scaled error (docs/design.md §8) in every dtype on
every device present, per-sample timesteps, the forward process, and bad input.

The bounds every comparison here applies are derived in ``lcm_ref.torch_impl.bounds`` (its module docstring), which
also holds the check (``check_scaled``: scaled error with the underflow and overflow rules, and the slack).
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError, StrictError
from lcm_ref.oracle import strategies as lst
from lcm_ref.config import BETA_SCHEDULES
from lcm_ref.numerics import eps
from lcm_ref.torch_impl import DTYPES, TorchLCM, draw_noise
from lcm_ref.torch_impl.bounds import SLACK, check_scaled, forward_bound, step_bounds, step_kind

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]
#: every schedule of the reference: diffusers' three, trained_betas, and DDPM's / Heun's sigmoid, exp, laplace
ALL_SCHEDULES = BETA_SCHEDULES + ("trained_betas",)


def drawn_inputs(data, dtype, shape, k=3):
    """k tensors of ``shape`` (N(0,1)·scale with some zeros), rounded to ``dtype``; the reference gets the same
    rounded values."""
    recipes = [data.draw(lst.tensor_recipes(shape, torch.float64), label=f"tensor {j}") for j in range(k)]
    return [r.make().to(dtype) for r in recipes]


def set_schedule(eng, req):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eng.set_timesteps(req["num_inference_steps"], original_inference_steps=req["original_inference_steps"],
                                 timesteps=req["timesteps"], strength=req["strength"] or 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Names mirrored from the reference
# ---------------------------------------------------------------------------------------------------------------------

TABLES = ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
COEFFICIENTS = ("boundary_scalings", "x0_coefficients", "denoised_coefficients")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@settings(max_examples=12)
@given(cfg=lst.configs(schedules=ALL_SCHEDULES))
def test_names_mirror_reference(dtype, cfg):
    """Every mirrored table and coefficient function is the reference's float64 value rounded once to the table
    dtype, over all t in [−T, T) (so nothing is recomputed in torch: a float32 cumprod table fails this)."""
    eng = TorchLCM(cfg, dtype=dtype)
    T = cfg.num_train_timesteps
    for name in TABLES:
        want = torch.tensor(getattr(ref, name)(cfg)).to(eng.table_dtype)
        assert torch.equal(getattr(eng, name), want), name
    assert eng.final_alpha_cumprod == ref.final_alpha_cumprod(cfg)
    ts = np.arange(-T, T)
    with np.errstate(invalid="ignore"):
        for name in COEFFICIENTS + ("noise_coefficients",):
            got, want = getattr(eng, name)(ts), getattr(ref, name)(cfg, ts)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, torch.tensor(w).to(eng.table_dtype), rtol=0, atol=0, equal_nan=True,
                                           msg=name)


@settings(max_examples=20)
@given(data=st.data())
def test_schedule_and_previous_timestep_mirror_reference(data):
    """set_timesteps gives the reference's strict schedule exactly; previous_timestep agrees for ints and tensors."""
    cfg = data.draw(lst.configs(), label="cfg")
    req = data.draw(lst.schedule_requests(cfg, errors=False), label="request")
    eng = TorchLCM(cfg)
    got = set_schedule(eng, req)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ref.timesteps(cfg, req["num_inference_steps"], original_inference_steps=req["original_inference_steps"],
                             timesteps=req["timesteps"], strength=req["strength"] or 1.0, profile="strict")
    assert got.dtype == torch.int64 and got.tolist() == want.tolist()
    prev = [ref.previous_timestep(want, int(t)) for t in want]
    assert [eng.previous_timestep(int(t)) for t in want] == prev
    assert eng.previous_timestep(got).tolist() == prev


# ---------------------------------------------------------------------------------------------------------------------
# Step accuracy
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=20)
@given(data=st.data())
def test_step_matches_reference(device, dtype, data):
    """Every step of a drawn schedule (every beta schedule, prediction type, zero-SNR, clip/threshold,
    timestep_scaling over decades) is within the derived scaled-error bound of the reference, by step index and by
    timestep tensor alike (bitwise the same)."""
    cfg = data.draw(lst.configs(schedules=ALL_SCHEDULES), label="cfg")
    req = data.draw(lst.schedule_requests(cfg, errors=False, max_steps=4), label="request")
    eng = TorchLCM(cfg, device=device, dtype=dtype)
    ts = set_schedule(eng, req).cpu().numpy()
    shape = data.draw(lst.shapes(min_dims=2, max_dims=4, max_side=8), label="shape")
    bound_den, bound_prev = step_bounds(dtype, step_kind(cfg))
    for i, t in enumerate(ts):
        x, m, z = (v.to(device) for v in drawn_inputs(data, dtype, shape))
        out = eng.step(m, int(t), x, z, step_index=i)
        by_tensor = eng.step(m, torch.tensor(int(t), device=device), x, z)
        want = ref.step(cfg, m, int(t), x, schedule=ts, noise=z, step_index=i, profile="strict")
        terms = ref.step_terms(cfg, m, int(t), x, schedule=ts, noise=z, step_index=i)
        check_scaled(out.denoised, want.denoised, terms.denoised, dtype, bound_den, f"denoised at step {i}")
        check_scaled(out.prev_sample, want.prev_sample, terms.prev_sample, dtype, bound_prev, f"prev at step {i}")
        assert out.denoised.dtype == out.prev_sample.dtype == dtype
        drawn = eng.step(m, int(t), x, step_index=i, generator=torch.Generator(device).manual_seed(i))
        z_drawn = draw_noise(shape, torch.Generator(device).manual_seed(i), device, dtype)
        want_drawn = ref.step(cfg, m, int(t), x, schedule=ts, noise=z_drawn, step_index=i, profile="strict")
        terms_drawn = ref.step_terms(cfg, m, int(t), x, schedule=ts, noise=z_drawn, step_index=i)
        check_scaled(drawn.prev_sample, want_drawn.prev_sample, terms_drawn.prev_sample, dtype, bound_prev,
                     f"prev (noise drawn) at step {i}")
        assert torch.equal(by_tensor.denoised, out.denoised)
        if i == len(ts) - 1:     # the tensor path noises with d = 0: exactly denoised
            assert torch.equal(by_tensor.prev_sample, out.denoised) and out.prev_sample is out.denoised
        else:
            assert torch.equal(by_tensor.prev_sample, out.prev_sample)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=10)
@given(data=st.data())
def test_per_sample_timesteps_equal_separate_calls(device, dtype, data):
    """One call with B per-sample timesteps (or step indices) gives bitwise the outputs of B separate calls."""
    cfg = data.draw(lst.configs(), label="cfg")
    req = data.draw(lst.schedule_requests(cfg, errors=False), label="request")
    eng = TorchLCM(cfg, device=device, dtype=dtype)
    ts = set_schedule(eng, req)
    n = len(ts)
    B = data.draw(st.integers(1, 6), label="B")
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=B, max_size=B), label="step indices")
    shape = (B,) + data.draw(lst.shapes(min_dims=2, max_dims=3, max_side=4), label="sample shape")[1:]
    x, m, z = (v.to(device) for v in drawn_inputs(data, dtype, shape))
    idx_t = torch.tensor(idx, device=device)
    by_index = eng.step(m, None, x, z, step_index=idx_t)
    by_timestep = eng.step(m, ts[idx_t], x, z)
    for b, i in enumerate(idx):
        one = eng.step(m[b:b + 1], int(ts[i]), x[b:b + 1], z[b:b + 1], step_index=i)
        for got in (by_index, by_timestep):
            assert torch.equal(got.denoised[b:b + 1], one.denoised), (b, i)
            assert torch.equal(got.prev_sample[b:b + 1], one.prev_sample), (b, i)


def test_per_sample_last_step_is_denoised_and_distinct_rows_differ():
    """In a per-sample batch the last-step element gets prev = denoised and the others are noised at their own
    next level (a mutant that uses timestep[0] for every element fails this)."""
    cfg = LCMConfig()
    eng = TorchLCM(cfg)
    ts = eng.set_timesteps(4)
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    m = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = eng.step(m, torch.tensor([3, 0, 1, 2]), x, z, step_index=torch.tensor([3, 0, 1, 2]))
    assert torch.equal(out.prev_sample[0], out.denoised[0])
    for b, i in enumerate([3, 0, 1, 2]):
        want = ref.step(cfg, m[b:b + 1], int(ts[i]), x[b:b + 1], schedule=ts.numpy(), noise=z[b:b + 1],
                        step_index=i)
        terms = ref.step_terms(cfg, m[b:b + 1], int(ts[i]), x[b:b + 1], schedule=ts.numpy(), noise=z[b:b + 1],
                               step_index=i)
        check_scaled(out.prev_sample[b:b + 1], want.prev_sample, terms.prev_sample, torch.float32,
                     step_bounds(torch.float32)[1], f"row {b}")


# ---------------------------------------------------------------------------------------------------------------------
# Forward process, sampling loop
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=10)
@given(data=st.data())
def test_add_noise_and_get_velocity_match_reference(device, dtype, data):
    """add_noise and get_velocity, one timestep per batch element, are within the derived bound of the reference:
    two terms, each with a rounded √ coefficient, a product and a sum (3u → 1.5 in float32; 0.5 + 1.5r narrower;
    float64 1.5 + the reference's 1.5)."""
    cfg = data.draw(lst.configs(), label="cfg")
    shape = data.draw(lst.shapes(min_dims=1, max_dims=4, max_side=4), label="shape")
    ts = data.draw(lst.timestep_batches(cfg, shape[0]), label="timesteps")
    x, z = drawn_inputs(data, dtype, shape, k=2)
    eng = TorchLCM(cfg, device=device, dtype=dtype)
    bound = forward_bound(dtype)
    c = ref.sqrt_alphas_cumprod(cfg)[ts].reshape((-1,) + (1,) * (len(shape) - 1))
    d = ref.sqrt_one_minus_alphas_cumprod(cfg)[ts].reshape(c.shape)
    xd, zd = x.double().numpy(), z.double().numpy()
    terms = c * np.abs(xd) + d * np.abs(zd)
    t_dev = torch.tensor(ts, device=device)
    check_scaled(eng.add_noise(x.to(device), z.to(device), t_dev), ref.add_noise(cfg, xd, zd, ts), terms, dtype,
                 bound, "add_noise")
    check_scaled(eng.get_velocity(x.to(device), z.to(device), t_dev), ref.get_velocity(cfg, xd, zd, ts),
                 c * np.abs(zd) + d * np.abs(xd), dtype, bound, "get_velocity")


def test_sample_loop_matches_reference_sample():
    """TorchLCM.sample (Algorithm 3) equals its own step-by-step loop bitwise and reference.sample within the
    float64 step bounds carried through the loop."""
    cfg = LCMConfig(prediction_type="v_prediction")
    eng = TorchLCM(cfg, dtype=torch.float64)
    ts = eng.set_timesteps(4).numpy()
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    noises = [torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    outputs = {int(t): torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64) for t in ts}

    def model_fn(x, t):       # independent of x, so a difference carries through the loop only via a·x
        return outputs[int(t)]

    got = eng.sample(model_fn, x_T, noises)
    x = x_T
    for i, t in enumerate(ts):
        x = eng.step(model_fn(x, t), int(t), x, noises[i] if i < 3 else None, step_index=i).prev_sample
    assert torch.equal(got, x)
    # Step k adds ≤ 6 eps64·Σ|terms| (prev; 3 on the last, denoised: step_bounds) along the reference trajectory;
    # an earlier difference δ enters step k+1 through a·x and leaves it as c·a·δ (prev) or a·δ (the last), so the
    # final difference is ≤ Σ_k (Π_{j>k} |c_j·a_j|)·e_k with e_k the largest per-element bound of step k.
    want, xr, total = None, x_T.numpy(), 0.0
    for i, t in enumerate(ts):
        z = noises[i].numpy() if i < 3 else None
        terms = ref.step_terms(cfg, outputs[int(t)], int(t), xr, schedule=ts, noise=z, step_index=i)
        a, _ = ref.denoised_coefficients(cfg, int(t))
        gain = a * (ref.noise_coefficients(cfg, int(ts[i + 1]))[0] if i < 3 else 1.0)
        bound = step_bounds(torch.float64)[1 if i < 3 else 0]
        total = total * abs(gain) + bound * eps(torch.float64) * float(terms.prev_sample.max())
        xr = ref.step(cfg, outputs[int(t)], int(t), xr, schedule=ts, noise=z, step_index=i).prev_sample
    want = ref.sample(cfg, lambda x, t: outputs[int(t)].numpy(), x_T.numpy(), ts, [z.numpy() for z in noises])
    assert np.array_equal(want, xr)
    assert float(np.abs(got.numpy() - want).max()) <= total * (1 + SLACK)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------

def test_bad_input_raises_naming_the_parameter():
    """Every bad input raises an LCMRefError (or IndexError for a device-side lookup) naming what is wrong."""
    eng = TorchLCM(LCMConfig())
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(LCMRefError, match="schedule"):
        eng.step(x, 999, x, x)
    ts = eng.set_timesteps(4)
    cases = [
        (lambda: TorchLCM(LCMConfig(), dtype=torch.int32), LCMRefError, "dtype"),
        (lambda: TorchLCM("cfg"), LCMRefError, "cfg"),
        (lambda: eng.step(x.double(), 999, x.double(), x.double()), LCMRefError, "sample"),
        (lambda: eng.step(x[:, :2], 999, x, x), StrictError, "model_output.shape"),
        (lambda: eng.step(x, 999, x, x[:, :2]), StrictError, "noise.shape"),
        (lambda: eng.step(x, 998, x, x), StrictError, "timestep"),
        (lambda: eng.step(x, 999, x, x, step_index=4), StrictError, "step_index"),
        (lambda: eng.step(x, 999, x, x, step_index=-1), StrictError, "step_index"),
        (lambda: eng.step(x, 759, x, x, step_index=0), StrictError, "timestep"),
        (lambda: eng.step(x, torch.tensor([999.0]), x, x), LCMRefError, "timestep"),
        (lambda: eng.step(x, torch.tensor([998]), x, x), IndexError, "out of bounds"),
        (lambda: eng.step(x, torch.tensor([-1]), x, x), IndexError, "out of bounds"),
        (lambda: eng.step(x, None, x, x, step_index=torch.tensor([4])), IndexError, "out of bounds"),
        (lambda: eng.step(x, None, x, x, step_index=torch.tensor([-1])), IndexError, "out of bounds"),
        (lambda: eng.previous_timestep(998), StrictError, "timestep"),
        (lambda: eng.set_timesteps(4, strength=1.5), StrictError, "strength"),
        (lambda: eng.set_schedule([999, -1]), StrictError, "timesteps"),
        (lambda: eng.set_schedule([999, 999]), StrictError, "timesteps"),
        (lambda: eng.boundary_scalings(1000), LCMRefError, "timestep"),
        (lambda: TorchLCM(LCMConfig(rescale_betas_zero_snr=True)).set_timesteps(4), StrictError, "timesteps"),
        (lambda: TorchLCM(LCMConfig(thresholding=True)).step(x[0, 0, 0], 999, x[0, 0, 0], schedule=[999]),
         LCMRefError, "sample.shape"),
    ]
    for fn, exc, name in cases:
        with pytest.raises(exc, match=name.replace(".", r"\.")):
            fn()
    assert ts.tolist() == [999, 759, 499, 259]


def test_check_scaled_applies_the_bound_and_the_range_rules():
    """check_scaled (lcm_ref.torch_impl.bounds) passes an error at the bound and fails one just past it; a result
    the dtype cannot hold (overflow) must be ±max or ±inf of the reference's sign; an underflowed result is measured
    against Σ|terms| + the smallest normal."""
    want, terms = np.array([1.0, -2.0]), np.array([1.0, 2.0])
    got = want + 1.5 * eps(torch.float32) * terms
    assert check_scaled(got, want, terms, torch.float32, 1.5, "at the bound") == pytest.approx(1.5)
    with pytest.raises(AssertionError, match="max scaled error"):
        check_scaled(got, want, terms, torch.float32, 1.4, "past the bound")
    big = np.array([7e4])
    check_scaled(torch.tensor([float("inf")], dtype=torch.float16), big, big, torch.float16, 0.5, "overflow to inf")
    with pytest.raises(AssertionError, match="overflow"):
        check_scaled(torch.tensor([-float("inf")], dtype=torch.float16), big, big, torch.float16, 0.5, "wrong sign")
    tiny = np.array([1e-8])
    assert check_scaled(torch.zeros(1, dtype=torch.float16), tiny, tiny, torch.float16, 0.5, "underflow") < 0.5
