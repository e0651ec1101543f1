"""The budgets the golden vectors carry (docs/design.md §10): the oracle's acceptance rule turned into one number per
element and tier, so that a port in any language judges a value by

    pass  ⇔  budget is inf,  or got == want (NaN == NaN),  or |got − want| ≤ budget  (evaluated in float64)

and reaches the oracle's verdict (``compare.compare_values``) for every value of its dtype.

The oracle accepts got ∈ [round_D(want − bound), round_D(want + bound)] ∪ {|got − want| ≤ bound}, with ``bound`` from
``lcm_ref.oracle.budget`` (``step_bound``, ``forward_bound``, the table bounds). For the D values this is an interval
[A_lo, A_hi]. A symmetric budget B admits exactly the D values of that interval when
fl(A_hi − want) ≤ B < fl(next_D(A_hi) − want) and fl(want − A_lo) ≤ B < fl(want − prev_D(A_lo)) (fl: the float64
subtraction a port evaluates; it is monotonic). ``file_budget`` finds A_lo and A_hi by asking ``compare_values``
about the D values around want ± bound, and writes the shortest float64 in that window (a few hex digits). Where the
window is empty because the two ends lie in binades of different spacing, B is the wider accepted half-width: every
value the oracle accepts passes, and at most one more D value next to the narrow end (tests/test_vectors_judge.py
counts them: under 2 % of the elements). Where an end is not finite (an overflow in float16) the tier is not
offered for that output.
"""

from __future__ import annotations

import numpy as np

from ..budget import (alphas_cumprod_bound, betas_bound, forward_bound, scalings_bound, sqrt_tables_bound,
                      step_bound)
from ..compare import compare_values
from .format import STEP_TIERS, TABLE_TIERS

__all__ = ["OPTIONAL_TIERS", "file_budget", "step_budgets", "forward_budgets", "table_budgets",
           "final_alpha_cumprod_budgets"]

#: tiers offered only where the whole output has a finite window (see the module docstring)
OPTIONAL_TIERS = ("float16",)

_NP = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_WINDOW = 3   # D values tried on each side of round_D(want ± bound): the oracle's ends are within 1 of it


def _walk(v, k, npd):
    """``v`` (a D array) moved ``k`` D values up (k > 0) or down."""
    to = npd(np.inf if k > 0 else -np.inf)
    for _ in range(abs(k)):
        v = np.nextafter(v, to)
    return v


def _edge(w, b, t, dtype, side):
    """(A, next): the outermost accepted D value on ``side`` (+1: above want, −1: below) and the first D value
    beyond it; None where the oracle's accepted set does not end inside the window."""
    npd = _NP[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        c0 = (w + side * b).astype(npd)
    cands = [_walk(c0, side * k, npd) for k in range(-_WINDOW, _WINDOW + 1)]
    # a candidate past want on the other side belongs to the other edge: counted as accepted here
    ok = np.array([~compare_values(c.astype(np.float64), w, t, b, dtype).bad | (side * (c.astype(np.float64) - w) < 0)
                   for c in cands])
    if not (ok[0].all() and not ok[-1].any()):
        return None
    last = np.argmin(ok, axis=0) - 1                     # the outermost accepted before the first rejected
    stack = np.array(cands)
    idx = np.arange(w.size)
    # contiguity: accepted up to ``last``, rejected after it
    if not all((ok[: last[j] + 1, j].all() and not ok[last[j] + 1:, j].any()) for j in idx):
        return None
    return stack[last, idx].astype(np.float64), stack[last + 1, idx].astype(np.float64)


def _shortest(lo, hi):
    """The float64 in [lo, hi) with the fewest significand bits, elementwise (lo < hi, lo ≥ 0)."""
    out = np.full(lo.shape, np.nan)
    m, e = np.frexp(lo)
    for p in range(0, 54):
        c = np.ldexp(np.ceil(np.ldexp(m, p)), e - p)
        pick = np.isnan(out) & (c >= lo) & (c < hi)
        out[pick] = c[pick]
    return out


def file_budget(want, terms, bound, dtype):
    """The per-element budgets (float64 array, flat) for values in ``dtype`` ("float64" | "float32" | "float16")
    under the oracle's rule with the absolute ``bound``; None where no symmetric budget reproduces the oracle for
    every element (module docstring). An infinite bound stays infinite; a non-finite want keeps its bound (the
    equality part of the rule decides there)."""
    w = np.asarray(want, dtype=np.float64).ravel()
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.shape(want)).ravel().copy()
    t = np.broadcast_to(np.asarray(terms, dtype=np.float64), np.shape(want)).ravel()
    out = b.copy()
    judged = np.isfinite(w) & np.isfinite(b)
    if judged.any():
        wj, bj, tj = w[judged], b[judged], t[judged]
        up, down = _edge(wj, bj, tj, dtype, +1), _edge(wj, bj, tj, dtype, -1)
        if up is None or down is None:
            return None
        (a_hi, n_hi), (a_lo, n_lo) = up, down
        with np.errstate(invalid="ignore", over="ignore"):
            lo = np.maximum(a_hi - wj, wj - a_lo)
            hi = np.minimum(n_hi - wj, wj - n_lo)
        if not np.isfinite(lo).all():
            return None
        # the two ends in binades of different spacing (a power of two between them): the window can be empty;
        # then B = the wider accepted half-width, which admits every value the oracle admits and at most one more D
        # value, next to the oracle's end on the narrower side
        tight = lo < hi
        B = lo.copy()
        B[tight] = _shortest(lo[tight], hi[tight])
        out[judged] = B
    return out


