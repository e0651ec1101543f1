"""What an implementation accepts: the probe behind conform's support-aware draws (docs/design.md §9.1).

A port that honestly refuses what its UI has no setting for (a timestep_scaling other than 10, non-epsilon
prediction, clip, thresholding, a per-call original_inference_steps) would have most drawn configs refused, and its
concerns would "pass" on a handful of judged examples. So conform first asks the implementation, once, what it
accepts — each config key's candidate values one at a time on top of the default config, then the
``set_timesteps`` keywords and every ``num_inference_steps`` 1 … original_inference_steps on the default config —
and then draws every concern's examples inside that region (``Support.project`` for configs, ``allow`` of the
request strategies for requests).

Only a refusal on purpose narrows the region (``conform.refusal``: NotImplementedError, or a TypeError /
ValueError that names the key): a value whose constructor or first step *crashes* stays in the region, so the
concern that draws it fails with the traceback instead of being drawn around.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
from hypothesis import strategies as st

from ..config import LCMConfig
from ..errors import quiet
from . import strategies as lst
from .compare import abbreviate, call
from .example import CaseTimeout, time_limit

__all__ = ["CANDIDATES", "REQUEST_PROBES", "Support", "probe"]

#: values probed per config key, each alone on top of the default config (the default itself is probed first);
#: chosen so that each covers one branch of the algorithm: T not a multiple of the original steps (1001, 1037),
#: every schedule, prediction type and post-processing, decades of timestep_scaling, small and large grids.
CANDIDATES = {
    "num_train_timesteps": (1001, 1037, 950, 500, 100),
    "beta_schedule": ("linear", "squaredcos_cap_v2"),
    "trained_betas": ({"seed": 0},),
    "beta_start": (0.0001,),
    "beta_end": (0.02,),
    "prediction_type": ("v_prediction", "sample"),
    "timestep_scaling": (1.0, 0.1, 100.0),
    "original_inference_steps": (30, 4, 100),
    "clip_sample": (True,),
    "thresholding": (True,),
    "rescale_betas_zero_snr": (True,),
    "set_alpha_to_one": (False,),
    "steps_offset": (1,),
    "timestep_spacing": ("linspace", "trailing"),
}
_DEFAULT = LCMConfig().to_dict()
#: the keys whose values come with companions in a spec (drawn together, refused together)
COMPANIONS = {"clip_sample": ("clip_sample_range",),
              "thresholding": ("dynamic_thresholding_ratio", "sample_max_value"),
              "beta_start": ("beta_end",), "beta_end": ("beta_start",)}
#: set_timesteps keywords probed on the default config (the request's own keys name the keyword refused)
REQUEST_PROBES = {
    "original_inference_steps": dict(num_inference_steps=4, original_inference_steps=30),
    "strength": dict(num_inference_steps=4, strength=0.5),
    "timesteps": dict(timesteps=[999, 759, 499, 259]),
}


@dataclasses.dataclass
class Support:
    """The region an implementation accepts. ``default``: None when the default config is accepted, else why not;
    ``accepted`` / ``refused``: per config key, the probed values accepted / refused (value -> reason);
    ``requests``: per set_timesteps keyword of ``REQUEST_PROBES``, None (accepted) or the refusal; ``steps``: the
    ``num_inference_steps`` accepted on the default config."""
    default: Optional[str] = None
    accepted: dict = dataclasses.field(default_factory=dict)
    refused: dict = dataclasses.field(default_factory=dict)
    requests: dict = dataclasses.field(default_factory=dict)
    steps: tuple = ()

    # --- the region -------------------------------------------------------------------------------------------
    def allows(self, key) -> bool:
        """Does the implementation accept any non-default value of config key ``key``?"""
        return not self.refused.get(key) or bool(self.accepted.get(key))

    def allowed_requests(self) -> frozenset:
        return frozenset(k for k, why in self.requests.items() if why is None)

    def contains(self, spec: dict, request: Optional[dict] = None) -> bool:
        """Is a config spec (and a request) inside the region? (For the canonical cases: one outside is not run.)"""
        for key, value in spec.items():
            if key in CANDIDATES and (not self.allows(key) or repr(value) in self.refused.get(key, {})):
                return False
        req = request or {}
        return not any(req.get(k) is not None and why is not None for k, why in self.requests.items())

    def concern_refused(self, concern) -> Optional[str]:
        """Why the whole concern lies outside the region (it is then ``unsupported``), or None."""
        if self.default is not None:
            return None                   # nothing is accepted: the concerns say so one by one (inconclusive)
        if concern == "clip_threshold" and not self.allows("clip_sample") and not self.allows("thresholding"):
            return ("clip_sample=True and thresholding=True are both refused: "
                    f"{self._why('clip_sample')}; {self._why('thresholding')}")
        needs = {"strength": "strength", "custom_timesteps": "timesteps"}.get(concern)
        if needs and self.requests.get(needs) is not None:
            return f"set_timesteps({needs}=...) is refused: {self.requests[needs]}"
        return None

    def _why(self, key):
        return next(iter(self.refused.get(key, {}).values()), "")

    def project(self, data, spec: dict) -> dict:
        """``spec`` (a drawn config spec) moved into the region: a key none of whose probed non-default values is
        accepted goes back to its default (with its companions); a categorical value that was refused is replaced by
        an accepted one, drawn from ``data``."""
        spec = dict(spec)
        for key in list(spec):
            if key not in spec or key not in CANDIDATES:
                continue
            value = spec[key]
            if not self.allows(key):
                if key == "trained_betas":
                    schedules = [s for s in ("scaled_linear",) + CANDIDATES["beta_schedule"]
                                 if s == "scaled_linear" or s in self.accepted.get("beta_schedule", {})]
                    spec.pop(key)
                    spec["beta_schedule"] = data.draw(st.sampled_from(schedules), label="beta_schedule (region)")
                    continue
                for k in (key,) + COMPANIONS.get(key, ()):
                    spec.pop(k, None)
            elif isinstance(value, (str, bool)) and repr(value) in self.refused.get(key, {}):
                options = [_DEFAULT[key]] + list(self.accepted.get(key, {}).values())
                spec[key] = data.draw(st.sampled_from(options), label=f"{key} (region)")
                if spec[key] == _DEFAULT[key]:
                    spec.pop(key)
                    for k in COMPANIONS.get(key, ()):
                        spec.pop(k, None)
        if spec.get("beta_schedule") == "scaled_linear":
            spec.pop("beta_schedule")
        return spec

    # --- the report -------------------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line per narrowing: what was refused, and so left out of the draws."""
        if self.default is not None:
            return f"the default config is refused: {self.default}"
        lines = []
        for key, refused in self.refused.items():
            kept = list(self.accepted.get(key, {}))
            what = ", ".join(refused)
            lines.append(f"{key}: refused {what} ({abbreviate(next(iter(refused.values())), 160)})"
                         + (f"; accepted {', '.join(kept)}" if kept else "; drawn at its default only"))
        for key, why in self.requests.items():
            if why is not None:
                lines.append(f"set_timesteps({key}=...): refused ({abbreviate(why, 160)})")
        if self.steps:
            lines.append(f"num_inference_steps accepted on the default config: "
                         f"{_ranges(self.steps)}")
        return "\n".join(lines) if lines else "everything probed is accepted"

    def to_dict(self) -> dict:
        return {"default_refused": self.default, "accepted": {k: list(v) for k, v in self.accepted.items()},
                "refused": {k: {v: abbreviate(r, 200) for v, r in d.items()} for k, d in self.refused.items()},
                "requests_refused": {k: abbreviate(v, 200) for k, v in self.requests.items() if v is not None},
                "num_inference_steps": _ranges(self.steps)}


