"""Float64 reference of the LCM multistep scheduler (Luo et al. 2023, arXiv 2310.04378, Algorithm 3).

What "exact" means (docs/design.md §2): every float in the config is the binary64 value Python holds; every quantity
is the exact real-arithmetic meaning of diffusers' ``LCMScheduler`` code, computed with mpmath at ``DPS`` digits and
rounded once to float64, so every table entry and every coefficient is within 1 ulp (in fact 0.5 ulp + 1e-50) of the
exact value. Integer schedules reproduce the NumPy/Python float64 evaluation diffusers performs (docs/design.md §7).

A step is an affine map of its inputs unless clip/threshold is configured:

    x0_pred  = p[t]·sample + q[t]·model_output          (x0_coefficients; per prediction type)
    denoised = c_out[t]·x0_pred + c_skip[t]·sample      (boundary_scalings)
             = a[t]·sample + b[t]·model_output           (denoised_coefficients: a = c_skip + c_out·p, b = c_out·q)
    prev     = c[s]·denoised + d[s]·z,  s = next timestep (noise_coefficients: c = √ᾱ_s, d = √(1−ᾱ_s))

and the reference evaluates the fused form with correctly rounded a, b, c, d: first-order error ≤ 1.5 eps·Σ|terms|
for denoised, ≤ 3 for prev (with clip: 3 and 3.5; thresholding adds its divisor's error), checked against mpmath in
``tests/test_reference_step.py``. ``lcm_ref.torch_impl`` uses the same names and the same coefficients.

Two profiles: ``"diffusers"`` (default) reproduces diffusers, quirks included; ``"strict"`` gives the same results on
valid input and raises ``StrictError`` (a ``ValueError``) for input that diffusers accepts but mishandles.

Modules: ``tables`` (β, ᾱ and the per-timestep coefficients), ``schedule`` (which timesteps run), ``sampling``
(the step, the sampler, the forward process, the scaled error), ``strict`` (the strict profile's checks), ``exact``
(an independent 60-digit evaluation that tests the rest). Every public name is importable from ``lcm_ref.reference``.
"""

from __future__ import annotations

from .schedule import (Schedule, index_for_timestep, origin_grid, previous_timestep, set_timesteps,
                       spaced_timesteps, timesteps)
from .sampling import StepOutput, add_noise, get_velocity, sample, scaled_error, step, step_terms, threshold
from .strict import PROFILES
from .tables import (DPS, SIGMA_DATA, alphas_cumprod, betas, boundary_scalings, denoised_coefficients,
                     final_alpha_cumprod, noise_coefficients, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod,
                     x0_coefficients)

__all__ = [
    "DPS", "SIGMA_DATA", "PROFILES", "StepOutput", "Schedule",
    "betas", "alphas_cumprod", "final_alpha_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "boundary_scalings", "x0_coefficients", "denoised_coefficients", "noise_coefficients",
    "spaced_timesteps", "origin_grid", "set_timesteps", "timesteps", "index_for_timestep", "previous_timestep",
    "threshold", "step", "step_terms", "scaled_error", "sample", "add_noise", "get_velocity",
]
