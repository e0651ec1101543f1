"""Float64 reference of the LCM multistep scheduler (Luo et al. 2023, arXiv 2310.04378, Algorithm 3).

What "exact" means (docs/design.md §2): every float in the config is the binary64 value Python holds; every quantity is the
exact real-arithmetic meaning of diffusers' ``LCMScheduler`` code, computed with mpmath at ``DPS`` digits and rounded
once to float64, so every table entry and every coefficient is within 1 ulp (in fact 0.5 ulp + 1e-50) of the exact
value. Integer schedules reproduce the NumPy/Python float64 evaluation diffusers performs (docs/design.md §7).

A step is an affine map of its inputs unless clip/threshold is configured:

    x0_pred  = p[t]·sample + q[t]·model_output          (x0_coefficients; per prediction type)
    denoised = c_out[t]·x0_pred + c_skip[t]·sample      (boundary_scalings)
             = a[t]·sample + b[t]·model_output           (denoised_coefficients: a = c_skip + c_out·p, b = c_out·q)
    prev     = c[s]·denoised + d[s]·z,  s = next timestep (noise_coefficients: c = √ᾱ_s, d = √(1−ᾱ_s))

and the reference evaluates the fused form with correctly rounded a, b, c, d: first-order error ≤ 1.5 eps·Σ|terms|
for denoised, ≤ 3 for prev (with clip: 3 and 3.5; thresholding adds its divisor's error), checked against mpmath in
``tests/test_reference_step.py``. ``lcm_ref.torch_impl`` uses the same names and the same coefficients.

Two profiles: ``"diffusers"`` (default) reproduces diffusers, quirks included; ``"strict"`` gives the same results on
valid input and raises ``StrictError`` (a ``ValueError``) for input that diffusers accepts but mishandles.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from fractions import Fraction
from typing import NamedTuple

import mpmath
import numpy as np

from ..config import LCMConfig
from .. import numerics
from ..errors import LCMRefError, LCMRefWarning, StrictError
from ..numerics import to_f64

__all__ = [
    "DPS", "SIGMA_DATA", "PROFILES", "StepOutput", "Schedule",
    "betas", "alphas_cumprod", "final_alpha_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "boundary_scalings", "x0_coefficients", "denoised_coefficients", "noise_coefficients",
    "spaced_timesteps", "origin_grid", "set_timesteps", "timesteps", "index_for_timestep", "previous_timestep",
    "threshold", "step", "step_terms", "scaled_error", "sample", "add_noise", "get_velocity",
]

DPS = 50            #: decimal digits of the exact computation (docs/design.md §2 asks for >= 40)
SIGMA_DATA = 0.5    #: σ_data of the boundary condition (diffusers' LCMScheduler.sigma_data)
MAX_BETA = 0.999    #: betas_for_alpha_bar's cap
PROFILES = ("diffusers", "strict")

_mp = mpmath.MPContext()
_mp.dps = DPS
_mpf = _mp.mpf


class StepOutput(NamedTuple):
    prev_sample: np.ndarray
    denoised: np.ndarray


class Schedule(NamedTuple):
    """What ``set_timesteps`` leaves behind: the timesteps and the ``num_inference_steps`` that ``step`` uses to
    recognise the last step (they differ only in diffusers' quirk 1: custom timesteps with strength < 1)."""
    timesteps: np.ndarray
    num_inference_steps: int


# ---------------------------------------------------------------------------------------------------------------
# Tables: exact (mpmath), then rounded once.
# ---------------------------------------------------------------------------------------------------------------

def _alpha_bar_fn(schedule):
    """ā(t) of diffusers' betas_for_alpha_bar, t in [0, 1], exact in mpmath."""
    if schedule == "squaredcos_cap_v2":
        return lambda t: _mp.cos((t + _mpf(0.008)) / _mpf(1.008) * _mp.pi / 2) ** 2
    if schedule == "exp":
        return lambda t: _mp.exp(t * -12)
    if schedule == "laplace":
        def laplace(t):
            d = _mpf(0.5) - t
            sign = 1 if d >= 0 else -1          # math.copysign(1, 0.0) == 1
            lmb = -_mpf(0.5) * sign * _mp.log(1 - 2 * abs(d) + _mpf(1e-6))
            snr = _mp.exp(lmb)
            return _mp.sqrt(snr / (1 + snr))
        return laplace
    raise AssertionError(schedule)


def _linspace(start, end, T):
    """torch.linspace in exact arithmetic: start + i·(end − start)/(T − 1)."""
    if T == 1:
        return [_mpf(start)]
    step = (_mpf(end) - _mpf(start)) / (T - 1)
    return [_mpf(start) + i * step for i in range(T)]


def _exact_betas(cfg: LCMConfig):
    T = cfg.num_train_timesteps
    if cfg.trained_betas is not None:
        return [_mpf(b) for b in cfg.trained_betas]
    if cfg.beta_schedule == "linear":
        return _linspace(cfg.beta_start, cfg.beta_end, T)
    if cfg.beta_schedule == "scaled_linear":
        return [b ** 2 for b in _linspace(_mp.sqrt(cfg.beta_start), _mp.sqrt(cfg.beta_end), T)]
    if cfg.beta_schedule == "sigmoid":
        width = _mpf(cfg.beta_end) - _mpf(cfg.beta_start)
        return [width / (1 + _mp.exp(-x)) + cfg.beta_start for x in _linspace(-6, 6, T)]
    abar = _alpha_bar_fn(cfg.beta_schedule)
    return [min(1 - abar(_mpf(i + 1) / T) / abar(_mpf(i) / T), _mpf(MAX_BETA)) for i in range(T)]


@functools.lru_cache(maxsize=256)
def _exact(cfg: LCMConfig):
    """Exact (betas, alphas_cumprod) as mpf lists."""
    beta = _exact_betas(cfg)
    abar, acc = [], _mpf(1)
    for b in beta:
        acc *= 1 - b
        abar.append(acc)
    if cfg.rescale_betas_zero_snr:
        # Lin et al. 2023, Algorithm 1: shift √ᾱ so the last is 0, scale so the first is unchanged.
        if len(abar) < 2 or abar[0] == abar[-1]:
            raise LCMRefError("rescale_betas_zero_snr", True, "needs num_train_timesteps >= 2 and ᾱ[0] != ᾱ[T-1]")
        s0, sT = _mp.sqrt(abar[0]), _mp.sqrt(abar[-1])
        abar = [((_mp.sqrt(a) - sT) * s0 / (s0 - sT)) ** 2 for a in abar]
        beta = [1 - abar[0]] + [1 - a / a_prev if a_prev else _mpf(1) for a_prev, a in zip(abar, abar[1:])]
    return beta, abar


def _rounded(values):
    arr = np.array([float(v) for v in values], dtype=np.float64)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=256)
