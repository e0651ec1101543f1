"""How far each implementation of the LCM step is from the exact result, in the scaled units of docs/design.md §8.

The logic behind ``notebooks/reference_vs_gpu.ipynb`` and ``notebooks/timestep_scaling.ipynb``:

- ``scaled_errors``: diffusers' float32 ``LCMScheduler`` and ``lcm_ref.torch_impl.TorchLCM`` in float32 / float16 /
  bfloat16 against ``lcm_ref.reference``, per timestep, prediction type and beta schedule:
  ``|impl − ref| / (eps(dtype)·Σ|terms|)`` via ``ref.step_terms`` and ``ref.scaled_error``. Inputs are rounded to
  the implementation's dtype first and the reference gets the same rounded values, so the error measured is the
  step's own; the noise is the one the implementation drew (diffusers draws its own from the generator; it is
  captured as drawn: ``lcm_ref.oracle.noise.step_with_noise``).
- ``reference_vs_mpmath`` / ``table_ulps``: the reference against the independent 60-digit evaluation of
  ``lcm_ref.reference.exact`` (tables in ulps, step outputs in scaled eps64 units).
- ``boundary_table`` / ``scaling_sweep``: the boundary-condition approximation (c_skip → 0, c_out → 1) against
  ``timestep_scaling``, closed form beside measured, and each implementation's error over decades of it.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import numpy as np

from ..reference import exact as E
from .. import reference as ref
from ..config import LCMConfig
from ..numerics import torch_dtype

SIGMA = ref.SIGMA_DATA
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("scaled_linear", "linear", "squaredcos_cap_v2")     # the ones diffusers' LCMScheduler accepts

# ---------------------------------------------------------------------------------------------------------------
# Implementations under test: step(cfg, schedule, i, x, m, seed) -> (prev_sample, denoised, z) as float64 arrays
# ---------------------------------------------------------------------------------------------------------------

def diffusers_step(cfg: LCMConfig, schedule, i, x, m, seed, *, dtype="float32", device="cpu"):
    """One ``diffusers.LCMScheduler.step`` at ``schedule[i]`` as a pipeline calls it (timestep a tensor element of
    ``scheduler.timesteps``; ``set_begin_index(i)``), with the noise drawn from ``seed``."""
    import torch
    from .behaviour import captured_diffusers_log, diffusers_scheduler
    from ..oracle.noise import step_with_noise
    dt = torch_dtype(dtype)
    s = diffusers_scheduler(cfg)
    with captured_diffusers_log():
        s.set_timesteps(timesteps=[int(t) for t in schedule], device=device)
    s.set_begin_index(i)
    xt, mt = torch.as_tensor(x, device=device).to(dt), torch.as_tensor(m, device=device).to(dt)
    out, z = step_with_noise(s, mt, s.timesteps[i], xt, seed)
    return _np(out.prev_sample), _np(out.denoised), _np(z)


def torch_lcm_step(cfg: LCMConfig, schedule, i, x, m, seed, *, dtype="float32", device="cpu"):
    """One step of ``lcm_ref.torch_impl.TorchLCM`` in ``dtype`` with the noise given explicitly."""
    import torch
    from ..torch_impl.noise import draw_noise
    from ..torch_impl import TorchLCM
    dt = torch_dtype(dtype)
    eng = TorchLCM(cfg, device=device, dtype=dt)
    xt, mt = torch.as_tensor(x, device=device).to(dt), torch.as_tensor(m, device=device).to(dt)
    z = draw_noise(xt.shape, torch.Generator(device).manual_seed(seed), device, dt)    # what diffusers draws
    out = eng.step(mt, int(schedule[i]), xt, schedule=torch.as_tensor(np.asarray(schedule), device=device),
                   noise=z, step_index=i)
    prev, den = (out.prev_sample, out.denoised) if hasattr(out, "prev_sample") else out
    return _np(prev), _np(den), _np(z)


def _np(t):
    return t.detach().cpu().double().numpy()


class Impl(NamedTuple):
    name: str
    dtype: str
    step: Callable


def implementations(device="cpu") -> list[Impl]:
    """The implementations measured here: diffusers in float32 and TorchLCM in float32, float16, bfloat16."""
    return [Impl("diffusers", "float32", lambda *a: diffusers_step(*a, dtype="float32", device=device))] + [
        Impl("TorchLCM", dt, lambda *a, dt=dt: torch_lcm_step(*a, dtype=dt, device=device))
        for dt in ("float32", "float16", "bfloat16")]


# ---------------------------------------------------------------------------------------------------------------
# Scaled error vs the reference
# ---------------------------------------------------------------------------------------------------------------

def inputs(shape, seed, dtype):
    """(x, model_output) drawn from N(0, 1) with ``seed``, rounded to ``dtype`` (returned as float64 arrays holding
    exactly the rounded values)."""
    import torch
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal(shape)).to(torch_dtype(dtype)).double().numpy()
    m = torch.as_tensor(rng.standard_normal(shape)).to(torch_dtype(dtype)).double().numpy()
    return x, m


def measure_step(cfg: LCMConfig, impl: Impl, schedule, i, shape, seed) -> dict:
    """Max scaled error (docs/design.md §8) of ``impl``'s denoised and prev_sample at ``schedule[i]``; also the max relative
    error (diagnostic only) and how many outputs are non-finite where the reference's are finite."""
    schedule = np.asarray(schedule, dtype=np.int64)
    x, m = inputs(shape, seed + i, impl.dtype)
    try:
        prev, den, z = impl.step(cfg, schedule, i, x, m, seed + 1000 + i)
    except Exception as e:   # an implementation that raises is reported, not hidden
        return dict(error=f"{type(e).__name__}: {e}")
    t = int(schedule[i])
    want = ref.step(cfg, m, t, x, schedule=schedule, noise=z, step_index=i)
    terms = ref.step_terms(cfg, m, t, x, schedule=schedule, noise=z, step_index=i)
    e_den = ref.scaled_error(den, want.denoised, terms.denoised, impl.dtype)
    e_prev = ref.scaled_error(prev, want.prev_sample, terms.prev_sample, impl.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(den - want.denoised) / np.abs(want.denoised)
    return dict(scaled_denoised=float(e_den.max()), scaled_prev=float(e_prev.max()),
                rel_denoised=float(np.nanmax(np.where(want.denoised == den, 0.0, rel))),
                nonfinite=int((~np.isfinite(den) & np.isfinite(want.denoised)).sum()
                              + (~np.isfinite(prev) & np.isfinite(want.prev_sample)).sum()), error="")


def scaled_errors(impls, *, beta_schedules=BETA_SCHEDULES, prediction_types=PREDICTION_TYPES, every=1,
                  shape=(2, 4, 32, 32), seed=0, progress=True) -> list[dict]:
    """Per implementation × beta schedule × prediction type × timestep of the 50-point grid (every ``every``-th):
    one step from that timestep to the next grid point (the last re-noise-free), measured by ``measure_step``."""
    from tqdm.auto import tqdm
    grid = ref.timesteps(LCMConfig(), 50)
    idx = list(range(0, len(grid), every))
    if idx[-1] != len(grid) - 1:
        idx.append(len(grid) - 1)
    jobs = [(im, bs, pt, i) for im in impls for bs in beta_schedules for pt in prediction_types for i in idx]
    rows = []
    for im, bs, pt, i in tqdm(jobs, desc="scaled errors", disable=not progress, mininterval=2):
        cfg = LCMConfig(beta_schedule=bs, prediction_type=pt)
        r = measure_step(cfg, im, grid, i, shape, seed)
        rows.append(dict(impl=im.name, dtype=im.dtype, beta_schedule=bs, prediction_type=pt, t=int(grid[i]),
                         last_step=i == len(grid) - 1, **r))
    return rows


def summarize(rows, keys=("impl", "dtype", "prediction_type")) -> list[dict]:
    """Max over the other dimensions of each scaled error, grouped by ``keys``; ``worst_t`` is where denoised is
    worst."""
    out = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        g = out.setdefault(k, {**{c: r[c] for c in keys}, "max_scaled_denoised": 0.0, "max_scaled_prev": 0.0,
                               "worst_t": None, "nonfinite": 0, "errors": 0})
        if r.get("error"):
            g["errors"] += 1
            continue
        if r["scaled_denoised"] >= g["max_scaled_denoised"]:
            g["max_scaled_denoised"], g["worst_t"] = r["scaled_denoised"], r["t"]
        g["max_scaled_prev"] = max(g["max_scaled_prev"], r["scaled_prev"])
        g["nonfinite"] += r["nonfinite"]
    return list(out.values())


# ---------------------------------------------------------------------------------------------------------------
# Reference vs mpmath (the independent 60-digit evaluation of lcm_ref.reference.exact)
# ---------------------------------------------------------------------------------------------------------------

def ulp_error(got, exact_mp) -> np.ndarray:
    """|got − exact| in units of the float64 ulp at the exact value (|got| for zero)."""
    exact = [float(v) for v in exact_mp]
    return np.array([float(abs(E.MP.mpf(float(g)) - v) / E.MP.mpf(float(np.spacing(abs(e)))))
                     for g, v, e in zip(np.ravel(got), exact_mp, exact)])


def table_ulps(cfg: LCMConfig) -> dict:
    """ᾱ_t ulp error vs ``lcm_ref.reference.exact`` for ``ref.alphas_cumprod``, a naive float64 ``np.cumprod`` and diffusers'
    float32 table (the latter in float32 ulps)."""
    from .behaviour import diffusers_scheduler
    exact = E.exact_tables(cfg)["alphas_cumprod"]
    T = cfg.num_train_timesteps
    if cfg.beta_schedule == "scaled_linear":
        naive_betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T) ** 2
    elif cfg.beta_schedule == "linear":
        naive_betas = np.linspace(cfg.beta_start, cfg.beta_end, T)
    else:
        naive_betas = np.asarray(ref.betas(cfg))
    naive = np.cumprod(1.0 - naive_betas)
    d32 = diffusers_scheduler(cfg).alphas_cumprod.double().numpy()
    exact32 = np.array([float(v) for v in exact], dtype=np.float32)
    ulp32 = np.abs(d32 - np.array([float(v) for v in exact])) / np.spacing(np.abs(exact32)).astype(np.float64)
    return dict(t=np.arange(T), reference=ulp_error(ref.alphas_cumprod(cfg), exact),
                naive_float64=ulp_error(naive, exact), diffusers_float32=ulp32)


