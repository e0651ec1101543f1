"""A reference k-diffusion-style LCM sampler and LCM model samplings, written here from the algorithm (docs/design.md
§9.4, §13.2), to exercise ``lcm_ref.oracle.adapters.k_diffusion`` the way ComfyUI's, A1111's and Forge's ports are
shaped — without their code.

k-diffusion samplers work in the variance-exploding variable x_VE = x_VP/√ᾱ_t = x_VP·√(1 + σ²), with
σ_t = √((1 − ᾱ_t)/ᾱ_t); the model sees x_VE/√(σ² + 1) = x_VP and the timestep t nearest to σ in log σ. LCM's step in
these coordinates: denoised = c_out·x0 + c_skip·x_VP (diffusers), then x_VE' = denoised + σ_next·z, which is
√ᾱ_next·denoised + √(1 − ᾱ_next)·z in VP coordinates — diffusers' prev_sample exactly.

- ``lcm_loop``: the σ-space loop, with the re-noising as a parameter (``lcm_ref.testbed.ui_samplers`` builds the
  ComfyUI-style and A1111-style samplers on it); ``sample_lcm``: the loop as a k-diffusion sampler
  (``sampler(model, x, sigmas, extra_args, callback, disable, noise_sampler)``).
- ``LCMModelSampling(config, c_skip_on="vp")``: the boundary condition as diffusers applies it, c_skip times the VP
  sample x_VE/√(σ² + 1) — conforms.
- ``LCMModelSampling(config, c_skip_on="ve")``: c_skip times x_VE, as the ComfyUI-style ports do: the skip term is
  1/√ᾱ_t times too large, a deviation of c_skip·(1/√ᾱ_t − 1)·|x_VP| in denoised. How large against the float32
  budget is worked out in docs/design.md §9.4 (invisible at timestep_scaling 10 on the LCM grid, visible at small
  timestep_scaling, near t = 0 and in float64).

Each coefficient is evaluated in float64 from the σ the sampler passes and rounded once to the sample's dtype, so
the VP variant's own error stays inside the budget diffusers' operation chain is given (docs/design.md §8.3).
"""

from __future__ import annotations


import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig

__all__ = ["lcm_loop", "sample_lcm", "LCMModelSampling", "lcm_model_sampling"]


def lcm_loop(model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, renoise=None):
    """The σ-space LCM loop every k-diffusion-style LCM sampler shares: for each i, denoised = model(x, σ_i·ones(B)),
    report it through ``callback({"x", "i", "sigma", "sigma_hat", "denoised"})``, then x = denoised, re-noised to
    σ_{i+1} by ``renoise(x, σ_{i+1}, noise_sampler(σ_i, σ_{i+1}))`` unless σ_{i+1} = 0. Returns the last x.

    ``renoise`` is where the samplers differ (default: ``x + σ_{i+1}·z``, a new tensor); ``noise_sampler`` defaults
    to ``torch.randn_like(x)`` (the global generator)."""
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        def noise_sampler(sigma, sigma_next):
            return torch.randn_like(x)
    if renoise is None:
        def renoise(x, sigma_next, z):
            return x + sigma_next * z
    batch_ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * batch_ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = denoised
        if sigma_next > 0:
            x = renoise(x, sigma_next, noise_sampler(sigma, sigma_next))
    return x


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """LCM's multistep sampling in σ space (``lcm_loop`` with x = denoised + σ_{i+1}·z, out of place), in the
    k-diffusion sampler signature; ``disable`` (progress bar) is accepted and ignored."""
    return lcm_loop(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler)


