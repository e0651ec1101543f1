"""ComfyUI-style and A1111-style LCM samplers: test subjects for ``lcm_ref.oracle.adapters.k_diffusion``, written
here from the behaviour the two UIs are documented to have (docs/design.md §9.4) — not from their code. Each is what
conform should judge as those UIs behave: exact where they are exact, deviating where they deviate.

What both share (the σ-space loop of ``ksamplers.lcm_loop``, x_VE = x_VP·√(1 + σ²)):

- a *distilled* model sampling with 50 noise levels, σ at t = T−1, T−1−k, …, T−1−49k (k = T // 50), counted down
  from T−1; its timestep lookup (the t the model is told) maps level j to j·k + k − 1, as if the levels started
  at k − 1. Where T is a multiple of 50 the two agree; elsewhere (T = 1001, 1037) every level sits T mod 50 steps
  above the timestep the model is told.
- σ → t: the nearest level in log σ; t → σ (fractional t allowed): log-σ interpolation between the two levels
  around (t − k + 1)/k. A schedule that asks for an off-level t therefore uses an interpolated noise level while the
  model is told the nearest level's timestep.
- the boundary condition in σ space with c_skip applied to the VE-scaled input: denoised = c_out·(x − σ·ε) +
  c_skip·x at x = x_VE, with u = 10·t; c_skip and c_out are float32 tensors, so float16 latents give float32
  denoised (and a float32 result).
- knobs: T from the model's config (ComfyUI) or 1000 only (A1111); ``timestep_scaling`` 10, 50 original steps and
  epsilon prediction hard-coded; no clip or thresholding. A config asking for anything else is refused by the
  model sampling (``NotImplementedError`` naming the key, the value and what is allowed), so conform reports it
  ``unsupported``. Zero-SNR rescaling is refused too (not modelled here).

Where they differ:

- ComfyUI (``comfyui_sample_lcm``): reaches ``model.inner_model.model_patcher.get_model_object("model_sampling")``
  and re-noises through its ``noise_scaling`` (a new tensor), so it needs ``k_diffusion(...,
  wrap_model=adapters.comfyui_model)``; schedules ``simple`` (every 50/n-th level from the top: diffusers'
  timesteps for every n in 1…50 at T = 1000) and ``sgm_uniform`` (t = linspace(T_top, k − 1, n + 1) without its last
  point, each mapped to σ by interpolation: n = 5 tells the model 999 799 599 419 219).
- A1111 (``a1111_sample_lcm``): calls its model only; re-noises in place on the tensor it has just handed to the
  callback (``x = denoised; x += σ_next·z``); T = 1000 only; its "Automatic" schedule takes t = linspace(999, 19, n),
  each mapped to σ by interpolation (n = 4 tells the model 999 679 339 19; the last step is always t = 19).

Factories (importable, for ``lcm-ref conform``): ``comfyui_simple``, ``comfyui_sgm_uniform``, ``a1111_automatic``;
``comfyui_lcm(schedule, num_train_timesteps=None)`` and ``a1111_lcm()`` build them (``num_train_timesteps=1000``:
one SD checkpoint's T, others refused). Each carries ``concerns`` (``UI_CONCERNS``).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError
from ..oracle.adapters import KDIFFUSION_OWN_SCHEDULE_CONCERNS, comfyui_model, k_diffusion
from .ksamplers import lcm_loop

__all__ = ["ORIGINAL_STEPS", "TIMESTEP_SCALING", "UI_CONCERNS", "DistilledModelSampling", "comfyui_model_sampling",
           "a1111_model_sampling", "comfyui_sample_lcm", "a1111_sample_lcm", "simple_sigmas", "sgm_uniform_sigmas",
           "a1111_automatic_sigmas", "comfyui_lcm", "a1111_lcm", "comfyui_simple", "comfyui_sgm_uniform",
           "a1111_automatic"]

#: hard-coded in both UIs
ORIGINAL_STEPS = 50
TIMESTEP_SCALING = 10.0

#: What the UI samplers can be judged on: those of a sampler on its own schedule, less ``clip_threshold`` (neither
#: UI has a clip or thresholding setting; every such config is refused).
UI_CONCERNS = tuple(c for c in KDIFFUSION_OWN_SCHEDULE_CONCERNS if c != "clip_threshold")


def _refuse(who: str, key: str, value, allowed: str):
    raise NotImplementedError(f"{who}: {key}={value!r} is not supported (allowed: {allowed})")


class DistilledModelSampling:
    """The 50-level LCM model sampling of both UIs (module docstring): ``sigma(t)``, ``timestep(sigma)``,
    ``calculate_input``, ``calculate_denoised``, ``noise_scaling``, plus ``levels`` (σ of the 50 levels, ascending,
    float64 values of float32 numbers), ``level_timesteps`` (the t each level's σ belongs to) and ``told_timesteps``
    (the t the model is told for each level).

    ``config``: an ``LCMConfig`` (or its dict); ``who``: the name refusals use; ``only_T``: the one
    ``num_train_timesteps`` accepted (A1111: 1000), None for any T ≥ 50."""

    #: log-σ distance within which two levels count as equally near (float32 σ carries ≤ 2⁻²⁴ relative rounding,
    #: 6e-8 in log σ, per operation; 1e-6 covers the handful of float32 operations a σ passes through)
    TIE = 1e-6

    def __init__(self, config, *, who="DistilledModelSampling", only_T=None):
        cfg = config if isinstance(config, LCMConfig) else LCMConfig(**config)
        T = cfg.num_train_timesteps
        if only_T is not None and T != only_T:
            _refuse(who, "num_train_timesteps", T, str(only_T))
        if T < ORIGINAL_STEPS:
            _refuse(who, "num_train_timesteps", T, f">= {ORIGINAL_STEPS} (50 levels, T // 50 apart)")
        if cfg.original_inference_steps != ORIGINAL_STEPS:
            _refuse(who, "original_inference_steps", cfg.original_inference_steps, f"{ORIGINAL_STEPS}, hard-coded")
        if cfg.timestep_scaling != TIMESTEP_SCALING:
            _refuse(who, "timestep_scaling", cfg.timestep_scaling, f"{TIMESTEP_SCALING:g}, hard-coded")
        if cfg.prediction_type != "epsilon":
            _refuse(who, "prediction_type", cfg.prediction_type, "'epsilon'")
        for key in ("clip_sample", "thresholding", "rescale_betas_zero_snr"):
            if getattr(cfg, key):
                _refuse(who, key, True, "False")
        self.config, self.who = cfg, who
        self.k = T // ORIGINAL_STEPS
        abar = np.float32(np.asarray(ref.alphas_cumprod(cfg))).astype(np.float64)
        #: level j (ascending σ) holds σ at t = T−1 − (49 − j)·k: counted down from T − 1
        self.level_timesteps = T - 1 - (ORIGINAL_STEPS - 1 - np.arange(ORIGINAL_STEPS)) * self.k
        a = abar[self.level_timesteps]
        self.levels = np.float32(np.sqrt((1.0 - a) / a)).astype(np.float64)
        self.log_levels = np.log(self.levels)
        #: the lookup assumes the levels start at k − 1: level j is told j·k + k − 1
        self.told_timesteps = np.arange(ORIGINAL_STEPS) * self.k + self.k - 1

    @property
    def sigma_max(self) -> float:
        return float(self.levels[-1])

    @property
    def sigma_min(self) -> float:
        return float(self.levels[0])

    def level_of(self, sigma) -> np.ndarray:
        """The level nearest to each σ in log σ. A σ half-way between two levels (in log σ, up to ``TIE`` — a few
        float32 roundings of σ; neighbouring levels are ≥ 0.02 apart) counts as the lower level, as measured on
        ComfyUI (``sgm_uniform`` at n = 2 and 4 reaches the half-way point 24.5 and tells t = 499). In the UIs the
        outcome at such a point is decided by float32 rounding and may go either way (the float32 emulation of
        ``lcm_ref.studies.behaviour`` tells 519 there at n = 30); this subject fixes it."""
        s = np.asarray(sigma.detach().cpu().to(torch.float64) if hasattr(sigma, "detach") else sigma,
                       dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.abs(np.log(s).reshape(-1, 1) - self.log_levels.reshape(1, -1))
        nearest = d.min(axis=1, keepdims=True)
        return (d <= nearest + self.TIE).argmax(axis=1).reshape(s.shape)   # the first (lowest) within the tie

    def timestep(self, sigma) -> torch.Tensor:
        """The t the model is told for σ (long tensor shaped like ``sigma``)."""
        return torch.as_tensor(self.told_timesteps[self.level_of(sigma)], dtype=torch.long)

    def sigma(self, timestep) -> np.ndarray:
        """σ of (fractional) timesteps: position (t − k + 1)/k among the levels, clamped to [0, 49], log σ
        interpolated linearly between the two levels around it; float64 values of float32 numbers."""
        t = np.asarray(timestep.detach().cpu().to(torch.float64) if hasattr(timestep, "detach") else timestep,
                       dtype=np.float64)
        pos = np.clip((t - (self.k - 1)) / self.k, 0, ORIGINAL_STEPS - 1)
        lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
        w = pos - lo
        return np.float32(np.exp((1 - w) * self.log_levels[lo] + w * self.log_levels[hi])).astype(np.float64)

    def calculate_input(self, sigma, x):
        """What the U-Net sees: x_VE/√(σ² + 1), the VP sample."""
        s = sigma.to(torch.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        return x / torch.sqrt(s * s + 1.0)

    def calculate_denoised(self, sigma, model_output, x):
        """c_out·(x − σ·ε) + c_skip·x at x = x_VE, u = 10·t (t as told); σ, c_skip and c_out float32 tensors."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        s = sigma.to(torch.float32).reshape(shape)
        u = self.timestep(sigma).to(device=x.device, dtype=torch.float32).reshape(shape) * TIMESTEP_SCALING
        sd2 = ref.SIGMA_DATA ** 2
        c_skip = sd2 / (u * u + sd2)
        c_out = u / torch.sqrt(u * u + sd2)
        return c_out * (x - model_output * s) + c_skip * x

    def noise_scaling(self, sigma, noise, latent):
        """A sample at noise level σ: latent + σ·noise (a new tensor)."""
        return latent + sigma * noise


def comfyui_model_sampling(config, *, num_train_timesteps=None) -> DistilledModelSampling:
    """``model_sampling`` for ``k_diffusion``: ComfyUI's (any T ≥ 50 from the config; ``num_train_timesteps``: the
    one T a given checkpoint has, others refused)."""
    return DistilledModelSampling(config, who="ComfyUI LCM model sampling", only_T=num_train_timesteps)


def a1111_model_sampling(config) -> DistilledModelSampling:
    """``model_sampling`` for ``k_diffusion``: A1111's (T = 1000 only)."""
    return DistilledModelSampling(config, who="A1111 LCM denoiser", only_T=1000)


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------

def comfyui_sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """ComfyUI-style LCM sampler: takes its model sampling from ``model.inner_model.model_patcher`` and re-noises
    through its ``noise_scaling`` (out of place)."""
    ms = model.inner_model.model_patcher.get_model_object("model_sampling")
    return lcm_loop(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                    renoise=lambda den, sigma_next, z: ms.noise_scaling(sigma_next, z, den))


def _add_in_place(den, sigma_next, z):
    den += sigma_next * z       # on the very tensor just handed to the callback
    return den


def a1111_sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """A1111-style LCM sampler: x = denoised; x += σ_next·z, in place on the tensor the callback has just seen."""
    return lcm_loop(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                    renoise=_add_in_place)


# ---------------------------------------------------------------------------------------------------------------
# Sigma schedules: ``sigmas(model_sampling, n)`` -> n noise levels then 0 (float64 values)
# ---------------------------------------------------------------------------------------------------------------

def _count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LCMRefError("num_inference_steps", n, "an integer >= 1")
    return int(n)


def simple_sigmas(ms: DistilledModelSampling, n) -> np.ndarray:
    """ComfyUI ``simple``: level 49 − ⌊50·i/n⌋ for i = 0 … n−1 (every 50/n-th level from the top), then 0."""
    n = _count(n)
    idx = ORIGINAL_STEPS - 1 - (np.arange(n) * ORIGINAL_STEPS) // n
    return np.append(ms.levels[idx], 0.0)


def sgm_uniform_sigmas(ms: DistilledModelSampling, n) -> np.ndarray:
    """ComfyUI ``sgm_uniform``: t = linspace(t(σ_max), t(σ_min), n + 1) without its last point, σ(t) by log-σ
    interpolation, then 0."""
    n = _count(n)
    start, end = (float(ms.timestep(torch.tensor(s, dtype=torch.float64))) for s in (ms.sigma_max, ms.sigma_min))
    return np.append(ms.sigma(np.linspace(start, end, n + 1)[:-1]), 0.0)


def a1111_automatic_sigmas(ms: DistilledModelSampling, n) -> np.ndarray:
    """A1111 "Automatic" for LCM: t = linspace(t(σ_max), t(σ_min), n) (999 → 19), σ(t) by log-σ interpolation,
    then 0."""
    n = _count(n)
    start, end = (float(ms.timestep(torch.tensor(s, dtype=torch.float64))) for s in (ms.sigma_max, ms.sigma_min))
    return np.append(ms.sigma(np.linspace(start, end, n)), 0.0)


_COMFYUI_SCHEDULES = {"simple": simple_sigmas, "sgm_uniform": sgm_uniform_sigmas}


def comfyui_lcm(schedule: str = "simple", num_train_timesteps=None):
    """``k_diffusion`` factory of the ComfyUI-style sampler on its ``schedule`` ("simple" or "sgm_uniform").
    ``num_train_timesteps``: None takes T from each config (as ComfyUI takes it from the model's); a number stands
    for one checkpoint's T (1000 for SD 1.x/SDXL) and refuses the others."""
    if schedule not in _COMFYUI_SCHEDULES:
        raise LCMRefError("schedule", schedule, f"one of {sorted(_COMFYUI_SCHEDULES)}")
    if num_train_timesteps is not None and (isinstance(num_train_timesteps, bool) or not isinstance(
            num_train_timesteps, (int, np.integer)) or num_train_timesteps < ORIGINAL_STEPS):
        raise LCMRefError("num_train_timesteps", num_train_timesteps, f"None or an integer >= {ORIGINAL_STEPS}")

    def model_sampling(config):
        return comfyui_model_sampling(config, num_train_timesteps=num_train_timesteps)

    suffix = "" if num_train_timesteps is None else f", num_train_timesteps={num_train_timesteps}"
    return k_diffusion(comfyui_sample_lcm, model_sampling, sigmas=_COMFYUI_SCHEDULES[schedule],
                       wrap_model=comfyui_model, concerns=UI_CONCERNS, name=f"comfyui_lcm({schedule!r}{suffix})")


def a1111_lcm():
    """``k_diffusion`` factory of the A1111-style sampler on its "Automatic" schedule."""
    return k_diffusion(a1111_sample_lcm, a1111_model_sampling, sigmas=a1111_automatic_sigmas, concerns=UI_CONCERNS,
                       name="a1111_lcm()")


def _importable(factory, name: str):
    """``factory`` named as this module's attribute ``name``, so that conform's reports and replay snippets name it
    (``lcm_ref.testbed.ui_samplers:name``)."""
    factory.__module__, factory.__qualname__ = __name__, name
    return factory


comfyui_simple = _importable(comfyui_lcm("simple"), "comfyui_simple")
comfyui_sgm_uniform = _importable(comfyui_lcm("sgm_uniform"), "comfyui_sgm_uniform")
a1111_automatic = _importable(a1111_lcm(), "a1111_automatic")
