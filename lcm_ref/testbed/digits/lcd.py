"""Latent consistency distillation (the paper's Algorithm 1) with networks: a U-Net student distilled from the
guided teacher of ``teacher``.

Per iteration (names as in ``lcm_ref.testbed.distill``, the analytic-testbed version):

    x_0, c ~ train split;  N = num_ddim_timesteps, k = T // N (the skipping step);  start = j·k − 1, j ~ U{1..N}
    target = max(start − k, 0);  ω ~ U[omega_min, omega_max];  x = DDPMScheduler.add_noise(x_0, ε, start)
    x̂ = Ψ(x, start → target; ω, c)   one augmented (guided) PF-ODE step with the teacher's ε̃ (``solver_step``)
    target = f_θ⁻(x̂, target, ω, c)   (``lcd_target``: the one function that computes it)
    loss = ρ((f_θ(x, start, ω, c) − target)/scale)  (mean over pixels and batch),  θ⁻ ← μ·θ⁻ + (1 − μ)·θ

with f_θ(x, t) = c_skip(t)·x + c_out(t)·x̂_0(ε_θ(x, t, ω, c)), LCM's boundary scalings with σ_data = 0.5 and
``timestep_scaling`` s (c_skip = σ²/((s·t)² + σ²), c_out = s·t/√((s·t)² + σ²)), fused as f = a[t]·x + b[t]·ε_θ by
``lcm_ref.testbed.distill.fused_tables`` from the float64 reference tables. c_skip(0) = 1 and c_out(0) = 0, so the
student learns the ODE map to timestep 0. ρ is the square (``"l2"``) or the pseudo-Huber loss (``"huber"``);
``scale`` is 1 (``loss_space="x0"``: the error of f, as diffusers' LCD script measures it) or |b[start]|
(``"eps"``: the error of the student's ε, every start timestep weighing alike; docs/design.md §11.1 on why this is
the choice that lets ω reach the student).

**The student** is the teacher's U-Net plus LCM's guidance embedding: ``UNet2DConditionModel`` with
``time_cond_proj_dim`` = ``GUIDANCE_DIM`` (256, diffusers' LCD default); ``guidance_embedding(ω)`` (sinusoids of
1000·ω, the form LCM uses) passes through the time embedding's ``cond_proj`` (a bias-free linear layer) and is added
to the timestep's features. It is initialised from the teacher, weight for weight; ``cond_proj`` keeps torch's
default draw (``cond_init="default"``, as diffusers' script) or starts at zero (``"zero"``, what the testbed trains
with: at iteration 0 the student is exactly the teacher's conditional branch, a test checks this), and the
guidance dependence is learned.
The embedded ω is the paper's ω (diffusers' LCM pipeline embeds ``guidance_scale − 1``, the same number).

**The ODE solvers Ψ** (one step from s = start to t = target, α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ), h = λ_t − λ_s,
ε̃ the guided teacher, x̂_0 = (x − σ·ε̃)/α):

- ``"ddim"``: x̂ = α_t·x̂_0(x, s) + σ_t·ε̃(x, s) (first order; DPM-Solver-1 and DPM-Solver++-1 are this same step);
- ``"dpmsolver"``: DPM-Solver-2 (Lu et al. 2022, singlestep, noise form) with its intermediate point at r₁ = ½ in λ:
  u = (α_r/α_s)·x − σ_r·(e^{r₁h} − 1)·ε̃(x, s);
  x̂ = (α_t/α_s)·x − σ_t·(e^h − 1)·ε̃(x, s) − σ_t/(2r₁)·(e^h − 1)·(ε̃(u, r) − ε̃(x, s));
- ``"dpmsolver++"``: DPM-Solver++(2S) (data form) with r₁ = ½:
  u = (σ_r/σ_s)·x − α_r·(e^{−r₁h} − 1)·x̂_0(x, s);
  x̂ = (σ_t/σ_s)·x − α_t·(e^{−h} − 1)·x̂_0(x, s) − α_t/(2r₁)·(e^{−h} − 1)·(x̂_0(u, r) − x̂_0(x, s)).
The intermediate timestep r is continuous: λ_r = λ_s + r₁·h, α_r and σ_r from λ_r, and r by linear interpolation
of t over the discrete λ table (the U-Net's sinusoidal timestep features accept a fractional t). The second-order
solvers cost a second guided teacher evaluation per iteration. Since a single step has no history, the multistep
variants (2M) reduce to the first-order step here; the singlestep 2S form is the second-order one-step solver.
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import torch
from tqdm.auto import tqdm

from ... import reference as ref
from ...config import LCMConfig
from ...errors import LCMRefError
from .. import distill as ds
from .data import Split
from .teacher import (SCHEDULE, TrainState, check_positive_int, guided_eps, noise_scheduler, optimizer_step,
                      unet_eps)

__all__ = ["GUIDANCE_DIM", "COND_INITS", "LOSSES", "LOSS_SPACES", "LR_SCHEDULES", "SOLVERS", "OMEGA_RANGE", "STUDENT_SEED", "lcm_config", "guidance_embedding",
           "make_student", "solver_step", "consistency", "lcd_target", "consistency_loss", "distill", "solver_grid"]

GUIDANCE_DIM = 256
COND_INITS = ("default", "zero")
LOSSES = ("l2", "huber")
#: where the loss is measured: on f itself (x_0 units, diffusers' LCD script) or divided by b[start] = ∂f/∂ε
#: (ε units: every start timestep weighs alike)
LOSS_SPACES = ("x0", "eps")
#: the learning rate after the warm-up: constant (diffusers' LCD script) or decaying linearly to 0 at the last iteration
LR_SCHEDULES = ("constant", "linear")
HUBER_C = 1e-3
SOLVERS = ("ddim", "dpmsolver", "dpmsolver++")
#: ω ~ U[2, 14] in training (the paper's convention ε̃ = (1 + ω)ε_c − ωε_∅; docs/design.md §12.1 on its provenance)
OMEGA_RANGE = (2.0, 14.0)
STUDENT_SEED = 0


def lcm_config(timestep_scaling: float = 10.0, num_ddim_timesteps: int = 50) -> LCMConfig:
    """The LCMConfig of a student: SD's schedule, ε-prediction, ``timestep_scaling`` and, as
    ``original_inference_steps``, the distillation grid's N (so the scheduler samples on the grid it was trained
    on)."""
    return LCMConfig(num_train_timesteps=SCHEDULE["num_train_timesteps"], beta_start=SCHEDULE["beta_start"],
                     beta_end=SCHEDULE["beta_end"], beta_schedule=SCHEDULE["beta_schedule"],
                     prediction_type="epsilon", original_inference_steps=num_ddim_timesteps,
                     timestep_scaling=float(timestep_scaling))


def solver_grid(num_ddim_timesteps: int) -> np.ndarray:
    """(1..N)·k − 1 with k = T // N: the start timesteps of distillation (``distill.ddim_grid``)."""
    return ds.ddim_grid(lcm_config(), num_ddim_timesteps)


