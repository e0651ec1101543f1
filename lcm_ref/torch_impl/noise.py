"""z ~ N(0, I) drawn exactly as diffusers' ``randn_tensor`` draws it: the stream a drop-in must reproduce for "same
seed, same image" (tests/test_torch_dropin.py checks it against ``randn_tensor``)."""

from __future__ import annotations

import torch

from ..errors import LCMRefError

__all__ = ["draw_noise"]


def draw_noise(shape, generator=None, device=None, dtype=None):
    """z ~ N(0, I) drawn exactly as ``diffusers.utils.torch_utils.randn_tensor(shape, generator=, device=, dtype=)``
    draws it: on the generator's device when that is the CPU (then moved), one draw of shape (1, …) per generator
    when a list of generators is given (one per batch element)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is None or (isinstance(generator, torch.Generator) and generator.device.type == device.type):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    gen_type = gens[0].device.type if gens[0] is not None else device.type
    if gen_type != device.type and gen_type != "cpu":
        raise LCMRefError("generator", f"a {gen_type} generator", f"a cpu or {device.type} generator for {device}")
    where = torch.device("cpu") if gen_type == "cpu" and device.type != "cpu" else device
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise LCMRefError("generator", f"a list of {len(generator)}",
                              f"one generator per batch element ({shape[0]})")
        one = (1,) + tuple(shape[1:])
        return torch.cat([torch.randn(one, generator=g, device=where, dtype=dtype) for g in generator]).to(device)
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)