def _tables(cfg: LCMConfig):
    beta, abar = _exact(cfg)
    return {
        "betas": _rounded(beta),
        "alphas_cumprod": _rounded(abar),
        "sqrt_alphas_cumprod": _rounded(_mp.sqrt(a) for a in abar),
        "sqrt_one_minus_alphas_cumprod": _rounded(_mp.sqrt(1 - a) for a in abar),
    }


def betas(cfg: LCMConfig) -> np.ndarray:
    """β_t, t = 0..T−1 (read-only float64, ≤ 1 ulp of exact)."""
    return _tables(cfg)["betas"]


def alphas_cumprod(cfg: LCMConfig) -> np.ndarray:
    """ᾱ_t = Π_{s≤t}(1 − β_s) (read-only float64, ≤ 1 ulp of exact)."""
    return _tables(cfg)["alphas_cumprod"]


def sqrt_alphas_cumprod(cfg: LCMConfig) -> np.ndarray:
    """√ᾱ_t, rounded once from the exact value."""
    return _tables(cfg)["sqrt_alphas_cumprod"]


def sqrt_one_minus_alphas_cumprod(cfg: LCMConfig) -> np.ndarray:
    """√(1 − ᾱ_t), rounded once from the exact value (no cancellation: 1 − ᾱ is formed exactly)."""
    return _tables(cfg)["sqrt_one_minus_alphas_cumprod"]


def final_alpha_cumprod(cfg: LCMConfig) -> float:
    """ᾱ used when the previous timestep is negative: 1.0 if ``set_alpha_to_one`` else ᾱ_0."""
    return 1.0 if cfg.set_alpha_to_one else float(alphas_cumprod(cfg)[0])


