"""The float32 arithmetic traps of LCM ports (docs/design.md §10), and the sweeps that choose the golden vectors'
cases for them.

diffusers selects the inference timesteps as ``floor(i·(L/n))`` in NumPy float64 (``np.linspace(0, L, n,
endpoint=False)``, L = int(orig·strength) grid points) and cuts the img2img grid at ``int(orig·strength)`` in Python
float64. A port that does either in float32 (OpenVINO GenAI's C++ LCMScheduler, measured on tag 2026.3.0.0) selects
other timesteps wherever the exact value is an integer and the two roundings fall on different sides of it.

- ``grid_float32`` / ``grid_float64``: the index selection both ways (float32: step = fl32(L/n), each index
  fl32(i·step), as that port does; this model reproduces its measured 25,657 differing (orig, n) pairs of
  1 ≤ n ≤ orig ≤ 1000, none at orig 4, 8, 10, 20, 25, 40, 50, 100).
- ``grid_sweep``: every differing (L, n) of 1 ≤ n ≤ L ≤ max_L, and its class (which way float32 moves the first
  differing index, how many positions differ).
- ``strength_float32`` / ``strength_sweep``: int(fl32(fl32(orig)·fl32(strength))) against diffusers' int(orig·strength).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["grid_float64", "grid_float32", "grid_sweep", "grid_classes", "grid_representatives", "strength_float32", "strength_sweep"]


def grid_float64(L: int, n: int) -> np.ndarray:
    """diffusers' selection indices: floor(np.linspace(0, L, n, endpoint=False)) = floor(i·fl64(L/n))."""
    return np.floor(np.linspace(0, L, n, endpoint=False)).astype(np.int64)


def grid_float32(L: int, n: int) -> np.ndarray:
    """The float32 selection: step = fl32(fl32(L)/fl32(n)), index i = floor(fl32(fl32(i)·step))."""
    step = np.float32(np.float32(L) / np.float32(n))
    return np.floor(np.arange(n, dtype=np.float32) * step).astype(np.int64)


def grid_sweep(max_L: int = 1000) -> list:
    """[(L, n, first differing position, float32 index − float64 index there, number of differing positions)] for
    every 1 ≤ n ≤ L ≤ max_L where the float32 and float64 selections differ.

    Only ties can differ: i·L/n is within 1/n ≥ 1/max_L of an integer unless it is one, while either evaluation errs
    by at most 2·2⁻²⁴·L < 1/max_L (max_L ≤ 1000: 1.2e-4 < 1e-3). The ties are i = j·n/g, g = gcd(L, n), j < g, so
    only those positions are evaluated."""
    out = []
    for L in range(1, max_L + 1):
        ns = np.arange(1, L + 1)
        g = np.gcd(ns, L)
        for n, gg in zip(ns.tolist(), g.tolist()):
            if gg == 1:
                continue                                 # only i = 0, exact both ways
            i = np.arange(gg, dtype=np.int64) * (n // gg)
            a = np.floor(i * (L / n)).astype(np.int64)
            b = np.floor(i.astype(np.float32) * np.float32(np.float32(L) / np.float32(n))).astype(np.int64)
            d = np.nonzero(a != b)[0]
            if len(d):
                out.append((L, n, int(i[d[0]]), int(b[d[0]] - a[d[0]]), len(d)))
    return out


def grid_classes(sweep) -> Counter:
    """The classes of a ``grid_sweep``: (float32 later or earlier at the first difference, differing positions 1,
    2 or ≥ 3) -> count."""
    return Counter(_grid_class(row) for row in sweep)


def _grid_class(row):
    _, _, _, delta, count = row
    return ("later" if delta > 0 else "earlier", min(count, 3))


def grid_representatives(sweep, per_class: int = 1) -> list:
    """The smallest (L, n) of each class, most frequent class first (``per_class`` of each)."""
    classes = grid_classes(sweep)
    out = []
    for cls, _ in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])):
        rows = sorted((r for r in sweep if _grid_class(r) == cls), key=lambda r: (r[0], r[1]))
        out += [(r[0], r[1], cls) for r in rows[:per_class]]
    return out


def strength_float32(orig: int, strength: float) -> int:
    """int(fl32(fl32(orig)·fl32(strength))): the grid length of a port that multiplies in float32."""
    return int(np.float32(np.float32(orig) * np.float32(strength)))


def strength_sweep(orig: int, decimals: int = 2) -> list:
    """[(strength, diffusers' int(orig·strength), the float32 product's)] for strength = c/10^decimals, 0 < c <
    10^decimals, where they differ."""
    m = 10 ** decimals
    out = []
    for c in range(1, m):
        s = c / m
        if int(orig * s) != strength_float32(orig, s):
            out.append((s, int(orig * s), strength_float32(orig, s)))
    return out