def _ranges(values) -> str:
    """[1, 2, 3, 5] -> "1–3, 5"."""
    out, values = [], sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}–{values[j]}")
        i = j + 1
    return ", ".join(out)


def _spec_for(key, value) -> dict:
    spec = {key: value}
    if key == "clip_sample":
        spec["clip_sample_range"] = 2.5
    return spec


def probe(factory: Callable, refusal: Callable, *, device="cpu", dtype=torch.float32,
          timeout_s: Optional[float] = None) -> Support:
    """Ask ``factory`` what it accepts (module docstring). ``refusal(exc, keys)`` decides what counts as a refusal
    on purpose (conform's rule). Each probed config is built and, where set_timesteps(2) runs, stepped once (a
    NotImplementedError from step narrows the region too). Each attempt runs under ``timeout_s``: one that hangs
    stays in the region (the concerns report the hang), and if the default config's own step hangs, no step is
    probed."""
    sup = Support()
    default = LCMConfig().to_dict()

    step_probe = [True]          # off when the default config's own step is refused: a step refusal then says
                                 # nothing about a config (the step concerns report it)

    def attempt(config: dict, keys) -> Optional[str]:
        """None if accepted (or crashing or hanging: those stay in the region), else the refusal."""
        try:
            with time_limit(timeout_s):
                return attempt_once(config, keys)
        except CaseTimeout:
            return None

    def attempt_once(config: dict, keys) -> Optional[str]:
        sched, exc = call(lambda: factory(**config))
        if exc is not None:
            return f"{type(exc).__name__}: {exc}" if refusal(exc, keys) else None
        _, exc = call(lambda: sched.set_timesteps(2, device=device))
        if exc is None:
            if not step_probe[0]:
                return None
            x = torch.zeros((1, 2), dtype=dtype, device=device)
            gen = torch.Generator(device).manual_seed(0)
            _, exc = call(lambda: sched.step(x, sched.timesteps[0], x, generator=gen))
            if isinstance(exc, NotImplementedError):
                return f"{type(exc).__name__}: {exc}"
        elif refusal(exc, keys):
            return f"{type(exc).__name__}: {exc}"
        return None

    with quiet():
        try:
            with time_limit(timeout_s):
                attempt_once(default, tuple(default))
        except CaseTimeout:
            step_probe[0] = False                   # the default config's step hangs: probe without stepping
        why = attempt(default, tuple(default))
        if why is not None and why.startswith("NotImplementedError") and call(lambda: factory(**default))[1] is None:
            step_probe[0] = False                   # the constructor accepts it; only its step refuses
            why = attempt(default, tuple(default))
        if why is not None:
            sup.default = why
            return sup
        for key, values in CANDIDATES.items():
            for value in values:
                spec = _spec_for(key, value)
                if key == "rescale_betas_zero_snr":
                    # zero-SNR goes with v or sample prediction (epsilon divides by ᾱ[T−1] = 0, quirk 3)
                    preds = [v for v in sup.accepted.get("prediction_type", {}).values()]
                    if not preds:
                        sup.refused.setdefault(key, {})[repr(value)] = (
                            "not probed: zero-SNR needs v_prediction or sample prediction (epsilon divides by "
                            "ᾱ[T−1] = 0), and both are refused")
                        continue
                    spec["prediction_type"] = preds[0]
                why = attempt(lst.build_config(spec).to_dict(), tuple(spec))
                bucket = sup.accepted if why is None else sup.refused
                bucket.setdefault(key, {})[repr(value)] = value if why is None else why
        for key, kw in REQUEST_PROBES.items():
            sched, exc = call(lambda: factory(**default))
            _, exc = call(lambda: sched.set_timesteps(device=device, **kw))
            sup.requests[key] = (f"{type(exc).__name__}: {exc}" if exc is not None and refusal(exc, tuple(kw))
                                 else None)
        orig = default["original_inference_steps"]
        ok = []
        for n in range(1, orig + 1):
            _, exc = call(lambda: sched.set_timesteps(n, device=device))
            if exc is None or not refusal(exc, ("num_inference_steps",)):
                ok.append(n)
        sup.steps = tuple(ok)
    for key in list(sup.refused):
        if not sup.refused[key]:
            del sup.refused[key]
    return sup
