"""One step of multistep consistency sampling (Luo et al. 2023, Algorithm 3; docs/design.md §4.2, §7.3), the sampler
loop, the forward process, and the scaled error that measures an implementation against them (§8).

A step at timestep t, with next timestep t' (−1 after the last), is

    x0_pred  = p·x + q·m                      (clipped or thresholded if configured)
    denoised = c_out·x0_pred + c_skip·x       = a·x + b·m without clip or threshold
    prev     = √ᾱ_t'·denoised + √(1−ᾱ_t')·z   (the last step returns denoised)

evaluated in float64 from the correctly rounded coefficients of ``tables``.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .. import numerics
from ..config import LCMConfig
from ..errors import LCMRefError
from ..numerics import to_f64
from .schedule import index_for_timestep
from .strict import check_step_inputs, check_step_request, is_strict
from .tables import (as_timestep, chained_coefficients, noise_coefficients, sqrt_alphas_cumprod,
                     sqrt_one_minus_alphas_cumprod, step_coefficients)


class StepOutput(NamedTuple):
    prev_sample: np.ndarray
    denoised: np.ndarray


def _quantile(row, ratio):
    """torch.quantile(row, ratio) with linear interpolation, exact: the ratio·(n−1) position between the two order
    statistics around it, formed in rational arithmetic and rounded once. Non-finite rows follow torch: NaN if any
    NaN, else torch.lerp's float formula (which gives NaN for inf − inf)."""
    row = np.sort(row)
    pos = Fraction(ratio) * (len(row) - 1)
    lo, hi, w = row[math.floor(pos)], row[math.ceil(pos)], pos - math.floor(pos)
    if np.isnan(row).any():
        return math.nan
    if not np.isfinite(hi):
        w = float(w)
        return float(lo + w * (hi - lo) if w < 0.5 else hi - (hi - lo) * (1 - w))
    return float(Fraction(lo) + w * (Fraction(hi) - Fraction(lo)))


def threshold(x0, ratio, sample_max_value):
    """Dynamic thresholding (Saharia et al. 2022): s = the ``ratio`` quantile of |x0| per batch element, clamped to
    [1, sample_max_value]; x0 = clamp(x0, −s, s)/s. Returns (x0, s)."""
    if x0.ndim < 2:
        raise LCMRefError("sample.shape", x0.shape, "at least 2 dims (batch, channels, ...) with thresholding")
    s = np.array([_quantile(r, ratio) for r in np.abs(x0.reshape(x0.shape[0], -1))])
    s = np.minimum(np.maximum(s, 1.0), sample_max_value).reshape((-1,) + (1,) * (x0.ndim - 1))
    return np.clip(x0, -s, s) / s, s


def step(cfg: LCMConfig, model_output, timestep, sample, *, schedule, noise=None, step_index=None,
         num_inference_steps=None, profile="diffusers") -> StepOutput:
    """One step of Algorithm 3 as ``LCMScheduler.step`` takes it, in float64, with the noise z given.

    ``step_index`` is the position in ``schedule`` (as after ``set_begin_index``; the timestep is then not looked
    up); by default it is found as diffusers' first call does. ``num_inference_steps`` (default ``len(schedule)``)
    decides which step is last: pass ``Schedule.num_inference_steps`` to reproduce diffusers' quirk 1.
    ``noise`` is required on every step but the last."""
    strict = is_strict(profile)
    sched = np.asarray(schedule, dtype=np.int64)
    m, x, z = to_f64(model_output, "model_output"), to_f64(sample, "sample"), to_f64(noise, "noise")
    n = len(sched) if num_inference_steps is None else num_inference_steps
    if strict:
        check_step_request(timestep, sched, n)
    t = as_timestep(timestep)
    if step_index is None:
        step_index = index_for_timestep(sched, t)
    elif not (isinstance(step_index, numbers.Integral) and step_index >= 0):
        raise LCMRefError("step_index", step_index, "an integer >= 0")
    if strict:
        check_step_inputs(cfg, t, step_index, sched, m, x, z)

    c_skip, c_out, p, q, a, b = step_coefficients(cfg, t)
    x0 = None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if cfg.thresholding or cfg.clip_sample or math.isinf(p):
            if cfg.prediction_type == "sample":
                x0 = m
            elif math.isinf(p):  # ᾱ = 0, epsilon: diffusers' literal (x − √(1−ᾱ)·ε)/√ᾱ
                x0 = (x - m) / 0.0
            else:
                x0 = p * x + q * m
            if cfg.thresholding:
                if x0.ndim == 2 and not strict:  # diffusers reshapes by np.prod([]) == 1.0, a float
                    raise TypeError("thresholding a 2-D (batch, channels) sample: diffusers' reshape gets a float")
                x0 = threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[0]
            elif cfg.clip_sample:
                x0 = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
            denoised = c_out * x0 + c_skip * x
        else:
            denoised = a * x + b * m

        if step_index == n - 1:
            return StepOutput(denoised, denoised)
        if z is None:
            raise LCMRefError("noise", None, f"an array shaped like sample: step_index={step_index} is not the "
                              f"last of num_inference_steps={n}")
        t_prev = int(sched[step_index + 1]) if step_index + 1 < len(sched) else t
        c, d = noise_coefficients(cfg, t_prev)
        if x0 is None:
            return StepOutput(c * denoised + d * z, denoised)
        # From the clipped x0 with c·c_out and c·c_skip rounded once: ≤ 3.5 eps·Σ|terms| instead of 4.5 via denoised.
        cc_out, cc_skip = chained_coefficients(cfg, t, t_prev)
        return StepOutput(cc_out * x0 + cc_skip * x + d * z, denoised)


