"""The cases the oracle runs: ``Case`` (everything one example needs, as plain data, so that a failure prints as a
literal that ``replay`` rebuilds), the canonical cases (real configs and calls, one feature each) and what each
concern draws (``draw_concern_case``, inside the implementation's region, docs/design.md §9.1)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from hypothesis import strategies as st

from ..config import LCMConfig
from ..numerics import dtype_name, torch_dtype
from . import strategies as lst

@dataclasses.dataclass
class Case:
    """Everything one example needs, as plain data (``to_dict`` is a literal for ``replay``)."""
    config: dict                     # lcm_ref.oracle.strategies.build_config spec
    request: dict                    # lcm_ref.oracle.strategies.schedule_requests
    sample: lst.TensorRecipe         # x at the first step
    model_output: lst.TensorRecipe   # step i uses seed + i
    generator_seed: int              # the torch.Generator passed to step()
    forward: Optional[dict] = None   # {"x0": recipe, "noise": recipe, "timesteps": [...]}
    extra: Optional[dict] = None     # what one conformance concern needs beyond this (lcm_ref.oracle.conform)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sample"], d["model_output"] = self.sample._asdict(), self.model_output._asdict()
        if self.forward:
            d["forward"] = dict(self.forward, x0=self.forward["x0"]._asdict(),
                                noise=self.forward["noise"]._asdict())
        if self.extra is None:
            del d["extra"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        rec = lambda r: r if isinstance(r, lst.TensorRecipe) else lst.TensorRecipe(**dict(r, shape=tuple(r["shape"])))
        fw = d.get("forward")
        if fw:
            fw = dict(fw, x0=rec(fw["x0"]), noise=rec(fw["noise"]))
        return cls(dict(d["config"]), dict(d["request"]), rec(d["sample"]), rec(d["model_output"]),
                   int(d["generator_seed"]), fw, dict(d["extra"]) if d.get("extra") is not None else None)


#: Explicit examples run before the hypothesis draws (as hypothesis' @example): the configurations and calls of
#: docs/design.md §4 that real pipelines make, one feature each, so that every check covers them whatever hypothesis draws.
CANONICAL = (
    ("LCM-SD/SDXL config (inert steps_offset, set_alpha_to_one, spacing), 4 steps: [999, 759, 499, 259]",
     dict(steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading"), dict(num_inference_steps=4), {}),
    ("Marigold-LCM: v_prediction, 4 steps, timestep_scaling 0.1 (c_skip, c_out far from 0 and 1)",
     dict(prediction_type="v_prediction", timestep_scaling=0.1), dict(num_inference_steps=4), {}),
    ("SSD-1B LCM: original_inference_steps 4, 2 steps",
     dict(original_inference_steps=4), dict(num_inference_steps=2), {}),
    ("img2img strength 0.5, 4 steps: [499, 379, 259, 139]",
     {}, dict(num_inference_steps=4, strength=0.5), {}),
    ("strength at the int/round boundary: 50 x 0.51 = 25.5 -> 25 grid points",
     {}, dict(num_inference_steps=3, strength=0.51), {}),
    ("num_inference_steps above int(orig x strength): ValueError",
     {}, dict(num_inference_steps=30, strength=0.5), {}),
    ("custom timesteps ending at 0: the step before re-noises with ᾱ[0]",
     {}, dict(timesteps=[999, 499, 259, 0]), {}),
    ("sample prediction, clip_sample_range 2.5, model outputs beyond it",
     dict(prediction_type="sample", clip_sample=True, clip_sample_range=2.5), dict(num_inference_steps=4),
     dict(scale=4.0)),
    ("dynamic thresholding (ratio 0.995, sample_max_value 10), epsilon",
     dict(thresholding=True, sample_max_value=10.0), dict(num_inference_steps=4), dict(shape=(2, 3, 4, 4))),
    ("zero-SNR with v_prediction, 4 steps from T-1 (ᾱ = 0)",
     dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), dict(num_inference_steps=4), {}),
    ("squaredcos_cap_v2, orig 30 (first timestep 989), 6 steps from index 2 by set_begin_index, int timesteps",
     dict(beta_schedule="squaredcos_cap_v2", original_inference_steps=30),
     dict(num_inference_steps=6, start=2, begin_index=True, timestep_as="int"), {}),
    ("trained_betas, 8 steps, timestep_scaling 1",
     dict(trained_betas={"seed": 0}, timestep_scaling=1.0), dict(num_inference_steps=8), {}),
    ("linear, T = 100, orig 100 (k = 1: the grid reaches 0), 5 steps",
     dict(num_train_timesteps=100, beta_schedule="linear", original_inference_steps=100),
     dict(num_inference_steps=5), {}),
)


def canonical_cases(dtype=torch.float32):
    """The ``CANONICAL`` examples as (comment, Case) pairs, tensors in ``dtype``."""
    dt = str(torch_dtype(dtype)).replace("torch.", "")
    out = []
    for k, (comment, config, request, extra) in enumerate(CANONICAL):
        req = dict(num_inference_steps=None, original_inference_steps=None, timesteps=None, strength=None,
                   start=0, begin_index=False, timestep_as="tensor", extra_steps=0, kind="canonical")
        req.update(request)
        shape = extra.get("shape", (1, 4, 4, 4))
        T = config.get("num_train_timesteps", 1000)
        fw = dict(x0=lst.TensorRecipe(shape, dt, 100 + k, 1.0), noise=lst.TensorRecipe(shape, dt, 200 + k, 1.0),
                  timesteps=[(0, T // 2, T - 1)[i % 3] for i in range(shape[0])])
        out.append((comment, Case(dict(config), req, lst.TensorRecipe(shape, dt, k, 1.0),
                                  lst.TensorRecipe(shape, dt, 50 + k, extra.get("scale", 1.0)), k, fw)))
    return out


def draw_concern_case(data, concern: str, *, dtype=torch.float32, profile="diffusers", support=None) -> Case:
    """One ``Case`` for ``concern`` from hypothesis ``st.data()`` (labelled draws), inside the region ``support``
    (a ``support.Support``; None: anywhere)."""
    dt = dtype_name(dtype)
    post = {"denoised": "none", "prev_sample": "none", "final_step": "none", "noise": "none",
            "clip_threshold": "clip_threshold"}.get(concern)
    spec = data.draw(lst.config_specs(profile=profile, quirks=False, post=post), label="config")
    allow = None
    if support is not None:
        spec = support.project(data, spec)
        allow = support.allowed_requests()
    cfg = lst.build_config(spec)
    if concern in ("timesteps", "original_inference_steps", "strength", "custom_timesteps", "errors"):
        req = data.draw(lst.concern_requests(cfg, concern, profile=profile, allow=allow), label="request")
    else:
        req = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=False, errors=False, allow=allow),
                        label="request")
    shape = data.draw(lst.shapes(min_dims=3 if cfg.thresholding else 1), label="shape")
    sample = data.draw(lst.tensor_recipes(shape, dt), label="sample")
    model_output = data.draw(lst.tensor_recipes(shape, dt), label="model_output")
    gen_seed = data.draw(st.integers(0, 2 ** 31 - 1), label="generator seed")
    fw, extra = None, None
    if concern in ("add_noise", "get_velocity", "dtype"):
        fw = dict(x0=data.draw(lst.tensor_recipes(shape, dt), label="x0"),
                  noise=data.draw(lst.tensor_recipes(shape, dt, scales=st.just(1.0)), label="noise"),
                  timesteps=data.draw(lst.timestep_batches(cfg, shape[0]), label="forward timesteps"))
    if concern == "tables":
        T = cfg.num_train_timesteps
        extra = {"probes": data.draw(st.lists(st.integers(0, T - 1), max_size=3), label="probe timesteps")}
    elif concern == "noise":
        extra = {"generator": data.draw(st.sampled_from(["single", "single", "single", "list"]), label="generator")}
    elif concern == "state":
        req_b = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=False, errors=False), label="request b")
        n = len(req["timesteps"]) if req.get("timesteps") is not None else req["num_inference_steps"]
        extra = {"request_b": req_b, "begin": data.draw(st.integers(0, max(n - 1, 0)), label="begin index")}
    return Case(spec, req, sample, model_output, gen_seed, fw, extra)


def canonical_for(concern, dtype):
    """The canonical cases (check.CANONICAL: real configs, one feature each) that exercise ``concern``."""
    out = []
    for k, (comment, case) in enumerate(canonical_cases(dtype)):
        cfg, req = case.config, case.request
        clipped = cfg.get("clip_sample") or cfg.get("thresholding")
        error = req.get("num_inference_steps") == 30 and req.get("strength") == 0.5
        keep = {
            "config": True, "tables": True, "dtype": not error, "state": not error, "interface": not error,
            "timesteps": not error and req.get("timesteps") is None and req.get("strength") is None,
            "original_inference_steps": "original_inference_steps" in cfg,
            "strength": req.get("strength") is not None,
            "custom_timesteps": req.get("timesteps") is not None,
            "errors": error,
            "denoised": not error and not clipped, "prev_sample": not error and not clipped,
            "final_step": not error, "noise": not error and not clipped, "clip_threshold": bool(clipped),
            "add_noise": True, "get_velocity": True, "previous_timestep": not error,
        }[concern]
        if not keep:
            continue
        case = dataclasses.replace(case)
        if concern == "errors":
            case.request = dict(case.request, kind="error:n_gt_L")
        if concern == "noise":
            case.extra = {"generator": "single"}
        if concern == "state":
            case.extra = {"request_b": dict(case.request, num_inference_steps=1, timesteps=None, strength=None,
                                            start=0, begin_index=False) if req.get("timesteps") is None
                          else dict(case.request), "begin": 1 if len(req.get("timesteps") or [0, 0]) > 1 else 0}
        if concern == "tables":
            case.extra = {"probes": []}
        out.append((f"canonical {k}: {comment}", case))
    if concern == "timesteps":
        # every n of the default config's grid: a selection that differs at some n only (a σ schedule such as
        # sgm_uniform, n = 5, 10, 13–15, …) is found at its smallest n, whatever hypothesis draws
        _, template = canonical_cases(dtype)[0]
        for n in range(1, LCMConfig().original_inference_steps + 1):
            out.append((f"canonical n-sweep: set_timesteps({n}) on the default config",
                        dataclasses.replace(template, config={}, request=dict(template.request,
                                                                               num_inference_steps=n))))
    return out


