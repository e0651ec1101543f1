"""Concern ``tables``: ᾱ, final_alpha_cumprod, c_skip and c_out, where exposed, within the table budget
(docs/design.md §8.5); the causes of a wrong table."""

from __future__ import annotations

import math

import numpy as np
import torch

from ... import reference as ref
from ...errors import LCMRefError
from ...numerics import dtype_name, to_f64
from ..budget import alphas_cumprod_bound, scalings_bound
from ..compare import call, round_to
from ..example import Example, exception_text, refusal


def check_tables(ex: Example):
    cfg, run = ex.cfg, ex.run
    sched = ex.build()
    T = cfg.num_train_timesteps
    seen = False
    abar = getattr(sched, "alphas_cumprod", None)
    if abar is not None:
        seen = True
        got = to_f64(abar, "alphas_cumprod").reshape(-1)
        want = np.asarray(ref.alphas_cumprod(cfg))
        if got.shape != want.shape:
            ex.fail(f"alphas_cumprod has {got.size} entries, want num_train_timesteps = {T}")
        storage = _storage_dtype(abar)
        # A float32-stored table under tables="float64" is diffusers' interface table (the drop-in keeps one for
        # compatibility); what a float64 port computes with is judged through c_skip/c_out below and the step
        # concerns. Any other storage is held to the requested table precision.
        tables = "float32" if (run.tables == "float64" and storage == "float32") else run.tables
        bound = alphas_cumprod_bound(cfg, tables)
        # judged in the table precision (not the storage dtype: a float16-stored table must not get float16's
        # rounding interval, docs/design.md §8.5)
        ex.compare("alphas_cumprod", got, want, want, bound, dtype=tables,
                   cause=lambda c: _table_cause(cfg, got, c, storage))
    fac = getattr(sched, "final_alpha_cumprod", None)
    if fac is not None:
        seen = True
        want = ref.final_alpha_cumprod(cfg)
        storage = _storage_dtype(fac)
        tables = "float32" if (run.tables == "float64" and storage == "float32") else run.tables
        bound = float(alphas_cumprod_bound(cfg, tables)[0]) if not cfg.set_alpha_to_one else 0.0
        ex.compare("final_alpha_cumprod", to_f64(fac).reshape(()), np.float64(want), abs(want), bound,
                   dtype=tables)
    fn = getattr(sched, "get_scalings_for_boundary_condition_discrete", None)
    if fn is not None:
        seen = True
        probes = sorted({t for t in (0, 1, 19, 259, T // 2 - 1, 499, 513, T - 20, T - 2, T - 1)
                         + tuple((ex.case.extra or {}).get("probes", ())) if 0 <= t < T})
        for t in probes:
            for arg, how in ((torch.tensor(t, dtype=torch.long), "tensor"), (t, "int")):
                out, exc = call(lambda: fn(arg))
                if exc is not None:
                    if refusal(exc):
                        ex.unsupported(f"get_scalings_for_boundary_condition_discrete({how}) refused: "
                                       f"{exception_text(exc)}")
                    ex.fail(f"get_scalings_for_boundary_condition_discrete({t} as {how}) raises {exception_text(exc)}")
                if not (isinstance(out, (tuple, list)) and len(out) == 2):
                    ex.fail(f"get_scalings_for_boundary_condition_discrete({t}) returns {type(out).__name__}, "
                            "want (c_skip, c_out)")
                want = ref.boundary_scalings(cfg, t)
                bounds = scalings_bound(cfg, t, run.tables)
                for name, g, w, b in zip(("c_skip", "c_out"), out, want, bounds):
                    g64 = to_f64(g).reshape(())
                    ex.compare(f"{name}({t}, timestep as {how})", g64, np.float64(w), abs(w), b, dtype=run.tables,
                               cause=lambda c, name=name, g=g: _scaling_cause(cfg, t, name, g, run.tables))
    if not seen:
        ex.not_observable("no alphas_cumprod, final_alpha_cumprod or get_scalings_for_boundary_condition_discrete")


def _storage_dtype(v):
    d = getattr(v, "dtype", None)
    try:
        return dtype_name(d) if d is not None else "float64"
    except LCMRefError:
        return "float64"


def _table_cause(cfg, got, c, storage):
    i = c.index[0] if c.index else 0
    if cfg.rescale_betas_zero_snr:
        plain = np.asarray(ref.alphas_cumprod(cfg.replace(rescale_betas_zero_snr=False)))
        if abs(got[i] - plain[i]) <= 1e-5 * abs(plain[i]):
            return "rescale_betas_zero_snr accepted but not applied"
    want = np.asarray(ref.alphas_cumprod(cfg))
    if got[i] == round_to(round_to(want[i], "float32"), "float16") or (
            abs(got[i] - want[i]) <= 2.0 ** -11 * abs(want[i]) and got[i] == round_to(got[i], "float16")):
        return "ᾱ stored in float16"
    cum = np.cumprod(1.0 - np.asarray(ref.betas(cfg), dtype=np.float64))
    if not cfg.rescale_betas_zero_snr and abs(got[i] - cum[i]) <= 4 * 2.0 ** -52 * abs(cum[i]):
        return ("ᾱ from a float64 cumprod: not correctly rounded (docs/design.md §2, point 3); --tables float32 "
                "allows it")
    if got[i] == round_to(got[i], "float32") and storage != "float32":
        return "float32 values in a float64 table (float32 tables); --tables float32 allows them"
    return None


def _scaling_cause(cfg, t, name, g, tables):
    k = 0 if name == "c_skip" else 1
    v = float(to_f64(g).reshape(()))
    for text, s, sigma in (("timestep_scaling ignored (always 10)", 10.0, 0.5),
                           ("σ_data = 1 in the boundary scalings instead of 0.5", cfg.timestep_scaling, 1.0)):
        u = t * s
        alt = (sigma ** 2 / (u ** 2 + sigma ** 2), u / math.sqrt(u ** 2 + sigma ** 2))[k]
        if abs(v - alt) <= 1e-5 * abs(alt) and alt != ref.boundary_scalings(cfg, t)[k]:
            return text
    if tables == "float64" and v == float(np.float32(v)):
        return ("c_skip/c_out computed in float32 (an int64 timestep tensor times a Python float is float32): "
                "float32 tables; --tables float32 allows them")
    return None
