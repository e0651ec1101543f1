"""Concern ``noise``: z is drawn from the generator passed, as diffusers' ``randn_tensor`` stream for that shape and
dtype (captured, or inferred from prev_sample where nothing is captured)."""

from __future__ import annotations

import numpy as np

from ... import reference as ref
from ...numerics import dtype_name, to_f64
from ..example import Example, exception_text, refusal
from .step import renoise_reference


def check_noise(ex: Example):
    cfg = ex.cfg
    sched = ex.build()
    ts, n_eff = ex.own_schedule(sched)
    kind = (ex.case.extra or {}).get("generator", "single")
    recs = ex.run_steps(sched, ts, n_eff, generator=kind)
    gen_text = "a list of generators (one per batch element)" if kind == "list" else "a torch.Generator"
    for rec in recs:
        if rec.exc is not None and kind == "list" and refusal(rec.exc, keys=("generator",)):
            ex.unsupported(f"step(..., generator=[...]) with a list of generators refused: {exception_text(rec.exc)}")
        ex.require_step(rec)
        if rec.last:
            continue
        where = f"step {rec.idx} (t={rec.t}), {gen_text}"
        want = rec.z_expected
        if rec.z is not None:
            if rec.z.dtype != want.dtype:
                ex.fail(f"{where}: the noise is drawn in {dtype_name(rec.z.dtype)}, want the sample dtype "
                        f"{dtype_name(want.dtype)} (diffusers' randn_tensor(..., dtype=denoised.dtype))",
                        cause=f"draws the noise in {dtype_name(rec.z.dtype)} whatever the sample dtype "
                              "(diffusers 0.22 drew float32 for float16 latents)",
                        worst={"where": where, "got": dtype_name(rec.z.dtype), "want": dtype_name(want.dtype)})
            got = to_f64(rec.z)
            same = (got == to_f64(want)) | (np.isnan(got) & np.isnan(to_f64(want)))
            if not same.all():
                i = tuple(int(k) for k in np.argwhere(~same)[0])
                ex.fail(f"{where}: the noise drawn is not diffusers' randn_tensor stream for that generator\n"
                        f"  element {i}: got {float(got[i])!r}, want {float(to_f64(want)[i])!r}; "
                        f"{int((~same).sum())} of {same.size} elements differ",
                        cause="does not draw from the generator passed (or draws another stream, shape or "
                              "device than randn_tensor)",
                        worst={"where": where + f" element {i}", "got": float(got[i]),
                               "want": float(to_f64(want)[i])})
            ex.count(same.size)
            continue
        # Nothing captured: infer z from prev = c·denoised + d·z (the port draws outside torch's samplers).
        t_prev = int(ts[rec.idx + 1]) if rec.idx + 1 < len(ts) else rec.t
        c, d = ref.noise_coefficients(cfg, t_prev)
        if d == 0:
            ex.not_observable("no noise captured and √(1 − ᾱ_prev) = 0: z is not observable")
            continue
        _, bound, _, base = renoise_reference(ex, rec, ts, n_eff, t_prev, want, note=False)
        z_inf = (to_f64(rec.prev) - c * base) / d
        # prev = c·base + d·z + (an error ≤ bound, renoise_reference) ⇒ |z_inf − z| ≤ bound/d
        ex.compare(f"z inferred from prev_sample (nothing captured) at {where}", z_inf, to_f64(want),
                   np.abs(to_f64(want)), np.asarray(bound) / d, dtype="float64",
                   cause=lambda cmp: "does not draw from the generator passed (the noise is not diffusers' "
                                     "randn_tensor stream)")
