"""Runs diffusers' LCMScheduler and lcm_ref.reference side by side on the same inputs and the same noise, and measures
diffusers against the reference in units of the derived float32 budget (lcm_ref.oracle.budget)."""

import diffusers
import numpy as np
import torch

import lcm_ref.oracle.budget as f32
import lcm_ref.reference as ref
from lcm_ref.oracle.noise import step_with_noise

SHAPE = (2, 3, 4, 4)
SCHED = [999, 759, 499, 259, 139, 19]          # on the orig = 50 grid (k = 20), down to where c_skip matters


def inputs(seed, shape=SHAPE):
    """(model_output, sample) as float32 arrays, from a fixed seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


def compare_with_diffusers(cfg, schedule=SCHED, strength=1.0, seed=0, ref_cfg=None, ref_schedule=None, ref_n=None):
    """Step diffusers (float32, CPU) through ``schedule`` on fresh inputs each step, and the reference on the same
    inputs and the same noise: diffusers draws torch.randn(shape, generator, dtype=float32) on every step but the
    last, so a fresh generator with a known seed per step lets us draw the identical z for the reference.

    Returns the worst (scaled error / derived bound) over all elements, outputs and steps; > 1 is a failure.
    ``ref_*`` replace the reference side's config / schedule / num_inference_steps (for mutants)."""
    d = diffusers.LCMScheduler(**cfg.to_dict())
    d.set_timesteps(timesteps=list(schedule), strength=strength)
    sch = ref.set_timesteps(cfg, timesteps=list(schedule), strength=strength)
    r_sched = sch.timesteps if ref_schedule is None else np.asarray(ref_schedule)
    r_n = sch.num_inference_steps if ref_n is None else ref_n
    worst = 0.0
    for i, t in enumerate(d.timesteps):
        m, x = inputs(seed * 100 + i)
        out, z = diffusers_step(d, m, t, x, seed * 100 + i)
        worst = max(worst, step_ratio(cfg, out, m, int(t), x, z, schedule=r_sched, step_index=i,
                                      num_inference_steps=r_n, ref_cfg=ref_cfg))
    return worst


def diffusers_step(d, m, t, x, gseed):
    """One diffusers step on float32 arrays with a fresh generator; returns (output, the noise it drew)."""
    out, z = step_with_noise(d, torch.from_numpy(m), t, torch.from_numpy(x), gseed)
    return out, z.numpy()


def step_ratio(cfg, out, m, t, x, z, *, schedule, step_index, num_inference_steps=None, ref_cfg=None):
    """Worst (scaled error / derived float32 bound) of one diffusers step output against ref.step, both outputs."""
    n = len(schedule) if num_inference_steps is None else num_inference_steps
    kw = dict(schedule=schedule, noise=z, step_index=step_index, num_inference_steps=n)
    want = ref.step(ref_cfg or cfg, m, t, x, **kw)
    terms = ref.step_terms(cfg, m, t, x, **kw)
    bound_den, bound_prev = f32.step_bound(cfg, m, t, x, z, schedule=schedule, step_index=step_index,
                                           num_inference_steps=n)
    k_prev, k_den = f32.scaled_step_bound(cfg, m, t, x, schedule=schedule, step_index=step_index,
                                          num_inference_steps=n)
    i = step_index
    t_prev = None if i == n - 1 else int(schedule[i + 1]) if i + 1 < len(schedule) else t
    worst = 0.0
    for got, w, tm, b, k, tp in ((out.prev_sample, want.prev_sample, terms.prev_sample, bound_prev, k_prev, t_prev),
                                 (out.denoised, want.denoised, terms.denoised, bound_den, k_den, None)):
        got = got.numpy()
        assert got.shape == w.shape, (got.shape, w.shape)
        if not np.all(np.isfinite(tm)):      # ᾱ = 0 with epsilon (quirk 3): see _zero_snr_end
            worst = max(worst, _zero_snr_end(cfg, got, w, t, x, z, tp, k))
            continue
        # scaled error / scaled budget = |got − want| / bound (the bound: lcm_ref.oracle.budget.step_bound, absolute)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(got == w, 0.0, np.abs(got.astype(np.float64) - w) / b)
        worst = max(worst, _worst(ratio))
    return worst


def _worst(ratio):
    """The largest ratio, NaN counted as a failure (inf)."""
    return float(np.max(np.where(np.isnan(ratio), np.inf, ratio)))


def _zero_snr_end(cfg, got, want, t, x, z, t_prev, k):
    """At ᾱ = 0 with epsilon prediction x0 is ±inf/NaN on both sides: the same non-finite pattern is required; with
    clip, x0 becomes ±clip_sample_range exactly, so the finite elements' terms are c_out·range + c_skip·|x| (and
    √ᾱ_prev·that + √(1−ᾱ_prev)·|z| for prev, ``t_prev`` not None)."""
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    if not fin.any():
        return 0.0
    assert cfg.clip_sample and not cfg.thresholding
    c_skip, c_out = ref.boundary_scalings(cfg, t)
    terms = abs(c_out) * cfg.clip_sample_range + c_skip * np.abs(x.astype(np.float64))
    if t_prev is not None:
        c, d = ref.noise_coefficients(cfg, t_prev)
        terms = c * terms + d * np.abs(z)
    k = np.broadcast_to(k, got.shape)
    return _worst(ref.scaled_error(got[fin], want[fin], terms[fin], "float32") / k[fin])


