"""Latent consistency distillation (Luo et al. 2023, Algorithm 1) of a small MLP on the analytic testbed, on CPU.

Per iteration, as the LCM distillation scripts do it (docs/design.md §11):

    x_0, c ~ p(x, c);  N = num_ddim_timesteps, k = T // N (the skipping step);  start = j·k − 1, j ~ U{1..N};
    target = max(start − k, 0);  ω ~ U[omega_min, omega_max];  x = √ᾱ_start·x_0 + √(1−ᾱ_start)·ε
    teacher (exact, analytic): ε̃ = (1 + ω)·ε(x | c) − ω·ε(x);  x̂ = DDIM(x, ε̃; start → target)
    loss = ‖f_θ(x, start, ω, c) − f_θ⁻(x̂, target, ω, c)‖²,   θ⁻ ← μ·θ⁻ + (1 − μ)·θ  (EMA target network)

The student is f_θ(x, t) = c_skip(t)·x + c_out(t)·x0_pred(F_θ(x, t, ω, c)), with LCM's c_skip/c_out (σ_data = 0.5,
timestep_scaling from the config) and F_θ a model output of ``cfg.prediction_type``; in fused form
f_θ = a[t]·x + b[t]·F_θ with (a, b) = ``ref.denoised_coefficients``. c_skip(0) = 1, c_out(0) = 0, so the student
learns the ODE map to timestep 0 (the ``"boundary"`` end of ``lcm_ref.testbed``), not to clean data.

Seeds are fixed (numpy Generator for data, ``torch.manual_seed`` inside ``fork_rng`` for the weights), torch runs
single-threaded with deterministic algorithms while training, so reruns give identical numbers.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import reference as ref
from .. import testbed as tb
from ..config import LCMConfig
from ..errors import LCMRefError

__all__ = ["Student", "DistillResult", "distill", "draw_batch", "consistency_loss", "teacher_step",
           "student_model", "student_consistency", "fused_tables", "ddim_grid"]


class Student(torch.nn.Module):
    """F_θ(x, t, ω, c): an MLP on [x, sin/cos(π·j·t/T) for j = 1..8, ω/omega_scale, one-hot(c)] with SiLU."""

    N_FREQ = 8

    def __init__(self, d: int, n_classes: int, num_train_timesteps: int, hidden: int = 128, depth: int = 3,
                 omega_scale: float = 1.0):
        super().__init__()
        self.d, self.n_classes, self.T, self.omega_scale = d, n_classes, num_train_timesteps, omega_scale
        width = d + 2 * self.N_FREQ + 1 + n_classes
        layers = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, hidden), torch.nn.SiLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, d))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x, t, omega, labels):
        """x (B, d) float32; t (B,) int; omega (B,) float; labels (B,) int."""
        freq = torch.arange(1, self.N_FREQ + 1, dtype=torch.float32) * math.pi / self.T
        ang = t.to(torch.float32)[:, None] * freq
        onehot = torch.nn.functional.one_hot(labels, self.n_classes).to(torch.float32)
        h = torch.cat([x, torch.sin(ang), torch.cos(ang), omega[:, None] / self.omega_scale, onehot], dim=1)
        return self.net(h)


@dataclass
class DistillResult:
    """What ``distill`` returns: the trained student (online network θ), the EMA target θ⁻, the loss per iteration,
    and the evaluations made every ``eval_every`` iterations (dicts with ``iteration`` and the metric's keys)."""
    student: Student
    target: Student
    cfg: LCMConfig
    num_ddim_timesteps: int
    skipping_step: int
    losses: np.ndarray
    evals: list = field(default_factory=list)


def ddim_grid(cfg: LCMConfig, num_ddim_timesteps: int) -> np.ndarray:
    """The distillation grid (1..N)·k − 1 with k = T // N (ascending): LCM's origin grid for
    original_inference_steps = N (``ref.origin_grid``), the grid the scheduler later selects from."""
    T = cfg.num_train_timesteps
    if not (isinstance(num_ddim_timesteps, numbers.Integral) and 1 <= num_ddim_timesteps <= T):
        raise LCMRefError("num_ddim_timesteps", num_ddim_timesteps, f"an integer in [1, num_train_timesteps={T}]")
    return ref.origin_grid(cfg, num_ddim_timesteps, 1.0, None)


@contextlib.contextmanager
def _deterministic_torch(seed):
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det)


