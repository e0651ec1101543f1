"""The LCM multistep scheduler in torch, for GPU and CPU.

- ``TorchLCM`` (``engine``): a functional, batched, graph-capturable engine mirroring ``lcm_ref.reference``'s names;
- ``LCMScheduler``, ``LCMSchedulerOutput`` (``dropin``): a drop-in for ``diffusers.LCMScheduler`` built on it;
- ``draw_noise`` (``noise``): z ~ N(0, I) drawn as diffusers' ``randn_tensor`` draws it;
- ``bounds``: the derived error bounds of ``TorchLCM`` against the reference, and the check that applies them;
- ``DTYPES``: the sample dtypes the engine runs in.
"""

from .dropin import LCMScheduler, LCMSchedulerOutput
from .engine import DTYPES, TorchLCM
from .noise import draw_noise

__all__ = ["TorchLCM", "LCMScheduler", "LCMSchedulerOutput", "draw_noise", "DTYPES"]
