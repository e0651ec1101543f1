"""Generate the golden vectors: run the reference over the catalogue and write the files in the vector format
(docs/design.md §10). Deterministic: the same lcm_ref writes the same bytes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ... import __version__
from ... import reference as ref
from ...errors import StrictError
from ...errors import quiet as quiet_warnings
from ...numerics import write_atomic
from . import budgets
from . import catalogue as cat
from .format import (FORMAT_VERSION, SCHEMA, encode_config, encode_request, error_category, header, hex_float,
                     hex_floats, hex_short, notes_for, schema, to_text)
from .judge import OUTPUTS_SCHEMA, outputs_schema

__all__ = ["DEFAULT_OUT", "generate", "write", "budget_widths"]

DEFAULT_OUT = Path("lcm_vectors")   #: where ``write`` puts the files unless told: relative to the current directory


def _inputs(rng, shape, scale=1.0):
    """float32-exact N(0, scale²) values as float64."""
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def _set_timesteps(cfg, req, profile="diffusers"):
    return ref.set_timesteps(cfg, req.get("num_inference_steps"),
                             original_inference_steps=req.get("original_inference_steps"),
                             timesteps=req.get("timesteps"), strength=req.get("strength", 1.0), profile=profile)


def _request_flags(req, prior) -> list:
    return ["PerCallOriginalSteps"] if any(r.get("original_inference_steps") is not None for r in [req, *prior]) else []


def _timesteps_groups():
    out = []
    for cfg, cases in cat.timesteps_groups():
        tests = []
        for c in cases:
            req, flags = c["req"], c["flags"] + _request_flags(c["req"], c["prior"])
            try:
                with quiet_warnings():
                    for p in c["prior"]:          # the reference holds no state: earlier calls must merely succeed
                        _set_timesteps(cfg, p, c["profile"])
                    s = _set_timesteps(cfg, req, c["profile"])
                result = dict(result="valid", expected=dict(timesteps=[int(t) for t in s.timesteps],
                                                            num_inference_steps=int(s.num_inference_steps)))
            except Exception as e:  # noqa: BLE001 - the class is the expected value
                error = dict(category=error_category(e), python=type(e).__name__)
                if isinstance(e, StrictError):
                    error["parameter"] = str(e.parameter)
                result = dict(result="error", error=error)
                flags = cat.error_flags(flags, e)
            prior = dict(prior_requests=[encode_request(p) for p in c["prior"]]) if c["prior"] else {}
            tests.append(dict(comment=c["comment"], flags=sorted(set(flags), key=flags.index),
                              concerns=cat.timesteps_concerns(req, c["prior"], result["result"]), profile=c["profile"],
                              request=encode_request(req), **prior, **result))
        out.append(dict(type="TimestepsTest", config=encode_config(cfg), flags=cat.config_flags(cfg), tests=tests))
    return out


def _hex_budgets(tiers):
    """{tier: budgets} with every float array or scalar as float.hex (nested one level for steps and tables)."""
    def enc(v):
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        return hex_short(v) if np.ndim(v) == 0 else [hex_short(x) for x in np.ravel(v)]
    return {k: enc(v) for k, v in tiers.items()}


def _tables_groups():
    out = []
    for cfg in cat.TABLE_CONFIGS:
        tests = []
        for t in cat.table_probes(cfg.num_train_timesteps):
            c_skip, c_out = ref.boundary_scalings(cfg, t)
            want = dict(betas=ref.betas(cfg)[t], alphas_cumprod=ref.alphas_cumprod(cfg)[t],
                        sqrt_alphas_cumprod=ref.sqrt_alphas_cumprod(cfg)[t],
                        sqrt_one_minus_alphas_cumprod=ref.sqrt_one_minus_alphas_cumprod(cfg)[t],
                        c_skip=c_skip, c_out=c_out)
            tests.append(dict(comment=f"t = {t}", flags=cat.table_flags(t), concerns=["tables"], t=t,
                              expected={k: hex_float(v) for k, v in want.items()},
                              budget=_hex_budgets(budgets.table_budgets(cfg, t, want))))
        final = ref.final_alpha_cumprod(cfg)
        out.append(dict(type="TablesTest", config=encode_config(cfg), flags=cat.config_flags(cfg),
                        final_alpha_cumprod=hex_float(final),
                        final_alpha_cumprod_budget=_hex_budgets(budgets.final_alpha_cumprod_budgets(cfg, final)),
                        tests=tests))
    return out


def _steps_groups():
    out = []
    for g, (comment, cfg, req, options) in enumerate(cat.STEP_GROUPS):
        with quiet_warnings():
            s = _set_timesteps(cfg, req)
        ts, n = s.timesteps, s.num_inference_steps
        shape = options.get("shape", (1, 2, 2))
        rng = np.random.default_rng(1000 + g)
        start = options.get("start", 0)
        prior = options.get("prior", [])
        x = _inputs(rng, shape)
        tests = []
        for k in range(len(ts) - start + options.get("extra_steps", 0)):
            i = start + k
            t = int(ts[min(i, len(ts) - 1)])
            m = _inputs(rng, shape, options.get("scale", 1.0))
            z = None if i == n - 1 else _inputs(rng, shape)
            if not all(np.isfinite(a).all() for a in (x, m) + (() if z is None else (z,))):
                raise AssertionError(f"steps group {g} step {i}: non-finite inputs (a case must judge something)")
            with np.errstate(all="ignore"):
                r = ref.step(cfg, m, t, x, schedule=ts, noise=z, step_index=i, num_inference_steps=n)
                terms = ref.step_terms(cfg, m, t, x, schedule=ts, noise=z, step_index=i, num_inference_steps=n)
            want = dict(denoised=r.denoised, prev_sample=r.prev_sample)
            tiers = budgets.step_budgets(cfg, m, t, x, z, schedule=ts, step_index=i, num_inference_steps=n,
                                         want=want, terms=dict(denoised=terms.denoised, prev_sample=terms.prev_sample))
            flags = cat.step_flags(k, i, ts, n, options)
            tests.append(dict(comment=f"step {i}, t = {t}", flags=flags,
                              concerns=cat.step_concerns(cfg, i == n - 1, prior), step_index=i, timestep=t,
                              sample=hex_floats(x), model_output=hex_floats(m),
                              noise=None if z is None else hex_floats(z),
                              expected=dict(denoised=hex_floats(r.denoised), prev_sample=hex_floats(r.prev_sample),
                                            terms_denoised=hex_floats(terms.denoised),
                                            terms_prev_sample=hex_floats(terms.prev_sample)),
                              budget=_hex_budgets(tiers)))
            # the next step's input: the reference's prev_sample rounded to float32 (every input is float32-exact)
            x = np.asarray(r.prev_sample, dtype=np.float64).astype(np.float32).astype(np.float64)
        extra = dict(prior_requests=[encode_request(p) for p in prior]) if prior else {}
        out.append(dict(type="StepTest", comment=comment, config=encode_config(cfg),
                        flags=cat.config_flags(cfg) + _request_flags(req, prior), request=encode_request(req),
                        **extra, schedule=[int(t) for t in ts], num_inference_steps=int(n), shape=list(shape),
                        tests=tests))
    return out


def _forward_groups():
    out = []
    for g, cfg in enumerate(cat.FORWARD_CONFIGS):
        rng = np.random.default_rng(2000 + g)
        ts = cat.forward_timesteps(cfg.num_train_timesteps)
        shape = (len(ts), 2)
        c, d = ref.sqrt_alphas_cumprod(cfg)[ts][:, None], ref.sqrt_one_minus_alphas_cumprod(cfg)[ts][:, None]
        tests = []
        for fn in ("add_noise", "get_velocity"):
            a, b = _inputs(rng, shape), _inputs(rng, shape)
            if fn == "add_noise":     # √ᾱ·x0 + √(1−ᾱ)·ε
                want, terms = ref.add_noise(cfg, a, b, ts), c * np.abs(a) + d * np.abs(b)
                inputs = dict(original_samples=hex_floats(a), noise=hex_floats(b))
            else:                     # √ᾱ·ε − √(1−ᾱ)·x
                want, terms = ref.get_velocity(cfg, a, b, ts), c * np.abs(b) + d * np.abs(a)
                inputs = dict(sample=hex_floats(a), noise=hex_floats(b))
            tiers = budgets.forward_budgets(cfg, a, b, ts, want=want, velocity=fn == "get_velocity")
            tests.append(dict(comment=f"{fn} at t = {ts}", flags=[], concerns=[fn], function=fn, timesteps=ts,
                              inputs=inputs, expected=hex_floats(want), terms=hex_floats(terms),
                              budget=_hex_budgets(tiers)))
        out.append(dict(type="ForwardTest", config=encode_config(cfg), flags=cat.config_flags(cfg),
                        shape=list(shape), tests=tests))
    return out


def budget_widths(step_groups) -> dict:
    """How wide the float budgets of steps.json are, in scaled units (budget / (eps32·Σ|terms|), the largest over a
    case's elements): {"first": {tier: (smallest, largest)} over the first steps (t ≥ 989) of the runs without
    thresholding, "max": {tier: (largest, its timestep)} over every step}. The header states them."""
    first, top = {}, {}
    for grp in step_groups:
        thresholded = grp["config"]["thresholding"]
        for t in grp["tests"]:
            for tier, b in t["budget"].items():
                w = max(_scaled(b[k], t["expected"]["terms_" + k]) for k in ("denoised", "prev_sample"))
                if tier not in top or w > top[tier][0]:
                    top[tier] = (w, t["timestep"])
                if not thresholded and t["timestep"] >= 989:
                    lo, hi = first.get(tier, (w, w))
                    first[tier] = (min(lo, w), max(hi, w))
    return {"first": first, "max": top}


def _scaled(budget, terms) -> float:
    bud = np.array([float.fromhex(v) for v in budget])
    terms = np.array([float.fromhex(v) for v in terms])
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(terms > 0, bud / (2.0 ** -23 * terms), 0.0).max())


def _width_lines(widths) -> list:
    f, m = widths["first"], widths["max"]
    return [f"How wide the budgets are (scaled units, budget / (eps32·Σ|terms|)): at the first step (t ≥ 989, no "
            f"thresholding) the float32 tier spans {f['float32'][0]:.0f}–{f['float32'][1]:.0f} eps32, because it "
            "admits diffusers' float32 tables, whose ᾱ carries ≈ (t + 1)·eps32 of cumprod error: there it catches a "
            "wrong formula, not a precision regression of a few hundred eps32. The float32_tables64 tier (float32 "
            "arithmetic on correctly rounded tables) spans "
            f"{f['float32_tables64'][0]:.0f}–{f['float32_tables64'][1]:.0f} eps32 there, for a port that claims it. "
            f"Thresholded steps are the widest (float32 up to {m['float32'][0]:.0f}, float32_tables64 up to "
            f"{m['float32_tables64'][0]:.0f}): the quantile moves with every element's error."]


def _used_flags(groups):
    return {f for g in groups for f in g["flags"]} | {f for g in groups for t in g["tests"] for f in t["flags"]}


def generate() -> dict:
    """{file name: document} of every vector file, from the reference (deterministic)."""
    docs = {}
    steps = _steps_groups()
    extra = {"steps.json": _width_lines(budget_widths(steps))}
    for name, groups in (("timesteps.json", _timesteps_groups()), ("tables.json", _tables_groups()),
                         ("steps.json", steps), ("forward.json", _forward_groups())):
        tc = 0
        for grp in groups:
            for i, t in enumerate(grp["tests"]):
                tc += 1
                grp["tests"][i] = {"tcId": tc, **t}
        docs[name] = {"algorithm": "LCMScheduler", "schema": SCHEMA, "formatVersion": FORMAT_VERSION,
                      "generatorVersion": f"lcm_ref {__version__}", "numberOfTests": tc, "header": header(name, extra.get(name, ())),
                      "notes": notes_for(_used_flags(groups)), "testGroups": groups}
    return docs


@functools.lru_cache(maxsize=1)
def _texts() -> tuple:
    """((file name, text), ...) of every file ``write`` writes; computed once per process (about 15 s: the budgets
    ask the oracle about every element), the result being deterministic."""
    texts = {name: to_text(doc) + "\n" for name, doc in generate().items()}
    texts[SCHEMA] = to_text(schema()) + "\n"
    texts[OUTPUTS_SCHEMA] = to_text(outputs_schema()) + "\n"
    return tuple(texts.items())


def write(out_dir=DEFAULT_OUT) -> list:
    """Generate every vector file, its schema and the outputs schema of ``judge`` into ``out_dir`` (default
    ``./lcm_vectors``, relative to the current directory), each written atomically. Returns the paths written."""
    out = Path(out_dir)
    paths = []
    for name, text in _texts():
        path = write_atomic(out / name, text)
        os.chmod(path, 0o644)      # readable by all, like any installed data file (the temporary file is 0600)
        paths.append(path)
    return paths
