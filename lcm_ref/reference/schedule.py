"""Which timesteps run (docs/design.md §4.1, §7.2): the origin grid, the skipping-step selection, custom timesteps.

LCM distils on an origin grid of ``original_inference_steps`` points, (1..orig)·k − 1 with k = T // orig, cut by
``strength`` to its lowest int(orig·strength) points; inference takes n of them, evenly by position
(floor(linspace(0, L, n, endpoint=False)) on the descending grid). Integer schedules reproduce the NumPy float64
evaluation diffusers performs, near-ties included (§2).
"""

from __future__ import annotations

import numbers
import warnings
from typing import NamedTuple

import numpy as np

from ..config import LCMConfig
from ..errors import LCMRefError, LCMRefWarning
from .strict import check_custom_timesteps, check_schedule_request, check_strength_cut, is_strict
from .tables import as_timestep


class Schedule(NamedTuple):
    """What ``set_timesteps`` leaves behind: the timesteps and the ``num_inference_steps`` that ``step`` uses to
    recognise the last step (they differ only in diffusers' quirk 1: custom timesteps with strength < 1)."""
    timesteps: np.ndarray
    num_inference_steps: int


def spaced_timesteps(T: int, n: int, mode: str, steps_offset: int = 0) -> np.ndarray:
    """Inference timesteps of DDIM-family schedulers (Lin et al. 2023, Table 2), as ``DDIMScheduler.set_timesteps``
    computes them in NumPy float64: ``leading`` (plus ``steps_offset``), ``linspace``, ``trailing``."""
    if not (isinstance(n, numbers.Integral) and 1 <= n <= T):
        raise LCMRefError("num_inference_steps", n, f"an integer in [1, num_train_timesteps={T}]")
    if mode == "leading":
        ts = (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
    elif mode == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1]
    elif mode == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        raise LCMRefError("mode", mode, "one of 'leading', 'linspace', 'trailing'")
    return np.ascontiguousarray(ts, dtype=np.int64)


def origin_grid(cfg, original_steps, strength, spacing):
    """LCM's ascending origin grid: (1..int(orig·strength))·k − 1 with k = T // orig, or with ``spacing`` the
    orig-point grid of that mode, cut to its lowest int(orig·strength) points."""
    T = cfg.num_train_timesteps
    L = int(original_steps * strength)
    if spacing is None:
        k = T // original_steps
        return np.arange(1, L + 1, dtype=np.int64) * k - 1
    if not 0 < strength <= 1:
        raise LCMRefError("strength", strength, "a float in (0, 1] when spacing is given")
    return spaced_timesteps(T, original_steps, spacing, cfg.steps_offset)[::-1][:L].copy()


def set_timesteps(cfg: LCMConfig, num_inference_steps=None, *, original_inference_steps=None, timesteps=None,
                  strength=1.0, spacing=None, profile="diffusers") -> Schedule:
    """The schedule ``LCMScheduler.set_timesteps`` builds, with the ``num_inference_steps`` it records.

    ``spacing=None`` is diffusers' LCM grid; ``"leading" | "linspace" | "trailing"`` builds the origin grid with that
    DDIM-family mode instead (opt-in; diffusers ignores ``timestep_spacing``)."""
    strict = is_strict(profile)
    T = cfg.num_train_timesteps
    if (num_inference_steps is None) == (timesteps is None):
        raise ValueError("pass exactly one of num_inference_steps and timesteps (custom timesteps)")
    orig = cfg.original_inference_steps if original_inference_steps is None else original_inference_steps
    if strict:
        check_schedule_request(orig, strength, num_inference_steps)
    if spacing is not None and spacing not in ("leading", "linspace", "trailing"):
        raise LCMRefError("spacing", spacing, "None or one of 'leading', 'linspace', 'trailing'")
    if orig > T:
        raise ValueError(f"original_inference_steps={orig} must be <= num_train_timesteps={T}")
    origin = origin_grid(cfg, orig, strength, spacing)

    if timesteps is not None:
        ts = [t.item() if hasattr(t, "item") else t for t in timesteps]
        if strict:
            check_custom_timesteps(ts)
        for i in range(1, len(ts)):
            if ts[i] >= ts[i - 1]:
                raise ValueError(f"timesteps={ts} must be in strictly descending order")
        if ts[0] >= T:  # IndexError on an empty list, as diffusers
            raise ValueError(f"timesteps[0]={ts[0]} must be < num_train_timesteps={T}")
        on_grid = set(origin.tolist())
        if strength == 1.0 and ts[0] != T - 1:
            warnings.warn(f"timesteps[0]={ts[0]} is not num_train_timesteps - 1 = {T - 1}", LCMRefWarning)
        off = [t for t in ts[1:] if t not in on_grid]
        if off:
            warnings.warn(f"custom timesteps {off} are not on the origin grid", LCMRefWarning)
        if len(ts) > orig:
            warnings.warn(f"{len(ts)} custom timesteps exceed original_inference_steps={orig}", LCMRefWarning)
        arr = np.array([int(t) for t in ts], dtype=np.int64)
        n = len(arr)
        t_start = max(n - min(int(n * strength), n), 0)
        arr = arr[t_start:]
        if strict:
            check_strength_cut(ts, arr, strength)
        # diffusers keeps num_inference_steps = len(all timesteps) (quirk 1); strict uses the truncated length.
        return Schedule(arr, len(arr) if strict else n)

    n = num_inference_steps
    if n > T:
        raise ValueError(f"num_inference_steps={n} must be <= num_train_timesteps={T}")
    if len(origin) // n < 1:
        raise ValueError(f"the combination original_inference_steps x strength = {orig} x {strength} = {len(origin)} "
                         f"is smaller than num_inference_steps={n}")
    if n > orig:
        raise ValueError(f"num_inference_steps={n} must be <= original_inference_steps={orig}")
    desc = origin[::-1]
    idx = np.floor(np.linspace(0, len(desc), num=n, endpoint=False)).astype(np.int64)
    return Schedule(desc[idx].copy(), n)


def timesteps(cfg: LCMConfig, num_inference_steps=None, *, original_inference_steps=None, timesteps=None,
              strength=1.0, spacing=None, profile="diffusers") -> np.ndarray:
    """The inference timesteps (np.int64, descending) that ``LCMScheduler.set_timesteps`` chooses."""
    return set_timesteps(cfg, num_inference_steps, original_inference_steps=original_inference_steps,
                         timesteps=timesteps, strength=strength, spacing=spacing, profile=profile).timesteps


def index_for_timestep(schedule, t):
    """diffusers' first-call lookup: the second match if the timestep is duplicated; none raises IndexError."""
    hits = np.flatnonzero(np.asarray(schedule) == t)
    if len(hits) == 0:
        raise IndexError(f"timestep {t} is not in the schedule {list(schedule)}")
    return int(hits[1] if len(hits) > 1 else hits[0])


def previous_timestep(schedule, timestep) -> int:
    """The timestep after ``timestep`` in ``schedule``, or −1 after the last (diffusers >= 0.32)."""
    schedule = np.asarray(schedule)
    i = int(np.flatnonzero(schedule == as_timestep(timestep))[0])
    return int(schedule[i + 1]) if i + 1 < len(schedule) else -1
