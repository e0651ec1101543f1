"""How far a float implementation of diffusers' ``LCMScheduler`` may be from the exact values: the one derivation of
the error budget, used by the oracle (``lcm_ref.oracle``) and by the tests that compare diffusers with
``lcm_ref.reference`` (tests/diffusers_harness.py, tests/test_reference_tables.py).

Nothing here is fitted to measurements: each bound is the worst case of the operations listed beside it
(diffusers' code read for facts). Conventions: u(D) = eps(D)/2 is the unit roundoff of dtype D; U = 2⁻²⁴ that of
float32 (U_TABLE: diffusers' interface keeps its tables in float32 whatever the sample dtype, docs/design.md §4, so every
implementation is allowed float32 tables). "e" or "ρ" is a bound on a relative error. A product of factors with
relative errors e_i errs by ≤ Π(1 + e_i) − 1 (``compound``, second-order terms included); a square root halves a
relative error (``sqrt_err``, exact for any size); n roundings give γ(n) = n·u/(1 − n·u) (Higham, Lemma 3.1).

1. *Tables* (``betas_rel_err``, ``table_error_bound``). β is rounded to float32 per schedule (``betas_rel_err``:
   torch.linspace's per-element error for linear / scaled_linear / sigmoid, one rounding of a float64 formula for
   betas_for_alpha_bar and trained betas); each 1 − β is rounded (U), each cumprod product too (U), giving
   E(t) ≈ (t + 1)·eps32 plus the betas' share (docs/design.md §8). Zero-SNR (Lin et al. 2023, Alg. 1 in float32) is bounded
   by ``_zero_snr_bound``: the shared prefix of the cumprod error cancels in √ᾱ_t − √ᾱ_{T−1}, only the tail
   Σ_{t<i<T} and the individual roundings are amplified by √ᾱ_{T−1}/(√ᾱ_t − √ᾱ_{T−1}); the ratios
   ᾱ'_t/ᾱ'_{t−1} telescope in the second cumprod, which adds 3 roundings per factor plus u_T·β'/α' for the
   1 − (1 − α') round trip.
   (Two derivations of E(t) were merged here, each kept where it is the tighter: the per-element linspace model of
   the pre-rescale table, 0.64–1.0× the former oracle's constant 6u·β_max / 13u·β_max per β, and the oracle's
   prefix-cancelling zero-SNR bound, up to 100× tighter than propagating the whole pre-rescale error through the
   rescale.)
2. *Coefficients* (``_sqrt_errors``; u_c = U, plus u(D) when D is coarser than float32 and the float32 coefficient is
   rounded once more to D): √ᾱ: sqrt_err(E) ⊕ u_c; √(1 − ᾱ): sqrt_err(E·ᾱ/(1 − ᾱ) + u_c) ⊕ u_c (1 − ᾱ cancels when
   ᾱ → 1: the amplification ᾱ/(1 − ᾱ)); c_skip, c_out: 7·u_c (C_SCALINGS).
3. *Arithmetic in D* (``step_bound``, ``forward_bound``). x0_pred takes 3 roundings (epsilon: q·m, x − ·, ÷√ᾱ; v:
   two products and a difference); clip adds 1 (the range rounded to D), thresholding 3 (÷s, and the float32
   up/down cast of half inputs); denoised = c_out·x0 + c_skip·x adds 3; prev = c·denoised + d·z adds 3. Each is at
   most γ(n)·Σ|terms|. Each term of the formula may carry its coefficient's error: the budget is
   Σ_k |term_k|·ρ_k + γ(n)·Σ_k |term_k|, per element.
4. *Non-linear steps.* Clipping is 1-Lipschitz, so it passes the x0 bound through. Thresholding: the quantile s
   moves by at most the row's largest x0 error, plus the interpolation position ratio·(N−1) rounded in D (≤ N·u·
   max|x0|) and the lerp (3 roundings); clamp(x0, −s, s)/s then errs by at most (δx0 + δs)/s.
5. *prev* inherits c·(denoised bound) and adds c·Σ|denoised terms|·ρ(√ᾱ_prev) + d·|z|·ρ(√(1 − ᾱ_prev)).
6. *Underflow.* A rounding in D may also lose up to η(D), half the smallest subnormal (2⁻²⁵ in float16, where
   c_skip·x at t ≈ 259 flushes to 0): each result adds η(D) per rounding on its path (10 for denoised, 3 more for
   prev, 3 for the forward functions), and a float32 coefficient c cast to a coarser D gains η(D)/|c| relative
   (ᾱ[T−1] = 3e-8 of a cosine schedule is subnormal in float16). Negligible in float32 and float64.
7. *Float32, aggregated per part* (``scaled_step_bound``): the same operations counted as relative errors of the
   formula's parts (max over the parts × Σ|terms|, thresholding as a relative error of s from the order statistics'
   gaps). Neither aggregation dominates element by element (the per-term one is tighter where the terms differ in
   size, the per-part one on thresholded rows, by up to 10³×), so in float32 ``step_bound`` is their elementwise
   minimum: both are worst-case bounds of the same computation, so the smaller one is too.
8. *Table precision* (``tables``, docs/design.md §8.5). Points 1–7 describe float32 tables (u_T = 2⁻²⁴, the default).
   With ``tables="float64"`` the implementation must hold correctly rounded float64 tables: E(t) = u_T = 2⁻⁵³ (one
   rounding of the exact value; 0 where ᾱ = 0), every coefficient rounding of point 2 uses u_c = u_T (+ u(D) when
   D is coarser than the table), c_skip and c_out get 7·u_T, the cast of point 6 applies only when D is coarser
   than the table, and point 7 (a float32-table derivation) is not used. An exposed table is compared within
   (E(t) + 2⁻⁵²)(1 + 2⁻⁵²)·ᾱ_t (``alphas_cumprod_bound``), c_skip / c_out within (7·u_T + 2⁻⁵²)(1 + 2⁻⁵²) relative
   (``scalings_bound``): the implementation's error plus the reference's own ≤ 1 ulp.
9. *Intermediate overflow* (``_x0_may_overflow``): where diffusers' x0 may leave D's range (float16), points 3–6 do not
   hold; the bound is infinite there (the whole batch row under thresholding), and any value is admitted.

The first-order sums (γ, E) leave second-order terms below u_T·E ≤ 2⁻²⁴·1.3e-4 relative, far inside the slack of
the worst-case sums.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError
from ..numerics import to_f64, torch_dtype, unit_roundoff

__all__ = ["U", "U_TABLE", "EPS32", "EPS64", "TABLES", "compound", "sqrt_err", "linspace_abs_err", "betas_rel_err",
           "table_unit_roundoff", "table_error_bound", "coefficient_errors", "step_bound", "scaled_step_bound",
           "forward_bound", "alphas_cumprod_bound", "scalings_bound", "betas_bound", "sqrt_tables_bound",
           "overflow_threshold", "renoise_bound"]

U = 2.0 ** -24          # float32 unit roundoff
#: unit roundoff of the float32 tables diffusers' interface stores (point 1): the default table precision
U_TABLE = U
#: table precisions a budget can hold an implementation to (docs/design.md §8.5): "float32" allows the tables diffusers
#: builds in float32 (points 1–2 with u_T = 2⁻²⁴); "float64" requires correctly rounded float64 tables (u_T = 2⁻⁵³)
TABLES = ("float32", "float64")
_TABLE_U = {"float32": U, "float64": 2.0 ** -53}
EPS32 = 2.0 ** -23      # float32 machine epsilon: the unit of scaled errors for float32
EPS64 = 2.0 ** -52
#: the reference's own error, ≤ 4 scaled eps64 (tests/test_reference_step.py against an exact mpmath step)
REF_OWN = 4 * EPS64
#: float64 evaluation error of diffusers' betas_for_alpha_bar, relative to β. The float64 formula's condition number
#: is below 2¹² for every schedule and T ≤ 4000 used here (cosine near t = 1: tan θ ≤ 0.65·T; laplace: the log
#: argument is ≥ 1e-6 but β there is ≥ 1e-2), so the float64 error is ≤ 2¹²·8·2⁻⁵³ = 2⁻³⁸; we allow 2⁻³⁰.
F64_ALPHA_BAR = 2.0 ** -30
#: torch.sigmoid in float32: exp within 1 ulp (2U), 1 + e⁻ˣ rounded (U), reciprocal rounded (U).
SIGMOID = 4 * U
#: c_skip, c_out from a 0-d int64 timestep tensor, all float32: t·s (scalar s rounded: U, product: U), squared
#: (2·2U + U = 5U), + σ² (6U), then c_skip = σ²/r (7U); √r (3U + U = 4U) and c_out = u/√r (2U + 4U + U = 7U).
#: With a Python int timestep diffusers computes them in float64 and they are rounded once to float32 (≤ 2U).
C_SCALINGS = 7 * U


# ---------------------------------------------------------------------------------------------------------------
# Roundoff helpers
# ---------------------------------------------------------------------------------------------------------------

def compound(*errors):
    """Relative error bound of a product whose factors have relative errors ≤ errors (elementwise)."""
    out = 1.0
    for e in errors:
        out = out * (1.0 + np.asarray(e, dtype=np.float64))
    return out - 1.0


def sqrt_err(e):
    """Relative error of √(x·(1+δ)) for |δ| ≤ e: max(√(1+e) − 1, 1 − √(1−e)) (exact, any e ≥ 0)."""
    e = np.asarray(e, dtype=np.float64)
    return np.maximum(np.sqrt(1 + e) - 1, 1 - np.sqrt(np.maximum(1 - e, 0.0)))


def _u(dtype) -> float:
    return unit_roundoff(torch_dtype(dtype))


def _eta(dtype) -> float:
    """η(D): half the smallest subnormal of D, the absolute error a rounding may add on underflow."""
    fi = torch.finfo(torch_dtype(dtype))
    return fi.smallest_normal * fi.eps / 2


def _cast(c, dtype, u_t=U_TABLE):
    """η(D)/|c|: the relative error of casting a table coefficient c (unit roundoff u_t) to a D coarser than the
    table beyond u(D), from underflow (0 for c = 0, which casts exactly, and for D at least as fine as the table)."""
    if _u(dtype) <= u_t:
        return 0.0 if np.ndim(c) == 0 else np.zeros(np.shape(c))
    c = np.abs(np.asarray(c, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(c > 0, _eta(dtype) / c, 0.0)
    return float(out) if out.ndim == 0 else out


def _coefficient_roundoff(u, u_t=U_TABLE):
    """u_c: a table coefficient (unit roundoff u_t) used in dtype D is rounded once more only if D is coarser than
    the table (float32 tables in float16: u_t + u(D); float64 tables in float32: 2⁻⁵³ + 2⁻²⁴)."""
    return u_t + (u if u > u_t else 0.0)


def _gamma(n, u):
    """γ(n) = n·u/(1 − n·u): the relative error bound of n roundings of unit roundoff u (Higham, Lemma 3.1)."""
    return n * u / (1 - n * u)


def table_unit_roundoff(tables="float32") -> float:
    """u_T, the unit roundoff of the tables an implementation is allowed (``TABLES``): 2⁻²⁴ for "float32" (diffusers'
    float32 tables, the default), 2⁻⁵³ for "float64" (correctly rounded float64 tables, docs/design.md §8.5)."""
    if tables not in _TABLE_U:
        raise LCMRefError("tables", tables, f"one of {TABLES}")
    return _TABLE_U[tables]


# ---------------------------------------------------------------------------------------------------------------
# Tables (point 1)
# ---------------------------------------------------------------------------------------------------------------
def linspace_abs_err(start, end, T):
    """Absolute error bound of torch.linspace(start, end, T, dtype=float32) per element.

    The CPU kernel: start', end' = float32(start), float32(end) (U·|start|, U·|end|); step = (end' − start')/(T − 1)
    (error ≤ U(|start| + |end| + 2|D|)/(T − 1), D = end − start: the two roundings carried, the subtraction and the
    division); element i < T//2 is start' + step·i, the others end' − step·(T − 1 − i) (the anchor's rounding, f·the
    step's error for f = i or T − 1 − i, the product's and the sum's rounding, ≤ U each; fused or not)."""
    v = np.linspace(start, end, T)
    if T == 1:
        return np.array([U * abs(start)])
    D = abs(end - start)
    dstep = U * (abs(start) + abs(end) + 2 * D) / (T - 1)
    i = np.arange(T)
    lower = i < T // 2
    f = np.where(lower, i, T - 1 - i)
    anchor = np.where(lower, abs(start), abs(end))
    first_order = U * anchor + f * dstep + U * f * D / (T - 1) + U * np.abs(v)
    return first_order * (1 + 4 * U)    # second-order terms: ≤ 4U relative of the first-order ones


