"""Concerns ``denoised``, ``clip_threshold``, ``prev_sample`` and ``final_step``: each step of a whole run on the
implementation's own schedule, against the reference at the implementation's own inputs; their causes."""

from __future__ import annotations

import math

import numpy as np
import torch

from ... import reference as ref
from ...numerics import to_f64
from ..budget import renoise_bound, step_bound
from ..example import Example
from .causes import (FLOAT32_TABLES, best_explanation, fitted_denoise_level, fitted_renoise_level,
                     float32_tables_explain)


def _denoised_alternatives(cfg, rec, dtype):
    """(cause, denoised) pairs of classic mistakes at this step's inputs (docs/design.md §9.5's mutant table)."""
    x, m, t = to_f64(rec.x), to_f64(rec.m), rec.t
    abar = float(ref.alphas_cumprod(cfg)[t])
    sa, s1a = math.sqrt(abar), math.sqrt(1 - abar)
    c_skip, c_out = ref.boundary_scalings(cfg, t)

    def x0_of(kind, mm):
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"epsilon": (x - s1a * mm) / sa, "sample": mm, "v_prediction": sa * x - s1a * mm}[kind]

    def post(x0):
        if cfg.thresholding:
            return ref.threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[0]
        if cfg.clip_sample:
            return np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        return x0

    def scalings(s, sigma):
        u = t * s
        return sigma ** 2 / (u ** 2 + sigma ** 2), u / math.sqrt(u ** 2 + sigma ** 2)

    x0_raw = x0_of(cfg.prediction_type, m)
    x0 = post(x0_raw)
    out = []
    if cfg.clip_sample and not cfg.thresholding:
        out.append(("clip_sample clamps x0 to ±1 whatever clip_sample_range", c_out * np.clip(x0_raw, -1, 1)
                    + c_skip * x))
    if cfg.thresholding and x0_raw.ndim >= 2:
        flat = torch.from_numpy(np.abs(x0_raw.reshape(len(x0_raw), -1)))
        for method in ("nearest", "lower", "higher"):
            s = torch.quantile(flat, cfg.dynamic_thresholding_ratio, dim=1, interpolation=method).numpy()
            s = np.clip(s, 1.0, cfg.sample_max_value).reshape((-1,) + (1,) * (x0_raw.ndim - 1))
            out.append(("dynamic thresholding with a rank quantile (torch.quantile's 'nearest', 'lower' or "
                        "'higher') instead of linear interpolation", c_out * (np.clip(x0_raw, -s, s) / s) + c_skip * x))
    out += [("c_skip·x dropped from denoised (c_skip taken as 0)", c_out * x0),
           ("c_out taken as 1: denoised = x0 + c_skip·x", x0 + c_skip * x)]
    sk, so = scalings(cfg.timestep_scaling, 1.0)
    out.append(("σ_data = 1 in the boundary scalings instead of 0.5", so * x0 + sk * x))
    if not (cfg.clip_sample or cfg.thresholding) and 0 < abar < 1:
        out.append(("c_skip applied to the variance-exploding input x/√ᾱ (k-diffusion ports) instead of x",
                    c_out * x0 + c_skip * x / sa))
    sk, so = scalings(10.0, 0.5)
    out.append(("timestep_scaling ignored (always 10)", so * x0 + sk * x))
    if cfg.prediction_type == "v_prediction":
        out.append(("v-prediction's x0 with the wrong sign: √ᾱ·x + √(1−ᾱ)·v",
                    c_out * post(x0_of("v_prediction", -m)) + c_skip * x))
    if cfg.prediction_type == "epsilon":
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(("√ forgotten on 1 − ᾱ in epsilon's x0: (x − (1 − ᾱ)·ε)/√ᾱ",
                        c_out * post((x - (1 - abar) * m) / sa) + c_skip * x))
    return out

