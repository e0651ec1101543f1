"""The strict profile's checks (docs/design.md §3), one small function per rule of its table.

``set_timesteps`` and ``step`` call them when ``profile="strict"``; they return nothing and raise ``StrictError`` (a
``ValueError`` naming the parameter, the value and what is allowed) for input that diffusers accepts but mishandles.
On valid input they do nothing, so both profiles give identical results there.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..config import PROFILES
from ..errors import LCMRefError, StrictError
from .tables import alphas_cumprod


def is_strict(profile) -> bool:
    """True for ``"strict"``, False for ``"diffusers"``; LCMRefError for anything else."""
    if profile not in PROFILES:
        raise LCMRefError("profile", profile, f"one of {PROFILES}")
    return profile == "strict"


def _check_count(name, v, lo):
    if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo):
        raise StrictError(name, v, f"an integer >= {lo}")


def check_schedule_request(original_inference_steps, strength, num_inference_steps):
    """Step counts are integers >= 1 and strength lies in (0, 1] (diffusers checks neither: quirk 4)."""
    _check_count("original_inference_steps", original_inference_steps, 1)
    if not (isinstance(strength, numbers.Real) and 0 < strength <= 1):
        raise StrictError("strength", strength, "a float in (0, 1] (diffusers does not check it: quirk 4)")
    if num_inference_steps is not None:
        _check_count("num_inference_steps", num_inference_steps, 1)


def check_custom_timesteps(ts):
    """Custom timesteps are a non-empty list of distinct integers >= 0 (diffusers truncates floats and wraps
    negative ones: quirk 2)."""
    if not ts:
        raise StrictError("timesteps", ts, "a non-empty, strictly descending list of integers in [0, T)")
    for t in ts:
        if not (isinstance(t, numbers.Real) and float(t).is_integer() and t >= 0):
            raise StrictError("timesteps", ts, "integers >= 0 (diffusers truncates floats and wraps "
                              f"negative ones: quirk 2); got {t!r}")
    if len(set(ts)) != len(ts):
        raise StrictError("timesteps", ts, "no duplicates")


def check_strength_cut(ts, kept, strength):
    """``strength`` leaves at least one of the custom timesteps ``ts`` (``kept`` is what it leaves)."""
    if len(kept) == 0:
        raise StrictError("timesteps", ts, f"a list that strength={strength} does not cut to nothing "
                          f"(int({len(ts)} x {strength}) = 0 timesteps left)")


def check_step_request(timestep, sched, num_inference_steps):
    """The timestep is one of the schedule's, and the step count is the schedule's length (diffusers records the
    untruncated count with custom timesteps and strength < 1: quirk 1)."""
    t = timestep.item() if hasattr(timestep, "item") else timestep
    if not (isinstance(t, numbers.Integral) and t in sched):
        raise StrictError("timestep", t, f"one of the schedule's timesteps {sched.tolist()}")
    if num_inference_steps != len(sched):
        raise StrictError("num_inference_steps", num_inference_steps,
                          f"len(schedule) = {len(sched)} (diffusers' quirk 1)")


def check_step_inputs(cfg, t, step_index, sched, model_output, sample, noise):
    """The config's noise schedule is not degenerate (§3: ``LCMConfig.check``); the step lies within the schedule
    (quirk 5) at timestep ``t``; the arrays are shaped like ``sample`` and finite; epsilon prediction does not meet
    ᾱ_t = 0 (zero-SNR at T−1: quirk 3)."""
    cfg.check("strict")
    if step_index >= len(sched):
        raise StrictError("step_index", step_index, f"< len(schedule) = {len(sched)} (a step past the end "
                          "re-noises at the last level in diffusers: quirk 5)")
    if sched[step_index] != t:
        raise StrictError("timestep", t, f"schedule[step_index={step_index}] = {sched[step_index]}")
    for name, arr in (("model_output", model_output), ("noise", noise)):
        if arr is not None and arr.shape != sample.shape:
            raise StrictError(f"{name}.shape", arr.shape, f"the shape of sample, {sample.shape}")
    for name, arr in (("model_output", model_output), ("sample", sample), ("noise", noise)):
        if arr is not None and not np.isfinite(arr).all():
            raise StrictError(name, "non-finite values", "finite values only")
    if cfg.prediction_type == "epsilon" and alphas_cumprod(cfg)[t] == 0:
        raise StrictError("timestep", t, "a timestep with ᾱ > 0 for epsilon prediction (zero-SNR makes "
                          "ᾱ[T-1] = 0 and diffusers divides by zero: quirk 3)")
