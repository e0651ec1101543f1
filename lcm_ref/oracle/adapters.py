"""Adapters: point ``conform`` / ``check`` at real LCM code whose interface is not quite diffusers' current one
(docs/design.md §9.4).

``conform(factory)`` drives ``factory(**LCMConfig.to_dict())`` through diffusers' current ``LCMScheduler`` interface:
``set_timesteps(num_inference_steps=..., device=..., original_inference_steps=..., timesteps=..., strength=...)``,
``.timesteps``, ``step(model_output, timestep, sample, generator=...)`` returning ``(prev_sample, denoised)`` or an
object with those attributes. Three adapters bridge the rest:

- ``diffusers_compat(cls)``: a diffusers-style scheduler class of any release from 0.22 on (or any class with that
  shape). Constructor keywords the class does not take are dropped where the value asked for is the one the class
  has built in (``timestep_scaling=10`` on 0.22, which hard-codes ``t/0.1``) and refused otherwise, so conform
  reports ``unsupported`` for the configs that need them and checks everything else; ``set_timesteps`` keywords
  the class lacks are dropped at their neutral value (``strength=1``, ``original_inference_steps`` equal to the
  config's) and refused otherwise (custom ``timesteps=`` before 0.24: ``unsupported``); a ``step`` that returns a
  bare tensor, a 1-tuple or an object without ``denoised`` is read as ``(prev_sample, None)`` (concern verdicts
  then say ``not_observable`` where denoised is needed).
- ``port(factory, step=...)``: a port whose ``step`` takes other arguments (``step(model_output, step_index,
  timestep, sample)``, an explicit noise tensor, ...). You write the one call that translates; the adapter keeps
  diffusers' step index (first-step lookup or ``set_begin_index``, reset by ``set_timesteps``) and hands your
  function the generator, from which ``diffusers_noise`` draws the z diffusers would draw.
- ``k_diffusion(sampler, model_sampling=...)``: a k-diffusion-style sampler (ComfyUI ``sample_lcm``, A1111/Forge),
  ``sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None)``, behind a
  diffusers-like facade: ``set_timesteps`` builds σ from the float32 ᾱ (or the sampler's own ``sigmas=``
  schedule), ``step`` runs one sampler step on ``sigmas[i:i+2]`` with a model that returns the given model output
  through the model-sampling object (which applies c_skip / c_out, the code under test), reads ``denoised``
  through the callback (a copy, taken at once) and injects diffusers' noise through the noise sampler;
  ``wrap_model=`` hands a sampler that reaches into its model object what it expects (``comfyui_model``).

Each factory carries ``concerns``: the concerns of ``lcm_ref.oracle.conform.CONCERNS`` its shape can express (pass
``concerns=factory.concerns`` to ``conform``); the others are not applicable, not failures.

Worked example: a port with ``step(model_output, step_index, timestep, sample, noise)`` (tests/test_adapters.py
runs this):

    import torch
    from lcm_ref.oracle.adapters import diffusers_noise, port
    from lcm_ref.oracle.conform import conform

    class MyPort:                       # the code under test: its own signature
        def __init__(self, **config): ...
        def set_timesteps(self, num_inference_steps, device=None): ...   # sets self.timesteps
        def step(self, model_output, step_index, timestep, sample, noise=None): ...  # -> (prev, denoised)

    def my_step(sched, model_output, timestep, sample, *, step_index, generator):
        last = step_index == len(sched.timesteps) - 1
        noise = None if last else diffusers_noise(model_output, generator)
        return sched.step(model_output, step_index, timestep, sample, noise=noise)

    factory = port(MyPort, step=my_step)
    print(conform(factory, concerns=factory.concerns))

The noise is drawn only where diffusers draws it (not on the last step), so that a shared generator advances as
diffusers' does.
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig
from ..torch_impl.noise import draw_noise

__all__ = ["StepOutput", "diffusers_compat", "CompatFactory", "port", "PortFactory", "k_diffusion",
           "KDiffusionFactory", "ComfyUIModel", "comfyui_model", "diffusers_noise", "missing_keywords", "ALL_CONCERNS",
           "KDIFFUSION_CONCERNS", "KDIFFUSION_OWN_SCHEDULE_CONCERNS", "TCD_CONCERNS", "TCD_NOT_APPLICABLE"]

#: every concern (``lcm_ref.oracle.conform.CONCERNS``; repeated here so that this module does not import conform)
ALL_CONCERNS = ("config", "timesteps", "original_inference_steps", "strength", "custom_timesteps", "tables",
                "denoised", "prev_sample", "final_step", "noise", "dtype", "clip_threshold", "add_noise",
                "get_velocity", "previous_timestep", "errors", "state", "interface")

#: What a k-diffusion-style sampler can be judged on through ``k_diffusion``: the schedule the model sees
#: (``model_sampling.timestep`` of each σ), each step's denoised and re-noising, the final step, the noise it
#: takes from the noise sampler, output dtype, clip/threshold where the model sampling does them. Not applicable:
#: ``tables`` (no ᾱ/c_skip/c_out interface), ``add_noise``/``get_velocity`` (not part of a sampler),
#: ``previous_timestep``, ``errors``, ``state`` and ``interface`` (they would judge the facade's own bookkeeping and
#: attributes, not the port).
KDIFFUSION_CONCERNS = ("config", "timesteps", "original_inference_steps", "strength", "custom_timesteps",
                       "denoised", "prev_sample", "final_step", "noise", "dtype", "clip_threshold")

#: ``k_diffusion(..., sigmas=...)``: a sampler on its own sigma schedule, which takes n alone, so the concerns of
#: the other ``set_timesteps`` keywords (``original_inference_steps``, ``strength``, ``custom_timesteps``) have
#: nothing to judge.
KDIFFUSION_OWN_SCHEDULE_CONCERNS = tuple(c for c in KDIFFUSION_CONCERNS
                                         if c not in ("original_inference_steps", "strength", "custom_timesteps"))

#: diffusers' ``TCDScheduler`` (≥ 0.27) shares LCMScheduler's constructor, grid, tables, forward functions and
#: bookkeeping, but not its step: TCD steps from x_t to an intermediate s = floor((1 − η)·t_prev) with a DDIM
#: update (no c_skip / c_out; its second output is ``pred_noised_sample``, not a consistency ``denoised``), then
#: re-noises from s to t_prev; its last step returns x_s at s = 0, not x0. So the step-value concerns below are
#: different *by design* and not applicable; everything else is the same contract and is judged.
TCD_NOT_APPLICABLE = {
    "denoised": "TCD has no consistency output: no c_skip/c_out, and its second output is pred_noised_sample",
    "prev_sample": "TCD re-noises from the intermediate s = floor((1 − η)·t_prev) with DDIM coefficients, by design",
    "final_step": "TCD's last step returns x_s at s = 0 (√ᾱ₀·x0 + √(1 − ᾱ₀)·ε), not x0, by design",
    "clip_threshold": "judged on LCM's denoised, which TCD does not compute",
    "interface": "TCD's step returns (prev_sample, pred_noised_sample), not LCMSchedulerOutput's (prev_sample, "
                 "denoised) that the interface concern requires",
}
TCD_CONCERNS = tuple(c for c in ALL_CONCERNS if c not in TCD_NOT_APPLICABLE)


class StepOutput(NamedTuple):
    """What an adapted ``step`` returns: a tuple ``(prev_sample, denoised)`` with those attributes too
    (``denoised`` None where the implementation does not expose it)."""
    prev_sample: object
    denoised: object = None


def diffusers_noise(like: torch.Tensor, generator=None, dtype=None) -> torch.Tensor:
    """The z diffusers' ``LCMScheduler.step`` draws for ``model_output=like``:
    ``randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)`` (``dtype`` overrides),
    reproduced by ``lcm_ref.torch_impl.noise.draw_noise`` (one generator, or a list of one per batch element)."""
    return draw_noise(tuple(like.shape), generator, like.device, like.dtype if dtype is None else dtype)


def _read_output(out, with_denoised=True) -> StepOutput:
    """(prev_sample, denoised) of whatever a step returned: a tensor, a tuple/list, or an output object."""
    if out is None:
        return None
    if isinstance(out, torch.Tensor):
        return StepOutput(out, None)
    if isinstance(out, (tuple, list)):
        prev = out[0] if len(out) else None
        den = out[1] if len(out) > 1 and with_denoised else None
        return StepOutput(prev, den)
    prev = getattr(out, "prev_sample", None)
    den = getattr(out, "denoised", None) if with_denoised else None
    return StepOutput(prev, den)


def _parameters(fn):
    """(names of the keyword-passable parameters, accepts **kwargs) of a callable; (None, True) if unknown."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, True
    names, var_kw = set(), False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, var_kw


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def missing_keywords(cls) -> dict:
    """What a diffusers-style class lacks of the current interface: ``{"constructor": [...], "set_timesteps":
    [...], "methods": [...]}`` (empty lists when it has everything; the matrix uses it to decide whether the
    compat adapter is needed)."""
    init, init_kw = _parameters(cls.__init__ if isinstance(cls, type) else cls)
    st, st_kw = _parameters(getattr(cls, "set_timesteps", None)) if hasattr(cls, "set_timesteps") else (set(), False)
    keys = LCMConfig().to_dict()
    return {
        "constructor": [] if init_kw else [k for k in keys if k not in init],
        "set_timesteps": [] if st_kw else [k for k in ("num_inference_steps", "device", "original_inference_steps",
                                                       "timesteps", "strength") if k not in st],
        "methods": [m for m in ("previous_timestep", "set_begin_index", "get_scalings_for_boundary_condition_discrete",
                                "add_noise", "get_velocity") if not hasattr(cls, m)],
    }