# ---------------------------------------------------------------------------------------------------------------
# Per-timestep coefficients (exact, rounded once, cached).
# ---------------------------------------------------------------------------------------------------------------

def _exact_alpha_bar(cfg, t):
    """ᾱ[t] with diffusers' indexing: a negative t wraps (quirk 2), t >= T raises IndexError."""
    T = cfg.num_train_timesteps
    if not -T <= t < T:
        raise IndexError(f"timestep {t} is out of bounds for alphas_cumprod of size {T}")
    return _exact(cfg)[1][t]


def _exact_scalings(cfg, t):
    u = _mpf(t) * _mpf(cfg.timestep_scaling)
    r = u ** 2 + _mpf(SIGMA_DATA) ** 2
    return _mpf(SIGMA_DATA) ** 2 / r, u / _mp.sqrt(r)


@functools.lru_cache(maxsize=1 << 16)
def _scalings(cfg: LCMConfig, t: int):
    return tuple(float(v) for v in _exact_scalings(cfg, t))


@functools.lru_cache(maxsize=1 << 16)
def _coefficients(cfg: LCMConfig, t: int):
    """(c_skip, c_out, p, q, a, b) at timestep t, each correctly rounded."""
    c_skip, c_out = _exact_scalings(cfg, t)
    abar = _exact_alpha_bar(cfg, t)
    if cfg.prediction_type == "epsilon":
        if abar == 0:       # zero-SNR at t = T−1: diffusers divides by zero (quirk 3)
            return float(c_skip), float(c_out), math.inf, -math.inf, math.inf, -math.inf
        p, q = 1 / _mp.sqrt(abar), -_mp.sqrt(1 - abar) / _mp.sqrt(abar)
    elif cfg.prediction_type == "sample":
        p, q = _mpf(0), _mpf(1)
    else:  # v_prediction
        p, q = _mp.sqrt(abar), -_mp.sqrt(1 - abar)
    return tuple(float(v) for v in (c_skip, c_out, p, q, c_skip + c_out * p, c_out * q))


@functools.lru_cache(maxsize=1 << 16)
def _noise_coefficients(cfg: LCMConfig, t_prev: int):
    abar = _exact_alpha_bar(cfg, t_prev) if t_prev >= 0 else _mpf(final_alpha_cumprod(cfg))
    return float(_mp.sqrt(abar)), float(_mp.sqrt(1 - abar))


@functools.lru_cache(maxsize=1 << 16)
def _chained_coefficients(cfg: LCMConfig, t: int, t_prev: int):
    """(√ᾱ_prev·c_out[t], √ᾱ_prev·c_skip[t]), each rounded once: prev = these·(x0, sample) + √(1−ᾱ_prev)·z."""
    abar = _exact_alpha_bar(cfg, t_prev) if t_prev >= 0 else _mpf(final_alpha_cumprod(cfg))
    c_skip, c_out = _exact_scalings(cfg, t)
    return float(_mp.sqrt(abar) * c_out), float(_mp.sqrt(abar) * c_skip)


def _per_timestep(fn, cfg, timestep, k):
    """Apply a cached scalar coefficient function to an int or an int array; returns k floats or k arrays."""
    if np.ndim(timestep) == 0:
        return fn(cfg, _as_int(timestep))
    ts = np.asarray(timestep)
    cols = np.array([fn(cfg, int(t)) for t in ts.ravel()], dtype=np.float64).reshape(ts.shape + (-1,))
    return tuple(cols[..., i] for i in range(k))


def boundary_scalings(cfg: LCMConfig, timestep):
    """(c_skip, c_out) at ``timestep`` (int or int array): u = t·timestep_scaling, c_skip = σ²/(u²+σ²),
    c_out = u/√(u²+σ²), σ = σ_data = 0.5. Defined for any integer t."""
    return _per_timestep(_scalings, cfg, timestep, 2)


def x0_coefficients(cfg: LCMConfig, timestep):
    """(p, q) with x0_pred = p·sample + q·model_output, for ``cfg.prediction_type``."""
    out = _per_timestep(_coefficients, cfg, timestep, 6)
    return out[2], out[3]


def denoised_coefficients(cfg: LCMConfig, timestep):
    """(a, b) with denoised = a·sample + b·model_output when neither clip nor threshold is configured."""
    out = _per_timestep(_coefficients, cfg, timestep, 6)
    return out[4], out[5]