def fused_tables(cfg: LCMConfig):
    """(a, b) for every t as float32 tensors: f = a[t]·x + b[t]·F (c_skip, c_out and the x0 conversion fused;
    from ``ref.denoised_coefficients``)."""
    a, b = ref.denoised_coefficients(cfg, np.arange(cfg.num_train_timesteps))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise LCMRefError("cfg", cfg, "a config with finite step coefficients at every t (zero-SNR with epsilon "
                          "prediction divides by zero at t = T-1)")
    return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)


def student_consistency(net: Student, tables, x, t, omega, labels):
    """f_θ(x, t) = a[t]·x + b[t]·F_θ(x, t, ω, c) = c_skip(t)·x + c_out(t)·x0_pred (torch, batched)."""
    a, b = tables
    return a[t, None] * x + b[t, None] * net(x, t, omega, labels)


def draw_batch(mix: tb.GaussianMixture, cfg: LCMConfig, num_ddim_timesteps: int, batch_size: int,
               rng: np.random.Generator, omega_min: float = 0.0, omega_max: float = 3.0) -> dict:
    """One batch of Algorithm 1: x_0, c ~ p; start = j·k − 1; target = max(start − k, 0); ω ~ U[omega_min,
    omega_max]; x = x_start from the forward process; x_hat = the teacher's DDIM step to target. Torch tensors
    (float32 samples) under the keys x, x_hat, start, target, omega, labels."""
    grid = ddim_grid(cfg, num_ddim_timesteps)
    k = cfg.num_train_timesteps // num_ddim_timesteps
    x0, labels = mix.sample(batch_size, rng)
    start = grid[rng.integers(0, len(grid), size=batch_size)]
    target = np.maximum(start - k, 0)
    omega = rng.uniform(omega_min, omega_max, size=batch_size)
    x = ref.add_noise(cfg, x0, rng.standard_normal(x0.shape), start)
    x_hat = teacher_step(mix, cfg, x, start, target, labels=labels, omega=omega)
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return {"x": f32(x), "x_hat": f32(x_hat), "start": torch.from_numpy(start), "target": torch.from_numpy(target),
            "omega": f32(omega), "labels": torch.from_numpy(labels)}


def consistency_loss(student: Student, target: Student, tables, batch: dict):
    """‖f_θ(x, start) − f_θ⁻(x̂, target)‖² averaged over the batch (gradient through the student only)."""
    f_online = student_consistency(student, tables, batch["x"], batch["start"], batch["omega"], batch["labels"])
    with torch.no_grad():
        f_target = student_consistency(target, tables, batch["x_hat"], batch["target"], batch["omega"],
                                       batch["labels"])
    return torch.mean(torch.sum((f_online - f_target) ** 2, dim=1))