def reference_vs_mpmath(*, beta_schedules=BETA_SCHEDULES, prediction_types=PREDICTION_TYPES, every=1,
                        shape=(2, 4, 4, 4), seed=0) -> list[dict]:
    """Max scaled error (eps64 units) of ``ref.step``'s outputs against ``lcm_ref.reference.exact.exact_step`` (the exact value
    not rounded first), per schedule, prediction type and timestep of the 50-point grid. docs/design.md §8 bound: ≤ 4."""
    grid = ref.timesteps(LCMConfig(), 50)
    rows = []
    for bs in beta_schedules:
        for pt in prediction_types:
            cfg = LCMConfig(beta_schedule=bs, prediction_type=pt)
            for i in range(0, len(grid), every):
                rng = np.random.default_rng(seed + i)
                x, m, z = (rng.standard_normal(shape) for _ in range(3))
                t = int(grid[i])
                last = i == len(grid) - 1
                want_prev, want_den = E.exact_step(cfg, m, t, x, z, -1 if last else int(grid[i + 1]), last)
                got = ref.step(cfg, m, t, x, schedule=grid, noise=z, step_index=i)
                terms = ref.step_terms(cfg, m, t, x, schedule=grid, noise=z, step_index=i)
                rows.append(dict(beta_schedule=bs, prediction_type=pt, t=t,
                                 scaled_denoised=float(E.scaled_error(got.denoised, want_den, terms.denoised).max()),
                                 scaled_prev=float(E.scaled_error(got.prev_sample, want_prev,
                                                                  terms.prev_sample).max())))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# timestep_scaling: the boundary condition and the numerics over decades
