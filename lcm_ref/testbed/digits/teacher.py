"""The teacher: a class-conditional ε-prediction U-Net (``diffusers.UNet2DConditionModel`` without cross-attention;
the class enters through ``num_class_embeds``) on Stable Diffusion's noise schedule (``scaled_linear``,
0.00085–0.012, T = 1000), so that LCM's schedule, ``original_inference_steps`` and ``timestep_scaling`` mean here
what they mean for SD.

Training (DDPM's ε objective): x_0, c from the ``train`` split; c replaced by ``NULL_LABEL`` with probability
``p_uncond`` = 0.1 (classifier-free guidance); t ~ U{0, …, T−1}; x_t = ``DDPMScheduler.add_noise(x_0, ε, t)``;
loss ‖ε_θ(x_t, t, c) − ε‖². Adam with warm-up and cosine decay, gradient clipping at 1, and an EMA of the weights
(decay min(0.999, (1 + i)/(10 + i)) at iteration i), which is the teacher that is kept. Every random draw comes
from one ``torch.Generator``, so a run is deterministic for its seed, and resumable from a saved state with the
same result.

Guidance, in the paper's convention: ε̃ = (1 + ω)·ε(x, t, c) − ω·ε(x, t, ∅) (diffusers' ``guidance_scale`` is
1 + ω). ``guided_eps`` evaluates both branches in one batched call.
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
from tqdm.auto import tqdm

from ...errors import LCMRefError
from .data import N_CLASSES, NULL_LABEL, Split

__all__ = ["SCHEDULE", "UNET_CONFIG", "TEACHER_SEED", "make_teacher", "noise_scheduler", "alphas_cumprod",
           "unet_eps", "guided_eps", "train_teacher", "TrainState"]

#: Stable Diffusion's noise schedule (the keys every diffusers scheduler understands)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
#: The U-Net: two resolutions (8×8, 4×4), 16 and 32 channels, one ResNet block per level, no attention; 11 class
#: embeddings (10 digits + the null label). About 140k parameters.
UNET_CONFIG = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
                   down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                   mid_block_type="UNetMidBlock2D", norm_num_groups=8, num_class_embeds=N_CLASSES + 1)
TEACHER_SEED = 0


def optimizer_step(model, loss, opt, sched):
    """One gradient step of the teacher's and the students' training: backward, clip the gradient norm to 1, step
    the optimizer and the learning-rate schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def make_teacher(seed: int = TEACHER_SEED, **overrides):
    """A freshly initialised teacher U-Net (``UNET_CONFIG`` updated by ``overrides``), weights from ``seed``."""
    from diffusers import UNet2DConditionModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


def noise_scheduler():
    """diffusers' ``DDPMScheduler`` with ``SCHEDULE`` (its ``add_noise`` makes the training inputs)."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(**SCHEDULE)


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t, t = 0…T−1, as float64 (from diffusers' scheduler: the values every sampler here uses)."""
    return noise_scheduler().alphas_cumprod.to(torch.float64)


def unet_eps(unet, x, t, labels, cond=None):
    """The U-Net's output ε(x, t, c) (``cond``: the guidance embedding of a student, None for the teacher)."""
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(len(x))
    return unet(x, t, None, class_labels=labels, timestep_cond=cond, return_dict=False)[0]