# ---------------------------------------------------------------------------------------------------------------
# diffusers releases and look-alikes
# ---------------------------------------------------------------------------------------------------------------

class _Proxy:
    """Forwards every attribute it does not define to the wrapped scheduler ``_inner``."""

    def __init__(self, inner):
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_inner"), name)

    def __setattr__(self, name, value):
        if name in type(self).__dict__ or name.startswith("_adapter_"):
            object.__setattr__(self, name, value)
        else:
            setattr(object.__getattribute__(self, "_inner"), name, value)

    def __len__(self):
        return len(object.__getattribute__(self, "_inner"))

    def __repr__(self):
        return f"<{type(self).__name__} of {object.__getattribute__(self, '_inner')!r}>"


class CompatScheduler(_Proxy):
    """A scheduler built by ``CompatFactory``: the class's own object, with ``set_timesteps`` and ``step`` mapped to
    the current interface; every other attribute is the object's own."""

    def __init__(self, inner, factory: "CompatFactory", config: dict):
        super().__init__(inner)
        object.__setattr__(self, "_adapter_factory", factory)
        object.__setattr__(self, "_adapter_config", config)

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0, **more):
        f = self._adapter_factory
        asked = dict(num_inference_steps=num_inference_steps, device=device,
                     original_inference_steps=original_inference_steps, timesteps=timesteps, strength=strength, **more)
        neutral = {"strength": 1.0, "device": None, "timesteps": None, "num_inference_steps": None,
                   "original_inference_steps": self._adapter_config.get("original_inference_steps")}
        kwargs = {}
        for key, value in asked.items():
            if value is None and key != "num_inference_steps":
                continue
            name = f.rename.get(key, key)
            if f.set_timesteps_names is None or f.set_timesteps_var_kw or name in f.set_timesteps_names:
                if value is not None:
                    kwargs[name] = value
                continue
            if key == "device" or (key in neutral and (value is None or _same(value, neutral[key]))):
                continue                # the class does what it is asked without the keyword
            raise NotImplementedError(f"{f.name}.set_timesteps has no keyword {name!r}: {key}={value!r} cannot be "
                                      "passed (only its built-in behaviour)")
        return self._inner.set_timesteps(**kwargs)

    def step(self, model_output, timestep, sample, generator=None, return_dict=True, **more):
        f = self._adapter_factory
        kwargs = dict(f.step_kwargs)
        kwargs.update(more)
        if generator is not None:
            if f.step_names is None or f.step_var_kw or "generator" in f.step_names:
                kwargs["generator"] = generator
            # else: the class cannot take a generator; concern noise judges what it draws instead
        out = _read_output(self._inner.step(model_output, timestep, sample, **kwargs), f.denoised)
        return out if return_dict or out is None else tuple(out)


