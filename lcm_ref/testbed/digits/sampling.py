"""Sampling: the LCM student through ``lcm_ref.torch_impl.LCMScheduler`` (the project's drop-in for diffusers'
class) and the teacher through diffusers' own solvers, each in the loop a diffusers pipeline runs.

- ``lcm_sample``: x_T ~ N(0, I); for t in ``scheduler.timesteps``: ε = student(x, t, c, guidance_embedding(ω));
  x, denoised = scheduler.step(ε, t, x, generator) — LCM's multistep sampler (Algorithm 3), re-noising between steps
  with the scheduler's own draw from ``generator``; the result is the last ``denoised``, as in diffusers'
  ``LatentConsistencyModelPipeline``. The scheduler carries the student's ``timestep_scaling`` and, as
  ``original_inference_steps``, its distillation grid N = T // k.
- ``teacher_sample``: classifier-free guidance ε̃ = (1 + ω)ε_c − ωε_∅ (``guidance_scale`` = 1 + ω) with
  ``DDIMScheduler`` (η = 0), ``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver"`` (DPM-Solver,
  2nd order, multistep, midpoint) or ``"dpmsolver++"`` (DPM-Solver++ 2M). All three on SD's schedule with
  ``timestep_spacing="trailing"`` (so that one step starts at t = 999, as LCM's does; SD's default "leading" starts
  a 1-step run at t = 1) and ending at timestep 0 (DDIM's ``set_alpha_to_one=False``; the DPM solvers'
  ``final_sigmas_type="sigma_min"``, the only end diffusers allows for "dpmsolver") — the same end as LCM's
  boundary at t = 0.
- ``ideal_lcm_sample``: LCM's multistep sampler with a perfect student: at each of the LCM scheduler's timesteps t the
  consistency function is the teacher's own, f*(x, t) = its guided DDIM run from t to 0 on the distillation grid
  (the trailing grid of ``original_inference_steps`` steps, which holds every LCM timestep), the map Algorithm 1
  distils with the DDIM solver; between steps x = add_noise(f*, z, t_next), z drawn as ``lcm_sample`` draws it. One
  step is the teacher's DDIM run itself; any gap it leaves at more steps is the sampler's, not a student's.

x_T is the first draw of ``torch.Generator().manual_seed(seed)``, shape (N, 1, 8, 8), so every method started with
the same seed starts from the same x_T; LCM's re-noising continues from the same generator. Everything is computed
in float32 on ``device``; results come back as CPU tensors.
"""

from __future__ import annotations

import numbers

import torch

from ...errors import LCMRefError
from .data import SIZE
from .lcd import guidance_embedding
from .teacher import SCHEDULE, guided_eps, unet_eps

__all__ = ["METHODS", "TEACHER_SOLVERS", "lcm_scheduler", "teacher_scheduler", "lcm_sample", "teacher_sample",
           "ideal_lcm_sample", "teacher_map", "initial_noise"]

TEACHER_SOLVERS = ("ddim", "dpmsolver", "dpmsolver++")
METHODS = ("lcm",) + TEACHER_SOLVERS


def _check(steps, labels, omega):
    if not (isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 1):
        raise LCMRefError("steps", steps, "an integer >= 1")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) == 0 or labels.dtype not in (torch.int64, torch.int32):
        raise LCMRefError("labels", tuple(labels.shape), "a non-empty 1-d integer tensor of class labels")
    if not (isinstance(omega, numbers.Real) and omega >= 0):
        raise LCMRefError("omega", omega, "a float >= 0")
    return labels.long()


def initial_noise(n: int, seed: int, device="cpu"):
    """(generator, x_T): x_T the first N(0, I) draw of size (n, 1, 8, 8) from ``manual_seed(seed)`` (on CPU, so
    CPU and CUDA runs start from the same x_T)."""
    g = torch.Generator().manual_seed(seed)
    return g, torch.randn((n, 1, SIZE, SIZE), generator=g).to(device)


def lcm_scheduler(timestep_scaling: float = 10.0, original_inference_steps: int = 50):
    """``lcm_ref.torch_impl.LCMScheduler`` on SD's schedule with the student's scaling and grid."""
    from ...torch_impl import LCMScheduler
    return LCMScheduler(num_train_timesteps=SCHEDULE["num_train_timesteps"], beta_start=SCHEDULE["beta_start"],
                        beta_end=SCHEDULE["beta_end"], beta_schedule=SCHEDULE["beta_schedule"],
                        prediction_type="epsilon", original_inference_steps=original_inference_steps,
                        timestep_scaling=float(timestep_scaling))