def noise_coefficients(cfg: LCMConfig, prev_timestep):
    """(c, d) = (√ᾱ_prev, √(1 − ᾱ_prev)) with prev = c·denoised + d·z; ᾱ_prev = final_alpha_cumprod if prev < 0."""
    return _per_timestep(_noise_coefficients, cfg, prev_timestep, 2)


# ---------------------------------------------------------------------------------------------------------------
# Timesteps
# ---------------------------------------------------------------------------------------------------------------

def _as_int(t):
    """An integer timestep from an int, NumPy integer or 0-d tensor/array; non-integers raise IndexError, as
    indexing diffusers' alphas_cumprod with them does."""
    if hasattr(t, "item"):
        t = t.item()
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        return int(t)
    raise IndexError(f"timestep {t!r} is not an integer")


def _check_profile(profile):
    if profile not in PROFILES:
        raise LCMRefError("profile", profile, f"one of {PROFILES}")
    return profile == "strict"


def spaced_timesteps(T: int, n: int, mode: str, steps_offset: int = 0) -> np.ndarray:
    """Inference timesteps of DDIM-family schedulers (Lin et al. 2023, Table 2), as ``DDIMScheduler.set_timesteps``
    computes them in NumPy float64: ``leading`` (plus ``steps_offset``), ``linspace``, ``trailing``."""
    if not (isinstance(n, numbers.Integral) and 1 <= n <= T):
        raise LCMRefError("num_inference_steps", n, f"an integer in [1, num_train_timesteps={T}]")
    if mode == "leading":
        ts = (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
    elif mode == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1]
    elif mode == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        raise LCMRefError("mode", mode, "one of 'leading', 'linspace', 'trailing'")
    return np.ascontiguousarray(ts, dtype=np.int64)


def origin_grid(cfg, original_steps, strength, spacing):
    """LCM's ascending origin grid: (1..int(orig·strength))·k − 1 with k = T // orig, or with ``spacing`` the
    orig-point grid of that mode, cut to its lowest int(orig·strength) points."""
    T = cfg.num_train_timesteps
    L = int(original_steps * strength)
    if spacing is None:
        k = T // original_steps
        return np.arange(1, L + 1, dtype=np.int64) * k - 1
    if not 0 < strength <= 1:
        raise LCMRefError("strength", strength, "a float in (0, 1] when spacing is given")
    return spaced_timesteps(T, original_steps, spacing, cfg.steps_offset)[::-1][:L].copy()


def _strict_int(name, v, lo):
    if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo):
        raise StrictError(name, v, f"an integer >= {lo}")