def betas_rel_err(cfg):
    """Relative error bound of diffusers' float32 betas (before any zero-SNR rescale), per timestep."""
    T = cfg.num_train_timesteps
    beta = np.array(ref.betas(cfg.replace(rescale_betas_zero_snr=False)))
    if cfg.trained_betas is not None:
        return np.full(T, U)                                    # torch.tensor(list, float32): one rounding
    if cfg.beta_schedule == "linear":
        return linspace_abs_err(cfg.beta_start, cfg.beta_end, T) / beta
    if cfg.beta_schedule == "scaled_linear":
        # Python's beta**0.5 in float64 (2⁻⁵³ relative, carried into the anchor error), float32 linspace, square.
        r0, r1 = math.sqrt(cfg.beta_start), math.sqrt(cfg.beta_end)
        e_r = linspace_abs_err(r0, r1, T) / np.sqrt(beta) + 2.0 ** -52
        return compound(e_r, e_r, U)
    if cfg.beta_schedule == "sigmoid":
        # torch.linspace(-6, 6, T) (abs. error ex), sigmoid (σ' = σ(1−σ)), × float32(end − start) (U + 2⁻⁵³),
        # product (U), + float32(start) (U·start), sum (U·β).
        x = np.linspace(-6.0, 6.0, T)
        sig = 1 / (1 + np.exp(-x))
        w = cfg.beta_end - cfg.beta_start
        ex = linspace_abs_err(-6.0, 6.0, T)
        abs_err = abs(w) * (sig * (1 - sig) * ex + sig * compound(SIGMOID, U + 2.0 ** -53, U))
        return (abs_err + U * cfg.beta_start + U * np.abs(beta)) / beta
    # betas_for_alpha_bar: float64 formula, one float32 rounding.
    return np.full(T, U + F64_ALPHA_BAR)


