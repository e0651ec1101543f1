"""Check the golden vectors (docs/design.md §10): re-derive every case from the reference bit for bit, or run an
implementation with diffusers' interface on them (integers exact, floats within lcm_ref's budget, docs/design.md §8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import reference as ref
from ...errors import quiet as quiet_warnings
from ...numerics import to_f64
from ..compare import compare_values
from .format import (FILES, VECTOR_DIR, decode_config, decode_request, from_hex, from_hex_array, hex_float,
                     hex_floats, load, passes)

__all__ = ["check_vectors"]


class _Failures:
    def __init__(self):
        self.items, self.checked, self.skipped = [], 0, 0

    def add(self, path, tc, what):
        self.items.append(f"{Path(path).name} tcId {tc}: {what}")


def _error_matches(expected_name, parameter, exc):
    """The class named in the vector (a subclass is fine); StrictError: any ValueError naming the parameter."""
    if expected_name == "StrictError":
        return isinstance(exc, ValueError) and (parameter or "").split(".")[0].lower() in str(exc).lower()
    builtin = {"ValueError": ValueError, "IndexError": IndexError, "ZeroDivisionError": ZeroDivisionError,
               "TypeError": TypeError}.get(expected_name)
    return isinstance(exc, builtin) if builtin else type(exc).__name__ == expected_name


def check_vectors(impl=None, directory=None, *, dtype=torch.float64, quirks=False, profile="diffusers") -> dict:
    """Check every vector file in ``directory`` (default: the package's) against the reference (``impl=None``:
    bit for bit) or an implementation (``module:attr`` or a factory: integers exact, floats within
    ``lcm_ref.oracle``'s budget for ``dtype``). Cases flagged Quirk* are skipped for an implementation unless
    ``quirks``; TimestepsTest cases of the other profile are skipped. Returns {"checked", "skipped",
    "failures": [...]}; raises ``VectorFileError`` for a corrupt file."""
    from ..compare import load_factory

    directory = Path(directory) if directory is not None else VECTOR_DIR
    factory = load_factory(impl) if isinstance(impl, str) else impl
    fails = _Failures()
    for name in FILES:
        path = directory / name
        doc = load(path)
        for g in doc["testGroups"]:
            cfg = decode_config(g["config"])
            _CHECKERS[g["type"]](path, cfg, g, factory, dtype, quirks, profile, fails)
    return {"checked": fails.checked, "skipped": fails.skipped, "failures": fails.items}


def _scheduler(factory, cfg):
    """The implementation's scheduler for ``cfg``; None when the reference is checked."""
    if factory is None:
        return None
    with quiet_warnings():
        return factory(**cfg.to_dict())


def _skip(t, factory, quirks, fails):
    if factory is not None and not quirks and any(f.startswith("Quirk") for f in t["flags"]):
        fails.skipped += 1
        return True
    return False


def _check_timesteps(path, cfg, g, factory, dtype, quirks, profile, fails):
    for t in g["tests"]:
        if _skip(t, factory, quirks, fails):
            continue
        if factory is not None and t["profile"] != profile:
            fails.skipped += 1
            continue
        req = decode_request(t["request"])
        prior = [decode_request(r) for r in t.get("prior_requests", [])]
        exc, got = None, None
        with quiet_warnings():
            try:
                if factory is None:
                    s = ref.set_timesteps(cfg, req["num_inference_steps"],
                                          original_inference_steps=req["original_inference_steps"],
                                          timesteps=req["timesteps"],
                                          strength=1.0 if req["strength"] is None else req["strength"],
                                          profile=t["profile"])
                    got = ([int(v) for v in s.timesteps], int(s.num_inference_steps))
                else:
                    sched = factory(**cfg.to_dict())
                    for r in prior + [req]:
                        sched.set_timesteps(**{k: v for k, v in r.items() if v is not None})
                    got = ([int(v) for v in sched.timesteps.tolist()], int(sched.num_inference_steps))
            except Exception as e:  # noqa: BLE001 - compared below
                exc = e
        fails.checked += 1
        if t["result"] == "error":
            want = t["error"]["python"]
            if exc is None:
                fails.add(path, t["tcId"], f"expected {want}, got timesteps {got[0]}")
            elif not _error_matches(want, t["error"].get("parameter"), exc):
                fails.add(path, t["tcId"], f"expected {want}, got {type(exc).__name__}: {exc}")
        elif exc is not None:
            fails.add(path, t["tcId"], f"expected timesteps {t['expected']['timesteps']}, got "
                                       f"{type(exc).__name__}: {exc}")
        elif got != (t["expected"]["timesteps"], t["expected"]["num_inference_steps"]):
            fails.add(path, t["tcId"], f"timesteps {got[0]} (n={got[1]}), want {t['expected']['timesteps']} "
                                       f"(n={t['expected']['num_inference_steps']})")


def _check_tables(path, cfg, g, factory, dtype, quirks, profile, fails):
    sched = _scheduler(factory, cfg)
    for t in g["tests"]:
        tt, exp = t["t"], {k: from_hex(v) for k, v in t["expected"].items()}
        fails.checked += 1
        if factory is None:
            c_skip, c_out = ref.boundary_scalings(cfg, tt)
            got = dict(betas=ref.betas(cfg)[tt], alphas_cumprod=ref.alphas_cumprod(cfg)[tt],
                       sqrt_alphas_cumprod=ref.sqrt_alphas_cumprod(cfg)[tt],
                       sqrt_one_minus_alphas_cumprod=ref.sqrt_one_minus_alphas_cumprod(cfg)[tt],
                       c_skip=c_skip, c_out=c_out)
            for k, v in got.items():
                if hex_float(v) != t["expected"][k]:
                    fails.add(path, t["tcId"], f"{k}[{tt}] = {hex_float(v)}, want {t['expected'][k]} (bit for bit)")
            continue
        # An implementation: its exposed float32 tables by the file's rule with the float32-tier budgets
        budget = {k: from_hex(v) for k, v in t["budget"]["float32"].items()}
        checks = [(k, float(getattr(sched, k)[tt])) for k in ("betas", "alphas_cumprod") if hasattr(sched, k)]
        if hasattr(sched, "get_scalings_for_boundary_condition_discrete"):
            c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(tt)
            checks += [("c_skip", float(c_skip)), ("c_out", float(c_out))]
        for k, v in checks:
            if not passes(v, exp[k], budget[k]):
                fails.add(path, t["tcId"], f"{k}[{tt}] = {v!r}, want {exp[k]!r} (budget {budget[k]:.3g})")


def _check_steps(path, cfg, g, factory, dtype, quirks, profile, fails):
    from ..budget import step_bound
    from ..noise import NoiseTap

    shape, sched_ts, n = tuple(g["shape"]), np.array(g["schedule"], dtype=np.int64), g["num_inference_steps"]
    req = decode_request(g["request"])
    prior = [decode_request(r) for r in g.get("prior_requests", [])]
    for t in g["tests"]:
        if _skip(t, factory, quirks, fails):
            continue
        x, m = from_hex_array(t["sample"], shape), from_hex_array(t["model_output"], shape)
        z = None if t["noise"] is None else from_hex_array(t["noise"], shape)
        exp = {k: from_hex_array(v, shape) for k, v in t["expected"].items()}
        i, tt = t["step_index"], t["timestep"]
        fails.checked += 1
        try:
            with np.errstate(all="ignore"), quiet_warnings():
                if factory is None:
                    r = ref.step(cfg, m, tt, x, schedule=sched_ts, noise=z, step_index=i, num_inference_steps=n)
                    got = dict(denoised=r.denoised, prev_sample=r.prev_sample)
                else:
                    sched = factory(**cfg.to_dict())
                    for r in prior + [req]:
                        sched.set_timesteps(**{k: v for k, v in r.items() if v is not None})
                    sched.set_begin_index(i)
                    tx, tm = (torch.from_numpy(a).to(dtype) for a in (x, m))
                    inject = None if z is None else torch.from_numpy(z).to(dtype)
                    with NoiseTap(inject=inject):
                        out = sched.step(tm, sched.timesteps[min(i, len(sched.timesteps) - 1)], tx,
                                         generator=torch.Generator().manual_seed(0))
                    prev, den = (out[0], out[1]) if isinstance(out, tuple) else (out.prev_sample, out.denoised)
                    got = dict(denoised=to_f64(den, "denoised"), prev_sample=to_f64(prev, "prev_sample"))
        except Exception as e:  # noqa: BLE001 - reported as a failure of this case
            fails.add(path, t["tcId"], f"step raised {type(e).__name__}: {e}")
            continue
        if factory is None:
            for k in ("denoised", "prev_sample"):
                if hex_floats(got[k]) != t["expected"][k]:
                    fails.add(path, t["tcId"], f"{k} differs bit for bit: {hex_floats(got[k])} vs {t['expected'][k]}")
            continue
        bounds = dict(zip(("denoised", "prev_sample"), step_bound(
            cfg, m, tt, x, z, schedule=sched_ts, step_index=i, num_inference_steps=n, dtype=dtype)))
        for k in ("denoised", "prev_sample"):
            _compare(path, t["tcId"], k, got[k], exp[k], exp["terms_" + k], bounds[k], dtype, fails)


def _compare(path, tc, name, got, want, terms, bound, dtype, fails):
    """The oracle's rule (``compare.compare_values``), non-finite values included."""
    c = compare_values(got, want, terms, bound, dtype)
    if not c.ok:
        fails.add(path, tc, f"{name}: {c.shape or c.describe(dtype).strip()}")


def _check_forward(path, cfg, g, factory, dtype, quirks, profile, fails):
    from ..budget import forward_bound

    shape = tuple(g["shape"])
    sched = _scheduler(factory, cfg)
    for t in g["tests"]:
        fn, ts = t["function"], t["timesteps"]
        ins = {k: from_hex_array(v, shape) for k, v in t["inputs"].items()}
        want = from_hex_array(t["expected"], shape)
        fails.checked += 1
        if fn == "add_noise":
            a, b = ins["original_samples"], ins["noise"]
        else:
            a, b = ins["sample"], ins["noise"]
        try:
            if factory is None:
                got = ref.add_noise(cfg, a, b, ts) if fn == "add_noise" else ref.get_velocity(cfg, a, b, ts)
            else:
                ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
                tts = torch.tensor(ts, dtype=torch.long)
                got = to_f64(getattr(sched, fn)(ta, tb, tts), fn)
        except Exception as e:  # noqa: BLE001
            fails.add(path, t["tcId"], f"{fn} raised {type(e).__name__}: {e}")
            continue
        if factory is None:
            if hex_floats(got) != t["expected"]:
                fails.add(path, t["tcId"], f"{fn} differs bit for bit")
            continue
        _, bound = (forward_bound(cfg, a, b, ts, dtype=dtype) if fn == "add_noise"
                    else forward_bound(cfg, b, a, ts, dtype=dtype))
        _compare(path, t["tcId"], fn, got, want, from_hex_array(t["terms"], shape), bound, dtype, fails)


_CHECKERS = {"TimestepsTest": _check_timesteps, "TablesTest": _check_tables, "StepTest": _check_steps,
             "ForwardTest": _check_forward}