def distill(mix: tb.GaussianMixture, cfg: LCMConfig = LCMConfig(), *, num_ddim_timesteps: int = 50,
            iterations: int = 2000, batch_size: int = 256, lr: float = 5e-3, ema_decay: float = 0.95,
            omega_min: float = 0.0, omega_max: float = 3.0, hidden: int = 128, depth: int = 3, seed: int = 0,
            eval_every: int = 0, eval_fn=None, progress: bool = True) -> DistillResult:
    """Algorithm 1 (module docstring) for ``iterations`` Adam steps; ``iterations=0`` returns the untrained student.

    ``eval_fn(result_so_far) -> dict`` is called at iteration 0 and every ``eval_every`` iterations (and at the end)
    when both are given; its dicts land in ``result.evals`` with the key ``iteration``."""
    ddim_grid(cfg, num_ddim_timesteps)   # validates num_ddim_timesteps
    k = cfg.num_train_timesteps // num_ddim_timesteps
    for name, v, lo in (("iterations", iterations, 0), ("batch_size", batch_size, 1), ("eval_every", eval_every, 0)):
        if not (isinstance(v, numbers.Integral) and v >= lo):
            raise LCMRefError(name, v, f"an integer >= {lo}")
    if not 0 <= ema_decay < 1:
        raise LCMRefError("ema_decay", ema_decay, "a float in [0, 1)")
    if not 0 <= omega_min <= omega_max:
        raise LCMRefError("omega_max", omega_max, f"a float >= omega_min={omega_min} >= 0")
    tables = fused_tables(cfg)
    rng = np.random.default_rng(seed)
    losses = np.zeros(iterations)

    with _deterministic_torch(seed):
        student = Student(mix.d, mix.n_classes, cfg.num_train_timesteps, hidden, depth, max(omega_max, 1.0))
        target = copy.deepcopy(student).requires_grad_(False)
        result = DistillResult(student, target, cfg, num_ddim_timesteps, k, losses)
        opt = torch.optim.Adam(student.parameters(), lr=lr)
        # cosine decay to 0 over the run: the consistency targets move, a decaying step lets the fit settle
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(iterations, 1))))

        def evaluate(i):
            if eval_fn is not None and eval_every:
                result.evals.append({"iteration": i, **eval_fn(result)})

        evaluate(0)
        for i in tqdm(range(iterations), desc=f"distill k={k}", disable=not progress, mininterval=1.0):
            batch = draw_batch(mix, cfg, num_ddim_timesteps, batch_size, rng, omega_min, omega_max)
            loss = consistency_loss(student, target, tables, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for p_t, p in zip(target.parameters(), student.parameters()):
                    p_t.mul_(ema_decay).add_(p, alpha=1 - ema_decay)
            losses[i] = loss.item()
            if eval_every and (i + 1) % eval_every == 0 and i + 1 < iterations:
                evaluate(i + 1)
        if iterations:
            evaluate(iterations)
    return result


def teacher_step(mix: tb.GaussianMixture, cfg: LCMConfig, x, start, target, *, labels=None, omega=0.0):
    """One DDIM step of the guided PF-ODE with the exact ε̃, from timestep ``start`` to ``target`` (per sample):
    x̂ = √ᾱ_target·x0 + √(1−ᾱ_target)·ε̃, x0 = (x − √(1−ᾱ_start)·ε̃)/√ᾱ_start; in y-space this is Euler's method in
    s, ŷ = y + (s_target − s_start)·ε̃, which is the form computed."""
    sa, sb = ref.sqrt_alphas_cumprod(cfg), ref.sqrt_one_minus_alphas_cumprod(cfg)
    start, target = np.asarray(start), np.asarray(target)
    s_start, s_tgt = sb[start] / sa[start], sb[target] / sa[target]
    y = np.asarray(x, dtype=np.float64) / sa[start].reshape(-1, 1)
    eps = mix.guided_eps(y, s_start, labels, omega)
    return sa[target].reshape(-1, 1) * (y + (s_tgt - s_start).reshape(-1, 1) * eps)


def student_model(student: Student, *, labels, omega=0.0):
    """``model_fn(x, t)`` for ``ref.sample``: the student's output F_θ (``cfg.prediction_type``) in float64, for
    fixed per-sample class ``labels`` and guidance ``omega``."""
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    om = torch.full((len(lab),), float(omega), dtype=torch.float32)

    def model_fn(x, t):
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
            out = student(xt, torch.full((len(lab),), int(t), dtype=torch.int64), om, lab)
        return out.double().numpy()
    return model_fn