def _pre_rescale_errors(base):
    """(e_alpha, E0): the relative error bounds of diffusers' float32 α = 1 − β and of its cumprod ᾱ (point 1), for
    a config without zero-SNR rescale."""
    beta = np.array(ref.betas(base))
    e_beta = betas_rel_err(base)
    with np.errstate(divide="ignore", invalid="ignore"):
        # α' = float32(1 − β'): β's error seen relative to 1 − β, plus the rounding (≤ U: 1 − β' ≥ 0.5 has spacing
        # U, so the absolute error is ≤ U/2 ≤ U·(1 − β); for β' > 0.5 the subtraction is exact, Sterbenz).
        # β = 1 (trained betas only; float32(1) = 1): 1 − β = 0 exactly, ᾱ = 0 from there.
        e_alpha = np.where(beta < 1, e_beta * beta / (1 - beta), 0.0) + U
    # cumprod: t multiplications and the store, ≤ U each (CPU accumulates in float64: smaller, still covered).
    E = np.expm1(np.cumsum(np.log1p(e_alpha)) + np.arange(1, len(beta) + 1) * np.log1p(U))
    return e_alpha, E


@functools.lru_cache(maxsize=512)
def table_error_bound(cfg: LCMConfig, tables: str = "float32") -> np.ndarray:
    """E(t): a bound on the relative error of ᾱ_t (against the exact value); 0 where ᾱ_t is 0 exactly. Read-only
    float64 array of length T.

    ``tables="float32"``: ᾱ as diffusers builds it in float32 (point 1). ``tables="float64"``: a correctly rounded
    float64 table (docs/design.md §8.5): each entry is the exact value rounded once, |δ| ≤ u_T = 2⁻⁵³, so E(t) = u_T
    (0 where ᾱ_t = 0, which rounds exactly). A float64 cumprod, ≈ (t + 1)·2⁻⁵³ off (§2), is outside it."""
    u_t = table_unit_roundoff(tables)
    if tables != "float32":
        E = np.where(np.asarray(ref.alphas_cumprod(cfg)) == 0, 0.0, u_t)
        E.setflags(write=False)
        return E
    base = cfg.replace(rescale_betas_zero_snr=False)
    e_alpha, E = _pre_rescale_errors(base)
    if cfg.rescale_betas_zero_snr:
        # per factor of the float32 cumprod: the rounded α (e_alpha) and its product (U); E is that prefix plus one
        # rounding of the entry itself, as _zero_snr_bound assumes
        E = _zero_snr_bound(cfg, base, e_alpha + U, E)
        E = E / (1 - np.minimum(E, 0.5))                          # close the first-order bound (γ-style)
    E.setflags(write=False)
    return E


