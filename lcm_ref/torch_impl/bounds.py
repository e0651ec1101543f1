"""How far ``TorchLCM`` (and the drop-in built on it) may be from ``lcm_ref.reference``: the derived bounds, and the
check that applies them.

Scaled error = |impl − ref| / (eps(dtype)·Σ|terms|) (docs/design.md §8.1), with Σ|terms| from
``reference.step_terms``; u = eps/2 is the unit roundoff. Each bound below is first order: one u per rounded
coefficient, product and sum on the terms it touches (an FMA only removes roundings, so the bounds hold with or
without contraction). The engine's operation order is described in ``lcm_ref.torch_impl.engine``'s docstring.

- float32, linear step: denoised = fl(fl(a·x) + fl(b·m)) with a, b rounded once: 3u on each term → 1.5.
  prev = fl(fl(fl(ca·x) + fl(cb·m)) + fl(d·z)): 4u on the ca, cb terms (coefficient, product, two sums), 3u on d·z
  → 2.0.
- float16 / bfloat16, linear: the same float32 arithmetic (r = eps32/eps(dtype) of it: 1.5r, 2r) plus one rounding
  of the result to the dtype, ≤ u(dtype)·|result| ≤ 0.5·eps(dtype)·Σ → 0.5 + 1.5r and 0.5 + 2r.
- float64, linear: the engine and the reference both carry first-order error against exact arithmetic, so the
  bound is the sum. Engine: 1.5 (denoised); prev 3.0 (ca = fl(c·a) of two rounded factors: 3u, so 6u on the ca,
  cb terms, 3u on d·z). Reference (its docstring, docs/design.md §8.2): 1.5 and 3.0. → 3.0 and 6.0.
- clip / threshold (computed in float64, rounded once to the dtype). Both sides form x0 = p·x + q·m identically
  (the same correctly rounded p, q; two products and a sum in eager float64), so x0's error is shared and cancels.
  Float64 engine against the reference: clip: denoised 1.5 + 1.5; prev engine c·1.5 + 1.5 = 3, reference's
  chained cc_out·x0 + cc_skip·x + d·z 2 (4u) → 3.0 and 5.0. Threshold adds the divisor s: the engine's
  torch.lerp (w rounded, a difference, a product, a sum: 4u) and the division (u), against the reference's
  correctly rounded s: denoised engine 4 (8u on the c_out·x0/s term) + reference 2.5 (5u) = 6.5; prev engine
  c·4 + 1.5 = 5.5, reference 3 → 8.5. Narrower dtypes: the float64 value is within (8.5 + 8.5)·eps64 of the
  reference's, then rounded once: 0.5 + 17·eps64/eps(dtype).
- add_noise / get_velocity: two terms, each with a rounded √ coefficient, a product and a sum: 3u → 1.5 in
  float32; 0.5 + 1.5r narrower (computed in float32, rounded once); float64 1.5 + the reference's 1.5 = 3.0.
- Underflow: a result in the dtype's subnormal range carries absolute error ≤ u·tiny (tiny = smallest normal), so
  tiny is added to Σ|terms|. Overflow (|ref| ≥ the dtype's max, float16 only in practice): the result must be ±inf
  or ±max with the reference's sign.
- SLACK: the neglected second-order terms (≤ 10u² per term, i.e. 10u relative to the bound) and, for the narrow
  dtypes, the reference's own float64 error (≤ 4·eps64/eps32 = 2⁻²⁷ of a unit): below 2⁻²⁰ relative.

Measured maxima (CPU, torch 2.13; denoised / prev, the largest value ``check_scaled`` returned): the hypothesis
examples of tests/test_torch_impl.py float32 0.84 / 1.19, float16 0.48 / 0.49, bfloat16 0.47 / 0.47, float64
0.89 / 1.12; inside the pipelines (tests/test_pipeline.py, 1024 elements a step) float32 1.25 / 1.52. diffusers'
float32 LCMScheduler in the same units: 5–13, 57 for squaredcos_cap_v2 (tests/test_torch_dropin.py's docstring).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError
from ..numerics import eps, to_f64, torch_dtype

__all__ = ["SLACK", "STEP_KINDS", "step_kind", "step_bounds", "forward_bound", "check_scaled"]

#: relative allowance for what the first-order bounds neglect (see the module docstring)
SLACK = 2.0 ** -20
#: the kinds of step with their own bounds: affine, clip_sample, dynamic thresholding
STEP_KINDS = ("linear", "clip", "threshold")


def step_kind(cfg: LCMConfig) -> str:
    """The kind of step ``cfg`` configures: "threshold" (thresholding wins over clip_sample, as in diffusers),
    "clip" or "linear"."""
    return "threshold" if cfg.thresholding else "clip" if cfg.clip_sample else "linear"


def _ratio(dtype, wide):
    """eps(wide)/eps(dtype): a wider format's error in units of ``dtype``'s eps."""
    return eps(wide) / eps(dtype)


def step_bounds(dtype, kind: str = "linear") -> tuple:
    """(denoised, prev): the bounds on a step's scaled error against the reference for samples of ``dtype`` (a
    torch dtype or its name) and a step of ``kind`` (one of STEP_KINDS; ``step_kind(cfg)`` gives it)."""
    if kind not in STEP_KINDS:
        raise LCMRefError("kind", kind, f"one of {STEP_KINDS}")
    name = str(torch_dtype(dtype)).replace("torch.", "")
    if kind != "linear":
        if name == "float64":
            return (6.5, 8.5) if kind == "threshold" else (3.0, 5.0)
        narrow = 0.5 + 17 * _ratio(dtype, "float64")
        return narrow, narrow
    if name == "float32":
        return 1.5, 2.0
    if name == "float64":
        return 3.0, 6.0
    r = _ratio(dtype, "float32")
    return 0.5 + 1.5 * r, 0.5 + 2 * r


def forward_bound(dtype) -> float:
    """The bound on the scaled error of ``add_noise`` and ``get_velocity`` for samples of ``dtype``."""
    name = str(torch_dtype(dtype)).replace("torch.", "")
    return {"float32": 1.5, "float64": 3.0}.get(name, 0.5 + 1.5 * _ratio(dtype, "float32"))


def check_scaled(got, want, terms, dtype, bound, what: str = "") -> float:
    """Raise AssertionError unless ``got`` (a tensor or array in ``dtype``) is within ``bound`` (times 1 + SLACK) of
    the reference values ``want`` in scaled error, with Σ|terms| ``terms``; underflow and overflow as the module
    docstring says. Returns the largest scaled error of the finite-range elements."""
    dtype = torch_dtype(dtype)
    got = to_f64(got, "got")
    want, terms = to_f64(want, "want"), to_f64(terms, "terms")
    info = torch.finfo(dtype)
    big = np.abs(want) >= info.max
    if not np.all((np.sign(got[big]) == np.sign(want[big])) & (np.abs(got[big]) >= info.max)):
        raise AssertionError(f"{what}: overflow: an element the reference puts beyond ±{info.max} is not ±max or "
                             f"±inf of its sign ({dtype})")
    err = ref.scaled_error(got, want, terms + info.tiny, dtype)[~big]
    worst = float(err.max()) if err.size else 0.0
    if not worst <= bound * (1 + SLACK):
        raise AssertionError(f"{what}: max scaled error {worst:.3f} > {bound} ({dtype})")
    return worst
