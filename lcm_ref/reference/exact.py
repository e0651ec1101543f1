"""An independent high-precision (60-digit mpmath) evaluation of the LCM scheduler: the ground truth the reference is
checked against, in the style of scipy.special's mpmath tests (docs/design.md §8: tables ≤ 1 ulp, step outputs ≤ 4 scaled
eps64). Used by ``tests/test_reference_tables.py``, ``tests/test_reference_step.py`` and ``lcm_ref.studies.accuracy``.

It shares no code with ``lcm_ref.reference`` (no tables, no coefficient functions; only ``LCMConfig``) and takes a
different formulation on purpose, so that a slip in one is not repeated in the other:

- tables: a Fraction-exact linspace for linear, a convex-combination linspace for scaled_linear, tanh for the
  sigmoid, the double-angle form of the cosine ā(t), exp's constant ratio, ā = 1/√(1 + e^−λ) for laplace,
  ᾱ = exp(Σ log1p(−β)) instead of a running product, and the zero-SNR rescale in closed form;
- boundary scalings written with σ_data = 1/2 folded in (c_skip = 1/(1 + 4u²), c_out = 2u/√(1 + 4u²));
- the step in the unfused form x0_pred → (clip | threshold) → denoised → re-noise, element by element, where the
  reference evaluates fused, correctly rounded coefficients.

It works at 60 digits (the reference's 50 + 10), so the reference's own rounding is what a comparison measures.
Values are mpf (lists of mpf for arrays); nothing here rounds to float64 unless asked.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import mpmath
import numpy as np

from ..config import LCMConfig

MP = mpmath.MPContext()
MP.dps = 60
#: every beta schedule covered ("trained_betas": the fixed random table of ``make_cfg``)
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace", "trained_betas")


def make_cfg(schedule, T, zero_snr=False, **kw) -> LCMConfig:
    """The config for one of ``SCHEDULES`` with T train timesteps; "trained_betas" draws β ~ U(1e-4, 2e-2) with
    seed T."""
    if schedule == "trained_betas":
        betas = np.random.default_rng(T).uniform(1e-4, 2e-2, T)
        return LCMConfig(num_train_timesteps=T, trained_betas=tuple(betas.tolist()),
                         rescale_betas_zero_snr=zero_snr, **kw)
    return LCMConfig(num_train_timesteps=T, beta_schedule=schedule, rescale_betas_zero_snr=zero_snr, **kw)


# --- tables --------------------------------------------------------------------------------------------------------

def _frac(x):
    return MP.mpf(x.numerator) / x.denominator


def _alpha_bar(schedule):
    """ā(t) for an exact rational t."""
    if schedule == "squaredcos_cap_v2":         # cos²θ = (1 + cos 2θ)/2, θ = (t + 0.008)/1.008·π/2
        c, d = MP.mpf(0.008), MP.mpf(1.008)
        return lambda t: (1 + MP.cos(MP.pi * (_frac(t) + c) / d)) / 2

    def laplace(t):
        sign = 1 if t <= Fraction(1, 2) else -1
        lmb = -sign * MP.log(1 - 2 * abs(_frac(Fraction(1, 2) - t)) + MP.mpf(1e-6)) / 2
        return 1 / MP.sqrt(1 + MP.exp(-lmb))
    return laplace


def exact_betas_plain(cfg: LCMConfig) -> list:
    """β_i before any zero-SNR rescale."""
    T, s = cfg.num_train_timesteps, cfg.beta_schedule
    if cfg.trained_betas is not None:
        return [MP.mpf(b) for b in cfg.trained_betas]
    frac = [Fraction(i, T - 1) if T > 1 else Fraction(0) for i in range(T)]
    if s == "linear":
        b0, b1 = Fraction(cfg.beta_start), Fraction(cfg.beta_end)
        return [_frac(b0 + (b1 - b0) * f) for f in frac]
    if s == "scaled_linear":
        r0, r1 = MP.sqrt(MP.mpf(cfg.beta_start)), MP.sqrt(MP.mpf(cfg.beta_end))
        return [(r0 * _frac(1 - f) + r1 * _frac(f)) ** 2 for f in frac]
    if s == "sigmoid":
        w, b0 = _frac(Fraction(cfg.beta_end) - Fraction(cfg.beta_start)), MP.mpf(cfg.beta_start)
        return [(1 + MP.tanh(_frac(-6 + 12 * f) / 2)) / 2 * w + b0 for f in frac]
    cap = MP.mpf(0.999)
    if s == "exp":                               # ā(t2)/ā(t1) = exp(−12/T) for every i
        return [min(-MP.expm1(MP.mpf(-12) / T), cap)] * T
    abar = _alpha_bar(s)
    return [min(1 - abar(Fraction(i + 1, T)) / abar(Fraction(i, T)), cap) for i in range(T)]


@functools.lru_cache(maxsize=None)
def exact_tables(cfg: LCMConfig) -> dict:
    """Exact betas, alphas_cumprod, √ᾱ, √(1 − ᾱ) as mpf lists (cached per config)."""
    beta = exact_betas_plain(cfg)
    log_abar, acc = [], MP.mpf(0)
    for b in beta:
        acc += MP.log1p(-b)
        log_abar.append(acc)
    if not cfg.rescale_betas_zero_snr:
        return dict(betas=beta, alphas_cumprod=[MP.exp(L) for L in log_abar],
                    sqrt_alphas_cumprod=[MP.exp(L / 2) for L in log_abar],
                    sqrt_one_minus_alphas_cumprod=[MP.sqrt(-MP.expm1(L)) for L in log_abar])
    # Lin et al. 2023, Algorithm 1, in closed form: √ᾱ' = √ᾱ_0·(√ᾱ − √ᾱ_T)/(√ᾱ_0 − √ᾱ_T).
    root = [MP.exp(L / 2) for L in log_abar]
    scale = root[0] / (root[0] - root[-1])
    sqrt_abar = [(r - root[-1]) * scale for r in root]
    abar = [r * r for r in sqrt_abar]
    betas = [1 - abar[0]] + [1 - a / a_prev for a_prev, a in zip(abar, abar[1:])]
    return dict(betas=betas, alphas_cumprod=abar, sqrt_alphas_cumprod=sqrt_abar,
                sqrt_one_minus_alphas_cumprod=[MP.sqrt(1 - a) for a in abar])


# --- the step ------------------------------------------------------------------------------------------------------

def exact_boundary(t, timestep_scaling) -> tuple:
    """(c_skip, c_out) at timestep t (an int), u = t·timestep_scaling: 1/(1 + 4u²) and 2u/√(1 + 4u²)."""
    u = MP.mpf(int(t)) * MP.mpf(float(timestep_scaling))
    return 1 / (1 + 4 * u * u), 2 * u / MP.sqrt(1 + 4 * u * u)


def _quantile(values, ratio):
    """Linear-interpolation quantile of exact values at rank ratio·(n − 1) (torch.quantile's definition)."""
    v = sorted(values)
    pos = MP.mpf(ratio) * (len(v) - 1)
    lo = int(MP.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def exact_step(cfg: LCMConfig, m, t, x, z, t_prev, last) -> tuple[list, list]:
    """(prev_sample, denoised) of one step at timestep t as flat lists of mpf, the float inputs taken exactly;
    ``t_prev`` is the timestep re-noised to (−1: the final ᾱ), ignored (like ``z``) when ``last``. Covers every
    prediction type, clip_sample and thresholding (per batch element, the first axis)."""
    m, x = np.asarray(m), np.asarray(x)
    tab = exact_tables(cfg)
    sa, sb = tab["sqrt_alphas_cumprod"][t], tab["sqrt_one_minus_alphas_cumprod"][t]
    c_skip, c_out = exact_boundary(t, cfg.timestep_scaling)
    mf, xf = [MP.mpf(float(v)) for v in m.ravel()], [MP.mpf(float(v)) for v in x.ravel()]
    if cfg.prediction_type == "epsilon":
        x0 = [(xi - sb * mi) / sa for xi, mi in zip(xf, mf)]
    elif cfg.prediction_type == "v_prediction":
        x0 = [sa * xi - sb * mi for xi, mi in zip(xf, mf)]
    else:
        x0 = mf
    if cfg.thresholding:
        per = len(x0) // m.shape[0]
        out = []
        for b in range(m.shape[0]):
            row = x0[b * per:(b + 1) * per]
            s = min(max(_quantile([abs(v) for v in row], cfg.dynamic_thresholding_ratio), 1),
                    MP.mpf(cfg.sample_max_value))
            out += [min(max(v, -s), s) / s for v in row]
        x0 = out
    elif cfg.clip_sample:
        r = MP.mpf(cfg.clip_sample_range)
        x0 = [min(max(v, -r), r) for v in x0]
    den = [c_out * v + c_skip * xi for v, xi in zip(x0, xf)]
    if last:
        return den, den
    ap = tab["alphas_cumprod"][t_prev] if t_prev >= 0 else (MP.mpf(1) if cfg.set_alpha_to_one else
                                                             tab["alphas_cumprod"][0])
    prev = [MP.sqrt(ap) * v + MP.sqrt(1 - ap) * MP.mpf(float(zi)) for v, zi in zip(den, np.ravel(z))]
    return prev, den


def scaled_error(got, exact, terms) -> np.ndarray:
    """|got − exact| / (eps64·terms) elementwise (flat), the difference taken in mpmath so the exact value is not
    rounded first (``lcm_ref.reference.scaled_error`` with the want kept exact)."""
    def one(g, e, tm):
        d = abs(MP.mpf(float(g)) - e)
        return 0.0 if d == 0 else float(d / (MP.mpf(2) ** -52 * MP.mpf(float(tm))))
    return np.array([one(g, e, tm) for g, e, tm in zip(np.ravel(got), exact, np.ravel(terms))])
