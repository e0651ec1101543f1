"""The noise schedule and the per-timestep coefficients (docs/design.md §2, §7.1, §7.3).

Every table is computed exactly (mpmath at ``DPS`` digits, with the config's floats taken as the doubles Python
holds) and rounded once to float64:

- β_t by the configured schedule (§7.1), optionally rescaled to zero terminal SNR;
- ᾱ_t = Π_{s≤t}(1 − β_s), √ᾱ_t, √(1 − ᾱ_t) (1 − ᾱ formed exactly: no cancellation near t = 0);
- the boundary scalings c_skip, c_out of the consistency parameterisation;
- the step coefficients of §7.3: p, q (x0_pred = p·x + q·m), a, b (denoised = a·x + b·m), c, d
  (prev = c·denoised + d·z), and the chained √ᾱ_prev·c_out, √ᾱ_prev·c_skip used with clip or threshold.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import mpmath
import numpy as np

from ..config import LCMConfig
from ..errors import LCMRefError, LCMRefWarning

DPS = 50            #: decimal digits of the exact computation (docs/design.md §2 asks for >= 40)
SIGMA_DATA = 0.5    #: σ_data of the boundary condition (diffusers' LCMScheduler.sigma_data)
MAX_BETA = 0.999    #: betas_for_alpha_bar's cap

_mp = mpmath.MPContext()
_mp.dps = DPS
_mpf = _mp.mpf


def as_timestep(t):
    """An integer timestep from an int, NumPy integer or 0-d tensor/array; non-integers raise IndexError, as
    indexing diffusers' alphas_cumprod with them does."""
    if hasattr(t, "item"):
        t = t.item()
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        return int(t)
    raise IndexError(f"timestep {t!r} is not an integer")


# ---------------------------------------------------------------------------------------------------------------
# β and ᾱ: exact (mpmath), then rounded once.
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


def _sqrt(v):
    """√v for v ≥ 0, NaN for v < 0 or NaN: torch's sqrt of a negative ᾱ (a degenerate config, β > 1), which diffusers
    takes as it comes (docs/design.md §3)."""
    return _mp.sqrt(v) if v >= 0 else _mp.nan


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


#: the config fields the β and ᾱ tables depend on; the caches below are keyed on these alone, so configs that
#: differ only in the step's settings (prediction type, original_inference_steps, scaling, …) share one table
TABLE_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "rescale_betas_zero_snr")


