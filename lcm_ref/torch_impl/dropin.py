"""``LCMScheduler``: a drop-in for ``diffusers.LCMScheduler`` built on ``TorchLCM`` (``lcm_ref.torch_impl.engine``),
and ``LCMSchedulerOutput`` (diffusers' own class, re-exported). Needs diffusers; ``TorchLCM`` needs only torch.

Same constructor, config, methods and attributes as diffusers' class, and the same noise stream for a given
generator; the arithmetic is ``TorchLCM``'s (bounds: ``lcm_ref.torch_impl.bounds``). Inputs diffusers mishandles
are refused as the strict profile does (docs/design.md §3, §6). A config whose noise schedule is degenerate (a β
outside (0, 1), ``trained_betas`` of another length than ``num_train_timesteps``) is accepted as diffusers accepts it
by default (``profile="diffusers"``, with an ``LCMRefWarning``) and refused with ``profile="strict"``.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Optional

import torch

from .. import reference as ref
from ..config import PROFILES, LCMConfig
from ..errors import LCMRefError, LCMRefWarning, StrictError
from .engine import DTYPES, TorchLCM, check_schedule, python_int

__all__ = ["LCMScheduler", "LCMSchedulerOutput"]


try:  # TorchLCM needs only torch; the drop-in needs diffusers
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as e:
    _NO_DIFFUSERS, _BASES, LCMSchedulerOutput, randn_tensor = e, (), None, None

    def register_to_config(init):
        return init
else:
    _NO_DIFFUSERS, _BASES = None, (SchedulerMixin, ConfigMixin)


class LCMScheduler(*_BASES):
    """Drop-in for ``diffusers.LCMScheduler``: same constructor, config, ``set_timesteps`` (original_inference_steps,
    timesteps, strength), ``set_begin_index``, ``step`` (generator, return_dict), ``add_noise``, ``get_velocity``,
    ``scale_model_input``, ``timesteps``, ``init_noise_sigma``, ``order``, ``step_index``, ``begin_index``.

    The arithmetic is ``TorchLCM``'s (correctly rounded tables, error ≤ 1.5 / 2 eps·Σ|terms| in float32 against
    diffusers' ≈ 6–13); the noise is diffusers' own ``randn_tensor`` draw, so a seeded pipeline gives the same image
    up to rounding. Where diffusers silently misbehaves (docs/design.md §6 quirks 1–5) this raises ``StrictError``; beta
    schedules of the reference beyond diffusers' three (sigmoid, exp, laplace) are accepted.

    ``profile`` (keyword only, not part of the saved config) decides what happens to a config diffusers accepts but
    whose noise schedule is degenerate (``LCMConfig.degeneracies``, docs/design.md §3), such as ``beta_end=2`` or a
    ``trained_betas`` shorter than ``num_train_timesteps``:

    - ``"diffusers"`` (default, so that every config diffusers loads loads here): accepted, with the
      ``LCMRefWarning`` ``LCMConfig`` gives; the tables are what diffusers builds from it, correctly rounded (√ of a
      negative ᾱ is NaN), and a timestep past a short ``trained_betas`` table raises IndexError when stepped at, as
      in diffusers;
    - ``"strict"``: refused here, with a ``StrictError`` naming the parameter.
    Everything else is the strict profile's under both. ``from_pretrained`` / ``from_config`` build with the
    default."""

    order = 1
    ignore_for_config = ["profile"]

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", trained_betas=None, original_inference_steps: int = 50,
                 clip_sample: bool = False, clip_sample_range: float = 1.0, set_alpha_to_one: bool = True,
                 steps_offset: int = 0, prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 timestep_spacing: str = "leading", timestep_scaling: float = 10.0,
                 rescale_betas_zero_snr: bool = False, *, profile: str = "diffusers"):
        if _NO_DIFFUSERS is not None:
            raise ImportError(f"lcm_ref.torch_impl.LCMScheduler needs diffusers ({_NO_DIFFUSERS})")
        if profile not in PROFILES:
            raise LCMRefError("profile", profile, f"one of {PROFILES}")
        with warnings.catch_warnings():
            if profile == "strict":         # refused just below: no warning before the error
                warnings.simplefilter("ignore", LCMRefWarning)
            self.lcm_config = LCMConfig(
                num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                beta_schedule=beta_schedule, trained_betas=trained_betas,
                original_inference_steps=original_inference_steps, clip_sample=clip_sample,
                clip_sample_range=clip_sample_range, set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
                prediction_type=prediction_type, thresholding=thresholding,
                dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value,
                timestep_spacing=timestep_spacing, timestep_scaling=timestep_scaling,
                rescale_betas_zero_snr=rescale_betas_zero_snr)
        cfg = self.lcm_config.check(profile)
        self.profile = profile
        # diffusers' public float32 tables, here the reference's values rounded once.
        self.betas = torch.tensor(ref.betas(cfg), dtype=torch.float32)
        self.alphas = torch.tensor(1.0 - ref.betas(cfg), dtype=torch.float32)
        self.alphas_cumprod = torch.tensor(ref.alphas_cumprod(cfg), dtype=torch.float32)
        self.final_alpha_cumprod = torch.tensor(ref.final_alpha_cumprod(cfg), dtype=torch.float32)
        self.init_noise_sigma = 1.0
        self.sigma_data = ref.SIGMA_DATA
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)
        self.custom_timesteps = False
        self._schedule = None
        self._engines = {}
        self._engine_schedules = {}         # (device, dtype) -> the schedule array its engine holds
        self._step_index = None
        self._begin_index = None

    @property
    def step_index(self):
        """The position in ``timesteps`` of the next ``step`` (None before the first)."""
        return self._step_index

    @property
    def begin_index(self):
        """The first step's position, as set by ``set_begin_index`` (None: found from the first timestep)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Start stepping at ``timesteps[begin_index]`` (pipelines call this for img2img)."""
        self._begin_index = python_int(begin_index, "begin_index")

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """LCM does not scale the model input."""
        return sample

    def __len__(self):
        return self.config.num_train_timesteps

    def engine(self, device, dtype) -> TorchLCM:
        """The ``TorchLCM`` doing the arithmetic for ``device`` and ``dtype`` (built once), holding the current
        schedule (handed to it on first use after ``set_timesteps``)."""
        key = (torch.device(device), dtype)
        eng = self._bare_engine(key)
        if self._schedule is not None and self._engine_schedules.get(key) is not self._schedule:
            eng.set_schedule(self._schedule)
            self._engine_schedules[key] = self._schedule
        return eng

    def _bare_engine(self, key):
        """The engine for (device, dtype), whatever schedule it holds (add_noise and get_velocity need none)."""
        if key not in self._engines:
            self._engines[key] = TorchLCM(self.lcm_config, device=key[0], dtype=key[1], profile=self.profile)
        return self._engines[key]

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      original_inference_steps: Optional[int] = None, timesteps=None, strength: float = 1.0):
        """diffusers' schedule (``reference.set_timesteps`` with the strict profile)."""
        sched = ref.set_timesteps(self.lcm_config, num_inference_steps,
                                  original_inference_steps=original_inference_steps, timesteps=timesteps,
                                  strength=strength, profile="strict")
        self._schedule = check_schedule(self.lcm_config, sched.timesteps, self.profile)
        self.num_inference_steps = sched.num_inference_steps
        self.custom_timesteps = timesteps is not None
        self.timesteps = torch.from_numpy(self._schedule.copy()).to(device=device, dtype=torch.long)
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Position of ``timestep`` in the schedule (the second match if it occurs twice); reads the value."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        t = int(timestep.item()) if isinstance(timestep, torch.Tensor) else timestep
        hits = [i for i, s in enumerate(schedule.tolist()) if s == t]
        if not hits:
            raise StrictError("timestep", t, f"one of the schedule's timesteps {schedule.tolist()}")
        return hits[1] if len(hits) > 1 else hits[0]

    def _init_step_index(self, timestep):
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        """(c_skip, c_out) at ``timestep`` as Python floats, correctly rounded (``reference.boundary_scalings``)."""
        return ref.boundary_scalings(self.lcm_config, _host_int(timestep))

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        """One LCM step at ``timesteps[step_index]``: (prev_sample, denoised). The noise is diffusers' draw,
        ``randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=...)``, on every
        step but the last."""
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps before step")
        if self._step_index is None:
            self._init_step_index(timestep)
        i, n = self._step_index, len(self._schedule)
        if i >= n:
            raise StrictError("step_index", i, f"< {n} = len(timesteps): a step past the end re-noises at the last "
                              "level in diffusers (quirk 5); call set_timesteps again")
        if not isinstance(timestep, torch.Tensor) or timestep.device.type == "cpu":   # readable without a sync
            t = _host_int(timestep)
            if t != self._schedule[i]:
                raise StrictError("timestep", t, f"timesteps[step_index={i}] = {int(self._schedule[i])}")
        dtype = torch.promote_types(model_output.dtype, sample.dtype)
        eng = self.engine(sample.device, dtype)
        noise = None
        if i != n - 1:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=dtype)
        prev, denoised = eng.step(model_output.to(dtype), None, sample.to(dtype), noise, step_index=i)
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return LCMSchedulerOutput(prev_sample=prev, denoised=denoised)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """√ᾱ_t·x0 + √(1−ᾱ_t)·noise with the reference's √ tables (diffusers rounds ᾱ to the sample dtype first)."""
        eng = self._bare_engine((original_samples.device, original_samples.dtype
                                 if original_samples.dtype in DTYPES else torch.float32))
        return eng.add_noise(original_samples, noise.to(original_samples.dtype), timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """√ᾱ_t·noise − √(1−ᾱ_t)·sample with the reference's √ tables."""
        eng = self._bare_engine((sample.device, sample.dtype if sample.dtype in DTYPES else torch.float32))
        return eng.get_velocity(sample, noise.to(sample.dtype), timesteps)

    def previous_timestep(self, timestep):
        """The next timestep in the schedule, tensor(−1) after the last (diffusers ≥ 0.32); ``timestep − 1`` before
        ``set_timesteps``."""
        if self._schedule is None:
            return timestep - 1
        i = self.index_for_timestep(timestep)
        return self.timesteps[i + 1] if i + 1 < len(self._schedule) else torch.tensor(-1)


def _host_int(v):
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.is_floating_point():
            raise LCMRefError("timestep", v, "an integer timestep")
        v = v.item()
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    raise StrictError("timestep", v, "an integer (diffusers truncates floats: quirk 2)")