def set_timesteps(cfg: LCMConfig, num_inference_steps=None, *, original_inference_steps=None, timesteps=None,
                  strength=1.0, spacing=None, profile="diffusers") -> Schedule:
    """The schedule ``LCMScheduler.set_timesteps`` builds, with the ``num_inference_steps`` it records.

    ``spacing=None`` is diffusers' LCM grid; ``"leading" | "linspace" | "trailing"`` builds the origin grid with that
    DDIM-family mode instead (opt-in; diffusers ignores ``timestep_spacing``)."""
    strict = _check_profile(profile)
    T = cfg.num_train_timesteps
    if (num_inference_steps is None) == (timesteps is None):
        raise ValueError("pass exactly one of num_inference_steps and timesteps (custom timesteps)")
    orig = cfg.original_inference_steps if original_inference_steps is None else original_inference_steps
    if strict:
        _strict_int("original_inference_steps", orig, 1)
        if not (isinstance(strength, numbers.Real) and 0 < strength <= 1):
            raise StrictError("strength", strength, "a float in (0, 1] (diffusers does not check it: quirk 4)")
        if num_inference_steps is not None:
            _strict_int("num_inference_steps", num_inference_steps, 1)
    if spacing is not None and spacing not in ("leading", "linspace", "trailing"):
        raise LCMRefError("spacing", spacing, "None or one of 'leading', 'linspace', 'trailing'")
    if orig > T:
        raise ValueError(f"original_inference_steps={orig} must be <= num_train_timesteps={T}")
    origin = origin_grid(cfg, orig, strength, spacing)

    if timesteps is not None:
        ts = [t.item() if hasattr(t, "item") else t for t in timesteps]
        if strict:
            if not ts:
                raise StrictError("timesteps", ts, "a non-empty, strictly descending list of integers in [0, T)")
            for t in ts:
                if not (isinstance(t, numbers.Real) and float(t).is_integer() and t >= 0):
                    raise StrictError("timesteps", ts, "integers >= 0 (diffusers truncates floats and wraps "
                                      f"negative ones: quirk 2); got {t!r}")
            if len(set(ts)) != len(ts):
                raise StrictError("timesteps", ts, "no duplicates")
        for i in range(1, len(ts)):
            if ts[i] >= ts[i - 1]:
                raise ValueError(f"timesteps={ts} must be in strictly descending order")
        if ts[0] >= T:  # IndexError on an empty list, as diffusers
            raise ValueError(f"timesteps[0]={ts[0]} must be < num_train_timesteps={T}")
        on_grid = set(origin.tolist())
        if strength == 1.0 and ts[0] != T - 1:
            warnings.warn(f"timesteps[0]={ts[0]} is not num_train_timesteps - 1 = {T - 1}", LCMRefWarning)
        off = [t for t in ts[1:] if t not in on_grid]
        if off:
            warnings.warn(f"custom timesteps {off} are not on the origin grid", LCMRefWarning)
        if len(ts) > orig:
            warnings.warn(f"{len(ts)} custom timesteps exceed original_inference_steps={orig}", LCMRefWarning)
        arr = np.array([int(t) for t in ts], dtype=np.int64)
        n = len(arr)
        t_start = max(n - min(int(n * strength), n), 0)
        arr = arr[t_start:]
        if strict and len(arr) == 0:
            raise StrictError("timesteps", ts, f"a list that strength={strength} does not cut to nothing "
                              f"(int({n} x {strength}) = 0 timesteps left)")
        # diffusers keeps num_inference_steps = len(all timesteps) (quirk 1); strict uses the truncated length.
        return Schedule(arr, len(arr) if strict else n)

    n = num_inference_steps
    if n > T:
        raise ValueError(f"num_inference_steps={n} must be <= num_train_timesteps={T}")
    if len(origin) // n < 1:
        raise ValueError(f"the combination original_inference_steps x strength = {orig} x {strength} = {len(origin)} "
                         f"is smaller than num_inference_steps={n}")
    if n > orig:
        raise ValueError(f"num_inference_steps={n} must be <= original_inference_steps={orig}")
    desc = origin[::-1]
    idx = np.floor(np.linspace(0, len(desc), num=n, endpoint=False)).astype(np.int64)
    return Schedule(desc[idx].copy(), n)


def timesteps(cfg: LCMConfig, num_inference_steps=None, *, original_inference_steps=None, timesteps=None,
              strength=1.0, spacing=None, profile="diffusers") -> np.ndarray:
    """The inference timesteps (np.int64, descending) that ``LCMScheduler.set_timesteps`` chooses."""
    return set_timesteps(cfg, num_inference_steps, original_inference_steps=original_inference_steps,
                         timesteps=timesteps, strength=strength, spacing=spacing, profile=profile).timesteps


def index_for_timestep(schedule, t):
    """diffusers' first-call lookup: the second match if the timestep is duplicated; none raises IndexError."""
    hits = np.flatnonzero(np.asarray(schedule) == t)
    if len(hits) == 0:
        raise IndexError(f"timestep {t} is not in the schedule {list(schedule)}")
    return int(hits[1] if len(hits) > 1 else hits[0])


def previous_timestep(schedule, timestep) -> int:
    """The timestep after ``timestep`` in ``schedule``, or −1 after the last (diffusers >= 0.32)."""
    schedule = np.asarray(schedule)
    i = int(np.flatnonzero(schedule == _as_int(timestep))[0])
    return int(schedule[i + 1]) if i + 1 < len(schedule) else -1