@functools.lru_cache(maxsize=1 << 12)
def table_key(cfg: LCMConfig) -> LCMConfig:
    """``cfg`` with every field the tables do not depend on at its default (the cache key of ``_exact``). A
    degenerate config has already warned when it was made: the key is built without a second warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LCMRefWarning)
        return LCMConfig(**{f: getattr(cfg, f) for f in TABLE_FIELDS})


def _exact(cfg: LCMConfig):
    """Exact (betas, alphas_cumprod) as mpf lists."""
    return _exact_by_key(table_key(cfg))


@functools.lru_cache(maxsize=256)
def _exact_by_key(cfg: LCMConfig):
    beta = _exact_betas(cfg)
    abar, acc = [], _mpf(1)
    for b in beta:
        acc *= 1 - b
        abar.append(acc)
    if cfg.rescale_betas_zero_snr:
        # Lin et al. 2023, Algorithm 1: shift √ᾱ so the last is 0, scale so the first is unchanged.
        if len(abar) < 2 or abar[0] == abar[-1]:
            raise LCMRefError("rescale_betas_zero_snr", True, "needs num_train_timesteps >= 2 and ᾱ[0] != ᾱ[T-1]")
        s0, sT = _sqrt(abar[0]), _sqrt(abar[-1])
        abar = [((_sqrt(a) - sT) * s0 / (s0 - sT)) ** 2 for a in abar]
        beta = [1 - abar[0]] + [1 - a / a_prev if a_prev else _mpf(1) for a_prev, a in zip(abar, abar[1:])]
    return beta, abar


def _rounded(values):
    arr = np.array([float(v) for v in values], dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _tables(cfg: LCMConfig):
    return _tables_by_key(table_key(cfg))


@functools.lru_cache(maxsize=256)
def _tables_by_key(cfg: LCMConfig):
    beta, abar = _exact(cfg)
    return {
        "betas": _rounded(beta),
        "alphas_cumprod": _rounded(abar),
        "sqrt_alphas_cumprod": _rounded(_sqrt(a) for a in abar),
        "sqrt_one_minus_alphas_cumprod": _rounded(_sqrt(1 - a) for a in abar),
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
    """ᾱ[t] with diffusers' indexing: a negative t wraps (quirk 2), t >= T raises IndexError (T the table's length:
    num_train_timesteps, or len(trained_betas) when a degenerate config gives another)."""
    T = len(_exact(cfg)[1])
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
def step_coefficients(cfg: LCMConfig, t: int):
    """(c_skip, c_out, p, q, a, b) at the integer timestep t, each correctly rounded (§7.3). Zero-SNR epsilon
    prediction at ᾱ_t = 0 gives p = a = inf, q = b = −inf (diffusers divides by zero: quirk 3)."""
    c_skip, c_out = _exact_scalings(cfg, t)
    abar = _exact_alpha_bar(cfg, t)
    if cfg.prediction_type == "epsilon":
        if abar == 0:       # zero-SNR at t = T−1: diffusers divides by zero (quirk 3)
            return float(c_skip), float(c_out), math.inf, -math.inf, math.inf, -math.inf
        p, q = 1 / _sqrt(abar), -_sqrt(1 - abar) / _sqrt(abar)
    elif cfg.prediction_type == "sample":
        p, q = _mpf(0), _mpf(1)
    else:  # v_prediction
        p, q = _sqrt(abar), -_sqrt(1 - abar)
    return tuple(float(v) for v in (c_skip, c_out, p, q, c_skip + c_out * p, c_out * q))


@functools.lru_cache(maxsize=1 << 16)
def _noise_coefficients(cfg: LCMConfig, t_prev: int):
    abar = _exact_alpha_bar(cfg, t_prev) if t_prev >= 0 else _mpf(final_alpha_cumprod(cfg))
    return float(_sqrt(abar)), float(_sqrt(1 - abar))


@functools.lru_cache(maxsize=1 << 16)
def chained_coefficients(cfg: LCMConfig, t: int, t_prev: int):
    """(√ᾱ_prev·c_out[t], √ᾱ_prev·c_skip[t]), each rounded once: prev = these·(x0, sample) + √(1−ᾱ_prev)·z."""
    abar = _exact_alpha_bar(cfg, t_prev) if t_prev >= 0 else _mpf(final_alpha_cumprod(cfg))
    c_skip, c_out = _exact_scalings(cfg, t)
    return float(_sqrt(abar) * c_out), float(_sqrt(abar) * c_skip)


def _per_timestep(fn, cfg, timestep, k):
    """Apply a cached scalar coefficient function to an int or an int array; returns k floats or k arrays."""
    if np.ndim(timestep) == 0:
        return fn(cfg, as_timestep(timestep))
    ts = np.asarray(timestep)
    cols = np.array([fn(cfg, int(t)) for t in ts.ravel()], dtype=np.float64).reshape(ts.shape + (-1,))
    return tuple(cols[..., i] for i in range(k))


def boundary_scalings(cfg: LCMConfig, timestep):
    """(c_skip, c_out) at ``timestep`` (int or int array): u = t·timestep_scaling, c_skip = σ²/(u²+σ²),
    c_out = u/√(u²+σ²), σ = σ_data = 0.5. Defined for any integer t."""
    return _per_timestep(_scalings, cfg, timestep, 2)


def x0_coefficients(cfg: LCMConfig, timestep):
    """(p, q) with x0_pred = p·sample + q·model_output, for ``cfg.prediction_type``."""
    out = _per_timestep(step_coefficients, cfg, timestep, 6)
    return out[2], out[3]


def denoised_coefficients(cfg: LCMConfig, timestep):
    """(a, b) with denoised = a·sample + b·model_output when neither clip nor threshold is configured."""
    out = _per_timestep(step_coefficients, cfg, timestep, 6)
    return out[4], out[5]


def noise_coefficients(cfg: LCMConfig, prev_timestep):
    """(c, d) = (√ᾱ_prev, √(1 − ᾱ_prev)) with prev = c·denoised + d·z; ᾱ_prev = final_alpha_cumprod if prev < 0."""
    return _per_timestep(_noise_coefficients, cfg, prev_timestep, 2)