def _tiered(make, where):
    """{tier: {output: flat budgets}} over ``STEP_TIERS``; ``make(dtype, tables)`` -> {output: (want, terms,
    bound)}. An optional tier without a budget for every output is left out; a required one raises."""
    out = {}
    for name, (dtype, tables) in STEP_TIERS.items():
        got = {k: file_budget(*args, dtype) for k, args in make(dtype, tables).items()}
        if any(v is None for v in got.values()):
            if name in OPTIONAL_TIERS:
                continue
            raise AssertionError(f"no {name} budget reproduces the oracle's rule at {where}")
        out[name] = got
    return out


def step_budgets(cfg, m, t, x, z, *, schedule, step_index, num_inference_steps, want, terms):
    """{tier: {"denoised": flat budgets, "prev_sample": flat budgets}} of one step (``step_bound`` per tier)."""
    def make(dtype, tables):
        bd, bp = step_bound(cfg, m, t, x, z, schedule=schedule, step_index=step_index,
                            num_inference_steps=num_inference_steps, dtype=dtype, tables=tables)
        return {"denoised": (want["denoised"], terms["denoised"], bd),
                "prev_sample": (want["prev_sample"], terms["prev_sample"], bp)}
    return _tiered(make, f"step {step_index}, t = {t}")


def forward_budgets(cfg, a, b, ts, *, want, velocity):
    """{tier: flat budgets} of add_noise (a = x0, b = noise) or get_velocity (``velocity``: a = sample, b = noise;
    ``forward_bound`` takes the √ᾱ factor first)."""
    def make(dtype, tables):
        first, second = (b, a) if velocity else (a, b)
        terms, bound = forward_bound(cfg, first, second, ts, dtype=dtype, tables=tables)
        return {"output": (want, terms, bound)}
    return {tier: v["output"] for tier, v in _tiered(make, f"t = {ts}").items()}


def table_budgets(cfg, t, want):
    """{tier: {table name: budget}} at timestep ``t``; ``want`` maps the table names of tables.json to the
    reference's values. The table precision is the dtype of the comparison, as conform compares tables."""
    out = {}
    for tables in TABLE_TIERS:
        sa, s1a = sqrt_tables_bound(cfg, tables)
        c_skip, c_out = scalings_bound(cfg, t, tables)
        bounds = {"betas": betas_bound(cfg, tables)[t], "alphas_cumprod": alphas_cumprod_bound(cfg, tables)[t],
                  "sqrt_alphas_cumprod": sa[t], "sqrt_one_minus_alphas_cumprod": s1a[t], "c_skip": c_skip,
                  "c_out": c_out}
        out[tables] = {}
        for k, bound in bounds.items():
            fb = file_budget([want[k]], [abs(want[k])], [bound], tables)
            if fb is None:
                raise AssertionError(f"no {tables} budget for {k}[{t}]")
            out[tables][k] = float(fb[0])
    return out


def final_alpha_cumprod_budgets(cfg, want):
    """{tier: budget} of final_alpha_cumprod: ᾱ[0]'s table bound, or 0 when set_alpha_to_one makes it exactly 1
    (as conform judges it)."""
    out = {}
    for tables in TABLE_TIERS:
        bound = 0.0 if cfg.set_alpha_to_one else float(alphas_cumprod_bound(cfg, tables)[0])
        out[tables] = float(file_budget([want], [abs(want)], [bound], tables)[0])
    return out
