"""Concerns ``add_noise`` and ``get_velocity``: one timestep per batch row, within the forward budget."""

from __future__ import annotations

import numpy as np
import torch

from ... import reference as ref
from ...numerics import to_f64
from ..budget import forward_bound
from ..compare import call
from ..example import Example, exception_text, refusal, tensor_problem
from .causes import FLOAT32_TABLES, best_explanation, float32_tables_explain


def check_forward(ex: Example):
    name = ex.run.concern
    cfg, fw = ex.cfg, ex.case.forward
    sched = ex.build()
    fn = getattr(sched, name, None)
    if fn is None:
        ex.unsupported(f"no method {name}")
    x0, noise = fw["x0"].make(ex.run.device), fw["noise"].make(ex.run.device)
    tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=ex.run.device)
    if name == "add_noise":
        want = ref.add_noise(cfg, x0, noise, fw["timesteps"])
        a, b = x0, noise
    else:       # get_velocity(sample=x0, noise, t) = √ᾱ·noise − √(1−ᾱ)·x0
        want = ref.get_velocity(cfg, x0, noise, fw["timesteps"])
        a, b = noise, x0
    got, exc = call(lambda: fn(x0, noise, tt))
    if exc is not None:
        if refusal(exc):
            ex.unsupported(f"{name}(x, noise, timesteps) refused: {exception_text(exc)}")
        ex.fail(f"{name} raises {exception_text(exc, frames=3)} on valid input (timesteps {fw['timesteps']})\n"
                f"  config: {ex.config_text}", cause=f"the implementation crashes in {name}",
                worst={"where": name, "got": type(exc).__name__, "want": "returns normally"})
    problem = tensor_problem(got, x0)
    if problem is not None:
        ex.fail(f"{name} returns {problem}")
    terms, bound = forward_bound(cfg, a, b, fw["timesteps"], dtype=ex.run.dtype, tables=ex.run.tables)

    def cause(c):
        if ex.run.tables == "float64":
            _, bound32 = forward_bound(cfg, a, b, fw["timesteps"], dtype=ex.run.dtype, tables="float32")
            if float32_tables_explain(ex, got, want, terms, bound32):
                return FLOAT32_TABLES
        ts = np.asarray(fw["timesteps"])
        shape = (-1,) + (1,) * (x0.ndim - 1)
        abar = np.asarray(ref.alphas_cumprod(cfg))[ts].reshape(shape)
        if name == "add_noise":
            alts = [("ᾱ and 1 − ᾱ where √ᾱ and √(1 − ᾱ) belong", abar * to_f64(x0) + (1 - abar) * to_f64(noise))]
        else:
            alts = [("the sign of get_velocity is flipped: √(1−ᾱ)·x − √ᾱ·ε", -want)]
        return best_explanation(got, alts, want, terms, bound, ex.run.dtype)

    ex.compare(name, got, want, terms, bound, where=f" (timesteps {fw['timesteps']})", cause=cause)