def guided_eps(unet, x, t, labels, omega):
    """ε̃ = (1 + ω)·ε(x, t, c) − ω·ε(x, t, ∅), both branches in one call; ``omega`` a float or a (B,) tensor."""
    B = len(x)
    t = torch.as_tensor(t, device=x.device)
    t = t.expand(B) if t.ndim == 0 else t
    null = torch.full_like(labels, NULL_LABEL)
    eps = unet_eps(unet, torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = eps[:B], eps[B:]
    w = torch.as_tensor(omega, dtype=x.dtype, device=x.device)
    w = w.reshape(-1, *([1] * (x.ndim - 1))) if w.ndim else w
    return cond + w * (cond - uncond)


class TrainState:
    """Everything a run needs to continue where it stopped: online and EMA weights, optimizer, learning-rate
    schedule, generator, iteration, losses. ``state_dict`` / ``load_state_dict`` for ``torch.save``."""

    def __init__(self, model, ema, opt, sched, gen, losses=None, iteration=0, extra=None):
        self.model, self.ema, self.opt, self.sched, self.gen = model, ema, opt, sched, gen
        self.losses, self.iteration, self.extra = list(losses or []), iteration, dict(extra or {})

    def state_dict(self):
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "gen": self.gen.get_state(), "losses": self.losses,
                "iteration": self.iteration, "extra": self.extra}

    def load_state_dict(self, s):
        self.model.load_state_dict(s["model"])
        self.ema.load_state_dict(s["ema"])
        self.opt.load_state_dict(s["opt"])
        self.sched.load_state_dict(s["sched"])
        self.gen.set_state(s["gen"])
        self.losses, self.iteration, self.extra = list(s["losses"]), int(s["iteration"]), dict(s["extra"])


def warmup_cosine(warmup: int, total: int):
    """Learning-rate factor: linear warm-up over ``warmup`` iterations, then cosine decay to 0 at ``total``."""
    def f(i):
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min((i - warmup) / max(total - warmup, 1), 1.0)))
    return f


def check_positive_int(name, v, lo=1):
    if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo):
        raise LCMRefError(name, v, f"an integer >= {lo}")


def train_teacher(train: Split, *, iterations: int = 3000, batch_size: int = 128, lr: float = 1e-3,
                  p_uncond: float = 0.1, ema_decay: float = 0.999, warmup: int = 100, seed: int = TEACHER_SEED,
                  device="cpu", progress: bool = True, resume=None, checkpoint_fn=None, checkpoint_every: int = 500):
    """Train the teacher (module docstring). Returns the ``TrainState``; its ``ema`` is the teacher.

    ``resume``: a state dict from an earlier ``TrainState.state_dict()`` of the same configuration; the run goes
    on from its iteration. ``checkpoint_fn(state)`` is called every ``checkpoint_every`` iterations and at the end."""
    check_positive_int("iterations", iterations, 0)
    check_positive_int("batch_size", batch_size)
    check_positive_int("checkpoint_every", checkpoint_every)
    if not 0.0 <= p_uncond < 1.0:
        raise LCMRefError("p_uncond", p_uncond, "a probability in [0, 1)")
    if not 0.0 <= ema_decay < 1.0:
        raise LCMRefError("ema_decay", ema_decay, "a float in [0, 1)")
    device = torch.device(device)
    model = make_teacher(seed).to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup, iterations))
    gen = torch.Generator().manual_seed(seed)
    st = TrainState(model, ema, opt, sched, gen)
    if resume is not None:
        st.load_state_dict(resume)
    ns = noise_scheduler()
    T = ns.config.num_train_timesteps
    xs, ys = train.x, train.y
    bar = tqdm(range(st.iteration, iterations), desc="teacher", disable=not progress, mininterval=1.0,
               initial=st.iteration, total=iterations)
    for i in bar:
        idx = torch.randint(0, len(ys), (batch_size,), generator=gen)
        x0, c = xs[idx], ys[idx].clone()
        c[torch.rand(batch_size, generator=gen) < p_uncond] = NULL_LABEL
        t = torch.randint(0, T, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = ns.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet_eps(model, xt.to(device), t.to(device), c.to(device)),
                                            noise.to(device))
        optimizer_step(model, loss, opt, sched)
        with torch.no_grad():
            # the decay ramps up as (1 + i)/(10 + i) so that the initial weights do not linger in a short run
            mu = min(ema_decay, (1.0 + i) / (10.0 + i))
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1.0 - mu)
        st.losses.append(loss.item())
        st.iteration = i + 1
        if progress and (i + 1) % 50 == 0:
            bar.set_postfix(loss=f"{sum(st.losses[-50:]) / 50:.4f}")
        if checkpoint_fn is not None and (st.iteration % checkpoint_every == 0 or st.iteration == iterations):
            checkpoint_fn(st)
    if checkpoint_fn is not None and iterations == 0:
        checkpoint_fn(st)
    return st