# ---------------------------------------------------------------------------------------------------------------

def exact_boundary(t, s) -> tuple[float, float]:
    """(c_skip, 1 − c_out) at timestep t for timestep_scaling s, exact (``lcm_ref.reference.exact``), rounded once."""
    c_skip, c_out = E.exact_boundary(t, s)
    return float(c_skip), float(1 - c_out)


def asymptotic_boundary(t, s) -> tuple[float, float]:
    """Leading-order closed form for u = t·s ≫ σ: c_skip ≈ σ²/u², 1 − c_out ≈ σ²/(2u²)."""
    u = float(t) * float(s)
    return (SIGMA ** 2 / u ** 2, SIGMA ** 2 / (2 * u ** 2)) if u > 0 else (math.nan, math.nan)


def diffusers_boundary(t, s, *, tensor=True):
    """What diffusers' ``get_scalings_for_boundary_condition_discrete`` returns for timestep t: with a tensor
    timestep (as pipelines pass) float32 0-d tensors; with an int, Python floats (which can raise OverflowError)."""
    import torch
    from .behaviour import diffusers_scheduler
    sch = diffusers_scheduler(LCMConfig(timestep_scaling=s))
    ts = torch.tensor(t) if tensor else int(t)
    try:
        c_skip, c_out = sch.get_scalings_for_boundary_condition_discrete(ts)
    except OverflowError as e:
        return f"OverflowError: {e}", None
    return float(c_skip), float(c_out)


