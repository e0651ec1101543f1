"""Concerns ``timesteps``, ``original_inference_steps``, ``strength`` and ``custom_timesteps``: the integers
of ``set_timesteps`` exactly, and the exception class where the reference raises; their likely causes."""

from __future__ import annotations

import numpy as np

from ..compare import exceptions_match
from ..example import Example, exception_text, read_timesteps, refusal, request_text


def check_schedule(ex: Example):
    """timesteps, original_inference_steps, strength, custom_timesteps: the integers and the exception class."""
    sched, req, kw, want, w_exc, g_exc = ex.schedule_both()
    call_text = request_text(req)
    if g_exc is not None and refusal(g_exc, keys=tuple(kw)) and not (w_exc is not None
                                                                     and exceptions_match(w_exc, g_exc)):
        ex.unsupported(f"set_timesteps refuses a keyword ({', '.join(kw)}): {exception_text(g_exc)}")
    if w_exc is not None or g_exc is not None:
        judge_exceptions(ex, call_text, w_exc, g_exc, sched)
        return
    got, problem = read_timesteps(getattr(sched, "timesteps", None))
    if problem is not None or not np.array_equal(got, want.timesteps):
        shown = problem if problem is not None else got.tolist()
        ex.fail(f"{call_text}: scheduler.timesteps = {shown}, want {want.timesteps.tolist()}\n"
                f"  config: {ex.config_text}",
                cause=_schedule_cause(ex, got, req), worst={"where": call_text, "got": str(shown),
                                                           "want": str(want.timesteps.tolist())})
    ex.count(len(want.timesteps))


def judge_exceptions(ex, what, w_exc, g_exc, sched=None):
    """Exceptions must match by class (compare.exceptions_match); where the reference raises and the
    implementation does not, the fail says what it silently produced."""
    if w_exc is not None and g_exc is not None:
        if exceptions_match(w_exc, g_exc):
            ex.count()
            return
        need = (f" (expected: a ValueError whose message names {w_exc.parameter!r})"
                if hasattr(w_exc, "parameter") and ex.run.profile == "strict" else "")
        ex.fail(f"{what}: the reference raises {exception_text(w_exc)}, the implementation {exception_text(g_exc)}{need}"
                f"\n  config: {ex.config_text}", cause="raises a different exception class than diffusers",
                worst={"where": what, "got": type(g_exc).__name__, "want": type(w_exc).__name__})
    if w_exc is not None:
        produced = ""
        if sched is not None:
            got, _ = read_timesteps(getattr(sched, "timesteps", None))
            if got is not None:
                produced = f"; it silently produced timesteps {got.tolist()[:12]}"
        cause = "no ValueError where diffusers rejects the request (a missing argument check)"
        req = ex.case.request
        if (isinstance(w_exc, ValueError) and req.get("num_inference_steps") and req.get("timesteps") is None
                and "strength" in str(w_exc)):
            cause = "no ValueError when num_inference_steps > int(original_inference_steps·strength)"
        ex.fail(f"{what}: the reference raises {exception_text(w_exc)}, the implementation returns normally{produced}"
                f"\n  config: {ex.config_text}", cause=cause, worst={"where": what, "got": "returns normally",
                                                              "want": type(w_exc).__name__})
    ex.fail(f"{what}: the implementation raises {exception_text(g_exc)} on valid input\n  config: {ex.config_text}",
            worst={"where": what, "got": type(g_exc).__name__, "want": "returns normally"})


def _schedule_cause(ex, got, req):
    if got is None:
        return "scheduler.timesteps is not an integer tensor"
    cfg = ex.cfg
    T = cfg.num_train_timesteps
    orig = req.get("original_inference_steps") or cfg.original_inference_steps
    strength = 1.0 if req.get("strength") is None else req["strength"]
    n = req.get("num_inference_steps")
    if req.get("timesteps") is None and n:
        desc = (np.arange(1, int(orig * strength) + 1) * (T // orig) - 1)[::-1]
        if len(desc) // n >= 1 and np.array_equal(got, desc[:: len(desc) // n][:n]):
            return "selects origin[::-(L//n)][:n] (the authors' stride rule, diffusers 0.22–0.23) instead of " \
                   "floor(linspace(0, L, n, endpoint=False))"
        L = round(orig * strength)
        desc = (np.arange(1, L + 1) * (T // orig) - 1)[::-1]
        if L and np.array_equal(got, desc[np.floor(np.linspace(0, L, n, endpoint=False)).astype(int)]):
            return "round(original_inference_steps·strength) for the grid length instead of int(...)"
        if req.get("original_inference_steps"):
            cfg_orig = cfg.original_inference_steps
            desc = (np.arange(1, int(cfg_orig * strength) + 1) * (T // cfg_orig) - 1)[::-1]
            if len(desc) and np.array_equal(got, desc[np.floor(np.linspace(0, len(desc), n, endpoint=False)).astype(
                    int)]):
                return "the per-call original_inference_steps is ignored (the config's value is used)"
    return None
