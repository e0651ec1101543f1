"""The noise z of a scheduler's step, as the oracle sees it: what a scheduler drew, and how to step diffusers on a
known noise (how diffusers draws it is ``lcm_ref.torch_impl.noise.draw_noise``).

- ``NoiseTap``: records (and optionally replaces) every tensor torch's normal samplers return inside a block;
- ``step_noise``: the z one ``step(..., generator=g)`` call drew: the captured draw, or, where the step drew
  nothing (the last step), the draw it would have made from g's state on entry;
- ``step_with_noise``: one ``step`` with a fresh generator seeded ``seed``, and its z; how the tests and
  ``lcm_ref.studies.accuracy`` feed diffusers and the reference the same noise.

(``lcm_ref.studies.bench`` replaces diffusers' ``randn_tensor`` instead of tapping it: a timed step must not draw, nor pay
for the tap's Python wrappers and copies.)
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..torch_impl.noise import draw_noise

__all__ = ["NoiseTap", "step_noise", "step_with_noise"]


class NoiseTap:
    """Within ``with NoiseTap() as tap:``, records every tensor that ``torch.randn``, ``torch.randn_like``,
    ``torch.normal`` and ``Tensor.normal_`` return (``tap.draws``). With ``inject=tensor``, a draw with as many
    elements is replaced by that tensor (cast to the draw's dtype and device), after the generator has advanced
    as usual. Not thread-safe: it patches torch for the duration of the block."""

    _TARGETS = ((torch, "randn"), (torch, "randn_like"), (torch, "normal"), (torch.Tensor, "normal_"))

    def __init__(self, inject: Optional[torch.Tensor] = None):
        self.inject, self.draws, self._saved = inject, [], []

    def _swap(self, out):
        if self.inject is not None and out.numel() == self.inject.numel():
            return self.inject.detach().to(dtype=out.dtype, device=out.device).reshape(out.shape)
        return out

    def __enter__(self):
        for owner, name in self._TARGETS:
            orig = getattr(owner, name)
            self._saved.append((owner, name, orig, name in vars(owner)))
            if name == "normal_":
                def wrapper(tensor, *a, _orig=orig, **k):
                    out = _orig(tensor, *a, **k)
                    new = self._swap(out)
                    if new is not out:
                        with torch.no_grad():
                            out.copy_(new)
                    self.draws.append(out.detach().clone())
                    return out
            else:
                def wrapper(*a, _orig=orig, **k):
                    out = self._swap(_orig(*a, **k))
                    self.draws.append(out.detach())
                    return out
            setattr(owner, name, wrapper)
        return self

    def __exit__(self, *exc):
        for owner, name, orig, own in reversed(self._saved):
            if own:
                setattr(owner, name, orig)
            else:
                delattr(owner, name)
        self._saved = []
        return False

    def noise_like(self, sample: torch.Tensor) -> Optional[torch.Tensor]:
        """The draw that is the step's z: the last draw with as many elements as ``sample``, or the last draws
        that together have that many (one generator per batch element, concatenated along dim 0); else None."""
        n = sample.numel()
        for d in reversed(self.draws):
            if d.numel() == n:
                return d.reshape(sample.shape)
        total, parts = 0, []
        for d in reversed(self.draws):
            parts.insert(0, d)
            total += d.numel()
            if total == n:
                return torch.cat([p.reshape((-1,) + tuple(sample.shape[1:])) for p in parts]).reshape(sample.shape)
            if total > n:
                break
        return None


@contextlib.contextmanager
def step_noise(like: torch.Tensor, generator: torch.Generator):
    """``with step_noise(m, g) as tap: sched.step(m, t, x, generator=g)``, then ``tap.z`` is the z the step drew,
    shaped like ``like`` (diffusers draws it shaped like model_output, which broadcasts against the sample): the
    captured draw (``NoiseTap.noise_like``) or, if it drew nothing (the last step, or it raised before drawing),
    the draw ``randn_tensor`` would have made from ``g``'s state on entry."""
    state = generator.get_state()
    with NoiseTap() as tap:
        yield tap
    z = tap.noise_like(like)
    if z is None:
        replay = torch.Generator(device=generator.device)
        replay.set_state(state)
        z = draw_noise(tuple(like.shape), replay, like.device, like.dtype)
    tap.z = z


def step_with_noise(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor, seed: int):
    """``scheduler.step(model_output, timestep, sample, generator=torch.Generator(sample.device).manual_seed(seed))``
    and the z it drew, shaped like model_output as diffusers draws it: returns (output, z)."""
    gen = torch.Generator(sample.device).manual_seed(seed)
    with step_noise(model_output, gen) as tap:
        out = scheduler.step(model_output, timestep, sample, generator=gen)
    return out, tap.z