@torch.no_grad()
def lcm_sample(student, labels, omega: float, steps: int, *, seed: int = 0, timestep_scaling: float = 10.0,
               original_inference_steps: int = 50, device="cpu") -> torch.Tensor:
    """``len(labels)`` samples of the LCM student in ``steps`` steps at guidance ``omega`` (module docstring)."""
    labels = _check(steps, labels, omega)
    device = torch.device(device)
    sched = lcm_scheduler(timestep_scaling, original_inference_steps)
    sched.set_timesteps(steps, device=device)
    g, x = initial_noise(len(labels), seed, device)
    x = x * sched.init_noise_sigma
    c = labels.to(device)
    cond = guidance_embedding(torch.full((len(labels),), float(omega)), student.config.time_cond_proj_dim).to(device)
    denoised = x
    for t in sched.timesteps:
        eps = unet_eps(student, x, t, c, cond)
        if g.device != device:     # the scheduler draws its noise on the model output's device
            g = _device_generator(g, device)
        x, denoised = sched.step(eps, t, x, generator=g, return_dict=False)
    return denoised.cpu()


def _device_generator(g, device):
    dg = torch.Generator(device=device)
    dg.manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
    return dg


def teacher_scheduler(solver: str, steps: int):
    """diffusers' scheduler for ``solver`` ("ddim", "dpmsolver", "dpmsolver++") with ``set_timesteps(steps)``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    if solver == "ddim":
        s = DDIMScheduler(**SCHEDULE, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    elif solver in ("dpmsolver", "dpmsolver++"):
        s = DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type=solver, solver_order=2, solver_type="midpoint",
                                        timestep_spacing="trailing", final_sigmas_type="sigma_min",
                                        lower_order_final=True)
    else:
        raise LCMRefError("solver", solver, f"one of {TEACHER_SOLVERS}")
    s.set_timesteps(steps)
    return s


@torch.no_grad()
def teacher_sample(teacher, labels, omega: float, steps: int, solver: str = "ddim", *, seed: int = 0,
                   device="cpu") -> torch.Tensor:
    """``len(labels)`` samples of the guided teacher with diffusers' ``solver`` in ``steps`` steps."""
    labels = _check(steps, labels, omega)
    device = torch.device(device)
    sched = teacher_scheduler(solver, steps)
    _, x = initial_noise(len(labels), seed, device)
    x = x * sched.init_noise_sigma
    c = labels.to(device)
    return _teacher_run(teacher, sched, x, c, omega, device).cpu()


def _teacher_run(teacher, sched, x, c, omega, device, start=None):
    """The guided teacher run by ``sched`` from ``x`` at timestep ``start`` (its first timestep when None) to 0."""
    for t in sched.timesteps:
        if start is not None and int(t) > start:
            continue
        eps = guided_eps(teacher, sched.scale_model_input(x, t), t.to(device), c, float(omega))
        x = sched.step(eps, t, x, return_dict=False)[0]
    return x


@torch.no_grad()
def teacher_map(teacher, x, t: int, labels, omega: float, original_inference_steps: int = 50) -> torch.Tensor:
    """The teacher's own consistency function f*(x, t): its guided DDIM run from timestep ``t`` to 0 on the trailing
    grid of ``original_inference_steps`` steps (the map Algorithm 1 distils with the DDIM solver), on x's device."""
    ode = teacher_scheduler("ddim", original_inference_steps)
    if int(t) not in {int(s) for s in ode.timesteps}:
        raise LCMRefError("original_inference_steps", original_inference_steps,
                          f"a grid that holds the timestep {int(t)}")
    return _teacher_run(teacher, ode, x, torch.as_tensor(labels).to(x.device), omega, x.device, start=int(t))


@torch.no_grad()
def ideal_lcm_sample(teacher, labels, omega: float, steps: int, *, seed: int = 0, original_inference_steps: int = 50,
                     device="cpu") -> torch.Tensor:
    """``len(labels)`` samples of LCM's ``steps``-step sampler with the teacher's own consistency function in place
    of a student (module docstring): what a perfectly distilled student would give, same x_T and re-noising draws as
    ``lcm_sample``."""
    from ...torch_impl import draw_noise
    labels = _check(steps, labels, omega)
    device = torch.device(device)
    sched = lcm_scheduler(original_inference_steps=original_inference_steps)
    sched.set_timesteps(steps, device=device)
    timesteps = [int(t) for t in sched.timesteps]
    g, x = initial_noise(len(labels), seed, device)
    c = labels.to(device)
    for i, t in enumerate(timesteps):
        denoised = teacher_map(teacher, x, t, c, omega, original_inference_steps)
        if i + 1 < len(timesteps):
            if g.device != device:
                g = _device_generator(g, device)
            z = draw_noise(x.shape, g, device, x.dtype)
            x = sched.add_noise(denoised, z, torch.tensor([timesteps[i + 1]], device=device))
    return denoised.cpu()