def step_terms(cfg: LCMConfig, model_output, timestep, sample, *, schedule, noise=None, step_index=None,
               num_inference_steps=None) -> StepOutput:
    """Σ|terms| of each output element (docs/design.md §8), the denominator of the scaled error:

        denoised: |c_out|·(|p·x| + |q·m|)/s + c_skip·|x|     (s = the threshold divisor, else 1)
        prev:     c·Σ|terms of denoised| + d·|z|

    prev's terms expand denoised into its own addends, so that an error carried from denoised into prev is measured
    against what produced it and the measure stays meaningful when denoised itself cancels (docs/design.md §8)."""
    sched = np.asarray(schedule, dtype=np.int64)
    m, x, z = to_f64(model_output, "model_output"), to_f64(sample, "sample"), to_f64(noise, "noise")
    t = as_timestep(timestep)
    i = index_for_timestep(sched, t) if step_index is None else step_index
    n = len(sched) if num_inference_steps is None else num_inference_steps
    c_skip, c_out, p, q, _, _ = step_coefficients(cfg, t)
    with np.errstate(invalid="ignore", over="ignore"):
        x0_terms = np.abs(m) if cfg.prediction_type == "sample" else np.abs(p * x) + np.abs(q * m)
        if cfg.thresholding:
            x0 = m if cfg.prediction_type == "sample" else p * x + q * m
            x0_terms = x0_terms / threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[1]
        den_terms = abs(c_out) * x0_terms + c_skip * np.abs(x)
        if i == n - 1 or z is None:
            return StepOutput(den_terms, den_terms)
        c, d = noise_coefficients(cfg, int(sched[i + 1]) if i + 1 < len(sched) else t)
        return StepOutput(c * den_terms + d * np.abs(z), den_terms)


def scaled_error(got, want, terms, dtype) -> np.ndarray:
    """|got − want| / (eps(dtype)·Σ|terms|) elementwise (docs/design.md §8); eps = machine epsilon of ``dtype`` (a
    NumPy or torch dtype or its name: 2⁻²³ for float32). Equal values score 0 (also where terms = 0 or both are inf); a
    NaN on one side only, or an inf mismatch, scores inf."""
    eps = numerics.eps(dtype)
    g, w, terms = to_f64(got, "got"), to_f64(want, "want"), to_f64(terms, "terms")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = np.abs(g - w) / (eps * terms)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    return np.where(same, 0.0, np.where(np.isnan(err), np.inf, err))


def sample(cfg: LCMConfig, model_fn, x_T, schedule, noises, *, profile="diffusers") -> np.ndarray:
    """Algorithm 3 (multistep consistency sampling): x ← f(x_T, τ_1); for n ≥ 2: x ← f(√ᾱ x + √(1−ᾱ) z_n, τ_n).

    ``model_fn(x, t)`` returns the model output for ``cfg.prediction_type``; ``noises`` holds one array per step
    but the last (``len(schedule) − 1``). Returns the final denoised sample."""
    sched = np.asarray(schedule, dtype=np.int64)
    if len(noises) != len(sched) - 1:
        raise LCMRefError("noises", f"{len(noises)} arrays", f"len(schedule) - 1 = {len(sched) - 1} arrays")
    x = to_f64(x_T, "x_T")
    for i, t in enumerate(sched):
        z = noises[i] if i < len(noises) else None
        x = step(cfg, model_fn(x, int(t)), int(t), x, schedule=sched, noise=z, step_index=i, profile=profile)[0]
    return x


# ---------------------------------------------------------------------------------------------------------------
# Forward process
# ---------------------------------------------------------------------------------------------------------------

def _broadcast_coefficients(cfg, timesteps, ndim):
    ts = np.asarray(timesteps).reshape(-1)
    T = cfg.num_train_timesteps
    if ts.dtype.kind not in "iu" or ((ts < -T) | (ts >= T)).any():
        raise IndexError(f"timesteps {ts.tolist()} must be integers in [-{T}, {T})")
    shape = (-1,) + (1,) * max(ndim - 1, 0)
    return (sqrt_alphas_cumprod(cfg)[ts].reshape(shape), sqrt_one_minus_alphas_cumprod(cfg)[ts].reshape(shape))


def add_noise(cfg: LCMConfig, x0, noise, timesteps) -> np.ndarray:
    """Forward process q(x_t | x_0): √ᾱ_t·x0 + √(1−ᾱ_t)·ε, one timestep per batch element (or one for all)."""
    x0, eps = to_f64(x0, "x0"), to_f64(noise, "noise")
    c, d = _broadcast_coefficients(cfg, timesteps, x0.ndim)
    return c * x0 + d * eps


def get_velocity(cfg: LCMConfig, sample, noise, timesteps) -> np.ndarray:
    """v-prediction target: √ᾱ_t·ε − √(1−ᾱ_t)·x (Salimans & Ho 2022)."""
    x, eps = to_f64(sample, "sample"), to_f64(noise, "noise")
    c, d = _broadcast_coefficients(cfg, timesteps, x.ndim)
    return c * eps - d * x
