"""Exact (60-digit mpmath) tables for the tests, by a different code path from lcm_ref.reference on purpose:
Fraction-exact linspace for linear, a convex-combination linspace for scaled_linear, tanh for the sigmoid, the
double-angle form of the cosine ā(t), exp's constant ratio, ā = 1/√(1 + e^−λ) for laplace, ᾱ = exp(Σ log1p(−β))
instead of a running product, and the zero-SNR rescale in closed form."""

import functools
from fractions import Fraction

import mpmath
import numpy as np

from lcm_ref import LCMConfig

MP = mpmath.MPContext()
MP.dps = 60                      # > the reference's 50: the reference's own rounding is what is measured
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace", "trained_betas")
TS = (1000, 999, 37, 2)


def make_cfg(schedule, T, zero_snr=False, **kw):
    if schedule == "trained_betas":
        betas = np.random.default_rng(T).uniform(1e-4, 2e-2, T)
        return LCMConfig(num_train_timesteps=T, trained_betas=tuple(betas.tolist()),
                         rescale_betas_zero_snr=zero_snr, **kw)
    return LCMConfig(num_train_timesteps=T, beta_schedule=schedule, rescale_betas_zero_snr=zero_snr, **kw)


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


def exact_betas_plain(cfg):
    """β_i before any zero-SNR rescale, exact (60 digits)."""
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
def exact_tables(cfg):
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


