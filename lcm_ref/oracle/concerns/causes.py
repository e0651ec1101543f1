"""Likely causes (docs/design.md §9.3): an alternative formula names a cause only when, evaluated on the failing
case, it reproduces the implementation's values by the oracle's own rule."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ... import reference as ref
from ...numerics import to_f64
from ..compare import compare_values


def explains(got, alt, want, terms, bound, dtype) -> Optional[float]:
    """Is a cause confirmed? Its alternative formula ``alt``, evaluated on the failing case, must reproduce the
    implementation's value ``got`` by the oracle's own rule (compare.compare_values: within the budget ``bound``,
    the correctly rounded answer accepted), and must differ from ``want`` there, so that it tells the two apart.
    Returns how well (the largest error/budget against ``alt``: smaller is better), or None: not confirmed
    (docs/design.md §9.3)."""
    g, a = to_f64(got), to_f64(alt)
    if g.shape != a.shape:
        return None
    if compare_values(a, want, terms, bound, dtype).ok:
        return None
    c = compare_values(g, a, terms, bound, dtype)
    return c.max_ratio if c.ok else None


def best_explanation(got, alternatives, want, terms, bound, dtype) -> Optional[str]:
    """The cause of the confirmed alternative that explains ``got`` best (``explains``), or None."""
    scored = [(s, text) for text, alt in alternatives
              if (s := explains(got, alt, want, terms, bound, dtype)) is not None]
    return min(scored)[1] if scored else None


def level_of(cfg, abar) -> str:
    """Where ᾱ lies in the config's table: "t ≈ 418.6" (log-σ interpolation between the neighbouring timesteps)."""
    table = np.asarray(ref.alphas_cumprod(cfg))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sigma = 0.5 * np.log((1 - table) / table)
        s = 0.5 * math.log((1 - abar) / abar) if 0 < abar < 1 else math.nan
    if not math.isfinite(s) or s < log_sigma[0] or s > log_sigma[-1]:
        return "outside the table"
    return f"t ≈ {float(np.interp(s, log_sigma, np.arange(len(table)))):.1f}"


def fitted_renoise_level(cfg, got, den, z, t_told):
    """(cause, alternative) of "the noise level used is not the level of the timestep the model is told": the ᾱ'
    that best explains prev = √ᾱ'·denoised + √(1 − ᾱ')·z (least squares over the elements for a = √ᾱ', b =
    √(1 − ᾱ'), then ᾱ' = a²/(a² + b²)), or None where the data cannot fix it (z or denoised all zero)."""
    g, D, Z = to_f64(got).ravel(), to_f64(den).ravel(), to_f64(z).ravel()
    A = np.stack([D, Z], axis=1)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(g))) or np.linalg.matrix_rank(A) < 2:
        return None
    (a, b), *_ = np.linalg.lstsq(A, g, rcond=None)
    if a <= 0 or b <= 0:
        return None
    abar = float(a * a / (a * a + b * b))
    alt = math.sqrt(abar) * to_f64(den) + math.sqrt(1 - abar) * to_f64(z)
    told = float(ref.alphas_cumprod(cfg)[t_told]) if t_told >= 0 else ref.final_alpha_cumprod(cfg)
    return (f"the noise level used is not the level of the timestep the model is told: re-noised to ᾱ = {abar:.6g} "
            f"({level_of(cfg, abar)}), while the schedule tells t = {t_told} (ᾱ = {told:.6g}); a σ schedule "
            f"interpolated off the timestep grid?"), alt


def fitted_denoise_level(cfg, rec, got):
    """(cause, alternative) of x0 taken at a noise level other than the timestep's (epsilon prediction): the ᾱ' that
    best explains denoised = c_out·(x − √(1 − ᾱ')·ε)/√ᾱ' + c_skip·x (least squares for p = 1/√ᾱ', q = √(1 − ᾱ')/√ᾱ'),
    or None."""
    if cfg.prediction_type != "epsilon" or cfg.clip_sample or cfg.thresholding:
        return None
    x, m = to_f64(rec.x).ravel(), to_f64(rec.m).ravel()
    c_skip, c_out = ref.boundary_scalings(cfg, rec.t)
    if c_out == 0:
        return None
    y = (to_f64(got).ravel() - c_skip * x) / c_out
    A = np.stack([x, -m], axis=1)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(y))) or np.linalg.matrix_rank(A) < 2:
        return None
    (p, q), *_ = np.linalg.lstsq(A, y, rcond=None)
    if p <= 0 or q <= 0:
        return None
    abar = float(1.0 / (1.0 + q * q))
    sa = math.sqrt(abar)
    alt = c_out * (to_f64(rec.x) - math.sqrt(1 - abar) * to_f64(rec.m)) / sa + c_skip * to_f64(rec.x)
    return (f"the noise level used is not the level of the timestep the model is told: x0 taken at ᾱ = {abar:.6g} "
            f"({level_of(cfg, abar)}), while the model is told t = {rec.t} "
            f"(ᾱ = {float(ref.alphas_cumprod(cfg)[rec.t]):.6g}); a σ schedule interpolated off the timestep grid?"), alt

#: the likely cause of a fail that no known alternative formula reproduces (docs/design.md §9.3)
NO_KNOWN_PATTERN = "no known pattern (no alternative formula of the cause catalogue reproduces the values)"

#: the cause of a value that fails under tables="float64" and passes under the float32-table budget
FLOAT32_TABLES = ("within the float32-table budget, not the float64 one: float32 tables (ᾱ, c_skip, c_out) in a "
                  "float64 computation; --tables float32 allows them")


def float32_tables_explain(ex, got, want, terms, bound32) -> bool:
    """Under tables="float64": is ``got`` within the float32-table budget ``bound32`` of ``want``?"""
    return ex.run.tables == "float64" and compare_values(got, want, terms, bound32, ex.run.dtype).ok