class CompatFactory:
    """``factory(**config)`` for a diffusers-style class of another release (``diffusers_compat``). Attributes:
    ``cls``; ``missing`` (``missing_keywords(cls)``); ``implied`` (the value the class has built in for each
    constructor keyword it lacks); ``dropped`` (keyword -> values dropped so far because they equal the built-in);
    ``concerns`` (those conform should judge); ``name``."""

    def __init__(self, cls, *, implied=None, rename=None, denoised=True, step_kwargs=None, concerns=None, name=None):
        self.cls = cls
        self.name = name or getattr(cls, "__qualname__", getattr(cls, "__name__", repr(cls)))
        self.missing = missing_keywords(cls)
        defaults = LCMConfig().to_dict()
        self.implied = {k: defaults[k] for k in self.missing["constructor"]}
        self.implied.update(implied or {})
        self.rename = dict(rename or {})
        self.denoised = bool(denoised)
        self.step_kwargs = dict(step_kwargs or {})
        self.concerns = tuple(concerns) if concerns is not None else ALL_CONCERNS
        self.dropped: dict = {}
        self.init_names, self.init_var_kw = _parameters(cls.__init__ if isinstance(cls, type) else cls)
        self.set_timesteps_names, self.set_timesteps_var_kw = _parameters(getattr(cls, "set_timesteps", None))
        self.step_names, self.step_var_kw = _parameters(getattr(cls, "step", None))
        self.__doc__ = f"diffusers_compat({self.name})"

    def __call__(self, **config):
        kwargs = {}
        for key, value in config.items():
            if self.init_names is None or self.init_var_kw or key in self.init_names:
                kwargs[key] = value
            elif key in self.implied and _same(value, self.implied[key]):
                self.dropped.setdefault(key, set()).add(repr(value))
            else:
                built_in = (f" (it behaves as {key}={self.implied[key]!r})" if key in self.implied else "")
                raise NotImplementedError(f"{self.name} has no constructor keyword {key!r}{built_in}: "
                                          f"{key}={value!r} cannot be honoured")
        inner = self.cls(**kwargs)
        return CompatScheduler(inner, self, dict(config))

    def __repr__(self):
        return f"diffusers_compat({self.name})"