def _denoised_cause(ex, rec, ts, n_eff, want, terms, bound):
    def cause(c):
        got = rec.den if isinstance(rec.den, torch.Tensor) else rec.prev
        if ex.run.tables == "float64":
            bound32, _ = step_bound(ex.cfg, rec.m, rec.t, rec.x, None, schedule=ts, step_index=rec.idx,
                                    num_inference_steps=n_eff, dtype=ex.run.dtype, tables="float32")
            if float32_tables_explain(ex, got, want, terms, bound32):
                return FLOAT32_TABLES
        fitted = fitted_denoise_level(ex.cfg, rec, got)
        return (best_explanation(got, _denoised_alternatives(ex.cfg, rec, ex.run.dtype), want, terms, bound,
                                 ex.run.dtype)
                or best_explanation(got, [fitted] if fitted else [], want, terms, bound, ex.run.dtype))
    return cause


def check_denoised(ex: Example):
    """denoised and clip_threshold: each step's denoised, or the last step's prev_sample where no denoised is
    returned."""
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
        den = rec.den if isinstance(rec.den, torch.Tensor) else None
        if den is None and not rec.last:
            ex.not_observable("step returns no denoised: judged through the last step's prev_sample only")
            continue
        z = rec.z if rec.z is not None else rec.z_expected
        r = ex.reference_step(rec, ts, n_eff, None if rec.last else z)
        bound_den, _ = step_bound(ex.cfg, rec.m, rec.t, rec.x, None if rec.last else z, schedule=ts,
                                  step_index=rec.idx, num_inference_steps=n_eff, dtype=ex.run.dtype,
                                  tables=ex.run.tables)
        terms = ref.step_terms(ex.cfg, rec.m, rec.t, rec.x, schedule=ts, step_index=rec.idx,
                               num_inference_steps=n_eff).denoised
        got, what = (den, "denoised") if den is not None else (rec.prev, "prev_sample (= denoised, last step)")
        ex.compare(what, got, r.denoised, terms, bound_den, where=f" at step {rec.idx} (t={rec.t})",
                   cause=_denoised_cause(ex, rec, ts, n_eff, r.denoised, terms, bound_den))


def check_prev_sample(ex: Example):
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
        if rec.last:
            continue
        if rec.z is None:
            ex.not_observable("the noise drawn could not be captured (not drawn through torch's samplers): "
                              "the re-noising level is not observable (see concern noise)")
            continue
        t_prev = int(ts[rec.idx + 1]) if rec.idx + 1 < len(ts) else rec.t
        where = f" at step {rec.idx} (t={rec.t} -> {t_prev})"
        want, bound, terms, base = renoise_reference(ex, rec, ts, n_eff, t_prev, rec.z)
        ex.compare("prev_sample", rec.prev, want, terms, bound, where=where,
                   cause=lambda cmp: _renoise_cause(ex, rec, ts, n_eff, t_prev, base, want, terms, bound))


def renoise_reference(ex, rec, ts, n_eff, t_prev, z, note=True):
    """(want, bound, terms, denoised used) for a step's prev_sample given the z it drew.

    Where the step returns its denoised D, want = c·D + d·z (c = √ᾱ_prev, d = √(1 − ᾱ_prev) correctly rounded) and
    the bound is derived from D itself (budget.renoise_bound), so that an error of denoised is judged once, in
    concern denoised, and prev_sample judges the re-noising alone. Added: c·B_den, the denoised budget at the
    reference's inputs, for a port that forms prev from the inputs (fused coefficients) rather than from its rounded
    denoised: its prev then differs from c·D + d·z by at most c·|D − den_fused| ≤ c·B_den. A wrong level moves
    √ᾱ_prev by ≈ β/2 relative (≥ 10⁻⁴ for the schedules drawn): far outside. Without a denoised, want is the
    reference's whole step with its prev_sample budget (an error of denoised then shows here too)."""
    cfg = ex.cfg
    bound_den, bound_prev = step_bound(cfg, rec.m, rec.t, rec.x, z, schedule=ts, step_index=rec.idx,
                                       num_inference_steps=n_eff, dtype=ex.run.dtype, tables=ex.run.tables)
    den = rec.den if isinstance(rec.den, torch.Tensor) and tuple(rec.den.shape) == tuple(rec.x.shape) else None
    if den is not None:
        c, d = ref.noise_coefficients(cfg, t_prev)
        D, Z = to_f64(den), to_f64(z)
        with np.errstate(invalid="ignore", over="ignore"):
            terms = c * np.abs(D) + d * np.abs(Z)
            bound = renoise_bound(cfg, D, Z, t_prev, dtype=ex.run.dtype, tables=ex.run.tables) + c * bound_den
            return c * D + d * Z, bound, terms, D
    if note:
        ex.not_observable("step returns no denoised: prev_sample judged against the reference's whole step "
                          "(an error of denoised shows here too)")
    terms = ref.step_terms(cfg, rec.m, rec.t, rec.x, schedule=ts, noise=z, step_index=rec.idx,
                           num_inference_steps=n_eff).prev_sample
    r = ex.reference_step(rec, ts, n_eff, z)
    return r.prev_sample, bound_prev, terms, r.denoised