# ---------------------------------------------------------------------------------------------------------------
# Step
# ---------------------------------------------------------------------------------------------------------------

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
    strict = _check_profile(profile)
    sched = np.asarray(schedule, dtype=np.int64)
    m, x, z = to_f64(model_output, "model_output"), to_f64(sample, "sample"), to_f64(noise, "noise")
    n = len(sched) if num_inference_steps is None else num_inference_steps
    if strict:
        t = timestep.item() if hasattr(timestep, "item") else timestep
        if not (isinstance(t, numbers.Integral) and t in sched):
            raise StrictError("timestep", t, f"one of the schedule's timesteps {sched.tolist()}")
        if n != len(sched):
            raise StrictError("num_inference_steps", n, f"len(schedule) = {len(sched)} (diffusers' quirk 1)")
    t = _as_int(timestep)
    if step_index is None:
        step_index = index_for_timestep(sched, t)
    elif not (isinstance(step_index, numbers.Integral) and step_index >= 0):
        raise LCMRefError("step_index", step_index, "an integer >= 0")
    if strict:
        if step_index >= len(sched):
            raise StrictError("step_index", step_index, f"< len(schedule) = {len(sched)} (a step past the end "
                              "re-noises at the last level in diffusers: quirk 5)")
        if sched[step_index] != t:
            raise StrictError("timestep", t, f"schedule[step_index={step_index}] = {sched[step_index]}")
        for name, arr in (("model_output", m), ("noise", z)):
            if arr is not None and arr.shape != x.shape:
                raise StrictError(f"{name}.shape", arr.shape, f"the shape of sample, {x.shape}")
        for name, arr in (("model_output", m), ("sample", x), ("noise", z)):
            if arr is not None and not np.isfinite(arr).all():
                raise StrictError(name, "non-finite values", "finite values only")
        if cfg.prediction_type == "epsilon" and alphas_cumprod(cfg)[t] == 0:
            raise StrictError("timestep", t, "a timestep with ᾱ > 0 for epsilon prediction (zero-SNR makes "
                              "ᾱ[T-1] = 0 and diffusers divides by zero: quirk 3)")

    c_skip, c_out, p, q, a, b = _coefficients(cfg, t)
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
        c, d = _noise_coefficients(cfg, t_prev)
        if x0 is None:
            return StepOutput(c * denoised + d * z, denoised)
        # From the clipped x0 with c·c_out and c·c_skip rounded once: ≤ 3.5 eps·Σ|terms| instead of 4.5 via denoised.
        cc_out, cc_skip = _chained_coefficients(cfg, t, t_prev)
        return StepOutput(cc_out * x0 + cc_skip * x + d * z, denoised)


def step_terms(cfg: LCMConfig, model_output, timestep, sample, *, schedule, noise=None, step_index=None,
               num_inference_steps=None) -> StepOutput:
    """Σ|terms| of each output element (docs/design.md §8), the denominator of the scaled error:

        denoised: |c_out|·(|p·x| + |q·m|)/s + c_skip·|x|     (s = the threshold divisor, else 1)
        prev:     c·Σ|terms of denoised| + d·|z|

    prev's terms expand denoised into its own addends, so that an error carried from denoised into prev is measured
    against what produced it and the measure stays meaningful when denoised itself cancels (docs/design.md §8 reading)."""
    sched = np.asarray(schedule, dtype=np.int64)
    m, x, z = to_f64(model_output, "model_output"), to_f64(sample, "sample"), to_f64(noise, "noise")
    t = _as_int(timestep)
    i = index_for_timestep(sched, t) if step_index is None else step_index
    n = len(sched) if num_inference_steps is None else num_inference_steps
    c_skip, c_out, p, q, _, _ = _coefficients(cfg, t)
    with np.errstate(invalid="ignore", over="ignore"):
        x0_terms = np.abs(m) if cfg.prediction_type == "sample" else np.abs(p * x) + np.abs(q * m)
        if cfg.thresholding:
            x0 = m if cfg.prediction_type == "sample" else p * x + q * m
            x0_terms = x0_terms / threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[1]
        den_terms = abs(c_out) * x0_terms + c_skip * np.abs(x)
        if i == n - 1 or z is None:
            return StepOutput(den_terms, den_terms)
        c, d = _noise_coefficients(cfg, int(sched[i + 1]) if i + 1 < len(sched) else t)
        return StepOutput(c * den_terms + d * np.abs(z), den_terms)


def scaled_error(got, want, terms, dtype) -> np.ndarray:
    """|got − want| / (eps(dtype)·Σ|terms|) elementwise (docs/design.md §8); eps = machine epsilon of ``dtype`` (a NumPy or
    torch dtype or its name: 2⁻²³ for float32). Equal values score 0 (also where terms = 0 or both are inf); a
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