def diffusers_compat(cls, *, implied: Optional[dict] = None, rename: Optional[dict] = None, denoised: bool = True,
                     step_kwargs: Optional[dict] = None, concerns=None, name: Optional[str] = None) -> CompatFactory:
    """Wrap a diffusers-style scheduler class of any release (0.22 on) into a factory ``conform`` drives.

    - Constructor keywords the class does not take: dropped when the value asked for is ``implied[key]`` (default:
      lcm_ref's default for the key, which is diffusers' — ``timestep_scaling=10.0`` is what 0.22 hard-codes), else
      ``NotImplementedError`` naming key and value, which conform reports as ``unsupported`` (concern ``config``
      lists what was refused; the other concerns skip those configs and judge the rest).
    - ``set_timesteps`` keywords the class does not take (``timesteps`` before 0.24): dropped at their neutral value
      (``strength=1.0``, ``original_inference_steps`` equal to the config's, ``device=None``), else
      ``NotImplementedError`` (``unsupported``). ``rename`` maps current names to the class's (e.g.
      ``{"original_inference_steps": "lcm_origin_steps"}`` for the authors' original scheduler).
    - ``step``: ``generator`` passed only if the class takes it (if not, concern ``noise`` judges what it draws);
      ``step_kwargs`` added to every call (``{"eta": 0.3}``); the result read as ``(prev_sample, denoised)`` from a
      tensor, a tuple or an output object; ``denoised=False`` declares that the second output is something else
      (TCD's ``pred_noised_sample``) and reports it as not exposed.

    Behaviour is never excused: 0.22's stride selection still fails ``timesteps``, its final-step noise
    ``final_step``."""
    return CompatFactory(cls, implied=implied, rename=rename, denoised=denoised, step_kwargs=step_kwargs,
                         concerns=concerns, name=name)


# ---------------------------------------------------------------------------------------------------------------
# Ports with another step signature
# ---------------------------------------------------------------------------------------------------------------

