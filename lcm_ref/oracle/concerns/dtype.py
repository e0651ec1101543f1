"""Concern ``dtype``: step, add_noise and get_velocity outputs have the sample's dtype, shape and device."""

from __future__ import annotations

import torch

from ...numerics import dtype_name, torch_dtype
from ..compare import call
from ..example import Example


def check_dtype(ex: Example):
    sched = ex.build()
    ts, n_eff = ex.own_schedule(sched)
    recs = ex.run_steps(sched, ts, n_eff)
    want = torch_dtype(ex.run.dtype)
    for rec in recs:
        ex.require_step(rec)
        for name, v in (("prev_sample", rec.prev), ("denoised", rec.den)):
            if v is None and name == "denoised":
                continue
            _require_like(ex, f"{name} at step {rec.idx} (t={rec.t})", v, rec.x, want)
    fw = ex.case.forward
    if fw:
        x0, noise = fw["x0"].make(ex.run.device), fw["noise"].make(ex.run.device)
        tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=ex.run.device)
        for name in ("add_noise", "get_velocity"):
            fn = getattr(sched, name, None)
            if fn is None:
                continue
            out, exc = call(lambda: fn(x0, noise, tt))
            if exc is None:
                _require_like(ex, name, out, x0, want)


def _require_like(ex, what, v, like, want_dtype):
    if not isinstance(v, torch.Tensor):
        ex.fail(f"{what} is a {type(v).__name__}, want a torch.Tensor")
    problems = []
    if v.dtype != want_dtype:
        problems.append(f"dtype {dtype_name(v.dtype) if v.is_floating_point() else v.dtype} (want "
                        f"{dtype_name(want_dtype)})")
    if tuple(v.shape) != tuple(like.shape):
        problems.append(f"shape {tuple(v.shape)} (want {tuple(like.shape)})")
    if v.device != like.device:
        problems.append(f"device {v.device} (want {like.device})")
    if problems:
        ex.fail(f"{what} has " + ", ".join(problems),
                cause=(f"returns {dtype_name(v.dtype)} for {dtype_name(want_dtype)} samples (computes in a promoted "
                       "dtype and does not cast back?)") if v.dtype != want_dtype and v.is_floating_point() else None,
                worst={"where": what, "got": str(v.dtype), "want": str(want_dtype)})
    ex.count()