def boundary_table(scales, timesteps) -> list[dict]:
    """Per (timestep_scaling, t): exact c_skip and 1 − c_out, the asymptotic closed form, and what the reference
    (float64) and diffusers (float32 tensor path) give."""
    rows = []
    for s in scales:
        cfg = LCMConfig(timestep_scaling=s)
        for t in timesteps:
            c_skip, one_m = exact_boundary(t, s)
            a_skip, a_one_m = asymptotic_boundary(t, s)
            r_skip, r_out = ref.boundary_scalings(cfg, int(t))
            d_skip, d_out = diffusers_boundary(t, s)
            rows.append(dict(timestep_scaling=s, t=int(t), c_skip=c_skip, c_skip_closed_form=a_skip,
                             one_minus_c_out=one_m, one_minus_c_out_closed_form=a_one_m,
                             ref_c_skip=r_skip, ref_c_out=r_out,
                             diffusers_fp32_c_skip=d_skip, diffusers_fp32_c_out=d_out,
                             diffusers_fp32_c_out_is_1=d_out == 1.0))
    return rows


def first_t_c_out_is_one(s, T=1000) -> dict:
    """The smallest t in 1..T−1 where c_out == 1 exactly: in diffusers' float32 tensor path, in float32 rounding of
    the exact value, and in the reference's float64 (None if never)."""
    import torch
    from .behaviour import diffusers_scheduler
    sch = diffusers_scheduler(LCMConfig(timestep_scaling=s))
    ts = torch.arange(1, T)
    d = [float(sch.get_scalings_for_boundary_condition_discrete(t)[1]) for t in ts]
    exact = [1 - exact_boundary(int(t), s)[1] for t in range(1, T)]
    r = ref.boundary_scalings(LCMConfig(timestep_scaling=s), np.arange(1, T))[1]

    def first(values):
        hit = [i + 1 for i, v in enumerate(values) if v == 1.0]
        return hit[0] if hit else None
    return dict(timestep_scaling=s, diffusers_fp32=first(d),
                exact_rounded_to_fp32=first([float(np.float32(v)) for v in exact]), reference_fp64=first(list(r)))


def scaling_sweep(impls, scales, *, prediction_type="epsilon", n=8, shape=(1, 4, 16, 16), seed=0,
                  progress=True) -> list[dict]:
    """Per timestep_scaling and implementation: max scaled error of denoised and prev over the n-step schedule,
    non-finite outputs, and the error an implementation raised."""
    from tqdm.auto import tqdm
    rows = []
    for s in tqdm(scales, desc="timestep_scaling sweep", disable=not progress):
        cfg = LCMConfig(timestep_scaling=s, prediction_type=prediction_type)
        sched = ref.timesteps(cfg, n)
        for im in impls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steps = [measure_step(cfg, im, sched, i, shape, seed) for i in range(len(sched))]
            errs = [r["error"] for r in steps if r.get("error")]
            ok = [r for r in steps if not r.get("error")]
            rows.append(dict(timestep_scaling=s, impl=im.name, dtype=im.dtype,
                             max_scaled_denoised=max((r["scaled_denoised"] for r in ok), default=math.nan),
                             max_scaled_prev=max((r["scaled_prev"] for r in ok), default=math.nan),
                             nonfinite=sum(r["nonfinite"] for r in ok), error=errs[0] if errs else ""))
    return rows