class _StepIndex:
    """diffusers' step-index bookkeeping (docs/design.md §4.3): the first ``step`` looks its timestep up in the
    schedule (the second match if it occurs twice) unless ``set_begin_index`` fixed the start; then it counts;
    ``set_timesteps`` clears both."""

    def __init__(self):
        self.step_index = None
        self.begin_index = None

    def reset(self):
        self.step_index = None
        self.begin_index = None

    def current(self, timesteps, timestep) -> int:
        if self.step_index is None:
            if self.begin_index is not None:
                self.step_index = int(self.begin_index)
            else:
                ts = np.asarray(timesteps.detach().cpu() if hasattr(timesteps, "detach") else timesteps)
                t = int(timestep.item() if hasattr(timestep, "item") else timestep)
                hits = np.flatnonzero(ts == t)
                if not len(hits):
                    raise IndexError(f"timestep {t} is not in the schedule {ts.tolist()}")
                self.step_index = int(hits[1] if len(hits) > 1 else hits[0])
        return self.step_index


class PortScheduler(_Proxy):
    """A scheduler built by ``PortFactory``: the port's object, with diffusers' ``set_timesteps``/``step``
    interface and step-index bookkeeping (``step_index``, ``begin_index``, ``set_begin_index``)."""

    def __init__(self, inner, factory: "PortFactory"):
        super().__init__(inner)
        object.__setattr__(self, "_adapter_factory", factory)
        object.__setattr__(self, "_adapter_index", _StepIndex())

    @property
    def step_index(self):
        return self._adapter_index.step_index

    @property
    def begin_index(self):
        return self._adapter_index.begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._adapter_index.begin_index = begin_index

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        f = self._adapter_factory
        kwargs = {k: v for k, v in kwargs.items() if v is not None and not (k == "strength" and v == 1.0)}
        if f.set_timesteps is not None:
            out = f.set_timesteps(self._inner, num_inference_steps, device=device, **kwargs)
        else:
            if num_inference_steps is not None:
                kwargs["num_inference_steps"] = num_inference_steps
            names, var_kw = _parameters(self._inner.set_timesteps)
            if device is not None and (var_kw or (names and "device" in names)):
                kwargs["device"] = device
            out = self._inner.set_timesteps(**kwargs)
        self._adapter_index.reset()
        return out

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        f = self._adapter_factory
        i = self._adapter_index.current(self._inner.timesteps, timestep)
        out = _read_output(f.step(self._inner, model_output, timestep, sample, step_index=i, generator=generator),
                           f.denoised)
        self._adapter_index.step_index = i + 1
        return out if return_dict or out is None else tuple(out)


class PortFactory:
    """``factory(**config)`` for a port with another ``step`` signature (``port``)."""

    def __init__(self, factory, step, set_timesteps=None, denoised=True, concerns=None, name=None):
        self.factory, self.step, self.set_timesteps, self.denoised = factory, step, set_timesteps, denoised
        self.concerns = tuple(concerns) if concerns is not None else ALL_CONCERNS
        self.name = name or getattr(factory, "__qualname__", getattr(factory, "__name__", repr(factory)))

    def __call__(self, **config):
        return PortScheduler(self.factory(**config), self)

    def __repr__(self):
        return f"port({self.name})"


def port(factory: Callable, *, step: Callable, set_timesteps: Optional[Callable] = None, denoised: bool = True,
         concerns=None, name: Optional[str] = None) -> PortFactory:
    """Wrap a port whose ``step`` (or ``set_timesteps``) signature differs from diffusers' (the recipe of
    docs/design.md §9.4; module docstring for a worked example).

    ``factory(**config)`` builds the port's object; it must expose ``timesteps`` after its ``set_timesteps``.
    ``step(obj, model_output, timestep, sample, *, step_index, generator)`` calls the port's own step and returns
    what it returns (a tensor, a tuple ``(prev_sample[, denoised])`` or an object with those attributes);
    ``step_index`` is diffusers' (first-step lookup or ``set_begin_index``, reset by ``set_timesteps``), and
    ``diffusers_noise(model_output, generator)`` gives the z diffusers would draw, for a port that takes the noise as
    an argument. ``set_timesteps(obj, num_inference_steps, *, device, **request)`` (optional) translates the
    schedule call; by default the port's ``set_timesteps`` gets the same keywords (``strength=1`` dropped).
    Raise ``NotImplementedError`` in either for what the port cannot do: conform reports it ``unsupported``."""
    return PortFactory(factory, step, set_timesteps, denoised, concerns, name)


