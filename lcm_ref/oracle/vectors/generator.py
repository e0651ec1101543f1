"""Generate the golden vectors: run the reference over the catalogue and write the files in the vector format
(docs/design.md §10). Deterministic: the same lcm_ref writes the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ... import __version__
from ... import reference as ref
from ...errors import StrictError
from ...errors import quiet as quiet_warnings
from ...numerics import write_atomic
from . import catalogue as cat
from .format import (FORMAT_VERSION, SCHEMA, encode_config, encode_request, header, hex_float, hex_floats,
                     notes_for, schema, to_text)

__all__ = ["DEFAULT_OUT", "generate", "write"]

DEFAULT_OUT = Path("lcm_vectors")   #: where ``write`` puts the files unless told: relative to the current directory


def _inputs(rng, shape, scale=1.0):
    """float32-exact N(0, scale²) values as float64."""
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def _timesteps_groups():
    out = []
    for cfg, cases in cat.timesteps_groups():
        tests = []
        for c in cases:
            req, flags = c["req"], c["flags"]
            try:
                with quiet_warnings():
                    s = ref.set_timesteps(cfg, req.get("num_inference_steps"),
                                          original_inference_steps=req.get("original_inference_steps"),
                                          timesteps=req.get("timesteps"), strength=req.get("strength", 1.0),
                                          profile=c["profile"])
                result = dict(result="valid", expected=dict(timesteps=[int(t) for t in s.timesteps],
                                                            num_inference_steps=int(s.num_inference_steps)))
            except Exception as e:  # noqa: BLE001 - the class is the expected value
                result = dict(result="error", error=type(e).__name__)
                if isinstance(e, StrictError):
                    result["parameter"] = str(e.parameter)
                flags = cat.error_flags(flags, e)
            tests.append(dict(comment=c["comment"], flags=flags, profile=c["profile"],
                              request=encode_request(req), **result))
        out.append(dict(type="TimestepsTest", config=encode_config(cfg), flags=cat.config_flags(cfg), tests=tests))
    return out


def _tables_groups():
    out = []
    for cfg in cat.TABLE_CONFIGS:
        tests = []
        for t in cat.table_probes(cfg.num_train_timesteps):
            c_skip, c_out = ref.boundary_scalings(cfg, t)
            tests.append(dict(comment=f"t = {t}", flags=cat.table_flags(t), t=t, expected=dict(
                betas=hex_float(ref.betas(cfg)[t]), alphas_cumprod=hex_float(ref.alphas_cumprod(cfg)[t]),
                sqrt_alphas_cumprod=hex_float(ref.sqrt_alphas_cumprod(cfg)[t]),
                sqrt_one_minus_alphas_cumprod=hex_float(ref.sqrt_one_minus_alphas_cumprod(cfg)[t]),
                c_skip=hex_float(c_skip), c_out=hex_float(c_out))))
        out.append(dict(type="TablesTest", config=encode_config(cfg), flags=cat.config_flags(cfg),
                        final_alpha_cumprod=hex_float(ref.final_alpha_cumprod(cfg)), tests=tests))
    return out


def _steps_groups():
    out = []
    for g, (comment, cfg, req, options) in enumerate(cat.STEP_GROUPS):
        with quiet_warnings():
            s = ref.set_timesteps(cfg, req.get("num_inference_steps"), timesteps=req.get("timesteps"),
                                  strength=req.get("strength", 1.0))
        ts, n = s.timesteps, s.num_inference_steps
        shape = options.get("shape", (1, 2, 2))
        rng = np.random.default_rng(1000 + g)
        start = options.get("start", 0)
        x = _inputs(rng, shape)
        tests = []
        for k in range(len(ts) - start + options.get("extra_steps", 0)):
            i = start + k
            t = int(ts[min(i, len(ts) - 1)])
            m = _inputs(rng, shape, options.get("scale", 1.0))
            z = None if i == n - 1 else _inputs(rng, shape)
            with np.errstate(all="ignore"):
                r = ref.step(cfg, m, t, x, schedule=ts, noise=z, step_index=i, num_inference_steps=n)
                terms = ref.step_terms(cfg, m, t, x, schedule=ts, noise=z, step_index=i, num_inference_steps=n)
            flags = cat.step_flags(k, i, ts, n, options)
            if not (np.isfinite(r.prev_sample).all() and np.isfinite(r.denoised).all()):
                flags.append("NonFinite")
            tests.append(dict(comment=f"step {i}, t = {t}", flags=flags, step_index=i, timestep=t,
                              sample=hex_floats(x), model_output=hex_floats(m),
                              noise=None if z is None else hex_floats(z),
                              expected=dict(denoised=hex_floats(r.denoised), prev_sample=hex_floats(r.prev_sample),
                                            terms_denoised=hex_floats(terms.denoised),
                                            terms_prev_sample=hex_floats(terms.prev_sample))))
            # the next step's input: the reference's prev_sample rounded to float32 (every input is float32-exact)
            x = np.asarray(r.prev_sample, dtype=np.float64).astype(np.float32).astype(np.float64)
        out.append(dict(type="StepTest", comment=comment, config=encode_config(cfg), flags=cat.config_flags(cfg),
                        request=encode_request(req), schedule=[int(t) for t in ts], num_inference_steps=int(n),
                        shape=list(shape), tests=tests))
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
            tests.append(dict(comment=f"{fn} at t = {ts}", flags=[], function=fn, timesteps=ts, inputs=inputs,
                              expected=hex_floats(want), terms=hex_floats(terms)))
        out.append(dict(type="ForwardTest", config=encode_config(cfg), flags=cat.config_flags(cfg),
                        shape=list(shape), tests=tests))
    return out


def _used_flags(groups):
    return {f for g in groups for f in g["flags"]} | {f for g in groups for t in g["tests"] for f in t["flags"]}


def generate() -> dict:
    """{file name: document} of every vector file, from the reference (deterministic)."""
    docs = {}
    for name, groups in (("timesteps.json", _timesteps_groups()), ("tables.json", _tables_groups()),
                         ("steps.json", _steps_groups()), ("forward.json", _forward_groups())):
        tc = 0
        for grp in groups:
            for i, t in enumerate(grp["tests"]):
                tc += 1
                grp["tests"][i] = {"tcId": tc, **t}
        docs[name] = {"algorithm": "LCMScheduler", "schema": SCHEMA, "formatVersion": FORMAT_VERSION,
                      "generatorVersion": f"lcm_ref {__version__}", "numberOfTests": tc, "header": header(name),
                      "notes": notes_for(_used_flags(groups)), "testGroups": groups}
    return docs


def write(out_dir=DEFAULT_OUT) -> list:
    """Generate every vector file, and the schema, into ``out_dir`` (default ``./lcm_vectors``, relative to the
    current directory), each written atomically. Returns the paths written."""
    out = Path(out_dir)
    texts = {name: to_text(doc) + "\n" for name, doc in generate().items()}
    texts[SCHEMA] = to_text(schema()) + "\n"
    paths = []
    for name, text in texts.items():
        path = write_atomic(out / name, text)
        os.chmod(path, 0o644)      # readable by all, like any installed data file (the temporary file is 0600)
        paths.append(path)
    return paths
