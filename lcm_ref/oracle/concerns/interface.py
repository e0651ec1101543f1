"""Concern ``interface``: what diffusers' pipelines rely on besides the numbers."""

from __future__ import annotations

import numpy as np
import torch

from ...numerics import to_f64
from ..compare import call
from ..example import Example, exception_text, refusal
from .state import seeded_global_rngs


_MISSING = object()


def check_interface(ex: Example):
    """What diffusers' pipelines rely on besides the numbers: they call ``scale_model_input`` before every model call
    and feed its result to the U-Net (LCM's is the identity: a k-diffusion-style c_in = 1/√(σ² + 1) here changes
    what every pipeline's model sees), scale the initial latents by ``init_noise_sigma`` (1 for a VP scheduler),
    read ``order`` to count warm-up steps, unpack ``step(..., return_dict=False)`` as ``(prev_sample, denoised)``
    (the LCM pipelines decode ``denoised``) or read the output's fields, set ``set_begin_index`` and read
    ``step_index`` / ``begin_index`` (img2img, callbacks), and take ``len(scheduler)`` as num_train_timesteps."""
    cfg, dev = ex.cfg, ex.run.device
    T = cfg.num_train_timesteps
    sched = ex.build()
    n, exc = call(lambda: len(sched))
    if exc is not None or n != T:
        ex.fail(f"len(scheduler) is {exception_text(exc) if exc else n}, want num_train_timesteps = {T}",
                cause="__len__ missing or not num_train_timesteps",
                worst={"where": "len(scheduler)", "got": str(n), "want": str(T)})
    ex.count()
    for name, want, why in (("init_noise_sigma", 1.0, "pipelines scale the initial latents by it"),
                            ("order", 1, "pipelines count warm-up steps by it")):
        v = getattr(sched, name, _MISSING)
        got, exc = call(lambda: float(v)) if v is not _MISSING else (None, None)
        if got != want:
            shown = "missing" if v is _MISSING else repr(v)
            ex.fail(f"scheduler.{name} is {shown}, want {want} ({why})", cause=f"{name} is not LCM's {want}",
                    worst={"where": name, "got": shown, "want": repr(want)})
        ex.count()
    if not hasattr(sched, "set_begin_index") or not hasattr(sched, "step_index"):
        ex.unsupported("no step_index / set_begin_index (diffusers < 0.27)")
    # the output object first, on a fresh object: its fields, and whether the port exposes denoised at all
    sched2 = ex.build()
    ex.own_schedule(sched2)
    _, exc = call(lambda: sched2.set_begin_index(0))
    if exc is not None or sched2.begin_index != 0:
        ex.fail(f"set_begin_index(0) leaves begin_index = {getattr(sched2, 'begin_index', 'missing')!r}",
                cause="begin_index does not report set_begin_index")
    with seeded_global_rngs(ex.case.generator_seed):        # a port that ignores the generator repeats itself
        obj, exc = call(lambda: sched2.step(ex.case.model_output.make(dev, seed_offset=0), sched2.timesteps[0],
                                            ex.case.sample.make(dev), generator=ex.generators()))
    if exc is not None:
        ex.skip(f"step raises {exception_text(exc)} (see the step concerns)")
    prev_field, den_field = getattr(obj, "prev_sample", None), getattr(obj, "denoised", None)
    if not isinstance(prev_field, torch.Tensor):
        ex.fail(f"step(...) returns a {type(obj).__name__} without a tensor field prev_sample (LCMSchedulerOutput)",
                cause="the output object lacks LCMSchedulerOutput's fields")
    with_denoised = isinstance(den_field, torch.Tensor)
    if not with_denoised:
        ex.not_observable("step exposes no denoised: the (prev_sample, denoised) tuple the LCM pipelines unpack "
                          "cannot be served, judged on prev_sample only (see concern denoised)")
    ts, n_eff = ex.own_schedule(sched)
    if getattr(sched, "begin_index", _MISSING) is not None or sched.step_index is not None:
        ex.fail(f"after set_timesteps: step_index = {sched.step_index!r}, begin_index = "
                f"{getattr(sched, 'begin_index', 'missing')!r}, want None and None",
                cause="set_timesteps does not reset step_index / begin_index")
    gen = ex.generators()
    x = ex.case.sample.make(dev)
    want_len = 2 if with_denoised else 1
    for pos in range(len(ts)):
        t_arg = sched.timesteps[pos]
        scale = getattr(sched, "scale_model_input", None)
        if scale is None:
            ex.fail("no scale_model_input: diffusers' pipelines call it before every model call",
                    cause="scale_model_input missing")
        y, exc = call(lambda: scale(x, t_arg))
        if exc is not None:
            ex.fail(f"scale_model_input(sample, t={int(ts[pos])}) raises {exception_text(exc, frames=3)}",
                    cause="the implementation crashes in scale_model_input")
        if not (isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype and torch.equal(y, x)):
            ratio = ""
            if isinstance(y, torch.Tensor) and y.shape == x.shape:
                r = to_f64(y) / np.where(to_f64(x) == 0, np.nan, to_f64(x))
                ratio = f" (got/sample ≈ {np.nanmedian(r):.6g})"
            ex.fail(f"scale_model_input(sample, t={int(ts[pos])}) changes the sample{ratio}; LCM's is the identity "
                    "and every pipeline feeds its result to the model", cause="a c_in input scaling "
                    "(k-diffusion's 1/√(σ² + 1)?) in scale_model_input", worst={"where": "scale_model_input"})
        m = ex.case.model_output.make(dev, seed_offset=pos)
        with seeded_global_rngs(ex.case.generator_seed):
            out, exc = call(lambda: sched.step(m, t_arg, x, generator=gen, return_dict=False))
        if exc is not None:
            if refusal(exc, keys=("return_dict",)):
                ex.fail(f"step(..., return_dict=False) is refused: {exception_text(exc)}; pipelines pass it",
                        cause="step takes no return_dict")
            ex.skip(f"step raises {exception_text(exc)} (see the step concerns)")
        if not (isinstance(out, tuple) and len(out) == want_len and all(isinstance(v, torch.Tensor) for v in out)):
            shown = type(out).__name__ + (f" of {len(out)}" if isinstance(out, tuple) else "")
            ex.fail(f"step(..., return_dict=False) returns a {shown}, want the tuple (prev_sample, denoised) that "
                    "the LCM pipelines unpack", cause="return_dict=False does not return (prev_sample, denoised)",
                    worst={"where": "step(return_dict=False)", "got": shown, "want": f"tuple of {want_len} tensors"})
        if pos == 0 and not all(torch.equal(a, b) for a, b in zip(out, (prev_field, den_field))):
            ex.fail("step(...).prev_sample / .denoised differ from step(..., return_dict=False) on the same inputs "
                    "and generator seed", cause="return_dict changes the result")
        if sched.step_index != pos + 1:
            ex.fail(f"after the step at position {pos}: step_index = {sched.step_index!r}, want {pos + 1}",
                    cause="step_index does not count the steps taken")
        x = out[0]
        ex.count()