# ---------------------------------------------------------------------------------------------------------------
# k-diffusion-style samplers
# ---------------------------------------------------------------------------------------------------------------

def reference_sigmas(config: LCMConfig, timesteps) -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) of ``timesteps`` from the float32 ᾱ (the table diffusers and the k-diffusion ports
    store), evaluated in float64 and rounded once to float32, as float64 values."""
    abar = np.float32(np.asarray(ref.alphas_cumprod(config))[np.asarray(timesteps, dtype=np.int64)]).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.float32(np.sqrt((1.0 - abar) / abar)).astype(np.float64)


class KDiffusionScheduler:
    """The diffusers-like facade of ``k_diffusion``: see there. ``sigmas`` (float64 values of the float32 σ, the
    last 0) and ``timesteps`` (what the model sees: ``model_sampling.timestep(σ)``) after ``set_timesteps``."""

    def __init__(self, factory: "KDiffusionFactory", config: dict):
        self._factory = factory
        self.config = dict(config)
        self.lcm_config = LCMConfig(**config)
        self.model_sampling = factory.model_sampling(self.lcm_config)
        self.sigmas = None
        self.timesteps = None
        self.num_inference_steps = None
        self._index = _StepIndex()
        self.init_noise_sigma = 1.0

    # --- schedule --------------------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0):
        f = self._factory
        device = torch.device(device) if device is not None else torch.device("cpu")
        if f.sigmas is not None:
            asked = {k: v for k, v in (("original_inference_steps", original_inference_steps),
                                       ("timesteps", timesteps), ("strength", strength))
                     if v is not None and not (k == "strength" and v == 1.0)}
            if asked:
                schedule = getattr(f.sigmas, "__qualname__", type(f.sigmas).__name__)
                raise NotImplementedError(f"the sampler's own sigma schedule ({schedule}) takes num_inference_steps "
                                          f"alone: {', '.join(asked)} cannot be passed")
            sig = np.asarray(f.sigmas(self.model_sampling, num_inference_steps), dtype=np.float64)
            if sig[-1] != 0:
                sig = np.append(sig, 0.0)
        else:
            sched = ref.set_timesteps(self.lcm_config, num_inference_steps, timesteps=timesteps, strength=strength,
                                      original_inference_steps=original_inference_steps)
            sig = np.append(reference_sigmas(self.lcm_config, sched.timesteps), 0.0)
        s32 = torch.tensor(sig, dtype=torch.float32)
        seen = self.model_sampling.timestep(s32[:-1])
        self.sigmas = sig
        self.timesteps = torch.as_tensor(seen).to(dtype=torch.long).reshape(-1).to(device)
        self.num_inference_steps = len(self.timesteps)
        self._index.reset()

    @property
    def step_index(self):
        return self._index.step_index

    @property
    def begin_index(self):
        return self._index.begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._index.begin_index = begin_index

    # --- one step ---------------------------------------------------------------------------------------------
    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.sigmas is None:
            raise ValueError("set_timesteps must be called before step")
        i = self._index.current(self.timesteps, timestep)
        if i + 1 >= len(self.sigmas):
            raise ValueError(f"step {i} is past the end of the schedule ({len(self.sigmas) - 1} steps)")
        s_i, s_next = self.sigmas[i], self.sigmas[i + 1]
        dt = sample.dtype
        # VP -> VE: x/√ᾱ = x·√(1 + σ²), in float64 and rounded once to the sample's dtype
        x_ve = (sample.to(torch.float64) * math.sqrt(1.0 + s_i * s_i)).to(dt)
        seen = {}
        ms = self.model_sampling

        def model(x, sigma, **extra):
            seen["t"] = ms.timestep(sigma)
            seen["input"] = ms.calculate_input(sigma, x)          # what the U-Net would see (= the VP sample)
            return ms.calculate_denoised(sigma, model_output, x)

        def callback(d):
            # copied now: a sampler may go on to change the very tensor it reports (A1111: x = denoised;
            # x += σ·z, in place), and what was reported is what it was at this moment
            seen["denoised"] = _snapshot(d.get("denoised"))
            seen["x"] = _snapshot(d.get("x"))

        def noise_sampler(sigma, sigma_next):
            seen["noise_calls"] = seen.get("noise_calls", 0) + 1
            return diffusers_noise(model_output, generator, dtype=dt)

        sigmas = torch.tensor([s_i, s_next], dtype=torch.float32, device=sample.device)
        wrap = self._factory.wrap_model
        handed = model if wrap is None else wrap(model, ms)
        try:
            out = self._factory.sampler(handed, x_ve, sigmas, extra_args={}, callback=callback, disable=True,
                                        noise_sampler=noise_sampler)
        except AttributeError as exc:
            if wrap is None and "object has no attribute" in str(exc) and len(exc.args) == 1:
                # the same AttributeError, its traceback kept (a crash inside step, not a refusal), with the way
                # out named in its message
                exc.args = (f"{exc.args[0]} (the sampler reaches into its model object, which is a bare function "
                            "here: pass k_diffusion(..., wrap_model=...) to hand it the object it expects; "
                            "adapters.comfyui_model for ComfyUI's sample_lcm)",)
            raise
        self._index.step_index = i + 1
        if not isinstance(out, torch.Tensor):
            return StepOutput(out, seen.get("denoised"))
        # VE -> VP: x·√ᾱ_next = x/√(1 + σ_next²), in float64, rounded once to the sampler's output dtype
        prev = out if s_next == 0 else (out.to(torch.float64) / math.sqrt(1.0 + s_next * s_next)).to(out.dtype)
        res = StepOutput(prev, seen.get("denoised"))
        return res if return_dict else tuple(res)


class KDiffusionFactory:
    """``factory(**config)`` for a k-diffusion-style sampler (``k_diffusion``)."""

    def __init__(self, sampler, model_sampling, sigmas=None, concerns=None, name=None, wrap_model=None):
        self.sampler, self.model_sampling, self.sigmas = sampler, model_sampling, sigmas
        self.wrap_model = wrap_model
        if concerns is None:
            concerns = KDIFFUSION_CONCERNS if sigmas is None else KDIFFUSION_OWN_SCHEDULE_CONCERNS
        self.concerns = tuple(concerns)
        self.name = name or getattr(sampler, "__qualname__", getattr(sampler, "__name__", repr(sampler)))

    def __call__(self, **config):
        return KDiffusionScheduler(self, config)

    def __repr__(self):
        return f"k_diffusion({self.name})"


def k_diffusion(sampler: Callable, model_sampling: Callable, *, sigmas: Optional[Callable] = None, concerns=None,
                name: Optional[str] = None, wrap_model: Optional[Callable] = None) -> KDiffusionFactory:
    """Drive a k-diffusion-style sampler through a diffusers-``LCMScheduler``-like facade, so that conform can judge
    it (docs/design.md §9.4).

    ``sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None)`` loops over
    ``len(sigmas) − 1`` steps: ``denoised = model(x, σ_i·ones(B))``, ``callback({"x", "i", "sigma", "sigma_hat",
    "denoised"})``, then ``x = denoised + σ_{i+1}·noise_sampler(σ_i, σ_{i+1})`` unless σ_{i+1} = 0 (the shape of
    ComfyUI's ``sample_lcm``). ``model_sampling(config: LCMConfig)`` builds the object that turns a model output into
    denoised (the port's code under test): ``timestep(sigma)`` (the t the model sees), ``calculate_input(sigma, x)``
    and ``calculate_denoised(sigma, model_output, x)`` — ComfyUI's model-sampling shape; raise
    ``NotImplementedError`` there for configs it cannot express (→ ``unsupported``).
    ``lcm_ref.testbed.ksamplers`` has a reference sampler and model samplings; ``lcm_ref.testbed.ui_samplers`` a
    ComfyUI-style and an A1111-style sampler with their own sigma schedules.

    ``wrap_model(model, model_sampling)`` (optional): its return value is what the sampler receives as ``model``, for
    a sampler that reaches into its model object rather than only calling it. ``model`` is the facade's callable
    ``model(x, sigma, **extra) -> denoised``; ``model_sampling`` the object ``model_sampling(config)`` built.
    ComfyUI's ``sample_lcm`` reads ``model.inner_model.model_patcher.get_model_object("model_sampling")``:
    ``wrap_model=comfyui_model`` gives it that path. Without the hook such a sampler raises AttributeError inside
    ``step`` on every step (the facade adds the hint to the message): a crash of the run, not a refusal.

    The facade: ``set_timesteps(...)`` takes diffusers' schedule from the reference (or ``sigmas(model_sampling, n)``,
    a port's own sigma schedule, ending in 0) and sets σ_t = √((1 − ᾱ_t)/ᾱ_t) from the float32 ᾱ and
    ``timesteps = model_sampling.timestep(σ)``; ``step(model_output, t, sample, generator)`` converts the VP sample
    to the sampler's VE variable x/√ᾱ = x·√(1 + σ²), runs the sampler on ``sigmas[i:i+2]`` (valid for samplers
    without state across steps, as LCM's), reads ``denoised`` from the callback, draws the noise as diffusers does
    (``diffusers_noise``) when the sampler asks its noise sampler, and converts the result back,
    √ᾱ_next·(denoised + σ_next·z) = √ᾱ_next·denoised + √(1 − ᾱ_next)·z: exactly diffusers' prev_sample. Each
    conversion is evaluated in float64 and rounded once to the sample's dtype. Every tensor the sampler hands to the
    callback is copied at once (a sampler may change it in place afterwards: A1111's ``x = denoised;
    x += σ·z``).

    ``factory.concerns`` is ``KDIFFUSION_CONCERNS``, or ``KDIFFUSION_OWN_SCHEDULE_CONCERNS`` with ``sigmas=`` (a
    sampler's own schedule takes n alone: no original steps override, strength or custom timesteps to judge)."""
    return KDiffusionFactory(sampler, model_sampling, sigmas, concerns, name, wrap_model)


def _snapshot(value):
    """A copy of a tensor as it is now (anything else as is)."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class _ComfyPatcher:
    def __init__(self, model_sampling):
        self._objects = {"model_sampling": model_sampling}

    def get_model_object(self, name):
        return self._objects[name]


class _ComfyInner:
    def __init__(self, model_sampling):
        self.model_patcher = _ComfyPatcher(model_sampling)
        self.model_sampling = model_sampling
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)     # the path of older releases


class ComfyUIModel:
    """What ComfyUI hands its samplers as ``model``, reduced to what an LCM sampler uses: callable as
    ``model(x, sigma, **extra) -> denoised``, with ``inner_model.model_patcher.get_model_object("model_sampling")``
    (and ``inner_model.model_sampling``, ``inner_model.inner_model.model_sampling``) giving the model-sampling
    object. Built by ``comfyui_model``."""

    def __init__(self, model, model_sampling):
        self._model = model
        self.inner_model = _ComfyInner(model_sampling)

    def __call__(self, x, sigma, **extra):
        return self._model(x, sigma, **extra)


def comfyui_model(model, model_sampling) -> ComfyUIModel:
    """``wrap_model`` for ComfyUI's samplers (``k_diffusion(sample_lcm, ..., wrap_model=comfyui_model)``)."""
    return ComfyUIModel(model, model_sampling)


# ---------------------------------------------------------------------------------------------------------------
# Importable factories (module:attr names for conform's reports and replay snippets)
# ---------------------------------------------------------------------------------------------------------------

def __getattr__(name):
    """``compat_LCMScheduler`` / ``compat_TCDScheduler``: ``diffusers_compat`` of the installed diffusers' class,
    built on first use (so that ``lcm-ref conform lcm_ref.oracle.adapters:compat_LCMScheduler`` and the replay
    snippets of the version matrix name an importable factory)."""
    if name in ("compat_LCMScheduler", "compat_TCDScheduler"):
        import diffusers
        cls = getattr(diffusers, name.split("_", 1)[1])
        if name == "compat_TCDScheduler":
            factory = diffusers_compat(cls, denoised=False, concerns=TCD_CONCERNS, name="TCDScheduler")
        else:
            factory = diffusers_compat(cls, name="LCMScheduler")
        globals()[name] = factory
        return factory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
