"""The oracle: check any scheduler with diffusers' ``LCMScheduler`` interface against the float64 reference.

    >>> import diffusers, lcm_ref.oracle
    >>> print(lcm_ref.oracle.check(diffusers.LCMScheduler))        # raises OracleMismatch on a wrong answer

``check(factory)`` draws configs and inputs with hypothesis (``lcm_ref.strategies``), builds ``factory(**config)``
and compares, on the same inputs:

- ``set_timesteps``: the timesteps, exactly (integers), and the exception class where the reference raises;
- every ``step`` of a whole multistep run (``denoised`` and ``prev_sample``, shape and dtype too); each step's
  inputs are the implementation's own previous output, and the noise z the implementation draws is captured (a
  patch of ``torch.randn`` & co. records it; if nothing is drawn, the same generator state is replayed with
  diffusers' ``randn_tensor``), so the reference steps with the same z;
- ``add_noise`` and ``get_velocity``.

Floats are compared in the scaled error of DESIGN §6, ``|impl − ref| / (eps(D)·Σ|terms|)``
(``ref.scaled_error``, ``ref.step_terms``), against a budget derived below from the dtype D and the float32 tables
that diffusers' interface stores. A value over budget raises ``OracleMismatch`` naming the config, the step, the
timestep, the worst element, got / want, the scaled error and a reproduction to paste; success returns a
``Report`` (print it for a table). Command line: ``lcm-ref check module:attr``.

The budget (``table_error_bound``, ``step_bound``, ``forward_bound``), derived to first order in the unit roundoff
u(D) = eps(D)/2 with γ(n) = n·u/(1 − n·u) for n roundings (Higham, ch. 3):

1. *Arithmetic in D.* x0_pred takes 3 roundings (epsilon: q·m, x − ·, ÷√ᾱ; v: two products and a difference);
   clip adds 1 (the range rounded to D), thresholding 3 (÷s, and the float32 up/down cast of half inputs);
   denoised = c_out·x0 + c_skip·x adds 3; prev = c·denoised + d·z adds 3. Each is at most γ(n)·Σ|terms|.
2. *Tables.* diffusers builds β, 1 − β, ᾱ = cumprod in float32 and keeps them in float32 whatever the sample
   dtype (a float64 sample still meets float32-rounded ᾱ and, for tensor timesteps, float32 c_skip / c_out: DESIGN
   §3). So every implementation is allowed float32 tables: u_T = 2⁻²⁴. The relative error of ᾱ_t is at most

       E(t) = Σ_{i≤t} (e_β,i/(1 − β_i) + 2·u_T) + u_T

   with e_β,i the absolute error of the float32 β_i: u_T·β_i for trained betas and squaredcos_cap_v2 (a float64
   formula rounded once; its own float64 error, < 8·2⁻⁵³ absolute, is added), 6·u_T·β_max for ``linear`` (endpoints
   rounded, step (e − s)/(T − 1) rounded twice, s + i·step rounded twice: torch.linspace), 13·u_T·β_max for
   ``scaled_linear`` (the same on √β, then squared: 2·√β_i·6u_T·√β_max + u_T·β_i). Each factor 1 − β_i is rounded
   once (u_T) and each product once (u_T, float accumulation as on CUDA; the CPU kernel accumulates in double and
   rounds each output once, which the final + u_T covers). This is the (t+1)·eps32 growth DESIGN §6 names.
   Zero-SNR (Lin et al. 2023, Alg. 1 in float32) is bounded by ``_zero_snr_bound``: the shared prefix of the
   cumprod error cancels in √ᾱ_t − √ᾱ_{T−1}, only the tail Σ_{t<i<T} and the individual roundings are amplified
   by √ᾱ_{T−1}/(√ᾱ_t − √ᾱ_{T−1}); the ratios ᾱ'_t/ᾱ'_{t−1} telescope in the second cumprod, which adds 3 roundings
   per factor plus u_T·β'/α' for the 1 − (1 − α') round trip.
3. *Coefficients* (relative errors; u_c = u_T, plus u(D) when D is coarser than float32 and the float32
   coefficient is rounded once more to D):
   √ᾱ: E/2 + u_c;  √(1 − ᾱ): (E·ᾱ/(1 − ᾱ) + u_c)/2 + u_c (1 − ᾱ cancels when ᾱ → 1: the amplification ᾱ/(1 − ᾱ));
   c_skip, c_out: 7·u_c (from a 0-d int64 timestep tensor, in float32: u = t·fl(s) 2, u² 2·2 + 1 = 5, r = u² + σ²
   6, c_skip = σ²/r 7; √r 3 + 1 = 4, c_out = u/√r 2 + 4 + 1 = 7); epsilon's x0 coefficients: 1/√ᾱ → ρ(√ᾱ),
   √(1 − ᾱ)/√ᾱ → ρ(√(1 − ᾱ)) + ρ(√ᾱ); v: ρ(√ᾱ), ρ(√(1 − ᾱ)). Each term of the formula may carry its
   coefficient's error: the budget is Σ_k |term_k|·ρ_k + γ(n)·Σ_k |term_k|, per element.
4. *Non-linear steps.* Clipping is 1-Lipschitz, so it passes the x0 bound through. Thresholding: the quantile s
   moves by at most the row's largest x0 error, plus the interpolation position ratio·(N−1) rounded in D (≤ N·u·
   max|x0|) and the lerp (3 roundings); clamp(x0, −s, s)/s then errs by at most (δx0 + δs)/s.
5. *prev* inherits c·(denoised bound) and adds c·Σ|denoised terms|·ρ(√ᾱ_prev) + d·|z|·ρ(√(1 − ᾱ_prev)).
6. *Underflow.* A rounding in D may also lose up to η(D), half the smallest subnormal (2⁻²⁵ in float16, where
   c_skip·x at t ≈ 259 flushes to 0): each result adds η(D) per rounding on its path (10 for denoised, 3 more for
   prev, 3 for the forward functions), and a float32 coefficient c cast to a coarser D gains η(D)/|c| relative
   (ᾱ[T−1] = 3e-8 of a cosine schedule is subnormal in float16). Negligible in float32 and float64.

Every bound is first order; second-order terms are below u_T·E ≤ 2⁻²⁴·1.3e-4 relative, far inside the slack of
the worst-case sums. The bound is worst case: diffusers' largest error/budget ratio in a default check is about
0.3 (``Report`` prints it), while every mutant in ``lcm_ref.mutants`` exceeds it (``tests/test_mutants.py``).
``tests/test_oracle.py`` checks E(t) itself against diffusers' float32 tables (ratio ≤ 0.15).

Exceptions: where the reference raises, the implementation must raise the same class (a subclass is fine; an
``LCMRefError`` counts as ValueError). Under ``profile="strict"`` a ``StrictError`` must come back as a ValueError
whose message names the parameter; refusing a schedule at ``set_timesteps`` that the strict reference refuses only
at the step using the bad timestep (zero-SNR T−1 under epsilon) is accepted: earlier, never later.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pprint
from typing import Callable, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import reference as ref
from . import strategies as lst
from .config import LCMConfig
from .errors import LCMRefError, StrictError
from .errors import quiet as _quiet

__all__ = [
    "DEFAULT_MAX_EXAMPLES", "PARTS", "U_TABLE", "OracleMismatch", "Report", "Case", "NoiseTap",
    "check", "replay", "run_case", "draw_case", "table_error_bound", "step_bound", "forward_bound",
    "load_factory", "configure_parser", "main",
]

#: examples per check(): enough that every mutant in lcm_ref.mutants dies (tests/test_mutants.py), small enough
#: that a check of diffusers takes seconds on one CPU core
DEFAULT_MAX_EXAMPLES = 150
#: what check() compares; the conformance suite runs them one by one
PARTS = ("timesteps", "step", "add_noise", "get_velocity")
#: unit roundoff of the float32 tables diffusers' interface stores (see the module docstring, point 2)
U_TABLE = 2.0 ** -24
_EPS64 = 2.0 ** -52


def _u(dtype) -> float:
    return torch.finfo(_torch_dtype(dtype)).eps / 2


def _eta(dtype) -> float:
    """η(D): half the smallest subnormal of D, the absolute error a rounding may add on underflow."""
    fi = torch.finfo(_torch_dtype(dtype))
    return fi.smallest_normal * fi.eps / 2


def _cast(c, dtype):
    """η(D)/|c|: the relative error of casting a float32 coefficient c to a D coarser than float32 beyond u(D),
    from underflow (0 for c = 0, which casts exactly, and for D at least as fine as float32)."""
    if _u(dtype) <= U_TABLE:
        return 0.0 if np.ndim(c) == 0 else np.zeros(np.shape(c))
    c = np.abs(np.asarray(c, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(c > 0, _eta(dtype) / c, 0.0)
    return float(out) if out.ndim == 0 else out


def _coefficient_roundoff(u):
    """u_c: a float32 coefficient used in dtype D is rounded once more only if D is coarser than float32."""
    return U_TABLE + (u if u > U_TABLE else 0.0)


def _gamma(n, u):
    """γ(n) = n·u/(1 − n·u): the relative error bound of n roundings of unit roundoff u (Higham, Lemma 3.1)."""
    return n * u / (1 - n * u)


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise LCMRefError("dtype", dtype, "a floating torch dtype: float32, float64, float16 or bfloat16")
    return d


# ---------------------------------------------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def table_error_bound(cfg: LCMConfig) -> np.ndarray:
    """E(t): a first-order bound on the relative error of ᾱ_t as diffusers builds it in float32 (docstring, 2)."""
    u = U_TABLE
    base = cfg.replace(rescale_betas_zero_snr=False)
    beta = np.asarray(ref.betas(base))
    if cfg.trained_betas is not None or cfg.beta_schedule not in ("linear", "scaled_linear"):
        e_beta = u * beta + 8 * 2.0 ** -53
    else:
        lo, hi = cfg.beta_start, cfg.beta_end
        e_beta = np.full_like(beta, (6 if cfg.beta_schedule == "linear" else 13) * u * max(abs(lo), abs(hi)))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_alpha = np.where(beta < 1, e_beta / (1 - beta), 0.0)   # β = 1: 1 − β = 0 exactly, ᾱ = 0 from there
    eta = rho_alpha + 2 * u                                       # rounding of 1 − β and of the product
    E = np.cumsum(eta) + u                                        # + the individual rounding of each entry
    if cfg.rescale_betas_zero_snr:
        E = _zero_snr_bound(cfg, base, eta, E)
    E = E / (1 - np.minimum(E, 0.5))                              # close the first-order bound (γ-style)
    E.setflags(write=False)
    return E


def _zero_snr_bound(cfg, base, eta, E0):
    """E(t) after diffusers' float32 ``rescale_zero_terminal_snr`` (docstring, 2), from the pre-rescale bound E0.

    r_t = √ᾱ_t (computed: relative E0/2 + u), D_t = r_t − r_{T−1}: the prefix Σ_{i≤t} η_i is common to both and
    scales D_t; the rest (the tail Σ_{t<i<T} η_i, the individual rounding of A_t and A_{T−1}, two square roots)
    is absolute and divided by D_t. g = r_0/(r_0 − r_{T−1}); ᾱ'_t = (D_t·g)²; α'_t = ᾱ'_t/ᾱ'_{t−1}; β' = 1 − α';
    α'' = 1 − β'; ᾱ'' = cumprod(α''): the ratios telescope, leaving ᾱ'_t's error plus, per factor, the division,
    the round trip (u + u·β'/α') and the product."""
    u = U_TABLE
    r = np.sqrt(np.asarray(ref.alphas_cumprod(base)))
    rT = r[-1]
    tail = np.cumsum(eta[::-1])[::-1] - eta        # Σ_{t<i≤T−1} η_i
    D = r - rT
    with np.errstate(divide="ignore", invalid="ignore"):
        relD = E0 / 2 + (r * u + rT * (tail / 2 + 2 * u)) / D + u
        relg = E0[0] / 2 + u + relD[0] + u
        rel_abar = 2 * (relD + relg + u) + u
        abar = np.asarray(ref.alphas_cumprod(cfg))
        a = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
        nu = np.where(a > 0, 2 * u + u * np.abs(1 - a) / a, 0.0)
        nu[1:] += u                                # the division ᾱ'_t/ᾱ'_{t−1}
        E = rel_abar + np.cumsum(nu + u) + u
    E[-1] = 0.0                                    # ᾱ'[T−1] = 0 exactly: D_{T−1} = r − r = 0, then 0/·, 1 − 1
    return E


def _sqrt_errors(abar, E, u_c):
    """Relative error bounds of √ᾱ and √(1 − ᾱ) from ᾱ's relative error E (docstring, 3); ᾱ = 1 exactly (the
    final_alpha_cumprod of set_alpha_to_one) has d = 0 and no error."""
    abar, E = np.asarray(abar, dtype=np.float64), np.asarray(E, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_sa = E / 2 + u_c
        rho_s1a = np.where(abar < 1, (E * abar / (1 - abar) + u_c) / 2 + u_c, 0.0)
    return rho_sa, rho_s1a


def _table_entry(cfg, t):
    """(ᾱ_t, E(t)) with diffusers' indexing (negative t wraps: quirk 2)."""
    return float(ref.alphas_cumprod(cfg)[t]), float(table_error_bound(cfg)[t])