def guidance_embedding(omega, dim: int = GUIDANCE_DIM, dtype=torch.float32) -> torch.Tensor:
    """(B, dim) sinusoidal features of 1000·ω: [sin(1000·ω·f_j), cos(1000·ω·f_j)], f_j = 10000^(−j/(dim/2 − 1)),
    j = 0…dim/2 − 1 (``dim`` even). ``omega``: a float or a (B,) tensor."""
    if not (isinstance(dim, numbers.Integral) and dim >= 4 and dim % 2 == 0):
        raise LCMRefError("dim", dim, "an even integer >= 4")
    w = torch.as_tensor(omega, dtype=torch.float64).reshape(-1)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    ang = 1000.0 * w[:, None] * freqs[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).to(dtype)


def make_student(teacher, cond_dim: int = GUIDANCE_DIM, cond_init: str = "default", seed: int = STUDENT_SEED):
    """The teacher's U-Net with ``time_cond_proj_dim = cond_dim``, every teacher weight copied; ``cond_proj`` keeps
    torch's default initialisation drawn from ``seed`` (``cond_init="default"``, as diffusers' LCD script loads the
    teacher with ``strict=False``) or is zero (``"zero"``: the student starts exactly at the teacher's conditional
    branch)."""
    from diffusers import UNet2DConditionModel
    if teacher.config.get("time_cond_proj_dim") is not None:
        raise LCMRefError("teacher", "a U-Net with time_cond_proj_dim", "the teacher (no guidance embedding)")
    if cond_init not in COND_INITS:
        raise LCMRefError("cond_init", cond_init, f"one of {COND_INITS}")
    cfg = {k: v for k, v in teacher.config.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = UNet2DConditionModel.from_config({**cfg, "time_cond_proj_dim": cond_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or set(missing) != {"time_embedding.cond_proj.weight"}:     # pragma: no cover - diffusers layout
        raise RuntimeError(f"student/teacher weights do not line up: missing {missing}, unexpected {unexpected}")
    if cond_init == "zero":
        with torch.no_grad():
            student.time_embedding.cond_proj.weight.zero_()
    return student.to(next(teacher.parameters()).device)


# ---------------------------------------------------------------------------------------------------------------
# Tables and the solver step
# ---------------------------------------------------------------------------------------------------------------

class _Schedule:
    """α_t, σ_t, λ_t for t = 0…T−1 (float64 reference tables) and per-sample lookups."""

    def __init__(self, cfg: LCMConfig):
        self.alpha = torch.tensor(ref.sqrt_alphas_cumprod(cfg), dtype=torch.float64)
        self.sigma = torch.tensor(ref.sqrt_one_minus_alphas_cumprod(cfg), dtype=torch.float64)
        self.lam = torch.log(self.alpha) - torch.log(self.sigma)          # decreasing in t

    def at(self, t, like):
        t = torch.as_tensor(t).long().cpu()
        shape = (-1,) + (1,) * (like.ndim - 1)
        f = lambda v: v[t].reshape(shape).to(like.device, like.dtype)  # noqa: E731
        return f(self.alpha), f(self.sigma), f(self.lam)

    def continuous(self, lam, like):
        """(α, σ, t) at log-SNR ``lam`` (float64 (B,)): α, σ from λ, t by linear interpolation over the table."""
        lam = lam.reshape(-1).double().cpu()
        t = np.interp(-lam.numpy(), -self.lam.numpy(), np.arange(len(self.lam), dtype=np.float64))
        shape = (-1,) + (1,) * (like.ndim - 1)
        alpha, sigma = torch.sqrt(torch.sigmoid(2 * lam)), torch.sqrt(torch.sigmoid(-2 * lam))
        g = lambda v: v.reshape(shape).to(like.device, like.dtype)  # noqa: E731
        return g(alpha), g(sigma), torch.from_numpy(t).to(like.device, like.dtype)


_SCHEDULES = {}


def _schedule() -> _Schedule:
    if "sd" not in _SCHEDULES:
        _SCHEDULES["sd"] = _Schedule(lcm_config())
    return _SCHEDULES["sd"]


@torch.no_grad()
def solver_step(teacher, x, start, target, labels, omega, solver: str = "ddim"):
    """One step Ψ of the guided PF-ODE from timestep ``start`` to ``target`` (per sample) with the teacher's
    ε̃ at guidance ``omega`` (module docstring). Computed in the dtype of ``x``."""
    if solver not in SOLVERS:
        raise LCMRefError("solver", solver, f"one of {SOLVERS}")
    sch = _schedule()
    a_s, s_s, l_s = sch.at(start, x)
    a_t, s_t, l_t = sch.at(target, x)
    eps_s = guided_eps(teacher, x, torch.as_tensor(start, device=x.device), labels, omega)
    x0_s = (x - s_s * eps_s) / a_s
    if solver == "ddim":
        return a_t * x0_s + s_t * eps_s
    r1 = 0.5
    lam_s = torch.as_tensor(sch.lam[torch.as_tensor(start).long().cpu()]).reshape(-1)
    lam_t = torch.as_tensor(sch.lam[torch.as_tensor(target).long().cpu()]).reshape(-1)
    a_r, s_r, r = sch.continuous(lam_s + r1 * (lam_t - lam_s), x)
    h = l_t - l_s
    if solver == "dpmsolver":
        u = (a_r / a_s) * x - s_r * torch.expm1(r1 * h) * eps_s
        eps_r = guided_eps(teacher, u, r, labels, omega)
        return (a_t / a_s) * x - s_t * torch.expm1(h) * eps_s - s_t / (2 * r1) * torch.expm1(h) * (eps_r - eps_s)
    u = (s_r / s_s) * x - a_r * torch.expm1(-r1 * h) * x0_s
    x0_r = (u - s_r * guided_eps(teacher, u, r, labels, omega)) / a_r
    return (s_t / s_s) * x - a_t * torch.expm1(-h) * x0_s - a_t / (2 * r1) * torch.expm1(-h) * (x0_r - x0_s)


def consistency(net, tables, x, t, labels, cond):
    """f(x, t) = a[t]·x + b[t]·ε(x, t, c, ω) = c_skip(t)·x + c_out(t)·x̂_0 (``tables`` from ``fused_tables``,
    ``cond`` the guidance embedding)."""
    a, b = tables
    t = torch.as_tensor(t).long()
    shape = (-1,) + (1,) * (x.ndim - 1)
    idx = t.cpu()
    return (a[idx].reshape(shape).to(x.device) * x
            + b[idx].reshape(shape).to(x.device) * unet_eps(net, x, t.to(x.device), labels, cond))


@torch.no_grad()
def lcd_target(teacher, target_net, tables, x, start, target, labels, omega, solver="ddim"):
    """The distillation target f_θ⁻(x̂, target, ω, c) with x̂ = Ψ(x, start → target) (Algorithm 1): the function
    ``distill`` computes its target with. ``omega``: a float or a (B,) tensor (embedded in float64)."""
    omega = torch.as_tensor(omega, dtype=torch.float64).cpu()
    omega = omega.expand(len(x)) if omega.ndim == 0 else omega
    x_hat = solver_step(teacher, x, start, target, labels, omega.to(x.device, x.dtype), solver)
    cond = guidance_embedding(omega, target_net.config.time_cond_proj_dim).to(x.device)
    return consistency(target_net, tables, x_hat, target, labels, cond)


def consistency_loss(pred, target, loss: str = "l2", scale=None):
    """Mean over pixels and batch of ρ(d), d = (pred − target)/scale, with ρ(d) = d² (``"l2"``) or the
    pseudo-Huber √(d² + c²) − c with c = ``HUBER_C`` (``"huber"``, diffusers' LCD script). ``scale``: None (d in
    the units of f) or a per-sample (B,) tensor; ``distill`` passes |b[start]| for the ε-space loss, so that d is
    the error of the student's ε (f = a·x + b·ε)."""
    d = pred - target
    if scale is not None:
        d = d / scale.reshape((-1,) + (1,) * (d.ndim - 1)).to(d.device, d.dtype)
    if loss == "l2":
        return d.square().mean()
    if loss == "huber":
        return (torch.sqrt(d.square() + HUBER_C ** 2) - HUBER_C).mean()
    raise LCMRefError("loss", loss, f"one of {LOSSES}")


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

def distill(teacher, train: Split, *, num_ddim_timesteps: int = 50, solver: str = "ddim",
            omega_min: float = OMEGA_RANGE[0], omega_max: float = OMEGA_RANGE[1], timestep_scaling: float = 10.0,
            iterations: int = 2000, batch_size: int = 64, lr: float = 1e-4, warmup: int = 0,
            weight_decay: float = 1e-2, loss: str = "l2", loss_space: str = "x0", guidance_dim: int = GUIDANCE_DIM,
            cond_init: str = "default", ema_decay: float = 0.95, lr_schedule: str = "constant", init=None,
            seed: int = STUDENT_SEED, device="cpu", progress: bool = True, resume=None,
            checkpoint_fn=None, checkpoint_every: int = 250, eval_every: int = 0, eval_fn=None) -> TrainState:
    """Algorithm 1 (module docstring) for ``iterations`` AdamW steps (``weight_decay``) at a constant learning rate
    after a linear warm-up of ``warmup`` iterations (diffusers' LCD script: lr 1e-4, weight decay 1e-2, constant,
    the defaults here), gradient clipping at 1; ``loss``, ``loss_space``, ``guidance_dim`` and ``cond_init`` as in
    the module docstring. ``lr_schedule="linear"`` decays the rate after the warm-up linearly to 0 at the last
    iteration; with the default ``"constant"``, a run of I iterations is the first I
    iterations of any longer run with the same settings and seed (nothing depends on the total). ``init``: a
    student (a U-Net with the guidance embedding) to start from instead of the teacher (``make_student``). Returns the
    ``TrainState``: ``model`` the online student θ (the one sampled), ``ema`` the target θ⁻.

    ``eval_fn(student) -> dict`` runs at iteration 0, every ``eval_every`` iterations and at the end when both are
    given; its dicts (with ``iteration``) accumulate in ``state.extra["evals"]``. ``resume`` /
    ``checkpoint_fn`` / ``checkpoint_every`` as in ``teacher.train_teacher``; a resumed run gives the same result."""
    ds.ddim_grid(lcm_config(), num_ddim_timesteps)          # validates num_ddim_timesteps
    if solver not in SOLVERS:
        raise LCMRefError("solver", solver, f"one of {SOLVERS}")
    check_positive_int("iterations", iterations, 0)
    check_positive_int("batch_size", batch_size)
    check_positive_int("checkpoint_every", checkpoint_every)
    check_positive_int("eval_every", eval_every, 0)
    if not 0 <= omega_min <= omega_max:
        raise LCMRefError("omega_max", omega_max, f"a float >= omega_min={omega_min} >= 0")
    if not 0.0 <= ema_decay < 1.0:
        raise LCMRefError("ema_decay", ema_decay, "a float in [0, 1)")
    if not (isinstance(timestep_scaling, numbers.Real) and timestep_scaling > 0):
        raise LCMRefError("timestep_scaling", timestep_scaling, "a float > 0")
    if loss not in LOSSES:
        raise LCMRefError("loss", loss, f"one of {LOSSES}")
    if loss_space not in LOSS_SPACES:
        raise LCMRefError("loss_space", loss_space, f"one of {LOSS_SPACES}")
    if lr_schedule not in LR_SCHEDULES:
        raise LCMRefError("lr_schedule", lr_schedule, f"one of {LR_SCHEDULES}")
    if init is not None and init.config.get("time_cond_proj_dim") is None:
        raise LCMRefError("init", "a U-Net without time_cond_proj_dim", "a student (with the guidance embedding)")
    check_positive_int("warmup", warmup, 0)
    device = torch.device(device)
    teacher = teacher.to(device).eval().requires_grad_(False)
    cfg = lcm_config(timestep_scaling, num_ddim_timesteps)
    tables = ds.fused_tables(cfg)
    grid = torch.from_numpy(solver_grid(num_ddim_timesteps))
    k = cfg.num_train_timesteps // num_ddim_timesteps
    student = (make_student(teacher, guidance_dim, cond_init, seed) if init is None else copy.deepcopy(init))
    student = student.to(device).train().requires_grad_(True)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)

    def rate(i):                                    # factor of lr at iteration i
        decay = 1.0 if lr_schedule == "constant" else max(0.0, (iterations - i) / max(iterations - warmup, 1))
        return min(1.0, (i + 1) / max(warmup, 1), decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    gen = torch.Generator().manual_seed(seed)
    st = TrainState(student, target, opt, sched, gen, extra={"evals": []})
    if resume is not None:
        st.load_state_dict(resume)
    ns = noise_scheduler()
    dim = student.config.time_cond_proj_dim

    def evaluate():
        if eval_fn is not None and eval_every:
            student.eval()
            st.extra["evals"].append({"iteration": st.iteration, **eval_fn(student)})
            student.train()

    if st.iteration == 0 and not st.extra["evals"]:
        evaluate()
    bar = tqdm(range(st.iteration, iterations), desc=f"lcd {solver} k={k} s={timestep_scaling:g}",
               disable=not progress, mininterval=1.0, initial=st.iteration, total=iterations)
    for i in bar:
        idx = torch.randint(0, len(train.y), (batch_size,), generator=gen)
        x0, c = train.x[idx], train.y[idx]
        start = grid[torch.randint(0, len(grid), (batch_size,), generator=gen)]
        tgt = torch.clamp(start - k, min=0)
        omega = omega_min + (omega_max - omega_min) * torch.rand(batch_size, generator=gen, dtype=torch.float64)
        noise = torch.randn(x0.shape, generator=gen)
        x = ns.add_noise(x0, noise, start).to(device)
        c = c.to(device)
        f_target = lcd_target(teacher, target, tables, x, start, tgt, c, omega, solver)
        f_online = consistency(student, tables, x, start, c, guidance_embedding(omega, dim).to(device))
        # ε space: divide by |b[start]| = |∂f/∂ε|; at t = 0 (k = 1's grid) b = 0 and f = x whatever ε: no division
        scale = torch.where(tables[1][start] == 0, 1.0, tables[1][start].abs()) if loss_space == "eps" else None
        value = consistency_loss(f_online, f_target, loss, scale)
        optimizer_step(student, value, opt, sched)
        with torch.no_grad():
            for p_t, p in zip(target.parameters(), student.parameters()):
                p_t.lerp_(p, 1.0 - ema_decay)
        st.losses.append(value.item())
        st.iteration = i + 1
        if progress and (i + 1) % 50 == 0:
            bar.set_postfix(loss=f"{sum(st.losses[-50:]) / 50:.3g}")
        if eval_every and st.iteration % eval_every == 0 and st.iteration < iterations:
            evaluate()
        if st.iteration == iterations:
            evaluate()
        if checkpoint_fn is not None and (st.iteration % checkpoint_every == 0 or st.iteration == iterations):
            checkpoint_fn(st)
    student.eval()
    return st
