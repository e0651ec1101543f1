"""Concern ``errors``: bad input raises the reference's exception class; nothing passes silently (under the strict
profile, the quirk inputs too, at set_timesteps or at the step that uses them)."""

from __future__ import annotations

import numpy as np
import torch

from ... import reference as ref
from ...errors import LCMRefError
from ..compare import call, exceptions_match, step_outputs
from ..example import Example, exception_text, refusal, request_text
from .schedule import judge_exceptions


def check_errors(ex: Example):
    """Bad requests: set_timesteps must raise the reference's class; under the strict profile the quirk inputs
    too, at set_timesteps or at the step that uses them (earlier is allowed, never later)."""
    sched, req, kw, want, w_exc, g_exc = ex.schedule_both()
    what = request_text(req)
    if w_exc is not None or g_exc is not None:
        if w_exc is None and ex.run.profile == "strict":
            later = _strict_error_later(ex, want)
            if later is not None and exceptions_match(later, g_exc):
                ex.count()                  # refused early: allowed
                return
        if (w_exc is not None and g_exc is not None and not exceptions_match(w_exc, g_exc)
                and refusal(g_exc, keys=tuple(kw))):
            ex.unsupported(f"set_timesteps refuses a keyword ({', '.join(kw)}): {exception_text(g_exc)}")
        judge_exceptions(ex, what, w_exc, g_exc, sched)
        return
    # set_timesteps accepted on both sides: a step may still be refused (quirk inputs, strict profile)
    ts = want.timesteps
    extra = int(req.get("extra_steps") or 0)
    x = ex.case.sample.make(ex.run.device)
    gen = ex.generators()
    idx = None
    for k in range(len(ts) + extra):
        pos = min(k, len(ts) - 1)
        t = int(ts[pos])
        t_arg = sched.timesteps[pos] if req.get("timestep_as", "tensor") == "tensor" and pos < len(sched.timesteps) \
            else t
        m = ex.case.model_output.make(ex.run.device, seed_offset=k)
        out, g_exc = call(lambda: sched.step(m, t_arg, x, generator=gen))
        _, w_exc = call(lambda: ref.step(ex.cfg, m, t, x, schedule=ts, noise=torch.zeros_like(m), step_index=idx,
                                         num_inference_steps=want.num_inference_steps, profile=ex.run.profile))
        if w_exc is not None or g_exc is not None:
            if w_exc is None:           # the implementation refuses a step the reference runs: not this concern's
                ex.skip(f"step {k} raises {exception_text(g_exc)} where the reference runs it (see the step concerns)")
            silent = ""
            if g_exc is None:
                prev, _ = step_outputs(out)
                if isinstance(prev, torch.Tensor) and not torch.isfinite(prev).all():
                    silent = " and its output holds NaN or inf"
            if g_exc is None:
                ex.fail(f"{what}, step {k} (t={t}): the reference raises {exception_text(w_exc)}, the implementation "
                        f"returns normally{silent}\n  config: {ex.config_text}",
                        cause="accepts input diffusers (or the strict profile) refuses: nothing may pass silently",
                        worst={"where": f"step {k}", "got": "returns normally", "want": type(w_exc).__name__})
            judge_exceptions(ex, f"{what}, step {k} (t={t})", w_exc, g_exc)
            return
        idx = (ref.index_for_timestep(ts, t) if idx is None else idx) + 1
        prev, _ = step_outputs(out)
        if not isinstance(prev, torch.Tensor):
            ex.skip(f"step {k} returns {type(prev).__name__} (see the step concerns)")
        x = prev
    ex.count()


def _strict_error_later(ex, want):
    """The StrictError the strict reference raises at some step of this schedule (zero noise), or None: a strict
    implementation may refuse such a schedule at set_timesteps already."""
    ts, x = want.timesteps, ex.case.sample.make()
    for i in range(len(ts) + int(ex.case.request.get("extra_steps") or 0)):
        t = int(ts[min(i, len(ts) - 1)])
        try:
            ref.step(ex.cfg, ex.case.model_output.make(seed_offset=i), t, x, schedule=ts,
                     noise=np.zeros(tuple(x.shape)), step_index=i, num_inference_steps=want.num_inference_steps,
                     profile="strict")
        except LCMRefError as e:
            return e
        except Exception:  # noqa: BLE001 - another error: not an early strict refusal
            return None
    return None