def step_bound(cfg: LCMConfig, model_output, timestep, sample, noise=None, *, schedule, step_index,
               num_inference_steps=None, dtype=torch.float32):
    """(bound_denoised, bound_prev): per element, the largest |impl − ref| the budget admits for one ``step`` in
    dtype ``dtype`` (docstring, 1–5). Absolute values, float64 arrays shaped like ``sample``."""
    u = _u(dtype)
    u_c = _coefficient_roundoff(u)
    sched = np.asarray(schedule, dtype=np.int64)
    m, x = _f64(model_output), _f64(sample)
    z = None if noise is None else _f64(noise)
    t = int(timestep)
    n = len(sched) if num_inference_steps is None else num_inference_steps
    terms = ref.step_terms(cfg, m, t, x, schedule=sched, noise=noise, step_index=step_index,
                           num_inference_steps=n)
    c_skip, c_out = ref.boundary_scalings(cfg, t)
    p, q = ref.x0_coefficients(cfg, t)
    abar, E = _table_entry(cfg, t)
    rho_sa, rho_s1a = _sqrt_errors(abar, E, u_c)
    rho_sa, rho_s1a = rho_sa + _cast(math.sqrt(abar), dtype), rho_s1a + _cast(math.sqrt(1 - abar), dtype)
    rho_skip, rho_out = 7 * u_c + _cast(c_skip, dtype), 7 * u_c + _cast(c_out, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        if cfg.prediction_type == "sample":
            A, B, rho_p, rho_q = np.zeros_like(m), np.abs(m), 0.0, 0.0
        else:
            A, B = np.abs(p * x), np.abs(q * m)
            rho_p, rho_q = (rho_sa, rho_sa + rho_s1a) if cfg.prediction_type == "epsilon" else (rho_sa, rho_s1a)
        n_x0 = 0 if cfg.prediction_type == "sample" else 3
        err_x0 = A * rho_p + B * rho_q + _gamma(n_x0 + (1 if cfg.clip_sample else 0), u) * (A + B)
        if cfg.thresholding:
            x0 = m if cfg.prediction_type == "sample" else p * x + q * m
            s = ref._threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[1]
            rows = x0.reshape(x0.shape[0], -1)
            axes = tuple(range(1, x0.ndim))
            N = rows.shape[1]
            err_s = (np.max(err_x0, axis=axes, keepdims=True)
                     + _gamma(N + 3, u) * np.max(A + B, axis=axes, keepdims=True) + u * s)
            err_x0 = (err_x0 + err_s) / s + _gamma(3, u) * (A + B) / s
            A, B = A / s, B / s
        bound_den = (abs(c_out) * (err_x0 + rho_out * (A + B)) + c_skip * np.abs(x) * rho_skip
                     + _gamma(3, u) * terms.denoised + 10 * _eta(dtype))
        if step_index == n - 1 or z is None:
            return _finite_or_inf(bound_den), _finite_or_inf(bound_den)
        t_prev = int(sched[step_index + 1]) if step_index + 1 < len(sched) else t
        c, d = ref.noise_coefficients(cfg, t_prev)
        if t_prev >= 0:
            abar_p, E_p = _table_entry(cfg, t_prev)
        else:
            abar_p = ref.final_alpha_cumprod(cfg)
            E_p = 0.0 if cfg.set_alpha_to_one else float(table_error_bound(cfg)[0])
        rho_c, rho_d = _sqrt_errors(abar_p, E_p, u_c)
        rho_c, rho_d = rho_c + _cast(c, dtype), rho_d + _cast(d, dtype)
        bound_prev = (c * bound_den + c * terms.denoised * rho_c + d * np.abs(z) * rho_d
                      + _gamma(3, u) * terms.prev_sample + 3 * _eta(dtype))
    return _finite_or_inf(bound_den), _finite_or_inf(bound_prev)


def forward_bound(cfg: LCMConfig, a, b, timesteps, *, dtype=torch.float32):
    """(terms, bound) for √ᾱ_t·a + √(1−ᾱ_t)·b (``add_noise``: a = x0, b = noise) or √ᾱ_t·a − √(1−ᾱ_t)·b
    (``get_velocity``: a = noise, b = sample). diffusers casts ᾱ to D first: E + u(D) + η(D)/ᾱ."""
    u = _u(dtype)
    u_c = _coefficient_roundoff(u)
    a, b = _f64(a), _f64(b)
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    shape = (-1,) + (1,) * max(a.ndim - 1, 0)
    c = np.asarray(ref.sqrt_alphas_cumprod(cfg))[ts].reshape(shape)
    d = np.asarray(ref.sqrt_one_minus_alphas_cumprod(cfg))[ts].reshape(shape)
    abar = np.asarray(ref.alphas_cumprod(cfg))[ts].reshape(shape)
    E = np.asarray(table_error_bound(cfg))[ts].reshape(shape) + u
    with np.errstate(divide="ignore", invalid="ignore"):
        E = E + np.where(abar > 0, _eta(dtype) / abar, 0.0)
    rho_sa, rho_s1a = _sqrt_errors(abar, E, u_c)
    rho_sa, rho_s1a = rho_sa + _cast(c, dtype), rho_s1a + _cast(d, dtype)
    terms = c * np.abs(a) + d * np.abs(b)
    return terms, c * np.abs(a) * rho_sa + d * np.abs(b) * rho_s1a + _gamma(3, u) * terms + 3 * _eta(dtype)


def _finite_or_inf(bound):
    """A NaN bound (inf·0 where ᾱ = 0 makes a coefficient infinite: quirk 3) admits anything finite-vs-finite;
    such elements are compared by equality of their non-finite values."""
    return np.where(np.isnan(bound), np.inf, bound)


def _f64(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Noise capture
# ---------------------------------------------------------------------------------------------------------------

class NoiseTap:
    """Within ``with NoiseTap() as tap:``, records every tensor that ``torch.randn``, ``torch.randn_like``,
    ``torch.normal`` and ``Tensor.normal_`` return (``tap.draws``). With ``inject=tensor``, a draw with as many
    elements is replaced by that tensor (cast to the draw's dtype and device), after the generator has advanced
    as usual. Not thread-safe: it patches torch for the duration of the block."""

    _TARGETS = ((torch, "randn"), (torch, "randn_like"), (torch, "normal"), (torch.Tensor, "normal_"))

    def __init__(self, inject: Optional[torch.Tensor] = None):
        self.inject, self.draws, self._saved = inject, [], []

    def _swap(self, out):
        if self.inject is not None and out.numel() == self.inject.numel():
            return self.inject.detach().to(dtype=out.dtype, device=out.device).reshape(out.shape)
        return out

    def __enter__(self):
        for owner, name in self._TARGETS:
            orig = getattr(owner, name)
            self._saved.append((owner, name, orig, name in vars(owner)))
            if name == "normal_":
                def wrapper(tensor, *a, _orig=orig, **k):
                    out = _orig(tensor, *a, **k)
                    new = self._swap(out)
                    if new is not out:
                        with torch.no_grad():
                            out.copy_(new)
                    self.draws.append(out.detach().clone())
                    return out
            else:
                def wrapper(*a, _orig=orig, **k):
                    out = self._swap(_orig(*a, **k))
                    self.draws.append(out.detach())
                    return out
            setattr(owner, name, wrapper)
        return self

    def __exit__(self, *exc):
        for owner, name, orig, own in reversed(self._saved):
            if own:
                setattr(owner, name, orig)
            else:
                delattr(owner, name)
        self._saved = []
        return False

    def noise_like(self, sample: torch.Tensor) -> Optional[torch.Tensor]:
        """The draw that is the step's z: the last draw with as many elements as ``sample``, or the last draws
        that together have that many (one generator per batch element, concatenated along dim 0); else None."""
        n = sample.numel()
        for d in reversed(self.draws):
            if d.numel() == n:
                return d.reshape(sample.shape)
        total, parts = 0, []
        for d in reversed(self.draws):
            parts.insert(0, d)
            total += d.numel()
            if total == n:
                return torch.cat([p.reshape((-1,) + tuple(sample.shape[1:])) for p in parts]).reshape(sample.shape)
            if total > n:
                break
        return None


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    """Everything one example needs, as plain data (``to_dict`` is a literal for ``replay``)."""
    config: dict                     # lcm_ref.strategies.build_config spec
    request: dict                    # lcm_ref.strategies.schedule_requests
    sample: lst.TensorRecipe         # x at the first step
    model_output: lst.TensorRecipe   # step i uses seed + i
    generator_seed: int              # the torch.Generator passed to step()
    forward: Optional[dict] = None   # {"x0": recipe, "noise": recipe, "timesteps": [...]}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sample"], d["model_output"] = self.sample._asdict(), self.model_output._asdict()
        if self.forward:
            d["forward"] = dict(self.forward, x0=self.forward["x0"]._asdict(),
                                noise=self.forward["noise"]._asdict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        rec = lambda r: r if isinstance(r, lst.TensorRecipe) else lst.TensorRecipe(**dict(r, shape=tuple(r["shape"])))
        fw = d.get("forward")
        if fw:
            fw = dict(fw, x0=rec(fw["x0"]), noise=rec(fw["noise"]))
        return cls(dict(d["config"]), dict(d["request"]), rec(d["sample"]), rec(d["model_output"]),
                   int(d["generator_seed"]), fw)


#: Explicit examples run before the hypothesis draws (as hypothesis' @example): the configurations and calls of
#: DESIGN §3 that real pipelines make, one feature each, so that every check covers them whatever hypothesis draws.
CANONICAL = (
    ("LCM-SD/SDXL config (inert steps_offset, set_alpha_to_one, spacing), 4 steps: [999, 759, 499, 259]",
     dict(steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading"), dict(num_inference_steps=4), {}),
    ("Marigold-LCM: v_prediction, 4 steps, timestep_scaling 0.1 (c_skip, c_out far from 0 and 1)",
     dict(prediction_type="v_prediction", timestep_scaling=0.1), dict(num_inference_steps=4), {}),
    ("SSD-1B LCM: original_inference_steps 4, 2 steps",
     dict(original_inference_steps=4), dict(num_inference_steps=2), {}),
    ("img2img strength 0.5, 4 steps: [499, 379, 259, 139]",
     {}, dict(num_inference_steps=4, strength=0.5), {}),
    ("strength at the int/round boundary: 50 x 0.51 = 25.5 -> 25 grid points",
     {}, dict(num_inference_steps=3, strength=0.51), {}),
    ("num_inference_steps above int(orig x strength): ValueError",
     {}, dict(num_inference_steps=30, strength=0.5), {}),
    ("custom timesteps ending at 0: the step before re-noises with ᾱ[0]",
     {}, dict(timesteps=[999, 499, 259, 0]), {}),
    ("sample prediction, clip_sample_range 2.5, model outputs beyond it",
     dict(prediction_type="sample", clip_sample=True, clip_sample_range=2.5), dict(num_inference_steps=4),
     dict(scale=4.0)),
    ("dynamic thresholding (ratio 0.995, sample_max_value 10), epsilon",
     dict(thresholding=True, sample_max_value=10.0), dict(num_inference_steps=4), dict(shape=(2, 3, 4, 4))),
    ("zero-SNR with v_prediction, 4 steps from T-1 (ᾱ = 0)",
     dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), dict(num_inference_steps=4), {}),
    ("squaredcos_cap_v2, orig 30 (first timestep 989), 6 steps from index 2 by set_begin_index, int timesteps",
     dict(beta_schedule="squaredcos_cap_v2", original_inference_steps=30),
     dict(num_inference_steps=6, start=2, begin_index=True, timestep_as="int"), {}),
    ("trained_betas, 8 steps, timestep_scaling 1",
     dict(trained_betas={"seed": 0}, timestep_scaling=1.0), dict(num_inference_steps=8), {}),
    ("linear, T = 100, orig 100 (k = 1: the grid reaches 0), 5 steps",
     dict(num_train_timesteps=100, beta_schedule="linear", original_inference_steps=100),
     dict(num_inference_steps=5), {}),
)


def canonical_cases(dtype=torch.float32):
    """The ``CANONICAL`` examples as (comment, Case) pairs, tensors in ``dtype``."""
    dt = str(_torch_dtype(dtype)).replace("torch.", "")
    out = []
    for k, (comment, config, request, extra) in enumerate(CANONICAL):
        req = dict(num_inference_steps=None, original_inference_steps=None, timesteps=None, strength=None,
                   start=0, begin_index=False, timestep_as="tensor", extra_steps=0, kind="canonical")
        req.update(request)
        shape = extra.get("shape", (1, 4, 4, 4))
        T = config.get("num_train_timesteps", 1000)
        fw = dict(x0=lst.TensorRecipe(shape, dt, 100 + k, 1.0), noise=lst.TensorRecipe(shape, dt, 200 + k, 1.0),
                  timesteps=[(0, T // 2, T - 1)[i % 3] for i in range(shape[0])])
        out.append((comment, Case(dict(config), req, lst.TensorRecipe(shape, dt, k, 1.0),
                                  lst.TensorRecipe(shape, dt, 50 + k, extra.get("scale", 1.0)), k, fw)))
    return out


def draw_case(data, *, dtype=torch.float32, profile="diffusers", quirks=None, errors=True) -> Case:
    """Draw one ``Case`` from hypothesis ``st.data()``, with labelled draws."""
    dt = str(_torch_dtype(dtype)).replace("torch.", "")
    spec = data.draw(lst.config_specs(profile=profile, quirks=quirks), label="config")
    cfg = lst.build_config(spec)
    req = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=quirks, errors=errors), label="schedule")
    # diffusers' thresholding needs >= 3 dims: with (batch, channels) np.prod([]) = 1.0 is a float and reshape
    # raises TypeError (the reference thresholds any >= 2-dim sample)
    shape = data.draw(lst.shapes(min_dims=3 if cfg.thresholding else 1), label="shape")
    sample = data.draw(lst.tensor_recipes(shape, dt), label="sample")
    model_output = data.draw(lst.tensor_recipes(shape, dt), label="model_output")
    gen_seed = data.draw(st.integers(0, 2 ** 31 - 1), label="generator seed")
    fw = dict(x0=data.draw(lst.tensor_recipes(shape, dt), label="add_noise x0"),
              noise=data.draw(lst.tensor_recipes(shape, dt, scales=st.just(1.0)), label="add_noise noise"),
              timesteps=data.draw(lst.timestep_batches(cfg, shape[0]), label="forward timesteps"))
    return Case(spec, req, sample, model_output, gen_seed, fw)


# ---------------------------------------------------------------------------------------------------------------
# Report and mismatch
# ---------------------------------------------------------------------------------------------------------------

class OracleMismatch(AssertionError):
    """The implementation differs from the reference beyond the budget, or raises where the reference does not
    (or the other way round). ``str()`` names the config, step, timestep, worst element and a reproduction."""

    def __init__(self, message, *, quantity, case=None, step_index=None, timestep=None, index=None, got=None,
                 want=None, scaled=None, budget=None, repro=None):
        super().__init__(message)
        self.quantity, self.case, self.step_index, self.timestep = quantity, case, step_index, timestep
        self.index, self.got, self.want, self.scaled, self.budget, self.repro = index, got, want, scaled, budget, repro


@dataclasses.dataclass
class _Row:
    compared: int = 0
    max_scaled: float = 0.0
    where_scaled: str = ""
    max_ratio: float = 0.0
    budget_at: float = 0.0
    where_ratio: str = ""
    max_rel: float = 0.0


class Report:
    """What a successful ``check`` saw: per quantity, how many values were compared, the largest scaled error
    (units of eps(dtype)) and where, and the largest error/budget ratio (< 1 everywhere) and where."""

    QUANTITIES = ("timesteps", "exceptions", "denoised", "prev_sample", "add_noise", "get_velocity")

    def __init__(self, impl="", dtype=torch.float32, device="cpu", profile="diffusers"):
        self.impl, self.dtype, self.device, self.profile = impl, _torch_dtype(dtype), str(device), profile
        self.rows = {q: _Row() for q in self.QUANTITIES}
        self.examples = 0
        self.canonical = 0
        self.steps = 0

    def count(self, quantity, n=1):
        self.rows[quantity].compared += n

    def add(self, quantity, scaled, ratio, budget, where, rel=None):
        """Record one comparison: arrays of scaled error and error/budget ratio, the budget (scaled), a function
        idx -> description of where, and (diagnostic only, DESIGN §6) the relative error."""
        row = self.rows[quantity]
        row.compared += int(np.size(scaled))
        if np.size(scaled) == 0:
            return
        if rel is not None and np.size(rel):
            row.max_rel = max(row.max_rel, float(np.max(rel)))
        i = np.unravel_index(int(np.argmax(scaled)), np.shape(scaled))
        if float(scaled[i]) > row.max_scaled:
            row.max_scaled, row.where_scaled = float(scaled[i]), where(i)
        j = np.unravel_index(int(np.argmax(ratio)), np.shape(ratio))
        if float(ratio[j]) > row.max_ratio:
            row.max_ratio, row.budget_at, row.where_ratio = float(ratio[j]), float(budget[j]), where(j)

    def __str__(self):
        dt = str(self.dtype).replace("torch.", "")
        lines = [f"lcm_ref oracle: {self.impl or 'implementation'} vs lcm_ref.reference "
                 f"(profile={self.profile}, dtype={dt}, device={self.device})",
                 f"{self.canonical} canonical + {self.examples} hypothesis examples, {self.steps} steps; scaled error = |impl - ref| / (eps({dt}) * "
                 "sum|terms|); budget derived in lcm_ref.oracle (float32 tables allowed)",
                 "",
                 "| quantity | compared | max scaled error | where | max error/budget | budget there | where "
                 "| max rel. error |",
                 "|---|---:|---:|---|---:|---:|---|---:|"]
        for q, r in self.rows.items():
            if q in ("timesteps", "exceptions"):
                lines.append(f"| {q} | {r.compared} | exact | | | | | |")
            else:
                lines.append(f"| {q} | {r.compared} | {r.max_scaled:.3g} | {r.where_scaled} | {r.max_ratio:.3g} | "
                             f"{r.budget_at:.3g} | {r.where_ratio} | {r.max_rel:.3g} |")
        return "\n".join(lines)

    def ok(self) -> bool:
        return all(r.max_ratio <= 1 for r in self.rows.values())


def _impl_path(factory):
    if isinstance(factory, str):
        return factory
    mod, qual = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if mod and qual and "<" not in qual:
        try:
            obj = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
            if obj is factory:
                return f"{mod}:{qual}"
        except Exception:
            pass
    return None


def load_factory(path: str):
    """``module:attr`` (or ``module.attr``) -> the object; a clear LCMRefError if it cannot be imported."""
    if ":" in path:
        mod, _, attr = path.partition(":")
    else:
        mod, _, attr = path.rpartition(".")
    if not mod or not attr:
        raise LCMRefError("impl", path, "module:attr, e.g. diffusers:LCMScheduler")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise LCMRefError("impl", path, "an importable module:attr", detail=str(e)) from None
    return obj


class _Ctx:
    """The per-case state that messages need."""

    def __init__(self, case, cfg, impl, dtype, device, profile, report, example):
        self.case, self.cfg, self.impl, self.dtype, self.device = case, cfg, impl, dtype, device
        self.profile, self.report, self.example, self.schedule = profile, report, example, None

    def repro(self):
        impl = repr(self.impl) if self.impl else "factory  # your scheduler class or factory"
        dt = str(self.dtype).replace("torch.", "")
        case = pprint.pformat(self.case.to_dict(), width=100, sort_dicts=False)
        case = "\n".join("    " + line for line in case.splitlines())
        return (f"import lcm_ref.oracle\nlcm_ref.oracle.replay(\n    {impl},\n{case},\n"
                f"    dtype={dt!r}, device={self.device!r}, profile={self.profile!r})")

    def header(self, quantity, what):
        req = {k: v for k, v in self.case.request.items()
               if k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength") and v is not None}
        args = ", ".join(f"{k}={v!r}" for k, v in req.items())
        sched = "" if self.schedule is None else f" -> {self.schedule.tolist()}"
        dt = str(self.dtype).replace("torch.", "")
        return (f"{quantity}: {what}\n"
                f"  implementation: {self.impl or 'factory'} (profile={self.profile}, dtype={dt}, "
                f"device={self.device})\n"
                f"  config:   {self.cfg!r}\n"
                f"  schedule: set_timesteps({args}){sched}")

    def fail(self, quantity, what, detail="", **kw):
        msg = self.header(quantity, what) + (("\n" + detail) if detail else "")
        repro = self.repro()
        raise OracleMismatch(msg + "\nreproduce:\n" + "\n".join("    " + s for s in repro.splitlines()),
                             quantity=quantity, case=self.case, repro=repro, **kw)

    def where(self, step=None, t=None):
        def describe(idx):
            s = self.example if isinstance(self.example, str) else f"ex {self.example}"
            if step is not None:
                s += f" step {step} t={t}"
            return s + f" {tuple(int(i) for i in idx)}"
        return describe


def _call(fn):
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - the exception itself is what is compared
        return None, e


def _exceptions_match(want: BaseException, got: BaseException) -> bool:
    """Same class where the reference raises (a subclass is fine). lcm_ref's own errors are ValueErrors to an
    outside implementation; a StrictError must come back as a ValueError whose message names the parameter."""
    if isinstance(want, StrictError):
        param = str(want.parameter).split(".")[0].split("[")[0]
        return isinstance(got, ValueError) and param.lower() in str(got).lower()
    if isinstance(want, LCMRefError):
        return isinstance(got, ValueError)
    return isinstance(got, type(want))


def _compare_exceptions(ctx, what, want, got, **kw):
    if want is None and got is None:
        return False
    if want is not None and got is not None and _exceptions_match(want, got):
        ctx.report.count("exceptions")
        return True
    w = "returns normally" if want is None else f"raises {type(want).__name__}: {want}"
    g = "returns normally" if got is None else f"raises {type(got).__name__}: {got}"
    need = ""
    if isinstance(want, StrictError):
        need = f" (expected: a ValueError whose message names {want.parameter!r})"
    ctx.fail("exceptions", f"{what}: the reference {w}, the implementation {g}{need}", **kw)


def _compare_values(ctx, quantity, got, want, terms, bound, *, step=None, t=None):
    """Element-wise check |got − want| <= bound (non-finite values must be equal); record into the report."""
    g, w = _f64(got), _f64(want)
    if g.shape != w.shape:
        ctx.fail(quantity, f"shape {tuple(g.shape)}, want {tuple(w.shape)}", step_index=step, timestep=t)
    eps = _u(ctx.dtype) * 2
    scaled = ref.scaled_error(g, w, terms, ctx.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(g - w)
        same = (g == w) | (np.isnan(g) & np.isnan(w))
        ok = same | (np.isfinite(g) & np.isfinite(w) & (diff <= bound))
        budget = np.where(same, 0.0, bound / (eps * terms))
        ratio = np.where(same, 0.0, diff / bound)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    if not ok.all():
        bad = ~ok
        score = np.where(bad, np.where(np.isfinite(ratio), ratio, np.inf), -1.0)
        i = np.unravel_index(int(np.argmax(score)), score.shape)
        idx = tuple(int(k) for k in i)
        detail = (f"  step:     index {step}, timestep {t} (passed as {ctx.case.request.get('timestep_as')})\n"
                  if step is not None else "")
        detail += (f"  worst element {idx}: got {float(g[i])!r} ({float(g[i]).hex()}), want {float(w[i])!r} "
                   f"({float(w[i]).hex()})\n"
                   f"  scaled error {float(scaled[i]):.4g} eps({str(ctx.dtype).replace('torch.', '')}), "
                   f"budget {float(budget[i]):.4g} ({float(ratio[i]):.3g}x over); "
                   f"{int(bad.sum())} of {bad.size} elements over budget")
        ctx.fail(quantity, "differs from the reference beyond the budget", detail, step_index=step, timestep=t,
                 index=idx, got=float(g[i]), want=float(w[i]), scaled=float(scaled[i]), budget=float(budget[i]))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(same | (w == 0), 0.0, diff / np.abs(w))
    ctx.report.add(quantity, np.where(np.isfinite(scaled), scaled, 0.0), np.where(np.isfinite(ratio), ratio, 0.0),
                   np.where(np.isfinite(budget), budget, 0.0), ctx.where(step, t),
                   rel=np.where(np.isfinite(rel), rel, 0.0))


def _check_like(ctx, quantity, out, like, step=None, t=None):
    if not isinstance(out, torch.Tensor):
        ctx.fail(quantity, f"is a {type(out).__name__}, want a torch.Tensor", step_index=step, timestep=t)
    if out.dtype != like.dtype or tuple(out.shape) != tuple(like.shape):
        ctx.fail(quantity, f"has dtype {out.dtype} and shape {tuple(out.shape)}, want those of the sample: "
                 f"{like.dtype}, {tuple(like.shape)}", step_index=step, timestep=t)


def _outputs(out):
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return getattr(out, "prev_sample", None), getattr(out, "denoised", None)


def run_case(factory, case: Case, *, dtype=torch.float32, device="cpu", profile="diffusers", parts=PARTS,
             report: Optional[Report] = None, impl: Optional[str] = None, example: int = 0) -> Report:
    """Run one ``Case`` against the reference: raises ``OracleMismatch``, or records into ``report``."""
    dtype = _torch_dtype(dtype)
    report = report if report is not None else Report(impl or _impl_path(factory) or "", dtype, device, profile)
    cfg = lst.build_config(case.config)
    ctx = _Ctx(case, cfg, impl if impl is not None else _impl_path(factory), dtype, device, profile, report, example)
    with _quiet():
        sched, exc = _call(lambda: factory(**cfg.to_dict()))
        if exc is not None:
            ctx.fail("exceptions", f"the constructor raises {type(exc).__name__}: {exc} for a valid config")
        if "timesteps" in parts or "step" in parts:
            _run_schedule(ctx, sched, parts)
        if case.forward and ("add_noise" in parts or "get_velocity" in parts):
            _run_forward(ctx, sched, parts)
    return report


def _run_schedule(ctx, sched, parts):
    req, cfg = ctx.case.request, ctx.cfg
    kw = {k: req[k] for k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength")
          if req.get(k) is not None}
    want, w_exc = _call(lambda: ref.set_timesteps(
        cfg, req.get("num_inference_steps"), original_inference_steps=req.get("original_inference_steps"),
        timesteps=req.get("timesteps"), strength=1.0 if req.get("strength") is None else req["strength"],
        profile=ctx.profile))
    _, g_exc = _call(lambda: sched.set_timesteps(device=ctx.device, **kw))
    if ctx.profile == "strict" and w_exc is None and g_exc is not None:
        later = _strict_error_later(ctx, want)
        if later is not None and _exceptions_match(later, g_exc):
            ctx.report.count("exceptions")   # refused early: allowed, the reference refuses later in this run
            return
    if _compare_exceptions(ctx, "set_timesteps", w_exc, g_exc):
        return
    ctx.schedule = want.timesteps
    got = getattr(sched, "timesteps", None)
    got = None if got is None else (got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got))
    if got is None or got.dtype.kind not in "iu" or got.shape != want.timesteps.shape \
            or not np.array_equal(got, want.timesteps):
        ctx.fail("timesteps", f"scheduler.timesteps = {None if got is None else got.tolist()} "
                 f"(dtype {None if got is None else got.dtype}), want {want.timesteps.tolist()} (int64)")
    ctx.report.count("timesteps")
    if "step" in parts:
        _run_steps(ctx, sched, want)


def _strict_error_later(ctx, want):
    """The StrictError the strict reference raises for a step at any index of this schedule (the case's inputs,
    zero noise), or None. A strict implementation may refuse at set_timesteps a schedule that the reference
    refuses only at the step that uses the bad timestep (a zero-SNR T−1 under epsilon prediction): earlier than
    the reference, for the same parameter, is allowed; later or never is not."""
    req, cfg, case = ctx.case.request, ctx.cfg, ctx.case
    ts, x = want.timesteps, case.sample.make()
    for i in range(len(ts) + int(req.get("extra_steps") or 0)):
        t = int(ts[min(i, len(ts) - 1)])
        try:
            ref.step(cfg, case.model_output.make(seed_offset=i), t, x, schedule=ts, noise=np.zeros(tuple(x.shape)),
                     step_index=i, num_inference_steps=want.num_inference_steps, profile="strict")
        except StrictError as e:
            return e
        except Exception:
            return None
    return None


def _run_steps(ctx, sched, want):
    from diffusers.utils.torch_utils import randn_tensor

    req, cfg, case, device = ctx.case.request, ctx.cfg, ctx.case, ctx.device
    ts, n_eff = want.timesteps, want.num_inference_steps
    start = int(req.get("start") or 0)
    if req.get("begin_index"):
        sched.set_begin_index(start)
        idx = start
    else:
        idx = None
    x = case.sample.make(device)
    gen = torch.Generator(device=device).manual_seed(case.generator_seed)
    n_calls = len(ts) - start + int(req.get("extra_steps") or 0)
    for k in range(n_calls):
        pos = min(start + k, len(ts) - 1)
        t = int(ts[pos])
        t_impl = sched.timesteps[pos] if req.get("timestep_as", "tensor") == "tensor" else t
        m = case.model_output.make(device, seed_offset=start + k)
        state = gen.get_state()
        with NoiseTap() as tap:
            out, g_exc = _call(lambda: sched.step(m, t_impl, x, generator=gen))
        z = tap.noise_like(x)
        if z is None:
            replay_gen = torch.Generator(device=device)
            replay_gen.set_state(state)
            z = randn_tensor(tuple(x.shape), generator=replay_gen, device=x.device, dtype=x.dtype)
        # step_index None: the reference finds it from the timestep as diffusers' first call does
        r, w_exc = _call(lambda: ref.step(cfg, m, t, x, schedule=ts, noise=z, step_index=idx,
                                          num_inference_steps=n_eff, profile=ctx.profile))
        if _compare_exceptions(ctx, f"step (index {idx}, timestep {t})", w_exc, g_exc, step_index=idx, timestep=t):
            return
        if idx is None:
            idx = ref._index_for_timestep(ts, t)
        prev, den = _outputs(out)
        for name, val in (("prev_sample", prev), ("denoised", den)):
            _check_like(ctx, name, val, x, idx, t)
        bound_den, bound_prev = step_bound(cfg, m, t, x, z, schedule=ts, step_index=idx, num_inference_steps=n_eff,
                                           dtype=ctx.dtype)
        terms = ref.step_terms(cfg, m, t, x, schedule=ts, noise=z, step_index=idx, num_inference_steps=n_eff)
        _compare_values(ctx, "denoised", den, r.denoised, terms.denoised, bound_den, step=idx, t=t)
        _compare_values(ctx, "prev_sample", prev, r.prev_sample, terms.prev_sample, bound_prev, step=idx, t=t)
        ctx.report.steps += 1
        x = prev
        idx += 1


def _run_forward(ctx, sched, parts):
    fw, cfg, device = ctx.case.forward, ctx.cfg, ctx.device
    x0, noise = fw["x0"].make(device), fw["noise"].make(device)
    tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=device)
    for name, a, b in (("add_noise", x0, noise), ("get_velocity", noise, x0)):
        if name not in parts:
            continue
        if name == "add_noise":
            want, w_exc = _call(lambda: ref.add_noise(cfg, x0, noise, fw["timesteps"]))
            got, g_exc = _call(lambda: sched.add_noise(x0, noise, tt))
        else:   # get_velocity(sample=x0, noise, t) = √ᾱ·noise − √(1−ᾱ)·x0
            want, w_exc = _call(lambda: ref.get_velocity(cfg, x0, noise, fw["timesteps"]))
            got, g_exc = _call(lambda: sched.get_velocity(x0, noise, tt))
        if _compare_exceptions(ctx, name, w_exc, g_exc):
            continue
        _check_like(ctx, name, got, x0)
        terms, bound = forward_bound(cfg, a, b, fw["timesteps"], dtype=ctx.dtype)
        _compare_values(ctx, name, got, want, terms, bound)


# ---------------------------------------------------------------------------------------------------------------
# check / replay
# ---------------------------------------------------------------------------------------------------------------

def check(factory: Callable, *, dtype=torch.float32, device="cpu", max_examples: int = DEFAULT_MAX_EXAMPLES,
          profile: str = "diffusers", quirks: Optional[bool] = None, errors: bool = True, parts=PARTS,
          shrink: bool = True, explicit: bool = True, impl: Optional[str] = None) -> Report:
    """Check ``factory`` (``factory(**LCMConfig.to_dict())`` -> a scheduler with diffusers' LCMScheduler
    interface) against ``lcm_ref.reference`` on ``max_examples`` hypothesis examples (derandomized: a rerun draws
    the same examples). Returns a ``Report``; raises ``OracleMismatch`` on the first wrong answer (shrunk to a
    small example unless ``shrink=False``).

    ``profile="strict"`` expects ValueErrors naming the parameter for diffusers' quirk inputs (DESIGN §3);
    ``quirks`` (default: True for strict) adds those inputs to the draws; ``errors`` adds requests diffusers
    rejects; ``parts`` selects among ``PARTS``; ``explicit`` runs the ``CANONICAL`` examples first."""
    dtype = _torch_dtype(dtype)
    if profile not in ref.PROFILES:
        raise LCMRefError("profile", profile, f"one of {ref.PROFILES}")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise LCMRefError("parts", bad, f"a subset of {PARTS}")
    if not (isinstance(max_examples, int) and max_examples >= 1):
        raise LCMRefError("max_examples", max_examples, "an integer >= 1")
    name = impl if impl is not None else _impl_path(factory)
    report = Report(name or "", dtype, device, profile)
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if shrink else ())
    if explicit:
        for k, (comment, case) in enumerate(canonical_cases(dtype)):
            try:
                run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts,
                         report=report, impl=name, example=f"canonical {k}")
                report.canonical += 1
            except OracleMismatch as e:
                e.examples = f"canonical {k}"
                e.args = (f"[canonical example {k}: {comment}]\n" + e.args[0],)
                raise

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=phases, report_multiple_bugs=False)
    @given(st.data())
    def run(data):
        report.examples += 1
        case = draw_case(data, dtype=dtype, profile=profile, quirks=quirks, errors=errors)
        run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts, report=report,
                 impl=name, example=report.examples)

    try:
        run()
    except OracleMismatch as e:
        e.examples = report.examples
        raise
    return report


def replay(factory, case, *, dtype="float32", device="cpu", profile="diffusers", parts=PARTS) -> Report:
    """Rerun one case (a ``Case`` or its ``to_dict()``, as printed in an OracleMismatch); ``factory`` may be a
    ``"module:attr"`` string."""
    impl = factory if isinstance(factory, str) else None
    if isinstance(factory, str):
        factory = load_factory(factory)
    case = case if isinstance(case, Case) else Case.from_dict(case)
    return run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts, impl=impl)


# ---------------------------------------------------------------------------------------------------------------
# lcm-ref check
# ---------------------------------------------------------------------------------------------------------------

def configure_parser(parser):
    parser.add_argument("impl", help="the scheduler class or factory, as module:attr (e.g. diffusers:LCMScheduler)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                        help="dtype of the samples and model outputs (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                        help=f"hypothesis examples (default {DEFAULT_MAX_EXAMPLES})")
    parser.add_argument("--profile", default="diffusers", choices=list(ref.PROFILES),
                        help="diffusers (default) or strict (quirk inputs must raise ValueError)")
    parser.add_argument("--quirks", action="store_true", help="also draw diffusers' quirk inputs (DESIGN §3)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failing example unshrunk")


def main(args) -> int:
    try:
        factory = load_factory(args.impl)
        report = check(factory, dtype=args.dtype, device=args.device, max_examples=args.examples,
                       profile=args.profile, quirks=True if args.quirks else None,
                       parts=tuple(p for p in args.parts.split(",") if p), shrink=not args.no_shrink,
                       impl=args.impl)
    except LCMRefError as e:
        print(f"lcm-ref check: {e}")
        return 2
    except OracleMismatch as e:
        print(f"MISMATCH {e}")
        return 1
    print(report)
    return 0