def _renoise_cause(ex, rec, ts, n_eff, t_prev, den, want, terms, bound):
    """The confirmed cause of a prev_sample that is not c·denoised + d·z at the scheduled level (``explains``)."""
    cfg, z = ex.cfg, to_f64(rec.z)
    den = to_f64(den)
    T = cfg.num_train_timesteps
    if ex.run.tables == "float64":
        b_den, _ = step_bound(cfg, rec.m, rec.t, rec.x, rec.z, schedule=ts, step_index=rec.idx,
                              num_inference_steps=n_eff, dtype=ex.run.dtype, tables="float32")
        c, _ = ref.noise_coefficients(cfg, t_prev)
        b32 = renoise_bound(cfg, den, z, t_prev, dtype=ex.run.dtype, tables="float32") + c * b_den
        if float32_tables_explain(ex, rec.prev, want, terms, b32):
            return FLOAT32_TABLES
    alts = []
    if t_prev >= 1:
        c, d = ref.noise_coefficients(cfg, t_prev - 1)
        alts.append(("re-noises to the wrong timestep (off-by-one prev_timestep? ᾱ[t_prev − 1])", c * den + d * z))
    if t_prev == 0:
        a = ref.final_alpha_cumprod(cfg)
        alts.append(("a previous timestep of 0 is treated as 'no previous timestep' (prev > 0 instead of prev >= 0): "
                     "ᾱ = final_alpha_cumprod", math.sqrt(a) * den + math.sqrt(1 - a) * z))
    c, _ = ref.noise_coefficients(cfg, t_prev)
    alts.append(("the noise is drawn but not added (prev = √ᾱ_prev·denoised)", c * den))
    if 0 <= rec.t < T:
        c, d = ref.noise_coefficients(cfg, rec.t)
        alts.append(("re-noises to the current timestep's level instead of the next scheduled one",
                     c * den + d * z))
    # a named mistake first; the fitted level (which can reproduce any single wrong level) only when none explains it
    return (best_explanation(rec.prev, alts, want, terms, bound, ex.run.dtype)
            or best_explanation(rec.prev, [f for f in [fitted_renoise_level(cfg, rec.prev, den, z, t_prev)] if f],
                                want, terms, bound, ex.run.dtype))


def check_final_step(ex: Example):
    cfg = ex.cfg
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
    last = [r for r in recs if r.last]
    if not last:
        ex.skip("the run does not reach the step the schedule marks last")
    rec = last[0]
    bound_den, _ = step_bound(cfg, rec.m, rec.t, rec.x, None, schedule=ts, step_index=rec.idx,
                              num_inference_steps=n_eff, dtype=ex.run.dtype, tables=ex.run.tables)
    terms = ref.step_terms(cfg, rec.m, rec.t, rec.x, schedule=ts, step_index=rec.idx,
                           num_inference_steps=n_eff).denoised
    den = rec.den if isinstance(rec.den, torch.Tensor) and tuple(rec.den.shape) == tuple(rec.x.shape) else None
    cause = lambda c: "adds noise on the last step (diffusers 0.22 and the authors' pipeline did)"  # noqa: E731
    where = f" at the last step {rec.idx} (t={rec.t})"
    if den is not None:
        # prev_sample must be the denoised it returns, up to the rounding a fused evaluation may differ by
        ex.compare("prev_sample", rec.prev, to_f64(den), terms, bound_den, where=where + ", against its denoised",
                   cause=cause)
    else:
        ex.not_observable("step returns no denoised: the last prev_sample is judged against the reference's "
                          "denoised")
        r = ex.reference_step(rec, ts, n_eff, None)
        ex.compare("prev_sample", rec.prev, r.denoised, terms, bound_den, where=where, cause=cause)