class LCMModelSampling:
    """Turns a model output into LCM's denoised in σ space (the ComfyUI model-sampling shape: ``sigma(t)``,
    ``timestep(sigma)``, ``calculate_input``, ``calculate_denoised``).

    ``config``: an ``LCMConfig`` (or its dict); ``c_skip_on``: ``"vp"`` (diffusers: c_skip·x_VP) or ``"ve"``
    (c_skip·x_VE, the ComfyUI-style ports); ``grid``: the timesteps σ snaps to — ``"full"`` (every t, so any
    scheduled t round-trips) or ``"lcm"`` (the ``original_inference_steps`` grid (1..orig)·k − 1, as a distilled
    model sampling does: off-grid timesteps snap to the nearest grid point); ``timestep_scaling``: None for the
    config's, or a hard-coded value (ComfyUI: 10).

    Refuses (NotImplementedError, so conform reports ``unsupported``) what σ space cannot express here: clip_sample
    and thresholding (not part of a k-diffusion model sampling), and zero-SNR (σ_{T−1} = ∞)."""

    def __init__(self, config, *, c_skip_on="vp", grid="full", timestep_scaling=None):
        cfg = config if isinstance(config, LCMConfig) else LCMConfig(**config)
        if c_skip_on not in ("vp", "ve"):
            raise ValueError(f"c_skip_on={c_skip_on!r}: 'vp' or 've'")
        if grid not in ("full", "lcm"):
            raise ValueError(f"grid={grid!r}: 'full' or 'lcm'")
        for key in ("clip_sample", "thresholding", "rescale_betas_zero_snr"):
            if getattr(cfg, key):
                raise NotImplementedError(f"LCMModelSampling: {key}=True is not expressible in this σ-space model "
                                          "sampling")
        self.config, self.c_skip_on = cfg, c_skip_on
        self.timestep_scaling = cfg.timestep_scaling if timestep_scaling is None else float(timestep_scaling)
        T = cfg.num_train_timesteps
        abar = np.float32(np.asarray(ref.alphas_cumprod(cfg))).astype(np.float64)
        #: σ_t of every t, float32 values (evaluated in float64 from the float32 ᾱ, rounded once)
        self.sigmas = np.float32(np.sqrt((1.0 - abar) / abar)).astype(np.float64)
        if grid == "full":
            self.grid = np.arange(T, dtype=np.int64)
        else:
            k = T // cfg.original_inference_steps
            self.grid = np.arange(1, cfg.original_inference_steps + 1, dtype=np.int64) * k - 1
        self.log_sigmas = np.log(self.sigmas[self.grid])

    def sigma(self, timestep):
        """σ of integer timestep(s), float32."""
        t = np.asarray(timestep.detach().cpu() if hasattr(timestep, "detach") else timestep, dtype=np.int64)
        return torch.tensor(self.sigmas[t], dtype=torch.float32)

    def timestep(self, sigma):
        """The grid timestep nearest to each σ in log σ (long tensor)."""
        s = np.asarray(sigma.detach().cpu().to(torch.float64) if hasattr(sigma, "detach") else sigma,
                       dtype=np.float64)
        with np.errstate(divide="ignore"):
            ls = np.log(s)
        idx = np.abs(ls.reshape(-1, 1) - self.log_sigmas.reshape(1, -1)).argmin(axis=1)
        return torch.tensor(self.grid[idx].reshape(s.shape), dtype=torch.long)

    def _per_row(self, values, like):
        """A float64 per-batch-row array -> a tensor in ``like``'s dtype/device, broadcastable against it."""
        v = torch.tensor(np.asarray(values, dtype=np.float64), dtype=torch.float64)
        return v.reshape((-1,) + (1,) * (like.ndim - 1)).to(dtype=like.dtype, device=like.device)

    def calculate_input(self, sigma, x):
        """What the U-Net sees: x_VE/√(σ² + 1), the VP sample."""
        s = np.asarray(sigma.detach().cpu().to(torch.float64), dtype=np.float64).reshape(-1)
        return x * self._per_row(1.0 / np.sqrt(s * s + 1.0), x)

    def calculate_denoised(self, sigma, model_output, x):
        """LCM's denoised from the model output at x = x_VE: x0 per prediction type, then the boundary condition
        c_out·x0 + c_skip·(x_VP or x_VE). Coefficients in float64 from σ, each rounded once to x's dtype."""
        s = np.asarray(sigma.detach().cpu().to(torch.float64), dtype=np.float64).reshape(-1)
        t = self.timestep(torch.tensor(s)).numpy()
        u = t.astype(np.float64) * self.timestep_scaling
        sd2 = ref.SIGMA_DATA ** 2
        c_skip = sd2 / (u * u + sd2)
        c_out = u / np.sqrt(u * u + sd2)
        r = 1.0 / np.sqrt(s * s + 1.0)                      # √ᾱ in σ terms
        kind = self.config.prediction_type
        if kind == "epsilon":                               # x0 = x_VE − σ·ε
            x0 = x - self._per_row(s, x) * model_output
        elif kind == "v_prediction":                        # x0 = ᾱ·x_VE − √(1 − ᾱ)·v
            x0 = self._per_row(r * r, x) * x - self._per_row(s * r, x) * model_output
        else:                                               # sample prediction
            x0 = model_output
        skip = c_skip if self.c_skip_on == "ve" else c_skip * r
        return self._per_row(c_out, x) * x0 + self._per_row(skip, x) * x


def lcm_model_sampling(c_skip_on="vp", **kwargs):
    """``model_sampling`` for ``adapters.k_diffusion``: ``config -> LCMModelSampling(config, c_skip_on=..., ...)``."""
    def build(config):
        return LCMModelSampling(config, c_skip_on=c_skip_on, **kwargs)
    build.__qualname__ = build.__name__ = f"lcm_model_sampling_{c_skip_on}"
    return build