def _zero_snr_bound(cfg, base, eta, E0):
    """E(t) after diffusers' float32 ``rescale_zero_terminal_snr`` (point 1), from the pre-rescale bound E0.

    r_t = √ᾱ_t (computed: relative E0/2 + u), D_t = r_t − r_{T−1}: the prefix Σ_{i≤t} η_i is common to both and
    scales D_t; the rest (the tail Σ_{t<i<T} η_i, the individual rounding of A_t and A_{T−1}, two square roots)
    is absolute and divided by D_t. g = r_0/(r_0 − r_{T−1}); ᾱ'_t = (D_t·g)²; α'_t = ᾱ'_t/ᾱ'_{t−1}; β' = 1 − α';
    α'' = 1 − β'; ᾱ'' = cumprod(α''): the ratios telescope, leaving ᾱ'_t's error plus, per factor, the division,
    the round trip (u + u·β'/α') and the product."""
    u = U_TABLE
    rel_abar = _rescaled_abar_error(base, eta, E0)
    with np.errstate(divide="ignore", invalid="ignore"):
        abar = np.asarray(ref.alphas_cumprod(cfg))
        a = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
        nu = np.where(a > 0, 2 * u + u * np.abs(1 - a) / a, 0.0)
        nu[1:] += u                                # the division ᾱ'_t/ᾱ'_{t−1}
        E = rel_abar + np.cumsum(nu + u) + u
    E[-1] = 0.0                                    # ᾱ'[T−1] = 0 exactly: D_{T−1} = r − r = 0, then 0/·, 1 − 1
    return E


def _rescaled_abar_error(base, eta, E0):
    """The relative error bound of the rescaled ᾱ'_t = (D_t·g)² of ``_zero_snr_bound`` (before the ratios and the
    second cumprod); infinite at T−1, where ᾱ' = 0 exactly."""
    u = U_TABLE
    r = np.sqrt(np.asarray(ref.alphas_cumprod(base)))
    rT = r[-1]
    tail = np.cumsum(eta[::-1])[::-1] - eta        # Σ_{t<i≤T−1} η_i
    D = r - rT
    with np.errstate(divide="ignore", invalid="ignore"):
        relD = E0 / 2 + (r * u + rT * (tail / 2 + 2 * u)) / D + u
        relg = E0[0] / 2 + u + relD[0] + u
        return 2 * (relD + relg + u) + u


def betas_bound(cfg: LCMConfig, tables="float32") -> np.ndarray:
    """The largest |impl − ref| admitted for an exposed β table, per t (absolute), the reference's own ≤ 1 ulp
    included as in ``alphas_cumprod_bound``.

    "float64": the exact β rounded once (u_T). "float32" without zero-SNR: ``betas_rel_err`` (point 1). "float32"
    with zero-SNR: diffusers forms β'_t = 1 − fl(ᾱ'_t/ᾱ'_{t−1}) (β'_0 = 1 − ᾱ'_0) from the rescaled ᾱ' of
    ``_zero_snr_bound``, whose relative error is ≤ r_t (``_rescaled_abar_error``); the quotient errs by ≤ r_t ⊕
    r_{t−1} ⊕ U relative (no cancellation of the shared prefix is claimed: an upper bound), so β' errs by ≤ α'·that
    + U·β' (the subtraction's rounding); ᾱ'_{T−1} = 0 makes α'_{T−1} = 0 and β'_{T−1} = 1 exactly. Where β' is small
    the subtraction amplifies α''s error by α'/β' (2·10⁻² relative at t = 0 for Stable Diffusion's betas): a valid
    bound, loose by that cancellation, and only β' is affected (ᾱ, √ᾱ, √(1 − ᾱ) keep ``table_error_bound``)."""
    beta = np.abs(np.asarray(ref.betas(cfg)))
    u_t = table_unit_roundoff(tables)
    if tables != "float32":
        return (u_t + EPS64) * (1 + EPS64) * beta
    base = cfg.replace(rescale_betas_zero_snr=False)
    if not cfg.rescale_betas_zero_snr:
        return (betas_rel_err(base) + EPS64) * (1 + EPS64) * beta
    e_alpha, E0 = _pre_rescale_errors(base)
    r = _rescaled_abar_error(base, e_alpha + U, E0)
    alpha = 1 - beta
    with np.errstate(invalid="ignore"):
        e_ratio = np.concatenate([r[:1], compound(r[1:], r[:-1], U)])
        err = np.where(alpha > 0, alpha * e_ratio, 0.0) + U * beta
    err[-1] = 0.0                                  # β'[T−1] = 1 exactly
    return (err + EPS64 * beta) * (1 + EPS64)


