"""How far diffusers' float32 LCMScheduler may be from the exact values: a first-order error model, derived operation
by operation from diffusers' code (read for facts), for the tests that compare diffusers with lcm_ref.reference.

Conventions. U = 2⁻²⁴ is the unit roundoff of float32 (half of eps32 = 2⁻²³): one rounded float32 operation has
relative error ≤ U. "e" below is always a bound on a relative error. Errors of a product compound: a product of
factors with relative errors e_i has relative error ≤ Π(1 + e_i) − 1 (``compound``), which also covers the
second-order terms. A square root halves a relative error (``sqrt_err``, exact for any size of error).

Nothing here is fitted to measurements: each bound is the worst case of the operations listed beside it. The tables
tests check the table bounds against diffusers directly; the step tests use them.
"""

import functools
import math

import numpy as np

import lcm_ref.reference as ref

U = 2.0 ** -24          # float32 unit roundoff
EPS32 = 2.0 ** -23      # float32 machine epsilon: the unit of scaled errors for float32
EPS64 = 2.0 ** -52
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


@functools.lru_cache(maxsize=512)
def alphas_cumprod_rel_err(cfg):
    """Relative error bound Δ_t of diffusers' float32 alphas_cumprod[t] (0 where the exact value is 0)."""
    beta = np.array(ref.betas(cfg.replace(rescale_betas_zero_snr=False)))
    e_beta = betas_rel_err(cfg)
    with np.errstate(divide="ignore", invalid="ignore"):
        # α' = float32(1 − β'): β's error seen relative to 1 − β, plus the rounding (≤ U: 1 − β' ≥ 0.5 has spacing
        # U, so the absolute error is ≤ U/2 ≤ U·(1 − β); for β' > 0.5 the subtraction is exact, Sterbenz).
        e_alpha = np.where(beta < 1, e_beta * beta / (1 - beta), np.inf) + U
    # cumprod: t multiplications and the store, ≤ U each (CPU accumulates in float64: smaller, still covered).
    delta = np.expm1(np.cumsum(np.log1p(e_alpha)) + np.arange(1, len(beta) + 1) * np.log1p(U))
    if not cfg.rescale_betas_zero_snr:
        return delta
    return _zero_snr_rel_err(cfg, delta)


def _zero_snr_rel_err(cfg, delta):
    """rescale_zero_terminal_snr in float32, then cumprod(1 − betas) again.

    S = √ᾱ' (error Δ/2 ⊕ U); S − S_T (absolute error: both S errors plus U·(S − S_T); exactly 0 at T−1);
    f = S_0/(S_0 − S_T) (S_0's error, the difference's absolute error over its size, subtraction and division);
    s = (S − S_T)·f (product U); ᾱ'' = s² (2|δs|/s ⊕ U). Then alphas = ᾱ''[t]/ᾱ''[t−1] (U), betas = 1 − alphas and
    alphas = 1 − betas again: exact when the ratio r ≥ 0.5 (Sterbenz, twice), else ≤ U/2 absolute, U/(2r) relative;
    and the cumprod telescopes back to ᾱ''_t with (t + 1) more roundings."""
    S = np.sqrt(np.array(ref.alphas_cumprod(cfg.replace(rescale_betas_zero_snr=False))))
    e_S = compound(sqrt_err(delta), U)
    a_S = S * e_S
    shifted = S - S[-1]
    a_shift = a_S + a_S[-1] + U * shifted
    a_shift[-1] = 0.0
    e_f = compound(e_S[0], (a_S[0] + a_S[-1]) / shifted[0], U, U)
    f = S[0] / shifted[0]
    s = shifted * f
    a_s = f * a_shift + s * compound(e_f, U)
    abar = np.array(ref.alphas_cumprod(cfg))
    with np.errstate(divide="ignore", invalid="ignore"):
        e_sq = np.where(s > 0, compound((2 * s * a_s + a_s ** 2) / s ** 2, U), 0.0)
        r = np.concatenate([[abar[0]], abar[1:] / abar[:-1]])
        e_roundtrip = np.where((r < 0.5) & (r > 0), U / (2 * r), 0.0)
    e_ratio = np.concatenate([[0.0], np.full(len(r) - 1, U)]) + e_roundtrip
    steps = np.cumsum(np.log1p(e_ratio)) + np.arange(1, len(r) + 1) * np.log1p(U)
    out = compound(e_sq, np.expm1(steps))
    out[abar == 0] = 0.0
    return out


def coefficient_errors(cfg, t):
    """(e of √ᾱ_t, e of √(1 − ᾱ_t)) as diffusers forms them: alphas_cumprod[t].sqrt(), (1 − alphas_cumprod[t]).sqrt().
    1 − ᾱ' has absolute error ᾱ·Δ (plus its rounding, U), i.e. relative ᾱΔ/(1 − ᾱ): large where ᾱ is near 1."""
    abar = float(ref.alphas_cumprod(cfg)[t])
    d = float(alphas_cumprod_rel_err(cfg)[t])
    return compound(sqrt_err(d), U), compound(sqrt_err(abar * d / (1 - abar) + U), U)


def _noise_errors(cfg, t_prev):
    if t_prev < 0:
        if cfg.set_alpha_to_one:
            return 0.0, 0.0            # torch.tensor(1.0): √1 = 1 and √0 = 0 exactly
        t_prev = 0
    return coefficient_errors(cfg, t_prev)


def step_bound(cfg, model_output, timestep, sample, *, schedule, step_index, num_inference_steps=None):
    """(K_prev, K_denoised): bounds on ``ref.scaled_error(diffusers, ref, ref.step_terms(...), "float32")`` of one
    float32 diffusers step, per element (arrays shaped like the batch dim for thresholding, else scalars).

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
        c_a, c_b = _noise_errors(cfg, t_prev)
        k_prev = np.maximum(compound(k_den, c_a, U, U), compound(c_b, U, U))
    own = 4 * EPS64 / EPS32
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