def sqrt_tables_bound(cfg: LCMConfig, tables="float32"):
    """(bound of √ᾱ, bound of √(1 − ᾱ)) per t, absolute: the tables formed from ᾱ (relative error E(t), table
    precision ``tables``) with one more rounding u_T each (point 2's ``_sqrt_errors`` with u_c = u_T), plus the
    reference's own ≤ 1 ulp, as in ``alphas_cumprod_bound``."""
    abar = np.asarray(ref.alphas_cumprod(cfg))
    rho_sa, rho_s1a = _sqrt_errors(abar, table_error_bound(cfg, tables), table_unit_roundoff(tables))
    sa, s1a = np.sqrt(abar), np.sqrt(1 - abar)
    return (rho_sa + EPS64) * (1 + EPS64) * sa, (rho_s1a + EPS64) * (1 + EPS64) * s1a


# ---------------------------------------------------------------------------------------------------------------
# Coefficients (point 2)
# ---------------------------------------------------------------------------------------------------------------

def _sqrt_errors(abar, E, u_c):
    """Relative error bounds of √ᾱ and √(1 − ᾱ) formed in float32 from ᾱ with relative error E (point 2): √ᾱ:
    sqrt_err(E) ⊕ u_c; 1 − ᾱ' has absolute error ᾱ·E (plus its rounding, u_c), i.e. relative ᾱE/(1 − ᾱ): large where
    ᾱ is near 1. ᾱ = 1 exactly (the final_alpha_cumprod of set_alpha_to_one) has no error: √1 = 1, √0 = 0."""
    abar, E = np.asarray(abar, dtype=np.float64), np.asarray(E, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_sa = np.where((abar == 1) & (E == 0), 0.0, compound(sqrt_err(E), u_c))
        rho_s1a = np.where(abar < 1, compound(sqrt_err(E * abar / (1 - abar) + u_c), u_c), 0.0)
    return rho_sa, rho_s1a


def _table_entry(cfg, t, tables="float32"):
    """(ᾱ_t, E(t)) with diffusers' indexing (negative t wraps: quirk 2)."""
    return float(ref.alphas_cumprod(cfg)[t]), float(table_error_bound(cfg, tables)[t])


def coefficient_errors(cfg, t):
    """(e of √ᾱ_t, e of √(1 − ᾱ_t)) as diffusers forms them in float32: alphas_cumprod[t].sqrt(),
    (1 − alphas_cumprod[t]).sqrt()."""
    abar, E = _table_entry(cfg, t)
    rho_sa, rho_s1a = _sqrt_errors(abar, E, U)
    return float(rho_sa), float(rho_s1a)


def _noise_errors(cfg, t_prev, tables="float32"):
    """(ᾱ_prev, E_prev) of the re-noising coefficients; t_prev < 0 is the final step's final_alpha_cumprod."""
    if t_prev >= 0:
        return _table_entry(cfg, t_prev, tables)
    abar_p = ref.final_alpha_cumprod(cfg)
    return abar_p, 0.0 if cfg.set_alpha_to_one else float(table_error_bound(cfg, tables)[0])


# ---------------------------------------------------------------------------------------------------------------
# One step and the forward functions (points 3–7)
# ---------------------------------------------------------------------------------------------------------------

def step_bound(cfg: LCMConfig, model_output, timestep, sample, noise=None, *, schedule, step_index,
               num_inference_steps=None, dtype=torch.float32, tables="float32"):
    """(bound_denoised, bound_prev): per element, the largest |impl − ref| the budget admits for one ``step`` in
    dtype ``dtype`` (points 1–7) with tables of precision ``tables`` (``TABLES``), the reference's own error
    included. Absolute values, float64 arrays shaped like ``sample``."""
    u = _u(dtype)
    u_t = table_unit_roundoff(tables)
    u_c = _coefficient_roundoff(u, u_t)
    sched = np.asarray(schedule, dtype=np.int64)
    m, x = to_f64(model_output), to_f64(sample)
    z = None if noise is None else to_f64(noise)
    t = int(timestep)
    n = len(sched) if num_inference_steps is None else num_inference_steps
    terms = ref.step_terms(cfg, m, t, x, schedule=sched, noise=noise, step_index=step_index,
                           num_inference_steps=n)
    c_skip, c_out = ref.boundary_scalings(cfg, t)
    p, q = ref.x0_coefficients(cfg, t)
    abar, E = _table_entry(cfg, t, tables)
    rho_sa, rho_s1a = _sqrt_errors(abar, E, u_c)
    rho_sa = rho_sa + _cast(math.sqrt(abar), dtype, u_t)
    rho_s1a = rho_s1a + _cast(math.sqrt(1 - abar), dtype, u_t)
    rho_skip, rho_out = 7 * u_c + _cast(c_skip, dtype, u_t), 7 * u_c + _cast(c_out, dtype, u_t)
    with np.errstate(invalid="ignore", over="ignore"):
        if cfg.prediction_type == "sample":
            A, B, rho_p, rho_q = np.zeros_like(m), np.abs(m), 0.0, 0.0
        else:
            A, B = np.abs(p * x), np.abs(q * m)
            rho_p, rho_q = (rho_sa, rho_sa + rho_s1a) if cfg.prediction_type == "epsilon" else (rho_sa, rho_s1a)
        n_x0 = 0 if cfg.prediction_type == "sample" else 3
        err_x0 = A * rho_p + B * rho_q + _gamma(n_x0 + (1 if cfg.clip_sample else 0), u) * (A + B)
        err_x0_raw = err_x0
        if cfg.thresholding:
            x0 = m if cfg.prediction_type == "sample" else p * x + q * m
            s = ref.threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[1]
            rows = x0.reshape(x0.shape[0], -1)
            axes = tuple(range(1, x0.ndim))
            N = rows.shape[1]
            err_s = (np.max(err_x0, axis=axes, keepdims=True)
                     + _gamma(N + 3, u) * np.max(A + B, axis=axes, keepdims=True) + u * s)
            err_x0 = (err_x0 + err_s) / s + _gamma(3, u) * (A + B) / s
            A, B = A / s, B / s
        bound_den = (abs(c_out) * (err_x0 + rho_out * (A + B)) + c_skip * np.abs(x) * rho_skip
                     + _gamma(3, u) * terms.denoised + 10 * _eta(dtype))
        bound_den = np.where(_x0_may_overflow(cfg, m, x, p, q, err_x0_raw, dtype), np.inf, bound_den)
        if step_index == n - 1 or z is None:
            return _with_float32_parts(cfg, m, t, x, sched, step_index, n, dtype, terms, bound_den,
                                       bound_den if step_index == n - 1 else None, tables)
        t_prev = int(sched[step_index + 1]) if step_index + 1 < len(sched) else t
        c, d = ref.noise_coefficients(cfg, t_prev)
        rho_c, rho_d = _renoise_errors(cfg, t_prev, dtype, tables)
        bound_prev = (c * bound_den + c * terms.denoised * rho_c + d * np.abs(z) * rho_d
                      + _gamma(3, u) * terms.prev_sample + 3 * _eta(dtype))
    return _with_float32_parts(cfg, m, t, x, sched, step_index, n, dtype, terms, bound_den, bound_prev, tables)


def renoise_bound(cfg: LCMConfig, denoised, noise, t_prev, *, dtype=torch.float32, tables="float32"):
    """The largest |prev − (c·D + d·z)| admitted for re-noising a given denoised D (the implementation's own) with
    z, c = √ᾱ_prev, d = √(1 − ᾱ_prev) correctly rounded: point 5 with D's own magnitude in place of the exact
    denoised's, c·|D|·ρ_c + d·|z|·ρ_d + γ(3)·(c·|D| + d·|z|) + 3η(D), plus the reference's own error on c and d
    (REF_OWN relative). Sized on D itself, so a wrong denoised re-noised correctly stays within it: an error of
    denoised is judged once, in concern denoised (docs/design.md §9.1)."""
    u = _u(dtype)
    D, z = np.abs(to_f64(denoised)), np.abs(to_f64(noise))
    c, d = ref.noise_coefficients(cfg, t_prev)
    rho_c, rho_d = _renoise_errors(cfg, t_prev, dtype, tables)
    with np.errstate(invalid="ignore", over="ignore"):
        terms = c * D + d * z
        bound = c * D * rho_c + d * z * rho_d + (_gamma(3, u) + REF_OWN) * terms + 3 * _eta(dtype)
    return _finite_or_inf(bound)


def overflow_threshold(dtype) -> float:
    """The smallest magnitude that rounds to ±inf in ``dtype``: the largest finite value plus half its ulp (65520 in
    float16): with fi.max = (2 − eps)·2^emax, half an ulp there is eps·2^emax/2 = eps·fi.max/(2(2 − eps))."""
    fi = torch.finfo(torch_dtype(dtype))
    return float(fi.max) + float(fi.eps) * float(fi.max) / (2 * (2 - float(fi.eps)))


def _x0_may_overflow(cfg, m, x, p, q, err_x0, dtype):
    """Point 9: where diffusers' intermediate x0 may leave D's range. Points 3–6 hold while every intermediate is
    finite in D; x0 = (x − √(1−ᾱ)·m)/√ᾱ is the one intermediate that can be far larger than the inputs and the
    result (1/√ᾱ reaches 10¹⁵ for the configs drawn; the result is then clipped, thresholded or scaled by a small
    c_out). Where |x0| + its error bound reaches the overflow threshold of D (65520 in float16; never for the
    float32 or float64 inputs drawn), the float evaluation is inf there, and then c_out·inf = NaN for c_out = 0 and
    thresholding's quantile inf − inf = NaN for the whole batch row: no finite bound exists, and the bound is
    infinite (compare.py admits any value there). Clipping maps ±inf to the range exactly, as the exact value is,
    so a clipped (and not thresholded) x0 keeps its bound."""
    if cfg.clip_sample and not cfg.thresholding:
        return np.zeros(np.shape(x), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        x0 = m if cfg.prediction_type == "sample" else p * x + q * m
        over = ~(np.abs(x0) + err_x0 < overflow_threshold(dtype))
    if cfg.thresholding and over.ndim >= 2:
        over = np.broadcast_to(over.reshape(over.shape[0], -1).any(axis=1).reshape(
            (-1,) + (1,) * (over.ndim - 1)), over.shape)
    return over


def _renoise_errors(cfg, t_prev, dtype, tables):
    """(ρ of √ᾱ_prev, ρ of √(1 − ᾱ_prev)) as used in dtype D (point 5): point 2's square-root errors from the table
    entry's E, the coefficient rounding u_c, and the cast to D (point 6)."""
    u_t = table_unit_roundoff(tables)
    c, d = ref.noise_coefficients(cfg, t_prev)
    abar_p, E_p = _noise_errors(cfg, t_prev, tables)
    rho_c, rho_d = _sqrt_errors(abar_p, E_p, _coefficient_roundoff(_u(dtype), u_t))
    return float(rho_c + _cast(c, dtype, u_t)), float(rho_d + _cast(d, dtype, u_t))


def alphas_cumprod_bound(cfg: LCMConfig, tables="float32") -> np.ndarray:
    """The largest |impl − ref| admitted for an exposed ᾱ table (concern ``tables``), per t: the implementation's
    entry is within E(t) of the exact value (point 1, or 1 rounding for "float64"), the reference's within 1 ulp
    ≤ 2⁻⁵²·|exact| (docs/design.md §2, point 3), so |impl − ref| ≤ (E + 2⁻⁵²)·|exact| ≤ (E + 2⁻⁵²)(1 + 2⁻⁵²)·|ref|."""
    abar = np.asarray(ref.alphas_cumprod(cfg))
    return (table_error_bound(cfg, tables) + EPS64) * (1 + EPS64) * abar


def scalings_bound(cfg: LCMConfig, timestep, tables="float32"):
    """(bound of c_skip, bound of c_out) for ``get_scalings_for_boundary_condition_discrete(t)`` (concern ``tables``):
    7·u_T relative (point 2's chain: t·s, square, + σ², quotient; √ and quotient for c_out; C_SCALINGS in float32)
    plus the reference's own ≤ 1 ulp (2⁻⁵² relative), absolute."""
    u_t = table_unit_roundoff(tables)
    c_skip, c_out = ref.boundary_scalings(cfg, int(timestep))
    rel = (7 * u_t + EPS64) * (1 + EPS64)
    return rel * abs(c_skip), rel * abs(c_out)


def _with_float32_parts(cfg, m, t, x, sched, step_index, n, dtype, terms, bound_den, bound_prev, tables="float32"):
    """Add the reference's own error (REF_OWN·Σ|terms|) and, in float32 with float32 tables, take the elementwise
    minimum with the per-part bound of ``scaled_step_bound`` (point 7, derived for float32 tables only).
    ``bound_prev`` None: prev_sample gets the denoised bound (no noise given), not narrowed."""
    own_den = REF_OWN * terms.denoised
    bound_den = _finite_or_inf(bound_den + own_den)
    if bound_prev is None:
        return bound_den, bound_den
    bound_prev = _finite_or_inf(bound_prev + REF_OWN * terms.prev_sample)
    if torch_dtype(dtype) == torch.float32 and tables == "float32":
        k_prev, k_den = scaled_step_bound(cfg, m, t, x, schedule=sched, step_index=step_index,
                                          num_inference_steps=n)
        with np.errstate(invalid="ignore", over="ignore"):
            bound_den = np.minimum(bound_den, _finite_or_inf(k_den * EPS32 * terms.denoised))
            bound_prev = np.minimum(bound_prev, _finite_or_inf(k_prev * EPS32 * terms.prev_sample))
    return bound_den, bound_prev


def scaled_step_bound(cfg, model_output, timestep, sample, *, schedule, step_index, num_inference_steps=None):
    """(K_prev, K_denoised): bounds on ``ref.scaled_error(diffusers, ref, ref.step_terms(...), "float32")`` of one
    float32 diffusers step (point 7), per element (arrays shaped like the batch dim for thresholding, else scalars).

    A term's relative error is the compound of its factors' errors and of the roundings that touch it; an error
    that is ≤ e·|term| for every term is ≤ max(e)·Σ|terms|, so the max over the terms bounds the scaled error:
      x0, epsilon: (x − √(1−ᾱ)·m)/√ᾱ: x-part √ᾱ ⊕ sub ⊕ div; m-part √ᾱ ⊕ √(1−ᾱ) ⊕ mul ⊕ sub ⊕ div
      x0, v:       √ᾱ·x − √(1−ᾱ)·m: each part its coefficient ⊕ mul ⊕ sub;   x0, sample: exact
      clip:        1-Lipschitz, bound rounded to float32 (U); threshold: see _threshold_err
      denoised:    c_out·x0 + c_skip·x: x0 parts ⊕ c_out ⊕ mul ⊕ add; skip part c_skip ⊕ mul ⊕ add
      prev:        √ᾱ_prev·denoised + √(1−ᾱ_prev)·z: denoised's bound ⊕ √ᾱ_prev ⊕ mul ⊕ add; z part the same.
    The reference's own error (≤ 4 scaled eps64, tests/test_reference_step.py) is added."""
    sched = np.asarray(schedule)
    t = int(timestep)
    n = len(sched) if num_inference_steps is None else num_inference_steps
    e_a, e_b = coefficient_errors(cfg, t)
    kind = cfg.prediction_type
    if kind == "epsilon":
        parts = [compound(e_a, U, U), compound(e_a, e_b, U, U, U)]
    elif kind == "v_prediction":
        parts = [compound(e_a, U, U), compound(e_b, U, U)]
    else:
        parts = [0.0]
    if cfg.thresholding:
        e_s = _threshold_err(cfg, model_output, t, sample, max(parts))
        parts = [compound(e, e_s, e_s, U) for e in parts]
    elif cfg.clip_sample:
        parts = [compound(e, U) for e in parts]
    k_den = functools.reduce(np.maximum, [compound(C_SCALINGS, e, U, U) for e in parts],
                             compound(C_SCALINGS, U, U))
    if step_index == n - 1:
        k_prev = k_den
    else:
        t_prev = int(sched[step_index + 1]) if step_index + 1 < len(sched) else t
        c_a, c_b = _sqrt_errors(*_noise_errors(cfg, t_prev), U)
        k_prev = np.maximum(compound(k_den, c_a, U, U), compound(c_b, U, U))
    own = REF_OWN / EPS32
    return k_prev / EPS32 + own, k_den / EPS32 + own


def _threshold_err(cfg, model_output, t, sample, e_x0):
    """Relative error of diffusers' threshold divisor s per batch element (shape (batch, 1, ...)).

    s = clamp(quantile(|x0'|, q'), 1, sample_max_value): the order statistics carry x0's error (≤ e_x0·Σ|x0 terms|
    of their element: bounded by the row's max); q' = float32(q) and the rank q'·(n − 1) is rounded, so the rank
    moves by ≤ 2U·q·(n − 1), moving s by ≤ that × the largest gap between sorted values (the quantile is piecewise
    linear in the rank); torch.lerp's three roundings ≤ 3U·max|x0|; the clamp is 1-Lipschitz and its upper bound is
    rounded to float32 (U). Divided by s ≥ 1."""
    x = np.asarray(sample, dtype=np.float64)
    m = np.asarray(model_output, dtype=np.float64)
    p, q = ref.x0_coefficients(cfg, t)
    with np.errstate(invalid="ignore", over="ignore"):
        x0 = m if cfg.prediction_type == "sample" else p * x + q * m
        terms = np.abs(m) if cfg.prediction_type == "sample" else np.abs(p * x) + np.abs(q * m)
    rows = np.abs(x0.reshape(len(x0), -1))
    n = rows.shape[1]
    srt = np.sort(rows, axis=1)
    s = np.clip(np.quantile(rows, cfg.dynamic_thresholding_ratio, axis=1), 1.0, cfg.sample_max_value)
    with np.errstate(invalid="ignore"):     # inf − inf where x0 is infinite (ᾱ = 0): the bound is then NaN/inf
        gap = np.max(np.diff(srt, axis=1), axis=1) if n > 1 else np.zeros(len(rows))
    abs_err = (e_x0 * terms.reshape(len(x0), -1).max(axis=1) + 2 * U * cfg.dynamic_thresholding_ratio * (n - 1) * gap
               + 3 * U * srt[:, -1])
    e_s = abs_err / s + U
    return e_s.reshape((-1,) + (1,) * (x0.ndim - 1))


def forward_bound(cfg: LCMConfig, a, b, timesteps, *, dtype=torch.float32, tables="float32"):
    """(terms, bound) for √ᾱ_t·a + √(1−ᾱ_t)·b (``add_noise``: a = x0, b = noise) or √ᾱ_t·a − √(1−ᾱ_t)·b
    (``get_velocity``: a = noise, b = sample). diffusers casts ᾱ to D first: E + u(D) + η(D)/ᾱ."""
    u = _u(dtype)
    u_t = table_unit_roundoff(tables)
    u_c = _coefficient_roundoff(u, u_t)
    a, b = to_f64(a), to_f64(b)
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    shape = (-1,) + (1,) * max(a.ndim - 1, 0)
    c = np.asarray(ref.sqrt_alphas_cumprod(cfg))[ts].reshape(shape)
    d = np.asarray(ref.sqrt_one_minus_alphas_cumprod(cfg))[ts].reshape(shape)
    abar = np.asarray(ref.alphas_cumprod(cfg))[ts].reshape(shape)
    E = np.asarray(table_error_bound(cfg, tables))[ts].reshape(shape) + u
    with np.errstate(divide="ignore", invalid="ignore"):
        E = E + np.where(abar > 0, _eta(dtype) / abar, 0.0)
    rho_sa, rho_s1a = _sqrt_errors(abar, E, u_c)
    rho_sa, rho_s1a = rho_sa + _cast(c, dtype, u_t), rho_s1a + _cast(d, dtype, u_t)
    terms = c * np.abs(a) + d * np.abs(b)
    return terms, c * np.abs(a) * rho_sa + d * np.abs(b) * rho_s1a + _gamma(3, u) * terms + 3 * _eta(dtype)


def _finite_or_inf(bound):
    """A NaN bound (inf·0 where ᾱ = 0 makes a coefficient infinite: quirk 3) admits anything finite-vs-finite;
    such elements are compared by equality of their non-finite values."""
    return np.where(np.isnan(bound), np.inf, bound)
